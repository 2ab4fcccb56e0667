/* Migration stream I/O. Sockets are driven with MSG_DONTWAIT plus poll() on the
 * socket and the cancel eventfd, so no call ever blocks beyond a cancel, and an
 * inherited fd's flags (shared with whoever passed it) are never changed. */
#include "vmm/vmm-stream.h"

#include <errno.h>
#include <poll.h>
#include <limits.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes per send call: large enough that the stream is never the bottleneck,
 * small enough that pacing and progress stay smooth. */
#define STREAM_CHUNK (4u << 20)
/* Scattered dirty pages are one iovec each: as many per call as the kernel takes. */
#define STREAM_IOV_BATCH IOV_MAX
/* vmm_stream_write_pages moves up to this much per vmsplice/splice pair. */
#define STREAM_PIPE_SIZE (1 << 20)

void vmm_stream_init(VmmStream *stream, int fd, int cancel_fd, const gint64 *max_bandwidth)
{
    memset(stream, 0, sizeof(*stream));
    stream->fd = fd;
    stream->cancel_fd = cancel_fd;
    stream->max_bandwidth = max_bandwidth;
    stream->share = 1;
    stream->state = VMM_STREAM_OK;
    stream->pipe_r = stream->pipe_w = -1;
}

void vmm_stream_clear(VmmStream *stream)
{
    if (stream->pipe_r >= 0)
        close(stream->pipe_r);
    if (stream->pipe_w >= 0)
        close(stream->pipe_w);
    stream->pipe_r = stream->pipe_w = -1;
}

static gboolean stream_fail(VmmStream *s, VmmStreamState state, int err)
{
    if (s->state == VMM_STREAM_OK) {
        s->state = state;
        s->err = err;
    }
    return FALSE;
}

/* Waits for fd to be ready (events) or timeout_ms (-1 = no limit); FALSE on cancel. */
static gboolean stream_wait(VmmStream *s, short events, int timeout_ms)
{
    struct pollfd p[2] = {
        {.fd = s->cancel_fd, .events = POLLIN},
        {.fd = s->fd, .events = events},
    };
    for (;;) {
        int n = poll(p, events ? 2 : 1, timeout_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0 && (p[0].revents & POLLIN))
            return stream_fail(s, VMM_STREAM_CANCELLED, 0);
        /* Ready, timed out, or POLLERR/POLLHUP: the next I/O call reports which. */
        return TRUE;
    }
}

/* How many bytes the bandwidth cap lets through now; 0 after having waited. */
static gsize stream_pace(VmmStream *s, gsize want)
{
    gint64 rate = s->max_bandwidth ? __atomic_load_n(s->max_bandwidth, __ATOMIC_RELAXED) : 0;
    if (rate <= 0)
        return want;
    rate = MAX(rate / (gint64)MAX(s->share, 1u), 1);
    gint64 now = g_get_monotonic_time();
    if (rate != s->pace_rate) {
        s->pace_rate = rate;
        s->pace_start = now;
        s->pace_bytes = 0;
    }
    /* A 50 ms burst keeps writes large without breaking the average. */
    double burst = MAX(rate / 20.0, 65536.0);
    double allowed = burst + (double)(now - s->pace_start) * rate / G_USEC_PER_SEC - s->pace_bytes;
    if (allowed >= MIN((double)want, 65536.0))
        return MIN(want, (gsize)allowed);
    double wait_us = (MIN((double)want, 65536.0) - allowed) * G_USEC_PER_SEC / rate;
    stream_wait(s, 0, (int)MAX(1.0, wait_us / 1000.0));
    return 0;
}

