/* Migration control: starting, cancelling and finishing a migration thread,
 * parameters, and query-migrate. The wire protocol lives in vmm-migrate-send.c
 * and vmm-migrate-recv.c. */
#include "vmm/vmm-migration-private.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"
#include "vmm/vmm-socket.h"
#include "vmm/vmm-wire.h"

#define FERRY_LOG_MODULE "vmm.migration"

const char *vmm_migration_status_to_string(VmmMigrationStatus status)
{
    switch (status) {
    case VMM_MIGRATION_SETUP:
        return "setup";
    case VMM_MIGRATION_ACTIVE:
        return "active";
    case VMM_MIGRATION_COMPLETED:
        return "completed";
    case VMM_MIGRATION_FAILED:
        return "failed";
    case VMM_MIGRATION_CANCELLING:
        return "cancelling";
    case VMM_MIGRATION_CANCELLED:
        return "cancelled";
    case VMM_MIGRATION_NONE:
    default:
        return "none";
    }
}

VmmMigration *vmm_migration_new(VmmMemory *mem, guint vcpus, const VmmMigrationHooks *hooks,
                                gpointer user_data)
{
    VmmMigration *m = g_new0(VmmMigration, 1);
    m->mem = mem;
    m->vcpus = vcpus;
    m->hooks = *hooks;
    m->user_data = user_data;
    m->max_bandwidth = 0;
    m->downtime_limit = 300; /* QEMU's default */
    g_mutex_init(&m->lock);
    m->cancel_fd = -1;
    m->fd = -1;
    m->listen_fd = -1;
    m->downtime_ms = -1;
    m->channels = 1;
    m->extra_fds = g_array_new(FALSE, FALSE, sizeof(int));
    m->extra_streams = g_ptr_array_new();
    return m;
}

void vmm_migration_emit(VmmMigration *m, const char *name, JsonObject *data)
{
    m->hooks.event(m->user_data, name, data ? data : json_object_new());
}

static void migration_emit_status(VmmMigration *m, VmmMigrationStatus status)
{
    JsonObject *data = json_object_new();
    json_object_set_string_member(data, "status", vmm_migration_status_to_string(status));
    vmm_migration_emit(m, "MIGRATION", data);
}

/* Drops what the previous migration left; main thread, no thread running. */
static void migration_reset(VmmMigration *m)
{
    g_clear_pointer(&m->error_desc, g_free);
    g_clear_pointer(&m->digest, g_free);
    g_clear_pointer(&m->listen_path, g_free);
    g_clear_pointer(&m->connect_path, g_free);
    g_clear_pointer(&m->device, json_object_unref);
    m->cancel_requested = FALSE;
    m->vm_was_running = FALSE;
    m->start_us = g_get_monotonic_time();
    m->active_us = m->stop_us = m->end_us = 0;
    m->downtime_ms = -1;
    m->expected_downtime_ms = 0;
    m->transferred = m->pages = m->rounds = m->dirty_pages_rate = 0;
    m->channels = 1;
    m->result = VMM_MIGRATION_FAILED;
}

/* Closes the thread's sockets; lock held. shutdown() first, so a peer blocked on
 * us sees the end even if another process holds a copy of the fd. */
static void migration_close_fds(VmmMigration *m)
{
    if (m->fd >= 0) {
        shutdown(m->fd, SHUT_RDWR);
        close(m->fd);
        m->fd = -1;
    }
    for (guint i = 0; i < m->extra_fds->len; i++) {
        int fd = g_array_index(m->extra_fds, int, i);
        shutdown(fd, SHUT_RDWR);
        close(fd);
    }
    g_array_set_size(m->extra_fds, 0);
    if (m->listen_fd >= 0) {
        close(m->listen_fd);
        m->listen_fd = -1;
    }
    if (m->listen_path) {
        unlink(m->listen_path);
        g_clear_pointer(&m->listen_path, g_free);
    }
}

