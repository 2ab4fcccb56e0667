/* The migration engine: everything about moving a running domain between two
 * daemons that does not depend on the VMM. It owns the job (on the domain
 * object), flags and parameters, the cookie, the source sequence (begin,
 * prepare on the peer, perform, finish, confirm), the destination sequence
 * (prepare, finish, the watchdog that drops an orphaned incoming VM, the
 * proxy-mode listener), cancel, and the records of completed jobs. Its bytes
 * travel on tunnel channels (tunnel/tunnel-channel.h); it never sees an RPC
 * connection, a transport or a TLS context.
 *
 * A VMM driver built on the hypervisor driver base (hv-driver.h) hands the
 * engine a MigrationHooks table at start and installs the engine's DriverOps
 * entries; the engine starts, kills and ends instances through the base (its
 * spawn and kill hooks, hv_instance_start/end). See docs/migration.md for the
 * sequences. */
#pragma once

#include <glib.h>

#include "driver/hv-driver.h"
#include "driver/migration-storage.h"
#include "tunnel/tunnel-channel.h"

typedef struct MigrationEngine MigrationEngine;

/* A migration's memory stream runs over at most this many connections
 * (--parallel, parallel.connections; migration-parallel.c). */
#define MIGRATION_MAX_CONNECTIONS 16

/* How the VMM meets the engine's channel. */
typedef enum {
    /* The VMM takes a connected socket: the engine makes a socket pair, keeps
     * one end for its channel and hands the hook the other (ferry-vmm and
     * QEMU: `getfd` then `fd:NAME`). */
    MIGRATION_ENDPOINT_FD = 0,
} MigrationEndpointKind;

/* What start_outgoing / start_incoming connect the VMM to. */
typedef struct {
    MigrationEndpointKind kind;
    /* FD: the VMM's end of the pair. The hook owns it from the call on and
     * closes it on every path (after passing it to the VMM). */
    int fd;
    /* How many connections the VMM makes (at most the hooks'
     * max_connections): fd is the first, extra_fds[0 .. n_connections - 2]
     * the others, in channel order; the hook owns and closes them all, as fd. */
    guint n_connections;
    int extra_fds[MIGRATION_MAX_CONNECTIONS - 1];
    /* A VMM that opens several connections to an address (the hooks'
     * parallel_by_address: QEMU's multifd) gets, when n_connections > 1, a
     * UNIX socket path instead of fds (fd and extra_fds are -1): the source
     * VMM connects there n times, the main connection first (the engine
     * listens); the destination VMM listens there and the engine connects n
     * times, the main connection first, which is how QEMU 7.2 tells them
     * apart. NULL otherwise. */
    const char *path;
    /* The migration may switch to post-copy (--postcopy): the VMM enables it
     * before it starts (QEMU: capability postcopy-ram on both sides). */
    gboolean postcopy;
} MigrationEndpoint;

/* The VMM's view of its migration. */
typedef enum {
    MIGRATION_VMM_NONE = 0,   /* no migration started, or the VMM cannot say */
    MIGRATION_VMM_SETUP,
    MIGRATION_VMM_ACTIVE,
    MIGRATION_VMM_CANCELLING,
    MIGRATION_VMM_COMPLETED,
    MIGRATION_VMM_FAILED,
    MIGRATION_VMM_CANCELLED,
    /* post-copy (migration-postcopy.c): the guest runs on the destination
     * while its memory still moves; paused: the stream broke, neither side
     * has the whole VM; recover: a new stream is resuming it */
    MIGRATION_VMM_POSTCOPY_ACTIVE,
    MIGRATION_VMM_POSTCOPY_PAUSED,
    MIGRATION_VMM_POSTCOPY_RECOVER,
} MigrationVmmStatus;

typedef struct {
    MigrationVmmStatus status;
    char *error;  /* FAILED: the VMM's own words, or NULL */
    char *digest; /* a digest of guest memory the VMM verified, or NULL */
    /* The VMM's counters: data_*, memory_* (total, processed, remaining, bps,
     * dirty rate, iteration, page size), setup_time_ms, downtime_ms and
     * has_downtime. The engine keeps type, operation, time_elapsed_ms. */
    DriverJobInfo counters;
} MigrationVmmProgress;

void migration_vmm_progress_clear(MigrationVmmProgress *progress);

/* What the user asked of the VMM's own migration algorithm. The engine
 * refuses a flag the VMM does not list in tunable_flags, by name. */
typedef struct MigrationTuning {
    guint64 downtime_ms;        /* migrate-setmaxdowntime; 0: the VMM's default */
    gboolean auto_converge;     /* --auto-converge */
    int throttle_initial;       /* auto_converge.initial, percent; -1: the VMM's default */
    int throttle_increment;     /* auto_converge.increment; -1: default */
    gboolean xbzrle;            /* --compressed */
    guint64 xbzrle_cache;       /* migrate-compcache / compression.xbzrle.cache; 0: default */
    gboolean postcopy;          /* --postcopy: the migration may switch to post-copy */
} MigrationTuning;

