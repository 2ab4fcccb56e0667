/* The tunnel stream over real sockets: two RPC connections on a socketpair,
 * each with a "VMM" socketpair whose far end the test drives. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/rpc-connection.h"
#include "tunnel/tunnel-ring.h"
#include "tunnel/tunnel-router.h"
#include "tunnel/tunnel-stream.h"
#include "util/error.h"

#define MIB (1024 * 1024)

typedef struct {
    RpcConnection *conn;
    TunnelStream *ts;
    GMutex lock;
    GCond cond;
    guint messages;  /* every message this side received */
    guint sentinels; /* SENTINEL_PROGRAM messages among them */
} Side;

/* A message no stream handles: sent behind packets under test, it proves
 * by its arrival that everything queued before it arrived too. */
#define SENTINEL_PROGRAM 0x53454e54u

static void side_on_message(RpcConnection *conn, RpcMessage *msg, gpointer data)
{
    Side *side = data;
    g_mutex_lock(&side->lock);
    TunnelStream *ts = side->ts ? tunnel_stream_ref(side->ts) : NULL;
    side->messages++;
    if (msg->header.prog == SENTINEL_PROGRAM)
        side->sentinels++;
    g_cond_broadcast(&side->cond);
    g_mutex_unlock(&side->lock);
    if (ts && (msg->header.type == RPC_STREAM || msg->header.prog == FERRY_TUNNEL_PROGRAM)) {
        tunnel_stream_deliver(ts, msg);
    } else {
        rpc_message_free(msg);
    }
    tunnel_stream_unref(ts);
}

static void side_on_close(RpcConnection *conn, const GError *why, gpointer data)
{
    Side *side = data;
    g_mutex_lock(&side->lock);
    TunnelStream *ts = side->ts ? tunnel_stream_ref(side->ts) : NULL;
    g_mutex_unlock(&side->lock);
    if (ts)
        tunnel_stream_connection_closed(ts, why);
    tunnel_stream_unref(ts);
}

static const RpcConnectionHandler handler = {.on_message = side_on_message,
                                             .on_close = side_on_close};

typedef struct {
    Side client, server;
    int vmm_src; /* the test's end of the source VMM socket */
    int vmm_dst; /* the test's end of the destination VMM socket */
    int raw_server_fd; /* when the server side is "frozen": nobody reads this */
} Tunnel;

static const RpcHeader opening = {.prog = 0x20008086, .vers = 1, .proc = 304, .serial = 9};
/* Seconds both streams of the next tunnel_setup may wait to be resumed (0: no resume). */
static guint setup_resume_s;

static void tunnel_setup(Tunnel *t, gboolean credit, gboolean frozen_server, guint64 bandwidth)
{
    memset(t, 0, sizeof(*t));
    g_mutex_init(&t->client.lock);
    g_mutex_init(&t->server.lock);
    g_cond_init(&t->client.cond);
    g_cond_init(&t->server.cond);
    int rpc[2], a[2], b[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, rpc), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
    t->vmm_src = a[0];
    t->vmm_dst = b[0];

    TunnelStreamConfig cc = {.role = TUNNEL_ROLE_CLIENT, .credit = credit, .window = 4 * MIB,
                             .peer_window = 4 * MIB, .packet_size = credit ? MIB : 262120,
                             .bandwidth = bandwidth, .peer_name = "destination ferryd",
                             .vmm_name = "source VMM", .resume = setup_resume_s > 0,
                             .resume_timeout_s = setup_resume_s};
    TunnelStreamConfig sc = cc;
    sc.role = TUNNEL_ROLE_SERVER;
    sc.peer_name = "source ferryd";
    sc.vmm_name = "destination VMM";

    t->client.conn = rpc_connection_new(rpc_transport_new_socket(rpc[0]), &handler, &t->client);
    t->client.ts = tunnel_stream_new(t->client.conn, &opening, a[1], &cc);
    if (frozen_server) {
        t->raw_server_fd = rpc[1];
        close(b[1]);
    } else {
        t->raw_server_fd = -1;
        t->server.conn = rpc_connection_new(rpc_transport_new_socket(rpc[1]), &handler, &t->server);
        t->server.ts = tunnel_stream_new(t->server.conn, &opening, b[1], &sc);
        rpc_connection_start(t->server.conn);
        tunnel_stream_start(t->server.ts);
    }
    rpc_connection_start(t->client.conn);
    tunnel_stream_start(t->client.ts);
}

/* A credit-mode tunnel whose streams may wait resume_s to be resumed. */
static void tunnel_setup_resumable(Tunnel *t, guint resume_s)
{
    setup_resume_s = resume_s;
    tunnel_setup(t, TRUE, FALSE, 0);
    setup_resume_s = 0;
}

static void side_teardown(Side *s)
{
    if (!s->conn)
        return;
    rpc_connection_close(s->conn, NULL);
    rpc_connection_wait_closed(s->conn);
    g_mutex_lock(&s->lock);
    TunnelStream *ts = g_steal_pointer(&s->ts);
    g_mutex_unlock(&s->lock);
    tunnel_stream_unref(ts);
    rpc_connection_unref(s->conn);
    g_mutex_clear(&s->lock);
    g_cond_clear(&s->cond);
}

static void tunnel_teardown(Tunnel *t)
{
    side_teardown(&t->client);
    side_teardown(&t->server);
    close(t->vmm_src);
    close(t->vmm_dst);
    if (t->raw_server_fd >= 0)
        close(t->raw_server_fd);
}

static guint64 fill(guint8 *buf, gsize len, guint64 seed)
{
    guint64 x = seed;
    for (gsize i = 0; i < len; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[i] = (guint8)(x >> 56);
    }
    return x;
}

typedef struct {
    int fd;
    gsize total;
    guint64 seed;
    gboolean ok;
    int delay_ms;
    gsize pause_every; /* reader: pauses delay_ms again after each such many bytes */
} Job;

