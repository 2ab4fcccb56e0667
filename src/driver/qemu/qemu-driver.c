/* The QEMU driver: QEMU's hooks for the shared lifecycle (hv-driver.c), the
 * emulator probe, capabilities, and the console. */
#include "driver/qemu/qemu-driver.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "driver/hv-driver.h"
#include "driver/migration-engine.h"
#include "driver/qmp-migration.h"
#include "driver/qemu/qemu-capabilities.h"
#include "driver/qemu/qemu-command.h"
#include "driver/qemu/qemu-console.h"
#include "driver/qemu/qemu-domain.h"
#include "driver/qemu/qemu-stats.h"
#include "driver/qemu/qemu-storage.h"
#include "driver/vmm-process.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "qemu.driver"

typedef struct {
    HvDriver hv;
    char *emulator;  /* absolute path */
    guint64 version; /* major * 1000000 + minor * 1000 + micro */
    char **machines; /* -machine help: names, the default first */
    char *kvm_problem; /* why type='kvm' cannot run here, NULL if it can */
    QemuCaps *caps;    /* machine types, CPU models, devices: probed on first use */
    MigrationEngine *migration;
    MigrationHooks migration_hooks; /* outlives the engine */
} QemuDriver;

/* The priv of a running DomainObj. */
typedef struct {
    VmmProcess *vm;
    QemuConsole *console; /* the open `virsh console`, if any */
} QemuInstance;

VmmProcess *qemu_driver_vm_of(DomainObj *obj)
{
    QemuInstance *inst = domain_obj_get_priv(obj);
    return inst ? inst->vm : NULL;
}

static QemuDriver *qemu_driver_of(Driver *drv)
{
    return hv_driver_of(drv)->owner;
}

static void instance_free(gpointer data)
{
    QemuInstance *inst = data;
    qemu_console_free(inst->console);
    vmm_process_unref(inst->vm);
    g_free(inst);
}

static void on_vm_gone(const char *instance_id, gboolean guest_shutdown, const GError *why,
                       gpointer data)
{
    QemuDriver *qd = data;
    hv_driver_vm_gone(&qd->hv, instance_id, guest_shutdown, why ? why->message : NULL);
}

static void on_vm_event(const char *instance_id, const char *event, JsonObject *data,
                        gpointer user_data)
{
    QemuDriver *qd = user_data;
    if (g_str_equal(event, "STOP") || g_str_equal(event, "RESUME")) {
        hv_driver_vm_run_state_changed(&qd->hv, instance_id);
    } else if (g_str_equal(event, "SHUTDOWN")) {
        const char *reason = json_object_has_member(data, "reason")
                                 ? json_object_get_string_member(data, "reason")
                                 : NULL;
        if (reason && g_str_equal(reason, "guest-shutdown"))
            hv_driver_vm_guest_shutdown(&qd->hv, instance_id);
    }
}

/* QEMU's log of a domain: its stderr, appended over every start, kept after
 * it stops, rotated by size (libvirt's /var/log/libvirt/qemu/NAME.log). */
static char *log_path(HvDriver *hv, const char *name)
{
    return hv_log_path(hv, name);
}

static void log_command(const char *path, GPtrArray *argv)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return;
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autofree char *stamp = g_date_time_format_iso8601(now);
    g_autofree char *cmd = g_strjoinv(" ", (char **)argv->pdata);
    g_autofree char *line = g_strdup_printf("%s: starting up\n%s\n", stamp, cmd);
    if (write(fd, line, strlen(line)) < 0) {
        /* the log is for people; QEMU's own lines still follow */
    }
    close(fd);
}

/* ---- the hooks ---- */

/* Refused up front: a KVM guest where KVM cannot boot one would hang. */
static gboolean check_accel(QemuDriver *qd, const QemuDomain *dom, GError **error)
{
    if (dom->kvm && qd->kvm_problem) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                    "domain type 'kvm' cannot run on this host: %s; "
                    "use <domain type='qemu'> (TCG)",
                    qd->kvm_problem);
        return FALSE;
    }
    return TRUE;
}

