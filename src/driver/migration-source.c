/* The source side of a peer-to-peer migration.
 *
 * perform: open the destination, prepare there (which starts an incoming VMM
 * and its end of the channel), carry the source VMM's migration through the
 * channel, finish there with cancelled=0|1, then confirm here: end our VM on
 * success, resume it on failure. At every instant the VM runs (or can
 * resume) on exactly one host. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "driver/migration-private.h"
#include "util/error.h"
#include "util/fault-point.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "migration.source"

#define POLL_MS 200
#define VMM_END_WAIT_MS 10000
/* How long a failed VMM waits for its channel to tell the cause. */
#define CAUSE_GRACE_MS 1000
#define DATA_CONNECT_TIMEOUT_MS 10000
/* How long a failed migration waits for the destination to say why. */
#define FAREWELL_REPORT_MS 1500

typedef struct {
    MigrationEngine *engine;
    const MigrationHooks *hooks;
    const MigrationPeerOps *ops;
    MigrationPeer *peer;
    MigrationJob *job;
    gpointer vm;
    char *name;
    guint8 uuid[16];
    char *instance_id;
    gboolean was_paused;
    guint flags;
    guint destflags;
    GPtrArray *dparams;
    GBytes *dest_cookie;
    TunnelBinding *binding;
    char *uri_out;       /* proxy mode: where the destination listens */
    gboolean prepared;   /* the destination has an incoming VM to finish or drop */
    char *dconn_host;    /* the destination's host, as the URI names it */
    char *migrate_uri;   /* proxy mode: where to open the data connection */
    char *dconn_pkipath; /* proxy mode with --tls: the client files (migration_pki_dir) */
    char *digest;
    guint64 downtime_ms;
    char *peer_record_id; /* the destination keeps a flight record we may fetch */
    MigrationTuning tuning; /* what the VMM's migration is asked to do */
    MigrationPostcopySource pc;
    GPtrArray *disks;       /* MigrationDisk*: the disks copied, NULL none */
    GArray *mirror_ends;    /* int: copies of our ends of the disks' sockets */
    guint parallel;         /* connections asked for the memory stream (1: one) */
    char *dconnuri;         /* tunnelled: the destination URI, for the extra connections */
    GPtrArray *channel_peers; /* MigrationPeer*: the memory channels' own connections */
    int parallel_vmm[MIGRATION_MAX_CONNECTIONS - 1]; /* the VMM's ends until it takes them */
} Outgoing;

static void outgoing_clear(Outgoing *o)
{
    if (o->binding)
        tunnel_binding_free(o->binding);
    if (o->peer)
        o->ops->close(o->peer);
    if (o->vm)
        o->hooks->vm_unref(o->vm);
    migration_job_unref(o->job);
    g_free(o->name);
    g_free(o->instance_id);
    if (o->dparams)
        g_ptr_array_unref(o->dparams);
    if (o->dest_cookie)
        g_bytes_unref(o->dest_cookie);
    g_free(o->digest);
    g_free(o->dconn_host);
    g_free(o->uri_out);
    g_free(o->migrate_uri);
    g_free(o->dconn_pkipath);
    g_free(o->peer_record_id);
    if (o->disks)
        g_ptr_array_unref(o->disks);
    if (o->mirror_ends) {
        migration_storage_close_ends(o->mirror_ends);
        g_array_unref(o->mirror_ends);
    }
    if (o->parallel > 1)
        migration_parallel_close(o->parallel, o->parallel_vmm);
    for (guint i = 0; o->channel_peers && i < o->channel_peers->len; i++)
        o->ops->close(o->channel_peers->pdata[i]);
    if (o->channel_peers)
        g_ptr_array_unref(o->channel_peers);
    g_free(o->dconnuri);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Outgoing, outgoing_clear)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MigrationVmmProgress, migration_vmm_progress_clear)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MigrationCookie, migration_cookie_clear)

static GBytes *outgoing_cookie(Outgoing *o, gboolean tunnel)
{
    MigrationCookieContent c = {.name = o->name, .uuid = o->uuid,
                                .daemon_id = o->engine->daemon_id, .tunnel = tunnel,
                                .digest = o->digest, .downtime_ms = o->downtime_ms,
                                .record_id = flight_recorder_get_id(o->job->recorder),
                                /* offered for the tunnel and proxy mode without disk or
                                 * extra memory channels (those are not resumed); the
                                 * destination answers */
                                .resume_timeout = tunnel && !o->disks && o->parallel < 2
                                                      ? tunnel_data_settings_get_resume_timeout(
                                                            o->engine->data_settings)
                                                      : 0,
                                .postcopy = o->pc.switched,
                                .disks = o->disks,
                                .storage_inc = (o->flags & MIGRATION_NON_SHARED_INC) != 0,
                                .parallel = o->parallel};
    return migration_cookie_format(&c);
}

static gboolean paused_on_io_error(Outgoing *o)
{
    return o->hooks->paused_on_io_error && o->hooks->paused_on_io_error(o->vm);
}

static const char *vmm_error(const MigrationVmmProgress *p, const char *fallback)
{
    if (p->error)
        return p->error;
    switch (p->status) {
    case MIGRATION_VMM_FAILED:
        return "failed";
    case MIGRATION_VMM_CANCELLED:
        return "cancelled";
    case MIGRATION_VMM_SETUP:
        return "setup";
    case MIGRATION_VMM_ACTIVE:
        return "active";
    case MIGRATION_VMM_CANCELLING:
        return "cancelling";
    case MIGRATION_VMM_POSTCOPY_PAUSED:
        return "post-copy paused: its stream broke";
    default:
        return fallback;
    }
}

/* ---- the calls to the destination before the stream runs ----
 *
 * open, the feature checks and prepare can block on a stuck peer for their
 * whole timeout: they run in a thread of their own, so that an abort frees
 * the source at once. An abandoned setup finishes alone: it tells the
 * destination to drop what it prepared and closes the connection. */

typedef struct {
    MigrationEngine *engine;
    const MigrationPeerOps *ops;
    MigrationJob *job;
    char *dconnuri;
    GPtrArray *dparams;
    GBytes *cookie;
    guint destflags;
    gboolean tunnelled;
    /* under job->lock */
    gboolean done, abandoned;
    /* the results */
    MigrationPeer *peer;
    TunnelBinding *binding;
    GBytes *dest_cookie;
    char *uri_out;
    gboolean prepared;
    const char *phase; /* where it failed */
    GError *error;
} PeerSetup;

static void peer_setup_free(PeerSetup *ps)
{
    if (ps->binding)
        tunnel_binding_free(ps->binding);
    if (ps->peer)
        ps->ops->close(ps->peer);
    migration_job_unref(ps->job);
    g_free(ps->dconnuri);
    g_ptr_array_unref(ps->dparams);
    g_bytes_unref(ps->cookie);
    if (ps->dest_cookie)
        g_bytes_unref(ps->dest_cookie);
    g_free(ps->uri_out);
    g_clear_error(&ps->error);
    g_free(ps);
}

static gboolean require_feature(PeerSetup *ps, int feature, const char *what, GError **error)
{
    int r = ps->ops->supports_feature(ps->peer, feature, error);
    if (r < 0)
        return FALSE;
    if (r == 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the %s does not support %s", ps->ops->describe(ps->peer), what);
        return FALSE;
    }
    return TRUE;
}

static gboolean peer_setup_run(PeerSetup *ps, GError **error)
{
    FlightRecorder *fr = ps->job->recorder;
    ps->phase = "begin";
    flight_recorder_phase(fr, "begin", TRUE);
    ps->peer = ps->ops->open(ps->dconnuri, error);
    if (!ps->peer)
        return FALSE;
    if (fr) {
        g_autofree char *security = ps->ops->security(ps->peer);
        flight_recorder_event(fr, "connection", "peer", ps->ops->describe(ps->peer), "security",
                              security, NULL);
    }
    flight_recorder_phase(fr, "begin", FALSE);
    ps->phase = "perform";
    if (!require_feature(ps, MIGRATION_FEATURE_P2P, "peer-to-peer migration", error) ||
        !require_feature(ps, MIGRATION_FEATURE_V3, "migration protocol version 3", error) ||
        !require_feature(ps, MIGRATION_FEATURE_PARAMS, "migration parameters", error))
        return FALSE;
    ps->phase = "prepare";
    flight_recorder_phase(fr, "prepare", TRUE);
    gboolean ok = ps->tunnelled
                      ? ps->ops->prepare_tunnel(ps->peer, ps->dparams, ps->cookie, ps->destflags,
                                                &ps->dest_cookie, &ps->binding, error)
                      : ps->ops->prepare(ps->peer, ps->dparams, ps->cookie, ps->destflags,
                                         &ps->dest_cookie, &ps->uri_out, error);
    if (!ok) {
        /* An answer is a refusal; no answer (the peer is gone) says so itself. */
        if (!g_error_matches(*error, FERRY_ERROR, FERRY_ERR_RPC) &&
            !g_error_matches(*error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT))
            g_prefix_error(error, "the destination refused: ");
        return FALSE;
    }
    flight_recorder_phase(fr, "prepare", FALSE);
    ps->prepared = TRUE;
    return TRUE;
}

