/* The VM object of ferry-vmm: run-state machine (QEMU's names), the QMP command
 * table, and the hooks through which a migration stops and resumes the VM. */
#include "vmm/vmm-machine.h"
#include "vmm/vmm-wire.h"

#include <unistd.h>

#include "util/error.h"
#include "util/fault-point.h"
#include "util/log.h"
#include "vmm/vmm-memory.h"
#include "vmm/vmm-migration.h"
#include "vmm/vmm-qmp-server.h"
#include "vmm/vmm-socket.h"

#define FERRY_LOG_MODULE "vmm"
/* How long the last reply and events may take to reach the client at exit. */
#define MACHINE_EXIT_FLUSH_MS 1000

typedef enum {
    RUN_RUNNING,
    RUN_PAUSED,
    RUN_INMIGRATE,
    RUN_FINISH_MIGRATE,
    RUN_POSTMIGRATE,
    RUN_INTERNAL_ERROR,
    RUN_SHUTDOWN,
} MachineRunState;

struct _VmmMachine {
    char *name;
    char *uuid;
    guint vcpus;
    gboolean incoming;
    gboolean exit_on_error; /* incoming: exit(1) when the migration fails */
    VmmMemory *mem;
    VmmWorkload *workload;
    VmmMigration *migration;
    VmmQmpServer *qmp;
    GMainLoop *loop;

    GMutex lock; /* run state; the migration thread changes it at stop-and-copy */
    MachineRunState state;
    MachineRunState state_before_migration;

    gboolean exiting;
    int exit_code;
    char *exit_reason;
};

static const char *machine_state_name(MachineRunState state)
{
    static const char *const names[] = {"running",        "paused",      "inmigrate",
                                        "finish-migrate", "postmigrate", "internal-error",
                                        "shutdown"};
    return names[state];
}

static void machine_event(VmmMachine *m, const char *name, JsonObject *data)
{
    if (m->qmp)
        vmm_qmp_server_emit_event(m->qmp, name, data);
    else if (data)
        json_object_unref(data);
}

static MachineRunState machine_get_state(VmmMachine *m)
{
    g_mutex_lock(&m->lock);
    MachineRunState state = m->state;
    g_mutex_unlock(&m->lock);
    return state;
}

/* Main thread only, lock not held. */
static void machine_resume(VmmMachine *m)
{
    g_mutex_lock(&m->lock);
    m->state = RUN_RUNNING;
    vmm_workload_resume(m->workload);
    g_mutex_unlock(&m->lock);
    machine_event(m, "RESUME", NULL);
}

/* ---- migration hooks ---- */

static JsonObject *machine_stop_for_migration(gpointer user_data, gboolean *was_running)
{
    VmmMachine *m = user_data;
    g_mutex_lock(&m->lock);
    *was_running = m->state == RUN_RUNNING;
    m->state_before_migration = m->state;
    if (*was_running)
        vmm_workload_pause(m->workload);
    m->state = RUN_FINISH_MIGRATE;
    g_mutex_unlock(&m->lock);
    if (*was_running)
        machine_event(m, "STOP", NULL);

    /* The "device state": what the guest was doing, so the destination carries on. */
    guint64 rate;
    VmmDirtyPattern pattern;
    vmm_workload_get(m->workload, &rate, &pattern, NULL);
    JsonObject *device = json_object_new();
    json_object_set_int_member(device, "vcpus", m->vcpus);
    json_object_set_boolean_member(device, "running", *was_running);
    json_object_set_int_member(device, "dirty-rate", (gint64)rate);
    json_object_set_string_member(device, "pattern", vmm_dirty_pattern_to_string(pattern));
    return device;
}

