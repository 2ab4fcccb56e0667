/* Listeners, the accept loop and its limits, client bookkeeping and call
 * dispatch to workers. */
#include "rpc/rpc-server.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/rpc-sasl.h"
#include "rpc/rpc-tls.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "rpc.server"

/* Before authentication, when the server's config sets no other size. */
#define DEFAULT_ANONYMOUS_MESSAGE_MAX (64 * 1024)

typedef struct {
    int fd;
    RpcListenerOptions options;
    char *description;
} RpcListener;

struct RpcServer {
    RpcServerConfig config;
    GArray *programs; /* RpcServerProgram */
    GPtrArray *listeners;
    RpcServerClientInitFunc client_init;
    gpointer client_init_data;

    GMutex lock;
    GCond cond;
    GHashTable *clients; /* RpcServerClient* set, each holding a ref */
    GHashTable *handshakes; /* RpcHandshake* set: TLS handshakes in progress */
    guint anonymous;        /* clients not authenticated yet */
    gboolean suspended;     /* the accept thread waits for room (limits reached) */
    gboolean stopping;
    guint64 next_client_id; /* the id of the next client (ids start at 1) */

    GThreadPool *workers;
    gint busy_workers; /* atomic: workers running a call */
    GThread *accept_thread;
    int wake_fd;
};

struct RpcServerClient {
    gint ref;
    RpcServer *server;
    RpcConnection *conn;
    guint64 id;
    gint64 connected_at; /* seconds since the epoch */
    RpcServerTransportKind transport_kind;
    char *x509_dname; /* set before the client is listed, then fixed */
    gint readonly; /* atomic: the listener's, or the client asked for read-only */
    int auth_type;
    gboolean authenticated; /* under server->lock */
    char *sasl_username;    /* under server->lock */
    gpointer priv;
    GDestroyNotify priv_destroy;
    void (*close_hook)(RpcServerClient *client, gpointer priv);
};

typedef struct {
    RpcServerClient *client;
    RpcMessage *msg;
    const RpcServerProgram *program;
} RpcJob;

/* A TLS connection accepted and not yet confirmed; its thread owns it. */
typedef struct {
    RpcServer *server;
    RpcListener *listener;
    int fd;
} RpcHandshake;

/* ---- clients ---- */

RpcServerClient *rpc_server_client_ref(RpcServerClient *client)
{
    g_atomic_int_inc(&client->ref);
    return client;
}

void rpc_server_client_unref(RpcServerClient *client)
{
    if (!client || !g_atomic_int_dec_and_test(&client->ref))
        return;
    if (client->priv_destroy)
        client->priv_destroy(client->priv);
    rpc_connection_unref(client->conn);
    g_free(client->x509_dname);
    g_free(client->sasl_username);
    g_free(client);
}

RpcConnection *rpc_server_client_get_connection(RpcServerClient *client)
{
    return client->conn;
}

guint64 rpc_server_client_get_id(RpcServerClient *client)
{
    return client->id;
}

gint64 rpc_server_client_get_connected_at(RpcServerClient *client)
{
    return client->connected_at;
}

RpcServerTransportKind rpc_server_client_get_transport_kind(RpcServerClient *client)
{
    return client->transport_kind;
}

const char *rpc_server_client_get_x509_dname(RpcServerClient *client)
{
    return client->x509_dname;
}

char *rpc_server_client_dup_sasl_username(RpcServerClient *client)
{
    g_mutex_lock(&client->server->lock);
    char *user = g_strdup(client->sasl_username);
    g_mutex_unlock(&client->server->lock);
    return user;
}

void rpc_server_client_set_sasl_username(RpcServerClient *client, const char *user)
{
    g_mutex_lock(&client->server->lock);
    g_free(client->sasl_username);
    client->sasl_username = g_strdup(user);
    g_mutex_unlock(&client->server->lock);
}

RpcServer *rpc_server_client_get_server(RpcServerClient *client)
{
    return client->server;
}

const char *rpc_server_client_get_peer(RpcServerClient *client)
{
    return rpc_connection_get_peer(client->conn);
}

