/* Disks without shared storage, both sides (migration-storage.h).
 *
 * Source: the disks to copy go to the destination in the prepare cookie;
 * after prepare, one channel per disk opens (channel 1 + i) and the VMM
 * mirrors disk i into it; the VMM's own stream starts only when every mirror
 * caught up; once the guest's state went (the guest paused), the mirrors
 * complete and their channels end cleanly before finish. Any failure or
 * abort before that stops the mirrors: the source's disks were only read.
 *
 * Destination: prepare creates the images that are missing (and remembers
 * which), exports the disks on an NBD server at a UNIX socket in the run dir
 * and connects one socket per disk to it, the VMM end of each disk's channel;
 * finish waits for every channel to end cleanly and ends the export before
 * the guest resumes; a discarded migration removes the images it created. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "driver/migration-private.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "migration.storage"

#define POLL_MS 200
/* The channels of completed mirrors end at once; a peer gets this long. */
#define CHANNELS_END_WAIT_S 30

MigrationDisk *migration_disk_new(void)
{
    return g_new0(MigrationDisk, 1);
}

MigrationDisk *migration_disk_copy(const MigrationDisk *d)
{
    MigrationDisk *c = migration_disk_new();
    c->target = g_strdup(d->target);
    c->format = g_strdup(d->format);
    c->capacity = d->capacity;
    c->backing = g_strdup(d->backing);
    c->backing_format = g_strdup(d->backing_format);
    c->path = g_strdup(d->path);
    return c;
}

void migration_disk_free(MigrationDisk *d)
{
    if (!d)
        return;
    g_free(d->target);
    g_free(d->format);
    g_free(d->backing);
    g_free(d->backing_format);
    g_free(d->path);
    g_free(d);
}

GPtrArray *migration_disks_new(void)
{
    return g_ptr_array_new_with_free_func((GDestroyNotify)migration_disk_free);
}

/* ---- the flags ---- */

static gboolean wants_storage(guint flags)
{
    return (flags & (MIGRATION_NON_SHARED_DISK | MIGRATION_NON_SHARED_INC)) != 0;
}

gboolean migration_storage_check(MigrationEngine *e, guint flags, GError **error)
{
    if (!wants_storage(flags))
        return TRUE;
    if (!e->hooks->storage_mirror) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration flag %s is not supported by %s: it copies no disks",
                    (flags & MIGRATION_NON_SHARED_DISK) ? "NON_SHARED_DISK" : "NON_SHARED_INC",
                    e->hooks->vmm_name);
        return FALSE;
    }
    /* Client-managed too (as libvirt): begin names the disks in its cookie,
     * the client hands it to prepare, and perform opens one data connection
     * per disk to prepare's listener as it does for the memory stream. */
    return TRUE;
}

/* ---- source ---- */

gboolean migration_storage_source_select(MigrationEngine *e, gpointer vm, guint flags,
                                         GPtrArray *params, GPtrArray **disks, GError **error)
{
    *disks = NULL;
    g_autoptr(GPtrArray) only = g_ptr_array_new();
    for (guint i = 0; params && i < params->len; i++) {
        const DriverParam *p = params->pdata[i];
        if (g_str_equal(p->field, "migrate_disks") && p->type == DRIVER_PARAM_STRING)
            g_ptr_array_add(only, p->s);
    }
    if (!wants_storage(flags)) {
        if (only->len) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "migration parameter 'migrate_disks' needs --copy-storage-all or "
                        "--copy-storage-inc");
            return FALSE;
        }
        return TRUE;
    }
    if (!migration_storage_check(e, flags, error))
        return FALSE;
    gboolean inc = (flags & MIGRATION_NON_SHARED_INC) != 0;
    g_autoptr(GPtrArray) all = e->hooks->storage_list(vm, inc, error);
    if (!all)
        return FALSE;
    g_autoptr(GPtrArray) chosen = migration_disks_new();
    for (guint i = 0; i < only->len; i++) {
        gboolean found = FALSE;
        for (guint j = 0; j < all->len && !found; j++)
            found = g_str_equal(((MigrationDisk *)all->pdata[j])->target, only->pdata[i]);
        if (!found) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "migration parameter 'migrate_disks': '%s' is not a disk this "
                        "migration can copy (a writable disk with an image)",
                        (const char *)only->pdata[i]);
            return FALSE;
        }
    }
    for (guint j = 0; j < all->len; j++) {
        MigrationDisk *d = all->pdata[j];
        gboolean selected = only->len == 0;
        for (guint i = 0; i < only->len && !selected; i++)
            selected = g_str_equal(d->target, only->pdata[i]);
        if (selected)
            g_ptr_array_add(chosen, migration_disk_copy(d));
    }
    if (chosen->len == 0)
        return TRUE; /* nothing to copy: the migration goes on without */
    if (chosen->len > MIGRATION_STORAGE_MAX_DISKS) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "a migration copies at most %d disks, not %u",
                    MIGRATION_STORAGE_MAX_DISKS, chosen->len);
        return FALSE;
    }
    *disks = g_steal_pointer(&chosen);
    return TRUE;
}

