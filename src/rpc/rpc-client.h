/* The RPC client: one connection to a server, calls from any number of
 * threads at once (each waits for the reply with its serial, with a timeout),
 * asynchronous MESSAGE events and STREAM packets delivered to callbacks, and
 * keepalive. Used by the tests and, for peer-to-peer migration, by ferryd. */
#pragma once

#include <glib.h>

#include "rpc/rpc-connection.h"

typedef struct RpcClient RpcClient;

typedef struct {
    /* MESSAGE packets (events), in the reader thread; msg is borrowed. */
    void (*on_event)(RpcClient *client, RpcMessage *msg, gpointer data);
    /* STREAM packets, in the reader thread and in order; takes ownership. */
    void (*on_stream)(RpcClient *client, RpcMessage *msg, gpointer data);
    /* Once, when the connection is gone; why NULL for an orderly close. */
    void (*on_close)(RpcClient *client, const GError *why, gpointer data);
    gpointer data;
} RpcClientCallbacks;

/* Takes ownership of a connected socket (TCP or UNIX). callbacks may be NULL. */
RpcClient *rpc_client_new_for_fd(int fd, const RpcClientCallbacks *callbacks);
/* Takes ownership of an already-set-up transport (e.g. TLS). Over a SASL
 * layer slot (rpc_sasl_transport_new) the client starts in lockstep until
 * rpc_client_set_authenticated: it reads only replies to its calls, one at a
 * time and not a byte beyond, so a layer switched on after a reply decodes
 * everything the server sent after it. */
RpcClient *rpc_client_new_for_transport(RpcTransport *transport,
                                        const RpcClientCallbacks *callbacks);
/* Authentication is done (and a security layer switched on): events and
 * stream packets are read as they come. */
void rpc_client_set_authenticated(RpcClient *client);
RpcClient *rpc_client_connect_tcp(const char *host, guint16 port, int timeout_ms,
                                  const RpcClientCallbacks *callbacks, GError **error);
RpcClient *rpc_client_connect_unix(const char *path, const RpcClientCallbacks *callbacks,
                                   GError **error);
/* Closes the connection and waits for its threads; pending calls fail. */
void rpc_client_free(RpcClient *client);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcClient, rpc_client_free)

/* Calls prog/vers/proc with XDR args and decodes the reply into ret (free it
 * with xdr_free(ret_filter, ret)). timeout_ms <= 0 waits forever. An ERROR
 * reply becomes a FERRY_REMOTE_ERROR with the server's code and text. */
gboolean rpc_client_call(RpcClient *client, guint32 prog, guint32 vers, gint32 proc,
                         xdrproc_t args_filter, void *args, xdrproc_t ret_filter, void *ret,
                         int timeout_ms, GError **error);

/* Like rpc_client_call, and reports the serial the call used before it is
 * sent, so a stream opened by this call can be registered first. */
gboolean rpc_client_call_with_serial(RpcClient *client, guint32 prog, guint32 vers, gint32 proc,
                                     xdrproc_t args_filter, void *args, xdrproc_t ret_filter,
                                     void *ret, int timeout_ms,
                                     void (*serial_cb)(guint32 serial, gpointer data),
                                     gpointer serial_data, GError **error);

/* Sends a message as is (stream packets). Ownership passes. */
void rpc_client_send(RpcClient *client, RpcMessage *msg);

void rpc_client_start_keepalive(RpcClient *client, guint interval, guint count);
gboolean rpc_client_is_open(RpcClient *client);
RpcConnection *rpc_client_get_connection(RpcClient *client);
const char *rpc_client_get_peer(RpcClient *client);
