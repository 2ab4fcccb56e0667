/* Reader and writer threads of one connection, its send queue and its
 * bound, the request limit, the limits before authentication and the
 * keepalive state. */
#include "rpc/rpc-connection.h"

#include <errno.h>
#include <string.h>

#include "rpc/rpc-keepalive.h"
#include "rpc/rpc-sasl.h"
#include "rpc/rpc-socket.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "rpc.connection"

/* Small messages are read ahead into this buffer, several per syscall;
 * large payloads are read straight into their own message buffer. */
#define RX_BUFFER_SIZE (64 * 1024)
/* The writer hands the kernel up to this much per writev. */
#define TX_BATCH_MESSAGES 64
/* The socket transport copies up to 64 iovecs on its stack (more would be
 * an allocation per write). */
#define TX_BATCH_IOVS 64
#define TX_BATCH_BYTES (4 * 1024 * 1024)
/* A message's buffer starts at most this large and doubles as its bytes
 * arrive, so a length word alone never allocates what it announces. */
#define RX_GROW_START (256 * 1024)

struct RpcConnection {
    gint ref;
    RpcTransport *transport;
    const RpcConnectionHandler *handler;
    gpointer user_data;

    GMutex lock;
    GCond cond; /* broadcast on every state change below */
    GQueue send_queue;
    gsize queued_bytes;
    RpcMessagePool *rx_pool;
    gboolean closed;
    gboolean close_after_flush;
    /* The writer sleeps for an empty queue: only then does a new message
     * need a wake (a syscall; a tunnel queues several messages per MiB). */
    gboolean writer_waiting;
    /* Threads in rpc_connection_wait_send_space: only they need a wake
     * after every write (another syscall per write otherwise). */
    guint space_waiters;
    gboolean started;
    gboolean done; /* both threads exited and on_close ran */
    guint threads_running;
    GError *close_reason;
    guint request_limit;
    guint requests_in_flight;
    gsize send_limit;      /* 0: none */
    gsize unrequested_mem; /* memory of queued messages the send limit counts */

    /* before authentication */
    gboolean unauthenticated;
    gboolean auth_call_pending; /* the call that authenticated has not been answered yet */
    gboolean client_lockstep;   /* client side: read only while a call awaits its reply */
    guint32 unauth_max_message;
    guint auth_timeout_s;
    gint64 auth_deadline_us; /* 0: none */

    /* keepalive, under lock: reset by the reader, advanced by the ticker */
    gint64 last_rx_us;
    gint pings_unanswered;
    gint64 ka_ping_sent_us; /* the flight recorder's round trip */
    gint64 ka_rtt_us;
    gint64 ka_pong_us;
    guint ka_interval;
    guint ka_count;
    gboolean ticking; /* registered with the keepalive clock */
    gboolean peer_unresponsive; /* keepalive timed out over a live TCP path */

    guint64 bytes_rx;
    guint8 *rxbuf;
    gsize rx_start, rx_end;
    gboolean rx_after_large; /* the reader's: the last message was a large one */
};

RpcConnection *rpc_connection_new(RpcTransport *transport, const RpcConnectionHandler *handler,
                                  gpointer user_data)
{
    RpcConnection *conn = g_new0(RpcConnection, 1);
    conn->ref = 1;
    conn->transport = transport;
    conn->handler = handler;
    conn->user_data = user_data;
    g_mutex_init(&conn->lock);
    g_cond_init(&conn->cond);
    g_queue_init(&conn->send_queue);
    conn->rxbuf = g_malloc(RX_BUFFER_SIZE);
    conn->last_rx_us = g_get_monotonic_time();
    return conn;
}

RpcConnection *rpc_connection_ref(RpcConnection *conn)
{
    g_atomic_int_inc(&conn->ref);
    return conn;
}

void rpc_connection_unref(RpcConnection *conn)
{
    if (!conn || !g_atomic_int_dec_and_test(&conn->ref))
        return;
    rpc_message_queue_clear(&conn->send_queue);
    rpc_message_pool_unref(conn->rx_pool);
    rpc_transport_free(conn->transport);
    g_clear_error(&conn->close_reason);
    g_mutex_clear(&conn->lock);
    g_cond_clear(&conn->cond);
    g_free(conn->rxbuf);
    g_free(conn);
}

