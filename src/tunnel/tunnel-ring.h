/* The send ring of a credit-mode tunnel stream: the bytes it sent that the
 * peer has not granted credit for (credit never lets more than the peer's
 * window be outstanding, so a ring of that size always has room for what
 * credit allows). The VMM's bytes are read straight into it and sent from
 * it (each packet's payload points into the ring: no copy), and after a
 * broken connection they are resent from it (tunnel-resume). */
#pragma once

#include <glib.h>

typedef struct TunnelSendRing TunnelSendRing;

/* Lifetime: refcounted; a packet whose payload lies in the ring holds a
 * reference until the connection freed it, so the memory outlives both the
 * stream and any connection still writing. The memory is allocated when it
 * is first written: a stream that never sends keeps nothing. */
TunnelSendRing *tunnel_send_ring_new(gsize capacity);
gpointer tunnel_send_ring_ref(gpointer ring);
void tunnel_send_ring_unref(gpointer ring);

/* Where the next bytes of the stream go: *len contiguous free bytes at the
 * end (at most max; fewer where the ring wraps; 0 when full). Nothing is in
 * the stream until tunnel_send_ring_commit. */
guint8 *tunnel_send_ring_space(TunnelSendRing *ring, gsize max, gsize *len);
/* The len bytes written at tunnel_send_ring_space are the stream's next. */
void tunnel_send_ring_commit(TunnelSendRing *ring, gsize len);
/* Forgets the bytes before position pos: their room may be written again. */
void tunnel_send_ring_release(TunnelSendRing *ring, guint64 pos);
guint64 tunnel_send_ring_start(TunnelSendRing *ring);
guint64 tunnel_send_ring_end(TunnelSendRing *ring);
/* The bytes from position pos (within [start, end)), contiguous: *len of
 * them, at most max (fewer where the ring wraps). */
const guint8 *tunnel_send_ring_at(TunnelSendRing *ring, guint64 pos, gsize max, gsize *len);
