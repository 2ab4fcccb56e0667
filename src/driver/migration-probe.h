/* The pre-flight probe's daemon side (docs/debugging.md): discard channels
 * on the destination, the path measured from the source, the guest's dirty
 * rate. Installed with the engine's other DriverOps entries. */
#pragma once

#include "driver/driver.h"

void migration_probe_install_ops(DriverOps *ops);