static void close_locked(RpcConnection *conn, const GError *why)
{
    if (conn->closed)
        return;
    conn->closed = TRUE;
    if (why)
        conn->close_reason = g_error_copy(why);
    rpc_transport_shutdown(conn->transport);
    g_cond_broadcast(&conn->cond);
}

void rpc_connection_close(RpcConnection *conn, const GError *why)
{
    g_mutex_lock(&conn->lock);
    close_locked(conn, why);
    g_mutex_unlock(&conn->lock);
}

void rpc_connection_close_after_flush(RpcConnection *conn)
{
    g_mutex_lock(&conn->lock);
    conn->close_after_flush = TRUE;
    g_cond_broadcast(&conn->cond);
    g_mutex_unlock(&conn->lock);
}

gboolean rpc_connection_is_closed(RpcConnection *conn)
{
    g_mutex_lock(&conn->lock);
    gboolean closed = conn->closed;
    g_mutex_unlock(&conn->lock);
    return closed;
}

gboolean rpc_connection_closed_cleanly(RpcConnection *conn)
{
    /* What the socket met first decides: a timeout or an abort is a path
     * that broke (it reports its error once: when the writer takes it, the
     * reader meets a plain end of file and may close first, without a
     * reason); a reset or a broken pipe is the peer's end gone (a process
     * that died with unread data resets). Otherwise: closed without a reason. */
    RpcTransport *socket = rpc_sasl_transport_get_inner(conn->transport);
    int os_error = g_atomic_int_get(&socket->os_error);
    g_mutex_lock(&conn->lock);
    gboolean clean = conn->closed && os_error != ETIMEDOUT && os_error != ECONNABORTED &&
                     (!conn->close_reason || os_error == ECONNRESET || os_error == EPIPE);
    g_mutex_unlock(&conn->lock);
    return clean;
}

gboolean rpc_connection_peer_unresponsive(RpcConnection *conn)
{
    RpcTransport *socket = rpc_sasl_transport_get_inner(conn->transport);
    g_mutex_lock(&conn->lock);
    gboolean stuck = conn->peer_unresponsive;
    g_mutex_unlock(&conn->lock);
    return stuck || (g_atomic_int_get(&socket->os_error) == ETIMEDOUT &&
                     rpc_socket_timed_out_on_zero_window(socket->fd));
}

gboolean rpc_connection_peer_host_answers(RpcConnection *conn, guint within_ms)
{
    return rpc_socket_peer_host_answers(rpc_sasl_transport_get_inner(conn->transport)->fd,
                                        within_ms);
}

int rpc_connection_get_os_error(RpcConnection *conn)
{
    return g_atomic_int_get(&rpc_sasl_transport_get_inner(conn->transport)->os_error);
}

void rpc_connection_wait_closed(RpcConnection *conn)
{
    g_mutex_lock(&conn->lock);
    while (conn->started && !conn->done)
        g_cond_wait(&conn->cond, &conn->lock);
    g_mutex_unlock(&conn->lock);
}

/* What the send limit counts of a message: 0 for replies (at most
 * max_client_requests of them are ever in flight) and stream data (its
 * stream waits for queue space or credit); the memory it holds otherwise. */
static gsize unrequested_cost(const RpcMessage *msg)
{
    if (msg->completes_request ||
        (msg->header.type == RPC_STREAM && msg->header.status == RPC_CONTINUE))
        return 0;
    return sizeof(RpcMessage) + msg->cap;
}

