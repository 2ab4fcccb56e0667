/* Migration hooks for a VMM that speaks QEMU's QMP migration commands
 * (getfd, migrate fd:NAME, migrate-incoming, query-migrate, migrate_cancel,
 * stop, cont): ferry-vmm and QEMU. The hooks' vm is a VmmProcess. ferry-vmm
 * adds a digest of the guest memory it verified to query-migrate. */
#include "driver/qmp-migration.h"

#include <string.h>
#include <unistd.h>

#include "driver/migration-params.h"
#include "driver/vmm-process.h"
#include "util/error.h"

#define QMP_FD_TIMEOUT_MS 10000

static void qmp_hook_vm_unref(gpointer vm)
{
    vmm_process_unref(vm);
}

static gboolean run(VmmProcess *vm, const char *command, JsonObject *args, GError **error)
{
    g_autoptr(JsonNode) r = vmm_process_qmp(vm, command, args, error);
    return r != NULL;
}

static gboolean qmp_hook_stop(gpointer vm, GError **error)
{
    return run(vm, "stop", NULL, error);
}

static gboolean qmp_hook_resume(gpointer vm, GError **error)
{
    return run(vm, "cont", NULL, error);
}

static int qmp_hook_is_running(gpointer vm)
{
    g_autofree char *status = vmm_process_query_status(vm, NULL);
    return status ? g_str_equal(status, "running") : -1;
}

/* ferry-vmm has no disks: it never reports io-error, and the same query
 * answers for both. */
static gboolean qmp_hook_paused_on_io_error(gpointer vm)
{
    g_autofree char *status = vmm_process_query_status(vm, NULL);
    return status && g_str_equal(status, "io-error");
}

static guint64 json_u64(JsonObject *o, const char *member)
{
    if (!o || !json_object_has_member(o, member))
        return 0;
    JsonNode *n = json_object_get_member(o, member);
    if (json_node_get_value_type(n) == G_TYPE_DOUBLE)
        return (guint64)json_node_get_double(n);
    gint64 v = json_node_get_int(n);
    return v < 0 ? 0 : (guint64)v;
}

static const char *json_str(JsonObject *o, const char *member)
{
    if (!o || !json_object_has_member(o, member))
        return NULL;
    return json_object_get_string_member(o, member);
}

static MigrationVmmStatus status_of(const char *st)
{
    static const struct {
        const char *name;
        MigrationVmmStatus status;
    } map[] = {{"setup", MIGRATION_VMM_SETUP},         {"active", MIGRATION_VMM_ACTIVE},
               {"cancelling", MIGRATION_VMM_CANCELLING}, {"completed", MIGRATION_VMM_COMPLETED},
               {"failed", MIGRATION_VMM_FAILED},       {"cancelled", MIGRATION_VMM_CANCELLED},
               {"postcopy-active", MIGRATION_VMM_POSTCOPY_ACTIVE},
               {"postcopy-paused", MIGRATION_VMM_POSTCOPY_PAUSED},
               {"postcopy-recover", MIGRATION_VMM_POSTCOPY_RECOVER}};
    for (guint i = 0; st && i < G_N_ELEMENTS(map); i++)
        if (g_str_equal(st, map[i].name))
            return map[i].status;
    return MIGRATION_VMM_NONE;
}

