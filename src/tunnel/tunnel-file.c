/* One splice pump between a VMM socket and a file, on a thread of its own. */
#include "tunnel/tunnel-file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/error.h"
#include "util/thread.h"

#define CHUNK (1024 * 1024)
#define POLL_US (100 * 1000)

struct TunnelFile {
    gint ref;
    int vmm_fd;
    int file_fd;
    gboolean to_file;
    char *vmm_name;
    char *file_name;
    GMutex lock;
    GCond cond;
    gboolean done, failed;
    GError *error;
    guint64 bytes;
    TunnelRate *rate; /* its own, or the one its job shares */
};

TunnelFile *tunnel_file_new(int vmm_fd, int file_fd, const TunnelFileConfig *config)
{
    TunnelFile *tf = g_new0(TunnelFile, 1);
    tf->ref = 1;
    tf->vmm_fd = vmm_fd;
    tf->file_fd = file_fd;
    tf->to_file = config->to_file;
    tf->vmm_name = g_strdup(config->vmm_name ? config->vmm_name : "VMM");
    tf->file_name = g_strdup(config->file_name ? config->file_name : "file");
    tf->rate = tunnel_rate_new(config->bandwidth);
    g_mutex_init(&tf->lock);
    g_cond_init(&tf->cond);
    return tf;
}

TunnelFile *tunnel_file_ref(TunnelFile *tf)
{
    g_atomic_int_inc(&tf->ref);
    return tf;
}

void tunnel_file_unref(TunnelFile *tf)
{
    if (!tf || !g_atomic_int_dec_and_test(&tf->ref))
        return;
    close(tf->vmm_fd);
    close(tf->file_fd);
    g_clear_error(&tf->error);
    tunnel_rate_unref(tf->rate);
    g_mutex_clear(&tf->lock);
    g_cond_clear(&tf->cond);
    g_free(tf->vmm_name);
    g_free(tf->file_name);
    g_free(tf);
}

/* Records the end (why NULL: clean) once; a failure stops the VMM's side. */
static void finish_locked(TunnelFile *tf, GError *why)
{
    if (!tf->done) {
        tf->done = TRUE;
        tf->failed = why != NULL;
        tf->error = why;
        why = NULL;
        if (tf->failed)
            shutdown(tf->vmm_fd, SHUT_RDWR);
        g_cond_broadcast(&tf->cond);
    }
    g_clear_error(&why);
}

static gboolean is_done(TunnelFile *tf)
{
    g_mutex_lock(&tf->lock);
    gboolean done = tf->done;
    g_mutex_unlock(&tf->lock);
    return done;
}

static void throttle_and_count(TunnelFile *tf, gsize n)
{
    g_mutex_lock(&tf->lock);
    tf->bytes += n;
    tunnel_rate_add(tf->rate, n);
    for (;;) {
        gint64 due = tunnel_rate_due(tf->rate), now = g_get_monotonic_time();
        if (tf->done || now >= due)
            break;
        g_cond_wait_until(&tf->cond, &tf->lock, MIN(due, now + POLL_US));
    }
    g_mutex_unlock(&tf->lock);
}

static GError *io_error(TunnelFile *tf, const char *verb, const char *what, int err)
{
    g_mutex_lock(&tf->lock);
    g_autofree char *moved = ferry_format_size(tf->bytes);
    g_mutex_unlock(&tf->lock);
    return g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot %s %s after %s: %s", verb,
                       what, moved, g_strerror(err));
}

