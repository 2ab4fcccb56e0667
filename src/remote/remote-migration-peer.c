/* Peer-to-peer migration, source side of the wire: connect to the
 * destination URI, open it, and make the version 3 calls whose stream this
 * connection routes. */
#include "remote/remote-migration-peer.h"

#include <string.h>

#include "remote/remote-convert.h"
#include "remote/remote-peer.h"
#include "remote/remote-uri.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-client.h"
#include "rpc/rpc-sasl.h"
#include "rpc/rpc-tls.h"
#include "tunnel/tunnel-router.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "remote.peer"

#define CALL_TIMEOUT_MS 30000
/* A destination that stops answering (frozen, or its host gone while TCP
 * still acks) is dropped after 8 s: a dead path is noticed within 10 s
 * whatever the call waits for (prepare, finish), as the data paths do
 * (tcp_user_timeout, migration_stall_timeout). libvirt's 5 x 5 took 30 s.
 * Any message resets the count, and the peer's reader answers pings at
 * once, whatever its workers do. */
#define KEEPALIVE_INTERVAL 2
#define KEEPALIVE_COUNT 3

static char *pki_dir; /* migration_pki_dir, set once at start */

void remote_migration_peer_set_pki_dir(const char *dir)
{
    g_free(pki_dir);
    pki_dir = g_strdup(dir);
}

