/* Bytes sent, kept as pipe pages: see tunnel-keep.h. Every call that must
 * not wait passes SPLICE_F_NONBLOCK; the pipes themselves stay blocking, so
 * a resend's splice into the (blocking) socket waits for room like any
 * other send (a non-blocking pipe would make it MSG_DONTWAIT). */
#include "tunnel/tunnel-keep.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define MIN_PIPE_SIZE (64 * 1024)
#define DRAIN_MAX (1u << 30)

typedef struct {
    int rd, wr;
    guint64 start, end; /* the stream's positions it holds */
} KeepPipe;

struct TunnelKeep {
    GQueue pipes;     /* KeepPipe *, oldest first */
    KeepPipe *spare;  /* an emptied one, for the next needed */
    int scratch[2];   /* a resend's duplicate of one pipe's buffers */
    int devnull;      /* dropped bytes go there */
    gsize pipe_size;  /* asked for each pipe: no larger than scratch */
    guint max_pipes;
    guint64 from, end;
    gboolean dropped_early;
};

/* A pipe of at most size bytes, as large as this process may have. */
static gboolean open_pipe(int fds[2], gsize size, gsize *got)
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return FALSE;
    for (gsize s = size; s >= MIN_PIPE_SIZE; s /= 2)
        if (fcntl(fds[1], F_SETPIPE_SZ, (int)s) >= 0)
            break;
    int have = fcntl(fds[1], F_GETPIPE_SZ);
    *got = have > 0 ? (gsize)have : MIN_PIPE_SIZE;
    return TRUE;
}

static KeepPipe *keep_pipe_new(TunnelKeep *k)
{
    KeepPipe *p = g_new0(KeepPipe, 1);
    int fds[2];
    gsize got;
    if (!open_pipe(fds, k->pipe_size, &got)) {
        g_free(p);
        return NULL;
    }
    p->rd = fds[0];
    p->wr = fds[1];
    return p;
}

static void keep_pipe_free(KeepPipe *p)
{
    if (!p)
        return;
    close(p->rd);
    close(p->wr);
    g_free(p);
}

/* Takes n bytes from the head of the pipe read end fd to /dev/null (all it
 * holds if n is DRAIN_MAX). FALSE if the pipe would not give them. */
static gboolean drain(TunnelKeep *k, int fd, gsize n)
{
    gboolean all = n == DRAIN_MAX;
    while (n > 0) {
        gssize m = splice(fd, NULL, k->devnull, NULL, n, SPLICE_F_NONBLOCK);
        if (m < 0 && errno == EINTR)
            continue;
        if (m <= 0)
            return all && m < 0 && errno == EAGAIN; /* all: it is empty now */
        n -= m;
    }
    return TRUE;
}

TunnelKeep *tunnel_keep_new(gsize pipe_size, guint max_pipes, GError **error)
{
    TunnelKeep *k = g_new0(TunnelKeep, 1);
    g_queue_init(&k->pipes);
    k->max_pipes = MAX(max_pipes, 1);
    k->scratch[0] = k->scratch[1] = -1;
    k->devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    gsize got = 0;
    if (k->devnull < 0 || !open_pipe(k->scratch, MAX(pipe_size, MIN_PIPE_SIZE), &got)) {
        int err = errno;
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(err),
                    "cannot keep the bytes sent: %s", g_strerror(err));
        tunnel_keep_free(k);
        return NULL;
    }
    /* A pipe's buffers all fit in the scratch pipe: a resend duplicates
     * one whole pipe there at once. */
    k->pipe_size = got;
    return k;
}

void tunnel_keep_free(TunnelKeep *k)
{
    if (!k)
        return;
    KeepPipe *p;
    while ((p = g_queue_pop_head(&k->pipes)))
        keep_pipe_free(p);
    keep_pipe_free(k->spare);
    if (k->scratch[0] >= 0) {
        close(k->scratch[0]);
        close(k->scratch[1]);
    }
    if (k->devnull >= 0)
        close(k->devnull);
    g_free(k);
}

/* The oldest pipe is emptied: its bytes are gone. It becomes the spare, or
 * is closed if its buffers would not go. */
static void drop_oldest(TunnelKeep *k)
{
    KeepPipe *h = g_queue_pop_head(&k->pipes);
    if (!h)
        return;
    KeepPipe *next = g_queue_peek_head(&k->pipes);
    k->from = next ? next->start : k->end;
    if (!k->spare && drain(k, h->rd, DRAIN_MAX))
        k->spare = h;
    else
        keep_pipe_free(h);
}

/* Reads exactly n bytes that the pipe read end fd holds. */
static gboolean read_held(int fd, guint8 *buf, gsize n)
{
    while (n > 0) {
        gssize m = read(fd, buf, n);
        if (m < 0 && errno == EINTR)
            continue;
        if (m <= 0)
            return FALSE;
        buf += m;
        n -= m;
    }
    return TRUE;
}

/* Two neighbouring pipes whose bytes fill at most half the first's pages
 * (buffers of a few bytes each: a VMM's small replies) become one, their
 * bytes copied back into the first, whole pages each; the second is free.
 * Dropping one of them instead would keep far fewer bytes than allowed. */
