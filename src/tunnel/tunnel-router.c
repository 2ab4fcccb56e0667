/* Serial -> stream routing with early-packet holding. */
#include "tunnel/tunnel-router.h"

#include "util/log.h"

#define FERRY_LOG_MODULE "tunnel.router"

/* Packets (and bytes) a slot holds before its stream is attached; more is a
 * peer that streams before the opening call's reply, which the protocol
 * forbids. */
#define MAX_EARLY_PACKETS 64
#define MAX_EARLY_BYTES (16 * 1024 * 1024)

typedef struct {
    gint ref;
    guint32 serial;
    gint32 proc;
    TunnelStream *ts;   /* NULL until attached */
    RpcConnection *conn; /* the connection this router serves: a resumed stream moved off
                          * it ignores what it still brings */
    GQueue early;       /* RpcMessage */
    gsize early_bytes;
    gboolean early_dropped; /* warned once */
    gboolean cancelled;
} Slot;

struct TunnelRouter {
    GMutex lock;
    GHashTable *slots; /* serial -> Slot* (ref) */
    gboolean closed;
    GError *close_reason;
};

struct TunnelBinding {
    TunnelRouter *router;
    RpcConnection *conn;
    RpcHeader header;
    Slot *slot;
};

static Slot *slot_ref(Slot *s)
{
    g_atomic_int_inc(&s->ref);
    return s;
}

static void slot_unref(gpointer data)
{
    Slot *s = data;
    if (!s || !g_atomic_int_dec_and_test(&s->ref))
        return;
    rpc_message_queue_clear(&s->early);
    tunnel_stream_unref(s->ts);
    if (s->conn)
        rpc_connection_unref(s->conn);
    g_free(s);
}

TunnelRouter *tunnel_router_new(void)
{
    TunnelRouter *r = g_new0(TunnelRouter, 1);
    g_mutex_init(&r->lock);
    r->slots = g_hash_table_new_full(NULL, NULL, NULL, slot_unref);
    return r;
}

void tunnel_router_free(TunnelRouter *router)
{
    if (!router)
        return;
    g_hash_table_destroy(router->slots);
    g_clear_error(&router->close_reason);
    g_mutex_clear(&router->lock);
    g_free(router);
}

TunnelBinding *tunnel_router_reserve(TunnelRouter *router, RpcConnection *conn,
                                     const RpcHeader *opening_call)
{
    Slot *s = g_new0(Slot, 1);
    s->ref = 1;
    s->serial = opening_call->serial;
    s->proc = opening_call->proc;
    s->conn = rpc_connection_ref(conn);
    g_queue_init(&s->early);

    TunnelBinding *b = g_new0(TunnelBinding, 1);
    b->router = router;
    b->conn = rpc_connection_ref(conn);
    b->header = *opening_call;
    b->slot = slot_ref(s);

    g_mutex_lock(&router->lock);
    g_hash_table_replace(router->slots, GUINT_TO_POINTER(s->serial), s);
    g_mutex_unlock(&router->lock);
    return b;
}

RpcConnection *tunnel_binding_get_connection(TunnelBinding *binding)
{
    return binding->conn;
}

const RpcHeader *tunnel_binding_get_header(TunnelBinding *binding)
{
    return &binding->header;
}

void tunnel_binding_attach(TunnelBinding *b, TunnelStream *ts)
{
    TunnelRouter *r = b->router;
    g_mutex_lock(&r->lock);
    b->slot->ts = tunnel_stream_ref(ts);
    /* Under the lock, so the reader cannot overtake the early packets; they
     * are handed over without waiting for sink room (the stream may not run
     * yet, and a peer that streamed before the reply must not wedge the call
     * that attaches, nor the reader and the close behind this lock). */
    RpcMessage *m;
    while ((m = rpc_message_queue_pop(&b->slot->early)))
        tunnel_stream_deliver_on(ts, b->conn, m, TRUE);
    gboolean closed = r->closed;
    GError *why = r->close_reason ? g_error_copy(r->close_reason) : NULL;
    g_mutex_unlock(&r->lock);
    if (closed)
        tunnel_stream_connection_closed_on(ts, b->conn, why);
    g_clear_error(&why);
}

static void remove_slot(TunnelRouter *r, Slot *s)
{
    g_mutex_lock(&r->lock);
    if (g_hash_table_lookup(r->slots, GUINT_TO_POINTER(s->serial)) == s)
        g_hash_table_remove(r->slots, GUINT_TO_POINTER(s->serial));
    g_mutex_unlock(&r->lock);
}

void tunnel_binding_cancel(TunnelBinding *b)
{
    b->slot->cancelled = TRUE;
    remove_slot(b->router, b->slot);
}

void tunnel_binding_free(TunnelBinding *b)
{
    if (!b)
        return;
    slot_unref(b->slot);
    rpc_connection_unref(b->conn);
    g_free(b);
}

