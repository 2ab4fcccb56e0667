/* Every REMOTE procedure's argument decoding and dispatch, through the real
 * server object: the input is a client's byte stream (a selector byte, then
 * RPC messages in wire form, re-framed by fuzz_records_next) sent over a
 * socket to an RpcServer with the REMOTE program and the sim driver, on one
 * of three listeners: UNIX read-write, UNIX read-only, or TCP with SASL on
 * loopback. Failed SASL steps are answered later each time from the same
 * host (up to 5 s), so each input comes from an address of its own in
 * 127.2.0.0/16 and sends at most 4 SASL steps.
 * Each CALL waits for its reply, so the session's state machine (auth, open,
 * read-only, events, streams) runs call by call, as with a real client. A
 * call that gets no reply within 10 s is reported as a hang.
 *
 * The sim driver's VMM binary does not exist: a domain can be defined,
 * listed, looked up, changed and undefined, and every start fails cleanly,
 * so no input makes the harness spawn a process or open a network
 * connection. After each input the connection is closed, the server has
 * forgotten the client, and every domain is undefined again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "driver/sim/sim-driver.h"
#include "fuzz-common.h"
#include "remote/remote-auth.h"
#include "remote/remote-dispatch.h"
#include "remote/remote-migration-peer.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-message.h"
#include "rpc/rpc-server.h"
#include "rpc/rpc-socket.h"

#define REPLY_TIMEOUT_US (10 * G_USEC_PER_SEC)
#define N_SOCKETS 3
#define SASL_SOCKET 2
#define MAX_SASL_STEPS 4

static RpcServer *server;
static Driver *driver;
static char *socket_paths[N_SOCKETS];
static guint16 sasl_port;
static guint32 next_source;

static void write_file(const char *path, const char *text)
{
    g_autoptr(GError) error = NULL;
    if (!g_file_set_contents(path, text, -1, &error)) {
        fprintf(stderr, "%s\n", error->message);
        abort();
    }
}

/* A sasldb with one user and a SASL config naming it (as the TLS/SASL
 * integration test does), so the SASL listener runs the real handshake. */
