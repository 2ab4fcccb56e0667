/* Spawning, attaching to and stopping ferry-vmm processes. */
#include "driver/sim/sim-vmm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"
#include "util/uuid.h"

#define FERRY_LOG_MODULE "sim.vmm"

#define QMP_TIMEOUT_MS 10000
#define START_TIMEOUT_MS 20000

struct SimVm {
    gint ref;
    pid_t pid;
    QmpClient *qmp;
    char *instance_id;
    SimVmGoneFunc on_gone;
    gpointer data;
    gint guest_shutdown;
    gint stopping;
};

static void on_qmp_event(QmpClient *client, const char *event, JsonObject *data, gint64 ts,
                         gpointer user_data)
{
    SimVm *vm = user_data;
    if (g_str_equal(event, "SHUTDOWN")) {
        const char *reason = json_object_has_member(data, "reason")
                                 ? json_object_get_string_member(data, "reason")
                                 : NULL;
        /* A guest power-off is a shutdown; quit/host-signal are our own doing. */
        if (!reason || g_str_equal(reason, "guest-shutdown") ||
            g_str_equal(reason, "powerdown") || g_str_equal(reason, "guest-poweroff"))
            g_atomic_int_set(&vm->guest_shutdown, TRUE);
    }
}

static void on_qmp_close(QmpClient *client, const GError *why, gpointer user_data)
{
    SimVm *vm = user_data;
    if (vm->on_gone)
        vm->on_gone(vm->instance_id, g_atomic_int_get(&vm->guest_shutdown), why, vm->data);
}

static char *last_log_line(const char *path)
{
    g_autofree char *text = NULL;
    if (!path || !g_file_get_contents(path, &text, NULL, NULL))
        return NULL;
    g_strstrip(text);
    const char *last = strrchr(text, '\n');
    return g_strdup(last ? last + 1 : text);
}

/* A zombie is gone for us: it runs no more, and init may reap it late. */
static gboolean pid_alive(pid_t pid)
{
    if (pid <= 0 || (kill(pid, 0) < 0 && errno != EPERM))
        return FALSE;
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", pid);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return FALSE;
    const char *p = strrchr(text, ')');
    return !(p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

static SimVm *vm_new(pid_t pid, const char *instance_id, SimVmGoneFunc on_gone, gpointer data)
{
    SimVm *vm = g_new0(SimVm, 1);
    vm->ref = 1;
    vm->pid = pid;
    vm->instance_id = g_strdup(instance_id);
    vm->on_gone = on_gone;
    vm->data = data;
    return vm;
}

SimVm *sim_vm_spawn(const DomainDef *def, const SimVmSpawnOptions *o, GError **error)
{
    g_autofree char *uuid = ferry_uuid_to_string(def->uuid);
    g_autofree char *memory = g_strdup_printf("%" G_GUINT64_FORMAT, def->memory_kib * 1024);
    g_autofree char *vcpus = g_strdup_printf("%u", (guint)def->vcpus);
    /* Without a seed in the XML, the UUID picks one: the same VM boots with the same RAM. */
    guint64 seed = def->workload.seed ? def->workload.seed : ferry_uuid_hash(def->uuid);
    g_autofree char *seed_s = g_strdup_printf("%" G_GUINT64_FORMAT, seed);
    g_autofree char *rate = g_strdup_printf("%" G_GUINT64_FORMAT, def->workload.dirty_rate);
    const char *pattern = def->workload.pattern == DOMAIN_WORKLOAD_SEQUENTIAL ? "sequential" : "random";

    unlink(o->qmp_path);
    GPtrArray *argv = g_ptr_array_new();
    const char *fixed[] = {o->vmm_binary, "--name", def->name, "--uuid", uuid,
                           "--memory", memory, "--vcpus", vcpus, "--qmp", o->qmp_path,
                           "--seed", seed_s, "--dirty-rate", rate, "--dirty-pattern", pattern,
                           "--pidfile", o->pid_path, "--log", o->log_path};
    for (guint i = 0; i < G_N_ELEMENTS(fixed); i++)
        g_ptr_array_add(argv, (char *)fixed[i]);
    if (o->incoming) {
        g_ptr_array_add(argv, "--incoming");
        g_ptr_array_add(argv, "defer");
    }
    g_ptr_array_add(argv, NULL);

    GPid pid = 0;
    g_autoptr(GError) spawn_error = NULL;
    /* The VMM's own early errors (bad arguments) land in its log too. */
    int log_fd = open(o->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    /* No DO_NOT_REAP_CHILD: GLib double-forks, so the VM is not our child and
     * outlives us; we learn its end from the monitor socket. */
    gboolean ok = g_spawn_async_with_pipes_and_fds(NULL, (const char *const *)argv->pdata, NULL,
                                                   G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, -1, -1,
                                                   log_fd, NULL, NULL, 0, &pid, NULL, NULL, NULL,
                                                   &spawn_error);
    if (log_fd >= 0)
        close(log_fd);
    g_ptr_array_free(argv, TRUE);
    if (!ok) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "cannot start %s: %s",
                    o->vmm_binary, spawn_error->message);
        return NULL;
    }

    SimVm *vm = vm_new(pid, o->instance_id, o->on_gone, o->data);
    g_autoptr(GError) qmp_error = NULL;
    /* Short attempts, so a VMM that exits at once is reported at once. */
    gint64 deadline = g_get_monotonic_time() + START_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
    while (!vm->qmp && g_get_monotonic_time() < deadline) {
        g_clear_error(&qmp_error);
        vm->qmp = qmp_client_connect(o->qmp_path, 200, on_qmp_event, on_qmp_close, vm,
                                     &qmp_error);
        if (!vm->qmp && !pid_alive(pid))
            break;
    }
    if (!vm->qmp) {
        g_autofree char *line = last_log_line(o->log_path);
        if (pid_alive(pid))
            kill(pid, SIGKILL);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "ferry-vmm for domain '%s' failed to start: %s", def->name,
                    line && *line ? line : qmp_error->message);
        g_free(vm->instance_id);
        g_free(vm);
        return NULL;
    }
    FERRY_INFO("domain '%s': ferry-vmm pid %d, monitor %s", def->name, pid, o->qmp_path);
    return vm;
}

