/* One running ferry-vmm instance as the sim driver sees it: the process, its
 * QMP connection, and how its end is noticed. The driver keeps a SimVm as the
 * DomainObj's priv while the instance runs. */
#pragma once

#include <json-glib/json-glib.h>

#include "driver/domain-def.h"
#include "driver/qmp.h"

typedef struct SimVm SimVm;

/* Called once, on a QMP thread, when the VMM's monitor connection ends (the
 * process exited or was killed). guest_shutdown: the guest powered off. */
typedef void (*SimVmGoneFunc)(const char *instance_id, gboolean guest_shutdown,
                              const GError *why, gpointer data);

typedef struct {
    const char *vmm_binary;
    const char *qmp_path;
    const char *pid_path;
    const char *log_path;
    const char *instance_id;
    gboolean incoming; /* start paused, waiting for migrate-incoming */
    SimVmGoneFunc on_gone;
    gpointer data;
} SimVmSpawnOptions;

/* Starts ferry-vmm for def and connects to its monitor. On failure nothing is
 * left running and the error quotes the VMM's own last log line. */
SimVm *sim_vm_spawn(const DomainDef *def, const SimVmSpawnOptions *options, GError **error);
/* Reconnects to a VMM left running by a previous daemon. */
SimVm *sim_vm_attach(pid_t pid, const char *qmp_path, const char *instance_id,
                     SimVmGoneFunc on_gone, gpointer data, GError **error);
/* Kills the process and waits (bounded) until it is gone. */
void sim_vm_kill(SimVm *vm);
/* Kills the process without waiting (a VM that already handed its guest over). */
void sim_vm_kill_nowait(SimVm *vm);
/* Lifetime: refcounted; a migration holds a reference while it runs without
 * the domain lock. The last unref drops the monitor connection (the process
 * is not touched). */
SimVm *sim_vm_ref(SimVm *vm);
void sim_vm_unref(SimVm *vm);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SimVm, sim_vm_unref)

pid_t sim_vm_get_pid(SimVm *vm);
QmpClient *sim_vm_get_qmp(SimVm *vm);
/* Runs a QMP command with the default timeout. */
JsonNode *sim_vm_qmp(SimVm *vm, const char *command, JsonObject *args, GError **error);
/* "running", "paused", "inmigrate", "postmigrate", ... */
char *sim_vm_query_status(SimVm *vm, GError **error);
/* CPU time the VMM process has used, in nanoseconds. */
guint64 sim_vm_cpu_time_ns(SimVm *vm);
/* Marks that the driver itself is ending the VM, so its end is not a crash. */
void sim_vm_set_stopping(SimVm *vm);
gboolean sim_vm_is_stopping(SimVm *vm);
