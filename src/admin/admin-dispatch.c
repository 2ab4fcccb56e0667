/* The ADMIN program's procedure table and handlers. */
#include "admin/admin-dispatch.h"

#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <unistd.h>

#include "admin/admin_protocol.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "admin.dispatch"

#define LIB_VERSION 9000000ULL /* the libvirt protocol level we speak */

/* virTypedParameterType values on the wire. */
enum {
    PARAM_INT = 1,
    PARAM_UINT = 2,
    PARAM_BOOLEAN = 6,
    PARAM_STRING = 7,
};

typedef struct {
    char *name;
    RpcServer *server;
} AdminServerEntry;

struct AdminDaemon {
    GArray *servers; /* AdminServerEntry, fixed once the admin server starts */
    AdminSetTimeoutFunc set_timeout;
    gpointer set_timeout_data;
};

/* Per-client state. Lifetime: owned by the RpcServerClient (its private data). */
typedef struct {
    /* The peer runs as another user than the daemon: every call is refused
     * and the connection closed (libvirtd's rule for its admin socket). */
    gboolean denied;
    gint64 peer_uid;
    gint64 peer_pid;
} AdminSession;

typedef struct {
    RpcServerClient *client;
    AdminDaemon *daemon;
    RpcMessage *call;
    gboolean close_after_reply; /* CONNECT_CLOSE */
} AdminContext;

typedef gboolean (*AdminHandler)(AdminContext *ctx, void *args, void *ret, GError **error);

typedef struct {
    int proc;
    const char *name;    /* ADMIN_PROC_ without the prefix */
    const char *command; /* the virt-admin command that calls it */
    xdrproc_t args_filter;
    gsize args_size;
    xdrproc_t ret_filter;
    gsize ret_size;
    AdminHandler handler; /* NULL: ferryd does not implement it */
    const char *why_not;  /* for those: what to do instead */
} AdminProcedure;

/* ---- the daemon's servers ---- */

AdminDaemon *admin_daemon_new(void)
{
    AdminDaemon *d = g_new0(AdminDaemon, 1);
    d->servers = g_array_new(FALSE, TRUE, sizeof(AdminServerEntry));
    return d;
}

void admin_daemon_free(AdminDaemon *daemon)
{
    if (!daemon)
        return;
    for (guint i = 0; i < daemon->servers->len; i++)
        g_free(g_array_index(daemon->servers, AdminServerEntry, i).name);
    g_array_unref(daemon->servers);
    g_free(daemon);
}

void admin_daemon_add_server(AdminDaemon *daemon, const char *name, RpcServer *server)
{
    AdminServerEntry e = {.name = g_strdup(name), .server = server};
    g_array_append_val(daemon->servers, e);
}

void admin_daemon_set_timeout_func(AdminDaemon *daemon, AdminSetTimeoutFunc func,
                                   gpointer data)
{
    daemon->set_timeout = func;
    daemon->set_timeout_data = data;
}

static RpcServer *find_server(AdminContext *ctx, const char *name, GError **error)
{
    for (guint i = 0; i < ctx->daemon->servers->len; i++) {
        AdminServerEntry *e = &g_array_index(ctx->daemon->servers, AdminServerEntry, i);
        if (strcmp(e->name, name) == 0)
            return e->server;
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SERVER,
                "no server with matching name '%s' found", name);
    return NULL;
}

/* A new reference to the client named by (server name, id). */
static RpcServerClient *find_client(AdminContext *ctx, const admin_nonnull_client *c,
                                    GError **error)
{
    RpcServer *server = find_server(ctx, c->srv.name, error);
    if (!server)
        return NULL;
    RpcServerClient *client = rpc_server_lookup_client(server, c->id);
    if (!client)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_CLIENT,
                    "no client with matching id '%" G_GUINT64_FORMAT "' found", (guint64)c->id);
    return client;
}

