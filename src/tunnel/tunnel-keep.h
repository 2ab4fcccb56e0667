/* The bytes a resumable plaintext relay sent, kept as pipe pages rather
 * than copies: what the relay splices to the network is first tee()d from
 * its pipe into the keep (a reference to each page, no copy), and after a
 * broken connection the bytes the peer did not get are tee()d out of the
 * keep again and spliced to the new one. The oldest bytes are dropped once
 * more than the relay must keep is held.
 *
 * A pipe's capacity is counted in buffers (slots), not bytes: a spliced
 * buffer holds from a few bytes to 32 KiB. So the keep is a queue of pipes,
 * a new one taken when the newest is full. Past max_pipes, two neighbours
 * whose buffers hold few bytes are merged (their bytes copied into whole
 * pages), or else the oldest pipe is dropped even if its bytes were still
 * to be kept (tunnel_keep_short says so, and a resume from before them then
 * fails naming the positions).
 *
 * One thread uses a keep (the relay's outbound writer). */
#pragma once

#include <glib.h>

typedef struct TunnelKeep TunnelKeep;

/* pipe_size: the capacity asked for each pipe (F_SETPIPE_SZ; more than
 * /proc/sys/fs/pipe-max-size needs CAP_SYS_RESOURCE, and a pipe keeps what
 * it was given). Fails if no pipe can be made. */
TunnelKeep *tunnel_keep_new(gsize pipe_size, guint max_pipes, GError **error);
void tunnel_keep_free(TunnelKeep *keep);

/* Keeps up to len bytes from the head of the pipe read end from_pipe
 * without taking them from it: the stream's next bytes, which the caller
 * then splices out of from_pipe. Returns the number kept (at least 1), 0 if
 * from_pipe is empty and its writer gone, -1 with errno (EAGAIN: from_pipe
 * is empty). Never blocks. */
gssize tunnel_keep_tee(TunnelKeep *keep, int from_pipe, gsize len);
/* Drops the bytes before position pos. */
void tunnel_keep_drop_before(TunnelKeep *keep, guint64 pos);
/* The positions held: [from, end). */
guint64 tunnel_keep_from(const TunnelKeep *keep);
guint64 tunnel_keep_end(const TunnelKeep *keep);
/* Bytes dropped before they were allowed to be (slots ran out). */
gboolean tunnel_keep_short(const TunnelKeep *keep);

/* Splices the kept bytes from position pos (within [from, end)) to fd, up
 * to the end of the pipe holding pos and at most to position until: returns
 * the number written (a blocking fd may take fewer than asked), -1 with
 * errno. The keep holds them on. */
gssize tunnel_keep_send(TunnelKeep *keep, guint64 pos, guint64 until, int fd);
