/* The sim driver's migration: protocol version 3 with params, peer to peer.
 *
 * Source (perform): open the destination, prepare there (which starts an
 * incoming ferry-vmm and its end of the stream), tunnel the source VMM's
 * migration socket through the stream, finish there with cancelled=0|1, then
 * confirm here: kill our VM on success, resume it on failure. At every
 * instant the VM runs (or can resume) on exactly one host.
 *
 * Destination (prepare, finish): a hidden incoming instance that becomes the
 * visible domain only when finish sees a clean stream and a VMM that verified
 * the memory digest. A watchdog kills an incoming VM whose migration the
 * source never finishes (source died, connection lost). */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "driver/sim/sim-private.h"
#include "tunnel/tunnel-dataconn.h"
#include "tunnel/tunnel-relay.h"
#include "tunnel/tunnel-router.h"
#include "util/error.h"
#include "util/log.h"
#include "util/uuid.h"

#define FERRY_LOG_MODULE "sim.migration"

/* virDomainMigrateFlags */
#define MIG_LIVE (1u << 0)
#define MIG_PEER2PEER (1u << 1)
#define MIG_TUNNELLED (1u << 2)
#define MIG_PERSIST_DEST (1u << 3)
#define MIG_UNDEFINE_SOURCE (1u << 4)
#define MIG_PAUSED (1u << 5)
#define MIG_CHANGE_PROTECTION (1u << 8)
#define MIG_UNSAFE (1u << 9)
#define MIG_ABORT_ON_ERROR (1u << 12)
#define MIG_AUTO_CONVERGE (1u << 13)
#define MIG_TLS (1u << 16)

/* Features the destination must have (virDrvFeature). */
#define FEATURE_MIGRATION_P2P 4
#define FEATURE_MIGRATION_V3 6
#define FEATURE_MIGRATION_PARAMS 13

/* Tunnel sizes between two ferryd: big packets, a window that keeps a
 * loopback or LAN link busy, memory bounded whatever the VM's size. */
#define FERRY_PACKET_SIZE (1024 * 1024)
#define FERRY_WINDOW (8 * 1024 * 1024)
#define POLL_MS 200
#define FINISH_WAIT_S 60
#define ORPHAN_GRACE_S 15
#define DATA_CONNECT_WAIT_S 60

typedef enum { JOB_RUNNING, JOB_DONE } JobPhase;

struct SimMigrationJob {
    gint ref;
    GMutex lock;
    GCond cond;
    int operation; /* DRIVER_JOB_OPERATION_MIGRATION_OUT / _IN */
    gint64 start_us;
    DriverJobInfo info; /* last snapshot for GET_JOB_INFO: never blocks */
    gboolean abort_requested;
    GError *abort_reason;
    /* The transport: a tunnelled stream, or proxy mode's relay. */
    TunnelStream *ts;
    TunnelRelay *relay;
    TunnelDataListener *listener; /* destination, proxy: until the source connects */
    int pending_vmm_fd;           /* destination, proxy: the VMM's end, until then */
    GError *transport_error;      /* destination, proxy: the data connection never came */
    char *token;                  /* proxy: the data connection's one-time token */
    guint64 bandwidth; /* bytes/s, 0 = unlimited */
    /* destination */
    char *name;
    char *instance_id;
    gboolean claimed; /* finish or the watchdog took charge of the outcome */
    SimDriver *sd;
};

static const char *const refused_flags[] = {
    [6] = "NON_SHARED_DISK (sim domains have no disks to copy)",
    [7] = "NON_SHARED_INC (sim domains have no disks to copy)",
    [10] = "OFFLINE",
    [11] = "COMPRESSED",
    [13] = "AUTO_CONVERGE",
    [14] = "RDMA_PIN_ALL",
    [15] = "POSTCOPY",
    [16] = NULL, /* TLS: proxy mode only, checked below */
    [17] = "PARALLEL",
    [18] = "NON_SHARED_SYNCHRONOUS_WRITES",
    [19] = "POSTCOPY_RESUME",
    [20] = "ZEROCOPY",
};

static const char *const supported_params[] = {"destination_name", "destination_xml",
                                               "persistent_xml", "bandwidth", "migrate_uri",
                                               "listen_address", NULL};

/* ---- jobs ---- */

static SimMigrationJob *job_new(SimDriver *sd, int operation)
{
    SimMigrationJob *job = g_new0(SimMigrationJob, 1);
    job->ref = 1;
    g_mutex_init(&job->lock);
    g_cond_init(&job->cond);
    job->operation = operation;
    job->pending_vmm_fd = -1;
    job->start_us = g_get_monotonic_time();
    job->info.type = DRIVER_JOB_UNBOUNDED;
    job->info.operation = operation;
    job->sd = sd;
    return job;
}

static SimMigrationJob *job_ref(SimMigrationJob *job)
{
    g_atomic_int_inc(&job->ref);
    return job;
}

static void job_unref(SimMigrationJob *job)
{
    if (!job || !g_atomic_int_dec_and_test(&job->ref))
        return;
    tunnel_stream_unref(job->ts);
    tunnel_relay_unref(job->relay);
    tunnel_data_listener_free(job->listener);
    if (job->pending_vmm_fd >= 0)
        close(job->pending_vmm_fd);
    g_clear_error(&job->transport_error);
    g_free(job->token);
    g_clear_error(&job->abort_reason);
    driver_job_info_clear(&job->info);
    g_mutex_clear(&job->lock);
    g_cond_clear(&job->cond);
    g_free(job->name);
    g_free(job->instance_id);
    g_free(job);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SimMigrationJob, job_unref)

void sim_migration_job_unref(SimMigrationJob *job)
{
    job_unref(job);
}

/* ---- the job's transport: a tunnelled stream or a proxy relay ---- */

static void job_transport_abort(SimMigrationJob *job, const GError *why)
{
    g_mutex_lock(&job->lock);
    TunnelStream *ts = job->ts ? tunnel_stream_ref(job->ts) : NULL;
    TunnelRelay *relay = job->relay ? tunnel_relay_ref(job->relay) : NULL;
    if (job->listener)
        tunnel_data_listener_cancel(job->listener);
    g_mutex_unlock(&job->lock);
    if (ts && !tunnel_stream_is_over(ts))
        tunnel_stream_abort(ts, why);
    if (relay)
        tunnel_relay_abort(relay, why);
    tunnel_stream_unref(ts);
    tunnel_relay_unref(relay);
}

/* TRUE when the transport ended cleanly; FALSE with the cause (or
 * OPERATION_TIMEOUT once deadline_us, monotonic, passed; 0 = no deadline). */
static gboolean job_transport_wait(SimMigrationJob *job, gint64 deadline_us, GError **error)
{
    g_mutex_lock(&job->lock);
    while (!job->ts && !job->relay && !job->transport_error) {
        if (!deadline_us) {
            g_cond_wait(&job->cond, &job->lock);
        } else if (!g_cond_wait_until(&job->cond, &job->lock, deadline_us)) {
            g_mutex_unlock(&job->lock);
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                        "the data connection is not open yet");
            return FALSE;
        }
    }
    if (job->transport_error) {
        g_propagate_error(error, g_error_copy(job->transport_error));
        g_mutex_unlock(&job->lock);
        return FALSE;
    }
    TunnelStream *ts = job->ts ? tunnel_stream_ref(job->ts) : NULL;
    TunnelRelay *relay = job->relay ? tunnel_relay_ref(job->relay) : NULL;
    g_mutex_unlock(&job->lock);
    gboolean ok = ts ? tunnel_stream_wait(ts, deadline_us, error)
                     : tunnel_relay_wait(relay, deadline_us, error);
    tunnel_stream_unref(ts);
    tunnel_relay_unref(relay);
    return ok;
}

/* Whether the peer is known to have heard the end: a stream knows (its
 * finish/abort was confirmed); a relay cannot tell, so assume it did. */