/* FALSE (and the connection closed) if msg would exceed the send limit. */
static gboolean enqueue_locked(RpcConnection *conn, RpcMessage *msg)
{
    gsize cost = unrequested_cost(msg);
    if (conn->send_limit && cost && conn->unrequested_mem + cost > conn->send_limit) {
        g_autoptr(GError) error =
            g_error_new(FERRY_ERROR, FERRY_ERR_RPC,
                        "%s does not read what it is sent: %zu bytes of messages it did not "
                        "ask for are queued (limit %zu)",
                        conn->transport->peer, conn->unrequested_mem, conn->send_limit);
        FERRY_WARN_LIMITED("closing connection: %s", error->message);
        close_locked(conn, error);
        return FALSE;
    }
    conn->unrequested_mem += cost;
    rpc_message_queue_push(&conn->send_queue, msg);
    conn->queued_bytes += msg->len;
    if (conn->writer_waiting)
        g_cond_broadcast(&conn->cond);
    return TRUE;
}

void rpc_connection_send(RpcConnection *conn, RpcMessage *msg)
{
    g_mutex_lock(&conn->lock);
    if (conn->closed || !enqueue_locked(conn, msg)) {
        g_mutex_unlock(&conn->lock);
        rpc_message_free(msg);
        return;
    }
    g_mutex_unlock(&conn->lock);
}

void rpc_connection_set_send_limit(RpcConnection *conn, gsize bytes)
{
    g_mutex_lock(&conn->lock);
    conn->send_limit = bytes;
    g_mutex_unlock(&conn->lock);
}

void rpc_connection_set_unauthenticated(RpcConnection *conn, guint32 max_message,
                                        guint timeout_s)
{
    g_mutex_lock(&conn->lock);
    conn->unauthenticated = TRUE;
    conn->unauth_max_message = max_message;
    conn->auth_timeout_s = timeout_s;
    conn->auth_deadline_us =
        timeout_s ? g_get_monotonic_time() + (gint64)timeout_s * G_USEC_PER_SEC : 0;
    g_mutex_unlock(&conn->lock);
}

void rpc_connection_set_client_lockstep(RpcConnection *conn)
{
    g_mutex_lock(&conn->lock);
    conn->client_lockstep = TRUE;
    g_mutex_unlock(&conn->lock);
}

gboolean rpc_connection_in_client_lockstep(RpcConnection *conn)
{
    g_mutex_lock(&conn->lock);
    gboolean on = conn->client_lockstep;
    g_mutex_unlock(&conn->lock);
    return on;
}

void rpc_connection_set_authenticated(RpcConnection *conn)
{
    g_mutex_lock(&conn->lock);
    if (conn->unauthenticated)
        conn->auth_call_pending = TRUE;
    conn->unauthenticated = FALSE;
    conn->client_lockstep = FALSE;
    conn->auth_deadline_us = 0;
    g_cond_broadcast(&conn->cond);
    g_mutex_unlock(&conn->lock);
}

gsize rpc_connection_get_queued_bytes(RpcConnection *conn)
{
    g_mutex_lock(&conn->lock);
    gsize n = conn->queued_bytes;
    g_mutex_unlock(&conn->lock);
    return n;
}

gboolean rpc_connection_wait_send_space(RpcConnection *conn, gsize limit, gint64 deadline_us)
{
    g_mutex_lock(&conn->lock);
    conn->space_waiters++;
    while (!conn->closed && conn->queued_bytes > limit) {
        if (deadline_us) {
            if (!g_cond_wait_until(&conn->cond, &conn->lock, deadline_us))
                break;
        } else {
            g_cond_wait(&conn->cond, &conn->lock);
        }
    }
    conn->space_waiters--;
    gboolean open = !conn->closed;
    g_mutex_unlock(&conn->lock);
    return open;
}

void rpc_connection_set_rx_pool(RpcConnection *conn, RpcMessagePool *pool)
{
    g_mutex_lock(&conn->lock);
    RpcMessagePool *old = conn->rx_pool;
    conn->rx_pool = pool ? rpc_message_pool_ref(pool) : NULL;
    g_mutex_unlock(&conn->lock);
    rpc_message_pool_unref(old);
}

void rpc_connection_set_request_limit(RpcConnection *conn, guint limit)
{
    g_mutex_lock(&conn->lock);
    conn->request_limit = limit;
    g_cond_broadcast(&conn->cond);
    g_mutex_unlock(&conn->lock);
}

