/* The pre-flight probe's daemon side (docs/debugging.md): on the source, the
 * path to a destination measured as a migration would use it (the same peer
 * connection and credentials, a tunnelled stream and a relayed data
 * connection made by the same tunnel code); on the destination, channels
 * whose bytes are read and dropped, bounded in size and time; and the
 * guest's dirty rate, through the VMM driver's hook. */
#include "driver/migration-probe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "driver/migration-private.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "migration.probe"

/* Discard channels one daemon runs at once: a probe is a measurement, not a
 * way to keep a daemon's CPU and network busy. */
#define PROBE_MAX_DISCARDS 2
#define PROBE_CHUNK (1024 * 1024)
#define PROBE_POLL_MS 200
#define PROBE_CONNECT_TIMEOUT_MS 10000
#define PROBE_ACCEPT_WAIT_S 30
/* After its bytes, how long a channel may take to drain and confirm its end. */
#define PROBE_DRAIN_S 30

/* ---- destination: discard channels ---- */

typedef struct {
    MigrationEngine *engine;
    TunnelChannel *channel;       /* stream: made at once; data: after accept */
    TunnelDataListener *listener; /* data: until the source connected */
    int channel_fd;               /* data: the channel's end until accept takes it */
    int fd;                       /* the end we read and drop */
    guint64 max_bytes;
} Discard;

static gboolean discard_reserve(MigrationEngine *e, GError **error)
{
    g_mutex_lock(&e->lock);
    gboolean ok = e->probes < PROBE_MAX_DISCARDS;
    if (ok)
        e->probes++;
    g_mutex_unlock(&e->lock);
    if (!ok)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "%d probes are already running on this daemon: try again later",
                    PROBE_MAX_DISCARDS);
    return ok;
}

static void discard_release(MigrationEngine *e)
{
    g_mutex_lock(&e->lock);
    e->probes--;
    g_mutex_unlock(&e->lock);
}

static void discard_free(Discard *d)
{
    if (d->channel)
        tunnel_channel_unref(d->channel);
    tunnel_data_listener_free(d->listener);
    if (d->channel_fd >= 0)
        close(d->channel_fd);
    if (d->fd >= 0)
        close(d->fd);
    discard_release(d->engine);
    g_free(d);
}

static gboolean check_max_bytes(guint64 max_bytes, GError **error)
{
    if (max_bytes == 0 || max_bytes > DRIVER_PROBE_MAX_BYTES) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "a probe moves 1 byte to %" G_GUINT64_FORMAT " bytes, not %" G_GUINT64_FORMAT,
                    (guint64)DRIVER_PROBE_MAX_BYTES, max_bytes);
        return FALSE;
    }
    return TRUE;
}

/* Proxy kind: waits for the source's data connection (token checked). */
static gboolean discard_accept(Discard *d)
{
    g_autoptr(GError) err = NULL;
    TunnelRelayConfig rc = {.vmm_name = "probe discard",
                            .peer_name = "probe data connection from the source ferryd"};
    d->channel = tunnel_channel_accept_data(
        d->listener, g_get_monotonic_time() + PROBE_ACCEPT_WAIT_S * G_USEC_PER_SEC,
        d->channel_fd, &rc, &err);
    g_clear_pointer(&d->listener, tunnel_data_listener_free);
    if (!d->channel) {
        FERRY_INFO("probe: no data connection: %s", err->message);
        return FALSE;
    }
    d->channel_fd = -1;
    return TRUE;
}

/* Reads and drops what arrives until the source's end, then lets the
 * channel confirm it. Past max_bytes or the time bound, the channel is cut. */
