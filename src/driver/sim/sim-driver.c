/* The sim driver: domains run as ferry-vmm processes. The lifecycle is the
 * shared base's (hv-driver.c); this file is ferry-vmm's hooks for it. */
#include "driver/sim/sim-driver.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "driver/sim/sim-private.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "sim.driver"

static void instance_free(gpointer data)
{
    SimInstance *inst = data;
    vmm_process_unref(inst->vm);
    g_free(inst);
}

static void on_vm_gone(const char *instance_id, gboolean guest_shutdown, const GError *why,
                       gpointer data)
{
    SimDriver *sd = data;
    hv_driver_vm_gone(&sd->hv, instance_id, guest_shutdown, why ? why->message : NULL);
}

static void set_instance(DomainObj *obj, VmmProcess *vm)
{
    SimInstance *inst = g_new0(SimInstance, 1);
    inst->vm = vm;
    domain_obj_set_priv(obj, inst, instance_free);
}

/* ---- the hooks ---- */

static gboolean sim_spawn(HvDriver *hv, DomainObj *obj, gboolean incoming, GError **error)
{
    SimDriver *sd = hv->owner;
    g_autofree char *qmp = domain_store_runtime_path(hv->store, obj->instance_id, ".qmp");
    g_autofree char *pid = domain_store_runtime_path(hv->store, obj->instance_id, ".pid");
    g_autofree char *log = hv_log_path(hv, domain_obj_get_name(obj));
    SimVmSpawnOptions opts = {.vmm_binary = sd->vmm_binary, .qmp_path = qmp, .pid_path = pid,
                              .log_path = log, .instance_id = obj->instance_id,
                              .incoming = incoming, .on_gone = on_vm_gone, .data = sd};
    VmmProcess *vm = sim_vm_spawn(obj->live_def, &opts, error);
    if (!vm)
        return FALSE;
    set_instance(obj, vm);
    obj->pid = vmm_process_get_pid(vm);
    g_free(obj->qmp_path);
    obj->qmp_path = g_strdup(qmp);
    return TRUE;
}

static gboolean sim_reattach(HvDriver *hv, DomainObj *obj, GError **error)
{
    VmmProcess *vm = vmm_process_attach(obj->pid, "ferry-vmm", obj->qmp_path, obj->instance_id,
                                        on_vm_gone, NULL, hv->owner, error);
    if (!vm)
        return FALSE;
    set_instance(obj, vm);
    return TRUE;
}

static char *sim_query_status(HvDriver *hv, DomainObj *obj, GError **error)
{
    SimInstance *inst = domain_obj_get_priv(obj);
    return vmm_process_query_status(inst->vm, error);
}

static void sim_kill(HvDriver *hv, DomainObj *obj, gboolean wait)
{
    SimInstance *inst = domain_obj_get_priv(obj);
    if (!inst) {
        if (obj->pid > 0)
            kill(obj->pid, SIGKILL);
    } else if (wait) {
        vmm_process_kill(inst->vm);
    } else {
        vmm_process_kill_nowait(inst->vm);
    }
}

static gboolean sim_is_stopping(DomainObj *obj)
{
    SimInstance *inst = domain_obj_get_priv(obj);
    return inst && vmm_process_is_stopping(inst->vm);
}

static void sim_detach(HvDriver *hv, DomainObj *obj)
{
    SimInstance *inst = domain_obj_get_priv(obj);
    vmm_process_set_stopping(inst->vm);
}

static gboolean run_command(DomainObj *obj, const char *command, GError **error)
{
    SimInstance *inst = domain_obj_get_priv(obj);
    g_autoptr(JsonNode) r = vmm_process_qmp(inst->vm, command, NULL, error);
    return r != NULL;
}

static gboolean sim_suspend(HvDriver *hv, DomainObj *obj, GError **error)
{
    return run_command(obj, "stop", error);
}

static gboolean sim_resume(HvDriver *hv, DomainObj *obj, GError **error)
{
    return run_command(obj, "cont", error);
}

static gboolean sim_shutdown(HvDriver *hv, DomainObj *obj, GError **error)
{
    return run_command(obj, "system_powerdown", error);
}

static guint64 sim_cpu_time_ns(DomainObj *obj)
{
    SimInstance *inst = domain_obj_get_priv(obj);
    return vmm_process_cpu_time_ns(inst->vm);
}

static void sim_abort_job(HvDriver *hv, DomainObj *obj, const char *why)
{
    migration_engine_abort_job_locked(obj, why);
}

static const char *const sim_runtime_suffixes[] = {".qmp", ".pid", NULL};

static const HvDriverHooks sim_hooks = {
    .vmm_name = "ferry-vmm",
    .spawn = sim_spawn,
    .reattach = sim_reattach,
    .query_status = sim_query_status,
    .kill = sim_kill,
    .is_stopping = sim_is_stopping,
    .detach = sim_detach,
    .suspend = sim_suspend,
    .resume = sim_resume,
    .shutdown = sim_shutdown,
    .cpu_time_ns = sim_cpu_time_ns,
    .has_job = migration_engine_has_job,
    .abort_job = sim_abort_job,
    .runtime_suffixes = sim_runtime_suffixes,
};

