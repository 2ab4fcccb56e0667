/* Several channels for one migration's memory stream (virsh migrate
 * --parallel --parallel-connections N; tunnelled, parallel.connections
 * alone, since virsh refuses --parallel with --tunnelled).
 *
 * Between ferry peers only: the source asks in its prepare cookie
 * (<parallel connections='N'/>), a destination whose VMM can answers how
 * many it accepts; a libvirt peer answers nothing and gets libvirt's single
 * stream. The memory stream's channel i >= 1 is the migration's channel
 * memory_first + i - 1 (after the disks' channels): tunnelled, one more
 * authenticated connection to the destination URI with its own TLS session
 * (ferry procedure 14, bound by the migration's token and the index); proxy,
 * one more data connection (FERRYDC2). The VMM's connection i rides channel
 * i; every channel must end cleanly for the migration to finish, and an
 * abort or a failure cuts them all (migration-job.c). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "driver/driver-params.h"
#include "driver/migration-private.h"
#include "rpc/rpc-socket.h"
#include "util/error.h"

/* virsh --parallel without a count: libvirt's default of two. */
#define DEFAULT_PARALLEL 2

gboolean migration_parallel_wanted(MigrationEngine *e, guint flags, GPtrArray *params,
                                   guint *n, GError **error)
{
    *n = 1;
    const DriverParam *count = NULL;
    for (guint i = 0; params && i < params->len; i++)
        if (g_str_equal(((DriverParam *)params->pdata[i])->field, "parallel.connections"))
            count = params->pdata[i];
    gboolean tunnelled = (flags & MIGRATION_TUNNELLED) != 0;
    if (count && (count->type != DRIVER_PARAM_INT || count->v.i < 1 ||
                  count->v.i > MIGRATION_MAX_CONNECTIONS)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "migration parameter 'parallel.connections' must be an int from 1 to %d",
                    MIGRATION_MAX_CONNECTIONS);
        return FALSE;
    }
    /* libvirt's words: the count tunes --parallel (tunnelled, it is the
     * only way virsh has to ask). */
    if (count && !tunnelled && !(flags & MIGRATION_PARALLEL)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "Turn parallel migration on to tune it (migration parameter "
                    "'parallel.connections')");
        return FALSE;
    }
    guint configured = tunnel_data_settings_get_parallel_connections(e->data_settings);
    if (count)
        *n = (guint)count->v.i;
    else if (flags & MIGRATION_PARALLEL)
        *n = MAX(configured, DEFAULT_PARALLEL);
    else if (tunnelled)
        *n = configured;
    /* Post-copy runs over one connection (QEMU 7.2 takes no multifd with
     * postcopy-ram), and so does its resume. Disks copied beside several
     * memory channels are not proven: one such QEMU run timed out in the
     * source's blockdev-add, not understood yet, so the memory stream of a
     * migration that copies disks runs over one connection. Asked for,
     * either is refused naming both flags; the daemon's default gives way. */
    const char *alone_with = (flags & MIGRATION_POSTCOPY_RESUME) ? "POSTCOPY_RESUME"
                             : (flags & MIGRATION_POSTCOPY)      ? "POSTCOPY"
                             : (flags & MIGRATION_NON_SHARED_DISK) ? "NON_SHARED_DISK"
                             : (flags & MIGRATION_NON_SHARED_INC)  ? "NON_SHARED_INC"
                                                                   : NULL;
    if (*n > 1 && alone_with) {
        if (count || (flags & MIGRATION_PARALLEL)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                        "migration flag PARALLEL (parallel.connections %u) is not supported "
                        "together with %s",
                        *n, alone_with);
            return FALSE;
        }
        *n = 1;
    }
    guint max = MAX(e->hooks->max_connections, 1u);
    if (*n > max) {
        /* Asked for: refused naming the VMM; the daemon's default: its best. */
        if (count || (flags & MIGRATION_PARALLEL)) {
            if (max == 1)
                g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                            "migration flag PARALLEL (parallel.connections %u) is not supported "
                            "by %s: it migrates over one connection",
                            *n, e->hooks->vmm_name);
            else
                g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                            "migration parameter 'parallel.connections' %u is more than %s "
                            "takes (%u)",
                            *n, e->hooks->vmm_name, max);
            return FALSE;
        }
        *n = max;
    }
    return TRUE;
}