gboolean rpc_server_client_is_readonly(RpcServerClient *client)
{
    return g_atomic_int_get(&client->readonly);
}

void rpc_server_client_set_readonly(RpcServerClient *client)
{
    g_atomic_int_set(&client->readonly, TRUE);
}

int rpc_server_client_get_auth_type(RpcServerClient *client)
{
    return client->auth_type;
}

/* Makes the accept thread look again at the limits before it accepts
 * anything more. */
static void wake_accept_always_locked(RpcServer *server)
{
    guint64 one = 1;
    if (write(server->wake_fd, &one, sizeof(one)) < 0)
        FERRY_WARN_LIMITED("cannot wake the accept thread: %s", g_strerror(errno));
}

/* Lets a suspended accept thread look again at the limits. */
static void wake_accept_locked(RpcServer *server)
{
    if (!server->suspended)
        return;
    guint64 one = 1;
    if (write(server->wake_fd, &one, sizeof(one)) < 0)
        FERRY_WARN_LIMITED("cannot wake the accept thread: %s", g_strerror(errno));
}

void rpc_server_client_set_authenticated(RpcServerClient *client)
{
    RpcServer *server = client->server;
    g_mutex_lock(&server->lock);
    if (!client->authenticated) {
        client->authenticated = TRUE;
        server->anonymous--;
        wake_accept_locked(server);
    }
    g_mutex_unlock(&server->lock);
    rpc_connection_set_authenticated(client->conn);
}

RpcTransport *rpc_server_client_get_transport(RpcServerClient *client)
{
    return rpc_connection_get_transport(client->conn);
}

void rpc_server_client_set_private(RpcServerClient *client, gpointer priv, GDestroyNotify destroy)
{
    client->priv = priv;
    client->priv_destroy = destroy;
}

gpointer rpc_server_client_get_private(RpcServerClient *client)
{
    return client->priv;
}

void rpc_server_client_set_close_hook(RpcServerClient *client,
                                      void (*hook)(RpcServerClient *client, gpointer priv))
{
    client->close_hook = hook;
}

void rpc_server_client_reply(RpcServerClient *client, RpcMessage *reply)
{
    reply->completes_request = TRUE;
    rpc_connection_send(client->conn, reply);
}

void rpc_server_client_send(RpcServerClient *client, RpcMessage *msg)
{
    rpc_connection_send(client->conn, msg);
}

void rpc_server_client_start_keepalive(RpcServerClient *client)
{
    rpc_connection_start_keepalive(client->conn, client->server->config.keepalive_interval,
                                   client->server->config.keepalive_count);
}

void rpc_server_client_close(RpcServerClient *client)
{
    rpc_connection_close(client->conn, NULL);
}

void rpc_server_client_close_after_flush(RpcServerClient *client)
{
    rpc_connection_close_after_flush(client->conn);
}

static void worker_run(gpointer data, gpointer user_data)
{
    RpcJob *job = data;
    RpcServer *server = job->client->server;
    g_atomic_int_inc(&server->busy_workers);
    job->program->call(job->client, job->msg, job->program->data);
    g_atomic_int_add(&server->busy_workers, -1);
    rpc_server_client_unref(job->client);
    g_free(job);
}

static void reply_error_now(RpcServerClient *client, RpcMessage *call, int code,
                            const char *fmt, ...) G_GNUC_PRINTF(4, 5);

static void reply_error_now(RpcServerClient *client, RpcMessage *call, int code,
                            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_autoptr(GError) error = g_error_new_literal(FERRY_ERROR, code, text);
    FERRY_INFO_LIMITED("%s: %s", rpc_server_client_get_peer(client), text);
    RpcHeader h = call->header;
    h.type = RPC_REPLY;
    rpc_connection_request_begin(client->conn);
    rpc_server_client_reply(client, rpc_message_new_error(&h, RPC_REPLY, error));
}

static const RpcServerProgram *find_program(RpcServer *server, guint32 prog, guint32 vers)
{
    for (guint i = 0; i < server->programs->len; i++) {
        const RpcServerProgram *p = &g_array_index(server->programs, RpcServerProgram, i);
        if (p->prog == prog && p->vers == vers)
            return p;
    }
    return NULL;
}

