/* ferry's own RPC client against a real ferryd and against peers that
 * misbehave: calls from many threads at once, timeouts, error translation,
 * client-side keepalive. */
#include <check.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "remote/remote_protocol.h"
#include "rpc/rpc-client.h"
#include "rpc/rpc-socket.h"
#include "util/error.h"

static char *tmpdir;
static char *sock_path;
static GPid daemon_pid;

static void start_daemon(void)
{
    tmpdir = g_dir_make_tmp("ferry-client-XXXXXX", NULL);
    ck_assert_ptr_nonnull(tmpdir);
    g_autofree char *conf = g_build_filename(tmpdir, "ferryd.conf", NULL);
    g_autofree char *text = g_strdup_printf(
        "unix_sock_dir = \"%s/sock\"\ndomain_config_dir = \"%s/cfg\"\n"
        "domain_run_dir = \"%s/run\"\n",
        tmpdir, tmpdir, tmpdir);
    ck_assert(g_file_set_contents(conf, text, -1, NULL));
    sock_path = g_build_filename(tmpdir, "sock", "libvirt-sock", NULL);
    g_autofree char *ferryd =
        g_build_filename(g_getenv("FERRY_BUILD_DIR"), "src", "daemon", "ferryd", NULL);
    char *argv[] = {ferryd, "--config", conf, NULL};
    ck_assert(g_spawn_async(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &daemon_pid,
                            NULL));
    for (int i = 0; i < 300 && !g_file_test(sock_path, G_FILE_TEST_EXISTS); i++)
        g_usleep(20000);
    ck_assert(g_file_test(sock_path, G_FILE_TEST_EXISTS));
}

static void stop_daemon(void)
{
    kill(daemon_pid, SIGTERM);
    int status = 0;
    waitpid(daemon_pid, &status, 0);
    g_spawn_close_pid(daemon_pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
    g_clear_pointer(&tmpdir, g_free);
    g_clear_pointer(&sock_path, g_free);
}

static RpcClient *open_client(void)
{
    g_autoptr(GError) e = NULL;
    RpcClient *c = rpc_client_connect_unix(sock_path, NULL, &e);
    ck_assert_msg(c != NULL, "%s", e ? e->message : "");
    char *name = "sim:///system";
    remote_connect_open_args args = {.name = &name, .flags = 0};
    ck_assert(rpc_client_call(c, REMOTE_PROGRAM, 1, REMOTE_PROC_CONNECT_OPEN,
                              (xdrproc_t)xdr_remote_connect_open_args, &args, NULL, NULL, 5000,
                              &e));
    return c;
}

static gpointer hostname_worker(gpointer data)
{
    RpcClient *c = data;
    for (int i = 0; i < 200; i++) {
        remote_connect_get_hostname_ret ret = {0};
        GError *e = NULL;
        if (!rpc_client_call(c, REMOTE_PROGRAM, 1, REMOTE_PROC_CONNECT_GET_HOSTNAME, NULL, NULL,
                             (xdrproc_t)xdr_remote_connect_get_hostname_ret, &ret, 10000, &e)) {
            g_error_free(e);
            return GINT_TO_POINTER(FALSE);
        }
        xdr_free((xdrproc_t)xdr_remote_connect_get_hostname_ret, (char *)&ret);
    }
    return GINT_TO_POINTER(TRUE);
}

START_TEST(test_calls_from_eight_threads_on_one_connection)
{
    RpcClient *c = open_client();
    GThread *t[8];
    for (int i = 0; i < 8; i++)
        t[i] = g_thread_new("caller", hostname_worker, c);
    for (int i = 0; i < 8; i++)
        ck_assert(GPOINTER_TO_INT(g_thread_join(t[i])));
    rpc_client_free(c);
}
END_TEST

START_TEST(test_server_errors_arrive_with_code_and_text)
{
    RpcClient *c = open_client();
    g_autoptr(GError) e = NULL;
    ck_assert(!rpc_client_call(c, REMOTE_PROGRAM, 1, 9999, NULL, NULL, NULL, NULL, 5000, &e));
    ck_assert(g_error_matches(e, FERRY_REMOTE_ERROR, FERRY_ERR_NO_SUPPORT));
    ck_assert_str_eq(e->message, "unknown procedure: 9999");
    g_clear_error(&e);

    char *bad = "xen:///system";
    remote_connect_open_args args = {.name = &bad};
    ck_assert(!rpc_client_call(c, REMOTE_PROGRAM, 1, REMOTE_PROC_CONNECT_OPEN,
                               (xdrproc_t)xdr_remote_connect_open_args, &args, NULL, NULL, 5000,
                               &e));
    ck_assert_int_eq(e->code, FERRY_ERR_NO_CONNECT);
    ck_assert_str_eq(e->message, "no connection driver available for xen:///system");
    rpc_client_free(c);
}
END_TEST

/* A peer that accepts bytes and never answers. */
START_TEST(test_call_times_out_against_a_silent_peer)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    RpcClient *c = rpc_client_new_for_fd(sv[0], NULL);
    g_autoptr(GError) e = NULL;
    gint64 start = g_get_monotonic_time();
    ck_assert(!rpc_client_call(c, REMOTE_PROGRAM, 1, REMOTE_PROC_AUTH_LIST, NULL, NULL, NULL,
                               NULL, 300, &e));
    gint64 ms = (g_get_monotonic_time() - start) / 1000;
    ck_assert(g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT));
    ck_assert_int_ge(ms, 290);
    ck_assert_int_lt(ms, 3000);
    rpc_client_free(c);
    close(sv[1]);
}
END_TEST

