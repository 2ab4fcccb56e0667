/* One simulated VM: its run state, RAM, vCPU workload and migration, and the
 * QMP commands that drive them. */
#pragma once

#include <glib.h>

#include "vmm/vmm-workload.h"

typedef struct {
    const char *name;
    const char *uuid;
    guint64 memory;
    guint vcpus;
    guint64 seed;
    guint64 dirty_rate;
    VmmDirtyPattern pattern;
    gboolean incoming; /* start in "inmigrate", RAM unfilled, vCPUs stopped */
} VmmConfig;

typedef struct _VmmMachine VmmMachine;

/* Boots the VM: RAM filled from the seed and vCPUs running, unless incoming. */
VmmMachine *vmm_machine_new(const VmmConfig *config, GError **error);
void vmm_machine_free(VmmMachine *machine);

/* Starts serving QMP on path (main thread's default context). */
gboolean vmm_machine_serve(VmmMachine *machine, const char *qmp_path, GError **error);
/* As QEMU's "-incoming unix:PATH": listen at once instead of waiting for migrate-incoming. */
gboolean vmm_machine_listen_incoming(VmmMachine *machine, const char *uri, GError **error);
/* Runs the main loop until the VM shuts down; returns the process exit code. */
int vmm_machine_run(VmmMachine *machine);
/* Asks for an orderly exit from the main loop; reason (nullable) is the SHUTDOWN
 * event's reason ("host-signal", "host-qmp-quit", "guest-shutdown"). */
void vmm_machine_request_exit(VmmMachine *machine, int code, const char *reason);
