/* One running VMM process as a driver sees it, whatever the VMM (ferry-vmm,
 * QEMU): the process, its QMP connection, and how its end is noticed. A
 * driver keeps a VmmProcess in the DomainObj's priv while the instance runs. */
#pragma once

#include <json-glib/json-glib.h>
#include <sys/types.h>

#include "driver/qmp.h"

typedef struct VmmProcess VmmProcess;

/* Called once, on a QMP thread, when the VMM's monitor connection ends (the
 * process exited or was killed). guest_shutdown: the guest powered off. */
typedef void (*VmmProcessGoneFunc)(const char *instance_id, gboolean guest_shutdown,
                                   const GError *why, gpointer data);
/* Every QMP event, on the QMP thread, in stream order (data valid during the
 * call only). Must not block. */
typedef void (*VmmProcessEventFunc)(const char *instance_id, const char *event,
                                    JsonObject *data, gpointer user_data);

typedef struct {
    const char *vmm_name; /* "ferry-vmm", "QEMU": for messages */
    const char *domain_name;
    const char *const *argv; /* NULL-terminated; argv[0] the binary */
    const char *qmp_path;    /* the monitor socket the VMM creates */
    const char *log_path;    /* its stderr is appended here */
    const char *instance_id;
    VmmProcessGoneFunc on_gone;
    VmmProcessEventFunc on_event; /* nullable */
    gpointer data;
} VmmProcessSpawnOptions;

/* Starts the VMM and connects to its monitor. The process is not our child
 * (it outlives the daemon). On failure nothing is left running and the error
 * quotes the VMM's own last log line. */
VmmProcess *vmm_process_spawn(const VmmProcessSpawnOptions *options, GError **error);
/* Reconnects to a VMM left running by a previous daemon. */
VmmProcess *vmm_process_attach(pid_t pid, const char *vmm_name, const char *qmp_path,
                               const char *instance_id, VmmProcessGoneFunc on_gone,
                               VmmProcessEventFunc on_event, gpointer data, GError **error);
/* Kills the process and waits (bounded) until it is gone. */
void vmm_process_kill(VmmProcess *vm);
/* Kills the process without waiting (a VM that already handed its guest over). */
void vmm_process_kill_nowait(VmmProcess *vm);
/* Lifetime: refcounted; a migration holds a reference while it runs without
 * the domain lock. The last unref drops the monitor connection (the process
 * is not touched). */
VmmProcess *vmm_process_ref(VmmProcess *vm);
void vmm_process_unref(VmmProcess *vm);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmProcess, vmm_process_unref)

pid_t vmm_process_get_pid(VmmProcess *vm);
QmpClient *vmm_process_get_qmp(VmmProcess *vm);
/* Runs a QMP command with the default timeout. */
JsonNode *vmm_process_qmp(VmmProcess *vm, const char *command, JsonObject *args,
                          GError **error);
/* The same out of band where the VMM took capability oob
 * (qmp_client_execute_oob), in band otherwise. */
JsonNode *vmm_process_qmp_oob(VmmProcess *vm, const char *command, JsonObject *args,
                              GError **error);
/* "running", "paused", "inmigrate", "postmigrate", ... */
char *vmm_process_query_status(VmmProcess *vm, GError **error);
/* CPU time the VMM process has used, in nanoseconds. */
guint64 vmm_process_cpu_time_ns(VmmProcess *vm);
/* Marks that the driver itself is ending the VM, so its end is not a crash. */
void vmm_process_set_stopping(VmmProcess *vm);
gboolean vmm_process_is_stopping(VmmProcess *vm);

/* A running (not zombie) process: a zombie is gone for us. */
gboolean vmm_pid_alive(pid_t pid);
/* The last non-empty line of a VMM's log file, or NULL. */
char *vmm_log_last_line(const char *path);