static gpointer peer_setup_thread(gpointer data)
{
    PeerSetup *ps = data;
    MigrationEngine *e = ps->engine;
    GError *err = NULL;
    peer_setup_run(ps, &err);
    g_mutex_lock(&ps->job->lock);
    ps->error = err;
    ps->done = TRUE;
    gboolean abandoned = ps->abandoned;
    g_cond_broadcast(&ps->job->cond);
    g_mutex_unlock(&ps->job->lock);
    if (abandoned) {
        if (ps->prepared) {
            g_autoptr(GBytes) cookie_out = NULL;
            g_autoptr(GError) fe = NULL;
            /* Only the cancellation matters here, not the domain it answers. */
            driver_domain_free(ps->ops->finish(ps->peer, ps->dparams, NULL, ps->destflags, TRUE,
                                               &cookie_out, &fe));
        }
        peer_setup_free(ps);
    }
    migration_thread_done(e);
    return NULL;
}

/* Opens and prepares the destination; FALSE with the failure, or with the
 * abort's reason as soon as one is requested. */
static gboolean outgoing_setup_peer(Outgoing *o, const char *dconnuri, const char **phase,
                                    GError **error)
{
    PeerSetup *ps = g_new0(PeerSetup, 1);
    ps->engine = o->engine;
    ps->ops = o->ops;
    ps->job = migration_job_ref(o->job);
    ps->dconnuri = g_strdup(dconnuri);
    ps->dparams = g_ptr_array_ref(o->dparams);
    ps->cookie = outgoing_cookie(o, TRUE);
    ps->destflags = o->destflags;
    ps->tunnelled = (o->flags & MIGRATION_TUNNELLED) != 0;
    if (!migration_thread_start(o->engine, "migration-setup", peer_setup_thread, ps, error)) {
        peer_setup_free(ps);
        *phase = "prepare";
        return FALSE;
    }

    MigrationJob *job = o->job;
    g_mutex_lock(&job->lock);
    while (!ps->done && !job->abort_requested)
        g_cond_wait(&job->cond, &job->lock);
    if (!ps->done) {
        ps->abandoned = TRUE; /* the thread cleans up after itself */
        g_propagate_error(error, g_error_copy(job->abort_reason));
        g_mutex_unlock(&job->lock);
        *phase = "prepare";
        return FALSE;
    }
    g_mutex_unlock(&job->lock);
    *phase = ps->phase;
    o->peer = g_steal_pointer(&ps->peer);
    o->binding = g_steal_pointer(&ps->binding);
    o->dest_cookie = g_steal_pointer(&ps->dest_cookie);
    o->uri_out = g_steal_pointer(&ps->uri_out);
    o->prepared = ps->prepared;
    gboolean ok = ps->error == NULL;
    if (!ok)
        g_propagate_error(error, g_steal_pointer(&ps->error));
    peer_setup_free(ps);
    return ok;
}

/* Who is at our end of channel index: the VMM's memory stream (channel 0
 * and the memory channels after the disks') or a disk's mirror. */
static const char *outgoing_channel_vmm_name(Outgoing *o, guint index)
{
    MigrationJob *job = o->job;
    if (index == 0)
        return "source VMM";
    if (job->memory_channels > 1 && index >= job->memory_first)
        return migration_parallel_vmm_name(TRUE, index - job->memory_first + 1);
    return "source VMM's disk mirror";
}

/* Tunnelled: a stream channel on the connection the prepare call used;
 * channel 0 is prepare's own stream, channel index > 0 one the source opens
 * with ferry's own call, bound to the migration by its token. */
static gboolean outgoing_open_stream(Outgoing *o, guint index, int *vmm_fd, GError **error)
{
    g_auto(MigrationCookie) dc = {0};
    if (!migration_cookie_parse(o->dest_cookie, &dc, error))
        return FALSE;
    g_autofree char *peer_name = g_strdup(o->ops->describe(o->peer));
    TunnelStreamConfig cfg;
    migration_cookie_tunnel_config(&dc, TUNNEL_ROLE_CLIENT, peer_name,
                                   outgoing_channel_vmm_name(o, index), &cfg);
    if (index > 0) {
        const char *dname = NULL;
        TunnelBinding *binding = NULL;
        driver_params_get_string(o->dparams, "destination_name", &dname, NULL);
        MigrationPeer *peer = o->peer;
        /* A memory channel has a connection of its own to the destination
         * URI (same credentials, its own TLS session and threads). */
        if (o->job->memory_channels > 1 && index >= o->job->memory_first) {
            guint k = index - o->job->memory_first + 1;
            peer = o->dconnuri ? o->ops->open(o->dconnuri, error) : NULL;
            if (!peer) {
                if (error && !*error)
                    g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                                "no destination URI");
                g_prefix_error(error, "cannot open the connection of channel %u: ", k);
                return FALSE;
            }
            if (!o->channel_peers)
                o->channel_peers = g_ptr_array_new();
            g_ptr_array_add(o->channel_peers, peer);
            g_free(peer_name);
            peer_name = g_strdup_printf("%s (channel %u)", o->ops->describe(peer), k);
            cfg.peer_name = peer_name;
        }
        if (!o->ops->open_channel || !dc.token ||
            !o->ops->open_channel(peer, dname, dc.token, index, &binding, error)) {
            if (error && !*error)
                g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT,
                            "the destination opens no channel %u", index);
            return FALSE;
        }
        g_autoptr(TunnelChannel) ch = tunnel_channel_open_stream(binding, *vmm_fd, &cfg);
        tunnel_binding_free(binding);
        *vmm_fd = -1;
        migration_job_add_channel(o->job, index, ch);
        return TRUE;
    }
    /* The destination agreed to resume after a broken connection: its
     * answer is the time both keep, and the token we come back with. */
    gboolean resume = cfg.credit && dc.resume_timeout && dc.resume_token && o->ops->resume_setup;
    if (resume) {
        cfg.resume = TRUE;
        cfg.resume_timeout_s = dc.resume_timeout;
    }
    /* The job applies its bandwidth as it takes the channel. */
    g_autoptr(TunnelChannel) ch = tunnel_channel_open_stream(o->binding, *vmm_fd, &cfg);
    *vmm_fd = -1;
    if (resume)
        o->ops->resume_setup(o->peer, ch, dc.resume_token, dc.resume_timeout);
    if (o->job->recorder) {
        g_autofree char *packet = g_strdup_printf("%zu", cfg.packet_size);
        g_autofree char *window = g_strdup_printf("%zu", cfg.credit ? cfg.peer_window : cfg.send_queue_limit);
        g_autofree char *bw = g_strdup_printf("%" G_GUINT64_FORMAT, o->job->bandwidth);
        g_autofree char *rt = g_strdup_printf("%u", cfg.resume ? cfg.resume_timeout_s : 0);
        g_autofree char *channels = g_strdup_printf(
            "%u", o->job->memory_channels + (o->disks ? o->disks->len : 0));
        flight_recorder_event(o->job->recorder, "terms", "mode", "tunnel", "#channels", channels,
                              "flow", cfg.credit ? "credit" : "plain (libvirt peer)",
                              "#packet_size", packet, "#window", window, "#bandwidth", bw,
                              "#resume_timeout", rt, NULL);
    }
    migration_job_set_channel(o->job, ch);
    return TRUE;
}

/* Proxy mode: a data connection the destination relays, one per channel
 * (the token and the channel's index in its hello). */