/* query-migrate's answer as the engine reads it. */
static void progress_of(JsonObject *qm, MigrationVmmProgress *p)
{
    const char *st = json_str(qm, "status");
    p->status = status_of(st);
    p->error = g_strdup(json_str(qm, "error-desc"));
    JsonObject *ferry = json_object_has_member(qm, "ferry")
                            ? json_object_get_object_member(qm, "ferry")
                            : NULL;
    p->digest = g_strdup(json_str(ferry, "digest"));
    JsonObject *ram = json_object_has_member(qm, "ram") ? json_object_get_object_member(qm, "ram")
                                                       : NULL;
    DriverJobInfo *i = &p->counters;
    if (ram) {
        i->memory_total = json_u64(ram, "total");
        i->memory_processed = json_u64(ram, "transferred");
        i->memory_remaining = json_u64(ram, "remaining");
        /* mbps is a fractional Mbit/s: read it as a double, not via json_u64. */
        i->memory_bps = json_object_has_member(ram, "mbps")
                            ? (guint64)(json_object_get_double_member(ram, "mbps") * 1e6 / 8)
                            : 0;
        i->memory_dirty_rate = json_u64(ram, "dirty-pages-rate");
        i->memory_iteration = json_u64(ram, "dirty-sync-count");
        i->memory_page_size = json_u64(ram, "page-size");
        /* Until pre-copy runs, everything is still to send (virsh would show 100%). */
        if (p->status == MIGRATION_VMM_SETUP ||
            (i->memory_processed == 0 && i->memory_remaining == 0))
            i->memory_remaining = i->memory_total;
        i->data_total = i->memory_total;
        i->data_processed = i->memory_processed;
        i->data_remaining = i->memory_remaining;
        if (p->status >= MIGRATION_VMM_POSTCOPY_ACTIVE || json_u64(ram, "postcopy-requests")) {
            i->has_postcopy = TRUE;
            i->memory_postcopy_requests = json_u64(ram, "postcopy-requests");
        }
    }
    JsonObject *xb = json_object_has_member(qm, "xbzrle-cache")
                         ? json_object_get_object_member(qm, "xbzrle-cache")
                         : NULL;
    if (xb) {
        i->has_compression = TRUE;
        i->compression_cache = json_u64(xb, "cache-size");
        i->compression_bytes = json_u64(xb, "bytes");
        i->compression_pages = json_u64(xb, "pages");
        i->compression_cache_misses = json_u64(xb, "cache-miss");
        i->compression_overflow = json_u64(xb, "overflow");
    }
    if (json_object_has_member(qm, "cpu-throttle-percentage")) {
        i->has_throttle = TRUE;
        i->auto_converge_throttle = (int)json_u64(qm, "cpu-throttle-percentage");
    }
    i->setup_time_ms = json_u64(qm, "setup-time");
    if (json_object_has_member(qm, "downtime")) {
        i->downtime_ms = json_u64(qm, "downtime");
        i->has_downtime = TRUE;
    }
}

static gboolean qmp_hook_progress(gpointer vm, MigrationVmmProgress *out, GError **error)
{
    g_autoptr(JsonNode) r = vmm_process_qmp(vm, "query-migrate", NULL, error);
    JsonObject *qm = r ? json_node_get_object(r) : NULL;
    if (!qm) {
        if (r)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "the VMM answered query-migrate without an object");
        return FALSE;
    }
    progress_of(qm, out);
    return TRUE;
}

/* Polled (ferry-vmm has no MIGRATION event; QEMU's would arrive on the
 * monitor thread): until the state settles. */
static gboolean qmp_hook_wait_end(gpointer vm, int timeout_ms, MigrationVmmProgress *out,
                                  GError **error)
{
    gint64 deadline = g_get_monotonic_time() + timeout_ms * 1000LL;
    for (;;) {
        migration_vmm_progress_clear(out);
        memset(out, 0, sizeof(*out));
        if (!qmp_hook_progress(vm, out, error))
            return FALSE;
        /* post-copy paused is settled too: it waits for a recovery */
        if ((out->status != MIGRATION_VMM_SETUP && out->status != MIGRATION_VMM_ACTIVE &&
             out->status != MIGRATION_VMM_CANCELLING &&
             out->status != MIGRATION_VMM_POSTCOPY_ACTIVE &&
             out->status != MIGRATION_VMM_POSTCOPY_RECOVER) ||
            g_get_monotonic_time() >= deadline)
            return TRUE;
        g_usleep(20 * 1000);
    }
}

/* Hands the VMM its end of the socket pair as fd NAME; the fd is closed here. */
static gboolean pass_fd(VmmProcess *vm, const char *name, int fd, GError **error)
{
    gboolean ok = qmp_client_pass_fd(vmm_process_get_qmp(vm), name, fd, QMP_FD_TIMEOUT_MS, error);
    close(fd);
    return ok;
}

static void close_extra(const MigrationEndpoint *ep, guint from)
{
    for (guint i = from; i + 1 < ep->n_connections; i++)
        if (ep->extra_fds[i] >= 0)
            close(ep->extra_fds[i]);
}

/* ferry-vmm's extra connections (its `ferry-channels`): each fd passed as
 * PREFIX-N; every extra fd is closed here, on every path. NULL when there
 * are none. */
