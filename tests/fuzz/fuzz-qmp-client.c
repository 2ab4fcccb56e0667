/* The daemon's QMP reader (src/driver/qmp.c) against a hostile VMM: a fake
 * VMM on a UNIX socket sends the input as its whole side of the
 * conversation (greeting, replies, events), then shuts its side down and
 * reads until the client leaves. The client connects (greeting, capability
 * negotiation) and runs the commands the sim driver runs, in the order the
 * seed conversations were recorded with real ferry-vmm, so replies are
 * matched by id; every call must return (a reply, or the connection's end). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "driver/qmp.h"
#include "fuzz-common.h"
#include "rpc/rpc-socket.h"
#include "util/error.h"

#define WAIT_MS 10000

static char *socket_path;
static int listen_fd = -1;

typedef struct {
    const uint8_t *data;
    size_t size;
} Vmm;

static gpointer vmm_thread(gpointer p)
{
    Vmm *v = p;
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return NULL;
    fuzz_write_all(fd, v->data, v->size);
    shutdown(fd, SHUT_WR);
    fuzz_drain(fd, G_MAXINT64);
    close(fd);
    return NULL;
}

static void on_event(QmpClient *client, const char *name, JsonObject *data, gint64 ts,
                     gpointer user_data)
{
    (*(guint *)user_data)++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    g_autofree char *dir = fuzz_make_tmpdir("ferry-fuzz-qmp");
    socket_path = g_build_filename(dir, "qmp.sock", NULL);
    g_autoptr(GError) error = NULL;
    listen_fd = rpc_socket_listen_unix(socket_path, 0700, &error);
    if (listen_fd < 0) {
        fprintf(stderr, "%s\n", error->message);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Vmm v = {data, size};
    GThread *vmm = g_thread_new("fuzz-vmm", vmm_thread, &v);
    guint events = 0;
    g_autoptr(GError) error = NULL;
    /* Every wait below ends with the VMM's end of stream; the limits only
     * turn a client that misses it into a reported hang. */
    gint64 start = g_get_monotonic_time();
    QmpClient *c = qmp_client_connect(socket_path, WAIT_MS, on_event, NULL, &events, &error);
    if (!c && g_get_monotonic_time() - start >= WAIT_MS * 1000)
        fuzz_hang("connect took 10 s: %s", error->message);
    if (c) {
        const char *commands[] = {"query-status", "migrate-set-parameters", "query-migrate",
                                  "stop", "cont", "query-migrate", NULL};
        for (int i = 0; commands[i]; i++) {
            g_autoptr(GError) e = NULL;
            start = g_get_monotonic_time();
            g_autoptr(JsonNode) ret = qmp_client_execute(c, commands[i], NULL, WAIT_MS, &e);
            if (!ret && g_get_monotonic_time() - start >= WAIT_MS * 1000)
                fuzz_hang("%s got no answer within 10 s after the VMM's last byte", commands[i]);
        }
        qmp_client_free(c);
    }
    g_thread_join(vmm);
    fuzz_wait_threads_gone();
    return 0;
}
