/* The hypervisor-driver interface: what the RPC dispatcher (src/remote) asks
 * of a driver, the registry that maps a connection URI to a driver, and the
 * lifecycle-event fan-out. Domains cross this boundary as DriverDomain
 * values (name, UUID, runtime id), never as driver-internal objects. */
#pragma once

#include <glib.h>

#include "driver/driver-params.h"

typedef struct Driver Driver;
typedef struct TunnelBinding TunnelBinding;
typedef struct TunnelChannel TunnelChannel;
typedef struct TunnelPeerWatch TunnelPeerWatch;

/* A domain as the RPC layer names it. */
typedef struct {
    char *name;
    guint8 uuid[16];
    int id; /* -1 when inactive */
} DriverDomain;

void driver_domain_clear(DriverDomain *dom);
void driver_domain_free(DriverDomain *dom);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(DriverDomain, driver_domain_free)

typedef struct {
    int state; /* virDomainState */
    guint64 max_mem_kib;
    guint64 memory_kib;
    guint vcpus; /* plugged in: <vcpu current=> */
    guint64 cpu_time_ns;
} DriverDomainInfo;

typedef struct {
    char model[32];
    guint64 memory_kib;
    int cpus, mhz, nodes, sockets, cores, threads;
} DriverNodeInfo;

/* One vCPU as DOMAIN_GET_VCPUS reports it. */
typedef struct {
    guint number;
    int state; /* virVcpuState: 1 running */
    guint64 cpu_time_ns;
    int cpu;  /* the host CPU it last ran on, -1 unknown */
    guint8 cpumap[128]; /* host CPUs it may run on, one bit each (1024) */
} DriverVcpuInfo;

/* DOMAIN_INTERFACE_STATS: the guest's view (rx is what the guest received);
 * -1 where a counter is unknown. */
typedef struct {
    gint64 rx_bytes, rx_packets, rx_errs, rx_drop;
    gint64 tx_bytes, tx_packets, tx_errs, tx_drop;
} DriverInterfaceStats;

/* One DOMAIN_MEMORY_STATS entry: a virDomainMemoryStatTags tag, in KiB. */
typedef struct {
    int tag;
    guint64 value;
} DriverMemoryStat;

/* VIR_DOMAIN_STATS_* groups of CONNECT_GET_ALL_DOMAIN_STATS */
#define DRIVER_STATS_STATE 1
#define DRIVER_STATS_CPU_TOTAL 2
#define DRIVER_STATS_BALLOON 4
#define DRIVER_STATS_VCPU 8
#define DRIVER_STATS_INTERFACE 16
#define DRIVER_STATS_BLOCK 32

/* virDomainJobType / virDomainJobOperation values */
enum {
    DRIVER_JOB_NONE = 0,
    DRIVER_JOB_BOUNDED = 1,
    DRIVER_JOB_UNBOUNDED = 2,
    DRIVER_JOB_COMPLETED = 3,
    DRIVER_JOB_FAILED = 4,
    DRIVER_JOB_CANCELLED = 5,
};
#define DRIVER_JOB_OPERATION_SAVE 2
#define DRIVER_JOB_OPERATION_RESTORE 3
#define DRIVER_JOB_OPERATION_MIGRATION_IN 4
#define DRIVER_JOB_OPERATION_MIGRATION_OUT 5
#define DRIVER_JOB_STATS_COMPLETED 1 /* GET_JOB_STATS flag: the last finished job */

/* A job's progress, as GET_JOB_INFO and GET_JOB_STATS report it. */
typedef struct {
    int type;
    int operation;
    guint64 time_elapsed_ms;
    guint64 data_total, data_processed, data_remaining;
    guint64 memory_total, memory_processed, memory_remaining;
    guint64 memory_bps;
    guint64 memory_dirty_rate; /* pages per second */
    guint64 memory_iteration;
    guint64 memory_page_size;
    guint64 downtime_ms;
    guint64 setup_time_ms;
    gboolean has_downtime;
    /* QEMU's xbzrle compression (--compressed) and auto-converge throttle */
    gboolean has_compression;
    guint64 compression_cache, compression_bytes, compression_pages;
    guint64 compression_cache_misses, compression_overflow;
    gboolean has_throttle;
    int auto_converge_throttle; /* percent */
    /* post-copy ran: the pages the destination asked for (its faults) */
    gboolean has_postcopy;
    guint64 memory_postcopy_requests;
    /* disks without shared storage: the mirrors' bytes (has_disk) */
    gboolean has_disk;
    guint64 disk_total, disk_processed, disk_remaining;
    char *error_message; /* failed jobs */
    char *digest;        /* ferry: the guest memory digest a migration moved and verified */
    /* ferry: a tunnelled stream that went on over new connections after its
     * own broke (has_resume): how many times, and the bytes sent again */
    gboolean has_resume;
    guint64 reconnections, bytes_resent;
    /* ferry: the flight recorder's summary of a finished migration (has_flight):
     * how long the data pumps waited, by cause, the bottleneck in words and
     * the record's file */
    gboolean has_flight;
    guint64 stall_source_vmm_ms, stall_dest_vmm_ms, stall_network_ms, stall_credit_ms,
        stall_bandwidth_ms, stall_encryption_ms;
    char *bottleneck;
    char *flight_record;
} DriverJobInfo;