static gboolean job_transport_peer_acked(SimMigrationJob *job)
{
    g_mutex_lock(&job->lock);
    gboolean acked = job->ts ? tunnel_stream_peer_acknowledged_end(job->ts) : TRUE;
    g_mutex_unlock(&job->lock);
    return acked;
}

static void job_transport_set_bandwidth(SimMigrationJob *job, guint64 bytes_per_second)
{
    g_mutex_lock(&job->lock);
    job->bandwidth = bytes_per_second;
    if (job->ts)
        tunnel_stream_set_bandwidth(job->ts, bytes_per_second);
    if (job->relay)
        tunnel_relay_set_bandwidth(job->relay, bytes_per_second);
    g_mutex_unlock(&job->lock);
}

static void job_request_abort(SimMigrationJob *job, GError *why)
{
    g_mutex_lock(&job->lock);
    if (!job->abort_requested) {
        job->abort_requested = TRUE;
        job->abort_reason = why;
        why = NULL;
    }
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
    g_clear_error(&why);
    /* Shuts the sockets down and tells the peer: never waits on it. */
    g_autoptr(GError) e = g_error_new_literal(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                              "migration aborted");
    job_transport_abort(job, e);
}

static GError *job_abort_error(SimMigrationJob *job)
{
    g_mutex_lock(&job->lock);
    GError *e = job->abort_requested ? g_error_copy(job->abort_reason) : NULL;
    g_mutex_unlock(&job->lock);
    return e;
}

static guint64 json_u64(JsonObject *o, const char *member)
{
    if (!o || !json_object_has_member(o, member))
        return 0;
    JsonNode *n = json_object_get_member(o, member);
    if (json_node_get_value_type(n) == G_TYPE_DOUBLE)
        return (guint64)json_node_get_double(n);
    gint64 v = json_node_get_int(n);
    return v < 0 ? 0 : (guint64)v;
}

static const char *json_str(JsonObject *o, const char *member)
{
    if (!o || !json_object_has_member(o, member))
        return NULL;
    return json_object_get_string_member(o, member);
}

/* Updates the job's snapshot from the VMM's query-migrate. */
static void job_update_from_vmm(SimMigrationJob *job, JsonObject *qm)
{
    JsonObject *ram = json_object_has_member(qm, "ram") ? json_object_get_object_member(qm, "ram")
                                                       : NULL;
    g_mutex_lock(&job->lock);
    DriverJobInfo *i = &job->info;
    i->time_elapsed_ms = (g_get_monotonic_time() - job->start_us) / 1000;
    if (ram) {
        i->memory_total = json_u64(ram, "total");
        i->memory_processed = json_u64(ram, "transferred");
        i->memory_remaining = json_u64(ram, "remaining");
        /* mbps is a fractional Mbit/s: read it as a double, not via json_u64. */
        i->memory_bps = json_object_has_member(ram, "mbps")
                            ? (guint64)(json_object_get_double_member(ram, "mbps") * 1e6 / 8)
                            : 0;
        i->memory_dirty_rate = json_u64(ram, "dirty-pages-rate");
        i->memory_iteration = json_u64(ram, "dirty-sync-count");
        i->memory_page_size = json_u64(ram, "page-size");
        /* Until pre-copy runs, everything is still to send (virsh would show 100%). */
        const char *st = json_str(qm, "status");
        if ((st && g_str_equal(st, "setup")) ||
            (i->memory_processed == 0 && i->memory_remaining == 0))
            i->memory_remaining = i->memory_total;
        i->data_total = i->memory_total;
        i->data_processed = i->memory_processed;
        i->data_remaining = i->memory_remaining;
    }
    i->setup_time_ms = json_u64(qm, "setup-time");
    if (json_object_has_member(qm, "downtime")) {
        i->downtime_ms = json_u64(qm, "downtime");
        i->has_downtime = TRUE;
    }
    g_mutex_unlock(&job->lock);
}

static JsonObject *query_migrate(VmmProcess *vm, GError **error)
{
    g_autoptr(JsonNode) r = vmm_process_qmp(vm, "query-migrate", NULL, error);
    if (!r)
        return NULL;
    JsonObject *o = json_node_get_object(r);
    return o ? json_object_ref(o) : NULL;
}

/* Waits (bounded) until the VMM's migration left setup/active/cancelling. */
static JsonObject *wait_vmm_migration_end(VmmProcess *vm, int timeout_ms)
{
    gint64 deadline = g_get_monotonic_time() + timeout_ms * 1000LL;
    for (;;) {
        JsonObject *qm = query_migrate(vm, NULL);
        const char *st = json_str(qm, "status");
        if (!qm || !st || g_get_monotonic_time() >= deadline ||
            (!g_str_equal(st, "setup") && !g_str_equal(st, "active") &&
             !g_str_equal(st, "cancelling")))
            return qm;
        json_object_unref(qm);
        g_usleep(20 * 1000);
    }
}

static void save_completed(SimDriver *sd, const guint8 *uuid, SimMigrationJob *job, int type,
                           const GError *error, const char *digest)
{
    DriverJobInfo *done = g_new0(DriverJobInfo, 1);
    g_mutex_lock(&job->lock);
    *done = job->info;
    done->error_message = error ? g_strdup(error->message) : NULL;
    done->digest = g_strdup(digest);
    g_mutex_unlock(&job->lock);
    done->type = type;
    done->time_elapsed_ms = (g_get_monotonic_time() - job->start_us) / 1000;
    g_mutex_lock(&sd->migration_lock);
    g_hash_table_replace(sd->completed, ferry_uuid_to_string(uuid), done);
    g_mutex_unlock(&sd->migration_lock);
}

/* ---- the cookie: what two ferryd tell each other ---- */

typedef struct {
    gboolean ferry; /* the peer is a ferryd */
    char *daemon_id;
    gboolean credit;
    guint64 window;
    guint64 packet;
    char *digest;
    guint64 downtime_ms;
    char *token;
} Cookie;

static void cookie_clear(Cookie *c)
{
    g_free(c->daemon_id);
    g_free(c->digest);
    g_free(c->token);
}

static GBytes *cookie_format(SimDriver *sd, const char *name, const guint8 *uuid,
                             gboolean tunnel, const char *digest, guint64 downtime_ms,
                             const char *token)
{
    g_autofree char *u = ferry_uuid_to_string(uuid);
    g_autofree char *host = driver_node_get_hostname();
    GString *s = g_string_new("<ferry-migration>\n");
    g_autofree char *ename = g_markup_escape_text(name, -1);
    g_string_append_printf(s, "  <name>%s</name>\n  <uuid>%s</uuid>\n  <hostname>%s</hostname>\n",
                           ename, u, host);
    g_string_append_printf(s, "  <daemon id='%s'/>\n", sd->daemon_id);
    if (tunnel)
        g_string_append_printf(s, "  <tunnel credit='yes' window='%d' packet='%d'/>\n",
                               FERRY_WINDOW, FERRY_PACKET_SIZE);
    if (token)
        g_string_append_printf(s, "  <data token='%s'/>\n", token);
    if (digest)
        g_string_append_printf(s, "  <statistics digest='%s' downtime='%" G_GUINT64_FORMAT "'/>\n",
                               digest, downtime_ms);
    g_string_append(s, "</ferry-migration>\n");
    /* libvirt peers put a NUL at the end of cookie XML; so do we. */
    gsize len = s->len + 1;
    return g_bytes_new_take(g_string_free(s, FALSE), len);
}

static char *prop(xmlNode *n, const char *name)
{
    xmlChar *v = xmlGetProp(n, BAD_CAST name);
    char *s = v ? g_strdup((const char *)v) : NULL;
    xmlFree(v);
    return s;
}

