/* Live migration between two real ferry-vmm processes, driven over QMP: memory
 * arrives whole (digests match), corruption and dead or frozen peers are
 * reported on both sides, and the source VM keeps running whenever the
 * destination did not take over. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmm-harness.h"

#define MiB (1024 * 1024)

static void start_pair(const char *memory, const char *dirty_rate, TestVmm **src, TestVmm **dst)
{
    *src = test_vmm_start("src", "--memory", memory, "--vcpus", "2", "--seed", "7", "--dirty-rate",
                          dirty_rate, NULL);
    *dst = test_vmm_start("dst", "--memory", memory, "--vcpus", "2", "--incoming", "defer", NULL);
    ck_assert_str_eq(test_vmm_status(*dst), "inmigrate");
}

/* Hands each end of a fresh socketpair to one VMM, keeping no copy, so that
 * the stream ends when either VMM closes or dies. */
static void connect_by_socketpair(TestVmm *src, TestVmm *dst)
{
    int sp[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    test_vmm_pass_fd(dst, "mig", sp[0]);
    test_vmm_pass_fd(src, "mig", sp[1]);
    close(sp[0]);
    close(sp[1]);
}

/* The checks every successful migration must pass. */
static void check_completed(TestVmm *src, TestVmm *dst, JsonObject *out, JsonObject *in,
                            guint64 memory)
{
    ck_assert_msg(g_str_equal(test_json_str(out, "status"), "completed"), "source: %s",
                  json_object_get_string_member_with_default(out, "error-desc", "?"));
    ck_assert_msg(g_str_equal(test_json_str(in, "status"), "completed"), "destination: %s",
                  json_object_get_string_member_with_default(in, "error-desc", "?"));
    ck_assert_int_ge(test_json_int(out, "ram.dirty-sync-count"), 2);
    ck_assert_int_eq(test_json_int(out, "ram.dirty-sync-count"),
                     test_json_int(out, "ferry.rounds"));
    ck_assert_int_eq(test_json_int(out, "ram.total"), memory);
    ck_assert_int_eq(test_json_int(out, "ram.remaining"), 0);
    ck_assert_int_eq(test_json_int(out, "ram.page-size"), 4096);
    ck_assert_int_ge(test_json_int(out, "ram.normal-bytes"), memory);
    ck_assert_int_eq(test_json_int(out, "ram.normal-bytes"),
                     test_json_int(out, "ram.normal") * 4096);
    ck_assert_int_ge(test_json_int(out, "ram.transferred"), test_json_int(out, "ram.normal-bytes"));
    ck_assert_int_eq(test_json_int(in, "ram.transferred"), test_json_int(out, "ram.transferred"));
    ck_assert_int_eq(test_json_int(in, "ram.normal"), test_json_int(out, "ram.normal"));
    gint64 total = test_json_int(out, "total-time"), downtime = test_json_int(out, "downtime");
    ck_assert_int_ge(downtime, 0);
    ck_assert_int_le(downtime, total);
    ck_assert_int_le(test_json_int(out, "setup-time"), total);

    /* Not one byte lost: what the source sent at stop-and-copy is what the
     * destination verified and still holds. */
    const char *sent = test_json_str(out, "ferry.digest");
    ck_assert_str_eq(test_json_str(in, "ferry.digest"), sent);
    g_autofree char *held = test_vmm_digest(dst);
    ck_assert_str_eq(held, sent);
    g_autofree char *left = test_vmm_digest(src);
    ck_assert_str_eq(left, sent);

    ck_assert_str_eq(test_vmm_status(src), "postmigrate");
    ck_assert_str_eq(test_vmm_status(dst), "paused");
    ck_assert(test_vmm_has_event(dst, "MIGRATION", "completed"));
    ck_assert(test_vmm_has_event(src, "MIGRATION", "completed"));
}

START_TEST(test_migrate_live_over_socketpair_copies_every_byte)
{
    TestVmm *src, *dst;
    start_pair("128M", "100M", &src, &dst);
    /* At 256 MiB/s against 100 MiB/s of writes, each round leaves about 40% of
     * its length to the next, so pre-copy iterates whatever the machine's speed
     * until the rest fits in 5 ms. */
    json_node_unref(test_vmm_exec(src, "migrate-set-parameters",
                                  "{'downtime-limit': 5, 'max-bandwidth': %d}", 256 * MiB));
    connect_by_socketpair(src, dst);
    json_node_unref(
        test_vmm_exec(dst, "migrate-incoming", "{'uri': 'fd:mig', 'exit-on-error': false}"));
    json_node_unref(test_vmm_exec(src, "migrate", "{'uri': 'fd:mig'}"));

    g_autoptr(JsonObject) out = test_vmm_wait_migration(src, 30000);
    g_autoptr(JsonObject) in = test_vmm_wait_migration(dst, 10000);
    check_completed(src, dst, out, in, 128 * MiB);
    /* The guest was running: it stopped for stop-and-copy and dirtied pages meanwhile. */
    ck_assert(test_vmm_has_event(src, "STOP", NULL));
    ck_assert_int_ge(test_json_int(out, "ferry.rounds"), 3);
    ck_assert_int_gt(test_json_int(out, "ferry.dirty-rate"), 0);
    ck_assert_int_gt(test_json_int(out, "ram.normal-bytes"), 128 * MiB);

    /* The destination resumes the guest's work where the source left it. */
    json_node_unref(test_vmm_exec(dst, "cont", NULL));
    ck_assert_str_eq(test_vmm_status(dst), "running");
    g_autoptr(JsonObject) work = test_vmm_query(dst, "ferry-query-workload");
    ck_assert_int_eq(test_json_int(work, "dirty-rate"), 100 * MiB);
}
END_TEST

START_TEST(test_migrate_live_over_unix_socket)
{
    TestVmm *src, *dst;
    start_pair("64M", "50M", &src, &dst);
    json_node_unref(test_vmm_exec(src, "ferry-set-workload", "{'pattern': 'sequential'}"));
    g_autofree char *path = harness_path("mig.sock");
    json_node_unref(test_vmm_exec(dst, "migrate-incoming", "{'uri': 'unix:%s'}", path));
    ck_assert(g_file_test(path, G_FILE_TEST_EXISTS));
    json_node_unref(test_vmm_exec(src, "migrate", "{'uri': 'unix:%s'}", path));

    g_autoptr(JsonObject) out = test_vmm_wait_migration(src, 30000);
    g_autoptr(JsonObject) in = test_vmm_wait_migration(dst, 10000);
    check_completed(src, dst, out, in, 64 * MiB);
    /* One connection only: the listening socket is gone once it was accepted. */
    ck_assert(!g_file_test(path, G_FILE_TEST_EXISTS));

    /* The migrated VM moves on again (ping-pong), running this time. */
    json_node_unref(test_vmm_exec(dst, "cont", NULL));
    TestVmm *back =
        test_vmm_start("back", "--memory", "64M", "--vcpus", "2", "--incoming", "defer", NULL);
    g_autofree char *path2 = harness_path("back.sock");
    json_node_unref(test_vmm_exec(back, "migrate-incoming", "{'uri': 'unix:%s'}", path2));
    json_node_unref(test_vmm_exec(dst, "migrate", "{'uri': 'unix:%s'}", path2));
    g_autoptr(JsonObject) out2 = test_vmm_wait_migration(dst, 30000);
    g_autoptr(JsonObject) in2 = test_vmm_wait_migration(back, 10000);
    check_completed(dst, back, out2, in2, 64 * MiB);
    g_autoptr(JsonObject) work = test_vmm_query(back, "ferry-query-workload");
    ck_assert_str_eq(test_json_str(work, "pattern"), "sequential");
}
END_TEST

/* ---- a relay between two socketpairs that flips one byte ---- */

typedef struct {
    int src; /* the test's end of the source VMM's socketpair */
    int dst;
    guint64 flip_at; /* offset in the source-to-destination direction */
    guint64 forwarded;
    gboolean flipped;
    GThread *thread;
} Relay;

static gboolean relay_send_all(int fd, const char *buf, gsize len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return FALSE;
        buf += n;
        len -= (gsize)n;
    }
    return TRUE;
}