/* Whether the destination's prepare answered the same disks: a peer that is
 * not a ferryd (a libvirtd), or one that does not copy disks, does not. */
static gboolean destination_exports(GPtrArray *disks, GBytes *dest_cookie, GError **error)
{
    MigrationCookie dc = {0};
    gboolean ok = migration_cookie_parse(dest_cookie, &dc, NULL) && dc.ferry && dc.disks &&
                  dc.disks->len == disks->len && dc.token;
    for (guint i = 0; ok && i < disks->len; i++)
        ok = g_str_equal(((MigrationDisk *)disks->pdata[i])->target,
                         ((MigrationDisk *)dc.disks->pdata[i])->target);
    migration_cookie_clear(&dc);
    if (!ok)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "the destination does not export the disks (copying disks, "
                    "NON_SHARED_DISK/NON_SHARED_INC, needs a ferry destination that can)");
    return ok;
}

gboolean migration_storage_source_start(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                        GPtrArray *disks, gboolean inc, GBytes *dest_cookie,
                                        MigrationChannelOpen open, gpointer data,
                                        GArray *vmm_ends, GError **error)
{
    if (!destination_exports(disks, dest_cookie, error))
        return FALSE;
    for (guint i = 0; i < disks->len; i++) {
        const MigrationDisk *d = disks->pdata[i];
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
            ferry_set_error_errno(error, errno, "cannot create the socket pair of disk '%s'",
                                  d->target);
            return FALSE;
        }
        /* A copy of our end of the disk's socket: cancel drains it (below). */
        int keep = fcntl(sv[0], F_DUPFD_CLOEXEC, 0);
        if (keep >= 0)
            g_array_append_val(vmm_ends, keep);
        if (!open(data, MIGRATION_STORAGE_CHANNEL(i), &sv[0], error)) {
            if (sv[0] >= 0)
                close(sv[0]);
            close(sv[1]);
            g_prefix_error(error, "disk '%s': ", d->target);
            return FALSE;
        }
        MigrationEndpoint ep = {.kind = MIGRATION_ENDPOINT_FD, .fd = sv[1], .n_connections = 1};
        if (!e->hooks->storage_mirror(vm, d, &ep, inc, error)) {
            g_prefix_error(error, "cannot mirror disk '%s': ", d->target);
            return FALSE;
        }
        flight_recorder_event(job->recorder, "storage", "disk", d->target, "what",
                              "mirror started", NULL);
    }
    return TRUE;
}

/* The mirrors' progress into the job's snapshot; FALSE when one failed. */
static gboolean source_poll(MigrationEngine *e, MigrationJob *job, gpointer vm, gboolean *ready,
                            GError **error)
{
    guint64 total = 0, copied = 0;
    if (!e->hooks->storage_progress(vm, &total, &copied, ready, error))
        return FALSE;
    g_mutex_lock(&job->lock);
    job->info.has_disk = TRUE;
    job->info.disk_total = total;
    job->info.disk_processed = copied;
    job->info.disk_remaining = total > copied ? total - copied : 0;
    /* Before the memory stream runs, data is the disks' alone. */
    job->info.data_total = job->info.memory_total + total;
    job->info.data_processed = job->info.memory_processed + copied;
    job->info.data_remaining = job->info.memory_remaining + job->info.disk_remaining;
    g_mutex_unlock(&job->lock);
    return TRUE;
}

/* The mirrors' progress; FALSE with the root cause when one failed: a
 * channel's failure, the VMM only sees its socket go. */
