/* The engine's life, the job API (job info, abort, speed), completed-job
 * records, and what its two sides share. */
#include "driver/migration-engine.h"

#include <string.h>

#include "driver/migration-private.h"
#include "driver/migration-probe.h"
#include "util/error.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/uuid.h"

#define FERRY_LOG_MODULE "migration"

void migration_vmm_progress_clear(MigrationVmmProgress *p)
{
    g_clear_pointer(&p->error, g_free);
    g_clear_pointer(&p->digest, g_free);
    driver_job_info_clear(&p->counters);
}

static void completed_free(gpointer data)
{
    driver_job_info_clear(data);
    g_free(data);
}

MigrationEngine *migration_engine_new(HvDriver *hv, const MigrationHooks *hooks,
                                      TunnelDataSettings *data_settings)
{
    MigrationEngine *e = g_new0(MigrationEngine, 1);
    e->hv = hv;
    e->hooks = hooks;
    e->data_settings = data_settings ? tunnel_data_settings_ref(data_settings)
                                     : tunnel_data_settings_new(NULL, 49152, 49215, NULL);
    g_mutex_init(&e->lock);
    g_cond_init(&e->threads_cond);
    guint8 id[16];
    ferry_uuid_generate(id);
    e->daemon_id = ferry_uuid_to_string(id);
    e->incoming = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        (GDestroyNotify)migration_job_unref);
    e->completed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, completed_free);
    e->dropped = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    e->performing = g_hash_table_new_full(NULL, NULL, (GDestroyNotify)migration_job_unref, NULL);
    e->confirming = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                          migration_source_pending_free);
    hv->base.migration = e;
    return e;
}

void migration_engine_free(MigrationEngine *e)
{
    if (!e)
        return;
    /* Wake every thread, wait until none runs: they use the domain list. */
    g_atomic_int_set(&e->stopping, TRUE);
    migration_dest_shutdown(e);
    g_mutex_lock(&e->lock);
    while (e->threads > 0)
        g_cond_wait(&e->threads_cond, &e->lock);
    g_mutex_unlock(&e->lock);
    if (e->hv->base.migration == e)
        e->hv->base.migration = NULL;
    g_hash_table_destroy(e->incoming);
    g_hash_table_destroy(e->completed);
    g_hash_table_destroy(e->dropped);
    g_free(e->save_dir);
    g_free(e->file_refusal);
    g_hash_table_destroy(e->performing);
    g_hash_table_destroy(e->confirming);
    tunnel_data_settings_unref(e->data_settings);
    g_free(e->daemon_id);
    g_cond_clear(&e->threads_cond);
    g_mutex_clear(&e->lock);
    g_free(e);
}

MigrationEngine *migration_engine_of(Driver *drv, GError **error)
{
    if (!drv->migration)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT,
                    "this driver has no migration engine");
    return drv->migration;
}

void migration_save_completed(MigrationEngine *e, const guint8 *uuid, MigrationJob *job,
                              int type, const GError *error, const char *digest)
{
    DriverJobInfo *done = g_new0(DriverJobInfo, 1);
    migration_job_get_info(job, done);
    g_free(done->error_message);
    g_free(done->digest);
    done->error_message = error ? g_strdup(error->message) : NULL;
    done->digest = g_strdup(digest);
    done->type = type;
    if (type == DRIVER_JOB_COMPLETED && !done->data_total) {
        /* Everything the job moved was all there was to move. */
        done->data_total = done->data_processed;
        done->memory_total = MAX(done->memory_total, done->memory_processed);
        done->data_remaining = done->memory_remaining = 0;
    }
    g_mutex_lock(&e->lock);
    g_hash_table_replace(e->completed, ferry_uuid_to_string(uuid), done);
    g_mutex_unlock(&e->lock);
}

