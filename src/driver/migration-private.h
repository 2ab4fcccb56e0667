/* What the migration engine's files share: the engine itself and the entry
 * points of each side. Not for drivers: they use migration-engine.h. */
#pragma once

#include "driver/migration-cookie.h"
#include "driver/migration-engine.h"
#include "driver/migration-job.h"
#include "driver/migration-params.h"

struct MigrationEngine {
    HvDriver *hv;
    const MigrationHooks *hooks;
    TunnelDataSettings *data_settings;
    char *daemon_id; /* random per daemon run: tells a local migration apart */
    GMutex lock;
    GHashTable *incoming;  /* domain name -> MigrationJob* (ref), destination side */
    /* domain name -> why its last incoming VM was dropped, for a finish that
     * comes after (the source's report); a new prepare of the name clears it */
    GHashTable *dropped;
    GHashTable *completed; /* uuid string -> DriverJobInfo*, the last finished job */
    /* client-managed migration, source side */
    GHashTable *performing; /* MigrationJob* (ref) -> itself: performs running */
    GHashTable *confirming; /* instance id -> the perform's state, awaiting confirm */
    GCond threads_cond;
    guint threads;   /* engine threads running (under lock) */
    gint stopping;   /* atomic: the daemon is stopping, threads leave at once */
    guint probes;    /* discard channels of the pre-flight probe (under lock) */
    /* save and restore (migration-file.c), set once before use */
    char *save_dir;     /* managed save images, NULL: none */
    char *file_refusal; /* why this VMM cannot save, NULL: it can */
};

MigrationEngine *migration_engine_of(Driver *drv, GError **error);
/* Keeps job's outcome for `domjobinfo --completed` on the domain uuid. */
void migration_save_completed(MigrationEngine *engine, const guint8 *uuid, MigrationJob *job,
                              int type, const GError *error, const char *digest);
/* A record ended after its job was saved (abort: the destination is asked
 * in the background): adds the flight summary to the saved outcome. */
void migration_update_completed_record(MigrationEngine *engine, const guint8 *uuid,
                                       MigrationJob *job);
/* The engine's threads: counted, so that free waits for them. FALSE with
 * "cannot create a thread for <name>: <reason>" when the system refuses one;
 * data then stays the caller's. */
gboolean migration_thread_start(MigrationEngine *engine, const char *name, GThreadFunc func,
                                gpointer data, GError **error);
void migration_thread_done(MigrationEngine *engine);
/* Kills the VMM of obj (locked), if any, and ends its instance. */
void migration_kill_instance(MigrationEngine *engine, DomainObj *obj,
                             DomainShutoffReason reason);

/* migration-source.c */
char *migration_source_begin(Driver *drv, const DriverDomain *dom, GPtrArray *params,
                             guint flags, GBytes **cookie_out, GError **error);
gboolean migration_source_perform(Driver *drv, const DriverDomain *dom, const char *dconnuri,
                                  GPtrArray *params, GBytes *cookie_in, guint flags,
                                  GBytes **cookie_out, GError **error);
/* Frees what a client-managed perform left for confirm. */
void migration_source_pending_free(gpointer pending);
/* The client gone: its perform is aborted, a perform awaiting its confirm
 * is given up (the VM stays paused here). Does not block. */
void migration_source_client_closed(MigrationEngine *engine, guint64 client_id);
gboolean migration_source_confirm(Driver *drv, const DriverDomain *dom, GPtrArray *params,
                                  GBytes *cookie_in, guint flags, gboolean cancelled,
                                  GError **error);

/* migration-file.c: save, restore, managed save, and create/undefine aware
 * of managed save images. */
void migration_file_install_ops(DriverOps *ops);
/* migration-offline.c: VIR_MIGRATE_OFFLINE, the definition only */
char *migration_offline_begin(MigrationEngine *engine, const DriverDomain *dom, GPtrArray *params,
                              GBytes **cookie_out, GError **error);
