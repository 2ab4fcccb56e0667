/* Every ADMIN procedure's argument decoding and dispatch (what virt-admin
 * speaks on libvirt-admin-sock), through the real admin server: the input is
 * a client's byte stream (RPC messages in wire form, re-framed by
 * fuzz_records_next) sent over a UNIX socket to an RpcServer with the ADMIN
 * program, which sees two servers as ferryd has them ("libvirtd", a server
 * with no listener, and "admin", itself). Each CALL waits for its reply (10 s
 * or it is a hang), so the session runs call by call as with virt-admin.
 *
 * An admin client is root's, and some of what it may do is not for a fuzzer:
 * a log output naming a file would write the daemon's log wherever the input
 * says, syslog and journald would flood the host's logs. Calls that set log
 * outputs naming any of those are not sent (their parser still runs for
 * every other spec). Whatever an input changes (log filters and outputs,
 * worker and client limits, the idle timeout) is set back after it, so the
 * next input starts from the same daemon. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin/admin-dispatch.h"
#include "admin/admin_protocol.h"
#include "fuzz-common.h"
#include "rpc/rpc-message.h"
#include "rpc/rpc-server.h"
#include "rpc/rpc-socket.h"
#include "util/log.h"

#define REPLY_TIMEOUT_US (10 * G_USEC_PER_SEC)

static RpcServer *libvirtd_server;
static RpcServer *admin_server;
static AdminDaemon *admin;
static char *socket_path;
static char *initial_filters;
static char *initial_outputs;

typedef struct {
    RpcServer *server;
    RpcServerWorkerStats workers;
    RpcServerClientStats clients;
} ServerLimits;
static ServerLimits initial_limits[2];

/* ferryd's idle timeout; here nothing exits, the value is only kept. */
static gboolean set_timeout(guint seconds, gpointer data, GError **error)
{
    *(guint *)data = seconds;
    return TRUE;
}
static guint idle_timeout;

static void save_limits(ServerLimits *l, RpcServer *server)
{
    l->server = server;
    rpc_server_get_worker_stats(server, &l->workers);
    rpc_server_get_client_stats(server, &l->clients);
}

static void restore_limits(const ServerLimits *l)
{
    g_autoptr(GError) error = NULL;
    if (!rpc_server_set_max_workers(l->server, l->workers.max_workers, &error) ||
        !rpc_server_set_client_limits(l->server, l->clients.max_clients,
                                      l->clients.max_anonymous_clients, &error)) {
        fprintf(stderr, "restoring a server's limits: %s\n", error->message);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    g_autofree char *dir = fuzz_make_tmpdir("ferry-fuzz-admin");
    socket_path = g_build_filename(dir, "libvirt-admin-sock", NULL);

    RpcServerConfig main_cfg = {.max_clients = 16, .max_anonymous_clients = 8,
                                .max_client_requests = 5, .max_workers = 4};
    libvirtd_server = rpc_server_new(&main_cfg);
    RpcServerConfig admin_cfg = {.max_clients = 8, .max_anonymous_clients = 8,
                                 .max_client_requests = 5, .max_workers = 4};
    admin_server = rpc_server_new(&admin_cfg);
    admin = admin_daemon_new();
    admin_daemon_add_server(admin, "libvirtd", libvirtd_server);
    admin_daemon_add_server(admin, "admin", admin_server);
    admin_daemon_set_timeout_func(admin, set_timeout, &idle_timeout);
    admin_dispatch_register(admin_server, admin);

    g_autoptr(GError) error = NULL;
    int fd = rpc_socket_listen_unix(socket_path, 0700, &error);
    if (fd < 0) {
        fprintf(stderr, "%s\n", error->message);
        abort();
    }
    RpcListenerOptions lo = {.auth_type = 0, .description = "admin"};
    rpc_server_add_listener(admin_server, fd, &lo);
    if (!rpc_server_start(admin_server, &error)) {
        fprintf(stderr, "%s\n", error->message);
        abort();
    }
    save_limits(&initial_limits[0], libvirtd_server);
    save_limits(&initial_limits[1], admin_server);
    guint n;
    initial_filters = ferry_log_get_filters(&n);
    initial_outputs = ferry_log_get_outputs(&n);
    return 0;
}

/* A log output spec that would make the harness write outside its own
 * process's stderr: not sent (see the top of the file). */
static gboolean writes_outside(const uint8_t *body, size_t len)
{
    if (len < RPC_HEADER_SIZE || fuzz_be32(body) != ADMIN_PROGRAM ||
        fuzz_be32(body + 8) != ADMIN_PROC_CONNECT_SET_LOGGING_OUTPUTS)
        return FALSE;
    static const char *const sinks[] = {"file", "syslog", "journald"};
    for (guint i = 0; i < G_N_ELEMENTS(sinks); i++)
        if (memmem(body, len, sinks[i], strlen(sinks[i])))
            return TRUE;
    return FALSE;
}

static void restore_daemon(void)
{
    g_autoptr(GError) error = NULL;
    if (!ferry_log_set_filters(initial_filters, &error) ||
        !ferry_log_set_outputs(initial_outputs, &error)) {
        fprintf(stderr, "restoring the log settings: %s\n", error->message);
        abort();
    }
    restore_limits(&initial_limits[0]);
    restore_limits(&initial_limits[1]);
    idle_timeout = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GError) error = NULL;
    int fd = rpc_socket_connect_unix(socket_path, &error);
    if (fd < 0) {
        fprintf(stderr, "%s\n", error->message);
        abort();
    }
    FuzzRecords rec;
    fuzz_records_init(&rec, data, size);
    const uint8_t *body;
    size_t len;
    while (fuzz_records_next(&rec, &body, &len)) {
        if (writes_outside(body, len))
            continue;
        if (!fuzz_write_message(fd, body, len))
            break;
        if (len >= RPC_HEADER_SIZE && fuzz_be32(body + 12) == RPC_CALL &&
            !fuzz_await_reply(fd, fuzz_be32(body), fuzz_be32(body + 16)))
            break;
    }
    shutdown(fd, SHUT_WR);
    if (!fuzz_drain(fd, g_get_monotonic_time() + REPLY_TIMEOUT_US))
        fuzz_hang("the admin server did not close the connection within 10 s of its end");
    close(fd);

    gint64 deadline = g_get_monotonic_time() + REPLY_TIMEOUT_US;
    while (rpc_server_count_clients(admin_server) > 0) {
        if (g_get_monotonic_time() > deadline)
            fuzz_hang("the admin server still holds a closed client after 10 s");
        g_usleep(100);
    }
    restore_daemon();
    fuzz_wait_threads_gone();
    return 0;
}