/* A cookie that is not ferry's (empty, or a libvirt qemu one) means a plain peer. */
static void cookie_parse(GBytes *bytes, Cookie *c)
{
    memset(c, 0, sizeof(*c));
    gsize len = 0;
    const char *data = bytes ? g_bytes_get_data(bytes, &len) : NULL;
    while (len > 0 && data[len - 1] == '\0')
        len--;
    if (!len)
        return;
    xmlDoc *doc = xmlReadMemory(data, (int)len, "cookie.xml", NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (root && xmlStrEqual(root->name, BAD_CAST "ferry-migration")) {
        c->ferry = TRUE;
        for (xmlNode *n = root->children; n; n = n->next) {
            if (n->type != XML_ELEMENT_NODE)
                continue;
            g_autofree char *a = NULL, *b = NULL, *w = NULL;
            if (xmlStrEqual(n->name, BAD_CAST "daemon")) {
                c->daemon_id = prop(n, "id");
            } else if (xmlStrEqual(n->name, BAD_CAST "tunnel")) {
                a = prop(n, "credit");
                w = prop(n, "window");
                b = prop(n, "packet");
                c->credit = g_strcmp0(a, "yes") == 0;
                c->window = w ? g_ascii_strtoull(w, NULL, 10) : 0;
                c->packet = b ? g_ascii_strtoull(b, NULL, 10) : 0;
            } else if (xmlStrEqual(n->name, BAD_CAST "data")) {
                c->token = prop(n, "token");
            } else if (xmlStrEqual(n->name, BAD_CAST "statistics")) {
                c->digest = prop(n, "digest");
                a = prop(n, "downtime");
                c->downtime_ms = a ? g_ascii_strtoull(a, NULL, 10) : 0;
            }
        }
    }
    if (doc)
        xmlFreeDoc(doc);
}

/* The stream settings both sides agree on: credit and big packets only when
 * both are ferryd and both offered them; the plain protocol otherwise. */
static void tunnel_config(const Cookie *peer, TunnelRole role, const char *peer_name,
                          const char *vmm_name, TunnelStreamConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->role = role;
    cfg->peer_name = peer_name;
    cfg->vmm_name = vmm_name;
    if (peer->ferry && peer->credit && peer->window >= 65536 && peer->packet >= 65536) {
        cfg->credit = TRUE;
        cfg->packet_size = MIN((gsize)peer->packet, (gsize)FERRY_PACKET_SIZE);
        cfg->peer_window = MIN((gsize)peer->window, (gsize)64 * 1024 * 1024);
        cfg->window = FERRY_WINDOW;
    } else {
        cfg->credit = FALSE;
        cfg->packet_size = 65536; /* what libvirt peers send and expect */
        cfg->window = 4 * 65536;
        cfg->send_queue_limit = 4 * 65536;
    }
}

/* ---- flags and params ---- */

static gboolean check_flags_and_params(guint flags, GPtrArray *params, GError **error)
{
    for (guint bit = 0; bit < G_N_ELEMENTS(refused_flags); bit++) {
        if ((flags & (1u << bit)) && refused_flags[bit]) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                        "migration flag %s is not supported", refused_flags[bit]);
            return FALSE;
        }
    }
    if ((flags & MIG_TLS) && (flags & MIG_TUNNELLED)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration flag TLS is not supported with --tunnelled: the tunnel is "
                    "encrypted by the TLS of the daemons' connection (use a sim+tls:// URI)");
        return FALSE;
    }
    if (flags >> G_N_ELEMENTS(refused_flags)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "unknown migration flags 0x%x", flags);
        return FALSE;
    }
    for (guint i = 0; params && i < params->len; i++) {
        const DriverParam *p = params->pdata[i];
        if ((flags & MIG_TUNNELLED) &&
            (g_str_equal(p->field, "migrate_uri") || g_str_equal(p->field, "listen_address"))) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                        "migration parameter '%s' cannot be used with tunnelled migration",
                        p->field);
            return FALSE;
        }
        if (!g_strv_contains(supported_params, p->field)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                        "migration parameter '%s' is not supported", p->field);
            return FALSE;
        }
    }
    return TRUE;
}

/* ---- jobs API ---- */

static gboolean sim_get_job_info(Driver *drv, const DriverDomain *dom, guint flags,
                                 DriverJobInfo *info, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    memset(info, 0, sizeof(*info));
    if (flags & DRIVER_JOB_STATS_COMPLETED) {
        g_autofree char *u = ferry_uuid_to_string(dom->uuid);
        g_mutex_lock(&sd->migration_lock);
        DriverJobInfo *done = g_hash_table_lookup(sd->completed, u);
        if (done) {
            *info = *done;
            info->error_message = g_strdup(done->error_message);
            info->digest = g_strdup(done->digest);
        }
        g_mutex_unlock(&sd->migration_lock);
        return TRUE;
    }
    DomainObj *obj = hv_lookup(&sd->hv, dom, error);
    if (!obj)
        return FALSE;
    SimInstance *inst = domain_obj_get_priv(obj);
    if (inst && inst->job) {
        g_mutex_lock(&inst->job->lock);
        *info = inst->job->info;
        info->error_message = NULL;
        info->digest = NULL;
        info->time_elapsed_ms = (g_get_monotonic_time() - inst->job->start_us) / 1000;
        g_mutex_unlock(&inst->job->lock);
    }
    domain_obj_end(obj);
    return TRUE;
}

void sim_migration_abort_locked(SimDriver *sd, DomainObj *obj, const char *why)
{
    SimInstance *inst = domain_obj_get_priv(obj);
    if (inst && inst->job)
        job_request_abort(inst->job, g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                                 "migration job canceled: %s", why));
}

static gboolean sim_abort_job(Driver *drv, const DriverDomain *dom, GError **error)
{
    DomainObj *obj = hv_lookup(hv_driver_of(drv), dom, error);
    if (!obj)
        return FALSE;
    SimInstance *inst = domain_obj_get_priv(obj);
    gboolean ok = inst && inst->job && inst->job->operation == DRIVER_JOB_OPERATION_MIGRATION_OUT;
    if (ok)
        job_request_abort(inst->job, g_error_new_literal(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                                         "job 'migration out' canceled by client"));
    else
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "no job is active on the domain");
    domain_obj_end(obj);
    return ok;
}

static gboolean sim_set_max_speed(Driver *drv, const DriverDomain *dom, guint64 mib,
                                  GError **error)
{
    DomainObj *obj = hv_lookup(hv_driver_of(drv), dom, error);
    if (!obj)
        return FALSE;
    gboolean ok = hv_check_active(obj, error);
    if (ok) {
        SimInstance *inst = domain_obj_get_priv(obj);
        inst->max_speed_mib = mib;
        if (inst->job)
            job_transport_set_bandwidth(inst->job, mib * 1024 * 1024);
    }
    domain_obj_end(obj);
    return ok;
}

static gboolean sim_get_max_speed(Driver *drv, const DriverDomain *dom, guint64 *mib,
                                  GError **error)
{
    DomainObj *obj = hv_lookup(hv_driver_of(drv), dom, error);
    if (!obj)
        return FALSE;
    SimInstance *inst = domain_obj_get_priv(obj);
    *mib = inst ? inst->max_speed_mib : 0;
    domain_obj_end(obj);
    return TRUE;
}

/* ---- source ---- */

typedef struct {
    SimDriver *sd;
    const MigrationPeerOps *ops;
    MigrationPeer *peer;
    SimMigrationJob *job;
    VmmProcess *vm;
    char *name;
    guint8 uuid[16];
    char *instance_id;
    gboolean was_paused;
    guint flags;
    guint destflags;
    GPtrArray *dparams;
    GBytes *dest_cookie;
    TunnelBinding *binding;
    gboolean prepared;     /* the destination has an incoming VM to finish or drop */
    char *dconn_host;      /* the destination's host, as the URI names it */
    char *migrate_uri;     /* proxy mode: where to open the data connection */
    char *dconn_pkipath;   /* proxy mode with --tls: the client files, as the URI says */
    char *digest;
    guint64 downtime_ms;
} Outgoing;