gboolean migration_offline_prepare(MigrationEngine *engine, GPtrArray *params, GBytes *cookie_in,
                                   GBytes **cookie_out, char **uri_out, GError **error);
DriverDomain *migration_offline_finish(MigrationEngine *engine, GPtrArray *params,
                                       gboolean cancelled, GBytes **cookie_out, GError **error);
gboolean migration_offline_confirm(MigrationEngine *engine, const DriverDomain *dom, guint flags,
                                   gboolean cancelled, GError **error);
/* Peer-to-peer: prepare and finish on the destination, then confirm here. */
gboolean migration_offline_perform_p2p(MigrationEngine *engine, const DriverDomain *dom,
                                       const char *dconnuri, GPtrArray *params, guint flags,
                                       GError **error);

/* migration-storage.c: disks without shared storage */
/* Refuses NON_SHARED_DISK/INC, naming it, when this VMM or mode cannot. */
gboolean migration_storage_check(MigrationEngine *e, guint flags, GError **error);
/* Source: the disks the flags and the migrate_disks params ask to copy
 * (*disks NULL: none); a migrate_disks name that is no copyable disk is
 * refused naming it. */
gboolean migration_storage_source_select(MigrationEngine *e, gpointer vm, guint flags,
                                         GPtrArray *params, GPtrArray **disks, GError **error);
/* Opens channel index of the migration with *vmm_fd as its local end (taken,
 * *vmm_fd set to -1, once the channel owns it). */
typedef gboolean (*MigrationChannelOpen)(gpointer data, guint index, int *vmm_fd,
                                         GError **error);
/* Source, after prepare: one channel per disk (open), the VMM mirroring
 * into each; refused when the destination did not answer the disks. */
gboolean migration_storage_source_start(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                        GPtrArray *disks, gboolean inc, GBytes *dest_cookie,
                                        MigrationChannelOpen open, gpointer data,
                                        GArray *vmm_ends, GError **error);
/* Until every mirror caught up (abort, a channel's failure, a stall or the
 * VMM's error end it). */
gboolean migration_storage_source_wait_ready(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                             GError **error);
/* During the memory stream: FALSE with the cause when a mirror or its
 * channel failed. */
gboolean migration_storage_source_check(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                        GError **error);
/* The guest's state went: the mirrors complete and their channels end. */
gboolean migration_storage_source_complete(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                           guint n_disks, GError **error);
/* Stops the mirrors; vmm_ends (int: copies of our ends of the disks'
 * sockets, kept by source_start) are shut down, drained and closed. */
void migration_storage_source_cancel(MigrationEngine *e, gpointer vm, GArray *vmm_ends);
void migration_storage_close_ends(GArray *vmm_ends);
/* Destination, prepare (obj locked, before its instance starts): creates
 * the missing images. */
MigrationStorageDest *migration_storage_dest_create(MigrationEngine *e, DomainObj *obj,
                                                    guint flags, MigrationCookie *src,
                                                    GError **error);
/* ... and once the incoming VMM runs: its export, and the channels' ends. */
gboolean migration_storage_dest_export(MigrationEngine *e, MigrationStorageDest *st,
                                       DomainObj *obj, gpointer vm, GError **error);
guint migration_storage_dest_count(MigrationStorageDest *st);
GPtrArray *migration_storage_dest_disks(MigrationStorageDest *st);
gboolean migration_storage_dest_is_inc(MigrationStorageDest *st);
/* Tunnelled: the terms of the disks' streams (the migration's own). */
void migration_storage_dest_set_stream(MigrationStorageDest *st, const TunnelStreamConfig *cfg);
/* The local end of channel index (>= 1), -1 if there is none or it was
 * taken; *stream (if not NULL) gets the disks' stream terms. */
int migration_storage_dest_take_fd(MigrationStorageDest *st, guint index,
                                   TunnelStreamConfig *stream);
/* finish, before the guest resumes: every disk channel ended cleanly, the
 * export ends, the images are kept. */
