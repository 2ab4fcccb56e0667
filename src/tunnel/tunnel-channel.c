/* Channels: one interface over the two ways a migration's bytes travel, and
 * the daemon's data-connection settings. */
#include "tunnel/tunnel-channel.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "tunnel.channel"

struct TunnelChannel {
    gint ref;
    TunnelStream *stream; /* exactly one of stream, relay, file */
    TunnelRelay *relay;
    TunnelFile *file;
};

/* What the daemon may have written to its VMM socket and the VMM not yet
 * read. The default (208 KiB) makes the daemon's writer and the VMM's reader
 * take turns: every 200 KiB one sleeps until the other wakes it (measured:
 * 10,000 context switches per 2 GiB on each side of that one socket). The
 * VMM sizes its own sending side the same way; the kernel caps both at
 * net.core.wmem_max. */
#define VMM_SOCKET_BUFFER (4 << 20)

static int vmm_socket_sized(int vmm_fd)
{
    int size = VMM_SOCKET_BUFFER;
    (void)setsockopt(vmm_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    return vmm_fd;
}

static TunnelChannel *channel_new(TunnelStream *stream, TunnelRelay *relay)
{
    TunnelChannel *ch = g_new0(TunnelChannel, 1);
    ch->ref = 1;
    ch->stream = stream;
    ch->relay = relay;
    return ch;
}

TunnelChannel *tunnel_channel_open_file(int vmm_fd, int file_fd, const TunnelFileConfig *config)
{
    TunnelChannel *ch = channel_new(NULL, NULL);
    ch->file = tunnel_file_new(vmm_socket_sized(vmm_fd), file_fd, config);
    tunnel_file_start(ch->file);
    return ch;
}

TunnelChannel *tunnel_channel_open_stream(TunnelBinding *binding, int vmm_fd,
                                          const TunnelStreamConfig *config)
{
    TunnelStream *ts = tunnel_stream_new(tunnel_binding_get_connection(binding),
                                         tunnel_binding_get_header(binding),
                                         vmm_socket_sized(vmm_fd), config);
    tunnel_binding_attach(binding, ts);
    tunnel_stream_start(ts);
    return channel_new(ts, NULL);
}

/* Where a source's broken data connection goes back to. */
typedef struct {
    char *host;
    guint16 port;
    char *token;
    gboolean tls;
    char *pkipath;
} Reconnect;

static void reconnect_free(gpointer data)
{
    Reconnect *rc = data;
    g_free(rc->host);
    g_free(rc->token);
    g_free(rc->pkipath);
    g_free(rc);
}

static RpcTransport *reconnect(gpointer data, guint64 ours, guint64 *theirs, int timeout_ms,
                               GError **error)
{
    Reconnect *rc = data;
    return tunnel_data_resume_connect(rc->host, rc->port, rc->token, rc->tls, rc->pkipath, ours,
                                      theirs, timeout_ms, error);
}

TunnelChannel *tunnel_channel_connect_data(const char *host, guint16 port, const char *token,
                                           guint index, gboolean tls, const char *pkipath,
                                           int timeout_ms, int vmm_fd,
                                           const TunnelRelayConfig *config,
                                           const char *resume_token, GError **error)
{
    RpcTransport *t =
        tunnel_data_connect_channel(host, port, token, index, tls, pkipath, timeout_ms, error);
    if (!t) {
        close(vmm_fd);
        return NULL;
    }
    TunnelRelayConfig cfg = *config;
    if (resume_token && cfg.resume_timeout_s && strlen(resume_token) == TUNNEL_DATA_TOKEN_LEN) {
        Reconnect *rc = g_new0(Reconnect, 1);
        rc->host = g_strdup(host);
        rc->port = port;
        rc->token = g_strdup(resume_token);
        rc->tls = tls;
        rc->pkipath = g_strdup(pkipath);
        cfg.reconnect = reconnect;
        cfg.reconnect_data = rc;
        cfg.reconnect_free = reconnect_free;
    } else {
        cfg.resume_timeout_s = 0;
    }
    TunnelRelay *relay = tunnel_relay_new(vmm_socket_sized(vmm_fd), t, &cfg);
    tunnel_relay_start(relay);
    return channel_new(NULL, relay);
}

TunnelChannel *tunnel_channel_relay(int vmm_fd, RpcTransport *net, const TunnelRelayConfig *config)
{
    TunnelRelay *relay = tunnel_relay_new(vmm_socket_sized(vmm_fd), net, config);
    tunnel_relay_start(relay);
    return channel_new(NULL, relay);
}

TunnelChannel *tunnel_channel_accept_data(TunnelDataListener *listener, gint64 deadline_us,
                                          int vmm_fd, const TunnelRelayConfig *config,
                                          GError **error)
{
    RpcTransport *t = tunnel_data_listener_accept(listener, deadline_us, error);
    if (!t)
        return NULL;
    TunnelRelay *relay = tunnel_relay_new(vmm_socket_sized(vmm_fd), t, config);
    tunnel_relay_start(relay);
    return channel_new(NULL, relay);
}

/* A source's resumed data connection: the relay lets its old one go,
 * both tell where they stand, and the relay goes on over t (taken). */
static void take_resumed(TunnelChannel *ch, RpcTransport *t, guint64 theirs)
{
    g_autoptr(GError) e = NULL;
    guint64 ours = 0;
    if (!ch->relay || !tunnel_relay_hold(ch->relay, &ours, &e)) {
        FERRY_WARN("refused to resume the migration's data connection: %s",
                   e ? e->message : "not a relay");
        tunnel_data_resume_answer(t, FALSE, 0);
        rpc_transport_free(t);
        return;
    }
    tunnel_data_resume_answer(t, TRUE, ours);
    if (!tunnel_relay_reattach(ch->relay, t, theirs, &e)) {
        FERRY_WARN("cannot resume the migration's data connection: %s", e->message);
        rpc_transport_free(t);
    }
}

void tunnel_channel_guard_port(TunnelChannel *ch, TunnelDataListener *listener)
{
    /* The token was single-use: the listener refuses and logs every newcomer
     * but a source that resumes (with the resume token, when agreed). */
    while (!tunnel_channel_is_over(ch)) {
        g_autoptr(GError) e = NULL;
        gboolean resume = FALSE;
        guint64 theirs = 0;
        RpcTransport *extra = tunnel_data_listener_accept_resume(
            listener, g_get_monotonic_time() + 500 * 1000, &resume, &theirs, &e);
        if (extra && resume)
            take_resumed(ch, extra, theirs);
        else
            rpc_transport_free(extra);
        if (g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED))
            break;
    }
}