static GError *pump(TunnelFile *tf)
{
    int in = tf->to_file ? tf->vmm_fd : tf->file_fd;
    int out = tf->to_file ? tf->file_fd : tf->vmm_fd;
    g_autofree char *vmm = g_strdup_printf("the %s", tf->vmm_name);
    const char *in_name = tf->to_file ? vmm : tf->file_name;
    const char *out_name = tf->to_file ? tf->file_name : vmm;
    int pipefd[2];
    GError *why = NULL;
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        ferry_set_error_errno(&why, errno, "cannot create the pipe for %s", tf->file_name);
        return why;
    }
    fcntl(pipefd[1], F_SETPIPE_SZ, CHUNK);
    for (;;) {
        gssize n = splice(in, NULL, pipefd[1], NULL, CHUNK, SPLICE_F_MOVE | SPLICE_F_MORE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            if (!tf->to_file)
                shutdown(tf->vmm_fd, SHUT_WR); /* the VMM sees the file's end */
            break;
        }
        if (n < 0) {
            why = is_done(tf) ? NULL : io_error(tf, "read from", in_name, errno);
            break;
        }
        for (gssize left = n; left > 0 && !why;) {
            gssize w = splice(pipefd[0], NULL, out, NULL, left, SPLICE_F_MOVE);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                why = io_error(tf, "write to", out_name, w < 0 ? errno : EPIPE);
            else
                left -= w;
        }
        if (why)
            break;
        throttle_and_count(tf, n);
    }
    close(pipefd[0]);
    close(pipefd[1]);
    return why;
}

static gpointer pump_thread(gpointer data)
{
    TunnelFile *tf = data;
    GError *why = pump(tf);
    g_mutex_lock(&tf->lock);
    finish_locked(tf, why);
    g_mutex_unlock(&tf->lock);
    tunnel_file_unref(tf);
    return NULL;
}

void tunnel_file_start(TunnelFile *tf)
{
    GError *why = NULL;
    GThread *t = ferry_thread_try_new("file-pump", pump_thread, tunnel_file_ref(tf), &why);
    if (t) {
        g_thread_unref(t);
        return;
    }
    g_mutex_lock(&tf->lock);
    finish_locked(tf, why);
    g_mutex_unlock(&tf->lock);
    tunnel_file_unref(tf);
}

gboolean tunnel_file_wait(TunnelFile *tf, gint64 deadline_us, GError **error)
{
    g_mutex_lock(&tf->lock);
    while (!tf->done) {
        if (!deadline_us) {
            g_cond_wait(&tf->cond, &tf->lock);
        } else if (!g_cond_wait_until(&tf->cond, &tf->lock, deadline_us) && !tf->done) {
            g_mutex_unlock(&tf->lock);
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                        "the copy between the %s and %s did not end in time", tf->vmm_name,
                        tf->file_name);
            return FALSE;
        }
    }
    gboolean ok = !tf->failed;
    if (!ok)
        g_propagate_error(error, g_error_copy(tf->error));
    g_mutex_unlock(&tf->lock);
    return ok;
}

void tunnel_file_abort(TunnelFile *tf, const GError *why)
{
    g_mutex_lock(&tf->lock);
    finish_locked(tf, why ? g_error_copy(why)
                          : g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                        "the copy to %s was aborted", tf->file_name));
    g_mutex_unlock(&tf->lock);
}

gboolean tunnel_file_is_over(TunnelFile *tf)
{
    return is_done(tf);
}

void tunnel_file_set_bandwidth(TunnelFile *tf, guint64 bytes_per_second)
{
    g_mutex_lock(&tf->lock);
    tunnel_rate_set(tf->rate, bytes_per_second);
    g_cond_broadcast(&tf->cond);
    g_mutex_unlock(&tf->lock);
}

void tunnel_file_set_rate(TunnelFile *tf, TunnelRate *rate)
{
    g_mutex_lock(&tf->lock);
    tunnel_rate_unref(tf->rate);
    tf->rate = tunnel_rate_ref(rate);
    g_cond_broadcast(&tf->cond);
    g_mutex_unlock(&tf->lock);
}

void tunnel_file_get_bytes(TunnelFile *tf, guint64 *out, guint64 *in)
{
    g_mutex_lock(&tf->lock);
    *out = tf->to_file ? tf->bytes : 0;
    *in = tf->to_file ? 0 : tf->bytes;
    g_mutex_unlock(&tf->lock);
}
