/* The REMOTE program's procedure table and handlers. */
#include "remote/remote-dispatch.h"

#include <string.h>
#include <unistd.h>

#include "driver/driver.h"
#include "remote/remote-auth.h"
#include "driver/migration-record.h"
#include "remote/remote-convert.h"
#include "remote/remote-migration-peer.h"
#include "remote/remote-procedure.h"
#include "remote/remote-uri.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-sasl.h"
#include "rpc/rpc-socket.h"
#include "rpc/rpc-tls.h"
#include "tunnel/tunnel-resume.h"
#include "tunnel/tunnel-router.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "remote.dispatch"

#define FEATURE_PROGRAM_KEEPALIVE 10
#define EVENT_ID_LIFECYCLE 0
#define EVENT_ID_MIGRATION_ITERATION 20
#define EVENT_ID_MAX 64
/* Event callbacks one client may hold at once. libvirt sets no number; a
 * client registering without end would grow the daemon without end, and
 * virsh event --all needs one per event ID, so this leaves ample room. */
#define MAX_EVENT_CALLBACKS 1024
#define CONNECT_RO 1 /* CONNECT_OPEN flags bit: read-only */
#define LIB_VERSION 9000000ULL /* the libvirt protocol level we speak */

/* One registered event callback of a client. */
typedef struct {
    int callback_id;
    int event_id;
    gboolean legacy;     /* registered with 167: events go out as 107 */
    gboolean has_filter; /* only events of this domain */
    guint8 uuid[16];
} RemoteEventCallback;

/* Per-client state. Lifetime: owned by the RpcServerClient (its private
 * data); the driver listener is removed by the close hook, before it dies.
 * A call queued before the close may still run after the hook: `closed`
 * makes it register nothing. */
struct RemoteSession {
    GMutex lock;
    /* Serialises adding the driver listener against the close hook removing
     * it, so exactly one listener exists and none outlives the session. Never
     * taken while an event is delivered (that holds the driver's event lock,
     * then `lock`), so the order listen_lock -> event lock cannot deadlock. */
    GMutex listen_lock;
    gboolean closed;
    RpcServerClient *client; /* not a reference: we live inside it */
    gboolean authenticated;
    gboolean readonly;
    RemoteAuth *auth; /* SASL sockets only */
    Driver *driver;
    GArray *callbacks; /* RemoteEventCallback */
    int next_callback_id;
    guint listener_id;
    Driver *listener_driver;
    TunnelRouter *router; /* streams opened by this client's calls */
    guint64 client_id;    /* names the client to drivers (driver_client_current) */
};

/* ---- sessions ---- */

static void session_free(gpointer data)
{
    RemoteSession *s = data;
    tunnel_router_free(s->router);
    remote_auth_free(s->auth);
    g_array_unref(s->callbacks);
    g_mutex_clear(&s->lock);
    g_mutex_clear(&s->listen_lock);
    g_free(s);
}

static void session_on_close(RpcServerClient *client, gpointer priv)
{
    RemoteSession *s = priv;
    g_mutex_lock(&s->listen_lock);
    g_mutex_lock(&s->lock);
    s->closed = TRUE;
    Driver *drv = s->listener_driver;
    guint id = s->listener_id;
    s->listener_driver = NULL;
    s->listener_id = 0;
    g_mutex_unlock(&s->lock);
    if (drv)
        driver_event_unlisten(drv, id);
    g_mutex_unlock(&s->listen_lock);
    g_autoptr(GError) why = g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                                        "the client %s disconnected",
                                        rpc_server_client_get_peer(client));
    tunnel_router_connection_closed(s->router, why);
    driver_client_closed(s->client_id);
}

static void session_init(RpcServerClient *client, gpointer data)
{
    RemoteSession *s = g_new0(RemoteSession, 1);
    g_mutex_init(&s->lock);
    g_mutex_init(&s->listen_lock);
    s->client = client;
    s->authenticated = rpc_server_client_get_auth_type(client) == REMOTE_AUTH_NONE;
    s->readonly = rpc_server_client_is_readonly(client);
    if (rpc_server_client_get_auth_type(client) == REMOTE_AUTH_SASL)
        s->auth = remote_auth_new();
    s->callbacks = g_array_new(FALSE, FALSE, sizeof(RemoteEventCallback));
    s->next_callback_id = 1;
    s->router = tunnel_router_new();
    static guint64 next_client_id;
    s->client_id = __atomic_add_fetch(&next_client_id, 1, __ATOMIC_RELAXED);
    rpc_server_client_set_private(client, s, session_free);
    rpc_server_client_set_close_hook(client, session_on_close);
}

/* ---- events ---- */

static void send_event_message(RemoteSession *s, int proc, xdrproc_t filter, void *data)
{
    RpcMessage *msg = rpc_message_new(256);
    msg->header = (RpcHeader){.prog = REMOTE_PROGRAM, .vers = REMOTE_PROTOCOL_VERSION,
                              .proc = proc, .type = RPC_MESSAGE, .serial = 0, .status = RPC_OK};
    g_autoptr(GError) error = NULL;
    if (!rpc_message_encode(msg, filter, data, &error)) {
        FERRY_WARN("cannot encode event %d: %s", proc, error->message);
        rpc_message_free(msg);
        return;
    }
    rpc_server_client_send(s->client, msg);
}

static void session_on_lifecycle(const DriverDomain *dom, int event, int detail, gpointer data)
{
    RemoteSession *s = data;
    remote_nonnull_domain rdom;
    remote_domain_from_driver(dom, &rdom);

    g_mutex_lock(&s->lock);
    for (guint i = 0; i < s->callbacks->len; i++) {
        RemoteEventCallback *cb = &g_array_index(s->callbacks, RemoteEventCallback, i);
        if (event == DRIVER_EVENT_MIGRATION_ITERATION) {
            /* callbacks registered with 316 only: there is no legacy form */
            if (cb->event_id != EVENT_ID_MIGRATION_ITERATION || cb->legacy ||
                (cb->has_filter && memcmp(cb->uuid, dom->uuid, 16) != 0))
                continue;
            remote_domain_event_callback_migration_iteration_msg m = {
                .callbackID = cb->callback_id, .dom = rdom, .iteration = detail};
            send_event_message(
                s, REMOTE_PROC_DOMAIN_EVENT_CALLBACK_MIGRATION_ITERATION,
                (xdrproc_t)xdr_remote_domain_event_callback_migration_iteration_msg, &m);
            continue;
        }
        if (cb->event_id != EVENT_ID_LIFECYCLE)
            continue;
        if (cb->has_filter && memcmp(cb->uuid, dom->uuid, 16) != 0)
            continue;
        if (cb->legacy) {
            remote_domain_event_lifecycle_msg m = {.dom = rdom, .event = event, .detail = detail};
            send_event_message(s, REMOTE_PROC_DOMAIN_EVENT_LIFECYCLE,
                               (xdrproc_t)xdr_remote_domain_event_lifecycle_msg, &m);
        } else {
            remote_domain_event_callback_lifecycle_msg m = {
                .callbackID = cb->callback_id,
                .msg = {.dom = rdom, .event = event, .detail = detail}};
            send_event_message(s, REMOTE_PROC_DOMAIN_EVENT_CALLBACK_LIFECYCLE,
                               (xdrproc_t)xdr_remote_domain_event_callback_lifecycle_msg, &m);
        }
    }
    g_mutex_unlock(&s->lock);
    g_free(rdom.name);
}

/* Adds a callback (under s->lock); -1 with an error when refused. */
static int session_add_callback_locked(RemoteSession *s, int event_id, gboolean legacy,
                                       const guint8 *uuid, GError **error)
{
    if (s->closed) {
        /* A call queued before the client went away: no listener for a
         * session that is about to be freed. */
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "the connection is closing: no event callback registered");
        return -1;
    }
    for (guint i = 0; legacy && i < s->callbacks->len; i++) {
        RemoteEventCallback *cb = &g_array_index(s->callbacks, RemoteEventCallback, i);
        if (cb->legacy && cb->event_id == event_id) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "domain event %d already registered", event_id);
            return -1;
        }
    }
    if (s->callbacks->len >= MAX_EVENT_CALLBACKS) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "too many event callbacks on this connection: the limit is %d, "
                    "deregister one first",
                    MAX_EVENT_CALLBACKS);
        return -1;
    }
    RemoteEventCallback cb = {.callback_id = s->next_callback_id++, .event_id = event_id,
                              .legacy = legacy, .has_filter = uuid != NULL};
    if (uuid)
        memcpy(cb.uuid, uuid, 16);
    g_array_append_val(s->callbacks, cb);
    return cb.callback_id;
}

/* Adds a callback; starts listening to the driver on the first one. */
static int session_add_callback(RemoteContext *ctx, int event_id, gboolean legacy,
                                const guint8 *uuid, GError **error)
{
    if (event_id < 0 || event_id >= EVENT_ID_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "unsupported event ID %d",
                    event_id);
        return -1;
    }
    RemoteSession *s = ctx->session;
    /* Decided and done under listen_lock: two registrations cannot both
     * add a listener, and the close hook cannot run in between. */
    g_mutex_lock(&s->listen_lock);
    g_mutex_lock(&s->lock);
    int id = session_add_callback_locked(s, event_id, legacy, uuid, error);
    gboolean need_listener = id >= 0 && s->listener_id == 0;
    g_mutex_unlock(&s->lock);
    if (need_listener) {
        guint lid = driver_event_listen(ctx->drv, session_on_lifecycle, s);
        g_mutex_lock(&s->lock);
        s->listener_id = lid;
        s->listener_driver = ctx->drv;
        g_mutex_unlock(&s->lock);
    }
    g_mutex_unlock(&s->listen_lock);
    return id;
}

static gboolean session_remove_callback(RemoteSession *s, gboolean legacy, int id,
                                        GError **error)
{
    g_mutex_lock(&s->lock);
    for (guint i = 0; i < s->callbacks->len; i++) {
        RemoteEventCallback *cb = &g_array_index(s->callbacks, RemoteEventCallback, i);
        if (legacy ? (cb->legacy && cb->event_id == id) : (!cb->legacy && cb->callback_id == id)) {
            g_array_remove_index(s->callbacks, i);
            g_mutex_unlock(&s->lock);
            return TRUE;
        }
    }
    g_mutex_unlock(&s->lock);
    g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                legacy ? "domain event %d not registered" : "no domain event callback with id %d",
                id);
    return FALSE;
}

/* ---- helpers ---- */

static gboolean not_supported(RemoteContext *ctx, GError **error)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT, "procedure %d in the %s driver",
                ctx->call->header.proc, ctx->drv->ops->name);
    return FALSE;
}

#define NEED_OP(op)                                                                            \
    do {                                                                                       \
        if (!ctx->drv->ops->op)                                                                \
            return not_supported(ctx, error);                                                  \
    } while (0)

static char *strdup_malloc(const char *s)
{
    return g_strdup(s ? s : "");
}

/* ---- connection procedures ---- */

static gboolean h_auth_list(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_auth_list_ret *ret = r;
    ret->types.types_len = 1;
    ret->types.types_val = g_new(remote_auth_type, 1);
    ret->types.types_val[0] = rpc_server_client_get_auth_type(ctx->client);
    return TRUE;
}

static gboolean h_auth_sasl_init(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return remote_auth_sasl_init(ctx->session->auth, ctx->client, r, &ctx->auth, error);
}

static gboolean h_auth_sasl_start(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return remote_auth_sasl_start(ctx->session->auth, ctx->client, a, r, &ctx->auth, error);
}

static gboolean h_auth_sasl_step(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return remote_auth_sasl_step(ctx->session->auth, ctx->client, a, r, &ctx->auth, error);
}

static gboolean h_connect_open(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_connect_open_args *args = a;
    const char *name = args->name ? *args->name : NULL;
    Driver *drv = driver_registry_open(name, error);
    if (!drv)
        return FALSE;
    g_mutex_lock(&ctx->session->lock);
    ctx->session->driver = drv;
    /* Only bit 0 (read-only) means anything to a daemon; the rest is client-internal. */
    if (args->flags & CONNECT_RO) {
        ctx->session->readonly = TRUE;
        rpc_server_client_set_readonly(ctx->client); /* as virt-admin client-info shows it */
    }
    g_mutex_unlock(&ctx->session->lock);
    FERRY_DEBUG("%s opened '%s'%s", rpc_server_client_get_peer(ctx->client), name ? name : "",
                (args->flags & CONNECT_RO) ? " read-only" : "");
    return TRUE;
}

static gboolean h_connect_close(RemoteContext *ctx, void *a, void *r, GError **error)
{
    g_mutex_lock(&ctx->session->lock);
    ctx->session->driver = NULL;
    g_mutex_unlock(&ctx->session->lock);
    return TRUE;
}

static gboolean h_supports_feature(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_connect_supports_feature_args *args = a;
    remote_connect_supports_feature_ret *ret = r;
    switch (args->feature) {
    case FEATURE_PROGRAM_KEEPALIVE:
        /* Asking is how a client says it answers pings: only then do we send them. */
        rpc_server_client_start_keepalive(ctx->client);
        ret->supported = 1;
        break;
    case 3:  /* MIGRATION_V2 */
    case 4:  /* MIGRATION_P2P */
    case 6:  /* MIGRATION_V3 */
    case 12: /* MIGRATION_OFFLINE */
    case 13: /* MIGRATION_PARAMS */
        /* ctx->drv: the session's driver as check_access read it, under the
         * session lock (CONNECT_OPEN/CLOSE may change it meanwhile). */
        ret->supported = ctx->drv && ctx->drv->ops->migrate_perform ? 1 : 0;
        break;
    case 9:  /* TYPED_PARAM_STRING */
    case 11: /* XML_MIGRATABLE */
    case 14: /* REMOTE_EVENT_CALLBACK */
    case 15: /* REMOTE_CLOSE_CALLBACK */
    case 16: /* NETWORK_UPDATE_HAS_CORRECT_ORDER */
        ret->supported = 1;
        break;
    default:
        ret->supported = 0;
        break;
    }
    return TRUE;
}

static gboolean h_void_ok(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return TRUE;
}

static gboolean h_get_type(RemoteContext *ctx, void *a, void *r, GError **error)
{
    ((remote_connect_get_type_ret *)r)->type = strdup_malloc(ctx->drv->ops->type);
    return TRUE;
}

static gboolean h_get_version(RemoteContext *ctx, void *a, void *r, GError **error)
{
    ((remote_connect_get_version_ret *)r)->hv_ver = ctx->drv->ops->version;
    return TRUE;
}

static gboolean h_get_lib_version(RemoteContext *ctx, void *a, void *r, GError **error)
{
    ((remote_connect_get_lib_version_ret *)r)->lib_ver = LIB_VERSION;
    return TRUE;
}

static gboolean h_get_hostname(RemoteContext *ctx, void *a, void *r, GError **error)
{
    ((remote_connect_get_hostname_ret *)r)->hostname = driver_node_get_hostname();
    return TRUE;
}

static gboolean h_get_uri(RemoteContext *ctx, void *a, void *r, GError **error)
{
    ((remote_connect_get_uri_ret *)r)->uri = strdup_malloc(ctx->drv->ops->canonical_uri);
    return TRUE;
}

static gboolean h_get_capabilities(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_capabilities);
    char *caps = ctx->drv->ops->get_capabilities(ctx->drv, error);
    ((remote_connect_get_capabilities_ret *)r)->capabilities = caps;
    return caps != NULL;
}