static void machine_migration_finished(gpointer user_data, gboolean incoming,
                                       VmmMigrationStatus status, gboolean vm_was_running,
                                       JsonObject *device)
{
    VmmMachine *m = user_data;
    gboolean ok = status == VMM_MIGRATION_COMPLETED;
    if (!incoming) {
        g_mutex_lock(&m->lock);
        gboolean stopped = m->state == RUN_FINISH_MIGRATE;
        if (ok)
            m->state = RUN_POSTMIGRATE;
        else if (stopped && !vm_was_running)
            m->state = m->state_before_migration;
        g_mutex_unlock(&m->lock);
        /* Nothing lost: the source runs again whenever the destination did not take over. */
        if (!ok && stopped && vm_was_running)
            machine_resume(m);
        return;
    }
    if (ok) {
        VmmDirtyPattern pattern = VMM_DIRTY_RANDOM;
        vmm_dirty_pattern_from_string(
            json_object_get_string_member_with_default(device, "pattern", "random"), &pattern);
        gint64 rate = json_object_get_int_member_with_default(device, "dirty-rate", 0);
        vmm_workload_set(m->workload, (guint64)MAX(rate, 0), pattern);
    }
    g_mutex_lock(&m->lock);
    /* A destination stays paused until the caller says cont. */
    m->state = ok ? RUN_PAUSED : RUN_INTERNAL_ERROR;
    g_mutex_unlock(&m->lock);
    if (!ok && m->exit_on_error)
        vmm_machine_request_exit(m, 1, NULL);
}

static void machine_migration_event(gpointer user_data, const char *name, JsonObject *data)
{
    machine_event(user_data, name, data);
}

static const VmmMigrationHooks machine_migration_hooks = {
    .stop_vm = machine_stop_for_migration,
    .finished = machine_migration_finished,
    .event = machine_migration_event,
};

/* ---- QMP commands ---- */

static JsonNode *cmd_query_status(VmmQmpServer *s, JsonObject *args, gpointer data, GError **error)
{
    MachineRunState state = machine_get_state(data);
    JsonObject *o = json_object_new();
    json_object_set_boolean_member(o, "running", state == RUN_RUNNING);
    json_object_set_boolean_member(o, "singlestep", FALSE);
    json_object_set_string_member(o, "status", machine_state_name(state));
    return vmm_qmp_return_object(o);
}

static JsonNode *cmd_stop(VmmQmpServer *s, JsonObject *args, gpointer data, GError **error)
{
    VmmMachine *m = data;
    g_mutex_lock(&m->lock);
    gboolean was_running = m->state == RUN_RUNNING;
    if (was_running) {
        vmm_workload_pause(m->workload);
        m->state = RUN_PAUSED;
    }
    g_mutex_unlock(&m->lock);
    if (was_running)
        machine_event(m, "STOP", NULL);
    return vmm_qmp_return_object(NULL);
}

static JsonNode *cmd_cont(VmmQmpServer *s, JsonObject *args, gpointer data, GError **error)
{
    VmmMachine *m = data;
    switch (machine_get_state(m)) {
    case RUN_RUNNING:
        break;
    case RUN_PAUSED:
    case RUN_POSTMIGRATE:
        machine_resume(m);
        break;
    case RUN_INMIGRATE:
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "Guest is waiting for an incoming migration; resume it after the migration "
                    "completed");
        return NULL;
    case RUN_FINISH_MIGRATE:
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "Migration is completing; the guest cannot be resumed now");
        return NULL;
    case RUN_INTERNAL_ERROR:
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "Guest memory is incomplete after a failed incoming migration; it cannot run");
        return NULL;
    case RUN_SHUTDOWN:
    default:
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "Guest is shutting down");
        return NULL;
    }
    return vmm_qmp_return_object(NULL);
}

static JsonNode *cmd_quit(VmmQmpServer *s, JsonObject *args, gpointer data, GError **error)
{
    vmm_machine_request_exit(data, 0, "host-qmp-quit");
    return vmm_qmp_return_object(NULL);
}

static JsonNode *cmd_system_powerdown(VmmQmpServer *s, JsonObject *args, gpointer data,
                                      GError **error)
{
    machine_event(data, "POWERDOWN", NULL);
    vmm_machine_request_exit(data, 0, "guest-shutdown");
    return vmm_qmp_return_object(NULL);
}

/* Parses "unix:PATH" or "fd:NAME"; exactly one of *path, *fdname is set. */
static gboolean machine_parse_uri(const char *uri, const char **path, const char **fdname,
                                  GError **error)
{
    *path = *fdname = NULL;
    if (g_str_has_prefix(uri, "unix:") && uri[5])
        *path = uri + 5;
    else if (g_str_has_prefix(uri, "fd:") && uri[3])
        *fdname = uri + 3;
    else {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "Migration URI '%s' is not supported: ferry-vmm migrates over 'unix:PATH' or "
                    "'fd:NAME' only",
                    uri);
        return FALSE;
    }
    return TRUE;
}