static void make_client(const char *server_name, RpcServerClient *client,
                        admin_nonnull_client *out)
{
    out->srv.name = g_strdup(server_name);
    out->id = rpc_server_client_get_id(client);
    out->timestamp = rpc_server_client_get_connected_at(client);
    out->transport = rpc_server_client_get_transport_kind(client);
}

/* Refuses flags this daemon does not know, as libvirt does for each call. */
static gboolean check_flags(AdminContext *ctx, const AdminProcedure *p, guint flags,
                            GError **error)
{
    if (flags == 0)
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                "unsupported flags (0x%x) in %s (virt-admin %s)", flags, p->name, p->command);
    return FALSE;
}

/* ---- typed parameters ---- */

static admin_typed_param *param_add(GArray *list, const char *field, int type)
{
    admin_typed_param p = {.field = g_strdup(field)};
    p.value.type = type;
    g_array_append_val(list, p);
    return &g_array_index(list, admin_typed_param, list->len - 1);
}

static void param_uint(GArray *list, const char *field, guint v)
{
    param_add(list, field, PARAM_UINT)->value.admin_typed_param_value_u.ui = v;
}

static void param_int(GArray *list, const char *field, int v)
{
    param_add(list, field, PARAM_INT)->value.admin_typed_param_value_u.i = v;
}

static void param_bool(GArray *list, const char *field, gboolean v)
{
    param_add(list, field, PARAM_BOOLEAN)->value.admin_typed_param_value_u.b = v ? 1 : 0;
}

static void param_string(GArray *list, const char *field, const char *v)
{
    param_add(list, field, PARAM_STRING)->value.admin_typed_param_value_u.s = g_strdup(v);
}

/* Hands the list over to a reply's params<> (freed by xdr_free). */
static void params_steal(GArray *list, admin_typed_param **val, u_int *len)
{
    *len = list->len;
    *val = (admin_typed_param *)g_array_free(list, list->len == 0);
}

/* The value of each settable field, or -1 where the caller did not send it.
 * Every field must be one of `names`, sent once, as an unsigned int: libvirt's
 * rules for a setter's parameters. */
static gboolean params_read_uints(const admin_typed_param *params, u_int n,
                                  const char *const *names, gint64 *values, GError **error)
{
    guint count = g_strv_length((char **)names);
    for (guint i = 0; i < count; i++)
        values[i] = -1;
    for (u_int i = 0; i < n; i++) {
        const admin_typed_param *p = &params[i];
        guint k = 0;
        while (k < count && strcmp(names[k], p->field) != 0)
            k++;
        if (k == count) {
            g_autofree char *known = g_strjoinv(", ", (char **)names);
            g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                        "parameter '%s' not supported (settable here: %s)", p->field, known);
            return FALSE;
        }
        if (p->value.type != PARAM_UINT) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "invalid type %d for parameter '%s', expected an unsigned int",
                        p->value.type, p->field);
            return FALSE;
        }
        if (values[k] >= 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "parameter '%s' occurs multiple times", p->field);
            return FALSE;
        }
        values[k] = p->value.admin_typed_param_value_u.ui;
    }
    return TRUE;
}

/* ---- connection ---- */

static gboolean h_connect_open(AdminContext *ctx, void *a, void *r, GError **error)
{
    FERRY_DEBUG("admin client %s connected", rpc_server_client_get_peer(ctx->client));
    return TRUE;
}

static gboolean h_connect_close(AdminContext *ctx, void *a, void *r, GError **error)
{
    ctx->close_after_reply = TRUE;
    return TRUE;
}

static gboolean h_get_lib_version(AdminContext *ctx, void *a, void *r, GError **error)
{
    ((admin_connect_get_lib_version_ret *)r)->lib_ver = LIB_VERSION;
    return TRUE;
}

