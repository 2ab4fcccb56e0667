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
void rpc_connection_start(RpcConnection *conn);

RpcConnection *rpc_connection_ref(RpcConnection *conn);
void rpc_connection_unref(RpcConnection *conn);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcConnection, rpc_connection_unref)

/* Queues msg (ownership passes) and returns at once. Dropped if closed. */
void rpc_connection_send(RpcConnection *conn, RpcMessage *msg);

/* Bytes queued and not yet written. */
gsize rpc_connection_get_queued_bytes(RpcConnection *conn);
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

/* For rpc-keepalive.c: one tick of the keepalive clock. Returns FALSE once the
 * connection is closed and needs no more ticks. */
gboolean rpc_connection_keepalive_tick(RpcConnection *conn, gint64 now_us);