static gpointer writer_job(gpointer data)
{
    Job *j = data;
    guint8 *buf = g_malloc(MIB);
    guint64 seed = j->seed;
    gsize left = j->total;
    j->ok = TRUE;
    while (left > 0) {
        gsize n = MIN(left, (gsize)MIB);
        seed = fill(buf, n, seed);
        for (gsize off = 0; off < n;) {
            ssize_t w = send(j->fd, buf + off, n - off, MSG_NOSIGNAL);
            if (w < 0) {
                j->ok = FALSE;
                g_free(buf);
                return NULL;
            }
            off += w;
        }
        left -= n;
    }
    g_free(buf);
    return NULL;
}

/* Reads exactly total bytes, checks them against the same pseudo-random
 * sequence, then answers "OK" and half-closes: like a VMM's final reply. */
static gpointer reader_job(gpointer data)
{
    Job *j = data;
    if (j->delay_ms)
        g_usleep(j->delay_ms * 1000);
    guint8 *buf = g_malloc(MIB), *want = g_malloc(MIB);
    guint64 seed = j->seed;
    gsize left = j->total;
    j->ok = TRUE;
    while (left > 0 && j->ok) {
        if (j->pause_every && left < j->total && (j->total - left) % j->pause_every == 0)
            g_usleep(j->delay_ms * 1000);
        gsize n = MIN(left, (gsize)MIB);
        seed = fill(want, n, seed);
        for (gsize off = 0; off < n;) {
            ssize_t r = read(j->fd, buf + off, n - off);
            if (r <= 0) {
                j->ok = FALSE;
                break;
            }
            off += r;
        }
        if (j->ok && memcmp(buf, want, n) != 0)
            j->ok = FALSE;
        left -= n;
    }
    if (j->ok)
        j->ok = write(j->fd, "OK", 2) == 2;
    shutdown(j->fd, SHUT_WR);
    g_free(buf);
    g_free(want);
    return NULL;
}

/* The source VMM's side: send everything, wait for "OK" + EOF, then close. */
static void run_migration(Tunnel *t, gsize total, int dst_delay_ms)
{
    Job w = {.fd = t->vmm_src, .total = total, .seed = 42};
    Job r = {.fd = t->vmm_dst, .total = total, .seed = 42, .delay_ms = dst_delay_ms};
    GThread *wt = g_thread_new("w", writer_job, &w);
    GThread *rt = g_thread_new("r", reader_job, &r);
    g_thread_join(wt);
    char reply[8];
    gsize got = 0;
    ssize_t n;
    while ((n = read(t->vmm_src, reply + got, sizeof(reply) - got)) > 0)
        got += n;
    g_thread_join(rt);
    ck_assert(w.ok);
    ck_assert(r.ok);
    ck_assert_uint_eq(got, 2);
    ck_assert(memcmp(reply, "OK", 2) == 0);
    shutdown(t->vmm_src, SHUT_WR); /* the source VMM is done: EOF to the pump */
}

/* Both streams finished, having carried total bytes one way and the
 * 2-byte reply the other; their statistics in *cs and *ss if asked. */
static void check_both_done_stats(Tunnel *t, gsize total, TunnelStats *cs, TunnelStats *ss)
{
    gint64 deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
    g_autoptr(GError) e1 = NULL, e2 = NULL;
    ck_assert_msg(tunnel_stream_wait(t->client.ts, deadline, &e1), "%s", e1 ? e1->message : "");
    ck_assert_msg(tunnel_stream_wait(t->server.ts, deadline, &e2), "%s", e2 ? e2->message : "");
    tunnel_stream_get_stats(t->client.ts, cs);
    tunnel_stream_get_stats(t->server.ts, ss);
    ck_assert_uint_eq(cs->bytes_out, total);
    ck_assert_uint_eq(ss->bytes_in, total);
    ck_assert_uint_eq(ss->bytes_out, 2);
    ck_assert_uint_eq(cs->bytes_in, 2);
}

static void check_both_done(Tunnel *t, gsize total)
{
    TunnelStats cs, ss;
    check_both_done_stats(t, total, &cs, &ss);
}

START_TEST(test_plain_stream_carries_every_byte_and_finishes)
{
    Tunnel t;
    tunnel_setup(&t, FALSE, FALSE, 0);
    run_migration(&t, 64 * MIB, 0);
    check_both_done(&t, 64 * MIB);
    tunnel_teardown(&t);
}
END_TEST

START_TEST(test_credit_stream_carries_every_byte_and_finishes)
{
    Tunnel t;
    tunnel_setup(&t, TRUE, FALSE, 0);
    run_migration(&t, 64 * MIB, 0);
    check_both_done(&t, 64 * MIB);
    tunnel_teardown(&t);
}
END_TEST

/* A credit-mode sender reads its VMM's bytes into its send ring and sends
 * them from there: it takes no packet buffer for them (each would be a
 * buffer to fill and, for resuming, a copy into the ring), however much it
 * sends. The receiving side still reads packets into pooled buffers. */
START_TEST(test_credit_sender_sends_from_its_ring_without_packet_buffers)
{
    Tunnel t;
    tunnel_setup_resumable(&t, 10);
    run_migration(&t, 64 * MIB, 0);
    TunnelStats cs, ss;
    check_both_done_stats(&t, 64 * MIB, &cs, &ss);
    ck_assert_uint_eq(cs.buffers_allocated, 0);
    ck_assert_uint_gt(ss.buffers_allocated, 0);
    tunnel_teardown(&t);
}
END_TEST

/* The test as the source ferryd, on the raw socket: it keeps at most the
 * window in flight and counts the credit the destination grants back. */
typedef struct {
    int fd;
    GMutex lock;
    GCond cond;
    gint64 in_flight;
    guint credits;
    gboolean eof;
} RawPeer;

static gboolean read_exact(int fd, guint8 *buf, gsize len)
{
    for (gsize got = 0; got < len;) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0)
            return FALSE;
        got += n;
    }
    return TRUE;
}

