/* Peer-to-peer migration, source side of the wire: connect to the
 * destination URI, open it, and make the version 3 calls whose stream this
 * connection routes. */
#include "remote/remote-migration-peer.h"

#include <errno.h>
#include <string.h>

#include "remote/remote-convert.h"
#include "remote/remote-peer.h"
#include "remote/remote-uri.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-client.h"
#include "rpc/rpc-sasl.h"
#include "rpc/rpc-tls.h"
#include "tunnel/tunnel-channel.h"
#include "tunnel/tunnel-resume.h"
#include "tunnel/tunnel-router.h"
#include "util/error.h"
#include "util/log.h"
#include "util/thread.h"

#define FERRY_LOG_MODULE "remote.peer"

#define CALL_TIMEOUT_MS 30000
/* A destination that stops answering (frozen, or its host gone while TCP
 * still acks) is dropped after 8 s: a dead path is noticed within 10 s
 * whatever the call waits for (prepare, finish), as the data paths do
 * (tcp_user_timeout, migration_stall_timeout). libvirt's 5 x 5 took 30 s.
 * Any message resets the count, and the peer's reader answers pings at
 * once, whatever its workers do. */
static int keepalive_interval = 2;
static guint keepalive_count = 3;

static char *pki_dir; /* migration_pki_dir, set once at start */

void remote_migration_peer_set_keepalive(int interval, guint count)
{
    keepalive_interval = interval;
    keepalive_count = count;
}

void remote_migration_peer_set_pki_dir(const char *dir)
{
    g_free(pki_dir);
    pki_dir = g_strdup(dir);
}

/* One connection to the destination: the first, then one per resume. */
typedef struct {
    MigrationPeer *peer;
    RpcClient *client;
    TunnelRouter *router;
    gboolean lost;   /* it closed on its own (not by us); under peer->lock */
    GError *lost_why;
} PeerLink;

struct MigrationPeer {
    char *uri;
    char *description;
    GMutex lock;
    GCond cond;
    PeerLink *link;      /* the current connection */
    GPtrArray *retired;  /* earlier ones (closed), freed with the peer */
    /* resuming a tunnelled stream (resume_setup) */
    TunnelChannel *resume_channel;
    char *resume_token;
    GThread *reconnector;
    gboolean link_lost; /* the current connection closed: the reconnector acts */
    /* proxy mode: only the connection is resumed (the relay resumes its
     * data connection itself); finish waits for it */
    gboolean control_resume;
    guint resume_timeout_s;
    gboolean resume_gave_up;
    GError *lost_why; /* why the current connection closed */
    gboolean closing;
    /* How we authenticated when SASL left no layer on the transport (over
     * TLS), for the flight record: "SASL MECH user 'NAME'", or NULL. */
    char *sasl;
};

static void peer_on_stream(RpcClient *client, RpcMessage *msg, gpointer data)
{
    PeerLink *link = data;
    tunnel_router_deliver(link->router, msg);
}

static void peer_on_event(RpcClient *client, RpcMessage *msg, gpointer data)
{
    PeerLink *link = data;
    /* Borrowed: the client frees it. Credit messages are copied to the stream. */
    if (msg->header.prog == FERRY_TUNNEL_PROGRAM) {
        RpcMessage *copy = rpc_message_new(rpc_message_payload_len(msg));
        memcpy(copy->buf, msg->buf, msg->len);
        copy->len = msg->len;
        copy->header = msg->header;
        tunnel_router_deliver(link->router, copy);
    }
}

static void peer_on_close(RpcClient *client, const GError *why, gpointer data)
{
    PeerLink *link = data;
    MigrationPeer *peer = link->peer;
    tunnel_router_connection_closed(link->router, why);
    g_mutex_lock(&peer->lock);
    if (!link->lost) {
        link->lost = TRUE;
        link->lost_why = why ? g_error_copy(why) : NULL;
    }
    if (link == peer->link) {
        g_clear_error(&peer->lost_why);
        peer->lost_why = why ? g_error_copy(why) : NULL;
        peer->link_lost = TRUE;
        g_cond_broadcast(&peer->cond);
    }
    g_mutex_unlock(&peer->lock);
}

