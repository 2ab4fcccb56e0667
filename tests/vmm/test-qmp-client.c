/* The daemon's QMP client against a real ferry-vmm: it notices a dead VMM at
 * once (exactly one close callback), matches replies to concurrent callers,
 * times out on a frozen VMM, and can be freed from anywhere. */
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "driver/vmm-process.h"
#include "rpc/rpc-socket.h"
#include "util/error.h"
#include "vmm-harness.h"

START_TEST(test_qmp_client_close_callback_fires_when_vmm_killed)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    test_vmm_signal(v, SIGKILL);
    gint64 t0 = g_get_monotonic_time();
    g_mutex_lock(&v->lock);
    while (v->closes == 0 && g_cond_wait_until(&v->cond, &v->lock, t0 + 2 * G_USEC_PER_SEC))
        ;
    g_mutex_unlock(&v->lock);
    ck_assert_msg(v->closes == 1, "close callback ran %d times", v->closes);
    ck_assert_int_lt(g_get_monotonic_time() - t0, G_USEC_PER_SEC);
    ck_assert_msg(strstr(v->close_message, "closed by the VMM"), "%s", v->close_message);
    ck_assert(!qmp_client_is_connected(v->qmp));

    g_autoptr(GError) error = NULL;
    g_autoptr(JsonNode) ret = qmp_client_execute(v->qmp, "query-status", NULL, 1000, &error);
    ck_assert(ret == NULL);
    ck_assert_msg(strstr(error->message, "closed by the VMM"), "%s", error->message);
    ck_assert_int_eq(WTERMSIG(test_vmm_wait_exit(v, 5000)), SIGKILL);
    g_usleep(100000);
    ck_assert_int_eq(v->closes, 1);
}
END_TEST

typedef struct {
    TestVmm *v;
    int index;
    int ok;
} Worker;

static gpointer worker_main(gpointer data)
{
    Worker *w = data;
    for (int i = 0; i < 100; i++) {
        gboolean name = (i + w->index) % 2 == 0;
        g_autoptr(GError) error = NULL;
        g_autoptr(JsonNode) ret =
            qmp_client_execute(w->v->qmp, name ? "query-name" : "query-uuid", NULL, 10000, &error);
        if (!ret)
            continue;
        JsonObject *o = json_node_get_object(ret);
        /* A reply for another caller's command would carry the other member. */
        if (name ? json_object_has_member(o, "name") : json_object_has_member(o, "UUID"))
            w->ok++;
        if (w->index == 0 && i % 10 == 0) {
            json_node_unref(qmp_client_execute(w->v->qmp, "stop", NULL, 10000, NULL));
            json_node_unref(qmp_client_execute(w->v->qmp, "cont", NULL, 10000, NULL));
        }
    }
    return NULL;
}

START_TEST(test_qmp_client_matches_replies_of_concurrent_callers)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", "--uuid",
                                "6f1e1c3a-9a41-4c2b-8e55-0c7d2b1f9a10", NULL);
    Worker workers[4];
    GThread *threads[4];
    for (int i = 0; i < 4; i++) {
        workers[i] = (Worker){.v = v, .index = i};
        threads[i] = g_thread_new("worker", worker_main, &workers[i]);
    }
    for (int i = 0; i < 4; i++) {
        g_thread_join(threads[i]);
        ck_assert_int_eq(workers[i].ok, 100);
    }
    /* Events were delivered alongside. */
    ck_assert(test_vmm_wait_event(v, "STOP", 1000));
    ck_assert(test_vmm_wait_event(v, "RESUME", 1000));
    g_autoptr(JsonObject) uuid = test_vmm_query(v, "query-uuid");
    ck_assert_str_eq(test_json_str(uuid, "UUID"), "6f1e1c3a-9a41-4c2b-8e55-0c7d2b1f9a10");
}
END_TEST

START_TEST(test_qmp_client_times_out_on_frozen_vmm)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    test_vmm_signal(v, SIGSTOP);
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonNode) ret = qmp_client_execute(v->qmp, "query-name", NULL, 300, &error);
    gint64 ms = (g_get_monotonic_time() - t0) / 1000;
    ck_assert(ret == NULL);
    ck_assert(g_error_matches(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT));
    ck_assert_msg(ms >= 290 && ms < 2000, "timed out after %" G_GINT64_FORMAT " ms", ms);

    /* Thawed: the late reply is dropped, the next command gets its own. */
    test_vmm_signal(v, SIGCONT);
    g_autoptr(JsonObject) status = test_vmm_query(v, "query-status");
    ck_assert_str_eq(test_json_str(status, "status"), "running");
    ck_assert(qmp_client_is_connected(v->qmp));
}
END_TEST