SimVm *sim_vm_attach(pid_t pid, const char *qmp_path, const char *instance_id,
                     SimVmGoneFunc on_gone, gpointer data, GError **error)
{
    if (!pid_alive(pid)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "its ferry-vmm (pid %d) is no longer running", pid);
        return NULL;
    }
    SimVm *vm = vm_new(pid, instance_id, on_gone, data);
    vm->qmp = qmp_client_connect(qmp_path, 3000, on_qmp_event, on_qmp_close, vm, error);
    if (!vm->qmp) {
        g_free(vm->instance_id);
        g_free(vm);
        return NULL;
    }
    return vm;
}

void sim_vm_kill(SimVm *vm)
{
    sim_vm_kill_nowait(vm);
    /* Bounded wait so a destroy returns with the VM gone. */
    for (int i = 0; i < 500 && pid_alive(vm->pid); i++)
        g_usleep(10 * 1000);
}

void sim_vm_kill_nowait(SimVm *vm)
{
    sim_vm_set_stopping(vm);
    if (pid_alive(vm->pid))
        kill(vm->pid, SIGKILL);
}

SimVm *sim_vm_ref(SimVm *vm)
{
    g_atomic_int_inc(&vm->ref);
    return vm;
}

void sim_vm_unref(SimVm *vm)
{
    if (!vm || !g_atomic_int_dec_and_test(&vm->ref))
        return;
    /* After this no callback runs: the gone callback never sees a freed vm. */
    qmp_client_free(vm->qmp);
    g_free(vm->instance_id);
    g_free(vm);
}

pid_t sim_vm_get_pid(SimVm *vm)
{
    return vm->pid;
}

QmpClient *sim_vm_get_qmp(SimVm *vm)
{
    return vm->qmp;
}

JsonNode *sim_vm_qmp(SimVm *vm, const char *command, JsonObject *args, GError **error)
{
    return qmp_client_execute(vm->qmp, command, args, QMP_TIMEOUT_MS, error);
}

char *sim_vm_query_status(SimVm *vm, GError **error)
{
    g_autoptr(JsonNode) ret = sim_vm_qmp(vm, "query-status", NULL, error);
    if (!ret)
        return NULL;
    JsonObject *o = json_node_get_object(ret);
    if (!o || !json_object_has_member(o, "status")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "query-status answered without a status");
        return NULL;
    }
    return g_strdup(json_object_get_string_member(o, "status"));
}

guint64 sim_vm_cpu_time_ns(SimVm *vm)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", vm->pid);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return 0;
    /* Fields after the parenthesised command name: utime is the 12th, stime the 13th. */
    const char *p = strrchr(text, ')');
    if (!p)
        return 0;
    g_auto(GStrv) fields = g_strsplit(p + 2, " ", 16);
    if (g_strv_length(fields) < 13)
        return 0;
    guint64 ticks = g_ascii_strtoull(fields[11], NULL, 10) + g_ascii_strtoull(fields[12], NULL, 10);
    return ticks * (G_USEC_PER_SEC * 1000ULL / sysconf(_SC_CLK_TCK));
}

void sim_vm_set_stopping(SimVm *vm)
{
    g_atomic_int_set(&vm->stopping, TRUE);
}

gboolean sim_vm_is_stopping(SimVm *vm)
{
    return g_atomic_int_get(&vm->stopping);
}