/* Main thread, once per migration: joins the thread and publishes the outcome. */
static gboolean migration_finish(gpointer data)
{
    VmmMigration *m = data;

    g_mutex_lock(&m->lock);
    m->finish_source = 0;
    GThread *thread = m->thread;
    g_mutex_unlock(&m->lock);
    g_thread_join(thread);

    close(m->cancel_fd);
    m->cancel_fd = -1;
    VmmMigrationStatus status = m->result;
    if (status == VMM_MIGRATION_COMPLETED && m->incoming)
        FERRY_INFO("incoming migration completed over %u connection%s: %" G_GUINT64_FORMAT
                   " rounds, %" G_GUINT64_FORMAT " bytes, digest %s verified",
                   m->channels, m->channels == 1 ? "" : "s", m->rounds, m->transferred,
                   m->digest ? m->digest : "-");
    else if (status == VMM_MIGRATION_COMPLETED)
        FERRY_INFO("outgoing migration completed over %u connection%s: %" G_GUINT64_FORMAT
                   " rounds, %" G_GUINT64_FORMAT " bytes, downtime %" G_GINT64_FORMAT
                   " ms, digest %s",
                   m->channels, m->channels == 1 ? "" : "s", m->rounds, m->transferred,
                   m->downtime_ms, m->digest ? m->digest : "-");
    else
        FERRY_WARN("%s", m->error_desc ? m->error_desc : "migration failed");
    m->hooks.finished(m->user_data, m->incoming, status, m->vm_was_running, m->device);

    g_mutex_lock(&m->lock);
    m->thread = NULL;
    m->status = status;
    g_mutex_unlock(&m->lock);
    migration_emit_status(m, status);
    return G_SOURCE_REMOVE;
}

static gpointer migration_thread(gpointer data)
{
    VmmMigration *m = data;
    g_autoptr(GError) error = NULL;
    gboolean ok = m->incoming ? vmm_migration_receive(m, &error) : vmm_migration_send(m, &error);

    g_mutex_lock(&m->lock);
    migration_close_fds(m);
    m->end_us = g_get_monotonic_time();
    if (ok) {
        m->result = VMM_MIGRATION_COMPLETED;
    } else {
        m->result = m->cancel_requested ? VMM_MIGRATION_CANCELLED : VMM_MIGRATION_FAILED;
        m->error_desc = g_strdup(error ? error->message : "migration failed");
    }
    m->finish_source = g_idle_add(migration_finish, m);
    g_mutex_unlock(&m->lock);
    return NULL;
}

void vmm_migration_set_active(VmmMigration *m)
{
    g_mutex_lock(&m->lock);
    gboolean changed = m->status == VMM_MIGRATION_SETUP;
    if (changed)
        m->status = VMM_MIGRATION_ACTIVE;
    m->active_us = g_get_monotonic_time();
    g_mutex_unlock(&m->lock);
    if (changed)
        migration_emit_status(m, VMM_MIGRATION_ACTIVE);
}

void vmm_migration_set_fd(VmmMigration *m, int fd, VmmStream *stream)
{
    g_mutex_lock(&m->lock);
    m->fd = fd;
    m->stream = stream;
    /* A cancel that came while we were connecting found no socket to shut down. */
    if (m->cancel_requested)
        shutdown(fd, SHUT_RDWR);
    g_mutex_unlock(&m->lock);
}

static guint64 stream_bytes(VmmMigration *m, VmmStream *st)
{
    return __atomic_load_n(m->incoming ? &st->received : &st->sent, __ATOMIC_RELAXED);
}

/* Bytes of every connection; lock held. */
static guint64 migration_bytes_locked(VmmMigration *m)
{
    guint64 bytes = m->stream ? stream_bytes(m, m->stream) : m->transferred;
    for (guint i = 0; i < m->extra_streams->len; i++)
        bytes += stream_bytes(m, m->extra_streams->pdata[i]);
    return bytes;
}

void vmm_migration_stream_done(VmmMigration *m)
{
    g_mutex_lock(&m->lock);
    if (m->stream || m->extra_streams->len)
        m->transferred = migration_bytes_locked(m);
    m->stream = NULL;
    g_ptr_array_set_size(m->extra_streams, 0);
    g_mutex_unlock(&m->lock);
}

void vmm_migration_add_stream(VmmMigration *m, VmmStream *stream)
{
    g_mutex_lock(&m->lock);
    g_ptr_array_add(m->extra_streams, stream);
    if (m->cancel_requested)
        shutdown(stream->fd, SHUT_RDWR);
    g_mutex_unlock(&m->lock);
}

void vmm_migration_fail_first(VmmMigration *m, GMutex *lock, GCond *cond, GError **first,
                              GError *err)
{
    g_mutex_lock(lock);
    gboolean is_first = *first == NULL;
    if (is_first)
        *first = err;
    else
        g_error_free(err);
    if (cond)
        g_cond_broadcast(cond);
    g_mutex_unlock(lock);
    if (is_first)
        vmm_migration_shutdown_all(m);
}