START_TEST(test_qmp_client_error_reply_becomes_gerror)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    g_autoptr(GError) e1 = NULL;
    g_autoptr(JsonNode) r1 = qmp_client_execute(v->qmp, "no-such-thing", NULL, 5000, &e1);
    ck_assert(r1 == NULL);
    ck_assert(g_error_matches(e1, FERRY_ERROR, FERRY_ERR_OPERATION_UNSUPPORTED));
    ck_assert_str_eq(e1->message, "The command no-such-thing has not been found");

    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_int_member(args, "uri", 3);
    g_autoptr(GError) e2 = NULL;
    g_autoptr(JsonNode) r2 = qmp_client_execute(v->qmp, "migrate", args, 5000, &e2);
    ck_assert(r2 == NULL);
    ck_assert(g_error_matches(e2, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED));
    ck_assert_str_eq(e2->message, "Invalid parameter type for 'uri', expected: string");

    JsonObject *greeting = qmp_client_get_greeting(v->qmp);
    ck_assert(greeting && json_object_has_member(greeting, "version"));
}
END_TEST

static void free_on_close(QmpClient *client, const GError *error, gpointer user_data)
{
    qmp_client_free(client);
    g_atomic_int_set((gint *)user_data, 1);
}

START_TEST(test_qmp_client_can_be_freed_from_its_close_callback)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    test_vmm_disconnect(v); /* one client at a time: ours takes the harness's place */
    gint closed = 0;
    g_autoptr(GError) error = NULL;
    QmpClient *c = qmp_client_connect(v->qmp_path, 10000, NULL, free_on_close, &closed, &error);
    ck_assert_msg(c != NULL, "%s", error ? error->message : "");
    test_vmm_signal(v, SIGKILL);
    for (int i = 0; i < 200 && !g_atomic_int_get(&closed); i++)
        g_usleep(10000);
    ck_assert(g_atomic_int_get(&closed));
    test_vmm_wait_exit(v, 5000);
    /* The reader thread releases the client after the callback: give it a moment
     * so LeakSanitizer, at exit, sees it gone. */
    g_usleep(100000);
}
END_TEST

typedef struct {
    QmpClient *c;
    GError *error;
    gint64 returned_us;
} Caller;

static gpointer caller_main(gpointer data)
{
    Caller *caller = data;
    JsonNode *ret = qmp_client_execute(caller->c, "query-status", NULL, -1, &caller->error);
    if (ret)
        json_node_unref(ret);
    caller->returned_us = g_get_monotonic_time();
    return NULL;
}

START_TEST(test_qmp_client_free_wakes_waiting_callers)
{
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    test_vmm_signal(v, SIGSTOP);
    Caller caller = {.c = v->qmp};
    GThread *t = g_thread_new("caller", caller_main, &caller);
    g_usleep(200000);
    gint64 t0 = g_get_monotonic_time();
    test_vmm_disconnect(v);
    g_thread_join(t);
    ck_assert(caller.error != NULL);
    ck_assert_int_lt(caller.returned_us - t0, G_USEC_PER_SEC);
    g_error_free(caller.error);
    test_vmm_signal(v, SIGCONT);
    test_vmm_reconnect(v);
    ck_assert_str_eq(test_vmm_status(v), "running");
}
END_TEST

START_TEST(test_qmp_client_connect_gives_up_after_timeout)
{
    g_autofree char *path = harness_path("nobody.qmp");
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(GError) error = NULL;
    QmpClient *c = qmp_client_connect(path, 300, NULL, NULL, NULL, &error);
    gint64 ms = (g_get_monotonic_time() - t0) / 1000;
    ck_assert(c == NULL);
    ck_assert_msg(strstr(error->message, path) && strstr(error->message, "No such file"), "%s",
                  error->message);
    ck_assert_msg(ms >= 290 && ms < 2000, "gave up after %" G_GINT64_FORMAT " ms", ms);
}
END_TEST

