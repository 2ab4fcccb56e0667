/* Server side of the REMOTE program: decodes each call, checks that the
 * client may make it (authenticated, connection open, not read-only), runs
 * the driver function and encodes the reply; errors become libvirt errors
 * here, once. */
#pragma once

#include "rpc/rpc-server.h"

/* Registers the REMOTE program on the server and attaches per-client state
 * to every new client. */
void remote_dispatch_register(RpcServer *server);

/* Procedures implemented, for tests: TRUE if proc has a handler. */
gboolean remote_dispatch_has_procedure(int proc);

/* For tests: the numbers of all implemented procedures, and the XDR filters
 * and struct sizes of one. */
GArray *remote_dispatch_list_procedures(void);
gboolean remote_dispatch_get_filters(int proc, xdrproc_t *args, gsize *args_size,
                                     xdrproc_t *ret, gsize *ret_size);