static gboolean outgoing_open_data(Outgoing *o, guint index, int *vmm_fd, GError **error)
{
    g_auto(MigrationCookie) dc = {0};
    if (!migration_cookie_parse(o->dest_cookie, &dc, error))
        return FALSE;
    const char *target = o->migrate_uri ? o->migrate_uri : o->uri_out;
    if (!dc.token || strlen(dc.token) != TUNNEL_DATA_TOKEN_LEN || !target) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the destination gave no data connection (uri '%s')", target ? target : "");
        return FALSE;
    }
    g_autofree char *host = NULL;
    guint port = 0;
    if (!migration_parse_tcp_uri(target, &host, &port, error))
        return FALSE;
    if (migration_is_wildcard_address(host)) {
        if (!o->dconn_host) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "the migration URI '%s' names no host to connect to", target);
            return FALSE;
        }
        g_free(host);
        host = g_strdup(o->dconn_host);
    }
    gboolean tls = (o->flags & MIGRATION_TLS) != 0;
    g_autofree char *channel = index ? g_strdup_printf(" (channel %u)", index) : g_strdup("");
    g_autofree char *data_name =
        g_strdup_printf("%sdata connection to the destination ferryd at %s:%u%s",
                        tls ? "TLS " : "", host, port, channel);
    /* The destination agreed to resume a broken data connection (and the
     * daemons' connection): its answer is the time both keep, and the token
     * we come back with. */
    gboolean resume = index == 0 && dc.resume_timeout && dc.resume_token &&
                      o->ops->resume_setup && o->job->memory_channels < 2 && !o->disks;
    TunnelRelayConfig rcfg = {.vmm_name = outgoing_channel_vmm_name(o, index),
                              .peer_name = data_name,
                              .resume_timeout_s = resume ? dc.resume_timeout : 0};
    int fd = *vmm_fd;
    *vmm_fd = -1;
    g_autoptr(TunnelChannel) ch = tunnel_channel_connect_data(
        host, (guint16)port, dc.token, index, tls, o->dconn_pkipath, DATA_CONNECT_TIMEOUT_MS, fd,
        &rcfg, resume ? dc.resume_token : NULL, error);
    if (!ch)
        return FALSE;
    if (resume)
        o->ops->resume_setup(o->peer, ch, dc.resume_token, dc.resume_timeout);
    if (index > 0) {
        migration_job_add_channel(o->job, index, ch);
        return TRUE;
    }
    if (o->job->recorder) {
        g_autofree char *bw = g_strdup_printf("%" G_GUINT64_FORMAT, o->job->bandwidth);
        g_autofree char *channels = g_strdup_printf(
            "%u", o->job->memory_channels + (o->disks ? o->disks->len : 0));
        g_autofree char *rt = g_strdup_printf("%u", rcfg.resume_timeout_s);
        flight_recorder_event(o->job->recorder, "terms", "mode", tls ? "proxy+tls" : "proxy",
                              "#channels", channels, "data_connection", data_name, "#bandwidth",
                              bw, "#resume_timeout", rt, NULL);
    }
    migration_job_set_channel(o->job, ch);
    return TRUE;
}

static gboolean outgoing_open_channel(gpointer data, guint index, int *vmm_fd, GError **error)
{
    Outgoing *o = data;
    return (o->flags & MIGRATION_TUNNELLED) ? outgoing_open_stream(o, index, vmm_fd, error)
                                            : outgoing_open_data(o, index, vmm_fd, error);
}

/* Runs prepare on the destination and the channel until the VMM is done. */
static gboolean outgoing_run(Outgoing *o, const char *dconnuri, GError **error)
{
    const char *phase = "begin";
    g_autoptr(GError) e = NULL;
    int sv[2] = {-1, -1};
    const MigrationHooks *h = o->hooks;
    g_auto(MigrationVmmProgress) end = {0};
    MigrationEndpoint ep = {.kind = MIGRATION_ENDPOINT_FD, .fd = -1, .n_connections = 1};
    /* a VMM that connects to an address (QEMU's multifd): where it does */
    gboolean by_address = FALSE;
    g_autofree char *vmm_path = NULL;
    int listen_fd = -1;

    o->dconnuri = g_strdup(dconnuri);
    /* A resume needs the source VMM's post-copy paused, before the
     * destination is asked to listen for it. */
    if ((o->flags & MIGRATION_POSTCOPY_RESUME) &&
        !migration_postcopy_source_can_resume(o->engine, o->vm, &e))
        goto fail;
    /* Client-managed: the client prepared the destination (o->ops is NULL). */
    if (o->ops && !outgoing_setup_peer(o, dconnuri, &phase, &e))
        goto fail;
    phase = "perform";
    flight_recorder_phase(o->job->recorder, "perform", TRUE);
    {
        g_auto(MigrationCookie) dc = {0};
        if (o->dest_cookie && migration_cookie_parse(o->dest_cookie, &dc, NULL))
            o->peer_record_id = g_steal_pointer(&dc.record_id);
    }

    /* Non-live: the VM stops first and moves as a snapshot. */
    if (!(o->flags & MIGRATION_LIVE) && !o->was_paused && !h->stop(o->vm, &e))
        goto fail;

    /* Several connections, if the destination agreed (a libvirt peer never
     * does): their channels follow the disks'. */
    o->job->memory_first = 1 + (o->disks ? o->disks->len : 0);
    o->job->memory_channels = migration_parallel_agreed(o->parallel, o->dest_cookie);
    by_address = o->job->memory_channels > 1 && h->parallel_by_address;

    /* A VMM that connects to an address gets its channels as it connects. */
    if (!by_address && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ferry_set_error_errno(&e, errno, "cannot create the migration socket pair");
        goto fail;
    }
    if (!by_address && !outgoing_open_channel(o, 0, &sv[0], &e))
        goto fail;
    /* The disks first: the guest's state follows once every mirror caught up. */
    if (o->disks && (!migration_storage_source_start(o->engine, o->job, o->vm, o->disks,
                                                     (o->flags & MIGRATION_NON_SHARED_INC) != 0,
                                                     o->dest_cookie, outgoing_open_channel, o,
                                                     o->mirror_ends, &e) ||
                     !migration_storage_source_wait_ready(o->engine, o->job, o->vm, &e)))
        goto fail;

    if (o->job->memory_channels > 1 && !by_address) {
        guint n = o->job->memory_channels;
        int ours[MIGRATION_MAX_CONNECTIONS - 1];
        migration_parallel_close(o->parallel, o->parallel_vmm);
        if (!migration_parallel_pairs(n, ours, o->parallel_vmm, &e))
            goto fail;
        for (guint i = 0; i + 1 < n; i++) {
            if (!outgoing_open_channel(o, o->job->memory_first + i, &ours[i], &e)) {
                migration_parallel_close(n, ours);
                g_prefix_error(&e, "channel %u: ", i + 1);
                goto fail;
            }
        }
        FERRY_INFO("migration of domain '%s': the memory stream runs over %u channels", o->name,
                   n);
    }
    /* A resumed post-copy migration goes on with the terms it started with. */
    if (!(o->flags & MIGRATION_POSTCOPY_RESUME) && h->tune &&
        !h->tune(o->vm, &o->tuning, TRUE, &e))
        goto fail;
    ep.fd = sv[1];
    sv[1] = -1;
    ep.n_connections = o->job->memory_channels;
    for (guint i = 0; i + 1 < ep.n_connections; i++) {
        ep.extra_fds[i] = o->parallel_vmm[i];
        o->parallel_vmm[i] = -1; /* the hook's now, on every path */
    }
    if (by_address) {
        vmm_path = domain_store_runtime_path(o->engine->hv->store, o->instance_id, ".mig");
        if ((listen_fd = migration_parallel_listen(vmm_path, &e)) < 0)
            goto fail;
        ep.path = vmm_path;
    }
    /* A paused post-copy migration carries on into the new channel (one:
     * --parallel with --postcopy is refused). */
    if ((o->flags & MIGRATION_POSTCOPY_RESUME) ? !h->resume_outgoing(o->vm, &ep, &e)
                                               : !h->start_outgoing(o->vm, &ep, &e))
        goto fail;
    if (by_address) {
        /* Its main connection comes first (QEMU 7.2 opens multifd's once
         * that one is up): channel 0, then the memory channels in order. */
        guint n = o->job->memory_channels;
        gint64 deadline = g_get_monotonic_time() + DATA_CONNECT_TIMEOUT_MS * 1000LL;
        for (guint k = 0; k < n; k++) {
            int fd = migration_parallel_accept_vmm(o->job, listen_fd, k, deadline, &e);
            if (fd < 0)
                goto fail;
            if (!outgoing_open_channel(o, k ? o->job->memory_first + k - 1 : 0, &fd, &e)) {
                if (fd >= 0)
                    close(fd);
                g_prefix_error(&e, "channel %u: ", k);
                goto fail;
            }
        }
        close(listen_fd);
        listen_fd = -1;
        unlink(vmm_path);
        FERRY_INFO("migration of domain '%s': the memory stream runs over %u channels (%s's "
                   "connections to %s)",
                   o->name, n, h->vmm_name, vmm_path);
    }

    for (;;) {
        g_autoptr(GError) ce = NULL;
        gboolean done = migration_job_wait_channel(o->job,
                                                   g_get_monotonic_time() + POLL_MS * 1000, &ce);
        g_auto(MigrationVmmProgress) p = {0};
        if (h->progress(o->vm, &p, NULL))
            migration_job_update(o->job, &p.counters);
        if (!migration_postcopy_source_poll(o->engine, o->job, o->vm, o->instance_id, &p, &o->pc,
                                            &e))
            goto fail;
        g_autoptr(GError) aborted = migration_job_abort_error(o->job);
        if (aborted) {
            e = g_steal_pointer(&aborted);
            goto fail;
        }
        /* --abort-on-error, as libvirt does for QEMU: a guest the VMM stopped
         * on a disk I/O error during the migration ends it here. */
        if (!done && (o->flags & MIGRATION_ABORT_ON_ERROR) && paused_on_io_error(o)) {
            g_set_error(&e, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "the guest paused on a disk I/O error during the migration "
                        "(--abort-on-error)");
            goto fail;
        }
        /* A failed channel holds the root cause; the VMM only sees its socket close. */
        if (!done && !g_error_matches(ce, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT)) {
            e = g_steal_pointer(&ce);
            migration_parallel_prefer_cause(o->job,
                                            g_get_monotonic_time() + CAUSE_GRACE_MS * 1000, &e);
            goto fail;
        }
        migration_job_note_resume(o->job);
        if (o->disks && !migration_storage_source_check(o->engine, o->job, o->vm, &e))
            goto fail;
        /* A memory channel that failed is the cause, whatever the VMM saw;
         * the one whose own connection broke, when another only reports the
         * destination's consequence of it sooner (a loaded source may read
         * that report before its own socket's error). */
        if (o->job->memory_channels > 1 && !migration_job_check_extra(o->job, &e)) {
            migration_parallel_prefer_cause(o->job,
                                            g_get_monotonic_time() + CAUSE_GRACE_MS * 1000, &e);
            goto fail;
        }
        /* Proxy mode: the destination's job follows its source by this
         * connection, idle meanwhile, so its loss (say, the keepalive of a
         * frozen peer whose kernel still acknowledges the data connection's
         * bytes) ends the migration now, not when the data connection's own
         * timeout fires seconds later. The tunnel's stream fails (or
         * resumes) with its connection by itself. */
        if (!done && !(o->flags & MIGRATION_TUNNELLED) && o->ops &&
            o->ops->connection_lost(o->peer, &e))
            goto fail;
        /* A peer or a link that went silent is noticed here, not by TCP. */
        if (!done && !migration_job_check_moving(
                         o->job, tunnel_data_settings_get_stall_timeout(o->engine->data_settings),
                         &e))
            goto fail;
        if (p.status == MIGRATION_VMM_FAILED || p.status == MIGRATION_VMM_CANCELLED ||
            p.status == MIGRATION_VMM_POSTCOPY_PAUSED) {
            /* The VMM usually fails because the channel did (a dead peer closed
             * it, then the VMM's socket): the channel may have failed after the
             * wait above, so give it a moment to name that root cause. */
            g_autoptr(GError) cause = NULL;
            if (!done &&
                !migration_job_wait_channel(o->job, g_get_monotonic_time() + CAUSE_GRACE_MS * 1000,
                                            &cause) &&
                !g_error_matches(cause, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT)) {
                e = g_steal_pointer(&cause);
                goto fail;
            }
            g_set_error(&e, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "source VMM: %s",
                        vmm_error(&p, "failed"));
            migration_parallel_prefer_cause(o->job,
                                            g_get_monotonic_time() + CAUSE_GRACE_MS * 1000, &e);
            goto fail;
        }
        if (!done && p.status == MIGRATION_VMM_POSTCOPY_ACTIVE) {
            /* The guest moves to the destination now (a resume: runs there
             * already): finish runs it there while the channel carries the
             * rest of its memory. */
            if (!o->pc.switched)
                migration_postcopy_source_switched(o->engine, o->job, o->instance_id);
            o->pc.switched = TRUE;
            flight_recorder_phase(o->job->recorder, "perform", FALSE);
            return TRUE;
        }
        if (done)
            break;
    }
    /* Finished means every channel finished. */
    if (!migration_parallel_wait(o->job, g_get_monotonic_time() + VMM_END_WAIT_MS * 1000LL, &e))
        goto fail;
    flight_recorder_event(o->job->recorder, "handshake", "what",
                          "the stream ended: the destination confirmed all data", NULL);

    /* The channel ended cleanly; the VMM decides whether the migration did. */
    if (!h->wait_end(o->vm, VMM_END_WAIT_MS, &end, &e)) {
        g_prefix_error(&e, "source VMM: ");
        goto fail;
    }
    migration_job_update(o->job, &end.counters);
    if (end.status != MIGRATION_VMM_COMPLETED) {
        g_set_error(&e, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "source VMM: %s",
                    vmm_error(&end, "no status"));
        goto fail;
    }
    /* The guest paused here with its state gone: the disks' last writes follow. */
    if (o->disks &&
        !migration_storage_source_complete(o->engine, o->job, o->vm, o->disks->len, &e))
        goto fail;
    o->digest = g_steal_pointer(&end.digest);
    o->downtime_ms = end.counters.downtime_ms;
    flight_recorder_phase(o->job->recorder, "perform", FALSE);
    return TRUE;

fail:
    flight_recorder_error(o->job->recorder, phase, e);
    if (listen_fd >= 0) {
        close(listen_fd);
        unlink(vmm_path);
    }
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    if (g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED))
        g_propagate_error(error, g_steal_pointer(&e));
    else
        g_propagate_prefixed_error(error, g_steal_pointer(&e), "migration failed in %s phase: ",
                                   phase);
    return FALSE;
}

