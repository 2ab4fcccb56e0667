/* The destination side: a hidden incoming instance that becomes the visible
 * domain only when finish sees a clean channel and a VMM that completed the
 * migration. A watchdog kills an incoming VM whose migration the source never
 * finishes (source died, connection lost); in proxy mode a listener waits
 * for the source's data connection. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "driver/migration-private.h"
#include "util/error.h"
#include "util/fault-point.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "migration.dest"

#define FINISH_WAIT_S 60
/* After the channel failed here, how long the source has to cancel (and hear
 * why) before the incoming VM is dropped anyway: the source fails too within
 * about a second, as its channel shares the path. */
#define ORPHAN_GRACE_S 5
#define DATA_CONNECT_WAIT_S 60
#define VMM_END_WAIT_MS 10000
/* How often the watchdog looks at the source's connection. */
#define WATCH_SLICE_US (G_USEC_PER_SEC / 2)

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MigrationCookie, migration_cookie_clear)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MigrationVmmProgress, migration_vmm_progress_clear)

typedef struct {
    MigrationEngine *engine;
    MigrationJob *job;
} JobThread;

static JobThread *job_thread_new(MigrationEngine *e, MigrationJob *job)
{
    JobThread *t = g_new0(JobThread, 1);
    t->engine = e;
    t->job = migration_job_ref(job);
    return t;
}

static void job_thread_end(JobThread *t)
{
    MigrationEngine *e = t->engine;
    migration_job_unref(t->job);
    g_free(t);
    migration_thread_done(e);
}

static void incoming_forget(MigrationEngine *e, MigrationJob *job)
{
    g_mutex_lock(&e->lock);
    if (g_hash_table_lookup(e->incoming, job->name) == job)
        g_hash_table_remove(e->incoming, job->name);
    g_mutex_unlock(&e->lock);
    /* The source's connection is no longer ours to keep open, nor may the
     * source come back to it. */
    tunnel_resume_withdraw(job->resume_token);
    g_mutex_lock(&job->lock);
    g_clear_pointer(&job->source, tunnel_peer_watch_unref);
    g_mutex_unlock(&job->lock);
}

/* Whether the source's connection is gone (job->lock held); with resume
 * agreed and the stream still to be resumed (stream_open), gone for longer
 * than the source has to come back on a new one. Once a tunnelled stream
 * is over nothing is resumed: a broken connection is the source gone. In
 * proxy mode the daemons' connection is resumed on its own, also after
 * the stream (control_resume: the caller passes stream_open TRUE). */
static gboolean source_gone_locked(MigrationJob *job, gboolean stream_open)
{
    if (!job->source || !tunnel_peer_watch_gone(job->source)) {
        job->source_gone_since_us = 0;
        return FALSE;
    }
    if (!stream_open || !job->resume_timeout_s)
        return TRUE;
    /* As its stream waits: a connection that broke for the resume time,
     * one the source ended or reset (gone, or its end timed out first)
     * for a short grace. */
    guint wait_s = tunnel_peer_watch_broke(job->source)
                       ? job->resume_timeout_s
                       : MIN(job->resume_timeout_s, TUNNEL_RESUME_ENDED_GRACE_S);
    gint64 now = g_get_monotonic_time();
    if (!job->source_gone_since_us)
        job->source_gone_since_us = now;
    return now - job->source_gone_since_us >= (gint64)wait_s * G_USEC_PER_SEC;
}

/* How the source's connection went, for messages. */
static const char *gone_how(MigrationJob *job)
{
    return job->resume_timeout_s ? ", and the source did not resume the migration in time" : "";
}

static gboolean source_gone(MigrationJob *job)
{
    g_mutex_lock(&job->lock);
    gboolean gone = source_gone_locked(job, TRUE);
    g_mutex_unlock(&job->lock);
    return gone;
}

/* Ends the destination's flight record and keeps it for the source. */
static void incoming_end_record(MigrationJob *job, const char *outcome, const char *why)
{
    g_autoptr(GError) e =
        why ? g_error_new_literal(FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, why) : NULL;
    g_autofree char *text = migration_job_end_record(job, outcome, e);
    if (text)
        flight_recorder_keep(flight_recorder_get_id(job->recorder), text);
}

/* Kills the incoming VM and drops its hidden instance. */
static void incoming_discard(MigrationEngine *e, MigrationJob *job, const char *why)
{
    g_mutex_lock(&e->lock);
    if (g_hash_table_lookup(e->incoming, job->name) == job)
        g_hash_table_replace(e->dropped, g_strdup(job->name), g_strdup(why));
    g_mutex_unlock(&e->lock);
    migration_job_cut_channel(job, NULL);
    incoming_end_record(job, g_str_has_prefix(why, "the source canceled") ? "cancelled" : "failed",
                        why);
    DomainObj *obj = domain_list_lookup_by_instance(e->hv->list, job->instance_id, NULL);
    if (obj) {
        FERRY_INFO("dropping the incoming VM of domain '%s': %s", job->name, why);
        migration_kill_instance(e, obj, DOMAIN_SHUTOFF_FAILED);
        if (!domain_obj_is_removed(obj))
            domain_list_remove(e->hv->list, obj);
        domain_obj_end(obj);
    }
    /* The VMM is gone: the images it received for nothing go too. */
    migration_storage_dest_discard(job->storage);
    incoming_forget(e, job);
}