static gpointer raw_peer_reader(gpointer data)
{
    RawPeer *p = data;
    for (;;) {
        guint8 word[4];
        if (!read_exact(p->fd, word, 4))
            break;
        guint32 len = GUINT32_FROM_BE(*(guint32 *)word);
        if (len < RPC_PAYLOAD_OFFSET || len > 16 * MIB)
            break;
        g_autofree guint8 *rest = g_malloc(len - 4);
        if (!read_exact(p->fd, rest, len - 4))
            break;
        guint32 prog = GUINT32_FROM_BE(*(guint32 *)rest);
        guint32 proc = GUINT32_FROM_BE(*(guint32 *)(rest + 8));
        if (prog == FERRY_TUNNEL_PROGRAM && proc == FERRY_TUNNEL_PROC_CREDIT &&
            len == RPC_PAYLOAD_OFFSET + 8) {
            guint64 be;
            memcpy(&be, rest + RPC_HEADER_SIZE, 8);
            g_mutex_lock(&p->lock);
            p->in_flight -= (gint64)GUINT64_FROM_BE(be);
            p->credits++;
            g_cond_broadcast(&p->cond);
            g_mutex_unlock(&p->lock);
        }
    }
    g_mutex_lock(&p->lock);
    p->eof = TRUE;
    g_cond_broadcast(&p->cond);
    g_mutex_unlock(&p->lock);
    return NULL;
}

static void raw_send(int fd, guint32 status, const guint8 *payload, gsize len)
{
    g_autoptr(RpcMessage) m = rpc_message_new(len);
    m->header = opening;
    m->header.type = RPC_STREAM;
    m->header.status = status;
    if (len)
        memcpy(rpc_message_payload(m), payload, len);
    rpc_message_seal(m, len);
    for (gsize off = 0; off < m->len;) {
        ssize_t n = send(fd, m->buf + off, m->len - off, MSG_NOSIGNAL);
        ck_assert_int_gt(n, 0);
        off += n;
    }
}

/* The hot path allocates nothing per packet: credit goes back in pieces of
 * a quarter of the window (not one message per packet), and the buffers in
 * flight come back to the pool, which keeps a window's worth, even when a
 * destination VMM that stalls again and again fills the window each time. */
START_TEST(test_credit_is_batched_and_buffers_are_reused)
{
    const gsize packet = 256 * 1024, window = 4 * MIB, total = 64 * MIB;
    Side server = {0};
    g_mutex_init(&server.lock);
    g_cond_init(&server.cond);
    int rpc[2], vmm[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, rpc), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, vmm), 0);
    TunnelStreamConfig sc = {.role = TUNNEL_ROLE_SERVER, .credit = TRUE, .window = window,
                             .peer_window = window, .packet_size = packet,
                             .peer_name = "source ferryd", .vmm_name = "destination VMM"};
    server.conn = rpc_connection_new(rpc_transport_new_socket(rpc[1]), &handler, &server);
    server.ts = tunnel_stream_new(server.conn, &opening, vmm[1], &sc);
    rpc_connection_start(server.conn);
    tunnel_stream_start(server.ts);

    RawPeer peer = {.fd = rpc[0]};
    g_mutex_init(&peer.lock);
    g_cond_init(&peer.cond);
    GThread *pr = g_thread_new("raw-peer", raw_peer_reader, &peer);
    /* The destination VMM pauses 300 ms after every 16 MiB. */
    Job r = {.fd = vmm[0], .total = total, .seed = 42, .delay_ms = 300, .pause_every = 16 * MIB};
    GThread *rt = g_thread_new("r", reader_job, &r);

    guint8 *payload = g_malloc(packet);
    guint64 seed = 42;
    for (gsize sent = 0; sent < total; sent += packet) {
        g_mutex_lock(&peer.lock);
        while (!peer.eof && peer.in_flight + (gint64)packet > (gint64)window)
            g_cond_wait(&peer.cond, &peer.lock);
        ck_assert(!peer.eof);
        peer.in_flight += packet;
        g_mutex_unlock(&peer.lock);
        seed = fill(payload, packet, seed);
        raw_send(rpc[0], RPC_CONTINUE, payload, packet);
    }
    g_free(payload);
    g_thread_join(rt);
    ck_assert(r.ok);
    raw_send(rpc[0], RPC_OK, NULL, 0); /* finish */
    g_autoptr(GError) e = NULL;
    ck_assert_msg(tunnel_stream_wait(server.ts, g_get_monotonic_time() + 30 * G_USEC_PER_SEC, &e),
                  "%s", e ? e->message : "");

    TunnelStats ss;
    tunnel_stream_get_stats(server.ts, &ss);
    ck_assert_uint_eq(ss.bytes_in, total);
    g_mutex_lock(&peer.lock);
    guint credits = peer.credits;
    g_mutex_unlock(&peer.lock);
    /* Per packet this would be 256 messages; each grant is at least 1 MiB. */
    ck_assert_msg(credits >= 1 && credits <= total / (window / 4),
                  "%u credit messages for %zu packets", credits, total / packet);
    /* The window's 16 packets queued, one being written to the VMM, one
     * being read off the socket, and the one the outgoing pump reads into. */
    ck_assert_msg(ss.buffers_allocated <= window / packet + 3,
                  "the destination allocated %" G_GUINT64_FORMAT " buffers", ss.buffers_allocated);

    shutdown(rpc[0], SHUT_RDWR);
    g_thread_join(pr);
    side_teardown(&server);
    close(rpc[0]);
    close(vmm[0]);
    g_mutex_clear(&peer.lock);
    g_cond_clear(&peer.cond);
}
END_TEST

typedef struct {
    Tunnel *t;
    gboolean over_credit;
    gboolean stop;
} Watch;

/* While the destination VMM stalls, the sender never has more than the
 * window in flight beyond what the destination VMM took. */
static gpointer watch_job(gpointer data)
{
    Watch *w = data;
    while (!g_atomic_int_get(&w->stop)) {
        TunnelStats cs, ss;
        tunnel_stream_get_stats(w->t->client.ts, &cs);
        tunnel_stream_get_stats(w->t->server.ts, &ss);
        if (cs.bytes_out > ss.bytes_in + 4 * MIB + MIB)
            w->over_credit = TRUE;
        g_usleep(1000);
    }
    return NULL;
}

