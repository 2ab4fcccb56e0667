/* Post-copy migration (virsh migrate --postcopy, migrate-postcopy,
 * --postcopy-after-precopy): the switch a user asks for, what each side does
 * once the guest runs on the destination while its memory still moves (the
 * VMM's return path rides the same channel, both ways), and the migration
 * iteration event that --postcopy-after-precopy waits for.
 *
 * From the switch on, neither side alone has the whole VM: the source keeps
 * the pages not yet sent, the destination runs the guest. So nothing is
 * undone on failure: the source keeps its copy paused (post-copy failed),
 * the destination keeps its guest (running, post-copy failed: QEMU stalls
 * the vCPUs that touch a missing page), and the migration may be resumed
 * (docs/migration.md). */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "driver/driver-params.h"
#include "driver/migration-private.h"
#include "rpc/rpc-socket.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "migration.postcopy"

/* libvirt's virDomainEventSuspendedDetailType / ResumedDetailType values */
#define EVENT_SUSPENDED_POSTCOPY 7
#define EVENT_SUSPENDED_POSTCOPY_FAILED 8
#define EVENT_RESUMED_POSTCOPY 3
#define EVENT_RESUMED_POSTCOPY_FAILED 4

#define POLL_MS 200
/* How long the destination waits for its VMM to enter post-copy once the
 * source says it switched (the switch is in the stream, right behind the
 * bytes already in flight). */
#define SWITCH_WAIT_S 30
#define VMM_END_WAIT_MS 10000

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MigrationVmmProgress, migration_vmm_progress_clear)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MigrationCookie, migration_cookie_clear)

/* ---- the user's switch: virsh migrate-postcopy, migrateStartPostCopy ---- */

gboolean migration_postcopy_start(Driver *drv, const DriverDomain *dom, guint flags,
                                  GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e)
        return FALSE;
    if (flags) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migrate-postcopy flags 0x%x are not supported", flags);
        return FALSE;
    }
    DomainObj *obj = hv_lookup(e->hv, dom, error);
    if (!obj)
        return FALSE;
    MigrationJob *job = obj->job;
    gboolean ok = FALSE;
    /* libvirt's words for each refusal */
    if (!job || job->operation != DRIVER_JOB_OPERATION_MIGRATION_OUT) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "post-copy can only be started while outgoing migration is in progress");
    } else {
        g_mutex_lock(&job->lock);
        if (!job->postcopy_allowed)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                        "switching to post-copy requires migration to be started with "
                        "VIR_MIGRATE_POSTCOPY flag");
        else if (job->postcopy || job->postcopy_requested)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                        "post-copy already started");
        else
            ok = job->postcopy_requested = TRUE;
        g_cond_broadcast(&job->cond);
        g_mutex_unlock(&job->lock);
        if (ok)
            flight_recorder_event(job->recorder, "postcopy", "what", "switch requested", NULL);
    }
    domain_obj_end(obj);
    if (ok)
        FERRY_INFO("domain '%s': switching its migration to post-copy", dom->name);
    return ok;
}

/* ---- the user's pause: virsh domjobabort --postcopy ---- */

gboolean migration_postcopy_pause(MigrationEngine *e, const DriverDomain *dom, GError **error)
{
    DomainObj *obj = hv_lookup(e->hv, dom, error);
    if (!obj)
        return FALSE;
    MigrationJob *job = obj->job;
    gboolean postcopy = FALSE;
    if (job && job->operation == DRIVER_JOB_OPERATION_MIGRATION_OUT) {
        g_mutex_lock(&job->lock);
        postcopy = job->postcopy;
        g_mutex_unlock(&job->lock);
    }
    if (!postcopy || !e->hooks->pause_postcopy) {
        /* libvirt's words */
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "current job is not outgoing migration in post-copy mode");
        domain_obj_end(obj);
        return FALSE;
    }
    gpointer vm = e->hooks->vm_ref(obj);
    /* Marked first: the perform thread may see the VMM paused at once. */
    g_mutex_lock(&job->lock);
    job->postcopy_paused = TRUE;
    g_mutex_unlock(&job->lock);
    gboolean ok = vm && e->hooks->pause_postcopy(vm, error);
    if (!vm)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "source VMM: not reachable");
    if (vm)
        e->hooks->vm_unref(vm);
    if (ok) {
        flight_recorder_event(job->recorder, "postcopy", "what",
                              "a client paused the post-copy migration", NULL);
        FERRY_INFO("domain '%s': a client paused its post-copy migration",
                   domain_obj_get_name(obj));
    } else {
        g_mutex_lock(&job->lock);
        job->postcopy_paused = FALSE;
        g_mutex_unlock(&job->lock);
        g_prefix_error(error, "source VMM: cannot pause the post-copy migration: ");
    }
    domain_obj_end(obj);
    return ok;
}

