/* The ferry-vmm test harness: process lifetime (fork/exec with a parent-death
 * signal, so a test killed by its timeout leaves no VMM behind), per-test
 * directories, and asserting QMP helpers. */
#include "vmm-harness.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char *harness_root;
static char *harness_dir;
static GPtrArray *harness_vmms;

/* ---- directories and orphans ---- */

static void harness_remove_tree(const char *path)
{
    GDir *dir = g_dir_open(path, 0, NULL);
    if (dir) {
        const char *name;
        while ((name = g_dir_read_name(dir))) {
            g_autofree char *child = g_build_filename(path, name, NULL);
            struct stat st;
            if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
                harness_remove_tree(child);
            else
                unlink(child);
        }
        g_dir_close(dir);
    }
    rmdir(path);
}

void harness_init(void)
{
    /* Orphans (a VMM whose test process or intermediate parent died) come to us. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    GError *error = NULL;
    harness_root = g_dir_make_tmp("ferry-vmm-test-XXXXXX", &error);
    if (!harness_root) {
        fprintf(stderr, "cannot create a temporary directory: %s\n", error->message);
        exit(1);
    }
}

void harness_finish(void)
{
    /* VMMs of a failed test died with it (parent-death signal) and came to us. */
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    /* Anything still alive is a child of ours now: kill and reap it by pid. */
    GDir *proc = g_dir_open("/proc", 0, NULL);
    const char *name;
    while (proc && (name = g_dir_read_name(proc))) {
        if (!g_ascii_isdigit(name[0]))
            continue;
        g_autofree char *stat_path = g_strdup_printf("/proc/%s/stat", name);
        g_autofree char *text = NULL;
        if (!g_file_get_contents(stat_path, &text, NULL, NULL))
            continue;
        const char *after = strrchr(text, ')');
        int ppid = 0;
        if (after && sscanf(after + 2, "%*c %d", &ppid) == 1 && ppid == getpid()) {
            pid_t pid = (pid_t)atoi(name);
            fprintf(stderr, "harness: killing leftover process %d\n", (int)pid);
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
    }
    if (proc)
        g_dir_close(proc);
    if (!g_getenv("FERRY_TEST_KEEP_DIR"))
        harness_remove_tree(harness_root);
    g_free(harness_root);
}

void harness_setup(void)
{
    static int counter;
    /* Not inherited across fork: the test process itself adopts the VMMs whose
     * intermediate parent it killed, so it can reap them. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    harness_dir = g_strdup_printf("%s/t%d.%d", harness_root, (int)getpid(), counter++);
    ck_assert_int_eq(mkdir(harness_dir, 0700), 0);
    harness_vmms = g_ptr_array_new();
}

char *harness_path(const char *file)
{
    return g_build_filename(harness_dir, file, NULL);
}

static void test_vmm_free(TestVmm *v)
{
    if (v->qmp)
        qmp_client_free(v->qmp);
    g_ptr_array_unref(v->events);
    g_mutex_clear(&v->lock);
    g_cond_clear(&v->cond);
    g_free(v->close_message);
    g_free(v->name);
    g_free(v->qmp_path);
    g_free(v->log_path);
    g_free(v->pidfile);
    g_free(v);
}

static void harness_dump_log(TestVmm *v)
{
    g_autofree char *text = NULL;
    if (g_file_get_contents(v->log_path, &text, NULL, NULL))
        fprintf(stderr, "---- log of VMM '%s' ----\n%s---- end of log ----\n", v->name, text);
}

void harness_teardown(void)
{
    GString *failures = g_string_new(NULL);
    for (guint i = 0; i < harness_vmms->len; i++) {
        TestVmm *v = harness_vmms->pdata[i];
        if (v->reaped)
            continue;
        gboolean quit = FALSE;
        if (v->qmp && qmp_client_is_connected(v->qmp)) {
            g_autoptr(GError) error = NULL;
            g_autoptr(JsonNode) ret = qmp_client_execute(v->qmp, "quit", NULL, 5000, &error);
            quit = ret != NULL;
        }
        int status = 0;
        pid_t got = 0;
        for (int t = 0; t < 1000 && got == 0; t++) {
            got = waitpid(v->pid, &status, WNOHANG);
            if (got == 0)
                g_usleep(10000);
        }
        if (got < 0) {
            g_string_append_printf(failures, "VMM '%s' (pid %d) is not our child: %s; ", v->name,
                                   (int)v->pid, g_strerror(errno));
        } else if (got == 0) {
            kill(v->pid, SIGKILL);
            waitpid(v->pid, &status, 0);
            g_string_append_printf(failures, "VMM '%s' did not exit after quit; ", v->name);
        } else if (quit && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            /* Under the sanitizer build this is where ferry-vmm's leaks show. */
            harness_dump_log(v);
            g_string_append_printf(failures, "VMM '%s' exited with wait status 0x%x after quit; ",
                                   v->name, status);
        }
        v->reaped = TRUE;
    }
    for (guint i = 0; i < harness_vmms->len; i++)
        test_vmm_free(harness_vmms->pdata[i]);
    g_ptr_array_unref(harness_vmms);
    harness_vmms = NULL;
    if (!g_getenv("FERRY_TEST_KEEP_DIR"))
        harness_remove_tree(harness_dir);
    g_clear_pointer(&harness_dir, g_free);
    g_autofree char *msg = g_string_free(failures, FALSE);
    ck_assert_msg(msg[0] == '\0', "%s", msg);
}