static gboolean h_get_sysinfo(RemoteContext *ctx, void *a, void *r, GError **error)
{
    ((remote_connect_get_sysinfo_ret *)r)->sysinfo =
        g_strdup("<sysinfo type='smbios'>\n  <system>\n    <entry name='manufacturer'>ferry"
                 "</entry>\n    <entry name='product'>ferryd</entry>\n  </system>\n</sysinfo>\n");
    return TRUE;
}

static gboolean h_is_secure(RemoteContext *ctx, void *a, void *r, GError **error)
{
    RpcTransport *t = rpc_server_client_get_transport(ctx->client);
    ((remote_connect_is_secure_ret *)r)->secure = t->is_secure ? 1 : 0;
    return TRUE;
}

static gboolean h_node_get_info(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_node_get_info_ret *ret = r;
    DriverNodeInfo info;
    if (!driver_node_get_info(&info, error))
        return FALSE;
    memset(ret->model, 0, sizeof(ret->model));
    memcpy(ret->model, info.model, MIN(sizeof(ret->model), sizeof(info.model)));
    ret->memory = info.memory_kib;
    ret->cpus = info.cpus;
    ret->mhz = info.mhz;
    ret->nodes = info.nodes;
    ret->sockets = info.sockets;
    ret->cores = info.cores;
    ret->threads = info.threads;
    return TRUE;
}

static gboolean h_node_get_free_memory(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return driver_node_get_free_memory(&((remote_node_get_free_memory_ret *)r)->freeMem, error);
}

static gboolean h_node_get_security_model(RemoteContext *ctx, void *a, void *r, GError **error)
{
    /* Empty model and doi: "no security driver", virsh then skips those lines. */
    return TRUE;
}

/* ---- domain lists ---- */

static GPtrArray *list_domains(RemoteContext *ctx, guint flags, GError **error)
{
    if (!ctx->drv->ops->list_all_domains) {
        not_supported(ctx, error);
        return NULL;
    }
    return ctx->drv->ops->list_all_domains(ctx->drv, flags, error);
}

#define LIST_ACTIVE 1
#define LIST_INACTIVE 2

static gboolean h_list_all_domains(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_connect_list_all_domains_args *args = a;
    remote_connect_list_all_domains_ret *ret = r;
    g_autoptr(GPtrArray) doms = list_domains(ctx, args->flags, error);
    if (!doms)
        return FALSE;
    if (doms->len > REMOTE_DOMAIN_LIST_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "too many domains (%u) for one reply",
                    doms->len);
        return FALSE;
    }
    ret->ret = doms->len;
    if (args->need_results) {
        ret->domains.domains_len = doms->len;
        ret->domains.domains_val = g_new0(remote_nonnull_domain, MAX(doms->len, 1));
        for (guint i = 0; i < doms->len; i++)
            remote_domain_from_driver(doms->pdata[i], &ret->domains.domains_val[i]);
    }
    return TRUE;
}

static gboolean h_num_of_domains(RemoteContext *ctx, void *a, void *r, GError **error)
{
    g_autoptr(GPtrArray) doms = list_domains(ctx, LIST_ACTIVE, error);
    if (!doms)
        return FALSE;
    ((remote_connect_num_of_domains_ret *)r)->num = doms->len;
    return TRUE;
}

static gboolean h_num_of_defined_domains(RemoteContext *ctx, void *a, void *r, GError **error)
{
    g_autoptr(GPtrArray) doms = list_domains(ctx, LIST_INACTIVE, error);
    if (!doms)
        return FALSE;
    ((remote_connect_num_of_defined_domains_ret *)r)->num = doms->len;
    return TRUE;
}

gboolean remote_check_list_max(int max, GError **error)
{
    if (max < 0 || max > REMOTE_DOMAIN_LIST_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                    "requested list size %d is out of range 0..%d", max, REMOTE_DOMAIN_LIST_MAX);
        return FALSE;
    }
    return TRUE;
}

static gboolean h_list_domains(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_connect_list_domains_args *args = a;
    remote_connect_list_domains_ret *ret = r;
    if (!remote_check_list_max(args->maxids, error))
        return FALSE;
    g_autoptr(GPtrArray) doms = list_domains(ctx, LIST_ACTIVE, error);
    if (!doms)
        return FALSE;
    guint n = MIN(doms->len, (guint)args->maxids);
    ret->ids.ids_len = n;
    ret->ids.ids_val = g_new0(int, MAX(n, 1));
    for (guint i = 0; i < n; i++)
        ret->ids.ids_val[i] = ((DriverDomain *)doms->pdata[i])->id;
    return TRUE;
}

static gboolean h_list_defined_domains(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_connect_list_defined_domains_args *args = a;
    remote_connect_list_defined_domains_ret *ret = r;
    if (!remote_check_list_max(args->maxnames, error))
        return FALSE;
    g_autoptr(GPtrArray) doms = list_domains(ctx, LIST_INACTIVE, error);
    if (!doms)
        return FALSE;
    guint n = MIN(doms->len, (guint)args->maxnames);
    ret->names.names_len = n;
    ret->names.names_val = g_new0(remote_nonnull_string, MAX(n, 1));
    for (guint i = 0; i < n; i++)
        ret->names.names_val[i] = g_strdup(((DriverDomain *)doms->pdata[i])->name);
    return TRUE;
}

static gboolean reply_domain(DriverDomain *dom, remote_nonnull_domain *out)
{
    if (!dom)
        return FALSE;
    remote_domain_from_driver(dom, out);
    driver_domain_free(dom);
    return TRUE;
}

static gboolean h_lookup_by_name(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(lookup_by_name);
    return reply_domain(ctx->drv->ops->lookup_by_name(
                            ctx->drv, ((remote_domain_lookup_by_name_args *)a)->name, error),
                        &((remote_domain_lookup_by_name_ret *)r)->dom);
}

static gboolean h_lookup_by_uuid(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(lookup_by_uuid);
    return reply_domain(
        ctx->drv->ops->lookup_by_uuid(
            ctx->drv, (const guint8 *)((remote_domain_lookup_by_uuid_args *)a)->uuid, error),
        &((remote_domain_lookup_by_uuid_ret *)r)->dom);
}

static gboolean h_lookup_by_id(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(lookup_by_id);
    return reply_domain(
        ctx->drv->ops->lookup_by_id(ctx->drv, ((remote_domain_lookup_by_id_args *)a)->id, error),
        &((remote_domain_lookup_by_id_ret *)r)->dom);
}

/* ---- one domain ---- */

/* The args of every per-domain procedure start with the domain. */
#define ARG_DOMAIN(args_type)                                                                  \
    g_auto(DriverDomain) dom = {0};                                                            \
    remote_domain_to_driver(&((args_type *)a)->dom, &dom)

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(DriverDomain, driver_domain_clear)

static gboolean h_get_state(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_state);
    ARG_DOMAIN(remote_domain_flags_args);
    remote_domain_get_state_ret *ret = r;
    return ctx->drv->ops->get_state(ctx->drv, &dom, &ret->state, &ret->reason, error);
}

static gboolean h_get_info(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_info);
    ARG_DOMAIN(remote_domain_args);
    remote_domain_get_info_ret *ret = r;
    DriverDomainInfo info;
    if (!ctx->drv->ops->get_info(ctx->drv, &dom, &info, error))
        return FALSE;
    ret->state = (u_char)info.state;
    ret->maxMem = info.max_mem_kib;
    ret->memory = info.memory_kib;
    ret->nrVirtCpu = (u_short)info.vcpus;
    ret->cpuTime = info.cpu_time_ns;
    return TRUE;
}

static gboolean h_get_max_memory(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_info);
    ARG_DOMAIN(remote_domain_args);
    DriverDomainInfo info;
    if (!ctx->drv->ops->get_info(ctx->drv, &dom, &info, error))
        return FALSE;
    ((remote_domain_get_max_memory_ret *)r)->memory = info.max_mem_kib;
    return TRUE;
}

#define DOMAIN_XML_SECURE 1 /* VIR_DOMAIN_XML_SECURE: include passwords */

static gboolean h_get_xml_desc(RemoteContext *ctx, void *a, void *r, GError **error)
{
    g_mutex_lock(&ctx->session->lock);
    gboolean readonly = ctx->session->readonly;
    g_mutex_unlock(&ctx->session->lock);
    if ((((remote_domain_flags_args *)a)->flags & DOMAIN_XML_SECURE) && readonly) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_DENIED,
                    "read only access prevents DOMAIN_GET_XML_DESC with VIR_DOMAIN_XML_SECURE");
        return FALSE;
    }
    NEED_OP(get_xml_desc);
    ARG_DOMAIN(remote_domain_flags_args);
    char *xml = ctx->drv->ops->get_xml_desc(ctx->drv, &dom, ((remote_domain_flags_args *)a)->flags,
                                            error);
    ((remote_domain_get_xml_desc_ret *)r)->xml = xml;
    return xml != NULL;
}

static gboolean h_get_os_type(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_os_type);
    ARG_DOMAIN(remote_domain_args);
    char *type = ctx->drv->ops->get_os_type(ctx->drv, &dom, error);
    ((remote_domain_get_os_type_ret *)r)->type = type;
    return type != NULL;
}

#define INT_QUERY(fn, op)                                                                      \
    static gboolean fn(RemoteContext *ctx, void *a, void *r, GError **error)                  \
    {                                                                                          \
        NEED_OP(op);                                                                           \
        ARG_DOMAIN(remote_domain_args);                                                        \
        int v = ctx->drv->ops->op(ctx->drv, &dom, error);                                      \
        ((remote_int_ret *)r)->value = v;                                                      \
        return v >= 0;                                                                         \
    }

INT_QUERY(h_is_active, is_active)
INT_QUERY(h_is_persistent, is_persistent)
INT_QUERY(h_get_autostart, get_autostart)

static gboolean h_is_updated(RemoteContext *ctx, void *a, void *r, GError **error)
{
    /* Live and persistent configs never diverge on this driver. */
    ((remote_int_ret *)r)->value = 0;
    return TRUE;
}

static gboolean h_has_managed_save(RemoteContext *ctx, void *a, void *r, GError **error)
{
    ARG_DOMAIN(remote_domain_flags_args);
    if (ctx->drv->ops->has_managed_save) {
        int v = ctx->drv->ops->has_managed_save(ctx->drv, &dom,
                                                ((remote_domain_flags_args *)a)->flags, error);
        ((remote_int_ret *)r)->value = v;
        return v >= 0;
    }
    NEED_OP(lookup_by_uuid);
    /* A driver without save images: the domain exists and has none. */
    g_autoptr(DriverDomain) found = ctx->drv->ops->lookup_by_uuid(ctx->drv, dom.uuid, error);
    ((remote_int_ret *)r)->value = 0;
    return found != NULL;
}

/* ---- save and restore (driver/migration-file.c) ---- */

static gboolean h_save(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(save);
    ARG_DOMAIN(remote_domain_save_args);
    return ctx->drv->ops->save(ctx->drv, &dom, ((remote_domain_save_args *)a)->to, NULL, 0,
                               error);
}

static gboolean h_save_flags(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_domain_save_flags_args *args = a;
    NEED_OP(save);
    ARG_DOMAIN(remote_domain_save_flags_args);
    return ctx->drv->ops->save(ctx->drv, &dom, args->to, args->dxml ? *args->dxml : NULL,
                               args->flags, error);
}

static gboolean h_restore(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(restore);
    return ctx->drv->ops->restore(ctx->drv, ((remote_domain_restore_args *)a)->from, NULL, 0,
                                  error);
}

static gboolean h_restore_flags(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_domain_restore_flags_args *args = a;
    NEED_OP(restore);
    return ctx->drv->ops->restore(ctx->drv, args->from, args->dxml ? *args->dxml : NULL,
                                  args->flags, error);
}

/* As for GET_XML_DESC: a read-only connection may read an image's XML, not
 * its secure form. */
static gboolean refuse_secure_read_only(RemoteContext *ctx, guint flags, const char *what,
                                        GError **error)
{
    g_mutex_lock(&ctx->session->lock);
    gboolean readonly = ctx->session->readonly;
    g_mutex_unlock(&ctx->session->lock);
    if ((flags & DOMAIN_XML_SECURE) && readonly) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_DENIED,
                    "read only access prevents %s with VIR_DOMAIN_SAVE_IMAGE_XML_SECURE", what);
        return TRUE;
    }
    return FALSE;
}

static gboolean h_save_image_get_xml(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_domain_save_image_get_xml_desc_args *args = a;
    if (refuse_secure_read_only(ctx, args->flags, "DOMAIN_SAVE_IMAGE_GET_XML_DESC", error))
        return FALSE;
    NEED_OP(save_image_get_xml);
    char *xml = ctx->drv->ops->save_image_get_xml(ctx->drv, args->file, args->flags, error);
    ((remote_domain_save_image_get_xml_desc_ret *)r)->xml = xml;
    return xml != NULL;
}

static gboolean h_save_image_define_xml(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_domain_save_image_define_xml_args *args = a;
    NEED_OP(save_image_define_xml);
    return ctx->drv->ops->save_image_define_xml(ctx->drv, args->file, args->dxml, args->flags,
                                                error);
}

static gboolean h_managed_save(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(managed_save);
    ARG_DOMAIN(remote_domain_flags_args);
    return ctx->drv->ops->managed_save(ctx->drv, &dom, ((remote_domain_flags_args *)a)->flags,
                                       error);
}

static gboolean h_managed_save_get_xml(RemoteContext *ctx, void *a, void *r, GError **error)
{
    if (refuse_secure_read_only(ctx, ((remote_domain_flags_args *)a)->flags,
                                "DOMAIN_MANAGED_SAVE_GET_XML_DESC", error))
        return FALSE;
    NEED_OP(managed_save_get_xml);
    ARG_DOMAIN(remote_domain_flags_args);
    char *xml = ctx->drv->ops->managed_save_get_xml(ctx->drv, &dom,
                                                    ((remote_domain_flags_args *)a)->flags, error);
    ((remote_domain_get_xml_desc_ret *)r)->xml = xml;
    return xml != NULL;
}

static gboolean h_managed_save_define_xml(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_domain_managed_save_define_xml_args *args = a;
    NEED_OP(managed_save_define_xml);
    ARG_DOMAIN(remote_domain_managed_save_define_xml_args);
    return ctx->drv->ops->managed_save_define_xml(ctx->drv, &dom, args->dxml ? *args->dxml : NULL,
                                                  args->flags, error);
}

static gboolean h_managed_save_remove(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(managed_save_remove);
    ARG_DOMAIN(remote_domain_flags_args);
    return ctx->drv->ops->managed_save_remove(ctx->drv, &dom,
                                              ((remote_domain_flags_args *)a)->flags, error);
}

static gboolean h_snapshot_num(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(lookup_by_uuid);
    ARG_DOMAIN(remote_domain_flags_args);
    g_autoptr(DriverDomain) found = ctx->drv->ops->lookup_by_uuid(ctx->drv, dom.uuid, error);
    ((remote_int_ret *)r)->value = 0;
    return found != NULL;
}

static gboolean h_set_autostart(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(set_autostart);
    ARG_DOMAIN(remote_domain_set_autostart_args);
    return ctx->drv->ops->set_autostart(ctx->drv, &dom,
                                        ((remote_domain_set_autostart_args *)a)->autostart != 0,
                                        error);
}