gboolean migration_storage_dest_finish(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                       GError **error);
/* A failed migration: removes the images prepare created. */
void migration_storage_dest_discard(MigrationStorageDest *st);

/* migration-parallel.c: several channels for the memory stream */
/* Source: the connections the flags, parallel.connections and the daemon's
 * default ask for (1: one); refused naming the VMM when it cannot. */
gboolean migration_parallel_wanted(MigrationEngine *e, guint flags, GPtrArray *params,
                                   guint *n, GError **error);
/* Destination: how many of what the source's cookie asks for it accepts. */
guint migration_parallel_accept(MigrationEngine *e, const MigrationCookie *src);
/* Source: what the destination agreed to (1 for a libvirt peer). */
guint migration_parallel_agreed(guint wanted, GBytes *dest_cookie);
/* n - 1 socket pairs for connections 1..n-1: ours[i] and vmm[i] the two
 * ends (closed again on failure). */
gboolean migration_parallel_pairs(guint n, int *ours, int *vmm, GError **error);
/* Closes fds[0 .. n - 2] that are still open, setting them to -1. */
void migration_parallel_close(guint n, int *fds);
/* Until the memory stream's extra channels all ended cleanly. */
gboolean migration_parallel_wait(MigrationJob *job, gint64 deadline_us, GError **error);
/* The memory stream failed with *error: a memory channel whose own
 * connection broke (waited for until deadline_us) is the root cause and
 * replaces it; the VMM's connections go down together after one failed. */
void migration_parallel_prefer_cause(MigrationJob *job, gint64 deadline_us, GError **error);
/* "source VMM (channel 2)", for the channels' errors; channel 0: "source VMM". */
const char *migration_parallel_vmm_name(gboolean source, guint channel);
/* Channel index (> 0) carries the memory stream, not a disk. */
gboolean migration_parallel_is_memory_channel(const MigrationJob *job, guint index);
/* Destination: the VMM's end of channel index, if it is a memory channel
 * not taken yet (job->lock held); -1 otherwise. */
int migration_parallel_dest_take_fd(MigrationJob *job, guint index);

/* A VMM that connects to an address (hooks->parallel_by_address): the
 * source listens at path (FALSE/-1 with the cause), accepts its k-th
 * connection (abort and deadline_us watched; the fd blocking); the
 * destination connects its k-th connection to the VMM's path, retrying
 * until it listens or deadline_us. */
int migration_parallel_listen(const char *path, GError **error);
int migration_parallel_accept_vmm(MigrationJob *job, int listen_fd, guint k, gint64 deadline_us,
                              GError **error);
int migration_parallel_connect(const char *path, guint k, gint64 deadline_us, GError **error);

/* migration-dest.c */
gboolean migration_dest_prepare(Driver *drv, GPtrArray *params, GBytes *cookie_in, guint flags,
                                TunnelBinding *binding, TunnelPeerWatch *source,
                                GBytes **cookie_out, char **uri_out, GError **error);
DriverDomain *migration_dest_finish(Driver *drv, GPtrArray *params, GBytes *cookie_in,
                                    guint flags, gboolean cancelled, GBytes **cookie_out,
                                    GError **error);
/* The client gone: its incoming VMs are dropped. Does not block. */
void migration_dest_client_closed(MigrationEngine *engine, guint64 client_id);
/* Wakes the destination threads of the engine and cuts their channels. */
void migration_dest_shutdown(MigrationEngine *engine);

/* migration-dest.c, for post-copy: the steps of finish it shares */
/* Makes the incoming instance (obj, locked) the domain; running with
 * running_reason and the RESUMED event's resumed_detail unless --suspend. */
gboolean migration_dest_reveal(MigrationEngine *engine, DomainObj *obj, gpointer vm,
                               const char *pxml, guint flags, int running_reason,
                               int resumed_detail, GError **error);
