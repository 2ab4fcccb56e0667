/* The sim driver: domains run as ferry-vmm processes. Lifecycle, queries,
 * events, crash detection, and finding running VMs again after a restart. */
#include "driver/sim/sim-driver.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "driver/sim/sim-private.h"
#include "util/error.h"
#include "util/log.h"
#include "util/uuid.h"

#define FERRY_LOG_MODULE "sim.driver"

typedef struct {
    char *instance_id;
    gboolean guest_shutdown;
    char *why;
} GoneNotice;

/* ---- helpers shared with sim-migration.c ---- */

DomainObj *sim_lookup(SimDriver *sd, const DriverDomain *dom, GError **error)
{
    DomainObj *obj = domain_list_lookup_by_uuid(sd->list, dom->uuid, NULL);
    if (!obj) {
        g_autofree char *uuid = ferry_uuid_to_string(dom->uuid);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_DOMAIN,
                    "no domain with matching uuid '%s' (%s)", uuid, dom->name);
    }
    return obj;
}

void sim_domain_ref_of(DomainObj *obj, DriverDomain *out)
{
    out->name = g_strdup(domain_obj_get_name(obj));
    memcpy(out->uuid, domain_obj_get_uuid(obj), 16);
    out->id = obj->id;
}

static DriverDomain *domain_ref_new(DomainObj *obj)
{
    DriverDomain *d = g_new0(DriverDomain, 1);
    sim_domain_ref_of(obj, d);
    return d;
}

void sim_emit(SimDriver *sd, DomainObj *obj, int event, int detail)
{
    DriverDomain d = {0};
    sim_domain_ref_of(obj, &d);
    driver_event_emit(&sd->base, &d, event, detail);
    driver_domain_clear(&d);
}