static gboolean h_define_xml(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(define_xml);
    return reply_domain(
        ctx->drv->ops->define_xml(ctx->drv, ((remote_domain_define_xml_args *)a)->xml, 0, error),
        &((remote_domain_ret *)r)->dom);
}

static gboolean h_define_xml_flags(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(define_xml);
    remote_domain_define_xml_flags_args *args = a;
    return reply_domain(ctx->drv->ops->define_xml(ctx->drv, args->xml, args->flags, error),
                        &((remote_domain_ret *)r)->dom);
}

static gboolean h_create_xml(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(create_xml);
    remote_domain_create_xml_args *args = a;
    return reply_domain(ctx->drv->ops->create_xml(ctx->drv, args->xml_desc, args->flags, error),
                        &((remote_domain_ret *)r)->dom);
}

static gboolean h_create(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(create);
    ARG_DOMAIN(remote_domain_args);
    g_autoptr(DriverDomain) started = ctx->drv->ops->create(ctx->drv, &dom, 0, error);
    return started != NULL;
}

static gboolean h_create_with_flags(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(create);
    ARG_DOMAIN(remote_domain_flags_args);
    return reply_domain(
        ctx->drv->ops->create(ctx->drv, &dom, ((remote_domain_flags_args *)a)->flags, error),
        &((remote_domain_ret *)r)->dom);
}

static gboolean h_undefine(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(undefine);
    ARG_DOMAIN(remote_domain_args);
    return ctx->drv->ops->undefine(ctx->drv, &dom, 0, error);
}

static gboolean h_undefine_flags(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(undefine);
    ARG_DOMAIN(remote_domain_flags_args);
    return ctx->drv->ops->undefine(ctx->drv, &dom, ((remote_domain_flags_args *)a)->flags, error);
}

static gboolean h_destroy(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(destroy);
    ARG_DOMAIN(remote_domain_args);
    return ctx->drv->ops->destroy(ctx->drv, &dom, 0, error);
}

static gboolean h_destroy_flags(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(destroy);
    ARG_DOMAIN(remote_domain_flags_args);
    return ctx->drv->ops->destroy(ctx->drv, &dom, ((remote_domain_flags_args *)a)->flags, error);
}

#define DOMAIN_ACTION(fn, op)                                                                  \
    static gboolean fn(RemoteContext *ctx, void *a, void *r, GError **error)                  \
    {                                                                                          \
        NEED_OP(op);                                                                           \
        ARG_DOMAIN(remote_domain_args);                                                        \
        return ctx->drv->ops->op(ctx->drv, &dom, error);                                       \
    }

DOMAIN_ACTION(h_suspend, suspend)
DOMAIN_ACTION(h_resume, resume)
DOMAIN_ACTION(h_shutdown, shutdown)

static gboolean h_reboot(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(reboot);
    ARG_DOMAIN(remote_domain_reboot_args);
    return ctx->drv->ops->reboot(ctx->drv, &dom, ((remote_domain_reboot_args *)a)->flags, error);
}

/* Like a tunnelled prepare: the stream's slot is reserved before the driver
 * runs, and the driver attaches the console's stream to it. */
static gboolean h_open_console(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(open_console);
    ARG_DOMAIN(remote_domain_open_console_args);
    remote_domain_open_console_args *args = a;
    TunnelBinding *binding = tunnel_router_reserve(
        ctx->session->router, rpc_server_client_get_connection(ctx->client), &ctx->call->header);
    gboolean ok = ctx->drv->ops->open_console(ctx->drv, &dom,
                                              args->dev_name ? *args->dev_name : NULL,
                                              args->flags, binding, error);
    tunnel_binding_free(binding);
    return ok;
}

/* ---- events ---- */

static gboolean h_event_callback_register(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_connect_domain_event_callback_register_any_args *args = a;
    const guint8 *uuid = args->dom ? (const guint8 *)args->dom->uuid : NULL;
    int id = session_add_callback(ctx, args->eventID, FALSE, uuid, error);
    ((remote_connect_domain_event_callback_register_any_ret *)r)->callbackID = id;
    return id >= 0;
}

static gboolean h_event_callback_deregister(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return session_remove_callback(
        ctx->session, FALSE,
        ((remote_connect_domain_event_callback_deregister_any_args *)a)->callbackID, error);
}

static gboolean h_event_register(RemoteContext *ctx, void *a, void *r, GError **error)
{
    int event_id = ((remote_connect_domain_event_register_any_args *)a)->eventID;
    return session_add_callback(ctx, event_id, TRUE, NULL, error) >= 0;
}

static gboolean h_event_deregister(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return session_remove_callback(ctx->session, TRUE,
                                   ((remote_connect_domain_event_register_any_args *)a)->eventID,
                                   error);
}

/* ---- jobs ---- */

static gboolean h_get_job_info(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_job_info);
    ARG_DOMAIN(remote_domain_args);
    remote_domain_get_job_info_ret *ret = r;
    DriverJobInfo info = {0};
    if (!ctx->drv->ops->get_job_info(ctx->drv, &dom, 0, &info, error))
        return FALSE;
    ret->type = info.type;
    ret->timeElapsed = info.time_elapsed_ms;
    ret->dataTotal = info.data_total;
    ret->dataProcessed = info.data_processed;
    ret->dataRemaining = info.data_remaining;
    ret->memTotal = info.memory_total;
    ret->memProcessed = info.memory_processed;
    ret->memRemaining = info.memory_remaining;
    driver_job_info_clear(&info);
    return TRUE;
}

static gboolean h_get_job_stats(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_job_info);
    ARG_DOMAIN(remote_domain_flags_args);
    remote_domain_get_job_stats_ret *ret = r;
    DriverJobInfo info = {0};
    if (!ctx->drv->ops->get_job_info(ctx->drv, &dom, ((remote_domain_flags_args *)a)->flags,
                                     &info, error))
        return FALSE;
    ret->type = info.type;
    g_autoptr(GPtrArray) params = driver_params_new();
    if (info.type != DRIVER_JOB_NONE) {
        driver_params_add_int(params, "operation", info.operation);
        driver_params_add_ullong(params, "time_elapsed", info.time_elapsed_ms);
        if (info.has_downtime)
            driver_params_add_ullong(params, "downtime", info.downtime_ms);
        driver_params_add_ullong(params, "setup_time", info.setup_time_ms);
        driver_params_add_ullong(params, "data_total", info.data_total);
        driver_params_add_ullong(params, "data_processed", info.data_processed);
        driver_params_add_ullong(params, "data_remaining", info.data_remaining);
        driver_params_add_ullong(params, "memory_total", info.memory_total);
        driver_params_add_ullong(params, "memory_processed", info.memory_processed);
        driver_params_add_ullong(params, "memory_remaining", info.memory_remaining);
        driver_params_add_ullong(params, "memory_bps", info.memory_bps);
        driver_params_add_ullong(params, "memory_dirty_rate", info.memory_dirty_rate);
        driver_params_add_ullong(params, "memory_iteration", info.memory_iteration);
        driver_params_add_ullong(params, "memory_page_size", info.memory_page_size);
        if (info.has_compression) {
            driver_params_add_ullong(params, "compression_cache", info.compression_cache);
            driver_params_add_ullong(params, "compression_bytes", info.compression_bytes);
            driver_params_add_ullong(params, "compression_pages", info.compression_pages);
            driver_params_add_ullong(params, "compression_cache_misses",
                                     info.compression_cache_misses);
            driver_params_add_ullong(params, "compression_overflow", info.compression_overflow);
        }
        if (info.has_throttle)
            driver_params_add_int(params, "auto_converge_throttle", info.auto_converge_throttle);
        if (info.has_postcopy)
            driver_params_add_ullong(params, "memory_postcopy_requests",
                                     info.memory_postcopy_requests);
        if (info.has_disk) {
            driver_params_add_ullong(params, "disk_total", info.disk_total);
            driver_params_add_ullong(params, "disk_processed", info.disk_processed);
            driver_params_add_ullong(params, "disk_remaining", info.disk_remaining);
        }
        if (info.error_message)
            driver_params_add_string(params, "errmsg", info.error_message);
        if (info.digest)
            driver_params_add_string(params, "ferry_digest", info.digest);
        if (info.has_resume) {
            driver_params_add_ullong(params, "ferry_reconnections", info.reconnections);
            driver_params_add_ullong(params, "ferry_resent_bytes", info.bytes_resent);
        }
        if (info.has_flight) {
            /* The flight recorder's summary (docs/debugging.md). */
            driver_params_add_ullong(params, "ferry_stall_source_vmm", info.stall_source_vmm_ms);
            driver_params_add_ullong(params, "ferry_stall_destination_vmm",
                                     info.stall_dest_vmm_ms);
            driver_params_add_ullong(params, "ferry_stall_network", info.stall_network_ms);
            driver_params_add_ullong(params, "ferry_stall_credit", info.stall_credit_ms);
            driver_params_add_ullong(params, "ferry_stall_bandwidth_limit",
                                     info.stall_bandwidth_ms);
            driver_params_add_ullong(params, "ferry_stall_encryption",
                                     info.stall_encryption_ms);
            if (info.bottleneck)
                driver_params_add_string(params, "ferry_bottleneck", info.bottleneck);
            if (info.flight_record)
                driver_params_add_string(params, "ferry_flight_record", info.flight_record);
        }
    }
    driver_job_info_clear(&info);
    remote_params_from_driver(params, &ret->params.params_val, &ret->params.params_len);
    return TRUE;
}

static gboolean h_abort_job(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(abort_job);
    ARG_DOMAIN(remote_domain_args);
    return ctx->drv->ops->abort_job(ctx->drv, &dom, 0, error);
}

static gboolean h_abort_job_flags(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(abort_job);
    ARG_DOMAIN(remote_domain_flags_args);
    return ctx->drv->ops->abort_job(ctx->drv, &dom, ((remote_domain_flags_args *)a)->flags, error);
}

static gboolean h_set_max_speed(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_set_max_speed);
    ARG_DOMAIN(remote_domain_migrate_set_max_speed_args);
    return ctx->drv->ops->migrate_set_max_speed(
        ctx->drv, &dom, ((remote_domain_migrate_set_max_speed_args *)a)->bandwidth, error);
}

static gboolean h_get_max_speed(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_get_max_speed);
    ARG_DOMAIN(remote_domain_flags_args);
    return ctx->drv->ops->migrate_get_max_speed(
        ctx->drv, &dom, &((remote_domain_migrate_get_max_speed_ret *)r)->bandwidth, error);
}

static gboolean h_set_max_downtime(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_set_max_downtime);
    ARG_DOMAIN(remote_domain_migrate_set_max_downtime_args);
    return ctx->drv->ops->migrate_set_max_downtime(
        ctx->drv, &dom, ((remote_domain_migrate_set_max_downtime_args *)a)->downtime, error);
}

static gboolean h_get_max_downtime(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_get_max_downtime);
    ARG_DOMAIN(remote_domain_flags_args);
    return ctx->drv->ops->migrate_get_max_downtime(
        ctx->drv, &dom, &((remote_domain_migrate_get_max_downtime_ret *)r)->downtime, error);
}

static gboolean h_set_compression_cache(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_set_compression_cache);
    ARG_DOMAIN(remote_domain_migrate_set_compression_cache_args);
    return ctx->drv->ops->migrate_set_compression_cache(
        ctx->drv, &dom, ((remote_domain_migrate_set_compression_cache_args *)a)->cacheSize,
        error);
}

static gboolean h_get_compression_cache(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_get_compression_cache);
    ARG_DOMAIN(remote_domain_flags_args);
    return ctx->drv->ops->migrate_get_compression_cache(
        ctx->drv, &dom, &((remote_domain_migrate_get_compression_cache_ret *)r)->cacheSize,
        error);
}

/* virsh migrate-postcopy, --timeout-postcopy, --postcopy-after-precopy,
 * migrateStartPostCopy */
static gboolean h_start_post_copy(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_start_post_copy);
    ARG_DOMAIN(remote_domain_flags_args);
    return ctx->drv->ops->migrate_start_post_copy(ctx->drv, &dom,
                                                  ((remote_domain_flags_args *)a)->flags, error);
}

/* ---- migration, version 3 with params ---- */

static gboolean h_migrate_begin3_params(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_begin);
    ARG_DOMAIN(remote_domain_migrate_begin3_params_args);
    remote_domain_migrate_begin3_params_args *args = a;
    remote_domain_migrate_begin3_params_ret *ret = r;
    g_autoptr(GPtrArray) params =
        remote_params_to_driver(args->params.params_val, args->params.params_len, error);
    if (!params)
        return FALSE;
    g_autoptr(GBytes) cookie = NULL;
    char *xml = ctx->drv->ops->migrate_begin(ctx->drv, &dom, params, args->flags, &cookie, error);
    if (!xml)
        return FALSE;
    ret->xml = xml;
    remote_cookie_from_bytes(cookie, &ret->cookie_out.cookie_out_val,
                             &ret->cookie_out.cookie_out_len);
    return TRUE;
}

/* Who a peer daemon authenticated as: its SASL identity and its TLS
 * certificate's DN, as far as the connection has them. A resumed migration
 * must come back as the same. */
static char *caller_identity(RemoteContext *ctx)
{
    g_autofree char *sasl = remote_auth_get_identity(ctx->session->auth);
    RpcTransport *t = rpc_server_client_get_transport(ctx->client);
    const char *dn = rpc_tls_transport_get_peer_dn(rpc_sasl_transport_get_inner(t));
    if (sasl && dn)
        return g_strdup_printf("%s with certificate '%s'", sasl, dn);
    if (sasl || dn)
        return dn ? g_strdup_printf("certificate '%s'", dn) : g_steal_pointer(&sasl);
    return g_strdup("nobody (no SASL, no client certificate)");
}

static gboolean prepare_common(RemoteContext *ctx, remote_typed_param *pv, u_int pn,
                               char *cookie_val, u_int cookie_len, guint flags,
                               TunnelBinding *binding, GBytes **cookie_out, char **uri_out,
                               GError **error)
{
    NEED_OP(migrate_prepare);
    g_autoptr(GPtrArray) params = remote_params_to_driver(pv, pn, error);
    if (!params)
        return FALSE;
    g_autoptr(GBytes) cookie_in = remote_cookie_to_bytes(cookie_val, cookie_len);
    RpcConnection *conn = rpc_server_client_get_connection(ctx->client);
    /* A source daemon: its connection notices a dead path as a peer's does. */
    rpc_socket_tune_peer(rpc_connection_get_transport(conn)->fd);
    g_autoptr(TunnelPeerWatch) source = tunnel_peer_watch_new(conn);
    g_autofree char *who = caller_identity(ctx);
    tunnel_peer_watch_set_identity(source, who);
    /* For the flight record: who asked, over what. */
    g_autofree char *transport = remote_describe_transport(rpc_server_client_get_transport(ctx->client));
    g_autofree char *identity = remote_auth_get_identity(ctx->session->auth);
    g_autofree char *security = identity && !strstr(transport, "SASL")
                                    ? g_strdup_printf("%s, %s", transport, identity)
                                    : g_strdup(transport);
    driver_set_caller_security(security);
    gboolean ok = ctx->drv->ops->migrate_prepare(ctx->drv, params, cookie_in, flags, binding,
                                                 source, cookie_out, uri_out, error);
    driver_set_caller_security(NULL);
    return ok;
}

