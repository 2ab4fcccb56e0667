/* A bandwidth limit shared by channels (tunnel-rate.h). */
#include "tunnel/tunnel-rate.h"

/* Time a quiet spell may be made up for at full speed: a channel idle for
 * a minute (the memory stream while the disks are mirrored) must not then
 * go unthrottled for a minute's worth of bytes. */
#define BURST_US G_USEC_PER_SEC

struct TunnelRate {
    gint ref;
    GMutex lock;
    guint64 bytes_per_second;
    gint64 start_us; /* the count's origin */
    guint64 bytes;   /* sent since start_us */
};

TunnelRate *tunnel_rate_new(guint64 bytes_per_second)
{
    TunnelRate *r = g_new0(TunnelRate, 1);
    r->ref = 1;
    g_mutex_init(&r->lock);
    r->bytes_per_second = bytes_per_second;
    r->start_us = g_get_monotonic_time();
    return r;
}

TunnelRate *tunnel_rate_ref(TunnelRate *r)
{
    g_atomic_int_inc(&r->ref);
    return r;
}

void tunnel_rate_unref(TunnelRate *r)
{
    if (!r || !g_atomic_int_dec_and_test(&r->ref))
        return;
    g_mutex_clear(&r->lock);
    g_free(r);
}

void tunnel_rate_set(TunnelRate *r, guint64 bytes_per_second)
{
    g_mutex_lock(&r->lock);
    r->bytes_per_second = bytes_per_second;
    r->start_us = g_get_monotonic_time();
    r->bytes = 0;
    g_mutex_unlock(&r->lock);
}

guint64 tunnel_rate_get(TunnelRate *r)
{
    g_mutex_lock(&r->lock);
    guint64 bps = r->bytes_per_second;
    g_mutex_unlock(&r->lock);
    return bps;
}

/* r->lock held, a limit set. */
static gint64 due_locked(TunnelRate *r)
{
    return r->start_us + (gint64)((double)r->bytes * G_USEC_PER_SEC / r->bytes_per_second);
}

void tunnel_rate_add(TunnelRate *r, guint64 n)
{
    g_mutex_lock(&r->lock);
    if (r->bytes_per_second > 0) {
        gint64 now = g_get_monotonic_time();
        if (due_locked(r) < now - BURST_US) { /* behind by more than a burst */
            r->start_us = now - BURST_US;
            r->bytes = 0;
        }
    }
    r->bytes += n;
    g_mutex_unlock(&r->lock);
}

gint64 tunnel_rate_due(TunnelRate *r)
{
    g_mutex_lock(&r->lock);
    gint64 due = r->bytes_per_second > 0 ? due_locked(r) : 0;
    g_mutex_unlock(&r->lock);
    return due;
}
