/* The sim driver's internals, shared by its lifecycle and migration files. */
#pragma once

#include "driver/domain-list.h"
#include "driver/domain-store.h"
#include "driver/driver.h"
#include "driver/sim/sim-vmm.h"
#include "rpc/rpc-tls.h"

/* virDomainEventType and the details ferry sends. */
enum {
    SIM_EVENT_DEFINED = 0,
    SIM_EVENT_UNDEFINED = 1,
    SIM_EVENT_STARTED = 2,
    SIM_EVENT_SUSPENDED = 3,
    SIM_EVENT_RESUMED = 4,
    SIM_EVENT_STOPPED = 5,
    SIM_EVENT_SHUTDOWN = 6,
};
enum { SIM_DEFINED_ADDED = 0, SIM_DEFINED_UPDATED = 1 };
enum { SIM_STARTED_BOOTED = 0, SIM_STARTED_MIGRATED = 1 };
enum { SIM_SUSPENDED_PAUSED = 0, SIM_SUSPENDED_MIGRATED = 1 };
enum { SIM_RESUMED_UNPAUSED = 0, SIM_RESUMED_MIGRATED = 1 };
enum {
    SIM_STOPPED_SHUTDOWN = 0,
    SIM_STOPPED_DESTROYED = 1,
    SIM_STOPPED_CRASHED = 2,
    SIM_STOPPED_MIGRATED = 3,
    SIM_STOPPED_FAILED = 5,
};

typedef struct SimMigrationJob SimMigrationJob;

typedef struct {
    Driver base;
    char *vmm_binary;
    DomainList *list;
    DomainStore *store;
    GThreadPool *reaper; /* handles "VMM gone" notices off the QMP threads */
    guint migration_port_min, migration_port_max;
    char *migration_address;
    char *migration_pki_dir;
    char *daemon_id; /* random per daemon run: tells a local migration apart */
    RpcTlsContext *migration_tls; /* the daemon's server TLS, for --tls data connections */
    GMutex migration_lock;
    GHashTable *incoming;  /* domain name -> SimMigrationJob* (ref), destination side */
    GHashTable *completed; /* uuid string -> DriverJobInfo*, the last finished job */
    GCond watchdogs_cond;
    guint watchdogs;       /* incoming watchdog threads running (under migration_lock) */
    gint stopping;         /* atomic: the daemon is stopping, watchdogs leave at once */
} SimDriver;

void sim_migration_job_unref(SimMigrationJob *job);
void sim_migration_init(SimDriver *sd);
void sim_migration_shutdown(SimDriver *sd);
/* Aborts the migration job of obj (locked), if any: destroy during a migration. */
void sim_migration_abort_locked(SimDriver *sd, DomainObj *obj, const char *why);

/* The priv of a running DomainObj. Lifetime: the instance's; freed by
 * domain_obj_set_priv(obj, NULL, NULL) when the instance ends. */
typedef struct {
    SimVm *vm;
    SimMigrationJob *job; /* the migration in progress, if any */
    guint64 max_speed_mib; /* MIGRATE_SET_MAX_SPEED, 0 = unlimited */
    DriverJobInfo completed; /* the last finished job (domjobinfo --completed) */
    gboolean has_completed;
} SimInstance;

static inline SimDriver *sim_driver_of(Driver *drv)
{
    return drv->priv;
}

/* Looks up the domain a DriverDomain names (by UUID); locked + referenced. */
DomainObj *sim_lookup(SimDriver *sd, const DriverDomain *dom, GError **error);
/* Fills a DriverDomain from obj (locked). */
void sim_domain_ref_of(DomainObj *obj, DriverDomain *out);
void sim_emit(SimDriver *sd, DomainObj *obj, int event, int detail);
/* Spawns ferry-vmm for the activated obj (locked). */
gboolean sim_instance_start(SimDriver *sd, DomainObj *obj, gboolean incoming, GError **error);
/* Ends obj's instance (locked): VMM connection dropped, runtime files removed,
 * obj deactivated with reason. The VMM process must already be gone or be
 * killed by the caller first. */
void sim_instance_end(SimDriver *sd, DomainObj *obj, DomainShutoffReason reason);
gboolean sim_check_active(DomainObj *obj, GError **error);
