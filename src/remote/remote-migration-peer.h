/* The source daemon's connection to a destination daemon for peer-to-peer
 * migration: the MigrationPeerOps the driver layer uses. */
#pragma once

#include "driver/driver.h"

const MigrationPeerOps *remote_migration_peer_ops(void);