/* After a failure, here: stop the channel and the VMM's migration. */
static void outgoing_stop(Outgoing *o, const GError *why)
{
    migration_job_cut_channel(o->job, why);
    o->hooks->cancel(o->vm);
    g_auto(MigrationVmmProgress) end = {0};
    o->hooks->wait_end(o->vm, VMM_END_WAIT_MS, &end, NULL);
    /* The mirrors only read our disks: stopping them leaves the disks as they are. */
    if (o->disks)
        migration_storage_source_cancel(o->engine, o->vm, o->mirror_ends);
}

/* What the destination needs to drop its incoming VM: the peer connection
 * and the failed job's channel. */
typedef struct {
    MigrationEngine *engine;
    const MigrationPeerOps *ops;
    MigrationPeer *peer;
    TunnelBinding *binding;
    MigrationJob *job;
    GPtrArray *dparams;
    guint destflags;
    gboolean prepared;
    guint8 uuid[16];
    char *peer_record_id;
    gboolean end_record; /* the thread ends the record (abort: in the background) */
    /* under job->lock, when a caller waits for the destination's report */
    gboolean done, abandoned;
    char *report;
} Farewell;

static Farewell *farewell_take(Outgoing *o)
{
    Farewell *f = g_new0(Farewell, 1);
    f->engine = o->engine;
    f->ops = o->ops;
    f->peer = g_steal_pointer(&o->peer);
    f->binding = g_steal_pointer(&o->binding);
    f->job = migration_job_ref(o->job);
    f->dparams = g_ptr_array_ref(o->dparams);
    f->destflags = o->destflags;
    f->prepared = o->prepared;
    memcpy(f->uuid, o->uuid, 16);
    f->peer_record_id = g_strdup(o->peer_record_id);
    return f;
}

static void farewell_free(Farewell *f)
{
    if (f->binding)
        tunnel_binding_free(f->binding);
    f->ops->close(f->peer);
    migration_job_unref(f->job);
    g_ptr_array_unref(f->dparams);
    g_free(f->peer_record_id);
    g_free(f->report);
    g_free(f);
}

/* How long a source asks again for the record of a post-copy destination:
 * that one keeps its record once its VMM has the last page, which may be a
 * moment after ours reported it sent. */
#define PEER_RECORD_POSTCOPY_WAIT_US (5 * G_USEC_PER_SEC)
#define PEER_RECORD_RETRY_US (100 * 1000)

/* Asks a ferry destination for its flight record of this migration and
 * adds it to ours, with the clock offset the call's round trip gives. A
 * destination that has no record yet is asked again until wait_us passed. */
static void fetch_peer_record(const MigrationPeerOps *ops, MigrationPeer *peer, const char *id,
                              MigrationJob *job, const char *written_path, gint64 wait_us)
{
    if (!id || !peer || !job->recorder || !ops->fetch_record)
        return;
    gint64 peer_now = 0, sent = 0, received = 0;
    gint64 deadline = g_get_monotonic_time() + wait_us;
    g_autoptr(GError) err = NULL;
    g_autofree char *text = NULL;
    while (!(text = ops->fetch_record(peer, id, &peer_now, &sent, &received, &err)) &&
           g_error_matches(err, FERRY_ERROR, FERRY_ERR_NO_SUPPORT) &&
           g_get_monotonic_time() + PEER_RECORD_RETRY_US < deadline) {
        g_clear_error(&err);
        g_usleep(PEER_RECORD_RETRY_US);
    }
    if (!text) {
        FERRY_INFO("no flight record from the %s: %s", ops->describe(peer), err->message);
        flight_recorder_event(job->recorder, "note", "text",
                              "the destination's record could not be fetched", "why",
                              err->message, NULL);
        return;
    }
    gint64 offset = peer_now - (sent + received) / 2, uncertainty = (received - sent) / 2;
    if (written_path)
        flight_record_file_add_peer(written_path, text, offset, uncertainty);
    else
        flight_recorder_add_peer(job->recorder, text, offset, uncertainty);
}