static gboolean h_list_servers(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_connect_list_servers_args *args = a;
    admin_connect_list_servers_ret *ret = r;
    GArray *servers = ctx->daemon->servers;
    if (args->need_results) {
        ret->servers.servers_len = servers->len;
        ret->servers.servers_val = g_new0(admin_nonnull_server, servers->len);
        for (guint i = 0; i < servers->len; i++)
            ret->servers.servers_val[i].name =
                g_strdup(g_array_index(servers, AdminServerEntry, i).name);
    }
    ret->ret = servers->len;
    return TRUE;
}

static gboolean h_lookup_server(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_connect_lookup_server_args *args = a;
    if (!find_server(ctx, args->name, error))
        return FALSE;
    ((admin_connect_lookup_server_ret *)r)->srv.name = g_strdup(args->name);
    return TRUE;
}

/* ---- worker pools ---- */

static gboolean h_get_threadpool(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_server_get_threadpool_parameters_args *args = a;
    admin_server_get_threadpool_parameters_ret *ret = r;
    RpcServer *server = find_server(ctx, args->srv.name, error);
    if (!server)
        return FALSE;
    RpcServerWorkerStats st;
    rpc_server_get_worker_stats(server, &st);
    GArray *list = g_array_new(FALSE, TRUE, sizeof(admin_typed_param));
    /* Workers start on demand and none is kept idle: no minimum, and no
     * priority workers (every call may run in any worker). */
    param_uint(list, "minWorkers", 0);
    param_uint(list, "maxWorkers", st.max_workers);
    param_uint(list, "nWorkers", st.workers);
    param_uint(list, "freeWorkers", st.workers - st.busy_workers);
    param_uint(list, "prioWorkers", 0);
    param_uint(list, "jobQueueDepth", st.queued_calls);
    params_steal(list, &ret->params.params_val, &ret->params.params_len);
    return TRUE;
}

static gboolean h_set_threadpool(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_server_set_threadpool_parameters_args *args = a;
    RpcServer *server = find_server(ctx, args->srv.name, error);
    if (!server)
        return FALSE;
    static const char *const names[] = {"minWorkers", "maxWorkers", "prioWorkers", NULL};
    gint64 v[3];
    if (!params_read_uints(args->params.params_val, args->params.params_len, names, v, error))
        return FALSE;
    /* Everything is checked before anything changes. Asking for the values
     * ferryd has (0) is no change and is accepted. */
    if (v[0] > 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "minWorkers: ferryd starts workers on demand and keeps none idle, so it "
                    "has no minimum to set (minWorkers stays 0)");
        return FALSE;
    }
    if (v[2] > 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "prioWorkers: ferryd has no priority workers (any worker runs any call; "
                    "prioWorkers stays 0)");
        return FALSE;
    }
    if (v[1] < 0)
        return TRUE;
    RpcServerWorkerStats before;
    rpc_server_get_worker_stats(server, &before);
    if (!rpc_server_set_max_workers(server, (guint)v[1], error))
        return FALSE;
    FERRY_INFO("%s: maxWorkers of server '%s' changed from %u to %" G_GINT64_FORMAT
               " by virt-admin",
               rpc_server_client_get_peer(ctx->client), args->srv.name, before.max_workers, v[1]);
    return TRUE;
}

/* ---- client limits ---- */

static gboolean h_get_client_limits(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_server_get_client_limits_args *args = a;
    admin_server_get_client_limits_ret *ret = r;
    RpcServer *server = find_server(ctx, args->srv.name, error);
    if (!server)
        return FALSE;
    RpcServerClientStats st;
    rpc_server_get_client_stats(server, &st);
    GArray *list = g_array_new(FALSE, TRUE, sizeof(admin_typed_param));
    param_uint(list, "nclients_max", st.max_clients);
    param_uint(list, "nclients", st.clients);
    param_uint(list, "nclients_unauth_max", st.max_anonymous_clients);
    param_uint(list, "nclients_unauth", st.anonymous_clients);
    params_steal(list, &ret->params.params_val, &ret->params.params_len);
    return TRUE;
}