/* The destination kills an incoming VM whose source never finishes: at once
 * when the source's connection is gone, else after a grace for its finish
 * (it may still want to hear why the channel failed here). */
static gpointer incoming_watchdog(gpointer data)
{
    JobThread *t = data;
    MigrationEngine *e = t->engine;
    MigrationJob *job = t->job;
    g_autoptr(GError) err = NULL;
    guint stall_s = tunnel_data_settings_get_stall_timeout(e->data_settings);
    gboolean clean;
    gboolean gone = FALSE;
    /* Until the channel ends; a source or a link gone silent ends it. */
    for (;;) {
        /* A silent source is only told (its channel's own stall ends it). */
        MigrationWait w = migration_job_wait_turn(job, g_get_monotonic_time() + WATCH_SLICE_US,
                                                  MIGRATION_WAIT_CHANNEL, 0, &err);
        clean = w == MIGRATION_WAIT_DONE;
        if (w != MIGRATION_WAIT_AGAIN)
            break;
        if ((gone = source_gone(job))) {
            g_clear_error(&err);
            g_set_error(&err, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "the connection from the source ferryd closed%s", gone_how(job));
            break;
        }
        migration_job_note_resume(job);
        if (!migration_job_check_moving(job, stall_s, NULL))
            FERRY_WARN("incoming migration of domain '%s': no data from the source for %u s",
                       job->name, stall_s);
    }
    if (clean)
        flight_recorder_event(job->recorder, "handshake", "what",
                              "the stream ended cleanly: all data written to the VMM", NULL);
    else
        flight_recorder_error(job->recorder, "stream", err);
    gint64 deadline = g_get_monotonic_time() +
                      (clean ? FINISH_WAIT_S : ORPHAN_GRACE_S) * G_USEC_PER_SEC;
    g_mutex_lock(&job->lock);
    while (!job->claimed && !gone && !g_atomic_int_get(&e->stopping) &&
           g_get_monotonic_time() < deadline) {
        g_cond_wait_until(&job->cond, &job->lock,
                          MIN(deadline, g_get_monotonic_time() + WATCH_SLICE_US));
        if (!job->claimed && source_gone_locked(job, job->control_resume)) {
            gone = TRUE;
            g_clear_error(&err);
            g_set_error(&err, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "the connection from the source ferryd closed%s",
                        clean ? " after the stream ended, before its finish call" : "");
        }
    }
    g_mutex_unlock(&job->lock);
    /* A stopping daemon leaves the VM to its successor, which drops it. */
    if (!g_atomic_int_get(&e->stopping) && migration_job_claim(job)) {
        g_autofree char *why = g_strdup_printf(
            "the source did not finish the migration (%s)",
            clean && !gone ? "no finish call after the stream ended" : err->message);
        incoming_discard(e, job, why);
    }
    job_thread_end(t);
    return NULL;
}

/* Proxy mode: waits for the source's data connections (one per channel:
 * the VMM's stream, then each disk's), and relays each to its end here. A
 * connection without the token is refused by the listener and the wait
 * goes on. */
static gpointer incoming_accept(gpointer data)
{
    JobThread *t = data;
    MigrationJob *job = t->job;
    g_autoptr(GError) err = NULL;
    g_autoptr(TunnelChannel) main = NULL;
    gint64 deadline = g_get_monotonic_time() + DATA_CONNECT_WAIT_S * G_USEC_PER_SEC;
    guint n = migration_storage_dest_count(job->storage) + job->memory_channels;
    /* The listener and the VMM's ends stay the job's until the channels take them. */
    for (guint opened = 0; opened < n && !err; opened++) {
        guint index = 0;
        RpcTransport *net =
            tunnel_data_listener_accept_channel(job->listener, deadline, &index, &err);
        if (!net)
            break;
        g_mutex_lock(&job->lock);
        gboolean memory = migration_parallel_is_memory_channel(job, index);
        int fd = index == 0 ? job->pending_vmm_fd
                 : memory   ? migration_parallel_dest_take_fd(job, index)
                            : migration_storage_dest_take_fd(job->storage, index, NULL);
        if (index == 0)
            job->pending_vmm_fd = -1;
        g_mutex_unlock(&job->lock);
        guint k = memory ? index - job->memory_first + 1 : 0;
        g_autofree char *peer =
            memory  ? g_strdup_printf("data connection from the source ferryd (channel %u)", k)
            : index ? g_strdup("data connection from the source ferryd (disk channel)")
                    : g_strdup("data connection from the source ferryd");
        TunnelRelayConfig rc = {.vmm_name = memory  ? migration_parallel_vmm_name(FALSE, k)
                                            : index ? "destination VMM's disk export"
                                                    : "destination VMM",
                                .peer_name = peer,
                                .resume_timeout_s =
                                    index == 0 && n == 1 ? job->resume_timeout_s : 0};
        g_autoptr(TunnelChannel) ch = tunnel_channel_relay(fd, net, &rc);
        if (index == 0) {
            main = tunnel_channel_ref(ch);
            migration_job_set_channel(job, ch);
        } else {
            migration_job_add_channel(job, index, ch);
        }
    }
    if (err && !main)
        migration_job_set_channel_error(job, g_steal_pointer(&err));
    else if (err)
        migration_job_cut_channel(job, err);
    else /* While the data flows, the port stays ours. */
        tunnel_channel_guard_port(main, job->listener);
    g_mutex_lock(&job->lock);
    g_clear_pointer(&job->listener, tunnel_data_listener_free);
    g_mutex_unlock(&job->lock);
    job_thread_end(t);
    return NULL;
}