static gboolean check_mirrors(MigrationEngine *e, MigrationJob *job, gpointer vm,
                              gboolean *ready, GError **error)
{
    if (!migration_job_check_extra(job, error))
        return FALSE;
    if (!source_poll(e, job, vm, ready, error)) {
        g_autoptr(GError) cause = NULL;
        if (!migration_job_check_extra(job, &cause)) {
            g_clear_error(error);
            g_propagate_error(error, g_steal_pointer(&cause));
        } else {
            g_prefix_error(error, "source VMM: ");
        }
        return FALSE;
    }
    return TRUE;
}

gboolean migration_storage_source_check(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                        GError **error)
{
    gboolean ready = FALSE;
    return check_mirrors(e, job, vm, &ready, error);
}

gboolean migration_storage_source_wait_ready(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                             GError **error)
{
    guint stall_s = tunnel_data_settings_get_stall_timeout(e->data_settings);
    flight_recorder_phase(job->recorder, "storage", TRUE);
    for (gint64 next = g_get_monotonic_time();; next = g_get_monotonic_time() + POLL_MS * 1000) {
        gboolean ready = FALSE;
        if (migration_job_wait_turn(job, next, MIGRATION_WAIT_ABORT | MIGRATION_WAIT_EXTRA,
                                    stall_s, error) == MIGRATION_WAIT_FAILED ||
            !check_mirrors(e, job, vm, &ready, error))
            return FALSE;
        if (ready)
            break;
    }
    flight_recorder_event(job->recorder, "storage", "what",
                          "every mirror caught up: the memory stream starts", NULL);
    flight_recorder_phase(job->recorder, "storage", FALSE);
    return TRUE;
}

gboolean migration_storage_source_complete(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                           guint n_disks, GError **error)
{
    gboolean ready = FALSE;
    source_poll(e, job, vm, &ready, NULL);
    if (!e->hooks->storage_complete(vm, error)) {
        g_prefix_error(error, "source VMM: cannot complete the disk mirrors: ");
        return FALSE;
    }
    /* The VMM let go of its targets: each disk's channel ends cleanly. */
    if (!migration_job_wait_extra(job, n_disks,
                                  g_get_monotonic_time() + CHANNELS_END_WAIT_S * G_USEC_PER_SEC,
                                  error))
        return FALSE;
    flight_recorder_event(job->recorder, "storage", "what",
                          "the mirrors completed: every disk write is on the destination", NULL);
    return TRUE;
}

void migration_storage_source_cancel(MigrationEngine *e, gpointer vm, GArray *vmm_ends)
{
    /* A cut channel keeps its socket until the job lets it go, with what the
     * VMM sent last unread: a VMM blocked writing into the full socket would
     * never notice the end. Drained, its next write fails at once. */
    for (guint i = 0; vmm_ends && i < vmm_ends->len; i++) {
        int fd = g_array_index(vmm_ends, int, i);
        shutdown(fd, SHUT_RDWR);
        char sink[65536];
        for (int n = 0; n < 4096 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; n++)
            ;
    }
    e->hooks->storage_cancel(vm);
    migration_storage_close_ends(vmm_ends);
}

void migration_storage_close_ends(GArray *vmm_ends)
{
    for (guint i = 0; vmm_ends && i < vmm_ends->len; i++)
        close(g_array_index(vmm_ends, int, i));
    if (vmm_ends)
        g_array_set_size(vmm_ends, 0);
}

/* ---- destination ---- */

struct MigrationStorageDest {
    GPtrArray *disks;   /* MigrationDisk*, path: our image */
    gboolean inc;
    GPtrArray *created; /* char*: images prepare created, removed if the migration fails */
    char *socket_path;  /* the VMM's NBD server */
    int fds[MIGRATION_STORAGE_MAX_DISKS]; /* the VMM ends of the disks' channels, -1: taken */
    TunnelStreamConfig stream; /* tunnelled: the terms of the disks' streams */
};

void migration_storage_dest_free(MigrationStorageDest *st)
{
    if (!st)
        return;
    for (guint i = 0; st->disks && i < st->disks->len; i++)
        if (st->fds[i] >= 0)
            close(st->fds[i]);
    if (st->disks)
        g_ptr_array_unref(st->disks);
    if (st->created)
        g_ptr_array_unref(st->created);
    if (st->socket_path)
        g_unlink(st->socket_path);
    g_free(st->socket_path);
    g_free(st);
}