/* ---- processes ---- */

static void test_vmm_on_event(QmpClient *c, const char *event, JsonObject *data, gint64 ts,
                              gpointer user_data)
{
    TestVmm *v = user_data;
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "event", event);
    JsonNode *d = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(d, data);
    json_object_set_member(o, "data", json_node_copy(d));
    json_node_unref(d);
    g_mutex_lock(&v->lock);
    g_ptr_array_add(v->events, o);
    g_cond_broadcast(&v->cond);
    g_mutex_unlock(&v->lock);
}

static void test_vmm_on_close(QmpClient *c, const GError *error, gpointer user_data)
{
    TestVmm *v = user_data;
    g_mutex_lock(&v->lock);
    v->closes++;
    g_free(v->close_message);
    v->close_message = g_strdup(error ? error->message : "(no error)");
    g_cond_broadcast(&v->cond);
    g_mutex_unlock(&v->lock);
}

static TestVmm *test_vmm_new(const char *name)
{
    TestVmm *v = g_new0(TestVmm, 1);
    v->name = g_strdup(name);
    g_autofree char *qmp = g_strdup_printf("%s.qmp", name);
    g_autofree char *log = g_strdup_printf("%s.log", name);
    g_autofree char *pid = g_strdup_printf("%s.pid", name);
    v->qmp_path = harness_path(qmp);
    v->log_path = harness_path(log);
    v->pidfile = harness_path(pid);
    g_mutex_init(&v->lock);
    g_cond_init(&v->cond);
    v->events = g_ptr_array_new_with_free_func((GDestroyNotify)json_object_unref);
    return v;
}

static GPtrArray *test_vmm_argv(TestVmm *v, va_list ap)
{
    const char *bin = g_getenv("FERRY_VMM");
    ck_assert_msg(bin != NULL, "FERRY_VMM (path of ferry-vmm) is not set");
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    const char *fixed[] = {bin,     "--name",    v->name,     "--qmp",   v->qmp_path,
                           "--log", v->log_path, "--pidfile", v->pidfile};
    for (guint i = 0; i < G_N_ELEMENTS(fixed); i++)
        g_ptr_array_add(argv, g_strdup(fixed[i]));
    const char *arg;
    while ((arg = va_arg(ap, const char *)))
        g_ptr_array_add(argv, g_strdup(arg));
    g_ptr_array_add(argv, NULL);
    return argv;
}

static void test_vmm_connect(TestVmm *v)
{
    g_autoptr(GError) error = NULL;
    v->qmp =
        qmp_client_connect(v->qmp_path, 30000, test_vmm_on_event, test_vmm_on_close, v, &error);
    if (!v->qmp)
        harness_dump_log(v);
    ck_assert_msg(v->qmp != NULL, "cannot connect to VMM '%s': %s", v->name, error->message);
}

TestVmm *test_vmm_start(const char *name, ...)
{
    TestVmm *v = test_vmm_new(name);
    va_list ap;
    va_start(ap, name);
    g_autoptr(GPtrArray) argv = test_vmm_argv(v, ap);
    va_end(ap);

    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Dies with the test process, even when Check kills it on a timeout. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        execv(argv->pdata[0], (char **)argv->pdata);
        _exit(127);
    }
    v->pid = pid;
    g_ptr_array_add(harness_vmms, v);
    test_vmm_connect(v);
    return v;
}