/* Tells the destination to drop its incoming VM, if it can still hear us.
 * Returns what it said about the failure, if anything useful. */
static char *farewell_say(Farewell *f)
{
    FlightRecorder *fr = f->job->recorder;
    migration_job_wait_channel(f->job, g_get_monotonic_time() + 3 * G_USEC_PER_SEC, NULL);
    if (!f->prepared)
        return NULL;
    g_autoptr(GError) lost = NULL;
    if (f->ops->connection_lost(f->peer, &lost)) {
        /* Nobody to tell: the destination's job sees its source gone. */
        flight_recorder_event(fr, "handshake", "what",
                              "finish (cancelled=1) not sent: the connection to the destination "
                              "is lost; its job drops the incoming VM",
                              "why", lost->message, NULL);
        return NULL;
    }
    if (!migration_job_peer_heard_end(f->job)) {
        /* A stuck peer: cut the connection; its watchdog drops the incoming VM. */
        FERRY_INFO("the %s does not answer; closing the connection", f->ops->describe(f->peer));
        flight_recorder_event(fr, "handshake", "what",
                              "the destination did not confirm the end of the stream within 3 s: "
                              "connection closed, its watchdog drops the incoming VM",
                              NULL);
        return NULL;
    }
    flight_recorder_event(fr, "handshake", "what",
                          "the destination confirmed the end of the stream; finish "
                          "(cancelled=1) sent",
                          NULL);
    g_autoptr(GBytes) cookie_out = NULL;
    g_autoptr(GError) fe = NULL;
    driver_domain_free(
        f->ops->finish(f->peer, f->dparams, NULL, f->destflags, TRUE, &cookie_out, &fe));
    flight_recorder_event(fr, "handshake", "what", "finish (cancelled=1) answered", "answer",
                          fe ? fe->message : "ok", NULL);
    fetch_peer_record(f->ops, f->peer, f->peer_record_id, f->job, NULL, 0);
    /* What the destination said; not our own failure to hear it. */
    gboolean answered = fe && !(g_error_matches(fe, FERRY_ERROR, FERRY_ERR_RPC) ||
                                g_error_matches(fe, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT));
    return answered && fe->code != FERRY_ERR_MIGRATE_FINISH_OK ? g_strdup(fe->message) : NULL;
}

static gpointer farewell_thread(gpointer data)
{
    Farewell *f = data;
    MigrationEngine *e = f->engine;
    MigrationJob *job = migration_job_ref(f->job);
    char *report = farewell_say(f);
    if (f->end_record) {
        g_autoptr(GError) why = migration_job_abort_error(f->job);
        /* Ends the record; the completed job's copy below is what is kept. */
        g_free(migration_job_end_record(
            f->job, g_error_matches(why, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED) ? "cancelled"
                                                                                  : "failed",
            why));
        migration_update_completed_record(e, f->uuid, f->job);
    }
    g_mutex_lock(&job->lock);
    f->report = report;
    f->done = TRUE;
    gboolean abandoned = f->abandoned;
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
    if (abandoned)
        farewell_free(f);
    migration_job_unref(job);
    migration_thread_done(e);
    return NULL;
}

/* Tells the destination in the background; nobody waits. */
static void farewell_start(Outgoing *o, const GError *why)
{
    Farewell *f = farewell_take(o);
    f->abandoned = TRUE;
    f->end_record = TRUE; /* the flight record ends after the handshake */
    g_autoptr(GError) te = NULL;
    if (!migration_thread_start(o->engine, "migration-farewell", farewell_thread, f, &te)) {
        /* Closing the connection is farewell enough: the destination's
         * watchdog drops its incoming VM. */
        FERRY_WARN("%s", te->message);
        g_free(migration_job_end_record(o->job, "failed", why));
        migration_update_completed_record(o->engine, o->uuid, o->job);
        farewell_free(f);
    }
}

/* Tells the destination and waits up to FAREWELL_REPORT_MS for what it says
 * about the failure: a peer behind a dead path never holds the source up. */
static char *farewell_with_report(Outgoing *o)
{
    Farewell *f = farewell_take(o);
    MigrationJob *job = migration_job_ref(f->job);
    g_autoptr(GError) te = NULL;
    if (!migration_thread_start(o->engine, "migration-farewell", farewell_thread, f, &te)) {
        FERRY_WARN("%s", te->message);
        farewell_free(f);
        migration_job_unref(job);
        return NULL;
    }
    gint64 deadline = g_get_monotonic_time() + FAREWELL_REPORT_MS * 1000;
    char *report = NULL;
    g_mutex_lock(&job->lock);
    while (!f->done && g_cond_wait_until(&job->cond, &job->lock, deadline))
        ;
    gboolean done = f->done;
    if (done)
        report = g_steal_pointer(&f->report);
    else
        f->abandoned = TRUE; /* the thread frees it */
    g_mutex_unlock(&job->lock);
    if (done)
        farewell_free(f);
    migration_job_unref(job);
    return report;
}

/* Confirm, on the source: the VM now runs on exactly one host. keep_paused:
 * the outcome is unknown (finish got no answer), so the VM stays paused
 * here, resumable, and never runs on two hosts. */
static void outgoing_confirm(Outgoing *o, gboolean success, gboolean keep_paused,
                             const GError *why)
{
    MigrationEngine *e = o->engine;
    DomainObj *obj = domain_list_lookup_by_instance(e->hv->list, o->instance_id, NULL);
    if (!obj) {
        FERRY_WARN("domain '%s' is gone from the source during its migration", o->name);
        return;
    }
    if (obj->job == o->job)
        g_clear_pointer(&obj->job, migration_job_unref);
    if (success) {
        migration_save_completed(e, o->uuid, o->job, DRIVER_JOB_COMPLETED, NULL, o->digest);
        /* The guest runs on the destination: end ours without waiting under
         * the domain lock (job-info and the client are waiting on it). */
        e->hv->hooks->kill(e->hv, obj, FALSE);
        DriverDomain d = {0};
        hv_domain_ref_of(obj, &d);
        gboolean hidden = domain_obj_is_hidden(obj);
        hv_instance_end(e->hv, obj, DOMAIN_SHUTOFF_MIGRATED);
        if (!hidden)
            driver_event_emit(&e->hv->base, &d, HV_EVENT_STOPPED, HV_STOPPED_MIGRATED);
        if ((o->flags & MIGRATION_UNDEFINE_SOURCE) && !domain_obj_is_removed(obj) &&
            domain_obj_is_persistent(obj)) {
            domain_store_delete_config(e->hv->store, o->name, NULL);
            domain_store_set_autostart(e->hv->store, o->name, FALSE, NULL);
            if (!hidden)
                driver_event_emit(&e->hv->base, &d, HV_EVENT_UNDEFINED, 0);
            domain_list_undefine(e->hv->list, obj);
        }
        driver_domain_clear(&d);
    } else {
        gboolean cancelled = g_error_matches(why, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED);
        migration_save_completed(e, o->uuid, o->job,
                                 cancelled ? DRIVER_JOB_CANCELLED : DRIVER_JOB_FAILED, why, NULL);
        if (o->pc.switched) {
            /* Neither side has the whole VM: ours never runs again by itself. */
            migration_postcopy_source_failed_locked(e, obj, why);
        } else if (domain_obj_is_active(obj) && keep_paused) {
            FERRY_WARN("domain '%s' stays paused: %s", o->name, why ? why->message : "?");
            domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
            domain_store_save_state(e->hv->store, obj, NULL);
        } else if (domain_obj_is_active(obj) && paused_on_io_error(o)) {
            /* As libvirt: a guest stopped on an I/O error is not resumed
             * (it would fail again); it waits for the disk to be fixed. */
            FERRY_WARN("domain '%s' stays paused on an I/O error", o->name);
            domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_IOERROR);
            hv_emit(e->hv, obj, HV_EVENT_SUSPENDED, HV_SUSPENDED_PAUSED);
            domain_store_save_state(e->hv->store, obj, NULL);
        } else if (domain_obj_is_active(obj)) {
            int running = o->hooks->is_running(o->vm);
            if (!o->was_paused && running == 0 && o->hooks->resume(o->vm, NULL))
                running = o->hooks->is_running(o->vm);
            if (running == 1) {
                FERRY_INFO("domain '%s' runs here again: %s", o->name,
                           why ? why->message : "the migration failed");
                domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_MIGRATION_CANCELED);
                if (!(o->flags & MIGRATION_LIVE) && !o->was_paused)
                    hv_emit(e->hv, obj, HV_EVENT_RESUMED, HV_RESUMED_MIGRATED);
            }
            domain_store_save_state(e->hv->store, obj, NULL);
        }
    }
    domain_obj_end(obj);
}