void migration_dest_discard(MigrationEngine *engine, MigrationJob *job, const char *why);
void migration_dest_end_record(MigrationJob *job, const char *outcome, const char *why);
void migration_dest_forget(MigrationEngine *engine, MigrationJob *job);
/* Proxy mode: a listener for the source's data connection (takes *vmm_fd on
 * success); *uri_out names it. */
gboolean migration_dest_listen(MigrationEngine *engine, MigrationJob *job, GPtrArray *params,
                               guint flags, int *vmm_fd, char **uri_out, GError **error);
/* Tunnelled: the source opens channel index (a disk's, or one more of the
 * memory stream's) of the incoming migration of domain name; its token
 * proves it is that migration's source. */
gboolean migration_dest_open_stream(MigrationEngine *engine, const char *name, const char *token,
                                    guint index, TunnelBinding *binding, GError **error);

/* migration-postcopy.c */
/* What the source's perform loop keeps about post-copy. */
typedef struct {
    guint64 last_iteration; /* the last MIGRATION_ITERATION event sent */
    gboolean switch_sent;   /* the VMM was asked to switch */
    gboolean switched;      /* the VMM is in post-copy: the guest moves on */
} MigrationPostcopySource;

/* virsh migrate-postcopy: asks the perform loop to switch. */
gboolean migration_postcopy_start(Driver *drv, const DriverDomain *dom, guint flags,
                                  GError **error);
/* virsh domjobabort --postcopy: pauses the source VMM's post-copy migration
 * (refused unless the domain's outgoing migration is in post-copy); the
 * migration then fails resumable, as after a broken link. */
gboolean migration_postcopy_pause(MigrationEngine *engine, const DriverDomain *dom,
                                  GError **error);
/* Each turn of the source's perform loop: the iteration event, and the
 * switch when asked. FALSE when the VMM refused to switch. */
gboolean migration_postcopy_source_poll(MigrationEngine *engine, MigrationJob *job, gpointer vm,
                                        const char *instance_id,
                                        const MigrationVmmProgress *progress,
                                        MigrationPostcopySource *pc, GError **error);
/* The source VMM entered post-copy: too late to abort, the VM is paused
 * here (post-copy) while it moves. */
void migration_postcopy_source_switched(MigrationEngine *engine, MigrationJob *job,
                                        const char *instance_id);
/* After finish answered (the guest runs there): until the rest of the
 * memory moved and the VMM completed. */
gboolean migration_postcopy_source_wait(MigrationEngine *engine, MigrationJob *job, gpointer vm,
                                        MigrationVmmProgress *end, GError **error);
/* A migration that failed after the switch (obj locked): the VM stays
 * paused here, post-copy failed; it never runs here again by itself. */
void migration_postcopy_source_failed_locked(MigrationEngine *engine, DomainObj *obj,
                                             const GError *why);
/* Resume (POSTCOPY_RESUME), source: the domain (locked) must be paused
 * with its post-copy failed; resuming marks the job post-copy (no abort)
 * and the domain paused (post-copy); the VMM must be post-copy paused. */
gboolean migration_postcopy_source_check_resume_locked(DomainObj *obj, GError **error);
void migration_postcopy_source_resuming_locked(MigrationEngine *engine, DomainObj *obj,
                                               MigrationJob *job);
gboolean migration_postcopy_source_can_resume(MigrationEngine *engine, gpointer vm,
                                              GError **error);
/* Resume, destination prepare: the domain whose post-copy failed here
 * reads a new channel (the VMM recovers); a thread settles the outcome. */
gboolean migration_postcopy_dest_prepare(MigrationEngine *engine, GPtrArray *params,
                                         GBytes *cookie_in, guint flags, TunnelBinding *binding,
                                         TunnelPeerWatch *source, GBytes **cookie_out,
                                         char **uri_out, GError **error);
/* finish on the destination for a source that switched: runs the guest
 * here once the VMM is in post-copy, and completes in the background. */
DriverDomain *migration_postcopy_dest_finish(MigrationEngine *engine, MigrationJob *job,
                                             const char *dname, const char *pxml, guint flags,
                                             GBytes **cookie_out, GError **error);
