/* The tunnel stream's state machine, its two pumps and its flow control.
 *
 *   C = client role (made the opening call), S = server role (answered it)
 *
 *                 data both ways: STREAM/CONTINUE; credit back (ferry peers)
 *        +----------------------------- OPEN ------------------------------+
 *        |                               |                                 |
 *   C: VMM EOF                      S: VMM EOF                    S: FINISH (STREAM/OK) in
 *   send FINISH (STREAM/OK)         send EOF marker                drain sink, shut VMM's
 *        |                          (empty CONTINUE),              write side, send OK
 *        v                          stay OPEN                            |
 *    FINISHING --- C: OK in (confirmation) ---------------------------> DONE
 *
 *   C: abort()          -> send ABORT (STREAM/ERROR, empty) -> ABORTING
 *                          OK in, or no answer within the grace -> ABORTED
 *   S: ABORT in         -> send OK ------------------------------> ABORTED
 *   S: abort() / local failure -> send STREAM/ERROR + remote_error -> FAILED
 *   C: local failure    -> send ABORT ---------------------------> FAILED
 *   C: STREAM/ERROR in  -> send nothing more -------------------> FAILED
 *   connection closed   -> FAILED (ABORTING -> ABORTED)
 *
 * DONE, ABORTED and FAILED are terminal: the VMM socket is shut down, the
 * pumps stop, and packets that still arrive are dropped. Data packets are
 * never answered (WIRE.md section 3); only finish and abort are confirmed.
 *
 * Flow control. Credit mode (two ferryd): each side may have at most the
 * peer's window of bytes in flight that the peer has not yet written to its
 * VMM; the receiver grants credit back once it has written a quarter of its
 * window (one credit message per few packets, not one each). So a stalled VMM
 * stops the sender without growing memory, while the connection keeps
 * carrying keepalives and calls. Plain mode (a libvirt peer): the sender
 * keeps at most send_queue_limit bytes queued; the receiver queues `window`
 * bytes for its VMM and then stops reading the connection.
 *
 * Sending without a copy (credit mode): the pump reads the VMM's bytes
 * straight into the stream's send ring (tunnel-ring.h) and each packet's
 * payload points into it; the ring is the peer's window, and a byte's room
 * is written again only once the peer granted credit for it, i.e. after
 * the connection wrote it. Plain mode reads into pooled packet buffers.
 *
 * Resuming (credit mode, cfg.resume): the connection closing leaves an OPEN
 * or FINISHING stream *detached* (for the resume time if it broke, for
 * TUNNEL_RESUME_ENDED_GRACE_S if the peer ended or reset it): the sender stops (what it read from its
 * VMM meanwhile is kept), the sink goes on writing what it has, packets
 * are dropped, credit is held back. tunnel_stream_resume on a new
 * connection swaps it in and resends from the peer's received position
 * (the sender keeps every byte the peer has not granted credit for, at
 * most its window, in a ring), then the end markers it had sent. Not back
 * within resume_timeout_s: FAILED, as a closed connection without resume.
 * A keepalive timeout while the peer's host still acknowledges (a frozen
 * peer, rpc_connection_peer_unresponsive) is not waited for. */
#include "tunnel/tunnel-stream.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"
#include "util/thread.h"
#include "tunnel/tunnel-ring.h"
#include "tunnel/tunnel-router.h"

#define FERRY_LOG_MODULE "tunnel.stream"

/* How long an abort waits for the peer's confirmation before giving up. */
#define ABORT_GRACE_US (2 * G_USEC_PER_SEC)
/* Pumps re-check the state at least this often while they wait. */
#define POLL_US (100 * 1000)
/* Credit is granted back in pieces of at least window / CREDIT_BATCH_DIVISOR:
 * the sender has the rest of its window to go on with meanwhile, and a
 * sender blocked on credit has the whole window in flight (it uses the
 * window we advertised, see migration-cookie.c), so the receiver always
 * collects a piece and grants it. */
#define CREDIT_BATCH_DIVISOR 4
/* The pool keeps twice a window's worth of full packets: a VMM socket hands
 * over about 200 KiB per read, so packets are often smaller than
 * packet_size and more of them are in flight; plus the one the reader
 * fills and the one the sink or writer is emptying. */
#define POOL_WINDOWS 2
#define POOL_SPARE_BUFFERS 2

typedef enum {
    ST_OPEN,
    ST_FINISHING,
    ST_ABORTING,
    ST_DONE,
    ST_ABORTED,
    ST_FAILED,
} StreamState;

static const char *const state_names[] = {"open", "finishing", "aborting",
                                          "done", "aborted",   "failed"};

struct TunnelStream {
    gint ref;
    RpcConnection *conn;
    RpcHeader header; /* prog/vers/proc/serial of the opening call, type STREAM */
    int vmm_fd;
    TunnelStreamConfig cfg;
    char *peer_name;
    char *vmm_name;
    RpcMessagePool *pool;
    RpcMessagePool *credit_pool; /* 8-byte credit messages, reused */
    /* credit mode: the packets we send, header only (payload in the ring) */
    RpcMessagePool *header_pool;
    TunnelSendRing *ring;       /* credit mode: sent bytes the peer has not granted credit for */

    GMutex lock;
    /* The pumps' and the plain-mode reader's waits; a packet or a credit
     * wakes it only when one of them waits (waiting), since a wake is a
     * syscall and every packet makes several. */
    GCond cond;
    guint waiting;
    GCond end_cond; /* tunnel_stream_wait: a terminal state or ABORTING only */
    StreamState state;
    GError *error;
    gboolean peer_acked;
    guint threads;
    gboolean finish_requested; /* S: the peer sent FINISH */
    gboolean in_eof;           /* C: the peer sent its EOF marker */
    gboolean in_eof_handled;
    gint64 abort_deadline_us;
    GQueue sink_queue; /* RpcMessage, payload for the VMM */
    gsize sink_bytes;
    gint64 send_credit;
    guint64 credit_pending; /* written to the VMM, not yet granted back */
    guint64 credit_batch;
    TunnelRate *rate; /* its own, or the migration's shared by its channels */
    TunnelStats stats;
    TunnelCounters counters; /* the flight recorder's: atomic adds, no lock */
    /* resuming (cfg.resume) */
    guint64 acked_out;      /* credit the peer granted, in total */
    guint64 in_received;    /* bytes taken from the peer (queued for the sink or written):
                             * the sink's write in progress is in neither sink_bytes
                             * nor stats.bytes_in */
    gboolean out_eof;       /* S: our EOF marker was sent */
    gboolean detached;      /* the connection is gone; waiting for a new one */
    guint resume_wait_s;    /* how long, from when it went (TUNNEL_RESUME_ENDED_GRACE_S) */
    gint64 resume_deadline_us;
    GError *detach_reason;
};

