/* The "sim" driver: domains run as ferry-vmm processes, one per running VM,
 * controlled over QMP. URI: sim:///system. */
#pragma once

#include "driver/driver.h"
#include "driver/vmm-log.h"
#include "tunnel/tunnel-channel.h"

typedef struct {
    const char *config_dir; /* persistent domain configs */
    const char *run_dir;    /* runtime state of running instances, VMM sockets */
    const VmmLogConfig *log; /* ferry-vmm's logs, by domain (copied) */
    const char *vmm_binary; /* ferry-vmm */
    /* The daemon's settings for proxy-mode data connections: address, port
     * range, TLS (virsh migrate --tls). A reference is taken. */
    TunnelDataSettings *migration_data;
} SimDriverConfig;

/* Loads configs and finds running VMs again; the driver is then registered. */
Driver *sim_driver_open(const SimDriverConfig *config, GError **error);
/* Leaves running VMs running (a restarted daemon finds them again). */
void sim_driver_close(Driver *drv);
