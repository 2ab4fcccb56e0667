/* ferry-vmm as a QMP server and as a process: bad input gets QEMU-style error
 * replies (never a crash), one client at a time with reconnects, orderly exits
 * that leave no files, and a VM that outlives its parent. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmm-harness.h"

/* ---- a raw QMP connection, to send what no client library would ---- */

typedef struct {
    int fd;
    GString *in;
} Raw;

static Raw *raw_connect(const char *path)
{
    Raw *r = g_new0(Raw, 1);
    r->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(r->fd, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    ck_assert_int_eq(connect(r->fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    r->in = g_string_new(NULL);
    return r;
}

static void raw_close(Raw *r)
{
    close(r->fd);
    g_string_free(r->in, TRUE);
    g_free(r);
}

/* FALSE once the VMM closed the connection. */
static gboolean raw_try_send(Raw *r, const char *text)
{
    gsize len = strlen(text);
    while (len) {
        ssize_t n = send(r->fd, text, len, MSG_NOSIGNAL);
        if (n <= 0)
            return FALSE;
        text += n;
        len -= (gsize)n;
    }
    return TRUE;
}

static void raw_send(Raw *r, const char *text)
{
    gsize len = strlen(text);
    while (len) {
        ssize_t n = send(r->fd, text, len, MSG_NOSIGNAL);
        ck_assert_msg(n > 0, "send: %s", g_strerror(errno));
        text += n;
        len -= (gsize)n;
    }
}

/* Next line from the VMM, or NULL on EOF / after timeout_ms. */
static char *raw_line(Raw *r, int timeout_ms)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        char *nl = strchr(r->in->str, '\n');
        if (nl) {
            char *line = g_strndup(r->in->str, (gsize)(nl - r->in->str));
            g_string_erase(r->in, 0, nl - r->in->str + 1);
            return g_strstrip(line);
        }
        gint64 left = (deadline - g_get_monotonic_time()) / 1000;
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return NULL;
        char buf[4096];
        ssize_t n = recv(r->fd, buf, sizeof(buf), 0);
        if (n <= 0)
            return NULL;
        g_string_append_len(r->in, buf, n);
    }
}

/* The next message that is not an event. */
static JsonObject *raw_reply(Raw *r)
{
    for (;;) {
        g_autofree char *line = raw_line(r, 5000);
        ck_assert_msg(line != NULL, "no reply from the VMM");
        g_autoptr(JsonParser) parser = json_parser_new();
        ck_assert_msg(json_parser_load_from_data(parser, line, -1, NULL), "bad JSON: %s", line);
        JsonObject *o = json_node_get_object(json_parser_get_root(parser));
        if (!json_object_has_member(o, "event"))
            return json_object_ref(o);
    }
}

static void raw_expect_error(Raw *r, const char *input, const char *klass, const char *desc,
                             const char *id)
{
    raw_send(r, input);
    g_autoptr(JsonObject) reply = raw_reply(r);
    ck_assert_msg(json_object_has_member(reply, "error"), "no error for %s", input);
    JsonObject *err = json_object_get_object_member(reply, "error");
    ck_assert_str_eq(json_object_get_string_member(err, "class"), klass);
    ck_assert_msg(strstr(json_object_get_string_member(err, "desc"), desc), "desc '%s' for %s",
                  json_object_get_string_member(err, "desc"), input);
    /* id NULL: the input had none the VMM could read, so the reply has none. */
    if (id)
        ck_assert_str_eq(json_object_get_string_member(reply, "id"), id);
    else
        ck_assert(!json_object_has_member(reply, "id"));
}

static void raw_expect_return(Raw *r, const char *input)
{
    raw_send(r, input);
    g_autoptr(JsonObject) reply = raw_reply(r);
    ck_assert_msg(json_object_has_member(reply, "return"), "no return for %s", input);
}

static Raw *raw_connect_greeted(TestVmm *v)
{
    Raw *r = raw_connect(v->qmp_path);
    g_autofree char *greeting = raw_line(r, 5000);
    ck_assert_msg(greeting && strstr(greeting, "\"QMP\"") && strstr(greeting, "\"capabilities\""),
                  "greeting: %s", greeting ? greeting : "(none)");
    return r;
}

START_TEST(test_qmp_bad_input_gets_error_reply)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    test_vmm_disconnect(v);
    Raw *r = raw_connect_greeted(v);

    raw_expect_error(r, "{\"execute\": \"query-status\", \"id\": \"a\"}", "CommandNotFound",
                     "Expecting capabilities negotiation with 'qmp_capabilities'", "a");
    raw_expect_error(r, "garbage\n", "GenericError", "JSON parse error", NULL);
    raw_expect_return(r, "{\"execute\": \"qmp_capabilities\"}");
    raw_expect_error(r, "{\"execute\": \"qmp_capabilities\", \"id\": \"b\"}", "CommandNotFound",
                     "already complete", "b");
    raw_expect_error(r, "{\"execute\": \"no-such-command\", \"id\": \"c\"}", "CommandNotFound",
                     "The command no-such-command has not been found", "c");
    raw_expect_error(r, "{\"execute\": \"migrate\", \"id\": \"d\"}", "GenericError",
                     "Parameter 'uri' is missing", "d");
    raw_expect_error(r, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": 5}, \"id\": \"e\"}",
                     "GenericError", "Invalid parameter type for 'uri', expected: string", "e");
    raw_expect_error(r, "{\"execute\": \"stop\", \"arguments\": {\"now\": true}, \"id\": \"f\"}",
                     "GenericError", "Parameter 'now' is unexpected", "f");
    raw_expect_error(r,
                     "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:10.0.0.1:4444\"}, "
                     "\"id\": \"g\"}",
                     "GenericError", "unix:PATH", "g");
    raw_expect_error(r,
                     "{\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"x\"}, \"id\": \"h\"}",
                     "GenericError", "No file descriptor supplied via SCM_RIGHTS", "h");
    raw_expect_error(
        r, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"fd:nothing\"}, \"id\": \"i\"}",
        "GenericError", "'nothing' has not been found", "i");
    raw_expect_error(
        r,
        "{\"execute\": \"migrate-incoming\", \"arguments\": {\"uri\": \"unix:/x\"}, \"id\": \"j\"}",
        "GenericError", "'-incoming' was not specified", "j");
    raw_expect_error(r,
                     "{\"execute\": \"ferry-set-workload\", \"arguments\": {\"pattern\": "
                     "\"zigzag\"}, \"id\": \"k\"}",
                     "GenericError", "'random' or 'sequential'", "k");
    raw_expect_error(r,
                     "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"max-bandwidth\": "
                     "-1}, \"id\": \"l\"}",
                     "GenericError", "non-negative", "l");
    raw_expect_error(r, "[1, 2, 3]", "GenericError", "QMP input must be a JSON object", NULL);
    raw_expect_error(r, "{\"exec\": \"stop\"}", "GenericError",
                     "QMP input member 'exec' is unexpected", NULL);
    raw_expect_error(r, "{\"id\": \"m\"}", "GenericError", "QMP input lacks member 'execute'", "m");
    raw_expect_error(r, "{\"execute\": [\"stop\"]}", "GenericError", "'execute' must be a string",
                     NULL);
    raw_expect_error(r, "{\"execute\": \"stop\", \"arguments\": []}", "GenericError",
                     "'arguments' must be an object", NULL);
    raw_expect_error(r, "{\"execute\": }", "GenericError", "JSON parse error", NULL);
    /* Split anywhere, even inside a string with braces in it: still one command. */
    raw_send(r, "{\"execute\": \"query-name\", \"id\": \"{\\\"}");
    raw_send(r, "\"}");
    g_autoptr(JsonObject) reply = raw_reply(r);
    ck_assert_str_eq(json_object_get_string_member(reply, "id"), "{\"}");

    /* Still serving, state untouched. */
    raw_send(r, "{\"execute\": \"query-status\"}");
    g_autoptr(JsonObject) status = raw_reply(r);
    ck_assert_str_eq(
        json_object_get_string_member(json_object_get_object_member(status, "return"), "status"),
        "running");
    raw_close(r);
    test_vmm_reconnect(v);
    ck_assert_str_eq(test_vmm_status(v), "running");
}
END_TEST