static void client_on_message(RpcConnection *conn, RpcMessage *msg, gpointer user_data)
{
    RpcServerClient *client = user_data;
    RpcServer *server = client->server;
    const RpcServerProgram *program = find_program(server, msg->header.prog, msg->header.vers);

    switch (msg->header.type) {
    case RPC_CALL: {
        if (!program) {
            reply_error_now(client, msg, FERRY_ERR_RPC, "Cannot find program %u version %u",
                            msg->header.prog, msg->header.vers);
            break;
        }
        if (msg->header.status != RPC_OK) {
            reply_error_now(client, msg, FERRY_ERR_RPC,
                            "malformed call: status %u instead of OK (procedure %d)",
                            msg->header.status, msg->header.proc);
            break;
        }
        rpc_connection_request_begin(conn);
        RpcJob *job = g_new(RpcJob, 1);
        job->client = rpc_server_client_ref(client);
        job->msg = g_steal_pointer(&msg);
        job->program = program;
        g_autoptr(GError) error = NULL;
        /* When no new worker can start, the job still waits in the queue
         * for a running one. */
        if (!g_thread_pool_push(server->workers, job, &error))
            FERRY_WARN_LIMITED("cannot start another worker thread (%s): the call waits for a "
                               "running one", error->message);
        break;
    }
    case RPC_CALL_WITH_FDS:
        reply_error_now(client, msg, FERRY_ERR_RPC,
                        "file descriptor passing is not supported (procedure %d)",
                        msg->header.proc);
        break;
    case RPC_STREAM:
    case RPC_STREAM_HOLE:
        if (program && program->stream) {
            program->stream(client, g_steal_pointer(&msg), program->data);
            break;
        }
        FERRY_DEBUG("%s: dropping stream packet for program %u", rpc_connection_get_peer(conn),
                    msg->header.prog);
        break;
    case RPC_MESSAGE:
        if (program && program->message) {
            program->message(client, g_steal_pointer(&msg), program->data);
            break;
        }
        /* fall through */
    default:
        /* REPLY, or a MESSAGE nobody handles, means nothing to a server: drop it. */
        FERRY_INFO_LIMITED("%s: dropping unexpected %s message (program %u procedure %d)",
                   rpc_connection_get_peer(conn), rpc_message_type_name(msg->header.type),
                   msg->header.prog, msg->header.proc);
        break;
    }
    rpc_message_free(msg);
}

static void client_on_close(RpcConnection *conn, const GError *why, gpointer user_data)
{
    RpcServerClient *client = user_data;
    RpcServer *server = client->server;
    FERRY_DEBUG("client %s disconnected%s%s", rpc_connection_get_peer(conn), why ? ": " : "",
                why ? why->message : "");
    if (client->close_hook)
        client->close_hook(client, client->priv);

    g_mutex_lock(&server->lock);
    gboolean had = g_hash_table_remove(server->clients, client);
    if (had && !client->authenticated)
        server->anonymous--;
    wake_accept_locked(server);
    g_cond_broadcast(&server->cond);
    g_mutex_unlock(&server->lock);
    if (had)
        rpc_server_client_unref(client);
}

static const RpcConnectionHandler client_handler = {
    .on_message = client_on_message,
    .on_close = client_on_close,
};

/* ---- accepting ---- */