static gboolean is_terminal(StreamState s)
{
    return s == ST_DONE || s == ST_ABORTED || s == ST_FAILED;
}

static gboolean is_running(StreamState s)
{
    return s == ST_OPEN || s == ST_FINISHING;
}

static void resume_expired_locked(TunnelStream *ts);

/* Waits on ts->cond, counted so that wake_locked knows someone waits. A
 * detached stream waits no longer than its resume time, and ends itself
 * then: its pumps bound it, whether or not anyone waits for its end
 * (tunnel_stream_wait). */
static void wait_locked(TunnelStream *ts)
{
    ts->waiting++;
    if (ts->detached)
        g_cond_wait_until(&ts->cond, &ts->lock, ts->resume_deadline_us);
    else
        g_cond_wait(&ts->cond, &ts->lock);
    ts->waiting--;
    if (ts->detached && is_running(ts->state) && g_get_monotonic_time() >= ts->resume_deadline_us)
        resume_expired_locked(ts);
}

static void wait_until_locked(TunnelStream *ts, gint64 until_us)
{
    ts->waiting++;
    g_cond_wait_until(&ts->cond, &ts->lock, until_us);
    ts->waiting--;
}

/* The per-packet wake: nothing to do (no syscall) while nobody waits. */
static void wake_locked(TunnelStream *ts)
{
    if (ts->waiting)
        g_cond_broadcast(&ts->cond);
}

TunnelStream *tunnel_stream_new(RpcConnection *conn, const RpcHeader *opening_call, int vmm_fd,
                                const TunnelStreamConfig *config)
{
    TunnelStream *ts = g_new0(TunnelStream, 1);
    ts->ref = 1;
    ts->conn = rpc_connection_ref(conn);
    ts->header = *opening_call;
    ts->header.type = RPC_STREAM;
    ts->vmm_fd = vmm_fd;
    ts->cfg = *config;
    ts->peer_name = g_strdup(config->peer_name ? config->peer_name : "peer");
    ts->vmm_name = g_strdup(config->vmm_name ? config->vmm_name : "VMM");
    ts->cfg.peer_name = ts->peer_name;
    ts->cfg.vmm_name = ts->vmm_name;
    if (ts->cfg.packet_size == 0)
        ts->cfg.packet_size = RPC_MESSAGE_LEGACY_PAYLOAD_MAX;
    if (ts->cfg.window == 0)
        ts->cfg.window = 4 * ts->cfg.packet_size;
    if (ts->cfg.send_queue_limit == 0)
        ts->cfg.send_queue_limit = 4 * ts->cfg.packet_size;
    /* Enough buffers kept for reuse to cover a whole window in flight, in
     * either direction: a miss would mmap and fault in a fresh buffer (and
     * munmap it again) for every packet, see ferryd's main. */
    gsize in_flight = MAX(ts->cfg.window, ts->cfg.peer_window);
    if (!ts->cfg.credit)
        in_flight = MAX(in_flight, ts->cfg.send_queue_limit);
    guint buffers =
        (guint)MIN(POOL_WINDOWS * (in_flight / ts->cfg.packet_size) + POOL_SPARE_BUFFERS, 1024);
    ts->pool = rpc_message_pool_new(ts->cfg.packet_size, buffers);
    ts->credit_pool = rpc_message_pool_new(8, 4);
    ts->credit_batch = MAX(ts->cfg.window / CREDIT_BATCH_DIVISOR, 1);
    g_mutex_init(&ts->lock);
    g_cond_init(&ts->cond);
    g_cond_init(&ts->end_cond);
    g_queue_init(&ts->sink_queue);
    ts->send_credit = (gint64)ts->cfg.peer_window;
    ts->cfg.resume = ts->cfg.resume && ts->cfg.credit;
    if (ts->cfg.credit) {
        ts->ring = tunnel_send_ring_new(ts->cfg.peer_window);
        ts->header_pool = rpc_message_pool_new(0, buffers);
    }
    ts->rate = tunnel_rate_new(ts->cfg.bandwidth);
    ts->stats.started_us = g_get_monotonic_time();
    return ts;
}

TunnelStream *tunnel_stream_ref(TunnelStream *ts)
{
    g_atomic_int_inc(&ts->ref);
    return ts;
}

void tunnel_stream_unref(TunnelStream *ts)
{
    if (!ts || !g_atomic_int_dec_and_test(&ts->ref))
        return;
    rpc_message_queue_clear(&ts->sink_queue);
    if (ts->vmm_fd >= 0)
        close(ts->vmm_fd);
    rpc_message_pool_unref(ts->pool);
    rpc_message_pool_unref(ts->credit_pool);
    rpc_message_pool_unref(ts->header_pool);
    rpc_connection_unref(ts->conn);
    tunnel_send_ring_unref(ts->ring);
    g_clear_error(&ts->detach_reason);
    g_clear_error(&ts->error);
    tunnel_rate_unref(ts->rate);
    g_mutex_clear(&ts->lock);
    g_cond_clear(&ts->cond);
    g_cond_clear(&ts->end_cond);
    g_free(ts->peer_name);
    g_free(ts->vmm_name);
    g_free(ts);
}

guint32 tunnel_stream_get_serial(TunnelStream *ts)
{
    return ts->header.serial;
}

/* ---- sending control packets (under the lock; the queue never blocks) ---- */

static void send_control_locked(TunnelStream *ts, guint32 status)
{
    RpcMessage *m = rpc_message_new(0);
    m->header = ts->header;
    m->header.status = status;
    rpc_message_seal(m, 0);
    rpc_connection_send(ts->conn, m);
}