void driver_job_info_clear(DriverJobInfo *info);
/* Moves the flight recorder's summary (stall times, bottleneck, record file)
 * from src into dst and sets dst->has_flight; src keeps no strings. */
void driver_job_info_take_flight(DriverJobInfo *dst, DriverJobInfo *src);
/* A deep copy (dst's old contents are not freed). */
void driver_job_info_copy(DriverJobInfo *dst, const DriverJobInfo *src);

/* The pre-flight probe's questions and answers (docs/debugging.md). */
#define DRIVER_PROBE_MAX_BYTES (G_GUINT64_CONSTANT(4) << 30)
#define DRIVER_PROBE_MAX_SECONDS 60
#define DRIVER_PROBE_RTT_MAX 64
enum {
    DRIVER_PROBE_TUNNEL = 1,    /* a tunnelled stream, as --tunnelled */
    DRIVER_PROBE_PROXY = 2,     /* a relayed data connection, as proxy mode */
    DRIVER_PROBE_PROXY_TLS = 4, /* the data connection over TLS, as --tls */
};

typedef struct {
    guint64 bytes;   /* per channel, at most */
    guint seconds;   /* per channel, at most */
    guint flags;     /* DRIVER_PROBE_* */
    guint rtt_samples;
} DriverProbeRequest;

typedef struct {
    guint64 bytes; /* delivered to the destination's discard */
    guint64 usec;  /* from the first byte until the destination confirmed the end */
    char *error;   /* not measured: why */
} DriverProbeChannelResult;

typedef struct {
    guint n_rtt;
    guint64 rtt_usec[DRIVER_PROBE_RTT_MAX];
    DriverProbeChannelResult tunnel, proxy;
} DriverProbeResult;

void driver_probe_result_clear(DriverProbeResult *result);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(DriverProbeResult, driver_probe_result_clear)

typedef struct {
    guint64 bytes_per_second;
    guint64 memory_bytes;
    guint64 downtime_ms; /* the VMM's downtime limit */
    char *method;        /* how it was measured, in words */
} DriverDirtyRate;

void driver_dirty_rate_clear(DriverDirtyRate *rate);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(DriverDirtyRate, driver_dirty_rate_clear)

/* virDomainAbortJobFlagsValues: VIR_DOMAIN_ABORT_JOB_POSTCOPY */
#define DRIVER_ABORT_JOB_POSTCOPY (1u << 0)

/* Each function fails with a FERRY_ERROR whose text a user can act on. A
 * driver may leave an entry NULL: the dispatcher then answers "not supported". */
