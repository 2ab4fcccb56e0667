/* The hypervisor driver base: the domain lifecycle every VMM driver shares.
 * The VMM-specific steps go through the driver's HvDriverHooks. */
#include "driver/hv-driver.h"

#include <string.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"
#include "util/uuid.h"

#define FERRY_LOG_MODULE "driver.hv"

/* What the reaper thread handles, in the order the monitors reported it. */
typedef enum {
    NOTICE_GONE,          /* the monitor connection ended */
    NOTICE_RUN_STATE,     /* the guest paused or continued */
    NOTICE_GUEST_SHUTDOWN /* the guest began powering off */
} NoticeKind;

typedef struct {
    NoticeKind kind;
    char *instance_id;
    gboolean guest_shutdown;
    char *why;
} GoneNotice;

/* ---- helpers ---- */

DomainObj *hv_lookup(HvDriver *hv, const DriverDomain *dom, GError **error)
{
    DomainObj *obj = domain_list_lookup_by_uuid(hv->list, dom->uuid, NULL);
    if (!obj) {
        g_autofree char *uuid = ferry_uuid_to_string(dom->uuid);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_DOMAIN,
                    "no domain with matching uuid '%s' (%s)", uuid, dom->name);
    }
    return obj;
}

void hv_domain_ref_of(DomainObj *obj, DriverDomain *out)
{
    out->name = g_strdup(domain_obj_get_name(obj));
    memcpy(out->uuid, domain_obj_get_uuid(obj), 16);
    out->id = obj->id;
}

DriverDomain *hv_domain_ref_new(DomainObj *obj)
{
    DriverDomain *d = g_new0(DriverDomain, 1);
    hv_domain_ref_of(obj, d);
    return d;
}

void hv_emit(HvDriver *hv, DomainObj *obj, int event, int detail)
{
    DriverDomain d = {0};
    hv_domain_ref_of(obj, &d);
    driver_event_emit(&hv->base, &d, event, detail);
    driver_domain_clear(&d);
}

