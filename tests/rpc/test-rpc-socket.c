/* What a dead TCP connection is reported as, once its error went elsewhere.
 * A socket hands its error (ETIMEDOUT, ECONNRESET) to one call only, and a
 * splice() that moved bytes before that call drops it: the other calls meet
 * EPIPE or an end of file. The connection's own TCP state still tells a
 * timeout. Each test runs in a forked child with a network namespace of its
 * own, whose loopback it takes down to make the path dead. */
#include <check.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/rpc-socket.h"
#include "rpc/rpc-transport.h"
#include "util/error.h"

/* A network namespace of this (forked) test's own, its loopback up. */
static void own_network(void)
{
    if (unshare(CLONE_NEWNET) < 0)
        ck_assert_msg(unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0,
                      "cannot make a network namespace: %s", g_strerror(errno));
}

static void loopback(gboolean up)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(s, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    g_strlcpy(ifr.ifr_name, "lo", sizeof(ifr.ifr_name));
    ck_assert_int_eq(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
    if (up)
        ifr.ifr_flags |= IFF_UP;
    else
        ifr.ifr_flags &= ~IFF_UP;
    ck_assert_int_eq(ioctl(s, SIOCSIFFLAGS, &ifr), 0);
    close(s);
}

/* A TCP connection over the loopback: *client (user timeout 1 s) and *server. */
static void tcp_pair(int *client, int *server)
{
    guint16 port = 0;
    g_autoptr(GError) e = NULL;
    int l = rpc_socket_listen_tcp("127.0.0.1", 0, &port, &e);
    ck_assert_msg(l >= 0, "%s", e ? e->message : "");
    *client = rpc_socket_connect_tcp("127.0.0.1", port, 5000, &e);
    ck_assert_msg(*client >= 0, "%s", e ? e->message : "");
    *server = accept(l, NULL, NULL);
    ck_assert_int_ge(*server, 0);
    close(l);
    int ms = 1000;
    ck_assert_int_eq(setsockopt(*client, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms)), 0);
}

static int tcp_state(int fd)
{
    struct tcp_info ti;
    socklen_t sl = sizeof(ti);
    ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &sl), 0);
    return ti.tcpi_state;
}

/* Takes the socket's pending error, as another thread's call would. */
static int take_error(int fd)
{
    int err = 0;
    socklen_t sl = sizeof(err);
    ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl), 0);
    return err;
}

START_TEST(timed_out_connection_is_named_after_its_error_was_taken)
{
    own_network();
    loopback(TRUE);
    int c, s;
    tcp_pair(&c, &s);
    ck_assert_int_eq(rpc_socket_lost_error(c), 0); /* alive */
    loopback(FALSE); /* the path is dead: nothing is acknowledged any more */
    ck_assert_int_eq(send(c, "data", 4, MSG_NOSIGNAL), 4);
    for (int i = 0; i < 200 && tcp_state(c) != TCP_CLOSE; i++)
        g_usleep(50 * 1000);
    ck_assert_int_eq(tcp_state(c), TCP_CLOSE);
    ck_assert_int_eq(take_error(c), ETIMEDOUT);
    ck_assert_int_eq(send(c, "more", 4, MSG_NOSIGNAL), -1);
    ck_assert_int_eq(errno, EPIPE);
    ck_assert_int_eq(rpc_socket_lost_error(c), ETIMEDOUT);
    /* Not the zero window of a frozen peer: the path broke. */
    ck_assert(!rpc_socket_timed_out_on_zero_window(c));
    ck_assert(!rpc_socket_peer_host_answers(c, 500));

    /* The transport's writer names the timeout, at once. */
    RpcTransport *t = rpc_transport_new_socket(c);
    g_autoptr(GError) e = NULL;
    gint64 start = g_get_monotonic_time();
    ck_assert(!rpc_transport_write_all(t, "more", 4, &e));
    ck_assert_msg(g_str_has_suffix(e->message, g_strerror(ETIMEDOUT)), "%s", e->message);
    ck_assert_int_lt(g_get_monotonic_time() - start, 40 * 1000);
    ck_assert_int_eq(t->os_error, ETIMEDOUT);
    rpc_transport_free(t);
    close(s);
}
END_TEST

