/* ferryd: the daemon's main: options, config, pid file, listeners, signals. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "admin/admin-dispatch.h"
#include "daemon/daemon-activation.h"
#include "daemon/daemon-config.h"
#include "driver/migration-record.h"
#include "driver/domain-list.h"
#include "driver/qemu/qemu-driver.h"
#include "driver/sim/sim-driver.h"
#include "remote/remote-auth.h"
#include "remote/remote-dispatch.h"
#include "remote/remote-storage.h"
#include "remote/remote-migration-peer.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-server.h"
#include "rpc/rpc-socket.h"
#include "rpc/rpc-tls.h"
#include "tunnel/tunnel-channel.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "ferryd"

typedef struct {
    char *config_path;
    char *pid_path;
    gboolean listen;
    gboolean verbose;
    gboolean version;
    int timeout; /* --timeout: seconds idle before exiting; 0 never */
} DaemonOptions;

/* Which network listeners open: the socket units decide under socket
 * activation, listen_tcp / listen_tls with --listen otherwise. */
typedef struct {
    gboolean tcp;
    gboolean tls;
} ListenPlan;

static int auth_type_of(const char *name)
{
    return g_strcmp0(name, "sasl") == 0 ? REMOTE_AUTH_SASL : REMOTE_AUTH_NONE;
}

/* Holds the pid file locked for the daemon's lifetime: a second daemon with
 * the same pid file is refused, a stale one left by a crash is taken over. */
static int pid_file_acquire(const char *path, GError **error)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "cannot open pid file %s", path);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        char buf[32] = "";
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        g_strstrip(buf);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "pid file %s is locked: another ferryd is running (pid %s)", path,
                    *buf ? buf : "unknown");
        close(fd);
        return -1;
    }
    g_autofree char *pid = g_strdup_printf("%d\n", getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, strlen(pid), 0) < 0) {
        ferry_set_error_errno(error, errno, "cannot write pid file %s", path);
        close(fd);
        return -1;
    }
    return fd;
}

static void add_listener(RpcServer *server, int fd, const char *desc, gboolean readonly,
                         int auth, RpcTlsContext *tls)
{
    RpcListenerOptions opts = {.readonly = readonly, .auth_type = auth, .description = desc,
                               .tls = tls, .sasl_layer = auth == REMOTE_AUTH_SASL};
    rpc_server_add_listener(server, fd, &opts);
}

/* A UNIX socket from the service manager, else one ferryd creates (and
 * removes at exit, listed in unix_paths). */
static gboolean add_unix_listener(RpcServer *server, DaemonActivation *act, const char *name,
                                  const char *path, guint mode, gboolean readonly,
                                  const char *auth, GPtrArray *unix_paths, GError **error)
{
    int fd;
    gboolean inherited = FALSE;
    while ((fd = daemon_activation_take(act, name)) >= 0) {
        g_autofree char *desc = daemon_socket_describe(fd, "unix");
        add_listener(server, fd, desc, readonly, auth_type_of(auth), NULL);
        FERRY_INFO("listening on %s%s (%s)", desc, readonly ? " (read-only)" : "", name);
        inherited = TRUE;
    }
    if (inherited)
        return TRUE;
    fd = rpc_socket_listen_unix(path, mode, error);
    if (fd < 0)
        return FALSE;
    g_ptr_array_add(unix_paths, g_strdup(path));
    g_autofree char *desc = g_strdup_printf("unix %s", path);
    add_listener(server, fd, desc, readonly, auth_type_of(auth), NULL);
    FERRY_INFO("listening on %s%s", path, readonly ? " (read-only)" : "");
    return TRUE;
}

/* One TCP or TLS listener, logged, with a warning when it is wide open. */
static void add_network_listener(RpcServer *server, int fd, const char *desc, const char *name,
                                 const DaemonConfig *cfg, const char *auth, RpcTlsContext *tls)
{
    int type = auth_type_of(auth);
    add_listener(server, fd, desc, FALSE, type, tls);
    FERRY_INFO("listening on %s (auth %s%s%s%s)", desc, auth,
               tls && cfg->tls_no_verify_certificate ? ", client certificates not verified" : "",
               name ? ", " : "", name ? name : "");
    if (type == REMOTE_AUTH_NONE && !tls)
        FERRY_WARN("%s: auth_tcp = \"none\": anyone who can connect has full access and "
                   "the traffic is not encrypted", desc);
}

