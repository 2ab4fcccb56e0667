/* The keepalive clock: one thread ticks every connection that has keepalive
 * on, so a silent peer is pinged and finally dropped even while that
 * connection's own threads are blocked in I/O. */
#pragma once

#include "rpc/rpc-connection.h"

/* Takes a reference until the connection closes. */
void rpc_keepalive_register(RpcConnection *conn);
