/* The "sim" driver: domains run as ferry-vmm processes, one per running VM,
 * controlled over QMP. URI: sim:///system. */
#pragma once

#include "driver/driver.h"

typedef struct {
    const char *config_dir; /* persistent domain configs */
    const char *run_dir;    /* runtime state of running instances, VMM sockets */
    const char *vmm_binary; /* ferry-vmm */
    guint migration_port_min; /* proxy-mode data connections (qemu.conf names) */
    guint migration_port_max;
    const char *migration_address;
    /* The client files for TLS data connections to a destination; NULL:
     * libvirt's client locations. */
    const char *migration_pki_dir;
    /* The daemon's server TLS context for encrypted proxy-mode data
     * connections (virsh migrate --tls), or NULL. A reference is taken. */
    struct RpcTlsContext *migration_tls;
} SimDriverConfig;

/* Loads configs and finds running VMs again; the driver is then registered. */
Driver *sim_driver_open(const SimDriverConfig *config, GError **error);
/* Leaves running VMs running (a restarted daemon finds them again). */
void sim_driver_close(Driver *drv);
