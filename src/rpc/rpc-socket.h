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