guint migration_parallel_accept(MigrationEngine *e, const MigrationCookie *src)
{
    if (!src->ferry || src->parallel < 2)
        return 1;
    return MIN(src->parallel, MAX(e->hooks->max_connections, 1u));
}

guint migration_parallel_agreed(guint wanted, GBytes *dest_cookie)
{
    if (wanted < 2 || !dest_cookie)
        return 1;
    MigrationCookie dc = {0};
    guint n = 1;
    if (migration_cookie_parse(dest_cookie, &dc, NULL) && dc.ferry && dc.parallel >= 2)
        n = MIN(dc.parallel, wanted);
    migration_cookie_clear(&dc);
    return n;
}

gboolean migration_parallel_pairs(guint n, int *ours, int *vmm, GError **error)
{
    for (guint i = 0; i + 1 < n; i++)
        ours[i] = vmm[i] = -1;
    for (guint i = 0; i + 1 < n; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
            ferry_set_error_errno(error, errno,
                                  "cannot create the socket pair of the migration's channel %u",
                                  i + 1);
            migration_parallel_close(n, ours);
            migration_parallel_close(n, vmm);
            return FALSE;
        }
        ours[i] = sv[0];
        vmm[i] = sv[1];
    }
    return TRUE;
}

void migration_parallel_close(guint n, int *fds)
{
    for (guint i = 0; i + 1 < n; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

gboolean migration_parallel_wait(MigrationJob *job, gint64 deadline_us, GError **error)
{
    if (job->memory_channels < 2)
        return TRUE;
    if (!migration_job_wait_channels(job, job->memory_first,
                                     job->memory_first + job->memory_channels - 2, deadline_us,
                                     error)) {
        g_prefix_error(error, "a channel of the memory stream did not end cleanly: ");
        return FALSE;
    }
    return TRUE;
}

/* Whether a channel's failure is its own connection breaking (reset,
 * aborted, timed out, stalled, closed under a stream), as opposed to a
 * consequence of another's: a VMM that dropped its sockets, or a peer that
 * closed a data connection in order (our write then sees EPIPE). */
static gboolean broke_itself(const GError *why)
{
    const char *m = why->message;
    if (g_error_matches(why, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT))
        return TRUE; /* the stall: no byte moved */
    if (strstr(m, g_strerror(EPIPE)))
        return FALSE;
    return strstr(m, g_strerror(ECONNRESET)) || strstr(m, g_strerror(ECONNABORTED)) ||
           strstr(m, g_strerror(ETIMEDOUT)) || g_str_has_prefix(m, "the connection to the");
}

void migration_parallel_prefer_cause(MigrationJob *job, gint64 deadline_us, GError **error)
{
    if (job->memory_channels < 2 || !error || !*error || broke_itself(*error))
        return;
    for (guint i = 0; i + 1 < job->memory_channels; i++) {
        guint index = job->memory_first + i;
        g_mutex_lock(&job->lock);
        TunnelChannel *found = job->extra && job->extra->len >= index
                                   ? job->extra->pdata[index - 1]
                                   : NULL;
        g_autoptr(TunnelChannel) ch = found ? tunnel_channel_ref(found) : NULL;
        g_mutex_unlock(&job->lock);
        g_autoptr(GError) why = NULL;
        if (!ch || tunnel_channel_wait(ch, deadline_us, &why) ||
            (g_error_matches(why, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT) &&
             !tunnel_channel_is_over(ch)))
            continue;
        /* A channel whose own connection broke; the others only saw the VMM
         * give up after it (its connections go down together). */
        if (broke_itself(why)) {
            g_clear_error(error);
            g_propagate_prefixed_error(error, g_steal_pointer(&why), "channel %u: ", i + 1);
            return;
        }
    }
}

const char *migration_parallel_vmm_name(gboolean source, guint channel)
{
    /* The tunnel keeps copies; the names only need to live for the call. */
    static const char *const src[] = {
        "source VMM",              "source VMM (channel 1)",  "source VMM (channel 2)",
        "source VMM (channel 3)",  "source VMM (channel 4)",  "source VMM (channel 5)",
        "source VMM (channel 6)",  "source VMM (channel 7)",  "source VMM (channel 8)",
        "source VMM (channel 9)",  "source VMM (channel 10)", "source VMM (channel 11)",
        "source VMM (channel 12)", "source VMM (channel 13)", "source VMM (channel 14)",
        "source VMM (channel 15)"};
    static const char *const dst[] = {
        "destination VMM",              "destination VMM (channel 1)",
        "destination VMM (channel 2)",  "destination VMM (channel 3)",
        "destination VMM (channel 4)",  "destination VMM (channel 5)",
        "destination VMM (channel 6)",  "destination VMM (channel 7)",
        "destination VMM (channel 8)",  "destination VMM (channel 9)",
        "destination VMM (channel 10)", "destination VMM (channel 11)",
        "destination VMM (channel 12)", "destination VMM (channel 13)",
        "destination VMM (channel 14)", "destination VMM (channel 15)"};
    G_STATIC_ASSERT(G_N_ELEMENTS(src) == MIGRATION_MAX_CONNECTIONS);
    G_STATIC_ASSERT(G_N_ELEMENTS(dst) == MIGRATION_MAX_CONNECTIONS);
    channel = MIN(channel, MIGRATION_MAX_CONNECTIONS - 1);
    return source ? src[channel] : dst[channel];
}

gboolean migration_parallel_is_memory_channel(const MigrationJob *job, guint index)
{
    return index > 0 && job->memory_channels > 1 && index >= job->memory_first;
}

int migration_parallel_dest_take_fd(MigrationJob *job, guint index)
{
    if (job->memory_channels < 2 || index < job->memory_first ||
        index > job->memory_first + job->memory_channels - 2)
        return -1;
    int *slot = &job->memory_fds[index - job->memory_first];
    int fd = *slot;
    *slot = -1;
    return fd;
}

/* ---- a VMM that connects to an address (QEMU's multifd) ---- */

static gboolean unix_address(const char *path, struct sockaddr_un *sa, GError **error)
{
    *sa = (struct sockaddr_un){.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa->sun_path)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR, "the socket path %s is too long",
                    path);
        return FALSE;
    }
    strcpy(sa->sun_path, path);
    return TRUE;
}