TestVmm *test_vmm_start_via_parent(const char *name, GPid *parent_out, ...)
{
    TestVmm *v = test_vmm_new(name);
    va_list ap;
    va_start(ap, parent_out);
    g_autoptr(GPtrArray) argv = test_vmm_argv(v, ap);
    va_end(ap);

    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t parent = fork();
    ck_assert_int_ge(parent, 0);
    if (parent == 0) {
        /* The intermediate: starts the VMM (no parent-death signal: it must
         * survive us), reports its pid, and waits to be killed. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(fds[0]);
        pid_t vmm = fork();
        if (vmm == 0) {
            close(fds[1]);
            execv(argv->pdata[0], (char **)argv->pdata);
            _exit(127);
        }
        if (write(fds[1], &vmm, sizeof(vmm)) != sizeof(vmm))
            _exit(1);
        for (;;)
            pause();
    }
    close(fds[1]);
    pid_t vmm = 0;
    ck_assert_int_eq(read(fds[0], &vmm, sizeof(vmm)), sizeof(vmm));
    close(fds[0]);
    ck_assert_int_gt(vmm, 0);
    v->pid = vmm;
    *parent_out = parent;
    g_ptr_array_add(harness_vmms, v);
    test_vmm_connect(v);
    return v;
}

void test_vmm_disconnect(TestVmm *v)
{
    g_clear_pointer(&v->qmp, qmp_client_free);
}

void test_vmm_reconnect(TestVmm *v)
{
    test_vmm_disconnect(v);
    test_vmm_connect(v);
}

void test_vmm_signal(TestVmm *v, int sig)
{
    ck_assert_int_eq(kill(v->pid, sig), 0);
}

int test_vmm_wait_exit(TestVmm *v, int timeout_ms)
{
    if (v->reaped)
        return v->status;
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        int status;
        pid_t got = waitpid(v->pid, &status, WNOHANG);
        ck_assert_int_ge(got, 0);
        if (got == v->pid) {
            v->reaped = TRUE;
            v->status = status;
            return status;
        }
        g_usleep(10000);
    }
    ck_abort_msg("VMM '%s' (pid %d) did not exit within %d ms", v->name, (int)v->pid, timeout_ms);
    return -1;
}

/* ---- QMP helpers ---- */

static JsonObject *test_parse_args(const char *fmt, va_list ap)
{
    if (!fmt)
        return NULL;
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    g_strdelimit(text, "'", '"');
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) error = NULL;
    ck_assert_msg(json_parser_load_from_data(parser, text, -1, &error), "bad test JSON %s: %s",
                  text, error ? error->message : "");
    return json_object_ref(json_node_get_object(json_parser_get_root(parser)));
}

JsonNode *test_vmm_exec(TestVmm *v, const char *command, const char *args_fmt, ...)
{
    va_list ap;
    va_start(ap, args_fmt);
    g_autoptr(JsonObject) args = test_parse_args(args_fmt, ap);
    va_end(ap);
    g_autoptr(GError) error = NULL;
    JsonNode *ret = qmp_client_execute(v->qmp, command, args, TEST_QMP_TIMEOUT_MS, &error);
    ck_assert_msg(ret != NULL, "%s on VMM '%s' failed: %s", command, v->name, error->message);
    return ret;
}

char *test_vmm_exec_fail(TestVmm *v, const char *command, const char *args_fmt, ...)
{
    va_list ap;
    va_start(ap, args_fmt);
    g_autoptr(JsonObject) args = test_parse_args(args_fmt, ap);
    va_end(ap);
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonNode) ret =
        qmp_client_execute(v->qmp, command, args, TEST_QMP_TIMEOUT_MS, &error);
    ck_assert_msg(ret == NULL, "%s on VMM '%s' succeeded, expected an error", command, v->name);
    return g_strdup(error->message);
}

JsonObject *test_vmm_query(TestVmm *v, const char *command)
{
    g_autoptr(JsonNode) ret = test_vmm_exec(v, command, NULL);
    ck_assert(JSON_NODE_HOLDS_OBJECT(ret));
    return json_object_ref(json_node_get_object(ret));
}

void test_vmm_pass_fd(TestVmm *v, const char *fdname, int fd)
{
    g_autoptr(GError) error = NULL;
    ck_assert_msg(qmp_client_pass_fd(v->qmp, fdname, fd, TEST_QMP_TIMEOUT_MS, &error),
                  "getfd on VMM '%s' failed: %s", v->name, error ? error->message : "");
}