static void send_error_locked(TunnelStream *ts, const GError *why)
{
    rpc_connection_send(ts->conn, rpc_message_new_error(&ts->header, RPC_STREAM, why));
}

/* Credit messages come from a small pool of their own: none is allocated
 * per grant. */
static void send_credit_locked(TunnelStream *ts, guint64 bytes)
{
    RpcMessage *m = rpc_message_pool_take(ts->credit_pool);
    m->header = (RpcHeader){.prog = FERRY_TUNNEL_PROGRAM, .vers = FERRY_TUNNEL_VERSION,
                            .proc = FERRY_TUNNEL_PROC_CREDIT, .type = RPC_MESSAGE,
                            .serial = ts->header.serial, .status = RPC_OK};
    guint64 be = GUINT64_TO_BE(bytes);
    memcpy(rpc_message_payload(m), &be, 8);
    rpc_message_seal(m, 8);
    rpc_connection_send(ts->conn, m);
}

static char *moved(TunnelStream *ts)
{
    g_autofree char *out = ferry_format_size(ts->stats.bytes_out);
    g_autofree char *in = ferry_format_size(ts->stats.bytes_in);
    return g_strdup_printf("%s sent, %s received", out, in);
}

/* Enters a terminal state (or ABORTING): records why, shuts the VMM socket
 * down so both pumps wake up, drops what the VMM will never get. */
static void end_locked(TunnelStream *ts, StreamState state, const GError *why)
{
    if (is_terminal(ts->state))
        return;
    FERRY_DEBUG("stream serial %u: %s -> %s%s%s", ts->header.serial, state_names[ts->state],
                state_names[state], why ? ": " : "", why ? why->message : "");
    ts->state = state;
    if (why && !ts->error)
        ts->error = g_error_copy(why);
    if (ts->vmm_fd >= 0)
        shutdown(ts->vmm_fd, SHUT_RDWR);
    rpc_message_queue_clear(&ts->sink_queue);
    ts->sink_bytes = 0;
    if (is_terminal(state))
        ts->stats.ended_us = g_get_monotonic_time();
    g_cond_broadcast(&ts->cond);
    g_cond_broadcast(&ts->end_cond);
}

/* A local failure: tell the peer the way the protocol allows for our role. */
static void fail_locked(TunnelStream *ts, GError *why)
{
    if (!is_running(ts->state) && ts->state != ST_ABORTING) {
        g_error_free(why);
        return;
    }
    if (ts->cfg.role == TUNNEL_ROLE_SERVER)
        send_error_locked(ts, why);
    else if (ts->state != ST_ABORTING)
        send_control_locked(ts, RPC_ERROR); /* abort: the client never sends an error body */
    end_locked(ts, ST_FAILED, why);
    g_error_free(why);
}

/* ---- pump: VMM -> peer ---- */

/* The connection's cipher time for dir, read only while counting
 * (begin_us set): the part of a network or credit wait it accounts for is
 * the encryption wait (tunnel_counters_wait_end_split). */
static guint64 cipher_us(TunnelStream *ts, int dir, gint64 begin_us)
{
    return begin_us ? rpc_connection_get_crypto_us(ts->conn, dir) : 0;
}

static void throttle(TunnelStream *ts)
{
    gint64 waited = tunnel_counters_wait_begin();
    g_mutex_lock(&ts->lock);
    for (;;) {
        gint64 due = tunnel_rate_due(ts->rate), now = g_get_monotonic_time();
        if (!is_running(ts->state) || now >= due)
            break;
        wait_until_locked(ts, MIN(due, now + POLL_US));
    }
    g_mutex_unlock(&ts->lock);
    tunnel_counters_wait_end(&ts->counters.wait_throttle_us, waited);
}

/* Waits for credit (credit mode) or queue space (plain mode). Returns the
 * bytes we may read now, or 0 when the stream stopped. */
static gsize wait_to_send(TunnelStream *ts)
{
    for (;;) {
        g_mutex_lock(&ts->lock);
        if (ts->cfg.credit && ts->state == ST_OPEN && (ts->send_credit <= 0 || ts->detached)) {
            /* Our connection still encrypting what was sent keeps the
             * credit back too: that part is the cipher's. */
            gint64 waited = tunnel_counters_wait_begin();
            guint64 enc = cipher_us(ts, RPC_CRYPTO_SEND, waited);
            while (ts->state == ST_OPEN && (ts->send_credit <= 0 || ts->detached))
                wait_locked(ts);
            tunnel_counters_wait_end_split(&ts->counters, &ts->counters.wait_credit_us, waited,
                                           enc, cipher_us(ts, RPC_CRYPTO_SEND, waited));
        }
        gboolean open = ts->state == ST_OPEN;
        gsize room = ts->cfg.packet_size;
        if (ts->cfg.credit)
            room = MIN(room, (gsize)MAX(ts->send_credit, 0));
        g_mutex_unlock(&ts->lock);
        if (!open)
            return 0;
        if (ts->cfg.credit)
            return room;
        gint64 waited = tunnel_counters_wait_begin();
        guint64 enc = cipher_us(ts, RPC_CRYPTO_SEND, waited);
        gboolean space = rpc_connection_wait_send_space(ts->conn, ts->cfg.send_queue_limit,
                                                        g_get_monotonic_time() + POLL_US) &&
                         rpc_connection_get_queued_bytes(ts->conn) <= ts->cfg.send_queue_limit;
        tunnel_counters_wait_end_split(&ts->counters, &ts->counters.wait_net_send_us, waited, enc,
                                       cipher_us(ts, RPC_CRYPTO_SEND, waited));
        if (space)
            return room;
        if (rpc_connection_is_closed(ts->conn))
            return 0; /* connection_closed() reports it */
    }
}

static gssize read_vmm(TunnelStream *ts, void *buf, gsize len)
{
    for (;;) {
        gssize n = read(ts->vmm_fd, buf, len);
        if (n >= 0 || errno != EINTR)
            return n;
    }
}