gboolean vmm_stream_writev(VmmStream *stream, const struct iovec *iov, int iovcnt)
{
    VmmStream *s = stream;
    int idx = 0;
    gsize off = 0;
    while (s->state == VMM_STREAM_OK) {
        while (idx < iovcnt && off == iov[idx].iov_len) {
            idx++;
            off = 0;
        }
        if (idx == iovcnt)
            return TRUE;

        gsize limit = stream_pace(s, STREAM_CHUNK);
        if (limit == 0)
            continue;
        struct iovec batch[STREAM_IOV_BATCH];
        int n = 0;
        gsize total = 0, boff = off;
        for (int i = idx; i < iovcnt && n < STREAM_IOV_BATCH && total < limit; i++) {
            gsize len = MIN(iov[i].iov_len - boff, limit - total);
            if (len) {
                batch[n].iov_base = (char *)iov[i].iov_base + boff;
                batch[n].iov_len = len;
                n++;
                total += len;
            }
            boff = 0;
        }
        struct msghdr msg = {.msg_iov = batch, .msg_iovlen = n};
        ssize_t rc = sendmsg(s->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                stream_wait(s, POLLOUT, -1);
                continue;
            }
            return stream_fail(s, VMM_STREAM_ERROR, errno);
        }
        s->pace_bytes += (guint64)rc;
        __atomic_store_n(&s->sent, s->sent + (guint64)rc, __ATOMIC_RELAXED);
        gsize left = (gsize)rc;
        while (left) {
            gsize step = MIN(left, iov[idx].iov_len - off);
            off += step;
            left -= step;
            if (off == iov[idx].iov_len) {
                idx++;
                off = 0;
            }
        }
    }
    return FALSE;
}

/* A socket that takes no spliced data: hand what sits in the pipe over by copy. */
static gboolean stream_unsplice(VmmStream *s)
{
    char buf[16384];
    s->no_splice = TRUE;
    while (s->state == VMM_STREAM_OK && s->pipe_bytes) {
        ssize_t rc = read(s->pipe_r, buf, MIN(sizeof(buf), s->pipe_bytes));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return stream_fail(s, VMM_STREAM_ERROR, rc < 0 ? errno : EIO);
        s->pipe_bytes -= (gsize)rc;
        if (!vmm_stream_write(s, buf, (gsize)rc))
            return FALSE;
    }
    return s->state == VMM_STREAM_OK;
}

/* Moves what vmsplice put in the pipe into the socket. */
static gboolean stream_drain_pipe(VmmStream *s)
{
    while (s->state == VMM_STREAM_OK && s->pipe_bytes) {
        ssize_t rc =
            splice(s->pipe_r, NULL, s->fd, NULL, s->pipe_bytes, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                stream_wait(s, POLLOUT, -1);
                continue;
            }
            if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)
                return stream_unsplice(s);
            return stream_fail(s, VMM_STREAM_ERROR, errno);
        }
        if (rc == 0)
            return stream_fail(s, VMM_STREAM_ERROR, EIO);
        s->pipe_bytes -= (gsize)rc;
        __atomic_store_n(&s->sent, s->sent + (guint64)rc, __ATOMIC_RELAXED);
    }
    return s->state == VMM_STREAM_OK;
}

static gboolean stream_open_pipe(VmmStream *s)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return FALSE;
    s->pipe_r = p[0];
    s->pipe_w = p[1];
    /* Larger than the default 64 KiB means fewer calls; refused above the
     * user's limit, which is fine. */
    (void)fcntl(s->pipe_w, F_SETPIPE_SZ, STREAM_PIPE_SIZE);
    int size = fcntl(s->pipe_w, F_GETPIPE_SZ);
    s->pipe_size = size > 0 ? (gsize)size : 65536;
    return TRUE;
}