/* ---- the driver ---- */

static char *sim_get_capabilities(Driver *drv, GError **error)
{
    return driver_node_format_capabilities(
        "  <guest>\n    <os_type>hvm</os_type>\n    <arch name='x86_64'>\n"
        "      <wordsize>64</wordsize>\n      <emulator>ferry-vmm</emulator>\n"
        "      <domain type='sim'/>\n    </arch>\n    <features>\n"
        "      <acpi default='on' toggle='yes'/>\n    </features>\n  </guest>\n");
}

/* ferry-vmm emulates one x86_64 machine with no devices to choose from, so
 * the document is short: what it does not model says supported='no'. */
static char *sim_get_domain_capabilities(Driver *drv, const char *emulatorbin, const char *arch,
                                         const char *machine, const char *virttype, guint flags,
                                         GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    if (flags) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function get_domain_capabilities", flags);
        return NULL;
    }
    if (virttype && !g_str_equal(virttype, "sim")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "virttype '%s' is not supported by the sim driver: it runs 'sim' domains",
                    virttype);
        return NULL;
    }
    if (arch && !g_str_equal(arch, "x86_64")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "architecture '%s' is not supported by the sim driver: ferry-vmm emulates x86_64",
                    arch);
        return NULL;
    }
    if (machine) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "machine type '%s' is not supported by the sim driver: ferry-vmm has no "
                    "machine types",
                    machine);
        return NULL;
    }
    if (emulatorbin && !g_str_equal(emulatorbin, sd->vmm_binary) &&
        !g_str_equal(emulatorbin, "ferry-vmm")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "emulator '%s' is not the sim driver's: it runs '%s'", emulatorbin,
                    sd->vmm_binary);
        return NULL;
    }
    g_autofree char *path = g_markup_escape_text(sd->vmm_binary, -1);
    return g_strdup_printf("<domainCapabilities>\n"
                           "  <path>%s</path>\n"
                           "  <domain>sim</domain>\n"
                           "  <arch>x86_64</arch>\n"
                           "  <vcpu max='%d'/>\n"
                           "  <iothreads supported='no'/>\n"
                           "  <os supported='yes'>\n"
                           "    <enum name='firmware'/>\n"
                           "    <loader supported='no'/>\n"
                           "  </os>\n"
                           "  <cpu>\n"
                           "    <mode name='host-passthrough' supported='no'/>\n"
                           "    <mode name='maximum' supported='no'/>\n"
                           "    <mode name='host-model' supported='no'/>\n"
                           "    <mode name='custom' supported='no'/>\n"
                           "  </cpu>\n"
                           "  <memoryBacking supported='no'/>\n"
                           "  <devices>\n"
                           "    <disk supported='no'/>\n"
                           "    <graphics supported='no'/>\n"
                           "    <video supported='no'/>\n"
                           "    <hostdev supported='no'/>\n"
                           "    <rng supported='no'/>\n"
                           "    <filesystem supported='no'/>\n"
                           "    <tpm supported='no'/>\n"
                           "  </devices>\n"
                           "  <features>\n"
                           "    <gic supported='no'/>\n"
                           "    <vmcoreinfo supported='no'/>\n"
                           "    <genid supported='no'/>\n"
                           "    <sev supported='no'/>\n"
                           "  </features>\n"
                           "</domainCapabilities>\n",
                           path, DOMAIN_MAX_VCPUS);
}

static DriverOps sim_ops = {
    .name = "sim",
    .type = "SIM",
    .version = 1000, /* 0.1.0 */
    .canonical_uri = "sim:///system",
    .get_capabilities = sim_get_capabilities,
    .get_domain_capabilities = sim_get_domain_capabilities,
};

Driver *sim_driver_open(const SimDriverConfig *config, GError **error)
{
    SimDriver *sd = g_new0(SimDriver, 1);
    sd->vmm_binary = g_strdup(config->vmm_binary);
    hv_driver_fill_ops(&sim_ops, &sim_hooks);
    migration_engine_install_ops(&sim_ops);
    if (!hv_driver_init(&sd->hv, &sim_ops, &sim_hooks, sd, config->config_dir, config->run_dir,
                        config->log, error)) {
        sim_driver_close(&sd->hv.base);
        return NULL;
    }
    sim_migration_hooks_init(&sd->migration_hooks);
    sd->migration = migration_engine_new(&sd->hv, &sd->migration_hooks, config->migration_data);
    migration_engine_set_files(sd->migration, NULL,
                               "ferry-vmm migrates only to a receiver that answers each of its "
                               "commands, which a file cannot do");
    hv_driver_autostart(&sd->hv);
    return &sd->hv.base;
}

void sim_driver_close(Driver *drv)
{
    if (!drv)
        return;
    SimDriver *sd = sim_driver_of(drv);
    hv_driver_detach_all(&sd->hv);
    migration_engine_free(sd->migration);
    hv_driver_cleanup(&sd->hv);
    g_free(sd->vmm_binary);
    g_free(sd);
}