static gpointer pump_out_thread(gpointer data)
{
    TunnelStream *ts = data;
    for (;;) {
        gsize room = wait_to_send(ts);
        if (room == 0)
            break;
        RpcMessage *msg;
        guint8 *into;
        if (ts->ring) {
            /* Credit bounds what is outstanding by the ring's size, so it
             * has room for what credit allows (less where it wraps). */
            g_mutex_lock(&ts->lock);
            into = tunnel_send_ring_space(ts->ring, room, &room);
            if (room == 0) {
                fail_locked(ts, g_error_new(FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                                            "the send ring of the stream to the %s is full "
                                            "while credit allows more",
                                            ts->peer_name));
                g_mutex_unlock(&ts->lock);
                break;
            }
            g_mutex_unlock(&ts->lock);
            msg = rpc_message_pool_take(ts->header_pool);
        } else {
            msg = rpc_message_pool_take(ts->pool);
            into = rpc_message_payload(msg);
        }
        gint64 waited = tunnel_counters_wait_begin();
        gssize n = read_vmm(ts, into, room);
        int err = errno;
        tunnel_counters_wait_end(&ts->counters.wait_vmm_read_us, waited);

        g_mutex_lock(&ts->lock);
        if (!is_running(ts->state)) {
            g_mutex_unlock(&ts->lock);
            rpc_message_free(msg);
            break;
        }
        if (n > 0) {
            msg->header = ts->header;
            msg->header.status = RPC_CONTINUE;
            if (ts->ring) {
                tunnel_send_ring_commit(ts->ring, n);
                rpc_message_seal_external(msg, into, n, tunnel_send_ring_ref,
                                          tunnel_send_ring_unref, ts->ring);
            } else {
                rpc_message_seal(msg, n);
            }
            ts->send_credit -= n;
            ts->stats.bytes_out += n;
            tunnel_rate_add(ts->rate, n);
            ts->stats.packets_out++;
            tunnel_counters_add(&ts->counters.bytes_out, n);
            if (ts->detached)
                rpc_message_free(msg); /* kept in the ring: resent on the new connection */
            else
                rpc_connection_send(ts->conn, msg);
            g_mutex_unlock(&ts->lock);
            throttle(ts);
            continue;
        }
        rpc_message_free(msg);
        if (n == 0) {
            /* The VMM closed its end: all its bytes are queued. */
            /* Detached: resume sends the marker after the resent data. */
            if (ts->cfg.role == TUNNEL_ROLE_CLIENT) {
                if (!ts->detached)
                    send_control_locked(ts, RPC_OK);
                ts->state = ST_FINISHING;
                g_cond_broadcast(&ts->cond);
            } else {
                if (!ts->detached)
                    send_control_locked(ts, RPC_CONTINUE); /* empty CONTINUE: end of our data */
                ts->out_eof = TRUE;
            }
        } else {
            g_autofree char *m = moved(ts);
            fail_locked(ts, g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                                        "cannot read from the %s after %s: %s", ts->vmm_name, m,
                                        g_strerror(err)));
        }
        g_mutex_unlock(&ts->lock);
        break;
    }
    tunnel_stream_unref(ts);
    return NULL;
}

/* ---- sink: peer -> VMM ---- */

static gboolean write_vmm(TunnelStream *ts, const guint8 *buf, gsize len, int *err)
{
    while (len > 0) {
        gssize n = send(ts->vmm_fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK)
            n = write(ts->vmm_fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            return FALSE;
        }
        buf += n;
        len -= n;
    }
    return TRUE;
}

static gboolean sink_has_work(TunnelStream *ts)
{
    if (!g_queue_is_empty(&ts->sink_queue))
        return TRUE;
    if (ts->cfg.role == TUNNEL_ROLE_SERVER)
        return ts->finish_requested;
    return ts->in_eof && !ts->in_eof_handled;
}

static gpointer sink_thread(gpointer data)
{
    TunnelStream *ts = data;
    g_mutex_lock(&ts->lock);
    for (;;) {
        /* Waiting for data while our connection decrypts it: the cipher's part. */
        gint64 idle = is_running(ts->state) && !sink_has_work(ts) ? tunnel_counters_wait_begin()
                                                                  : 0;
        guint64 dec = cipher_us(ts, RPC_CRYPTO_RECV, idle);
        while (is_running(ts->state) && !sink_has_work(ts))
            wait_locked(ts);
        tunnel_counters_wait_end_split(&ts->counters, &ts->counters.wait_net_recv_us, idle, dec,
                                       cipher_us(ts, RPC_CRYPTO_RECV, idle));
        if (!is_running(ts->state))
            break;

        RpcMessage *msg = rpc_message_queue_pop(&ts->sink_queue);
        if (msg) {
            gsize len = rpc_message_payload_len(msg);
            ts->sink_bytes -= len;
            wake_locked(ts); /* a plain-mode reader may wait for room */
            g_mutex_unlock(&ts->lock);
            int err = 0;
            gint64 waited = tunnel_counters_wait_begin();
            gboolean ok = write_vmm(ts, rpc_message_payload(msg), len, &err);
            tunnel_counters_wait_end(&ts->counters.wait_vmm_write_us, waited);
            rpc_message_free(msg);
            g_mutex_lock(&ts->lock);
            if (!ok) {
                g_autofree char *m = moved(ts);
                fail_locked(ts, g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                                            "cannot write to the %s after %s: %s", ts->vmm_name,
                                            m, g_strerror(err)));
                break;
            }
            ts->stats.bytes_in += len;
            tunnel_counters_add(&ts->counters.bytes_in, len);
            if (ts->cfg.credit && is_running(ts->state)) {
                ts->credit_pending += len;
                /* Detached: held back; resume tells the total granted. */
                if (ts->credit_pending >= ts->credit_batch && !ts->detached) {
                    send_credit_locked(ts, ts->credit_pending);
                    ts->credit_pending = 0;
                }
            }
            continue;
        }

        /* Queue drained. */
        shutdown(ts->vmm_fd, SHUT_WR); /* the VMM reads EOF: no more input */
        if (ts->cfg.role == TUNNEL_ROLE_SERVER) {
            send_control_locked(ts, RPC_OK); /* finish confirmed: all data written */
            ts->peer_acked = TRUE;
            end_locked(ts, ST_DONE, NULL);
            break;
        }
        ts->in_eof_handled = TRUE;
    }
    g_mutex_unlock(&ts->lock);
    tunnel_stream_unref(ts);
    return NULL;
}