static gboolean h_migrate_prepare3_params(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_domain_migrate_prepare3_params_args *args = a;
    remote_domain_migrate_prepare3_params_ret *ret = r;
    g_autoptr(GBytes) cookie = NULL;
    char *uri_out = NULL;
    if (!prepare_common(ctx, args->params.params_val, args->params.params_len,
                        args->cookie_in.cookie_in_val, args->cookie_in.cookie_in_len, args->flags,
                        NULL, &cookie, &uri_out, error))
        return FALSE;
    remote_cookie_from_bytes(cookie, &ret->cookie_out.cookie_out_val,
                             &ret->cookie_out.cookie_out_len);
    if (uri_out) {
        ret->uri_out = g_new(char *, 1);
        *ret->uri_out = uri_out;
    }
    return TRUE;
}

/* The stream is registered (its slot reserved) before the driver runs, and
 * the reply is queued after it returns: a data packet right behind the reply
 * always finds its stream. */
static gboolean h_migrate_prepare_tunnel3_params(RemoteContext *ctx, void *a, void *r,
                                                 GError **error)
{
    remote_domain_migrate_prepare_tunnel3_params_args *args = a;
    remote_domain_migrate_prepare_tunnel3_params_ret *ret = r;
    g_autoptr(TunnelBinding) binding = tunnel_router_reserve(
        ctx->session->router, rpc_server_client_get_connection(ctx->client), &ctx->call->header);
    g_autoptr(GBytes) cookie = NULL;
    if (!prepare_common(ctx, args->params.params_val, args->params.params_len,
                        args->cookie_in.cookie_in_val, args->cookie_in.cookie_in_len, args->flags,
                        binding, &cookie, NULL, error)) {
        tunnel_binding_cancel(binding);
        return FALSE;
    }
    remote_cookie_from_bytes(cookie, &ret->cookie_out.cookie_out_val,
                             &ret->cookie_out.cookie_out_len);
    return TRUE;
}

static gboolean h_migrate_perform3_params(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_perform);
    ARG_DOMAIN(remote_domain_migrate_perform3_params_args);
    remote_domain_migrate_perform3_params_args *args = a;
    remote_domain_migrate_perform3_params_ret *ret = r;
    g_autoptr(GPtrArray) params =
        remote_params_to_driver(args->params.params_val, args->params.params_len, error);
    if (!params)
        return FALSE;
    g_autoptr(GBytes) cookie_in =
        remote_cookie_to_bytes(args->cookie_in.cookie_in_val, args->cookie_in.cookie_in_len);
    g_autoptr(GBytes) cookie_out = NULL;
    const char *dconnuri = args->dconnuri ? *args->dconnuri : NULL;
    /* The daemon connects with its own credentials: a client must not point
     * it at files of its choosing (confused deputy). */
    if (dconnuri && *dconnuri && !remote_uri_check_from_client(dconnuri, error))
        return FALSE;
    if (!ctx->drv->ops->migrate_perform(ctx->drv, &dom, dconnuri, params, cookie_in, args->flags,
                                        &cookie_out, error))
        return FALSE;
    remote_cookie_from_bytes(cookie_out, &ret->cookie_out.cookie_out_val,
                             &ret->cookie_out.cookie_out_len);
    return TRUE;
}

static gboolean h_migrate_finish3_params(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_finish);
    remote_domain_migrate_finish3_params_args *args = a;
    remote_domain_migrate_finish3_params_ret *ret = r;
    g_autoptr(GPtrArray) params =
        remote_params_to_driver(args->params.params_val, args->params.params_len, error);
    if (!params)
        return FALSE;
    g_autoptr(GBytes) cookie_in =
        remote_cookie_to_bytes(args->cookie_in.cookie_in_val, args->cookie_in.cookie_in_len);
    g_autoptr(GBytes) cookie_out = NULL;
    DriverDomain *dom = ctx->drv->ops->migrate_finish(ctx->drv, params, cookie_in, args->flags,
                                                      args->cancelled != 0, &cookie_out, error);
    if (!reply_domain(dom, &ret->dom))
        return FALSE;
    remote_cookie_from_bytes(cookie_out, &ret->cookie_out.cookie_out_val,
                             &ret->cookie_out.cookie_out_len);
    return TRUE;
}

static gboolean h_migrate_confirm3_params(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_confirm);
    ARG_DOMAIN(remote_domain_migrate_confirm3_params_args);
    remote_domain_migrate_confirm3_params_args *args = a;
    g_autoptr(GPtrArray) params =
        remote_params_to_driver(args->params.params_val, args->params.params_len, error);
    if (!params)
        return FALSE;
    g_autoptr(GBytes) cookie_in =
        remote_cookie_to_bytes(args->cookie_in.cookie_in_val, args->cookie_in.cookie_in_len);
    return ctx->drv->ops->migrate_confirm(ctx->drv, &dom, params, cookie_in, args->flags,
                                          args->cancelled != 0, error);
}

/* ---- the table ---- */

/* ---- objects ferry does not have ----
 * Networks, storage, interfaces, node devices, network filters, secrets,
 * snapshots and checkpoints are libvirt objects a management tool enumerates
 * at connect; ferry manages none (docs/api.md says why). Lists answer empty
 * and counts 0 so the tool goes on; the reply structs arrive zeroed, which
 * is already the empty answer. Lookups fail with the "not found" error
 * libvirt gives for the object type; creation is refused naming the object. */

static gboolean h_empty_names(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return remote_check_list_max(((remote_list_names_args *)a)->maxnames, error);
}

static gboolean h_node_list_devices(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return remote_check_list_max(((remote_node_list_devices_args *)a)->maxnames, error);
}

static char *uuid_text(const char *uuid)
{
    const guint8 *u = (const guint8 *)uuid;
    return g_strdup_printf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                           "%02x%02x%02x%02x%02x%02x",
                           u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10],
                           u[11], u[12], u[13], u[14], u[15]);
}

static gboolean not_found(GError **error, int code, const char *what, const char *key,
                          const char *value)
{
    g_set_error(error, FERRY_ERROR, code, "no %s with matching %s '%s'", what, key, value);
    return FALSE;
}

/* Lookups by one string (name, path, key, MAC address, port device): their
 * arguments all have remote_lookup_by_name_args' layout. */
#define NOT_FOUND_BY_STRING(fn, code, what, key)                                               \
    static gboolean fn(RemoteContext *ctx, void *a, void *r, GError **error)                   \
    {                                                                                          \
        return not_found(error, code, what, key, ((remote_lookup_by_name_args *)a)->name);     \
    }
#define NOT_FOUND_BY_UUID(fn, code, what)                                                      \
    static gboolean fn(RemoteContext *ctx, void *a, void *r, GError **error)                   \
    {                                                                                          \
        g_autofree char *u = uuid_text(((remote_lookup_by_uuid_args *)a)->uuid);               \
        return not_found(error, code, what, "uuid", u);                                        \
    }

NOT_FOUND_BY_STRING(h_network_by_name, FERRY_ERR_NO_NETWORK, "network", "name")
NOT_FOUND_BY_UUID(h_network_by_uuid, FERRY_ERR_NO_NETWORK, "network")
NOT_FOUND_BY_STRING(h_nodedev_by_name, FERRY_ERR_NO_NODE_DEVICE, "node device", "name")
NOT_FOUND_BY_STRING(h_iface_by_name, FERRY_ERR_NO_INTERFACE, "interface", "name")
NOT_FOUND_BY_STRING(h_iface_by_mac, FERRY_ERR_NO_INTERFACE, "interface", "MAC address")
NOT_FOUND_BY_STRING(h_nwfilter_by_name, FERRY_ERR_NO_NWFILTER, "network filter", "name")
NOT_FOUND_BY_UUID(h_nwfilter_by_uuid, FERRY_ERR_NO_NWFILTER, "network filter")
NOT_FOUND_BY_STRING(h_nwfilter_binding_by_port, FERRY_ERR_NO_NWFILTER_BINDING,
                    "network filter binding", "port dev")
NOT_FOUND_BY_UUID(h_secret_by_uuid, FERRY_ERR_NO_SECRET, "secret")

static gboolean h_secret_by_usage(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return not_found(error, FERRY_ERR_NO_SECRET, "secret", "usage",
                     ((remote_secret_lookup_by_usage_args *)a)->usageID);
}

static gboolean refuse_object(GError **error, const char *objects, const char *proc)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT,
                "%s: ferryd manages no %s (see docs/api.md)", proc, objects);
    return FALSE;
}

#define REFUSE(fn, objects, proc)                                                              \
    static gboolean fn(RemoteContext *ctx, void *a, void *r, GError **error)                   \
    {                                                                                          \
        return refuse_object(error, objects, proc);                                            \
    }

REFUSE(h_network_create, "virtual networks", "virNetworkCreateXML")
REFUSE(h_network_define, "virtual networks", "virNetworkDefineXML")
REFUSE(h_nodedev_create, "node devices", "virNodeDeviceCreateXML")
REFUSE(h_iface_define, "host interfaces", "virInterfaceDefineXML")
REFUSE(h_secret_define, "secrets", "virSecretDefineXML")
REFUSE(h_nwfilter_define, "network filters", "virNWFilterDefineXML")
REFUSE(h_nwfilter_binding_create, "network filter bindings", "virNWFilterBindingCreateXML")

/* Snapshots and checkpoints: the domain must exist (an unknown one is "Domain
 * not found", as for every domain call); it then has none. */
static gboolean domain_exists(RemoteContext *ctx, const remote_nonnull_domain *rdom,
                              GError **error)
{
    NEED_OP(lookup_by_uuid);
    g_auto(DriverDomain) dom = {0};
    remote_domain_to_driver(rdom, &dom);
    g_autoptr(DriverDomain) found = ctx->drv->ops->lookup_by_uuid(ctx->drv, dom.uuid, error);
    return found != NULL;
}

static gboolean h_domain_list_all_empty(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return domain_exists(ctx, &((remote_domain_list_all_args *)a)->dom, error);
}

static gboolean h_snapshot_list_names(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_domain_list_names_args *args = a;
    return remote_check_list_max(args->maxnames, error) && domain_exists(ctx, &args->dom, error);
}

static gboolean h_has_current_snapshot(RemoteContext *ctx, void *a, void *r, GError **error)
{
    ((remote_int_ret *)r)->value = 0;
    return domain_exists(ctx, &((remote_domain_flags_args *)a)->dom, error);
}

static gboolean h_snapshot_current(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_domain_flags_args *args = a;
    if (!domain_exists(ctx, &args->dom, error))
        return FALSE;
    g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_DOMAIN_SNAPSHOT,
                "the domain '%s' does not have a current snapshot", args->dom.name);
    return FALSE;
}

static gboolean h_snapshot_by_name(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_domain_object_lookup_args *args = a;
    return domain_exists(ctx, &args->dom, error) &&
           not_found(error, FERRY_ERR_NO_DOMAIN_SNAPSHOT, "domain snapshot", "name", args->name);
}

static gboolean h_checkpoint_by_name(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_domain_object_lookup_args *args = a;
    return domain_exists(ctx, &args->dom, error) &&
           not_found(error, FERRY_ERR_NO_DOMAIN_CHECKPOINT, "domain checkpoint", "name",
                     args->name);
}

static gboolean h_snapshot_create(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return domain_exists(ctx, &((remote_domain_object_create_args *)a)->dom, error) &&
           refuse_object(error, "domain snapshots", "virDomainSnapshotCreateXML");
}

static gboolean h_checkpoint_create(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return domain_exists(ctx, &((remote_domain_object_create_args *)a)->dom, error) &&
           refuse_object(error, "domain checkpoints", "virDomainCheckpointCreateXML");
}

/* ---- domain capabilities ---- */

static gboolean h_get_domain_capabilities(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_domain_capabilities);
    remote_connect_get_domain_capabilities_args *args = a;
#define OPT(s) ((s) ? *(s) : NULL)
    char *caps = ctx->drv->ops->get_domain_capabilities(ctx->drv, OPT(args->emulatorbin),
                                                        OPT(args->arch), OPT(args->machine),
                                                        OPT(args->virttype), args->flags, error);
#undef OPT
    ((remote_connect_get_domain_capabilities_ret *)r)->capabilities = caps;
    return caps != NULL;
}

/* ---- monitoring: domstats, dommemstat, vcpuinfo, vcpucount, screenshot ---- */

/* virConnectGetAllDomainStatsFlags beyond the list filters */
#define STATS_FILTERS 0xffu /* ACTIVE ... OTHER: the LIST_ALL_DOMAINS filters */
#define STATS_NOWAIT (1u << 29)
#define STATS_BACKING (1u << 30)
#define STATS_ENFORCE (1u << 31)
#define STATS_GROUPS_ALL                                                                       \
    (DRIVER_STATS_STATE | DRIVER_STATS_CPU_TOTAL | DRIVER_STATS_BALLOON | DRIVER_STATS_VCPU |  \
     DRIVER_STATS_INTERFACE | DRIVER_STATS_BLOCK)
#define STATS_GROUPS_GENERIC                                                                   \
    (DRIVER_STATS_STATE | DRIVER_STATS_CPU_TOTAL | DRIVER_STATS_BALLOON | DRIVER_STATS_VCPU)

/* The groups get_state and get_info answer, for a driver without get_stats. */
static gboolean generic_stats(RemoteContext *ctx, const DriverDomain *dom, guint stats,
                              GPtrArray *params, GError **error)
{
    NEED_OP(get_state);
    NEED_OP(get_info);
    int state = 0, reason = 0;
    DriverDomainInfo info;
    if (!ctx->drv->ops->get_state(ctx->drv, dom, &state, &reason, error) ||
        !ctx->drv->ops->get_info(ctx->drv, dom, &info, error))
        return FALSE;
    if (stats & DRIVER_STATS_STATE) {
        driver_params_add_int(params, "state.state", state);
        driver_params_add_int(params, "state.reason", reason);
    }
    if ((stats & DRIVER_STATS_CPU_TOTAL) && dom->id >= 0)
        driver_params_add_ullong(params, "cpu.time", info.cpu_time_ns);
    if (stats & DRIVER_STATS_BALLOON) {
        driver_params_add_ullong(params, "balloon.current", info.memory_kib);
        driver_params_add_ullong(params, "balloon.maximum", info.max_mem_kib);
    }
    if (stats & DRIVER_STATS_VCPU) {
        driver_params_add_uint(params, "vcpu.current", info.vcpus); /* no maximum in the info */
    }
    return TRUE;
}

static gboolean stats_record(RemoteContext *ctx, const DriverDomain *dom, guint stats,
                             remote_domain_stats_record *out, GError **error)
{
    g_autoptr(GPtrArray) params = driver_params_new();
    gboolean ok = ctx->drv->ops->get_stats
                      ? ctx->drv->ops->get_stats(ctx->drv, dom, stats, params, error)
                      : generic_stats(ctx, dom, stats, params, error);
    if (!ok)
        return FALSE;
    remote_domain_from_driver(dom, &out->dom);
    remote_params_from_driver(params, &out->params.params_val, &out->params.params_len);
    return TRUE;
}