START_TEST(test_stalled_vmm_bounds_memory_and_keeps_keepalive_alive)
{
    Tunnel t;
    tunnel_setup(&t, TRUE, FALSE, 0);
    /* keepalive 1 s x 1: dies within ~2 s unless PONGs keep flowing */
    rpc_connection_start_keepalive(t.client.conn, 1, 1);
    Watch w = {.t = &t};
    GThread *wt = g_thread_new("watch", watch_job, &w);
    run_migration(&t, 32 * MIB, 3000);
    g_atomic_int_set(&w.stop, TRUE);
    g_thread_join(wt);
    ck_assert(!w.over_credit);
    ck_assert(!rpc_connection_is_closed(t.client.conn));
    check_both_done(&t, 32 * MIB);
    tunnel_teardown(&t);
}
END_TEST

START_TEST(test_abort_returns_promptly_with_a_frozen_peer)
{
    Tunnel t;
    tunnel_setup(&t, FALSE, TRUE, 0);
    Job w = {.fd = t.vmm_src, .total = 256 * MIB, .seed = 1};
    GThread *wt = g_thread_new("w", writer_job, &w);
    g_usleep(300 * 1000); /* socket buffers toward the frozen peer are full now */
    gint64 start = g_get_monotonic_time();
    g_autoptr(GError) why = g_error_new_literal(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                                "migration canceled by client");
    tunnel_stream_abort(t.client.ts, why);
    ck_assert_int_lt(g_get_monotonic_time() - start, 100 * 1000);
    g_autoptr(GError) e = NULL;
    ck_assert(!tunnel_stream_wait(t.client.ts, g_get_monotonic_time() + 10 * G_USEC_PER_SEC, &e));
    ck_assert_int_lt(g_get_monotonic_time() - start, 5 * G_USEC_PER_SEC);
    ck_assert_str_eq(e->message, "migration canceled by client");
    ck_assert(!tunnel_stream_peer_acknowledged_end(t.client.ts));
    g_thread_join(wt);
    ck_assert(!w.ok); /* the source VMM saw its socket shut down */
    tunnel_teardown(&t);
}
END_TEST

START_TEST(test_abort_handshake_with_a_live_peer)
{
    Tunnel t;
    tunnel_setup(&t, TRUE, FALSE, 0);
    ck_assert_int_eq(write(t.vmm_src, "hello", 5), 5);
    g_usleep(100 * 1000);
    g_autoptr(GError) why = g_error_new_literal(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED, "stop");
    tunnel_stream_abort(t.client.ts, why);
    g_autoptr(GError) e1 = NULL, e2 = NULL;
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    ck_assert(!tunnel_stream_wait(t.client.ts, deadline, &e1));
    ck_assert(!tunnel_stream_wait(t.server.ts, deadline, &e2));
    ck_assert(tunnel_stream_peer_acknowledged_end(t.client.ts)); /* confirmation arrived */
    ck_assert_ptr_nonnull(strstr(e2->message, "the source ferryd aborted the stream after"));
    tunnel_teardown(&t);
}
END_TEST

START_TEST(test_destination_vmm_failure_reaches_the_source_with_its_cause)
{
    Tunnel t;
    tunnel_setup(&t, TRUE, FALSE, 0);
    close(t.vmm_dst); /* the destination VMM dies */
    t.vmm_dst = -1;
    Job w = {.fd = t.vmm_src, .total = 16 * MIB, .seed = 3};
    GThread *wt = g_thread_new("w", writer_job, &w);
    g_autoptr(GError) e = NULL;
    ck_assert(!tunnel_stream_wait(t.client.ts, g_get_monotonic_time() + 10 * G_USEC_PER_SEC, &e));
    ck_assert_msg(strstr(e->message, "cannot write to the destination VMM after") != NULL, "%s",
                  e->message);
    g_thread_join(wt);
    tunnel_teardown(&t);
}
END_TEST

START_TEST(test_lost_connection_fails_the_stream_naming_the_peer)
{
    Tunnel t;
    tunnel_setup(&t, TRUE, FALSE, 0);
    ck_assert_int_eq(write(t.vmm_src, "data", 4), 4);
    g_usleep(100 * 1000);
    rpc_connection_close(t.server.conn, NULL);
    g_autoptr(GError) e = NULL;
    ck_assert(!tunnel_stream_wait(t.client.ts, g_get_monotonic_time() + 10 * G_USEC_PER_SEC, &e));
    ck_assert_msg(strstr(e->message, "the connection to the destination ferryd closed after 4 bytes sent"),
                  "%s", e->message);
    tunnel_teardown(&t);
}
END_TEST

START_TEST(test_bandwidth_limit_is_enforced_by_the_tunnel)
{
    Tunnel t;
    tunnel_setup(&t, TRUE, FALSE, 20 * MIB);
    gint64 start = g_get_monotonic_time();
    run_migration(&t, 10 * MIB, 0);
    check_both_done(&t, 10 * MIB);
    /* 10 MiB at 20 MiB/s cannot take less than ~0.5 s (upper bounds are not tested). */
    ck_assert_int_ge(g_get_monotonic_time() - start, 450 * 1000);
    tunnel_teardown(&t);
}
END_TEST

typedef struct {
    RpcConnection *conn;
    gint done;
} WaitClosed;

static gpointer wait_closed_thread(gpointer data)
{
    WaitClosed *w = data;
    rpc_connection_wait_closed(w->conn);
    g_atomic_int_set(&w->done, TRUE);
    return NULL;
}

/* A plain (libvirt) peer streams into a destination VMM that never reads:
 * the destination's reader waits for sink room, as designed, but a close of
 * its connection (keepalive, shutdown) must still end the connection's
 * threads instead of waiting for the VMM forever. */