/* The hooks a VMM driver gives the engine.
 *
 * `vm` is the driver's handle on one running VMM, obtained with vm_ref. The
 * engine holds that reference for as long as it drives the VMM without the
 * domain lock; the handle must stay safe to call after its instance ended
 * (calls then fail with an error, or do nothing).
 *
 * Threads and locks: the source sequence runs in the RPC worker that serves
 * the client's PERFORM call; prepare and finish run in the workers serving the
 * peer's calls; the destination watchdog and the proxy listener run in
 * threads of the engine. Unless noted, a hook is called WITHOUT the domain
 * lock and may block on the VMM (bounded: a hook never waits forever). A hook
 * called with the domain lock (marked "obj locked") must not take it again
 * nor wait for anything that needs it. Abort (domjobabort, destroy) never
 * calls a hook: it cuts the channels, and the sequence that runs the job
 * reacts. Every hook but vm_ref/vm_unref/cancel reports failure with a GError
 * a user can act on; the engine adds the phase and the side.
 *
 * Besides these, the engine uses the base's hooks: spawn (incoming) through
 * hv_instance_start for the destination's hidden instance, kill (with obj
 * locked: without waiting when the source hands over, waiting when an
 * incoming VM is dropped) and hv_instance_end. */
typedef struct {
    MigrationEndpointKind endpoint;
    const char *vmm_name; /* for messages: "ferry-vmm", "QEMU" */
    /* MIGRATION_AUTO_CONVERGE, MIGRATION_COMPRESSED, MIGRATION_POSTCOPY: what
     * tune (and for post-copy, the hooks below) can do */
    guint tunable_flags;
    /* How many connections one migration of this VMM may use (--parallel);
     * 0 or 1: one only, PARALLEL and parallel.connections > 1 are refused
     * naming the VMM. */
    guint max_connections;
    /* Several connections go to an address (MigrationEndpoint.path), not fds. */
    gboolean parallel_by_address;

    /* A new reference on the VMM of obj's running instance, NULL if there is
     * none. obj locked. */
    gpointer (*vm_ref)(DomainObj *obj);
    void (*vm_unref)(gpointer vm);

    /* -- both sides -- */
    /* Pauses the guest's CPUs (a migration without --live). */
    gboolean (*stop)(gpointer vm, GError **error);
    /* Resumes the guest's CPUs: the destination after a finished migration,
     * the source after a failed one. */
    gboolean (*resume)(gpointer vm, GError **error);
    /* 1 if the guest's CPUs run, 0 if not, -1 if the VMM cannot say. */
    int (*is_running)(gpointer vm);
    /* Whether the VMM stopped the guest on a disk I/O error (QEMU's run
     * state io-error): --abort-on-error watches it. */
    gboolean (*paused_on_io_error)(gpointer vm);
    /* The VMM's state and counters now; a prompt query. */
    gboolean (*progress)(gpointer vm, MigrationVmmProgress *out, GError **error);
    /* Waits until the VMM's migration left SETUP/ACTIVE/CANCELLING, at most
     * timeout_ms, and reports it (the last state seen if the time ran out). */
    gboolean (*wait_end)(gpointer vm, int timeout_ms, MigrationVmmProgress *out,
                         GError **error);

    /* -- source -- */
    /* Starts sending the guest into endpoint, as fast as the VMM can: the
     * channel enforces the bandwidth. */
    gboolean (*start_outgoing)(gpointer vm, const MigrationEndpoint *endpoint, GError **error);
    /* Asks the VMM to stop migrating; returns without waiting for it. */
    void (*cancel)(gpointer vm);
    /* Applies tuning: with starting, before start_outgoing (capabilities
     * too); without, during the migration (its parameters only). */
    gboolean (*tune)(gpointer vm, const MigrationTuning *tuning, gboolean starting,
                     GError **error);
    /* The VMM's current downtime_ms and xbzrle_cache (0 if it has none). */
    gboolean (*get_tuning)(gpointer vm, MigrationTuning *out, GError **error);
    /* Switches a running migration started with postcopy to post-copy: the
     * guest stops here and runs on the destination once it has its state
     * (virsh migrate-postcopy). NULL: no post-copy. */
    gboolean (*start_postcopy)(gpointer vm, GError **error);
    /* Resuming a post-copy migration whose stream broke (virsh migrate
     * --postcopy-resume): the source VMM, its migration paused, carries on
     * into a new endpoint (QEMU: migrate resume=true); the destination VMM,
     * its guest running and its migration paused, reads it (QEMU:
     * migrate-recover). NULL: no post-copy. */
    gboolean (*resume_outgoing)(gpointer vm, const MigrationEndpoint *endpoint, GError **error);
    /* Pauses the source's post-copy migration (virsh domjobabort
     * --postcopy; QEMU: migrate-pause): the stream stops, both VMMs keep
     * their part, --postcopy-resume carries on. NULL: no post-copy. */
    gboolean (*pause_postcopy)(gpointer vm, GError **error);
    /* The destination's side of a resume: the VMM listens at endpoint->path
     * (fd -1) for the new stream and the engine connects there; the VMM
     * itself refuses unless its migration is paused (QEMU: migrate-recover,
     * out of band, since its main thread may wait on a missing page). */
    gboolean (*recover_incoming)(gpointer vm, const MigrationEndpoint *endpoint, GError **error);

    /* -- destination -- */
    /* Makes the VMM of a new incoming instance (spawned paused by the base's
     * spawn hook with incoming=TRUE) read the guest from endpoint. obj locked. */
    gboolean (*start_incoming)(gpointer vm, const MigrationEndpoint *endpoint, GError **error);

    /* -- the pre-flight probe -- */
    /* The guest's dirty rate measured over `seconds` (blocks that long), and
     * the VMM's downtime limit; fills bytes_per_second, downtime_ms, method.
     * May be NULL. */
    gboolean (*measure_dirty_rate)(gpointer vm, guint seconds, DriverDirtyRate *out,
                                   GError **error);

    /* -- disks without shared storage (migration-storage.h); all NULL: the
     * VMM copies no disks, and NON_SHARED_DISK/INC are refused naming it -- */
    /* Source: the disks of the running VMM a copy can move (writable, with
     * an image: target, format, capacity, path, and with inc the backing
     * file), in the guest's order. */
    GPtrArray *(*storage_list)(gpointer vm, gboolean inc, GError **error);
    /* Destination, before the incoming instance starts (obj locked, its
     * live definition final): creates each disk's image where obj's
     * definition puts it, when missing (the source's format and capacity;
     * with inc over disk->backing). Fills disk->path with the destination's
     * image; appends the paths it created to created (for a failure to
     * remove them). */
    gboolean (*storage_create)(DomainObj *obj, GPtrArray *disks, gboolean inc,
                               GPtrArray *created, GError **error);
    /* Destination, obj locked, before start_incoming: exports the disks,
     * writable, on an NBD server at socket_path, and keeps the guest paused
     * after the incoming stream (the images are handed over at resume). */
    gboolean (*storage_export)(gpointer vm, const char *socket_path, GPtrArray *disks,
                               GError **error);
    /* Destination, before the guest resumes: ends the exports. */
    gboolean (*storage_unexport)(gpointer vm, GError **error);
    /* Source: mirrors disk into endpoint->fd (taken on every path), a
     * connected socket whose peer is the destination's export of it;
     * inc: only the top image (the destination keeps the backing chain). */
    gboolean (*storage_mirror)(gpointer vm, const MigrationDisk *disk,
                               const MigrationEndpoint *endpoint, gboolean inc, GError **error);
    /* Source: the mirrors' progress (bytes to copy, copied) and whether every
     * one caught up; FALSE with the VMM's words when one failed. */
    gboolean (*storage_progress)(gpointer vm, guint64 *total, guint64 *copied,
                                 gboolean *ready, GError **error);
    /* Source, the guest paused after its state went: completes every mirror
     * (the destination has every write) and lets go of the targets. */
    gboolean (*storage_complete)(gpointer vm, GError **error);
    /* Source, on failure: stops the mirrors and lets go of the targets; the
     * source's disks stay as they are. Never waits long. */
    void (*storage_cancel)(gpointer vm);
} MigrationHooks;

