/* A migration channel: one byte stream between a local VMM socket and the
 * peer daemon, carried inside an RPC stream (tunnelled) or over a data
 * connection the two daemons relay (proxy mode), or between the VMM socket
 * and a file (save and restore). The migration engine holds
 * channels only, never the RPC connection, transport or TLS context beneath.
 *
 * Also the daemon's settings for migration data (TunnelDataSettings: the
 * data connections' address, ports and TLS, and how long a channel may
 * stall): made once by the daemon, handed down to the drivers. */
#pragma once

#include <glib.h>

#include "rpc/rpc-tls.h"
#include "tunnel/tunnel-dataconn.h"
#include "tunnel/tunnel-file.h"
#include "tunnel/tunnel-relay.h"
#include "tunnel/tunnel-resume.h"
#include "tunnel/tunnel-router.h"
#include "tunnel/tunnel-stream.h"

typedef struct TunnelChannel TunnelChannel;

/* Tunnelled: a stream for vmm_fd (taken) on the connection of binding (the
 * reply to the opening call), attached to the binding and started. */
TunnelChannel *tunnel_channel_open_stream(TunnelBinding *binding, int vmm_fd,
                                          const TunnelStreamConfig *config);
/* Proxy mode, source: connects to host:port, presents the token and the
 * channel's index (over TLS with the client files of pkipath when tls), and
 * relays vmm_fd to it. vmm_fd is taken on every path. With resume_token
 * and config->resume_timeout_s, a broken data connection is made again to
 * the same host:port with that token (over TLS likewise). */
TunnelChannel *tunnel_channel_connect_data(const char *host, guint16 port, const char *token,
                                           guint index, gboolean tls, const char *pkipath,
                                           int timeout_ms, int vmm_fd,
                                           const TunnelRelayConfig *config,
                                           const char *resume_token, GError **error);
/* Proxy mode, destination: relays vmm_fd to a data connection accepted
 * with tunnel_data_listener_accept_channel; both taken. */
TunnelChannel *tunnel_channel_relay(int vmm_fd, RpcTransport *net, const TunnelRelayConfig *config);
/* Proxy mode, destination: waits (deadline_us monotonic) for the connection
 * that presents the listener's token and relays it to vmm_fd. vmm_fd is taken
 * on success only. */
TunnelChannel *tunnel_channel_accept_data(TunnelDataListener *listener, gint64 deadline_us,
                                          int vmm_fd, const TunnelRelayConfig *config,
                                          GError **error);
/* Save and restore: vmm_fd and file_fd (both taken) copied one way, as
 * config says; started. */
TunnelChannel *tunnel_channel_open_file(int vmm_fd, int file_fd, const TunnelFileConfig *config);
/* Keeps the listener's port while the channel runs: every other connection
 * is refused and logged, but a source's resumed data connection (the
 * listener's resume token), which the channel's relay goes on over.
 * Returns when the channel is over or the listener was cancelled. */
void tunnel_channel_guard_port(TunnelChannel *ch, TunnelDataListener *listener);

/* Lifetime: refcounted; the channel's threads hold their own references. */
TunnelChannel *tunnel_channel_ref(TunnelChannel *ch);
void tunnel_channel_unref(TunnelChannel *ch);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TunnelChannel, tunnel_channel_unref)

/* TRUE once the channel ended cleanly; FALSE with the cause, or with
 * OPERATION_TIMEOUT once deadline_us (monotonic; 0 = none) passed. */
gboolean tunnel_channel_wait(TunnelChannel *ch, gint64 deadline_us, GError **error);
/* Shuts the sockets down and tells the peer; never waits. why may be NULL. */
void tunnel_channel_abort(TunnelChannel *ch, const GError *why);
gboolean tunnel_channel_is_over(TunnelChannel *ch);
/* Whether the peer is known to have heard the end: a stream knows (its
 * finish or abort was confirmed); a relay cannot tell, so it says TRUE. */
gboolean tunnel_channel_peer_acknowledged_end(TunnelChannel *ch);
void tunnel_channel_set_bandwidth(TunnelChannel *ch, guint64 bytes_per_second);
/* The channel's bytes count against rate, which a migration's channels
 * share: their sum keeps to its limit. */
void tunnel_channel_set_rate(TunnelChannel *ch, TunnelRate *rate);
/* Bytes carried so far: VMM -> peer, peer -> VMM. */
void tunnel_channel_get_bytes(TunnelChannel *ch, guint64 *out, guint64 *in);

