/* A tunnelled stream: the bytes of a local VMM socket carried inside STREAM
 * packets of an RPC connection, in both directions, with libvirt's finish and
 * abort handshakes and, between two ferryd, credit-based flow control.
 * The state machine is drawn at the top of tunnel-stream.c. */
#pragma once

#include <glib.h>

#include "rpc/rpc-connection.h"
#include "tunnel/tunnel-counters.h"
#include "tunnel/tunnel-resume.h"
#include "tunnel/tunnel-rate.h"

/* ferry's own program for messages only ferry peers exchange (negotiated in
 * the migration cookie, never sent to a plain libvirt peer). */
#define FERRY_TUNNEL_PROGRAM 0x66657279u /* "fery" */
#define FERRY_TUNNEL_VERSION 1
#define FERRY_TUNNEL_PROC_CREDIT 1 /* MESSAGE, serial = stream serial, payload: unsigned hyper */
/* CALL: args string id<64>; reply hyper now_unix_us, string record<4 MiB>:
 * a destination's flight record for the source (src/remote). */
#define FERRY_TUNNEL_PROC_FLIGHT_RECORD 2

typedef enum {
    TUNNEL_ROLE_CLIENT, /* made the opening call: sends finish/abort */
    TUNNEL_ROLE_SERVER, /* answered it: confirms finish/abort, may send errors */
} TunnelRole;

typedef struct {
    TunnelRole role;
    /* Credit mode: the peer is a ferryd. We may send at most peer_window bytes
     * it has not yet written to its VMM; we grant back what we write, in
     * pieces of at least a quarter of our window, so the peer's peer_window
     * must be our window (as the cookie negotiates). */
    gboolean credit;
    gsize window;      /* bytes we accept in flight toward us (credit) or queue (plain) */
    gsize peer_window; /* initial credit the peer grants us */
    gsize packet_size; /* payload bytes per data packet we send */
    gsize send_queue_limit; /* plain mode: bytes we leave in the connection's queue */
    guint64 bandwidth; /* bytes per second we send, 0 = unlimited */
    const char *peer_name; /* "destination ferryd", for messages */
    const char *vmm_name;  /* "source VMM", for messages */
    /* Credit mode between ferryd that agreed on resuming (the cookie): a
     * closed connection leaves the stream waiting up to resume_timeout_s
     * for tunnel_stream_resume on a new one, the VMM none the wiser; the
     * sender keeps what the peer has not granted credit for, to resend. */
    gboolean resume;
    guint resume_timeout_s;
} TunnelStreamConfig;

typedef struct {
    guint64 bytes_out; /* VMM -> peer */
    guint64 bytes_in;  /* peer -> VMM */
    guint64 packets_out;
    guint64 packets_in;
    gint64 started_us;
    gint64 ended_us;
    /* Data buffers the stream ever allocated: its pool covers the window,
     * so this stays at window / packet size plus a few, however long the
     * stream runs. */
    guint64 buffers_allocated;
    guint reconnections;  /* times the stream went on over a new connection */
    guint64 bytes_resent; /* bytes sent again after one */
} TunnelStats;

typedef struct TunnelStream TunnelStream;

/* Lifetime: refcounted. The creator holds one reference; each of the two
 * pump threads holds one while it runs. The stream owns vmm_fd from now on
 * and closes it when both pumps have stopped. */
TunnelStream *tunnel_stream_new(RpcConnection *conn, const RpcHeader *opening_call, int vmm_fd,
                                const TunnelStreamConfig *config);
TunnelStream *tunnel_stream_ref(TunnelStream *ts);
void tunnel_stream_unref(TunnelStream *ts);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TunnelStream, tunnel_stream_unref)

void tunnel_stream_start(TunnelStream *ts);

/* A STREAM packet, or a FERRY_TUNNEL credit MESSAGE, for this stream, in the
 * connection's reader thread; takes ownership. In credit mode it never waits
 * on the VMM; in plain mode it waits while `window` bytes are queued (the
 * kernel then pushes back on the peer, as libvirt does), but never past the
 * stream's end or the connection's close. */
void tunnel_stream_deliver(TunnelStream *ts, RpcMessage *msg);
/* The same for a packet that arrived before the stream existed and was held
 * (bounded) by the router: never waits, whoever sent it, so handing held
 * packets over can never block. */
void tunnel_stream_deliver_held(TunnelStream *ts, RpcMessage *msg);