/* ---- source ---- */

static void emit_on_instance(MigrationEngine *e, const char *instance_id, int event, int detail)
{
    DomainObj *obj = domain_list_lookup_by_instance(e->hv->list, instance_id, NULL);
    if (!obj)
        return;
    hv_emit(e->hv, obj, event, detail);
    domain_obj_end(obj);
}

gboolean migration_postcopy_source_poll(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                        const char *instance_id,
                                        const MigrationVmmProgress *p,
                                        MigrationPostcopySource *pc, GError **error)
{
    /* What --postcopy-after-precopy waits for: libvirt's MIGRATION_ITERATION
     * with QEMU's pass number, which a finished first pass makes 2. */
    if (p->counters.memory_iteration > pc->last_iteration) {
        pc->last_iteration = p->counters.memory_iteration;
        emit_on_instance(e, instance_id, DRIVER_EVENT_MIGRATION_ITERATION,
                         (int)MIN(pc->last_iteration, (guint64)G_MAXINT));
    }
    g_mutex_lock(&job->lock);
    /* QEMU takes the switch once pre-copy runs (not in setup) */
    gboolean ask = job->postcopy_requested && !pc->switch_sent &&
                   p->status == MIGRATION_VMM_ACTIVE;
    g_mutex_unlock(&job->lock);
    if (ask) {
        pc->switch_sent = TRUE;
        if (!e->hooks->start_postcopy(vm, error)) {
            g_prefix_error(error, "source VMM: cannot switch to post-copy: ");
            return FALSE;
        }
    }
    return TRUE;
}

void migration_postcopy_source_switched(MigrationEngine *e, MigrationJob *job,
                                        const char *instance_id)
{
    g_mutex_lock(&job->lock);
    job->postcopy = TRUE;
    job->finishing = TRUE;
    g_mutex_unlock(&job->lock);
    flight_recorder_event(job->recorder, "postcopy", "what",
                          "the source VMM switched to post-copy: the guest moves to the "
                          "destination, its memory follows",
                          NULL);
    DomainObj *obj = domain_list_lookup_by_instance(e->hv->list, instance_id, NULL);
    if (!obj)
        return;
    if (domain_obj_is_active(obj)) {
        domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_POSTCOPY);
        hv_emit(e->hv, obj, HV_EVENT_SUSPENDED, EVENT_SUSPENDED_POSTCOPY);
        domain_store_save_state(e->hv->store, obj, NULL);
    }
    FERRY_INFO("migration of domain '%s' switched to post-copy", domain_obj_get_name(obj));
    domain_obj_end(obj);
}

/* Whether the post-copy migration stopped because a client paused it (TRUE,
 * with that as the error). */
static gboolean paused_by_client(MigrationJob *job, GError **error)
{
    g_mutex_lock(&job->lock);
    gboolean paused = job->postcopy_paused;
    g_mutex_unlock(&job->lock);
    if (paused)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "a client paused the post-copy migration (domjobabort --postcopy)");
    return paused;
}