void rpc_connection_request_begin(RpcConnection *conn)
{
    g_mutex_lock(&conn->lock);
    conn->requests_in_flight++;
    g_cond_broadcast(&conn->cond); /* a reader in client lockstep may read now */
    g_mutex_unlock(&conn->lock);
}

static void request_end_locked(RpcConnection *conn)
{
    if (conn->requests_in_flight > 0)
        conn->requests_in_flight--;
    g_cond_broadcast(&conn->cond);
}

void rpc_connection_request_end(RpcConnection *conn)
{
    g_mutex_lock(&conn->lock);
    request_end_locked(conn);
    g_mutex_unlock(&conn->lock);
}

RpcTransport *rpc_connection_get_transport(RpcConnection *conn)
{
    return conn->transport;
}

const char *rpc_connection_get_peer(RpcConnection *conn)
{
    return conn->transport->peer;
}

guint64 rpc_connection_get_bytes_received(RpcConnection *conn)
{
    /* Written by the reader only; a slightly stale value is fine for statistics. */
    return conn->bytes_rx;
}

/* ---- reading ---- */

/* Reads at least one more byte, at most `want`, into the read-ahead buffer.
 * Returns bytes read, 0 at end of stream, -1 on error. */
static gssize rx_fill(RpcConnection *conn, gsize want, GError **error)
{
    if (conn->rx_start == conn->rx_end) {
        conn->rx_start = conn->rx_end = 0;
    } else if (conn->rx_end == RX_BUFFER_SIZE) {
        memmove(conn->rxbuf, conn->rxbuf + conn->rx_start, conn->rx_end - conn->rx_start);
        conn->rx_end -= conn->rx_start;
        conn->rx_start = 0;
    }
    gssize n = rpc_transport_read(conn->transport, conn->rxbuf + conn->rx_end,
                                  MIN(want, RX_BUFFER_SIZE - conn->rx_end), error);
    if (n > 0) {
        conn->rx_end += n;
        conn->bytes_rx += n;
    }
    return n;
}

/* Returns the next message, or NULL: with *error set on failure, unset at a
 * clean end of stream between messages. Unauthenticated, it reads exactly
 * that message and not a byte more. */