static gboolean qemu_spawn(HvDriver *hv, DomainObj *obj, gboolean incoming, GError **error)
{
    QemuDriver *qd = hv->owner;
    g_autoptr(QemuDomain) dom = qemu_domain_new(obj->live_def, error);
    if (!dom || !check_accel(qd, dom, error))
        return FALSE;
    g_autofree char *qmp = domain_store_runtime_path(hv->store, obj->instance_id, ".qmp");
    g_autofree char *pid = domain_store_runtime_path(hv->store, obj->instance_id, ".pid");
    g_autofree char *vnc = domain_store_runtime_path(hv->store, obj->instance_id, ".vnc");
    g_autofree char *channel = domain_store_runtime_path(hv->store, obj->instance_id, ".channel");
    g_autofree char *log = log_path(hv, domain_obj_get_name(obj));
    QemuCommandOptions copts = {.emulator = qd->emulator, .qmp_path = qmp, .pid_path = pid,
                                .vnc_path = vnc, .channel_prefix = channel,
                                .incoming = incoming};
    g_autoptr(GPtrArray) argv = qemu_command_build(dom, obj->live_def, &copts);
    log_command(log, argv);
    VmmProcessSpawnOptions o = {.vmm_name = "QEMU", .domain_name = domain_obj_get_name(obj),
                                .argv = (const char *const *)argv->pdata, .qmp_path = qmp,
                                .log_path = log, .instance_id = obj->instance_id,
                                .on_gone = on_vm_gone, .on_event = on_vm_event, .data = qd};
    VmmProcess *vm = vmm_process_spawn(&o, error);
    if (!vm)
        return FALSE;
    QemuInstance *inst = g_new0(QemuInstance, 1);
    inst->vm = vm;
    domain_obj_set_priv(obj, inst, instance_free);
    obj->pid = vmm_process_get_pid(vm);
    g_free(obj->qmp_path);
    obj->qmp_path = g_strdup(qmp);
    if (dom->balloon && dom->current_memory_kib < dom->memory_kib) {
        JsonObject *args = json_object_new();
        json_object_set_int_member(args, "value", (gint64)dom->current_memory_kib * 1024);
        g_autoptr(GError) e = NULL;
        g_autoptr(JsonNode) r = vmm_process_qmp(vm, "balloon", args, &e);
        json_object_unref(args);
        if (!r)
            FERRY_WARN("domain '%s': cannot set the balloon to <currentMemory>: %s",
                       domain_obj_get_name(obj), e->message);
    }
    return TRUE;
}

static gboolean qemu_reattach(HvDriver *hv, DomainObj *obj, GError **error)
{
    VmmProcess *vm = vmm_process_attach(obj->pid, "QEMU", obj->qmp_path, obj->instance_id,
                                        on_vm_gone, on_vm_event, hv->owner, error);
    if (!vm)
        return FALSE;
    QemuInstance *inst = g_new0(QemuInstance, 1);
    inst->vm = vm;
    domain_obj_set_priv(obj, inst, instance_free);
    return TRUE;
}

static char *qemu_query_status(HvDriver *hv, DomainObj *obj, GError **error)
{
    QemuInstance *inst = domain_obj_get_priv(obj);
    return vmm_process_query_status(inst->vm, error);
}

static void qemu_kill(HvDriver *hv, DomainObj *obj, gboolean wait)
{
    QemuInstance *inst = domain_obj_get_priv(obj);
    if (!inst) {
        if (obj->pid > 0 && vmm_pid_alive(obj->pid))
            kill(obj->pid, SIGKILL);
    } else if (wait) {
        vmm_process_kill(inst->vm);
    } else {
        vmm_process_kill_nowait(inst->vm);
    }
}

static gboolean qemu_is_stopping(DomainObj *obj)
{
    QemuInstance *inst = domain_obj_get_priv(obj);
    return inst && vmm_process_is_stopping(inst->vm);
}

static void qemu_detach(HvDriver *hv, DomainObj *obj)
{
    QemuInstance *inst = domain_obj_get_priv(obj);
    vmm_process_set_stopping(inst->vm);
}

static gboolean run_command(DomainObj *obj, const char *command, GError **error)
{
    QemuInstance *inst = domain_obj_get_priv(obj);
    g_autoptr(JsonNode) r = vmm_process_qmp(inst->vm, command, NULL, error);
    return r != NULL;
}

static gboolean qemu_suspend(HvDriver *hv, DomainObj *obj, GError **error)
{
    return run_command(obj, "stop", error);
}

static gboolean qemu_resume(HvDriver *hv, DomainObj *obj, GError **error)
{
    return run_command(obj, "cont", error);
}

static gboolean qemu_shutdown(HvDriver *hv, DomainObj *obj, GError **error)
{
    return run_command(obj, "system_powerdown", error);
}

static gboolean qemu_reboot(HvDriver *hv, DomainObj *obj, GError **error)
{
    return run_command(obj, "system_reset", error);
}

static guint64 qemu_cpu_time_ns(DomainObj *obj)
{
    QemuInstance *inst = domain_obj_get_priv(obj);
    return vmm_process_cpu_time_ns(inst->vm);
}