/* The TCP or TLS listeners: from the service manager, or opened on port. */
static gboolean add_tcp_listeners(RpcServer *server, DaemonActivation *act, const char *name,
                                  const DaemonConfig *cfg, guint port, const char *auth,
                                  RpcTlsContext *tls, GError **error)
{
    const char *kind = tls ? "tls" : "tcp";
    int fd;
    if (act) {
        while ((fd = daemon_activation_take(act, name)) >= 0) {
            g_autofree char *desc = daemon_socket_describe(fd, kind);
            add_network_listener(server, fd, desc, name, cfg, auth, tls);
        }
        return TRUE;
    }
    guint16 bound = 0;
    fd = rpc_socket_listen_tcp(cfg->listen_addr, port, &bound, error);
    if (fd < 0)
        return FALSE;
    g_autofree char *desc = g_strdup_printf("%s %s:%u", kind, cfg->listen_addr, bound);
    add_network_listener(server, fd, desc, NULL, cfg, auth, tls);
    return TRUE;
}

/* The daemon's TLS server settings, for its listener and for encrypted
 * migration data connections alike. */
static RpcTlsConfig server_tls_config(const DaemonConfig *cfg)
{
    return (RpcTlsConfig){
        .ca_file = cfg->ca_file,
        .crl_file = cfg->crl_file,
        .cert_file = cfg->cert_file,
        .key_file = cfg->key_file,
        .verify_peer = !cfg->tls_no_verify_certificate,
        .allowed_dn_list = (const char *const *)cfg->tls_allowed_dn_list,
        .priority = cfg->tls_priority,
        .handshake_timeout_ms = cfg->tls_handshake_timeout * 1000,
    };
}

static gboolean setup_listeners(RpcServer *server, RpcServer *admin_server,
                                const DaemonConfig *cfg, const ListenPlan *plan,
                                DaemonActivation *act, GPtrArray *unix_paths, GError **error)
{
    /* TLS files first: a bad one stops ferryd before it listens anywhere. */
    g_autoptr(RpcTlsContext) tls = NULL;
    if (plan->tls) {
        RpcTlsConfig tc = server_tls_config(cfg);
        g_autoptr(GError) tls_error = NULL;
        tls = rpc_tls_context_new_server(&tc, &tls_error);
        if (!tls) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                        "cannot set up TLS (listen_tls = 1): %s", tls_error->message);
            return FALSE;
        }
    }

    g_autofree char *rw = g_build_filename(cfg->unix_sock_dir, "libvirt-sock", NULL);
    g_autofree char *ro = g_build_filename(cfg->unix_sock_dir, "libvirt-sock-ro", NULL);
    g_autofree char *admin = g_build_filename(cfg->unix_sock_dir, "libvirt-admin-sock", NULL);
    /* The admin socket has a server of its own (libvirtd's "admin"), so
     * virt-admin is answered even while every worker of the other is busy. */
    if (!add_unix_listener(server, act, DAEMON_SOCKET_RW, rw, cfg->unix_sock_rw_perms, FALSE,
                           cfg->auth_unix_rw, unix_paths, error) ||
        !add_unix_listener(server, act, DAEMON_SOCKET_RO, ro, cfg->unix_sock_ro_perms, TRUE,
                           cfg->auth_unix_ro, unix_paths, error) ||
        !add_unix_listener(admin_server, act, DAEMON_SOCKET_ADMIN, admin,
                           cfg->unix_sock_admin_perms, FALSE, "none", unix_paths, error))
        return FALSE;

    if (plan->tcp && !add_tcp_listeners(server, act, DAEMON_SOCKET_TCP, cfg, cfg->tcp_port,
                                        cfg->auth_tcp, NULL, error))
        return FALSE;
    if (plan->tls && !add_tcp_listeners(server, act, DAEMON_SOCKET_TLS, cfg, cfg->tls_port,
                                        cfg->auth_tls, tls, error))
        return FALSE;
    return TRUE;
}

