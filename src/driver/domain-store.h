/* DomainStore: domains on disk. Persistent configs and autostart marks in a
 * config dir, the runtime state of each running instance in a run dir. */
#pragma once

#include <glib.h>

#include "driver/domain-list.h"

/* On disk (every file written as temp + fsync + rename, then the directory
 * fsynced, so a crash leaves the old or the new file, never a torn one):
 *
 *   CONFIG_DIR/NAME.xml             persistent def, inactive form
 *   CONFIG_DIR/autostart/NAME.xml   symlink to ../NAME.xml: autostart is on
 *   RUN_DIR/INSTANCE.xml            runtime state of one running instance
 *   RUN_DIR/INSTANCE.SUFFIX         the instance's other runtime files (socket,
 *                                   pid file), see domain_store_runtime_path()
 *
 * Lifetime: created by the driver at start, freed at shutdown. Immutable after
 * creation, so any thread may use it; writes of one domain are serialised by
 * its DomainObj lock, which the caller holds. */
typedef struct _DomainStore DomainStore;

/* Creates both directories (mode 0700) if missing. */
DomainStore *domain_store_new(const char *config_dir, const char *run_dir, GError **error);
void domain_store_free(DomainStore *store);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(DomainStore, domain_store_free)

const char *domain_store_get_config_dir(const DomainStore *store);
const char *domain_store_get_run_dir(const DomainStore *store);

gboolean domain_store_save_config(DomainStore *store, const DomainDef *def, GError **error);
/* Removes NAME.xml and its autostart mark; missing files are fine. */
gboolean domain_store_delete_config(DomainStore *store, const char *name, GError **error);
gboolean domain_store_set_autostart(DomainStore *store, const char *name, gboolean autostart,
                                    GError **error);
gboolean domain_store_get_autostart(DomainStore *store, const char *name);

/* Writes obj's runtime state (obj locked and active): live def, instance id,
 * runtime id, state and reason, VMM pid, QMP socket path, runtime data, and
 * whether the instance is hidden (incoming). Call on every state change. */
gboolean domain_store_save_state(DomainStore *store, const DomainObj *obj, GError **error);
/* Whether the runtime directory takes a new instance's files (its state, the
 * VMM's pid file and log): FALSE naming the directory and the cause (a full
 * disk, say) when a page of probe data cannot be written there. Checked
 * before a VMM starts, so that no VM runs whose state cannot be kept. */
gboolean domain_store_check_room(DomainStore *store, GError **error);
/* Removes INSTANCE.xml when the instance stops; a missing file is fine. */
gboolean domain_store_delete_state(DomainStore *store, const char *instance_id, GError **error);

/* RUN_DIR/INSTANCE<suffix>, e.g. suffix ".qmp" or ".pid". */
char *domain_store_runtime_path(const DomainStore *store, const char *instance_id,
                                const char *suffix);

/* Loads every config into list (with its autostart mark), then re-attaches
 * every saved running instance. A file that cannot be read, parsed or added is
 * logged and skipped. Returns the restored instances (each with a reference,
 * unlocked) for the driver to check (is the pid alive, does the socket answer)
 * and reconnect or clean up. Fails only if a directory cannot be read. */
GPtrArray *domain_store_load(DomainStore *store, DomainList *list, GError **error);