static void setup_sasl(const char *dir)
{
    g_autofree char *db = g_build_filename(dir, "sasldb", NULL);
    g_autofree char *conf = g_build_filename(dir, "libvirt.conf", NULL);
    g_autofree char *cmd =
        g_strdup_printf("echo fuzzpass | saslpasswd2 -f '%s' -a libvirt -p fuzzuser", db);
    if (system(cmd) != 0) {
        fprintf(stderr, "saslpasswd2 failed (package sasl2-bin)\n");
        abort();
    }
    g_autofree char *text =
        g_strdup_printf("mech_list: digest-md5 scram-sha-256\nsasldb_path: %s\n", db);
    write_file(conf, text);
    g_setenv("SASL_CONF_PATH", dir, TRUE);
    g_autoptr(GError) error = NULL;
    if (!remote_auth_global_init(NULL, &error)) {
        fprintf(stderr, "SASL: %s\n", error->message);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    g_autofree char *dir = fuzz_make_tmpdir("ferry-fuzz-dispatch");
    g_autofree char *config = g_build_filename(dir, "config", NULL);
    g_autofree char *run = g_build_filename(dir, "run", NULL);
    g_autofree char *vmm = g_build_filename(dir, "no-such-ferry-vmm", NULL);
    g_mkdir(config, 0700);
    g_mkdir(run, 0700);
    setup_sasl(dir);

    g_autoptr(GError) error = NULL;
    driver_set_migration_peer_ops(remote_migration_peer_ops());
    /* Loopback only: no input may open a port on another address. */
    g_autoptr(TunnelDataSettings) data = tunnel_data_settings_new("127.0.0.1", 49152, 49215, NULL);
    g_autofree char *logs = g_build_filename(dir, "log", NULL);
    g_autoptr(VmmLogConfig) log = vmm_log_config_new(logs, VMM_LOG_DEFAULT_MAX_SIZE,
                                                      VMM_LOG_DEFAULT_MAX_BACKUPS);
    SimDriverConfig sc = {.config_dir = config, .run_dir = run, .vmm_binary = vmm,
                          .log = log, .migration_data = data};
    driver = sim_driver_open(&sc, &error);
    if (!driver) {
        fprintf(stderr, "sim driver: %s\n", error->message);
        abort();
    }
    driver_registry_add(driver);

    RpcServerConfig cfg = {.max_clients = 16, .max_client_requests = 5, .max_workers = 4};
    server = rpc_server_new(&cfg);
    remote_dispatch_register(server);
    const struct {
        const char *name;
        gboolean readonly, sasl;
    } socks[N_SOCKETS] = {{"rw", FALSE, FALSE}, {"ro", TRUE, FALSE}, {"sasl", FALSE, TRUE}};
    for (int i = 0; i < N_SOCKETS; i++) {
        int fd;
        if (socks[i].sasl) {
            fd = rpc_socket_listen_tcp("127.0.0.1", 0, &sasl_port, &error);
        } else {
            socket_paths[i] = g_build_filename(dir, socks[i].name, NULL);
            fd = rpc_socket_listen_unix(socket_paths[i], 0700, &error);
        }
        if (fd < 0) {
            fprintf(stderr, "%s\n", error->message);
            abort();
        }
        int auth = socks[i].sasl ? REMOTE_AUTH_SASL : REMOTE_AUTH_NONE;
        RpcListenerOptions lo = {.readonly = socks[i].readonly, .auth_type = auth,
                                 .description = socks[i].name, .sasl_layer = socks[i].sasl};
        rpc_server_add_listener(server, fd, &lo);
    }
    if (!rpc_server_start(server, &error)) {
        fprintf(stderr, "%s\n", error->message);
        abort();
    }
    return 0;
}

/* A failed SASL step is answered late on purpose (more so each time, from
 * the same host): those replies are not waited for, later calls still are. */
static gboolean is_auth_step(const uint8_t *header)
{
    gint32 proc = (gint32)fuzz_be32(header + 8);
    return fuzz_be32(header) == REMOTE_PROGRAM &&
           (proc == REMOTE_PROC_AUTH_SASL_START || proc == REMOTE_PROC_AUTH_SASL_STEP);
}

static int connect_unix(const char *path)
{
    g_autoptr(GError) error = NULL;
    int fd = rpc_socket_connect_unix(path, &error);
    if (fd < 0) {
        fprintf(stderr, "%s\n", error->message);
        abort();
    }
    return fd;
}

/* From 127.2.x.y, a new source address each time (65536 of them). */
static int connect_sasl(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    guint32 n = next_source++ % 65536;
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(0x7f020000u | n)};
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(sasl_port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
        perror("connecting to the SASL listener");
        abort();
    }
    return fd;
}

/* Back to an empty host: the next input starts from the same state. */
static void reset_domains(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) doms = driver->ops->list_all_domains(driver, 0, &error);
    for (guint i = 0; doms && i < doms->len; i++) {
        DriverDomain *d = doms->pdata[i];
        g_clear_error(&error);
        if (d->id >= 0)
            driver->ops->destroy(driver, d, 0, &error);
        g_clear_error(&error);
        driver->ops->undefine(driver, d, 0, &error);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int sock = data[0] % N_SOCKETS;
    int fd = sock == SASL_SOCKET ? connect_sasl() : connect_unix(socket_paths[sock]);
    guint sasl_steps = 0;

    FuzzRecords rec;
    fuzz_records_init(&rec, data + 1, size - 1);
    const uint8_t *body;
    size_t len;
    while (fuzz_records_next(&rec, &body, &len)) {
        if (len >= RPC_HEADER_SIZE && is_auth_step(body) && ++sasl_steps > MAX_SASL_STEPS)
            continue;
        if (!fuzz_write_message(fd, body, len))
            break;
        if (len >= RPC_HEADER_SIZE && fuzz_be32(body + 12) == RPC_CALL &&
            !is_auth_step(body) && !fuzz_await_reply(fd, fuzz_be32(body), fuzz_be32(body + 16)))
            break;
    }
    shutdown(fd, SHUT_WR);
    if (!fuzz_drain(fd, g_get_monotonic_time() + REPLY_TIMEOUT_US))
        fuzz_hang("the server did not close the connection within 10 s of its end");
    close(fd);

    /* The server has let go of the client (its session, streams, events). */
    gint64 deadline = g_get_monotonic_time() + REPLY_TIMEOUT_US;
    while (rpc_server_count_clients(server) > 0) {
        if (g_get_monotonic_time() > deadline)
            fuzz_hang("the server still holds a closed client after 10 s");
        g_usleep(100);
    }
    reset_domains();
    fuzz_wait_threads_gone();
    return 0;
}