/* Registers and starts a client on a ready transport (ownership passes). */
static void add_client(RpcServer *server, RpcListener *listener, RpcTransport *transport)
{
    RpcServerTransportKind kind = listener->options.tls ? RPC_SERVER_TRANSPORT_TLS
                                  : transport->is_unix ? RPC_SERVER_TRANSPORT_UNIX
                                                       : RPC_SERVER_TRANSPORT_TCP;
    const char *dn = listener->options.tls ? rpc_tls_transport_get_peer_dn(transport) : NULL;
    char *x509_dname = dn && *dn ? g_strdup(dn) : NULL;
    if (listener->options.sasl_layer)
        transport = rpc_sasl_transport_new(transport);

    g_mutex_lock(&server->lock);
    if (server->stopping) {
        g_mutex_unlock(&server->lock);
        rpc_transport_free(transport);
        g_free(x509_dname);
        return;
    }
    RpcServerClient *client = g_new0(RpcServerClient, 1);
    client->ref = 1; /* held by server->clients */
    client->server = server;
    client->id = ++server->next_client_id;
    client->connected_at = g_get_real_time() / G_USEC_PER_SEC;
    client->transport_kind = kind;
    client->x509_dname = x509_dname;
    client->readonly = listener->options.readonly;
    client->auth_type = listener->options.auth_type;
    client->authenticated = listener->options.auth_type == 0;
    client->conn = rpc_connection_new(transport, &client_handler, client);
    rpc_connection_set_request_limit(client->conn, server->config.max_client_requests);
    rpc_connection_set_send_limit(client->conn, server->config.max_client_send_queue);
    if (!client->authenticated) {
        server->anonymous++;
        rpc_connection_set_unauthenticated(client->conn, server->config.max_anonymous_message,
                                           server->config.auth_timeout);
    }
    g_hash_table_add(server->clients, client);
    g_mutex_unlock(&server->lock);

    FERRY_DEBUG("new client %s on %s", rpc_connection_get_peer(client->conn),
                listener->description);
    if (server->client_init)
        server->client_init(client, server->client_init_data);
    g_autoptr(GError) error = NULL;
    /* A refused start closes the connection, and on_close forgets the client. */
    if (!rpc_connection_try_start(client->conn, &error))
        FERRY_WARN_LIMITED("refusing connection on %s: %s", listener->description,
                           error->message);
}

static gpointer handshake_thread(gpointer data)
{
    RpcHandshake *h = data;
    RpcServer *server = h->server;
    g_autoptr(GError) error = NULL;
    RpcTransport *t = rpc_tls_server_handshake(h->listener->options.tls, h->fd, &error);
    if (t) {
        FERRY_DEBUG("TLS client %s on %s: DN '%s'", t->peer, h->listener->description,
                    rpc_tls_transport_get_peer_dn(t) ? rpc_tls_transport_get_peer_dn(t) : "");
        add_client(server, h->listener, t);
    } else {
        RpcTransport peer = {0};
        rpc_transport_init_socket(&peer, h->fd);
        FERRY_WARN_LIMITED("refused TLS connection from %s on %s: %s", peer.peer,
                           h->listener->description, error->message);
        g_free(peer.peer);
    }

    /* Last touch of the server: rpc_server_stop waits for this. */
    g_mutex_lock(&server->lock);
    g_hash_table_remove(server->handshakes, h);
    if (!t)
        close(h->fd); /* under the lock: stop never shuts down a reused number */
    wake_accept_locked(server);
    g_cond_broadcast(&server->cond);
    g_mutex_unlock(&server->lock);
    g_free(h);
    return NULL;
}