/* Takes the domain's job and what the destination needs to know. */
static gboolean outgoing_start(Outgoing *o, const DriverDomain *dom, GPtrArray *params,
                               guint64 bandwidth, GError **error)
{
    MigrationEngine *e = o->engine;
    /* Before anything can fail: outgoing_clear closes the ends of as many
     * channels as o->parallel counts, also when that count was refused. */
    for (guint i = 0; i < G_N_ELEMENTS(o->parallel_vmm); i++)
        o->parallel_vmm[i] = -1;
    const char *dname = NULL, *dxml = NULL, *pxml = NULL;
    if (!driver_params_get_string(params, "destination_name", &dname, error) ||
        !driver_params_get_string(params, "destination_xml", &dxml, error) ||
        !driver_params_get_string(params, "persistent_xml", &pxml, error))
        return FALSE;
    if (!migration_tuning_from_params(o->flags, params, o->hooks->tunable_flags,
                                      o->hooks->vmm_name, &o->tuning, error))
        return FALSE;
    DomainObj *obj = hv_lookup(e->hv, dom, error);
    if (!obj)
        return FALSE;
    o->tuning.downtime_ms = obj->max_downtime_ms;
    if (!o->tuning.xbzrle_cache)
        o->tuning.xbzrle_cache = obj->xbzrle_cache;
    gpointer vm = domain_obj_is_active(obj) ? o->hooks->vm_ref(obj) : NULL;
    if (!vm) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is not running");
        domain_obj_end(obj);
        return FALSE;
    }
    o->vm = vm;
    if (obj->job) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain has a migration job in progress");
        domain_obj_end(obj);
        return FALSE;
    }
    if ((o->flags & MIGRATION_POSTCOPY_RESUME) &&
        !migration_postcopy_source_check_resume_locked(obj, error)) {
        domain_obj_end(obj);
        return FALSE;
    }
    /* As libvirt: --abort-on-error refuses a guest already stopped on an
     * I/O error (it would be cancelled at once anyway). */
    if ((o->flags & MIGRATION_ABORT_ON_ERROR) && paused_on_io_error(o)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "cannot migrate domain '%s' with --abort-on-error: it is paused on an I/O "
                    "error", domain_obj_get_name(obj));
        domain_obj_end(obj);
        return FALSE;
    }
    /* The channels first: a combination refused by name before the VMM is asked
     * for its disks. */
    if (!migration_parallel_wanted(e, o->flags, params, &o->parallel, error) ||
        !migration_storage_source_select(e, vm, o->flags, params, &o->disks, error)) {
        domain_obj_end(obj);
        return FALSE;
    }
    o->mirror_ends = g_array_new(FALSE, FALSE, sizeof(int));
    guint64 max_speed = 0;
    if (bandwidth == G_MAXUINT64 &&
        !migration_bandwidth_to_bytes(obj->max_speed_mib, &max_speed, error)) {
        domain_obj_end(obj);
        return FALSE;
    }
    /* --postcopy-bandwidth (MiB/s): the channel's limit once post-copy runs */
    guint64 postcopy_mib = 0, postcopy_bandwidth = G_MAXUINT64;
    gboolean has_postcopy_bandwidth = FALSE;
    if (!driver_params_get_ullong(params, "bandwidth.postcopy", &postcopy_mib,
                                  &has_postcopy_bandwidth, error) ||
        (has_postcopy_bandwidth &&
         !migration_bandwidth_to_bytes(postcopy_mib, &postcopy_bandwidth, error))) {
        domain_obj_end(obj);
        return FALSE;
    }
    if (has_postcopy_bandwidth && !o->hooks->start_postcopy) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration parameter 'bandwidth.postcopy' is not supported by %s",
                    o->hooks->vmm_name);
        domain_obj_end(obj);
        return FALSE;
    }
    o->job = migration_job_new(DRIVER_JOB_OPERATION_MIGRATION_OUT);
    o->job->bandwidth = bandwidth == G_MAXUINT64 ? max_speed : bandwidth;
    o->job->postcopy_bandwidth = postcopy_bandwidth;
    /* A resumed migration is in post-copy from its first byte. */
    if ((o->flags & MIGRATION_POSTCOPY_RESUME) && has_postcopy_bandwidth)
        o->job->bandwidth = postcopy_bandwidth;
    o->job->postcopy_allowed = (o->flags & MIGRATION_POSTCOPY) != 0;
    o->job->recorder = flight_recorder_new("source", domain_obj_get_name(obj),
                                           domain_obj_get_uuid(obj), NULL);
    if (o->job->recorder) {
        g_autofree char *flags = g_strdup_printf("%u", o->flags);
        flight_recorder_event(o->job->recorder, "start", "operation", "migration out",
                              "#flags", flags, "live", (o->flags & MIGRATION_LIVE) ? "yes" : "no",
                              "tunnelled", (o->flags & MIGRATION_TUNNELLED) ? "yes" : "no",
                              NULL);
    }
    obj->job = migration_job_ref(o->job);
    o->name = g_strdup(domain_obj_get_name(obj));
    memcpy(o->uuid, domain_obj_get_uuid(obj), 16);
    o->instance_id = g_strdup(obj->instance_id);
    o->was_paused = domain_obj_get_state(obj, NULL) == DOMAIN_STATE_PAUSED;
    if (o->flags & MIGRATION_POSTCOPY_RESUME) {
        /* paused by the failed post-copy, not by the user */
        o->was_paused = FALSE;
        o->pc.switched = TRUE;
        migration_postcopy_source_resuming_locked(e, obj, o->job);
    }
    o->destflags = (o->flags & ~(MIGRATION_ABORT_ON_ERROR | MIGRATION_AUTO_CONVERGE |
                                 MIGRATION_CHANGE_PROTECTION)) |
                   (o->was_paused ? MIGRATION_PAUSED : 0);
    o->dparams = driver_params_copy(params);
    if (!dxml) {
        g_autofree char *xml = domain_obj_format_xml(obj, DOMAIN_DEF_FORMAT_MIGRATABLE);
        driver_params_add_string(o->dparams, "destination_xml", xml);
    }
    if (!dname)
        driver_params_add_string(o->dparams, "destination_name", o->name);
    if ((o->flags & MIGRATION_PERSIST_DEST) && !pxml && obj->persistent_def) {
        g_autofree char *pers = domain_def_format(obj->persistent_def, -1,
                                                  DOMAIN_DEF_FORMAT_INACTIVE |
                                                      DOMAIN_DEF_FORMAT_MIGRATABLE);
        driver_params_add_string(o->dparams, "persistent_xml", pers);
    }
    if (!(o->flags & MIGRATION_LIVE) && !o->was_paused) {
        domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
        hv_emit(e->hv, obj, HV_EVENT_SUSPENDED, HV_SUSPENDED_MIGRATED);
    }
    domain_obj_end(obj);
    return TRUE;
}

static gboolean client_perform(MigrationEngine *engine, const DriverDomain *dom,
                               GPtrArray *params, GBytes *cookie_in, guint flags,
                               guint64 bandwidth, GBytes **cookie_out, GError **error);