static void discard_drop(Discard *d)
{
    MigrationEngine *e = d->engine;
    g_autoptr(GError) err = NULL;
    gint64 deadline = g_get_monotonic_time() + DRIVER_PROBE_MAX_SECONDS * G_USEC_PER_SEC;
    g_autofree char *buf = g_malloc(PROBE_CHUNK);
    guint64 total = 0;
    const char *cut = NULL;
    while (!cut) {
        if (g_atomic_int_get(&e->stopping))
            cut = "the daemon is stopping";
        else if (g_get_monotonic_time() > deadline)
            cut = "it ran out of time";
        if (cut)
            break;
        struct pollfd p = {.fd = d->fd, .events = POLLIN};
        int r = poll(&p, 1, PROBE_POLL_MS);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        ssize_t n = read(d->fd, buf, PROBE_CHUNK);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            break; /* the source's end (or the channel failed: it says why) */
        total += (guint64)n;
        if (total > d->max_bytes)
            cut = "it sent more than it announced";
    }
    if (cut) {
        g_autoptr(GError) why = g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                            "probe channel cut: %s", cut);
        tunnel_channel_abort(d->channel, why);
        FERRY_INFO("probe: cut after %" G_GUINT64_FORMAT " bytes: %s", total, cut);
    }
    if (!tunnel_channel_wait(d->channel, g_get_monotonic_time() + PROBE_DRAIN_S * G_USEC_PER_SEC,
                             &err)) {
        tunnel_channel_abort(d->channel, err);
        FERRY_INFO("probe: %" G_GUINT64_FORMAT " bytes, then %s", total, err->message);
    } else {
        FERRY_INFO("probe: %" G_GUINT64_FORMAT " bytes received and dropped", total);
    }
}

static gpointer discard_thread(gpointer data)
{
    Discard *d = data;
    MigrationEngine *e = d->engine;
    if (d->channel || discard_accept(d))
        discard_drop(d);
    discard_free(d);
    migration_thread_done(e);
    return NULL;
}

/* A discard within the bounds: its slot taken and its socket pair made;
 * *channel_fd is the end its channel takes. */
static Discard *discard_begin(Driver *drv, guint64 max_bytes, int *channel_fd, GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e || !check_max_bytes(max_bytes, error) || !discard_reserve(e, error))
        return NULL;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ferry_set_error_errno(error, errno, "cannot create the probe's socket pair");
        discard_release(e);
        return NULL;
    }
    /* Nothing goes back: the channel's other direction ends at once. */
    shutdown(sv[1], SHUT_WR);
    Discard *d = g_new0(Discard, 1);
    d->engine = e;
    d->max_bytes = max_bytes;
    d->fd = sv[1];
    d->channel_fd = -1;
    *channel_fd = sv[0];
    return d;
}

static gboolean discard_start(Discard *d, GError **error)
{
    if (migration_thread_start(d->engine, "probe-discard", discard_thread, d, error))
        return TRUE;
    return FALSE;
}

static gboolean probe_discard_stream(Driver *drv, guint64 max_bytes, TunnelBinding *binding,
                                     GError **error)
{
    int fd = -1;
    Discard *d = discard_begin(drv, max_bytes, &fd, error);
    if (!d)
        return FALSE;
    /* Both ends are ferryd: credit flow control, as between two migrating daemons. */
    TunnelStreamConfig cfg = {.role = TUNNEL_ROLE_SERVER,
                              .credit = TRUE,
                              .window = MIGRATION_WINDOW,
                              .peer_window = MIGRATION_WINDOW,
                              .packet_size = MIGRATION_PACKET_SIZE,
                              .peer_name = "probing source ferryd",
                              .vmm_name = "probe discard"};
    d->channel = tunnel_channel_open_stream(binding, fd, &cfg);
    if (!discard_start(d, error)) {
        tunnel_channel_abort(d->channel, *error);
        discard_free(d);
        return FALSE;
    }
    return TRUE;
}

static gboolean probe_discard_data(Driver *drv, guint64 max_bytes, gboolean tls, char **uri_out,
                                   char **token_out, GError **error)
{
    int fd = -1;
    Discard *d = discard_begin(drv, max_bytes, &fd, error);
    if (!d)
        return FALSE;
    MigrationEngine *e = d->engine;
    d->channel_fd = fd;
    /* Where a proxy-mode migration would listen without --listen-address. */
    const char *addr = tunnel_data_settings_get_address(e->data_settings);
    g_autofree char *token = tunnel_data_token_new();
    d->listener = tunnel_data_settings_listen(e->data_settings, addr, 0, token, tls,
                                              "a migration probe", error);
    if (!d->listener) {
        discard_free(d);
        return FALSE;
    }
    guint16 port = tunnel_data_listener_get_port(d->listener);
    g_autofree char *uri = strchr(addr, ':') ? g_strdup_printf("tcp://[%s]:%u", addr, port)
                                             : g_strdup_printf("tcp://%s:%u", addr, port);
    if (!discard_start(d, error)) {
        discard_free(d);
        return FALSE;
    }
    *uri_out = g_steal_pointer(&uri);
    *token_out = g_steal_pointer(&token);
    return TRUE;
}

/* ---- source: measuring the path ---- */

