/* Client calls, reply matching by serial, events and streams. */
#include "rpc/rpc-client.h"

#include <string.h>
#include <unistd.h>

#include "rpc/rpc-sasl.h"
#include "rpc/rpc-socket.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "rpc.client"

typedef struct {
    guint32 prog; /* what was called: a reply must name the same */
    guint32 vers;
    gint32 proc;
    RpcMessage *reply; /* set by the reader */
    gboolean done;
} RpcPendingCall;

/* A reply carrying the serial of a call but naming another procedure comes
 * from a broken or hostile peer: its body would be decoded with the wrong
 * XDR filter. Nothing it says afterwards can be trusted either. */
static gboolean reply_matches_call(const RpcPendingCall *pc, const RpcHeader *h)
{
    return h->prog == pc->prog && h->vers == pc->vers && h->proc == pc->proc;
}

struct RpcClient {
    RpcConnection *conn;
    RpcClientCallbacks callbacks;
    GMutex lock;
    GCond cond;
    guint32 next_serial;
    GHashTable *pending; /* serial -> RpcPendingCall* (owned by the waiting caller) */
    gboolean closed;
    GError *close_reason;
};

static void client_on_message(RpcConnection *conn, RpcMessage *msg, gpointer data)
{
    RpcClient *client = data;
    switch (msg->header.type) {
    case RPC_REPLY:
    case RPC_REPLY_WITH_FDS: {
        g_mutex_lock(&client->lock);
        RpcPendingCall *pc = g_hash_table_lookup(client->pending,
                                                 GUINT_TO_POINTER(msg->header.serial));
        if (pc && !reply_matches_call(pc, &msg->header)) {
            g_autoptr(GError) why = g_error_new(
                FERRY_ERROR, FERRY_ERR_RPC,
                "protocol violation: the reply to serial %u names program 0x%x version %u "
                "procedure %d, the call was program 0x%x version %u procedure %d",
                msg->header.serial, msg->header.prog, msg->header.vers, msg->header.proc,
                pc->prog, pc->vers, pc->proc);
            g_mutex_unlock(&client->lock);
            FERRY_WARN("%s: %s; closing the connection", rpc_connection_get_peer(conn),
                          why->message);
            rpc_connection_close(conn, why); /* the waiting call fails with this reason */
            break;
        }
        if (pc) {
            g_hash_table_remove(client->pending, GUINT_TO_POINTER(msg->header.serial));
            pc->reply = g_steal_pointer(&msg);
            pc->done = TRUE;
            g_cond_broadcast(&client->cond);
        }
        g_mutex_unlock(&client->lock);
        if (msg)
            FERRY_INFO("%s: dropping reply for serial %u: no call is waiting for it (timed out?)",
                       rpc_connection_get_peer(conn), msg->header.serial);
        break;
    }
    case RPC_MESSAGE:
        if (client->callbacks.on_event)
            client->callbacks.on_event(client, msg, client->callbacks.data);
        break;
    case RPC_STREAM:
    case RPC_STREAM_HOLE:
        if (client->callbacks.on_stream) {
            client->callbacks.on_stream(client, g_steal_pointer(&msg), client->callbacks.data);
            break;
        }
        FERRY_DEBUG("%s: dropping stream packet (serial %u)", rpc_connection_get_peer(conn),
                    msg->header.serial);
        break;
    default:
        FERRY_INFO("%s: dropping unexpected %s message from server",
                   rpc_connection_get_peer(conn), rpc_message_type_name(msg->header.type));
        break;
    }
    rpc_message_free(msg);
}

static void client_on_close(RpcConnection *conn, const GError *why, gpointer data)
{
    RpcClient *client = data;
    g_mutex_lock(&client->lock);
    client->closed = TRUE;
    if (why && !client->close_reason)
        client->close_reason = g_error_copy(why);
    g_cond_broadcast(&client->cond);
    g_mutex_unlock(&client->lock);
    if (client->callbacks.on_close)
        client->callbacks.on_close(client, why, client->callbacks.data);
}

static const RpcConnectionHandler client_handler = {
    .on_message = client_on_message,
    .on_close = client_on_close,
};

RpcClient *rpc_client_new_for_transport(RpcTransport *transport,
                                        const RpcClientCallbacks *callbacks)
{
    RpcClient *client = g_new0(RpcClient, 1);
    if (callbacks)
        client->callbacks = *callbacks;
    g_mutex_init(&client->lock);
    g_cond_init(&client->cond);
    client->pending = g_hash_table_new(NULL, NULL);
    gboolean sasl = rpc_sasl_transport_is_sasl(transport);
    client->conn = rpc_connection_new(transport, &client_handler, client);
    if (sasl)
        rpc_connection_set_client_lockstep(client->conn);
    rpc_connection_start(client->conn);
    return client;
}

void rpc_client_set_authenticated(RpcClient *client)
{
    rpc_connection_set_authenticated(client->conn);
}

RpcClient *rpc_client_new_for_fd(int fd, const RpcClientCallbacks *callbacks)
{
    return rpc_client_new_for_transport(rpc_transport_new_socket(fd), callbacks);
}

RpcClient *rpc_client_connect_tcp(const char *host, guint16 port, int timeout_ms,
                                  const RpcClientCallbacks *callbacks, GError **error)
{
    int fd = rpc_socket_connect_tcp(host, port, timeout_ms, error);
    return fd < 0 ? NULL : rpc_client_new_for_fd(fd, callbacks);
}

