/* The migration engine's hooks for a VMM driven over QMP with QEMU's
 * migration commands: ferry-vmm and QEMU share them. */
#pragma once

#include "driver/migration-engine.h"

typedef enum {
    QMP_MIGRATION_FERRY_VMM, /* migrate-incoming takes exit-on-error */
    QMP_MIGRATION_QEMU,      /* QEMU 7.2: it does not */
} QmpMigrationDialect;

/* Fills hooks; vm_ref (obj locked) returns a new reference on the
 * VmmProcess of obj's running instance, or NULL. */
void qmp_migration_hooks_init(MigrationHooks *hooks, QmpMigrationDialect dialect,
                              gpointer (*vm_ref)(DomainObj *obj));