typedef struct {
    const char *name;       /* URI scheme: "sim" */
    const char *type;       /* CONNECT_GET_TYPE: "SIM" */
    guint64 version;        /* hypervisor version, major*1000000 + minor*1000 + micro */
    const char *canonical_uri;

    char *(*get_capabilities)(Driver *drv, GError **error);
    /* CONNECT_GET_DOMAIN_CAPABILITIES: what a domain of this driver may use.
     * Each filter is NULL when the client gave none; one the driver cannot
     * answer for (another arch, machine, emulator) is refused naming it. */
    char *(*get_domain_capabilities)(Driver *drv, const char *emulatorbin, const char *arch,
                                     const char *machine, const char *virttype, guint flags,
                                     GError **error);

    /* Domain lists: a GPtrArray of DriverDomain* (free func set). */
    GPtrArray *(*list_all_domains)(Driver *drv, guint flags, GError **error);
    DriverDomain *(*lookup_by_name)(Driver *drv, const char *name, GError **error);
    DriverDomain *(*lookup_by_uuid)(Driver *drv, const guint8 *uuid, GError **error);
    DriverDomain *(*lookup_by_id)(Driver *drv, int id, GError **error);

    gboolean (*get_state)(Driver *drv, const DriverDomain *dom, int *state, int *reason,
                          GError **error);
    gboolean (*get_info)(Driver *drv, const DriverDomain *dom, DriverDomainInfo *info,
                         GError **error);
    char *(*get_xml_desc)(Driver *drv, const DriverDomain *dom, guint flags, GError **error);
    char *(*get_os_type)(Driver *drv, const DriverDomain *dom, GError **error);
    /* is_active, is_persistent, get_autostart, has_managed_save: 0/1, or -1 on error */
    int (*is_active)(Driver *drv, const DriverDomain *dom, GError **error);
    int (*is_persistent)(Driver *drv, const DriverDomain *dom, GError **error);
    int (*get_autostart)(Driver *drv, const DriverDomain *dom, GError **error);
    gboolean (*set_autostart)(Driver *drv, const DriverDomain *dom, gboolean autostart,
                              GError **error);

    DriverDomain *(*define_xml)(Driver *drv, const char *xml, guint flags, GError **error);
    gboolean (*undefine)(Driver *drv, const DriverDomain *dom, guint flags, GError **error);
    /* create: returns the domain with its new runtime id */
    DriverDomain *(*create)(Driver *drv, const DriverDomain *dom, guint flags, GError **error);
    DriverDomain *(*create_xml)(Driver *drv, const char *xml, guint flags, GError **error);
    gboolean (*destroy)(Driver *drv, const DriverDomain *dom, guint flags, GError **error);
    gboolean (*suspend)(Driver *drv, const DriverDomain *dom, GError **error);
    gboolean (*resume)(Driver *drv, const DriverDomain *dom, GError **error);
    gboolean (*shutdown)(Driver *drv, const DriverDomain *dom, GError **error);
    gboolean (*reboot)(Driver *drv, const DriverDomain *dom, guint flags, GError **error);
    /* virsh console: the driver attaches a stream to binding (the opening
     * call's) before returning, or cancels the binding on failure. dev_name
     * may be NULL (the first console). */
    gboolean (*open_console)(Driver *drv, const DriverDomain *dom, const char *dev_name,
                             guint flags, TunnelBinding *binding, GError **error);

    /* Monitoring (virsh domstats, dommemstat, vcpuinfo, vcpucount,
     * screenshot; docs/api.md). get_stats appends to params the typed
     * params of the groups in `stats` (DRIVER_STATS_* bits, each one the
     * driver has); without it the dispatcher answers the groups get_state
     * and get_info give. */
    gboolean (*get_stats)(Driver *drv, const DriverDomain *dom, guint stats, GPtrArray *params,
                          GError **error);
    /* GArray of DriverMemoryStat */
    GArray *(*memory_stats)(Driver *drv, const DriverDomain *dom, guint flags, GError **error);
    /* GArray of DriverVcpuInfo, one per online vCPU */
    GArray *(*get_vcpus)(Driver *drv, const DriverDomain *dom, GError **error);
    /* virDomainGetVcpusFlags: a count, or -1 on error */
    int (*get_vcpus_flags)(Driver *drv, const DriverDomain *dom, guint flags, GError **error);
    /* virsh domifstat: the interface named by its host device or MAC address */
    gboolean (*interface_stats)(Driver *drv, const DriverDomain *dom, const char *device,
                                DriverInterfaceStats *out, GError **error);
    /* virsh vcpupin: where each vCPU may run. get_vcpu_pin_info: GArray of
     * DriverVcpuInfo (number and cpumap), one per vCPU up to the maximum;
     * flags are virDomainModificationImpact. pin_vcpu: cpumap of maplen bytes. */
    GArray *(*get_vcpu_pin_info)(Driver *drv, const DriverDomain *dom, guint flags,
                                 GError **error);
    gboolean (*pin_vcpu)(Driver *drv, const DriverDomain *dom, guint vcpu, const guint8 *cpumap,
                         gsize maplen, guint flags, GError **error);
    /* The image of a screen, streamed on binding (attached before returning,
     * or cancelled on failure); *mime: its type. */
    gboolean (*screenshot)(Driver *drv, const DriverDomain *dom, guint screen, guint flags,
                           TunnelBinding *binding, char **mime, GError **error);

    /* Jobs: answered promptly while a migration streams. */
    gboolean (*get_job_info)(Driver *drv, const DriverDomain *dom, guint flags,
                             DriverJobInfo *info, GError **error);
    /* flags: DRIVER_ABORT_JOB_POSTCOPY pauses a post-copy migration instead
     * (virsh domjobabort --postcopy), to be resumed with --postcopy-resume. */
    gboolean (*abort_job)(Driver *drv, const DriverDomain *dom, guint flags, GError **error);
    gboolean (*migrate_set_max_speed)(Driver *drv, const DriverDomain *dom, guint64 mib_per_s,
                                      GError **error);
    gboolean (*migrate_get_max_speed)(Driver *drv, const DriverDomain *dom, guint64 *mib_per_s,
                                      GError **error);
    /* virsh migrate-setmaxdowntime / migrate-getmaxdowntime (ms) */
    gboolean (*migrate_set_max_downtime)(Driver *drv, const DriverDomain *dom, guint64 ms,
                                         GError **error);
    gboolean (*migrate_get_max_downtime)(Driver *drv, const DriverDomain *dom, guint64 *ms,
                                         GError **error);
    /* virsh migrate-compcache (bytes) */
    gboolean (*migrate_set_compression_cache)(Driver *drv, const DriverDomain *dom,
                                              guint64 bytes, GError **error);
    gboolean (*migrate_get_compression_cache)(Driver *drv, const DriverDomain *dom,
                                              guint64 *bytes, GError **error);
    /* virsh migrate-postcopy: switches the domain's outgoing migration */
    gboolean (*migrate_start_post_copy)(Driver *drv, const DriverDomain *dom, guint flags,
                                        GError **error);

    /* Migration protocol version 3 with params. Cookies are opaque bytes
     * exchanged between the two drivers. */
    char *(*migrate_begin)(Driver *drv, const DriverDomain *dom, GPtrArray *params, guint flags,
                           GBytes **cookie_out, GError **error);
    /* binding: the stream of a tunnelled prepare (NULL otherwise); the driver
     * creates the server-side stream on it before returning. source: the
     * connection the call came on (the driver takes a reference to learn
     * when the source is gone; NULL: not watched). */
    gboolean (*migrate_prepare)(Driver *drv, GPtrArray *params, GBytes *cookie_in, guint flags,
                                TunnelBinding *binding, TunnelPeerWatch *source,
                                GBytes **cookie_out, char **uri_out, GError **error);
    /* Peer-to-peer: the source driver runs the whole migration. */
    gboolean (*migrate_perform)(Driver *drv, const DriverDomain *dom, const char *dconnuri,
                                GPtrArray *params, GBytes *cookie_in, guint flags,
                                GBytes **cookie_out, GError **error);
    DriverDomain *(*migrate_finish)(Driver *drv, GPtrArray *params, GBytes *cookie_in,
                                    guint flags, gboolean cancelled, GBytes **cookie_out,
                                    GError **error);
    /* Destination, tunnelled, ferry peers: channel index (>= 1) of the
     * incoming migration of domain name, whose prepare answered token: the
     * driver creates its stream on binding before returning. */
    gboolean (*migrate_open_channel)(Driver *drv, const char *name, const char *token,
                                     guint index, TunnelBinding *binding, GError **error);
    gboolean (*migrate_confirm)(Driver *drv, const DriverDomain *dom, GPtrArray *params,
                                GBytes *cookie_in, guint flags, gboolean cancelled,
                                GError **error);

    /* A client disconnected (driver_client_closed): drop what its calls left
     * for later calls of its own (a client-managed migration). Must not
     * block: called from the connection's event thread. */
    void (*client_closed)(Driver *drv, guint64 client_id);
    /* The daemon stops (driver_registry_stopping): abort what would keep a
     * call running for long, an outgoing migration that might never
     * converge or a save (the VM stays here, running). Must not block. */
    void (*daemon_stopping)(Driver *drv, const char *why);

    /* The pre-flight probe (docs/debugging.md; the engine's migration-probe.c).
     * Destination: a channel whose bytes are read and dropped, at most
     * max_bytes and DRIVER_PROBE_MAX_SECONDS. A stream on binding (attached
     * before returning), or a data connection: *uri_out and *token_out name
     * where the source connects, as a proxy-mode prepare does. */
    gboolean (*probe_discard_stream)(Driver *drv, guint64 max_bytes, TunnelBinding *binding,
                                     GError **error);
    gboolean (*probe_discard_data)(Driver *drv, guint64 max_bytes, gboolean tls, char **uri_out,
                                   char **token_out, GError **error);
    /* Source: reaches dconnuri as a migration would and measures the path. */
    gboolean (*probe_path)(Driver *drv, const char *dconnuri, const DriverProbeRequest *request,
                           DriverProbeResult *result, GError **error);
    /* The guest's dirty rate, measured over `seconds`, and what the
     * prediction needs with it. */
    gboolean (*probe_dirty_rate)(Driver *drv, const DriverDomain *dom, guint seconds,
                                 DriverDirtyRate *out, GError **error);
    /* Save and restore (virsh save, restore, managedsave, save-image-*):
     * flags are libvirt's virDomainSaveRestoreFlags; dxml may be NULL. */
    gboolean (*save)(Driver *drv, const DriverDomain *dom, const char *path, const char *dxml,
                     guint flags, GError **error);
    gboolean (*restore)(Driver *drv, const char *path, const char *dxml, guint flags,
                        GError **error);
    char *(*save_image_get_xml)(Driver *drv, const char *path, guint flags, GError **error);
    gboolean (*save_image_define_xml)(Driver *drv, const char *path, const char *dxml,
                                      guint flags, GError **error);
    gboolean (*managed_save)(Driver *drv, const DriverDomain *dom, guint flags, GError **error);
    int (*has_managed_save)(Driver *drv, const DriverDomain *dom, guint flags, GError **error);
    gboolean (*managed_save_remove)(Driver *drv, const DriverDomain *dom, guint flags,
                                    GError **error);
    char *(*managed_save_get_xml)(Driver *drv, const DriverDomain *dom, guint flags,
                                  GError **error);
    gboolean (*managed_save_define_xml)(Driver *drv, const DriverDomain *dom, const char *dxml,
                                        guint flags, GError **error);
} DriverOps;