static RpcMessage *read_message(RpcConnection *conn, GError **error)
{
    g_mutex_lock(&conn->lock);
    gboolean exact = conn->unauthenticated || conn->client_lockstep;
    guint32 max_len = exact ? conn->unauth_max_message : 0;
    g_mutex_unlock(&conn->lock);

    /* After a large message (a stream in full flow) the next is most likely
     * large too: read no more than its header, so that its payload goes
     * straight into its own buffer below instead of through the read-ahead
     * buffer (a copy of up to 64 KiB per packet); the reads are as many. */
    gsize ahead = exact ? RPC_LEN_WORD_SIZE : conn->rx_after_large ? RPC_PAYLOAD_OFFSET : G_MAXSIZE;
    while (conn->rx_end - conn->rx_start < RPC_LEN_WORD_SIZE) {
        gsize had = conn->rx_end - conn->rx_start;
        gssize n = rx_fill(conn, ahead == G_MAXSIZE ? G_MAXSIZE : ahead - had, error);
        if (n < 0)
            return NULL;
        if (n == 0) {
            if (had > 0)
                g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                            "%s closed the connection in the middle of a message length word",
                            conn->transport->peer);
            return NULL;
        }
    }

    guint32 len_be;
    memcpy(&len_be, conn->rxbuf + conn->rx_start, 4);
    guint32 len = GUINT32_FROM_BE(len_be);
    if (!rpc_message_check_length(len, error))
        return NULL;
    if (max_len && len > max_len) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                    "message length %u exceeds the %u byte limit before authentication", len,
                    max_len);
        return NULL;
    }

    g_autoptr(RpcMessage) msg = NULL;
    if (len > RX_BUFFER_SIZE / 2) {
        /* A pool may be set while we run (when a stream negotiates it). */
        g_mutex_lock(&conn->lock);
        RpcMessagePool *pool = conn->rx_pool ? rpc_message_pool_ref(conn->rx_pool) : NULL;
        g_mutex_unlock(&conn->lock);
        if (pool && len - RPC_PAYLOAD_OFFSET <= rpc_message_pool_get_capacity(pool))
            msg = rpc_message_pool_take(pool);
        rpc_message_pool_unref(pool);
    }
    if (!msg)
        msg = rpc_message_new(MIN(len, RX_GROW_START) - RPC_PAYLOAD_OFFSET);
    gsize got = 0;
    while (got < len) {
        if (got == msg->cap) {
            /* Grow with what arrived, never to what the length word claims at once. */
            rpc_message_reserve(msg, MIN((gsize)len, msg->cap * 2) - RPC_PAYLOAD_OFFSET);
        }
        gsize room = MIN(msg->cap, (gsize)len) - got;
        gsize avail = conn->rx_end - conn->rx_start;
        if (avail > 0) {
            gsize take = MIN(avail, room);
            memcpy(msg->buf + got, conn->rxbuf + conn->rx_start, take);
            conn->rx_start += take;
            got += take;
            continue;
        }
        gssize n;
        if (room >= RX_BUFFER_SIZE / 2 || len > RX_BUFFER_SIZE / 2) {
            /* Large payload: straight into the message, no intermediate
             * copy; its tail too, which read ahead would bring the next
             * message's payload through the read-ahead buffer. */
            n = rpc_transport_read(conn->transport, msg->buf + got, room, error);
            if (n > 0) {
                got += n;
                conn->bytes_rx += n;
            }
        } else {
            n = rx_fill(conn, exact ? len - got : G_MAXSIZE, error);
        }
        if (n < 0)
            return NULL;
        if (n == 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                        "%s closed the connection after %zu of a %u byte message",
                        conn->transport->peer, got, len);
            return NULL;
        }
    }
    msg->len = len;
    conn->rx_after_large = len > RX_BUFFER_SIZE / 2;
    if (!rpc_message_decode_header(msg, error))
        return NULL;
    return g_steal_pointer(&msg);
}

static void handle_keepalive(RpcConnection *conn, RpcMessage *msg)
{
    if (msg->header.proc == KEEPALIVE_PROC_PING) {
        RpcHeader h = {.prog = KEEPALIVE_PROGRAM, .vers = KEEPALIVE_PROTOCOL_VERSION,
                       .proc = KEEPALIVE_PROC_PONG, .type = RPC_MESSAGE, .serial = 0,
                       .status = RPC_OK};
        rpc_connection_send(conn, rpc_message_new_reply_to(&h, RPC_MESSAGE, RPC_OK));
    } else if (msg->header.proc == KEEPALIVE_PROC_PONG) {
        g_mutex_lock(&conn->lock);
        gint64 now = g_get_monotonic_time();
        if (conn->ka_ping_sent_us) {
            conn->ka_rtt_us = now - conn->ka_ping_sent_us;
            conn->ka_pong_us = now;
        }
        conn->ka_ping_sent_us = 0;
        g_mutex_unlock(&conn->lock);
    } else {
        FERRY_DEBUG("%s: dropping keepalive message proc %d", conn->transport->peer,
                    msg->header.proc);
    }
    rpc_message_free(msg);
}

static void thread_exit(RpcConnection *conn)
{
    g_mutex_lock(&conn->lock);
    gboolean last = --conn->threads_running == 0;
    g_mutex_unlock(&conn->lock);
    if (last) {
        if (conn->handler->on_close)
            conn->handler->on_close(conn, conn->close_reason, conn->user_data);
        g_mutex_lock(&conn->lock);
        conn->done = TRUE;
        g_cond_broadcast(&conn->cond);
        g_mutex_unlock(&conn->lock);
    }
    rpc_connection_unref(conn);
}

/* A socket whose path died reports its error (ETIMEDOUT, ECONNABORTED) to
 * one call only: when the writer took it, the reader meets a plain end of
 * file, and closing without a reason would hide the cause from every call
 * waiting on the connection. The socket's noted error or its TCP state
 * tells it; NULL for a peer that really ended the connection. */