static gpointer relay_main(gpointer data)
{
    Relay *r = data;
    g_autofree char *buf = g_malloc(1 << 18);
    gboolean open[2] = {TRUE, TRUE}; /* 0: src->dst, 1: dst->src */
    int from[2] = {r->src, r->dst}, to[2] = {r->dst, r->src};
    while (open[0] || open[1]) {
        struct pollfd p[2];
        int map[2], n = 0;
        for (int d = 0; d < 2; d++) {
            if (open[d]) {
                p[n] = (struct pollfd){.fd = from[d], .events = POLLIN};
                map[n++] = d;
            }
        }
        if (poll(p, (nfds_t)n, 10000) <= 0)
            break; /* nothing for 10 s: the test has failed already */
        for (int i = 0; i < n; i++) {
            int d = map[i];
            if (!p[i].revents)
                continue;
            ssize_t got = recv(from[d], buf, 1 << 18, 0);
            if (got <= 0) {
                shutdown(to[d], SHUT_WR);
                open[d] = FALSE;
                continue;
            }
            if (d == 0) {
                if (!r->flipped && r->flip_at >= r->forwarded &&
                    r->flip_at < r->forwarded + (guint64)got) {
                    buf[r->flip_at - r->forwarded] ^= 0x20;
                    r->flipped = TRUE;
                }
                r->forwarded += (guint64)got;
            }
            if (!relay_send_all(to[d], buf, (gsize)got)) {
                shutdown(from[d], SHUT_RD);
                open[d] = FALSE;
            }
        }
    }
    return NULL;
}

