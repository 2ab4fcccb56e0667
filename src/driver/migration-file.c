/* Save and restore: the migration engine with a file as the endpoint. A save
 * pauses the guest and has the VMM migrate into a socket whose other end a
 * file channel (tunnel/tunnel-file.h) copies into the save image after its
 * header (driver/save-image.h); the domain stops only once the image is
 * complete and on disk. A restore starts an incoming VMM and feeds it the
 * image through the same channel. Jobs, progress, abort, bandwidth and the
 * stall check are the migration job's.
 *
 * Nothing is lost: a save that fails or is aborted resumes the guest (it
 * never stopped running on its host) and removes the partial image it
 * created; a restore that fails kills its incoming VMM and leaves the image
 * as it was. Managed save images live in the driver's save directory as
 * NAME.save (libvirt's /var/lib/libvirt/qemu/save/NAME.save); starting the
 * domain restores and then removes it. */
#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/migration-private.h"
#include "driver/save-image.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "migration.file"

#define POLL_MS 200
#define VMM_END_WAIT_MS 10000

/* virDomainSaveRestoreFlags */
#define SAVE_BYPASS_CACHE 1u
#define SAVE_RUNNING 2u
#define SAVE_PAUSED 4u
#define SAVE_RESET_NVRAM 8u
#define SAVE_PARALLEL 16u
/* virDomainCreateFlags */
#define START_PAUSED 1u
#define START_BYPASS_CACHE 4u
#define START_FORCE_BOOT 8u
#define UNDEFINE_MANAGED_SAVE 1u
#define SAVE_IMAGE_XML_SECURE 1u

enum { EVENT_STARTED_RESTORED = 2, EVENT_STOPPED_SAVED = 4 };

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MigrationVmmProgress, migration_vmm_progress_clear)

void migration_engine_set_files(MigrationEngine *e, const char *save_dir, const char *refusal)
{
    g_free(e->save_dir);
    g_free(e->file_refusal);
    e->save_dir = g_strdup(save_dir);
    e->file_refusal = g_strdup(refusal);
    if (!e->save_dir)
        return;
    /* The domains that have a managed save image, for `list --managed-save`. */
    g_autoptr(GPtrArray) objs = domain_list_collect(e->hv->list, DOMAIN_LIST_PERSISTENT, NULL);
    for (guint i = 0; objs && i < objs->len; i++) {
        DomainObj *obj = objs->pdata[i];
        domain_obj_lock(obj);
        g_autofree char *file = g_strdup_printf("%s.save", domain_obj_get_name(obj));
        g_autofree char *path = g_build_filename(e->save_dir, file, NULL);
        obj->has_managed_save = g_file_test(path, G_FILE_TEST_IS_REGULAR);
        domain_obj_unlock(obj);
    }
}

/* The engine, if this driver's VMM can migrate into a file. */
static MigrationEngine *file_engine(Driver *drv, const char *what, GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    if (e && e->file_refusal) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT, "%s is not supported by the %s "
                    "driver: %s", what, drv->ops->name, e->file_refusal);
        return NULL;
    }
    return e;
}

static char *managed_path(MigrationEngine *e, const char *name)
{
    g_autofree char *file = g_strdup_printf("%s.save", name);
    return g_build_filename(e->save_dir, file, NULL);
}

/* Flags of save, managed save and restore: libvirt's names for what is refused. */
static gboolean check_flags(guint flags, guint allowed, const char *function, GError **error)
{
    if (flags & allowed & SAVE_BYPASS_CACHE) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "flag VIR_DOMAIN_SAVE_BYPASS_CACHE (--bypass-cache) is not supported: ferry "
                    "writes and reads save images through the page cache");
        return FALSE;
    }
    if (flags & allowed & SAVE_PARALLEL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "flag VIR_DOMAIN_SAVE_PARALLEL is not supported: a save image is one stream");
        return FALSE;
    }
    if (flags & allowed & SAVE_RESET_NVRAM) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "flag VIR_DOMAIN_SAVE_RESET_NVRAM is not supported: ferry domains have "
                    "no NVRAM");
        return FALSE;
    }
    if (flags & ~allowed) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function %s", flags & ~allowed, function);
        return FALSE;
    }
    if ((flags & SAVE_RUNNING) && (flags & SAVE_PAUSED)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "Flags 'running' and 'paused' are mutually exclusive");
        return FALSE;
    }
    return TRUE;
}