/* Proxy mode: a listener for the source's data connection; *uri_out names it. */
static gboolean incoming_listen(MigrationEngine *e, MigrationJob *job, GPtrArray *params,
                                guint flags, int *vmm_fd, char **uri_out, GError **error)
{
    const char *muri = NULL, *laddr = NULL;
    if (!driver_params_get_string(params, "migrate_uri", &muri, error) ||
        !driver_params_get_string(params, "listen_address", &laddr, error))
        return FALSE;
    g_autofree char *uri_host = NULL;
    guint uri_port = 0;
    if (muri && !migration_parse_tcp_uri(muri, &uri_host, &uri_port, error))
        return FALSE;
    /* Where to listen: the params, then migration_address, then everywhere. */
    const char *addr = laddr                                      ? laddr
                       : !migration_is_wildcard_address(uri_host) ? uri_host
                           : tunnel_data_settings_get_address(e->data_settings);
    job->token = tunnel_data_token_new();
    g_autofree char *what = g_strdup_printf("the migration of domain '%s'", job->name);
    job->listener = tunnel_data_settings_listen(e->data_settings, addr, uri_port, job->token,
                                                (flags & MIGRATION_TLS) != 0, what, error);
    if (!job->listener)
        return FALSE;
    tunnel_data_listener_set_channels(job->listener, migration_storage_dest_count(job->storage) +
                                                         job->memory_channels);
    if (job->resume_token)
        tunnel_data_listener_set_resume_token(job->listener, job->resume_token);
    job->pending_vmm_fd = *vmm_fd;
    *vmm_fd = -1;
    guint16 port = tunnel_data_listener_get_port(job->listener);
    /* A wildcard address tells a peer-to-peer source to use the host it
     * reached us by; a client-managed source only has what we say: our name. */
    g_autofree char *hostname = NULL;
    if (!(flags & MIGRATION_PEER2PEER) && migration_is_wildcard_address(addr))
        addr = hostname = driver_node_get_hostname();
    *uri_out = strchr(addr, ':') ? g_strdup_printf("tcp://[%s]:%u", addr, port)
                                 : g_strdup_printf("tcp://%s:%u", addr, port);
    JobThread *t = job_thread_new(e, job);
    if (!migration_thread_start(e, "incoming-accept", incoming_accept, t, error)) {
        migration_job_unref(t->job);
        g_free(t);
        g_clear_pointer(&job->listener, tunnel_data_listener_free);
        *vmm_fd = job->pending_vmm_fd; /* back to the caller, which closes it */
        job->pending_vmm_fd = -1;
        g_clear_pointer(uri_out, g_free);
        return FALSE;
    }
    return TRUE;
}