void migration_update_completed_record(MigrationEngine *e, const guint8 *uuid, MigrationJob *job)
{
    DriverJobInfo now = {0};
    migration_job_get_info(job, &now);
    g_autofree char *u = ferry_uuid_to_string(uuid);
    g_mutex_lock(&e->lock);
    DriverJobInfo *done = g_hash_table_lookup(e->completed, u);
    /* Only the outcome of this job: a newer one has its own record. */
    if (done && !done->has_flight && now.has_flight)
        driver_job_info_take_flight(done, &now);
    g_mutex_unlock(&e->lock);
    driver_job_info_clear(&now);
}

gboolean migration_thread_start(MigrationEngine *e, const char *name, GThreadFunc func,
                                gpointer data, GError **error)
{
    g_mutex_lock(&e->lock);
    e->threads++;
    g_mutex_unlock(&e->lock);
    GThread *t = ferry_thread_try_new(name, func, data, error);
    if (!t) {
        migration_thread_done(e);
        return FALSE;
    }
    g_thread_unref(t);
    return TRUE;
}

void migration_thread_done(MigrationEngine *e)
{
    g_mutex_lock(&e->lock);
    e->threads--;
    g_cond_broadcast(&e->threads_cond);
    g_mutex_unlock(&e->lock);
}

void migration_kill_instance(MigrationEngine *e, DomainObj *obj, DomainShutoffReason reason)
{
    e->hv->hooks->kill(e->hv, obj, TRUE);
    if (domain_obj_is_active(obj))
        hv_instance_end(e->hv, obj, reason);
}

/* ---- the job API ---- */

static gboolean engine_get_job_info(Driver *drv, const DriverDomain *dom, guint flags,
                                    DriverJobInfo *info, GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e)
        return FALSE;
    memset(info, 0, sizeof(*info));
    if (flags & DRIVER_JOB_STATS_COMPLETED) {
        g_autofree char *u = ferry_uuid_to_string(dom->uuid);
        g_mutex_lock(&e->lock);
        DriverJobInfo *done = g_hash_table_lookup(e->completed, u);
        if (done)
            driver_job_info_copy(info, done);
        g_mutex_unlock(&e->lock);
        return TRUE;
    }
    DomainObj *obj = hv_lookup(e->hv, dom, error);
    if (!obj)
        return FALSE;
    if (obj->job)
        migration_job_get_info(obj->job, info);
    domain_obj_end(obj);
    return TRUE;
}

void migration_engine_abort_job_locked(DomainObj *obj, const char *why)
{
    if (obj->job)
        migration_job_request_abort(obj->job,
                                    g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                                "migration job canceled: %s", why));
}

gboolean migration_engine_has_job(DomainObj *obj)
{
    return obj->job != NULL;
}

static gboolean engine_abort_job(Driver *drv, const DriverDomain *dom, guint flags,
                                 GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (e && (flags & ~DRIVER_ABORT_JOB_POSTCOPY)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "domjobabort flags 0x%x are not supported", flags);
        return FALSE;
    }
    if (e && (flags & DRIVER_ABORT_JOB_POSTCOPY))
        return migration_postcopy_pause(e, dom, error);
    DomainObj *obj = e ? hv_lookup(e->hv, dom, error) : NULL;
    if (!obj)
        return FALSE;
    gboolean save = obj->job && obj->job->operation == DRIVER_JOB_OPERATION_SAVE;
    gboolean ok = save || (obj->job && obj->job->operation == DRIVER_JOB_OPERATION_MIGRATION_OUT);
    if (ok) {
        ok = migration_job_try_abort(obj->job,
                                     g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                                 "job '%s' canceled by client",
                                                 save ? "domain save" : "migration out"),
                                     error);
        if (ok)
            FERRY_INFO("domain '%s': a client aborted its %s", domain_obj_get_name(obj),
                       save ? "save" : "migration");
    }
    else
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "no job is active on the domain");
    domain_obj_end(obj);
    return ok;
}