/* virConnectGetAllDomainStats and virDomainListGetStats (a list of domains). */
static gboolean h_get_all_domain_stats(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_connect_get_all_domain_stats_args *args = a;
    remote_connect_get_all_domain_stats_ret *ret = r;
    guint known = STATS_FILTERS | STATS_NOWAIT | STATS_BACKING | STATS_ENFORCE;
    if (args->flags & ~known) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function virConnectGetAllDomainStats",
                    args->flags & ~known);
        return FALSE;
    }
    guint have = ctx->drv->ops->get_stats ? STATS_GROUPS_ALL : STATS_GROUPS_GENERIC;
    if ((args->flags & STATS_ENFORCE) && (args->stats & ~have)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "Stats types bits 0x%x are not supported by this daemon",
                    args->stats & ~have);
        return FALSE;
    }
    /* None asked: every group the driver has; others are skipped, as libvirt does. */
    guint stats = args->stats ? args->stats & have : have;
    g_autoptr(GPtrArray) doms = NULL;
    if (args->doms.doms_len) {
        if (args->flags & STATS_FILTERS) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                        "domain filter flags (0x%x) with a list of domains",
                        args->flags & STATS_FILTERS);
            return FALSE;
        }
        doms = g_ptr_array_new_with_free_func((GDestroyNotify)driver_domain_free);
        for (u_int i = 0; i < args->doms.doms_len; i++) {
            DriverDomain *d = g_new0(DriverDomain, 1);
            remote_domain_to_driver(&args->doms.doms_val[i], d);
            g_ptr_array_add(doms, d);
        }
    } else if (!(doms = list_domains(ctx, args->flags & STATS_FILTERS, error))) {
        return FALSE;
    }
    gboolean listed = args->doms.doms_len == 0;
    ret->retStats.retStats_val = g_new0(remote_domain_stats_record, MAX(doms->len, 1));
    for (guint i = 0; i < doms->len; i++) {
        g_autoptr(GError) e = NULL;
        u_int n = ret->retStats.retStats_len;
        if (stats_record(ctx, doms->pdata[i], stats, &ret->retStats.retStats_val[n], &e)) {
            ret->retStats.retStats_len = n + 1;
        } else if (!listed || !g_error_matches(e, FERRY_ERROR, FERRY_ERR_NO_DOMAIN)) {
            g_propagate_error(error, g_steal_pointer(&e));
            return FALSE;
        } /* else: undefined since it was listed */
    }
    return TRUE;
}

static gboolean h_memory_stats(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(memory_stats);
    ARG_DOMAIN(remote_domain_memory_stats_args);
    remote_domain_memory_stats_args *args = a;
    remote_domain_memory_stats_ret *ret = r;
    if (args->maxStats > REMOTE_DOMAIN_MEMORY_STATS_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                    "maxStats > REMOTE_DOMAIN_MEMORY_STATS_MAX");
        return FALSE;
    }
    g_autoptr(GArray) stats = ctx->drv->ops->memory_stats(ctx->drv, &dom, args->flags, error);
    if (!stats)
        return FALSE;
    u_int n = MIN(stats->len, args->maxStats);
    ret->stats.stats_val = g_new0(remote_domain_memory_stat, MAX(n, 1));
    ret->stats.stats_len = n;
    for (u_int i = 0; i < n; i++) {
        const DriverMemoryStat *s = &g_array_index(stats, DriverMemoryStat, i);
        ret->stats.stats_val[i].tag = s->tag;
        ret->stats.stats_val[i].val = s->value;
    }
    return TRUE;
}

static gboolean h_get_vcpus(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_vcpus);
    ARG_DOMAIN(remote_domain_get_vcpus_args);
    remote_domain_get_vcpus_args *args = a;
    remote_domain_get_vcpus_ret *ret = r;
    if (args->maxinfo < 0 || args->maxinfo > REMOTE_VCPUINFO_MAX || args->maplen < 0 ||
        (gint64)args->maxinfo * args->maplen > REMOTE_CPUMAPS_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                    "maxinfo (%d) or maplen (%d) out of range", args->maxinfo, args->maplen);
        return FALSE;
    }
    g_autoptr(GArray) vcpus = ctx->drv->ops->get_vcpus(ctx->drv, &dom, error);
    if (!vcpus)
        return FALSE;
    u_int n = MIN(vcpus->len, (u_int)args->maxinfo);
    ret->info.info_val = g_new0(remote_vcpu_info, MAX(n, 1));
    ret->info.info_len = n;
    ret->cpumaps.cpumaps_len = (u_int)args->maxinfo * (u_int)args->maplen;
    ret->cpumaps.cpumaps_val = g_malloc0(MAX(ret->cpumaps.cpumaps_len, 1));
    for (u_int i = 0; i < n; i++) {
        const DriverVcpuInfo *v = &g_array_index(vcpus, DriverVcpuInfo, i);
        ret->info.info_val[i] = (remote_vcpu_info){.number = v->number, .state = v->state,
                                                   .cpu_time = v->cpu_time_ns, .cpu = v->cpu};
        memcpy(ret->cpumaps.cpumaps_val + (gsize)i * args->maplen, v->cpumap,
               MIN((gsize)args->maplen, sizeof(v->cpumap)));
    }
    return TRUE;
}

static gboolean h_get_vcpus_flags(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_vcpus_flags);
    ARG_DOMAIN(remote_domain_flags_args);
    int n = ctx->drv->ops->get_vcpus_flags(ctx->drv, &dom, ((remote_domain_flags_args *)a)->flags,
                                           error);
    ((remote_domain_get_vcpus_flags_ret *)r)->num = n;
    return n >= 0;
}

/* virsh domblkstat: the disk's figures of the `block` stats group. */
static gboolean h_block_stats(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_stats);
    ARG_DOMAIN(remote_domain_block_stats_args);
    const char *path = ((remote_domain_block_stats_args *)a)->path;
    remote_domain_block_stats_ret *ret = r;
    g_autoptr(GPtrArray) params = driver_params_new();
    if (!ctx->drv->ops->get_stats(ctx->drv, &dom, DRIVER_STATS_BLOCK, params, error))
        return FALSE;
    const DriverParam *count = driver_params_find(params, "block.count");
    for (guint i = 0; count && i < count->v.ui; i++) {
        g_autofree char *name = g_strdup_printf("block.%u.name", i);
        g_autofree char *src = g_strdup_printf("block.%u.path", i);
        const DriverParam *n = driver_params_find(params, name);
        const DriverParam *p = driver_params_find(params, src);
        if (g_strcmp0(n ? n->s : NULL, path) != 0 && g_strcmp0(p ? p->s : NULL, path) != 0)
            continue;
        struct {
            const char *field;
            int64_t *out;
        } fields[] = {{"rd.reqs", &ret->rd_req},
                      {"rd.bytes", &ret->rd_bytes},
                      {"wr.reqs", &ret->wr_req},
                      {"wr.bytes", &ret->wr_bytes}};
        ret->errs = -1; /* QEMU does not count them */
        for (guint f = 0; f < G_N_ELEMENTS(fields); f++) {
            g_autofree char *field = g_strdup_printf("block.%u.%s", i, fields[f].field);
            const DriverParam *v = driver_params_find(params, field);
            *fields[f].out = v ? (int64_t)v->v.ul : -1;
        }
        return TRUE;
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                "invalid path: %s not assigned to domain", path);
    return FALSE;
}

/* virsh domifstat: the driver reads the interface's host device. */
static gboolean h_interface_stats(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(interface_stats);
    ARG_DOMAIN(remote_domain_interface_stats_args);
    remote_domain_interface_stats_ret *ret = r;
    DriverInterfaceStats st;
    if (!ctx->drv->ops->interface_stats(ctx->drv, &dom,
                                        ((remote_domain_interface_stats_args *)a)->path, &st,
                                        error))
        return FALSE;
    *ret = (remote_domain_interface_stats_ret){
        .rx_bytes = st.rx_bytes, .rx_packets = st.rx_packets, .rx_errs = st.rx_errs,
        .rx_drop = st.rx_drop,   .tx_bytes = st.tx_bytes,     .tx_packets = st.tx_packets,
        .tx_errs = st.tx_errs,   .tx_drop = st.tx_drop};
    return TRUE;
}

/* virsh vcpupin DOMAIN (and vcpuinfo of a stopped domain): a map per vCPU. */
static gboolean h_get_vcpu_pin_info(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(get_vcpu_pin_info);
    ARG_DOMAIN(remote_domain_get_vcpu_pin_info_args);
    remote_domain_get_vcpu_pin_info_args *args = a;
    remote_domain_get_vcpu_pin_info_ret *ret = r;
    if (args->ncpumaps < 0 || args->ncpumaps > REMOTE_VCPUINFO_MAX || args->maplen <= 0 ||
        args->maplen > REMOTE_CPUMAP_MAX ||
        (gint64)args->ncpumaps * args->maplen > REMOTE_CPUMAPS_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                    "ncpumaps (%d) or maplen (%d) out of range", args->ncpumaps, args->maplen);
        return FALSE;
    }
    g_autoptr(GArray) maps = ctx->drv->ops->get_vcpu_pin_info(ctx->drv, &dom, args->flags, error);
    if (!maps)
        return FALSE;
    u_int n = MIN(maps->len, (u_int)args->ncpumaps);
    ret->num = (int)n;
    ret->cpumaps.cpumaps_len = (u_int)args->ncpumaps * (u_int)args->maplen;
    ret->cpumaps.cpumaps_val = g_malloc0(MAX(ret->cpumaps.cpumaps_len, 1));
    for (u_int i = 0; i < n; i++) {
        const DriverVcpuInfo *v = &g_array_index(maps, DriverVcpuInfo, i);
        memcpy(ret->cpumaps.cpumaps_val + (gsize)i * args->maplen, v->cpumap,
               MIN((gsize)args->maplen, sizeof(v->cpumap)));
    }
    return TRUE;
}

#define AFFECT_LIVE 1u /* VIR_DOMAIN_AFFECT_LIVE: what the old DOMAIN_PIN_VCPU means */

static gboolean h_pin_vcpu(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(pin_vcpu);
    ARG_DOMAIN(remote_domain_pin_vcpu_args);
    remote_domain_pin_vcpu_args *args = a;
    return ctx->drv->ops->pin_vcpu(ctx->drv, &dom, args->vcpu,
                                   (const guint8 *)args->cpumap.cpumap_val,
                                   args->cpumap.cpumap_len, AFFECT_LIVE, error);
}

static gboolean h_pin_vcpu_flags(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(pin_vcpu);
    ARG_DOMAIN(remote_domain_pin_vcpu_flags_args);
    remote_domain_pin_vcpu_flags_args *args = a;
    return ctx->drv->ops->pin_vcpu(ctx->drv, &dom, args->vcpu,
                                   (const guint8 *)args->cpumap.cpumap_val,
                                   args->cpumap.cpumap_len, args->flags, error);
}

/* The host's CPUs (python3-libvirt's vcpus() asks, to size the maps): how
 * many there are, and which are online (/sys/devices/system/cpu/online,
 * a list such as "0-3,6"). */
static gboolean h_node_get_cpu_map(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_node_get_cpu_map_args *args = a;
    remote_node_get_cpu_map_ret *ret = r;
    if (args->flags) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function virNodeGetCPUMap", args->flags);
        return FALSE;
    }
    g_autofree char *list = NULL;
    if (!g_file_get_contents("/sys/devices/system/cpu/online", &list, NULL, error))
        return FALSE;
    long present = sysconf(_SC_NPROCESSORS_CONF);
    guint ncpus = (guint)CLAMP(present, 1, REMOTE_CPUMAP_MAX * 8);
    g_autofree guint8 *map = g_malloc0((ncpus + 7) / 8);
    guint online = 0;
    g_auto(GStrv) ranges = g_strsplit(g_strstrip(list), ",", -1);
    for (guint i = 0; ranges[i]; i++) {
        guint64 lo = 0, hi = 0;
        g_auto(GStrv) ends = g_strsplit(ranges[i], "-", 2);
        if (!g_ascii_string_to_unsigned(ends[0], 10, 0, G_MAXUINT, &lo, NULL) ||
            !g_ascii_string_to_unsigned(ends[1] ? ends[1] : ends[0], 10, lo, G_MAXUINT, &hi,
                                        NULL))
            continue;
        for (guint64 c = lo; c <= hi && c < ncpus; c++) {
            map[c / 8] |= (guint8)(1u << (c % 8));
            online++;
        }
    }
    ret->ret = (int)ncpus;
    if (args->need_online)
        ret->online = online;
    if (args->need_map) {
        ret->cpumap.cpumap_len = (ncpus + 7) / 8;
        ret->cpumap.cpumap_val = (char *)g_steal_pointer(&map);
    }
    return TRUE;
}

/* As for a console: the stream's slot is reserved before the driver runs. */
static gboolean h_screenshot(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(screenshot);
    ARG_DOMAIN(remote_domain_screenshot_args);
    remote_domain_screenshot_args *args = a;
    TunnelBinding *binding = tunnel_router_reserve(
        ctx->session->router, rpc_server_client_get_connection(ctx->client), &ctx->call->header);
    char *mime = NULL;
    gboolean ok = ctx->drv->ops->screenshot(ctx->drv, &dom, args->screen, args->flags, binding,
                                            &mime, error);
    tunnel_binding_free(binding);
    if (ok) {
        remote_domain_screenshot_ret *ret = r;
        ret->mime = g_new0(char *, 1);
        *ret->mime = mime;
    }
    return ok;
}