void tunnel_stream_start(TunnelStream *ts)
{
    /* Incoming data packets land in reused buffers too (principle 1). */
    rpc_connection_set_rx_pool(ts->conn, ts->pool);
    static const struct {
        const char *name;
        GThreadFunc func;
    } threads[] = {{"tunnel-out", pump_out_thread}, {"tunnel-sink", sink_thread}};
    for (gsize i = 0; i < G_N_ELEMENTS(threads); i++) {
        GError *why = NULL;
        GThread *t = ferry_thread_try_new(threads[i].name, threads[i].func,
                                          tunnel_stream_ref(ts), &why);
        if (t) {
            g_thread_unref(t);
            continue;
        }
        /* The stream fails with the reason: a thread already started sees it
         * and ends, and the caller's wait reports it like any other failure. */
        tunnel_stream_unref(ts);
        g_mutex_lock(&ts->lock);
        fail_locked(ts, why);
        g_mutex_unlock(&ts->lock);
        return;
    }
}

/* ---- incoming packets ---- */

static void protocol_error_locked(TunnelStream *ts, const char *what)
{
    fail_locked(ts, g_error_new(FERRY_ERROR, FERRY_ERR_RPC, "protocol error from the %s: %s",
                                ts->peer_name, what));
}

/* may_wait: plain mode may hold the caller (the connection's reader) while
 * the sink is full. Packets the router held before the stream existed are
 * delivered with may_wait FALSE: the router bounds them, and whoever hands
 * them over holds the router's lock. */
static void deliver_continue_locked(TunnelStream *ts, RpcMessage **msgp, gboolean may_wait)
{
    gsize len = rpc_message_payload_len(*msgp);
    if (len == 0) {
        if (ts->cfg.role == TUNNEL_ROLE_CLIENT) {
            ts->in_eof = TRUE;
            g_cond_broadcast(&ts->cond);
        }
        return;
    }
    if (ts->finish_requested || ts->in_eof) {
        protocol_error_locked(ts, "data after the end of the stream");
        return;
    }
    if (ts->cfg.credit) {
        if (ts->sink_bytes + len > ts->cfg.window) {
            protocol_error_locked(ts, "more data than the credit it was granted");
            return;
        }
    } else if (may_wait) {
        /* Plain peer: hold the reader here; TCP pushes back on the sender.
         * Not past the connection's close, though: the close (keepalive,
         * shutdown) must never wait for the VMM to drain. */
        while (ts->state == ST_OPEN && ts->sink_bytes + len > ts->cfg.window &&
               ts->sink_bytes > 0 && !rpc_connection_is_closed(ts->conn))
            wait_until_locked(ts, g_get_monotonic_time() + POLL_US);
        if (!is_running(ts->state) || rpc_connection_is_closed(ts->conn))
            return;
    }
    ts->sink_bytes += len;
    ts->in_received += len;
    ts->stats.packets_in++;
    rpc_message_queue_push(&ts->sink_queue, g_steal_pointer(msgp));
    wake_locked(ts);
}

/* Credit gives back bytes we sent and the peer wrote to its VMM: it can
 * never exceed what is in flight (peer_window - send_credit), so anything
 * more, or a credit on a stream without credit flow control, is a peer that
 * lies; it would otherwise let us overrun its window or wrap the counter. */
static void deliver_credit_locked(TunnelStream *ts, RpcMessage *msg)
{
    if (!ts->cfg.credit) {
        protocol_error_locked(ts, "a credit message on a stream without credit flow control");
        return;
    }
    if (rpc_message_payload_len(msg) != 8) {
        g_autofree char *what = g_strdup_printf("a credit message of %zu bytes instead of 8",
                                                rpc_message_payload_len(msg));
        protocol_error_locked(ts, what);
        return;
    }
    guint64 be;
    memcpy(&be, rpc_message_payload(msg), 8);
    guint64 credit = GUINT64_FROM_BE(be);
    guint64 in_flight = (guint64)((gint64)ts->cfg.peer_window - ts->send_credit);
    if (credit == 0 || credit > in_flight) {
        g_autofree char *what = g_strdup_printf(
            "a credit of %" G_GUINT64_FORMAT " bytes with %" G_GUINT64_FORMAT
            " bytes in flight (window %zu bytes)",
            credit, in_flight, ts->cfg.peer_window);
        protocol_error_locked(ts, what);
        return;
    }
    ts->send_credit += (gint64)credit;
    ts->acked_out += credit;
    tunnel_send_ring_release(ts->ring, ts->acked_out);
    wake_locked(ts);
}