static JsonArray *pass_extra(VmmProcess *vm, const MigrationEndpoint *ep, const char *prefix,
                             GError **error)
{
    if (ep->n_connections < 2)
        return NULL;
    JsonArray *names = json_array_new();
    for (guint i = 0; i + 1 < ep->n_connections; i++) {
        g_autofree char *name = g_strdup_printf("%s-%u", prefix, i + 1);
        if (!pass_fd(vm, name, ep->extra_fds[i], error)) {
            close_extra(ep, i + 1);
            json_array_unref(names);
            return NULL;
        }
        g_autofree char *uri = g_strdup_printf("fd:%s", name);
        json_array_add_string_element(names, uri);
    }
    return names;
}

static gboolean qmp_hook_start_outgoing(gpointer vm, const MigrationEndpoint *ep, GError **error)
{
    if (!pass_fd(vm, "migrate", ep->fd, error)) {
        close_extra(ep, 0);
        return FALSE;
    }
    g_autoptr(GError) local = NULL;
    JsonArray *channels = pass_extra(vm, ep, "migrate", &local);
    if (local) {
        g_propagate_error(error, g_steal_pointer(&local));
        return FALSE;
    }
    /* The channel enforces the bandwidth; the VMM sends as fast as it can. */
    JsonObject *params = json_object_new();
    json_object_set_int_member(params, "max-bandwidth", 0);
    gboolean ok = run(vm, "migrate-set-parameters", params, error);
    json_object_unref(params);
    if (!ok) {
        if (channels)
            json_array_unref(channels);
        return FALSE;
    }
    JsonObject *args = json_object_new();
    json_object_set_string_member(args, "uri", "fd:migrate");
    if (channels)
        json_object_set_array_member(args, "ferry-channels", channels);
    ok = run(vm, "migrate", args, error);
    json_object_unref(args);
    return ok;
}

static void add_capability(JsonArray *caps, const char *name, gboolean state)
{
    JsonObject *c = json_object_new();
    json_object_set_string_member(c, "capability", name);
    json_object_set_boolean_member(c, "state", state);
    json_array_add_object_element(caps, c);
}

/* QEMU's multifd, on or off (so that a previous migration's choice does not
 * linger), and its channels: the connections but the main one. */
static gboolean qemu_set_multifd(VmmProcess *vm, guint n_connections, GError **error)
{
    JsonArray *caps = json_array_new();
    add_capability(caps, "multifd", n_connections > 1);
    JsonObject *args = json_object_new();
    json_object_set_array_member(args, "capabilities", caps);
    gboolean ok = run(vm, "migrate-set-capabilities", args, error);
    json_object_unref(args);
    if (!ok || n_connections < 2)
        return ok;
    JsonObject *params = json_object_new();
    json_object_set_int_member(params, "multifd-channels", n_connections - 1);
    ok = run(vm, "migrate-set-parameters", params, error);
    json_object_unref(params);
    return ok;
}

/* QEMU over several connections: multifd, to the engine's socket. */
static gboolean qemu_start_outgoing(gpointer vm, const MigrationEndpoint *ep, GError **error)
{
    if (!ep->path) {
        /* Off before a single stream (fd: takes no multifd). */
        if (!qemu_set_multifd(vm, 1, error)) {
            close(ep->fd);
            close_extra(ep, 0);
            return FALSE;
        }
        return qmp_hook_start_outgoing(vm, ep, error);
    }
    JsonObject *params = json_object_new();
    json_object_set_int_member(params, "max-bandwidth", 0);
    gboolean ok = run(vm, "migrate-set-parameters", params, error);
    json_object_unref(params);
    if (!ok || !qemu_set_multifd(vm, ep->n_connections, error))
        return FALSE;
    g_autofree char *uri = g_strdup_printf("unix:%s", ep->path);
    JsonObject *args = json_object_new();
    json_object_set_string_member(args, "uri", uri);
    ok = run(vm, "migrate", args, error);
    json_object_unref(args);
    return ok;
}

/* QEMU: capabilities auto-converge and xbzrle (set before each migration,
 * both ways, so a previous migration's choice does not linger) and the
 * parameters downtime-limit, cpu-throttle-initial/increment,
 * xbzrle-cache-size. ferry-vmm: downtime-limit only. */
