/* Calls per second of a cheap procedure (CONNECT_GET_LIB_VERSION) against a
 * running ferryd, with N client threads each on its own connection.
 * Usage: bench-rpc-calls (unix PATH | tcp HOST PORT) THREADS SECONDS */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "remote/remote_protocol.h"
#include "rpc/rpc-client.h"

typedef struct {
    const char *mode, *path, *host;
    guint16 port;
    double seconds;
    guint64 calls;
    gboolean failed;
} Worker;

static gpointer run_worker(gpointer data)
{
    Worker *w = data;
    g_autoptr(GError) e = NULL;
    RpcClient *c = strcmp(w->mode, "unix") == 0
                       ? rpc_client_connect_unix(w->path, NULL, &e)
                       : rpc_client_connect_tcp(w->host, w->port, 5000, NULL, &e);
    if (!c) {
        fprintf(stderr, "bench: %s\n", e->message);
        w->failed = TRUE;
        return NULL;
    }
    char *name = "sim:///system";
    remote_connect_open_args args = {.name = &name};
    if (!rpc_client_call(c, REMOTE_PROGRAM, 1, REMOTE_PROC_CONNECT_OPEN,
                         (xdrproc_t)xdr_remote_connect_open_args, &args, NULL, NULL, 5000, &e)) {
        fprintf(stderr, "bench: %s\n", e->message);
        w->failed = TRUE;
        rpc_client_free(c);
        return NULL;
    }
    gint64 end = g_get_monotonic_time() + (gint64)(w->seconds * G_USEC_PER_SEC);
    while (g_get_monotonic_time() < end) {
        remote_connect_get_lib_version_ret ret;
        if (!rpc_client_call(c, REMOTE_PROGRAM, 1, REMOTE_PROC_CONNECT_GET_LIB_VERSION, NULL,
                             NULL, (xdrproc_t)xdr_remote_connect_get_lib_version_ret, &ret, 10000,
                             &e)) {
            fprintf(stderr, "bench: %s\n", e->message);
            w->failed = TRUE;
            break;
        }
        w->calls++;
    }
    rpc_client_free(c);
    return NULL;
}

int main(int argc, char **argv)
{
    gboolean unix_mode = argc == 5 && strcmp(argv[1], "unix") == 0;
    if (!unix_mode && !(argc == 6 && strcmp(argv[1], "tcp") == 0)) {
        fprintf(stderr, "usage: %s (unix PATH | tcp HOST PORT) THREADS SECONDS\n", argv[0]);
        return 2;
    }
    int nthreads = atoi(argv[unix_mode ? 3 : 4]);
    double seconds = atof(argv[unix_mode ? 4 : 5]);
    Worker *w = g_new0(Worker, nthreads);
    GThread **t = g_new(GThread *, nthreads);
    for (int i = 0; i < nthreads; i++) {
        w[i] = (Worker){.mode = argv[1], .path = argv[2], .host = argv[2],
                        .port = unix_mode ? 0 : (guint16)atoi(argv[3]), .seconds = seconds};
        t[i] = g_thread_new("bench", run_worker, &w[i]);
    }
    guint64 total = 0;
    gboolean failed = FALSE;
    for (int i = 0; i < nthreads; i++) {
        g_thread_join(t[i]);
        total += w[i].calls;
        failed |= w[i].failed;
    }
    printf("%.0f\n", total / seconds);
    g_free(w);
    g_free(t);
    return failed ? 1 : 0;
}
