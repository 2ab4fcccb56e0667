/* Creating sockets: listeners on TCP and UNIX paths, and outgoing connections.
 * Every function returns a file descriptor the caller owns, or -1 with *error. */
#pragma once

#include <glib.h>

/* Listens on addr:port ("0.0.0.0", "::", "127.0.0.1"; port 0 picks a free
 * one, reported in *bound_port). */
int rpc_socket_listen_tcp(const char *addr, guint16 port, guint16 *bound_port, GError **error);

/* Listens on a UNIX socket path with the given mode. A stale socket file left
 * by a dead daemon is replaced; a live daemon owning it is an error. */
int rpc_socket_listen_unix(const char *path, guint mode, GError **error);

int rpc_socket_connect_tcp(const char *host, guint16 port, int timeout_ms, GError **error);
int rpc_socket_connect_unix(const char *path, GError **error);
/* Connects to the UNIX socket at path, trying again every 20 ms while
 * nothing listens there yet (a process still starting) until deadline_us.
 * -1 with the last attempt's errno in *errnum (ENAMETOOLONG for a path too
 * long for a socket address). */
int rpc_socket_connect_unix_until(const char *path, gint64 deadline_us, int *errnum);

/* How a TCP connection notices a dead peer or path by itself, without
 * waiting for the kernel's retransmission limit (about 15 minutes):
 * TCP_USER_TIMEOUT bounds how long sent data may stay unacknowledged, and
 * TCP keepalive probes an idle connection. 0 leaves a setting at the
 * kernel's default (keepalive_idle 0: no keepalive). */
typedef struct {
    guint user_timeout_s;
    guint keepalive_idle_s;
    guint keepalive_interval_s;
    guint keepalive_count;
} RpcTcpLiveness;

/* The process-wide settings. Set once at start, before any connection
 * (default: all 0). Connections to peers (every one rpc_socket_connect_tcp
 * makes, and those passed to rpc_socket_tune_peer) get all of them; a
 * client's (rpc_socket_tune_accepted) gets keepalive only: the kernel counts
 * a zero window as unacknowledged data, and a client may stop reading. */
void rpc_socket_set_tcp_liveness(const RpcTcpLiveness *liveness);
/* An accepted client connection: TCP_NODELAY and keepalive when it is TCP;
 * a UNIX socket is left alone. */
void rpc_socket_tune_accepted(int fd);
/* A connection found to come from a peer daemon (a migration's data
 * connection, or the RPC connection a prepare call came on): all of the
 * liveness settings. */
void rpc_socket_tune_peer(int fd);

/* The error a TCP connection died of, as its kernel state tells it after
 * the error itself was taken: ETIMEDOUT when the kernel closed it after
 * retransmitting or probing with nothing acknowledged for its user timeout
 * (at least a second), or on a zero window that lasted that long
 * (rpc_socket_timed_out_on_zero_window; a peer that died while its window
 * was zero, which resets, is told the same); 0 otherwise (alive, closed in
 * order or reset, or not TCP). A socket reports its error to one call only, and a splice()
 * that moved bytes before that call returns the count and drops the error:
 * then every thread meets only EPIPE or end of file. */
int rpc_socket_lost_error(int fd);

/* Whether a TCP connection at end of file was reset rather than ended in
 * order: a peer's FIN leaves it in CLOSE_WAIT until we end our side too,
 * a reset in CLOSE. Only meaningful while we have not shut down our
 * sending side (then an orderly end also ends in CLOSE). The reset's
 * ECONNRESET goes to one call only: the others meet end of file. */
gboolean rpc_socket_reset_before_our_end(int fd);

/* Whether the peer's kernel still answers on this TCP connection: it is
 * established and acknowledged something (data, a zero-window probe, a
 * keepalive probe) within the last within_ms. A peer whose daemon stopped
 * answering calls while its host acknowledges is stuck or frozen, not
 * behind a broken path. FALSE when not TCP or not known. */
gboolean rpc_socket_peer_host_answers(int fd, guint within_ms);
/* Whether a TCP connection the kernel closed with ETIMEDOUT died of a zero
 * window: TCP_USER_TIMEOUT also bounds how long the peer may advertise no
 * room, however promptly its host answers the probes. Nothing was left to
 * retransmit, the peer's window is zero, and its host answered a probe
 * within the user timeout: the peer's reader stopped (a frozen or stuck
 * daemon), the path did not break.
 * Ask soon after the close: the last answer only ages. */
gboolean rpc_socket_timed_out_on_zero_window(int fd);