static GError *end_of_file_cause(RpcConnection *conn)
{
    RpcTransport *socket = rpc_sasl_transport_get_inner(conn->transport);
    int err = g_atomic_int_get(&socket->os_error);
    if (err != ETIMEDOUT && err != ECONNABORTED && err != ECONNRESET)
        err = socket->fd >= 0 ? rpc_socket_lost_error(socket->fd) : 0;
    if (!err)
        return NULL;
    GError *why = NULL;
    ferry_set_error_errno(&why, err, "cannot read from %s", conn->transport->peer);
    return why;
}

static gpointer reader_thread(gpointer data)
{
    RpcConnection *conn = data;
    for (;;) {
        g_mutex_lock(&conn->lock);
        /* Unauthenticated: one call at a time, so the bytes after an
         * authentication call are read only once its reply is written (and a
         * security layer it negotiated is on). */
        while (!conn->closed &&
               ((conn->request_limit > 0 && conn->requests_in_flight >= conn->request_limit) ||
                ((conn->unauthenticated || conn->auth_call_pending) &&
                 conn->requests_in_flight > 0) ||
                (conn->client_lockstep && conn->requests_in_flight == 0)))
            g_cond_wait(&conn->cond, &conn->lock);
        conn->auth_call_pending = FALSE;
        gboolean closed = conn->closed;
        g_mutex_unlock(&conn->lock);
        if (closed)
            break;

        g_autoptr(GError) error = NULL;
        RpcMessage *msg = read_message(conn, &error);
        if (!msg) {
            if (!error)
                error = end_of_file_cause(conn);
            if (error && !rpc_connection_is_closed(conn))
                FERRY_INFO_LIMITED("closing connection from %s: %s", conn->transport->peer,
                                   error->message);
            rpc_connection_close(conn, error);
            break;
        }
        g_mutex_lock(&conn->lock);
        conn->last_rx_us = g_get_monotonic_time();
        conn->pings_unanswered = 0;
        g_mutex_unlock(&conn->lock);

        gboolean reply = msg->header.type == RPC_REPLY || msg->header.type == RPC_REPLY_WITH_FDS;
        /* Only what libvirt takes for keepalive: a MESSAGE of its version. A
         * CALL naming the keepalive program goes on like any call, so a
         * server answers it (unknown program) instead of leaving the
         * caller waiting forever. */
        if (msg->header.prog == KEEPALIVE_PROGRAM && msg->header.type == RPC_MESSAGE &&
            msg->header.vers == KEEPALIVE_PROTOCOL_VERSION)
            handle_keepalive(conn, msg);
        else
            conn->handler->on_message(conn, msg, conn->user_data);
        g_mutex_lock(&conn->lock);
        if (conn->client_lockstep && reply)
            request_end_locked(conn); /* delivered: read on only for the next call */
        g_mutex_unlock(&conn->lock);
    }
    thread_exit(conn);
    return NULL;
}

/* ---- writing ---- */