static const RemoteProcedure procedures[] = {
    {REMOTE_PROC_AUTH_LIST, "AUTH_LIST", VOID, X(remote_auth_list_ret), h_auth_list,
     PROC_PREAUTH | PROC_NO_OPEN},
    {REMOTE_PROC_AUTH_SASL_INIT, "AUTH_SASL_INIT", VOID, X(remote_auth_sasl_init_ret),
     h_auth_sasl_init, PROC_PREAUTH | PROC_NO_OPEN},
    {REMOTE_PROC_AUTH_SASL_START, "AUTH_SASL_START", X(remote_auth_sasl_start_args),
     X(remote_auth_sasl_start_ret), h_auth_sasl_start, PROC_PREAUTH | PROC_NO_OPEN},
    {REMOTE_PROC_AUTH_SASL_STEP, "AUTH_SASL_STEP", X(remote_auth_sasl_step_args),
     X(remote_auth_sasl_step_ret), h_auth_sasl_step, PROC_PREAUTH | PROC_NO_OPEN},
    {REMOTE_PROC_CONNECT_OPEN, "CONNECT_OPEN", X(remote_connect_open_args), VOID, h_connect_open,
     PROC_NO_OPEN},
    {REMOTE_PROC_CONNECT_CLOSE, "CONNECT_CLOSE", VOID, VOID, h_connect_close, PROC_NO_OPEN},
    {REMOTE_PROC_CONNECT_SUPPORTS_FEATURE, "CONNECT_SUPPORTS_FEATURE",
     X(remote_connect_supports_feature_args), X(remote_connect_supports_feature_ret),
     h_supports_feature, PROC_NO_OPEN},
    {REMOTE_PROC_CONNECT_GET_TYPE, "CONNECT_GET_TYPE", VOID, X(remote_connect_get_type_ret),
     h_get_type, 0},
    {REMOTE_PROC_CONNECT_GET_VERSION, "CONNECT_GET_VERSION", VOID,
     X(remote_connect_get_version_ret), h_get_version, 0},
    {REMOTE_PROC_CONNECT_GET_LIB_VERSION, "CONNECT_GET_LIB_VERSION", VOID,
     X(remote_connect_get_lib_version_ret), h_get_lib_version, 0},
    {REMOTE_PROC_CONNECT_GET_HOSTNAME, "CONNECT_GET_HOSTNAME", VOID,
     X(remote_connect_get_hostname_ret), h_get_hostname, 0},
    {REMOTE_PROC_CONNECT_GET_URI, "CONNECT_GET_URI", VOID, X(remote_connect_get_uri_ret),
     h_get_uri, 0},
    {REMOTE_PROC_CONNECT_GET_CAPABILITIES, "CONNECT_GET_CAPABILITIES", VOID,
     X(remote_connect_get_capabilities_ret), h_get_capabilities, 0},
    {REMOTE_PROC_CONNECT_GET_SYSINFO, "CONNECT_GET_SYSINFO", X(remote_connect_get_sysinfo_args),
     X(remote_connect_get_sysinfo_ret), h_get_sysinfo, 0},
    {REMOTE_PROC_CONNECT_IS_SECURE, "CONNECT_IS_SECURE", VOID, X(remote_connect_is_secure_ret),
     h_is_secure, 0},
    {REMOTE_PROC_NODE_GET_INFO, "NODE_GET_INFO", VOID, X(remote_node_get_info_ret),
     h_node_get_info, 0},
    {REMOTE_PROC_NODE_GET_FREE_MEMORY, "NODE_GET_FREE_MEMORY", VOID,
     X(remote_node_get_free_memory_ret), h_node_get_free_memory, 0},
    {REMOTE_PROC_NODE_GET_SECURITY_MODEL, "NODE_GET_SECURITY_MODEL", VOID,
     X(remote_node_get_security_model_ret), h_node_get_security_model, 0},
    {REMOTE_PROC_CONNECT_REGISTER_CLOSE_CALLBACK, "CONNECT_REGISTER_CLOSE_CALLBACK", VOID, VOID,
     h_void_ok, 0},
    {REMOTE_PROC_CONNECT_UNREGISTER_CLOSE_CALLBACK, "CONNECT_UNREGISTER_CLOSE_CALLBACK", VOID,
     VOID, h_void_ok, 0},
    {REMOTE_PROC_CONNECT_LIST_ALL_DOMAINS, "CONNECT_LIST_ALL_DOMAINS",
     X(remote_connect_list_all_domains_args), X(remote_connect_list_all_domains_ret),
     h_list_all_domains, 0},
    {REMOTE_PROC_CONNECT_NUM_OF_DOMAINS, "CONNECT_NUM_OF_DOMAINS", VOID,
     X(remote_connect_num_of_domains_ret), h_num_of_domains, 0},
    {REMOTE_PROC_CONNECT_NUM_OF_DEFINED_DOMAINS, "CONNECT_NUM_OF_DEFINED_DOMAINS", VOID,
     X(remote_connect_num_of_defined_domains_ret), h_num_of_defined_domains, 0},
    {REMOTE_PROC_CONNECT_LIST_DOMAINS, "CONNECT_LIST_DOMAINS",
     X(remote_connect_list_domains_args), X(remote_connect_list_domains_ret), h_list_domains, 0},
    {REMOTE_PROC_CONNECT_LIST_DEFINED_DOMAINS, "CONNECT_LIST_DEFINED_DOMAINS",
     X(remote_connect_list_defined_domains_args), X(remote_connect_list_defined_domains_ret),
     h_list_defined_domains, 0},
    {REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME, "DOMAIN_LOOKUP_BY_NAME",
     X(remote_domain_lookup_by_name_args), X(remote_domain_lookup_by_name_ret), h_lookup_by_name,
     0},
    {REMOTE_PROC_DOMAIN_LOOKUP_BY_UUID, "DOMAIN_LOOKUP_BY_UUID",
     X(remote_domain_lookup_by_uuid_args), X(remote_domain_lookup_by_uuid_ret), h_lookup_by_uuid,
     0},
    {REMOTE_PROC_DOMAIN_LOOKUP_BY_ID, "DOMAIN_LOOKUP_BY_ID", X(remote_domain_lookup_by_id_args),
     X(remote_domain_lookup_by_id_ret), h_lookup_by_id, 0},
    {REMOTE_PROC_DOMAIN_GET_STATE, "DOMAIN_GET_STATE", X(remote_domain_flags_args),
     X(remote_domain_get_state_ret), h_get_state, 0},
    {REMOTE_PROC_DOMAIN_GET_INFO, "DOMAIN_GET_INFO", X(remote_domain_args),
     X(remote_domain_get_info_ret), h_get_info, 0},
    {REMOTE_PROC_DOMAIN_GET_MAX_MEMORY, "DOMAIN_GET_MAX_MEMORY", X(remote_domain_args),
     X(remote_domain_get_max_memory_ret), h_get_max_memory, 0},
    {REMOTE_PROC_DOMAIN_GET_XML_DESC, "DOMAIN_GET_XML_DESC", X(remote_domain_flags_args),
     X(remote_domain_get_xml_desc_ret), h_get_xml_desc, 0},
    {REMOTE_PROC_DOMAIN_GET_OS_TYPE, "DOMAIN_GET_OS_TYPE", X(remote_domain_args),
     X(remote_domain_get_os_type_ret), h_get_os_type, 0},
    {REMOTE_PROC_DOMAIN_IS_ACTIVE, "DOMAIN_IS_ACTIVE", X(remote_domain_args), X(remote_int_ret),
     h_is_active, 0},
    {REMOTE_PROC_DOMAIN_IS_PERSISTENT, "DOMAIN_IS_PERSISTENT", X(remote_domain_args),
     X(remote_int_ret), h_is_persistent, 0},
    {REMOTE_PROC_DOMAIN_IS_UPDATED, "DOMAIN_IS_UPDATED", X(remote_domain_args), X(remote_int_ret),
     h_is_updated, 0},
    {REMOTE_PROC_DOMAIN_GET_AUTOSTART, "DOMAIN_GET_AUTOSTART", X(remote_domain_args),
     X(remote_int_ret), h_get_autostart, 0},
    {REMOTE_PROC_DOMAIN_SET_AUTOSTART, "DOMAIN_SET_AUTOSTART",
     X(remote_domain_set_autostart_args), VOID, h_set_autostart, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_HAS_MANAGED_SAVE_IMAGE, "DOMAIN_HAS_MANAGED_SAVE_IMAGE",
     X(remote_domain_flags_args), X(remote_int_ret), h_has_managed_save, 0},
    {REMOTE_PROC_DOMAIN_SNAPSHOT_NUM, "DOMAIN_SNAPSHOT_NUM", X(remote_domain_flags_args),
     X(remote_int_ret), h_snapshot_num, 0},
    {REMOTE_PROC_DOMAIN_SAVE, "DOMAIN_SAVE", X(remote_domain_save_args), VOID, h_save,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_SAVE_FLAGS, "DOMAIN_SAVE_FLAGS", X(remote_domain_save_flags_args), VOID,
     h_save_flags, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_RESTORE, "DOMAIN_RESTORE", X(remote_domain_restore_args), VOID,
     h_restore, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_RESTORE_FLAGS, "DOMAIN_RESTORE_FLAGS", X(remote_domain_restore_flags_args),
     VOID, h_restore_flags, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_SAVE_IMAGE_GET_XML_DESC, "DOMAIN_SAVE_IMAGE_GET_XML_DESC",
     X(remote_domain_save_image_get_xml_desc_args), X(remote_domain_save_image_get_xml_desc_ret),
     h_save_image_get_xml, 0},
    {REMOTE_PROC_DOMAIN_SAVE_IMAGE_DEFINE_XML, "DOMAIN_SAVE_IMAGE_DEFINE_XML",
     X(remote_domain_save_image_define_xml_args), VOID, h_save_image_define_xml, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MANAGED_SAVE, "DOMAIN_MANAGED_SAVE", X(remote_domain_flags_args), VOID,
     h_managed_save, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MANAGED_SAVE_REMOVE, "DOMAIN_MANAGED_SAVE_REMOVE",
     X(remote_domain_flags_args), VOID, h_managed_save_remove, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MANAGED_SAVE_GET_XML_DESC, "DOMAIN_MANAGED_SAVE_GET_XML_DESC",
     X(remote_domain_flags_args), X(remote_domain_get_xml_desc_ret), h_managed_save_get_xml, 0},
    {REMOTE_PROC_DOMAIN_MANAGED_SAVE_DEFINE_XML, "DOMAIN_MANAGED_SAVE_DEFINE_XML",
     X(remote_domain_managed_save_define_xml_args), VOID, h_managed_save_define_xml,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_DEFINE_XML, "DOMAIN_DEFINE_XML", X(remote_domain_define_xml_args),
     X(remote_domain_ret), h_define_xml, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_DEFINE_XML_FLAGS, "DOMAIN_DEFINE_XML_FLAGS",
     X(remote_domain_define_xml_flags_args), X(remote_domain_ret), h_define_xml_flags,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_CREATE_XML, "DOMAIN_CREATE_XML", X(remote_domain_create_xml_args),
     X(remote_domain_ret), h_create_xml, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_CREATE, "DOMAIN_CREATE", X(remote_domain_args), VOID, h_create,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_CREATE_WITH_FLAGS, "DOMAIN_CREATE_WITH_FLAGS",
     X(remote_domain_flags_args), X(remote_domain_ret), h_create_with_flags, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_UNDEFINE, "DOMAIN_UNDEFINE", X(remote_domain_args), VOID, h_undefine,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_UNDEFINE_FLAGS, "DOMAIN_UNDEFINE_FLAGS", X(remote_domain_flags_args),
     VOID, h_undefine_flags, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_DESTROY, "DOMAIN_DESTROY", X(remote_domain_args), VOID, h_destroy,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_DESTROY_FLAGS, "DOMAIN_DESTROY_FLAGS", X(remote_domain_flags_args), VOID,
     h_destroy_flags, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_SUSPEND, "DOMAIN_SUSPEND", X(remote_domain_args), VOID, h_suspend,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_RESUME, "DOMAIN_RESUME", X(remote_domain_args), VOID, h_resume,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_SHUTDOWN, "DOMAIN_SHUTDOWN", X(remote_domain_args), VOID, h_shutdown,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_REBOOT, "DOMAIN_REBOOT", X(remote_domain_reboot_args), VOID, h_reboot,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_OPEN_CONSOLE, "DOMAIN_OPEN_CONSOLE", X(remote_domain_open_console_args),
     VOID, h_open_console, PROC_WRITE},
    {REMOTE_PROC_CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
     "CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY",
     X(remote_connect_domain_event_callback_register_any_args),
     X(remote_connect_domain_event_callback_register_any_ret), h_event_callback_register, 0},
    {REMOTE_PROC_CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY,
     "CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY",
     X(remote_connect_domain_event_callback_deregister_any_args), VOID,
     h_event_callback_deregister, 0},
    {REMOTE_PROC_CONNECT_DOMAIN_EVENT_REGISTER_ANY, "CONNECT_DOMAIN_EVENT_REGISTER_ANY",
     X(remote_connect_domain_event_register_any_args), VOID, h_event_register, 0},
    {REMOTE_PROC_CONNECT_DOMAIN_EVENT_DEREGISTER_ANY, "CONNECT_DOMAIN_EVENT_DEREGISTER_ANY",
     X(remote_connect_domain_event_register_any_args), VOID, h_event_deregister, 0},
    {REMOTE_PROC_DOMAIN_GET_JOB_INFO, "DOMAIN_GET_JOB_INFO", X(remote_domain_args),
     X(remote_domain_get_job_info_ret), h_get_job_info, 0},
    {REMOTE_PROC_DOMAIN_GET_JOB_STATS, "DOMAIN_GET_JOB_STATS", X(remote_domain_flags_args),
     X(remote_domain_get_job_stats_ret), h_get_job_stats, 0},
    {REMOTE_PROC_DOMAIN_ABORT_JOB, "DOMAIN_ABORT_JOB", X(remote_domain_args), VOID, h_abort_job,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_ABORT_JOB_FLAGS, "DOMAIN_ABORT_JOB_FLAGS", X(remote_domain_flags_args),
     VOID, h_abort_job_flags, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MIGRATE_SET_MAX_SPEED, "DOMAIN_MIGRATE_SET_MAX_SPEED",
     X(remote_domain_migrate_set_max_speed_args), VOID, h_set_max_speed, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MIGRATE_GET_MAX_SPEED, "DOMAIN_MIGRATE_GET_MAX_SPEED",
     X(remote_domain_flags_args), X(remote_domain_migrate_get_max_speed_ret), h_get_max_speed, 0},
    {REMOTE_PROC_DOMAIN_MIGRATE_SET_MAX_DOWNTIME, "DOMAIN_MIGRATE_SET_MAX_DOWNTIME",
     X(remote_domain_migrate_set_max_downtime_args), VOID, h_set_max_downtime, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MIGRATE_GET_MAX_DOWNTIME, "DOMAIN_MIGRATE_GET_MAX_DOWNTIME",
     X(remote_domain_flags_args), X(remote_domain_migrate_get_max_downtime_ret),
     h_get_max_downtime, 0},
    {REMOTE_PROC_DOMAIN_MIGRATE_SET_COMPRESSION_CACHE, "DOMAIN_MIGRATE_SET_COMPRESSION_CACHE",
     X(remote_domain_migrate_set_compression_cache_args), VOID, h_set_compression_cache,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MIGRATE_GET_COMPRESSION_CACHE, "DOMAIN_MIGRATE_GET_COMPRESSION_CACHE",
     X(remote_domain_flags_args), X(remote_domain_migrate_get_compression_cache_ret),
     h_get_compression_cache, 0},
    {REMOTE_PROC_DOMAIN_MIGRATE_START_POST_COPY, "DOMAIN_MIGRATE_START_POST_COPY",
     X(remote_domain_flags_args), VOID, h_start_post_copy, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MIGRATE_BEGIN3_PARAMS, "DOMAIN_MIGRATE_BEGIN3_PARAMS",
     X(remote_domain_migrate_begin3_params_args), X(remote_domain_migrate_begin3_params_ret),
     h_migrate_begin3_params, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MIGRATE_PREPARE3_PARAMS, "DOMAIN_MIGRATE_PREPARE3_PARAMS",
     X(remote_domain_migrate_prepare3_params_args), X(remote_domain_migrate_prepare3_params_ret),
     h_migrate_prepare3_params, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MIGRATE_PREPARE_TUNNEL3_PARAMS, "DOMAIN_MIGRATE_PREPARE_TUNNEL3_PARAMS",
     X(remote_domain_migrate_prepare_tunnel3_params_args),
     X(remote_domain_migrate_prepare_tunnel3_params_ret), h_migrate_prepare_tunnel3_params,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MIGRATE_PERFORM3_PARAMS, "DOMAIN_MIGRATE_PERFORM3_PARAMS",
     X(remote_domain_migrate_perform3_params_args), X(remote_domain_migrate_perform3_params_ret),
     h_migrate_perform3_params, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MIGRATE_FINISH3_PARAMS, "DOMAIN_MIGRATE_FINISH3_PARAMS",
     X(remote_domain_migrate_finish3_params_args), X(remote_domain_migrate_finish3_params_ret),
     h_migrate_finish3_params, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_MIGRATE_CONFIRM3_PARAMS, "DOMAIN_MIGRATE_CONFIRM3_PARAMS",
     X(remote_domain_migrate_confirm3_params_args), VOID, h_migrate_confirm3_params, PROC_WRITE},
    /* objects ferry does not have (docs/api.md): empty lists, 0, not found, refused */
    {REMOTE_PROC_CONNECT_NUM_OF_NETWORKS, "CONNECT_NUM_OF_NETWORKS", VOID, X(remote_num_ret),
     h_void_ok, 0},
    {REMOTE_PROC_CONNECT_NUM_OF_DEFINED_NETWORKS, "CONNECT_NUM_OF_DEFINED_NETWORKS", VOID,
     X(remote_num_ret), h_void_ok, 0},
    {REMOTE_PROC_CONNECT_LIST_NETWORKS, "CONNECT_LIST_NETWORKS", X(remote_list_names_args),
     X(remote_list_names_ret), h_empty_names, 0},
    {REMOTE_PROC_CONNECT_LIST_DEFINED_NETWORKS, "CONNECT_LIST_DEFINED_NETWORKS",
     X(remote_list_names_args), X(remote_list_names_ret), h_empty_names, 0},
    {REMOTE_PROC_CONNECT_LIST_ALL_NETWORKS, "CONNECT_LIST_ALL_NETWORKS", X(remote_list_all_args),
     X(remote_connect_list_all_networks_ret), h_void_ok, 0},
    {REMOTE_PROC_NETWORK_LOOKUP_BY_NAME, "NETWORK_LOOKUP_BY_NAME", X(remote_lookup_by_name_args),
     X(remote_network_ret), h_network_by_name, 0},
    {REMOTE_PROC_NETWORK_LOOKUP_BY_UUID, "NETWORK_LOOKUP_BY_UUID", X(remote_lookup_by_uuid_args),
     X(remote_network_ret), h_network_by_uuid, 0},
    {REMOTE_PROC_NETWORK_CREATE_XML, "NETWORK_CREATE_XML", X(remote_define_xml_args),
     X(remote_network_ret), h_network_create, PROC_WRITE},
    {REMOTE_PROC_NETWORK_DEFINE_XML, "NETWORK_DEFINE_XML", X(remote_define_xml_args),
     X(remote_network_ret), h_network_define, PROC_WRITE},
    {REMOTE_PROC_NODE_NUM_OF_DEVICES, "NODE_NUM_OF_DEVICES", X(remote_node_num_of_devices_args),
     X(remote_num_ret), h_void_ok, 0},
    {REMOTE_PROC_NODE_LIST_DEVICES, "NODE_LIST_DEVICES", X(remote_node_list_devices_args),
     X(remote_list_names_ret), h_node_list_devices, 0},
    {REMOTE_PROC_CONNECT_LIST_ALL_NODE_DEVICES, "CONNECT_LIST_ALL_NODE_DEVICES",
     X(remote_list_all_args), X(remote_connect_list_all_node_devices_ret), h_void_ok, 0},
    {REMOTE_PROC_NODE_DEVICE_LOOKUP_BY_NAME, "NODE_DEVICE_LOOKUP_BY_NAME",
     X(remote_lookup_by_name_args), X(remote_node_device_ret), h_nodedev_by_name, 0},
    {REMOTE_PROC_NODE_DEVICE_CREATE_XML, "NODE_DEVICE_CREATE_XML",
     X(remote_define_xml_flags_args), X(remote_node_device_ret), h_nodedev_create, PROC_WRITE},
    {REMOTE_PROC_CONNECT_NUM_OF_INTERFACES, "CONNECT_NUM_OF_INTERFACES", VOID, X(remote_num_ret),
     h_void_ok, 0},
    {REMOTE_PROC_CONNECT_NUM_OF_DEFINED_INTERFACES, "CONNECT_NUM_OF_DEFINED_INTERFACES", VOID,
     X(remote_num_ret), h_void_ok, 0},
    {REMOTE_PROC_CONNECT_LIST_INTERFACES, "CONNECT_LIST_INTERFACES", X(remote_list_names_args),
     X(remote_list_names_ret), h_empty_names, 0},
    {REMOTE_PROC_CONNECT_LIST_DEFINED_INTERFACES, "CONNECT_LIST_DEFINED_INTERFACES",
     X(remote_list_names_args), X(remote_list_names_ret), h_empty_names, 0},
    {REMOTE_PROC_CONNECT_LIST_ALL_INTERFACES, "CONNECT_LIST_ALL_INTERFACES",
     X(remote_list_all_args), X(remote_connect_list_all_interfaces_ret), h_void_ok, 0},
    {REMOTE_PROC_INTERFACE_LOOKUP_BY_NAME, "INTERFACE_LOOKUP_BY_NAME",
     X(remote_lookup_by_name_args), X(remote_interface_ret), h_iface_by_name, 0},
    {REMOTE_PROC_INTERFACE_LOOKUP_BY_MAC_STRING, "INTERFACE_LOOKUP_BY_MAC_STRING",
     X(remote_lookup_by_name_args), X(remote_interface_ret), h_iface_by_mac, 0},
    {REMOTE_PROC_INTERFACE_DEFINE_XML, "INTERFACE_DEFINE_XML", X(remote_define_xml_flags_args),
     X(remote_interface_ret), h_iface_define, PROC_WRITE},
    {REMOTE_PROC_CONNECT_NUM_OF_NWFILTERS, "CONNECT_NUM_OF_NWFILTERS", VOID, X(remote_num_ret),
     h_void_ok, 0},
    {REMOTE_PROC_CONNECT_LIST_NWFILTERS, "CONNECT_LIST_NWFILTERS", X(remote_list_names_args),
     X(remote_list_names_ret), h_empty_names, 0},
    {REMOTE_PROC_CONNECT_LIST_ALL_NWFILTERS, "CONNECT_LIST_ALL_NWFILTERS",
     X(remote_list_all_args), X(remote_connect_list_all_nwfilters_ret), h_void_ok, 0},
    {REMOTE_PROC_NWFILTER_LOOKUP_BY_NAME, "NWFILTER_LOOKUP_BY_NAME",
     X(remote_lookup_by_name_args), X(remote_nwfilter_ret), h_nwfilter_by_name, 0},
    {REMOTE_PROC_NWFILTER_LOOKUP_BY_UUID, "NWFILTER_LOOKUP_BY_UUID",
     X(remote_lookup_by_uuid_args), X(remote_nwfilter_ret), h_nwfilter_by_uuid, 0},
    {REMOTE_PROC_NWFILTER_DEFINE_XML, "NWFILTER_DEFINE_XML", X(remote_define_xml_args),
     X(remote_nwfilter_ret), h_nwfilter_define, PROC_WRITE},
    {REMOTE_PROC_CONNECT_LIST_ALL_NWFILTER_BINDINGS, "CONNECT_LIST_ALL_NWFILTER_BINDINGS",
     X(remote_list_all_args), X(remote_connect_list_all_nwfilter_bindings_ret), h_void_ok, 0},
    {REMOTE_PROC_NWFILTER_BINDING_LOOKUP_BY_PORT_DEV, "NWFILTER_BINDING_LOOKUP_BY_PORT_DEV",
     X(remote_lookup_by_name_args), X(remote_nwfilter_binding_ret), h_nwfilter_binding_by_port,
     0},
    {REMOTE_PROC_NWFILTER_BINDING_CREATE_XML, "NWFILTER_BINDING_CREATE_XML",
     X(remote_define_xml_flags_args), X(remote_nwfilter_binding_ret), h_nwfilter_binding_create,
     PROC_WRITE},
    {REMOTE_PROC_CONNECT_NUM_OF_SECRETS, "CONNECT_NUM_OF_SECRETS", VOID, X(remote_num_ret),
     h_void_ok, 0},
    {REMOTE_PROC_CONNECT_LIST_SECRETS, "CONNECT_LIST_SECRETS", X(remote_list_names_args),
     X(remote_list_names_ret), h_empty_names, 0},
    {REMOTE_PROC_CONNECT_LIST_ALL_SECRETS, "CONNECT_LIST_ALL_SECRETS", X(remote_list_all_args),
     X(remote_connect_list_all_secrets_ret), h_void_ok, 0},
    {REMOTE_PROC_SECRET_LOOKUP_BY_UUID, "SECRET_LOOKUP_BY_UUID", X(remote_lookup_by_uuid_args),
     X(remote_secret_ret), h_secret_by_uuid, 0},
    {REMOTE_PROC_SECRET_LOOKUP_BY_USAGE, "SECRET_LOOKUP_BY_USAGE",
     X(remote_secret_lookup_by_usage_args), X(remote_secret_ret), h_secret_by_usage, 0},
    {REMOTE_PROC_SECRET_DEFINE_XML, "SECRET_DEFINE_XML", X(remote_define_xml_flags_args),
     X(remote_secret_ret), h_secret_define, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_LIST_ALL_SNAPSHOTS, "DOMAIN_LIST_ALL_SNAPSHOTS",
     X(remote_domain_list_all_args), X(remote_domain_list_all_snapshots_ret),
     h_domain_list_all_empty, 0},
    {REMOTE_PROC_DOMAIN_SNAPSHOT_LIST_NAMES, "DOMAIN_SNAPSHOT_LIST_NAMES",
     X(remote_domain_list_names_args), X(remote_list_names_ret), h_snapshot_list_names, 0},
    {REMOTE_PROC_DOMAIN_SNAPSHOT_LOOKUP_BY_NAME, "DOMAIN_SNAPSHOT_LOOKUP_BY_NAME",
     X(remote_domain_object_lookup_args), X(remote_domain_snapshot_ret), h_snapshot_by_name, 0},
    {REMOTE_PROC_DOMAIN_HAS_CURRENT_SNAPSHOT, "DOMAIN_HAS_CURRENT_SNAPSHOT",
     X(remote_domain_flags_args), X(remote_int_ret), h_has_current_snapshot, 0},
    {REMOTE_PROC_DOMAIN_SNAPSHOT_CURRENT, "DOMAIN_SNAPSHOT_CURRENT", X(remote_domain_flags_args),
     X(remote_domain_snapshot_ret), h_snapshot_current, 0},
    {REMOTE_PROC_DOMAIN_SNAPSHOT_CREATE_XML, "DOMAIN_SNAPSHOT_CREATE_XML",
     X(remote_domain_object_create_args), X(remote_domain_snapshot_ret), h_snapshot_create,
     PROC_WRITE},
    {REMOTE_PROC_DOMAIN_LIST_ALL_CHECKPOINTS, "DOMAIN_LIST_ALL_CHECKPOINTS",
     X(remote_domain_list_all_args), X(remote_domain_list_all_checkpoints_ret),
     h_domain_list_all_empty, 0},
    {REMOTE_PROC_DOMAIN_CHECKPOINT_LOOKUP_BY_NAME, "DOMAIN_CHECKPOINT_LOOKUP_BY_NAME",
     X(remote_domain_object_lookup_args), X(remote_domain_checkpoint_ret), h_checkpoint_by_name,
     0},
    {REMOTE_PROC_DOMAIN_CHECKPOINT_CREATE_XML, "DOMAIN_CHECKPOINT_CREATE_XML",
     X(remote_domain_object_create_args), X(remote_domain_checkpoint_ret), h_checkpoint_create,
     PROC_WRITE},
    {REMOTE_PROC_CONNECT_GET_DOMAIN_CAPABILITIES, "CONNECT_GET_DOMAIN_CAPABILITIES",
     X(remote_connect_get_domain_capabilities_args), X(remote_connect_get_domain_capabilities_ret),
     h_get_domain_capabilities, 0},
    {REMOTE_PROC_CONNECT_GET_ALL_DOMAIN_STATS, "CONNECT_GET_ALL_DOMAIN_STATS",
     X(remote_connect_get_all_domain_stats_args), X(remote_connect_get_all_domain_stats_ret),
     h_get_all_domain_stats, 0},
    {REMOTE_PROC_DOMAIN_MEMORY_STATS, "DOMAIN_MEMORY_STATS", X(remote_domain_memory_stats_args),
     X(remote_domain_memory_stats_ret), h_memory_stats, 0},
    {REMOTE_PROC_DOMAIN_GET_VCPUS, "DOMAIN_GET_VCPUS", X(remote_domain_get_vcpus_args),
     X(remote_domain_get_vcpus_ret), h_get_vcpus, 0},
    {REMOTE_PROC_DOMAIN_GET_VCPUS_FLAGS, "DOMAIN_GET_VCPUS_FLAGS", X(remote_domain_flags_args),
     X(remote_domain_get_vcpus_flags_ret), h_get_vcpus_flags, 0},
    {REMOTE_PROC_DOMAIN_BLOCK_STATS, "DOMAIN_BLOCK_STATS", X(remote_domain_block_stats_args),
     X(remote_domain_block_stats_ret), h_block_stats, 0},
    {REMOTE_PROC_DOMAIN_INTERFACE_STATS, "DOMAIN_INTERFACE_STATS",
     X(remote_domain_interface_stats_args), X(remote_domain_interface_stats_ret),
     h_interface_stats, 0},
    {REMOTE_PROC_DOMAIN_GET_VCPU_PIN_INFO, "DOMAIN_GET_VCPU_PIN_INFO",
     X(remote_domain_get_vcpu_pin_info_args), X(remote_domain_get_vcpu_pin_info_ret),
     h_get_vcpu_pin_info, 0},
    {REMOTE_PROC_DOMAIN_PIN_VCPU, "DOMAIN_PIN_VCPU", X(remote_domain_pin_vcpu_args), VOID,
     h_pin_vcpu, PROC_WRITE},
    {REMOTE_PROC_DOMAIN_PIN_VCPU_FLAGS, "DOMAIN_PIN_VCPU_FLAGS",
     X(remote_domain_pin_vcpu_flags_args), VOID, h_pin_vcpu_flags, PROC_WRITE},
    {REMOTE_PROC_NODE_GET_CPU_MAP, "NODE_GET_CPU_MAP", X(remote_node_get_cpu_map_args),
     X(remote_node_get_cpu_map_ret), h_node_get_cpu_map, 0},
    {REMOTE_PROC_DOMAIN_SCREENSHOT, "DOMAIN_SCREENSHOT", X(remote_domain_screenshot_args),
     X(remote_domain_screenshot_ret), h_screenshot, PROC_WRITE},
};