gboolean sim_check_active(DomainObj *obj, GError **error)
{
    if (!domain_obj_is_active(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is not running");
        return FALSE;
    }
    return TRUE;
}

static void instance_free(gpointer data)
{
    SimInstance *inst = data;
    sim_migration_job_unref(inst->job);
    sim_vm_unref(inst->vm);
    driver_job_info_clear(&inst->completed);
    g_free(inst);
}

static void on_vm_gone(const char *instance_id, gboolean guest_shutdown, const GError *why,
                       gpointer data)
{
    SimDriver *sd = data;
    GoneNotice *n = g_new0(GoneNotice, 1);
    n->instance_id = g_strdup(instance_id);
    n->guest_shutdown = guest_shutdown;
    n->why = g_strdup(why ? why->message : "end of file");
    g_thread_pool_push(sd->reaper, n, NULL);
}

gboolean sim_instance_start(SimDriver *sd, DomainObj *obj, gboolean incoming, GError **error)
{
    g_autofree char *qmp = domain_store_runtime_path(sd->store, obj->instance_id, ".qmp");
    g_autofree char *pid = domain_store_runtime_path(sd->store, obj->instance_id, ".pid");
    g_autofree char *log = domain_store_runtime_path(sd->store, obj->instance_id, ".log");
    SimVmSpawnOptions opts = {.vmm_binary = sd->vmm_binary, .qmp_path = qmp, .pid_path = pid,
                              .log_path = log, .instance_id = obj->instance_id,
                              .incoming = incoming, .on_gone = on_vm_gone, .data = sd};
    SimVm *vm = sim_vm_spawn(obj->live_def, &opts, error);
    if (!vm)
        return FALSE;
    SimInstance *inst = g_new0(SimInstance, 1);
    inst->vm = vm;
    domain_obj_set_priv(obj, inst, instance_free);
    obj->pid = sim_vm_get_pid(vm);
    g_free(obj->qmp_path);
    obj->qmp_path = g_strdup(qmp);
    if (incoming)
        domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
    else
        domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    g_autoptr(GError) save_error = NULL;
    if (!domain_store_save_state(sd->store, obj, &save_error))
        FERRY_WARN("domain '%s': cannot save runtime state: %s", domain_obj_get_name(obj),
                   save_error->message);
    return TRUE;
}

void sim_instance_end(SimDriver *sd, DomainObj *obj, DomainShutoffReason reason)
{
    if (obj->instance_id) {
        domain_store_delete_state(sd->store, obj->instance_id, NULL);
        const char *suffixes[] = {".qmp", ".pid"};
        for (guint i = 0; i < G_N_ELEMENTS(suffixes); i++) {
            g_autofree char *p = domain_store_runtime_path(sd->store, obj->instance_id,
                                                           suffixes[i]);
            unlink(p);
        }
    }
    domain_obj_set_priv(obj, NULL, NULL);
    domain_list_deactivate(sd->list, obj, reason);
}

/* A VMM's monitor closed: the guest powered off, or the VMM died. */
static void reaper_run(gpointer data, gpointer user_data)
{
    GoneNotice *n = data;
    SimDriver *sd = user_data;
    DomainObj *obj = domain_list_lookup_by_instance(sd->list, n->instance_id, NULL);
    if (obj) {
        SimInstance *inst = domain_obj_get_priv(obj);
        if (inst && !sim_vm_is_stopping(inst->vm)) {
            gboolean shutdown = n->guest_shutdown;
            FERRY_INFO("domain '%s': ferry-vmm (pid %d) %s (%s)", domain_obj_get_name(obj),
                       obj->pid, shutdown ? "shut down" : "ended unexpectedly", n->why);
            if (!shutdown)
                kill(obj->pid, SIGKILL); /* a monitor that broke off means a VMM we cannot trust */
            DriverDomain d = {0};
            sim_domain_ref_of(obj, &d);
            gboolean hidden = domain_obj_is_hidden(obj);
            sim_instance_end(sd, obj, shutdown ? DOMAIN_SHUTOFF_SHUTDOWN : DOMAIN_SHUTOFF_CRASHED);
            if (!hidden)
                driver_event_emit(&sd->base, &d, SIM_EVENT_STOPPED,
                                  shutdown ? SIM_STOPPED_SHUTDOWN : SIM_STOPPED_CRASHED);
            driver_domain_clear(&d);
        }
        domain_obj_end(obj);
    }
    g_free(n->instance_id);
    g_free(n->why);
    g_free(n);
}

/* ---- queries ---- */

static char *sim_get_capabilities(Driver *drv, GError **error)
{
    return driver_node_format_capabilities(
        "  <guest>\n    <os_type>hvm</os_type>\n    <arch name='x86_64'>\n"
        "      <wordsize>64</wordsize>\n      <emulator>ferry-vmm</emulator>\n"
        "      <domain type='sim'/>\n    </arch>\n    <features>\n"
        "      <acpi default='on' toggle='yes'/>\n    </features>\n  </guest>\n");
}

static GPtrArray *sim_list_all_domains(Driver *drv, guint flags, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    g_autoptr(GPtrArray) objs = domain_list_collect(sd->list, flags, error);
    if (!objs)
        return NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)driver_domain_free);
    for (guint i = 0; i < objs->len; i++) {
        DomainObj *obj = objs->pdata[i];
        domain_obj_lock(obj);
        if (!domain_obj_is_removed(obj))
            g_ptr_array_add(out, domain_ref_new(obj));
        domain_obj_unlock(obj);
    }
    return out;
}

static DriverDomain *finish_lookup(DomainObj *obj)
{
    if (!obj)
        return NULL;
    DriverDomain *d = domain_ref_new(obj);
    domain_obj_end(obj);
    return d;
}

static DriverDomain *sim_lookup_by_name(Driver *drv, const char *name, GError **error)
{
    return finish_lookup(domain_list_lookup_by_name(sim_driver_of(drv)->list, name, error));
}

static DriverDomain *sim_lookup_by_uuid(Driver *drv, const guint8 *uuid, GError **error)
{
    return finish_lookup(domain_list_lookup_by_uuid(sim_driver_of(drv)->list, uuid, error));
}

static DriverDomain *sim_lookup_by_id(Driver *drv, int id, GError **error)
{
    return finish_lookup(domain_list_lookup_by_id(sim_driver_of(drv)->list, id, error));
}

static gboolean sim_get_state(Driver *drv, const DriverDomain *dom, int *state, int *reason,
                              GError **error)
{
    DomainObj *obj = sim_lookup(sim_driver_of(drv), dom, error);
    if (!obj)
        return FALSE;
    *state = domain_obj_get_state(obj, reason);
    domain_obj_end(obj);
    return TRUE;
}