/* SASL is set up once, if any listener that will open uses it. */
static gboolean uses_sasl(const DaemonConfig *cfg, const ListenPlan *plan)
{
    return auth_type_of(cfg->auth_unix_rw) == REMOTE_AUTH_SASL ||
           auth_type_of(cfg->auth_unix_ro) == REMOTE_AUTH_SASL ||
           (plan->tcp && auth_type_of(cfg->auth_tcp) == REMOTE_AUTH_SASL) ||
           (plan->tls && auth_type_of(cfg->auth_tls) == REMOTE_AUTH_SASL);
}

static char *find_vmm_binary(const DaemonConfig *cfg)
{
    if (cfg->vmm_binary)
        return g_strdup(cfg->vmm_binary);
    /* Beside ferryd in a build tree or an install, else on PATH. */
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    if (self) {
        g_autofree char *dir = g_path_get_dirname(self);
        /* build tree: src/daemon and src/vmm; installed: sbin and bin */
        const char *candidates[] = {"ferry-vmm", "../vmm/ferry-vmm", "../bin/ferry-vmm", NULL};
        for (int i = 0; candidates[i]; i++) {
            g_autofree char *p = g_build_filename(dir, candidates[i], NULL);
            if (g_file_test(p, G_FILE_TEST_IS_EXECUTABLE))
                return g_canonicalize_filename(p, NULL);
        }
    }
    char *onpath = g_find_program_in_path("ferry-vmm");
    return onpath ? onpath : g_strdup("ferry-vmm");
}

typedef struct {
    RpcServer *servers[2]; /* libvirtd's and the admin socket's */
    Driver *drivers[2]; /* sim, and qemu where it opened (NULL otherwise) */
} BusyCheck;

/* --timeout waits while a client is connected (virt-admin included) or a
 * domain runs: ferryd watches its VMs (crashes, events), as libvirtd does. */
static gboolean daemon_is_busy(gpointer data)
{
    BusyCheck *b = data;
    for (guint i = 0; i < G_N_ELEMENTS(b->servers); i++)
        if (rpc_server_count_clients(b->servers[i]) > 0)
            return TRUE;
    for (guint i = 0; i < G_N_ELEMENTS(b->drivers); i++) {
        Driver *drv = b->drivers[i];
        if (!drv)
            continue;
        g_autoptr(GError) error = NULL;
        g_autoptr(GPtrArray) active = drv->ops->list_all_domains(drv, DOMAIN_LIST_ACTIVE, &error);
        if (!active || active->len > 0) /* when in doubt, stay */
            return TRUE;
    }
    return FALSE;
}

/* virt-admin daemon-timeout, from an admin worker. */
static gboolean set_idle_timeout(guint seconds, gpointer data, GError **error)
{
    daemon_idle_exit_set_timeout(data, seconds);
    if (seconds)
        FERRY_INFO("virt-admin set the idle timeout: exiting after %u s with no client and no "
                   "running domain", seconds);
    else
        FERRY_INFO("virt-admin turned the idle timeout off");
    return TRUE;
}

static gboolean on_signal(gpointer data)
{
    FERRY_INFO("signal received, shutting down");
    g_main_loop_quit(data);
    return G_SOURCE_CONTINUE;
}

