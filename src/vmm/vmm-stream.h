/* One side of a migration byte stream: whole-buffer reads and writes over a
 * socket that never block past a cancel, with the sender's bandwidth cap. */
#pragma once

#include <glib.h>
#include <sys/uio.h>

typedef enum {
    VMM_STREAM_OK,
    VMM_STREAM_CLOSED,    /* the peer closed (EOF) */
    VMM_STREAM_ERROR,     /* an OS error; see err */
    VMM_STREAM_CANCELLED, /* cancel_fd became readable */
} VmmStreamState;

typedef struct {
    int fd;        /* not owned */
    int cancel_fd; /* not owned; readable = stop at once */
    /* bytes/s, 0 = unlimited, read atomically before every write so a new limit
     * applies mid-migration; NULL = never paced. */
    const gint64 *max_bandwidth;
    /* The stream's part of that cap: one of `share` streams of one migration
     * (1 unless set after init), so that the sum holds. */
    guint share;
    /* Published with atomic stores so another thread can read progress. */
    guint64 sent;
    guint64 received;

    VmmStreamState state; /* the first failure sticks */
    int err;              /* errno of VMM_STREAM_ERROR */

    gint64 pace_rate;
    gint64 pace_start;
    guint64 pace_bytes;

    /* vmm_stream_write_pages: guest pages go through a pipe by reference. */
    int pipe_r, pipe_w; /* -1 until first used */
    gsize pipe_size;
    gsize pipe_bytes;   /* in the pipe, not yet in the socket */
    gboolean no_splice; /* the socket does not take spliced pages: copy */
} VmmStream;

void vmm_stream_init(VmmStream *stream, int fd, int cancel_fd, const gint64 *max_bandwidth);
/* Writes everything in iov; FALSE on failure (stream->state says why). */
gboolean vmm_stream_writev(VmmStream *stream, const struct iovec *iov, int iovcnt);
gboolean vmm_stream_write(VmmStream *stream, const void *buf, gsize len);
/* As writev, for guest pages, without copying them where the socket takes
 * spliced pages (AF_UNIX since Linux 6.5, TCP): vmsplice() into a pipe, then
 * splice() into the socket, so the socket holds references to the pages. A
 * page written after this call may reach the peer with the new contents; the
 * caller must send such pages again (the dirty bitmap does). */
gboolean vmm_stream_write_pages(VmmStream *stream, const struct iovec *iov, int iovcnt);
/* Releases what the stream allocated (not the fds it was given). */
void vmm_stream_clear(VmmStream *stream);
/* Fills everything in iov (scatter: straight into guest pages). */
gboolean vmm_stream_readv(VmmStream *stream, const struct iovec *iov, int iovcnt);
gboolean vmm_stream_read(VmmStream *stream, void *buf, gsize len);
/* Reads what the peer already sent, without waiting; for salvaging a last
 * message after a write failed. Returns bytes read (0 if none). */
gsize vmm_stream_read_pending(VmmStream *stream, void *buf, gsize len);