/* Writes zeros into fd (the channel's VMM end) until `bytes` or the
 * deadline, ends our direction, and waits for the channel's confirmed end.
 * Returns the bytes written; *usec from the first write to that end. */
static gboolean push_through(TunnelChannel *ch, int fd, const DriverProbeRequest *req,
                             DriverProbeChannelResult *res, GError **error)
{
    g_autofree char *zeros = g_malloc0(PROBE_CHUNK);
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    gint64 start = g_get_monotonic_time();
    gint64 stop = start + (gint64)req->seconds * G_USEC_PER_SEC;
    guint64 sent = 0;
    while (sent < req->bytes && g_get_monotonic_time() < stop) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int r = poll(&p, 1, PROBE_POLL_MS);
        if (r < 0 && errno != EINTR) {
            ferry_set_error_errno(error, errno, "probe: poll");
            return FALSE;
        }
        if (tunnel_channel_is_over(ch))
            break; /* the wait below says why */
        if (r <= 0)
            continue;
        gsize want = (gsize)MIN((guint64)PROBE_CHUNK, req->bytes - sent);
        ssize_t n = write(fd, zeros, want);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            break; /* the channel closed our socket: the wait below says why */
        sent += (guint64)n;
    }
    shutdown(fd, SHUT_WR);
    if (!tunnel_channel_wait(ch, g_get_monotonic_time() + PROBE_DRAIN_S * G_USEC_PER_SEC,
                             error)) {
        tunnel_channel_abort(ch, *error);
        return FALSE;
    }
    res->bytes = sent;
    res->usec = (guint64)MAX(g_get_monotonic_time() - start, 1);
    return TRUE;
}

static void channel_failed(DriverProbeChannelResult *res, GError *err)
{
    res->error = g_strdup(err ? err->message : "failed without saying why");
}

static void probe_tunnel(const MigrationPeerOps *ops, MigrationPeer *peer,
                         const DriverProbeRequest *req, DriverProbeChannelResult *res)
{
    g_autoptr(GError) err = NULL;
    TunnelBinding *binding = NULL;
    if (!ops->probe_discard_stream(peer, req->bytes, &binding, &err)) {
        channel_failed(res, err);
        return;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ferry_set_error_errno(&err, errno, "cannot create the probe's socket pair");
        tunnel_binding_cancel(binding);
        tunnel_binding_free(binding);
        channel_failed(res, err);
        return;
    }
    g_autofree char *peer_name = g_strdup(ops->describe(peer));
    TunnelStreamConfig cfg = {.role = TUNNEL_ROLE_CLIENT,
                              .credit = TRUE,
                              .window = MIGRATION_WINDOW,
                              .peer_window = MIGRATION_WINDOW,
                              .packet_size = MIGRATION_PACKET_SIZE,
                              .peer_name = peer_name,
                              .vmm_name = "probe source"};
    g_autoptr(TunnelChannel) ch = tunnel_channel_open_stream(binding, sv[0], &cfg);
    tunnel_binding_free(binding);
    if (!push_through(ch, sv[1], req, res, &err))
        channel_failed(res, err);
    close(sv[1]);
}

static void probe_proxy(const MigrationPeerOps *ops, MigrationPeer *peer, const char *dhost,
                        const char *pkipath, const DriverProbeRequest *req,
                        DriverProbeChannelResult *res)
{
    g_autoptr(GError) err = NULL;
    gboolean tls = (req->flags & DRIVER_PROBE_PROXY_TLS) != 0;
    g_autofree char *uri = NULL, *token = NULL, *host = NULL;
    guint port = 0;
    if (!ops->probe_discard_data(peer, req->bytes, tls, &uri, &token, &err) ||
        !migration_parse_tcp_uri(uri, &host, &port, &err)) {
        channel_failed(res, err);
        return;
    }
    if (migration_is_wildcard_address(host)) {
        g_free(host);
        host = g_strdup(dhost);
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ferry_set_error_errno(&err, errno, "cannot create the probe's socket pair");
        channel_failed(res, err);
        return;
    }
    g_autofree char *name = g_strdup_printf("%sdata connection to the destination ferryd at %s:%u",
                                            tls ? "TLS " : "", host, port);
    TunnelRelayConfig rcfg = {.vmm_name = "probe source", .peer_name = name};
    g_autoptr(TunnelChannel) ch = tunnel_channel_connect_data(
        host, (guint16)port, token, 0, tls, pkipath, PROBE_CONNECT_TIMEOUT_MS, sv[0], &rcfg, NULL,
        &err);
    if (!ch) {
        close(sv[1]);
        channel_failed(res, err);
        return;
    }
    if (!push_through(ch, sv[1], req, res, &err))
        channel_failed(res, err);
    close(sv[1]);
}