struct MigrationPeer {
    RpcClient *client;
    TunnelRouter *router;
    char *description;
    /* How we authenticated when SASL left no layer on the transport (over
     * TLS), for the flight record: "SASL MECH user 'NAME'", or NULL. */
    char *sasl;
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

/* A call that got no answer (the connection closed or timed out) names the
 * destination, whose address the connection's own words may not say. */
static void name_silent_peer(MigrationPeer *peer, GError **error)
{
    if (error && *error &&
        (g_error_matches(*error, FERRY_ERROR, FERRY_ERR_RPC) ||
         g_error_matches(*error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT)))
        g_prefix_error(error, "no answer from the %s: ", peer->description);
}

static gboolean call(MigrationPeer *peer, int proc, xdrproc_t args_filter, void *args,
                     xdrproc_t ret_filter, void *ret, GError **error)
{
    gboolean ok = rpc_client_call(peer->client, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc,
                                  args_filter, args, ret_filter, ret, CALL_TIMEOUT_MS, error);
    if (!ok)
        name_silent_peer(peer, error);
    return ok;
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
    g_free(peer->sasl);
    g_free(peer);
}

/* A short description of the destination for messages. */
static char *describe_uri(const char *uri_text)
{
    g_autoptr(RemoteUri) uri = remote_uri_parse(uri_text, NULL);
    if (uri && uri->transport == REMOTE_URI_UNIX)
        return g_strdup_printf("destination ferryd at %s", uri->socket ? uri->socket : "(default socket)");
    if (uri && uri->host)
        return g_strdup_printf("destination ferryd at %s:%u", uri->host, uri->port);
    return g_strdup_printf("destination ferryd at %s", uri_text);
}

static MigrationPeer *peer_open(const char *uri_text, GError **error)
{
    MigrationPeer *peer = g_new0(MigrationPeer, 1);
    peer->router = tunnel_router_new();
    peer->description = describe_uri(uri_text);
    RpcClientCallbacks cb = {.on_stream = peer_on_stream, .on_event = peer_on_event,
                             .on_close = peer_on_close, .data = peer};
    /* Transport, TLS, SASL from the auth file, keepalive and CONNECT_OPEN,
     * exactly as the libvirt client would reach that URI. */
    RemotePeerOptions opts = {.timeout_ms = 30000, .keepalive_interval = KEEPALIVE_INTERVAL,
                              .keepalive_count = KEEPALIVE_COUNT, .callbacks = &cb,
                              .pkipath = pki_dir};
    g_auto(RemotePeerReport) report = {0};
    opts.report = &report;
    peer->client = remote_peer_open(uri_text, &opts, error);
    if (!peer->client) {
        g_prefix_error(error, "cannot reach the %s: ", peer->description);
        peer_close(peer);
        return NULL;
    }
    if (report.sasl_done && report.sasl_ssf == 0)
        peer->sasl = g_strdup_printf("SASL %s user '%s'", report.sasl_mech ? report.sasl_mech : "?",
                                     report.sasl_user ? report.sasl_user : "?");
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
        name_silent_peer(peer, error);
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
    /* A cancelled finish only drops the incoming VM: a peer that takes long is stuck. */
    gboolean ok = rpc_client_call(peer->client, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
                                  REMOTE_PROC_DOMAIN_MIGRATE_FINISH3_PARAMS,
                                  (xdrproc_t)xdr_remote_domain_migrate_finish3_params_args, &a,
                                  (xdrproc_t)xdr_remote_domain_migrate_finish3_params_ret, &r,
                                  cancelled ? 10000 : CALL_TIMEOUT_MS, error);
    xdr_free((xdrproc_t)xdr_remote_domain_migrate_finish3_params_args, (char *)&a);
    if (!ok) {
        name_silent_peer(peer, error);
        return NULL;
    }
    DriverDomain *dom = g_new0(DriverDomain, 1);
    remote_domain_to_driver(&r.dom, dom);
    *cookie_out = remote_cookie_to_bytes(r.cookie_out.cookie_out_val, r.cookie_out.cookie_out_len);
    xdr_free((xdrproc_t)xdr_remote_domain_migrate_finish3_params_ret, (char *)&r);
    return dom;
}

typedef struct {
    MigrationPeer *peer;
    TunnelBinding *binding;
} ChannelReserve;

static void channel_reserve_slot(guint32 serial, gpointer data)
{
    ChannelReserve *cr = data;
    RpcHeader h = {.prog = FERRY_TUNNEL_PROGRAM, .vers = FERRY_TUNNEL_VERSION,
                   .proc = FERRY_PROC_MIGRATION_CHANNEL, .type = RPC_STREAM,
                   .serial = serial, .status = RPC_CONTINUE};
    cr->binding = tunnel_router_reserve(cr->peer->router,
                                        rpc_client_get_connection(cr->peer->client), &h);
}

static gboolean peer_open_channel(MigrationPeer *peer, const char *name, const char *token,
                                  guint index, TunnelBinding **binding, GError **error)
{
    ferry_migration_channel_args a = {.name = (char *)name, .token = (char *)token,
                                      .index = index};
    ChannelReserve cr = {.peer = peer};
    if (!rpc_client_call_with_serial(peer->client, FERRY_TUNNEL_PROGRAM, FERRY_TUNNEL_VERSION,
                                     FERRY_PROC_MIGRATION_CHANNEL,
                                     (xdrproc_t)xdr_ferry_migration_channel_args, &a, NULL,
                                     NULL, CALL_TIMEOUT_MS, channel_reserve_slot, &cr, error)) {
        if (cr.binding) {
            tunnel_binding_cancel(cr.binding);
            tunnel_binding_free(cr.binding);
        }
        g_prefix_error(error, "cannot open channel %u on the %s: ", index, peer->description);
        return FALSE;
    }
    *binding = cr.binding;
    return TRUE;
}

/* ---- the pre-flight probe (ferry's own program) ---- */

/* A peer that does not know ferry's program (a libvirtd: "unknown
 * program"), or an older ferryd ("unknown procedure"), is not one the
 * probe can measure. */
static void probe_error(MigrationPeer *peer, GError **error)
{
    if (error && *error && (*error)->domain == FERRY_REMOTE_ERROR &&
        ((*error)->code == FERRY_ERR_RPC || (*error)->code == FERRY_ERR_NO_SUPPORT)) {
        g_autofree char *said = g_strdup((*error)->message);
        g_clear_error(error);
        /* It may be no ferryd at all: name it by its address only. */
        const char *at = strstr(peer->description, " at ");
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT,
                    "the destination daemon%s is not a ferry daemon that answers probes (it "
                    "said: %s)",
                    at ? at : "", said);
    }
}

typedef struct {
    MigrationPeer *peer;
    TunnelBinding *binding;
} ProbeReserve;

static void probe_reserve_slot(guint32 serial, gpointer data)
{
    ProbeReserve *pr = data;
    RpcHeader h = {.prog = FERRY_TUNNEL_PROGRAM, .vers = FERRY_TUNNEL_VERSION,
                   .proc = FERRY_PROC_PROBE_DISCARD_STREAM, .type = RPC_STREAM,
                   .serial = serial, .status = RPC_CONTINUE};
    pr->binding = tunnel_router_reserve(pr->peer->router,
                                        rpc_client_get_connection(pr->peer->client), &h);
}

static gboolean peer_probe_discard_stream(MigrationPeer *peer, guint64 max_bytes,
                                          TunnelBinding **binding, GError **error)
{
    ferry_probe_discard_args a = {.max_bytes = max_bytes};
    ProbeReserve pr = {.peer = peer};
    if (!rpc_client_call_with_serial(peer->client, FERRY_TUNNEL_PROGRAM, FERRY_TUNNEL_VERSION,
                                     FERRY_PROC_PROBE_DISCARD_STREAM,
                                     (xdrproc_t)xdr_ferry_probe_discard_args, &a, NULL, NULL,
                                     CALL_TIMEOUT_MS, probe_reserve_slot, &pr, error)) {
        if (pr.binding) {
            tunnel_binding_cancel(pr.binding);
            tunnel_binding_free(pr.binding);
        }
        probe_error(peer, error);
        return FALSE;
    }
    *binding = pr.binding;
    return TRUE;
}

