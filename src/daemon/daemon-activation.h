/* What ferryd takes from its service manager, without libsystemd: listening
 * sockets (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), the readiness notice
 * (NOTIFY_SOCKET), and the idle timeout of --timeout. */
#pragma once

#include <glib.h>

/* Socket names: the socket units' names, systemd's default FileDescriptorName. */
#define DAEMON_SOCKET_RW "ferryd.socket"
#define DAEMON_SOCKET_RO "ferryd-ro.socket"
#define DAEMON_SOCKET_ADMIN "ferryd-admin.socket"
#define DAEMON_SOCKET_TCP "ferryd-tcp.socket"
#define DAEMON_SOCKET_TLS "ferryd-tls.socket"

typedef struct DaemonActivation DaemonActivation;

/* Reads and unsets the LISTEN_* variables (so the VMMs ferryd starts never
 * see them). Returns NULL without an error when they are absent or meant for
 * another process (LISTEN_PID). Every passed fd must be a listening stream
 * socket with one of the names above; anything else is an error. */
DaemonActivation *daemon_activation_from_env(GError **error);
void daemon_activation_free(DaemonActivation *act);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(DaemonActivation, daemon_activation_free)

gboolean daemon_activation_has(const DaemonActivation *act, const char *name);
/* Hands over the next fd of that name (the caller owns it), -1 when none is left.
 * A socket unit may pass several fds under one name (IPv4 and IPv6). */
int daemon_activation_take(DaemonActivation *act, const char *name);

/* "unix /run/libvirt/libvirt-sock", "tcp 0.0.0.0:16509": for logs. */
char *daemon_socket_describe(int fd, const char *kind);

/* Sends a state ("READY=1", "STOPPING=1") to the service manager when it
 * asked for one (NOTIFY_SOCKET); a no-op otherwise. The variable is read
 * and unset by daemon_notify_init(). */
void daemon_notify_init(void);
void daemon_notify(const char *state);

/* --timeout and virt-admin daemon-timeout: quits loop once busy() has
 * returned FALSE for the timeout in seconds in a row (checked every second,
 * in the loop's thread); 0: never. Lifetime: the caller frees it once the
 * loop has stopped. */
typedef gboolean (*DaemonBusyFunc)(gpointer data);
typedef struct DaemonIdleExit DaemonIdleExit;
DaemonIdleExit *daemon_idle_exit_new(guint timeout_s, DaemonBusyFunc busy, gpointer data,
                                     GMainLoop *loop);
/* From any thread: a new timeout, counted from now, as libvirtd's
 * daemon-timeout does; 0: never. */
void daemon_idle_exit_set_timeout(DaemonIdleExit *idle, guint timeout_s);
void daemon_idle_exit_free(DaemonIdleExit *idle);
