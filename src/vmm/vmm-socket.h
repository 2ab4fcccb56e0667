/* UNIX socket helpers shared by the QMP server and the migration endpoints. */
#pragma once

#include <glib.h>

/* Listens on path (non-blocking, close-on-exec). A stale socket file left by a
 * dead process is replaced; a live one is an error. */
int vmm_socket_listen_unix(const char *path, GError **error);

/* Connects to path; waits on cancel_fd (readable = give up; -1 = none) while the
 * listener's backlog is full. The socket is close-on-exec, blocking mode unchanged. */
int vmm_socket_connect_unix(const char *path, int cancel_fd, GError **error);

/* TRUE if fd is a connected stream socket: migration needs both directions. */
gboolean vmm_socket_check_stream(int fd, GError **error);
