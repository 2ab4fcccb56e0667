/* The RPC server: listening sockets, the connected clients, and a worker pool
 * that runs calls, so calls of one connection run concurrently and a call that
 * stays outstanding for minutes (a migration) never blocks the others. */
#pragma once

#include <glib.h>

#include "rpc/rpc-connection.h"
#include "rpc/rpc-tls.h"

typedef struct RpcServer RpcServer;
typedef struct RpcServerClient RpcServerClient;

typedef struct {
    guint32 prog;
    guint32 vers;
    /* In a worker thread; takes ownership of call and must answer it with
     * exactly one rpc_server_client_reply(). */
    void (*call)(RpcServerClient *client, RpcMessage *call, gpointer data);
    /* STREAM packets, in the client's reader thread and in order; takes
     * ownership. NULL: stream packets are dropped. */
    void (*stream)(RpcServerClient *client, RpcMessage *msg, gpointer data);
    /* MESSAGE packets (e.g. ferry's stream credit), in the reader thread;
     * takes ownership. NULL: dropped. */
    void (*message)(RpcServerClient *client, RpcMessage *msg, gpointer data);
    gpointer data;
} RpcServerProgram;

typedef struct {
    /* While max_clients are connected (pending TLS handshakes included), or
     * max_anonymous_clients have not authenticated yet (0: no limit), the
     * server stops accepting, as libvirtd: new connections wait in the
     * listen backlog of max_queued_clients (0: the system's default of
     * 128), and the kernel refuses what does not fit. */
    guint max_clients;
    guint max_anonymous_clients;
    guint max_queued_clients;
    guint max_client_requests;  /* per connection; the reader pauses beyond it */
    guint max_workers;          /* worker threads running calls */
    guint keepalive_interval;   /* seconds; 0 disables server pings */
    guint keepalive_count;
    /* Before authentication: the largest message (0: 64 KiB) and the
     * seconds a client has to authenticate (0: no deadline). */
    guint32 max_anonymous_message;
    guint auth_timeout;
    /* Per client: memory of queued messages it did not ask for (PONGs,
     * events); beyond it the client is dropped. 0: no limit. */
    gsize max_client_send_queue;
} RpcServerConfig;

typedef struct {
    gboolean readonly;
    /* remote_auth_type offered on this socket; any but 0 (none) means a
     * client starts unauthenticated, until rpc_server_client_set_authenticated. */
    int auth_type;
    const char *description;    /* "tcp 0.0.0.0:16509", for logs */
    /* TLS: each accepted connection does its handshake (bounded by the
     * context's timeout) in a thread of its own, never in the accept
     * thread; pending handshakes count against max_clients. The listener
     * takes a reference. NULL: plain socket. */
    RpcTlsContext *tls;
    /* Wrap each connection's transport in a SASL layer slot (switched on
     * by the authentication code once SASL completes). */
    gboolean sasl_layer;
} RpcListenerOptions;

/* Called for every new client before it starts reading, e.g. to attach the
 * per-client state of the program layer. */
typedef void (*RpcServerClientInitFunc)(RpcServerClient *client, gpointer data);

RpcServer *rpc_server_new(const RpcServerConfig *config);
void rpc_server_add_program(RpcServer *server, const RpcServerProgram *program);
void rpc_server_set_client_init(RpcServer *server, RpcServerClientInitFunc func, gpointer data);
/* Takes ownership of a listening socket. */
void rpc_server_add_listener(RpcServer *server, int fd, const RpcListenerOptions *options);
/* Starts accepting. */
gboolean rpc_server_start(RpcServer *server, GError **error);
/* Stops accepting, closes every client and waits for them and the workers. */
void rpc_server_stop(RpcServer *server);
void rpc_server_free(RpcServer *server);
guint rpc_server_count_clients(RpcServer *server);
const RpcServerConfig *rpc_server_get_config(RpcServer *server);

/* Lifetime: refcounted; the server holds one reference while connected, each
 * queued call holds one. */
RpcServerClient *rpc_server_client_ref(RpcServerClient *client);
void rpc_server_client_unref(RpcServerClient *client);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcServerClient, rpc_server_client_unref)

RpcConnection *rpc_server_client_get_connection(RpcServerClient *client);
RpcServer *rpc_server_client_get_server(RpcServerClient *client);
const char *rpc_server_client_get_peer(RpcServerClient *client);
gboolean rpc_server_client_is_readonly(RpcServerClient *client);
int rpc_server_client_get_auth_type(RpcServerClient *client);
/* The client proved who it is: it stops counting against
 * max_anonymous_clients and its connection's limits before authentication
 * are lifted. Call it before the reply that completes authentication is sent. */
void rpc_server_client_set_authenticated(RpcServerClient *client);
RpcTransport *rpc_server_client_get_transport(RpcServerClient *client);

/* The program layer's per-client state, destroyed when the client is freed. */
void rpc_server_client_set_private(RpcServerClient *client, gpointer priv, GDestroyNotify destroy);
gpointer rpc_server_client_get_private(RpcServerClient *client);
/* Called once when the connection closes (before the private data is freed). */
void rpc_server_client_set_close_hook(RpcServerClient *client,
                                      void (*hook)(RpcServerClient *client, gpointer priv));

/* Sends the reply to a call (it counts as one request less once written). */
void rpc_server_client_reply(RpcServerClient *client, RpcMessage *reply);
/* Sends any other message (events, stream packets). */
void rpc_server_client_send(RpcServerClient *client, RpcMessage *msg);
/* Starts server-side pings with the server's interval and count. */
void rpc_server_client_start_keepalive(RpcServerClient *client);
void rpc_server_client_close(RpcServerClient *client);