static void accept_client(RpcServer *server, RpcListener *listener)
{
    int fd = accept4(listener->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            FERRY_WARN_LIMITED("accept on %s failed: %s", listener->description,
                               g_strerror(errno));
        if (errno == EMFILE || errno == ENFILE)
            g_usleep(100 * 1000); /* let some descriptors free up before retrying */
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    g_mutex_lock(&server->lock);
    if (server->stopping) {
        g_mutex_unlock(&server->lock);
        close(fd);
        return;
    }
    if (listener->options.tls) {
        RpcHandshake *h = g_new0(RpcHandshake, 1);
        h->server = server;
        h->listener = listener;
        h->fd = fd;
        g_autoptr(GError) error = NULL;
        GThread *t = g_thread_try_new("rpc-tls-handshake", handshake_thread, h, &error);
        if (!t) {
            g_mutex_unlock(&server->lock);
            RpcTransport *peer = rpc_transport_new_socket(fd);
            FERRY_WARN_LIMITED("refusing connection from %s on %s: cannot start its TLS "
                               "handshake thread: %s",
                               peer->peer, listener->description, error->message);
            rpc_transport_free(peer);
            g_free(h);
            return;
        }
        /* The thread waits for this lock before it touches the table. */
        g_hash_table_add(server->handshakes, h);
        g_mutex_unlock(&server->lock);
        g_thread_unref(t);
        return;
    }
    g_mutex_unlock(&server->lock);
    add_client(server, listener, rpc_transport_new_socket(fd));
}

/* Whether one more client fits under max_clients and max_anonymous_clients;
 * logs each change, as libvirtd does. */
static gboolean may_accept_locked(RpcServer *server)
{
    guint count = g_hash_table_size(server->clients) + g_hash_table_size(server->handshakes);
    gboolean room = count < server->config.max_clients &&
                    (server->config.max_anonymous_clients == 0 ||
                     server->anonymous < server->config.max_anonymous_clients);
    if (!room && !server->suspended)
        FERRY_INFO_LIMITED("not accepting new connections for now: %u clients (max_clients "
                           "%u), %u not authenticated (max_anonymous_clients %u)",
                           count, server->config.max_clients, server->anonymous,
                           server->config.max_anonymous_clients);
    else if (room && server->suspended)
        FERRY_INFO_LIMITED("accepting new connections again");
    server->suspended = !room;
    return room;
}

static gpointer accept_thread(gpointer data)
{
    RpcServer *server = data;
    guint n = server->listeners->len;
    g_autofree struct pollfd *pfds = g_new0(struct pollfd, n + 1);
    for (guint i = 0; i < n; i++) {
        pfds[i].fd = ((RpcListener *)server->listeners->pdata[i])->fd;
        pfds[i].events = POLLIN;
    }
    pfds[n].fd = server->wake_fd;
    pfds[n].events = POLLIN;

    for (;;) {
        g_mutex_lock(&server->lock);
        gboolean stopping = server->stopping;
        gboolean accepting = may_accept_locked(server);
        g_mutex_unlock(&server->lock);
        if (stopping)
            break;
        /* Suspended: only the wake-up counts; connections wait in the backlog. */
        struct pollfd *first = accepting ? pfds : &pfds[n];
        if (poll(first, accepting ? n + 1 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            FERRY_ERROR_LOG("poll on listeners failed: %s", g_strerror(errno));
            break;
        }
        if (pfds[n].revents) {
            guint64 count;
            if (read(server->wake_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
                FERRY_WARN_LIMITED("cannot read the accept thread's wake-up: %s",
                                   g_strerror(errno));
            continue;
        }
        for (guint i = 0; i < n; i++)
            if (pfds[i].revents & POLLIN)
                accept_client(server, server->listeners->pdata[i]);
    }
    return NULL;
}

/* ---- server ---- */

static void listener_free(gpointer data)
{
    RpcListener *l = data;
    close(l->fd);
    rpc_tls_context_unref(l->options.tls);
    g_free(l->description);
    g_free(l);
}

RpcServer *rpc_server_new(const RpcServerConfig *config)
{
    RpcServer *server = g_new0(RpcServer, 1);
    server->config = *config;
    if (server->config.max_workers == 0)
        server->config.max_workers = 20;
    if (server->config.max_clients == 0)
        server->config.max_clients = 5000;
    server->programs = g_array_new(FALSE, TRUE, sizeof(RpcServerProgram));
    server->listeners = g_ptr_array_new_with_free_func(listener_free);
    server->clients = g_hash_table_new(NULL, NULL);
    server->handshakes = g_hash_table_new(NULL, NULL);
    g_mutex_init(&server->lock);
    g_cond_init(&server->cond);
    if (server->config.max_anonymous_message == 0)
        server->config.max_anonymous_message = DEFAULT_ANONYMOUS_MESSAGE_MAX;
    server->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    server->workers = g_thread_pool_new(worker_run, server, server->config.max_workers, FALSE, NULL);
    return server;
}

void rpc_server_add_program(RpcServer *server, const RpcServerProgram *program)
{
    g_array_append_val(server->programs, *program);
}

void rpc_server_set_client_init(RpcServer *server, RpcServerClientInitFunc func, gpointer data)
{
    server->client_init = func;
    server->client_init_data = data;
}

void rpc_server_add_listener(RpcServer *server, int fd, const RpcListenerOptions *options)
{
    RpcListener *l = g_new0(RpcListener, 1);
    l->fd = fd;
    l->options = *options;
    l->description = g_strdup(options->description ? options->description : "socket");
    l->options.description = l->description;
    if (l->options.tls)
        rpc_tls_context_ref(l->options.tls);
    /* listen() again sets the backlog of a socket that already listens. */
    if (server->config.max_queued_clients &&
        listen(fd, (int)MIN(server->config.max_queued_clients, (guint)G_MAXINT)) < 0)
        FERRY_WARN("cannot set the backlog of %s to %u (max_queued_clients): %s", l->description,
                   server->config.max_queued_clients, g_strerror(errno));
    g_ptr_array_add(server->listeners, l);
}

gboolean rpc_server_start(RpcServer *server, GError **error)
{
    if (server->wake_fd < 0) {
        ferry_set_error_errno(error, errno, "cannot create the server's wakeup eventfd");
        return FALSE;
    }
    server->accept_thread = g_thread_try_new("rpc-accept", accept_thread, server, error);
    return server->accept_thread != NULL;
}

void rpc_server_stop(RpcServer *server)
{
    g_mutex_lock(&server->lock);
    if (server->stopping) {
        g_mutex_unlock(&server->lock);
        return;
    }
    server->stopping = TRUE;
    g_mutex_unlock(&server->lock);

    if (server->accept_thread) {
        guint64 one = 1;
        if (write(server->wake_fd, &one, sizeof(one)) < 0)
            FERRY_WARN("cannot wake the accept thread: %s", g_strerror(errno));
        g_thread_join(server->accept_thread);
        server->accept_thread = NULL;
    }

    /* Abort TLS handshakes in progress and wait for their threads. */
    g_mutex_lock(&server->lock);
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, server->handshakes);
    while (g_hash_table_iter_next(&it, &key, NULL))
        shutdown(((RpcHandshake *)key)->fd, SHUT_RDWR);
    while (g_hash_table_size(server->handshakes) > 0)
        g_cond_wait(&server->cond, &server->lock);

    /* Close every client and wait until each has reported its close. */
    g_hash_table_iter_init(&it, server->clients);
    while (g_hash_table_iter_next(&it, &key, NULL))
        rpc_connection_close(((RpcServerClient *)key)->conn, NULL);
    while (g_hash_table_size(server->clients) > 0)
        g_cond_wait(&server->cond, &server->lock);
    g_mutex_unlock(&server->lock);

    /* Calls still running finish (their replies are dropped). */
    g_mutex_lock(&server->lock);
    GThreadPool *workers = g_steal_pointer(&server->workers);
    g_mutex_unlock(&server->lock);
    g_thread_pool_free(workers, FALSE, TRUE);
}

void rpc_server_free(RpcServer *server)
{
    if (!server)
        return;
    rpc_server_stop(server);
    g_ptr_array_free(server->listeners, TRUE);
    g_array_free(server->programs, TRUE);
    g_hash_table_destroy(server->clients);
    g_hash_table_destroy(server->handshakes);
    g_mutex_clear(&server->lock);
    g_cond_clear(&server->cond);
    if (server->wake_fd >= 0)
        close(server->wake_fd);
    g_free(server);
}

guint rpc_server_count_clients(RpcServer *server)
{
    g_mutex_lock(&server->lock);
    guint n = g_hash_table_size(server->clients);
    g_mutex_unlock(&server->lock);
    return n;
}


const RpcServerConfig *rpc_server_get_config(RpcServer *server)
{
    return &server->config;
}

/* ---- runtime administration ---- */

void rpc_server_get_worker_stats(RpcServer *server, RpcServerWorkerStats *stats)
{
    g_mutex_lock(&server->lock);
    stats->max_workers = server->config.max_workers;
    GThreadPool *pool = server->workers;
    stats->workers = pool ? g_thread_pool_get_num_threads(pool) : 0;
    stats->queued_calls = pool ? g_thread_pool_unprocessed(pool) : 0;
    g_mutex_unlock(&server->lock);
    /* Counted apart from the pool's own number: one read may be a moment
     * older than the other. */
    stats->busy_workers = MIN((guint)g_atomic_int_get(&server->busy_workers), stats->workers);
}

gboolean rpc_server_set_max_workers(RpcServer *server, guint max_workers, GError **error)
{
    if (max_workers == 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "maxWorkers must be at least 1: with no worker no call would run");
        return FALSE;
    }
    g_mutex_lock(&server->lock);
    gboolean ok = !server->stopping && server->workers &&
                  g_thread_pool_set_max_threads(server->workers, (gint)MIN(max_workers,
                                                (guint)G_MAXINT), error);
    if (ok) {
        server->config.max_workers = max_workers;
    } else if (error && !*error) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "the server is stopping");
    }
    g_mutex_unlock(&server->lock);
    return ok;
}

