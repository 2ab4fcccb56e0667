/* Peer-to-peer migration, source side of the wire: connect to the
 * destination URI, open it, and make the version 3 calls whose stream this
 * connection routes. */
#include "remote/remote-migration-peer.h"

#include <string.h>

#include "remote/remote-convert.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-client.h"
#include "tunnel/tunnel-router.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "remote.peer"

#define CALL_TIMEOUT_MS 30000
#define KEEPALIVE_INTERVAL 5
#define KEEPALIVE_COUNT 5

struct MigrationPeer {
    RpcClient *client;
    TunnelRouter *router;
    char *description;
};

static void peer_on_stream(RpcClient *client, RpcMessage *msg, gpointer data)
{
    MigrationPeer *peer = data;
    tunnel_router_deliver(peer->router, msg);
}

static void peer_on_event(RpcClient *client, RpcMessage *msg, gpointer data)
{
    MigrationPeer *peer = data;
    /* Borrowed: the client frees it. Credit messages are copied to the stream. */
    if (msg->header.prog == FERRY_TUNNEL_PROGRAM) {
        RpcMessage *copy = rpc_message_new(rpc_message_payload_len(msg));
        memcpy(copy->buf, msg->buf, msg->len);
        copy->len = msg->len;
        copy->header = msg->header;
        tunnel_router_deliver(peer->router, copy);
    }
}

static void peer_on_close(RpcClient *client, const GError *why, gpointer data)
{
    MigrationPeer *peer = data;
    tunnel_router_connection_closed(peer->router, why);
}

/* The CONNECT_OPEN name for a URI, as the libvirt client derives it:
 * scheme without its transport, no host or port, path and the query that is
 * not the client's own. */
static char *open_name(GUri *uri)
{
    g_autofree char *scheme = g_strdup(g_uri_get_scheme(uri));
    char *plus = strchr(scheme, '+');
    if (plus)
        *plus = '\0';
    if (g_str_equal(scheme, "remote"))
        return g_strdup("");
    GString *name = g_string_new(scheme);
    g_string_append(name, "://");
    g_string_append(name, g_uri_get_path(uri));
    const char *query = g_uri_get_query(uri);
    if (query) {
        g_auto(GStrv) parts = g_strsplit(query, "&", -1);
        gboolean first = TRUE;
        for (char **p = parts; *p; p++) {
            static const char *const consumed[] = {"socket=", "pkipath=", "no_verify=",
                                                   "no_sanity=", "auth=", "authfile=",
                                                   "keepalive_interval=", NULL};
            gboolean skip = FALSE;
            for (int i = 0; consumed[i]; i++)
                skip |= g_str_has_prefix(*p, consumed[i]);
            if (skip || !**p)
                continue;
            g_string_append_c(name, first ? '?' : '&');
            g_string_append(name, *p);
            first = FALSE;
        }
    }
    return g_string_free(name, FALSE);
}

static char *query_param(GUri *uri, const char *key)
{
    const char *query = g_uri_get_query(uri);
    if (!query)
        return NULL;
    g_autoptr(GHashTable) params = g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, NULL);
    return params ? g_strdup(g_hash_table_lookup(params, key)) : NULL;
}

static gboolean call(MigrationPeer *peer, int proc, xdrproc_t args_filter, void *args,
                     xdrproc_t ret_filter, void *ret, GError **error)
{
    return rpc_client_call(peer->client, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc,
                           args_filter, args, ret_filter, ret, CALL_TIMEOUT_MS, error);
}

static void peer_close(MigrationPeer *peer)
{
    if (!peer)
        return;
    if (peer->client) {
        if (rpc_client_is_open(peer->client))
            rpc_client_call(peer->client, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
                            REMOTE_PROC_CONNECT_CLOSE, NULL, NULL, NULL, NULL, 2000, NULL);
        rpc_client_free(peer->client);
    }
    tunnel_router_free(peer->router);
    g_free(peer->description);
    g_free(peer);
}

