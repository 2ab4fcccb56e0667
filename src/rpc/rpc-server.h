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

/* ---- what an administrator sees and changes at runtime (admin protocol) ---- */

/* The worker pool now. Workers start on demand up to max_workers and none is
 * kept idle, so there is no minimum and no priority workers. */
typedef struct {
    guint max_workers;
    guint workers;      /* threads running calls or waiting for one */
    guint busy_workers; /* of which running a call */
    guint queued_calls; /* calls waiting for a worker */
} RpcServerWorkerStats;
void rpc_server_get_worker_stats(RpcServer *server, RpcServerWorkerStats *stats);
/* Takes effect at once: more calls run concurrently, or running ones finish
 * and no new one starts until fewer than max run. At least 1. */
gboolean rpc_server_set_max_workers(RpcServer *server, guint max_workers, GError **error);

typedef struct {
    guint max_clients;
    guint clients;
    guint max_anonymous_clients; /* 0: no limit */
    guint anonymous_clients;     /* connected, not authenticated yet */
} RpcServerClientStats;
void rpc_server_get_client_stats(RpcServer *server, RpcServerClientStats *stats);
/* New limits for accepting (-1 keeps one); connected clients stay. Refused
 * (naming it) when max_clients would be 0 or below a non-zero
 * max_anonymous_clients. */
gboolean rpc_server_set_client_limits(RpcServer *server, gint64 max_clients,
                                      gint64 max_anonymous_clients, GError **error);

/* The connected clients, each with a reference (the array drops them), in
 * the order they connected. Clients come and go meanwhile: one listed may be
 * closed by the time it is looked at, which every accessor tolerates. */
GPtrArray *rpc_server_list_clients(RpcServer *server);
/* The client with this id (a new reference), or NULL if none is connected. */
RpcServerClient *rpc_server_lookup_client(RpcServer *server, guint64 id);

/* Lifetime: refcounted; the server holds one reference while connected, each
 * queued call holds one. */
RpcServerClient *rpc_server_client_ref(RpcServerClient *client);
void rpc_server_client_unref(RpcServerClient *client);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcServerClient, rpc_server_client_unref)

/* How a client reached the server; the values are libvirt's virClientTransport. */
typedef enum {
    RPC_SERVER_TRANSPORT_UNIX = 0,
    RPC_SERVER_TRANSPORT_TCP = 1,
    RPC_SERVER_TRANSPORT_TLS = 2,
} RpcServerTransportKind;

RpcConnection *rpc_server_client_get_connection(RpcServerClient *client);
/* Unique within its server, from 1, never reused. */
guint64 rpc_server_client_get_id(RpcServerClient *client);
/* When it connected, in seconds since the epoch. */
gint64 rpc_server_client_get_connected_at(RpcServerClient *client);
RpcServerTransportKind rpc_server_client_get_transport_kind(RpcServerClient *client);
/* The subject DN of the certificate the client presented over TLS, or NULL. */
const char *rpc_server_client_get_x509_dname(RpcServerClient *client);
/* The SASL user name the client authenticated as (a copy), or NULL. */
char *rpc_server_client_dup_sasl_username(RpcServerClient *client);
void rpc_server_client_set_sasl_username(RpcServerClient *client, const char *user);
RpcServer *rpc_server_client_get_server(RpcServerClient *client);
const char *rpc_server_client_get_peer(RpcServerClient *client);
gboolean rpc_server_client_is_readonly(RpcServerClient *client);
/* The client opened its connection read-only (it cannot go back). */
void rpc_server_client_set_readonly(RpcServerClient *client);
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
/* Closes once everything queued so far (e.g. the reply just sent) is written. */
void rpc_server_client_close_after_flush(RpcServerClient *client);