static gboolean h_set_client_limits(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_server_set_client_limits_args *args = a;
    RpcServer *server = find_server(ctx, args->srv.name, error);
    if (!server)
        return FALSE;
    static const char *const names[] = {"nclients_max", "nclients_unauth_max", NULL};
    gint64 v[2];
    if (!params_read_uints(args->params.params_val, args->params.params_len, names, v, error) ||
        !rpc_server_set_client_limits(server, v[0], v[1], error))
        return FALSE;
    RpcServerClientStats now;
    rpc_server_get_client_stats(server, &now);
    FERRY_INFO("%s: client limits of server '%s' set by virt-admin: nclients_max %u, "
               "nclients_unauth_max %u",
               rpc_server_client_get_peer(ctx->client), args->srv.name, now.max_clients,
               now.max_anonymous_clients);
    return TRUE;
}

/* ---- clients ---- */

static gboolean h_list_clients(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_server_list_clients_args *args = a;
    admin_server_list_clients_ret *ret = r;
    RpcServer *server = find_server(ctx, args->srv.name, error);
    if (!server)
        return FALSE;
    g_autoptr(GPtrArray) clients = rpc_server_list_clients(server);
    if (clients->len > (guint)ADMIN_CLIENT_LIST_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "%u clients are too many to list in one reply (at most %d)", clients->len,
                    ADMIN_CLIENT_LIST_MAX);
        return FALSE;
    }
    if (args->need_results) {
        ret->clients.clients_len = clients->len;
        ret->clients.clients_val = g_new0(admin_nonnull_client, MAX(clients->len, 1));
        for (guint i = 0; i < clients->len; i++)
            make_client(args->srv.name, clients->pdata[i], &ret->clients.clients_val[i]);
    }
    ret->ret = clients->len;
    return TRUE;
}

static gboolean h_lookup_client(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_server_lookup_client_args *args = a;
    admin_nonnull_client wanted = {.srv = args->srv, .id = args->id};
    g_autoptr(RpcServerClient) client = find_client(ctx, &wanted, error);
    if (!client)
        return FALSE;
    make_client(args->srv.name, client, &((admin_server_lookup_client_ret *)r)->clnt);
    return TRUE;
}

static void add_unix_identity(GArray *list, const RpcTransport *t)
{
    if (t->peer_uid >= 0) {
        param_int(list, "unix_user_id", (int)t->peer_uid);
        struct passwd pw, *found = NULL;
        char buf[4096];
        if (getpwuid_r((uid_t)t->peer_uid, &pw, buf, sizeof(buf), &found) == 0 && found)
            param_string(list, "unix_user_name", found->pw_name);
    }
    if (t->peer_gid >= 0) {
        param_int(list, "unix_group_id", (int)t->peer_gid);
        struct group gr, *found = NULL;
        char buf[4096];
        if (getgrgid_r((gid_t)t->peer_gid, &gr, buf, sizeof(buf), &found) == 0 && found)
            param_string(list, "unix_group_name", found->gr_name);
    }
    if (t->peer_pid >= 0)
        param_int(list, "unix_process_id", (int)t->peer_pid);
}

/* What libvirtd reports of a client: its access, who it authenticated as,
 * and where it is: the UNIX peer's credentials, or the network peer's
 * address and certificate. */
static gboolean h_client_info(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_client_get_info_args *args = a;
    admin_client_get_info_ret *ret = r;
    g_autoptr(RpcServerClient) client = find_client(ctx, &args->clnt, error);
    if (!client)
        return FALSE;
    GArray *list = g_array_new(FALSE, TRUE, sizeof(admin_typed_param));
    param_bool(list, "readonly", rpc_server_client_is_readonly(client));
    g_autofree char *user = rpc_server_client_dup_sasl_username(client);
    if (user)
        param_string(list, "sasl_user_name", user);
    const RpcTransport *t = rpc_server_client_get_transport(client);
    if (rpc_server_client_get_transport_kind(client) == RPC_SERVER_TRANSPORT_UNIX) {
        add_unix_identity(list, t);
    } else {
        param_string(list, "sock_addr", t->peer);
        const char *dn = rpc_server_client_get_x509_dname(client);
        if (dn)
            param_string(list, "tls_x509_dname", dn);
    }
    params_steal(list, &ret->params.params_val, &ret->params.params_len);
    return TRUE;
}