/* A VMM that is not ferry-vmm (a hostile or broken one): a UNIX socket
 * served by a thread that sends a greeting, answers qmp_capabilities and
 * then sends `events`, one line each. */
typedef struct {
    int listen_fd;
    const char *const *events;
} FakeVmm;

static gpointer fake_vmm_main(gpointer data)
{
    FakeVmm *f = data;
    int fd = accept(f->listen_fd, NULL, NULL);
    ck_assert_int_ge(fd, 0);
    const char *greeting = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n";
    ck_assert(write(fd, greeting, strlen(greeting)) == (ssize_t)strlen(greeting));
    char buf[4096];
    ck_assert(read(fd, buf, sizeof(buf)) > 0); /* qmp_capabilities, id 1 */
    const char *ok = "{\"return\": {}, \"id\": 1}\n";
    ck_assert(write(fd, ok, strlen(ok)) == (ssize_t)strlen(ok));
    for (int i = 0; f->events[i]; i++)
        ck_assert(write(fd, f->events[i], strlen(f->events[i])) == (ssize_t)strlen(f->events[i]));
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    close(fd);
    return NULL;
}

typedef struct {
    GMutex lock;
    GCond cond;
    int count;
    gint64 stamps[8];
} Events;

static void record_event(QmpClient *client, const char *event, JsonObject *data, gint64 stamp,
                         gpointer user_data)
{
    Events *e = user_data;
    g_mutex_lock(&e->lock);
    if (e->count < 8)
        e->stamps[e->count++] = stamp;
    g_cond_broadcast(&e->cond);
    g_mutex_unlock(&e->lock);
}

/* Found by fuzz-qmp-client: seconds * 10^6 overflowed (undefined behaviour)
 * for a timestamp no clock gives. Such a timestamp now reads as unknown (0). */
START_TEST(test_qmp_client_event_timestamps_out_of_range_read_as_unknown)
{
    g_autofree char *path = harness_path("fake.qmp");
    g_autoptr(GError) error = NULL;
    int lfd = rpc_socket_listen_unix(path, 0700, &error);
    ck_assert_msg(lfd >= 0, "%s", error ? error->message : "");
    const char *const events[] = {
        "{\"event\": \"A\", \"timestamp\": {\"seconds\": 9223372036854775807, "
        "\"microseconds\": 5}}\n",
        "{\"event\": \"B\", \"timestamp\": {\"seconds\": -9223372036854775807, "
        "\"microseconds\": 0}}\n",
        "{\"event\": \"C\", \"timestamp\": {\"seconds\": 1, \"microseconds\": "
        "9223372036854775807}}\n",
        "{\"event\": \"D\", \"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 42}}\n",
        NULL};
    FakeVmm f = {.listen_fd = lfd, .events = events};
    GThread *t = g_thread_new("fake-vmm", fake_vmm_main, &f);
    Events e = {0};
    g_mutex_init(&e.lock);
    g_cond_init(&e.cond);
    QmpClient *c = qmp_client_connect(path, 5000, record_event, NULL, &e, &error);
    ck_assert_msg(c, "%s", error ? error->message : "");
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    g_mutex_lock(&e.lock);
    while (e.count < 4 && g_cond_wait_until(&e.cond, &e.lock, deadline))
        ;
    g_mutex_unlock(&e.lock);
    ck_assert_int_eq(e.count, 4);
    ck_assert_int_eq(e.stamps[0], 0);
    ck_assert_int_eq(e.stamps[1], 0);
    ck_assert_int_eq(e.stamps[2], 0);
    ck_assert_int_eq(e.stamps[3], G_GINT64_CONSTANT(1700000000) * G_USEC_PER_SEC + 42);
    qmp_client_free(c);
    g_thread_join(t);
    close(lfd);
    g_mutex_clear(&e.lock);
    g_cond_clear(&e.cond);
}
END_TEST

/* A VMM slow to greet (a loaded host): it serves one monitor client at a
 * time, as QEMU and ferry-vmm do, and greets each 600 ms after accepting it.
 * A starter that gives up on a connection after 200 ms and reconnects only
 * queues dead connections behind the live one and never gets through; the
 * starter must wait for the greeting on the connection it has. */