START_TEST(test_qmp_oversized_message_closes_only_that_client)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    test_vmm_disconnect(v);
    Raw *r = raw_connect_greeted(v);
    raw_expect_return(r, "{\"execute\": \"qmp_capabilities\"}");
    g_autofree char *huge = g_strnfill(2 * 1024 * 1024, 'a');
    raw_send(r, "{\"execute\": \"");
    /* The VMM may hang up before it read all of it. */
    raw_try_send(r, huge);
    g_autoptr(JsonObject) reply = raw_reply(r);
    ck_assert(json_object_has_member(reply, "error"));
    g_autofree char *eof = raw_line(r, 5000);
    ck_assert_msg(eof == NULL, "connection still open: %s", eof);
    raw_close(r);

    test_vmm_reconnect(v);
    ck_assert_str_eq(test_vmm_status(v), "running");
}
END_TEST

START_TEST(test_qmp_serves_one_client_then_the_next)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    test_vmm_disconnect(v);
    Raw *first = raw_connect_greeted(v);
    /* A second client waits in the backlog, as with QEMU... */
    Raw *second = raw_connect(v->qmp_path);
    g_autofree char *early = raw_line(second, 300);
    ck_assert_msg(early == NULL, "second client greeted while the first is connected: %s", early);
    raw_expect_return(first, "{\"execute\": \"qmp_capabilities\"}");
    raw_close(first);
    /* ...and is served as soon as the first leaves (a restarted daemon reconnecting). */
    g_autofree char *greeting = raw_line(second, 5000);
    ck_assert_msg(greeting && strstr(greeting, "\"QMP\""), "no greeting after the first left");
    raw_expect_return(second, "{\"execute\": \"qmp_capabilities\"}");
    raw_expect_return(second, "{\"execute\": \"query-status\"}");
    raw_close(second);
    test_vmm_reconnect(v);
}
END_TEST