/* Lifetime: made by the driver after hv_driver_init(), freed by it after
 * hv_driver_detach_all() and before hv_driver_cleanup() (freeing waits for
 * the engine's threads). hooks must outlive the engine. data_settings: the
 * daemon's proxy-mode settings (a reference is taken), or NULL (proxy mode
 * then listens on every address, ports 49152-49215, no TLS). Sets
 * hv->base.migration. */
MigrationEngine *migration_engine_new(HvDriver *hv, const MigrationHooks *hooks,
                                      TunnelDataSettings *data_settings);
void migration_engine_free(MigrationEngine *engine);

/* Fills the job, migration, save and restore entries of a driver's ops with
 * the engine's (wrapping the base's create and undefine, which must be set). */
void migration_engine_install_ops(DriverOps *ops);

/* Save and restore (virsh save, restore, managedsave): the VMM migrates into
 * a file through the same hooks. save_dir: where managed save images live
 * (NAME.save; made when first needed). refusal: why this driver's VMM cannot
 * migrate into a file (save and restore are then refused with it), NULL if
 * it can. Call once, after migration_engine_new() and before autostart. */
void migration_engine_set_files(MigrationEngine *engine, const char *save_dir,
                                const char *refusal);

/* The domain is being destroyed (obj locked): its job, if any, is aborted
 * with why. */
void migration_engine_abort_job_locked(DomainObj *obj, const char *why);
/* Whether the guest of obj (locked) may be paused by the user during its job:
 * an outgoing migration (virsh migrate --timeout N --timeout-suspend). */
gboolean migration_engine_job_allows_pause(DomainObj *obj);
/* Whether obj (locked) has a migration job: lifecycle calls refuse then. */
gboolean migration_engine_has_job(DomainObj *obj);