static void outgoing_clear(Outgoing *o)
{
    if (o->binding)
        tunnel_binding_free(o->binding);
    if (o->peer)
        o->ops->close(o->peer);
    vmm_process_unref(o->vm);
    job_unref(o->job);
    g_free(o->name);
    g_free(o->instance_id);
    if (o->dparams)
        g_ptr_array_unref(o->dparams);
    if (o->dest_cookie)
        g_bytes_unref(o->dest_cookie);
    g_free(o->digest);
    g_free(o->dconn_host);
    g_free(o->migrate_uri);
    g_free(o->dconn_pkipath);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Outgoing, outgoing_clear)

/* "tcp://host:port", "tcp:host:port", "tcp://[v6]:port" -> host, port (0 if absent). */
static gboolean parse_tcp_uri(const char *uri, char **host, guint *port, GError **error)
{
    const char *p = uri;
    if (g_str_has_prefix(p, "tcp://"))
        p += 6;
    else if (g_str_has_prefix(p, "tcp:"))
        p += 4;
    else {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "migration URI '%s' is not tcp://HOST[:PORT]", uri);
        return FALSE;
    }
    g_autofree char *rest = g_strdup(p);
    char *slash = strchr(rest, '/');
    if (slash)
        *slash = '\0';
    char *colon = NULL;
    if (rest[0] == '[') {
        char *close = strchr(rest, ']');
        if (!close) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "bad address in '%s'", uri);
            return FALSE;
        }
        *close = '\0';
        colon = close[1] == ':' ? close + 1 : NULL;
        *host = g_strdup(rest + 1);
    } else {
        colon = strrchr(rest, ':');
        if (colon)
            *colon = '\0';
        *host = g_strdup(rest);
    }
    *port = colon ? (guint)g_ascii_strtoull(colon + 1, NULL, 10) : 0;
    return TRUE;
}

static gboolean is_wildcard(const char *host)
{
    return !host || !*host || g_str_equal(host, "0.0.0.0") || g_str_equal(host, "::");
}

static gboolean require_feature(Outgoing *o, int feature, const char *what, GError **error)
{
    int r = o->ops->supports_feature(o->peer, feature, error);
    if (r < 0)
        return FALSE;
    if (r == 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the %s does not support %s", o->ops->describe(o->peer), what);
        return FALSE;
    }
    return TRUE;
}

/* Runs prepare on the destination and the stream until the VMM is done. */
static gboolean outgoing_run(Outgoing *o, GError **error)
{
    /* Everything cleaned up automatically is declared before the first goto. */
    const char *phase = "perform";
    g_autoptr(GError) e = NULL;
    g_autoptr(GBytes) cookie = NULL;
    g_autoptr(GError) early_abort = NULL;
    g_autoptr(JsonNode) r1 = NULL;
    g_autoptr(JsonNode) r2 = NULL;
    g_autoptr(JsonObject) qm = NULL;
    g_autofree char *peer_name = NULL;
    int sv[2] = {-1, -1};
    Cookie dc;
    TunnelStreamConfig cfg;
    TunnelStream *ts = NULL;
    JsonObject *params = NULL, *margs = NULL, *ferry = NULL;
    const char *st = NULL;
    g_autofree char *uri_out = NULL;
    g_autofree char *data_host = NULL;
    guint data_port = 0;
    RpcTransport *data_t = NULL;
    TunnelRelayConfig rcfg;
    g_autofree char *data_name = NULL;

    if (!require_feature(o, FEATURE_MIGRATION_P2P, "peer-to-peer migration", &e) ||
        !require_feature(o, FEATURE_MIGRATION_V3, "migration protocol version 3", &e) ||
        !require_feature(o, FEATURE_MIGRATION_PARAMS, "migration parameters", &e))
        goto fail;

    if (!(o->flags & MIG_LIVE) && !o->was_paused) {
        /* Non-live: the VM stops first and moves as a snapshot. */
        g_autoptr(JsonNode) r = vmm_process_qmp(o->vm, "stop", NULL, &e);
        if (!r)
            goto fail;
    }

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ferry_set_error_errno(&e, errno, "cannot create the migration socket pair");
        goto fail;
    }
    if (!qmp_client_pass_fd(vmm_process_get_qmp(o->vm), "migrate", sv[1], 10000, &e))
        goto fail;
    close(sv[1]);
    sv[1] = -1;

    phase = "prepare";
    cookie = cookie_format(o->sd, o->name, o->uuid, TRUE, NULL, 0, NULL);
    if (o->flags & MIG_TUNNELLED) {
        if (!o->ops->prepare_tunnel(o->peer, o->dparams, cookie, o->destflags, &o->dest_cookie,
                                    &o->binding, &e)) {
            g_prefix_error(&e, "the destination refused: ");
            goto fail;
        }
        o->prepared = TRUE;
        phase = "perform";
        cookie_parse(o->dest_cookie, &dc);
        peer_name = g_strdup(o->ops->describe(o->peer));
        tunnel_config(&dc, TUNNEL_ROLE_CLIENT, peer_name, "source VMM", &cfg);
        cookie_clear(&dc);
        g_mutex_lock(&o->job->lock);
        cfg.bandwidth = o->job->bandwidth;
        ts = tunnel_stream_new(tunnel_binding_get_connection(o->binding),
                               tunnel_binding_get_header(o->binding), sv[0], &cfg);
        sv[0] = -1;
        o->job->ts = ts;
        g_mutex_unlock(&o->job->lock);
        tunnel_binding_attach(o->binding, ts);
        tunnel_stream_start(ts);
    } else {
        /* Proxy mode: the destination relays a data connection of its own. */
        if (!o->ops->prepare(o->peer, o->dparams, cookie, o->destflags, &o->dest_cookie,
                             &uri_out, &e)) {
            g_prefix_error(&e, "the destination refused: ");
            goto fail;
        }
        o->prepared = TRUE;
        phase = "perform";
        cookie_parse(o->dest_cookie, &dc);
        g_autofree char *token = g_strdup(dc.token);
        cookie_clear(&dc);
        const char *target = o->migrate_uri ? o->migrate_uri : uri_out;
        if (!token || strlen(token) != TUNNEL_DATA_TOKEN_LEN || !target) {
            g_set_error(&e, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "the destination gave no data connection (uri '%s')",
                        target ? target : "");
            goto fail;
        }
        if (!parse_tcp_uri(target, &data_host, &data_port, &e))
            goto fail;
        if (is_wildcard(data_host)) {
            g_free(data_host);
            data_host = g_strdup(o->dconn_host);
        }
        data_t = tunnel_data_connect(data_host, (guint16)data_port, token,
                                     (o->flags & MIG_TLS) != 0, o->dconn_pkipath, 10000, &e);
        if (!data_t)
            goto fail;
        data_name = g_strdup_printf("%sdata connection to the destination ferryd at %s:%u",
                                    (o->flags & MIG_TLS) ? "TLS " : "", data_host, data_port);
        rcfg = (TunnelRelayConfig){.vmm_name = "source VMM", .peer_name = data_name};
        g_mutex_lock(&o->job->lock);
        rcfg.bandwidth = o->job->bandwidth;
        o->job->relay = tunnel_relay_new(sv[0], data_t, &rcfg);
        sv[0] = -1;
        data_t = NULL;
        tunnel_relay_start(o->job->relay);
        g_mutex_unlock(&o->job->lock);
    }
    /* An abort that came during prepare reaches the transport now. */
    early_abort = job_abort_error(o->job);
    if (early_abort)
        job_transport_abort(o->job, early_abort);

    /* The tunnel enforces the bandwidth; the VMM sends as fast as it can. */
    params = json_object_new();
    json_object_set_int_member(params, "max-bandwidth", 0);
    r1 = vmm_process_qmp(o->vm, "migrate-set-parameters", params, &e);
    json_object_unref(params);
    if (!r1)
        goto fail;
    margs = json_object_new();
    json_object_set_string_member(margs, "uri", "fd:migrate");
    r2 = vmm_process_qmp(o->vm, "migrate", margs, &e);
    json_object_unref(margs);
    if (!r2)
        goto fail;

    for (;;) {
        g_autoptr(GError) se = NULL;
        gboolean done = job_transport_wait(o->job, g_get_monotonic_time() + POLL_MS * 1000, &se);
        g_autoptr(JsonObject) progress = query_migrate(o->vm, NULL);
        if (progress)
            job_update_from_vmm(o->job, progress);
        const char *vmm_status = json_str(progress, "status");
        g_autoptr(GError) aborted = job_abort_error(o->job);
        if (aborted) {
            e = g_steal_pointer(&aborted);
            goto fail;
        }
        /* A failed stream holds the root cause; the VMM only sees its socket close. */
        if (!done && !g_error_matches(se, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT)) {
            e = g_steal_pointer(&se);
            goto fail;
        }
        if (vmm_status &&
            (g_str_equal(vmm_status, "failed") || g_str_equal(vmm_status, "cancelled"))) {
            const char *desc = json_str(progress, "error-desc");
            g_set_error(&e, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "source VMM: %s",
                        desc ? desc : vmm_status);
            goto fail;
        }
        if (done)
            break;
    }

    /* The stream ended cleanly; the VMM decides whether the migration did. */
    qm = wait_vmm_migration_end(o->vm, 10000);
    if (qm)
        job_update_from_vmm(o->job, qm);
    st = json_str(qm, "status");
    if (!st || !g_str_equal(st, "completed")) {
        const char *desc = json_str(qm, "error-desc");
        g_set_error(&e, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "source VMM: %s",
                    desc ? desc : (st ? st : "no status"));
        goto fail;
    }
    ferry = json_object_has_member(qm, "ferry")
                            ? json_object_get_object_member(qm, "ferry")
                            : NULL;
    o->digest = g_strdup(json_str(ferry, "digest"));
    o->downtime_ms = json_u64(qm, "downtime");
    return TRUE;

