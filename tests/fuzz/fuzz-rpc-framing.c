/* The RPC framing and header: a raw byte stream, exactly as it comes off a
 * socket (length words included), read by an RpcConnection on a socketpair
 * as the server reads its clients: length checks, header decoding, the
 * receive pool for large messages, keepalive PING answered by the reader.
 * Each message that reaches the handler is answered the way the server
 * answers a call it cannot run (an encoded error reply). After the input the
 * peer shuts its side down; the connection must then close within 10 s. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz-common.h"
#include "rpc/rpc-connection.h"
#include "util/error.h"

#define WAIT_US (10 * G_USEC_PER_SEC)

static RpcMessagePool *pool;

static void on_message(RpcConnection *conn, RpcMessage *msg, gpointer data)
{
    if (msg->header.type == RPC_CALL) {
        g_autoptr(GError) e = g_error_new(FERRY_ERROR, FERRY_ERR_RPC, "unknown procedure: %d",
                                          msg->header.proc);
        RpcMessage *reply = rpc_message_new_error(&msg->header, RPC_REPLY, e);
        reply->completes_request = TRUE;
        rpc_connection_request_begin(conn);
        rpc_connection_send(conn, reply);
    }
    rpc_message_free(msg);
}

static void on_close(RpcConnection *conn, const GError *why, gpointer data)
{
}

static const RpcConnectionHandler handler = {.on_message = on_message, .on_close = on_close};

static gpointer drain_thread(gpointer data)
{
    fuzz_drain(GPOINTER_TO_INT(data), G_MAXINT64);
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    pool = rpc_message_pool_new(256 * 1024, 4);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    RpcConnection *conn = rpc_connection_new(rpc_transport_new_socket(sv[0]), &handler, NULL);
    rpc_connection_set_rx_pool(conn, pool);
    rpc_connection_set_request_limit(conn, 5);
    rpc_connection_start(conn);
    GThread *reader = g_thread_new("fuzz-peer", drain_thread, GINT_TO_POINTER(sv[1]));
    fuzz_write_all(sv[1], data, size);
    shutdown(sv[1], SHUT_WR);

    /* End of stream closes the connection; a reader stuck on a message that
     * never completes would be a hang. */
    gint64 deadline = g_get_monotonic_time() + WAIT_US;
    while (!rpc_connection_is_closed(conn)) {
        if (g_get_monotonic_time() > deadline)
            fuzz_hang("the connection is still open 10 s after its peer's end of stream");
        g_usleep(100);
    }
    rpc_connection_wait_closed(conn);
    g_thread_join(reader);
    rpc_connection_unref(conn);
    close(sv[1]);
    fuzz_wait_threads_gone();
    return 0;
}