static PeerLink *link_open(MigrationPeer *peer, int timeout_ms, RemotePeerReport *report,
                           GError **error)
{
    PeerLink *link = g_new0(PeerLink, 1);
    link->peer = peer;
    link->router = tunnel_router_new();
    RpcClientCallbacks cb = {.on_stream = peer_on_stream, .on_event = peer_on_event,
                             .on_close = peer_on_close, .data = link};
    /* Transport, TLS, SASL from the auth file, keepalive and CONNECT_OPEN,
     * exactly as the libvirt client would reach that URI. */
    RemotePeerOptions opts = {.timeout_ms = timeout_ms,
                              .keepalive_interval = keepalive_interval > 0 ? (guint)keepalive_interval : 0,
                              .keepalive_count = keepalive_count,
                              .no_keepalive = keepalive_interval <= 0, .callbacks = &cb,
                              .pkipath = pki_dir, .report = report};
    link->client = remote_peer_open(peer->uri, &opts, error);
    if (!link->client) {
        tunnel_router_free(link->router);
        g_free(link);
        return NULL;
    }
    return link;
}

static void link_free(PeerLink *link, gboolean say_goodbye)
{
    if (!link)
        return;
    if (say_goodbye && rpc_client_is_open(link->client))
        rpc_client_call(link->client, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
                        REMOTE_PROC_CONNECT_CLOSE, NULL, NULL, NULL, NULL, 2000, NULL);
    rpc_client_free(link->client); /* its reader stops: the router is no longer used */
    tunnel_router_free(link->router);
    g_clear_error(&link->lost_why);
    g_free(link);
}

static RpcClient *peer_client(MigrationPeer *peer)
{
    g_mutex_lock(&peer->lock);
    RpcClient *c = peer->link->client; /* links live as long as the peer */
    g_mutex_unlock(&peer->lock);
    return c;
}

static TunnelRouter *peer_router(MigrationPeer *peer)
{
    g_mutex_lock(&peer->lock);
    TunnelRouter *r = peer->link->router;
    g_mutex_unlock(&peer->lock);
    return r;
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
    gboolean ok = rpc_client_call(peer_client(peer), REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc,
                                  args_filter, args, ret_filter, ret, CALL_TIMEOUT_MS, error);
    if (!ok)
        name_silent_peer(peer, error);
    return ok;
}