START_TEST(test_qmp_getfd_and_closefd_manage_named_fds)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    test_vmm_pass_fd(v, "one", p[0]);
    test_vmm_pass_fd(v, "one", p[1]); /* replaces (and closes) the first */
    close(p[0]);
    close(p[1]);
    json_node_unref(test_vmm_exec(v, "closefd", "{'fdname': 'one'}"));
    g_autofree char *again = test_vmm_exec_fail(v, "closefd", "{'fdname': 'one'}");
    ck_assert_msg(strstr(again, "File descriptor named 'one' not found"), "%s", again);
    /* A refused getfd consumes its fd: the next getfd without one gets none. */
    ck_assert_int_eq(pipe(p), 0);
    g_autoptr(GError) refused_fd = NULL;
    ck_assert(!qmp_client_pass_fd(v->qmp, "1x", p[0], TEST_QMP_TIMEOUT_MS, &refused_fd));
    ck_assert_msg(strstr(refused_fd->message, "not starting with a digit"), "%s",
                  refused_fd->message);
    close(p[0]);
    close(p[1]);
    g_autofree char *none = test_vmm_exec_fail(v, "getfd", "{'fdname': 'two'}");
    ck_assert_msg(strstr(none, "No file descriptor supplied"), "%s", none);

    /* A pipe cannot carry a migration (both directions are needed). */
    ck_assert_int_eq(pipe(p), 0);
    test_vmm_pass_fd(v, "pipe", p[1]);
    close(p[0]);
    close(p[1]);
    g_autofree char *refused = test_vmm_exec_fail(v, "migrate", "{'uri': 'fd:pipe'}");
    ck_assert_msg(strstr(refused, "not a socket"), "%s", refused);
    ck_assert_str_eq(test_vmm_status(v), "running");
}
END_TEST