static gpointer writer_thread(gpointer data)
{
    RpcConnection *conn = data;
    RpcMessage *batch[TX_BATCH_MESSAGES];
    struct iovec iov[TX_BATCH_IOVS];

    g_mutex_lock(&conn->lock);
    for (;;) {
        while (!conn->closed && !conn->close_after_flush && g_queue_is_empty(&conn->send_queue)) {
            conn->writer_waiting = TRUE;
            g_cond_wait(&conn->cond, &conn->lock);
            conn->writer_waiting = FALSE;
        }
        if (conn->closed)
            break;
        if (g_queue_is_empty(&conn->send_queue)) {
            /* close_after_flush and everything is written */
            close_locked(conn, NULL);
            break;
        }
        int n = 0, niov = 0;
        gsize bytes = 0;
        /* Up to two iovecs per message (an external payload): stop while
         * both still fit. */
        while (n < TX_BATCH_MESSAGES && niov + 2 <= TX_BATCH_IOVS && bytes < TX_BATCH_BYTES &&
               !g_queue_is_empty(&conn->send_queue)) {
            RpcMessage *m = rpc_message_queue_pop(&conn->send_queue);
            batch[n] = m;
            niov += rpc_message_wire_iov(m, iov + niov);
            bytes += m->len;
            n++;
            if (m->after_write)
                break; /* what follows must be written after its hook ran */
        }
        g_mutex_unlock(&conn->lock);

        g_autoptr(GError) error = NULL;
        gboolean ok = rpc_transport_writev(conn->transport, iov, niov, &error);

        if (ok && batch[n - 1]->after_write)
            batch[n - 1]->after_write(batch[n - 1]->after_write_data);

        g_mutex_lock(&conn->lock);
        for (int i = 0; i < n; i++) {
            if (batch[i]->completes_request)
                request_end_locked(conn);
            conn->queued_bytes -= batch[i]->len;
            conn->unrequested_mem -= unrequested_cost(batch[i]);
            rpc_message_free(batch[i]);
        }
        if (conn->space_waiters)
            g_cond_broadcast(&conn->cond); /* room in the queue (request_end_locked woke its own) */
        if (!ok) {
            if (!conn->closed)
                FERRY_INFO_LIMITED("closing connection to %s: %s", conn->transport->peer,
                                   error->message);
            close_locked(conn, error);
            break;
        }
    }
    g_mutex_unlock(&conn->lock);
    thread_exit(conn);
    return NULL;
}

/* Hands one reference to a new thread; on refusal the thread's share of
 * the connection is settled here, as if it had run and exited at once. */
static gboolean spawn(RpcConnection *conn, const char *name, GThreadFunc func, GError **error)
{
    g_autoptr(GError) local = NULL;
    GThread *t = g_thread_try_new(name, func, rpc_connection_ref(conn), &local);
    if (t) {
        g_thread_unref(t);
        return TRUE;
    }
    g_autoptr(GError) why = g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                                        "cannot start a thread for the connection of %s: %s",
                                        conn->transport->peer, local->message);
    if (error)
        *error = g_error_copy(why);
    rpc_connection_close(conn, why);
    thread_exit(conn);
    return FALSE;
}

static void register_ticker(RpcConnection *conn)
{
    g_mutex_lock(&conn->lock);
    gboolean needed = !conn->ticking && !conn->closed;
    conn->ticking = TRUE;
    g_mutex_unlock(&conn->lock);
    if (needed)
        rpc_keepalive_register(conn);
}

gboolean rpc_connection_try_start(RpcConnection *conn, GError **error)
{
    /* Ours until we return: the threads may close the connection, and its
     * owner drop it, before we are done here. */
    G_GNUC_UNUSED g_autoptr(RpcConnection) self = rpc_connection_ref(conn);
    g_mutex_lock(&conn->lock);
    g_assert(!conn->started);
    conn->started = TRUE;
    conn->threads_running = 2;
    gboolean deadline = conn->auth_deadline_us != 0;
    g_mutex_unlock(&conn->lock);
    if (deadline)
        register_ticker(conn);
    /* Detached: the last thread out reports the close; rpc_connection_wait_closed
     * is the join. */
    if (!spawn(conn, "rpc-read", reader_thread, error)) {
        /* The writer never starts either: settle its share too. */
        rpc_connection_ref(conn);
        thread_exit(conn);
        return FALSE;
    }
    if (!spawn(conn, "rpc-write", writer_thread, error))
        return FALSE; /* the reader sees the close and exits */
    return TRUE;
}

void rpc_connection_start(RpcConnection *conn)
{
    g_autoptr(GError) error = NULL;
    if (!rpc_connection_try_start(conn, &error))
        FERRY_WARN_LIMITED("%s", error->message);
}

/* ---- keepalive ---- */

void rpc_connection_start_keepalive(RpcConnection *conn, guint interval, guint count)
{
    if (interval == 0)
        return;
    g_mutex_lock(&conn->lock);
    conn->ka_interval = interval;
    conn->ka_count = count;
    conn->last_rx_us = g_get_monotonic_time();
    g_mutex_unlock(&conn->lock);
    register_ticker(conn);
}