void rpc_server_get_client_stats(RpcServer *server, RpcServerClientStats *stats)
{
    g_mutex_lock(&server->lock);
    stats->max_clients = server->config.max_clients;
    stats->clients = g_hash_table_size(server->clients);
    stats->max_anonymous_clients = server->config.max_anonymous_clients;
    stats->anonymous_clients = server->anonymous;
    g_mutex_unlock(&server->lock);
}

gboolean rpc_server_set_client_limits(RpcServer *server, gint64 max_clients,
                                      gint64 max_anonymous_clients, GError **error)
{
    g_mutex_lock(&server->lock);
    gint64 total = max_clients >= 0 ? max_clients : server->config.max_clients;
    gint64 anon = max_anonymous_clients >= 0 ? max_anonymous_clients
                                             : server->config.max_anonymous_clients;
    gboolean ok = FALSE;
    if (total == 0 || total > G_MAXUINT32)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "nclients_max %" G_GINT64_FORMAT " is out of range 1..%u", total,
                    G_MAXUINT32);
    else if (anon > G_MAXUINT32)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "nclients_unauth_max %" G_GINT64_FORMAT " is out of range 0..%u", anon,
                    G_MAXUINT32);
    else if (anon > total)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "nclients_max (%" G_GINT64_FORMAT ") must not be below nclients_unauth_max "
                    "(%" G_GINT64_FORMAT "): the clients waiting for authentication are "
                    "clients too", total, anon);
    else
        ok = TRUE;
    if (ok) {
        server->config.max_clients = (guint)total;
        server->config.max_anonymous_clients = (guint)anon;
        /* The accept thread looks again before its next accept: a lower limit
         * holds from the next connection on (the wake-up is read before any
         * listener), a higher one lets waiting connections in. */
        wake_accept_always_locked(server);
    }
    g_mutex_unlock(&server->lock);
    return ok;
}

static gint compare_client_ids(gconstpointer a, gconstpointer b)
{
    const RpcServerClient *x = *(RpcServerClient *const *)a;
    const RpcServerClient *y = *(RpcServerClient *const *)b;
    return x->id < y->id ? -1 : x->id > y->id;
}

GPtrArray *rpc_server_list_clients(RpcServer *server)
{
    g_mutex_lock(&server->lock);
    GPtrArray *list = g_ptr_array_new_full(g_hash_table_size(server->clients),
                                           (GDestroyNotify)rpc_server_client_unref);
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, server->clients);
    while (g_hash_table_iter_next(&it, &key, NULL))
        g_ptr_array_add(list, rpc_server_client_ref(key));
    g_mutex_unlock(&server->lock);
    g_ptr_array_sort(list, compare_client_ids);
    return list;
}

RpcServerClient *rpc_server_lookup_client(RpcServer *server, guint64 id)
{
    RpcServerClient *found = NULL;
    g_mutex_lock(&server->lock);
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, server->clients);
    while (!found && g_hash_table_iter_next(&it, &key, NULL))
        if (((RpcServerClient *)key)->id == id)
            found = rpc_server_client_ref(key);
    g_mutex_unlock(&server->lock);
    return found;
}