gboolean migration_source_perform(Driver *drv, const DriverDomain *dom, const char *dconnuri,
                                  GPtrArray *params, GBytes *cookie_in, guint flags,
                                  GBytes **cookie_out, GError **error)
{
    MigrationEngine *engine = migration_engine_of(drv, error);
    if (!engine)
        return FALSE;
    if (!migration_check_flags_and_params(flags, params, error))
        return FALSE;
    if (flags & MIGRATION_OFFLINE) {
        /* Client-managed: the client skips perform (nothing to carry). */
        if (!(flags & MIGRATION_PEER2PEER))
            return TRUE;
        if (!dconnuri || !*dconnuri) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "peer-to-peer migration needs a destination URI");
            return FALSE;
        }
        return migration_offline_perform_p2p(engine, dom, dconnuri, params, flags, error);
    }
    if (!(flags & MIGRATION_PEER2PEER)) {
        guint64 mib = 0, bw = G_MAXUINT64;
        gboolean has_bw = FALSE;
        if (!driver_params_get_ullong(params, "bandwidth", &mib, &has_bw, error) ||
            (has_bw && !migration_bandwidth_to_bytes(mib, &bw, error)))
            return FALSE;
        return client_perform(engine, dom, params, cookie_in, flags, bw, cookie_out, error);
    }
    if (!dconnuri || !*dconnuri) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "peer-to-peer migration needs a destination URI");
        return FALSE;
    }
    const MigrationPeerOps *ops = driver_get_migration_peer_ops();
    if (!ops) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "no way to reach a destination daemon");
        return FALSE;
    }
    const char *muri = NULL;
    guint64 bandwidth_mib = 0, bandwidth = G_MAXUINT64; /* MAX: the domain's max speed */
    gboolean has_bandwidth = FALSE;
    if (!driver_params_get_string(params, "migrate_uri", &muri, error) ||
        !driver_params_get_ullong(params, "bandwidth", &bandwidth_mib, &has_bandwidth, error))
        return FALSE;
    if (has_bandwidth && !migration_bandwidth_to_bytes(bandwidth_mib, &bandwidth, error))
        return FALSE;

    g_auto(Outgoing) o = {0};
    o.engine = engine;
    o.hooks = engine->hooks;
    o.ops = ops;
    o.flags = flags;
    o.migrate_uri = g_strdup(muri);
    g_autoptr(GUri) duri = g_uri_parse(dconnuri, G_URI_FLAGS_ENCODED_QUERY, NULL);
    const char *dhost = duri ? g_uri_get_host(duri) : NULL;
    o.dconn_host = g_strdup(dhost && *dhost ? dhost : "127.0.0.1"); /* +unix: this host */
    /* The daemon's own client files, never the client's URI's. */
    o.dconn_pkipath = g_strdup(tunnel_data_settings_get_client_pki_dir(engine->data_settings));
    if (!outgoing_start(&o, dom, params, bandwidth, error))
        return FALSE;

    g_autoptr(GError) e = NULL;
    gboolean ok = outgoing_run(&o, dconnuri, &e);
    gboolean finished = FALSE; /* the finish call was made */
    gboolean unanswered = FALSE; /* ... and got no answer */
    if (ok && !migration_job_enter_finish(o.job)) {
        /* The abort came as the stream ended: the destination has not run
         * the VM yet, and drops it when told. */
        e = migration_job_abort_error(o.job);
        ok = FALSE;
    } else if (ok) {
        ferry_fault_point("source-finish");
        finished = TRUE;
        g_autoptr(GBytes) fcookie = outgoing_cookie(&o, FALSE);
        g_autoptr(GBytes) fout = NULL;
        flight_recorder_phase(o.job->recorder, "finish", TRUE);
        flight_recorder_event(o.job->recorder, "handshake", "what", "finish (cancelled=0) sent",
                              NULL);
        g_autoptr(DriverDomain) d = ops->finish(o.peer, o.dparams, fcookie, o.destflags, FALSE,
                                                &fout, &e);
        flight_recorder_event(o.job->recorder, "handshake", "what",
                              "finish (cancelled=0) answered", "answer",
                              d ? "the domain runs on the destination" : e->message, NULL);
        flight_recorder_phase(o.job->recorder, "finish", FALSE);
        if (d && o.pc.switched) {
            /* The guest runs there; the rest of its memory is on its way. */
            g_auto(MigrationVmmProgress) end = {0};
            if (migration_postcopy_source_wait(engine, o.job, o.vm, &end, &e)) {
                o.digest = g_steal_pointer(&end.digest);
                o.downtime_ms = end.counters.downtime_ms;
            } else {
                g_prefix_error(&e, "migration failed in post-copy phase: ");
                char *more = g_strdup_printf(
                    "%s; the guest runs on the destination without all of its memory, the "
                    "rest stays paused here: resume the migration with virsh migrate "
                    "--postcopy-resume",
                    e->message);
                g_free(e->message);
                e->message = more;
                g_clear_pointer(&d, driver_domain_free);
                ok = FALSE;
            }
        }
        if (d)
            fetch_peer_record(ops, o.peer, o.peer_record_id, o.job, NULL,
                              o.pc.switched ? PEER_RECORD_POSTCOPY_WAIT_US : 0);
        if (!d && !ok) {
            /* failed in post-copy, said above */
        } else if (!d) {
            /* An error answer: the destination did not run the VM, ours
             * resumes. No answer (the connection died, the call timed out):
             * the destination may run it already, so ours must not. */
            unanswered = g_error_matches(e, FERRY_ERROR, FERRY_ERR_RPC) ||
                         g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT);
            g_prefix_error(&e, "migration failed in finish phase: ");
            if (unanswered) {
                char *more = g_strdup_printf(
                    "%s; the destination may run the VM: it stays paused here (resume it here "
                    "only if it does not run there)",
                    e->message);
                g_free(e->message);
                e->message = more;
            }
            ok = FALSE;
        } else {
            FERRY_INFO("domain '%s' migrated to the %s (digest %s, downtime %" G_GUINT64_FORMAT
                       " ms)",
                       o.name, ops->describe(o.peer), o.digest ? o.digest : "?", o.downtime_ms);
        }
    }
    if (!ok && !finished && o.pc.switched) {
        /* A resume that failed: never cancel the VMM's migration (that would
         * end it, and the destination's guest could never get the rest of
         * its memory); cutting the channel pauses it again, ready for the
         * next resume. The destination keeps its guest likewise. */
        migration_job_cut_channel(o.job, e);
        char *more = g_strdup_printf("%s; the guest runs on the destination without all of its "
                                     "memory, the rest stays paused here: resume the migration "
                                     "with virsh migrate --postcopy-resume",
                                     e->message);
        g_free(e->message);
        e->message = more;
    } else if (!ok && !finished && o.peer &&
        (g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED) ||
         g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT))) {
        /* Cancel, or a peer gone silent, frees the source at once, whatever
         * the peer does: our VM runs again before the destination is told
         * (it never runs its incoming VM without our finish), which happens
         * in the background. */
        outgoing_stop(&o, e);
        outgoing_confirm(&o, FALSE, FALSE, e);
        farewell_start(&o, e);
        g_propagate_error(error, g_steal_pointer(&e));
        return FALSE;
    } else if (!ok && !finished && o.peer) {
        outgoing_stop(&o, e);
        g_autofree char *report = farewell_with_report(&o);
        if (report) {
            char *both = g_strdup_printf("%s; the destination reports: %s", e->message, report);
            g_free(e->message);
            e->message = both;
        }
    }
    g_free(migration_job_end_record(
        o.job,
        ok ? "completed"
           : g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED) ? "cancelled" : "failed",
        e));
    outgoing_confirm(&o, ok, unanswered, e);
    if (!ok) {
        g_propagate_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    return TRUE;
}

char *migration_source_begin(Driver *drv, const DriverDomain *dom, GPtrArray *params,
                             guint flags, GBytes **cookie_out, GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e || !migration_check_flags_and_params(flags, params, error))
        return NULL;
    if (flags & MIGRATION_OFFLINE)
        return migration_offline_begin(e, dom, params, cookie_out, error);
    MigrationTuning tuning;
    if (!migration_storage_check(e, flags, error))
        return NULL;
    if (!migration_tuning_from_params(flags, params, e->hooks->tunable_flags, e->hooks->vmm_name,
                                      &tuning, error))
        return NULL;
    /* A client-managed migration sends what begin returns to the destination
     * as its destination_xml: the client's own (--xml) must survive. */
    const char *dxml = NULL;
    if (!driver_params_get_string(params, "destination_xml", &dxml, error))
        return NULL;
    if (dxml) {
        g_autoptr(DomainDef) check = hv_parse_xml(e->hv, dxml, error);
        if (!check) {
            g_prefix_error(error, "migration parameter 'destination_xml': ");
            return NULL;
        }
    }
    DomainObj *obj = hv_lookup(e->hv, dom, error);
    if (!obj)
        return NULL;
    char *xml = NULL;
    if (!domain_obj_is_active(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is not running");
    } else {
        /* Client-managed: the client hands this cookie to the destination's
         * prepare, which creates and exports the disks it names. */
        g_autoptr(GPtrArray) disks = NULL;
        gpointer vm = e->hooks->vm_ref(obj);
        gboolean ok = vm && migration_storage_source_select(e, vm, flags, params, &disks, error);
        if (vm)
            e->hooks->vm_unref(vm);
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is not running");
        if (ok) {
            xml = dxml ? g_strdup(dxml)
                       : domain_obj_format_xml(obj, DOMAIN_DEF_FORMAT_MIGRATABLE);
            MigrationCookieContent c = {.name = domain_obj_get_name(obj),
                                        .uuid = domain_obj_get_uuid(obj),
                                        .daemon_id = e->daemon_id, .tunnel = TRUE,
                                        .disks = disks,
                                        .storage_inc = (flags & MIGRATION_NON_SHARED_INC) != 0};
            *cookie_out = migration_cookie_format(&c);
        }
    }
    domain_obj_end(obj);
    return xml;
}

