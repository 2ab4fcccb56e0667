/* DomainObj: one domain known to the driver (its persistent and live defs, its
 * state, its running instance) and the libvirt state/reason numbers. */
#pragma once

#include <glib.h>
#include <sys/types.h>

#include "driver/domain-def.h"

/* virDomainState */
typedef enum {
    DOMAIN_STATE_NOSTATE = 0,
    DOMAIN_STATE_RUNNING = 1,
    DOMAIN_STATE_BLOCKED = 2,
    DOMAIN_STATE_PAUSED = 3,
    DOMAIN_STATE_SHUTDOWN = 4,
    DOMAIN_STATE_SHUTOFF = 5,
    DOMAIN_STATE_CRASHED = 6,
    DOMAIN_STATE_PMSUSPENDED = 7,
} DomainState;
#define DOMAIN_STATE_LAST 8

/* The reason enums are libvirt's (libvirt-domain.h): a reason is only
 * meaningful together with its state. */
typedef enum {
    DOMAIN_NOSTATE_UNKNOWN = 0,
} DomainNostateReason;

typedef enum {
    DOMAIN_RUNNING_UNKNOWN = 0,
    DOMAIN_RUNNING_BOOTED = 1,
    DOMAIN_RUNNING_MIGRATED = 2,
    DOMAIN_RUNNING_RESTORED = 3,
    DOMAIN_RUNNING_FROM_SNAPSHOT = 4,
    DOMAIN_RUNNING_UNPAUSED = 5,
    DOMAIN_RUNNING_MIGRATION_CANCELED = 6,
    DOMAIN_RUNNING_SAVE_CANCELED = 7,
    DOMAIN_RUNNING_WAKEUP = 8,
    DOMAIN_RUNNING_CRASHED = 9,
    DOMAIN_RUNNING_POSTCOPY = 10,
    DOMAIN_RUNNING_POSTCOPY_FAILED = 11,
} DomainRunningReason;

typedef enum {
    DOMAIN_BLOCKED_UNKNOWN = 0,
} DomainBlockedReason;

typedef enum {
    DOMAIN_PAUSED_UNKNOWN = 0,
    DOMAIN_PAUSED_USER = 1,
    DOMAIN_PAUSED_MIGRATION = 2,
    DOMAIN_PAUSED_SAVE = 3,
    DOMAIN_PAUSED_DUMP = 4,
    DOMAIN_PAUSED_IOERROR = 5,
    DOMAIN_PAUSED_WATCHDOG = 6,
    DOMAIN_PAUSED_FROM_SNAPSHOT = 7,
    DOMAIN_PAUSED_SHUTTING_DOWN = 8,
    DOMAIN_PAUSED_SNAPSHOT = 9,
    DOMAIN_PAUSED_CRASHED = 10,
    DOMAIN_PAUSED_STARTING_UP = 11,
    DOMAIN_PAUSED_POSTCOPY = 12,
    DOMAIN_PAUSED_POSTCOPY_FAILED = 13,
    DOMAIN_PAUSED_API_ERROR = 14,
} DomainPausedReason;

typedef enum {
    DOMAIN_SHUTDOWN_UNKNOWN = 0,
    DOMAIN_SHUTDOWN_USER = 1,
} DomainShutdownReason;

typedef enum {
    DOMAIN_SHUTOFF_UNKNOWN = 0,
    DOMAIN_SHUTOFF_SHUTDOWN = 1,
    DOMAIN_SHUTOFF_DESTROYED = 2,
    DOMAIN_SHUTOFF_CRASHED = 3,
    DOMAIN_SHUTOFF_MIGRATED = 4,
    DOMAIN_SHUTOFF_SAVED = 5,
    DOMAIN_SHUTOFF_FAILED = 6,
    DOMAIN_SHUTOFF_FROM_SNAPSHOT = 7,
    DOMAIN_SHUTOFF_DAEMON = 8,
} DomainShutoffReason;

typedef enum {
    DOMAIN_CRASHED_UNKNOWN = 0,
    DOMAIN_CRASHED_PANICKED = 1,
} DomainCrashedReason;

typedef enum {
    DOMAIN_PMSUSPENDED_UNKNOWN = 0,
} DomainPMSuspendedReason;