START_TEST(test_plain_reader_waiting_for_a_stalled_vmm_lets_the_connection_close)
{
    Tunnel t;
    tunnel_setup(&t, FALSE, FALSE, 0);
    Job w = {.fd = t.vmm_src, .total = 256 * MIB, .seed = 11};
    GThread *wt = g_thread_new("w", writer_job, &w);
    /* Until the destination's sink queue is full: its reader waits then. */
    TunnelStats ss = {0}, last = {0};
    for (int stable = 0; stable < 10;) {
        g_usleep(50 * 1000);
        tunnel_stream_get_stats(t.server.ts, &ss);
        stable = ss.packets_in == last.packets_in && ss.packets_in > 0 ? stable + 1 : 0;
        last = ss;
    }
    rpc_connection_close(t.server.conn, NULL);
    WaitClosed wc = {.conn = t.server.conn};
    GThread *ct = g_thread_new("wait-closed", wait_closed_thread, &wc);
    /* Generous: closing takes a poll interval (0.1 s); a reader that waits
     * for the VMM never ends. */
    for (int i = 0; i < 300 && !g_atomic_int_get(&wc.done); i++)
        g_usleep(100 * 1000);
    ck_assert_msg(g_atomic_int_get(&wc.done), "the connection's threads did not end in 30 s");
    g_thread_join(ct);
    g_autoptr(GError) e = NULL;
    ck_assert(!tunnel_stream_wait(t.server.ts, g_get_monotonic_time() + 10 * G_USEC_PER_SEC, &e));
    ck_assert_msg(strstr(e->message, "the connection to the source ferryd closed after"), "%s",
                  e->message);
    tunnel_stream_abort(t.client.ts, e);
    g_thread_join(wt);
    tunnel_teardown(&t);
}
END_TEST

static RpcMessage *stream_packet(guint32 status, const char *payload)
{
    gsize len = payload ? strlen(payload) : 0;
    RpcMessage *m = rpc_message_new(len);
    m->header = opening;
    m->header.type = RPC_STREAM;
    m->header.status = status;
    if (len)
        memcpy(rpc_message_payload(m), payload, len);
    rpc_message_seal(m, len);
    return m;
}

static guint side_messages(Side *side)
{
    g_mutex_lock(&side->lock);
    guint n = side->messages;
    g_mutex_unlock(&side->lock);
    return n;
}

/* Sends a sentinel from `from` and waits until `to` has it: everything
 * `from` queued before has arrived then. */
static void sync_with_sentinel(Side *from, Side *to)
{
    g_mutex_lock(&to->lock);
    guint sentinels = to->sentinels;
    g_mutex_unlock(&to->lock);
    RpcMessage *m = rpc_message_new(0);
    m->header = (RpcHeader){.prog = SENTINEL_PROGRAM, .vers = 1, .proc = 1, .type = RPC_MESSAGE};
    rpc_message_seal(m, 0);
    rpc_connection_send(from->conn, m);
    gint64 deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
    g_mutex_lock(&to->lock);
    while (to->sentinels == sentinels)
        ck_assert(g_cond_wait_until(&to->cond, &to->lock, deadline));
    g_mutex_unlock(&to->lock);
}

START_TEST(test_late_packets_after_the_end_are_dropped)
{
    Tunnel t;
    tunnel_setup(&t, FALSE, FALSE, 0);
    run_migration(&t, MIB, 0);
    check_both_done(&t, MIB);
    /* The server's stream sends nothing once done; what it sent before
     * (its end-of-data marker may trail the finish) arrives before this. */
    sync_with_sentinel(&t.server, &t.client);
    guint mark = side_messages(&t.client);
    TunnelStats before;
    tunnel_stream_get_stats(t.server.ts, &before);
    /* Data, a finish and an abort after the end: a live stream would take
     * the data, and confirm the finish and the abort to the client. */
    tunnel_stream_deliver(t.server.ts, stream_packet(RPC_CONTINUE, "late"));
    tunnel_stream_deliver(t.server.ts, stream_packet(RPC_OK, NULL));
    tunnel_stream_deliver(t.server.ts, stream_packet(RPC_ERROR, NULL));
    TunnelStats after;
    tunnel_stream_get_stats(t.server.ts, &after);
    ck_assert_uint_eq(after.packets_in, before.packets_in);
    ck_assert_uint_eq(after.bytes_in, MIB);
    sync_with_sentinel(&t.server, &t.client);
    ck_assert_uint_eq(side_messages(&t.client) - mark, 1); /* the sentinel: none answered */
    g_autoptr(GError) e = NULL;
    ck_assert(tunnel_stream_wait(t.server.ts, g_get_monotonic_time() + G_USEC_PER_SEC, &e));
    tunnel_teardown(&t);
}
END_TEST

static RpcMessage *credit_message(gsize payload_len, guint64 credit)
{
    RpcMessage *m = rpc_message_new(payload_len);
    m->header = (RpcHeader){.prog = FERRY_TUNNEL_PROGRAM, .vers = FERRY_TUNNEL_VERSION,
                            .proc = FERRY_TUNNEL_PROC_CREDIT, .type = RPC_MESSAGE,
                            .serial = opening.serial, .status = RPC_OK};
    guint64 be = GUINT64_TO_BE(credit);
    memcpy(rpc_message_payload(m), &be, MIN(payload_len, 8));
    rpc_message_seal(m, payload_len);
    return m;
}

/* A lying destination's credit fails the source's stream naming it, instead
 * of wrapping the signed counter or letting the source overrun the window. */
static void check_credit_refused(gboolean credit_mode, gsize len, guint64 credit,
                                 const char *want)
{
    Tunnel t;
    tunnel_setup(&t, credit_mode, TRUE, 0); /* frozen server: nothing else moves */
    tunnel_stream_deliver(t.client.ts, credit_message(len, credit));
    g_autoptr(GError) e = NULL;
    ck_assert(!tunnel_stream_wait(t.client.ts, g_get_monotonic_time() + 10 * G_USEC_PER_SEC, &e));
    ck_assert_msg(g_str_has_prefix(e->message, "protocol error from the destination ferryd: "),
                  "%s", e->message);
    ck_assert_str_eq(e->message + strlen("protocol error from the destination ferryd: "), want);
    tunnel_teardown(&t);
}