/* How a source driver reaches the destination daemon for peer-to-peer
 * migration: implemented by src/remote (it speaks RPC), handed to drivers at
 * start so the driver layer never touches sockets. */
typedef struct MigrationPeer MigrationPeer;
typedef struct {
    /* Connects, authenticates and opens the destination URI. */
    MigrationPeer *(*open)(const char *uri, GError **error);
    void (*close)(MigrationPeer *peer);
    /* 1 supported, 0 not, -1 error */
    int (*supports_feature)(MigrationPeer *peer, int feature, GError **error);
    /* PREPARE_TUNNEL3_PARAMS; on success *binding is where the caller
     * attaches its client-side stream. */
    gboolean (*prepare_tunnel)(MigrationPeer *peer, GPtrArray *params, GBytes *cookie_in,
                               guint flags, GBytes **cookie_out, TunnelBinding **binding,
                               GError **error);
    /* PREPARE3_PARAMS (proxy mode): returns the destination's uri_out. */
    gboolean (*prepare)(MigrationPeer *peer, GPtrArray *params, GBytes *cookie_in, guint flags,
                        GBytes **cookie_out, char **uri_out, GError **error);
    DriverDomain *(*finish)(MigrationPeer *peer, GPtrArray *params, GBytes *cookie_in,
                            guint flags, gboolean cancelled, GBytes **cookie_out,
                            GError **error);
    /* Tunnelled, a ferry destination only: opens channel index (>= 1) of the
     * migration of domain name (its prepare answered token) as a stream on
     * *binding, beside prepare's own. */
    gboolean (*open_channel)(MigrationPeer *peer, const char *name, const char *token,
                             guint index, TunnelBinding **binding, GError **error);
    /* The pre-flight probe's channels (ferry's own program): a discard
     * stream on *binding, or a discard data connection at *uri_out with
     * *token_out. A peer that is not a ferryd fails with NO_SUPPORT. */
    gboolean (*probe_discard_stream)(MigrationPeer *peer, guint64 max_bytes,
                                     TunnelBinding **binding, GError **error);
    gboolean (*probe_discard_data)(MigrationPeer *peer, guint64 max_bytes, gboolean tls,
                                   char **uri_out, char **token_out, GError **error);
    /* A short name for messages: "destination ferryd at 127.0.0.1:16509" */
    const char *(*describe)(MigrationPeer *peer);
    /* TRUE, with the cause in *error, when the current connection to the
     * destination closed on its own (a keepalive or TCP timeout, the peer
     * ending it); a resumed tunnel's new connection counts as current.
     * FALSE while a proxy migration resumes (resume_setup): its reconnector
     * aborts the channel, naming why, if the connection does not come back. */
    gboolean (*connection_lost)(MigrationPeer *peer, GError **error);
    /* The connection's security for the flight record ("TLS1.3
     * AES-256-GCM, peer DN ..."; "plain TCP"), newly allocated. */
    char *(*security)(MigrationPeer *peer);
    /* ferry peers only (negotiated in the cookie): the destination's flight
     * record of migration id, as JSON lines, and the destination's clock
     * (g_get_real_time) when it answered, with our clock before and after.
     * A destination without that record (yet) fails it with
     * FERRY_ERR_NO_SUPPORT in FERRY_ERROR. */
    char *(*fetch_record)(MigrationPeer *peer, const char *id, gint64 *peer_now_us,
                          gint64 *sent_us, gint64 *received_us, GError **error);
    /* Resume agreed (the destination's cookie gave token and timeout_s):
     * when the connection breaks, the peer reconnects to the same URI.
     * Tunnelled, it moves ch's stream onto the new connection
     * (FERRY_TUNNEL_PROC_RESUME), until the stream's resume time is up. In
     * proxy mode (ch a relay, which resumes its own data connection) it
     * moves the migration there (FERRY_PROXY_RESUME) within timeout_s, or
     * aborts ch naming why; finish waits for it. Later calls use the new
     * connection. */
    void (*resume_setup)(MigrationPeer *peer, TunnelChannel *ch, const char *token,
                         guint timeout_s);
} MigrationPeerOps;

