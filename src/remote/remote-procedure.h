/* What a REMOTE procedure handler sees, shared by the dispatcher
 * (remote-dispatch.c) and the modules that hold tables of procedures of
 * their own (remote-storage.c). */
#pragma once

#include <rpc/rpc.h>

#include "driver/driver.h"
#include "remote/remote-auth.h"
#include "rpc/rpc-server.h"

typedef struct RemoteSession RemoteSession;

typedef struct {
    RpcServerClient *client;
    RemoteSession *session;
    RpcMessage *call;
    Driver *drv;
    RemoteAuthOutcome auth; /* set by the AUTH_SASL_* handlers */
} RemoteContext;

typedef gboolean (*RemoteHandler)(RemoteContext *ctx, void *args, void *ret, GError **error);

enum {
    PROC_PREAUTH = 1 << 0, /* allowed before authentication */
    PROC_NO_OPEN = 1 << 1, /* allowed before CONNECT_OPEN */
    PROC_WRITE = 1 << 2,   /* refused on a read-only connection */
};

typedef struct {
    int proc;
    const char *name;
    xdrproc_t args_filter;
    gsize args_size;
    xdrproc_t ret_filter;
    gsize ret_size;
    RemoteHandler handler;
    guint flags;
} RemoteProcedure;

/* A procedure table entry's XDR filter and struct size, or none (VOID). */
#define X(t) ((xdrproc_t)xdr_##t), sizeof(t)
#define VOID RPC_XDR_VOID, 0

/* A client's maximum list size (`maxnames`): 0..REMOTE_DOMAIN_LIST_MAX. */
gboolean remote_check_list_max(int max, GError **error);

/* The storage procedures (remote-storage.c). */
const RemoteProcedure *remote_storage_procedures(guint *n);