gboolean migration_dest_prepare(Driver *drv, GPtrArray *params, GBytes *cookie_in, guint flags,
                                TunnelBinding *binding, TunnelPeerWatch *source,
                                GBytes **cookie_out, char **uri_out, GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e || !migration_check_flags_and_params(flags, params, error))
        return FALSE;
    if (flags & MIGRATION_OFFLINE) {
        if (binding) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                        "tunnelled offline migration does not make sense");
            return FALSE;
        }
        return migration_offline_prepare(e, params, cookie_in, cookie_out, uri_out, error);
    }
    if (flags & MIGRATION_POSTCOPY_RESUME)
        return migration_postcopy_dest_prepare(e, params, cookie_in, flags, binding, source,
                                               cookie_out, uri_out, error);
    const MigrationHooks *h = e->hooks;
    if ((flags & MIGRATION_POSTCOPY) && !(h->tunable_flags & MIGRATION_POSTCOPY)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration flag POSTCOPY is not supported by %s", h->vmm_name);
        return FALSE;
    }
    const char *dxml = NULL, *dname = NULL;
    if (!driver_params_get_string(params, "destination_xml", &dxml, error) ||
        !driver_params_get_string(params, "destination_name", &dname, error))
        return FALSE;
    if (!dxml) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "migration parameter 'destination_xml' is missing");
        return FALSE;
    }
    g_auto(MigrationCookie) src = {0};
    if (!migration_cookie_parse(cookie_in, &src, error))
        return FALSE;
    g_autoptr(DomainDef) def = hv_parse_xml(e->hv, dxml, error);
    if (!def)
        return FALSE;
    if (dname) {
        g_free(def->name);
        def->name = g_strdup(dname);
    }
    gboolean local = src.daemon_id && g_str_equal(src.daemon_id, e->daemon_id);
    g_autofree char *name = g_strdup(def->name);

    DomainObj *obj = domain_list_add(e->hv->list, &def,
                                     DOMAIN_LIST_ADD_HIDDEN |
                                         (local ? DOMAIN_LIST_ADD_ALLOW_RUNNING_TWIN : 0),
                                     NULL, error);
    if (!obj)
        return FALSE;
    int sv[2] = {-1, -1};
    g_autoptr(GError) err = NULL;
    g_autoptr(MigrationJob) job = NULL;
    gpointer vm = NULL;
    gboolean credit = FALSE;
    MigrationEndpoint ep = {.kind = MIGRATION_ENDPOINT_FD, .fd = -1, .n_connections = 1};
    MigrationCookieContent c = {0};
    JobThread *watchdog = NULL;
    /* several connections for the memory stream, as the source asked and our
     * VMM can; post-copy and a migration that copies disks run over one (the
     * source refuses each together with --parallel) */
    guint parallel = (flags & (MIGRATION_POSTCOPY | MIGRATION_NON_SHARED_DISK |
                               MIGRATION_NON_SHARED_INC))
                         ? 1
                         : migration_parallel_accept(e, &src);
    int parallel_ours[MIGRATION_MAX_CONNECTIONS - 1];
    for (guint i = 0; i < G_N_ELEMENTS(parallel_ours); i++)
        parallel_ours[i] = -1;
    /* A VMM that listens for its connections (QEMU's multifd): at this path. */
    gboolean by_address = parallel > 1 && h->parallel_by_address;
    g_autofree char *vmm_path = NULL;
    MigrationStorageDest *storage = NULL;
    /* Disks without shared storage: their images first, the VMM opens them. */
    if ((flags & (MIGRATION_NON_SHARED_DISK | MIGRATION_NON_SHARED_INC)) && src.disks &&
        src.disks->len && !(storage = migration_storage_dest_create(e, obj, flags, &src, &err)))
        goto fail;
    if (!hv_instance_start(e->hv, obj, TRUE, &err))
        goto fail;
    vm = h->vm_ref(obj);
    if (storage && (!vm || !migration_storage_dest_export(e, storage, obj, vm, &err))) {
        if (!vm)
            g_set_error(&err, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR, "the incoming VMM is gone");
        goto fail;
    }
    if (!by_address && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ferry_set_error_errno(&err, errno, "cannot create the migration socket pair");
        goto fail;
    }
    if (parallel > 1 && !by_address &&
        !migration_parallel_pairs(parallel, parallel_ours, ep.extra_fds, &err))
        goto fail;
    if (by_address) {
        vmm_path = domain_store_runtime_path(e->hv->store, obj->instance_id, ".mig");
        ep.path = vmm_path;
    }
    ep.n_connections = parallel;
    ep.fd = sv[1];
    sv[1] = -1;
    ep.postcopy = (flags & MIGRATION_POSTCOPY) != 0;
    if (!vm || !h->start_incoming(vm, &ep, &err)) {
        if (!vm) {
            if (ep.fd >= 0)
                close(ep.fd);
            if (!by_address)
                migration_parallel_close(ep.n_connections, ep.extra_fds);
            g_set_error(&err, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR, "the incoming VMM is gone");
        }
        goto fail;
    }
    /* Its main connection first: QEMU 7.2 takes the first as the main one. */
    for (guint k = 0; by_address && k < parallel; k++) {
        int fd = migration_parallel_connect(vmm_path, k,
                                            g_get_monotonic_time() + 10 * G_USEC_PER_SEC, &err);
        if (fd < 0)
            goto fail;
        if (k == 0)
            sv[0] = fd;
        else
            parallel_ours[k - 1] = fd;
    }
    if (by_address)
        unlink(vmm_path); /* connected: nobody else may */

    job = migration_job_new(DRIVER_JOB_OPERATION_MIGRATION_IN);
    if (!(flags & MIGRATION_PEER2PEER))
        job->client_id = driver_client_current(); /* its disconnection drops the VM */
    job->name = g_strdup(name);
    job->instance_id = g_strdup(obj->instance_id);
    job->source = source ? tunnel_peer_watch_ref(source) : NULL;
    job->storage = g_steal_pointer(&storage);
    job->memory_first = 1 + migration_storage_dest_count(job->storage);
    job->memory_channels = parallel;
    memcpy(job->memory_fds, parallel_ours, sizeof(parallel_ours));
    for (guint i = 0; i < G_N_ELEMENTS(parallel_ours); i++)
        parallel_ours[i] = -1; /* the job's now */
    job->recorder = flight_recorder_new("destination", name, domain_obj_get_uuid(obj),
                                        src.record_id);
    if (job->recorder) {
        const char *security = driver_get_caller_security();
        flight_recorder_event(job->recorder, "start", "operation", "migration in", NULL);
        flight_recorder_phase(job->recorder, "prepare", TRUE);
        flight_recorder_event(job->recorder, "connection", "peer", "source ferryd", "security",
                              security ? security : "unknown", NULL);
    }
    if (binding) {
        TunnelStreamConfig cfg;
        migration_cookie_tunnel_config(&src, TUNNEL_ROLE_SERVER, "source ferryd",
                                       "destination VMM", &cfg);
        credit = cfg.credit;
        /* A broken connection is survived when both daemons agree (the
         * shorter of their times); the source comes back with the token.
         * Disk channels and the memory's extra ones are not resumed: with
         * any of them, none is. */
        guint resume = tunnel_data_settings_get_resume_timeout(e->data_settings);
        if (cfg.credit && src.resume_timeout && resume && !job->storage && parallel < 2) {
            cfg.resume = TRUE;
            cfg.resume_timeout_s = MIN(resume, src.resume_timeout);
            job->resume_timeout_s = cfg.resume_timeout_s;
            job->resume_token = tunnel_data_token_new();
        }
        if (job->recorder) {
            g_autofree char *packet = g_strdup_printf("%zu", cfg.packet_size);
            g_autofree char *window = g_strdup_printf("%zu", cfg.window);
            g_autofree char *channels = g_strdup_printf("%u", parallel);
            flight_recorder_event(job->recorder, "terms", "mode", "tunnel", "#channels", channels,
                                  "flow", cfg.credit ? "credit" : "plain (libvirt peer)",
                                  "#packet_size", packet, "#window", window, NULL);
        }
        g_autoptr(TunnelChannel) ch = tunnel_channel_open_stream(binding, sv[0], &cfg);
        sv[0] = -1;
        if (cfg.resume)
            tunnel_channel_offer_resume(ch, job->resume_token, job->source);
        migration_job_set_channel(job, ch);
        /* The disks' and the memory's extra streams come with ferry's own
         * call, bound by a token. */
        if (job->storage || parallel > 1)
            job->token = tunnel_data_token_new();
        if (job->storage)
            migration_storage_dest_set_stream(job->storage, &cfg);
        job->memory_stream = cfg;
    } else {
        /* Proxy mode, peer-to-peer, one channel: a broken data
         * connection (and the daemons' connection) is resumed as the
         * tunnel's stream is (the shorter of the two times). */
        guint resume = tunnel_data_settings_get_resume_timeout(e->data_settings);
        if (src.resume_timeout && resume && job->source && !job->storage && parallel < 2 &&
            (flags & MIGRATION_PEER2PEER)) {
            job->resume_timeout_s = MIN(resume, src.resume_timeout);
            job->resume_token = tunnel_data_token_new();
            job->control_resume = TRUE;
        }
        if (!incoming_listen(e, job, params, flags, &sv[0], uri_out, &err))
            goto fail;
        if (job->control_resume)
            tunnel_resume_offer(job->resume_token, NULL, job->source);
    }
    obj->job = migration_job_ref(job);

    g_mutex_lock(&e->lock);
    g_hash_table_replace(e->incoming, g_strdup(name), migration_job_ref(job));
    g_hash_table_remove(e->dropped, name);
    g_mutex_unlock(&e->lock);
    watchdog = job_thread_new(e, job);
    if (!migration_thread_start(e, "incoming-watchdog", incoming_watchdog, watchdog, &err)) {
        migration_job_unref(watchdog->job);
        g_free(watchdog);
        incoming_forget(e, job);
        migration_job_cut_channel(job, err);
        g_clear_pointer(&obj->job, migration_job_unref);
        goto fail;
    }

    c = (MigrationCookieContent){.name = name, .uuid = domain_obj_get_uuid(obj),
                                 .daemon_id = e->daemon_id, .tunnel = src.ferry && binding,
                                 .token = job->token,
                                 .resume_timeout = job->resume_timeout_s,
                                 .resume_token = job->resume_token,
                                 .disks = migration_storage_dest_disks(job->storage),
                                 .storage_inc = migration_storage_dest_is_inc(job->storage),
                                 .parallel = parallel,
                                 .record_id = src.record_id && job->recorder
                                                  ? flight_recorder_get_id(job->recorder)
                                                  : NULL};
    if (!binding && job->recorder) {
        g_autofree char *channels = g_strdup_printf("%u", parallel);
        flight_recorder_event(job->recorder, "terms", "mode",
                              (flags & MIGRATION_TLS) ? "proxy+tls" : "proxy", "#channels",
                              channels, "data_connection", *uri_out, NULL);
    }
    flight_recorder_phase(job->recorder, "prepare", FALSE);
    *cookie_out = migration_cookie_format(&c);
    domain_store_save_state(e->hv->store, obj, NULL);
    FERRY_INFO("prepared incoming migration of domain '%s'%s (%s)", name,
               local ? " from this daemon" : "",
               binding ? (credit ? "tunnel, credit flow control" : "tunnel, plain") : *uri_out);
    h->vm_unref(vm);
    domain_obj_end(obj);
    ferry_fault_point("dest-prepare");
    return TRUE;