/* The extra connections of a migration over several (`ferry-channels`: an
 * array of "fd:NAME", channels 1..n in order), taken from the named fds into
 * fds; FALSE (the fds taken so far stay in fds, for the caller to close)
 * when one is not an fd:NAME or not there. */
static gboolean machine_take_channels(VmmQmpServer *s, JsonObject *args, GArray *fds,
                                      GError **error)
{
    JsonArray *list = json_object_has_member(args, "ferry-channels")
                          ? json_object_get_array_member(args, "ferry-channels")
                          : NULL;
    guint n = list ? json_array_get_length(list) : 0;
    if (n + 1 > VMM_WIRE_MAX_CHANNELS) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "Parameter 'ferry-channels' names %u connections: at most %d in all", n,
                    VMM_WIRE_MAX_CHANNELS - 1);
        return FALSE;
    }
    for (guint i = 0; i < n; i++) {
        JsonNode *e = json_array_get_element(list, i);
        const char *uri = JSON_NODE_HOLDS_VALUE(e) &&
                                  json_node_get_value_type(e) == G_TYPE_STRING
                              ? json_node_get_string(e)
                              : NULL;
        if (!uri || !g_str_has_prefix(uri, "fd:") || !uri[3]) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "Parameter 'ferry-channels' takes 'fd:NAME' strings only");
            return FALSE;
        }
        int fd = vmm_qmp_server_take_fd(s, uri + 3, error);
        if (fd < 0)
            return FALSE;
        g_array_append_val(fds, fd);
    }
    return TRUE;
}

static void close_fds(GArray *fds)
{
    for (guint i = 0; i < fds->len; i++)
        close(g_array_index(fds, int, i));
    g_array_set_size(fds, 0);
}

static JsonNode *cmd_migrate(VmmQmpServer *s, JsonObject *args, gpointer data, GError **error)
{
    VmmMachine *m = data;
    const char *uri = json_object_get_string_member(args, "uri");
    if (json_object_get_boolean_member_with_default(args, "resume", FALSE)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "ferry-vmm has no post-copy migration to resume");
        return NULL;
    }
    MachineRunState state = machine_get_state(m);
    if (state == RUN_INMIGRATE || state == RUN_INTERNAL_ERROR) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "Guest is not in a state to be migrated (%s)", machine_state_name(state));
        return NULL;
    }
    if (vmm_migration_in_progress(m->migration)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "There's a migration process in progress");
        return NULL;
    }
    const char *path, *fdname;
    if (!machine_parse_uri(uri, &path, &fdname, error))
        return NULL;
    g_autoptr(GArray) extra = g_array_new(FALSE, FALSE, sizeof(int));
    if (!machine_take_channels(s, args, extra, error)) {
        close_fds(extra);
        return NULL;
    }
    if (path && extra->len) {
        close_fds(extra);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "Parameter 'ferry-channels' needs an 'fd:NAME' migration URI");
        return NULL;
    }
    int fd = -1;
    if (fdname && (fd = vmm_qmp_server_take_fd(s, fdname, error)) < 0) {
        close_fds(extra);
        return NULL;
    }
    if (!vmm_migration_start_outgoing(m->migration, fd, path, (int *)extra->data, extra->len,
                                      error)) {
        if (fd >= 0)
            close(fd);
        close_fds(extra);
        return NULL;
    }
    FERRY_INFO("outgoing migration to %s started", uri);
    return vmm_qmp_return_object(NULL);
}