TunnelChannel *tunnel_channel_ref(TunnelChannel *ch)
{
    g_atomic_int_inc(&ch->ref);
    return ch;
}

void tunnel_channel_unref(TunnelChannel *ch)
{
    if (!ch || !g_atomic_int_dec_and_test(&ch->ref))
        return;
    tunnel_stream_unref(ch->stream);
    tunnel_relay_unref(ch->relay);
    tunnel_file_unref(ch->file);
    g_free(ch);
}

gboolean tunnel_channel_wait(TunnelChannel *ch, gint64 deadline_us, GError **error)
{
    if (ch->file)
        return tunnel_file_wait(ch->file, deadline_us, error);
    return ch->stream ? tunnel_stream_wait(ch->stream, deadline_us, error)
                      : tunnel_relay_wait(ch->relay, deadline_us, error);
}

void tunnel_channel_abort(TunnelChannel *ch, const GError *why)
{
    if (ch->file) {
        tunnel_file_abort(ch->file, why);
    } else if (ch->stream) {
        if (!tunnel_stream_is_over(ch->stream))
            tunnel_stream_abort(ch->stream, why);
    } else {
        tunnel_relay_abort(ch->relay, why);
    }
}

gboolean tunnel_channel_is_over(TunnelChannel *ch)
{
    if (ch->file)
        return tunnel_file_is_over(ch->file);
    return ch->stream ? tunnel_stream_is_over(ch->stream) : tunnel_relay_is_over(ch->relay);
}

gboolean tunnel_channel_peer_acknowledged_end(TunnelChannel *ch)
{
    return ch->stream ? tunnel_stream_peer_acknowledged_end(ch->stream) : TRUE;
}

void tunnel_channel_set_bandwidth(TunnelChannel *ch, guint64 bytes_per_second)
{
    if (ch->file)
        tunnel_file_set_bandwidth(ch->file, bytes_per_second);
    else if (ch->stream)
        tunnel_stream_set_bandwidth(ch->stream, bytes_per_second);
    else
        tunnel_relay_set_bandwidth(ch->relay, bytes_per_second);
}

void tunnel_channel_set_rate(TunnelChannel *ch, TunnelRate *rate)
{
    if (ch->file)
        tunnel_file_set_rate(ch->file, rate);
    else if (ch->stream)
        tunnel_stream_set_rate(ch->stream, rate);
    else
        tunnel_relay_set_rate(ch->relay, rate);
}

void tunnel_channel_get_bytes(TunnelChannel *ch, guint64 *out, guint64 *in)
{
    if (ch->file) {
        tunnel_file_get_bytes(ch->file, out, in);
    } else if (ch->stream) {
        TunnelStats s;
        tunnel_stream_get_stats(ch->stream, &s);
        *out = s.bytes_out;
        *in = s.bytes_in;
    } else {
        TunnelRelayStats s;
        tunnel_relay_get_stats(ch->relay, &s);
        *out = s.bytes_out;
        *in = s.bytes_in;
    }
}

TunnelStream *tunnel_channel_get_stream(TunnelChannel *ch)
{
    return ch->stream;
}

gboolean tunnel_channel_awaits_resume(TunnelChannel *ch)
{
    if (ch->relay)
        return tunnel_relay_awaits_resume(ch->relay);
    return ch->stream && tunnel_stream_awaits_resume(ch->stream);
}