START_TEST(test_vmm_quit_exits_cleanly_and_removes_its_files)
{
    TestVmm *v =
        test_vmm_start("vm", "--memory", "32M", "--dirty-rate", "10M", "--vcpus", "3", NULL);
    g_autofree char *pid_text = NULL;
    ck_assert(g_file_get_contents(v->pidfile, &pid_text, NULL, NULL));
    ck_assert_int_eq(atoi(pid_text), v->pid);
    g_autoptr(JsonObject) name = test_vmm_query(v, "query-name");
    ck_assert_str_eq(test_json_str(name, "name"), "vm");

    json_node_unref(test_vmm_exec(v, "quit", NULL));
    int status = test_vmm_wait_exit(v, 10000);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "wait status 0x%x", status);
    ck_assert(test_vmm_wait_event(v, "SHUTDOWN", 1000));
    ck_assert(!g_file_test(v->qmp_path, G_FILE_TEST_EXISTS));
    ck_assert(!g_file_test(v->pidfile, G_FILE_TEST_EXISTS));
}
END_TEST

START_TEST(test_vmm_powerdown_shuts_down_gracefully)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    json_node_unref(test_vmm_exec(v, "system_powerdown", NULL));
    int status = test_vmm_wait_exit(v, 10000);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "wait status 0x%x", status);
    ck_assert(test_vmm_wait_event(v, "POWERDOWN", 1000));
    ck_assert(test_vmm_wait_event(v, "SHUTDOWN", 1000));
    g_mutex_lock(&v->lock);
    JsonObject *last = v->events->pdata[v->events->len - 1];
    JsonObject *data = json_object_get_object_member(last, "data");
    ck_assert(json_object_get_boolean_member(data, "guest"));
    ck_assert_str_eq(json_object_get_string_member(data, "reason"), "guest-shutdown");
    g_mutex_unlock(&v->lock);
}
END_TEST

START_TEST(test_vmm_sigterm_shuts_down)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    test_vmm_signal(v, SIGTERM);
    int status = test_vmm_wait_exit(v, 10000);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "wait status 0x%x", status);
    ck_assert(test_vmm_wait_event(v, "SHUTDOWN", 1000));
}
END_TEST

START_TEST(test_vmm_survives_parent_death)
{
    GPid parent;
    TestVmm *v =
        test_vmm_start_via_parent("vm", &parent, "--memory", "16M", "--dirty-rate", "1M", NULL);
    g_autofree char *before = test_vmm_digest(v);
    ck_assert_int_eq(kill(parent, SIGKILL), 0);
    ck_assert_int_eq(waitpid(parent, NULL, 0), parent);
    g_usleep(200000);
    /* Same connection, same VM, still running its guest. */
    ck_assert_str_eq(test_vmm_status(v), "running");
    g_autofree char *after = test_vmm_digest(v);
    ck_assert_str_ne(before, after);
    /* And a new client (the restarted daemon) gets in. */
    test_vmm_reconnect(v);
    ck_assert_str_eq(test_vmm_status(v), "running");
}
END_TEST

START_TEST(test_vmm_stop_freezes_guest_memory_and_cont_resumes)
{
    TestVmm *v =
        test_vmm_start("vm", "--memory", "32M", "--dirty-rate", "20M", "--seed", "3", NULL);
    json_node_unref(test_vmm_exec(v, "stop", NULL));
    ck_assert(test_vmm_wait_event(v, "STOP", 1000));
    ck_assert_str_eq(test_vmm_status(v), "paused");
    g_autofree char *d1 = test_vmm_digest(v);
    g_usleep(200000);
    g_autofree char *d2 = test_vmm_digest(v);
    ck_assert_str_eq(d1, d2);
    g_autoptr(JsonObject) idle = test_vmm_query(v, "ferry-query-workload");
    ck_assert(!json_object_get_boolean_member(idle, "active"));

    json_node_unref(test_vmm_exec(v, "cont", NULL));
    ck_assert(test_vmm_wait_event(v, "RESUME", 1000));
    ck_assert_str_eq(test_vmm_status(v), "running");
    g_usleep(200000);
    g_autofree char *d3 = test_vmm_digest(v);
    ck_assert_str_ne(d2, d3);
    g_autoptr(JsonObject) busy = test_vmm_query(v, "ferry-query-workload");
    ck_assert(json_object_get_boolean_member(busy, "active"));
    ck_assert_int_eq(test_json_int(busy, "dirty-rate"), 20 * 1024 * 1024);
    ck_assert_int_gt(test_json_int(busy, "dirtied-bytes"), 0);

    /* A rate change applies at once; 0 stops the writes. */
    json_node_unref(test_vmm_exec(v, "ferry-set-workload", "{'dirty-rate': 0}"));
    g_usleep(50000);
    g_autofree char *d4 = test_vmm_digest(v);
    g_usleep(200000);
    g_autofree char *d5 = test_vmm_digest(v);
    ck_assert_str_eq(d4, d5);
}
END_TEST

