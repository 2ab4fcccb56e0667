/* Spawning, attaching to and stopping VMM processes, and watching their monitor. */
#include "driver/vmm-process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"
#include "util/thread.h"

#define FERRY_LOG_MODULE "driver.vmm"

#define QMP_TIMEOUT_MS 10000
/* How long a VMM may take to answer on its monitor; while its CPU time
 * still grows (a large guest's memory zeroed by the kernel takes seconds
 * per GiB on a loaded host) the wait goes on, up to START_LIMIT_MS. */
#define START_TIMEOUT_MS 20000
#define START_BUSY_GRACE_MS 10000
#define START_LIMIT_MS 180000

struct VmmProcess {
    gint ref;
    pid_t pid;
    QmpClient *qmp;
    char *instance_id;
    const char *vmm_name; /* static */
    VmmProcessGoneFunc on_gone;
    VmmProcessEventFunc on_event;
    gpointer data;
    gint guest_shutdown;
    gint stopping;
};

static void on_qmp_event(QmpClient *client, const char *event, JsonObject *data, gint64 ts,
                         gpointer user_data)
{
    VmmProcess *vm = user_data;
    if (g_str_equal(event, "SHUTDOWN")) {
        const char *reason = json_object_has_member(data, "reason")
                                 ? json_object_get_string_member(data, "reason")
                                 : NULL;
        /* A guest power-off is a shutdown; quit/host-signal are our own doing. */
        if (!reason || g_str_equal(reason, "guest-shutdown") ||
            g_str_equal(reason, "powerdown") || g_str_equal(reason, "guest-poweroff") ||
            g_str_equal(reason, "guest-reset")) /* a reboot with on_reboot=destroy */
            g_atomic_int_set(&vm->guest_shutdown, TRUE);
    }
    if (vm->on_event)
        vm->on_event(vm->instance_id, event, data, vm->data);
}

static void on_qmp_close(QmpClient *client, const GError *why, gpointer user_data)
{
    VmmProcess *vm = user_data;
    if (vm->on_gone)
        vm->on_gone(vm->instance_id, g_atomic_int_get(&vm->guest_shutdown), why, vm->data);
}

char *vmm_log_last_line(const char *path)
{
    g_autofree char *text = NULL;
    if (!path || !g_file_get_contents(path, &text, NULL, NULL))
        return NULL;
    g_strstrip(text);
    const char *last = strrchr(text, '\n');
    return g_strdup(last ? last + 1 : text);
}

/* A zombie is gone for us: it runs no more, and init may reap it late. */
gboolean vmm_pid_alive(pid_t pid)
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

static VmmProcess *vm_new(pid_t pid, const char *vmm_name, const char *instance_id,
                          VmmProcessGoneFunc on_gone, VmmProcessEventFunc on_event, gpointer data)
{
    VmmProcess *vm = g_new0(VmmProcess, 1);
    vm->ref = 1;
    vm->pid = pid;
    vm->instance_id = g_strdup(instance_id);
    vm->vmm_name = vmm_name;
    vm->on_gone = on_gone;
    vm->on_event = on_event;
    vm->data = data;
    return vm;
}

