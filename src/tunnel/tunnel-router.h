/* Routes the STREAM packets (and ferry credit messages) of one RPC
 * connection to their tunnel streams by the opening call's serial.
 *
 * A slot is reserved before the opening call's reply is sent (server) or
 * before the call goes out (client), so no packet is lost in between: packets
 * that arrive before a stream is attached wait in the slot. Packets for an
 * unknown serial, or for a stream that is over, are dropped without reply.
 *
 * Lifetime: the router belongs to the connection's owner (a server session
 * or a client peer) and is freed after the connection's reader has stopped.
 * A binding is held by whoever will create the stream; it keeps the
 * connection alive. */
#pragma once

#include "tunnel/tunnel-stream.h"

typedef struct TunnelRouter TunnelRouter;
typedef struct TunnelBinding TunnelBinding;

TunnelRouter *tunnel_router_new(void);
void tunnel_router_free(TunnelRouter *router);

TunnelBinding *tunnel_router_reserve(TunnelRouter *router, RpcConnection *conn,
                                     const RpcHeader *opening_call);
/* Takes ownership of msg. Returns FALSE (and drops it) when no slot matches. */
gboolean tunnel_router_deliver(TunnelRouter *router, RpcMessage *msg);
/* Fails every stream of the router: its connection is gone. */
void tunnel_router_connection_closed(TunnelRouter *router, const GError *why);
/* Aborts every stream (e.g. the daemon is stopping). */
void tunnel_router_abort_all(TunnelRouter *router, const GError *why);

RpcConnection *tunnel_binding_get_connection(TunnelBinding *binding);
const RpcHeader *tunnel_binding_get_header(TunnelBinding *binding);
/* Attaches the stream and hands it the packets that already arrived. */
void tunnel_binding_attach(TunnelBinding *binding, TunnelStream *ts);
/* Gives the slot up (the call failed, no stream will come). */
void tunnel_binding_cancel(TunnelBinding *binding);
void tunnel_binding_free(TunnelBinding *binding);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TunnelBinding, tunnel_binding_free)

/* The connection a migration's prepare call came on, held by the
 * destination's job so that it learns at once when its source is gone (in
 * proxy mode no stream tells it; after a clean stream, neither does one). */
typedef struct TunnelPeerWatch TunnelPeerWatch;

TunnelPeerWatch *tunnel_peer_watch_new(RpcConnection *conn);
TunnelPeerWatch *tunnel_peer_watch_ref(TunnelPeerWatch *watch);
void tunnel_peer_watch_unref(TunnelPeerWatch *watch);
/* TRUE once the connection is closed (NULL: never). */
gboolean tunnel_peer_watch_gone(TunnelPeerWatch *watch);
/* TRUE once the connection closed with an error (the path broke), not in
 * order (the source ended it) nor while the source's host still answered
 * (rpc_connection_peer_unresponsive: frozen): a source may come back after
 * the former. */
gboolean tunnel_peer_watch_broke(TunnelPeerWatch *watch);
/* Who the source authenticated as (for a resume to match); NULL: unknown. */
void tunnel_peer_watch_set_identity(TunnelPeerWatch *watch, const char *identity);
const char *tunnel_peer_watch_get_identity(TunnelPeerWatch *watch);
/* The source resumed the migration on conn: watch that one now. */
void tunnel_peer_watch_rebind(TunnelPeerWatch *watch, RpcConnection *conn);
/* The same, returning the connection watched before (a reference). */
RpcConnection *tunnel_peer_watch_rebind_take(TunnelPeerWatch *watch, RpcConnection *conn);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TunnelPeerWatch, tunnel_peer_watch_unref)