/* A replacement XML for an image must describe the same domain. */
static DomainDef *parse_same_domain(MigrationEngine *e, const char *xml, const DomainDef *like,
                                    GError **error)
{
    g_autoptr(DomainDef) def = hv_parse_xml(e->hv, xml, error);
    if (!def)
        return NULL;
    if (!g_str_equal(def->name, like->name) || memcmp(def->uuid, like->uuid, 16) != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "the replacement XML describes domain '%s', not '%s' of the save image",
                    def->name, like->name);
        return NULL;
    }
    if (def->memory_kib != like->memory_kib || def->vcpus != like->vcpus) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "the replacement XML of domain '%s' changes its memory or vCPUs, which "
                    "the saved guest cannot follow",
                    def->name);
        return NULL;
    }
    return g_steal_pointer(&def);
}

/* ---- save ---- */

typedef struct {
    MigrationEngine *engine;
    const MigrationHooks *hooks;
    gpointer vm;
    MigrationJob *job;
    char *name;
    guint8 uuid[16];
    char *instance_id;
    char *path;
    gboolean was_running;
    gboolean created;
    int fd;
} Saving;

static void saving_clear(Saving *s)
{
    if (s->vm)
        s->hooks->vm_unref(s->vm);
    migration_job_unref(s->job);
    g_free(s->name);
    g_free(s->instance_id);
    g_free(s->path);
    if (s->fd >= 0)
        close(s->fd);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Saving, saving_clear)

/* Takes the domain's job, writes the image's header, pauses the guest. */
static gboolean saving_start(Saving *s, const DriverDomain *dom, const char *dxml,
                             gboolean managed, guint flags, GError **error)
{
    MigrationEngine *e = s->engine;
    DomainObj *obj = hv_lookup(e->hv, dom, error);
    if (!obj)
        return FALSE;
    gboolean ok = FALSE;
    g_autofree char *xml = NULL;
    guint64 bandwidth = 0;
    gboolean run_after = FALSE;
    if (!domain_obj_is_active(obj) || !(s->vm = s->hooks->vm_ref(obj))) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is not running");
        goto out;
    }
    if (obj->job) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain has a migration job in progress");
        goto out;
    }
    if (managed && !domain_obj_is_persistent(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "cannot do managed save for transient domain");
        goto out;
    }
    if (dxml) {
        g_autoptr(DomainDef) def = parse_same_domain(e, dxml, obj->live_def, error);
        if (!def)
            goto out;
        xml = domain_def_format(def, -1, DOMAIN_DEF_FORMAT_INACTIVE | DOMAIN_DEF_FORMAT_MIGRATABLE);
    } else {
        xml = domain_def_format(obj->live_def, -1,
                                DOMAIN_DEF_FORMAT_INACTIVE | DOMAIN_DEF_FORMAT_MIGRATABLE);
    }
    s->name = g_strdup(domain_obj_get_name(obj));
    memcpy(s->uuid, domain_obj_get_uuid(obj), 16);
    s->instance_id = g_strdup(obj->instance_id);
    if (managed)
        s->path = managed_path(e, s->name);
    if (managed && g_mkdir_with_parents(e->save_dir, 0700) < 0) {
        ferry_set_error_errno(error, errno, "cannot create the save directory '%s'",
                              e->save_dir);
        goto out;
    }
    s->was_running = domain_obj_get_state(obj, NULL) == DOMAIN_STATE_RUNNING;
    run_after = (flags & SAVE_RUNNING) || (!(flags & SAVE_PAUSED) && s->was_running);
    s->fd = save_image_create(s->path, xml, run_after, &s->created, error);
    if (s->fd < 0)
        goto out;
    if (!migration_bandwidth_to_bytes(obj->max_speed_mib, &bandwidth, error))
        goto out;
    s->job = migration_job_new(DRIVER_JOB_OPERATION_SAVE);
    s->job->bandwidth = bandwidth;
    obj->job = migration_job_ref(s->job);
    if (s->was_running) {
        if (!s->hooks->stop(s->vm, error)) {
            g_prefix_error(error, "cannot pause the guest to save it: ");
            g_clear_pointer(&obj->job, migration_job_unref);
            goto out;
        }
        hv_set_state(e->hv, obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_SAVE);
        hv_emit(e->hv, obj, HV_EVENT_SUSPENDED, HV_SUSPENDED_PAUSED);
    }
    ok = TRUE;