fail:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    rpc_transport_free(data_t);
    if (g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED))
        g_propagate_error(error, g_steal_pointer(&e));
    else
        g_propagate_prefixed_error(error, g_steal_pointer(&e), "migration failed in %s phase: ",
                                   phase);
    return FALSE;
}

/* After a failure: stop the stream and the VMM's migration, and tell the
 * destination to drop its incoming VM (if it can still hear us). */
/* Returns what the destination said about the failure, if anything useful. */
static char *outgoing_cancel(Outgoing *o, const GError *why)
{
    char *report = NULL;
    job_transport_abort(o->job, why);
    g_autoptr(JsonNode) r = vmm_process_qmp(o->vm, "migrate_cancel", NULL, NULL);
    g_autoptr(JsonObject) qm = wait_vmm_migration_end(o->vm, 10000);
    job_transport_wait(o->job, g_get_monotonic_time() + 3 * G_USEC_PER_SEC, NULL);

    if (o->prepared) {
        if (job_transport_peer_acked(o->job)) {
            g_autoptr(GBytes) cookie_out = NULL;
            g_autoptr(GError) fe = NULL;
            g_autoptr(DriverDomain) d = o->ops->finish(o->peer, o->dparams, NULL, o->destflags,
                                                       TRUE, &cookie_out, &fe);
            if (fe && fe->code != FERRY_ERR_MIGRATE_FINISH_OK)
                report = g_strdup(fe->message);
        } else {
            /* A stuck peer: cut the connection; its watchdog drops the incoming VM. */
            FERRY_INFO("the %s does not answer; closing the connection",
                       o->ops->describe(o->peer));
        }
    }
    return report;
}

/* Confirm, on the source: the VM now runs on exactly one host. */
static void outgoing_confirm(Outgoing *o, gboolean success, const GError *why)
{
    SimDriver *sd = o->sd;
    DomainObj *obj = domain_list_lookup_by_instance(sd->hv.list, o->instance_id, NULL);
    if (!obj) {
        FERRY_WARN("domain '%s' is gone from the source during its migration", o->name);
        return;
    }
    SimInstance *inst = domain_obj_get_priv(obj);
    if (inst && inst->job == o->job) {
        inst->job = NULL;
        job_unref(o->job);
    }
    if (success) {
        save_completed(sd, o->uuid, o->job, DRIVER_JOB_COMPLETED, NULL, o->digest);
        /* The guest runs on the destination: end ours without waiting under
         * the domain lock (job-info and the client are waiting on it). */
        vmm_process_kill_nowait(o->vm);
        DriverDomain d = {0};
        hv_domain_ref_of(obj, &d);
        gboolean hidden = domain_obj_is_hidden(obj);
        hv_instance_end(&sd->hv, obj, DOMAIN_SHUTOFF_MIGRATED);
        if (!hidden)
            driver_event_emit(&sd->hv.base, &d, HV_EVENT_STOPPED, HV_STOPPED_MIGRATED);
        if ((o->flags & MIG_UNDEFINE_SOURCE) && !domain_obj_is_removed(obj) &&
            domain_obj_is_persistent(obj)) {
            domain_store_delete_config(sd->hv.store, o->name, NULL);
            domain_store_set_autostart(sd->hv.store, o->name, FALSE, NULL);
            if (!hidden)
                driver_event_emit(&sd->hv.base, &d, HV_EVENT_UNDEFINED, 0);
            domain_list_undefine(sd->hv.list, obj);
        }
        driver_domain_clear(&d);
    } else {
        gboolean cancelled = g_error_matches(why, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED);
        save_completed(sd, o->uuid, o->job,
                       cancelled ? DRIVER_JOB_CANCELLED : DRIVER_JOB_FAILED, why, NULL);
        if (domain_obj_is_active(obj)) {
            g_autofree char *status = vmm_process_query_status(o->vm, NULL);
            if (!o->was_paused && status && !g_str_equal(status, "running")) {
                g_autoptr(JsonNode) r = vmm_process_qmp(o->vm, "cont", NULL, NULL);
                g_free(status);
                status = vmm_process_query_status(o->vm, NULL);
            }
            if (status && g_str_equal(status, "running")) {
                domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_MIGRATION_CANCELED);
                if (!(o->flags & MIG_LIVE) && !o->was_paused)
                    hv_emit(&sd->hv, obj, HV_EVENT_RESUMED, HV_RESUMED_MIGRATED);
            }
            domain_store_save_state(sd->hv.store, obj, NULL);
        }
    }
    domain_obj_end(obj);
}