void vmm_migration_shutdown_all(VmmMigration *m)
{
    g_mutex_lock(&m->lock);
    if (m->fd >= 0)
        shutdown(m->fd, SHUT_RDWR);
    for (guint i = 0; i < m->extra_fds->len; i++)
        shutdown(g_array_index(m->extra_fds, int, i), SHUT_RDWR);
    g_mutex_unlock(&m->lock);
}

static gboolean migration_start(VmmMigration *m, gboolean incoming, int fd, int listen_fd,
                                const char *listen_path, const char *connect_path,
                                const int *extra_fds, guint n_extra, GError **error)
{
    if (n_extra + 1 > VMM_WIRE_MAX_CHANNELS) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "a migration uses at most %d connections, not %u", VMM_WIRE_MAX_CHANNELS,
                    n_extra + 1);
        return FALSE;
    }
    for (guint i = 0; i < n_extra; i++)
        if (!vmm_socket_check_stream(extra_fds[i], error))
            return FALSE;
    if (vmm_migration_in_progress(m)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "There's a migration process in progress");
        return FALSE;
    }
    if (fd >= 0 && !vmm_socket_check_stream(fd, error))
        return FALSE;
    int cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (cancel_fd < 0) {
        ferry_set_error_errno(error, errno, "cannot create an eventfd");
        return FALSE;
    }

    g_mutex_lock(&m->lock);
    migration_reset(m);
    m->incoming = incoming;
    m->cancel_fd = cancel_fd;
    m->fd = fd;
    m->listen_fd = listen_fd;
    m->listen_path = g_strdup(listen_path);
    m->connect_path = g_strdup(connect_path);
    g_array_append_vals(m->extra_fds, extra_fds, n_extra);
    m->channels = 1 + n_extra;
    m->status = VMM_MIGRATION_SETUP;
    m->thread = g_thread_new(incoming ? "vmm-migrate-in" : "vmm-migrate-out", migration_thread, m);
    g_mutex_unlock(&m->lock);
    migration_emit_status(m, VMM_MIGRATION_SETUP);
    return TRUE;
}

gboolean vmm_migration_start_outgoing(VmmMigration *migration, int fd, const char *unix_path,
                                      const int *extra_fds, guint n_extra, GError **error)
{
    return migration_start(migration, FALSE, fd, -1, NULL, unix_path, extra_fds, n_extra, error);
}

gboolean vmm_migration_start_incoming(VmmMigration *migration, int fd, int listen_fd,
                                      const char *listen_path, const int *extra_fds,
                                      guint n_extra, GError **error)
{
    return migration_start(migration, TRUE, fd, listen_fd, listen_path, NULL, extra_fds, n_extra,
                           error);
}

void vmm_migration_cancel(VmmMigration *migration)
{
    VmmMigration *m = migration;
    g_mutex_lock(&m->lock);
    gboolean cancel = m->thread && !m->cancel_requested &&
                      (m->status == VMM_MIGRATION_SETUP || m->status == VMM_MIGRATION_ACTIVE);
    if (cancel) {
        m->cancel_requested = TRUE;
        m->status = VMM_MIGRATION_CANCELLING;
        guint64 one = 1;
        if (write(m->cancel_fd, &one, sizeof(one)) < 0)
            FERRY_WARN("cannot signal the migration thread: %s", g_strerror(errno));
        /* Unblocks the peer too, and any write of ours, whatever the peer does. */
        if (m->fd >= 0)
            shutdown(m->fd, SHUT_RDWR);
        for (guint i = 0; i < m->extra_fds->len; i++)
            shutdown(g_array_index(m->extra_fds, int, i), SHUT_RDWR);
    }
    g_mutex_unlock(&m->lock);
    if (cancel)
        migration_emit_status(m, VMM_MIGRATION_CANCELLING);
}

gboolean vmm_migration_in_progress(VmmMigration *migration)
{
    g_mutex_lock(&migration->lock);
    gboolean busy = migration->thread != NULL;
    g_mutex_unlock(&migration->lock);
    return busy;
}

gboolean vmm_migration_has_started(VmmMigration *migration)
{
    g_mutex_lock(&migration->lock);
    gboolean started = migration->status != VMM_MIGRATION_NONE;
    g_mutex_unlock(&migration->lock);
    return started;
}