/* Resuming a tunnelled stream (tunnel-resume.h) or a relay: the stream,
 * borrowed (NULL for a relay or a file); whether it waits for a new
 * connection; how often it went on over a new one and the bytes it sent
 * again then. */
TunnelStream *tunnel_channel_get_stream(TunnelChannel *ch);
gboolean tunnel_channel_awaits_resume(TunnelChannel *ch);
void tunnel_channel_get_resume_stats(TunnelChannel *ch, guint *reconnections, guint64 *resent);
/* A resumable channel that moved nothing for a while, on a connection whose
 * peer's host acknowledged nothing within silent_ms either, takes that for
 * a broken path and waits the resume time (its connection let go); TRUE
 * then. FALSE: not resumable, or the peer's host still answers. */
gboolean tunnel_channel_break_silent_path(TunnelChannel *ch, guint silent_ms, const GError *why);
/* Destination: the channel waits for its source under token until
 * tunnel_resume_withdraw; watch follows it to the new connection. */
void tunnel_channel_offer_resume(TunnelChannel *ch, const char *token, TunnelPeerWatch *watch);

/* What the flight recorder samples every 100 ms. */
typedef struct {
    const char *mode;        /* "tunnel" or "proxy" */
    TunnelCounters counters; /* cumulative since the channel opened */
    gsize queued_bytes;      /* tunnel: bytes in the connection's send queue */
    gint64 peer_last_rx_us;  /* tunnel: when the connection last heard the peer (monotonic) */
    gint64 keepalive_rtt_us; /* tunnel: the last answered keepalive ping's round trip */
    gint64 keepalive_pong_us; /* tunnel: when that answer came (monotonic; 0 none) */
} TunnelChannelSample;
/* Prompt: atomic reads and the connection's lock only. */
void tunnel_channel_sample(TunnelChannel *ch, TunnelChannelSample *out);

typedef struct TunnelDataSettings TunnelDataSettings;

/* address: where data connections listen by default (NULL: every address);
 * ports: the range to pick from; tls: the daemon's server context for
 * encrypted data connections (`virsh migrate --tls`), or NULL (a reference is
 * taken). */
TunnelDataSettings *tunnel_data_settings_new(const char *address, guint port_min,
                                             guint port_max, RpcTlsContext *tls);
TunnelDataSettings *tunnel_data_settings_ref(TunnelDataSettings *settings);
void tunnel_data_settings_unref(TunnelDataSettings *settings);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TunnelDataSettings, tunnel_data_settings_unref)

/* Seconds a running channel may move no byte before its migration fails
 * (0: never). Default 10. */
void tunnel_data_settings_set_stall_timeout(TunnelDataSettings *settings, guint seconds);
guint tunnel_data_settings_get_stall_timeout(TunnelDataSettings *settings);
/* The channels of a tunnelled migration to a ferry peer when the client
 * names no count (migration_parallel_connections). Default 1. */
void tunnel_data_settings_set_parallel_connections(TunnelDataSettings *settings, guint n);
guint tunnel_data_settings_get_parallel_connections(TunnelDataSettings *settings);
/* Seconds a tunnelled stream or a proxy relay whose connection
 * broke waits to be resumed
 * (0: never resumed). Default 30. */
void tunnel_data_settings_set_resume_timeout(TunnelDataSettings *settings, guint seconds);
guint tunnel_data_settings_get_resume_timeout(TunnelDataSettings *settings);
/* The source side's client files for encrypted data connections
 * (migration_pki_dir); NULL: libvirt's client locations. Set once, at start. */
void tunnel_data_settings_set_client_pki_dir(TunnelDataSettings *settings, const char *dir);
const char *tunnel_data_settings_get_client_pki_dir(TunnelDataSettings *settings);

/* The configured listen address, or "0.0.0.0". */
const char *tunnel_data_settings_get_address(TunnelDataSettings *settings);
/* A listener for one migration's data connection on addr, on port (0: the
 * first free port of the range), for token; tls asks for an encrypted data
 * connection, which needs the daemon's certificate. */
TunnelDataListener *tunnel_data_settings_listen(TunnelDataSettings *settings, const char *addr,
                                                guint port, const char *token, gboolean tls,
                                                const char *what, GError **error);