static MigrationPeer *peer_open(const char *uri_text, GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(GUri) uri = g_uri_parse(uri_text, G_URI_FLAGS_ENCODED_QUERY, &local);
    if (!uri) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "cannot parse destination URI '%s': %s", uri_text, local->message);
        return NULL;
    }
    const char *scheme = g_uri_get_scheme(uri);
    const char *transport = strchr(scheme, '+') ? strchr(scheme, '+') + 1 : NULL;
    const char *host = g_uri_get_host(uri);
    MigrationPeer *peer = g_new0(MigrationPeer, 1);
    peer->router = tunnel_router_new();
    RpcClientCallbacks cb = {.on_stream = peer_on_stream, .on_event = peer_on_event,
                             .on_close = peer_on_close, .data = peer};

    if (transport && g_str_equal(transport, "unix")) {
        g_autofree char *path = query_param(uri, "socket");
        if (!path)
            path = g_strdup("/var/run/libvirt/libvirt-sock");
        peer->description = g_strdup_printf("destination ferryd at %s", path);
        peer->client = rpc_client_connect_unix(path, &cb, error);
    } else if (transport && g_str_equal(transport, "tcp")) {
        if (!host || !*host) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "destination URI '%s' has no host", uri_text);
            peer_close(peer);
            return NULL;
        }
        int port = g_uri_get_port(uri) > 0 ? g_uri_get_port(uri) : 16509;
        peer->description = g_strdup_printf("destination ferryd at %s:%d", host, port);
        peer->client = rpc_client_connect_tcp(host, (guint16)port, 10000, &cb, error);
    } else {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "transport '%s' of destination URI '%s' is not supported (use +tcp or +unix)",
                    transport ? transport : "tls", uri_text);
        peer_close(peer);
        return NULL;
    }
    if (!peer->client) {
        g_prefix_error(error, "cannot reach the destination: ");
        peer_close(peer);
        return NULL;
    }

    remote_auth_list_ret auth = {0};
    if (!call(peer, REMOTE_PROC_AUTH_LIST, NULL, NULL, (xdrproc_t)xdr_remote_auth_list_ret, &auth,
              error)) {
        peer_close(peer);
        return NULL;
    }
    gboolean needs_sasl = auth.types.types_len > 0 && auth.types.types_val[0] == REMOTE_AUTH_SASL;
    xdr_free((xdrproc_t)xdr_remote_auth_list_ret, (char *)&auth);
    if (needs_sasl) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "the %s requires SASL authentication, which this source cannot do yet",
                    peer->description);
        peer_close(peer);
        return NULL;
    }

    remote_connect_supports_feature_args fa = {.feature = 10};
    remote_connect_supports_feature_ret fr = {0};
    if (call(peer, REMOTE_PROC_CONNECT_SUPPORTS_FEATURE,
             (xdrproc_t)xdr_remote_connect_supports_feature_args, &fa,
             (xdrproc_t)xdr_remote_connect_supports_feature_ret, &fr, NULL) &&
        fr.supported)
        rpc_client_start_keepalive(peer->client, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT);

    g_autofree char *name = open_name(uri);
    remote_connect_open_args oa = {.name = &name, .flags = 0};
    if (!call(peer, REMOTE_PROC_CONNECT_OPEN, (xdrproc_t)xdr_remote_connect_open_args, &oa, NULL,
              NULL, error)) {
        g_prefix_error(error, "the %s refused to open '%s': ", peer->description, name);
        peer_close(peer);
        return NULL;
    }
    return peer;
}

static int peer_supports_feature(MigrationPeer *peer, int feature, GError **error)
{
    remote_connect_supports_feature_args a = {.feature = feature};
    remote_connect_supports_feature_ret r = {0};
    if (!call(peer, REMOTE_PROC_CONNECT_SUPPORTS_FEATURE,
              (xdrproc_t)xdr_remote_connect_supports_feature_args, &a,
              (xdrproc_t)xdr_remote_connect_supports_feature_ret, &r, error))
        return -1;
    return r.supported ? 1 : 0;
}

typedef struct {
    MigrationPeer *peer;
    TunnelBinding *binding;
} ReserveCtx;

static void reserve_slot(guint32 serial, gpointer data)
{
    ReserveCtx *rc = data;
    RpcHeader h = {.prog = REMOTE_PROGRAM, .vers = REMOTE_PROTOCOL_VERSION,
                   .proc = REMOTE_PROC_DOMAIN_MIGRATE_PREPARE_TUNNEL3_PARAMS,
                   .type = RPC_STREAM, .serial = serial, .status = RPC_CONTINUE};
    rc->binding = tunnel_router_reserve(rc->peer->router,
                                        rpc_client_get_connection(rc->peer->client), &h);
}