static gboolean sim_migrate_perform(Driver *drv, const DriverDomain *dom, const char *dconnuri,
                                    GPtrArray *params, GBytes *cookie_in, guint flags,
                                    GBytes **cookie_out, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    if (!(flags & MIG_PEER2PEER)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "only peer-to-peer migration is supported (use --p2p)");
        return FALSE;
    }
    if (!check_flags_and_params(flags, params, error))
        return FALSE;
    if (!dconnuri || !*dconnuri) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "peer-to-peer migration needs a destination URI");
        return FALSE;
    }
    const MigrationPeerOps *ops = driver_get_migration_peer_ops();
    if (!ops) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "no way to reach a destination daemon");
        return FALSE;
    }
    const char *dname = NULL, *dxml = NULL, *pxml = NULL, *muri = NULL;
    guint64 bandwidth_mib = 0;
    gboolean has_bandwidth = FALSE;
    if (!driver_params_get_string(params, "destination_name", &dname, error) ||
        !driver_params_get_string(params, "destination_xml", &dxml, error) ||
        !driver_params_get_string(params, "persistent_xml", &pxml, error) ||
        !driver_params_get_string(params, "migrate_uri", &muri, error) ||
        !driver_params_get_ullong(params, "bandwidth", &bandwidth_mib, &has_bandwidth, error))
        return FALSE;

    g_auto(Outgoing) o = {0};
    o.sd = sd;
    o.ops = ops;
    o.flags = flags;
    o.migrate_uri = g_strdup(muri);
    g_autoptr(GUri) duri = g_uri_parse(dconnuri, G_URI_FLAGS_ENCODED_QUERY, NULL);
    const char *dhost = duri ? g_uri_get_host(duri) : NULL;
    o.dconn_host = g_strdup(dhost && *dhost ? dhost : "127.0.0.1"); /* +unix: this host */
    const char *dquery = duri ? g_uri_get_query(duri) : NULL;
    if (dquery) {
        g_autoptr(GHashTable) q = g_uri_parse_params(dquery, -1, "&", G_URI_PARAMS_NONE, NULL);
        if (q)
            o.dconn_pkipath = g_strdup(g_hash_table_lookup(q, "pkipath"));
    }

    DomainObj *obj = hv_lookup(&sd->hv, dom, error);
    if (!obj)
        return FALSE;
    SimInstance *inst = domain_obj_get_priv(obj);
    if (!hv_check_active(obj, error) || !inst) {
        domain_obj_end(obj);
        return FALSE;
    }
    if (inst->job) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain has a migration job in progress");
        domain_obj_end(obj);
        return FALSE;
    }
    o.job = job_new(sd, DRIVER_JOB_OPERATION_MIGRATION_OUT);
    guint64 mib = has_bandwidth ? bandwidth_mib : inst->max_speed_mib;
    o.job->bandwidth = mib * 1024 * 1024;
    inst->job = job_ref(o.job);
    o.vm = vmm_process_ref(inst->vm);
    o.name = g_strdup(domain_obj_get_name(obj));
    memcpy(o.uuid, domain_obj_get_uuid(obj), 16);
    o.instance_id = g_strdup(obj->instance_id);
    o.was_paused = domain_obj_get_state(obj, NULL) == DOMAIN_STATE_PAUSED;
    o.destflags = (flags & ~(MIG_ABORT_ON_ERROR | MIG_AUTO_CONVERGE | MIG_CHANGE_PROTECTION)) |
                  (o.was_paused ? MIG_PAUSED : 0);
    o.dparams = driver_params_copy(params);
    if (!dxml) {
        g_autofree char *xml = domain_obj_format_xml(obj, DOMAIN_DEF_FORMAT_MIGRATABLE);
        driver_params_add_string(o.dparams, "destination_xml", xml);
    }
    if (!dname)
        driver_params_add_string(o.dparams, "destination_name", o.name);
    if ((flags & MIG_PERSIST_DEST) && !pxml && obj->persistent_def) {
        g_autofree char *pers = domain_def_format(obj->persistent_def, -1,
                                                  DOMAIN_DEF_FORMAT_INACTIVE |
                                                      DOMAIN_DEF_FORMAT_MIGRATABLE);
        driver_params_add_string(o.dparams, "persistent_xml", pers);
    }
    if (!(flags & MIG_LIVE) && !o.was_paused) {
        domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
        hv_emit(&sd->hv, obj, HV_EVENT_SUSPENDED, HV_SUSPENDED_MIGRATED);
    }
    domain_obj_end(obj);

    g_autoptr(GError) e = NULL;
    o.peer = ops->open(dconnuri, &e);
    gboolean ok;
    if (!o.peer) {
        g_prefix_error(&e, "migration failed in begin phase: ");
        ok = FALSE;
    } else {
        ok = outgoing_run(&o, &e);
    }
    if (ok) {
        g_autoptr(GBytes) fcookie = cookie_format(sd, o.name, o.uuid, FALSE, o.digest,
                                                  o.downtime_ms, NULL);
        g_autoptr(GBytes) fout = NULL;
        g_autoptr(DriverDomain) d = ops->finish(o.peer, o.dparams, fcookie, o.destflags, FALSE,
                                                &fout, &e);
        if (!d) {
            g_prefix_error(&e, "migration failed in finish phase: ");
            ok = FALSE;
            /* The destination did not confirm a running VM: ours stays. */
        } else {
            FERRY_INFO("domain '%s' migrated to the %s (digest %s, downtime %" G_GUINT64_FORMAT
                       " ms)",
                       o.name, ops->describe(o.peer), o.digest ? o.digest : "?", o.downtime_ms);
        }
    } else if (o.peer) {
        g_autofree char *report = outgoing_cancel(&o, e);
        if (report && !g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED)) {
            char *both = g_strdup_printf("%s; the destination reports: %s", e->message, report);
            g_free(e->message);
            e->message = both;
        }
    }
    outgoing_confirm(&o, ok, e);
    if (!ok) {
        g_propagate_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    return TRUE;
}

/* ---- destination ---- */

static void incoming_forget(SimDriver *sd, SimMigrationJob *job)
{
    g_mutex_lock(&sd->migration_lock);
    if (g_hash_table_lookup(sd->incoming, job->name) == job)
        g_hash_table_remove(sd->incoming, job->name);
    g_mutex_unlock(&sd->migration_lock);
}

/* Kills the incoming VM and drops its hidden instance. */
static void incoming_discard(SimDriver *sd, SimMigrationJob *job, const char *why)
{
    DomainObj *obj = domain_list_lookup_by_instance(sd->hv.list, job->instance_id, NULL);
    if (obj) {
        FERRY_INFO("dropping the incoming VM of domain '%s': %s", job->name, why);
        SimInstance *inst = domain_obj_get_priv(obj);
        if (inst)
            vmm_process_kill(inst->vm);
        /* Ending the instance drops its reference on the job. */
        hv_instance_end(&sd->hv, obj, DOMAIN_SHUTOFF_FAILED);
        if (!domain_obj_is_removed(obj))
            domain_list_remove(sd->hv.list, obj);
        domain_obj_end(obj);
    }
    incoming_forget(sd, job);
}

static gboolean incoming_claim(SimMigrationJob *job)
{
    g_mutex_lock(&job->lock);
    gboolean mine = !job->claimed;
    job->claimed = TRUE;
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
    return mine;
}

/* The destination kills an incoming VM whose source never finishes. */
static gpointer incoming_watchdog(gpointer data)
{
    SimMigrationJob *job = data;
    SimDriver *sd = job->sd;
    g_autoptr(GError) e = NULL;
    gboolean clean = job_transport_wait(job, 0, &e);
    gint64 deadline = g_get_monotonic_time() +
                      (clean ? FINISH_WAIT_S : ORPHAN_GRACE_S) * G_USEC_PER_SEC;
    g_mutex_lock(&job->lock);
    while (!job->claimed && !g_atomic_int_get(&sd->stopping) &&
           g_get_monotonic_time() < deadline)
        g_cond_wait_until(&job->cond, &job->lock, deadline);
    g_mutex_unlock(&job->lock);
    gboolean stopping = g_atomic_int_get(&sd->stopping);
    /* A stopping daemon leaves the VM to its successor, which drops it. */
    if (!stopping && incoming_claim(job)) {
        g_autofree char *why = g_strdup_printf(
            "the source did not finish the migration (%s)",
            clean ? "no finish call after the stream ended" : e->message);
        incoming_discard(job->sd, job, why);
    }
    job_unref(job);
    g_mutex_lock(&sd->migration_lock);
    sd->watchdogs--;
    g_cond_broadcast(&sd->watchdogs_cond);
    g_mutex_unlock(&sd->migration_lock);
    return NULL;
}

/* Proxy mode, destination: waits for the source's data connection, then
 * relays it to the incoming VMM. A connection without the token is refused
 * by the listener and the wait goes on. */
static gpointer incoming_accept_thread(gpointer data)
{
    SimMigrationJob *job = data;
    g_autoptr(GError) e = NULL;
    RpcTransport *t = tunnel_data_listener_accept(
        job->listener, g_get_monotonic_time() + DATA_CONNECT_WAIT_S * G_USEC_PER_SEC, &e);
    g_mutex_lock(&job->lock);
    TunnelRelay *relay = NULL;
    if (t) {
        TunnelRelayConfig rc = {.vmm_name = "destination VMM",
                                .peer_name = "data connection from the source ferryd"};
        job->relay = tunnel_relay_new(job->pending_vmm_fd, t, &rc);
        job->pending_vmm_fd = -1;
        tunnel_relay_start(job->relay);
        relay = tunnel_relay_ref(job->relay);
    } else {
        job->transport_error = g_steal_pointer(&e);
    }
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);

    /* While the data flows, the port stays ours: anything else that connects
     * is refused and logged (the token was single-use). */
    while (relay && !tunnel_relay_is_over(relay)) {
        g_autoptr(GError) more = NULL;
        RpcTransport *extra = tunnel_data_listener_accept(job->listener,
                                                          g_get_monotonic_time() + 500 * 1000,
                                                          &more);
        rpc_transport_free(extra);
        if (g_error_matches(more, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED))
            break;
    }
    tunnel_relay_unref(relay);
    g_mutex_lock(&job->lock);
    tunnel_data_listener_free(job->listener);
    job->listener = NULL;
    g_mutex_unlock(&job->lock);
    job_unref(job);
    return NULL;
}