static void peer_close(MigrationPeer *peer)
{
    if (!peer)
        return;
    g_mutex_lock(&peer->lock);
    peer->closing = TRUE;
    g_cond_broadcast(&peer->cond);
    g_mutex_unlock(&peer->lock);
    if (peer->reconnector)
        g_thread_join(peer->reconnector);
    link_free(peer->link, TRUE);
    g_ptr_array_unref(peer->retired);
    if (peer->resume_channel)
        tunnel_channel_unref(peer->resume_channel);
    g_free(peer->resume_token);
    g_clear_error(&peer->lost_why);
    g_mutex_clear(&peer->lock);
    g_cond_clear(&peer->cond);
    g_free(peer->uri);
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

static void retired_free(gpointer data)
{
    link_free(data, FALSE);
}

static MigrationPeer *peer_open(const char *uri_text, GError **error)
{
    MigrationPeer *peer = g_new0(MigrationPeer, 1);
    peer->uri = g_strdup(uri_text);
    peer->description = describe_uri(uri_text);
    g_mutex_init(&peer->lock);
    g_cond_init(&peer->cond);
    peer->retired = g_ptr_array_new_with_free_func(retired_free);
    g_auto(RemotePeerReport) report = {0};
    peer->link = link_open(peer, 30000, &report, error);
    if (!peer->link) {
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
    rc->binding = tunnel_router_reserve(peer_router(rc->peer),
                                        rpc_client_get_connection(peer_client(rc->peer)), &h);
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
        peer_client(peer), REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
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

/* Until a connection that broke is back, or will not come back. */
static void wait_link(MigrationPeer *peer)
{
    g_mutex_lock(&peer->lock);
    while (peer->control_resume && peer->link_lost && !peer->resume_gave_up && !peer->closing)
        g_cond_wait(&peer->cond, &peer->lock);
    g_mutex_unlock(&peer->lock);
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
    /* Proxy mode: a connection that broke meanwhile is being resumed; the
     * finish goes on the new one (a cancel does not wait: the destination
     * drops its VM on its own). */
    if (!cancelled)
        wait_link(peer);
    /* A cancelled finish only drops the incoming VM: a peer that takes long is stuck. */
    gboolean ok = rpc_client_call(peer_client(peer), REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
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
    cr->binding = tunnel_router_reserve(peer_router(cr->peer),
                                        rpc_client_get_connection(peer_client(cr->peer)), &h);
}

static gboolean peer_open_channel(MigrationPeer *peer, const char *name, const char *token,
                                  guint index, TunnelBinding **binding, GError **error)
{
    ferry_migration_channel_args a = {.name = (char *)name, .token = (char *)token,
                                      .index = index};
    ChannelReserve cr = {.peer = peer};
    if (!rpc_client_call_with_serial(peer_client(peer), FERRY_TUNNEL_PROGRAM, FERRY_TUNNEL_VERSION,
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
    pr->binding = tunnel_router_reserve(peer_router(pr->peer),
                                        rpc_client_get_connection(peer_client(pr->peer)), &h);
}

static gboolean peer_probe_discard_stream(MigrationPeer *peer, guint64 max_bytes,
                                          TunnelBinding **binding, GError **error)
{
    ferry_probe_discard_args a = {.max_bytes = max_bytes};
    ProbeReserve pr = {.peer = peer};
    if (!rpc_client_call_with_serial(peer_client(peer), FERRY_TUNNEL_PROGRAM, FERRY_TUNNEL_VERSION,
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
    if (!rpc_client_call(peer_client(peer), FERRY_TUNNEL_PROGRAM, FERRY_TUNNEL_VERSION,
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

static gboolean peer_connection_lost(MigrationPeer *peer, GError **error)
{
    g_mutex_lock(&peer->lock);
    PeerLink *link = peer->link;
    /* A proxy migration that resumes: its reconnector decides, and aborts
     * the channel naming why when the connection does not come back. */
    gboolean lost = link->lost && !peer->control_resume;
    if (lost)
        g_set_error(error, FERRY_ERROR,
                    link->lost_why && link->lost_why->domain == FERRY_ERROR
                        ? link->lost_why->code
                        : FERRY_ERR_OPERATION_FAILED,
                    "lost the connection to the %s: %s", peer->description,
                    link->lost_why ? link->lost_why->message : "it closed");
    g_mutex_unlock(&peer->lock);
    return lost;
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
        rpc_connection_get_transport(rpc_client_get_connection(peer_client(peer))));
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
    if (!rpc_client_call(peer_client(peer), FERRY_TUNNEL_PROGRAM, FERRY_TUNNEL_VERSION,
                         FERRY_TUNNEL_PROC_FLIGHT_RECORD, (xdrproc_t)remote_xdr_flight_record_args,
                         &a, (xdrproc_t)remote_xdr_flight_record_ret, &r, 5000, error)) {
        /* the engine asks again for a record not kept yet (driver.h) */
        if (error && *error && (*error)->domain == FERRY_REMOTE_ERROR &&
            (*error)->code == FERRY_ERR_NO_SUPPORT)
            (*error)->domain = FERRY_ERROR;
        return NULL;
    }
    *received_us = g_get_real_time();
    *peer_now_us = r.now_us;
    char *text = g_strdup(r.record);
    xdr_free((xdrproc_t)remote_xdr_flight_record_ret, (char *)&r);
    return text;
}

/* ---- resuming a tunnelled stream after its connection broke ----
 * One thread per peer with a resumable stream sleeps until the current
 * connection closes, then reconnects to the same URI (same credentials) and
 * calls FERRY_TUNNEL_PROC_RESUME with the migration's token, until it
 * succeeds, the destination or a certificate says no, or the stream's
 * resume time is up. */

#define RECONNECT_ATTEMPT_MS 5000
#define RECONNECT_PAUSE_MS 500

/* Errors no new attempt can cure: the destination refused the resume, or
 * authentication (TLS certificates, SASL) failed, our own certificate no
 * longer serves (it expired meanwhile), or its daemon no longer listens. A
 * path that does not answer yet is worth another try. */
static gboolean resume_error_is_final(const GError *e)
{
    if (g_str_has_prefix(e->message, REMOTE_PEER_OWN_TLS_ERROR))
        return TRUE;
    /* Nobody listens there any more: the destination daemon is gone. */
    if (g_error_matches(e, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR) &&
        (g_str_has_suffix(e->message, g_strerror(ECONNREFUSED)) ||
         g_str_has_suffix(e->message, g_strerror(ENOENT))))
        return TRUE;
    return e->domain == FERRY_REMOTE_ERROR || g_error_matches(e, FERRY_ERROR, FERRY_ERR_AUTH_FAILED) ||
           g_error_matches(e, FERRY_ERROR, FERRY_ERR_AUTH_CANCELLED) ||
           g_error_matches(e, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED);
}

typedef struct {
    PeerLink *link;
    TunnelStream *ts;
    TunnelBinding *binding;
} ResumeReserve;

static void resume_reserve_slot(guint32 serial, gpointer data)
{
    ResumeReserve *rr = data;
    RpcHeader h = *tunnel_stream_get_header(rr->ts);
    h.type = RPC_STREAM;
    h.status = RPC_CONTINUE;
    h.serial = serial;
    rr->binding = tunnel_router_reserve(rr->link->router, rpc_client_get_connection(rr->link->client), &h);
}

/* One attempt: a new connection (within connect_ms) and the resume call
 * (within call_ms). TRUE once the stream runs on the new connection; FALSE
 * with why. */
static gboolean resume_attempt(MigrationPeer *peer, TunnelStream *ts, int connect_ms, int call_ms,
                               GError **error)
{
    PeerLink *link = link_open(peer, connect_ms, NULL, error);
    if (!link)
        return FALSE;
    TunnelResumeArgs a = {.token = peer->resume_token};
    tunnel_stream_get_resume_point(ts, &a.point);
    TunnelResumePoint theirs = {0};
    ResumeReserve rr = {.link = link, .ts = ts};
    gboolean ok = rpc_client_call_with_serial(
        link->client, FERRY_TUNNEL_PROGRAM, FERRY_TUNNEL_VERSION, FERRY_TUNNEL_PROC_RESUME,
        (xdrproc_t)tunnel_resume_xdr_args, &a, (xdrproc_t)tunnel_resume_xdr_point, &theirs,
        MAX(call_ms, 1000), resume_reserve_slot, &rr, error);
    if (ok) {
        /* From now on every call goes to the new connection. */
        g_mutex_lock(&peer->lock);
        g_ptr_array_add(peer->retired, peer->link);
        peer->link = link;
        peer->link_lost = !rpc_client_is_open(link->client);
        g_mutex_unlock(&peer->lock);
        RpcConnection *old = NULL;
        ok = tunnel_stream_resume(ts, rr.binding, &theirs, NULL, &old, error);
        if (old)
            rpc_connection_unref(old);
        if (!ok)
            tunnel_binding_cancel(rr.binding);
        tunnel_binding_free(rr.binding);
        return ok;
    }
    if (rr.binding) {
        tunnel_binding_cancel(rr.binding);
        tunnel_binding_free(rr.binding);
    }
    link_free(link, FALSE); /* its reader has stopped once this returns */
    return FALSE;
}

/* One attempt of a reconnection: a new connection within connect_ms and the
 * resume call within call_ms; TRUE once the migration runs on it. */
typedef gboolean (*ReconnectAttempt)(MigrationPeer *peer, gpointer data, int connect_ms,
                                     int call_ms, GError **error);
/* The monotonic time to give up at (0: no longer waiting, stop). */
typedef gint64 (*ReconnectDeadline)(gpointer data);

typedef enum {
    RECONNECT_DONE,     /* resumed */
    RECONNECT_STOPPED,  /* the peer closes, or nothing waits any more */
    RECONNECT_REFUSED,  /* an error no new attempt cures: *last says it */
    RECONNECT_EXPIRED,  /* the deadline passed: *last is the last attempt's error, if any */
} ReconnectOutcome;

/* Attempts (each within RECONNECT_ATTEMPT_MS, the call the whole time left:
 * a call given up on may still be served by the destination, later, on a
 * connection we closed, which would move the migration there and end it; a
 * loaded destination answered after our 5 s once) every RECONNECT_PAUSE_MS
 * until one succeeds, one is refused for good, the peer closes, or the
 * deadline passes. A dead path fails the call sooner (its keepalive). */
static ReconnectOutcome reconnect(MigrationPeer *peer, const char *what, ReconnectAttempt attempt,
                                  ReconnectDeadline deadline_of, gpointer data,
                                  guint *attempts, GError **last)
{
    for (;;) {
        gint64 deadline = deadline_of(data);
        gint64 now = g_get_monotonic_time();
        g_mutex_lock(&peer->lock);
        gboolean closing = peer->closing;
        g_mutex_unlock(&peer->lock);
        if (closing || !deadline)
            return RECONNECT_STOPPED;
        if (now >= deadline)
            return RECONNECT_EXPIRED;
        (*attempts)++;
        gint64 left_ms = (deadline - now) / 1000;
        g_clear_error(last);
        if (attempt(peer, data, (int)MAX(MIN(left_ms, (gint64)RECONNECT_ATTEMPT_MS), 200),
                    (int)MIN(left_ms, (gint64)G_MAXINT), last)) {
            FERRY_INFO("resumed %s with the %s (attempt %u)", what, peer->description, *attempts);
            return RECONNECT_DONE;
        }
        if (resume_error_is_final(*last))
            return RECONNECT_REFUSED;
        FERRY_INFO("reconnecting to the %s (attempt %u): %s", peer->description, *attempts,
                   (*last)->message);
        gint64 pause = g_get_monotonic_time() + RECONNECT_PAUSE_MS * 1000;
        g_mutex_lock(&peer->lock);
        while (!peer->closing && g_cond_wait_until(&peer->cond, &peer->lock, pause))
            ;
        g_mutex_unlock(&peer->lock);
    }
}

static gboolean stream_attempt(MigrationPeer *peer, gpointer ts, int connect_ms, int call_ms,
                               GError **error)
{
    return resume_attempt(peer, ts, connect_ms, call_ms, error);
}

static gint64 stream_deadline(gpointer ts)
{
    return tunnel_stream_get_resume_deadline(ts);
}

static void resume_stream(MigrationPeer *peer, TunnelStream *ts)
{
    guint attempts = 0;
    g_autoptr(GError) last = NULL;
    switch (reconnect(peer, "the migration stream", stream_attempt, stream_deadline, ts, &attempts,
                      &last)) {
    case RECONNECT_DONE:
    case RECONNECT_STOPPED:
        return; /* resumed, or aborted, failed or no longer waiting */
    case RECONNECT_REFUSED:
        FERRY_WARN("cannot resume the migration stream with the %s: %s", peer->description,
                   last->message);
        tunnel_stream_resume_failed(ts, last);
        return;
    case RECONNECT_EXPIRED:
        break;
    }
    g_autofree char *why = g_strdup_printf("no new connection within the resume time (%u "
                                           "attempts; the last: %s)",
                                           attempts, last ? last->message : "none made");
    g_autoptr(GError) e = g_error_new_literal(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, why);
    tunnel_stream_resume_failed(ts, e);
}

/* Under peer->lock: waits until the current connection is lost (TRUE) or
 * the peer closes (FALSE). */
static gboolean wait_link_lost_locked(MigrationPeer *peer)
{
    while (!peer->closing && !peer->link_lost)
        g_cond_wait(&peer->cond, &peer->lock);
    return !peer->closing;
}

static gpointer reconnector_thread(gpointer data)
{
    MigrationPeer *peer = data;
    TunnelStream *ts = tunnel_channel_get_stream(peer->resume_channel);
    g_mutex_lock(&peer->lock);
    while (wait_link_lost_locked(peer)) {
        peer->link_lost = FALSE;
        g_mutex_unlock(&peer->lock);
        /* The router told the stream before link_lost was set. */
        if (tunnel_stream_awaits_resume(ts))
            resume_stream(peer, ts);
        g_mutex_lock(&peer->lock);
        if (tunnel_stream_is_over(ts))
            break;
    }
    g_mutex_unlock(&peer->lock);
    return NULL;
}

/* ---- proxy mode: the connection alone comes back ----
 * The relay resumes its data connection itself; the daemons' connection,
 * idle while the data flows, breaks in the same blip, and the migration's
 * finish needs it. Reconnects as above and calls FERRY_PROXY_PROC_RESUME
 * with the token, until it succeeds, the destination or a certificate says
 * no, or the resume time (from the break) is up: then the migration's
 * channel is aborted naming why. A peer that stopped answering while its
 * host still did (frozen) is not waited for: the data path notices it
 * (stall, zero window). */

static gboolean resume_control_attempt(MigrationPeer *peer, int connect_ms, int call_ms,
                                       GError **error)
{
    PeerLink *link = link_open(peer, connect_ms, NULL, error);
    if (!link)
        return FALSE;
    TunnelResumeArgs a = {.token = peer->resume_token};
    TunnelResumePoint theirs = {0};
    if (!rpc_client_call(link->client, FERRY_TUNNEL_PROGRAM, FERRY_TUNNEL_VERSION,
                         FERRY_PROXY_PROC_RESUME, (xdrproc_t)tunnel_resume_xdr_args, &a,
                         (xdrproc_t)tunnel_resume_xdr_point, &theirs, MAX(call_ms, 1000),
                         error)) {
        link_free(link, FALSE);
        return FALSE;
    }
    g_mutex_lock(&peer->lock);
    g_ptr_array_add(peer->retired, peer->link);
    peer->link = link;
    g_clear_error(&peer->lost_why);
    peer->link_lost = !rpc_client_is_open(link->client);
    g_cond_broadcast(&peer->cond);
    g_mutex_unlock(&peer->lock);
    return TRUE;
}

static gboolean control_attempt(MigrationPeer *peer, gpointer unused, int connect_ms,
                                int call_ms, GError **error)
{
    return resume_control_attempt(peer, connect_ms, call_ms, error);
}

static gint64 fixed_deadline(gpointer deadline)
{
    return *(gint64 *)deadline;
}

/* FALSE once given up (the channel aborted, naming why). */
static gboolean resume_control(MigrationPeer *peer, RpcConnection *conn, const GError *first)
{
    if (rpc_connection_peer_unresponsive(conn)) {
        /* A frozen or stuck daemon: a new connection would meet it again.
         * The migration fails now, naming why (as the tunnel's stream does),
         * rather than when the data connection's own timeout fires. */
        g_autoptr(GError) e = g_error_new(
            FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
            "the connection to the %s closed%s%s; " TUNNEL_PEER_STUCK,
            peer->description, first ? ": " : "", first ? first->message : "");
        FERRY_WARN("%s", e->message);
        tunnel_channel_abort(peer->resume_channel, e);
        return FALSE;
    }
    guint wait_s = rpc_connection_closed_cleanly(conn)
                       ? MIN(peer->resume_timeout_s, TUNNEL_RESUME_ENDED_GRACE_S)
                       : peer->resume_timeout_s;
    gint64 deadline = g_get_monotonic_time() + (gint64)wait_s * G_USEC_PER_SEC;
    FERRY_INFO("the connection to the %s closed%s%s; reconnecting for up to %u s",
               peer->description, first ? ": " : "", first ? first->message : "", wait_s);
    guint attempts = 0;
    g_autoptr(GError) last = NULL;
    ReconnectOutcome outcome = reconnect(peer, "the migration's connection", control_attempt,
                                         fixed_deadline, &deadline, &attempts, &last);
    if (outcome == RECONNECT_DONE)
        return TRUE;
    if (outcome == RECONNECT_STOPPED)
        return FALSE;
    gboolean final = outcome == RECONNECT_REFUSED;
    g_autofree char *tail =
        final ? g_strdup_printf("could not be resumed: %s", last->message)
              : g_strdup_printf("did not come back within %u s (%u attempts%s%s)", wait_s,
                                attempts, last ? "; the last: " : "", last ? last->message : "");
    g_autoptr(GError) e = g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                                      "the connection to the %s closed%s%s, and %s",
                                      peer->description, first ? ": " : "",
                                      first ? first->message : "", tail);
    FERRY_WARN("%s", e->message);
    tunnel_channel_abort(peer->resume_channel, e);
    return FALSE;
}

static gpointer control_reconnector_thread(gpointer data)
{
    MigrationPeer *peer = data;
    g_mutex_lock(&peer->lock);
    while (wait_link_lost_locked(peer)) {
        RpcConnection *conn = rpc_connection_ref(rpc_client_get_connection(peer->link->client));
        g_autoptr(GError) first = peer->lost_why ? g_error_copy(peer->lost_why) : NULL;
        g_mutex_unlock(&peer->lock);
        gboolean back = resume_control(peer, conn, first);
        rpc_connection_unref(conn);
        g_mutex_lock(&peer->lock);
        if (!back) {
            peer->resume_gave_up = TRUE;
            g_cond_broadcast(&peer->cond);
            break;
        }
    }
    g_mutex_unlock(&peer->lock);
    return NULL;
}

static void peer_resume_setup(MigrationPeer *peer, TunnelChannel *ch, const char *token,
                              guint timeout_s)
{
    gboolean proxy = !tunnel_channel_get_stream(ch);
    if (!token || peer->reconnector || (proxy && !timeout_s))
        return;
    peer->resume_channel = tunnel_channel_ref(ch);
    peer->resume_token = g_strdup(token);
    g_autoptr(GError) e = NULL;
    g_mutex_lock(&peer->lock);
    peer->control_resume = proxy;
    peer->resume_timeout_s = timeout_s;
    if (!rpc_client_is_open(peer->link->client))
        peer->link_lost = TRUE; /* it broke already */
    g_mutex_unlock(&peer->lock);
    peer->reconnector = ferry_thread_try_new(
        "migration-resume", proxy ? control_reconnector_thread : reconnector_thread, peer, &e);
    if (!peer->reconnector) {
        g_mutex_lock(&peer->lock);
        peer->control_resume = FALSE; /* finish waits for nobody */
        g_mutex_unlock(&peer->lock);
    }
    if (!peer->reconnector)
        FERRY_WARN("a broken connection to the %s will fail the migration: %s",
                   peer->description, e->message);
}

static const MigrationPeerOps ops = {
    .resume_setup = peer_resume_setup,
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
    .connection_lost = peer_connection_lost,
    .security = peer_security,
    .fetch_record = peer_fetch_record,
};

const MigrationPeerOps *remote_migration_peer_ops(void)
{
    return &ops;
}