#define PROC_TABLE_SIZE 512
static const RemoteProcedure *proc_index[PROC_TABLE_SIZE];
static GOnce index_once = G_ONCE_INIT;

static void index_table(const RemoteProcedure *table, guint n)
{
    for (guint i = 0; i < n; i++) {
        g_assert(table[i].proc > 0 && table[i].proc < PROC_TABLE_SIZE);
        g_assert(!proc_index[table[i].proc]);
        proc_index[table[i].proc] = &table[i];
    }
}

static gpointer build_index(gpointer data)
{
    index_table(procedures, G_N_ELEMENTS(procedures));
    guint n = 0;
    const RemoteProcedure *storage = remote_storage_procedures(&n);
    index_table(storage, n);
    return NULL;
}

static const RemoteProcedure *find_procedure(int proc)
{
    g_once(&index_once, build_index, NULL);
    return proc > 0 && proc < PROC_TABLE_SIZE ? proc_index[proc] : NULL;
}

gboolean remote_dispatch_has_procedure(int proc)
{
    return find_procedure(proc) != NULL;
}

/* Checks whether this client may make this call now. */
static gboolean check_access(RemoteContext *ctx, const RemoteProcedure *p, GError **error)
{
    RemoteSession *s = ctx->session;
    g_mutex_lock(&s->lock);
    gboolean authenticated = s->authenticated;
    gboolean readonly = s->readonly;
    ctx->drv = s->driver;
    g_mutex_unlock(&s->lock);

    if (!authenticated && !(p->flags & PROC_PREAUTH)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "authentication required");
        return FALSE;
    }
    if (!ctx->drv && !(p->flags & PROC_NO_OPEN)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "connection not open: call CONNECT_OPEN before %s", p->name);
        return FALSE;
    }
    if (readonly && (p->flags & PROC_WRITE)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_DENIED,
                    "read only access prevents %s", p->name);
        return FALSE;
    }
    return TRUE;
}