static gboolean machine_listen_incoming(VmmMachine *machine, const char *uri, GArray *extra,
                                        GError **error)
{
    VmmMachine *m = machine;
    if (!m->incoming) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "'-incoming' was not specified on the command line");
        return FALSE;
    }
    if (machine_get_state(m) != RUN_INMIGRATE || vmm_migration_has_started(m->migration)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "The incoming migration has already been started");
        return FALSE;
    }
    const char *path, *fdname;
    if (!machine_parse_uri(uri, &path, &fdname, error))
        return FALSE;
    if (path && extra->len) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "Parameter 'ferry-channels' needs an 'fd:NAME' migration URI (a 'unix:PATH' "
                    "listener accepts as many connections as the sender opens)");
        return FALSE;
    }
    int fd = -1, listen_fd = -1;
    if (fdname)
        fd = vmm_qmp_server_take_fd(m->qmp, fdname, error);
    else
        listen_fd = vmm_socket_listen_unix(path, error);
    if (fd < 0 && listen_fd < 0)
        return FALSE;
    if (!vmm_migration_start_incoming(m->migration, fd, listen_fd, path, (int *)extra->data,
                                      extra->len, error)) {
        if (fd >= 0)
            close(fd);
        if (listen_fd >= 0) {
            close(listen_fd);
            unlink(path);
        }
        return FALSE;
    }
    g_array_set_size(extra, 0); /* the migration's now */
    FERRY_INFO("incoming migration from %s started", uri);
    return TRUE;
}

gboolean vmm_machine_listen_incoming(VmmMachine *machine, const char *uri, GError **error)
{
    g_autoptr(GArray) none = g_array_new(FALSE, FALSE, sizeof(int));
    return machine_listen_incoming(machine, uri, none, error);
}

static JsonNode *cmd_migrate_incoming(VmmQmpServer *s, JsonObject *args, gpointer data,
                                      GError **error)
{
    VmmMachine *m = data;
    g_autoptr(GArray) extra = g_array_new(FALSE, FALSE, sizeof(int));
    if (!machine_take_channels(s, args, extra, error) ||
        !machine_listen_incoming(m, json_object_get_string_member(args, "uri"), extra, error)) {
        close_fds(extra);
        return NULL;
    }
    /* Read when the migration ends, on this thread, so setting it now is in time. */
    m->exit_on_error = json_object_get_boolean_member_with_default(args, "exit-on-error", TRUE);
    return vmm_qmp_return_object(NULL);
}

static JsonNode *cmd_query_migrate(VmmQmpServer *s, JsonObject *args, gpointer data, GError **error)
{
    VmmMachine *m = data;
    return vmm_qmp_return_object(vmm_migration_query(m->migration));
}

static JsonNode *cmd_migrate_cancel(VmmQmpServer *s, JsonObject *args, gpointer data,
                                    GError **error)
{
    VmmMachine *m = data;
    vmm_migration_cancel(m->migration);
    return vmm_qmp_return_object(NULL);
}

static JsonNode *cmd_migrate_set_parameters(VmmQmpServer *s, JsonObject *args, gpointer data,
                                            GError **error)
{
    VmmMachine *m = data;
    gint64 bw = json_object_get_int_member_with_default(args, "max-bandwidth", -1);
    gint64 downtime = json_object_get_int_member_with_default(args, "downtime-limit", -1);
    if (json_object_has_member(args, "max-bandwidth") && bw < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "Parameter 'max-bandwidth' expects a non-negative number of bytes/second");
        return NULL;
    }
    if (json_object_has_member(args, "downtime-limit") && (downtime < 0 || downtime > 2000000)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "Parameter 'downtime-limit' expects an integer in the range of 0 to 2000000 "
                    "milliseconds");
        return NULL;
    }
    vmm_migration_set_parameters(m->migration, bw, downtime);
    return vmm_qmp_return_object(NULL);
}

static JsonNode *cmd_query_migrate_parameters(VmmQmpServer *s, JsonObject *args, gpointer data,
                                              GError **error)
{
    VmmMachine *m = data;
    gint64 bw, downtime;
    vmm_migration_get_parameters(m->migration, &bw, &downtime);
    JsonObject *o = json_object_new();
    json_object_set_int_member(o, "max-bandwidth", bw);
    json_object_set_int_member(o, "downtime-limit", downtime);
    return vmm_qmp_return_object(o);
}

static JsonNode *cmd_query_digest(VmmQmpServer *s, JsonObject *args, gpointer data, GError **error)
{
    VmmMachine *m = data;
    VmmDigest digest;
    vmm_memory_digest(m->mem, &digest);
    JsonObject *o = json_object_new();
    g_autofree char *hex = vmm_digest_to_string(&digest);
    json_object_set_string_member(o, "digest", hex);
    return vmm_qmp_return_object(o);
}

