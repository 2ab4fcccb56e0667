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
    /* Published with atomic stores so another thread can read progress. */
    guint64 sent;
    guint64 received;

    VmmStreamState state; /* the first failure sticks */
    int err;              /* errno of VMM_STREAM_ERROR */

    gint64 pace_rate;
    gint64 pace_start;
    guint64 pace_bytes;
} VmmStream;

void vmm_stream_init(VmmStream *stream, int fd, int cancel_fd, const gint64 *max_bandwidth);
/* Writes everything in iov; FALSE on failure (stream->state says why). */
gboolean vmm_stream_writev(VmmStream *stream, const struct iovec *iov, int iovcnt);
gboolean vmm_stream_write(VmmStream *stream, const void *buf, gsize len);
/* Fills everything in iov (scatter: straight into guest pages). */
gboolean vmm_stream_readv(VmmStream *stream, const struct iovec *iov, int iovcnt);
gboolean vmm_stream_read(VmmStream *stream, void *buf, gsize len);
/* Reads what the peer already sent, without waiting; for salvaging a last
 * message after a write failed. Returns bytes read (0 if none). */
gsize vmm_stream_read_pending(VmmStream *stream, void *buf, gsize len);
/* "8.4 MiB", with a plain space (GLib uses U+00A0): for error texts. */
char *vmm_stream_format_bytes(guint64 bytes);