static gboolean peer_prepare_tunnel(MigrationPeer *peer, GPtrArray *params, GBytes *cookie_in,
                                    guint flags, GBytes **cookie_out, TunnelBinding **binding,
                                    GError **error)
{
    remote_domain_migrate_prepare_tunnel3_params_args a = {0};
    remote_params_from_driver(params, &a.params.params_val, &a.params.params_len);
    remote_cookie_from_bytes(cookie_in, &a.cookie_in.cookie_in_val, &a.cookie_in.cookie_in_len);
    a.flags = flags;
    remote_domain_migrate_prepare_tunnel3_params_ret r = {0};
    ReserveCtx rc = {.peer = peer};
    gboolean ok = rpc_client_call_with_serial(
        peer->client, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
        REMOTE_PROC_DOMAIN_MIGRATE_PREPARE_TUNNEL3_PARAMS,
        (xdrproc_t)xdr_remote_domain_migrate_prepare_tunnel3_params_args, &a,
        (xdrproc_t)xdr_remote_domain_migrate_prepare_tunnel3_params_ret, &r, CALL_TIMEOUT_MS,
        reserve_slot, &rc, error);
    xdr_free((xdrproc_t)xdr_remote_domain_migrate_prepare_tunnel3_params_args, (char *)&a);
    if (!ok) {
        if (rc.binding) {
            tunnel_binding_cancel(rc.binding);
            tunnel_binding_free(rc.binding);
        }
        return FALSE;
    }
    *cookie_out = remote_cookie_to_bytes(r.cookie_out.cookie_out_val, r.cookie_out.cookie_out_len);
    xdr_free((xdrproc_t)xdr_remote_domain_migrate_prepare_tunnel3_params_ret, (char *)&r);
    *binding = rc.binding;
    return TRUE;
}

static gboolean peer_prepare(MigrationPeer *peer, GPtrArray *params, GBytes *cookie_in,
                             guint flags, GBytes **cookie_out, char **uri_out, GError **error)
{
    remote_domain_migrate_prepare3_params_args a = {0};
    remote_params_from_driver(params, &a.params.params_val, &a.params.params_len);
    remote_cookie_from_bytes(cookie_in, &a.cookie_in.cookie_in_val, &a.cookie_in.cookie_in_len);
    a.flags = flags;
    remote_domain_migrate_prepare3_params_ret r = {0};
    gboolean ok = call(peer, REMOTE_PROC_DOMAIN_MIGRATE_PREPARE3_PARAMS,
                       (xdrproc_t)xdr_remote_domain_migrate_prepare3_params_args, &a,
                       (xdrproc_t)xdr_remote_domain_migrate_prepare3_params_ret, &r, error);
    xdr_free((xdrproc_t)xdr_remote_domain_migrate_prepare3_params_args, (char *)&a);
    if (!ok)
        return FALSE;
    *cookie_out = remote_cookie_to_bytes(r.cookie_out.cookie_out_val, r.cookie_out.cookie_out_len);
    *uri_out = r.uri_out ? g_strdup(*r.uri_out) : NULL;
    xdr_free((xdrproc_t)xdr_remote_domain_migrate_prepare3_params_ret, (char *)&r);
    return TRUE;
}

static DriverDomain *peer_finish(MigrationPeer *peer, GPtrArray *params, GBytes *cookie_in,
                                 guint flags, gboolean cancelled, GBytes **cookie_out,
                                 GError **error)
{
    remote_domain_migrate_finish3_params_args a = {0};
    remote_params_from_driver(params, &a.params.params_val, &a.params.params_len);
    remote_cookie_from_bytes(cookie_in, &a.cookie_in.cookie_in_val, &a.cookie_in.cookie_in_len);
    a.flags = flags;
    a.cancelled = cancelled ? 1 : 0;
    remote_domain_migrate_finish3_params_ret r = {0};
    gboolean ok = call(peer, REMOTE_PROC_DOMAIN_MIGRATE_FINISH3_PARAMS,
                       (xdrproc_t)xdr_remote_domain_migrate_finish3_params_args, &a,
                       (xdrproc_t)xdr_remote_domain_migrate_finish3_params_ret, &r, error);
    xdr_free((xdrproc_t)xdr_remote_domain_migrate_finish3_params_args, (char *)&a);
    if (!ok)
        return NULL;
    DriverDomain *dom = g_new0(DriverDomain, 1);
    remote_domain_to_driver(&r.dom, dom);
    *cookie_out = remote_cookie_to_bytes(r.cookie_out.cookie_out_val, r.cookie_out.cookie_out_len);
    xdr_free((xdrproc_t)xdr_remote_domain_migrate_finish3_params_ret, (char *)&r);
    return dom;
}

static const char *peer_describe(MigrationPeer *peer)
{
    return peer->description;
}

static const MigrationPeerOps ops = {
    .open = peer_open,
    .close = peer_close,
    .supports_feature = peer_supports_feature,
    .prepare_tunnel = peer_prepare_tunnel,
    .prepare = peer_prepare,
    .finish = peer_finish,
    .describe = peer_describe,
};

const MigrationPeerOps *remote_migration_peer_ops(void)
{
    return &ops;
}