/* Lifetime: reference counted. A DomainList holds one reference while the
 * object is a member; every lookup hands the caller one more, which the caller
 * drops with domain_obj_unref() (or domain_obj_end() for a locked one). The
 * object dies with its last reference, after it has left the list.
 *
 * Locking: `lock` guards every field below it. Hold it while reading or
 * changing them; never hold it across a blocking wait on a VMM or a peer.
 * Take a DomainList's functions freely while holding it: the list's own lock
 * is never held while waiting for an object. When two instances of one domain
 * must be locked together (local migration), lock the hidden incoming one first.
 *
 * An *instance* is one running copy of the domain: it exists from activation
 * to deactivation and owns id, instance_id, live_def, pid, qmp_path,
 * runtime_data, job and max_speed_mib. */
typedef struct {
    GMutex lock;
    gatomicrefcount refs;

    DomainDef *persistent_def; /* NULL for a transient domain */
    DomainDef *live_def;       /* non-NULL exactly while active */
    int id;                    /* runtime id, -1 while inactive (set by DomainList) */
    char *instance_id;         /* NULL while inactive (set by DomainList); names the
                                * instance's files: state, socket, pid file */
    DomainState state;
    int reason; /* one of the reason enums of `state` */

    gboolean autostart;
    gboolean has_managed_save;
    guint n_snapshots;
    guint n_checkpoints;

    pid_t pid;                /* the instance's VMM process, 0 if unknown */
    char *qmp_path;           /* the instance's QMP socket, NULL if none */
    GHashTable *runtime_data; /* string -> string, saved with the runtime state */
    struct MigrationJob *job; /* the instance's migration (a reference), or NULL:
                               * the migration engine's (driver/migration-job.h) */
    guint64 max_speed_mib;    /* MIGRATE_SET_MAX_SPEED for the instance, 0 = unlimited */
    guint64 max_downtime_ms;  /* MIGRATE_SET_MAX_DOWNTIME, 0 = the VMM's default */
    guint64 xbzrle_cache;     /* MIGRATE_SET_COMPRESSION_CACHE (bytes), 0 = the VMM's default */

    /* The driver's data, freed with the object (without the lock held). */
    gpointer priv;
    GDestroyNotify priv_free;

    /* Written by DomainList only (under its lock and this one); readable
     * without locks. */
    gint hidden;  /* an incoming instance not (yet) visible to lookups */
    gint removed; /* no longer a member of its list */
} DomainObj;

DomainObj *domain_obj_new(void);
DomainObj *domain_obj_ref(DomainObj *obj);
void domain_obj_unref(DomainObj *obj);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(DomainObj, domain_obj_unref)

void domain_obj_lock(DomainObj *obj);
void domain_obj_unlock(DomainObj *obj);
/* Unlocks and unrefs what a lookup returned. NULL is fine. */
void domain_obj_end(DomainObj *obj);

/* All below: the caller holds obj->lock. */
gboolean domain_obj_is_active(const DomainObj *obj);
gboolean domain_obj_is_persistent(const DomainObj *obj);
/* The live def while active, else the persistent def. */
DomainDef *domain_obj_get_def(const DomainObj *obj);
const char *domain_obj_get_name(const DomainObj *obj);
const guint8 *domain_obj_get_uuid(const DomainObj *obj);

void domain_obj_set_state(DomainObj *obj, DomainState state, int reason);
DomainState domain_obj_get_state(const DomainObj *obj, int *reason);

/* XML as GET_XML_DESC returns it: with DOMAIN_DEF_FORMAT_INACTIVE the
 * persistent def if there is one, otherwise the current def; the id only for
 * the live form of an active domain. */
char *domain_obj_format_xml(const DomainObj *obj, guint flags);

/* Replaces (and frees) any previous priv. */
void domain_obj_set_priv(DomainObj *obj, gpointer priv, GDestroyNotify priv_free);
gpointer domain_obj_get_priv(const DomainObj *obj);

/* value NULL removes the key. */
void domain_obj_set_runtime_data(DomainObj *obj, const char *key, const char *value);
const char *domain_obj_get_runtime_data(const DomainObj *obj, const char *key);

/* Readable without the lock. */
gboolean domain_obj_is_hidden(const DomainObj *obj);
gboolean domain_obj_is_removed(const DomainObj *obj);

/* Names for logs and the runtime-state files: "running", "paused" ...;
 * reasons as "booted", "migration-canceled" ... */
const char *domain_state_to_string(DomainState state);
gboolean domain_state_from_string(const char *str, DomainState *state);
const char *domain_state_reason_to_string(DomainState state, int reason);
gboolean domain_state_reason_from_string(DomainState state, const char *str, int *reason);