static const char SLOW_VMM[] =
    "import os, socket, sys, time\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.bind(sys.argv[1]); s.listen(64)\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    "    time.sleep(0.6)\n"
    "    try:\n"
    "        c.sendall(b'{\"QMP\": {\"version\": {}, \"capabilities\": []}}\\n')\n"
    "        while c.recv(4096):  # qmp_capabilities is id 1\n"
    "            c.sendall(b'{\"return\": {}, \"id\": 1}\\n')\n"
    "    except OSError:\n"
    "        pass\n"
    "    c.close()\n";

static void gone_ignored(const char *instance_id, gboolean guest_shutdown, const GError *why,
                         gpointer data)
{
}

START_TEST(test_vmm_start_waits_for_a_slow_greeting_on_one_connection)
{
    g_autofree char *path = harness_path("slow.qmp");
    g_autofree char *log = harness_path("slow.log");
    const char *argv[] = {"/usr/bin/python3", "-c", SLOW_VMM, path, NULL};
    VmmProcessSpawnOptions o = {.vmm_name = "slow-vmm", .domain_name = "vm", .argv = argv,
                                .qmp_path = path, .log_path = log, .instance_id = "1",
                                .on_gone = gone_ignored};
    g_autoptr(GError) error = NULL;
    gint64 t0 = g_get_monotonic_time();
    VmmProcess *vm = vmm_process_spawn(&o, &error);
    gint64 ms = (g_get_monotonic_time() - t0) / 1000;
    ck_assert_msg(vm, "not started after %" G_GINT64_FORMAT " ms: %s", ms,
                  error ? error->message : "");
    vmm_process_kill(vm);
    vmm_process_unref(vm);
}
END_TEST

/* A QEMU whose main thread is blocked (a post-copy migration paused while
 * a vCPU waits on a missing page): it offers capability oob, never answers
 * an in-band command (it holds them, as QEMU queues them) and answers
 * every exec-oob one at once with the commands it received so far; the
 * out-of-band x-release unblocks it (the held ones are answered, late). */
static const char BLOCKED_QEMU[] =
    "import json, socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.bind(sys.argv[1]); s.listen(1)\n"
    "c, _ = s.accept()\n"
    "c.sendall(b'{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\\n')\n"
    "buf, seen, held, blocked = '', [], [], True\n"
    "def reply(i, r):\n"
    "    c.sendall(json.dumps({'return': r, 'id': i}).encode() + b'\\n')\n"
    "while True:\n"
    "    data = c.recv(4096)\n"
    "    if not data:\n"
    "        break\n"
    "    buf += data.decode()\n"
    "    while buf.strip():\n"
    "        try:\n"
    "            m, end = json.JSONDecoder().raw_decode(buf.lstrip())\n"
    "        except ValueError:\n"
    "            break\n"
    "        buf = buf.lstrip()[end:]\n"
    "        oob = 'exec-oob' in m\n"
    "        cmd = m.get('exec-oob') or m.get('execute')\n"
    "        seen.append(('oob:' if oob else '') + cmd)\n"
    "        if cmd == 'qmp_capabilities':\n"
    "            reply(m['id'], {'enabled': m.get('arguments', {}).get('enable', [])})\n"
    "        elif oob:\n"
    "            if cmd == 'x-release':\n"
    "                blocked = False\n"
    "                for i in held:\n"
    "                    reply(i, {})\n"
    "            reply(m['id'], {'seen': seen})\n"
    "        elif blocked:\n"
    "            held.append(m['id'])\n"
    "        else:\n"
    "            reply(m['id'], {'seen': seen})\n";

static char *seen_of(JsonNode *ret)
{
    JsonArray *a = json_object_get_array_member(json_node_get_object(ret), "seen");
    g_autoptr(GString) s = g_string_new(NULL);
    for (guint i = 0; i < json_array_get_length(a); i++)
        g_string_append_printf(s, "%s%s", i ? " " : "", json_array_get_string_element(a, i));
    return g_string_free(g_steal_pointer(&s), FALSE);
}

