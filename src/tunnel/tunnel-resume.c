/* The resume call's XDR and the destination's table of
 * streams that wait for their source. */
#include "tunnel/tunnel-resume.h"

#include <string.h>

#include "tunnel/tunnel-router.h"
#include "tunnel/tunnel-stream.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "tunnel.resume"

bool_t tunnel_resume_xdr_point(XDR *xdr, TunnelResumePoint *p)
{
    u_quad_t received = p->received, granted = p->granted;
    u_int flags = p->flags;
    if (!xdr_u_quad_t(xdr, &received) || !xdr_u_quad_t(xdr, &granted) || !xdr_u_int(xdr, &flags))
        return FALSE;
    p->received = received;
    p->granted = granted;
    p->flags = flags;
    return TRUE;
}

bool_t tunnel_resume_xdr_args(XDR *xdr, TunnelResumeArgs *a)
{
    return xdr_string(xdr, &a->token, TUNNEL_RESUME_TOKEN_MAX) &&
           tunnel_resume_xdr_point(xdr, &a->point);
}

/* ---- the destination's table ---- */

typedef struct {
    TunnelStream *ts;
    TunnelPeerWatch *watch;
} Waiting;

static GMutex table_lock;
static GHashTable *table; /* token -> Waiting* */

static void waiting_free(gpointer data)
{
    Waiting *w = data;
    tunnel_stream_unref(w->ts);
    tunnel_peer_watch_unref(w->watch);
    g_free(w);
}

void tunnel_resume_offer(const char *token, TunnelStream *ts, TunnelPeerWatch *watch)
{
    Waiting *w = g_new0(Waiting, 1);
    w->ts = ts ? tunnel_stream_ref(ts) : NULL;
    w->watch = watch ? tunnel_peer_watch_ref(watch) : NULL;
    g_mutex_lock(&table_lock);
    if (!table)
        table = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, waiting_free);
    g_hash_table_replace(table, g_strdup(token), w);
    g_mutex_unlock(&table_lock);
}

void tunnel_resume_withdraw(const char *token)
{
    if (!token)
        return;
    g_mutex_lock(&table_lock);
    if (table) {
        g_hash_table_remove(table, token);
        if (g_hash_table_size(table) == 0)
            g_clear_pointer(&table, g_hash_table_unref);
    }
    g_mutex_unlock(&table_lock);
}

static gboolean lookup(const char *token, TunnelStream **ts, TunnelPeerWatch **watch)
{
    g_mutex_lock(&table_lock);
    Waiting *w = table && token ? g_hash_table_lookup(table, token) : NULL;
    if (w) {
        *ts = w->ts ? tunnel_stream_ref(w->ts) : NULL;
        *watch = w->watch ? tunnel_peer_watch_ref(w->watch) : NULL;
    }
    g_mutex_unlock(&table_lock);
    return w != NULL;
}

gboolean tunnel_resume_lookup_header(const char *token, RpcHeader *header)
{
    TunnelStream *ts = NULL;
    TunnelPeerWatch *watch = NULL;
    if (!lookup(token, &ts, &watch))
        return FALSE;
    if (!ts) { /* proxy mode: no stream rides the connection */
        tunnel_peer_watch_unref(watch);
        return FALSE;
    }
    *header = *tunnel_stream_get_header(ts);
    tunnel_stream_unref(ts);
    tunnel_peer_watch_unref(watch);
    return TRUE;
}

/* A resume must come from whom the migration was prepared by (SASL user,
 * client certificate DN): the token alone is not enough. */
static gboolean same_identity(TunnelPeerWatch *watch, const char *identity, const char *what,
                              GError **error)
{
    const char *was = tunnel_peer_watch_get_identity(watch);
    if (!was || g_strcmp0(was, identity) == 0)
        return TRUE;
    g_autofree char *why =
        g_strdup_printf("the resumed connection authenticated as %s, the migration's as %s",
                        identity ? identity : "nobody", was);
    FERRY_WARN("refused to resume %s: %s", what, why);
    g_set_error_literal(error, FERRY_ERROR, FERRY_ERR_OPERATION_DENIED, why);
    return FALSE;
}

gboolean tunnel_resume_accept(const char *token, TunnelBinding *binding,
                              const char *identity, const TunnelResumePoint *theirs,
                              TunnelResumePoint *ours, GError **error)
{
    TunnelStream *ts = NULL;
    TunnelPeerWatch *watch = NULL;
    if (!lookup(token, &ts, &watch) || !ts) {
        tunnel_peer_watch_unref(watch);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT,
                    "no migration here waits for a resumed connection with this token");
        return FALSE;
    }
    if (!same_identity(watch, identity, "a migration stream", error)) {
        tunnel_stream_unref(ts);
        tunnel_peer_watch_unref(watch);
        return FALSE;
    }
    RpcConnection *conn = tunnel_binding_get_connection(binding);
    RpcConnection *old = NULL;
    gboolean ok = tunnel_stream_resume(ts, binding, theirs, ours, &old, error);
    if (ok) {
        /* The old connection, if it still looks alive here, is dead to the
         * source; the stream no longer takes what it carries. */
        /* The migration's finish comes on the new connection now. */
        tunnel_peer_watch_rebind(watch, conn);
        if (old && old != conn) {
            g_autoptr(GError) why = g_error_new_literal(
                FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                "the source resumed the migration on a new connection");
            rpc_connection_close(old, why);
        }
    }
    if (old)
        rpc_connection_unref(old);
    tunnel_stream_unref(ts);
    tunnel_peer_watch_unref(watch);
    return ok;
}

gboolean tunnel_resume_accept_control(const char *token, RpcConnection *conn,
                                      const char *identity, GError **error)
{
    TunnelStream *ts = NULL;
    TunnelPeerWatch *watch = NULL;
    if (!lookup(token, &ts, &watch) || ts || !watch) {
        tunnel_stream_unref(ts);
        tunnel_peer_watch_unref(watch);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT,
                    "no migration here waits for its source's connection with this token");
        return FALSE;
    }
    if (!same_identity(watch, identity, "a migration's connection", error)) {
        tunnel_peer_watch_unref(watch);
        return FALSE;
    }
    /* The old connection, if it still looks alive here, is dead to the
     * source: the migration's finish comes on the new one. */
    RpcConnection *old = tunnel_peer_watch_rebind_take(watch, conn);
    if (old && old != conn && !rpc_connection_is_closed(old)) {
        g_autoptr(GError) why =
            g_error_new_literal(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                                "the source resumed the migration on a new connection");
        rpc_connection_close(old, why);
    }
    if (old)
        rpc_connection_unref(old);
    tunnel_peer_watch_unref(watch);
    return TRUE;
}