START_TEST(test_credit_beyond_what_is_in_flight_is_refused)
{
    check_credit_refused(TRUE, 8, 1,
                         "a credit of 1 bytes with 0 bytes in flight (window 4194304 bytes)");
    check_credit_refused(TRUE, 8, G_MAXUINT64,
                         "a credit of 18446744073709551615 bytes with 0 bytes in flight "
                         "(window 4194304 bytes)");
    check_credit_refused(TRUE, 8, (guint64)G_MAXINT64 + 1,
                         "a credit of 9223372036854775808 bytes with 0 bytes in flight "
                         "(window 4194304 bytes)");
    check_credit_refused(TRUE, 8, 0,
                         "a credit of 0 bytes with 0 bytes in flight (window 4194304 bytes)");
    check_credit_refused(TRUE, 4, 0, "a credit message of 4 bytes instead of 8");
    check_credit_refused(FALSE, 8, 65536,
                         "a credit message on a stream without credit flow control");
}
END_TEST

START_TEST(test_credit_for_bytes_in_flight_is_accepted)
{
    /* 1 MiB sent toward a frozen peer: a credit of up to 1 MiB is honest. */
    Tunnel t;
    tunnel_setup(&t, TRUE, TRUE, 0);
    Job w = {.fd = t.vmm_src, .total = MIB, .seed = 5};
    GThread *wt = g_thread_new("w", writer_job, &w);
    g_thread_join(wt);
    TunnelStats cs = {0};
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (cs.bytes_out < MIB && g_get_monotonic_time() < deadline) {
        g_usleep(1000);
        tunnel_stream_get_stats(t.client.ts, &cs);
    }
    ck_assert_uint_eq(cs.bytes_out, MIB);
    tunnel_stream_deliver(t.client.ts, credit_message(8, MIB / 2));
    tunnel_stream_deliver(t.client.ts, credit_message(8, MIB / 2));
    ck_assert(!tunnel_stream_is_over(t.client.ts));
    tunnel_stream_deliver(t.client.ts, credit_message(8, 1)); /* now nothing is in flight */
    g_autoptr(GError) e = NULL;
    ck_assert(!tunnel_stream_wait(t.client.ts, g_get_monotonic_time() + 10 * G_USEC_PER_SEC, &e));
    ck_assert_str_eq(e->message, "protocol error from the destination ferryd: a credit of 1 "
                                 "bytes with 0 bytes in flight (window 4194304 bytes)");
    tunnel_teardown(&t);
}
END_TEST

/* Writes len bytes of data at the ring's end as the pump does (read into
 * its space, then committed), in as many pieces as the wrap makes. */
static void ring_put(TunnelSendRing *r, const guint8 *data, gsize len)
{
    while (len > 0) {
        gsize room;
        guint8 *into = tunnel_send_ring_space(r, len, &room);
        ck_assert_uint_gt(room, 0);
        memcpy(into, data, room);
        tunnel_send_ring_commit(r, room);
        data += room;
        len -= room;
    }
}

/* Reads [pos, pos + len) out of the ring, in the pieces the wrap makes. */
static void ring_get(TunnelSendRing *r, guint64 pos, guint8 *out, gsize len)
{
    while (len > 0) {
        gsize n;
        const guint8 *p = tunnel_send_ring_at(r, pos, len, &n);
        ck_assert_uint_gt(n, 0);
        memcpy(out, p, n);
        pos += n;
        out += n;
        len -= n;
    }
}

/* The send ring keeps exactly the bytes not yet granted credit, across its
 * wrap-around, and never hands out more room than it has free. */
START_TEST(test_send_ring_keeps_unacknowledged_bytes_across_the_wrap)
{
    TunnelSendRing *r = tunnel_send_ring_new(10);
    guint8 data[64], out[16];
    for (guint i = 0; i < sizeof(data); i++)
        data[i] = (guint8)i;
    guint64 pos = 0;
    /* Stream positions 0..55 through a 10-byte ring, 7 at a time, the
     * peer granting credit 4 bytes behind. */
    while (pos < 56) {
        ring_put(r, data + pos, 7);
        pos += 7;
        ck_assert_uint_eq(tunnel_send_ring_end(r), pos);
        /* No more room than is free (less where it wraps): 3 bytes the
         * first time, none once 3 are kept from before. */
        gsize room, free_bytes = 10 - (gsize)(pos - tunnel_send_ring_start(r));
        tunnel_send_ring_space(r, 100, &room);
        ck_assert_uint_eq(room, MIN(free_bytes, 10 - pos % 10));
        ck_assert_uint_eq(free_bytes, pos == 7 ? 3 : 0);
        tunnel_send_ring_release(r, pos - 3);
        ck_assert_uint_eq(tunnel_send_ring_start(r), pos - 3);
        ring_get(r, pos - 3, out, 3);
        ck_assert_mem_eq(out, data + pos - 3, 3);
    }
    /* Releasing backwards or beyond the end changes nothing it must keep. */
    tunnel_send_ring_release(r, 2);
    ck_assert_uint_eq(tunnel_send_ring_start(r), pos - 3);
    tunnel_send_ring_release(r, pos + 100);
    ck_assert_uint_eq(tunnel_send_ring_start(r), pos);
    gsize room;
    tunnel_send_ring_space(r, 100, &room);
    ck_assert_uint_le(room, 10);
    ring_put(r, data + pos, 8);
    ring_get(r, pos, out, 8);
    ck_assert_mem_eq(out, data + pos, 8);
    /* A packet still queued somewhere keeps the memory alive past the stream. */
    tunnel_send_ring_ref(r);
    tunnel_send_ring_unref(r);
    tunnel_send_ring_unref(r);
}
END_TEST

/* ---- resuming on a new connection ---- */

typedef struct {
    RpcConnection *conn;
    TunnelRouter *router;
} Link;