static void qemu_abort_job(HvDriver *hv, DomainObj *obj, const char *why)
{
    migration_engine_abort_job_locked(obj, why);
}

static gpointer qemu_migration_vm_ref(DomainObj *obj)
{
    QemuInstance *inst = domain_obj_get_priv(obj);
    return inst && inst->vm ? vmm_process_ref(inst->vm) : NULL;
}

static char *qemu_crash_reason(HvDriver *hv, DomainObj *obj)
{
    g_autofree char *log = log_path(hv, domain_obj_get_name(obj));
    return vmm_log_last_line(log);
}

static DomainDef *qemu_parse_xml(HvDriver *hv, const char *xml, GError **error)
{
    g_autoptr(DomainDef) def = qemu_domain_parse_xml(xml, error);
    g_autoptr(QemuDomain) dom = def ? qemu_domain_new(def, error) : NULL;
    if (!dom || !check_accel(hv->owner, dom, error))
        return NULL;
    return g_steal_pointer(&def);
}

/* .nbd: the disks' export (migration-storage.c); .channelN: the sockets of
 * channels without a path (QEMU_CHANNELS_IN_RUN_DIR) */
static const char *const qemu_runtime_suffixes[] = {
    ".qmp",      ".pid",      ".vnc",      ".screendump", ".nbd",      ".channel0",
    ".channel1", ".channel2", ".channel3", ".channel4",   ".channel5", ".channel6",
    ".channel7", NULL};
G_STATIC_ASSERT(G_N_ELEMENTS(qemu_runtime_suffixes) == 5 + QEMU_CHANNELS_IN_RUN_DIR + 1);

static const HvDriverHooks qemu_hooks = {
    .vmm_name = "QEMU",
    .parse_xml = qemu_parse_xml,
    .spawn = qemu_spawn,
    .reattach = qemu_reattach,
    .query_status = qemu_query_status,
    .kill = qemu_kill,
    .is_stopping = qemu_is_stopping,
    .detach = qemu_detach,
    .suspend = qemu_suspend,
    .resume = qemu_resume,
    .shutdown = qemu_shutdown,
    .reboot = qemu_reboot,
    .cpu_time_ns = qemu_cpu_time_ns,
    .has_job = migration_engine_has_job,
    .job_allows_pause = migration_engine_job_allows_pause,
    .abort_job = qemu_abort_job,
    .runtime_suffixes = qemu_runtime_suffixes,
    .crash_reason = qemu_crash_reason,
};

/* ---- the console ---- */

/* The pty QEMU gave the serial port's chardev ("pty:/dev/pts/3"). */
static char *find_pty(QemuInstance *inst, const char *chardev, GError **error)
{
    g_autoptr(JsonNode) r = vmm_process_qmp(inst->vm, "query-chardev", NULL, error);
    if (!r)
        return NULL;
    JsonArray *devs = json_node_get_array(r);
    for (guint i = 0; devs && i < json_array_get_length(devs); i++) {
        JsonObject *d = json_array_get_object_element(devs, i);
        const char *label = json_object_get_string_member_with_default(d, "label", "");
        const char *file = json_object_get_string_member_with_default(d, "filename", "");
        if (!g_str_equal(label, chardev))
            continue;
        if (!g_str_has_prefix(file, "pty:")) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "character device %s is not using a PTY", chardev);
            return NULL;
        }
        return g_strdup(file + 4);
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                "cannot find character device %s", chardev);
    return NULL;
}

#define CONSOLE_FORCE 1 /* VIR_DOMAIN_CONSOLE_FORCE */
#define CONSOLE_SAFE 2  /* VIR_DOMAIN_CONSOLE_SAFE */

/* The pty of the serial port dev_name names ("serial0", "console0"; NULL:
 * the first), checking that no other console is open unless forced. */
static char *console_pty(DomainObj *obj, const char *dev_name, guint flags, GError **error)
{
    if (!hv_check_active(obj, error))
        return NULL;
    g_autoptr(QemuDomain) qdom = qemu_domain_new(obj->live_def, error);
    if (!qdom)
        return NULL;
    guint port = 0;
    if (dev_name && sscanf(dev_name, "serial%u", &port) != 1 &&
        sscanf(dev_name, "console%u", &port) != 1)
        port = G_MAXUINT;
    if (!dev_name && qdom->serials->len)
        port = ((QemuSerial *)qdom->serials->pdata[0])->port;
    gboolean found = FALSE;
    for (guint i = 0; i < qdom->serials->len; i++)
        found = found || ((QemuSerial *)qdom->serials->pdata[i])->port == port;
    if (!found) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "cannot find character device %s", dev_name ? dev_name : "<null>");
        return NULL;
    }
    QemuInstance *inst = domain_obj_get_priv(obj);
    if (inst->console && !qemu_console_is_over(inst->console) && !(flags & CONSOLE_FORCE)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "Active console session exists for this domain");
        return NULL;
    }
    g_autofree char *chardev = g_strdup_printf("charserial%u", port);
    return find_pty(inst, chardev, error);
}