out:
    domain_obj_end(obj);
    return ok;
}

/* The VMM migrates into the file until it completed, failed or was aborted. */
static gboolean saving_run(Saving *s, GError **error)
{
    const MigrationHooks *h = s->hooks;
    int sv[2] = {-1, -1};
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ferry_set_error_errno(error, errno, "cannot create the save socket pair");
        return FALSE;
    }
    int file_fd = dup(s->fd);
    if (file_fd < 0) {
        ferry_set_error_errno(error, errno, "cannot duplicate the save image's descriptor");
        close(sv[0]);
        close(sv[1]);
        return FALSE;
    }
    g_autofree char *file_name = g_strdup_printf("the save image '%s'", s->path);
    TunnelFileConfig cfg = {.vmm_name = s->engine->hv->hooks->vmm_name, .file_name = file_name,
                            .to_file = TRUE};
    g_autoptr(TunnelChannel) ch = tunnel_channel_open_file(sv[0], file_fd, &cfg);
    migration_job_set_channel(s->job, ch);
    MigrationEndpoint ep = {.kind = MIGRATION_ENDPOINT_FD, .fd = sv[1], .n_connections = 1};
    if (!h->start_outgoing(s->vm, &ep, error))
        return FALSE;
    guint stall_s = tunnel_data_settings_get_stall_timeout(s->engine->data_settings);
    for (;;) {
        /* A failed channel: the file said why (a full disk). */
        MigrationWait w =
            migration_job_wait_turn(s->job, g_get_monotonic_time() + POLL_MS * 1000,
                                    MIGRATION_WAIT_CHANNEL | MIGRATION_WAIT_ABORT, stall_s, error);
        g_auto(MigrationVmmProgress) p = {0};
        if (h->progress(s->vm, &p, NULL))
            migration_job_update(s->job, &p.counters);
        if (w == MIGRATION_WAIT_FAILED)
            return FALSE;
        if (p.status == MIGRATION_VMM_FAILED || p.status == MIGRATION_VMM_CANCELLED) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "%s: %s",
                        s->engine->hv->hooks->vmm_name,
                        p.error ? p.error : p.status == MIGRATION_VMM_FAILED ? "failed"
                                                                             : "cancelled");
            return FALSE;
        }
        if (w == MIGRATION_WAIT_DONE)
            break;
    }
    g_auto(MigrationVmmProgress) end = {0};
    if (!h->wait_end(s->vm, VMM_END_WAIT_MS, &end, error))
        return FALSE;
    migration_job_update(s->job, &end.counters);
    if (end.status != MIGRATION_VMM_COMPLETED) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "%s did not complete its stream: %s", s->engine->hv->hooks->vmm_name,
                    end.error ? end.error : "no status");
        return FALSE;
    }
    return save_image_complete(s->fd, s->path, error);
}

/* Success: the image is on disk, the domain stops. Failure: the guest runs
 * again, the partial image goes. */
