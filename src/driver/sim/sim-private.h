/* The sim driver's internals, shared by its lifecycle and migration files. */
#pragma once

#include "driver/hv-driver.h"
#include "driver/migration-engine.h"
#include "driver/sim/sim-vmm.h"

typedef struct {
    HvDriver hv; /* the shared lifecycle: list, store, events */
    char *vmm_binary;
    MigrationEngine *migration;
    MigrationHooks migration_hooks; /* outlives the engine */
} SimDriver;

/* ferry-vmm's migration hooks (sim-migration.c). */
void sim_migration_hooks_init(MigrationHooks *hooks);

/* The priv of a running DomainObj. Lifetime: the instance's; freed by
 * domain_obj_set_priv(obj, NULL, NULL) when the instance ends. */
typedef struct {
    VmmProcess *vm;
} SimInstance;

static inline SimDriver *sim_driver_of(Driver *drv)
{
    return hv_driver_of(drv)->owner;
}