/* ---- client-managed migration ----
 *
 * The client calls begin here, prepare on the destination, perform here,
 * finish there, confirm here. Perform carries the VMM's bytes over the data
 * connection the destination's prepare listens on (migrate_uri, the token in
 * its cookie) and returns with the guest stopped at the VMM; the outcome waits
 * in engine->confirming until confirm ends our VM (the destination runs it)
 * or resumes it. A perform that fails resumes the VM itself: the client does
 * not confirm then. The client's disconnection aborts its perform; after a
 * successful perform it cannot tell whether the destination resumed the
 * guest, so the VM stays paused here, as libvirt leaves it. */

void migration_source_pending_free(gpointer pending)
{
    Outgoing *o = pending;
    outgoing_clear(o);
    g_free(o);
}

static void performing_add(MigrationEngine *e, MigrationJob *job)
{
    g_mutex_lock(&e->lock);
    g_hash_table_add(e->performing, migration_job_ref(job));
    g_mutex_unlock(&e->lock);
}

/* The perform is over: its outcome awaits confirm. FALSE when the client
 * went meanwhile (its abort is on the job): nobody will confirm. */
static gboolean performing_to_confirming(MigrationEngine *e, Outgoing *o)
{
    g_mutex_lock(&e->lock);
    g_hash_table_remove(e->performing, o->job);
    g_autoptr(GError) gone = migration_job_abort_error(o->job);
    if (!gone)
        g_hash_table_replace(e->confirming, g_strdup(o->instance_id), o);
    g_mutex_unlock(&e->lock);
    return gone == NULL;
}

static void performing_remove(MigrationEngine *e, MigrationJob *job)
{
    g_mutex_lock(&e->lock);
    g_hash_table_remove(e->performing, job);
    g_mutex_unlock(&e->lock);
}

/* No confirm will come: the guest stays paused here (it may run on the
 * destination if the client's finish reached it). */
static void pending_abandon(Outgoing *o, const char *why)
{
    MigrationEngine *e = o->engine;
    DomainObj *obj = domain_list_lookup_by_instance(e->hv->list, o->instance_id, NULL);
    if (!obj)
        return;
    g_autoptr(GError) err = g_error_new(
        FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
        "%s before confirming the migration; the VM stays paused here: resume it with "
        "'virsh resume' unless it runs on the destination",
        why);
    FERRY_WARN("domain '%s': %s", o->name, err->message);
    if (obj->job == o->job)
        g_clear_pointer(&obj->job, migration_job_unref);
    migration_save_completed(e, o->uuid, o->job, DRIVER_JOB_FAILED, err, NULL);
    if (domain_obj_is_active(obj) && !o->was_paused) {
        domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
        hv_emit(e->hv, obj, HV_EVENT_SUSPENDED, HV_SUSPENDED_MIGRATED);
        domain_store_save_state(e->hv->store, obj, NULL);
    }
    domain_obj_end(obj);
}

typedef struct {
    MigrationEngine *engine;
    GPtrArray *pending; /* Outgoing* whose client went */
    char *why;
} Abandon;

static gpointer abandon_thread(gpointer data)
{
    Abandon *a = data;
    MigrationEngine *e = a->engine;
    for (guint i = 0; i < a->pending->len; i++)
        pending_abandon(a->pending->pdata[i], a->why);
    g_ptr_array_unref(a->pending);
    g_free(a->why);
    g_free(a);
    migration_thread_done(e);
    return NULL;
}

void migration_source_client_closed(MigrationEngine *e, guint64 client_id)
{
    g_autofree char *why = g_strdup_printf("the client that drove the migration disconnected");
    g_autoptr(GPtrArray) pending = g_ptr_array_new_with_free_func(migration_source_pending_free);
    g_mutex_lock(&e->lock);
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init(&it, e->performing);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        MigrationJob *job = key;
        if (job->client_id == client_id)
            migration_job_request_abort(
                job, g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                 "migration job canceled: %s", why));
    }
    g_hash_table_iter_init(&it, e->confirming);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        Outgoing *o = value;
        if (o->job->client_id == client_id) {
            g_ptr_array_add(pending, o);
            g_hash_table_iter_steal(&it);
            g_free(key);
        }
    }
    g_mutex_unlock(&e->lock);
    if (pending->len == 0)
        return;
    Abandon *a = g_new0(Abandon, 1);
    a->engine = e;
    a->pending = g_steal_pointer(&pending);
    a->why = g_steal_pointer(&why);
    g_autoptr(GError) te = NULL;
    if (!migration_thread_start(e, "migration-abandon", abandon_thread, a, &te)) {
        FERRY_WARN("%s", te->message);
        g_ptr_array_unref(a->pending);
        g_free(a->why);
        g_free(a);
    }
}

static gboolean client_perform(MigrationEngine *engine, const DriverDomain *dom,
                               GPtrArray *params, GBytes *cookie_in, guint flags,
                               guint64 bandwidth, GBytes **cookie_out, GError **error)
{
    if (flags & MIGRATION_TUNNELLED) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "cannot perform tunnelled migration without using peer2peer flag");
        return FALSE;
    }
    if (flags & (MIGRATION_POSTCOPY | MIGRATION_POSTCOPY_RESUME)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration flag POSTCOPY is not supported without --p2p: post-copy "
                    "needs the source daemon to drive the migration to its end");
        return FALSE;
    }
    if (flags & MIGRATION_PARALLEL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration flag PARALLEL is not supported without --p2p: the channels "
                    "are negotiated between the two ferryd");
        return FALSE;
    }
    const char *muri = NULL;
    if (!driver_params_get_string(params, "migrate_uri", &muri, error))
        return FALSE;
    if (!muri || !cookie_in) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "client-managed migration needs the destination's migration URI "
                    "(parameter 'migrate_uri') and its prepare cookie");
        return FALSE;
    }
    Outgoing *o = g_new0(Outgoing, 1);
    o->engine = engine;
    o->hooks = engine->hooks;
    o->flags = flags;
    o->migrate_uri = g_strdup(muri);
    o->dest_cookie = g_bytes_ref(cookie_in);
    o->dconn_pkipath = g_strdup(tunnel_data_settings_get_client_pki_dir(engine->data_settings));
    if (!outgoing_start(o, dom, params, bandwidth, error)) {
        migration_source_pending_free(o);
        return FALSE;
    }
    o->job->client_id = driver_client_current();
    performing_add(engine, o->job);

    g_autoptr(GError) e = NULL;
    if (!outgoing_run(o, NULL, &e)) {
        performing_remove(engine, o->job);
        outgoing_stop(o, e);
        g_free(migration_job_end_record(
            o->job,
            g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED) ? "cancelled" : "failed",
            e));
        outgoing_confirm(o, FALSE, FALSE, e);
        migration_source_pending_free(o);
        g_propagate_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    *cookie_out = outgoing_cookie(o, FALSE);
    FERRY_INFO("domain '%s' sent to the destination (digest %s); waiting for the client's "
               "confirm",
               o->name, o->digest ? o->digest : "?");
    if (!performing_to_confirming(engine, o)) {
        pending_abandon(o, "the client that drove the migration disconnected");
        migration_source_pending_free(o);
    }
    return TRUE;
}

gboolean migration_source_confirm(Driver *drv, const DriverDomain *dom, GPtrArray *params,
                                  GBytes *cookie_in, guint flags, gboolean cancelled,
                                  GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e)
        return FALSE;
    if (!migration_check_flags_and_params(flags, params, error))
        return FALSE;
    if (flags & MIGRATION_OFFLINE)
        return migration_offline_confirm(e, dom, flags, cancelled, error);
    if (flags & MIGRATION_PEER2PEER) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "peer-to-peer migration confirms inside perform");
        return FALSE;
    }
    DomainObj *obj = hv_lookup(e->hv, dom, error);
    if (!obj)
        return FALSE;
    g_autofree char *instance_id = g_strdup(obj->instance_id);
    domain_obj_end(obj);
    Outgoing *o = NULL;
    g_mutex_lock(&e->lock);
    gpointer key = NULL;
    if (instance_id &&
        g_hash_table_steal_extended(e->confirming, instance_id, &key, (gpointer *)&o))
        g_free(key);
    g_mutex_unlock(&e->lock);
    if (!o) {
        /* A failed perform already resumed the VM. */
        if (cancelled)
            return TRUE;
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "no migration of domain '%s' awaits confirmation", dom->name);
        return FALSE;
    }
    g_autoptr(GError) why = NULL;
    if (cancelled) {
        why = g_error_new_literal(FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                                  "the destination did not start the migrated domain");
        FERRY_INFO("domain '%s': %s; it runs here again", o->name, why->message);
    } else {
        FERRY_INFO("domain '%s' migrated (client-managed, digest %s)", o->name,
                   o->digest ? o->digest : "?");
    }
    g_free(migration_job_end_record(o->job, cancelled ? "failed" : "completed", why));
    outgoing_confirm(o, !cancelled, FALSE, why);
    migration_source_pending_free(o);
    return TRUE;
}
