/* The storage procedures of the REMOTE program (remote-storage.c) answer
 * from the daemon's one StorageDir, whatever driver a connection opened. */
#pragma once

#include "driver/storage-dir.h"

/* Called once at start, before clients are served (NULL: storage calls are
 * refused as not supported). The daemon keeps ownership. */
void remote_storage_set(StorageDir *sd);