static JsonNode *cmd_set_workload(VmmQmpServer *s, JsonObject *args, gpointer data, GError **error)
{
    VmmMachine *m = data;
    guint64 rate;
    VmmDirtyPattern pattern;
    vmm_workload_get(m->workload, &rate, &pattern, NULL);
    if (json_object_has_member(args, "dirty-rate")) {
        gint64 r = json_object_get_int_member(args, "dirty-rate");
        if (r < 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "Parameter 'dirty-rate' expects a non-negative number of bytes/second");
            return NULL;
        }
        rate = (guint64)r;
    }
    const char *p = json_object_get_string_member_with_default(args, "pattern", NULL);
    if (p && !vmm_dirty_pattern_from_string(p, &pattern)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "Parameter 'pattern' expects 'random' or 'sequential'");
        return NULL;
    }
    vmm_workload_set(m->workload, rate, pattern);
    return vmm_qmp_return_object(NULL);
}

static JsonNode *cmd_query_workload(VmmQmpServer *s, JsonObject *args, gpointer data,
                                    GError **error)
{
    VmmMachine *m = data;
    guint64 rate, dirtied;
    VmmDirtyPattern pattern;
    vmm_workload_get(m->workload, &rate, &pattern, &dirtied);
    JsonObject *o = json_object_new();
    json_object_set_int_member(o, "dirty-rate", (gint64)rate);
    json_object_set_string_member(o, "pattern", vmm_dirty_pattern_to_string(pattern));
    json_object_set_int_member(o, "dirtied-bytes", (gint64)dirtied);
    json_object_set_int_member(o, "vcpus", m->vcpus);
    json_object_set_boolean_member(o, "active", machine_get_state(m) == RUN_RUNNING && rate > 0);
    return vmm_qmp_return_object(o);
}

static JsonNode *cmd_query_name(VmmQmpServer *s, JsonObject *args, gpointer data, GError **error)
{
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "name", ((VmmMachine *)data)->name);
    return vmm_qmp_return_object(o);
}

static JsonNode *cmd_query_uuid(VmmQmpServer *s, JsonObject *args, gpointer data, GError **error)
{
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "UUID", ((VmmMachine *)data)->uuid);
    return vmm_qmp_return_object(o);
}

static const VmmQmpArg args_migrate[] = {
    {"uri", VMM_QMP_ARG_STRING, FALSE},
    {"detach", VMM_QMP_ARG_BOOL, TRUE}, /* QEMU accepts and ignores it; so do we */
    {"resume", VMM_QMP_ARG_BOOL, TRUE},
    {"ferry-channels", VMM_QMP_ARG_ARRAY, TRUE},
    {NULL},
};
static const VmmQmpArg args_migrate_incoming[] = {
    {"uri", VMM_QMP_ARG_STRING, FALSE},
    {"exit-on-error", VMM_QMP_ARG_BOOL, TRUE},
    {"ferry-channels", VMM_QMP_ARG_ARRAY, TRUE},
    {NULL},
};
static const VmmQmpArg args_migrate_set_parameters[] = {
    {"max-bandwidth", VMM_QMP_ARG_INT, TRUE},
    {"downtime-limit", VMM_QMP_ARG_INT, TRUE},
    {NULL},
};
static const VmmQmpArg args_set_workload[] = {
    {"dirty-rate", VMM_QMP_ARG_INT, TRUE},
    {"pattern", VMM_QMP_ARG_STRING, TRUE},
    {NULL},
};

static const VmmQmpCommand machine_commands[] = {
    {"query-status", cmd_query_status, NULL},
    {"stop", cmd_stop, NULL},
    {"cont", cmd_cont, NULL},
    {"quit", cmd_quit, NULL},
    {"system_powerdown", cmd_system_powerdown, NULL},
    {"migrate", cmd_migrate, args_migrate},
    {"migrate-incoming", cmd_migrate_incoming, args_migrate_incoming},
    {"query-migrate", cmd_query_migrate, NULL},
    {"migrate_cancel", cmd_migrate_cancel, NULL},
    {"migrate-set-parameters", cmd_migrate_set_parameters, args_migrate_set_parameters},
    {"query-migrate-parameters", cmd_query_migrate_parameters, NULL},
    {"ferry-query-digest", cmd_query_digest, NULL},
    {"ferry-set-workload", cmd_set_workload, args_set_workload},
    {"ferry-query-workload", cmd_query_workload, NULL},
    {"query-name", cmd_query_name, NULL},
    {"query-uuid", cmd_query_uuid, NULL},
    {NULL},
};