static gboolean h_client_close(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_client_close_args *args = a;
    g_autoptr(RpcServerClient) client = find_client(ctx, &args->clnt, error);
    if (!client)
        return FALSE;
    FERRY_INFO("%s: disconnecting client %" G_GUINT64_FORMAT " (%s) of server '%s' at "
               "virt-admin's request",
               rpc_server_client_get_peer(ctx->client), (guint64)args->clnt.id,
               rpc_server_client_get_peer(client), args->clnt.srv.name);
    rpc_server_client_close(client);
    return TRUE;
}

/* ---- logging ---- */

static gboolean h_get_log_outputs(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_connect_get_logging_outputs_ret *ret = r;
    guint n = 0;
    ret->outputs = ferry_log_get_outputs(&n);
    ret->noutputs = n;
    return TRUE;
}

static gboolean h_get_log_filters(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_connect_get_logging_filters_ret *ret = r;
    guint n = 0;
    g_autofree char *filters = ferry_log_get_filters(&n);
    if (n > 0) {
        ret->filters = g_new(admin_nonnull_string, 1);
        *ret->filters = g_steal_pointer(&filters);
    }
    ret->nfilters = n;
    return TRUE;
}

/* A refused setting is the caller's mistake, not a config file's: the same
 * message, as an invalid argument; a file that cannot be opened stays a
 * system error. */
static gboolean log_setting_refused(GError *local, GError **error)
{
    int code = local->code == FERRY_ERR_CONF_SYNTAX ? FERRY_ERR_INVALID_ARG : local->code;
    g_set_error_literal(error, FERRY_ERROR, code, local->message);
    g_error_free(local);
    return FALSE;
}

static gboolean h_set_log_outputs(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_connect_set_logging_outputs_args *args = a;
    const char *spec = args->outputs ? *args->outputs : "";
    GError *local = NULL;
    g_autofree char *old = ferry_log_get_outputs(&(guint){0});
    if (!ferry_log_set_outputs(spec, &local))
        return log_setting_refused(local, error);
    g_autofree char *now = ferry_log_get_outputs(&(guint){0});
    FERRY_WARN("%s: log outputs changed by virt-admin from \"%s\" to \"%s\"",
               rpc_server_client_get_peer(ctx->client), old, now);
    return TRUE;
}

static gboolean h_set_log_filters(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_connect_set_logging_filters_args *args = a;
    const char *spec = args->filters ? *args->filters : "";
    GError *local = NULL;
    g_autofree char *old = ferry_log_get_filters(&(guint){0});
    if (!ferry_log_set_filters(spec, &local))
        return log_setting_refused(local, error);
    g_autofree char *now = ferry_log_get_filters(&(guint){0});
    FERRY_WARN("%s: log filters changed by virt-admin from \"%s\" to \"%s\"",
               rpc_server_client_get_peer(ctx->client), old, now);
    return TRUE;
}

/* ---- the daemon's life ---- */

static gboolean h_set_daemon_timeout(AdminContext *ctx, void *a, void *r, GError **error)
{
    admin_connect_set_daemon_timeout_args *args = a;
    if (!ctx->daemon->set_timeout) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT,
                    "this daemon has no idle timeout to set (CONNECT_SET_DAEMON_TIMEOUT)");
        return FALSE;
    }
    return ctx->daemon->set_timeout(args->timeout, ctx->daemon->set_timeout_data, error);
}

/* ---- the table ---- */

#define X(t) (xdrproc_t)xdr_##t, sizeof(t)
#define NONE RPC_XDR_VOID, 0