gboolean migration_postcopy_source_wait(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                        MigrationVmmProgress *end, GError **error)
{
    const MigrationHooks *h = e->hooks;
    guint stall_s = tunnel_data_settings_get_stall_timeout(e->data_settings);
    /* --postcopy-bandwidth: the channel's limit once the guest runs there.
     * Not at the switch itself: the destination VMM loads the device state
     * then, faulting on pages that queue behind what the channel holds, and
     * answers its monitor only once they came. */
    g_mutex_lock(&job->lock);
    guint64 bandwidth = job->postcopy_bandwidth;
    g_mutex_unlock(&job->lock);
    if (bandwidth != G_MAXUINT64)
        migration_job_set_bandwidth(job, bandwidth);
    for (;;) {
        g_autoptr(GError) ce = NULL;
        /* The channel's end, its own failure (a stall included) told from
         * the turn's deadline. */
        MigrationWait w = migration_job_wait_turn(job, g_get_monotonic_time() + POLL_MS * 1000,
                                                  MIGRATION_WAIT_CHANNEL, stall_s, &ce);
        g_auto(MigrationVmmProgress) p = {0};
        if (h->progress(vm, &p, NULL))
            migration_job_update(job, &p.counters);
        if (w == MIGRATION_WAIT_DONE)
            break;
        if (w == MIGRATION_WAIT_FAILED) {
            if (!paused_by_client(job, error))
                g_propagate_error(error, g_steal_pointer(&ce));
            return FALSE;
        }
        /* destroy: the only abort post-copy takes */
        GError *aborted = migration_job_abort_error(job);
        if (aborted) {
            g_propagate_error(error, aborted);
            return FALSE;
        }
        if (p.status == MIGRATION_VMM_FAILED || p.status == MIGRATION_VMM_CANCELLED ||
            p.status == MIGRATION_VMM_POSTCOPY_PAUSED) {
            if (paused_by_client(job, error))
                return FALSE;
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "source VMM: %s",
                        p.error ? p.error
                        : p.status == MIGRATION_VMM_POSTCOPY_PAUSED
                            ? "post-copy paused: its stream broke"
                            : "failed");
            return FALSE;
        }
    }
    flight_recorder_event(job->recorder, "handshake", "what",
                          "the post-copy stream ended: the destination confirmed all data", NULL);
    if (!h->wait_end(vm, VMM_END_WAIT_MS, end, error)) {
        g_prefix_error(error, "source VMM: ");
        return FALSE;
    }
    migration_job_update(job, &end->counters);
    if (end->status != MIGRATION_VMM_COMPLETED) {
        if (paused_by_client(job, error))
            return FALSE;
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "source VMM: the post-copy migration did not complete (%s)",
                    end->error ? end->error : "no status");
        return FALSE;
    }
    return TRUE;
}

gboolean migration_postcopy_source_check_resume_locked(DomainObj *obj, GError **error)
{
    int reason = 0;
    if (domain_obj_get_state(obj, &reason) != DOMAIN_STATE_PAUSED ||
        reason != DOMAIN_PAUSED_POSTCOPY_FAILED) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "post-copy migration of domain %s has not failed", domain_obj_get_name(obj));
        return FALSE;
    }
    return TRUE;
}

void migration_postcopy_source_resuming_locked(MigrationEngine *e, DomainObj *obj,
                                               MigrationJob *job)
{
    job->postcopy_allowed = job->postcopy = job->finishing = TRUE;
    flight_recorder_event(job->recorder, "postcopy", "what", "resuming a failed post-copy migration",
                          NULL);
    domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_POSTCOPY);
    domain_store_save_state(e->hv->store, obj, NULL);
}

gboolean migration_postcopy_source_can_resume(MigrationEngine *e, gpointer vm, GError **error)
{
    g_auto(MigrationVmmProgress) p = {0};
    if (!e->hooks->resume_outgoing) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration flag POSTCOPY_RESUME is not supported by %s", e->hooks->vmm_name);
        return FALSE;
    }
    if (!e->hooks->progress(vm, &p, error)) {
        g_prefix_error(error, "source VMM: ");
        return FALSE;
    }
    if (p.status != MIGRATION_VMM_POSTCOPY_PAUSED) {
        /* libvirt's words */
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "QEMU reports migration is still running (source VMM: not post-copy paused)");
        return FALSE;
    }
    return TRUE;
}

void migration_postcopy_source_failed_locked(MigrationEngine *e, DomainObj *obj,
                                             const GError *why)
{
    if (!domain_obj_is_active(obj))
        return;
    FERRY_WARN("domain '%s' stays paused here, post-copy failed: %s", domain_obj_get_name(obj),
               why ? why->message : "?");
    domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_POSTCOPY_FAILED);
    hv_emit(e->hv, obj, HV_EVENT_SUSPENDED, EVENT_SUSPENDED_POSTCOPY_FAILED);
    domain_store_save_state(e->hv->store, obj, NULL);
}