RpcClient *rpc_client_connect_unix(const char *path, const RpcClientCallbacks *callbacks,
                                   GError **error)
{
    int fd = rpc_socket_connect_unix(path, error);
    return fd < 0 ? NULL : rpc_client_new_for_fd(fd, callbacks);
}

void rpc_client_free(RpcClient *client)
{
    if (!client)
        return;
    rpc_connection_close(client->conn, NULL);
    rpc_connection_wait_closed(client->conn);
    rpc_connection_unref(client->conn);
    g_hash_table_destroy(client->pending);
    g_clear_error(&client->close_reason);
    g_mutex_clear(&client->lock);
    g_cond_clear(&client->cond);
    g_free(client);
}

static void set_closed_error(RpcClient *client, GError **error)
{
    if (client->close_reason)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "connection to %s is closed: %s",
                    rpc_connection_get_peer(client->conn), client->close_reason->message);
    else
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "connection to %s is closed",
                    rpc_connection_get_peer(client->conn));
}

gboolean rpc_client_call_with_serial(RpcClient *client, guint32 prog, guint32 vers, gint32 proc,
                                     xdrproc_t args_filter, void *args, xdrproc_t ret_filter,
                                     void *ret, int timeout_ms,
                                     void (*serial_cb)(guint32 serial, gpointer data),
                                     gpointer serial_data, GError **error)
{
    RpcMessage *msg = rpc_message_new(512);
    RpcPendingCall pc = {.prog = prog, .vers = vers, .proc = proc};

    g_mutex_lock(&client->lock);
    if (client->closed) {
        set_closed_error(client, error);
        g_mutex_unlock(&client->lock);
        rpc_message_free(msg);
        return FALSE;
    }
    guint32 serial = client->next_serial++;
    g_hash_table_insert(client->pending, GUINT_TO_POINTER(serial), &pc);
    g_mutex_unlock(&client->lock);

    msg->header = (RpcHeader){.prog = prog, .vers = vers, .proc = proc, .type = RPC_CALL,
                              .serial = serial, .status = RPC_OK};
    if (!rpc_message_encode(msg, args_filter ? args_filter : RPC_XDR_VOID, args, error)) {
        rpc_message_free(msg);
        g_mutex_lock(&client->lock);
        g_hash_table_remove(client->pending, GUINT_TO_POINTER(serial));
        g_mutex_unlock(&client->lock);
        return FALSE;
    }
    if (serial_cb)
        serial_cb(serial, serial_data);
    if (rpc_connection_in_client_lockstep(client->conn))
        rpc_connection_request_begin(client->conn); /* lets the reader read its reply */
    rpc_connection_send(client->conn, msg);

    gint64 deadline = timeout_ms > 0 ? g_get_monotonic_time() + timeout_ms * G_TIME_SPAN_MILLISECOND
                                     : 0;
    g_mutex_lock(&client->lock);
    while (!pc.done && !client->closed) {
        if (deadline) {
            if (!g_cond_wait_until(&client->cond, &client->lock, deadline))
                break;
        } else {
            g_cond_wait(&client->cond, &client->lock);
        }
    }
    if (!pc.done) {
        g_hash_table_remove(client->pending, GUINT_TO_POINTER(serial));
        if (client->closed)
            set_closed_error(client, error);
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                        "no reply from %s to procedure %d within %d ms",
                        rpc_connection_get_peer(client->conn), proc, timeout_ms);
        g_mutex_unlock(&client->lock);
        return FALSE;
    }
    g_mutex_unlock(&client->lock);

    g_autoptr(RpcMessage) reply = pc.reply;
    if (reply->header.status == RPC_ERROR) {
        rpc_error err;
        memset(&err, 0, sizeof(err));
        if (!rpc_message_decode(reply, (xdrproc_t)xdr_rpc_error, &err, error))
            return FALSE;
        g_propagate_error(error, rpc_error_to_gerror(&err));
        xdr_free((xdrproc_t)xdr_rpc_error, (char *)&err);
        return FALSE;
    }
    if (reply->header.status != RPC_OK) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                    "malformed reply to procedure %d: status %u", proc, reply->header.status);
        return FALSE;
    }
    return rpc_message_decode(reply, ret_filter ? ret_filter : RPC_XDR_VOID, ret, error);
}

gboolean rpc_client_call(RpcClient *client, guint32 prog, guint32 vers, gint32 proc,
                         xdrproc_t args_filter, void *args, xdrproc_t ret_filter, void *ret,
                         int timeout_ms, GError **error)
{
    return rpc_client_call_with_serial(client, prog, vers, proc, args_filter, args, ret_filter,
                                       ret, timeout_ms, NULL, NULL, error);
}

void rpc_client_send(RpcClient *client, RpcMessage *msg)
{
    rpc_connection_send(client->conn, msg);
}

void rpc_client_start_keepalive(RpcClient *client, guint interval, guint count)
{
    rpc_connection_start_keepalive(client->conn, interval, count);
}

gboolean rpc_client_is_open(RpcClient *client)
{
    g_mutex_lock(&client->lock);
    gboolean open = !client->closed;
    g_mutex_unlock(&client->lock);
    return open;
}

RpcConnection *rpc_client_get_connection(RpcClient *client)
{
    return client->conn;
}

const char *rpc_client_get_peer(RpcClient *client)
{
    return rpc_connection_get_peer(client->conn);
}