char *test_vmm_digest(TestVmm *v)
{
    g_autoptr(JsonObject) o = test_vmm_query(v, "ferry-query-digest");
    const char *digest = json_object_get_string_member(o, "digest");
    ck_assert_int_eq(strlen(digest), 32);
    return g_strdup(digest);
}

const char *test_vmm_status(TestVmm *v)
{
    static const char *const known[] = {"running",     "paused",         "inmigrate",
                                        "postmigrate", "finish-migrate", "internal-error",
                                        "shutdown"};
    g_autoptr(JsonObject) o = test_vmm_query(v, "query-status");
    const char *status = json_object_get_string_member(o, "status");
    for (guint i = 0; i < G_N_ELEMENTS(known); i++)
        if (g_str_equal(status, known[i]))
            return known[i];
    ck_abort_msg("unknown run state '%s'", status);
    return NULL;
}

static gboolean test_status_final(const char *status)
{
    return g_str_equal(status, "completed") || g_str_equal(status, "failed") ||
           g_str_equal(status, "cancelled");
}

JsonObject *test_vmm_wait_migration(TestVmm *v, int timeout_ms)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        JsonObject *o = test_vmm_query(v, "query-migrate");
        if (test_status_final(json_object_get_string_member(o, "status")))
            return o;
        g_autofree char *last = g_strdup(json_object_get_string_member(o, "status"));
        json_object_unref(o);
        ck_assert_msg(g_get_monotonic_time() < deadline,
                      "migration on VMM '%s' did not end within %d ms (status %s)", v->name,
                      timeout_ms, last);
        g_usleep(20000);
    }
}

JsonObject *test_vmm_wait_progress(TestVmm *v, guint64 bytes, int timeout_ms)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        JsonObject *o = test_vmm_query(v, "query-migrate");
        const char *status = json_object_get_string_member(o, "status");
        ck_assert_msg(!test_status_final(status), "migration on VMM '%s' ended (%s) early: %s",
                      v->name, status,
                      json_object_get_string_member_with_default(o, "error-desc", ""));
        if (g_str_equal(status, "active") && (guint64)test_json_int(o, "ram.transferred") >= bytes)
            return o;
        json_object_unref(o);
        ck_assert_msg(g_get_monotonic_time() < deadline,
                      "migration on VMM '%s' did not move %" G_GUINT64_FORMAT " bytes in %d ms",
                      v->name, bytes, timeout_ms);
        g_usleep(10000);
    }
}

static gboolean test_event_matches(JsonObject *ev, const char *event, const char *status)
{
    if (!g_str_equal(json_object_get_string_member(ev, "event"), event))
        return FALSE;
    if (!status)
        return TRUE;
    JsonObject *data = json_object_get_object_member(ev, "data");
    return g_strcmp0(json_object_get_string_member_with_default(data, "status", NULL), status) == 0;
}

gboolean test_vmm_has_event(TestVmm *v, const char *event, const char *status)
{
    gboolean found = FALSE;
    g_mutex_lock(&v->lock);
    for (guint i = 0; i < v->events->len && !found; i++)
        found = test_event_matches(v->events->pdata[i], event, status);
    g_mutex_unlock(&v->lock);
    return found;
}

gboolean test_vmm_wait_event(TestVmm *v, const char *event, int timeout_ms)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    g_mutex_lock(&v->lock);
    gboolean found = FALSE;
    for (;;) {
        for (guint i = 0; i < v->events->len && !found; i++)
            found = test_event_matches(v->events->pdata[i], event, NULL);
        if (found || !g_cond_wait_until(&v->cond, &v->lock, deadline))
            break;
    }
    g_mutex_unlock(&v->lock);
    return found;
}

static JsonNode *test_json_member(JsonObject *o, const char *path)
{
    g_auto(GStrv) parts = g_strsplit(path, ".", -1);
    JsonNode *n = NULL;
    for (guint i = 0; parts[i]; i++) {
        ck_assert_msg(o != NULL, "'%s' is not an object path", path);
        n = json_object_get_member(o, parts[i]);
        ck_assert_msg(n != NULL, "no member '%s'", path);
        o = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
    }
    return n;
}

gint64 test_json_int(JsonObject *o, const char *path)
{
    JsonNode *n = test_json_member(o, path);
    ck_assert_msg(JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64,
                  "'%s' is not an integer", path);
    return json_node_get_int(n);
}

const char *test_json_str(JsonObject *o, const char *path)
{
    JsonNode *n = test_json_member(o, path);
    ck_assert_msg(JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING,
                  "'%s' is not a string", path);
    return json_node_get_string(n);
}