static void deliver(TunnelStream *ts, RpcConnection *conn, RpcMessage *msg_in, gboolean may_wait)
{
    g_autoptr(RpcMessage) msg = msg_in;
    g_mutex_lock(&ts->lock);
    if (is_terminal(ts->state) || ts->detached || (conn && conn != ts->conn)) {
        /* Late packet for a stream that is over, or from a connection that
         * no longer carries it: dropped, never answered. */
        g_mutex_unlock(&ts->lock);
        return;
    }

    /* ferry's credit MESSAGE (a stream opened by a call of ferry's own
     * program, the probe's, carries its data in STREAM packets of it). */
    if (msg->header.prog == FERRY_TUNNEL_PROGRAM && msg->header.type == RPC_MESSAGE) {
        if (msg->header.proc == FERRY_TUNNEL_PROC_CREDIT)
            deliver_credit_locked(ts, msg);
        g_mutex_unlock(&ts->lock);
        return;
    }

    if (msg->header.type != RPC_STREAM) {
        protocol_error_locked(ts, msg->header.type == RPC_STREAM_HOLE
                                      ? "a hole packet on a stream that is not sparse"
                                      : "an unexpected message type on the stream");
        g_mutex_unlock(&ts->lock);
        return;
    }

    gboolean client = ts->cfg.role == TUNNEL_ROLE_CLIENT;
    switch (msg->header.status) {
    case RPC_CONTINUE:
        if (ts->state == ST_OPEN || ts->state == ST_FINISHING)
            deliver_continue_locked(ts, &msg, may_wait);
        break;
    case RPC_OK:
        if (client) {
            ts->peer_acked = TRUE;
            if (ts->state == ST_FINISHING)
                end_locked(ts, ST_DONE, NULL);
            else if (ts->state == ST_ABORTING)
                end_locked(ts, ST_ABORTED, NULL);
            else
                protocol_error_locked(ts, "a confirmation nobody asked for");
        } else {
            ts->finish_requested = TRUE; /* the sink confirms once everything is written */
            g_cond_broadcast(&ts->cond);
        }
        break;
    case RPC_ERROR:
        ts->peer_acked = TRUE;
        if (client) {
            rpc_error err;
            memset(&err, 0, sizeof(err));
            g_autoptr(GError) why = NULL;
            if (rpc_message_decode(msg, (xdrproc_t)xdr_rpc_error, &err, NULL)) {
                why = rpc_error_to_gerror(&err);
                xdr_free((xdrproc_t)xdr_rpc_error, (char *)&err);
            } else {
                why = g_error_new(FERRY_ERROR, FERRY_ERR_RPC, "the %s failed the stream",
                                  ts->peer_name);
            }
            end_locked(ts, ts->state == ST_ABORTING ? ST_ABORTED : ST_FAILED, why);
        } else {
            /* The client's abort: its body is always empty (WIRE.md pitfall 5). */
            g_autofree char *m = moved(ts);
            g_autoptr(GError) why = g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                                "the %s aborted the stream after %s",
                                                ts->peer_name, m);
            send_control_locked(ts, RPC_OK);
            end_locked(ts, ST_ABORTED, why);
        }
        break;
    default:
        protocol_error_locked(ts, "an unknown stream status");
        break;
    }
    g_mutex_unlock(&ts->lock);
}

void tunnel_stream_deliver(TunnelStream *ts, RpcMessage *msg)
{
    deliver(ts, NULL, msg, TRUE);
}

void tunnel_stream_deliver_held(TunnelStream *ts, RpcMessage *msg)
{
    deliver(ts, NULL, msg, FALSE);
}

void tunnel_stream_deliver_on(TunnelStream *ts, RpcConnection *conn, RpcMessage *msg,
                              gboolean held)
{
    deliver(ts, conn, msg, !held);
}

/* ---- control ---- */

void tunnel_stream_abort(TunnelStream *ts, const GError *why)
{
    g_mutex_lock(&ts->lock);
    if (is_running(ts->state) && ts->detached) {
        end_locked(ts, ST_ABORTED, why); /* nobody to tell: no connection */
    } else if (is_running(ts->state)) {
        if (ts->cfg.role == TUNNEL_ROLE_CLIENT) {
            send_control_locked(ts, RPC_ERROR);
            ts->abort_deadline_us = g_get_monotonic_time() + ABORT_GRACE_US;
            end_locked(ts, ST_ABORTING, why);
        } else {
            send_error_locked(ts, why);
            end_locked(ts, ST_ABORTED, why);
        }
    }
    g_mutex_unlock(&ts->lock);
}

void tunnel_stream_connection_closed(TunnelStream *ts, const GError *why)
{
    tunnel_stream_connection_closed_on(ts, NULL, why);
}

void tunnel_stream_connection_closed_on(TunnelStream *ts, RpcConnection *conn,
                                        const GError *why)
{
    g_mutex_lock(&ts->lock);
    if (conn && conn != ts->conn) {
        g_mutex_unlock(&ts->lock); /* an old connection of a resumed stream */
        return;
    }
    /* A path that broke may come back within the resume time; a peer that
     * ended the connection in order or reset it, only soon if at all. */
    gboolean broke = !rpc_connection_closed_cleanly(ts->conn);
    /* A reader that met a plain end of file after the writer took the
     * socket's error closes without a reason: the socket's error is it. */
    g_autoptr(GError) os_why = NULL;
    int os_error = why ? 0 : rpc_connection_get_os_error(ts->conn);
    if (os_error) {
        os_why = g_error_new_literal(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, g_strerror(os_error));
        why = os_why;
    }
    /* A peer that stopped answering while its host still acknowledges is
     * frozen or stuck: a new connection would meet the same peer, and the
     * resume time would only hold both sides longer. */
    gboolean unresponsive = ts->cfg.resume && is_running(ts->state) &&
                            rpc_connection_peer_unresponsive(ts->conn);
    if (ts->cfg.resume && is_running(ts->state) && !unresponsive) {
        if (!ts->detached) {
            ts->detached = TRUE;
            ts->resume_wait_s = broke ? ts->cfg.resume_timeout_s
                                      : MIN(ts->cfg.resume_timeout_s, TUNNEL_RESUME_ENDED_GRACE_S);
            ts->resume_deadline_us =
                g_get_monotonic_time() + (gint64)ts->resume_wait_s * G_USEC_PER_SEC;
            g_clear_error(&ts->detach_reason);
            ts->detach_reason = why ? g_error_copy(why) : NULL;
            g_autofree char *m = moved(ts);
            FERRY_INFO("stream serial %u: the connection to the %s closed after %s%s%s; "
                       "waiting up to %u s for it to come back",
                       ts->header.serial, ts->peer_name, m, why ? ": " : "",
                       why ? why->message : "", ts->resume_wait_s);
            g_cond_broadcast(&ts->cond);
            g_cond_broadcast(&ts->end_cond); /* a waiter keeps the resume deadline now */
        }
        g_mutex_unlock(&ts->lock);
        return;
    }
    if (!is_terminal(ts->state)) {
        g_autofree char *m = moved(ts);
        g_autoptr(GError) e = g_error_new(
            FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "the connection to the %s closed after %s%s%s%s",
            ts->peer_name, m, why ? ": " : "", why ? why->message : "",
            unresponsive ? "; " TUNNEL_PEER_STUCK : "");
        end_locked(ts, ts->state == ST_ABORTING ? ST_ABORTED : ST_FAILED, e);
    }
    g_mutex_unlock(&ts->lock);
}