fail:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    migration_parallel_close(MIGRATION_MAX_CONNECTIONS, parallel_ours);
    if (vm)
        h->vm_unref(vm);
    migration_kill_instance(e, obj, DOMAIN_SHUTOFF_FAILED);
    /* The VMM is gone: so are the images made for it. */
    migration_storage_dest_discard(storage ? storage : job ? job->storage : NULL);
    migration_storage_dest_free(storage);
    if (!domain_obj_is_removed(obj))
        domain_list_remove(e->hv->list, obj);
    domain_obj_end(obj);
    g_propagate_prefixed_error(error, g_steal_pointer(&err), "cannot prepare the incoming VM: ");
    return FALSE;
}

/* finish with cancelled=1: the source gave up. */
static void finish_cancelled(MigrationEngine *e, MigrationJob *job, const char *dname,
                             GError **error)
{
    /* If our side of the channel failed first, say how: the source may only
     * have seen its connection drop. */
    g_autoptr(GError) why = NULL;
    gboolean failed_here = !migration_job_wait_channel(job, g_get_monotonic_time(), &why) &&
                           !g_error_matches(why, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT);
    /* A VMM that died ends its stream like one that finished: the source
     * only saw its own VMM lose the receiver. */
    DomainObj *obj = domain_list_lookup_by_instance(e->hv->list, job->instance_id, NULL);
    if (obj)
        domain_obj_end(obj);
    else if (!failed_here) {
        g_clear_error(&why);
        g_set_error(&why, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the destination VMM ended unexpectedly");
        failed_here = TRUE;
    }
    migration_job_cut_channel(job, NULL);
    incoming_discard(e, job, "the source canceled the migration");
    if (failed_here)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "incoming migration of domain '%s' failed on the destination: %s", dname,
                    why->message);
    else
        g_set_error(error, FERRY_ERROR, FERRY_ERR_MIGRATE_FINISH_OK,
                    "migration successfully aborted");
}