gboolean tunnel_router_deliver(TunnelRouter *router, RpcMessage *msg)
{
    g_mutex_lock(&router->lock);
    Slot *s = g_hash_table_lookup(router->slots, GUINT_TO_POINTER(msg->header.serial));
    if (s && msg->header.prog != FERRY_TUNNEL_PROGRAM && msg->header.proc != s->proc)
        s = NULL;
    if (!s) {
        g_mutex_unlock(&router->lock);
        FERRY_DEBUG("dropping a packet for unknown stream serial %u", msg->header.serial);
        rpc_message_free(msg);
        return FALSE;
    }
    if (!s->ts) {
        if (g_queue_get_length(&s->early) >= MAX_EARLY_PACKETS ||
            s->early_bytes + msg->len > MAX_EARLY_BYTES) {
            gboolean warn = !s->early_dropped;
            s->early_dropped = TRUE;
            g_mutex_unlock(&router->lock);
            if (warn)
                FERRY_WARN_LIMITED("dropping packets for stream serial %u: its stream is not "
                                   "open yet",
                                   msg->header.serial);
            rpc_message_free(msg);
            return FALSE;
        }
        s->early_bytes += msg->len;
        rpc_message_queue_push(&s->early, msg);
        g_mutex_unlock(&router->lock);
        return TRUE;
    }
    TunnelStream *ts = tunnel_stream_ref(s->ts);
    RpcConnection *conn = rpc_connection_ref(s->conn);
    gboolean over = tunnel_stream_is_over(ts);
    if (over)
        g_hash_table_remove(router->slots, GUINT_TO_POINTER(msg->header.serial));
    g_mutex_unlock(&router->lock);

    if (over)
        rpc_message_free(msg); /* late packet for a finished stream */
    else
        tunnel_stream_deliver_on(ts, conn, msg, FALSE);
    rpc_connection_unref(conn);
    tunnel_stream_unref(ts);
    return !over;
}

/* The attached slots (references). */
static GPtrArray *snapshot_slots(TunnelRouter *r)
{
    GPtrArray *slots = g_ptr_array_new_with_free_func(slot_unref);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, r->slots);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        Slot *s = value;
        if (s->ts)
            g_ptr_array_add(slots, slot_ref(s));
    }
    return slots;
}

void tunnel_router_connection_closed(TunnelRouter *router, const GError *why)
{
    g_mutex_lock(&router->lock);
    router->closed = TRUE;
    if (why && !router->close_reason)
        router->close_reason = g_error_copy(why);
    g_autoptr(GPtrArray) slots = snapshot_slots(router);
    g_mutex_unlock(&router->lock);
    for (guint i = 0; i < slots->len; i++) {
        Slot *s = slots->pdata[i];
        tunnel_stream_connection_closed_on(s->ts, s->conn, why);
    }
}

void tunnel_router_abort_all(TunnelRouter *router, const GError *why)
{
    g_mutex_lock(&router->lock);
    g_autoptr(GPtrArray) slots = snapshot_slots(router);
    g_mutex_unlock(&router->lock);
    for (guint i = 0; i < slots->len; i++)
        tunnel_stream_abort(((Slot *)slots->pdata[i])->ts, why);
}

/* ---- peer watches ---- */

struct TunnelPeerWatch {
    gint ref;
    GMutex lock;
    RpcConnection *conn;
    char *identity; /* set once, before the watch is shared */
};

TunnelPeerWatch *tunnel_peer_watch_new(RpcConnection *conn)
{
    TunnelPeerWatch *w = g_new0(TunnelPeerWatch, 1);
    w->ref = 1;
    g_mutex_init(&w->lock);
    w->conn = rpc_connection_ref(conn);
    return w;
}

TunnelPeerWatch *tunnel_peer_watch_ref(TunnelPeerWatch *w)
{
    g_atomic_int_inc(&w->ref);
    return w;
}

void tunnel_peer_watch_unref(TunnelPeerWatch *w)
{
    if (!w || !g_atomic_int_dec_and_test(&w->ref))
        return;
    rpc_connection_unref(w->conn);
    g_mutex_clear(&w->lock);
    g_free(w->identity);
    g_free(w);
}

gboolean tunnel_peer_watch_gone(TunnelPeerWatch *w)
{
    if (!w)
        return FALSE;
    g_mutex_lock(&w->lock);
    gboolean gone = rpc_connection_is_closed(w->conn);
    g_mutex_unlock(&w->lock);
    return gone;
}

void tunnel_peer_watch_set_identity(TunnelPeerWatch *w, const char *identity)
{
    g_free(w->identity);
    w->identity = g_strdup(identity);
}

const char *tunnel_peer_watch_get_identity(TunnelPeerWatch *w)
{
    return w ? w->identity : NULL;
}

gboolean tunnel_peer_watch_broke(TunnelPeerWatch *w)
{
    if (!w)
        return FALSE;
    g_mutex_lock(&w->lock);
    /* A source whose host still answered is frozen or stuck, not cut off. */
    gboolean broke = rpc_connection_is_closed(w->conn) && !rpc_connection_closed_cleanly(w->conn) &&
                     !rpc_connection_peer_unresponsive(w->conn);
    g_mutex_unlock(&w->lock);
    return broke;
}

void tunnel_peer_watch_rebind(TunnelPeerWatch *w, RpcConnection *conn)
{
    if (!w)
        return;
    RpcConnection *ref = rpc_connection_ref(conn);
    g_mutex_lock(&w->lock);
    RpcConnection *old = w->conn;
    w->conn = ref;
    g_mutex_unlock(&w->lock);
    rpc_connection_unref(old);
}

RpcConnection *tunnel_peer_watch_rebind_take(TunnelPeerWatch *w, RpcConnection *conn)
{
    RpcConnection *ref = rpc_connection_ref(conn);
    g_mutex_lock(&w->lock);
    RpcConnection *old = w->conn;
    w->conn = ref;
    g_mutex_unlock(&w->lock);
    return old;
}
