/* The sim driver's entry points. Domain management joins with the domain model. */
#include "driver/sim/sim-driver.h"

#include "util/error.h"

typedef struct {
    Driver base;
    char *config_dir;
    char *run_dir;
    char *vmm_binary;
} SimDriver;

static char *sim_get_capabilities(Driver *drv, GError **error)
{
    return driver_node_format_capabilities(
        "  <guest>\n    <os_type>hvm</os_type>\n    <arch name='x86_64'>\n"
        "      <wordsize>64</wordsize>\n      <emulator>ferry-vmm</emulator>\n"
        "      <domain type='sim'/>\n    </arch>\n  </guest>\n");
}

static GPtrArray *sim_list_all_domains(Driver *drv, guint flags, GError **error)
{
    return g_ptr_array_new_with_free_func((GDestroyNotify)driver_domain_free);
}

static const DriverOps sim_ops = {
    .name = "sim",
    .type = "SIM",
    .version = 1000, /* 0.1.0 */
    .canonical_uri = "sim:///system",
    .get_capabilities = sim_get_capabilities,
    .list_all_domains = sim_list_all_domains,
};

Driver *sim_driver_open(const SimDriverConfig *config, GError **error)
{
    SimDriver *sim = g_new0(SimDriver, 1);
    sim->config_dir = g_strdup(config->config_dir);
    sim->run_dir = g_strdup(config->run_dir);
    sim->vmm_binary = g_strdup(config->vmm_binary);
    driver_init(&sim->base, &sim_ops, sim);
    return &sim->base;
}

void sim_driver_close(Driver *drv)
{
    if (!drv)
        return;
    SimDriver *sim = drv->priv;
    driver_clear(drv);
    g_free(sim->config_dir);
    g_free(sim->run_dir);
    g_free(sim->vmm_binary);
    g_free(sim);
}