static gboolean sim_get_info(Driver *drv, const DriverDomain *dom, DriverDomainInfo *info,
                             GError **error)
{
    DomainObj *obj = sim_lookup(sim_driver_of(drv), dom, error);
    if (!obj)
        return FALSE;
    DomainDef *def = domain_obj_get_def(obj);
    info->state = domain_obj_get_state(obj, NULL);
    info->max_mem_kib = def->memory_kib;
    info->memory_kib = def->current_memory_kib;
    info->vcpus = def->vcpus;
    SimInstance *inst = domain_obj_get_priv(obj);
    info->cpu_time_ns = inst ? sim_vm_cpu_time_ns(inst->vm) : 0;
    domain_obj_end(obj);
    return TRUE;
}

static char *sim_get_xml_desc(Driver *drv, const DriverDomain *dom, guint flags, GError **error)
{
    DomainObj *obj = sim_lookup(sim_driver_of(drv), dom, error);
    if (!obj)
        return NULL;
    char *xml = domain_obj_format_xml(obj, flags);
    domain_obj_end(obj);
    return xml;
}

static char *sim_get_os_type(Driver *drv, const DriverDomain *dom, GError **error)
{
    DomainObj *obj = sim_lookup(sim_driver_of(drv), dom, error);
    if (!obj)
        return NULL;
    char *t = g_strdup(domain_obj_get_def(obj)->os_type);
    domain_obj_end(obj);
    return t;
}

#define BOOL_QUERY(fn, expr)                                                                   \
    static int fn(Driver *drv, const DriverDomain *dom, GError **error)                        \
    {                                                                                          \
        DomainObj *obj = sim_lookup(sim_driver_of(drv), dom, error);                           \
        if (!obj)                                                                              \
            return -1;                                                                         \
        int v = (expr) ? 1 : 0;                                                                \
        domain_obj_end(obj);                                                                   \
        return v;                                                                              \
    }

BOOL_QUERY(sim_is_active, domain_obj_is_active(obj))
BOOL_QUERY(sim_is_persistent, domain_obj_is_persistent(obj))
BOOL_QUERY(sim_get_autostart, obj->autostart)

static gboolean sim_set_autostart(Driver *drv, const DriverDomain *dom, gboolean autostart,
                                  GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    DomainObj *obj = sim_lookup(sd, dom, error);
    if (!obj)
        return FALSE;
    gboolean ok = FALSE;
    if (!domain_obj_is_persistent(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "cannot set autostart for transient domain");
    } else if (domain_store_set_autostart(sd->store, domain_obj_get_name(obj), autostart, error)) {
        obj->autostart = autostart;
        ok = TRUE;
    }
    domain_obj_end(obj);
    return ok;
}

/* ---- lifecycle ---- */

static DriverDomain *sim_define_xml(Driver *drv, const char *xml, guint flags, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    g_autoptr(DomainDef) def = domain_def_parse_string(xml, error);
    if (!def)
        return NULL;
    g_autoptr(DomainDef) saved_copy = domain_def_copy(def);
    DomainDef *old = NULL;
    DomainObj *obj = domain_list_add(sd->list, &def, 0, &old, error);
    if (!obj)
        return NULL;
    if (!domain_store_save_config(sd->store, saved_copy, error)) {
        if (!old)
            domain_list_undefine(sd->list, obj);
        domain_def_free(old);
        domain_obj_end(obj);
        return NULL;
    }
    sim_emit(sd, obj, SIM_EVENT_DEFINED, old ? SIM_DEFINED_UPDATED : SIM_DEFINED_ADDED);
    domain_def_free(old);
    return finish_lookup(obj);
}

static gboolean sim_undefine(Driver *drv, const DriverDomain *dom, guint flags, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    DomainObj *obj = sim_lookup(sd, dom, error);
    if (!obj)
        return FALSE;
    if (!domain_obj_is_persistent(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "cannot undefine transient domain");
        domain_obj_end(obj);
        return FALSE;
    }
    g_autofree char *name = g_strdup(domain_obj_get_name(obj));
    if (!domain_store_delete_config(sd->store, name, error)) {
        domain_obj_end(obj);
        return FALSE;
    }
    domain_store_set_autostart(sd->store, name, FALSE, NULL);
    obj->autostart = FALSE;
    sim_emit(sd, obj, SIM_EVENT_UNDEFINED, 0);
    domain_list_undefine(sd->list, obj);
    domain_obj_end(obj);
    return TRUE;
}