static gboolean saving_finish(Saving *s, gboolean managed, GError *failure, GError **error)
{
    MigrationEngine *e = s->engine;
    if (failure) {
        migration_job_cut_channel(s->job, failure);
        s->hooks->cancel(s->vm);
        g_auto(MigrationVmmProgress) end = {0};
        s->hooks->wait_end(s->vm, VMM_END_WAIT_MS, &end, NULL);
        struct stat st;
        if (s->created && stat(s->path, &st) == 0 && S_ISREG(st.st_mode))
            unlink(s->path);
    }
    DomainObj *obj = domain_list_lookup_by_instance(e->hv->list, s->instance_id, NULL);
    if (!obj) {
        if (!failure) {
            failure = g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                                  "domain '%s' ended during its save", s->name);
            unlink(s->path);
        }
        g_propagate_error(error, failure);
        return FALSE;
    }
    if (obj->job == s->job)
        g_clear_pointer(&obj->job, migration_job_unref);
    if (!failure) {
        migration_save_completed(e, s->uuid, s->job, DRIVER_JOB_COMPLETED, NULL, NULL);
        e->hv->hooks->kill(e->hv, obj, TRUE);
        DriverDomain d = {0};
        hv_domain_ref_of(obj, &d);
        hv_instance_end(e->hv, obj, DOMAIN_SHUTOFF_SAVED);
        if (managed && !domain_obj_is_removed(obj))
            obj->has_managed_save = TRUE;
        domain_obj_end(obj);
        driver_event_emit(&e->hv->base, &d, HV_EVENT_STOPPED, EVENT_STOPPED_SAVED);
        driver_domain_clear(&d);
        FERRY_INFO("domain '%s' saved to '%s'", s->name, s->path);
        return TRUE;
    }
    gboolean cancelled = g_error_matches(failure, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED);
    migration_save_completed(e, s->uuid, s->job, cancelled ? DRIVER_JOB_CANCELLED : DRIVER_JOB_FAILED,
                             failure, NULL);
    if (domain_obj_is_active(obj) && s->was_running) {
        g_autoptr(GError) re = NULL;
        if (s->hooks->resume(s->vm, &re)) {
            hv_set_state(e->hv, obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_SAVE_CANCELED);
            hv_emit(e->hv, obj, HV_EVENT_RESUMED, HV_RESUMED_UNPAUSED);
        } else {
            FERRY_WARN("domain '%s': cannot resume the guest after its failed save: %s",
                       s->name, re->message);
        }
    }
    domain_obj_end(obj);
    if (!cancelled)
        g_prefix_error(&failure, "cannot save domain '%s' to '%s': ", s->name, s->path);
    g_propagate_error(error, failure);
    return FALSE;
}

static gboolean save_domain(MigrationEngine *e, const DriverDomain *dom, const char *path,
                            const char *dxml, gboolean managed, guint flags, GError **error)
{
    g_auto(Saving) s = {.engine = e, .hooks = e->hooks, .fd = -1, .path = g_strdup(path)};
    if (!saving_start(&s, dom, dxml, managed, flags, error)) {
        if (s.fd >= 0 && s.created)
            unlink(s.path);
        return FALSE;
    }
    GError *failure = NULL;
    saving_run(&s, &failure);
    return saving_finish(&s, managed, failure, error);
}

static gboolean file_save(Driver *drv, const DriverDomain *dom, const char *path,
                          const char *dxml, guint flags, GError **error)
{
    MigrationEngine *e = file_engine(drv, "save", error);
    if (!e || !check_flags(flags, SAVE_BYPASS_CACHE | SAVE_RUNNING | SAVE_PAUSED | SAVE_RESET_NVRAM |
                                      SAVE_PARALLEL,
                           "virDomainSaveFlags", error))
        return FALSE;
    if (!g_path_is_absolute(path)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "the save image path '%s' is not absolute", path);
        return FALSE;
    }
    return save_domain(e, dom, path, dxml, FALSE, flags, error);
}

static gboolean file_managed_save(Driver *drv, const DriverDomain *dom, guint flags,
                                  GError **error)
{
    MigrationEngine *e = file_engine(drv, "managed save", error);
    if (!e || !check_flags(flags, SAVE_BYPASS_CACHE | SAVE_RUNNING | SAVE_PAUSED,
                           "virDomainManagedSave", error))
        return FALSE;
    return save_domain(e, dom, NULL, NULL, TRUE, flags, error);
}