static gboolean qemu_open_console(Driver *drv, const DriverDomain *dom, const char *dev_name,
                                  guint flags, TunnelBinding *binding, GError **error)
{
    HvDriver *hv = hv_driver_of(drv);
    if (flags & ~(guint)(CONSOLE_FORCE | CONSOLE_SAFE)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function virDomainOpenConsole", flags);
        tunnel_binding_cancel(binding);
        return FALSE;
    }
    DomainObj *obj = hv_lookup(hv, dom, error);
    g_autofree char *pty = obj ? console_pty(obj, dev_name, flags, error) : NULL;
    if (!pty) {
        tunnel_binding_cancel(binding);
        domain_obj_end(obj);
        return FALSE;
    }
    QemuInstance *inst = domain_obj_get_priv(obj);
    g_clear_pointer(&inst->console, qemu_console_free);
    inst->console = qemu_console_open(pty, binding, error);
    gboolean ok = inst->console != NULL;
    domain_obj_end(obj);
    return ok;
}

/* ---- probing the emulator ---- */

/* The emulator's stdout for a query such as "--version". */
static char *run_emulator(const char *emulator, const char *arg1, const char *arg2,
                          GError **error)
{
    const char *argv[] = {emulator, arg1, arg2, NULL};
    g_autofree char *out = NULL, *err = NULL;
    int status = 0;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                      &status, error))
        return NULL;
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "%s %s failed: %s",
                    emulator, arg1, err ? g_strstrip(err) : "");
        return NULL;
    }
    return g_steal_pointer(&out);
}

static gboolean probe_version(QemuDriver *qd, GError **error)
{
    g_autofree char *out = run_emulator(qd->emulator, "--version", NULL, error);
    if (!out)
        return FALSE;
    const char *v = strstr(out, "version ");
    guint major = 0, minor = 0, micro = 0;
    if (!v || sscanf(v + 8, "%u.%u.%u", &major, &minor, &micro) < 2) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "cannot read the version of %s", qd->emulator);
        return FALSE;
    }
    qd->version = major * 1000000ull + minor * 1000ull + micro;
    return TRUE;
}

static void probe_machines(QemuDriver *qd)
{
    g_autofree char *out = run_emulator(qd->emulator, "-machine", "help", NULL);
    GPtrArray *names = g_ptr_array_new();
    g_auto(GStrv) lines = g_strsplit(out ? out : "", "\n", -1);
    for (guint i = 1; lines[i]; i++) { /* line 0: "Supported machines are:" */
        g_auto(GStrv) words = g_strsplit_set(g_strstrip(lines[i]), " \t", 2);
        if (!words[0] || !*words[0] || g_str_equal(words[0], "none"))
            continue;
        gboolean dflt = words[1] && strstr(words[1], "(default)");
        if (dflt)
            g_ptr_array_insert(names, 0, g_strdup(words[0]));
        else
            g_ptr_array_add(names, g_strdup(words[0]));
    }
    g_ptr_array_add(names, NULL);
    qd->machines = (char **)g_ptr_array_free(names, FALSE);
}

/* KVM needs hardware virtualization: a /dev/kvm without it (a paravirtual
 * KVM such as kvm_pvm) boots the firmware and then stalls the guest's kernel,
 * so it is refused up front instead of hanging. */
static char *probe_kvm(void)
{
    if (access("/dev/kvm", R_OK | W_OK) != 0)
        return g_strdup("/dev/kvm is not available");
    g_autofree char *cpuinfo = NULL;
    if (!g_file_get_contents("/proc/cpuinfo", &cpuinfo, NULL, NULL))
        return g_strdup("cannot read /proc/cpuinfo");
    g_auto(GStrv) lines = g_strsplit(cpuinfo, "\n", -1);
    for (guint i = 0; lines[i]; i++) {
        if (!g_str_has_prefix(lines[i], "flags"))
            continue;
        g_auto(GStrv) flags = g_strsplit(lines[i], " ", -1);
        if (g_strv_contains((const char *const *)flags, "vmx") ||
            g_strv_contains((const char *const *)flags, "svm"))
            return NULL;
        break;
    }
    return g_strdup("/dev/kvm exists but the CPU has no hardware virtualization (no vmx or svm "
                    "flag), and KVM guests stall there");
}

