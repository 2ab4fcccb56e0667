/* Live migration of guest RAM and device state over one stream socket: the
 * sender (pre-copy rounds, stop-and-copy, digest) and the receiver, each on a
 * thread of its own, with QEMU-like status and statistics for query-migrate. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "vmm/vmm-memory.h"

typedef enum {
    VMM_MIGRATION_NONE,
    VMM_MIGRATION_SETUP,
    VMM_MIGRATION_ACTIVE,
    VMM_MIGRATION_COMPLETED,
    VMM_MIGRATION_FAILED,
    VMM_MIGRATION_CANCELLING,
    VMM_MIGRATION_CANCELLED,
} VmmMigrationStatus;

typedef struct {
    /* Migration thread, at stop-and-copy: stop the vCPUs (no guest write may
     * follow) and return the device state to send (consumed). *was_running
     * tells whether the VM ran until now, so that a failure resumes it. */
    JsonObject *(*stop_vm)(gpointer user_data, gboolean *was_running);
    /* Main thread, after the migration thread ended and before the final status
     * is published (so a client that sees it also sees the new run state).
     * device: the received device state, incoming success only. */
    void (*finished)(gpointer user_data, gboolean incoming, VmmMigrationStatus status,
                     gboolean vm_was_running, JsonObject *device);
    /* Any thread; data is consumed. */
    void (*event)(gpointer user_data, const char *name, JsonObject *data);
} VmmMigrationHooks;

typedef struct _VmmMigration VmmMigration;

VmmMigration *vmm_migration_new(VmmMemory *mem, guint vcpus, const VmmMigrationHooks *hooks,
                                gpointer user_data);
/* Cancels a migration in progress and waits for its thread (bounded: every
 * blocking point watches the cancel). The hooks are not called any more. */
void vmm_migration_free(VmmMigration *migration);

/* Exactly one of fd (a connected stream socket, taken over) or unix_path.
 * extra_fds: n_extra more connected sockets (taken over once this returns
 * TRUE), channels 1..n_extra of a migration over several connections. */
gboolean vmm_migration_start_outgoing(VmmMigration *migration, int fd, const char *unix_path,
                                      const int *extra_fds, guint n_extra, GError **error);
/* Exactly one of fd (connected, taken over) or listen_fd (taken over; accepts
 * one connection, or as many as the sender's HELLO announces, then
 * listen_path is unlinked). extra_fds: with fd, the extra connections. */
gboolean vmm_migration_start_incoming(VmmMigration *migration, int fd, int listen_fd,
                                      const char *listen_path, const int *extra_fds,
                                      guint n_extra, GError **error);
/* Returns at once; the migration ends as "cancelled" shortly after. */
void vmm_migration_cancel(VmmMigration *migration);
/* TRUE from start until the final status is published. */
gboolean vmm_migration_in_progress(VmmMigration *migration);
gboolean vmm_migration_has_started(VmmMigration *migration);

JsonObject *vmm_migration_query(VmmMigration *migration);
/* Negative = leave unchanged. Both apply to a migration already running. */
void vmm_migration_set_parameters(VmmMigration *migration, gint64 max_bandwidth,
                                  gint64 downtime_limit_ms);
void vmm_migration_get_parameters(VmmMigration *migration, gint64 *max_bandwidth,
                                  gint64 *downtime_limit_ms);

const char *vmm_migration_status_to_string(VmmMigrationStatus status);
