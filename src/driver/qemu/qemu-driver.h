/* The "qemu" driver: domains run as QEMU processes (TCG, or KVM where KVM
 * can boot a guest), one per running VM, controlled over QMP on UNIX sockets
 * the daemon owns. URI: qemu:///system. */
#pragma once

#include "driver/driver.h"
#include "driver/vmm-log.h"
#include "tunnel/tunnel-channel.h"

typedef struct {
    const char *config_dir; /* persistent domain configs */
    const char *run_dir;    /* runtime state, monitor sockets */
    const VmmLogConfig *log; /* QEMU's logs, by domain (copied) */
    const char *save_dir;    /* managed save images (NAME.save) */
    const char *emulator;   /* qemu-system-x86_64, a path or a name in PATH */
    /* The daemon's proxy-mode data settings (address, ports, TLS), shared by
     * every driver's migration engine; a reference is taken. NULL: defaults. */
    TunnelDataSettings *migration_data;
} QemuDriverConfig;

/* Probes the emulator (version, machines, whether KVM can run guests), loads
 * configs and finds running guests again. Fails if the emulator cannot run. */
Driver *qemu_driver_open(const QemuDriverConfig *config, GError **error);
/* Leaves running guests running (a restarted daemon finds them again). */
void qemu_driver_close(Driver *drv);