START_TEST(reset_connection_is_not_called_a_timeout)
{
    own_network();
    loopback(TRUE);
    int c, s;
    tcp_pair(&c, &s);
    ck_assert_int_eq(send(s, "unread", 6, MSG_NOSIGNAL), 6);
    g_usleep(50 * 1000);
    /* Closed with unread data: the peer's end resets the connection. */
    ck_assert_int_eq(send(c, "data", 4, MSG_NOSIGNAL), 4);
    g_usleep(50 * 1000);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ck_assert_int_eq(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(s);
    for (int i = 0; i < 100 && tcp_state(c) != TCP_CLOSE; i++)
        g_usleep(20 * 1000);
    ck_assert_int_eq(take_error(c), ECONNRESET);
    ck_assert_int_eq(rpc_socket_lost_error(c), 0);
    close(c);
}
END_TEST

/* Sends to s, which never reads, until its window and our buffer are full. */
static void fill(int c)
{
    static char buf[65536];
    while (send(c, buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT) > 0)
        ;
    ck_assert_int_eq(errno, EAGAIN);
}

START_TEST(zero_window_timeout_is_a_stuck_peer)
{
    /* The peer's host acknowledges every probe but its reader stopped (a
     * frozen daemon): the user timeout closes the connection all the same,
     * and that is told apart from a broken path. */
    own_network();
    loopback(TRUE);
    int c, s;
    tcp_pair(&c, &s);
    /* Longer than the probes' back-off (0.2, 0.4, 0.8, 1.6 s) and the 0.5 s
     * rate limit on their answers: some answer comes within it. */
    int ms = 3000;
    ck_assert_int_eq(setsockopt(c, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms)), 0);
    fill(c);
    ck_assert(rpc_socket_peer_host_answers(c, 1000));
    ck_assert(!rpc_socket_timed_out_on_zero_window(c)); /* alive */
    for (int i = 0; i < 200 && tcp_state(c) != TCP_CLOSE; i++)
        g_usleep(50 * 1000);
    ck_assert_int_eq(tcp_state(c), TCP_CLOSE);
    ck_assert_int_eq(take_error(c), ETIMEDOUT);
    ck_assert(rpc_socket_timed_out_on_zero_window(c));
    /* Named a timeout once another call took the error (a proxy relay's
     * splice), not a broken pipe. */
    ck_assert_int_eq(rpc_socket_lost_error(c), ETIMEDOUT);
    close(c);
    close(s);
}
END_TEST

START_TEST(zero_window_then_dead_path_is_a_broken_path)
{
    /* The window was zero when the path died: the probes go unanswered. */
    own_network();
    loopback(TRUE);
    int c, s;
    tcp_pair(&c, &s);
    fill(c);
    loopback(FALSE);
    for (int i = 0; i < 200 && tcp_state(c) != TCP_CLOSE; i++)
        g_usleep(50 * 1000);
    ck_assert_int_eq(tcp_state(c), TCP_CLOSE);
    ck_assert_int_eq(take_error(c), ETIMEDOUT);
    ck_assert(!rpc_socket_timed_out_on_zero_window(c));
    close(c);
    close(s);
}
END_TEST

START_TEST(other_sockets_tell_nothing)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ck_assert_int_eq(rpc_socket_lost_error(sv[0]), 0);
    close(sv[1]);
    ck_assert_int_eq(rpc_socket_lost_error(sv[0]), 0);
    close(sv[0]);
    ck_assert_int_eq(rpc_socket_lost_error(-1), 0);
    ck_assert(!rpc_socket_timed_out_on_zero_window(-1));
    ck_assert(!rpc_socket_peer_host_answers(-1, 1000));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rpc-socket");
    TCase *tc = tcase_create("lost-error");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, timed_out_connection_is_named_after_its_error_was_taken);
    tcase_add_test(tc, reset_connection_is_not_called_a_timeout);
    tcase_add_test(tc, zero_window_timeout_is_a_stuck_peer);
    tcase_add_test(tc, zero_window_then_dead_path_is_a_broken_path);
    tcase_add_test(tc, other_sockets_tell_nothing);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL); /* forked: each test's namespace dies with it */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
