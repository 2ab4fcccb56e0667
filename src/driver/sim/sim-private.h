/* The sim driver's internals, shared by its lifecycle and migration files. */
#pragma once

#include "driver/hv-driver.h"
#include "driver/sim/sim-vmm.h"
#include "rpc/rpc-tls.h"

typedef struct SimMigrationJob SimMigrationJob;

typedef struct {
    HvDriver hv; /* the shared lifecycle: list, store, events */
    char *vmm_binary;
    guint migration_port_min, migration_port_max;
    char *migration_address;
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
    VmmProcess *vm;
    SimMigrationJob *job; /* the migration in progress, if any */
    guint64 max_speed_mib; /* MIGRATE_SET_MAX_SPEED, 0 = unlimited */
    DriverJobInfo completed; /* the last finished job (domjobinfo --completed) */
    gboolean has_completed;
} SimInstance;

static inline SimDriver *sim_driver_of(Driver *drv)
{
    return hv_driver_of(drv)->owner;
}
