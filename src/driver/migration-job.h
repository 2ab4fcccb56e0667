/* MigrationJob: one migration of one domain instance, on either side. It
 * lives on the DomainObj (obj->job, a reference) while the instance runs and
 * is shared with the threads that drive it. Its snapshot answers job queries
 * at once, whatever the channel or the VMM are doing. */
#pragma once

#include <glib.h>

#include "driver/driver.h"
#include "driver/migration-record.h"
#include "driver/migration-engine.h"
#include "driver/migration-storage.h"
#include "tunnel/tunnel-channel.h"

typedef struct MigrationJob MigrationJob;

/* Locking: `lock` guards every field below it; never held across a wait on
 * the VMM, the peer or a channel. */
struct MigrationJob {
    gint ref;
    int operation; /* DRIVER_JOB_OPERATION_MIGRATION_OUT / _IN */
    gint64 start_us;
    GMutex lock;
    GCond cond; /* channel set, claimed, abort requested */
    DriverJobInfo info; /* the last snapshot */
    gboolean abort_requested;
    GError *abort_reason;
    gboolean finishing; /* source: the VM's state crossed; too late to abort */
    /* post-copy (migration-postcopy.c): allowed (--postcopy), asked for
     * (migrate-postcopy; the perform loop tells the VMM), running (the guest
     * runs on the destination: too late to abort, neither side alone has
     * the whole VM) */
    gboolean postcopy_allowed, postcopy_requested, postcopy;
    /* source: a client paused the post-copy migration (domjobabort
     * --postcopy), which is why it stopped */
    gboolean postcopy_paused;
    /* source: the channel's bandwidth from the switch to post-copy on
     * (--postcopy-bandwidth, bytes/s, 0 = unlimited); G_MAXUINT64: none */
    guint64 postcopy_bandwidth;
    TunnelChannel *channel;
    /* Channel i >= 1 of the migration at extra[i - 1] (NULL until it
     * opens): the disks' NBD connections (migration-storage.c). */
    GPtrArray *extra;
    guint64 bandwidth; /* bytes/s, 0 = unlimited */
    /* The limit every channel of the migration counts against: their sum
     * keeps to bandwidth (created with the first channel). */
    TunnelRate *rate;
    /* destination, proxy mode: until the source's data connection comes */
    TunnelDataListener *listener;
    int pending_vmm_fd;
    GError *channel_error; /* the data connection never came */
    char *token;           /* the data connection's one-time token */
    /* liveness: the channel's byte count when it last moved */
    guint64 seen_bytes;
    gint64 seen_us;
    /* resuming: what the flight record last said about the connection */
    gboolean resume_waiting;
    guint resume_count;
    /* destination */
    char *name;
    char *instance_id;
    TunnelPeerWatch *source; /* the connection prepare came on */
    /* resume agreed: the token the source comes back with,
     * and how long its connection may be gone (since gone_since_us) */
    char *resume_token;
    guint resume_timeout_s;
    /* proxy mode with resume agreed: the source's connection may come back
     * (FERRY_PROXY_RESUME) whether or not the data still flows */
    gboolean control_resume;
    gint64 source_gone_since_us;
    gboolean claimed; /* finish or the watchdog took charge of the outcome */
    /* The flight recorder (NULL when off). Set once before the job is
     * shared, freed with the job; ended by whoever takes the outcome. */
    FlightRecorder *recorder;
    /* destination: the disks it receives (NULL: none); set before the job
     * is shared, its channels' fds taken under lock */
    MigrationStorageDest *storage;
    /* client-managed migration: the client whose calls drive it (its
     * disconnection ends the job); 0 for peer-to-peer */
    guint64 client_id;
    /* Several connections for the memory stream (migration-parallel.c):
     * channel 0 and channels memory_first .. memory_first + memory_channels
     * - 2 carry it (after the disks'); set before
     * the channels open. Destination: the VMM's ends of those channels
     * (-1: taken or none) and, tunnelled, their stream terms. */
    guint memory_first;
    guint memory_channels;
    int memory_fds[MIGRATION_MAX_CONNECTIONS - 1];
    TunnelStreamConfig memory_stream;
};

MigrationJob *migration_job_new(int operation);
MigrationJob *migration_job_ref(MigrationJob *job);
void migration_job_unref(MigrationJob *job);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigrationJob, migration_job_unref)

/* Hands the job its channel (a reference is taken) and applies the job's
 * bandwidth; an abort requested before reaches the channel now. */