START_TEST(test_migrate_detects_flipped_byte_in_transit)
{
    /* An idle guest: no page is sent twice, so the flipped one is never repaired. */
    TestVmm *src, *dst;
    start_pair("64M", "0", &src, &dst);
    int a[2], b[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
    test_vmm_pass_fd(src, "mig", a[0]);
    test_vmm_pass_fd(dst, "mig", b[0]);
    close(a[0]);
    close(b[0]);
    /* 5 MiB in: inside the page data of the first command. */
    Relay relay = {.src = a[1], .dst = b[1], .flip_at = 5 * MiB + 1234};
    relay.thread = g_thread_new("relay", relay_main, &relay);

    json_node_unref(
        test_vmm_exec(dst, "migrate-incoming", "{'uri': 'fd:mig', 'exit-on-error': false}"));
    json_node_unref(test_vmm_exec(src, "migrate", "{'uri': 'fd:mig'}"));
    g_autoptr(JsonObject) out = test_vmm_wait_migration(src, 30000);
    g_autoptr(JsonObject) in = test_vmm_wait_migration(dst, 10000);
    g_thread_join(relay.thread);
    close(a[1]);
    close(b[1]);
    ck_assert(relay.flipped);

    ck_assert_str_eq(test_json_str(out, "status"), "failed");
    ck_assert_str_eq(test_json_str(in, "status"), "failed");
    const char *out_err = test_json_str(out, "error-desc");
    const char *in_err = test_json_str(in, "error-desc");
    ck_assert_msg(strstr(out_err, "guest memory digest mismatch after migration: sent "), "%s",
                  out_err);
    ck_assert_msg(strstr(in_err, "guest memory digest mismatch after migration: sent "), "%s",
                  in_err);
    /* Both name the same two digests, the sent one being the source's memory. */
    ck_assert(strstr(out_err, strstr(in_err, "sent ")));
    g_autofree char *src_digest = test_vmm_digest(src);
    g_autofree char *dst_digest = test_vmm_digest(dst);
    ck_assert_str_ne(src_digest, dst_digest);
    ck_assert(strstr(in_err, src_digest));
    ck_assert(strstr(in_err, dst_digest));

    /* Stopped for stop-and-copy, running again since the destination refused. */
    ck_assert(test_vmm_has_event(src, "STOP", NULL));
    ck_assert(test_vmm_wait_event(src, "RESUME", 2000));
    ck_assert_str_eq(test_vmm_status(src), "running");
    ck_assert_str_eq(test_vmm_status(dst), "internal-error");
    g_autofree char *refused = test_vmm_exec_fail(dst, "cont", NULL);
    ck_assert_msg(strstr(refused, "incomplete"), "%s", refused);
}
END_TEST

START_TEST(test_migrate_receiver_killed_fails_sender_promptly)
{
    TestVmm *src, *dst;
    start_pair("128M", "20M", &src, &dst);
    g_autofree char *path = harness_path("mig.sock");
    json_node_unref(test_vmm_exec(dst, "migrate-incoming", "{'uri': 'unix:%s'}", path));
    /* Slow enough to be caught mid-way: 128 MiB at 32 MiB/s. */
    json_node_unref(
        test_vmm_exec(src, "migrate-set-parameters", "{'max-bandwidth': %d}", 32 * MiB));
    json_node_unref(test_vmm_exec(src, "migrate", "{'uri': 'unix:%s'}", path));
    json_object_unref(test_vmm_wait_progress(src, 8 * MiB, 10000));

    test_vmm_signal(dst, SIGKILL);
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(JsonObject) out = test_vmm_wait_migration(src, 5000);
    gint64 elapsed_ms = (g_get_monotonic_time() - t0) / 1000;
    ck_assert_msg(elapsed_ms < 2000, "the sender noticed after %" G_GINT64_FORMAT " ms",
                  elapsed_ms);
    ck_assert_int_eq(WTERMSIG(test_vmm_wait_exit(dst, 5000)), SIGKILL);

    ck_assert_str_eq(test_json_str(out, "status"), "failed");
    const char *err = test_json_str(out, "error-desc");
    ck_assert_msg(g_str_has_prefix(err, "migration failed: receiver closed the connection after "),
                  "%s", err);
    /* Dead while we wrote (EPIPE/ECONNRESET) or while we waited for its answer (EOF). */
    ck_assert_msg(strstr(err, " MiB (Connection reset by peer)") ||
                      strstr(err, " MiB (Broken pipe)") || strstr(err, " MiB (end of file)"),
                  "%s", err);
    ck_assert(test_vmm_has_event(src, "MIGRATION", "failed"));

    /* The source VM never stopped and still answers. */
    ck_assert_str_eq(test_vmm_status(src), "running");
    g_autofree char *d1 = test_vmm_digest(src);
    g_usleep(100000);
    g_autofree char *d2 = test_vmm_digest(src);
    ck_assert_str_ne(d1, d2); /* its guest keeps writing */
}
END_TEST

START_TEST(test_migrate_cancel_while_receiver_frozen)
{
    TestVmm *src, *dst;
    start_pair("128M", "20M", &src, &dst);
    g_autofree char *path = harness_path("mig.sock");
    json_node_unref(test_vmm_exec(dst, "migrate-incoming", "{'uri': 'unix:%s'}", path));
    json_node_unref(
        test_vmm_exec(src, "migrate-set-parameters", "{'max-bandwidth': %d}", 16 * MiB));
    json_node_unref(test_vmm_exec(src, "migrate", "{'uri': 'unix:%s'}", path));
    json_object_unref(test_vmm_wait_progress(src, 4 * MiB, 10000));

    /* Frozen receiver, unlimited sender: the sender fills the socket and blocks. */
    test_vmm_signal(dst, SIGSTOP);
    json_node_unref(test_vmm_exec(src, "migrate-set-parameters", "{'max-bandwidth': 0}"));
    g_usleep(500000);
    g_autoptr(JsonObject) stuck = test_vmm_query(src, "query-migrate");
    ck_assert_str_eq(test_json_str(stuck, "status"), "active");

    gint64 t0 = g_get_monotonic_time();
    json_node_unref(test_vmm_exec(src, "migrate_cancel", NULL));
    g_autoptr(JsonObject) out = test_vmm_wait_migration(src, 5000);
    gint64 elapsed_ms = (g_get_monotonic_time() - t0) / 1000;
    ck_assert_msg(elapsed_ms < 2000, "cancel took %" G_GINT64_FORMAT " ms", elapsed_ms);
    ck_assert_str_eq(test_json_str(out, "status"), "cancelled");
    ck_assert_msg(strstr(test_json_str(out, "error-desc"), "cancelled"), "%s",
                  test_json_str(out, "error-desc"));
    ck_assert(test_vmm_has_event(src, "MIGRATION", "cancelling"));
    ck_assert(test_vmm_has_event(src, "MIGRATION", "cancelled"));
    ck_assert_str_eq(test_vmm_status(src), "running");

    /* Thawed, the receiver finds a broken stream and exits (QEMU's default). */
    test_vmm_signal(dst, SIGCONT);
    int status = test_vmm_wait_exit(dst, 10000);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 1);

    /* The source is whole: a new migration to a new destination succeeds. */
    TestVmm *dst2 =
        test_vmm_start("dst2", "--memory", "128M", "--vcpus", "2", "--incoming", "defer", NULL);
    g_autofree char *path2 = harness_path("mig2.sock");
    json_node_unref(test_vmm_exec(dst2, "migrate-incoming", "{'uri': 'unix:%s'}", path2));
    json_node_unref(test_vmm_exec(src, "migrate", "{'uri': 'unix:%s'}", path2));
    g_autoptr(JsonObject) out2 = test_vmm_wait_migration(src, 30000);
    g_autoptr(JsonObject) in2 = test_vmm_wait_migration(dst2, 10000);
    check_completed(src, dst2, out2, in2, 128 * MiB);
}
END_TEST

