/* A bandwidth limit that several channels share: every byte any of them
 * sends counts against one budget, so that a migration's channels (the
 * VMM's stream, each disk's, each parallel connection's) together keep to
 * the migration's --bandwidth, not each of them. */
#pragma once

#include <glib.h>

typedef struct TunnelRate TunnelRate;

/* bytes_per_second 0: unlimited. */
TunnelRate *tunnel_rate_new(guint64 bytes_per_second);
TunnelRate *tunnel_rate_ref(TunnelRate *rate);
void tunnel_rate_unref(TunnelRate *rate);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TunnelRate, tunnel_rate_unref)

/* A new limit; the count starts again now. */
void tunnel_rate_set(TunnelRate *rate, guint64 bytes_per_second);
guint64 tunnel_rate_get(TunnelRate *rate);
/* n bytes went out on one of the channels sharing the rate. */
void tunnel_rate_add(TunnelRate *rate, guint64 n);
/* When (monotonic, us) the next byte may go: at once when it is in the
 * past, or 0 (no limit). */
gint64 tunnel_rate_due(TunnelRate *rate);