static char *qemu_get_capabilities(Driver *drv, GError **error)
{
    QemuDriver *qd = qemu_driver_of(drv);
    GString *g = g_string_new("  <guest>\n    <os_type>hvm</os_type>\n    <arch name='x86_64'>\n"
                              "      <wordsize>64</wordsize>\n");
    g_autofree char *emulator = g_markup_escape_text(qd->emulator, -1);
    g_string_append_printf(g, "      <emulator>%s</emulator>\n", emulator);
    for (guint i = 0; qd->machines[i]; i++)
        g_string_append_printf(g, "      <machine>%s</machine>\n", qd->machines[i]);
    g_string_append(g, "      <domain type='qemu'/>\n");
    if (!qd->kvm_problem)
        g_string_append(g, "      <domain type='kvm'/>\n");
    g_string_append(g, "    </arch>\n    <features>\n      <acpi default='on' toggle='yes'/>\n"
                       "      <apic default='on' toggle='no'/>\n    </features>\n  </guest>\n");
    g_autofree char *guest = g_string_free(g, FALSE);
    return driver_node_format_capabilities(guest);
}

static char *qemu_get_domain_capabilities(Driver *drv, const char *emulatorbin,
                                          const char *arch, const char *machine,
                                          const char *virttype, guint flags, GError **error)
{
    QemuDriver *qd = qemu_driver_of(drv);
    return qemu_caps_domain_capabilities(qd->caps, qd->kvm_problem, emulatorbin, arch, machine,
                                         virttype, flags, error);
}

static DriverOps qemu_ops = {
    .name = "qemu",
    .type = "QEMU",
    .canonical_uri = "qemu:///system",
    .get_capabilities = qemu_get_capabilities,
    .get_domain_capabilities = qemu_get_domain_capabilities,
    .open_console = qemu_open_console,
};

Driver *qemu_driver_open(const QemuDriverConfig *config, GError **error)
{
    QemuDriver *qd = g_new0(QemuDriver, 1);
    const char *emulator = config->emulator ? config->emulator : "qemu-system-x86_64";
    qd->emulator = g_find_program_in_path(emulator);
    if (!qd->emulator) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "cannot find the QEMU emulator '%s'", emulator);
        g_free(qd);
        return NULL;
    }
    if (!probe_version(qd, error)) {
        g_free(qd->emulator);
        g_free(qd);
        return NULL;
    }
    probe_machines(qd);
    qd->kvm_problem = probe_kvm();
    qd->caps = qemu_caps_new(qd->emulator);
    qemu_ops.version = qd->version;
    hv_driver_fill_ops(&qemu_ops, &qemu_hooks);
    migration_engine_install_ops(&qemu_ops);
    qemu_stats_install_ops(&qemu_ops);
    if (!hv_driver_init(&qd->hv, &qemu_ops, &qemu_hooks, qd, config->config_dir,
                        config->run_dir, config->log, error)) {
        qemu_driver_close(&qd->hv.base);
        return NULL;
    }
    qmp_migration_hooks_init(&qd->migration_hooks, QMP_MIGRATION_QEMU, qemu_migration_vm_ref);
    qemu_storage_hooks_init(&qd->migration_hooks);
    qd->migration = migration_engine_new(&qd->hv, &qd->migration_hooks, config->migration_data);
    migration_engine_set_files(qd->migration, config->save_dir, NULL);
    hv_driver_autostart(&qd->hv);
    FERRY_INFO("QEMU driver: %s %u.%u.%u%s%s", qd->emulator, (guint)(qd->version / 1000000),
               (guint)(qd->version / 1000 % 1000), (guint)(qd->version % 1000),
               qd->kvm_problem ? ", KVM refused: " : ", KVM usable",
               qd->kvm_problem ? qd->kvm_problem : "");
    return &qd->hv.base;
}

void qemu_driver_close(Driver *drv)
{
    if (!drv)
        return;
    QemuDriver *qd = qemu_driver_of(drv);
    hv_driver_detach_all(&qd->hv);
    migration_engine_free(qd->migration);
    hv_driver_cleanup(&qd->hv);
    g_free(qd->emulator);
    g_strfreev(qd->machines);
    g_free(qd->kvm_problem);
    qemu_caps_free(qd->caps);
    g_free(qd);
}