START_TEST(test_migrate_refuses_memory_size_mismatch)
{
    TestVmm *src = test_vmm_start("src", "--memory", "64M", "--vcpus", "2", NULL);
    TestVmm *dst =
        test_vmm_start("dst", "--memory", "32M", "--vcpus", "2", "--incoming", "defer", NULL);
    connect_by_socketpair(src, dst);
    json_node_unref(
        test_vmm_exec(dst, "migrate-incoming", "{'uri': 'fd:mig', 'exit-on-error': false}"));
    json_node_unref(test_vmm_exec(src, "migrate", "{'uri': 'fd:mig'}"));
    g_autoptr(JsonObject) out = test_vmm_wait_migration(src, 10000);
    g_autoptr(JsonObject) in = test_vmm_wait_migration(dst, 10000);
    ck_assert_str_eq(test_json_str(out, "status"), "failed");
    ck_assert_str_eq(test_json_str(in, "status"), "failed");
    const char *want =
        "guest memory size mismatch: source 67108864 bytes, destination 33554432 bytes";
    ck_assert_msg(strstr(test_json_str(out, "error-desc"), want), "%s",
                  test_json_str(out, "error-desc"));
    ck_assert_msg(strstr(test_json_str(in, "error-desc"), want), "%s",
                  test_json_str(in, "error-desc"));
    ck_assert_str_eq(test_vmm_status(src), "running");
    ck_assert(!test_vmm_has_event(src, "STOP", NULL));
}
END_TEST