static gboolean probe_path(Driver *drv, const char *dconnuri, const DriverProbeRequest *req,
                           DriverProbeResult *res, GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e)
        return FALSE;
    memset(res, 0, sizeof(*res));
    if (!dconnuri || !*dconnuri) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "the probe needs a destination URI");
        return FALSE;
    }
    if (((req->flags & (DRIVER_PROBE_TUNNEL | DRIVER_PROBE_PROXY)) &&
         !check_max_bytes(req->bytes, error)) ||
        req->seconds > DRIVER_PROBE_MAX_SECONDS || req->rtt_samples > DRIVER_PROBE_RTT_MAX) {
        if (error && !*error)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "a probe runs at most %d s per channel and %d round trips",
                        DRIVER_PROBE_MAX_SECONDS, DRIVER_PROBE_RTT_MAX);
        return FALSE;
    }
    const MigrationPeerOps *ops = driver_get_migration_peer_ops();
    if (!ops) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "no way to reach a destination daemon");
        return FALSE;
    }
    /* The daemon's own credentials, as for a migration. */
    MigrationPeer *peer = ops->open(dconnuri, error);
    if (!peer)
        return FALSE;
    for (guint i = 0; i < req->rtt_samples; i++) {
        gint64 t0 = g_get_monotonic_time();
        g_autoptr(GError) err = NULL;
        if (ops->supports_feature(peer, 4 /* MIGRATION_P2P */, &err) < 0) {
            g_propagate_prefixed_error(error, g_steal_pointer(&err), "round trip to the %s: ",
                                       ops->describe(peer));
            ops->close(peer);
            return FALSE;
        }
        res->rtt_usec[res->n_rtt++] = (guint64)(g_get_monotonic_time() - t0);
    }
    if (req->flags & DRIVER_PROBE_TUNNEL)
        probe_tunnel(ops, peer, req, &res->tunnel);
    if (req->flags & DRIVER_PROBE_PROXY) {
        g_autoptr(GUri) duri = g_uri_parse(dconnuri, G_URI_FLAGS_ENCODED_QUERY, NULL);
        const char *dhost = duri ? g_uri_get_host(duri) : NULL;
        probe_proxy(ops, peer, dhost && *dhost ? dhost : "127.0.0.1",
                    tunnel_data_settings_get_client_pki_dir(e->data_settings), req, &res->proxy);
    }
    ops->close(peer);
    return TRUE;
}

/* ---- the guest ---- */

static gboolean probe_dirty_rate(Driver *drv, const DriverDomain *dom, guint seconds,
                                 DriverDirtyRate *out, GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e)
        return FALSE;
    memset(out, 0, sizeof(*out));
    if (seconds < 1 || seconds > DRIVER_PROBE_MAX_SECONDS) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "the dirty rate is measured over 1 to %d seconds, not %u",
                    DRIVER_PROBE_MAX_SECONDS, seconds);
        return FALSE;
    }
    if (!e->hooks->measure_dirty_rate) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT,
                    "this driver cannot measure a guest's dirty rate");
        return FALSE;
    }
    DomainObj *obj = hv_lookup(e->hv, dom, error);
    if (!obj)
        return FALSE;
    gpointer vm = domain_obj_is_active(obj) ? e->hooks->vm_ref(obj) : NULL;
    DomainDef *def = domain_obj_get_def(obj);
    out->memory_bytes = def ? def->memory_kib * 1024 : 0;
    g_autofree char *name = g_strdup(domain_obj_get_name(obj));
    domain_obj_end(obj);
    if (!vm) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain '%s' is not running: its dirty rate cannot be measured", name);
        return FALSE;
    }
    /* The VMM is asked without the domain lock: the measurement takes seconds. */
    gboolean ok = e->hooks->measure_dirty_rate(vm, seconds, out, error);
    e->hooks->vm_unref(vm);
    return ok;
}

void migration_probe_install_ops(DriverOps *ops)
{
    ops->probe_discard_stream = probe_discard_stream;
    ops->probe_discard_data = probe_discard_data;
    ops->probe_path = probe_path;
    ops->probe_dirty_rate = probe_dirty_rate;
}