static gboolean sim_migrate_prepare(Driver *drv, GPtrArray *params, GBytes *cookie_in,
                                    guint flags, TunnelBinding *binding, GBytes **cookie_out,
                                    char **uri_out, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    if (!check_flags_and_params(flags, params, error))
        return FALSE;
    const char *dxml = NULL, *dname = NULL, *muri = NULL, *laddr = NULL;
    if (!driver_params_get_string(params, "destination_xml", &dxml, error) ||
        !driver_params_get_string(params, "destination_name", &dname, error) ||
        !driver_params_get_string(params, "migrate_uri", &muri, error) ||
        !driver_params_get_string(params, "listen_address", &laddr, error))
        return FALSE;
    if (!dxml) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "migration parameter 'destination_xml' is missing");
        return FALSE;
    }
    g_autofree char *uri_host = NULL;
    guint uri_port = 0;
    if (!binding && muri && !parse_tcp_uri(muri, &uri_host, &uri_port, error))
        return FALSE;
    g_autoptr(DomainDef) def = hv_parse_xml(&sd->hv, dxml, error);
    if (!def)
        return FALSE;
    if (dname) {
        g_free(def->name);
        def->name = g_strdup(dname);
    }
    Cookie src;
    cookie_parse(cookie_in, &src);
    gboolean local = src.daemon_id && g_str_equal(src.daemon_id, sd->daemon_id);
    g_autofree char *name = g_strdup(def->name);

    DomainObj *obj = domain_list_add(sd->hv.list, &def,
                                     DOMAIN_LIST_ADD_HIDDEN |
                                         (local ? DOMAIN_LIST_ADD_ALLOW_RUNNING_TWIN : 0),
                                     NULL, error);
    if (!obj) {
        cookie_clear(&src);
        return FALSE;
    }
    int sv[2] = {-1, -1};
    g_autoptr(GError) e = NULL;
    g_autoptr(JsonNode) r = NULL;
    SimInstance *inst = NULL;
    JsonObject *margs = NULL;
    TunnelStreamConfig cfg;
    SimMigrationJob *job = NULL;
    const char *listen_addr = NULL;
    if (!hv_instance_start(&sd->hv, obj, TRUE, &e))
        goto fail;
    inst = domain_obj_get_priv(obj);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ferry_set_error_errno(&e, errno, "cannot create the migration socket pair");
        goto fail;
    }
    if (!qmp_client_pass_fd(vmm_process_get_qmp(inst->vm), "incoming", sv[1], 10000, &e))
        goto fail;
    close(sv[1]);
    sv[1] = -1;
    margs = json_object_new();
    json_object_set_string_member(margs, "uri", "fd:incoming");
    json_object_set_boolean_member(margs, "exit-on-error", FALSE);
    r = vmm_process_qmp(inst->vm, "migrate-incoming", margs, &e);
    json_object_unref(margs);
    if (!r)
        goto fail;

    job = job_new(sd, DRIVER_JOB_OPERATION_MIGRATION_IN);
    job->name = g_strdup(name);
    job->instance_id = g_strdup(obj->instance_id);
    if (binding) {
        tunnel_config(&src, TUNNEL_ROLE_SERVER, "source ferryd", "destination VMM", &cfg);
        job->ts = tunnel_stream_new(tunnel_binding_get_connection(binding),
                                    tunnel_binding_get_header(binding), sv[0], &cfg);
        sv[0] = -1;
        tunnel_binding_attach(binding, job->ts);
        tunnel_stream_start(job->ts);
    } else {
        /* Where to listen: the params, then migration_address, then everywhere. */
        listen_addr = laddr ? laddr
                            : !is_wildcard(uri_host) ? uri_host
                            : sd->migration_address ? sd->migration_address
                                                    : "0.0.0.0";
        guint pmin = uri_port ? uri_port : sd->migration_port_min;
        guint pmax = uri_port ? uri_port : sd->migration_port_max;
        if ((flags & MIG_TLS) && !sd->migration_tls) {
            g_set_error(&e, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                        "this destination has no TLS certificate for encrypted migration data "
                        "(set cert_file, key_file and ca_file)");
            job_unref(job);
            goto fail;
        }
        job->token = tunnel_data_token_new();
        g_autofree char *what = g_strdup_printf("the migration of domain '%s'", name);
        job->listener = tunnel_data_listener_new(listen_addr, pmin, pmax, job->token,
                                                 (flags & MIG_TLS) ? sd->migration_tls : NULL,
                                                 what, &e);
        if (!job->listener) {
            job_unref(job);
            goto fail;
        }
        job->pending_vmm_fd = sv[0];
        sv[0] = -1;
        guint16 port = tunnel_data_listener_get_port(job->listener);
        /* A wildcard address tells the source to use the host it reached us by. */
        *uri_out = strchr(listen_addr, ':') ? g_strdup_printf("tcp://[%s]:%u", listen_addr, port)
                                            : g_strdup_printf("tcp://%s:%u", listen_addr, port);
        g_thread_unref(g_thread_new("incoming-accept", incoming_accept_thread, job_ref(job)));
    }
    inst->job = job; /* the instance's reference */

    g_mutex_lock(&sd->migration_lock);
    g_hash_table_replace(sd->incoming, g_strdup(name), job_ref(job));
    sd->watchdogs++;
    g_mutex_unlock(&sd->migration_lock);
    g_thread_unref(g_thread_new("incoming-watchdog", incoming_watchdog, job_ref(job)));

    *cookie_out = cookie_format(sd, name, domain_obj_get_uuid(obj), src.ferry && binding, NULL,
                                0, job->token);
    domain_store_save_state(sd->hv.store, obj, NULL);
    FERRY_INFO("prepared incoming migration of domain '%s'%s (%s)", name,
               local ? " from this daemon" : "",
               binding ? (cfg.credit ? "tunnel, credit flow control" : "tunnel, plain")
                       : *uri_out);
    cookie_clear(&src);
    domain_obj_end(obj);
    return TRUE;

fail:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    inst = domain_obj_get_priv(obj);
    if (inst)
        vmm_process_kill(inst->vm);
    if (domain_obj_is_active(obj))
        hv_instance_end(&sd->hv, obj, DOMAIN_SHUTOFF_FAILED);
    if (!domain_obj_is_removed(obj))
        domain_list_remove(sd->hv.list, obj);
    domain_obj_end(obj);
    cookie_clear(&src);
    g_propagate_prefixed_error(error, g_steal_pointer(&e), "cannot prepare the incoming VM: ");
    return FALSE;
}