START_TEST(test_migrate_honours_max_bandwidth)
{
    TestVmm *src, *dst;
    start_pair("32M", "0", &src, &dst);
    json_node_unref(test_vmm_exec(src, "migrate-set-parameters",
                                  "{'max-bandwidth': %d, 'downtime-limit': 500}", 32 * MiB));
    g_autoptr(JsonObject) params = test_vmm_query(src, "query-migrate-parameters");
    ck_assert_int_eq(test_json_int(params, "max-bandwidth"), 32 * MiB);
    ck_assert_int_eq(test_json_int(params, "downtime-limit"), 500);
    connect_by_socketpair(src, dst);
    json_node_unref(test_vmm_exec(dst, "migrate-incoming", "{'uri': 'fd:mig'}"));
    json_node_unref(test_vmm_exec(src, "migrate", "{'uri': 'fd:mig'}"));
    g_autoptr(JsonObject) out = test_vmm_wait_migration(src, 20000);
    g_autoptr(JsonObject) in = test_vmm_wait_migration(dst, 10000);
    check_completed(src, dst, out, in, 32 * MiB);
    /* 32 MiB at 32 MiB/s, less the initial 50 ms burst. */
    ck_assert_int_ge(test_json_int(out, "total-time"), 850);
    double mbps = json_object_get_double_member(json_object_get_object_member(out, "ram"), "mbps");
    ck_assert_msg(mbps < 32.0 * 8 * 1.048576 * 1.2, "%f Mbit/s", mbps);
}
END_TEST