gboolean hv_check_active(DomainObj *obj, GError **error)
{
    if (!domain_obj_is_active(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is not running");
        return FALSE;
    }
    return TRUE;
}

DomainDef *hv_parse_xml(HvDriver *hv, const char *xml, GError **error)
{
    if (hv->hooks->parse_xml)
        return hv->hooks->parse_xml(hv, xml, error);
    return domain_def_parse_string(xml, error);
}

void hv_set_state(HvDriver *hv, DomainObj *obj, DomainState state, int reason)
{
    domain_obj_set_state(obj, state, reason);
    g_autoptr(GError) error = NULL;
    if (!domain_store_save_state(hv->store, obj, &error))
        FERRY_WARN("domain '%s': cannot save runtime state: %s", domain_obj_get_name(obj),
                   error->message);
}

char *hv_log_path(HvDriver *hv, const char *name)
{
    return vmm_log_path(hv->log, name);
}

gboolean hv_instance_start(HvDriver *hv, DomainObj *obj, gboolean incoming, GError **error)
{
    if (!vmm_log_prepare(hv->log, domain_obj_get_name(obj), error))
        return FALSE;
    /* A VM whose state cannot be written would be lost at the next restart;
     * and a VMM that cannot write its own files dies saying nothing. */
    if (!domain_store_check_room(hv->store, error) ||
        !hv->hooks->spawn(hv, obj, incoming, error))
        return FALSE;
    if (incoming)
        hv_set_state(hv, obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
    else
        hv_set_state(hv, obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    return TRUE;
}

/* The words libvirt's QEMU log uses for why an instance ended. */
static const char *shutoff_reason_name(DomainShutoffReason reason)
{
    static const char *const names[] = {"unknown", "shutdown", "destroyed", "crashed",
                                        "migrated", "saved", "failed", "from-snapshot",
                                        "daemon"};
    return (guint)reason < G_N_ELEMENTS(names) ? names[reason] : "unknown";
}

void hv_instance_end(HvDriver *hv, DomainObj *obj, DomainShutoffReason reason)
{
    if (domain_obj_is_active(obj)) {
        g_autofree char *line =
            g_strdup_printf("shutting down, reason=%s", shutoff_reason_name(reason));
        vmm_log_append(hv->log, domain_obj_get_name(obj), line);
    }
    if (obj->instance_id) {
        domain_store_delete_state(hv->store, obj->instance_id, NULL);
        for (const char *const *s = hv->hooks->runtime_suffixes; s && *s; s++) {
            g_autofree char *p = domain_store_runtime_path(hv->store, obj->instance_id, *s);
            unlink(p);
        }
    }
    domain_obj_set_priv(obj, NULL, NULL);
    domain_list_deactivate(hv->list, obj, reason);
}

/* Ends obj's instance as crashed or failed and tells the listeners (unless it
 * is a hidden incoming instance nobody sees). */
static void end_and_report(HvDriver *hv, DomainObj *obj, DomainShutoffReason reason, int detail)
{
    DriverDomain d = {0};
    hv_domain_ref_of(obj, &d);
    gboolean hidden = domain_obj_is_hidden(obj);
    hv_instance_end(hv, obj, reason);
    if (!hidden)
        driver_event_emit(&hv->base, &d, HV_EVENT_STOPPED, detail);
    driver_domain_clear(&d);
}

void hv_driver_vm_gone(HvDriver *hv, const char *instance_id, gboolean guest_shutdown,
                       const char *why)
{
    GoneNotice *n = g_new0(GoneNotice, 1);
    n->kind = NOTICE_GONE;
    n->instance_id = g_strdup(instance_id);
    n->guest_shutdown = guest_shutdown;
    n->why = g_strdup(why ? why : "end of file");
    g_thread_pool_push(hv->reaper, n, NULL);
}

void hv_driver_vm_run_state_changed(HvDriver *hv, const char *instance_id)
{
    GoneNotice *n = g_new0(GoneNotice, 1);
    n->kind = NOTICE_RUN_STATE;
    n->instance_id = g_strdup(instance_id);
    g_thread_pool_push(hv->reaper, n, NULL);
}

void hv_driver_vm_guest_shutdown(HvDriver *hv, const char *instance_id)
{
    GoneNotice *n = g_new0(GoneNotice, 1);
    n->kind = NOTICE_GUEST_SHUTDOWN;
    n->instance_id = g_strdup(instance_id);
    g_thread_pool_push(hv->reaper, n, NULL);
}

/* The VMM's own status decides: events may arrive after our own pause or
 * resume already changed the state. */
static void reconcile_run_state(HvDriver *hv, DomainObj *obj)
{
    if (domain_obj_is_hidden(obj) || (hv->hooks->has_job && hv->hooks->has_job(obj)))
        return; /* a migration owns the run state */
    g_autoptr(GError) error = NULL;
    g_autofree char *status = hv->hooks->query_status(hv, obj, &error);
    if (!status)
        return; /* the monitor is going away: the gone notice follows */
    DomainState state = domain_obj_get_state(obj, NULL);
    if (g_str_equal(status, "running") && state == DOMAIN_STATE_PAUSED) {
        hv_set_state(hv, obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_UNPAUSED);
        hv_emit(hv, obj, HV_EVENT_RESUMED, HV_RESUMED_UNPAUSED);
    } else if (!g_str_equal(status, "running") && state == DOMAIN_STATE_RUNNING) {
        int reason = g_str_equal(status, "shutdown")       ? DOMAIN_PAUSED_SHUTTING_DOWN
                     : g_str_equal(status, "io-error")     ? DOMAIN_PAUSED_IOERROR
                     : g_str_equal(status, "internal-error") ? DOMAIN_PAUSED_CRASHED
                     : g_str_equal(status, "guest-panicked") ? DOMAIN_PAUSED_CRASHED
                                                             : DOMAIN_PAUSED_UNKNOWN;
        hv_set_state(hv, obj, DOMAIN_STATE_PAUSED, reason);
        hv_emit(hv, obj, HV_EVENT_SUSPENDED, HV_SUSPENDED_PAUSED);
    }
}

/* A VMM's monitor closed: the guest powered off, or the VMM died. */
static void handle_gone(HvDriver *hv, DomainObj *obj, const GoneNotice *n)
{
    if (hv->hooks->is_stopping(obj))
        return; /* our own doing: whoever stopped it ends the instance */
    gboolean shutdown = n->guest_shutdown;
    g_autofree char *last_words =
        !shutdown && hv->hooks->crash_reason ? hv->hooks->crash_reason(hv, obj) : NULL;
    if (shutdown)
        FERRY_INFO("domain '%s': %s (pid %d) shut down (%s)", domain_obj_get_name(obj),
                   hv->hooks->vmm_name, obj->pid, n->why);
    else
        FERRY_WARN("domain '%s' crashed: %s (pid %d) ended unexpectedly (%s)%s%s",
                   domain_obj_get_name(obj), hv->hooks->vmm_name, obj->pid, n->why,
                   last_words ? ": " : "", last_words ? last_words : "");
    if (!shutdown) /* a monitor that broke off means a VMM we cannot trust */
        hv->hooks->kill(hv, obj, FALSE);
    end_and_report(hv, obj, shutdown ? DOMAIN_SHUTOFF_SHUTDOWN : DOMAIN_SHUTOFF_CRASHED,
                   shutdown ? HV_STOPPED_SHUTDOWN : HV_STOPPED_CRASHED);
}

static void reaper_run(gpointer data, gpointer user_data)
{
    GoneNotice *n = data;
    HvDriver *hv = user_data;
    DomainObj *obj = domain_list_lookup_by_instance(hv->list, n->instance_id, NULL);
    /* No priv: the instance already ended, or the daemon is detaching. */
    if (obj && domain_obj_get_priv(obj)) {
        if (n->kind == NOTICE_GONE)
            handle_gone(hv, obj, n);
        else if (n->kind == NOTICE_RUN_STATE)
            reconcile_run_state(hv, obj);
        else if (!domain_obj_is_hidden(obj))
            hv_emit(hv, obj, HV_EVENT_SHUTDOWN, HV_SHUTDOWN_FINISHED);
    }
    domain_obj_end(obj);
    g_free(n->instance_id);
    g_free(n->why);
    g_free(n);
}

/* ---- queries ---- */

static GPtrArray *hv_list_all_domains(Driver *drv, guint flags, GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    g_autoptr(GPtrArray) objs = domain_list_collect(hv->list, flags, error);
    if (!objs)
        return NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)driver_domain_free);
    for (guint i = 0; i < objs->len; i++) {
        DomainObj *obj = objs->pdata[i];
        domain_obj_lock(obj);
        if (!domain_obj_is_removed(obj))
            g_ptr_array_add(out, hv_domain_ref_new(obj));
        domain_obj_unlock(obj);
    }
    return out;
}

static DriverDomain *finish_lookup(DomainObj *obj)
{
    if (!obj)
        return NULL;
    DriverDomain *d = hv_domain_ref_new(obj);
    domain_obj_end(obj);
    return d;
}

static DriverDomain *hv_lookup_by_name(Driver *drv, const char *name, GError **error)
{
    return finish_lookup(domain_list_lookup_by_name(hv_driver_of(drv)->list, name, error));
}

static DriverDomain *hv_lookup_by_uuid(Driver *drv, const guint8 *uuid, GError **error)
{
    return finish_lookup(domain_list_lookup_by_uuid(hv_driver_of(drv)->list, uuid, error));
}

static DriverDomain *hv_lookup_by_id(Driver *drv, int id, GError **error)
{
    return finish_lookup(domain_list_lookup_by_id(hv_driver_of(drv)->list, id, error));
}

static gboolean hv_get_state(Driver *drv, const DriverDomain *dom, int *state, int *reason,
                             GError **error)
{
    DomainObj *obj = hv_lookup(hv_driver_of(drv), dom, error);
    if (!obj)
        return FALSE;
    *state = domain_obj_get_state(obj, reason);
    domain_obj_end(obj);
    return TRUE;
}

static gboolean hv_get_info(Driver *drv, const DriverDomain *dom, DriverDomainInfo *info,
                            GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    DomainObj *obj = hv_lookup(hv, dom, error);
    if (!obj)
        return FALSE;
    DomainDef *def = domain_obj_get_def(obj);
    info->state = domain_obj_get_state(obj, NULL);
    info->max_mem_kib = def->memory_kib;
    info->memory_kib = def->current_memory_kib;
    /* nrVirtCpu: the vCPUs plugged in (<vcpu current=>), as libvirt reports
     * it; clients size their virDomainGetVcpus() calls by it. */
    info->vcpus = def->vcpus_current ? def->vcpus_current : def->vcpus;
    info->cpu_time_ns = domain_obj_get_priv(obj) ? hv->hooks->cpu_time_ns(obj) : 0;
    domain_obj_end(obj);
    return TRUE;
}

static char *hv_get_xml_desc(Driver *drv, const DriverDomain *dom, guint flags, GError **error)
{
    DomainObj *obj = hv_lookup(hv_driver_of(drv), dom, error);
    if (!obj)
        return NULL;
    char *xml = domain_obj_format_xml(obj, flags);
    domain_obj_end(obj);
    return xml;
}

static char *hv_get_os_type(Driver *drv, const DriverDomain *dom, GError **error)
{
    DomainObj *obj = hv_lookup(hv_driver_of(drv), dom, error);
    if (!obj)
        return NULL;
    char *t = g_strdup(domain_obj_get_def(obj)->os_type);
    domain_obj_end(obj);
    return t;
}

#define BOOL_QUERY(fn, expr)                                                                   \
    static int fn(Driver *drv, const DriverDomain *dom, GError **error)                        \
    {                                                                                          \
        DomainObj *obj = hv_lookup(hv_driver_of(drv), dom, error);                             \
        if (!obj)                                                                              \
            return -1;                                                                         \
        int v = (expr) ? 1 : 0;                                                                \
        domain_obj_end(obj);                                                                   \
        return v;                                                                              \
    }

BOOL_QUERY(hv_is_active, domain_obj_is_active(obj))
BOOL_QUERY(hv_is_persistent, domain_obj_is_persistent(obj))
BOOL_QUERY(hv_get_autostart, obj->autostart)

static gboolean hv_set_autostart(Driver *drv, const DriverDomain *dom, gboolean autostart,
                                 GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    DomainObj *obj = hv_lookup(hv, dom, error);
    if (!obj)
        return FALSE;
    gboolean ok = FALSE;
    if (!domain_obj_is_persistent(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "cannot set autostart for transient domain");
    } else if (domain_store_set_autostart(hv->store, domain_obj_get_name(obj), autostart, error)) {
        obj->autostart = autostart;
        ok = TRUE;
    }
    domain_obj_end(obj);
    return ok;
}

/* ---- lifecycle ---- */

static DriverDomain *hv_define_xml(Driver *drv, const char *xml, guint flags, GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    g_autoptr(DomainDef) def = hv_parse_xml(hv, xml, error);
    if (!def)
        return NULL;
    g_autoptr(DomainDef) saved_copy = domain_def_copy(def);
    DomainDef *old = NULL;
    DomainObj *obj = domain_list_add(hv->list, &def, 0, &old, error);
    if (!obj)
        return NULL;
    if (!domain_store_save_config(hv->store, saved_copy, error)) {
        if (!old)
            domain_list_undefine(hv->list, obj);
        domain_def_free(old);
        domain_obj_end(obj);
        return NULL;
    }
    hv_emit(hv, obj, HV_EVENT_DEFINED, old ? HV_DEFINED_UPDATED : HV_DEFINED_ADDED);
    domain_def_free(old);
    return finish_lookup(obj);
}

static gboolean hv_undefine(Driver *drv, const DriverDomain *dom, guint flags, GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    DomainObj *obj = hv_lookup(hv, dom, error);
    if (!obj)
        return FALSE;
    if (!domain_obj_is_persistent(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "cannot undefine transient domain");
        domain_obj_end(obj);
        return FALSE;
    }
    g_autofree char *name = g_strdup(domain_obj_get_name(obj));
    if (!domain_store_delete_config(hv->store, name, error)) {
        domain_obj_end(obj);
        return FALSE;
    }
    domain_store_set_autostart(hv->store, name, FALSE, NULL);
    obj->autostart = FALSE;
    hv_emit(hv, obj, HV_EVENT_UNDEFINED, 0);
    domain_list_undefine(hv->list, obj);
    domain_obj_end(obj);
    return TRUE;
}

/* Starts an activated obj's VMM; on failure the instance is ended again. */
static gboolean start_activated(HvDriver *hv, DomainObj *obj, guint flags, GError **error)
{
    if (!hv_instance_start(hv, obj, FALSE, error)) {
        domain_list_deactivate(hv->list, obj, DOMAIN_SHUTOFF_FAILED);
        return FALSE;
    }
    hv_emit(hv, obj, HV_EVENT_STARTED, HV_STARTED_BOOTED);
    if (flags & 1) { /* VIR_DOMAIN_START_PAUSED */
        if (!hv->hooks->suspend(hv, obj, error))
            return FALSE;
        hv_set_state(hv, obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_USER);
        hv_emit(hv, obj, HV_EVENT_SUSPENDED, HV_SUSPENDED_PAUSED);
    }
    return TRUE;
}

static DriverDomain *hv_create(Driver *drv, const DriverDomain *dom, guint flags, GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    DomainObj *obj = hv_lookup(hv, dom, error);
    if (!obj)
        return NULL;
    if (domain_obj_is_active(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is already running");
        domain_obj_end(obj);
        return NULL;
    }
    DomainDef *live = domain_def_copy(obj->persistent_def);
    if (!domain_list_activate(hv->list, obj, &live, error)) {
        domain_def_free(live);
        domain_obj_end(obj);
        return NULL;
    }
    gboolean ok = start_activated(hv, obj, flags, error);
    DriverDomain *d = ok ? hv_domain_ref_new(obj) : NULL;
    domain_obj_end(obj);
    return d;
}

static DriverDomain *hv_create_xml(Driver *drv, const char *xml, guint flags, GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    g_autoptr(DomainDef) def = hv_parse_xml(hv, xml, error);
    if (!def)
        return NULL;
    DomainObj *obj = domain_list_add(hv->list, &def, DOMAIN_LIST_ADD_LIVE, NULL, error);
    if (!obj)
        return NULL;
    gboolean ok = start_activated(hv, obj, flags, error);
    DriverDomain *d = ok ? hv_domain_ref_new(obj) : NULL;
    domain_obj_end(obj);
    return d;
}

static gboolean hv_destroy(Driver *drv, const DriverDomain *dom, guint flags, GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    DomainObj *obj = hv_lookup(hv, dom, error);
    if (!obj)
        return FALSE;
    if (!hv_check_active(obj, error)) {
        domain_obj_end(obj);
        return FALSE;
    }
    if (hv->hooks->has_job && hv->hooks->has_job(obj))
        hv->hooks->abort_job(hv, obj, "the domain was destroyed");
    hv->hooks->kill(hv, obj, TRUE);
    DriverDomain d = {0};
    hv_domain_ref_of(obj, &d);
    hv_instance_end(hv, obj, DOMAIN_SHUTOFF_DESTROYED);
    domain_obj_end(obj);
    driver_event_emit(&hv->base, &d, HV_EVENT_STOPPED, HV_STOPPED_DESTROYED);
    driver_domain_clear(&d);
    return TRUE;
}

/* Looks up a running domain for a guest action; NULL (error set) if it is not
 * running or a migration job owns it. */
static DomainObj *lookup_for_action(HvDriver *hv, const DriverDomain *dom, GError **error)
{
    DomainObj *obj = hv_lookup(hv, dom, error);
    if (!obj)
        return NULL;
    if (!hv_check_active(obj, error)) {
        domain_obj_end(obj);
        return NULL;
    }
    if (hv->hooks->has_job && hv->hooks->has_job(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain has a migration job in progress");
        domain_obj_end(obj);
        return NULL;
    }
    return obj;
}

static gboolean hv_suspend(Driver *drv, const DriverDomain *dom, GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    /* An outgoing migration lets the user pause the guest so that it
     * converges (virsh migrate --timeout N --timeout-suspend), as libvirt. */
    DomainObj *obj = hv_lookup(hv, dom, error);
    gboolean migrating = obj && hv->hooks->job_allows_pause && hv->hooks->job_allows_pause(obj);
    if (obj && !migrating) {
        domain_obj_end(obj);
        obj = lookup_for_action(hv, dom, error);
    }
    if (!obj)
        return FALSE;
    gboolean ok = TRUE; /* already paused: nothing to do, as libvirt */
    if (domain_obj_get_state(obj, NULL) != DOMAIN_STATE_PAUSED) {
        ok = hv->hooks->suspend(hv, obj, error);
        if (ok) {
            hv_set_state(hv, obj, DOMAIN_STATE_PAUSED,
                         migrating ? DOMAIN_PAUSED_MIGRATION : DOMAIN_PAUSED_USER);
            hv_emit(hv, obj, HV_EVENT_SUSPENDED,
                    migrating ? HV_SUSPENDED_MIGRATED : HV_SUSPENDED_PAUSED);
        }
    }
    domain_obj_end(obj);
    return ok;
}

static gboolean hv_resume(Driver *drv, const DriverDomain *dom, GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    DomainObj *obj = lookup_for_action(hv, dom, error);
    if (!obj)
        return FALSE;
    gboolean ok = TRUE;
    int reason = 0;
    DomainState state = domain_obj_get_state(obj, &reason);
    if (state == DOMAIN_STATE_PAUSED &&
        (reason == DOMAIN_PAUSED_POSTCOPY || reason == DOMAIN_PAUSED_POSTCOPY_FAILED)) {
        /* The guest runs on the destination of its post-copy migration,
         * with part of its memory still here: running this copy too would
         * run it twice. */
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain is paused by a post-copy migration: the guest runs on its "
                    "destination, part of its memory is still here; resume the migration "
                    "(virsh migrate --postcopy --postcopy-resume), not this copy");
        ok = FALSE;
    } else if (state == DOMAIN_STATE_PAUSED) {
        ok = hv->hooks->resume(hv, obj, error);
        if (ok) {
            hv_set_state(hv, obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_UNPAUSED);
            hv_emit(hv, obj, HV_EVENT_RESUMED, HV_RESUMED_UNPAUSED);
        }
    }
    domain_obj_end(obj);
    return ok;
}

static gboolean hv_shutdown(Driver *drv, const DriverDomain *dom, GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    DomainObj *obj = hv_lookup(hv, dom, error);
    if (!obj)
        return FALSE;
    /* The guest powers off; the reaper sees the monitor close and stops the domain. */
    gboolean ok = hv_check_active(obj, error) && hv->hooks->shutdown(hv, obj, error);
    domain_obj_end(obj);
    return ok;
}

static gboolean hv_reboot(Driver *drv, const DriverDomain *dom, guint flags, GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    if (flags) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function virDomainReboot", flags);
        return FALSE;
    }
    DomainObj *obj = lookup_for_action(hv, dom, error);
    if (!obj)
        return FALSE;
    gboolean ok = hv->hooks->reboot(hv, obj, error);
    domain_obj_end(obj);
    return ok;
}

void hv_driver_fill_ops(DriverOps *ops, const HvDriverHooks *hooks)
{
    ops->list_all_domains = hv_list_all_domains;
    ops->lookup_by_name = hv_lookup_by_name;
    ops->lookup_by_uuid = hv_lookup_by_uuid;
    ops->lookup_by_id = hv_lookup_by_id;
    ops->get_state = hv_get_state;
    ops->get_info = hv_get_info;
    ops->get_xml_desc = hv_get_xml_desc;
    ops->get_os_type = hv_get_os_type;
    ops->is_active = hv_is_active;
    ops->is_persistent = hv_is_persistent;
    ops->get_autostart = hv_get_autostart;
    ops->set_autostart = hv_set_autostart;
    ops->define_xml = hv_define_xml;
    ops->undefine = hv_undefine;
    ops->create = hv_create;
    ops->create_xml = hv_create_xml;
    ops->destroy = hv_destroy;
    ops->suspend = hv_suspend;
    ops->resume = hv_resume;
    ops->shutdown = hv_shutdown;
    ops->reboot = hooks->reboot ? hv_reboot : NULL;
}

/* ---- start and stop ---- */

/* A VM left running by a previous daemon: reconnect, or record that it died. */
static void reattach(HvDriver *hv, DomainObj *obj)
{
    domain_obj_lock(obj);
    g_autoptr(GError) error = NULL;
    if (domain_obj_is_hidden(obj)) {
        /* An incoming migration whose daemon died: its stream is gone for good. */
        FERRY_WARN("domain '%s': dropping an incoming migration left by the previous daemon",
                   domain_obj_get_name(obj));
        hv->hooks->kill(hv, obj, FALSE);
        hv_instance_end(hv, obj, DOMAIN_SHUTOFF_FAILED);
        if (!domain_obj_is_removed(obj))
            domain_list_remove(hv->list, obj);
        domain_obj_unlock(obj);
        return;
    }
    gboolean attached = obj->qmp_path && hv->hooks->reattach(hv, obj, &error);
    if (!attached) {
        FERRY_WARN("domain '%s' was running before the restart, but %s: marking it crashed",
                   domain_obj_get_name(obj), error ? error->message : "it has no monitor");
        hv->hooks->kill(hv, obj, FALSE);
        end_and_report(hv, obj, DOMAIN_SHUTOFF_CRASHED, HV_STOPPED_CRASHED);
    } else {
        /* The VM may have been paused or resumed while no daemon watched it. */
        g_autofree char *status = hv->hooks->query_status(hv, obj, NULL);
        if (status && g_str_equal(status, "running"))
            domain_obj_set_state(obj, DOMAIN_STATE_RUNNING,
                                 domain_obj_get_state(obj, NULL) == DOMAIN_STATE_RUNNING
                                     ? obj->reason
                                     : DOMAIN_RUNNING_UNPAUSED);
        else if (status && domain_obj_get_state(obj, NULL) != DOMAIN_STATE_PAUSED)
            domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_UNKNOWN);
        domain_store_save_state(hv->store, obj, NULL);
        FERRY_INFO("domain '%s': reattached to %s pid %d", domain_obj_get_name(obj),
                   hv->hooks->vmm_name, obj->pid);
    }
    domain_obj_unlock(obj);
}

