/* The tunnel's stream and credit packets, as a hostile peer ferryd sends
 * them: a TunnelStream (either role, credit or plain mode) on a real RPC
 * connection over a socketpair, routed by a TunnelRouter as the daemon does,
 * with a local "VMM" socket that sends some bytes and reads everything.
 *
 * Input: one selector byte, then RPC messages in wire form (re-framed by
 * fuzz_records_next) that the peer sends. Selector bits: 0 role (server =
 * destination side), 1 credit mode, 2-3 bytes the VMM sends (0, 1, 4 KiB,
 * 300 KiB), 4 packets arrive before the stream is attached (as when a peer
 * sends data before the opening call's reply). After the input the peer
 * closes its side; the stream must then be over within 10 s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz-common.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-connection.h"
#include "tunnel/tunnel-router.h"
#include "tunnel/tunnel-stream.h"
#include "util/error.h"

#define WAIT_US (10 * G_USEC_PER_SEC)

static const RpcHeader opening = {.prog = REMOTE_PROGRAM, .vers = REMOTE_PROTOCOL_VERSION,
                                  .proc = REMOTE_PROC_DOMAIN_MIGRATE_PREPARE_TUNNEL3_PARAMS,
                                  .type = RPC_CALL, .serial = 1, .status = RPC_OK};

static void on_message(RpcConnection *conn, RpcMessage *msg, gpointer data)
{
    if (msg->header.type == RPC_STREAM || msg->header.prog == FERRY_TUNNEL_PROGRAM)
        tunnel_router_deliver(data, msg);
    else
        rpc_message_free(msg);
}

static void on_close(RpcConnection *conn, const GError *why, gpointer data)
{
    g_autoptr(GError) e = why ? g_error_copy(why)
                              : g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "peer closed");
    tunnel_router_connection_closed(data, e);
}

static const RpcConnectionHandler handler = {.on_message = on_message, .on_close = on_close};

typedef struct {
    int fd;
    gsize send;
} Vmm;

/* The local VMM: sends its bytes, then reads until the stream closes its socket. */
static gpointer vmm_thread(gpointer data)
{
    Vmm *v = data;
    static guint8 chunk[4096];
    for (gsize left = v->send; left > 0;) {
        gsize n = MIN(left, sizeof(chunk));
        if (!fuzz_write_all(v->fd, chunk, n))
            break;
        left -= n;
    }
    shutdown(v->fd, SHUT_WR);
    fuzz_drain(v->fd, G_MAXINT64);
    return NULL;
}

/* The peer reads (and drops) whatever the stream sends it. */
static gpointer peer_reader(gpointer data)
{
    fuzz_drain(GPOINTER_TO_INT(data), G_MAXINT64);
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    guint8 sel = data[0];
    static const gsize vmm_bytes[] = {0, 1, 4096, 300 * 1024};
    gboolean early = (sel & 16) != 0;
    TunnelStreamConfig cfg = {
        .role = (sel & 1) ? TUNNEL_ROLE_SERVER : TUNNEL_ROLE_CLIENT,
        .credit = (sel & 2) != 0,
        .window = 256 * 1024,
        .peer_window = 256 * 1024,
        .packet_size = 64 * 1024,
        .send_queue_limit = 256 * 1024,
        .peer_name = "fuzz peer",
        .vmm_name = "fuzz VMM",
    };

    int rpc[2], vmm[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, rpc) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, vmm) < 0)
        abort();
    TunnelRouter *router = tunnel_router_new();
    RpcConnection *conn = rpc_connection_new(rpc_transport_new_socket(rpc[0]), &handler, router);
    TunnelBinding *binding = tunnel_router_reserve(router, conn, &opening);
    rpc_connection_start(conn);
    Vmm v = {.fd = vmm[0], .send = vmm_bytes[(sel >> 2) & 3]};
    GThread *vt = g_thread_new("fuzz-vmm", vmm_thread, &v);
    GThread *pt = g_thread_new("fuzz-peer", peer_reader, GINT_TO_POINTER(rpc[1]));

    TunnelStream *ts = NULL;
    if (!early) {
        ts = tunnel_stream_new(conn, &opening, vmm[1], &cfg);
        tunnel_binding_attach(binding, ts);
        tunnel_stream_start(ts);
    }
    FuzzRecords rec;
    fuzz_records_init(&rec, data + 1, size - 1);
    const uint8_t *body;
    size_t len;
    while (fuzz_records_next(&rec, &body, &len))
        if (!fuzz_write_message(rpc[1], body, len))
            break;
    if (early) {
        ts = tunnel_stream_new(conn, &opening, vmm[1], &cfg);
        tunnel_binding_attach(binding, ts);
        tunnel_stream_start(ts);
    }
    shutdown(rpc[1], SHUT_WR);

    g_autoptr(GError) error = NULL;
    if (!tunnel_stream_wait(ts, g_get_monotonic_time() + WAIT_US, &error) &&
        g_error_matches(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT))
        fuzz_hang("the stream is not over 10 s after the peer closed: %s", error->message);

    rpc_connection_close(conn, NULL);
    rpc_connection_wait_closed(conn);
    g_thread_join(pt);
    tunnel_binding_free(binding);
    tunnel_stream_unref(ts); /* the last reference: closes the VMM socket */
    g_thread_join(vt);
    tunnel_router_free(router);
    rpc_connection_unref(conn);
    close(rpc[1]);
    close(vmm[0]);
    fuzz_wait_threads_gone();
    return 0;
}