static const AdminProcedure procedures[] = {
    {ADMIN_PROC_CONNECT_OPEN, "CONNECT_OPEN", "connect", X(admin_connect_open_args), NONE,
     h_connect_open, NULL},
    {ADMIN_PROC_CONNECT_CLOSE, "CONNECT_CLOSE", "quit", NONE, NONE, h_connect_close, NULL},
    {ADMIN_PROC_CONNECT_GET_LIB_VERSION, "CONNECT_GET_LIB_VERSION", "version", NONE,
     X(admin_connect_get_lib_version_ret), h_get_lib_version, NULL},
    {ADMIN_PROC_CONNECT_LIST_SERVERS, "CONNECT_LIST_SERVERS", "server-list",
     X(admin_connect_list_servers_args), X(admin_connect_list_servers_ret), h_list_servers, NULL},
    {ADMIN_PROC_CONNECT_LOOKUP_SERVER, "CONNECT_LOOKUP_SERVER", "server-*",
     X(admin_connect_lookup_server_args), X(admin_connect_lookup_server_ret), h_lookup_server,
     NULL},
    {ADMIN_PROC_SERVER_GET_THREADPOOL_PARAMETERS, "SERVER_GET_THREADPOOL_PARAMETERS",
     "server-threadpool-info", X(admin_server_get_threadpool_parameters_args),
     X(admin_server_get_threadpool_parameters_ret), h_get_threadpool, NULL},
    {ADMIN_PROC_SERVER_SET_THREADPOOL_PARAMETERS, "SERVER_SET_THREADPOOL_PARAMETERS",
     "server-threadpool-set", X(admin_server_set_threadpool_parameters_args), NONE,
     h_set_threadpool, NULL},
    {ADMIN_PROC_SERVER_LIST_CLIENTS, "SERVER_LIST_CLIENTS", "client-list",
     X(admin_server_list_clients_args), X(admin_server_list_clients_ret), h_list_clients, NULL},
    {ADMIN_PROC_SERVER_LOOKUP_CLIENT, "SERVER_LOOKUP_CLIENT", "client-info",
     X(admin_server_lookup_client_args), X(admin_server_lookup_client_ret), h_lookup_client,
     NULL},
    {ADMIN_PROC_CLIENT_GET_INFO, "CLIENT_GET_INFO", "client-info",
     X(admin_client_get_info_args), X(admin_client_get_info_ret), h_client_info, NULL},
    {ADMIN_PROC_CLIENT_CLOSE, "CLIENT_CLOSE", "client-disconnect", X(admin_client_close_args),
     NONE, h_client_close, NULL},
    {ADMIN_PROC_SERVER_GET_CLIENT_LIMITS, "SERVER_GET_CLIENT_LIMITS", "server-clients-info",
     X(admin_server_get_client_limits_args), X(admin_server_get_client_limits_ret),
     h_get_client_limits, NULL},
    {ADMIN_PROC_SERVER_SET_CLIENT_LIMITS, "SERVER_SET_CLIENT_LIMITS", "server-clients-set",
     X(admin_server_set_client_limits_args), NONE, h_set_client_limits, NULL},
    {ADMIN_PROC_CONNECT_GET_LOGGING_OUTPUTS, "CONNECT_GET_LOGGING_OUTPUTS", "daemon-log-outputs",
     X(admin_connect_get_logging_outputs_args), X(admin_connect_get_logging_outputs_ret),
     h_get_log_outputs, NULL},
    {ADMIN_PROC_CONNECT_GET_LOGGING_FILTERS, "CONNECT_GET_LOGGING_FILTERS", "daemon-log-filters",
     X(admin_connect_get_logging_filters_args), X(admin_connect_get_logging_filters_ret),
     h_get_log_filters, NULL},
    {ADMIN_PROC_CONNECT_SET_LOGGING_OUTPUTS, "CONNECT_SET_LOGGING_OUTPUTS", "daemon-log-outputs",
     X(admin_connect_set_logging_outputs_args), NONE, h_set_log_outputs, NULL},
    {ADMIN_PROC_CONNECT_SET_LOGGING_FILTERS, "CONNECT_SET_LOGGING_FILTERS", "daemon-log-filters",
     X(admin_connect_set_logging_filters_args), NONE, h_set_log_filters, NULL},
    {ADMIN_PROC_SERVER_UPDATE_TLS_FILES, "SERVER_UPDATE_TLS_FILES", "server-update-tls",
     X(admin_server_update_tls_files_args), NONE, NULL,
     "ferryd reads its TLS files when it starts: restart it to load new ones"},
    {ADMIN_PROC_CONNECT_SET_DAEMON_TIMEOUT, "CONNECT_SET_DAEMON_TIMEOUT", "daemon-timeout",
     X(admin_connect_set_daemon_timeout_args), NONE, h_set_daemon_timeout, NULL},
};