/* ---- destination ---- */

typedef struct {
    MigrationEngine *engine;
    MigrationJob *job;
} Completion;

/* The stream ended (clean) or broke (err): the migration completes, or the
 * guest stays here waiting for its memory. */
static void dest_settle(MigrationEngine *e, MigrationJob *job, gboolean clean, GError *err)
{
    const MigrationHooks *h = e->hooks;
    DomainObj *obj = domain_list_lookup_by_instance(e->hv->list, job->instance_id, NULL);
    if (!obj) {
        migration_dest_end_record(job, "failed", "the destination VM is gone");
        migration_dest_forget(e, job);
        return;
    }
    gpointer vm = h->vm_ref(obj);
    domain_obj_unlock(obj);
    g_auto(MigrationVmmProgress) end = {0};
    g_autoptr(GError) why = err ? g_error_copy(err) : NULL;
    if (clean && !vm) {
        g_set_error(&why, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "the destination VM is gone");
        clean = FALSE;
    } else if (clean && !h->wait_end(vm, VMM_END_WAIT_MS, &end, &why)) {
        clean = FALSE;
    } else if (clean && end.status != MIGRATION_VMM_COMPLETED) {
        g_set_error(&why, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "destination VMM: the post-copy migration did not complete (%s)",
                    end.error ? end.error : "no status");
        clean = FALSE;
    }
    if (vm)
        h->vm_unref(vm);
    domain_obj_lock(obj);
    if (obj->job == job)
        g_clear_pointer(&obj->job, migration_job_unref);
    gboolean running = domain_obj_is_active(obj) &&
                       domain_obj_get_state(obj, NULL) == DOMAIN_STATE_RUNNING;
    if (clean) {
        migration_job_update(job, &end.counters);
        migration_dest_end_record(job, "completed", NULL);
        migration_save_completed(e, domain_obj_get_uuid(obj), job, DRIVER_JOB_COMPLETED, NULL,
                                 end.digest);
        if (running) {
            /* libvirt's last event of a post-copy migration */
            domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_MIGRATED);
            hv_emit(e->hv, obj, HV_EVENT_RESUMED, HV_RESUMED_MIGRATED);
        }
        FERRY_INFO("incoming post-copy migration of domain '%s' completed", job->name);
    } else {
        const char *cause = why ? why->message : "?";
        FERRY_WARN("incoming post-copy migration of domain '%s' failed: %s; the guest stays "
                   "here waiting for its memory",
                   job->name, cause);
        migration_dest_end_record(job, "failed", cause);
        g_autoptr(GError) failed = g_error_new(
            FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
            "post-copy failed: %s; the guest stays here without all of its memory", cause);
        migration_save_completed(e, domain_obj_get_uuid(obj), job, DRIVER_JOB_FAILED, failed,
                                 NULL);
        if (running) {
            domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_POSTCOPY_FAILED);
            hv_emit(e->hv, obj, HV_EVENT_RESUMED, EVENT_RESUMED_POSTCOPY_FAILED);
        }
    }
    domain_store_save_state(e->hv->store, obj, NULL);
    domain_obj_end(obj);
    migration_dest_forget(e, job);
}

/* The guest runs here already: waits for the rest of its memory. */
static gpointer dest_complete_thread(gpointer data)
{
    Completion *c = data;
    MigrationEngine *e = c->engine;
    MigrationJob *job = c->job;
    guint stall_s = tunnel_data_settings_get_stall_timeout(e->data_settings);
    g_autoptr(GError) err = NULL;
    for (;;) {
        g_clear_error(&err);
        /* The turn tells the channel's own failure from its deadline: a
         * stall ends the channel with a timeout of its own, which must
         * settle the migration, not look like another turn. */
        MigrationWait w = migration_job_wait_turn(job, g_get_monotonic_time() + POLL_MS * 1000,
                                                  MIGRATION_WAIT_CHANNEL, stall_s, &err);
        if (w != MIGRATION_WAIT_AGAIN) {
            dest_settle(e, job, w == MIGRATION_WAIT_DONE, err);
            break;
        }
        if (g_atomic_int_get(&e->stopping))
            break; /* the VM stays; a restarted daemon finds it running */
        /* A dead path or a source gone ends the channel here, which pauses
         * the VMM's post-copy: the guest stays, ready for a resume. */
        g_mutex_lock(&job->lock);
        gboolean gone = job->source && tunnel_peer_watch_gone(job->source);
        g_mutex_unlock(&job->lock);
        if (gone) {
            g_autoptr(GError) why = g_error_new_literal(
                FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "the connection from the source ferryd closed");
            migration_job_cut_channel(job, why);
        }
    }
    migration_job_unref(c->job);
    g_free(c);
    migration_thread_done(e);
    return NULL;
}