/* Makes the incoming instance (obj, locked) the domain, running unless
 * --suspend (post-copy: running_reason and resumed_detail say so); FALSE
 * leaves it to be discarded. */
static gboolean finish_reveal(MigrationEngine *e, DomainObj *obj, gpointer vm, const char *pxml,
                              guint flags, int running_reason, int resumed_detail,
                              GError **error)
{
    if (pxml || (flags & MIGRATION_PERSIST_DEST)) {
        g_autoptr(DomainDef) pdef =
            pxml ? hv_parse_xml(e->hv, pxml, error) : domain_def_copy(obj->live_def);
        if (!pdef || !domain_store_save_config(e->hv->store, pdef, error))
            return FALSE;
        domain_def_free(obj->persistent_def);
        obj->persistent_def = g_steal_pointer(&pdef);
    }
    if (!domain_list_reveal(e->hv->list, obj, error))
        return FALSE;
    hv_emit(e->hv, obj, HV_EVENT_STARTED, HV_STARTED_MIGRATED);
    if (flags & MIGRATION_PAUSED) {
        domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
        return TRUE;
    }
    if (!e->hooks->resume(vm, error)) {
        g_prefix_error(error, "cannot resume the migrated VM: ");
        return FALSE;
    }
    domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, running_reason);
    hv_emit(e->hv, obj, HV_EVENT_RESUMED, resumed_detail);
    return TRUE;
}

