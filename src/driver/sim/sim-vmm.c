/* ferry-vmm's command line. */
#include "driver/sim/sim-vmm.h"

#include "util/uuid.h"

VmmProcess *sim_vm_spawn(const DomainDef *def, const SimVmSpawnOptions *o, GError **error)
{
    g_autofree char *uuid = ferry_uuid_to_string(def->uuid);
    g_autofree char *memory = g_strdup_printf("%" G_GUINT64_FORMAT, def->memory_kib * 1024);
    g_autofree char *vcpus = g_strdup_printf("%u", (guint)def->vcpus);
    /* Without a seed in the XML, the UUID picks one: the same VM boots with the same RAM. */
    guint64 seed = def->workload.seed ? def->workload.seed : ferry_uuid_hash(def->uuid);
    g_autofree char *seed_s = g_strdup_printf("%" G_GUINT64_FORMAT, seed);
    g_autofree char *rate = g_strdup_printf("%" G_GUINT64_FORMAT, def->workload.dirty_rate);
    const char *pattern = def->workload.pattern == DOMAIN_WORKLOAD_SEQUENTIAL ? "sequential" : "random";

    GPtrArray *argv = g_ptr_array_new();
    const char *fixed[] = {o->vmm_binary, "--name", def->name, "--uuid", uuid,
                           "--memory", memory, "--vcpus", vcpus, "--qmp", o->qmp_path,
                           "--seed", seed_s, "--dirty-rate", rate, "--dirty-pattern", pattern,
                           "--pidfile", o->pid_path, "--log", o->log_path};
    for (guint i = 0; i < G_N_ELEMENTS(fixed); i++)
        g_ptr_array_add(argv, (char *)fixed[i]);
    if (o->incoming) {
        g_ptr_array_add(argv, "--incoming");
        g_ptr_array_add(argv, "defer");
    }
    g_ptr_array_add(argv, NULL);

    VmmProcessSpawnOptions po = {.vmm_name = "ferry-vmm", .domain_name = def->name,
                                 .argv = (const char *const *)argv->pdata,
                                 .qmp_path = o->qmp_path, .log_path = o->log_path,
                                 .instance_id = o->instance_id, .on_gone = o->on_gone,
                                 .data = o->data};
    VmmProcess *vm = vmm_process_spawn(&po, error);
    g_ptr_array_free(argv, TRUE);
    return vm;
}