static int run(const DaemonOptions *opts, DaemonActivation *act)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(DaemonConfig) cfg = daemon_config_new_defaults();
    if (opts->config_path && !daemon_config_load_file(cfg, opts->config_path, &error)) {
        fprintf(stderr, "ferryd: %s\n", error->message);
        return 2;
    }
    ferry_log_set_level(opts->verbose ? MIN(cfg->log_level, (guint)FERRY_LOG_INFO)
                                      : cfg->log_level);
    if (!ferry_log_set_filters(cfg->log_filters, &error) ||
        !ferry_log_set_outputs(cfg->log_outputs, &error)) {
        fprintf(stderr, "ferryd: %s\n", error->message);
        return 2;
    }

    int pid_fd = -1;
    if (opts->pid_path && (pid_fd = pid_file_acquire(opts->pid_path, &error)) < 0) {
        fprintf(stderr, "ferryd: %s\n", error->message);
        return 1;
    }

    /* Before any connection: every TCP connection notices a dead path itself. */
    RpcTcpLiveness liveness = {.user_timeout_s = cfg->tcp_user_timeout,
                               .keepalive_idle_s = cfg->tcp_keepalive_idle,
                               .keepalive_interval_s = cfg->tcp_keepalive_interval,
                               .keepalive_count = cfg->tcp_keepalive_count};
    rpc_socket_set_tcp_liveness(&liveness);

    /* Encrypted proxy-mode data connections use the daemon's own certificate,
     * when it has one (whether or not it listens for TLS clients). */
    g_autoptr(RpcTlsContext) migration_tls = NULL;
    if (g_file_test(cfg->cert_file, G_FILE_TEST_EXISTS) &&
        g_file_test(cfg->key_file, G_FILE_TEST_EXISTS) &&
        g_file_test(cfg->ca_file, G_FILE_TEST_EXISTS)) {
        RpcTlsConfig tc = server_tls_config(cfg);
        g_autoptr(GError) tls_error = NULL;
        migration_tls = rpc_tls_context_new_server(&tc, &tls_error);
        if (!migration_tls)
            FERRY_WARN("encrypted migration data connections are unavailable: %s",
                       tls_error->message);
    }
    /* Made once, shared by every driver's migration engine. */
    g_autoptr(TunnelDataSettings) migration_data =
        tunnel_data_settings_new(cfg->migration_address, cfg->migration_port_min,
                                 cfg->migration_port_max, migration_tls);
    tunnel_data_settings_set_stall_timeout(migration_data, cfg->migration_stall_timeout);
    tunnel_data_settings_set_parallel_connections(migration_data,
                                                  cfg->migration_parallel_connections);
    tunnel_data_settings_set_resume_timeout(migration_data, cfg->migration_resume_timeout);
    tunnel_data_settings_set_client_pki_dir(migration_data, cfg->migration_pki_dir);
    g_autofree char *vmm = find_vmm_binary(cfg);
    remote_migration_peer_set_pki_dir(cfg->migration_pki_dir);
    remote_migration_peer_set_keepalive(cfg->migration_keepalive_interval,
                                        cfg->migration_keepalive_count);
    flight_recorder_configure(cfg->flight_record_dir, cfg->flight_records_max,
                              cfg->flight_recorder);
    driver_set_migration_peer_ops(remote_migration_peer_ops());
    /* Storage pools belong to the daemon, not to a driver (libvirt's storage
     * driver, beside its hypervisor drivers). */
    g_autofree char *storage_config = cfg->storage_config_dir
                                          ? g_strdup(cfg->storage_config_dir)
                                          : g_build_filename(cfg->domain_config_dir, "storage",
                                                             NULL);
    g_autofree char *storage_run = cfg->storage_run_dir
                                       ? g_strdup(cfg->storage_run_dir)
                                       : g_build_filename(cfg->domain_run_dir, "storage", NULL);
    g_autoptr(StorageDir) storage = storage_dir_new(storage_config, storage_run, &error);
    if (!storage) {
        fprintf(stderr, "ferryd: cannot start the storage pools: %s\n", error->message);
        return 1;
    }
    remote_storage_set(storage);

    g_autoptr(VmmLogConfig) sim_log = vmm_log_config_new(
        cfg->domain_log_dir, cfg->vmm_log_max_size, cfg->vmm_log_max_backups);
    SimDriverConfig sim_cfg = {.config_dir = cfg->domain_config_dir,
                               .run_dir = cfg->domain_run_dir,
                               .log = sim_log,
                               .vmm_binary = vmm,
                               .migration_data = migration_data};
    Driver *sim = sim_driver_open(&sim_cfg, &error);
    if (!sim) {
        fprintf(stderr, "ferryd: cannot start the sim driver: %s\n", error->message);
        return 1;
    }
    driver_registry_add(sim);
    /* QEMU beside ferry-vmm, in its own directories; a host without QEMU runs sim only. */
    g_autofree char *qemu_config = cfg->qemu_config_dir
                                       ? g_strdup(cfg->qemu_config_dir)
                                       : g_build_filename(cfg->domain_config_dir, "qemu", NULL);
    g_autofree char *qemu_run = cfg->qemu_run_dir
                                    ? g_strdup(cfg->qemu_run_dir)
                                    : g_build_filename(cfg->domain_run_dir, "qemu", NULL);
    g_autofree char *qemu_log_dir = cfg->qemu_log_dir
                                        ? g_strdup(cfg->qemu_log_dir)
                                        : g_build_filename(cfg->domain_log_dir, "qemu", NULL);
    g_autoptr(VmmLogConfig) qemu_log =
        vmm_log_config_new(qemu_log_dir, cfg->vmm_log_max_size, cfg->vmm_log_max_backups);
    QemuDriverConfig qemu_cfg = {.config_dir = qemu_config,
                                 .run_dir = qemu_run,
                                 .log = qemu_log,
                                 .save_dir = cfg->qemu_save_dir,
                                 .emulator = cfg->qemu_emulator,
                                 .migration_data = migration_data};
    g_autoptr(GError) qemu_error = NULL;
    Driver *qemu = qemu_driver_open(&qemu_cfg, &qemu_error);
    if (qemu)
        driver_registry_add(qemu);
    else
        FERRY_WARN("the QEMU driver is unavailable: %s", qemu_error->message);

    RpcServerConfig scfg = {
        .max_clients = cfg->max_clients,
        .max_anonymous_clients = cfg->max_anonymous_clients,
        .max_queued_clients = cfg->max_queued_clients,
        .max_anonymous_message = REMOTE_AUTH_MESSAGE_MAX,
        .auth_timeout = cfg->auth_timeout,
        .max_client_send_queue = cfg->max_client_send_queue,
        .max_client_requests = cfg->max_client_requests,
        .max_workers = cfg->max_workers,
        .keepalive_interval = cfg->keepalive_interval > 0 ? (guint)cfg->keepalive_interval : 0,
        .keepalive_count = cfg->keepalive_count,
    };
    RpcServer *server = rpc_server_new(&scfg);
    remote_dispatch_register(server);
    /* libvirt-admin-sock: libvirtd's admin server, with its admin_* limits.
     * Keepalive pings go only to a client that asks for them (virt-admin
     * does not). */
    RpcServerConfig acfg = {
        .max_clients = cfg->admin_max_clients,
        .max_queued_clients = cfg->admin_max_queued_clients,
        .max_client_send_queue = cfg->max_client_send_queue,
        .max_client_requests = cfg->admin_max_client_requests,
        .max_workers = cfg->admin_max_workers,
        .keepalive_interval =
            cfg->admin_keepalive_interval > 0 ? (guint)cfg->admin_keepalive_interval : 0,
        .keepalive_count = cfg->admin_keepalive_count,
    };
    RpcServer *admin_server = rpc_server_new(&acfg);
    g_autoptr(AdminDaemon) admin = admin_daemon_new();
    admin_daemon_add_server(admin, "libvirtd", server);
    admin_daemon_add_server(admin, "admin", admin_server);
    admin_dispatch_register(admin_server, admin);

    g_autoptr(GPtrArray) unix_paths = g_ptr_array_new_with_free_func(g_free);
    int rc = 0;
    ListenPlan plan = {
        .tcp = act ? daemon_activation_has(act, DAEMON_SOCKET_TCP) : opts->listen && cfg->listen_tcp,
        .tls = act ? daemon_activation_has(act, DAEMON_SOCKET_TLS) : opts->listen && cfg->listen_tls,
    };
    gboolean sasl = uses_sasl(cfg, &plan);
    /* Before anything listens: whoever sees a socket may stop the daemon at
     * once, and SIGTERM must then end it cleanly, not kill it. */
    GMainLoop *loop = g_main_loop_new(NULL, FALSE);
    BusyCheck busy = {.servers = {server, admin_server}, .drivers = {sim, qemu}};
    DaemonIdleExit *idle = NULL;
    guint s1 = g_unix_signal_add(SIGTERM, on_signal, loop);
    guint s2 = g_unix_signal_add(SIGINT, on_signal, loop);
    if ((sasl && !remote_auth_global_init((const char *const *)cfg->sasl_allowed_username_list,
                                          &error)) ||
        !setup_listeners(server, admin_server, cfg, &plan, act, unix_paths, &error) ||
        !rpc_server_start(server, &error) || !rpc_server_start(admin_server, &error)) {
        fprintf(stderr, "ferryd: %s\n", error->message);
        rc = 1;
    } else {
        idle = daemon_idle_exit_new(opts->timeout, daemon_is_busy, &busy, loop);
        admin_daemon_set_timeout_func(admin, set_idle_timeout, idle);
        FERRY_INFO("ferryd %s ready (pid %d)", "0.1.0", getpid());
        daemon_notify("READY=1");
        g_main_loop_run(loop);
        daemon_notify("STOPPING=1");
    }
    g_source_remove(s1);
    g_source_remove(s2);
    g_main_loop_unref(loop);

    /* A call that runs an outgoing migration may never end on its own (one
     * that does not converge): abort them first, so the servers below wait
     * for calls that return promptly. */
    driver_registry_stopping("ferryd is stopping");

    /* Admin calls act on the other server and the idle exit: they end first. */
    rpc_server_free(admin_server);
    daemon_idle_exit_free(idle);
    rpc_server_free(server);
    remote_storage_set(NULL);
    remote_auth_global_done(); /* also when SASL is off: failed AUTH_SASL_* calls may be delayed */
    driver_registry_clear();
    flight_recorder_shutdown();
    qemu_driver_close(qemu);
    sim_driver_close(sim);
    for (guint i = 0; i < unix_paths->len; i++)
        unlink(unix_paths->pdata[i]);
    if (pid_fd >= 0) {
        unlink(opts->pid_path);
        close(pid_fd);
    }
    return rc;
}