void driver_set_migration_peer_ops(const MigrationPeerOps *ops);

/* The security of the connection whose call the current thread serves
 * ("TLS1.3 AES-256-GCM, peer certificate ..., SASL ... user 'x'"), set by
 * the dispatcher around a migration prepare for the flight record; NULL
 * when unknown. Borrowed for the call's duration. */
void driver_set_caller_security(const char *description);
const char *driver_get_caller_security(void);
const MigrationPeerOps *driver_get_migration_peer_ops(void);

/* Lifetime: a driver lives from registration until driver_registry_shutdown(). */
struct Driver {
    const DriverOps *ops;
    gpointer priv;
    struct MigrationEngine *migration; /* the driver's migration engine, or NULL */
    /* lifecycle listeners */
    GMutex event_lock;
    GHashTable *listeners; /* id -> DriverListener */
    guint next_listener_id;
};

void driver_init(Driver *drv, const DriverOps *ops, gpointer priv);
void driver_clear(Driver *drv);

/* The registry. The first registered driver is the default for an empty URI. */
void driver_registry_add(Driver *drv);
void driver_registry_clear(void);
/* Picks the driver for a CONNECT_OPEN name ("sim:///system", "" = default). */
Driver *driver_registry_open(const char *uri, GError **error);

/* The client a call is served for: the dispatcher names the calling client
 * (a number unique for the daemon's run, never 0) in a thread-local around
 * each call, so that a driver can tie state that spans several calls of one
 * client (client-managed migration: begin, perform, confirm from virsh) to
 * that client, and drop it when the client goes (driver_client_closed calls
 * every registered driver's client_closed). 0: no client call is served. */