gboolean vmm_stream_write_pages(VmmStream *stream, const struct iovec *iov, int iovcnt)
{
    VmmStream *s = stream;
    if (!s->no_splice && s->pipe_r < 0 && !stream_open_pipe(s))
        s->no_splice = TRUE;
    int idx = 0;
    gsize off = 0;
    while (s->state == VMM_STREAM_OK) {
        while (idx < iovcnt && off == iov[idx].iov_len) {
            idx++;
            off = 0;
        }
        if (idx == iovcnt)
            return TRUE;
        if (s->no_splice) {
            /* The rest by copy (the first piece may be partly sent). */
            struct iovec first = {(char *)iov[idx].iov_base + off, iov[idx].iov_len - off};
            return vmm_stream_writev(s, &first, 1) &&
                   vmm_stream_writev(s, iov + idx + 1, iovcnt - idx - 1);
        }

        gsize limit = stream_pace(s, s->pipe_size);
        if (limit == 0)
            continue;
        struct iovec batch[STREAM_IOV_BATCH];
        int n = 0;
        gsize total = 0, boff = off;
        for (int i = idx; i < iovcnt && n < STREAM_IOV_BATCH && total < limit; i++) {
            gsize len = MIN(iov[i].iov_len - boff, limit - total);
            if (len) {
                batch[n].iov_base = (char *)iov[i].iov_base + boff;
                batch[n].iov_len = len;
                n++;
                total += len;
            }
            boff = 0;
        }
        /* The pipe is empty here, so this never waits. */
        ssize_t rc = vmsplice(s->pipe_w, batch, (unsigned long)n, SPLICE_F_NONBLOCK);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0) {
            s->no_splice = TRUE;
            continue;
        }
        s->pace_bytes += (guint64)rc;
        s->pipe_bytes = (gsize)rc;
        gsize left = (gsize)rc;
        while (left) {
            gsize step = MIN(left, iov[idx].iov_len - off);
            off += step;
            left -= step;
            if (off == iov[idx].iov_len) {
                idx++;
                off = 0;
            }
        }
        if (!stream_drain_pipe(s))
            return FALSE;
    }
    return FALSE;
}

gboolean vmm_stream_write(VmmStream *stream, const void *buf, gsize len)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return vmm_stream_writev(stream, &iov, 1);
}

gboolean vmm_stream_readv(VmmStream *stream, const struct iovec *iov, int iovcnt)
{
    VmmStream *s = stream;
    int idx = 0;
    gsize off = 0;
    while (s->state == VMM_STREAM_OK) {
        while (idx < iovcnt && off == iov[idx].iov_len) {
            idx++;
            off = 0;
        }
        if (idx == iovcnt)
            return TRUE;

        struct iovec batch[STREAM_IOV_BATCH];
        int n = 0;
        gsize boff = off;
        for (int i = idx; i < iovcnt && n < STREAM_IOV_BATCH; i++) {
            if (iov[i].iov_len > boff) {
                batch[n].iov_base = (char *)iov[i].iov_base + boff;
                batch[n].iov_len = iov[i].iov_len - boff;
                n++;
            }
            boff = 0;
        }
        struct msghdr msg = {.msg_iov = batch, .msg_iovlen = n};
        ssize_t rc = recvmsg(s->fd, &msg, MSG_DONTWAIT);
        if (rc == 0)
            return stream_fail(s, VMM_STREAM_CLOSED, 0);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                stream_wait(s, POLLIN, -1);
                continue;
            }
            return stream_fail(s, VMM_STREAM_ERROR, errno);
        }
        __atomic_store_n(&s->received, s->received + (guint64)rc, __ATOMIC_RELAXED);
        gsize left = (gsize)rc;
        while (left) {
            gsize step = MIN(left, iov[idx].iov_len - off);
            off += step;
            left -= step;
            if (off == iov[idx].iov_len) {
                idx++;
                off = 0;
            }
        }
    }
    return FALSE;
}

gboolean vmm_stream_read(VmmStream *stream, void *buf, gsize len)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    return vmm_stream_readv(stream, &iov, 1);
}

gsize vmm_stream_read_pending(VmmStream *stream, void *buf, gsize len)
{
    gsize got = 0;
    while (got < len) {
        ssize_t rc = recv(stream->fd, (char *)buf + got, len - got, MSG_DONTWAIT);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            break;
        got += (gsize)rc;
    }
    return got;
}