/* ---- restore ---- */

/* Feeds the incoming VMM of obj (locked, unlocked on return) the stream of
 * fd (taken) and waits until it loaded it. */
static gboolean restore_stream(MigrationEngine *e, DomainObj *obj, gpointer vm, MigrationJob *job,
                               int fd, const char *path, GError **error)
{
    int sv[2] = {-1, -1};
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ferry_set_error_errno(error, errno, "cannot create the restore socket pair");
        close(fd);
        domain_obj_unlock(obj);
        return FALSE;
    }
    g_autofree char *file_name = g_strdup_printf("the save image '%s'", path);
    TunnelFileConfig cfg = {.vmm_name = e->hv->hooks->vmm_name, .file_name = file_name,
                            .to_file = FALSE};
    g_autoptr(TunnelChannel) ch = tunnel_channel_open_file(sv[0], fd, &cfg);
    migration_job_set_channel(job, ch);
    MigrationEndpoint ep = {.kind = MIGRATION_ENDPOINT_FD, .fd = sv[1], .n_connections = 1};
    gboolean started = e->hooks->start_incoming(vm, &ep, error); /* closes sv[1] */
    domain_obj_unlock(obj);
    if (!started)
        return FALSE;
    guint stall_s = tunnel_data_settings_get_stall_timeout(e->data_settings);
    MigrationWait w;
    while ((w = migration_job_wait_turn(job, g_get_monotonic_time() + POLL_MS * 1000,
                                        MIGRATION_WAIT_CHANNEL, stall_s, error)) ==
           MIGRATION_WAIT_AGAIN)
        ;
    if (w == MIGRATION_WAIT_FAILED)
        return FALSE;
    g_auto(MigrationVmmProgress) end = {0};
    if (!e->hooks->wait_end(vm, VMM_END_WAIT_MS, &end, error))
        return FALSE;
    if (end.status != MIGRATION_VMM_COMPLETED) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "%s did not load the image: %s", e->hv->hooks->vmm_name,
                    end.error                              ? end.error
                    : end.status == MIGRATION_VMM_NONE ? "not reachable"
                                                           : "incomplete");
        return FALSE;
    }
    migration_job_update(job, &end.counters);
    return TRUE;
}

/* The restored guest (obj locked) runs, or stays paused, as asked. */
static gboolean restore_reveal(MigrationEngine *e, DomainObj *obj, gpointer vm, gboolean run,
                               GError **error)
{
    hv_emit(e->hv, obj, HV_EVENT_STARTED, EVENT_STARTED_RESTORED);
    if (!run) {
        hv_set_state(e->hv, obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_USER);
        hv_emit(e->hv, obj, HV_EVENT_SUSPENDED, HV_SUSPENDED_PAUSED);
        return TRUE;
    }
    if (!e->hooks->resume(vm, error)) {
        g_prefix_error(error, "cannot resume the restored guest: ");
        return FALSE;
    }
    hv_set_state(e->hv, obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_RESTORED);
    return TRUE;
}

/* Starts an incoming VMM for the image's domain and feeds it the stream.
 * managed_uuid: the domain whose managed image it is. */