/* Runs the call's procedure p (NULL: unknown) and sends the reply. */
static void dispatch_call(RpcServerClient *client, RpcMessage *call, const RemoteProcedure *p)
{
    g_autoptr(RpcMessage) msg = call;
    g_autoptr(GError) error = NULL;
    RemoteContext ctx = {.client = client,
                         .session = rpc_server_client_get_private(client),
                         .call = msg};
    RpcMessage *reply = NULL;

    if (!p) {
        g_set_error(&error, FERRY_ERROR, FERRY_ERR_RPC, "unknown procedure: %d",
                    msg->header.proc);
    } else if (check_access(&ctx, p, &error)) {
        g_autofree void *args = g_malloc0(MAX(p->args_size, 1));
        g_autofree void *ret = g_malloc0(MAX(p->ret_size, 1));
        if (rpc_message_decode(msg, p->args_filter, args, &error)) {
            driver_client_set_current(ctx.session->client_id);
            gboolean ok = p->handler(&ctx, args, ret, &error);
            driver_client_set_current(0);
            xdr_free(p->args_filter, args);
            if (ctx.auth.authenticated) {
                g_mutex_lock(&ctx.session->lock);
                ctx.session->authenticated = TRUE;
                g_mutex_unlock(&ctx.session->lock);
            }
            if (ok) {
                reply = rpc_message_new(256);
                reply->header = msg->header;
                reply->header.type = RPC_REPLY;
                reply->header.status = RPC_OK;
                if (!rpc_message_encode(reply, p->ret_filter, ret, &error))
                    g_clear_pointer(&reply, rpc_message_free);
            }
            xdr_free(p->ret_filter, ret);
        }
    }

    if (!reply) {
        if (!error)
            g_set_error(&error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                        "procedure %d failed without saying why", msg->header.proc);
        FERRY_DEBUG("%s: %s (proc %d) failed: %s", rpc_server_client_get_peer(client),
                    p ? p->name : "?", msg->header.proc, error->message);
        reply = rpc_message_new_error(&msg->header, RPC_REPLY, error);
    }
    if (ctx.auth.layer) {
        /* The SASL layer encodes what follows this reply, not the reply. */
        reply->after_write = remote_auth_layer_reply_written;
        reply->after_write_data = rpc_server_client_get_transport(client);
    }
    if (ctx.auth.reply_delay_us > 0)
        remote_auth_reply_later(client, reply, ctx.auth.reply_delay_us);
    else
        rpc_server_client_reply(client, reply);
}

static void remote_call(RpcServerClient *client, RpcMessage *call, gpointer data)
{
    dispatch_call(client, call, find_procedure(call->header.proc));
}

GArray *remote_dispatch_list_procedures(void)
{
    g_once(&index_once, build_index, NULL);
    GArray *a = g_array_new(FALSE, FALSE, sizeof(int));
    for (int proc = 1; proc < PROC_TABLE_SIZE; proc++)
        if (proc_index[proc])
            g_array_append_val(a, proc);
    return a;
}

gboolean remote_dispatch_get_filters(int proc, xdrproc_t *args, gsize *args_size,
                                     xdrproc_t *ret, gsize *ret_size)
{
    const RemoteProcedure *p = find_procedure(proc);
    if (!p)
        return FALSE;
    *args = p->args_filter;
    *args_size = p->args_size;
    *ret = p->ret_filter;
    *ret_size = p->ret_size;
    return TRUE;
}

/* STREAM packets and ferry credit messages go to the client's streams; a
 * packet for an unknown or finished stream is dropped unanswered. */
static void remote_stream_packet(RpcServerClient *client, RpcMessage *msg, gpointer data)
{
    RemoteSession *s = rpc_server_client_get_private(client);
    tunnel_router_deliver(s->router, msg);
}

/* ---- ferry's own program: a destination's flight record for its source ----
 * A source ferryd fetches the record of a migration it ran, by the id it
 * chose (docs/debugging.md): authenticated, opened, writable, as for the
 * migration calls themselves. */

static gboolean h_flight_record(RemoteContext *ctx, void *a, void *r, GError **error)
{
    RemoteFlightRecordArgs *args = a;
    RemoteFlightRecordRet *ret = r;
    char *text = flight_recorder_lookup(args->id);
    if (!text) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT, "no flight record '%s' here",
                    args->id ? args->id : "");
        return FALSE;
    }
    if (strlen(text) > REMOTE_FLIGHT_RECORD_MAX)
        text[REMOTE_FLIGHT_RECORD_MAX] = '\0'; /* the reader drops a cut line */
    ret->now_us = g_get_real_time();
    ret->record = text; /* freed by xdr_free after the reply is encoded */
    return TRUE;
}

/* ---- ferry's own program: the pre-flight probe (docs/debugging.md) ----
 * Authenticated and opened like any call, refused on a read-only
 * connection: a discard channel takes the daemon's network and CPU, and a
 * probe makes it connect out with its own credentials, as a migration. */

static gboolean h_probe_discard_stream(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(probe_discard_stream);
    /* Reserved before the driver runs: the first data packet may follow
     * the reply at once. */
    g_autoptr(TunnelBinding) binding = tunnel_router_reserve(
        ctx->session->router, rpc_server_client_get_connection(ctx->client), &ctx->call->header);
    if (!ctx->drv->ops->probe_discard_stream(
            ctx->drv, ((ferry_probe_discard_args *)a)->max_bytes, binding, error)) {
        tunnel_binding_cancel(binding);
        return FALSE;
    }
    return TRUE;
}

static gboolean h_probe_discard_data(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(probe_discard_data);
    ferry_probe_discard_args *args = a;
    ferry_probe_discard_data_ret *ret = r;
    return ctx->drv->ops->probe_discard_data(ctx->drv, args->max_bytes, args->tls != 0, &ret->uri,
                                             &ret->token, error);
}

static void probe_channel_result(const DriverProbeChannelResult *in,
                                 ferry_probe_channel_result *out)
{
    out->bytes = in->bytes;
    out->usec = in->usec;
    if (in->error) {
        out->error = g_new(char *, 1);
        *out->error = g_strdup(in->error);
    }
}

static gboolean h_probe_path(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(probe_path);
    ferry_probe_path_args *args = a;
    ferry_probe_path_ret *ret = r;
    /* The daemon connects with its own credentials: a client must not point
     * it at files of its choosing (as for a migration's destination URI). */
    if (!remote_uri_check_from_client(args->dconnuri, error))
        return FALSE;
    if (args->rtt_samples < 0 || args->rtt_samples > FERRY_PROBE_RTT_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "a probe takes 0 to %d round-trip samples, not %d", FERRY_PROBE_RTT_MAX,
                    args->rtt_samples);
        return FALSE;
    }
    DriverProbeRequest req = {.bytes = args->bytes,
                              .seconds = args->seconds,
                              .flags = args->flags,
                              .rtt_samples = (guint)args->rtt_samples};
    g_auto(DriverProbeResult) res = {0};
    if (!ctx->drv->ops->probe_path(ctx->drv, args->dconnuri, &req, &res, error))
        return FALSE;
    ret->rtt_usec.rtt_usec_len = res.n_rtt;
    ret->rtt_usec.rtt_usec_val = g_new0(guint64, MAX(res.n_rtt, 1));
    memcpy(ret->rtt_usec.rtt_usec_val, res.rtt_usec, res.n_rtt * sizeof(guint64));
    probe_channel_result(&res.tunnel, &ret->tunnel);
    probe_channel_result(&res.proxy, &ret->proxy);
    return TRUE;
}

static gboolean h_probe_dirty_rate(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(probe_dirty_rate);
    ARG_DOMAIN(ferry_probe_dirty_rate_args);
    ferry_probe_dirty_rate_ret *ret = r;
    g_auto(DriverDirtyRate) rate = {0};
    if (!ctx->drv->ops->probe_dirty_rate(ctx->drv, &dom,
                                         ((ferry_probe_dirty_rate_args *)a)->seconds, &rate, error))
        return FALSE;
    ret->bytes_per_second = rate.bytes_per_second;
    ret->memory_bytes = rate.memory_bytes;
    ret->downtime_ms = rate.downtime_ms;
    ret->method = g_strdup(rate.method ? rate.method : "");
    return TRUE;
}

/* ---- ferry's own program: a source comes back to its migration ----
 * After the daemons' connection broke mid-stream, the source reconnects
 * (authenticated and opened as any migration call) and names the migration
 * by the token the destination gave it in the prepare cookie. The stream
 * moves to this connection under this call's serial (its slot reserved
 * first: data may follow the reply at once). */

static gboolean h_tunnel_resume(RemoteContext *ctx, void *a, void *r, GError **error)
{
    TunnelResumeArgs *args = a;
    TunnelResumePoint *ret = r;
    RpcHeader h;
    if (!tunnel_resume_lookup_header(args->token, &h)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT,
                    "no migration here waits for a resumed connection with this token");
        return FALSE;
    }
    h.type = RPC_STREAM;
    h.status = RPC_CONTINUE;
    h.serial = ctx->call->header.serial;
    RpcConnection *conn = rpc_server_client_get_connection(ctx->client);
    rpc_socket_tune_peer(rpc_connection_get_transport(conn)->fd);
    g_autoptr(TunnelBinding) binding = tunnel_router_reserve(ctx->session->router, conn, &h);
    g_autofree char *who = caller_identity(ctx);
    if (!tunnel_resume_accept(args->token, binding, who, &args->point, ret, error)) {
        tunnel_binding_cancel(binding);
        return FALSE;
    }
    FERRY_INFO("the source %s resumed a migration stream (it had received %" G_GUINT64_FORMAT
               " bytes, this side %" G_GUINT64_FORMAT ")",
               rpc_server_client_get_peer(ctx->client), args->point.received, ret->received);
    return TRUE;
}

/* Proxy mode: the source's connection comes back to its migration (its
 * data connection resumes on its own). */
static gboolean h_proxy_resume(RemoteContext *ctx, void *a, void *r, GError **error)
{
    TunnelResumeArgs *args = a;
    TunnelResumePoint *ret = r;
    RpcConnection *conn = rpc_server_client_get_connection(ctx->client);
    rpc_socket_tune_peer(rpc_connection_get_transport(conn)->fd);
    g_autofree char *who = caller_identity(ctx);
    if (!tunnel_resume_accept_control(args->token, conn, who, error))
        return FALSE;
    memset(ret, 0, sizeof(*ret));
    FERRY_INFO("the source %s resumed a migration's connection",
               rpc_server_client_get_peer(ctx->client));
    return TRUE;
}

/* ---- ferry's own program: a migration's extra channel ----
 * Reserved before the driver runs, as prepare's stream is: the first data
 * packet may follow the reply at once. */
static gboolean h_migration_channel(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_OP(migrate_open_channel);
    ferry_migration_channel_args *args = a;
    g_autoptr(TunnelBinding) binding = tunnel_router_reserve(
        ctx->session->router, rpc_server_client_get_connection(ctx->client), &ctx->call->header);
    if (!ctx->drv->ops->migrate_open_channel(ctx->drv, args->name, args->token, args->index,
                                             binding, error)) {
        tunnel_binding_cancel(binding);
        return FALSE;
    }
    FERRY_INFO("channel %u of the incoming migration of domain '%s' opened by %s", args->index,
               args->name, rpc_server_client_get_peer(ctx->client));
    return TRUE;
}

static const RemoteProcedure ferry_procedures[] = {
    {FERRY_TUNNEL_PROC_RESUME, "FERRY_TUNNEL_RESUME", (xdrproc_t)tunnel_resume_xdr_args,
     sizeof(TunnelResumeArgs), (xdrproc_t)tunnel_resume_xdr_point, sizeof(TunnelResumePoint),
     h_tunnel_resume, PROC_WRITE},
    {FERRY_PROXY_PROC_RESUME, "FERRY_PROXY_RESUME", (xdrproc_t)tunnel_resume_xdr_args,
     sizeof(TunnelResumeArgs), (xdrproc_t)tunnel_resume_xdr_point, sizeof(TunnelResumePoint),
     h_proxy_resume, PROC_WRITE},
    {FERRY_PROC_PROBE_DISCARD_STREAM, "FERRY_PROBE_DISCARD_STREAM", X(ferry_probe_discard_args),
     VOID, h_probe_discard_stream, PROC_WRITE},
    {FERRY_PROC_PROBE_DISCARD_DATA, "FERRY_PROBE_DISCARD_DATA", X(ferry_probe_discard_args),
     X(ferry_probe_discard_data_ret), h_probe_discard_data, PROC_WRITE},
    {FERRY_PROC_PROBE_PATH, "FERRY_PROBE_PATH", X(ferry_probe_path_args),
     X(ferry_probe_path_ret), h_probe_path, PROC_WRITE},
    {FERRY_PROC_PROBE_DIRTY_RATE, "FERRY_PROBE_DIRTY_RATE", X(ferry_probe_dirty_rate_args),
     X(ferry_probe_dirty_rate_ret), h_probe_dirty_rate, PROC_WRITE},
    {FERRY_PROC_MIGRATION_CHANNEL, "FERRY_MIGRATION_CHANNEL", X(ferry_migration_channel_args),
     VOID, h_migration_channel, PROC_WRITE},
    {FERRY_TUNNEL_PROC_FLIGHT_RECORD, "FERRY_FLIGHT_RECORD",
     (xdrproc_t)remote_xdr_flight_record_args, sizeof(RemoteFlightRecordArgs),
     (xdrproc_t)remote_xdr_flight_record_ret, sizeof(RemoteFlightRecordRet), h_flight_record,
     PROC_WRITE},
};

static void ferry_tunnel_call(RpcServerClient *client, RpcMessage *call, gpointer data)
{
    const RemoteProcedure *p = NULL;
    for (guint i = 0; i < G_N_ELEMENTS(ferry_procedures); i++)
        if (ferry_procedures[i].proc == call->header.proc)
            p = &ferry_procedures[i];
    dispatch_call(client, call, p);
}

void remote_dispatch_register(RpcServer *server)
{
    RpcServerProgram prog = {
        .prog = REMOTE_PROGRAM,
        .vers = REMOTE_PROTOCOL_VERSION,
        .call = remote_call,
        .stream = remote_stream_packet,
    };
    rpc_server_add_program(server, &prog);
    RpcServerProgram ferry = {
        .prog = FERRY_TUNNEL_PROGRAM,
        .vers = FERRY_TUNNEL_VERSION,
        .call = ferry_tunnel_call,
        .stream = remote_stream_packet,
        .message = remote_stream_packet,
    };
    rpc_server_add_program(server, &ferry);
    rpc_server_set_client_init(server, session_init, NULL);
}
