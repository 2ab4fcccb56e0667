/* bench-transport: one-way throughput of the RPC transports over loopback
 * TCP, as the message layer drives them (one writev of whole messages per
 * batch, 256 KiB payloads, one reader thread reading into message-sized
 * buffers).
 *   bench-transport plain|tls MIB [PKIDIR]
 * PKIDIR holds cacert.pem, servercert.pem, serverkey.pem (certtool-made,
 * for 127.0.0.1); prints MiB/s, then a line "cpu SEND RECV": the CPU
 * seconds per GiB of the writing and of the reading thread (what one end of
 * the transport costs, the cipher included over TLS). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/rpc-socket.h"
#include "rpc/rpc-tls.h"
#include "util/error.h"

#define PAYLOAD (256 * 1024)
#define BATCH 4

typedef struct {
    RpcTransport *t;
    gsize bytes;
    double cpu_s; /* the reader thread's */
} Job;

/* CPU seconds (user + system) the calling thread has used. */
static double thread_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static gpointer reader(gpointer data)
{
    Job *j = data;
    double cpu0 = thread_cpu_s();
    guint8 *buf = g_malloc(PAYLOAD + 28);
    gsize got = 0;
    while (got < j->bytes) {
        g_autoptr(GError) e = NULL;
        gssize n = rpc_transport_read(j->t, buf, MIN(PAYLOAD + 28, j->bytes - got), &e);
        if (n <= 0) {
            fprintf(stderr, "read failed after %zu bytes: %s\n", got, e ? e->message : "EOF");
            exit(1);
        }
        got += n;
    }
    j->cpu_s = thread_cpu_s() - cpu0;
    g_free(buf);
    return NULL;
}

typedef struct {
    RpcTlsContext *ctx;
    int fd;
    RpcTransport *t;
} Accept;

static gpointer server_side(gpointer data)
{
    Accept *a = data;
    g_autoptr(GError) e = NULL;
    a->t = a->ctx ? rpc_tls_server_handshake(a->ctx, a->fd, &e) : rpc_transport_new_socket(a->fd);
    if (!a->t) {
        fprintf(stderr, "server handshake: %s\n", e->message);
        exit(1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s plain|tls MIB [PKIDIR]\n", argv[0]);
        return 2;
    }
    gboolean tls = strcmp(argv[1], "tls") == 0;
    gsize total = (gsize)atoi(argv[2]) * 1024 * 1024;
    g_autoptr(GError) e = NULL;
    g_autoptr(RpcTlsContext) sctx = NULL, cctx = NULL;
    if (tls) {
        const char *dir = argc > 3 ? argv[3] : ".";
        g_autofree char *ca = g_build_filename(dir, "cacert.pem", NULL);
        g_autofree char *cert = g_build_filename(dir, "servercert.pem", NULL);
        g_autofree char *key = g_build_filename(dir, "serverkey.pem", NULL);
        RpcTlsConfig s = {.ca_file = ca, .cert_file = cert, .key_file = key};
        RpcTlsConfig c = {.ca_file = ca, .verify_peer = TRUE};
        if (!(sctx = rpc_tls_context_new_server(&s, &e)) ||
            !(cctx = rpc_tls_context_new_client(&c, &e))) {
            fprintf(stderr, "%s\n", e->message);
            return 1;
        }
    }
    guint16 port = 0;
    int lfd = rpc_socket_listen_tcp("127.0.0.1", 0, &port, &e);
    int cfd = lfd < 0 ? -1 : rpc_socket_connect_tcp("127.0.0.1", port, 5000, &e);
    if (cfd < 0) {
        fprintf(stderr, "%s\n", e->message);
        return 1;
    }
    Accept a = {.ctx = sctx, .fd = accept(lfd, NULL, NULL)};
    GThread *th = g_thread_new("server", server_side, &a);
    RpcTransport *ct =
        tls ? rpc_tls_client_handshake(cctx, cfd, "127.0.0.1", &e) : rpc_transport_new_socket(cfd);
    g_thread_join(th);
    if (!ct) {
        fprintf(stderr, "client handshake: %s\n", e->message);
        return 1;
    }

    /* Messages: a 28-byte header and the payload in one buffer, as RpcMessage. */
    guint8 *msgs[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        msgs[i] = g_malloc(PAYLOAD + 28);
        memset(msgs[i], i, PAYLOAD + 28);
        iov[i].iov_base = msgs[i];
        iov[i].iov_len = PAYLOAD + 28;
    }
    gsize per_batch = BATCH * (PAYLOAD + 28);
    gsize batches = total / per_batch;
    Job j = {.t = a.t, .bytes = batches * per_batch};
    gint64 t0 = g_get_monotonic_time();
    double cpu0 = thread_cpu_s();
    GThread *rt = g_thread_new("reader", reader, &j);
    for (gsize b = 0; b < batches; b++) {
        if (!rpc_transport_writev(ct, iov, BATCH, &e)) {
            fprintf(stderr, "%s\n", e->message);
            return 1;
        }
    }
    double send_cpu_s = thread_cpu_s() - cpu0;
    g_thread_join(rt);
    double secs = (g_get_monotonic_time() - t0) / 1e6;
    double gib = j.bytes / 1073741824.0;
    printf("%.0f\n", j.bytes / 1048576.0 / secs);
    printf("cpu %.3f %.3f\n", send_cpu_s / gib, j.cpu_s / gib);
    for (int i = 0; i < BATCH; i++)
        g_free(msgs[i]);
    rpc_transport_free(ct);
    rpc_transport_free(a.t);
    close(lfd);
    return 0;
}