static gboolean engine_set_max_speed(Driver *drv, const DriverDomain *dom, guint64 mib,
                                     GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    guint64 bytes = 0;
    if (!e || !migration_bandwidth_to_bytes(mib, &bytes, error))
        return FALSE;
    DomainObj *obj = hv_lookup(e->hv, dom, error);
    if (!obj)
        return FALSE;
    gboolean ok = domain_obj_is_active(obj);
    if (!ok) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is not running");
    } else {
        obj->max_speed_mib = mib;
        if (obj->job)
            migration_job_set_bandwidth(obj->job, bytes);
    }
    domain_obj_end(obj);
    return ok;
}

static gboolean engine_get_max_speed(Driver *drv, const DriverDomain *dom, guint64 *mib,
                                     GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    DomainObj *obj = e ? hv_lookup(e->hv, dom, error) : NULL;
    if (!obj)
        return FALSE;
    *mib = obj->max_speed_mib;
    domain_obj_end(obj);
    return TRUE;
}

static void engine_client_closed(Driver *drv, guint64 client_id)
{
    MigrationEngine *e = drv->migration;
    if (!e || g_atomic_int_get(&e->stopping))
        return;
    migration_source_client_closed(e, client_id);
    migration_dest_client_closed(e, client_id);
}

/* Outgoing migrations and saves are aborted as a client's domjobabort would:
 * each call that runs one returns with the VM running here. One in its
 * finish phase completes (the VM's state crossed: too late to abort). */
static void engine_daemon_stopping(Driver *drv, const char *why)
{
    MigrationEngine *e = drv->migration;
    if (!e || !e->hv->list)
        return;
    g_autoptr(GPtrArray) instances = domain_list_get_instances(e->hv->list);
    for (guint i = 0; i < instances->len; i++) {
        DomainObj *obj = instances->pdata[i];
        domain_obj_lock(obj);
        MigrationJob *job = obj->job;
        if (job && (job->operation == DRIVER_JOB_OPERATION_MIGRATION_OUT ||
                    job->operation == DRIVER_JOB_OPERATION_SAVE)) {
            gboolean save = job->operation == DRIVER_JOB_OPERATION_SAVE;
            g_autoptr(GError) refused = NULL;
            if (migration_job_try_abort(job,
                                        g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                                    "job '%s' canceled: %s",
                                                    save ? "domain save" : "migration out", why),
                                        &refused))
                FERRY_INFO("aborting the %s of domain '%s': %s", save ? "save" : "migration",
                           domain_obj_get_name(obj), why);
            else
                FERRY_INFO("domain '%s': %s; its migration completes first (%s)",
                           domain_obj_get_name(obj), why, refused->message);
        }
        domain_obj_unlock(obj);
    }
}

/* A tuning change reaches the VMM at once (also during a migration): what
 * the getters read back is the VMM's own value. */
static gboolean retune_locked(MigrationEngine *e, DomainObj *obj, GError **error)
{
    if (!e->hooks->tune)
        return TRUE;
    gpointer vm = e->hooks->vm_ref(obj);
    if (!vm)
        return TRUE;
    MigrationTuning t = {.downtime_ms = obj->max_downtime_ms, .xbzrle_cache = obj->xbzrle_cache,
                         .throttle_initial = -1, .throttle_increment = -1};
    gboolean ok = e->hooks->tune(vm, &t, FALSE, error);
    e->hooks->vm_unref(vm);
    return ok;
}

static DomainObj *lookup_active(MigrationEngine *e, const DriverDomain *dom, GError **error)
{
    DomainObj *obj = hv_lookup(e->hv, dom, error);
    if (obj && !domain_obj_is_active(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is not running");
        domain_obj_end(obj);
        return NULL;
    }
    return obj;
}

/* What the VMM itself holds now, as libvirt reads it back from QEMU. */
static gboolean vmm_tuning_locked(MigrationEngine *e, DomainObj *obj, MigrationTuning *t,
                                  GError **error)
{
    gpointer vm = e->hooks->vm_ref(obj);
    if (!vm) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is not running");
        return FALSE;
    }
    gboolean ok = e->hooks->get_tuning(vm, t, error);
    e->hooks->vm_unref(vm);
    return ok;
}

