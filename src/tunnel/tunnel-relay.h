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

/* The source's way back after its data connection broke: a new connection
 * that presented the migration's resume token and ours (the bytes this side
 * took from the network), with the peer's own count in *theirs. */
typedef RpcTransport *(*TunnelRelayReconnect)(gpointer data, guint64 ours, guint64 *theirs,
                                              int timeout_ms, GError **error);

typedef struct {
    const char *vmm_name;   /* "source VMM" */
    const char *peer_name;  /* "data connection to the destination ferryd at 10.0.0.2:49152" */
    guint64 bandwidth;      /* bytes per second toward the peer, 0 = unlimited */
    /* Resuming: seconds a broken data connection may take
     * to come back (0: a broken connection fails the relay). The source
     * reconnects with reconnect (its data taken, freed with
     * reconnect_free); the destination is handed the new connection
     * (tunnel_relay_hold, tunnel_relay_reattach). */
    guint resume_timeout_s;
    TunnelRelayReconnect reconnect;
    gpointer reconnect_data;
    GDestroyNotify reconnect_free;
    /* Tests: the bytes sent it keeps (0: tcp_wmem[2] + tcp_rmem[2] + 1 MiB,
     * what the kernels may hold); the send ring holds 4 MiB more. */
    gsize ring_keep;
    /* Tests: plaintext keeps what it sent in a user-space ring (a copy)
     * instead of pipe pages (tunnel-keep), as TLS does; the keep's pipes
     * are asked for keep_pipe_size bytes each (0: 4 MiB). */
    gboolean send_ring;
    gsize keep_pipe_size;
    /* Tests: how long a connection the peer reset or ended may take to
     * come back (0: TUNNEL_RESUME_ENDED_GRACE_S; never beyond the resume
     * time). */
    guint ended_grace_s;
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
/* Resuming (config.resume_timeout_s): whether the relay waits for a new
 * data connection; how often it went on over one and the bytes it sent
 * again then. */
gboolean tunnel_relay_awaits_resume(TunnelRelay *relay);
void tunnel_relay_get_resume_stats(TunnelRelay *relay, guint *reconnections, guint64 *resent);
/* The relay moved nothing for a while and the peer's host acknowledged
 * nothing on the data connection within silent_ms: the path broke though
 * this side's socket did not tell. A resumable relay lets the connection
 * go and waits the resume time, as for a TCP timeout; TRUE then. FALSE:
 * not resumable, over, or the host still answers (a stuck peer). */
gboolean tunnel_relay_break_silent_path(TunnelRelay *relay, guint silent_ms);
/* Destination, a resume hello came: the relay lets its current data
 * connection go (if it still looked alive), waits until its network reader
 * stopped, and says in *ours the bytes it took from the network. FALSE
 * when the relay is over or cannot be resumed. */
gboolean tunnel_relay_hold(TunnelRelay *relay, guint64 *ours, GError **error);
/* Both sides: net (taken on success only) carries the relay on; the peer
 * took theirs bytes of ours from the network: the rest is sent again from
 * what the relay kept. A position no longer kept fails the relay. */
gboolean tunnel_relay_reattach(TunnelRelay *relay, RpcTransport *net, guint64 theirs,
                               GError **error);
/* The flight recorder's counters (live; read with tunnel_counters_read). */
const TunnelCounters *tunnel_relay_get_counters(TunnelRelay *relay);