static DriverDomain *restore_image(MigrationEngine *e, const char *path, const char *dxml,
                                   guint flags, const guint8 *managed_uuid, GError **error)
{
    g_auto(SaveImageHeader) hdr = {0};
    int fd = save_image_open(path, &hdr, error);
    if (fd < 0)
        return NULL;
    g_autoptr(DomainDef) def = hv_parse_xml(e->hv, hdr.xml, error);
    if (def && dxml) {
        DomainDef *other = parse_same_domain(e, dxml, def, error);
        domain_def_free(def);
        def = other;
    }
    if (def && managed_uuid && memcmp(def->uuid, managed_uuid, 16) != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the managed save image '%s' belongs to another domain", path);
        g_clear_pointer(&def, domain_def_free);
    }
    g_autofree char *name = def ? g_strdup(def->name) : NULL;
    DomainObj *obj = def ? domain_list_add(e->hv->list, &def, DOMAIN_LIST_ADD_LIVE, NULL, error)
                         : NULL;
    if (!obj) {
        close(fd);
        g_prefix_error(error, "cannot restore from '%s': ", path);
        return NULL;
    }
    g_autoptr(GError) err = NULL;
    if (!hv_instance_start(e->hv, obj, TRUE, &err)) {
        domain_list_deactivate(e->hv->list, obj, DOMAIN_SHUTOFF_FAILED);
        domain_obj_end(obj);
        close(fd);
        g_propagate_prefixed_error(error, g_steal_pointer(&err),
                                   "cannot restore domain '%s' from '%s': ", name, path);
        return NULL;
    }
    g_autofree char *instance_id = g_strdup(obj->instance_id);
    g_autoptr(MigrationJob) job = migration_job_new(DRIVER_JOB_OPERATION_RESTORE);
    obj->job = migration_job_ref(job);
    gpointer vm = e->hooks->vm_ref(obj);
    gboolean ok = FALSE;
    if (!vm) {
        g_set_error(&err, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "the %s is gone",
                    e->hv->hooks->vmm_name);
        close(fd);
        domain_obj_unlock(obj);
    } else {
        ok = restore_stream(e, obj, vm, job, fd, path, &err); /* unlocks obj */
    }
    if (!ok)
        g_usleep(200 * 1000); /* a VMM that refused the stream has time to say why */

    domain_obj_lock(obj);
    if (obj->job == job)
        g_clear_pointer(&obj->job, migration_job_unref);
    gboolean same = domain_obj_is_active(obj) && g_strcmp0(obj->instance_id, instance_id) == 0;
    if (ok && !same)
        g_set_error(&err, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the domain ended during its restore");
    ok = ok && same &&
         restore_reveal(e, obj, vm, (flags & SAVE_RUNNING) || (!(flags & SAVE_PAUSED) && hdr.running),
                        &err);
    DriverDomain *result = NULL;
    if (ok) {
        migration_save_completed(e, domain_obj_get_uuid(obj), job, DRIVER_JOB_COMPLETED, NULL,
                                 NULL);
        result = hv_domain_ref_new(obj);
        FERRY_INFO("domain '%s' restored from '%s'", name, path);
    } else {
        /* The image stays as it was; the incoming VMM goes. */
        migration_job_cut_channel(job, err);
        gboolean cancelled = g_error_matches(err, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED);
        migration_save_completed(e, domain_obj_get_uuid(obj), job,
                                 cancelled ? DRIVER_JOB_CANCELLED : DRIVER_JOB_FAILED, err, NULL);
        /* A VMM that refused the stream exits: its log says why. */
        g_autofree char *last = vmm_log_last_words(e->hv->log, name);
        if (last)
            g_prefix_error(&err, "%s: %s; ", e->hv->hooks->vmm_name, last);
        if (same) {
            DriverDomain d = {0};
            hv_domain_ref_of(obj, &d);
            migration_kill_instance(e, obj, DOMAIN_SHUTOFF_FAILED);
            driver_event_emit(&e->hv->base, &d, HV_EVENT_STOPPED, HV_STOPPED_FAILED);
            driver_domain_clear(&d);
        }
    }
    domain_obj_end(obj);
    if (vm)
        e->hooks->vm_unref(vm);
    if (!ok)
        g_propagate_prefixed_error(error, g_steal_pointer(&err),
                                   "cannot restore domain '%s' from '%s': ", name, path);
    return result;
}

static gboolean file_restore(Driver *drv, const char *path, const char *dxml, guint flags,
                             GError **error)
{
    MigrationEngine *e = file_engine(drv, "restore", error);
    if (!e || !check_flags(flags, SAVE_BYPASS_CACHE | SAVE_RUNNING | SAVE_PAUSED | SAVE_RESET_NVRAM |
                                      SAVE_PARALLEL,
                           "virDomainRestoreFlags", error))
        return FALSE;
    g_autoptr(DriverDomain) d = restore_image(e, path, dxml, flags, NULL, error);
    return d != NULL;
}

/* ---- save images ---- */

static char *file_image_get_xml(Driver *drv, const char *path, guint flags, GError **error)
{
    MigrationEngine *e = file_engine(drv, "save-image-dumpxml", error);
    if (!e)
        return NULL;
    if (flags & ~SAVE_IMAGE_XML_SECURE) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function virDomainSaveImageGetXMLDesc", flags);
        return NULL;
    }
    g_auto(SaveImageHeader) hdr = {0};
    if (!save_image_read(path, &hdr, error))
        return NULL;
    return g_steal_pointer(&hdr.xml);
}

