/* Resuming a tunnelled stream after its connection broke (between two
 * ferryd, negotiated in the migration cookie): the bytes a sender keeps until
 * the peer's VMM took them, the positions the two sides exchange on a new
 * connection, and the destination's table of streams that wait for their
 * source to come back (looked up by the migration's resume token).
 *
 * The bytes a sender keeps until the peer granted credit for them are its
 * send ring (tunnel-ring.h).
 *
 * The source reconnects with the same URI and credentials, calls
 * FERRY_TUNNEL_PROC_RESUME with the token and its position, and both sides
 * carry on from the other's position: the VMMs never notice. */
#pragma once

#include <glib.h>

#include "rpc/rpc-connection.h"
#include "rpc/rpc-message.h"

typedef struct TunnelStream TunnelStream;
typedef struct TunnelBinding TunnelBinding;
typedef struct TunnelPeerWatch TunnelPeerWatch;

/* CALL: args TunnelResumeArgs, reply TunnelResumePoint (ferry's program). */
#define FERRY_TUNNEL_PROC_RESUME 3
/* Proxy mode: the source's connection comes back to its migration (the
 * data connection resumes on its own, tunnel-dataconn.h). CALL: args
 * TunnelResumeArgs (the point unused), reply TunnelResumePoint (zero). */
#define FERRY_PROXY_PROC_RESUME 15
#define TUNNEL_RESUME_TOKEN_MAX 64

/* A connection that broke (a timeout) may come back for the whole resume
 * time. One the peer ended in order or reset may be a peer that is gone,
 * or one whose own end of a broken connection timed out first: once the
 * link is back, its kernel resets what we still send (a blip a little
 * longer than tcp_user_timeout, where one side noticed and the other did
 * not). Such a stream waits this long (its resume time if shorter): a live
 * peer is reconnecting already, a dead one is given up on soon. */
#define TUNNEL_RESUME_ENDED_GRACE_S 5

/* What a failure says of a peer that stopped answering while its host
 * still did (a frozen or stuck daemon): a new connection would meet it
 * again, so the resume time is not waited. */
#define TUNNEL_PEER_STUCK "not waited for: its host still answers, the peer is stuck or stopped"

/* Where one side stands, for the other to go on from. */
typedef struct {
    guint64 received; /* stream bytes it received from the peer (written or queued for its VMM) */
    guint64 granted;  /* credit it granted for them, in total */
    guint32 flags;
} TunnelResumePoint;

#define TUNNEL_RESUME_SAW_END 1u /* it received the peer's end (finish, or EOF marker) */
#define TUNNEL_RESUME_DONE 2u    /* server: the stream finished; nothing to resume */

typedef struct {
    char *token;
    TunnelResumePoint point;
} TunnelResumeArgs;

bool_t tunnel_resume_xdr_args(XDR *xdr, TunnelResumeArgs *args);
bool_t tunnel_resume_xdr_point(XDR *xdr, TunnelResumePoint *point);

/* ---- the destination: streams waiting for their source ---- */

/* Registers a resumable stream under token (refs taken). watch is the
 * migration's view of its source's connection; a resume moves it along.
 * Proxy mode: ts NULL, only the connection is resumed
 * (tunnel_resume_accept_control). */
void tunnel_resume_offer(const char *token, TunnelStream *ts, TunnelPeerWatch *watch);
void tunnel_resume_withdraw(const char *token);
/* A RESUME call on a new connection (binding: its slot, reserved by the
 * dispatcher with the stream's header and the call's serial) from a peer
 * authenticated as identity: moves the stream there from theirs, and
 * answers ours. FALSE with the reason when no migration has that token, the
 * identity is not the one the migration's prepare came with, or the stream
 * cannot go on. */
gboolean tunnel_resume_accept(const char *token, TunnelBinding *binding,
                              const char *identity, const TunnelResumePoint *theirs,
                              TunnelResumePoint *ours, GError **error);
/* The header a resumed stream's packets carry on the new connection. */
gboolean tunnel_resume_lookup_header(const char *token, RpcHeader *header);
/* Proxy mode: a FERRY_PROXY_PROC_RESUME call on conn from a peer
 * authenticated as identity: the migration of token watches conn from now
 * on (its old connection closed). FALSE when no proxy-mode migration has
 * that token or the identity is not the prepare's. */
gboolean tunnel_resume_accept_control(const char *token, RpcConnection *conn,
                                      const char *identity, GError **error);