START_TEST(test_vmm_ram_is_a_function_of_the_seed)
{
    TestVmm *a = test_vmm_start("a", "--memory", "16M", "--seed", "42", NULL);
    TestVmm *b = test_vmm_start("b", "--memory", "16M", "--seed", "42", "--vcpus", "4", NULL);
    TestVmm *c = test_vmm_start("c", "--memory", "16M", "--seed", "43", NULL);
    g_autofree char *da = test_vmm_digest(a);
    g_autofree char *db = test_vmm_digest(b);
    g_autofree char *dc = test_vmm_digest(c);
    ck_assert_str_eq(da, db);
    ck_assert_str_ne(da, dc);
}
END_TEST

static void check_bad_command_line(const char *const *args, const char *want)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_ptr_array_add(argv, (gpointer)g_getenv("FERRY_VMM"));
    for (guint i = 0; args[i]; i++)
        g_ptr_array_add(argv, (gpointer)args[i]);
    g_ptr_array_add(argv, NULL);
    g_autofree char *err = NULL;
    int status = 0;
    g_autoptr(GError) error = NULL;
    ck_assert(g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                           NULL, &err, &status, &error));
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) != 0, "accepted: %s", want);
    ck_assert_msg(strstr(err, want), "stderr '%s' lacks '%s'", err, want);
}

START_TEST(test_vmm_rejects_bad_command_line)
{
    g_autofree char *qmp = harness_path("x.qmp");
    check_bad_command_line((const char *[]){"--qmp", qmp, NULL}, "--memory and --qmp are required");
    check_bad_command_line((const char *[]){"--memory", "1000", "--qmp", qmp, NULL},
                           "not a positive multiple of 4096");
    check_bad_command_line((const char *[]){"--memory", "16Q", "--qmp", qmp, NULL},
                           "invalid memory size");
    check_bad_command_line(
        (const char *[]){"--memory", "16M", "--qmp", qmp, "--dirty-pattern", "zigzag", NULL},
        "--dirty-pattern");
    check_bad_command_line(
        (const char *[]){"--memory", "16M", "--qmp", qmp, "--incoming", "tcp:1", NULL},
        "--incoming");
    ck_assert(!g_file_test(qmp, G_FILE_TEST_EXISTS));
}
END_TEST

static Suite *qmp_suite(void)
{
    Suite *s = suite_create("vmm-qmp");
    TEST_ADD(s, test_qmp_bad_input_gets_error_reply, 30);
    TEST_ADD(s, test_qmp_oversized_message_closes_only_that_client, 30);
    TEST_ADD(s, test_qmp_serves_one_client_then_the_next, 30);
    TEST_ADD(s, test_qmp_getfd_and_closefd_manage_named_fds, 30);
    TEST_ADD(s, test_vmm_quit_exits_cleanly_and_removes_its_files, 30);
    TEST_ADD(s, test_vmm_powerdown_shuts_down_gracefully, 30);
    TEST_ADD(s, test_vmm_sigterm_shuts_down, 30);
    TEST_ADD(s, test_vmm_survives_parent_death, 30);
    TEST_ADD(s, test_vmm_stop_freezes_guest_memory_and_cont_resumes, 30);
    TEST_ADD(s, test_vmm_ram_is_a_function_of_the_seed, 30);
    TEST_ADD(s, test_vmm_rejects_bad_command_line, 30);
    return s;
}

TEST_RUN_SUITE(qmp_suite)