/* Until the VMM is in post-copy (or already done); FALSE with why not. */
static gboolean wait_switch(MigrationEngine *e, MigrationJob *job, gpointer vm, GError **error)
{
    gint64 deadline = g_get_monotonic_time() + SWITCH_WAIT_S * G_USEC_PER_SEC;
    for (;;) {
        g_auto(MigrationVmmProgress) p = {0};
        g_autoptr(GError) qe = NULL;
        /* A VMM loading the device state may fault on pages still on their
         * way and answer late: only the deadline below gives up on it. */
        if (!e->hooks->progress(vm, &p, &qe) &&
            !(g_error_matches(qe, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT) &&
              g_get_monotonic_time() < deadline)) {
            g_propagate_prefixed_error(error, g_steal_pointer(&qe), "destination VMM: ");
            return FALSE;
        }
        if (p.status == MIGRATION_VMM_POSTCOPY_ACTIVE || p.status == MIGRATION_VMM_COMPLETED)
            return TRUE;
        if (p.status == MIGRATION_VMM_FAILED || p.status == MIGRATION_VMM_CANCELLED ||
            p.status == MIGRATION_VMM_POSTCOPY_PAUSED) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "destination VMM: %s before it ran the guest",
                        p.error ? p.error : "the migration failed");
            return FALSE;
        }
        g_autoptr(GError) ce = NULL;
        if (!migration_job_wait_channel(job, g_get_monotonic_time() + 50 * 1000, &ce) &&
            !g_error_matches(ce, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT)) {
            g_propagate_prefixed_error(error, g_steal_pointer(&ce),
                                       "the stream broke before the switch to post-copy: ");
            return FALSE;
        }
        if (g_get_monotonic_time() > deadline) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                        "destination VMM: not in post-copy %d s after the source switched",
                        SWITCH_WAIT_S);
            return FALSE;
        }
    }
}