static gboolean tune(VmmProcess *vm, const MigrationTuning *t, gboolean starting, gboolean qemu,
                     GError **error)
{
    if (starting && qemu) {
        JsonArray *caps = json_array_new();
        add_capability(caps, "auto-converge", t->auto_converge);
        add_capability(caps, "xbzrle", t->xbzrle);
        add_capability(caps, "postcopy-ram", t->postcopy);
        JsonObject *args = json_object_new();
        json_object_set_array_member(args, "capabilities", caps);
        gboolean ok = run(vm, "migrate-set-capabilities", args, error);
        json_object_unref(args);
        if (!ok)
            return FALSE;
    }
    JsonObject *params = json_object_new();
    if (t->downtime_ms)
        json_object_set_int_member(params, "downtime-limit", (gint64)t->downtime_ms);
    if (qemu && t->throttle_initial >= 0)
        json_object_set_int_member(params, "cpu-throttle-initial", t->throttle_initial);
    if (qemu && t->throttle_increment >= 0)
        json_object_set_int_member(params, "cpu-throttle-increment", t->throttle_increment);
    if (qemu && t->xbzrle_cache)
        json_object_set_int_member(params, "xbzrle-cache-size", (gint64)t->xbzrle_cache);
    gboolean ok = json_object_get_size(params) == 0 ||
                  run(vm, "migrate-set-parameters", params, error);
    json_object_unref(params);
    return ok;
}

static gboolean qemu_tune(gpointer vm, const MigrationTuning *t, gboolean starting,
                          GError **error)
{
    return tune(vm, t, starting, TRUE, error);
}

static gboolean ferry_vmm_tune(gpointer vm, const MigrationTuning *t, gboolean starting,
                               GError **error)
{
    return tune(vm, t, starting, FALSE, error);
}

static gboolean qmp_hook_get_tuning(gpointer vm, MigrationTuning *out, GError **error)
{
    g_autoptr(JsonNode) r = vmm_process_qmp(vm, "query-migrate-parameters", NULL, error);
    JsonObject *o = r && JSON_NODE_HOLDS_OBJECT(r) ? json_node_get_object(r) : NULL;
    if (!o) {
        if (r)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "the VMM answered query-migrate-parameters without an object");
        return FALSE;
    }
    out->downtime_ms = json_u64(o, "downtime-limit");
    out->xbzrle_cache = json_u64(o, "xbzrle-cache-size");
    return TRUE;
}

static void qmp_hook_cancel(gpointer vm)
{
    run(vm, "migrate_cancel", NULL, NULL);
}

/* Post-copy needs its capability on the destination before the stream
 * starts (QEMU then opens the return path on the same socket). */
static gboolean enable_postcopy(VmmProcess *vm, GError **error)
{
    JsonArray *caps = json_array_new();
    add_capability(caps, "postcopy-ram", TRUE);
    JsonObject *args = json_object_new();
    json_object_set_array_member(args, "capabilities", caps);
    gboolean ok = run(vm, "migrate-set-capabilities", args, error);
    json_object_unref(args);
    return ok;
}

static gboolean qmp_hook_start_postcopy(gpointer vm, GError **error)
{
    return run(vm, "migrate-start-postcopy", NULL, error);
}

/* Out of band where the VMM can (QEMU): its main thread may be blocked. */
static gboolean run_oob(VmmProcess *vm, const char *command, JsonObject *args, GError **error)
{
    g_autoptr(JsonNode) r = vmm_process_qmp_oob(vm, command, args, error);
    return r != NULL;
}

static gboolean qmp_hook_pause_postcopy(gpointer vm, GError **error)
{
    return run_oob(vm, "migrate-pause", NULL, error);
}

static gboolean qmp_hook_resume_outgoing(gpointer vm, const MigrationEndpoint *ep, GError **error)
{
    if (!pass_fd(vm, "resume", ep->fd, error))
        return FALSE;
    JsonObject *args = json_object_new();
    json_object_set_string_member(args, "uri", "fd:resume");
    json_object_set_boolean_member(args, "resume", TRUE);
    gboolean ok = run(vm, "migrate", args, error);
    json_object_unref(args);
    return ok;
}

/* The destination's guest waits on pages the broken stream did not bring,
 * and may do so on QEMU's main thread or with its big lock (a vCPU
 * delivering an interrupt): in-band commands, getfd included, then get no
 * answer until the migration resumes. So QEMU listens at ep->path, told
 * out of band (migrate-recover runs on the monitor's thread and so does
 * the listener it opens), and the engine connects there. */