DriverDomain *migration_dest_finish(Driver *drv, GPtrArray *params, GBytes *cookie_in,
                                    guint flags, gboolean cancelled, GBytes **cookie_out,
                                    GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e)
        return NULL;
    if (flags & MIGRATION_OFFLINE)
        return migration_offline_finish(e, params, cancelled, cookie_out, error);
    const MigrationHooks *h = e->hooks;
    const char *dname = NULL, *pxml = NULL;
    if (!driver_params_get_string(params, "destination_name", &dname, error) ||
        !driver_params_get_string(params, "persistent_xml", &pxml, error))
        return NULL;
    g_mutex_lock(&e->lock);
    MigrationJob *found = dname ? g_hash_table_lookup(e->incoming, dname) : NULL;
    g_autoptr(MigrationJob) job = found ? migration_job_ref(found) : NULL;
    g_mutex_unlock(&e->lock);
    if (!job || !migration_job_claim(job)) {
        /* Dropped before the source's finish came: the source hears why
         * (its own side may only have seen the connection break). */
        g_mutex_lock(&e->lock);
        g_autofree char *why = dname ? g_strdup(g_hash_table_lookup(e->dropped, dname)) : NULL;
        g_mutex_unlock(&e->lock);
        if (why)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "the incoming VM of domain '%s' was dropped: %s", dname, why);
        else if (!job)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_DOMAIN,
                        "no incoming migration of domain '%s'", dname ? dname : "(unnamed)");
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "the incoming migration of domain '%s' was already given up", dname);
        return NULL;
    }
    flight_recorder_phase(job->recorder, "finish", TRUE);
    flight_recorder_event(job->recorder, "handshake", "what",
                          cancelled ? "finish (cancelled=1) received" : "finish (cancelled=0) received",
                          NULL);
    if (cancelled && job->postcopy) {
        /* The guest runs here without all of its memory: it stays. */
        migration_job_cut_channel(job, NULL);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "domain '%s' runs here in post-copy: it stays", dname);
        return NULL;
    }
    if (cancelled) {
        finish_cancelled(e, job, dname, error);
        return NULL;
    }
    {
        g_auto(MigrationCookie) fin = {0};
        if (cookie_in && migration_cookie_parse(cookie_in, &fin, NULL) && fin.postcopy)
            return migration_postcopy_dest_finish(e, job, dname, pxml, flags, cookie_out, error);
    }

    g_autoptr(GError) err = NULL;
    g_auto(MigrationVmmProgress) end = {0};
    gpointer vm = NULL;
    DomainObj *obj = NULL;
    DriverDomain *d = NULL;
    MigrationCookieContent c = {0};
    if (!migration_job_wait_channel(job, g_get_monotonic_time() + FINISH_WAIT_S * G_USEC_PER_SEC,
                                    &err)) {
        g_prefix_error(&err, "the migration stream did not end cleanly: ");
        goto fail;
    }
    /* Finished means every channel finished. */
    if (!migration_parallel_wait(job, g_get_monotonic_time() + FINISH_WAIT_S * G_USEC_PER_SEC,
                                 &err))
        goto fail;
    obj = domain_list_lookup_by_instance(e->hv->list, job->instance_id, &err);
    if (!obj)
        goto fail;
    vm = h->vm_ref(obj);
    domain_obj_unlock(obj);
    if (!vm || !h->wait_end(vm, VMM_END_WAIT_MS, &end, &err) ||
        end.status != MIGRATION_VMM_COMPLETED) {
        g_clear_error(&err);
        g_set_error(&err, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "destination VMM: %s",
                    end.error ? end.error
                    : end.status == MIGRATION_VMM_NONE ? "not reachable"
                                                       : "the migration did not complete");
        goto fail;
    }
    migration_job_update(job, &end.counters);
    /* The disks' last writes came before the source called: the export ends
     * before the guest resumes on the images. */
    if (!migration_storage_dest_finish(e, job, vm, &err))
        goto fail;

    domain_obj_lock(obj);
    if (!finish_reveal(e, obj, vm, pxml, flags, DOMAIN_RUNNING_MIGRATED, HV_RESUMED_MIGRATED,
                       &err)) {
        domain_obj_unlock(obj);
        goto fail;
    }
    if (obj->job == job)
        g_clear_pointer(&obj->job, migration_job_unref);
    flight_recorder_phase(job->recorder, "finish", FALSE);
    incoming_end_record(job, "completed", NULL);
    migration_save_completed(e, domain_obj_get_uuid(obj), job, DRIVER_JOB_COMPLETED, NULL,
                             end.digest);
    domain_store_save_state(e->hv->store, obj, NULL);
    d = g_new0(DriverDomain, 1);
    d->name = g_strdup(domain_obj_get_name(obj));
    memcpy(d->uuid, domain_obj_get_uuid(obj), 16);
    d->id = obj->id;
    c = (MigrationCookieContent){.name = d->name, .uuid = d->uuid, .daemon_id = e->daemon_id,
                                 .digest = end.digest};
    *cookie_out = migration_cookie_format(&c);
    domain_obj_end(obj);
    h->vm_unref(vm);
    incoming_forget(e, job);
    /* ferry-vmm checks a digest of all guest RAM; QEMU has no such check. */
    if (end.digest)
        FERRY_INFO("incoming migration of domain '%s' finished (digest %s verified by the VMM)",
                   d->name, end.digest);
    else
        FERRY_INFO("incoming migration of domain '%s' finished", d->name);
    ferry_fault_point("dest-finish");
    return d;

fail:
    if (vm)
        h->vm_unref(vm);
    domain_obj_unref(obj);
    incoming_discard(e, job, err->message);
    g_propagate_prefixed_error(error, g_steal_pointer(&err),
                               "incoming migration of domain '%s' failed: ", dname);
    return NULL;
}

