/* A connection: a transport plus a reader thread and a writer thread.
 *
 * The reader frames incoming messages and hands each to the owner's
 * on_message (server or client); keepalive PING/PONG are answered here. The
 * writer drains a send queue, so no caller ever blocks on a slow peer
 * (principle 3: the control path never waits on the data path).
 *
 * Lifetime: refcounted. The creator holds one reference; each of the two
 * threads holds one while it runs. rpc_connection_close() may be called from
 * any thread, any number of times; on_close runs exactly once, from the last
 * connection thread to exit, after which no callback is made. */
#pragma once

#include <glib.h>

#include "rpc/rpc-message.h"
#include "rpc/rpc-transport.h"

typedef struct RpcConnection RpcConnection;

typedef struct {
    /* In the reader thread; takes ownership of msg. */
    void (*on_message)(RpcConnection *conn, RpcMessage *msg, gpointer user_data);
    /* Once, when both threads are done. why is NULL for an orderly close. */
    void (*on_close)(RpcConnection *conn, const GError *why, gpointer user_data);
} RpcConnectionHandler;

/* Takes ownership of the transport. Threads start with rpc_connection_start(). */
RpcConnection *rpc_connection_new(RpcTransport *transport, const RpcConnectionHandler *handler,
                                  gpointer user_data);
/* Starts both threads. When the system refuses a thread (out of threads or
 * memory) the connection is closed instead, on_close runs with the reason,
 * and FALSE is returned with *error set: a refused connection, never an
 * abort. */
gboolean rpc_connection_try_start(RpcConnection *conn, GError **error);
/* Same, for callers that learn of a refusal through on_close alone. */
void rpc_connection_start(RpcConnection *conn);

RpcConnection *rpc_connection_ref(RpcConnection *conn);
void rpc_connection_unref(RpcConnection *conn);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcConnection, rpc_connection_unref)

/* Queues msg (ownership passes) and returns at once. Dropped if closed.
 * If the messages the peer did not ask for (see set_send_limit) would exceed
 * the limit, the connection is closed instead: a peer that does not read is
 * dropped, not buffered. */
void rpc_connection_send(RpcConnection *conn, RpcMessage *msg);

/* Bounds the memory held by queued messages other than replies (bounded by
 * the request limit) and stream data (bounded by its stream's window):
 * PINGs/PONGs, events, credit and stream control packets. Counted as the
 * memory each holds, not its wire size. 0 = no limit (the default). */
void rpc_connection_set_send_limit(RpcConnection *conn, gsize bytes);

/* Before authentication (set before start): a message longer than
 * max_message is a protocol error; the reader takes one message at a time,
 * reads no byte beyond it and waits for its reply to be written before it
 * reads on, so nothing a peer sends after an authentication call is read
 * before that call has switched a security layer on; and after timeout_s
 * seconds (0 = none) the connection is closed. */
void rpc_connection_set_unauthenticated(RpcConnection *conn, guint32 max_message,
                                        guint timeout_s);
/* Lifts all of the above, the wait for the reply of the call in progress
 * (the one that authenticated) last. */
void rpc_connection_set_authenticated(RpcConnection *conn);

/* The client's side of the same rule (set before start): the reader reads
 * exactly one message, not a byte beyond, and only while a call awaits its
 * reply (rpc_connection_request_begin before the call is sent; the reader
 * ends the request when it has delivered a REPLY). So when the reply that
 * completes authentication has been delivered, nothing after it has been
 * read, and the caller switches its security layer on before the reader
 * reads on. Lifted by rpc_connection_set_authenticated. */
void rpc_connection_set_client_lockstep(RpcConnection *conn);
gboolean rpc_connection_in_client_lockstep(RpcConnection *conn);

/* Bytes queued and not yet written. */
gsize rpc_connection_get_queued_bytes(RpcConnection *conn);
/* When anything last arrived from the peer (monotonic; 0 until the first
 * message, or without keepalive), the round trip of the last answered
 * keepalive ping (0: none yet) and when its answer came (monotonic, 0). */
void rpc_connection_get_liveness(RpcConnection *conn, gint64 *last_rx_us, gint64 *last_rtt_us,
                                 gint64 *last_pong_us);
/* Microseconds the connection's layers spent in their ciphers (TLS, a SASL
 * security layer) for dir (RPC_CRYPTO_SEND, RPC_CRYPTO_RECV); 0 in the
 * clear. */
guint64 rpc_connection_get_crypto_us(RpcConnection *conn, int dir);
/* Waits until at most `limit` bytes are queued, the connection closes, or
 * the monotonic deadline (0 = none) passes. FALSE once closed. Data streams
 * call this before queueing, so their memory stays bounded. */
gboolean rpc_connection_wait_send_space(RpcConnection *conn, gsize limit, gint64 deadline_us);
/* Large incoming messages that fit the pool's capacity are read into its buffers. */
void rpc_connection_set_rx_pool(RpcConnection *conn, RpcMessagePool *pool);

/* Shuts the transport down; queued messages are dropped. why may be NULL. */
void rpc_connection_close(RpcConnection *conn, const GError *why);
/* Lets the writer send what is queued, then closes. */
void rpc_connection_close_after_flush(RpcConnection *conn);
gboolean rpc_connection_is_closed(RpcConnection *conn);
/* Closed in order: the peer ended it (end of file, or its end reset: a
 * process that died), or this side closed it without a reason. Not after a
 * timeout, an abort or another error: a path that broke. */
gboolean rpc_connection_closed_cleanly(RpcConnection *conn);
/* Closed while the peer's host still answered on the TCP connection: by
 * the keepalive while the host acknowledged our pings, or by the kernel's
 * user timeout on a zero window whose probes were all answered. The peer
 * daemon is frozen or stuck, not cut off by the path: a new connection
 * would meet the same peer. */
gboolean rpc_connection_peer_unresponsive(RpcConnection *conn);
/* Whether the peer's host acknowledged anything on the connection's TCP
 * socket within the last within_ms (rpc_socket_peer_host_answers). */
gboolean rpc_connection_peer_host_answers(RpcConnection *conn, guint within_ms);
/* The first operating-system error the connection's socket met (0: none):
 * the cause behind a close that came with no reason of its own. */
int rpc_connection_get_os_error(RpcConnection *conn);
/* Blocks until both threads have exited (never call from a connection thread). */
void rpc_connection_wait_closed(RpcConnection *conn);

/* max_client_requests: while `limit` requests are in flight (received and
 * their reply not yet written), the reader stops reading; the kernel's socket
 * buffer then pushes back on the peer. 0 = no limit. */
void rpc_connection_set_request_limit(RpcConnection *conn, guint limit);
void rpc_connection_request_begin(RpcConnection *conn);
void rpc_connection_request_end(RpcConnection *conn);

/* Starts pinging after `interval` s of silence; closes after `count` unanswered pings. */
void rpc_connection_start_keepalive(RpcConnection *conn, guint interval, guint count);

RpcTransport *rpc_connection_get_transport(RpcConnection *conn);
const char *rpc_connection_get_peer(RpcConnection *conn);
guint64 rpc_connection_get_bytes_received(RpcConnection *conn);

/* For rpc-keepalive.c: one tick of the keepalive clock (pings, and the
 * authentication deadline). Returns FALSE once the connection is closed or
 * needs no more ticks. */
gboolean rpc_connection_keepalive_tick(RpcConnection *conn, gint64 now_us);