/* n socket pairs, fds m0..m(n-1) on both sides, as connect_by_socketpair. */
static void connect_channels(TestVmm *src, TestVmm *dst, int n)
{
    for (int i = 0; i < n; i++) {
        int sp[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
        g_autofree char *name = g_strdup_printf("m%d", i);
        test_vmm_pass_fd(dst, name, sp[0]);
        test_vmm_pass_fd(src, name, sp[1]);
        close(sp[0]);
        close(sp[1]);
    }
}

/* Several connections (ferry-channels): the rounds are shared between them,
 * the memory arrives whole, and max-bandwidth holds for their sum. */
START_TEST(test_migrate_over_four_connections)
{
    TestVmm *src, *dst;
    start_pair("64M", "20M", &src, &dst);
    json_node_unref(test_vmm_exec(src, "migrate-set-parameters",
                                  "{'max-bandwidth': %d, 'downtime-limit': 50}", 64 * MiB));
    connect_channels(src, dst, 4);
#define FOUR "{'uri': 'fd:m0', 'ferry-channels': ['fd:m1', 'fd:m2', 'fd:m3']}"
    json_node_unref(test_vmm_exec(dst, "migrate-incoming", FOUR));
    json_node_unref(test_vmm_exec(src, "migrate", FOUR));
#undef FOUR
    g_autoptr(JsonObject) out = test_vmm_wait_migration(src, 30000);
    g_autoptr(JsonObject) in = test_vmm_wait_migration(dst, 10000);
    check_completed(src, dst, out, in, 64 * MiB);
    ck_assert_int_eq(test_json_int(out, "ferry.channels"), 4);
    ck_assert_int_eq(test_json_int(in, "ferry.channels"), 4);
    /* At least 64 MiB at 64 MiB/s in all, less the connections' bursts: not
     * four times that rate. */
    ck_assert_int_ge(test_json_int(out, "total-time"), 750);
}
END_TEST

/* The receiver was given fewer connections than the sender opens: refused
 * on both sides, naming the counts; the source keeps running. */
START_TEST(test_migrate_connection_count_mismatch_is_refused)
{
    TestVmm *src, *dst;
    start_pair("32M", "0", &src, &dst);
    connect_channels(src, dst, 2);
    json_node_unref(test_vmm_exec(dst, "migrate-incoming", "{'uri': 'fd:m0', 'exit-on-error': false}"));
    json_node_unref(test_vmm_exec(src, "migrate", "{'uri': 'fd:m0', 'ferry-channels': ['fd:m1']}"));
    g_autoptr(JsonObject) out = test_vmm_wait_migration(src, 10000);
    g_autoptr(JsonObject) in = test_vmm_wait_migration(dst, 10000);
    ck_assert_str_eq(test_json_str(out, "status"), "failed");
    ck_assert_str_eq(test_json_str(in, "status"), "failed");
    ck_assert_msg(strstr(test_json_str(in, "error-desc"),
                         "the sender opens 2 connections, this VMM was given 1"),
                  "%s", test_json_str(in, "error-desc"));
    ck_assert_msg(strstr(test_json_str(out, "error-desc"), "destination reported"), "%s",
                  test_json_str(out, "error-desc"));
    ck_assert_str_eq(test_vmm_status(src), "running");
}
END_TEST

static Suite *migration_suite(void)
{
    Suite *s = suite_create("vmm-migration");
    TEST_ADD(s, test_migrate_live_over_socketpair_copies_every_byte, 60);
    TEST_ADD(s, test_migrate_live_over_unix_socket, 60);
    TEST_ADD(s, test_migrate_detects_flipped_byte_in_transit, 60);
    TEST_ADD(s, test_migrate_receiver_killed_fails_sender_promptly, 60);
    TEST_ADD(s, test_migrate_cancel_while_receiver_frozen, 60);
    TEST_ADD(s, test_migrate_refuses_memory_size_mismatch, 60);
    TEST_ADD(s, test_migrate_honours_max_bandwidth, 60);
    TEST_ADD(s, test_migrate_over_four_connections, 60);
    TEST_ADD(s, test_migrate_connection_count_mismatch_is_refused, 60);
    return s;
}

TEST_RUN_SUITE(migration_suite)