static gboolean merge_sparse(TunnelKeep *k)
{
    for (GList *l = k->pipes.head; l && l->next; l = l->next) {
        KeepPipe *a = l->data, *b = l->next->data;
        gsize na = a->end - a->start, nb = b->end - b->start;
        int cap = fcntl(a->wr, F_GETPIPE_SZ);
        if (cap <= 0 || na + nb > (gsize)cap / 2)
            continue;
        g_autofree guint8 *buf = g_malloc(na + nb);
        gboolean ok = read_held(a->rd, buf, na) && read_held(b->rd, buf + na, nb);
        for (gsize off = 0; ok && off < na + nb;) {
            gssize w = write(a->wr, buf + off, na + nb - off); /* it has room: never waits */
            if (w < 0 && errno == EINTR)
                continue;
            ok = w > 0;
            off += ok ? w : 0;
        }
        if (!ok) {
            /* Not expected of a pipe: everything up to b's end goes. */
            k->dropped_early = TRUE;
            for (guint64 upto = b->end; !g_queue_is_empty(&k->pipes) &&
                                        ((KeepPipe *)g_queue_peek_head(&k->pipes))->start < upto;)
                drop_oldest(k);
            return TRUE;
        }
        a->end = b->end;
        g_queue_delete_link(&k->pipes, l->next);
        if (!k->spare)
            k->spare = b;
        else
            keep_pipe_free(b);
        return TRUE;
    }
    return FALSE;
}

/* The newest pipe is full: a new one; none to be had, two sparse ones
 * merged, or else the oldest's buffers for it, dropped before their time. */
static void make_room(TunnelKeep *k)
{
    if (g_queue_get_length(&k->pipes) < k->max_pipes) {
        KeepPipe *p = k->spare ? g_steal_pointer(&k->spare) : keep_pipe_new(k);
        if (p) {
            p->start = p->end = k->end;
            if (g_queue_is_empty(&k->pipes))
                k->from = k->end;
            g_queue_push_tail(&k->pipes, p);
            return;
        }
    }
    if (g_queue_is_empty(&k->pipes) || merge_sparse(k))
        return; /* a merge freed a pipe: the next call takes it */
    k->dropped_early = TRUE;
    drop_oldest(k);
}

gssize tunnel_keep_tee(TunnelKeep *k, int from_pipe, gsize len)
{
    for (guint tries = 0;; tries++) {
        KeepPipe *t = g_queue_peek_tail(&k->pipes);
        if (t) {
            gssize n = tee(from_pipe, t->wr, len, SPLICE_F_NONBLOCK);
            if (n > 0) {
                t->end += n;
                k->end += n;
                return n;
            }
            if (n == 0)
                return 0;
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -1;
            /* A full output pipe says EAGAIN before an empty input is
             * looked at, even one whose writer is gone. */
            int avail = 0;
            if (ioctl(from_pipe, FIONREAD, &avail) < 0 || avail <= 0) {
                struct pollfd pfd = {.fd = from_pipe, .events = POLLIN};
                if (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP) && !(pfd.revents & POLLIN))
                    return 0; /* its end */
                errno = EAGAIN; /* nothing to keep yet */
                return -1;
            }
        }
        /* The newest pipe has no free buffer (or there is none). */
        if (tries > k->max_pipes + 1) {
            errno = ENOSPC;
            return -1;
        }
        make_room(k);
    }
}

void tunnel_keep_drop_before(TunnelKeep *k, guint64 pos)
{
    KeepPipe *h;
    while (k->from < pos && (h = g_queue_peek_head(&k->pipes))) {
        if (h->end <= pos && h != g_queue_peek_tail(&k->pipes)) {
            drop_oldest(k);
            continue;
        }
        guint64 to = MIN(pos, h->end);
        if (to > h->start && !drain(k, h->rd, to - h->start)) {
            drop_oldest(k); /* it would not give them: all of it goes */
            continue;
        }
        h->start = to;
        k->from = to;
        break;
    }
}

guint64 tunnel_keep_from(const TunnelKeep *k)
{
    return k->from;
}

guint64 tunnel_keep_end(const TunnelKeep *k)
{
    return k->end;
}

gboolean tunnel_keep_short(const TunnelKeep *k)
{
    return k->dropped_early;
}

gssize tunnel_keep_send(TunnelKeep *k, guint64 pos, guint64 until, int fd)
{
    KeepPipe *p = NULL;
    for (GList *l = k->pipes.head; l && !p; l = l->next) {
        KeepPipe *c = l->data;
        if (c->start <= pos && pos < c->end)
            p = c;
    }
    if (!p || until <= pos) {
        errno = ERANGE;
        return -1;
    }
    drain(k, k->scratch[0], DRAIN_MAX); /* what a failed send left there */
    gssize t;
    do {
        t = tee(p->rd, k->scratch[1], p->end - p->start, SPLICE_F_NONBLOCK);
    } while (t < 0 && errno == EINTR);
    gsize skip = pos - p->start;
    if (t <= 0 || (gsize)t <= skip) {
        drain(k, k->scratch[0], DRAIN_MAX);
        errno = ENOBUFS;
        return -1;
    }
    gssize w = -1;
    int err = 0;
    if (drain(k, k->scratch[0], skip)) {
        gsize want = MIN((gsize)t - skip, until - pos);
        do {
            w = splice(k->scratch[0], NULL, fd, NULL, want, 0);
        } while (w < 0 && errno == EINTR);
        err = errno;
    } else {
        err = ENOBUFS;
    }
    drain(k, k->scratch[0], DRAIN_MAX);
    errno = err;
    return w;
}