static gpointer client_gone_thread(gpointer data)
{
    JobThread *t = data;
    /* A finish that already took charge decides alone. */
    if (migration_job_claim(t->job))
        incoming_discard(t->engine, t->job, "the client that drove the migration disconnected");
    job_thread_end(t);
    return NULL;
}

void migration_dest_client_closed(MigrationEngine *e, guint64 client_id)
{
    g_autoptr(GPtrArray) jobs = g_ptr_array_new_with_free_func((GDestroyNotify)migration_job_unref);
    g_mutex_lock(&e->lock);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, e->incoming);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        MigrationJob *job = value;
        if (job->client_id == client_id)
            g_ptr_array_add(jobs, migration_job_ref(job));
    }
    g_mutex_unlock(&e->lock);
    for (guint i = 0; i < jobs->len; i++) {
        JobThread *t = job_thread_new(e, jobs->pdata[i]);
        g_autoptr(GError) te = NULL;
        if (!migration_thread_start(e, "incoming-client-gone", client_gone_thread, t, &te)) {
            /* The watchdog drops it, later. */
            FERRY_WARN("%s", te->message);
            migration_job_unref(t->job);
            g_free(t);
        }
    }
}

void migration_dest_shutdown(MigrationEngine *e)
{
    g_mutex_lock(&e->lock);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, e->incoming);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        MigrationJob *job = value;
        g_mutex_lock(&job->lock);
        g_cond_broadcast(&job->cond);
        g_mutex_unlock(&job->lock);
        migration_job_cut_channel(job, NULL);
    }
    g_mutex_unlock(&e->lock);
}

/* ---- the steps post-copy's finish shares (migration-postcopy.c) ---- */

gboolean migration_dest_reveal(MigrationEngine *e, DomainObj *obj, gpointer vm, const char *pxml,
                               guint flags, int running_reason, int resumed_detail,
                               GError **error)
{
    return finish_reveal(e, obj, vm, pxml, flags, running_reason, resumed_detail, error);
}

void migration_dest_discard(MigrationEngine *e, MigrationJob *job, const char *why)
{
    incoming_discard(e, job, why);
}

void migration_dest_end_record(MigrationJob *job, const char *outcome, const char *why)
{
    incoming_end_record(job, outcome, why);
}

void migration_dest_forget(MigrationEngine *e, MigrationJob *job)
{
    incoming_forget(e, job);
}

gboolean migration_dest_listen(MigrationEngine *e, MigrationJob *job, GPtrArray *params,
                               guint flags, int *vmm_fd, char **uri_out, GError **error)
{
    return incoming_listen(e, job, params, flags, vmm_fd, uri_out, error);
}

/* ---- tunnelled: a channel beside the main stream (a disk, more memory) ---- */

/* The incoming migration of domain name (a reference) if token is its
 * token; NULL otherwise. */
static MigrationJob *incoming_with_token(MigrationEngine *e, const char *name, const char *token,
                                         GError **error)
{
    g_mutex_lock(&e->lock);
    MigrationJob *found = name ? g_hash_table_lookup(e->incoming, name) : NULL;
    g_autoptr(MigrationJob) job = found ? migration_job_ref(found) : NULL;
    g_mutex_unlock(&e->lock);
    /* Constant time: the comparison does not tell how much was right. */
    gsize len = job && job->token && token && strlen(token) == strlen(job->token) ? strlen(token) : 0;
    guint8 diff = len ? 0 : 1;
    for (gsize i = 0; i < len; i++)
        diff |= (guint8)(token[i] ^ job->token[i]);
    if (diff) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_DENIED,
                    "no incoming migration of domain '%s' with that token",
                    name ? name : "(unnamed)");
        return NULL;
    }
    return g_steal_pointer(&job);
}

gboolean migration_dest_open_stream(MigrationEngine *e, const char *name, const char *token,
                                    guint index, TunnelBinding *binding, GError **error)
{
    g_autoptr(MigrationJob) job = incoming_with_token(e, name, token, error);
    if (!job)
        return FALSE;
    TunnelStreamConfig cfg;
    g_mutex_lock(&job->lock);
    gboolean memory = migration_parallel_is_memory_channel(job, index);
    int fd = memory ? migration_parallel_dest_take_fd(job, index)
                    : migration_storage_dest_take_fd(job->storage, index, &cfg);
    if (memory) {
        cfg = job->memory_stream;
        cfg.vmm_name = migration_parallel_vmm_name(FALSE, index - job->memory_first + 1);
    }
    g_mutex_unlock(&job->lock);
    if (fd < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "the incoming migration of domain '%s' has no channel %u to open", name,
                    index);
        return FALSE;
    }
    g_autoptr(TunnelChannel) ch = tunnel_channel_open_stream(binding, fd, &cfg);
    migration_job_add_channel(job, index, ch);
    return TRUE;
}
