/* Proxy mode's data connection listener against strangers: one that
 * trickles bytes cannot hold up the source, is cut off at its hello
 * deadline, a replayed token is refused, and a failed TLS handshake leaves no
 * file descriptor behind on either side. Real sockets on 127.0.0.1. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "../test-pki.h"
#include "rpc/rpc-socket.h"
#include "rpc/rpc-tls.h"
#include "tunnel/tunnel-dataconn.h"
#include "util/error.h"

static const char token[] = "0123456789abcdef0123456789abcdef";

typedef struct {
    TunnelDataListener *listener;
    gint64 deadline_us;
    RpcTransport *accepted;
    guint index; /* the channel it says it is */
    GError *error;
} AcceptJob;

static gpointer accept_thread(gpointer data)
{
    AcceptJob *j = data;
    j->accepted =
        tunnel_data_listener_accept_channel(j->listener, j->deadline_us, &j->index, &j->error);
    return NULL;
}

/* Runs tunnel_data_listener_accept on l in a thread, for up to `seconds`. */
static GThread *start_accept(AcceptJob *job, TunnelDataListener *l, int seconds)
{
    *job = (AcceptJob){.listener = l,
                       .deadline_us = g_get_monotonic_time() + seconds * G_USEC_PER_SEC};
    return g_thread_new("accept", accept_thread, job);
}

static TunnelDataListener *listener_new(RpcTlsContext *tls)
{
    g_autoptr(GError) e = NULL;
    TunnelDataListener *l = tunnel_data_listener_new("127.0.0.1", 0, 0, token, tls, "the test", &e);
    ck_assert_msg(l != NULL, "%s", e ? e->message : "");
    return l;
}

static int connect_to(TunnelDataListener *l)
{
    g_autoptr(GError) e = NULL;
    int fd = rpc_socket_connect_tcp("127.0.0.1", tunnel_data_listener_get_port(l), 5000, &e);
    ck_assert_msg(fd >= 0, "%s", e ? e->message : "");
    return fd;
}

/* A stranger that sends a byte of a plausible hello every second (its 40
 * bytes would take 40 s) until told to stop or until the listener cuts it
 * off. */
typedef struct {
    int fd;
    gint stop;
    gint cut; /* the listener closed it */
} Trickler;

static gpointer trickle_thread(gpointer data)
{
    Trickler *t = data;
    const char *hello = "FERRYDC1";
    for (guint i = 0; !g_atomic_int_get(&t->stop); i++) {
        if (send(t->fd, hello + i % 8, 1, MSG_NOSIGNAL) != 1) {
            g_atomic_int_set(&t->cut, TRUE);
            break;
        }
        for (int ms = 0; ms < 1000 && !g_atomic_int_get(&t->stop); ms += 10)
            g_usleep(10 * 1000);
    }
    return NULL;
}

/* A trickling stranger connected to l, in its own thread. */
static GThread *start_trickler(Trickler *t, TunnelDataListener *l)
{
    *t = (Trickler){.fd = connect_to(l)};
    return g_thread_new("trickle", trickle_thread, t);
}

START_TEST(test_a_trickling_stranger_does_not_hold_up_the_source)
{
    TunnelDataListener *l = listener_new(NULL);
    AcceptJob job;
    GThread *at = start_accept(&job, l, 60);
    Trickler stranger;
    GThread *tt = start_trickler(&stranger, l);
    g_usleep(300 * 1000); /* the stranger's hello is under way */

    /* The source gives up after 3 s; the stranger keeps talking far longer
     * than that unless cut off, so only a listener that checks both at once
     * lets the source in. */
    g_autoptr(GError) e = NULL;
    RpcTransport *src = tunnel_data_connect("127.0.0.1", tunnel_data_listener_get_port(l), token,
                                            FALSE, NULL, 3000, &e);
    ck_assert_msg(src != NULL, "%s", e ? e->message : "");
    g_thread_join(at);
    ck_assert_msg(job.accepted != NULL, "%s", job.error ? job.error->message : "");
    g_atomic_int_set(&stranger.stop, TRUE);
    g_thread_join(tt);
    rpc_transport_free(src);
    rpc_transport_free(job.accepted);
    close(stranger.fd);
    tunnel_data_listener_free(l);
}
END_TEST