/* Calls carrying flags; the others take none. */
static guint call_flags(int proc, void *args)
{
    switch (proc) {
    case ADMIN_PROC_CONNECT_OPEN:
        return ((admin_connect_open_args *)args)->flags;
    case ADMIN_PROC_CONNECT_LIST_SERVERS:
        return ((admin_connect_list_servers_args *)args)->flags;
    case ADMIN_PROC_CONNECT_LOOKUP_SERVER:
        return ((admin_connect_lookup_server_args *)args)->flags;
    case ADMIN_PROC_SERVER_GET_THREADPOOL_PARAMETERS:
        return ((admin_server_get_threadpool_parameters_args *)args)->flags;
    case ADMIN_PROC_SERVER_SET_THREADPOOL_PARAMETERS:
        return ((admin_server_set_threadpool_parameters_args *)args)->flags;
    case ADMIN_PROC_SERVER_LIST_CLIENTS:
        return ((admin_server_list_clients_args *)args)->flags;
    case ADMIN_PROC_SERVER_LOOKUP_CLIENT:
        return ((admin_server_lookup_client_args *)args)->flags;
    case ADMIN_PROC_CLIENT_GET_INFO:
        return ((admin_client_get_info_args *)args)->flags;
    case ADMIN_PROC_CLIENT_CLOSE:
        return ((admin_client_close_args *)args)->flags;
    case ADMIN_PROC_SERVER_GET_CLIENT_LIMITS:
        return ((admin_server_get_client_limits_args *)args)->flags;
    case ADMIN_PROC_SERVER_SET_CLIENT_LIMITS:
        return ((admin_server_set_client_limits_args *)args)->flags;
    case ADMIN_PROC_CONNECT_GET_LOGGING_OUTPUTS:
        return ((admin_connect_get_logging_outputs_args *)args)->flags;
    case ADMIN_PROC_CONNECT_GET_LOGGING_FILTERS:
        return ((admin_connect_get_logging_filters_args *)args)->flags;
    case ADMIN_PROC_CONNECT_SET_LOGGING_OUTPUTS:
        return ((admin_connect_set_logging_outputs_args *)args)->flags;
    case ADMIN_PROC_CONNECT_SET_LOGGING_FILTERS:
        return ((admin_connect_set_logging_filters_args *)args)->flags;
    case ADMIN_PROC_CONNECT_SET_DAEMON_TIMEOUT:
        return ((admin_connect_set_daemon_timeout_args *)args)->flags;
    default:
        return 0;
    }
}

static const AdminProcedure *find_procedure(int proc)
{
    for (guint i = 0; i < G_N_ELEMENTS(procedures); i++)
        if (procedures[i].proc == proc)
            return &procedures[i];
    return NULL;
}

gboolean admin_dispatch_has_procedure(int proc)
{
    const AdminProcedure *p = find_procedure(proc);
    return p && p->handler;
}

/* ---- dispatch ---- */

