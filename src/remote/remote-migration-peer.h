/* The source daemon's connection to a destination daemon for peer-to-peer
 * migration: the MigrationPeerOps the driver layer uses. */
#pragma once

#include "driver/driver.h"

const MigrationPeerOps *remote_migration_peer_ops(void);
/* Where the client files for destinations are (migration_pki_dir); NULL:
 * libvirt's client locations. Set once, before the first migration. */
void remote_migration_peer_set_pki_dir(const char *dir);