int migration_parallel_listen(const char *path, GError **error)
{
    struct sockaddr_un sa;
    if (!unix_address(path, &sa, error))
        return -1;
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, MIGRATION_MAX_CONNECTIONS) < 0) {
        ferry_set_error_errno(error, errno, "cannot listen for the VMM's connections at %s", path);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int migration_parallel_accept_vmm(MigrationJob *job, int listen_fd, guint k, gint64 deadline_us,
                              GError **error)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            int flags = fcntl(fd, F_GETFL);
            if (flags >= 0)
                fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
            return fd;
        }
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
            ferry_set_error_errno(error, errno, "cannot accept the VMM's connection %u", k);
            return -1;
        }
        GError *aborted = migration_job_abort_error(job);
        if (aborted) {
            g_propagate_error(error, aborted);
            return -1;
        }
        if (g_get_monotonic_time() >= deadline_us) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                        "the source VMM did not open its connection %u", k);
            return -1;
        }
        struct pollfd p = {.fd = listen_fd, .events = POLLIN};
        poll(&p, 1, 100);
    }
}

int migration_parallel_connect(const char *path, guint k, gint64 deadline_us, GError **error)
{
    /* The VMM may not listen yet. */
    int err = 0;
    int fd = rpc_socket_connect_unix_until(path, deadline_us, &err);
    if (fd < 0)
        ferry_set_error_errno(error, err, "cannot open connection %u to the destination VMM at %s",
                              k, path);
    return fd;
}