START_TEST(test_a_trickling_stranger_is_cut_off_at_its_hello_deadline)
{
    TunnelDataListener *l = listener_new(NULL);
    AcceptJob job;
    GThread *at = start_accept(&job, l, 60);
    Trickler stranger;
    GThread *tt = start_trickler(&stranger, l);
    /* The deadline for the whole hello is 5 s; a listener that only bounds
     * each read would let this stranger talk for 40 s. */
    for (int i = 0; i < 300 && !g_atomic_int_get(&stranger.cut); i++)
        g_usleep(100 * 1000);
    g_atomic_int_set(&stranger.stop, TRUE);
    g_thread_join(tt);
    ck_assert_msg(stranger.cut, "the listener let a stranger talk for 30 s");
    tunnel_data_listener_cancel(l);
    g_thread_join(at);
    ck_assert(job.accepted == NULL);
    ck_assert(g_error_matches(job.error, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED));
    g_clear_error(&job.error);
    close(stranger.fd);
    tunnel_data_listener_free(l);
}
END_TEST

START_TEST(test_a_replayed_token_is_refused)
{
    TunnelDataListener *l = listener_new(NULL);
    AcceptJob job;
    GThread *at = start_accept(&job, l, 60);
    g_autoptr(GError) e = NULL;
    RpcTransport *src = tunnel_data_connect("127.0.0.1", tunnel_data_listener_get_port(l), token,
                                            FALSE, NULL, 10000, &e);
    ck_assert_msg(src != NULL, "%s", e ? e->message : "");
    g_thread_join(at);
    ck_assert(job.accepted != NULL);

    /* Someone who saw the token on the wire tries it: the listener keeps
     * accepting (as while the relay runs) and refuses. */
    AcceptJob again;
    at = start_accept(&again, l, 30);
    RpcTransport *replay = tunnel_data_connect("127.0.0.1", tunnel_data_listener_get_port(l), token,
                                               FALSE, NULL, 10000, &e);
    ck_assert(replay == NULL);
    g_autofree char *want =
        g_strdup_printf("the destination at 127.0.0.1:%u refused the migration data connection",
                        tunnel_data_listener_get_port(l));
    ck_assert_str_eq(e->message, want);
    tunnel_data_listener_cancel(l);
    g_thread_join(at);
    ck_assert(again.accepted == NULL);
    g_clear_error(&again.error);
    rpc_transport_free(src);
    rpc_transport_free(job.accepted);
    tunnel_data_listener_free(l);
}
END_TEST

/* A migration with several channels (the disks of --copy-storage-*): each
 * channel's connection says its index; the token admits each index once
 * and none beyond the migration's channels. */
START_TEST(test_channels_each_come_once_by_index)
{
    TunnelDataListener *l = listener_new(NULL);
    tunnel_data_listener_set_channels(l, 3);
    guint16 port = tunnel_data_listener_get_port(l);
    g_autoptr(GError) e = NULL;
    RpcTransport *src[3] = {NULL};
    for (guint want = 2; want < 3; want--) { /* in any order: 2, 1, 0 */
        AcceptJob job;
        GThread *at = start_accept(&job, l, 30);
        src[want] = tunnel_data_connect_channel("127.0.0.1", port, token, want, FALSE, NULL, 10000,
                                                &e);
        ck_assert_msg(src[want] != NULL, "%s", e ? e->message : "");
        g_thread_join(at);
        ck_assert_msg(job.accepted != NULL, "%s", job.error ? job.error->message : "");
        ck_assert_uint_eq(job.index, want);
        rpc_transport_free(job.accepted);
    }
    /* Channel 1 again, and a channel the migration does not have: refused
     * while the listener keeps accepting. */
    AcceptJob again;
    GThread *at = start_accept(&again, l, 30);
    for (guint bad = 1; bad <= 3; bad += 2) {
        RpcTransport *t = tunnel_data_connect_channel("127.0.0.1", port, token, bad, FALSE, NULL,
                                                      10000, &e);
        ck_assert_msg(t == NULL, "channel %u was admitted", bad);
        g_clear_error(&e);
    }
    tunnel_data_listener_cancel(l);
    g_thread_join(at);
    ck_assert(again.accepted == NULL);
    g_clear_error(&again.error);
    for (guint i = 0; i < 3; i++)
        rpc_transport_free(src[i]);
    tunnel_data_listener_free(l);
}
END_TEST

