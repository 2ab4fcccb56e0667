/* The send ring: positions, wrap-around and its memory. The caller (the
 * stream) serialises commit, release and the position reads under its lock;
 * only the free room handed out by tunnel_send_ring_space is written
 * without it, and nobody else touches that room. */
#include "tunnel/tunnel-ring.h"

struct TunnelSendRing {
    gint ref;
    guint8 *buf; /* allocated at the first tunnel_send_ring_space */
    gsize capacity;
    guint64 start, end; /* stream positions; end - start <= capacity */
};

TunnelSendRing *tunnel_send_ring_new(gsize capacity)
{
    TunnelSendRing *r = g_new0(TunnelSendRing, 1);
    r->ref = 1;
    r->capacity = MAX(capacity, 1);
    return r;
}

gpointer tunnel_send_ring_ref(gpointer ring)
{
    TunnelSendRing *r = ring;
    g_atomic_int_inc(&r->ref);
    return r;
}

void tunnel_send_ring_unref(gpointer ring)
{
    TunnelSendRing *r = ring;
    if (!r || !g_atomic_int_dec_and_test(&r->ref))
        return;
    g_free(r->buf);
    g_free(r);
}

guint8 *tunnel_send_ring_space(TunnelSendRing *r, gsize max, gsize *len)
{
    if (!r->buf)
        r->buf = g_malloc(r->capacity);
    gsize at = r->end % r->capacity;
    gsize free_bytes = r->capacity - (gsize)(r->end - r->start);
    *len = MIN(MIN(max, free_bytes), r->capacity - at);
    return r->buf + at;
}

void tunnel_send_ring_commit(TunnelSendRing *r, gsize len)
{
    g_assert(r->end - r->start + len <= r->capacity);
    r->end += len;
}

void tunnel_send_ring_release(TunnelSendRing *r, guint64 pos)
{
    if (pos > r->start)
        r->start = MIN(pos, r->end);
}

guint64 tunnel_send_ring_start(TunnelSendRing *r)
{
    return r->start;
}

guint64 tunnel_send_ring_end(TunnelSendRing *r)
{
    return r->end;
}

const guint8 *tunnel_send_ring_at(TunnelSendRing *r, guint64 pos, gsize max, gsize *len)
{
    g_assert(pos >= r->start && pos <= r->end);
    gsize at = pos % r->capacity;
    *len = (gsize)MIN(MIN((guint64)max, r->end - pos), (guint64)(r->capacity - at));
    return r->buf + at;
}