gboolean tunnel_channel_break_silent_path(TunnelChannel *ch, guint silent_ms, const GError *why)
{
    if (ch->relay)
        return tunnel_relay_break_silent_path(ch->relay, silent_ms);
    return ch->stream && tunnel_stream_break_silent_path(ch->stream, silent_ms, why);
}

void tunnel_channel_get_resume_stats(TunnelChannel *ch, guint *reconnections, guint64 *resent)
{
    *reconnections = 0;
    *resent = 0;
    if (ch->stream) {
        TunnelStats s;
        tunnel_stream_get_stats(ch->stream, &s);
        *reconnections = s.reconnections;
        *resent = s.bytes_resent;
    } else if (ch->relay) {
        tunnel_relay_get_resume_stats(ch->relay, reconnections, resent);
    }
}

void tunnel_channel_offer_resume(TunnelChannel *ch, const char *token, TunnelPeerWatch *watch)
{
    if (ch->stream && token)
        tunnel_resume_offer(token, ch->stream, watch);
}

void tunnel_channel_sample(TunnelChannel *ch, TunnelChannelSample *out)
{
    memset(out, 0, sizeof(*out));
    if (ch->stream) {
        out->mode = "tunnel";
        tunnel_counters_read(tunnel_stream_get_counters(ch->stream), &out->counters);
        out->queued_bytes = tunnel_stream_get_queued_bytes(ch->stream);
        tunnel_stream_get_liveness(ch->stream, &out->peer_last_rx_us, &out->keepalive_rtt_us,
                                   &out->keepalive_pong_us);
    } else {
        out->mode = "proxy";
        tunnel_counters_read(tunnel_relay_get_counters(ch->relay), &out->counters);
    }
}

/* ---- the daemon's data-connection settings ---- */

struct TunnelDataSettings {
    gint ref;
    char *address;
    guint port_min, port_max;
    RpcTlsContext *tls;
    guint stall_timeout_s;
    guint parallel_connections;
    guint resume_timeout_s;
    char *client_pki_dir;
};

TunnelDataSettings *tunnel_data_settings_new(const char *address, guint port_min,
                                             guint port_max, RpcTlsContext *tls)
{
    TunnelDataSettings *s = g_new0(TunnelDataSettings, 1);
    s->ref = 1;
    s->address = g_strdup(address);
    s->port_min = port_min;
    s->port_max = port_max;
    s->tls = tls ? rpc_tls_context_ref(tls) : NULL;
    s->stall_timeout_s = 10;
    s->parallel_connections = 1;
    s->resume_timeout_s = 30;
    return s;
}

TunnelDataSettings *tunnel_data_settings_ref(TunnelDataSettings *s)
{
    g_atomic_int_inc(&s->ref);
    return s;
}

void tunnel_data_settings_unref(TunnelDataSettings *s)
{
    if (!s || !g_atomic_int_dec_and_test(&s->ref))
        return;
    g_free(s->address);
    g_free(s->client_pki_dir);
    rpc_tls_context_unref(s->tls);
    g_free(s);
}

void tunnel_data_settings_set_stall_timeout(TunnelDataSettings *s, guint seconds)
{
    s->stall_timeout_s = seconds;
}

guint tunnel_data_settings_get_stall_timeout(TunnelDataSettings *s)
{
    return s->stall_timeout_s;
}

void tunnel_data_settings_set_parallel_connections(TunnelDataSettings *s, guint n)
{
    s->parallel_connections = MAX(n, 1u);
}

guint tunnel_data_settings_get_parallel_connections(TunnelDataSettings *s)
{
    return s ? s->parallel_connections : 1;
}

void tunnel_data_settings_set_resume_timeout(TunnelDataSettings *s, guint seconds)
{
    s->resume_timeout_s = seconds;
}

guint tunnel_data_settings_get_resume_timeout(TunnelDataSettings *s)
{
    return s->resume_timeout_s;
}

void tunnel_data_settings_set_client_pki_dir(TunnelDataSettings *s, const char *dir)
{
    g_free(s->client_pki_dir);
    s->client_pki_dir = g_strdup(dir);
}

const char *tunnel_data_settings_get_client_pki_dir(TunnelDataSettings *s)
{
    return s->client_pki_dir;
}

const char *tunnel_data_settings_get_address(TunnelDataSettings *s)
{
    return s->address ? s->address : "0.0.0.0";
}

TunnelDataListener *tunnel_data_settings_listen(TunnelDataSettings *s, const char *addr,
                                                guint port, const char *token, gboolean tls,
                                                const char *what, GError **error)
{
    if (tls && !s->tls) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "this destination has no TLS certificate for encrypted migration data "
                    "(set cert_file, key_file and ca_file)");
        return NULL;
    }
    guint pmin = port ? port : s->port_min;
    guint pmax = port ? port : s->port_max;
    return tunnel_data_listener_new(addr, pmin, pmax, token, tls ? s->tls : NULL, what, error);
}
