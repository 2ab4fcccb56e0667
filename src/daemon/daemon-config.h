/* ferryd's configuration: libvirtd.conf's key names and meanings where one
 * exists, a few ferry keys otherwise (docs/configuration.md lists them). */
#pragma once

#include <glib.h>

typedef struct {
    /* listeners */
    gboolean listen_tcp;
    gboolean listen_tls;
    char *listen_addr;
    guint tcp_port;
    guint tls_port;
    char *unix_sock_dir;
    guint unix_sock_ro_perms;
    guint unix_sock_rw_perms;
    /* authentication: "none" or "sasl" */
    char *auth_tcp;
    char *auth_tls;
    char *auth_unix_rw;
    char *auth_unix_ro;
    /* TLS */
    char *key_file;
    char *cert_file;
    char *ca_file;
    char *crl_file;
    gboolean tls_no_verify_certificate;
    char **tls_allowed_dn_list;
    char *tls_priority;
    guint tls_handshake_timeout; /* ferry: seconds a TLS client has to finish its handshake */
    char **sasl_allowed_username_list;
    /* limits */
    guint max_clients;
    guint max_anonymous_clients; /* connections still authenticating (0: no limit) */
    guint max_queued_clients;    /* listen backlog */
    guint auth_timeout;          /* ferry: seconds a client has to authenticate (0: none) */
    guint max_client_send_queue; /* ferry: bytes of unrequested messages queued per client */
    guint max_client_requests;
    guint max_workers;
    guint min_workers;
    int keepalive_interval;
    guint keepalive_count;
    /* ferry: how every TCP connection of the daemon (clients, peer daemons,
     * migration data) notices a dead peer or path by itself: seconds sent
     * data may stay unacknowledged (TCP_USER_TIMEOUT), and TCP keepalive
     * probes of an idle connection (0: the kernel's defaults / off) */
    guint tcp_user_timeout;
    guint tcp_keepalive_idle;
    guint tcp_keepalive_interval;
    guint tcp_keepalive_count;
    /* the admin socket's own server (virt-admin), as libvirtd has it */
    guint unix_sock_admin_perms;
    guint admin_max_clients;
    guint admin_max_queued_clients;
    guint admin_max_workers;
    guint admin_min_workers; /* read, not used: workers start on demand */
    guint admin_max_client_requests;
    int admin_keepalive_interval;
    guint admin_keepalive_count;
    /* logging */
    guint log_level;
    char *log_filters; /* libvirt's syntax, checked when loaded; NULL: none */
    char *log_outputs; /* NULL: stderr */
    /* ferry: where domain configs and runtime state live, and the VMM */
    char *domain_config_dir;
    char *domain_run_dir;
    char *vmm_binary;
    /* ferry: the QEMU driver (NULL: qemu-system-x86_64 on PATH; the
     * domain dirs' qemu/ subdirectories) */
    char *qemu_emulator;
    char *qemu_config_dir;
    char *qemu_run_dir;
    /* ferry: the VMMs' logs by domain (NAME.log), and their rotation
     * (virtlogd's max_size and max_backups); qemu_log_dir NULL: qemu/ below
     * domain_log_dir */
    char *qemu_save_dir; /* ferry: managed save images of the QEMU driver */
    /* ferry: storage pools (NULL: storage/ below domain_config_dir and
     * domain_run_dir) */
    char *storage_config_dir;
    char *storage_run_dir;
    char *domain_log_dir;
    char *qemu_log_dir;
    guint vmm_log_max_size;
    guint vmm_log_max_backups;
    /* migration (qemu.conf names) */
    guint migration_port_min;
    guint migration_port_max;
    char *migration_address;
    /* ferry: seconds a migration's data may stand still before it fails
     * on either side (0: never) */
    guint migration_stall_timeout;
    /* ferry: channels of a tunnelled migration to a ferry peer when the
     * client names none (parallel.connections) */
    guint migration_parallel_connections;
    /* ferry: seconds a tunnelled migration whose connection broke waits for
     * the two daemons to reconnect and go on (0: fail at once) */
    guint migration_resume_timeout;
    int migration_keepalive_interval; /* qemu.conf's keepalive_interval: -1 none */
    guint migration_keepalive_count;
    /* ferry: the client files (cacert.pem, clientcert.pem, clientkey.pem,
     * cacrl.pem) ferryd presents to a destination daemon and its data port;
     * NULL: libvirt's client locations. A client's URI may not choose them. */
    char *migration_pki_dir;
    /* ferry: the migration flight recorder (docs/debugging.md): on or off,
     * where records are written, how many are kept (0: none written) */
    gboolean flight_recorder;
    char *flight_record_dir;
    guint flight_records_max;
} DaemonConfig;

/* Defaults: libvirt's, with paths for root or for the current user. */
DaemonConfig *daemon_config_new_defaults(void);
void daemon_config_free(DaemonConfig *cfg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(DaemonConfig, daemon_config_free)

/* Applies a config file; an unknown key or a bad value is an error naming
 * the file, the line and the key. */
gboolean daemon_config_load_file(DaemonConfig *cfg, const char *path, GError **error);
/* Same, from text (for tests). */
gboolean daemon_config_load_data(DaemonConfig *cfg, const char *text, const char *origin,
                                 GError **error);
