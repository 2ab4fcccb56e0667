/* QEMU's storage hooks of the migration engine: disks without shared
 * storage over NBD (virsh migrate --copy-storage-all/-inc). */
#pragma once

#include "driver/migration-engine.h"

/* Fills the storage_* hooks of a QEMU MigrationHooks table. */
void qemu_storage_hooks_init(MigrationHooks *hooks);