static void link_on_message(RpcConnection *conn, RpcMessage *msg, gpointer data)
{
    Link *l = data;
    if (msg->header.type == RPC_STREAM || msg->header.prog == FERRY_TUNNEL_PROGRAM)
        tunnel_router_deliver(l->router, msg);
    else
        rpc_message_free(msg);
}

static void link_on_close(RpcConnection *conn, const GError *why, gpointer data)
{
    Link *l = data;
    tunnel_router_connection_closed(l->router, why);
}

static const RpcConnectionHandler link_handler = {.on_message = link_on_message,
                                                  .on_close = link_on_close};

typedef struct {
    Tunnel *t;
    gsize break_at; /* bytes the destination VMM got when the path breaks */
    Link client, server;
    gboolean ok;
    char *error;
} Breaker;

static gboolean both_await_resume(Tunnel *t)
{
    return tunnel_stream_awaits_resume(t->client.ts) && tunnel_stream_awaits_resume(t->server.ts);
}

/* Breaks the connection mid-stream (with a reason: a path that broke),
 * then moves both streams onto a new connection as the resume call does:
 * the server first, with the client's point, then the client with the
 * server's answer. */
static gpointer breaker_job(gpointer data)
{
    Breaker *b = data;
    Tunnel *t = b->t;
    TunnelStats ss;
    do {
        g_usleep(1000);
        tunnel_stream_get_stats(t->server.ts, &ss);
    } while (ss.bytes_in < b->break_at);
    /* A path that broke: each socket met its timeout first, as TCP's user
     * timeout reports it. Without that, the side whose close comes second
     * may read the first one's as an end of file (a peer that ended the
     * connection in order, which does not resume). */
    ferry_os_error_note(&rpc_connection_get_transport(t->client.conn)->os_error, ETIMEDOUT);
    ferry_os_error_note(&rpc_connection_get_transport(t->server.conn)->os_error, ETIMEDOUT);
    GError *cut = g_error_new_literal(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "the test cut the path");
    rpc_connection_close(t->client.conn, cut);
    rpc_connection_close(t->server.conn, cut);
    g_error_free(cut);
    for (int i = 0; i < 10000 && !both_await_resume(t); i++)
        g_usleep(1000);
    if (!both_await_resume(t)) {
        b->error = g_strdup("the streams did not wait for a new connection");
        return NULL;
    }
    int rpc[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, rpc) != 0) {
        b->error = g_strdup("socketpair");
        return NULL;
    }
    b->client.router = tunnel_router_new();
    b->server.router = tunnel_router_new();
    b->client.conn = rpc_connection_new(rpc_transport_new_socket(rpc[0]), &link_handler, &b->client);
    b->server.conn = rpc_connection_new(rpc_transport_new_socket(rpc[1]), &link_handler, &b->server);
    RpcHeader h = opening;
    h.serial = 77;
    h.type = RPC_STREAM;
    h.status = RPC_CONTINUE;
    TunnelBinding *cb = tunnel_router_reserve(b->client.router, b->client.conn, &h);
    TunnelBinding *sb = tunnel_router_reserve(b->server.router, b->server.conn, &h);
    rpc_connection_start(b->client.conn);
    rpc_connection_start(b->server.conn);
    TunnelResumePoint cp, sp;
    tunnel_stream_get_resume_point(t->client.ts, &cp);
    RpcConnection *old = NULL;
    GError *e = NULL;
    b->ok = tunnel_stream_resume(t->server.ts, sb, &cp, &sp, &old, &e);
    if (old)
        rpc_connection_unref(old);
    old = NULL;
    if (b->ok)
        b->ok = tunnel_stream_resume(t->client.ts, cb, &sp, NULL, &old, &e);
    if (old)
        rpc_connection_unref(old);
    if (!b->ok)
        b->error = g_strdup(e ? e->message : "?");
    g_clear_error(&e);
    tunnel_binding_free(cb);
    tunnel_binding_free(sb);
    return NULL;
}

static void link_teardown(Link *l)
{
    if (!l->conn)
        return;
    rpc_connection_close(l->conn, NULL);
    rpc_connection_wait_closed(l->conn);
}

static void link_free(Link *l)
{
    tunnel_router_free(l->router);
    if (l->conn)
        rpc_connection_unref(l->conn);
}

/* The connection breaks with 8 MiB delivered: both streams wait, go on over
 * a new connection from where the other side stands, and every byte reaches
 * each VMM once, in order; the VMMs see nothing. */
START_TEST(test_resumed_stream_carries_every_byte_once)
{
    Tunnel t;
    tunnel_setup_resumable(&t, 10);
    Breaker b = {.t = &t, .break_at = 8 * MIB};
    GThread *bt = g_thread_new("breaker", breaker_job, &b);
    run_migration(&t, 48 * MIB, 0);
    g_thread_join(bt);
    ck_assert_msg(b.ok, "%s", b.error ? b.error : "");
    TunnelStats cs, ss;
    check_both_done_stats(&t, 48 * MIB, &cs, &ss);
    ck_assert_uint_eq(cs.reconnections, 1);
    ck_assert_uint_eq(ss.reconnections, 1);
    ck_assert_uint_le(cs.bytes_resent, 4 * MIB); /* never more than the window */
    link_teardown(&b.client);
    link_teardown(&b.server);
    tunnel_teardown(&t);
    link_free(&b.client);
    link_free(&b.server);
    g_free(b.error);
}
END_TEST

/* Until the stream sent bytes in all (its pump runs when it gets the CPU). */
static void wait_sent(TunnelStream *ts, guint64 bytes)
{
    TunnelStats st;
    for (int i = 0; i < 3000; i++) {
        tunnel_stream_get_stats(ts, &st);
        if (st.bytes_out >= bytes)
            return;
        g_usleep(10 * 1000);
    }
    ck_abort_msg("the stream sent %" G_GUINT64_FORMAT " bytes of %" G_GUINT64_FORMAT,
                 st.bytes_out, bytes);
}