static gboolean file_image_define_xml(Driver *drv, const char *path, const char *dxml,
                                      guint flags, GError **error)
{
    MigrationEngine *e = file_engine(drv, "save-image-define", error);
    if (!e || !check_flags(flags, SAVE_RUNNING | SAVE_PAUSED, "virDomainSaveImageDefineXML",
                           error))
        return FALSE;
    g_auto(SaveImageHeader) hdr = {0};
    if (!save_image_read(path, &hdr, error))
        return FALSE;
    g_autoptr(DomainDef) old = hv_parse_xml(e->hv, hdr.xml, error);
    g_autoptr(DomainDef) def = old ? parse_same_domain(e, dxml, old, error) : NULL;
    if (!def)
        return FALSE;
    g_autofree char *xml =
        domain_def_format(def, -1, DOMAIN_DEF_FORMAT_INACTIVE | DOMAIN_DEF_FORMAT_MIGRATABLE);
    int running = (flags & SAVE_RUNNING) ? 1 : (flags & SAVE_PAUSED) ? 0 : -1;
    return save_image_update(path, xml, running, error);
}

/* ---- managed save images ---- */

/* The domain's managed image path if it has one (obj locked), else NULL. */
static char *managed_image_of(MigrationEngine *e, DomainObj *obj)
{
    if (!e->save_dir || e->file_refusal || !domain_obj_is_persistent(obj))
        return NULL;
    g_autofree char *path = managed_path(e, domain_obj_get_name(obj));
    gboolean exists = g_file_test(path, G_FILE_TEST_EXISTS);
    obj->has_managed_save = exists;
    return exists ? g_steal_pointer(&path) : NULL;
}

static int file_has_managed_save(Driver *drv, const DriverDomain *dom, guint flags,
                                 GError **error)
{
    MigrationEngine *e = migration_engine_of(drv, error);
    DomainObj *obj = e ? hv_lookup(e->hv, dom, error) : NULL;
    if (!obj)
        return -1;
    g_autofree char *path = managed_image_of(e, obj);
    domain_obj_end(obj);
    return path ? 1 : 0;
}

static gboolean file_managed_save_remove(Driver *drv, const DriverDomain *dom, guint flags,
                                         GError **error)
{
    MigrationEngine *e = file_engine(drv, "managed save", error);
    DomainObj *obj = e ? hv_lookup(e->hv, dom, error) : NULL;
    if (!obj)
        return FALSE;
    g_autofree char *path = managed_image_of(e, obj);
    gboolean ok = !path || unlink(path) == 0 || errno == ENOENT;
    if (!ok)
        ferry_set_error_errno(error, errno, "cannot remove the managed save image '%s'", path);
    else
        obj->has_managed_save = FALSE;
    domain_obj_end(obj);
    return ok;
}

/* The managed image's path of the domain dom names; an error if it has none. */
static char *managed_image_required(Driver *drv, const DriverDomain *dom, GError **error)
{
    MigrationEngine *e = file_engine(drv, "managed save", error);
    DomainObj *obj = e ? hv_lookup(e->hv, dom, error) : NULL;
    if (!obj)
        return NULL;
    char *path = managed_image_of(e, obj);
    if (!path)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain does not have managed save image");
    domain_obj_end(obj);
    return path;
}