static gboolean engine_set_max_downtime(Driver *drv, const DriverDomain *dom, guint64 ms,
                                        GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e)
        return FALSE;
    /* QEMU's downtime-limit range */
    if (ms == 0 || ms > 2000000) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "maximum downtime %" G_GUINT64_FORMAT " ms is out of range (1 to 2000000)",
                    ms);
        return FALSE;
    }
    DomainObj *obj = lookup_active(e, dom, error);
    if (!obj)
        return FALSE;
    obj->max_downtime_ms = ms;
    gboolean ok = retune_locked(e, obj, error);
    domain_obj_end(obj);
    return ok;
}

static gboolean engine_get_max_downtime(Driver *drv, const DriverDomain *dom, guint64 *ms,
                                        GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    DomainObj *obj = e ? lookup_active(e, dom, error) : NULL;
    if (!obj)
        return FALSE;
    MigrationTuning t = {0};
    gboolean ok = vmm_tuning_locked(e, obj, &t, error);
    *ms = t.downtime_ms;
    domain_obj_end(obj);
    return ok;
}

static gboolean compresses(MigrationEngine *e, GError **error)
{
    if (!(e->hooks->tunable_flags & MIGRATION_COMPRESSED)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration compression cache: %s does not compress migration data "
                    "(no xbzrle)",
                    e->hooks->vmm_name);
        return FALSE;
    }
    return TRUE;
}

static gboolean engine_set_compression_cache(Driver *drv, const DriverDomain *dom, guint64 bytes,
                                             GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e || !compresses(e, error))
        return FALSE;
    DomainObj *obj = lookup_active(e, dom, error);
    if (!obj)
        return FALSE;
    obj->xbzrle_cache = bytes;
    gboolean ok = retune_locked(e, obj, error);
    domain_obj_end(obj);
    return ok;
}

static gboolean engine_get_compression_cache(Driver *drv, const DriverDomain *dom, guint64 *bytes,
                                             GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (!e || !compresses(e, error))
        return FALSE;
    DomainObj *obj = lookup_active(e, dom, error);
    if (!obj)
        return FALSE;
    MigrationTuning t = {0};
    gboolean ok = vmm_tuning_locked(e, obj, &t, error);
    *bytes = t.xbzrle_cache;
    domain_obj_end(obj);
    return ok;
}

gboolean migration_engine_job_allows_pause(DomainObj *obj)
{
    return obj->job && obj->job->operation == DRIVER_JOB_OPERATION_MIGRATION_OUT;
}

static gboolean engine_open_channel(Driver *drv, const char *name, const char *token,
                                    guint index, TunnelBinding *binding, GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    return e && migration_dest_open_stream(e, name, token, index, binding, error);
}

void migration_engine_install_ops(DriverOps *ops)
{
    ops->migrate_set_max_downtime = engine_set_max_downtime;
    ops->migrate_get_max_downtime = engine_get_max_downtime;
    ops->migrate_set_compression_cache = engine_set_compression_cache;
    ops->migrate_get_compression_cache = engine_get_compression_cache;
    ops->migrate_start_post_copy = migration_postcopy_start;
    ops->client_closed = engine_client_closed;
    ops->daemon_stopping = engine_daemon_stopping;
    ops->get_job_info = engine_get_job_info;
    ops->abort_job = engine_abort_job;
    ops->migrate_set_max_speed = engine_set_max_speed;
    ops->migrate_get_max_speed = engine_get_max_speed;
    ops->migrate_begin = migration_source_begin;
    ops->migrate_prepare = migration_dest_prepare;
    ops->migrate_perform = migration_source_perform;
    ops->migrate_finish = migration_dest_finish;
    ops->migrate_confirm = migration_source_confirm;
    ops->migrate_open_channel = engine_open_channel;
    migration_probe_install_ops(ops);
    migration_file_install_ops(ops);
}
