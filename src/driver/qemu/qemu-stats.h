/* Monitoring a running QEMU guest: the statistics of `virsh domstats`,
 * `dommemstat`, `vcpuinfo` and `vcpucount` (from QMP query-balloon,
 * query-cpus-fast, query-blockstats, query-block and /proc), and
 * `virsh screenshot` (QMP screendump, streamed to the client). */
#pragma once

#include "driver/driver.h"
#include "driver/domain-obj.h"
#include "driver/vmm-process.h"

/* The QEMU process of an active domain (qemu-driver.c), NULL if none. */
VmmProcess *qemu_driver_vm_of(DomainObj *obj);

/* Sets the monitoring entries of the QEMU driver's ops. */
void qemu_stats_install_ops(DriverOps *ops);