/* Waits until the stream is over: TRUE when it finished cleanly (both
 * handshake halves done), FALSE with the cause otherwise. deadline_us is
 * monotonic, 0 = no deadline (then FALSE with OPERATION_TIMEOUT). */
gboolean tunnel_stream_wait(TunnelStream *ts, gint64 deadline_us, GError **error);

/* Cancels at once: shuts the VMM socket down, tells the peer (abort or
 * error packet, queued, never waited for) and returns. */
void tunnel_stream_abort(TunnelStream *ts, const GError *why);

/* The same, for a packet that came on conn: dropped unless conn carries the
 * stream now (a resumed stream ignores its old connection). */
void tunnel_stream_deliver_on(TunnelStream *ts, RpcConnection *conn, RpcMessage *msg,
                              gboolean held);

/* The RPC connection under the stream is gone. A resumable stream waits for
 * a new one (until its resume time is up, or TUNNEL_RESUME_ENDED_GRACE_S
 * when the peer ended or reset it; then it fails with why). */
void tunnel_stream_connection_closed(TunnelStream *ts, const GError *why);
/* The same, ignored when conn no longer carries the stream. */
void tunnel_stream_connection_closed_on(TunnelStream *ts, RpcConnection *conn,
                                        const GError *why);

/* ---- resuming (cfg.resume) ---- */
/* TRUE while the stream waits for a new connection. */
gboolean tunnel_stream_awaits_resume(TunnelStream *ts);
/* Where this side stands, for the peer. */
void tunnel_stream_get_resume_point(TunnelStream *ts, TunnelResumePoint *ours);
/* Moves the stream onto binding's connection (the header's serial becomes
 * the binding's) and goes on from the peer's point: resends what the peer
 * did not receive and its end marker, takes the peer's credit total.
 * ours (may be NULL) gets this side's point, taken in the same step. *old
 * gets the connection the stream had (a reference). A stream that finished
 * cleanly answers TUNNEL_RESUME_DONE and stays where it is. FALSE when the
 * peer's point cannot be served (the binding is then the caller's). */
gboolean tunnel_stream_resume(TunnelStream *ts, TunnelBinding *binding,
                              const TunnelResumePoint *theirs, TunnelResumePoint *ours,
                              RpcConnection **old, GError **error);
/* The stream moved nothing for a while and the peer's host acknowledged
 * nothing on its connection within silent_ms: the path broke though this
 * side's socket did not tell (a receiver with nothing to send, or TCP's
 * timeouts off). A resumable running stream closes the connection with
 * why and waits the resume time, as if TCP had noticed; TRUE then. FALSE:
 * not resumable, not running, or the host still answers (a stuck peer). */
gboolean tunnel_stream_break_silent_path(TunnelStream *ts, guint silent_ms, const GError *why);
/* The way back failed for good (refused, or not in time): the stream fails. */
void tunnel_stream_resume_failed(TunnelStream *ts, const GError *why);
/* The monotonic time the stream stops waiting for a new connection (0: not waiting). */
gint64 tunnel_stream_get_resume_deadline(TunnelStream *ts);
const RpcHeader *tunnel_stream_get_header(TunnelStream *ts);

gboolean tunnel_stream_is_over(TunnelStream *ts);
/* TRUE once the abort was confirmed by the peer (or the peer reported an error). */
gboolean tunnel_stream_peer_acknowledged_end(TunnelStream *ts);
void tunnel_stream_get_stats(TunnelStream *ts, TunnelStats *stats);
void tunnel_stream_set_bandwidth(TunnelStream *ts, guint64 bytes_per_second);
/* Counts against rate (shared with other channels) from now on. */
void tunnel_stream_set_rate(TunnelStream *ts, TunnelRate *rate);
guint32 tunnel_stream_get_serial(TunnelStream *ts);
/* The flight recorder's view: the pumps' counters (live, read them with
 * tunnel_counters_read), the bytes waiting in the connection's send queue,
 * and when the peer was last heard (monotonic), the last keepalive round
 * trip (0: none measured) and when it was answered (monotonic, 0). */
const TunnelCounters *tunnel_stream_get_counters(TunnelStream *ts);
gsize tunnel_stream_get_queued_bytes(TunnelStream *ts);
void tunnel_stream_get_liveness(TunnelStream *ts, gint64 *last_rx_us, gint64 *last_rtt_us,
                                gint64 *last_pong_us);
