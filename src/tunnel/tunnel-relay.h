/* Proxy mode's data plane: a VMM socket relayed to a data connection that
 * the two daemons own, both directions, each with a reader and a writer
 * thread. Plaintext moves with splice() through a pipe, so the bytes never
 * enter user space; over TLS each byte is copied once, into or out of the
 * cipher. Every failure names the hop (VMM side or network side), the OS
 * error and the bytes moved. */
#pragma once

#include <glib.h>

#include "rpc/rpc-transport.h"
#include "tunnel/tunnel-counters.h"
#include "tunnel/tunnel-rate.h"

typedef struct TunnelRelay TunnelRelay;

typedef struct {
    const char *vmm_name;   /* "source VMM" */
    const char *peer_name;  /* "data connection to the destination ferryd at 10.0.0.2:49152" */
    guint64 bandwidth;      /* bytes per second toward the peer, 0 = unlimited */
} TunnelRelayConfig;

typedef struct {
    guint64 bytes_out; /* VMM -> network */
    guint64 bytes_in;  /* network -> VMM */
} TunnelRelayStats;

/* Takes ownership of the VMM socket and the data connection's transport
 * (a plain socket, or TLS). Lifetime: refcounted; each direction's thread
 * holds a reference while it runs; both close with the last. */
TunnelRelay *tunnel_relay_new(int vmm_fd, RpcTransport *net, const TunnelRelayConfig *config);
TunnelRelay *tunnel_relay_ref(TunnelRelay *relay);
void tunnel_relay_unref(TunnelRelay *relay);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TunnelRelay, tunnel_relay_unref)

void tunnel_relay_start(TunnelRelay *relay);
/* TRUE once both directions reached a clean end of stream; FALSE with the
 * first failure. deadline_us monotonic, 0 = none (OPERATION_TIMEOUT if it passes). */
gboolean tunnel_relay_wait(TunnelRelay *relay, gint64 deadline_us, GError **error);
/* Shuts both sockets down at once; never waits. */
void tunnel_relay_abort(TunnelRelay *relay, const GError *why);
gboolean tunnel_relay_is_over(TunnelRelay *relay);
void tunnel_relay_get_stats(TunnelRelay *relay, TunnelRelayStats *stats);
void tunnel_relay_set_bandwidth(TunnelRelay *relay, guint64 bytes_per_second);
/* Counts against rate (shared with other channels) from now on. */
void tunnel_relay_set_rate(TunnelRelay *relay, TunnelRate *rate);
/* The flight recorder's counters (live; read with tunnel_counters_read). */
const TunnelCounters *tunnel_relay_get_counters(TunnelRelay *relay);