static gboolean qmp_hook_recover_incoming(gpointer vm, const MigrationEndpoint *ep, GError **error)
{
    g_autofree char *uri = g_strdup_printf("unix:%s", ep->path);
    JsonObject *args = json_object_new();
    json_object_set_string_member(args, "uri", uri);
    gboolean ok = run_oob(vm, "migrate-recover", args, error);
    json_object_unref(args);
    return ok;
}

static gboolean start_incoming(gpointer vm, const MigrationEndpoint *ep, gboolean exit_on_error,
                               GError **error)
{
    if (ep->postcopy && !enable_postcopy(vm, error)) {
        close(ep->fd);
        close_extra(ep, 0);
        return FALSE;
    }
    if (!pass_fd(vm, "incoming", ep->fd, error)) {
        close_extra(ep, 0);
        return FALSE;
    }
    g_autoptr(GError) local = NULL;
    JsonArray *channels = pass_extra(vm, ep, "incoming", &local);
    if (local) {
        g_propagate_error(error, g_steal_pointer(&local));
        return FALSE;
    }
    JsonObject *args = json_object_new();
    json_object_set_string_member(args, "uri", "fd:incoming");
    if (channels)
        json_object_set_array_member(args, "ferry-channels", channels);
    if (exit_on_error)
        json_object_set_boolean_member(args, "exit-on-error", FALSE);
    gboolean ok = run(vm, "migrate-incoming", args, error);
    json_object_unref(args);
    return ok;
}

/* ferry-vmm stays up after a failed incoming stream when asked to. */
static gboolean ferry_vmm_start_incoming(gpointer vm, const MigrationEndpoint *ep,
                                         GError **error)
{
    return start_incoming(vm, ep, TRUE, error);
}

/* QEMU 7.2's migrate-incoming has no exit-on-error: it exits after a failed
 * stream, and the engine drops the incoming instance anyway. Over several
 * connections it listens at ep->path with multifd on. */
static gboolean qemu_start_incoming(gpointer vm, const MigrationEndpoint *ep, GError **error)
{
    if (!ep->path)
        return start_incoming(vm, ep, FALSE, error);
    if ((ep->postcopy && !enable_postcopy(vm, error)) ||
        !qemu_set_multifd(vm, ep->n_connections, error))
        return FALSE;
    g_autofree char *uri = g_strdup_printf("unix:%s", ep->path);
    JsonObject *args = json_object_new();
    json_object_set_string_member(args, "uri", uri);
    gboolean ok = run(vm, "migrate-incoming", args, error);
    json_object_unref(args);
    return ok;
}

/* ---- the guest's dirty rate (the pre-flight probe) ---- */

/* The VMM's downtime limit (query-migrate-parameters, both VMMs); 300 ms,
 * their default, if it cannot say. */
static guint64 downtime_limit_ms(VmmProcess *vm)
{
    g_autoptr(JsonNode) r = vmm_process_qmp(vm, "query-migrate-parameters", NULL, NULL);
    JsonObject *o = r && JSON_NODE_HOLDS_OBJECT(r) ? json_node_get_object(r) : NULL;
    guint64 ms = json_u64(o, "downtime-limit");
    return ms ? ms : 300;
}

static guint64 dirtied_bytes(VmmProcess *vm, GError **error)
{
    g_autoptr(JsonNode) r = vmm_process_qmp(vm, "ferry-query-workload", NULL, error);
    if (!r)
        return G_MAXUINT64;
    JsonObject *o = JSON_NODE_HOLDS_OBJECT(r) ? json_node_get_object(r) : NULL;
    return json_u64(o, "dirtied-bytes");
}

/* ferry-vmm counts the bytes its workload dirtied since boot: the rate is
 * that counter's growth over the period. */
static gboolean ferry_vmm_measure_dirty_rate(gpointer vm, guint seconds, DriverDirtyRate *out,
                                             GError **error)
{
    gint64 t0 = g_get_monotonic_time();
    guint64 b0 = dirtied_bytes(vm, error);
    if (b0 == G_MAXUINT64)
        return FALSE;
    g_usleep((gulong)seconds * G_USEC_PER_SEC);
    gint64 t1 = g_get_monotonic_time();
    guint64 b1 = dirtied_bytes(vm, error);
    if (b1 == G_MAXUINT64)
        return FALSE;
    out->bytes_per_second =
        (guint64)((double)(b1 >= b0 ? b1 - b0 : 0) * G_USEC_PER_SEC / (double)MAX(t1 - t0, 1));
    out->downtime_ms = downtime_limit_ms(vm);
    out->method = g_strdup_printf("ferry-vmm's workload counter over %u s", seconds);
    return TRUE;
}