gboolean tunnel_stream_break_silent_path(TunnelStream *ts, guint silent_ms, const GError *why)
{
    g_mutex_lock(&ts->lock);
    gboolean resumable = ts->cfg.resume && is_running(ts->state) && !ts->detached;
    RpcConnection *conn = resumable ? rpc_connection_ref(ts->conn) : NULL;
    g_mutex_unlock(&ts->lock);
    if (!conn)
        return FALSE;
    gboolean broken = !rpc_connection_peer_host_answers(conn, silent_ms);
    if (broken) {
        FERRY_INFO("stream serial %u: %s, and the %s's host acknowledged nothing for %u ms: "
                   "taken for a broken connection",
                   ts->header.serial, why->message, ts->peer_name, silent_ms);
        /* Its reader's close detaches the stream (a close with a reason:
         * a path that broke, waited for the whole resume time). */
        rpc_connection_close(conn, why);
    }
    rpc_connection_unref(conn);
    return broken;
}

/* A detached stream whose connection did not come back in time. */
static void resume_expired_locked(TunnelStream *ts)
{
    g_autofree char *m = moved(ts);
    const GError *why = ts->detach_reason;
    g_autoptr(GError) e = g_error_new(
        FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
        "the connection to the %s closed after %s%s%s, and did not come back within %u s",
        ts->peer_name, m, why ? ": " : "", why ? why->message : "", ts->resume_wait_s);
    end_locked(ts, ST_FAILED, e);
}

void tunnel_stream_resume_failed(TunnelStream *ts, const GError *why)
{
    g_mutex_lock(&ts->lock);
    if (!is_terminal(ts->state)) {
        g_autofree char *m = moved(ts);
        const GError *first = ts->detach_reason;
        g_autoptr(GError) e = g_error_new(
            FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
            "the connection to the %s closed after %s%s%s, and could not be resumed: %s",
            ts->peer_name, m, first ? ": " : "", first ? first->message : "",
            why ? why->message : "refused");
        end_locked(ts, ST_FAILED, e);
    }
    g_mutex_unlock(&ts->lock);
}

gboolean tunnel_stream_awaits_resume(TunnelStream *ts)
{
    g_mutex_lock(&ts->lock);
    gboolean waiting = ts->detached && !is_terminal(ts->state);
    g_mutex_unlock(&ts->lock);
    return waiting;
}

gint64 tunnel_stream_get_resume_deadline(TunnelStream *ts)
{
    g_mutex_lock(&ts->lock);
    gint64 deadline = ts->detached && !is_terminal(ts->state) ? ts->resume_deadline_us : 0;
    g_mutex_unlock(&ts->lock);
    return deadline;
}

const RpcHeader *tunnel_stream_get_header(TunnelStream *ts)
{
    return &ts->header;
}

static void resume_point_locked(TunnelStream *ts, TunnelResumePoint *p)
{
    p->received = ts->in_received;
    p->granted = ts->stats.bytes_in - ts->credit_pending;
    p->flags = 0;
    if (ts->cfg.role == TUNNEL_ROLE_SERVER ? ts->finish_requested : ts->in_eof)
        p->flags |= TUNNEL_RESUME_SAW_END;
    if (ts->state == ST_DONE)
        p->flags |= TUNNEL_RESUME_DONE;
}

void tunnel_stream_get_resume_point(TunnelStream *ts, TunnelResumePoint *ours)
{
    g_mutex_lock(&ts->lock);
    resume_point_locked(ts, ours);
    g_mutex_unlock(&ts->lock);
}

/* Resends [from, bytes_out) from the ring on the (new) connection. */
static void resend_locked(TunnelStream *ts, guint64 from)
{
    guint64 end = ts->stats.bytes_out;
    while (from < end) {
        gsize n;
        const guint8 *p = tunnel_send_ring_at(ts->ring, from, ts->cfg.packet_size, &n);
        RpcMessage *msg = rpc_message_pool_take(ts->header_pool);
        msg->header = ts->header;
        msg->header.status = RPC_CONTINUE;
        rpc_message_seal_external(msg, p, n, tunnel_send_ring_ref, tunnel_send_ring_unref,
                                  ts->ring);
        rpc_connection_send(ts->conn, msg);
        from += n;
        ts->stats.bytes_resent += n;
        tunnel_counters_add(&ts->counters.bytes_resent, n);
    }
}

gboolean tunnel_stream_resume(TunnelStream *ts, TunnelBinding *binding,
                              const TunnelResumePoint *theirs, TunnelResumePoint *ours,
                              RpcConnection **old, GError **error)
{
    g_mutex_lock(&ts->lock);
    if (!ts->cfg.resume) {
        g_mutex_unlock(&ts->lock);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "this migration's stream cannot be resumed");
        return FALSE;
    }
    if (ts->state == ST_DONE || (theirs->flags & TUNNEL_RESUME_DONE)) {
        /* One side saw the end confirmed: nothing is left to carry. */
        gboolean ok = ts->state == ST_DONE || ts->state == ST_FINISHING;
        if (ours)
            resume_point_locked(ts, ours);
        if (ok && ts->state == ST_FINISHING) {
            ts->peer_acked = TRUE;
            end_locked(ts, ST_DONE, NULL);
        }
        *old = rpc_connection_ref(ts->conn);
        g_mutex_unlock(&ts->lock);
        if (!ok) {
            rpc_connection_unref(*old);
            *old = NULL;
            g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                        "protocol error from the %s: it finished a stream that had not ended",
                        ts->peer_name);
            return FALSE;
        }
        tunnel_binding_cancel(binding);
        return TRUE;
    }
    if (!is_running(ts->state)) {
        g_autofree char *why = g_strdup(ts->error ? ts->error->message : state_names[ts->state]);
        g_mutex_unlock(&ts->lock);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the migration's stream is over here: %s", why);
        return FALSE;
    }
    guint64 start = tunnel_send_ring_start(ts->ring);
    if (theirs->received < start || theirs->received > ts->stats.bytes_out ||
        theirs->granted > theirs->received || theirs->granted < ts->acked_out) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                    "cannot resume the stream with the %s: it received %" G_GUINT64_FORMAT
                    " bytes and granted credit for %" G_GUINT64_FORMAT
                    ", while %" G_GUINT64_FORMAT " were sent, %" G_GUINT64_FORMAT
                    " kept and %" G_GUINT64_FORMAT " granted",
                    ts->peer_name, theirs->received, theirs->granted, ts->stats.bytes_out, start,
                    ts->acked_out);
        g_mutex_unlock(&ts->lock);
        return FALSE;
    }
    if (ours)
        resume_point_locked(ts, ours);
    *old = ts->conn;
    ts->conn = rpc_connection_ref(tunnel_binding_get_connection(binding));
    ts->header.serial = tunnel_binding_get_header(binding)->serial;
    rpc_connection_set_rx_pool(ts->conn, ts->pool);
    ts->acked_out = theirs->granted;
    tunnel_send_ring_release(ts->ring, theirs->received);
    ts->send_credit = (gint64)ts->cfg.peer_window - (gint64)(ts->stats.bytes_out - ts->acked_out);
    guint64 resent_before = ts->stats.bytes_resent;
    resend_locked(ts, theirs->received);
    if (ts->cfg.role == TUNNEL_ROLE_CLIENT && ts->state == ST_FINISHING)
        send_control_locked(ts, RPC_OK);
    if (ts->cfg.role == TUNNEL_ROLE_SERVER && ts->out_eof)
        send_control_locked(ts, RPC_CONTINUE);
    if (ts->credit_pending > 0) {
        send_credit_locked(ts, ts->credit_pending);
        ts->credit_pending = 0;
    }
    ts->detached = FALSE;
    ts->stats.reconnections++;
    FERRY_INFO("stream serial %u resumed with the %s: %" G_GUINT64_FORMAT " bytes resent, %"
               G_GUINT64_FORMAT " received here",
               ts->header.serial, ts->peer_name, ts->stats.bytes_resent - resent_before,
               ts->in_received);
    g_cond_broadcast(&ts->cond);
    g_mutex_unlock(&ts->lock);
    /* Packets that came on the new connection before now wait in its slot. */
    tunnel_binding_attach(binding, ts);
    return TRUE;
}