gboolean rpc_connection_keepalive_tick(RpcConnection *conn, gint64 now_us)
{
    g_mutex_lock(&conn->lock);
    if (!conn->closed && conn->unauthenticated && conn->auth_deadline_us &&
        now_us >= conn->auth_deadline_us) {
        g_autoptr(GError) error =
            g_error_new(FERRY_ERROR, FERRY_ERR_RPC,
                        "%s did not authenticate within %u seconds (auth_timeout)",
                        conn->transport->peer, conn->auth_timeout_s);
        FERRY_WARN_LIMITED("closing connection: %s", error->message);
        close_locked(conn, error);
    }
    if (conn->closed) {
        conn->ticking = FALSE;
        g_mutex_unlock(&conn->lock);
        return FALSE;
    }
    if (conn->ka_interval > 0) {
        gint pings = conn->pings_unanswered;
        gint64 silence = now_us - conn->last_rx_us;
        gint64 due = (gint64)conn->ka_interval * G_USEC_PER_SEC * (pings + 1);
        if (silence >= due) {
            if ((guint)pings >= conn->ka_count) {
                /* A cut path has acknowledged nothing since the silence
                 * began; a frozen peer's kernel still acknowledges our
                 * pings and zero-window probes. */
                conn->peer_unresponsive = rpc_socket_peer_host_answers(
                    rpc_sasl_transport_get_inner(conn->transport)->fd,
                    (guint)(silence / 2000));
                g_autoptr(GError) error = g_error_new(
                    FERRY_ERROR, FERRY_ERR_RPC,
                    "connection to %s closed due to keepalive timeout: no answer to "
                    "%u pings in %" G_GINT64_FORMAT " seconds%s",
                    conn->transport->peer, conn->ka_count, silence / G_USEC_PER_SEC,
                    conn->peer_unresponsive
                        ? ", though its host acknowledges them"
                        : "");
                FERRY_WARN_LIMITED("%s", error->message);
                close_locked(conn, error);
                conn->ticking = FALSE;
                g_mutex_unlock(&conn->lock);
                return FALSE;
            }
            conn->pings_unanswered++;
            if (!conn->ka_ping_sent_us)
                conn->ka_ping_sent_us = now_us;
            RpcHeader h = {.prog = KEEPALIVE_PROGRAM, .vers = KEEPALIVE_PROTOCOL_VERSION,
                           .proc = KEEPALIVE_PROC_PING, .type = RPC_MESSAGE, .serial = 0,
                           .status = RPC_OK};
            RpcMessage *ping = rpc_message_new_reply_to(&h, RPC_MESSAGE, RPC_OK);
            if (!enqueue_locked(conn, ping)) {
                rpc_message_free(ping);
                conn->ticking = FALSE;
                g_mutex_unlock(&conn->lock);
                return FALSE;
            }
        }
    }
    gboolean more = conn->ka_interval > 0 || (conn->unauthenticated && conn->auth_deadline_us);
    if (!more)
        conn->ticking = FALSE;
    g_mutex_unlock(&conn->lock);
    return more;
}

void rpc_connection_get_liveness(RpcConnection *conn, gint64 *last_rx_us, gint64 *last_rtt_us,
                                 gint64 *last_pong_us)
{
    g_mutex_lock(&conn->lock);
    *last_rx_us = conn->last_rx_us;
    *last_rtt_us = conn->ka_rtt_us;
    *last_pong_us = conn->ka_pong_us;
    g_mutex_unlock(&conn->lock);
}

guint64 rpc_connection_get_crypto_us(RpcConnection *conn, int dir)
{
    /* A SASL layer over TLS: both layers' ciphers. */
    RpcTransport *inner = rpc_sasl_transport_get_inner(conn->transport);
    guint64 us = rpc_transport_get_crypto_us(conn->transport, dir);
    if (inner != conn->transport)
        us += rpc_transport_get_crypto_us(inner, dir);
    return us;
}