void driver_client_set_current(guint64 client_id);
guint64 driver_client_current(void);
void driver_client_closed(guint64 client_id);
/* The daemon stops: every registered driver's daemon_stopping, before the
 * servers wait for the calls still running. */
void driver_registry_stopping(const char *why);

/* Lifecycle events (virDomainEventType / detail values). Listeners run in the
 * thread that emits, and must not block. */
typedef void (*DriverEventFunc)(const DriverDomain *dom, int event, int detail, gpointer data);
/* Not a lifecycle event: libvirt's MIGRATION_ITERATION, detail is the
 * iteration (what virsh migrate --postcopy-after-precopy waits for). */
#define DRIVER_EVENT_MIGRATION_ITERATION 1000
guint driver_event_listen(Driver *drv, DriverEventFunc func, gpointer data);
void driver_event_unlisten(Driver *drv, guint id);
void driver_event_emit(Driver *drv, const DriverDomain *dom, int event, int detail);

/* Facts about this host, shared by drivers. */
gboolean driver_node_get_info(DriverNodeInfo *info, GError **error);
/* NODE_GET_FREE_MEMORY: bytes a new VM can get (MemAvailable). */
gboolean driver_node_get_free_memory(guint64 *bytes, GError **error);
char *driver_node_get_hostname(void);
/* A capabilities document for this host with the given guest section. */
char *driver_node_format_capabilities(const char *guest_xml);