gboolean tunnel_stream_wait(TunnelStream *ts, gint64 deadline_us, GError **error)
{
    g_mutex_lock(&ts->lock);
    for (;;) {
        if (is_terminal(ts->state))
            break;
        if (ts->detached && g_get_monotonic_time() >= ts->resume_deadline_us) {
            resume_expired_locked(ts);
            break;
        }
        gint64 until = deadline_us;
        if (ts->state == ST_ABORTING && (!until || ts->abort_deadline_us < until))
            until = ts->abort_deadline_us;
        if (ts->detached && (!until || ts->resume_deadline_us < until))
            until = ts->resume_deadline_us;
        if (!until) {
            g_cond_wait(&ts->end_cond, &ts->lock);
            continue;
        }
        if (!g_cond_wait_until(&ts->end_cond, &ts->lock, until)) {
            if (ts->detached && g_get_monotonic_time() >= ts->resume_deadline_us)
                continue; /* the top of the loop ends it */
            if (ts->state == ST_ABORTING && g_get_monotonic_time() >= ts->abort_deadline_us) {
                FERRY_INFO("stream serial %u: the %s did not confirm the abort", ts->header.serial,
                           ts->peer_name);
                end_locked(ts, ST_ABORTED, NULL);
                break;
            }
            if (deadline_us && g_get_monotonic_time() >= deadline_us) {
                g_mutex_unlock(&ts->lock);
                g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                            "the stream to the %s did not end in time", ts->peer_name);
                return FALSE;
            }
        }
    }
    gboolean ok = ts->state == ST_DONE;
    if (!ok) {
        if (ts->error)
            g_propagate_error(error, g_error_copy(ts->error));
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED, "the stream was aborted");
    }
    g_mutex_unlock(&ts->lock);
    return ok;
}

gboolean tunnel_stream_is_over(TunnelStream *ts)
{
    g_mutex_lock(&ts->lock);
    gboolean over = is_terminal(ts->state);
    g_mutex_unlock(&ts->lock);
    return over;
}

gboolean tunnel_stream_peer_acknowledged_end(TunnelStream *ts)
{
    g_mutex_lock(&ts->lock);
    gboolean acked = ts->peer_acked;
    g_mutex_unlock(&ts->lock);
    return acked;
}

void tunnel_stream_get_stats(TunnelStream *ts, TunnelStats *stats)
{
    g_mutex_lock(&ts->lock);
    *stats = ts->stats;
    stats->buffers_allocated = rpc_message_pool_get_allocated(ts->pool);
    g_mutex_unlock(&ts->lock);
}

void tunnel_stream_set_bandwidth(TunnelStream *ts, guint64 bytes_per_second)
{
    g_mutex_lock(&ts->lock);
    tunnel_rate_set(ts->rate, bytes_per_second);
    g_cond_broadcast(&ts->cond);
    g_mutex_unlock(&ts->lock);
}

void tunnel_stream_set_rate(TunnelStream *ts, TunnelRate *rate)
{
    g_mutex_lock(&ts->lock);
    tunnel_rate_unref(ts->rate);
    ts->rate = tunnel_rate_ref(rate);
    g_cond_broadcast(&ts->cond);
    g_mutex_unlock(&ts->lock);
}

const TunnelCounters *tunnel_stream_get_counters(TunnelStream *ts)
{
    return &ts->counters;
}

/* The connection that carries the stream now (a reference): a resume may
 * swap it meanwhile. */
static RpcConnection *current_connection(TunnelStream *ts)
{
    g_mutex_lock(&ts->lock);
    RpcConnection *conn = rpc_connection_ref(ts->conn);
    g_mutex_unlock(&ts->lock);
    return conn;
}

gsize tunnel_stream_get_queued_bytes(TunnelStream *ts)
{
    g_autoptr(RpcConnection) conn = current_connection(ts);
    return rpc_connection_get_queued_bytes(conn);
}

void tunnel_stream_get_liveness(TunnelStream *ts, gint64 *last_rx_us, gint64 *last_rtt_us,
                                gint64 *last_pong_us)
{
    g_autoptr(RpcConnection) conn = current_connection(ts);
    rpc_connection_get_liveness(conn, last_rx_us, last_rtt_us, last_pong_us);
}