DriverDomain *migration_postcopy_dest_finish(MigrationEngine *e, MigrationJob *job,
                                             const char *dname, const char *pxml, guint flags,
                                             GBytes **cookie_out, GError **error)
{
    const MigrationHooks *h = e->hooks;
    g_autoptr(GError) err = NULL;
    gpointer vm = NULL;
    DriverDomain *d = NULL;
    MigrationCookieContent c = {0};
    Completion *comp = NULL;
    DomainObj *obj = domain_list_lookup_by_instance(e->hv->list, job->instance_id, &err);
    if (!obj)
        goto fail;
    if (!domain_obj_is_hidden(obj)) {
        /* A resumed migration: the guest ran here all along; the completion
         * thread prepare started settles it. */
        d = g_new0(DriverDomain, 1);
        d->name = g_strdup(domain_obj_get_name(obj));
        memcpy(d->uuid, domain_obj_get_uuid(obj), 16);
        d->id = obj->id;
        c = (MigrationCookieContent){.name = d->name, .uuid = d->uuid,
                                     .daemon_id = e->daemon_id, .postcopy = TRUE};
        *cookie_out = migration_cookie_format(&c);
        flight_recorder_phase(job->recorder, "finish", FALSE);
        domain_obj_end(obj);
        return d;
    }
    vm = h->vm_ref(obj);
    domain_obj_unlock(obj);
    if (!vm) {
        g_set_error(&err, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "destination VMM: not reachable");
        goto fail;
    }
    if (!wait_switch(e, job, vm, &err))
        goto fail;
    domain_obj_lock(obj);
    if (!migration_dest_reveal(e, obj, vm, pxml, flags, DOMAIN_RUNNING_POSTCOPY,
                               EVENT_RESUMED_POSTCOPY, &err)) {
        domain_obj_unlock(obj);
        goto fail;
    }
    /* From here the guest runs here: nothing may drop it. */
    g_mutex_lock(&job->lock);
    job->postcopy = TRUE;
    g_mutex_unlock(&job->lock);
    flight_recorder_event(job->recorder, "postcopy", "what",
                          "the guest runs on the destination; its memory follows", NULL);
    flight_recorder_phase(job->recorder, "finish", FALSE);
    domain_store_save_state(e->hv->store, obj, NULL);
    d = g_new0(DriverDomain, 1);
    d->name = g_strdup(domain_obj_get_name(obj));
    memcpy(d->uuid, domain_obj_get_uuid(obj), 16);
    d->id = obj->id;
    c = (MigrationCookieContent){.name = d->name, .uuid = d->uuid, .daemon_id = e->daemon_id,
                                 .postcopy = TRUE};
    *cookie_out = migration_cookie_format(&c);
    domain_obj_end(obj);
    h->vm_unref(vm);
    FERRY_INFO("domain '%s' runs here in post-copy; its memory follows", d->name);
    comp = g_new0(Completion, 1);
    comp->engine = e;
    comp->job = migration_job_ref(job);
    if (!migration_thread_start(e, "postcopy-complete", dest_complete_thread, comp, &err)) {
        /* The guest keeps running and its memory keeps coming; only the
         * final state change is lost. */
        FERRY_WARN("%s", err->message);
        migration_job_unref(comp->job);
        g_free(comp);
    }
    return d;

fail:
    if (vm)
        h->vm_unref(vm);
    domain_obj_unref(obj);
    migration_dest_discard(e, job, err->message);
    g_propagate_prefixed_error(error, g_steal_pointer(&err),
                               "incoming migration of domain '%s' failed: ", dname);
    return NULL;
}

/* ---- destination: resuming (virsh migrate --postcopy-resume) ---- */

/* The domain whose post-copy failed here (locked), or NULL with why not. */
static DomainObj *failed_postcopy_domain(MigrationEngine *e, const char *name, GError **error)
{
    DomainObj *obj = domain_list_lookup_by_name(e->hv->list, name, error);
    if (!obj)
        return NULL;
    int reason = 0;
    DomainState st = domain_obj_get_state(obj, &reason);
    if (!domain_obj_is_active(obj) ||
        !((st == DOMAIN_STATE_RUNNING && reason == DOMAIN_RUNNING_POSTCOPY_FAILED) ||
          (st == DOMAIN_STATE_PAUSED && reason == DOMAIN_PAUSED_POSTCOPY_FAILED))) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "post-copy migration of domain %s has not failed", name);
        domain_obj_end(obj);
        return NULL;
    }
    if (obj->job) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "resuming failed post-copy migration of domain %s already in progress",
                    name);
        domain_obj_end(obj);
        return NULL;
    }
    return obj;
}