void hv_driver_autostart(HvDriver *hv)
{
    g_autoptr(GPtrArray) objs =
        domain_list_collect(hv->list, DOMAIN_LIST_INACTIVE | DOMAIN_LIST_AUTOSTART, NULL);
    for (guint i = 0; objs && i < objs->len; i++) {
        DomainObj *obj = objs->pdata[i];
        DriverDomain d = {0};
        domain_obj_lock(obj);
        hv_domain_ref_of(obj, &d);
        domain_obj_unlock(obj);
        g_autoptr(GError) error = NULL;
        g_autoptr(DriverDomain) started = hv->base.ops->create(&hv->base, &d, 0, &error);
        if (!started)
            FERRY_WARN("autostart of domain '%s' failed: %s", d.name, error->message);
        driver_domain_clear(&d);
    }
}

gboolean hv_driver_init(HvDriver *hv, const DriverOps *ops, const HvDriverHooks *hooks,
                        gpointer owner, const char *config_dir, const char *run_dir,
                        const VmmLogConfig *log, GError **error)
{
    hv->hooks = hooks;
    hv->owner = owner;
    hv->log = vmm_log_config_copy(log);
    driver_init(&hv->base, ops, hv);
    hv->list = domain_list_new();
    hv->reaper = g_thread_pool_new(reaper_run, hv, 1, FALSE, NULL);
    hv->store = domain_store_new(config_dir, run_dir, error);
    if (!hv->store)
        return FALSE;
    g_autoptr(GPtrArray) restored = domain_store_load(hv->store, hv->list, error);
    if (!restored)
        return FALSE;
    for (guint i = 0; i < restored->len; i++)
        reattach(hv, restored->pdata[i]);
    return TRUE;
}

void hv_driver_detach_all(HvDriver *hv)
{
    /* Leave the VMs running: drop our monitor connections first, so no "VM
     * gone" notice arrives while we tear down. */
    if (hv->list) {
        g_autoptr(GPtrArray) instances = domain_list_get_instances(hv->list);
        for (guint i = 0; i < instances->len; i++) {
            DomainObj *obj = instances->pdata[i];
            domain_obj_lock(obj);
            if (domain_obj_get_priv(obj))
                hv->hooks->detach(hv, obj);
            domain_obj_set_priv(obj, NULL, NULL);
            domain_obj_unlock(obj);
        }
    }
    if (hv->reaper)
        g_thread_pool_free(hv->reaper, FALSE, TRUE);
    hv->reaper = NULL;
}

void hv_driver_cleanup(HvDriver *hv)
{
    hv_driver_detach_all(hv);
    domain_list_free(hv->list);
    hv->list = NULL;
    domain_store_free(hv->store);
    hv->store = NULL;
    vmm_log_config_free(hv->log);
    hv->log = NULL;
    driver_clear(&hv->base);
}