START_TEST(test_qmp_client_keeps_oob_commands_reachable_when_the_vmm_blocks)
{
    g_autofree char *path = harness_path("blocked.qmp");
    const char *argv[] = {"/usr/bin/python3", "-c", BLOCKED_QEMU, path, NULL};
    GPid pid = 0;
    g_autoptr(GError) error = NULL;
    ck_assert_msg(g_spawn_async(NULL, (char **)argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                &pid, &error),
                  "%s", error ? error->message : "");
    QmpClient *c = qmp_client_connect(path, 10000, NULL, NULL, NULL, &error);
    ck_assert_msg(c, "%s", error ? error->message : "");
    ck_assert(qmp_client_has_oob(c)); /* negotiated: the greeting offered it */

    /* The main thread does not answer: the first in-band command times out... */
    g_autoptr(GError) e1 = NULL;
    g_autoptr(JsonNode) r1 = qmp_client_execute(c, "query-migrate", NULL, 300, &e1);
    ck_assert(r1 == NULL);
    ck_assert(g_error_matches(e1, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT));
    /* ...and the next one is not added to the VMM's queue behind it. */
    g_autoptr(GError) e2 = NULL;
    g_autoptr(JsonNode) r2 = qmp_client_execute(c, "query-status", NULL, 300, &e2);
    ck_assert(r2 == NULL);
    ck_assert(g_error_matches(e2, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT));
    ck_assert_msg(strstr(e2->message, "'query-status' not sent") &&
                      strstr(e2->message, "not answered 'query-migrate'"),
                  "%s", e2->message);

    /* Out of band goes through, as exec-oob. */
    g_autoptr(GError) e3 = NULL;
    g_autoptr(JsonNode) r3 = qmp_client_execute_oob(c, "migrate-recover", NULL, 5000, &e3);
    ck_assert_msg(r3, "%s", e3 ? e3->message : "");
    g_autofree char *seen3 = seen_of(r3);
    ck_assert_str_eq(seen3, "qmp_capabilities query-migrate oob:migrate-recover");

    /* Unblocked: the late answer frees the way for in-band commands again. */
    g_autoptr(JsonNode) r4 = qmp_client_execute_oob(c, "x-release", NULL, 5000, NULL);
    ck_assert(r4 != NULL);
    g_autoptr(GError) e5 = NULL;
    g_autoptr(JsonNode) r5 = qmp_client_execute(c, "query-name", NULL, 5000, &e5);
    ck_assert_msg(r5, "%s", e5 ? e5->message : "");
    g_autofree char *seen5 = seen_of(r5);
    ck_assert_str_eq(seen5, "qmp_capabilities query-migrate oob:migrate-recover oob:x-release "
                            "query-name");
    qmp_client_free(c);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    g_spawn_close_pid(pid);
}
END_TEST

START_TEST(test_qmp_client_runs_oob_in_band_without_the_capability)
{
    /* ferry-vmm offers no oob: the same call runs in band there. */
    TestVmm *v = test_vmm_start("vm", "--memory", "16M", NULL);
    ck_assert(!qmp_client_has_oob(v->qmp));
    g_autoptr(GError) error = NULL;
    g_autoptr(JsonNode) ret = qmp_client_execute_oob(v->qmp, "query-status", NULL, 5000, &error);
    ck_assert_msg(ret, "%s", error ? error->message : "");
    ck_assert_str_eq(json_object_get_string_member(json_node_get_object(ret), "status"),
                     "running");
}
END_TEST

static Suite *client_suite(void)
{
    Suite *s = suite_create("qmp-client");
    TEST_ADD(s, test_qmp_client_close_callback_fires_when_vmm_killed, 30);
    TEST_ADD(s, test_qmp_client_matches_replies_of_concurrent_callers, 30);
    TEST_ADD(s, test_qmp_client_times_out_on_frozen_vmm, 30);
    TEST_ADD(s, test_qmp_client_error_reply_becomes_gerror, 30);
    TEST_ADD(s, test_qmp_client_can_be_freed_from_its_close_callback, 30);
    TEST_ADD(s, test_qmp_client_free_wakes_waiting_callers, 30);
    TEST_ADD(s, test_qmp_client_connect_gives_up_after_timeout, 30);
    TEST_ADD(s, test_qmp_client_event_timestamps_out_of_range_read_as_unknown, 30);
    TEST_ADD(s, test_vmm_start_waits_for_a_slow_greeting_on_one_connection, 60);
    TEST_ADD(s, test_qmp_client_keeps_oob_commands_reachable_when_the_vmm_blocks, 30);
    TEST_ADD(s, test_qmp_client_runs_oob_in_band_without_the_capability, 30);
    return s;
}

TEST_RUN_SUITE(client_suite)