/* A resumable stream (resume_s) whose source sent 4 bytes: the start of
 * every case that breaks its connection and watches what the stream does. */
static void resumable_with_4_bytes_sent(Tunnel *t, guint resume_s)
{
    tunnel_setup_resumable(t, resume_s);
    ck_assert_int_eq(write(t->vmm_src, "data", 4), 4);
    wait_sent(t->client.ts, 4);
}

/* Not resumed within its time: the stream fails naming the cause and the time. */
START_TEST(test_stream_not_resumed_in_time_fails_naming_it)
{
    Tunnel t;
    resumable_with_4_bytes_sent(&t, 1);
    g_autoptr(GError) cut = g_error_new_literal(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cut");
    rpc_connection_close(t.client.conn, cut);
    g_autoptr(GError) e = NULL;
    gint64 start = g_get_monotonic_time();
    ck_assert(!tunnel_stream_wait(t.client.ts, start + 10 * G_USEC_PER_SEC, &e));
    ck_assert_int_ge(g_get_monotonic_time() - start, 900 * 1000);
    ck_assert_msg(strstr(e->message, "the connection to the destination ferryd closed after 4 bytes "
                                     "sent, 0 bytes received: cut, and did not come back within 1 s"),
                  "%s", e->message);
    tunnel_teardown(&t);
}
END_TEST

/* Nobody waits for the stream's end (tunnel_stream_wait): its pumps still
 * end it when its resume time is up, and its VMM sees the socket close, so
 * a resume that never comes cannot leave a VMM writing into a stream that
 * no longer moves. */
START_TEST(test_stream_not_resumed_in_time_ends_by_itself)
{
    Tunnel t;
    resumable_with_4_bytes_sent(&t, 1);
    g_autoptr(GError) cut = g_error_new_literal(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cut");
    ferry_os_error_note(&rpc_connection_get_transport(t.client.conn)->os_error, ETIMEDOUT);
    rpc_connection_close(t.client.conn, cut);
    gint64 start = g_get_monotonic_time();
    while (!tunnel_stream_is_over(t.client.ts) && g_get_monotonic_time() - start < 10 * G_USEC_PER_SEC)
        g_usleep(20 * 1000);
    ck_assert(tunnel_stream_is_over(t.client.ts));
    ck_assert_int_ge(g_get_monotonic_time() - start, 900 * 1000);
    char c;
    ck_assert_int_eq(read(t.vmm_src, &c, 1), 0); /* the source VMM's socket was shut down */
    g_autoptr(GError) e = NULL;
    ck_assert(!tunnel_stream_wait(t.client.ts, g_get_monotonic_time() + G_USEC_PER_SEC, &e));
    ck_assert_msg(strstr(e->message, "did not come back within 1 s"), "%s", e->message);
    tunnel_teardown(&t);
}
END_TEST

/* A connection the peer ended in order (or reset) may be a peer whose own
 * end of a broken connection timed out first: a resumable stream waits for
 * it, but only TUNNEL_RESUME_ENDED_GRACE_S, not its whole resume time. */
START_TEST(test_stream_ended_in_order_waits_a_short_grace)
{
    Tunnel t;
    resumable_with_4_bytes_sent(&t, 30);
    gint64 start = g_get_monotonic_time();
    rpc_connection_close(t.server.conn, NULL); /* the client reads an end of file */
    for (int i = 0; i < 500 && !tunnel_stream_awaits_resume(t.client.ts); i++)
        g_usleep(10 * 1000);
    ck_assert(tunnel_stream_awaits_resume(t.client.ts));
    g_autoptr(GError) e = NULL;
    ck_assert(!tunnel_stream_wait(t.client.ts, start + 20 * G_USEC_PER_SEC, &e));
    gint64 took = g_get_monotonic_time() - start;
    ck_assert_int_ge(took, (TUNNEL_RESUME_ENDED_GRACE_S * G_USEC_PER_SEC) - 200 * 1000);
    ck_assert_int_lt(took, 15 * G_USEC_PER_SEC);
    g_autofree char *want = g_strdup_printf("did not come back within %d s",
                                            TUNNEL_RESUME_ENDED_GRACE_S);
    ck_assert_msg(strstr(e->message, want), "%s", e->message);
    tunnel_teardown(&t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tunnel-stream");
    TCase *tc = tcase_create("stream");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_plain_stream_carries_every_byte_and_finishes);
    tcase_add_test(tc, test_credit_stream_carries_every_byte_and_finishes);
    tcase_add_test(tc, test_credit_is_batched_and_buffers_are_reused);
    tcase_add_test(tc, test_credit_sender_sends_from_its_ring_without_packet_buffers);
    tcase_add_test(tc, test_stalled_vmm_bounds_memory_and_keeps_keepalive_alive);
    tcase_add_test(tc, test_abort_returns_promptly_with_a_frozen_peer);
    tcase_add_test(tc, test_abort_handshake_with_a_live_peer);
    tcase_add_test(tc, test_destination_vmm_failure_reaches_the_source_with_its_cause);
    tcase_add_test(tc, test_lost_connection_fails_the_stream_naming_the_peer);
    tcase_add_test(tc, test_bandwidth_limit_is_enforced_by_the_tunnel);
    tcase_add_test(tc, test_late_packets_after_the_end_are_dropped);
    tcase_add_test(tc, test_plain_reader_waiting_for_a_stalled_vmm_lets_the_connection_close);
    tcase_add_test(tc, test_credit_beyond_what_is_in_flight_is_refused);
    tcase_add_test(tc, test_credit_for_bytes_in_flight_is_accepted);
    tcase_add_test(tc, test_send_ring_keeps_unacknowledged_bytes_across_the_wrap);
    tcase_add_test(tc, test_resumed_stream_carries_every_byte_once);
    tcase_add_test(tc, test_stream_not_resumed_in_time_fails_naming_it);
    tcase_add_test(tc, test_stream_not_resumed_in_time_ends_by_itself);
    tcase_add_test(tc, test_stream_ended_in_order_waits_a_short_grace);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