static void session_init(RpcServerClient *client, gpointer data)
{
    AdminSession *s = g_new0(AdminSession, 1);
    const RpcTransport *t = rpc_server_client_get_transport(client);
    s->peer_uid = t->peer_uid;
    s->peer_pid = t->peer_pid;
    s->denied = !t->is_unix || t->peer_uid != (gint64)geteuid();
    if (s->denied)
        FERRY_WARN_LIMITED("refusing admin client %s: it runs as uid %" G_GINT64_FORMAT
                           ", not as the daemon's uid %u",
                           rpc_server_client_get_peer(client), s->peer_uid, (guint)geteuid());
    rpc_server_client_set_private(client, s, g_free);
}

static gboolean run_call(AdminContext *ctx, const AdminProcedure *p, RpcMessage **reply,
                         GError **error)
{
    g_autofree void *args = g_malloc0(MAX(p->args_size, 1));
    g_autofree void *ret = g_malloc0(MAX(p->ret_size, 1));
    if (!rpc_message_decode(ctx->call, p->args_filter, args, error))
        return FALSE;
    gboolean ok = check_flags(ctx, p, call_flags(p->proc, args), error) &&
                  p->handler(ctx, args, ret, error);
    xdr_free(p->args_filter, args);
    if (ok) {
        *reply = rpc_message_new(256);
        (*reply)->header = ctx->call->header;
        (*reply)->header.type = RPC_REPLY;
        (*reply)->header.status = RPC_OK;
        if (!rpc_message_encode(*reply, p->ret_filter, ret, error)) {
            g_clear_pointer(reply, rpc_message_free);
            ok = FALSE;
        }
    }
    xdr_free(p->ret_filter, ret);
    return ok;
}

static void admin_call(RpcServerClient *client, RpcMessage *call, gpointer data)
{
    g_autoptr(RpcMessage) msg = call;
    g_autoptr(GError) error = NULL;
    AdminSession *s = rpc_server_client_get_private(client);
    AdminContext ctx = {.client = client, .daemon = data, .call = msg};
    const AdminProcedure *p = find_procedure(msg->header.proc);
    RpcMessage *reply = NULL;

    if (s->denied) {
        g_set_error(&error, FERRY_ERROR, FERRY_ERR_OPERATION_DENIED,
                    "disallowing admin client (pid %" G_GINT64_FORMAT ", uid %" G_GINT64_FORMAT
                    "): only uid %u may use the admin socket",
                    s->peer_pid, s->peer_uid, (guint)geteuid());
        /* Closed once it says goodbye: closing at once would kill virt-admin
         * with SIGPIPE as it says so, before it shows this error. */
        ctx.close_after_reply = msg->header.proc == ADMIN_PROC_CONNECT_CLOSE;
    } else if (!p) {
        g_set_error(&error, FERRY_ERROR, FERRY_ERR_RPC,
                    "unknown procedure: %d (of the admin program)", msg->header.proc);
    } else if (!p->handler) {
        g_set_error(&error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT,
                    "ferryd does not implement the admin procedure %s (virt-admin %s): %s",
                    p->name, p->command, p->why_not);
    } else {
        run_call(&ctx, p, &reply, &error);
    }

    if (!reply) {
        if (!error)
            g_set_error(&error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                        "admin procedure %d failed without saying why", msg->header.proc);
        FERRY_DEBUG("%s: admin %s (proc %d) failed: %s", rpc_server_client_get_peer(client),
                    p ? p->name : "?", msg->header.proc, error->message);
        reply = rpc_message_new_error(&msg->header, RPC_REPLY, error);
    }
    rpc_server_client_reply(client, reply);
    if (ctx.close_after_reply)
        rpc_server_client_close_after_flush(client);
}

void admin_dispatch_register(RpcServer *admin_server, AdminDaemon *daemon)
{
    RpcServerProgram prog = {
        .prog = ADMIN_PROGRAM,
        .vers = ADMIN_PROTOCOL_VERSION,
        .call = admin_call,
        .data = daemon,
    };
    rpc_server_add_program(admin_server, &prog);
    rpc_server_set_client_init(admin_server, session_init, NULL);
}
