/* The sim driver's internals, shared by its lifecycle and migration files. */
#pragma once

#include "driver/domain-list.h"
#include "driver/domain-store.h"
#include "driver/driver.h"
#include "driver/migration-engine.h"
#include "driver/sim/sim-vmm.h"

typedef struct {
    Driver base;
    char *vmm_binary;
    DomainList *list;
    DomainStore *store;
    GThreadPool *reaper; /* handles "VMM gone" notices off the QMP threads */
    MigrationEngine *migration;
} SimDriver;

/* ferry-vmm's migration hooks (sim-migration.c). */
extern const MigrationHooks sim_migration_hooks;

/* The priv of a running DomainObj. Lifetime: the instance's; freed by
 * domain_obj_set_priv(obj, NULL, NULL) when the instance ends. */
typedef struct {
    SimVm *vm;
} SimInstance;

static inline SimDriver *sim_driver_of(Driver *drv)
{
    return drv->priv;
}

/* Looks up the domain a DriverDomain names (by UUID); locked + referenced. */
DomainObj *sim_lookup(SimDriver *sd, const DriverDomain *dom, GError **error);
/* Fills a DriverDomain from obj (locked). */
void sim_domain_ref_of(DomainObj *obj, DriverDomain *out);
void sim_emit(SimDriver *sd, DomainObj *obj, int event, int detail);
/* Spawns ferry-vmm for the activated obj (locked). */
gboolean sim_instance_start(SimDriver *sd, DomainObj *obj, gboolean incoming, GError **error);
/* Ends obj's instance (locked): VMM connection dropped, runtime files removed,
 * obj deactivated with reason. The VMM process must already be gone or be
 * killed by the caller first. */
void sim_instance_end(SimDriver *sd, DomainObj *obj, DomainShutoffReason reason);
gboolean sim_check_active(DomainObj *obj, GError **error);
