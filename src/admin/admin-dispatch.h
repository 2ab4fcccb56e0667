/* Server side of libvirt's ADMIN program, what virt-admin speaks on
 * libvirt-admin-sock: the daemon's servers (named as libvirtd names them),
 * their worker pools, client limits and clients, and the daemon's logging,
 * read and changed at runtime. Errors become libvirt errors here, once. */
#pragma once

#include "rpc/rpc-server.h"

/* The servers virt-admin may look at and change, by name. Lifetime: owned by
 * the daemon; it names servers that outlive every admin call (the daemon
 * stops the admin server before the others). */
typedef struct AdminDaemon AdminDaemon;

AdminDaemon *admin_daemon_new(void);
void admin_daemon_free(AdminDaemon *daemon);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(AdminDaemon, admin_daemon_free)
/* Adds a server (not a reference), listed by server-list in this order. */
void admin_daemon_add_server(AdminDaemon *daemon, const char *name, RpcServer *server);
/* virt-admin daemon-timeout: the daemon exits after `seconds` with no client
 * and no running domain; 0: never. Called in an admin worker. Unset: the
 * procedure is refused. */
typedef gboolean (*AdminSetTimeoutFunc)(guint seconds, gpointer data, GError **error);
void admin_daemon_set_timeout_func(AdminDaemon *daemon, AdminSetTimeoutFunc func,
                                   gpointer data);

/* Registers the ADMIN program on the server of the admin socket. Only a
 * client running as the daemon's own user is served, as libvirtd does; every
 * call of any other is refused. */
void admin_dispatch_register(RpcServer *admin_server, AdminDaemon *daemon);

/* For tests: whether ferryd implements this admin procedure. */
gboolean admin_dispatch_has_procedure(int proc);