static char *file_managed_save_get_xml(Driver *drv, const DriverDomain *dom, guint flags,
                                       GError **error)
{
    g_autofree char *path = managed_image_required(drv, dom, error);
    return path ? file_image_get_xml(drv, path, flags, error) : NULL;
}

static gboolean file_managed_save_define_xml(Driver *drv, const DriverDomain *dom,
                                             const char *dxml, guint flags, GError **error)
{
    g_autofree char *path = managed_image_required(drv, dom, error);
    if (path && !dxml) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "no domain XML given");
        return FALSE;
    }
    return path && file_image_define_xml(drv, path, dxml, flags, error);
}

/* ---- start and undefine with a managed save image ---- */

static DriverDomain *(*hv_create_entry)(Driver *, const DriverDomain *, guint, GError **);
static gboolean (*hv_undefine_entry)(Driver *, const DriverDomain *, guint, GError **);

/* `virsh start`: a domain with a managed save image is restored from it (the
 * image then goes), unless --force-boot drops the image first. */
static DriverDomain *file_create(Driver *drv, const DriverDomain *dom, guint flags,
                                 GError **error)
{
    MigrationEngine *e = drv->migration;
    if (flags & START_BYPASS_CACHE) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "flag VIR_DOMAIN_START_BYPASS_CACHE (--bypass-cache) is not supported: "
                    "ferry reads save images through the page cache");
        return NULL;
    }
    DomainObj *obj = e ? hv_lookup(e->hv, dom, NULL) : NULL;
    g_autofree char *path = obj && !domain_obj_is_active(obj) ? managed_image_of(e, obj) : NULL;
    guint8 uuid[16];
    if (obj)
        memcpy(uuid, domain_obj_get_uuid(obj), 16);
    domain_obj_end(obj);
    if (path && (flags & START_FORCE_BOOT)) {
        if (unlink(path) < 0 && errno != ENOENT) {
            ferry_set_error_errno(error, errno, "cannot remove the managed save image '%s'", path);
            return NULL;
        }
        g_clear_pointer(&path, g_free);
    }
    if (!path)
        return hv_create_entry(drv, dom, flags & ~START_FORCE_BOOT, error);
    DriverDomain *d =
        restore_image(e, path, NULL, (flags & START_PAUSED) ? SAVE_PAUSED : 0, uuid, error);
    if (d) {
        unlink(path);
        DomainObj *o = hv_lookup(e->hv, d, NULL);
        if (o)
            o->has_managed_save = FALSE;
        domain_obj_end(o);
    }
    return d;
}

static gboolean file_undefine(Driver *drv, const DriverDomain *dom, guint flags, GError **error)
{
    MigrationEngine *e = drv->migration;
    DomainObj *obj = e ? hv_lookup(e->hv, dom, error) : NULL;
    g_autofree char *path = obj ? managed_image_of(e, obj) : NULL;
    domain_obj_end(obj);
    if (path && !(flags & UNDEFINE_MANAGED_SAVE)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "Refusing to undefine while domain managed save image exists");
        return FALSE;
    }
    if (path && unlink(path) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "cannot remove the managed save image '%s'", path);
        return FALSE;
    }
    return hv_undefine_entry(drv, dom, flags & ~UNDEFINE_MANAGED_SAVE, error);
}

void migration_file_install_ops(DriverOps *ops)
{
    /* Every hypervisor driver has the base's create and undefine. */
    if (ops->create != file_create) {
        hv_create_entry = ops->create;
        hv_undefine_entry = ops->undefine;
    }
    ops->create = file_create;
    ops->undefine = file_undefine;
    ops->save = file_save;
    ops->restore = file_restore;
    ops->save_image_get_xml = file_image_get_xml;
    ops->save_image_define_xml = file_image_define_xml;
    ops->managed_save = file_managed_save;
    ops->has_managed_save = file_has_managed_save;
    ops->managed_save_remove = file_managed_save_remove;
    ops->managed_save_get_xml = file_managed_save_get_xml;
    ops->managed_save_define_xml = file_managed_save_define_xml;
}