/* Socket activation and notify variables are read first, before any thread
 * starts: reading them unsets them. */
static int activate_and_run(const DaemonOptions *opts)
{
    if (opts->timeout < 0) {
        fprintf(stderr, "ferryd: --timeout %d: expected a number of seconds (0: never)\n",
                opts->timeout);
        return 2;
    }
    daemon_notify_init();
    g_autoptr(GError) error = NULL;
    g_autoptr(DaemonActivation) act = daemon_activation_from_env(&error);
    if (!act && error) {
        fprintf(stderr, "ferryd: %s\n", error->message);
        return 1;
    }
    if (act && opts->listen) {
        fprintf(stderr, "ferryd: --listen cannot be used with socket activation: the socket units "
                        "(ferryd-tcp.socket, ferryd-tls.socket) open the TCP and TLS listeners\n");
        return 2;
    }
    return run(opts, act);
}

int main(int argc, char **argv)
{
    DaemonOptions opts = {0};
    GOptionEntry entries[] = {
        {"config", 'f', 0, G_OPTION_ARG_FILENAME, &opts.config_path,
         "configuration file (libvirtd.conf keys)", "FILE"},
        {"listen", 'l', 0, G_OPTION_ARG_NONE, &opts.listen,
         "listen for TCP/TLS connections (listen_tcp, listen_tls)", NULL},
        {"pid-file", 'p', 0, G_OPTION_ARG_FILENAME, &opts.pid_path, "write and lock a pid file",
         "FILE"},
        {"timeout", 't', 0, G_OPTION_ARG_INT, &opts.timeout,
         "exit after SECONDS with no client connected and no domain running", "SECONDS"},
        {"verbose", 'v', 0, G_OPTION_ARG_NONE, &opts.verbose, "log informational messages", NULL},
        {"version", 'V', 0, G_OPTION_ARG_NONE, &opts.version, "print the version and exit", NULL},
        {NULL}};
    g_autoptr(GOptionContext) ctx = g_option_context_new("- the ferry virtualization daemon");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
        fprintf(stderr, "ferryd: %s (see --help)\n", error->message);
        return 2;
    }
    if (argc > 1) {
        fprintf(stderr, "ferryd: unexpected argument '%s' (see --help)\n", argv[1]);
        return 2;
    }
    if (opts.version) {
        printf("ferryd 0.1.0\n");
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Stream buffers (1 MiB) are allocated in one thread and freed in another.
     * A fixed mmap threshold gives them back to the system when freed; glibc's
     * moving threshold would keep them in per-thread arenas, and the daemon's
     * memory would grow with the bytes it streamed. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    int rc = activate_and_run(&opts);
    g_free(opts.config_path);
    g_free(opts.pid_path);
    return rc;
}
