/* State shared by the migration control code and its sender and receiver
 * threads; nothing outside vmm-migration*.c includes this. */
#pragma once

#include "vmm/vmm-migration.h"
#include "vmm/vmm-stream.h"

/* Stop-and-copy after this many pre-copy rounds even if the dirty rate never
 * lets the rest fit in the downtime limit. */
#define VMM_MIGRATION_MAX_ROUNDS 30

struct _VmmMigration {
    VmmMemory *mem;
    guint vcpus;
    VmmMigrationHooks hooks;
    gpointer user_data;
    gint64 max_bandwidth;  /* atomic; bytes/s, 0 = unlimited */
    gint64 downtime_limit; /* atomic; ms */

    GMutex lock; /* everything below */
    gboolean incoming;
    VmmMigrationStatus status; /* what query-migrate shows */
    GThread *thread;           /* set from start until the finish ran on the main thread */
    guint finish_source;
    int cancel_fd; /* eventfd, readable = cancel */
    gboolean cancel_requested;
    int fd; /* stream socket; the thread closes it under the lock */
    int listen_fd;
    char *listen_path;
    char *connect_path;
    VmmStream *stream; /* the thread's stream while it lives, for live byte counts */
    /* Several connections (docs/ferry-vmm.md): the extra connections' sockets
     * (int, in channel order from 1; closed with fd) and their streams while
     * they live (VmmStream*, not owned), and how many connections in all. */
    GArray *extra_fds;
    GPtrArray *extra_streams;
    guint channels;

    /* Outcome, written by the thread before it ends. */
    VmmMigrationStatus result;
    char *error_desc;
    gboolean vm_was_running;
    JsonObject *device;

    /* Statistics. */
    gint64 start_us, active_us, stop_us, end_us;
    gint64 downtime_ms; /* -1 until stop-and-copy ended */
    gint64 expected_downtime_ms;
    guint64 transferred; /* stream bytes once the stream is gone */
    guint64 pages;
    guint64 rounds;
    guint64 dirty_pages_rate;
    char *digest;
};

/* Thread bodies; on failure they set *error to the text query-migrate shows. */
gboolean vmm_migration_send(VmmMigration *m, GError **error);
gboolean vmm_migration_receive(VmmMigration *m, GError **error);

/* For the threads: publish progress and state under the lock. */
void vmm_migration_set_active(VmmMigration *m);
void vmm_migration_set_fd(VmmMigration *m, int fd, VmmStream *stream);
/* The thread's stream is about to go: keep its final byte count. */
void vmm_migration_stream_done(VmmMigration *m);
/* An extra connection's stream, live: counted by query-migrate until stream_done. */
void vmm_migration_add_stream(VmmMigration *m, VmmStream *stream);
/* Shuts every socket of the migration down: one connection failed, the
 * others must not wait on their peers. */
void vmm_migration_shutdown_all(VmmMigration *m);
/* A connection of a migration over several failed with err (taken): the
 * first failure is kept in *first (under lock, broadcast on cond) and shuts
 * every connection down; later ones are consequences and dropped. */
void vmm_migration_fail_first(VmmMigration *m, GMutex *lock, GCond *cond, GError **first,
                              GError *err);
void vmm_migration_emit(VmmMigration *m, const char *name, JsonObject *data);