void migration_job_set_channel(MigrationJob *job, TunnelChannel *channel);
/* The channel has not come and never will (proxy destination). Takes error. */
void migration_job_set_channel_error(MigrationJob *job, GError *error);
/* TRUE when the channel ended cleanly; FALSE with the cause, or
 * OPERATION_TIMEOUT once deadline_us (monotonic; 0 = none) passed, also while
 * no channel exists yet. */
gboolean migration_job_wait_channel(MigrationJob *job, gint64 deadline_us, GError **error);
/* Whether waiting is over: the channel ended, or will never come. */
gboolean migration_job_channel_ended(MigrationJob *job);
/* Channel index (>= 1) of the migration opened: a reference is taken, the
 * bandwidth applied, an abort requested before reaches it now. */
void migration_job_add_channel(MigrationJob *job, guint index, TunnelChannel *channel);
/* FALSE with the cause when one of channels 1.. ended other than cleanly. */
gboolean migration_job_check_extra(MigrationJob *job, GError **error);
/* Until channels 1..n all exist and ended cleanly: FALSE with the first
 * failure, or OPERATION_TIMEOUT once deadline_us (monotonic) passed. */
gboolean migration_job_wait_extra(MigrationJob *job, guint n, gint64 deadline_us,
                                  GError **error);
/* The same for channels first..last (>= 1). */
gboolean migration_job_wait_channels(MigrationJob *job, guint first, guint last,
                                     gint64 deadline_us, GError **error);
/* Cuts every channel (and a listener still waiting) without waiting. */
void migration_job_cut_channel(MigrationJob *job, const GError *why);
gboolean migration_job_peer_heard_end(MigrationJob *job);
void migration_job_set_bandwidth(MigrationJob *job, guint64 bytes_per_second);

/* Records the abort (takes why; the first reason wins) and cuts the channel. */
void migration_job_request_abort(MigrationJob *job, GError *why);
/* A client's abort: refused (FALSE, OPERATION_INVALID) once the job is
 * finishing; otherwise as migration_job_request_abort. Takes why. */
gboolean migration_job_try_abort(MigrationJob *job, GError *why, GError **error);
/* The source enters its finish phase: FALSE when an abort came first. */
gboolean migration_job_enter_finish(MigrationJob *job);
/* A copy of the abort's reason, NULL if none was requested. */
GError *migration_job_abort_error(MigrationJob *job);

/* Takes the VMM's counters into the snapshot. */
void migration_job_update(MigrationJob *job, const DriverJobInfo *counters);
/* A copy of the snapshot, with the elapsed time of now. */
void migration_job_get_info(MigrationJob *job, DriverJobInfo *info);

/* Liveness: FALSE (and the channel cut with the cause) once the channel
 * exists, is not over and has moved no byte, either way, for stall_s seconds
 * (0: never). Called periodically by whoever waits on the job. */
gboolean migration_job_check_moving(MigrationJob *job, guint stall_s, GError **error);
/* Notes in the flight record when the channel's connection broke and when
 * the stream went on over a new one. Called periodically, as check_moving. */
void migration_job_note_resume(MigrationJob *job);

/* One turn of a loop that waits on a job (the source's, the destination's,
 * a save's or a restore's, the disks' mirrors): */
typedef enum {
    MIGRATION_WAIT_AGAIN,  /* nothing ended: wait again */
    MIGRATION_WAIT_DONE,   /* the channel ended cleanly */
    MIGRATION_WAIT_FAILED, /* with the cause */
} MigrationWait;
/* What a turn watches. */
enum {
    MIGRATION_WAIT_CHANNEL = 1 << 0, /* the job's channel: woken when it ends */
    MIGRATION_WAIT_ABORT = 1 << 1,   /* an abort requested fails the wait */
    MIGRATION_WAIT_EXTRA = 1 << 2,   /* a disk's channel that failed fails it */
};
/* Waits until deadline_us (monotonic) at most, woken early when the job's
 * channel ends (MIGRATION_WAIT_CHANNEL) or else when an abort is
 * requested; then, in this order: an abort (MIGRATION_WAIT_ABORT), the
 * channel's failure or clean end, a failed disk channel
 * (MIGRATION_WAIT_EXTRA), and no byte moved for stall_s seconds (0: not
 * watched). A channel that failed with a timeout of its own is told from
 * the turn's deadline. */
MigrationWait migration_job_wait_turn(MigrationJob *job, gint64 deadline_us, guint watch,
                                      guint stall_s, GError **error);

/* Ends the job's flight record (once; later calls return NULL): its summary
 * goes into the job's info for domjobinfo --completed. Returns the record's
 * text. */
char *migration_job_end_record(MigrationJob *job, const char *outcome, const GError *error);

/* Takes charge of the outcome: TRUE for the first caller only. */
gboolean migration_job_claim(MigrationJob *job);
