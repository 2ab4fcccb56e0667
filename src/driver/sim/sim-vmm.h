/* Starting ferry-vmm for a domain: its command line from the DomainDef. The
 * running process is a VmmProcess like any VMM's. */
#pragma once

#include "driver/domain-def.h"
#include "driver/vmm-process.h"

typedef struct {
    const char *vmm_binary;
    const char *qmp_path;
    const char *pid_path;
    const char *log_path;
    const char *instance_id;
    gboolean incoming; /* start paused, waiting for migrate-incoming */
    VmmProcessGoneFunc on_gone;
    gpointer data;
} SimVmSpawnOptions;

/* Starts ferry-vmm for def and connects to its monitor. On failure nothing is
 * left running and the error quotes the VMM's own last log line. */
VmmProcess *sim_vm_spawn(const DomainDef *def, const SimVmSpawnOptions *options, GError **error);