START_TEST(test_pending_call_fails_when_the_peer_closes)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    RpcClient *c = rpc_client_new_for_fd(sv[0], NULL);
    close(sv[1]);
    g_autoptr(GError) e = NULL;
    ck_assert(!rpc_client_call(c, REMOTE_PROGRAM, 1, REMOTE_PROC_AUTH_LIST, NULL, NULL, NULL,
                               NULL, 5000, &e));
    ck_assert_ptr_nonnull(strstr(e->message, "is closed"));
    rpc_client_free(c);
}
END_TEST

/* A hostile peer answers a call with the call's serial but another
 * procedure's reply (here a body that decodes as the awaited type): the
 * client must refuse it, not hand the caller another call's answer. */
static gpointer answer_with_another_procedure(gpointer data)
{
    int fd = GPOINTER_TO_INT(data);
    guint8 call[28];
    gsize got = 0;
    while (got < sizeof(call)) {
        ssize_t n = read(fd, call + got, sizeof(call) - got);
        if (n <= 0)
            return NULL;
        got += (gsize)n;
    }
    guint32 serial;
    memcpy(&serial, call + 4 + 16, 4); /* length word, then prog vers proc type serial */
    guint32 reply[9] = {g_htonl(36), g_htonl(REMOTE_PROGRAM), g_htonl(1),
                        g_htonl(REMOTE_PROC_CONNECT_GET_VERSION), g_htonl(1 /* REPLY */),
                        serial, g_htonl(0 /* OK */), g_htonl(0), g_htonl(9000000)};
    if (write(fd, reply, sizeof(reply)) != (ssize_t)sizeof(reply))
        return NULL;
    return NULL;
}

START_TEST(test_reply_naming_another_procedure_is_refused)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    GThread *peer = g_thread_new("hostile-peer", answer_with_another_procedure,
                                 GINT_TO_POINTER(sv[1]));
    RpcClient *c = rpc_client_new_for_fd(sv[0], NULL);
    g_autoptr(GError) e = NULL;
    remote_connect_get_lib_version_ret ret = {0};
    ck_assert(!rpc_client_call(c, REMOTE_PROGRAM, 1, REMOTE_PROC_CONNECT_GET_LIB_VERSION, NULL,
                               NULL, (xdrproc_t)xdr_remote_connect_get_lib_version_ret, &ret,
                               10000, &e));
    ck_assert_ptr_nonnull(e);
    ck_assert_msg(strstr(e->message, "protocol violation: the reply to serial") &&
                      strstr(e->message, "procedure 4, the call was program"),
                  "%s", e->message);
    ck_assert(!rpc_client_is_open(c));
    g_thread_join(peer);
    rpc_client_free(c);
    close(sv[1]);
}
END_TEST

static void on_close_count(RpcClient *client, const GError *why, gpointer data)
{
    if (why && strstr(why->message, "keepalive timeout"))
        g_atomic_int_inc((gint *)data);
}

START_TEST(test_client_keepalive_drops_a_dead_peer)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    gint closed_by_keepalive = 0;
    RpcClientCallbacks cb = {.on_close = on_close_count, .data = &closed_by_keepalive};
    RpcClient *c = rpc_client_new_for_fd(sv[0], &cb);
    rpc_client_start_keepalive(c, 1, 1);
    /* The client is marked closed before its on_close callback runs: wait
     * for the callback, not for the mark. rpc_client_free waits for the
     * connection's threads, so no callback outlives this frame. */
    for (int i = 0; i < 100 && g_atomic_int_get(&closed_by_keepalive) == 0; i++)
        g_usleep(100000);
    gint closed = g_atomic_int_get(&closed_by_keepalive);
    gboolean open = rpc_client_is_open(c);
    rpc_client_free(c);
    ck_assert(!open);
    ck_assert_int_eq(closed, 1);
    close(sv[1]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rpc-client");
    /* The daemon is stopped by the fixture even when a check fails, so it
     * never outlives the test holding its output pipes. */
    TCase *td = tcase_create("with-daemon");
    tcase_set_timeout(td, 60);
    tcase_add_checked_fixture(td, start_daemon, stop_daemon);
    tcase_add_test(td, test_calls_from_eight_threads_on_one_connection);
    tcase_add_test(td, test_server_errors_arrive_with_code_and_text);
    suite_add_tcase(s, td);
    TCase *tc = tcase_create("client");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_call_times_out_against_a_silent_peer);
    tcase_add_test(tc, test_pending_call_fails_when_the_peer_closes);
    tcase_add_test(tc, test_client_keepalive_drops_a_dead_peer);
    tcase_add_test(tc, test_reply_naming_another_procedure_is_refused);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