/* Starts an activated obj's VMM; on failure the instance is ended again. */
static gboolean start_activated(SimDriver *sd, DomainObj *obj, guint flags, GError **error)
{
    if (!sim_instance_start(sd, obj, FALSE, error)) {
        domain_list_deactivate(sd->list, obj, DOMAIN_SHUTOFF_FAILED);
        return FALSE;
    }
    sim_emit(sd, obj, SIM_EVENT_STARTED, SIM_STARTED_BOOTED);
    if (flags & 1) { /* VIR_DOMAIN_START_PAUSED */
        SimInstance *inst = domain_obj_get_priv(obj);
        g_autoptr(JsonNode) r = sim_vm_qmp(inst->vm, "stop", NULL, error);
        if (!r)
            return FALSE;
        domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_USER);
        domain_store_save_state(sd->store, obj, NULL);
        sim_emit(sd, obj, SIM_EVENT_SUSPENDED, SIM_SUSPENDED_PAUSED);
    }
    return TRUE;
}

static DriverDomain *sim_create(Driver *drv, const DriverDomain *dom, guint flags, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    DomainObj *obj = sim_lookup(sd, dom, error);
    if (!obj)
        return NULL;
    if (domain_obj_is_active(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is already running");
        domain_obj_end(obj);
        return NULL;
    }
    DomainDef *live = domain_def_copy(obj->persistent_def);
    if (!domain_list_activate(sd->list, obj, &live, error)) {
        domain_def_free(live);
        domain_obj_end(obj);
        return NULL;
    }
    gboolean ok = start_activated(sd, obj, flags, error);
    DriverDomain *d = ok ? domain_ref_new(obj) : NULL;
    domain_obj_end(obj);
    return d;
}

static DriverDomain *sim_create_xml(Driver *drv, const char *xml, guint flags, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    g_autoptr(DomainDef) def = domain_def_parse_string(xml, error);
    if (!def)
        return NULL;
    DomainObj *obj = domain_list_add(sd->list, &def, DOMAIN_LIST_ADD_LIVE, NULL, error);
    if (!obj)
        return NULL;
    gboolean ok = start_activated(sd, obj, flags, error);
    DriverDomain *d = ok ? domain_ref_new(obj) : NULL;
    domain_obj_end(obj);
    return d;
}

static gboolean sim_destroy(Driver *drv, const DriverDomain *dom, guint flags, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    DomainObj *obj = sim_lookup(sd, dom, error);
    if (!obj)
        return FALSE;
    if (!sim_check_active(obj, error)) {
        domain_obj_end(obj);
        return FALSE;
    }
    SimInstance *inst = domain_obj_get_priv(obj);
    if (inst && inst->job)
        sim_migration_abort_locked(sd, obj, "the domain was destroyed");
    if (inst)
        sim_vm_kill(inst->vm);
    DriverDomain d = {0};
    sim_domain_ref_of(obj, &d);
    sim_instance_end(sd, obj, DOMAIN_SHUTOFF_DESTROYED);
    domain_obj_end(obj);
    driver_event_emit(&sd->base, &d, SIM_EVENT_STOPPED, SIM_STOPPED_DESTROYED);
    driver_domain_clear(&d);
    return TRUE;
}

static gboolean sim_suspend(Driver *drv, const DriverDomain *dom, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    DomainObj *obj = sim_lookup(sd, dom, error);
    if (!obj)
        return FALSE;
    gboolean ok = FALSE;
    SimInstance *inst = domain_obj_get_priv(obj);
    if (!sim_check_active(obj, error)) {
    } else if (inst->job) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain has a migration job in progress");
    } else if (domain_obj_get_state(obj, NULL) == DOMAIN_STATE_PAUSED) {
        ok = TRUE; /* already paused: nothing to do, as libvirt */
    } else {
        g_autoptr(JsonNode) r = sim_vm_qmp(inst->vm, "stop", NULL, error);
        if (r) {
            domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_USER);
            domain_store_save_state(sd->store, obj, NULL);
            sim_emit(sd, obj, SIM_EVENT_SUSPENDED, SIM_SUSPENDED_PAUSED);
            ok = TRUE;
        }
    }
    domain_obj_end(obj);
    return ok;
}