VmmProcess *vmm_process_spawn(const VmmProcessSpawnOptions *o, GError **error)
{
    unlink(o->qmp_path);
    GPid pid = 0;
    g_autoptr(GError) spawn_error = NULL;
    /* The VMM's own early errors (bad arguments) land in its log too. */
    int log_fd = open(o->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    /* No DO_NOT_REAP_CHILD: GLib double-forks, so the VM is not our child and
     * outlives us; we learn its end from the monitor socket. */
    gboolean ok = g_spawn_async_with_pipes_and_fds(NULL, o->argv, NULL,
                                                   G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, -1, -1,
                                                   log_fd, NULL, NULL, 0, &pid, NULL, NULL, NULL,
                                                   &spawn_error);
    if (log_fd >= 0)
        close(log_fd);
    if (!ok) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "cannot start %s: %s",
                    o->argv[0], spawn_error->message);
        return NULL;
    }

    VmmProcess *vm = vm_new(pid, o->vmm_name, o->instance_id, o->on_gone, o->on_event, o->data);
    g_autoptr(GError) qmp_error = NULL;
    /* Short attempts to connect, so a VMM that exits at once is reported at
     * once; once connected, its greeting is awaited on that one connection
     * (see qmp_client_connect_staged: retrying there starves a slow VMM). */
    gint64 started = g_get_monotonic_time();
    gint64 deadline = started + START_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
    gint64 limit = started + START_LIMIT_MS * G_TIME_SPAN_MILLISECOND;
    guint64 cpu_ns = vmm_process_cpu_time_ns(vm);
    while (!vm->qmp && g_get_monotonic_time() < deadline) {
        g_clear_error(&qmp_error);
        guint64 now_cpu_ns = vmm_process_cpu_time_ns(vm);
        if (now_cpu_ns != cpu_ns) { /* still busy starting: not stuck */
            cpu_ns = now_cpu_ns;
            deadline = MIN(MAX(deadline, g_get_monotonic_time() +
                                             START_BUSY_GRACE_MS * G_TIME_SPAN_MILLISECOND),
                           limit);
        }
        int left_ms = (int)MAX((deadline - g_get_monotonic_time()) / 1000, 1);
        vm->qmp = qmp_client_connect_staged(o->qmp_path, MIN(200, left_ms), left_ms, on_qmp_event,
                                            on_qmp_close, vm, &qmp_error);
        if (!vm->qmp && (!vmm_pid_alive(pid) || ferry_thread_error_is_refusal(qmp_error)))
            break;
    }
    if (!vm->qmp) {
        /* ferryd's own refusal says more than the VMM's last words. */
        g_autofree char *line = ferry_thread_error_is_refusal(qmp_error)
                                    ? NULL
                                    : vmm_log_last_line(o->log_path);
        if (vmm_pid_alive(pid))
            kill(pid, SIGKILL);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "%s for domain '%s' failed to start: %s", o->vmm_name, o->domain_name,
                    line && *line ? line : qmp_error->message);
        g_free(vm->instance_id);
        g_free(vm);
        return NULL;
    }
    FERRY_INFO("domain '%s': %s pid %d, monitor %s", o->domain_name, o->vmm_name, pid,
               o->qmp_path);
    return vm;
}

VmmProcess *vmm_process_attach(pid_t pid, const char *vmm_name, const char *qmp_path,
                               const char *instance_id, VmmProcessGoneFunc on_gone,
                               VmmProcessEventFunc on_event, gpointer data, GError **error)
{
    if (!vmm_pid_alive(pid)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "its %s (pid %d) is no longer running", vmm_name, pid);
        return NULL;
    }
    VmmProcess *vm = vm_new(pid, vmm_name, instance_id, on_gone, on_event, data);
    vm->qmp = qmp_client_connect(qmp_path, 3000, on_qmp_event, on_qmp_close, vm, error);
    if (!vm->qmp) {
        g_free(vm->instance_id);
        g_free(vm);
        return NULL;
    }
    return vm;
}

void vmm_process_kill(VmmProcess *vm)
{
    vmm_process_kill_nowait(vm);
    /* Bounded wait so a destroy returns with the VM gone. */
    for (int i = 0; i < 500 && vmm_pid_alive(vm->pid); i++)
        g_usleep(10 * 1000);
}

void vmm_process_kill_nowait(VmmProcess *vm)
{
    vmm_process_set_stopping(vm);
    if (vmm_pid_alive(vm->pid))
        kill(vm->pid, SIGKILL);
}

VmmProcess *vmm_process_ref(VmmProcess *vm)
{
    g_atomic_int_inc(&vm->ref);
    return vm;
}

void vmm_process_unref(VmmProcess *vm)
{
    if (!vm || !g_atomic_int_dec_and_test(&vm->ref))
        return;
    /* After this no callback runs: the gone callback never sees a freed vm. */
    qmp_client_free(vm->qmp);
    g_free(vm->instance_id);
    g_free(vm);
}

pid_t vmm_process_get_pid(VmmProcess *vm)
{
    return vm->pid;
}

QmpClient *vmm_process_get_qmp(VmmProcess *vm)
{
    return vm->qmp;
}

JsonNode *vmm_process_qmp(VmmProcess *vm, const char *command, JsonObject *args, GError **error)
{
    return qmp_client_execute(vm->qmp, command, args, QMP_TIMEOUT_MS, error);
}

JsonNode *vmm_process_qmp_oob(VmmProcess *vm, const char *command, JsonObject *args,
                              GError **error)
{
    return qmp_client_execute_oob(vm->qmp, command, args, QMP_TIMEOUT_MS, error);
}

char *vmm_process_query_status(VmmProcess *vm, GError **error)
{
    g_autoptr(JsonNode) ret = vmm_process_qmp(vm, "query-status", NULL, error);
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

guint64 vmm_process_cpu_time_ns(VmmProcess *vm)
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

void vmm_process_set_stopping(VmmProcess *vm)
{
    g_atomic_int_set(&vm->stopping, TRUE);
}

gboolean vmm_process_is_stopping(VmmProcess *vm)
{
    return g_atomic_int_get(&vm->stopping);
}
