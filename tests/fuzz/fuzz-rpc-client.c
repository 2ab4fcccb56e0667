/* ferry's own RPC client reading what a hostile server (or a hostile
 * migration peer: ferryd calls the destination daemon with this client)
 * sends back: an RpcClient on a socketpair has two calls pending, serials 0
 * and 1, and the fuzz input is the raw byte stream the "server" answers with
 * (length words included): replies decoded with the procedure's real XDR
 * filter, replies naming another procedure, errors, events, stream packets,
 * keepalive PINGs (the client answers them), garbage. The first byte picks
 * which pair of procedures is pending (the ones ferryd calls on its peers).
 * After the input the server shuts its side down: both calls must return
 * and the connection close within 10 s. */
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz-common.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-client.h"
#include "util/error.h"

#define WAIT_US (10 * G_USEC_PER_SEC)
#define CALL_BYTES 28 /* length word + header: the calls carry no arguments */

typedef struct {
    gint32 proc;
    xdrproc_t ret_filter;
    gsize ret_size;
} PendingProc;

static const PendingProc scenarios[][2] = {
    {{REMOTE_PROC_AUTH_LIST, (xdrproc_t)xdr_remote_auth_list_ret, sizeof(remote_auth_list_ret)},
     {REMOTE_PROC_CONNECT_OPEN, NULL, 0}},
    {{REMOTE_PROC_CONNECT_GET_HOSTNAME, (xdrproc_t)xdr_remote_connect_get_hostname_ret,
      sizeof(remote_connect_get_hostname_ret)},
     {REMOTE_PROC_CONNECT_SUPPORTS_FEATURE, (xdrproc_t)xdr_remote_connect_supports_feature_ret,
      sizeof(remote_connect_supports_feature_ret)}},
    {{REMOTE_PROC_DOMAIN_MIGRATE_PREPARE3_PARAMS,
      (xdrproc_t)xdr_remote_domain_migrate_prepare3_params_ret,
      sizeof(remote_domain_migrate_prepare3_params_ret)},
     {REMOTE_PROC_DOMAIN_MIGRATE_FINISH3_PARAMS,
      (xdrproc_t)xdr_remote_domain_migrate_finish3_params_ret,
      sizeof(remote_domain_migrate_finish3_params_ret)}},
    {{REMOTE_PROC_DOMAIN_GET_JOB_STATS, (xdrproc_t)xdr_remote_domain_get_job_stats_ret,
      sizeof(remote_domain_get_job_stats_ret)},
     {REMOTE_PROC_CONNECT_OPEN, NULL, 0}},
};

typedef struct {
    RpcClient *client;
    const PendingProc *proc;
} CallJob;

static gpointer call_thread(gpointer data)
{
    CallJob *job = data;
    void *ret = job->proc->ret_size ? g_malloc0(job->proc->ret_size) : NULL;
    g_autoptr(GError) e = NULL;
    if (rpc_client_call(job->client, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, job->proc->proc,
                        NULL, NULL, job->proc->ret_filter, ret, (int)(WAIT_US / 1000), &e)) {
        if (ret)
            xdr_free(job->proc->ret_filter, ret);
    } else if (g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT)) {
        fuzz_hang("a call was still waiting 10 s after its server's end of stream");
    }
    g_free(ret);
    return NULL;
}

static void on_stream(RpcClient *client, RpcMessage *msg, gpointer data)
{
    rpc_message_free(msg);
}

static void on_event(RpcClient *client, RpcMessage *msg, gpointer data)
{
}

static gpointer drain_thread(gpointer data)
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
    const PendingProc *pair = scenarios[data[0] % G_N_ELEMENTS(scenarios)];
    data++;
    size--;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    RpcClientCallbacks callbacks = {.on_stream = on_stream, .on_event = on_event};
    RpcClient *client = rpc_client_new_for_fd(sv[0], &callbacks);

    /* The calls go out one after the other, so the first always has serial 0. */
    CallJob jobs[2] = {{client, &pair[0]}, {client, &pair[1]}};
    GThread *callers[2];
    for (int i = 0; i < 2; i++) {
        callers[i] = g_thread_new("fuzz-call", call_thread, &jobs[i]);
        guint8 call[CALL_BYTES];
        if (fuzz_read_exact(sv[1], call, sizeof(call), g_get_monotonic_time() + WAIT_US) != 1)
            fuzz_hang("call %d was not sent within 10 s", i);
    }

    GThread *reader = g_thread_new("fuzz-server", drain_thread, GINT_TO_POINTER(sv[1]));
    fuzz_write_all(sv[1], data, size);
    shutdown(sv[1], SHUT_WR);
    for (int i = 0; i < 2; i++)
        g_thread_join(callers[i]);
    rpc_client_free(client); /* closes the connection: the drain thread sees the end */
    g_thread_join(reader);
    close(sv[1]);
    fuzz_wait_threads_gone();
    return 0;
}