MigrationStorageDest *migration_storage_dest_create(MigrationEngine *e, DomainObj *obj,
                                                    guint flags, MigrationCookie *src,
                                                    GError **error)
{
    if (!migration_storage_check(e, flags, error))
        return NULL;
    if (!src->disks || src->disks->len == 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "the source asks to copy disks but names none in its cookie");
        return NULL;
    }
    MigrationStorageDest *st = g_new0(MigrationStorageDest, 1);
    for (guint i = 0; i < MIGRATION_STORAGE_MAX_DISKS; i++)
        st->fds[i] = -1;
    st->disks = g_ptr_array_ref(src->disks);
    st->inc = (flags & MIGRATION_NON_SHARED_INC) != 0;
    st->created = g_ptr_array_new_with_free_func(g_free);
    if (!e->hooks->storage_create(obj, st->disks, st->inc, st->created, error)) {
        migration_storage_dest_discard(st);
        migration_storage_dest_free(st);
        return NULL;
    }
    for (guint i = 0; i < st->created->len; i++)
        FERRY_INFO("incoming migration of domain '%s': created the image %s",
                   domain_obj_get_name(obj), (const char *)st->created->pdata[i]);
    return st;
}

static int connect_unix(const char *path, GError **error)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "the socket path %s is too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        ferry_set_error_errno(error, errno, "cannot connect to the VMM's disk export at %s",
                              path);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

gboolean migration_storage_dest_export(MigrationEngine *e, MigrationStorageDest *st,
                                       DomainObj *obj, gpointer vm, GError **error)
{
    st->socket_path = domain_store_runtime_path(e->hv->store, obj->instance_id, ".nbd");
    g_unlink(st->socket_path);
    if (!e->hooks->storage_export(vm, st->socket_path, st->disks, error)) {
        g_prefix_error(error, "cannot export the disks: ");
        return FALSE;
    }
    /* The VMM's ends of the channels, connected now: the export waits for
     * each client's first words, which come through its channel. */
    for (guint i = 0; i < st->disks->len; i++)
        if ((st->fds[i] = connect_unix(st->socket_path, error)) < 0)
            return FALSE;
    return TRUE;
}

guint migration_storage_dest_count(MigrationStorageDest *st)
{
    return st ? st->disks->len : 0;
}

GPtrArray *migration_storage_dest_disks(MigrationStorageDest *st)
{
    return st ? st->disks : NULL;
}

gboolean migration_storage_dest_is_inc(MigrationStorageDest *st)
{
    return st && st->inc;
}

void migration_storage_dest_set_stream(MigrationStorageDest *st, const TunnelStreamConfig *cfg)
{
    st->stream = *cfg;
    st->stream.vmm_name = "destination VMM's disk export";
}

int migration_storage_dest_take_fd(MigrationStorageDest *st, guint index,
                                   TunnelStreamConfig *stream)
{
    if (stream)
        *stream = st ? st->stream : (TunnelStreamConfig){0};
    if (!st || index < 1 || index > st->disks->len)
        return -1;
    int fd = st->fds[index - 1];
    st->fds[index - 1] = -1;
    return fd;
}

gboolean migration_storage_dest_finish(MigrationEngine *e, MigrationJob *job, gpointer vm,
                                       GError **error)
{
    MigrationStorageDest *st = job->storage;
    if (!st)
        return TRUE;
    if (!migration_job_wait_extra(job, st->disks->len,
                                  g_get_monotonic_time() + CHANNELS_END_WAIT_S * G_USEC_PER_SEC,
                                  error)) {
        g_prefix_error(error, "a disk's channel did not end cleanly: ");
        return FALSE;
    }
    if (!e->hooks->storage_unexport(vm, error)) {
        g_prefix_error(error, "cannot end the disks' export: ");
        return FALSE;
    }
    /* The images are the domain's now. */
    g_ptr_array_set_size(st->created, 0);
    flight_recorder_event(job->recorder, "storage", "what",
                          "every disk's channel ended cleanly: the export ended", NULL);
    return TRUE;
}

void migration_storage_dest_discard(MigrationStorageDest *st)
{
    if (!st)
        return;
    for (guint i = 0; st->created && i < st->created->len; i++) {
        const char *path = st->created->pdata[i];
        if (g_unlink(path) < 0)
            FERRY_WARN("cannot remove the image %s created for a failed migration: %s", path,
                       g_strerror(errno));
        else
            FERRY_INFO("removed the image %s created for a failed migration", path);
    }
    if (st->created)
        g_ptr_array_set_size(st->created, 0);
}