static guint open_fds(void)
{
    guint n = 0;
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static char *pki_dir;

static char *pki(const char *name)
{
    return g_build_filename(pki_dir, name, NULL);
}

static RpcTlsContext *server_tls(void)
{
    g_autofree char *ca = pki("cacert.pem"), *cert = pki("server-cert.pem"),
                    *key = pki("server-key.pem");
    RpcTlsConfig cfg = {.ca_file = ca,
                        .cert_file = cert,
                        .key_file = key,
                        .verify_peer = TRUE,
                        .handshake_timeout_ms = 5000};
    g_autoptr(GError) e = NULL;
    RpcTlsContext *ctx = rpc_tls_context_new_server(&cfg, &e);
    ck_assert_msg(ctx != NULL, "%s", e ? e->message : "");
    return ctx;
}

/* A "destination" that is no TLS server: accepts one connection and hangs up. */
static gpointer hang_up_thread(gpointer data)
{
    int fd = accept4(GPOINTER_TO_INT(data), NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
        close(fd);
    return NULL;
}

START_TEST(test_failed_tls_handshakes_leave_no_descriptor)
{
    pki_dir = g_dir_make_tmp("ferry-dataconn-XXXXXX", NULL);
    ck_assert(test_pki_make(pki_dir));
    g_autoptr(RpcTlsContext) tls = server_tls();

    /* Listener side: strangers that speak no TLS at all. */
    guint before = open_fds();
    for (int i = 0; i < 5; i++) {
        TunnelDataListener *l = listener_new(tls);
        AcceptJob job;
        GThread *at = start_accept(&job, l, 30);
        int fd = connect_to(l);
        struct timeval tv = {.tv_sec = 20};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        ck_assert_int_eq(send(fd, "GET / HTTP/1.0\r\n\r\n", 18, MSG_NOSIGNAL), 18);
        char buf[256];
        ssize_t n;
        while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) /* until the listener hangs up */
            ;
        ck_assert_msg(n == 0, "the listener kept the socket open: %s", g_strerror(errno));
        close(fd);
        tunnel_data_listener_cancel(l);
        g_thread_join(at);
        ck_assert(job.accepted == NULL);
        g_clear_error(&job.error);
        tunnel_data_listener_free(l);
    }
    ck_assert_uint_eq(open_fds(), before);

    /* Source side: the client files in a pkipath directory. */
    g_autofree char *client_dir = pki("client");
    ck_assert_int_eq(g_mkdir(client_dir, 0700), 0);
    const char *links[][2] = {{"cacert.pem", "cacert.pem"},
                              {"client-cert.pem", "clientcert.pem"},
                              {"client-key.pem", "clientkey.pem"}};
    for (guint i = 0; i < G_N_ELEMENTS(links); i++) {
        g_autofree char *from = pki(links[i][0]);
        g_autofree char *to = g_build_filename(client_dir, links[i][1], NULL);
        ck_assert_int_eq(symlink(from, to), 0);
    }
    guint16 port = 0;
    int lfd = rpc_socket_listen_tcp("127.0.0.1", 0, &port, NULL);
    ck_assert_int_ge(lfd, 0);
    before = open_fds();
    for (int i = 0; i < 5; i++) {
        GThread *ht = g_thread_new("hang-up", hang_up_thread, GINT_TO_POINTER(lfd));
        g_autoptr(GError) e = NULL;
        RpcTransport *t = tunnel_data_connect("127.0.0.1", port, token, TRUE, client_dir, 5000, &e);
        g_thread_join(ht);
        ck_assert(t == NULL);
        ck_assert_msg(g_str_has_prefix(e->message, "TLS on the migration data connection to "
                                                   "127.0.0.1:"),
                      "%s", e->message);
    }
    ck_assert_uint_eq(open_fds(), before);
    close(lfd);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", pki_dir);
    ck_assert_int_eq(system(cmd), 0);
    g_clear_pointer(&pki_dir, g_free);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tunnel-dataconn");
    /* One case each, so CK_RUN_CASE=name runs one alone. */
    const struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"trickler-source", test_a_trickling_stranger_does_not_hold_up_the_source},
        {"trickler-deadline", test_a_trickling_stranger_is_cut_off_at_its_hello_deadline},
        {"replay", test_a_replayed_token_is_refused},
        {"channels", test_channels_each_come_once_by_index},
        {"tls-fds", test_failed_tls_handshakes_leave_no_descriptor},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
