/* The sim driver's migration: jobs, and protocol version 3 (tunnelled and
 * proxied peer-to-peer). */
#include "driver/sim/sim-private.h"

void sim_driver_register_migration(DriverOps *ops);

void sim_driver_register_migration(DriverOps *ops)
{
}