/* QEMU samples pages itself: calc-dirty-rate starts a measurement of
 * calc-time seconds, query-dirty-rate reports it (MiB/s) once "measured". */
static gboolean qemu_measure_dirty_rate(gpointer vm, guint seconds, DriverDirtyRate *out,
                                        GError **error)
{
    JsonObject *args = json_object_new();
    json_object_set_int_member(args, "calc-time", seconds);
    gboolean ok = run(vm, "calc-dirty-rate", args, error);
    json_object_unref(args);
    if (!ok)
        return FALSE;
    gint64 deadline = g_get_monotonic_time() + ((gint64)seconds + 10) * G_USEC_PER_SEC;
    g_usleep((gulong)seconds * G_USEC_PER_SEC);
    for (;;) {
        g_autoptr(JsonNode) r = vmm_process_qmp(vm, "query-dirty-rate", NULL, error);
        if (!r)
            return FALSE;
        JsonObject *o = JSON_NODE_HOLDS_OBJECT(r) ? json_node_get_object(r) : NULL;
        const char *status = json_str(o, "status");
        if (status && g_str_equal(status, "measured")) {
            out->bytes_per_second = json_u64(o, "dirty-rate") * 1024 * 1024;
            break;
        }
        if (g_get_monotonic_time() > deadline) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                        "QEMU did not finish measuring the dirty rate (status %s)",
                        status ? status : "?");
            return FALSE;
        }
        g_usleep(100 * 1000);
    }
    out->downtime_ms = downtime_limit_ms(vm);
    out->method = g_strdup_printf("QEMU's calc-dirty-rate over %u s", seconds);
    return TRUE;
}

void qmp_migration_hooks_init(MigrationHooks *hooks, QmpMigrationDialect dialect,
                              gpointer (*vm_ref)(DomainObj *obj))
{
    *hooks = (MigrationHooks){
        .endpoint = MIGRATION_ENDPOINT_FD,
        .vm_ref = vm_ref,
        .vm_unref = qmp_hook_vm_unref,
        .stop = qmp_hook_stop,
        .resume = qmp_hook_resume,
        .is_running = qmp_hook_is_running,
        .paused_on_io_error = qmp_hook_paused_on_io_error,
        .progress = qmp_hook_progress,
        .wait_end = qmp_hook_wait_end,
        .start_outgoing = dialect == QMP_MIGRATION_QEMU ? qemu_start_outgoing
                                                        : qmp_hook_start_outgoing,
        .cancel = qmp_hook_cancel,
        .start_incoming = dialect == QMP_MIGRATION_QEMU ? qemu_start_incoming
                                                        : ferry_vmm_start_incoming,
        .vmm_name = dialect == QMP_MIGRATION_QEMU ? "QEMU" : "ferry-vmm",
        /* ferry-vmm's own protocol over several connections (fds); QEMU's
         * multifd (to an address) */
        .max_connections = MIGRATION_MAX_CONNECTIONS,
        .parallel_by_address = dialect == QMP_MIGRATION_QEMU,
        .tunable_flags = dialect == QMP_MIGRATION_QEMU
                             ? (MIGRATION_AUTO_CONVERGE | MIGRATION_COMPRESSED | MIGRATION_POSTCOPY)
                             : 0,
        .tune = dialect == QMP_MIGRATION_QEMU ? qemu_tune : ferry_vmm_tune,
        .get_tuning = qmp_hook_get_tuning,
        .start_postcopy = dialect == QMP_MIGRATION_QEMU ? qmp_hook_start_postcopy : NULL,
        .resume_outgoing = dialect == QMP_MIGRATION_QEMU ? qmp_hook_resume_outgoing : NULL,
        .pause_postcopy = dialect == QMP_MIGRATION_QEMU ? qmp_hook_pause_postcopy : NULL,
        .recover_incoming = dialect == QMP_MIGRATION_QEMU ? qmp_hook_recover_incoming : NULL,
        .measure_dirty_rate = dialect == QMP_MIGRATION_QEMU ? qemu_measure_dirty_rate
                                                            : ferry_vmm_measure_dirty_rate,
    };
}