void vmm_migration_free(VmmMigration *migration)
{
    VmmMigration *m = migration;
    if (!m)
        return;
    vmm_migration_cancel(m);
    g_mutex_lock(&m->lock);
    GThread *thread = m->thread;
    g_mutex_unlock(&m->lock);
    if (thread) {
        g_thread_join(thread);
        /* The thread queued its finish before it ended; it must not run now. */
        if (m->finish_source)
            g_source_remove(m->finish_source);
        close(m->cancel_fd);
    }
    migration_close_fds(m);
    migration_reset(m);
    g_array_unref(m->extra_fds);
    g_ptr_array_unref(m->extra_streams);
    g_mutex_clear(&m->lock);
    g_free(m);
}

static gint64 migration_ms(gint64 from_us, gint64 to_us)
{
    return from_us && to_us > from_us ? (to_us - from_us) / 1000 : 0;
}

JsonObject *vmm_migration_query(VmmMigration *migration)
{
    VmmMigration *m = migration;
    JsonObject *o = json_object_new();
    g_mutex_lock(&m->lock);
    json_object_set_string_member(o, "status", vmm_migration_status_to_string(m->status));
    if (m->status == VMM_MIGRATION_NONE) {
        g_mutex_unlock(&m->lock);
        return o;
    }
    gboolean live = m->thread != NULL;
    gint64 now = g_get_monotonic_time();
    gint64 end = live ? now : m->end_us;
    guint64 transferred = migration_bytes_locked(m);

    json_object_set_int_member(o, "total-time", migration_ms(m->start_us, end));
    json_object_set_int_member(o, "setup-time",
                               migration_ms(m->start_us, m->active_us ? m->active_us : end));
    if (m->downtime_ms >= 0)
        json_object_set_int_member(o, "downtime", m->downtime_ms);
    else if (live && !m->incoming)
        json_object_set_int_member(o, "expected-downtime", m->expected_downtime_ms);
    if (m->error_desc && m->status != VMM_MIGRATION_COMPLETED)
        json_object_set_string_member(o, "error-desc", m->error_desc);

    JsonObject *ram = json_object_new();
    gint64 active_ms = migration_ms(m->active_us, end);
    json_object_set_int_member(ram, "transferred", (gint64)transferred);
    json_object_set_int_member(ram, "remaining",
                               live && !m->incoming && m->active_us
                                   ? (gint64)(vmm_memory_dirty_count(m->mem) * VMM_PAGE_SIZE)
                                   : 0);
    json_object_set_int_member(ram, "total", (gint64)m->mem->size);
    json_object_set_int_member(ram, "duplicate", 0);
    json_object_set_int_member(ram, "skipped", 0);
    json_object_set_int_member(ram, "normal", (gint64)m->pages);
    json_object_set_int_member(ram, "normal-bytes", (gint64)(m->pages * VMM_PAGE_SIZE));
    json_object_set_int_member(ram, "dirty-pages-rate", (gint64)m->dirty_pages_rate);
    json_object_set_double_member(ram, "mbps",
                                  active_ms ? (double)transferred * 8 / 1000.0 / active_ms : 0);
    json_object_set_int_member(ram, "dirty-sync-count", (gint64)m->rounds);
    json_object_set_int_member(ram, "page-size", VMM_PAGE_SIZE);
    json_object_set_object_member(o, "ram", ram);

    JsonObject *ferry = json_object_new();
    json_object_set_boolean_member(ferry, "incoming", m->incoming);
    if (m->digest)
        json_object_set_string_member(ferry, "digest", m->digest);
    json_object_set_int_member(ferry, "rounds", (gint64)m->rounds);
    json_object_set_int_member(ferry, "channels", m->channels);
    json_object_set_int_member(ferry, "dirty-rate", (gint64)(m->dirty_pages_rate * VMM_PAGE_SIZE));
    json_object_set_object_member(o, "ferry", ferry);
    g_mutex_unlock(&m->lock);
    return o;
}

void vmm_migration_set_parameters(VmmMigration *migration, gint64 max_bandwidth,
                                  gint64 downtime_limit_ms)
{
    if (max_bandwidth >= 0)
        __atomic_store_n(&migration->max_bandwidth, max_bandwidth, __ATOMIC_RELAXED);
    if (downtime_limit_ms >= 0)
        __atomic_store_n(&migration->downtime_limit, downtime_limit_ms, __ATOMIC_RELAXED);
}

void vmm_migration_get_parameters(VmmMigration *migration, gint64 *max_bandwidth,
                                  gint64 *downtime_limit_ms)
{
    *max_bandwidth = __atomic_load_n(&migration->max_bandwidth, __ATOMIC_RELAXED);
    *downtime_limit_ms = __atomic_load_n(&migration->downtime_limit, __ATOMIC_RELAXED);
}