gboolean migration_postcopy_dest_prepare(MigrationEngine *e, GPtrArray *params, GBytes *cookie_in,
                                         guint flags, TunnelBinding *binding,
                                         TunnelPeerWatch *source, GBytes **cookie_out,
                                         char **uri_out, GError **error)
{
    const MigrationHooks *h = e->hooks;
    const char *dname = NULL;
    if (!driver_params_get_string(params, "destination_name", &dname, error))
        return FALSE;
    if (!dname) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "migration parameter 'destination_name' is missing");
        return FALSE;
    }
    if (!h->recover_incoming) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration flag POSTCOPY_RESUME is not supported by %s", h->vmm_name);
        return FALSE;
    }
    g_auto(MigrationCookie) src = {0};
    if (!migration_cookie_parse(cookie_in, &src, error))
        return FALSE;
    DomainObj *obj = failed_postcopy_domain(e, dname, error);
    if (!obj)
        return FALSE;
    g_autoptr(GError) err = NULL;
    g_autoptr(MigrationJob) job = NULL;
    int ours = -1; /* our end of the VMM's new stream */
    MigrationEndpoint ep = {.kind = MIGRATION_ENDPOINT_FD, .fd = -1, .n_connections = 1};
    MigrationCookieContent c = {0};
    Completion *comp = NULL;
    /* No query first: the VMM's main thread may wait on a missing page until
     * the stream resumes, and the VMM refuses the recovery itself when its
     * migration is not paused. It listens at a path of ours; we connect. */
    g_autofree char *vmm_path =
        domain_store_runtime_path(e->hv->store, obj->instance_id, ".recover");
    ep.path = vmm_path;
    int vmm_err = 0;
    gpointer vm = h->vm_ref(obj);
    if (!vm) {
        g_set_error(&err, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "the VMM is gone");
        goto fail;
    }
    unlink(vmm_path);
    if (!h->recover_incoming(vm, &ep, &err)) {
        g_prefix_error(&err, "destination VMM: cannot recover its post-copy migration: ");
        goto fail;
    }
    ours = rpc_socket_connect_unix_until(vmm_path, g_get_monotonic_time() + 10 * G_USEC_PER_SEC,
                                          &vmm_err);
    unlink(vmm_path); /* connected (or not): nobody else may */
    if (ours < 0) {
        ferry_set_error_errno(&err, vmm_err, "cannot connect to the destination VMM at %s",
                              vmm_path);
        goto fail;
    }

    job = migration_job_new(DRIVER_JOB_OPERATION_MIGRATION_IN);
    job->name = g_strdup(dname);
    job->instance_id = g_strdup(obj->instance_id);
    job->source = source ? tunnel_peer_watch_ref(source) : NULL;
    job->postcopy_allowed = job->postcopy = TRUE;
    job->recorder = flight_recorder_new("destination", dname, domain_obj_get_uuid(obj),
                                        src.record_id);
    flight_recorder_event(job->recorder, "start", "operation", "post-copy migration in, resumed",
                          NULL);
    if (binding) {
        TunnelStreamConfig cfg;
        migration_cookie_tunnel_config(&src, TUNNEL_ROLE_SERVER, "source ferryd",
                                       "destination VMM", &cfg);
        g_autoptr(TunnelChannel) ch = tunnel_channel_open_stream(binding, ours, &cfg);
        ours = -1;
        migration_job_set_channel(job, ch);
    } else if (!migration_dest_listen(e, job, params, flags, &ours, uri_out, &err)) {
        goto fail;
    }
    obj->job = migration_job_ref(job);
    g_mutex_lock(&e->lock);
    g_hash_table_replace(e->incoming, g_strdup(dname), migration_job_ref(job));
    g_mutex_unlock(&e->lock);
    comp = g_new0(Completion, 1);
    comp->engine = e;
    comp->job = migration_job_ref(job);
    if (!migration_thread_start(e, "postcopy-complete", dest_complete_thread, comp, &err)) {
        migration_job_unref(comp->job);
        g_free(comp);
        migration_job_cut_channel(job, err);
        g_clear_pointer(&obj->job, migration_job_unref);
        migration_dest_forget(e, job);
        goto fail;
    }
    if (domain_obj_get_state(obj, NULL) == DOMAIN_STATE_RUNNING) {
        domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_POSTCOPY);
        hv_emit(e->hv, obj, HV_EVENT_RESUMED, EVENT_RESUMED_POSTCOPY);
    }
    domain_store_save_state(e->hv->store, obj, NULL);
    c = (MigrationCookieContent){.name = dname, .uuid = domain_obj_get_uuid(obj),
                                 .daemon_id = e->daemon_id, .tunnel = src.ferry && binding,
                                 .token = job->token,
                                 .record_id = src.record_id && job->recorder
                                                  ? flight_recorder_get_id(job->recorder)
                                                  : NULL};
    *cookie_out = migration_cookie_format(&c);
    FERRY_INFO("resuming the post-copy migration of domain '%s' (%s)", dname,
               binding ? "tunnel" : *uri_out);
    h->vm_unref(vm);
    domain_obj_end(obj);
    return TRUE;

fail:
    if (ours >= 0)
        close(ours);
    unlink(vmm_path); /* a listener QEMU may have made before it failed */
    if (vm)
        h->vm_unref(vm);
    domain_obj_end(obj);
    g_propagate_prefixed_error(error, g_steal_pointer(&err),
                               "cannot resume the post-copy migration here: ");
    return FALSE;
}