static gboolean sim_resume(Driver *drv, const DriverDomain *dom, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    DomainObj *obj = sim_lookup(sd, dom, error);
    if (!obj)
        return FALSE;
    gboolean ok = FALSE;
    SimInstance *inst = domain_obj_get_priv(obj);
    if (!sim_check_active(obj, error)) {
    } else if (inst->job) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain has a migration job in progress");
    } else if (domain_obj_get_state(obj, NULL) != DOMAIN_STATE_PAUSED) {
        ok = TRUE;
    } else {
        g_autoptr(JsonNode) r = sim_vm_qmp(inst->vm, "cont", NULL, error);
        if (r) {
            domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_UNPAUSED);
            domain_store_save_state(sd->store, obj, NULL);
            sim_emit(sd, obj, SIM_EVENT_RESUMED, SIM_RESUMED_UNPAUSED);
            ok = TRUE;
        }
    }
    domain_obj_end(obj);
    return ok;
}

static gboolean sim_shutdown(Driver *drv, const DriverDomain *dom, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    DomainObj *obj = sim_lookup(sd, dom, error);
    if (!obj)
        return FALSE;
    gboolean ok = FALSE;
    SimInstance *inst = domain_obj_get_priv(obj);
    if (sim_check_active(obj, error)) {
        /* The guest powers off; the reaper sees the monitor close and stops the domain. */
        g_autoptr(JsonNode) r = sim_vm_qmp(inst->vm, "system_powerdown", NULL, error);
        ok = r != NULL;
    }
    domain_obj_end(obj);
    return ok;
}

/* ---- start and stop of the driver ---- */

static DriverOps sim_ops = {
    .name = "sim",
    .type = "SIM",
    .version = 1000, /* 0.1.0 */
    .canonical_uri = "sim:///system",
    .get_capabilities = sim_get_capabilities,
    .list_all_domains = sim_list_all_domains,
    .lookup_by_name = sim_lookup_by_name,
    .lookup_by_uuid = sim_lookup_by_uuid,
    .lookup_by_id = sim_lookup_by_id,
    .get_state = sim_get_state,
    .get_info = sim_get_info,
    .get_xml_desc = sim_get_xml_desc,
    .get_os_type = sim_get_os_type,
    .is_active = sim_is_active,
    .is_persistent = sim_is_persistent,
    .get_autostart = sim_get_autostart,
    .set_autostart = sim_set_autostart,
    .define_xml = sim_define_xml,
    .undefine = sim_undefine,
    .create = sim_create,
    .create_xml = sim_create_xml,
    .destroy = sim_destroy,
    .suspend = sim_suspend,
    .resume = sim_resume,
    .shutdown = sim_shutdown,
};

/* A VM left running by a previous daemon: reconnect, or record that it died. */
static void reattach(SimDriver *sd, DomainObj *obj)
{
    domain_obj_lock(obj);
    g_autoptr(GError) error = NULL;
    if (domain_obj_is_hidden(obj)) {
        /* An incoming migration whose daemon died: its stream is gone for good. */
        FERRY_WARN("domain '%s': dropping an incoming migration left by the previous daemon",
                   domain_obj_get_name(obj));
        if (obj->pid > 0)
            kill(obj->pid, SIGKILL);
        sim_instance_end(sd, obj, DOMAIN_SHUTOFF_FAILED);
        if (!domain_obj_is_removed(obj))
            domain_list_remove(sd->list, obj);
        domain_obj_unlock(obj);
        return;
    }
    SimVm *vm = obj->qmp_path ? sim_vm_attach(obj->pid, obj->qmp_path, obj->instance_id,
                                              on_vm_gone, sd, &error)
                              : NULL;
    if (!vm) {
        FERRY_WARN("domain '%s' was running before the restart, but %s: marking it crashed",
                   domain_obj_get_name(obj), error ? error->message : "it has no monitor");
        if (obj->pid > 0)
            kill(obj->pid, SIGKILL);
        gboolean hidden = domain_obj_is_hidden(obj);
        DriverDomain d = {0};
        sim_domain_ref_of(obj, &d);
        sim_instance_end(sd, obj, DOMAIN_SHUTOFF_CRASHED);
        if (!hidden)
            driver_event_emit(&sd->base, &d, SIM_EVENT_STOPPED, SIM_STOPPED_CRASHED);
        driver_domain_clear(&d);
    } else {
        SimInstance *inst = g_new0(SimInstance, 1);
        inst->vm = vm;
        domain_obj_set_priv(obj, inst, instance_free);
        /* The VM may have been paused or resumed while no daemon watched it. */
        g_autofree char *status = sim_vm_query_status(vm, NULL);
        if (status && g_str_equal(status, "running"))
            domain_obj_set_state(obj, DOMAIN_STATE_RUNNING,
                                 domain_obj_get_state(obj, NULL) == DOMAIN_STATE_RUNNING
                                     ? obj->reason
                                     : DOMAIN_RUNNING_UNPAUSED);
        else if (status && domain_obj_get_state(obj, NULL) != DOMAIN_STATE_PAUSED)
            domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_UNKNOWN);
        domain_store_save_state(sd->store, obj, NULL);
        FERRY_INFO("domain '%s': reattached to ferry-vmm pid %d", domain_obj_get_name(obj),
                   obj->pid);
    }
    domain_obj_unlock(obj);
}