/* ---- lifetime ---- */

VmmMachine *vmm_machine_new(const VmmConfig *config, GError **error)
{
    gint64 t0 = g_get_monotonic_time();
    /* Where a large guest's start spends its time (the kernel zeroing its
     * memory): the tests stand in for that here. */
    ferry_fault_point("vmm-start");
    VmmMemory *mem = vmm_memory_new(config->memory, !config->incoming, config->seed, error);
    if (!mem)
        return NULL;
    VmmMachine *m = g_new0(VmmMachine, 1);
    m->name = g_strdup(config->name);
    m->uuid = g_strdup(config->uuid);
    m->vcpus = config->vcpus;
    m->incoming = config->incoming;
    m->exit_on_error = TRUE; /* QEMU's default for migrate-incoming */
    m->mem = mem;
    g_mutex_init(&m->lock);
    m->workload = vmm_workload_new(mem, config->vcpus, config->seed);
    m->migration = vmm_migration_new(mem, config->vcpus, &machine_migration_hooks, m);
    m->loop = g_main_loop_new(NULL, FALSE);
    vmm_workload_set(m->workload, config->dirty_rate, config->pattern);
    if (config->incoming) {
        m->state = RUN_INMIGRATE;
    } else {
        m->state = RUN_RUNNING;
        vmm_workload_resume(m->workload);
    }
    FERRY_INFO("VM '%s' (%s): %" G_GUINT64_FORMAT " bytes of RAM, %u vCPUs, %s in %" G_GINT64_FORMAT
               " ms",
               m->name, m->uuid, mem->size, m->vcpus,
               config->incoming ? "waiting for an incoming migration" : "booted",
               (g_get_monotonic_time() - t0) / 1000);
    return m;
}

gboolean vmm_machine_serve(VmmMachine *machine, const char *qmp_path, GError **error)
{
    machine->qmp = vmm_qmp_server_new(qmp_path, machine_commands, machine, error);
    return machine->qmp != NULL;
}

static gboolean machine_exit_idle(gpointer data)
{
    VmmMachine *m = data;
    if (m->exit_reason) {
        JsonObject *ev = json_object_new();
        json_object_set_boolean_member(ev, "guest", g_str_equal(m->exit_reason, "guest-shutdown"));
        json_object_set_string_member(ev, "reason", m->exit_reason);
        machine_event(m, "SHUTDOWN", ev);
    }
    g_main_loop_quit(m->loop);
    return G_SOURCE_REMOVE;
}

void vmm_machine_request_exit(VmmMachine *machine, int code, const char *reason)
{
    VmmMachine *m = machine;
    if (m->exiting)
        return;
    m->exiting = TRUE;
    m->exit_code = code;
    m->exit_reason = g_strdup(reason);
    /* After the current reply went out, as QEMU orders quit's reply and SHUTDOWN. */
    g_idle_add(machine_exit_idle, m);
}

int vmm_machine_run(VmmMachine *machine)
{
    g_main_loop_run(machine->loop);
    FERRY_INFO("VM '%s' shutting down (exit code %d)", machine->name, machine->exit_code);
    g_mutex_lock(&machine->lock);
    if (machine->state == RUN_RUNNING)
        vmm_workload_pause(machine->workload);
    machine->state = RUN_SHUTDOWN;
    g_mutex_unlock(&machine->lock);
    if (machine->qmp)
        vmm_qmp_server_flush(machine->qmp, MACHINE_EXIT_FLUSH_MS);
    return machine->exit_code;
}

void vmm_machine_free(VmmMachine *machine)
{
    VmmMachine *m = machine;
    if (!m)
        return;
    /* Migration first: its thread may still call the hooks, which use the rest. */
    vmm_migration_free(m->migration);
    vmm_workload_free(m->workload);
    vmm_qmp_server_free(m->qmp);
    vmm_memory_free(m->mem);
    g_main_loop_unref(m->loop);
    g_mutex_clear(&m->lock);
    g_free(m->exit_reason);
    g_free(m->name);
    g_free(m->uuid);
    g_free(m);
}