static gboolean peer_probe_discard_data(MigrationPeer *peer, guint64 max_bytes, gboolean tls,
                                        char **uri_out, char **token_out, GError **error)
{
    ferry_probe_discard_args a = {.max_bytes = max_bytes, .tls = tls ? 1 : 0};
    ferry_probe_discard_data_ret r = {0};
    if (!rpc_client_call(peer->client, FERRY_TUNNEL_PROGRAM, FERRY_TUNNEL_VERSION,
                         FERRY_PROC_PROBE_DISCARD_DATA, (xdrproc_t)xdr_ferry_probe_discard_args,
                         &a, (xdrproc_t)xdr_ferry_probe_discard_data_ret, &r, CALL_TIMEOUT_MS,
                         error)) {
        probe_error(peer, error);
        return FALSE;
    }
    *uri_out = g_strdup(r.uri);
    *token_out = g_strdup(r.token);
    xdr_free((xdrproc_t)xdr_ferry_probe_discard_data_ret, (char *)&r);
    return TRUE;
}

static const char *peer_describe(MigrationPeer *peer)
{
    return peer->description;
}

bool_t remote_xdr_flight_record_args(XDR *xdr, RemoteFlightRecordArgs *args)
{
    return xdr_string(xdr, &args->id, 64);
}

bool_t remote_xdr_flight_record_ret(XDR *xdr, RemoteFlightRecordRet *ret)
{
    quad_t now = ret->now_us;
    if (!xdr_quad_t(xdr, &now))
        return FALSE;
    ret->now_us = now;
    return xdr_string(xdr, &ret->record, REMOTE_FLIGHT_RECORD_MAX);
}

char *remote_describe_transport(RpcTransport *t)
{
    if (!t)
        return g_strdup("unknown");
    RpcTransport *base = rpc_sasl_transport_get_inner(t);
    g_autofree char *tls = rpc_tls_transport_describe(base);
    g_autofree char *sasl = rpc_sasl_transport_describe(t);
    const char *dn = rpc_tls_transport_get_peer_dn(base);
    GString *s = g_string_new(tls ? tls : (base->peer_uid >= 0 ? "unix socket" : "plain TCP"));
    if (dn)
        g_string_append_printf(s, ", peer certificate %s", dn);
    if (sasl)
        g_string_append_printf(s, ", %s", sasl);
    return g_string_free(s, FALSE);
}

static char *peer_security(MigrationPeer *peer)
{
    g_autofree char *transport = remote_describe_transport(
        rpc_connection_get_transport(rpc_client_get_connection(peer->client)));
    /* A SASL layer describes itself with the transport; without one, say
     * how we authenticated all the same. */
    if (peer->sasl && !strstr(transport, "SASL"))
        return g_strdup_printf("%s, %s", transport, peer->sasl);
    return g_steal_pointer(&transport);
}

static char *peer_fetch_record(MigrationPeer *peer, const char *id, gint64 *peer_now_us,
                               gint64 *sent_us, gint64 *received_us, GError **error)
{
    RemoteFlightRecordArgs a = {.id = (char *)id};
    RemoteFlightRecordRet r = {0};
    *sent_us = g_get_real_time();
    if (!rpc_client_call(peer->client, FERRY_TUNNEL_PROGRAM, FERRY_TUNNEL_VERSION,
                         FERRY_TUNNEL_PROC_FLIGHT_RECORD, (xdrproc_t)remote_xdr_flight_record_args,
                         &a, (xdrproc_t)remote_xdr_flight_record_ret, &r, 5000, error))
        return NULL;
    *received_us = g_get_real_time();
    *peer_now_us = r.now_us;
    char *text = g_strdup(r.record);
    xdr_free((xdrproc_t)remote_xdr_flight_record_ret, (char *)&r);
    return text;
}

static const MigrationPeerOps ops = {
    .open = peer_open,
    .close = peer_close,
    .supports_feature = peer_supports_feature,
    .prepare_tunnel = peer_prepare_tunnel,
    .prepare = peer_prepare,
    .finish = peer_finish,
    .open_channel = peer_open_channel,
    .probe_discard_stream = peer_probe_discard_stream,
    .probe_discard_data = peer_probe_discard_data,
    .describe = peer_describe,
    .security = peer_security,
    .fetch_record = peer_fetch_record,
};

const MigrationPeerOps *remote_migration_peer_ops(void)
{
    return &ops;
}
