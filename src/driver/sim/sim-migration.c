/* The sim driver's migration hooks: ferry-vmm speaks QEMU's QMP migration
 * commands, so the engine drives it with the shared QMP hooks
 * (driver/qmp-migration.h). */
#include "driver/qmp-migration.h"
#include "driver/sim/sim-private.h"

static gpointer sim_hook_vm_ref(DomainObj *obj)
{
    SimInstance *inst = domain_obj_get_priv(obj);
    return inst && inst->vm ? vmm_process_ref(inst->vm) : NULL;
}

void sim_migration_hooks_init(MigrationHooks *hooks)
{
    qmp_migration_hooks_init(hooks, QMP_MIGRATION_FERRY_VMM, sim_hook_vm_ref);
}