static void autostart_all(SimDriver *sd)
{
    g_autoptr(GPtrArray) objs =
        domain_list_collect(sd->list, DOMAIN_LIST_INACTIVE | DOMAIN_LIST_AUTOSTART, NULL);
    for (guint i = 0; objs && i < objs->len; i++) {
        DomainObj *obj = objs->pdata[i];
        DriverDomain d = {0};
        domain_obj_lock(obj);
        sim_domain_ref_of(obj, &d);
        domain_obj_unlock(obj);
        g_autoptr(GError) error = NULL;
        g_autoptr(DriverDomain) started = sim_create(&sd->base, &d, 0, &error);
        if (!started)
            FERRY_WARN("autostart of domain '%s' failed: %s", d.name, error->message);
        driver_domain_clear(&d);
    }
}

void sim_driver_register_migration(DriverOps *ops);

Driver *sim_driver_open(const SimDriverConfig *config, GError **error)
{
    SimDriver *sd = g_new0(SimDriver, 1);
    sd->vmm_binary = g_strdup(config->vmm_binary);
    sd->migration_port_min = config->migration_port_min;
    sd->migration_port_max = config->migration_port_max;
    sd->migration_address = g_strdup(config->migration_address);
    sd->migration_pki_dir = g_strdup(config->migration_pki_dir);
    sd->migration_tls = config->migration_tls ? rpc_tls_context_ref(config->migration_tls) : NULL;
    sim_driver_register_migration(&sim_ops);
    driver_init(&sd->base, &sim_ops, sd);
    sim_migration_init(sd);
    sd->list = domain_list_new();
    sd->reaper = g_thread_pool_new(reaper_run, sd, 1, FALSE, NULL);
    sd->store = domain_store_new(config->config_dir, config->run_dir, error);
    if (!sd->store) {
        sim_driver_close(&sd->base);
        return NULL;
    }
    g_autoptr(GPtrArray) restored = domain_store_load(sd->store, sd->list, error);
    if (!restored) {
        sim_driver_close(&sd->base);
        return NULL;
    }
    for (guint i = 0; i < restored->len; i++)
        reattach(sd, restored->pdata[i]);
    autostart_all(sd);
    return &sd->base;
}

void sim_driver_close(Driver *drv)
{
    if (!drv)
        return;
    SimDriver *sd = drv->priv;
    /* Leave the VMs running: drop our monitor connections first, so no
     * "VMM gone" notice arrives while we tear down. */
    if (sd->list) {
        g_autoptr(GPtrArray) instances = domain_list_get_instances(sd->list);
        for (guint i = 0; i < instances->len; i++) {
            DomainObj *obj = instances->pdata[i];
            domain_obj_lock(obj);
            SimInstance *inst = domain_obj_get_priv(obj);
            if (inst)
                sim_vm_set_stopping(inst->vm);
            domain_obj_set_priv(obj, NULL, NULL);
            domain_obj_unlock(obj);
        }
    }
    if (sd->reaper)
        g_thread_pool_free(sd->reaper, FALSE, TRUE);
    sim_migration_shutdown(sd);
    domain_list_free(sd->list);
    domain_store_free(sd->store);
    driver_clear(drv);
    g_free(sd->vmm_binary);
    g_free(sd->migration_address);
    g_free(sd->migration_pki_dir);
    rpc_tls_context_unref(sd->migration_tls);
    g_free(sd);
}