static DriverDomain *sim_migrate_finish(Driver *drv, GPtrArray *params, GBytes *cookie_in,
                                        guint flags, gboolean cancelled, GBytes **cookie_out,
                                        GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    const char *dname = NULL, *pxml = NULL;
    if (!driver_params_get_string(params, "destination_name", &dname, error) ||
        !driver_params_get_string(params, "persistent_xml", &pxml, error))
        return NULL;
    g_mutex_lock(&sd->migration_lock);
    SimMigrationJob *found = dname ? g_hash_table_lookup(sd->incoming, dname) : NULL;
    g_autoptr(SimMigrationJob) job = found ? job_ref(found) : NULL;
    g_mutex_unlock(&sd->migration_lock);
    if (!job) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_DOMAIN,
                    "no incoming migration of domain '%s'", dname ? dname : "(unnamed)");
        return NULL;
    }
    if (!incoming_claim(job)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the incoming migration of domain '%s' was already given up", dname);
        return NULL;
    }
    if (cancelled) {
        /* If our side of the transport failed first, say how: the source may
         * only have seen its connection drop. */
        g_autoptr(GError) why = NULL;
        gboolean failed_here = !job_transport_wait(job, g_get_monotonic_time(), &why) &&
                               !g_error_matches(why, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT);
        job_transport_abort(job, NULL);
        incoming_discard(sd, job, "the source canceled the migration");
        if (failed_here)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "incoming migration of domain '%s' failed on the destination: %s", dname,
                        why->message);
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERR_MIGRATE_FINISH_OK,
                        "migration successfully aborted");
        return NULL;
    }

    g_autoptr(GError) e = NULL;
    g_autoptr(VmmProcess) vm = NULL;
    g_autoptr(JsonObject) qm = NULL;
    g_autofree char *digest = NULL;
    DomainObj *obj = NULL;
    SimInstance *inst = NULL;
    const char *st = NULL;
    JsonObject *ferry = NULL;
    DriverDomain *d = NULL;
    if (!job_transport_wait(job, g_get_monotonic_time() + FINISH_WAIT_S * G_USEC_PER_SEC, &e)) {
        g_prefix_error(&e, "the migration stream did not end cleanly: ");
        goto fail;
    }
    obj = domain_list_lookup_by_instance(sd->hv.list, job->instance_id, &e);
    if (!obj)
        goto fail;
    inst = domain_obj_get_priv(obj);
    vm = inst ? vmm_process_ref(inst->vm) : NULL;
    domain_obj_unlock(obj);
    qm = vm ? wait_vmm_migration_end(vm, 10000) : NULL;
    st = json_str(qm, "status");
    if (!st || !g_str_equal(st, "completed")) {
        const char *desc = json_str(qm, "error-desc");
        g_set_error(&e, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "destination VMM: %s",
                    desc ? desc : (st ? st : "not reachable"));
        domain_obj_unref(obj);
        goto fail;
    }
    ferry = json_object_has_member(qm, "ferry")
                            ? json_object_get_object_member(qm, "ferry")
                            : NULL;
    digest = g_strdup(json_str(ferry, "digest"));

    domain_obj_lock(obj);
    if (pxml || (flags & MIG_PERSIST_DEST)) {
        g_autoptr(DomainDef) pdef =
            pxml ? hv_parse_xml(&sd->hv, pxml, &e) : domain_def_copy(obj->live_def);
        if (!pdef || !domain_store_save_config(sd->hv.store, pdef, &e)) {
            domain_obj_unlock(obj);
            domain_obj_unref(obj);
            goto fail;
        }
        domain_def_free(obj->persistent_def);
        obj->persistent_def = g_steal_pointer(&pdef);
    }
    if (!domain_list_reveal(sd->hv.list, obj, &e)) {
        domain_obj_unlock(obj);
        domain_obj_unref(obj);
        goto fail;
    }
    hv_emit(&sd->hv, obj, HV_EVENT_STARTED, HV_STARTED_MIGRATED);
    if (!(flags & MIG_PAUSED)) {
        g_autoptr(JsonNode) r = vmm_process_qmp(vm, "cont", NULL, &e);
        if (!r) {
            g_prefix_error(&e, "cannot resume the migrated VM: ");
            domain_obj_unlock(obj);
            domain_obj_unref(obj);
            goto fail;
        }
        domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_MIGRATED);
        hv_emit(&sd->hv, obj, HV_EVENT_RESUMED, HV_RESUMED_MIGRATED);
    } else {
        domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
    }
    if (inst && inst->job == job) {
        inst->job = NULL;
        job_unref(job);
    }
    save_completed(sd, domain_obj_get_uuid(obj), job, DRIVER_JOB_COMPLETED, NULL, digest);
    domain_store_save_state(sd->hv.store, obj, NULL);
    d = g_new0(DriverDomain, 1);
    hv_domain_ref_of(obj, d);
    *cookie_out = cookie_format(sd, domain_obj_get_name(obj), domain_obj_get_uuid(obj), FALSE,
                                digest, 0, NULL);
    domain_obj_end(obj);
    incoming_forget(sd, job);
    FERRY_INFO("incoming migration of domain '%s' finished (digest %s verified by the VMM)",
               d->name, digest ? digest : "?");
    return d;

fail:
    incoming_discard(sd, job, e->message);
    g_propagate_prefixed_error(error, g_steal_pointer(&e),
                               "incoming migration of domain '%s' failed: ", dname);
    return NULL;
}

static char *sim_migrate_begin(Driver *drv, const DriverDomain *dom, GPtrArray *params,
                               guint flags, GBytes **cookie_out, GError **error)
{
    SimDriver *sd = sim_driver_of(drv);
    if (!check_flags_and_params(flags, params, error))
        return NULL;
    DomainObj *obj = hv_lookup(&sd->hv, dom, error);
    if (!obj)
        return NULL;
    char *xml = NULL;
    if (hv_check_active(obj, error)) {
        xml = domain_obj_format_xml(obj, DOMAIN_DEF_FORMAT_MIGRATABLE);
        *cookie_out = cookie_format(sd, domain_obj_get_name(obj), domain_obj_get_uuid(obj),
                                    TRUE, NULL, 0, NULL);
    }
    domain_obj_end(obj);
    return xml;
}

static gboolean sim_migrate_confirm(Driver *drv, const DriverDomain *dom, GPtrArray *params,
                                    GBytes *cookie_in, guint flags, gboolean cancelled,
                                    GError **error)
{
    /* Peer-to-peer migration confirms inside perform; a client-driven one
     * (BEGIN/PREPARE/PERFORM/FINISH/CONFIRM from the client) is not offered. */
    g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                "client-managed migration is not supported: use --p2p");
    return FALSE;
}

void sim_driver_register_migration(DriverOps *ops);

void sim_driver_register_migration(DriverOps *ops)
{
    ops->get_job_info = sim_get_job_info;
    ops->abort_job = sim_abort_job;
    ops->migrate_set_max_speed = sim_set_max_speed;
    ops->migrate_get_max_speed = sim_get_max_speed;
    ops->migrate_begin = sim_migrate_begin;
    ops->migrate_prepare = sim_migrate_prepare;
    ops->migrate_perform = sim_migrate_perform;
    ops->migrate_finish = sim_migrate_finish;
    ops->migrate_confirm = sim_migrate_confirm;
}

static void completed_free(gpointer data)
{
    driver_job_info_clear(data);
    g_free(data);
}

void sim_migration_init(SimDriver *sd)
{
    g_mutex_init(&sd->migration_lock);
    g_cond_init(&sd->watchdogs_cond);
    guint8 id[16];
    ferry_uuid_generate(id);
    sd->daemon_id = ferry_uuid_to_string(id);
    sd->incoming = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                         (GDestroyNotify)job_unref);
    sd->completed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, completed_free);
}

void sim_migration_shutdown(SimDriver *sd)
{
    /* Wake every watchdog, wait until none runs: they use the domain list. */
    g_atomic_int_set(&sd->stopping, TRUE);
    g_mutex_lock(&sd->migration_lock);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, sd->incoming);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        SimMigrationJob *job = value;
        g_mutex_lock(&job->lock);
        g_cond_broadcast(&job->cond);
        g_mutex_unlock(&job->lock);
        job_transport_abort(job, NULL);
    }
    while (sd->watchdogs > 0)
        g_cond_wait(&sd->watchdogs_cond, &sd->migration_lock);
    g_mutex_unlock(&sd->migration_lock);
    g_clear_pointer(&sd->incoming, g_hash_table_destroy);
    g_clear_pointer(&sd->completed, g_hash_table_destroy);
    g_free(sd->daemon_id);
    g_cond_clear(&sd->watchdogs_cond);
    g_mutex_clear(&sd->migration_lock);
}
