/* Driver registry, lifecycle-event fan-out and host facts. */
#include "driver/driver.h"

#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "util/error.h"

typedef struct {
    DriverEventFunc func;
    gpointer data;
} DriverListener;

static GPtrArray *registry;
static const MigrationPeerOps *peer_ops;
static GMutex registry_lock;

void driver_domain_clear(DriverDomain *dom)
{
    g_clear_pointer(&dom->name, g_free);
}

void driver_domain_free(DriverDomain *dom)
{
    if (!dom)
        return;
    driver_domain_clear(dom);
    g_free(dom);
}

void driver_job_info_copy(DriverJobInfo *dst, const DriverJobInfo *src)
{
    *dst = *src;
    dst->error_message = g_strdup(src->error_message);
    dst->digest = g_strdup(src->digest);
    dst->bottleneck = g_strdup(src->bottleneck);
    dst->flight_record = g_strdup(src->flight_record);
}

void driver_job_info_clear(DriverJobInfo *info)
{
    g_clear_pointer(&info->error_message, g_free);
    g_clear_pointer(&info->digest, g_free);
    g_clear_pointer(&info->bottleneck, g_free);
    g_clear_pointer(&info->flight_record, g_free);
}

void driver_job_info_take_flight(DriverJobInfo *dst, DriverJobInfo *src)
{
    dst->has_flight = TRUE;
    dst->stall_source_vmm_ms = src->stall_source_vmm_ms;
    dst->stall_dest_vmm_ms = src->stall_dest_vmm_ms;
    dst->stall_network_ms = src->stall_network_ms;
    dst->stall_credit_ms = src->stall_credit_ms;
    dst->stall_bandwidth_ms = src->stall_bandwidth_ms;
    dst->stall_encryption_ms = src->stall_encryption_ms;
    g_free(dst->bottleneck);
    dst->bottleneck = g_steal_pointer(&src->bottleneck);
    g_free(dst->flight_record);
    dst->flight_record = g_steal_pointer(&src->flight_record);
}

static __thread const char *caller_security;

void driver_set_caller_security(const char *description)
{
    caller_security = description;
}

const char *driver_get_caller_security(void)
{
    return caller_security;
}

void driver_set_migration_peer_ops(const MigrationPeerOps *ops)
{
    peer_ops = ops;
}

const MigrationPeerOps *driver_get_migration_peer_ops(void)
{
    return peer_ops;
}

void driver_init(Driver *drv, const DriverOps *ops, gpointer priv)
{
    drv->ops = ops;
    drv->priv = priv;
    g_mutex_init(&drv->event_lock);
    drv->listeners = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    drv->next_listener_id = 1;
}

void driver_clear(Driver *drv)
{
    g_clear_pointer(&drv->listeners, g_hash_table_destroy);
    g_mutex_clear(&drv->event_lock);
}

void driver_registry_add(Driver *drv)
{
    g_mutex_lock(&registry_lock);
    if (!registry)
        registry = g_ptr_array_new();
    g_ptr_array_add(registry, drv);
    g_mutex_unlock(&registry_lock);
}

static _Thread_local guint64 current_client;

void driver_client_set_current(guint64 client_id)
{
    current_client = client_id;
}

guint64 driver_client_current(void)
{
    return current_client;
}

void driver_client_closed(guint64 client_id)
{
    g_mutex_lock(&registry_lock);
    for (guint i = 0; registry && i < registry->len; i++) {
        Driver *drv = registry->pdata[i];
        if (drv->ops->client_closed)
            drv->ops->client_closed(drv, client_id);
    }
    g_mutex_unlock(&registry_lock);
}

void driver_registry_stopping(const char *why)
{
    g_mutex_lock(&registry_lock);
    for (guint i = 0; registry && i < registry->len; i++) {
        Driver *drv = registry->pdata[i];
        if (drv->ops->daemon_stopping)
            drv->ops->daemon_stopping(drv, why);
    }
    g_mutex_unlock(&registry_lock);
}

void driver_registry_clear(void)
{
    g_mutex_lock(&registry_lock);
    g_clear_pointer(&registry, g_ptr_array_unref);
    g_mutex_unlock(&registry_lock);
}

/* The path part of "scheme:rest" ("/system" in sim:///system), query and
 * fragment cut off. */
static char *uri_path(const char *rest)
{
    const char *p = rest;
    if (g_str_has_prefix(p, "//")) {
        p = strchr(p + 2, '/');
        if (!p)
            p = "";
    }
    return g_strndup(p, strcspn(p, "?#"));
}

Driver *driver_registry_open(const char *uri, GError **error)
{
    gboolean want_default = !uri || !*uri;
    /* A name is "scheme:...": one without a colon (a bare "sim") names no
     * driver, as for libvirt. */
    const char *colon = want_default ? NULL : strchr(uri, ':');
    g_autofree char *scheme = colon ? g_strndup(uri, colon - uri) : NULL;

    g_mutex_lock(&registry_lock);
    Driver *found = NULL;
    if (registry && registry->len > 0) {
        if (want_default)
            found = registry->pdata[0];
        for (guint i = 0; scheme && i < registry->len && !found; i++) {
            Driver *d = registry->pdata[i];
            if (g_ascii_strcasecmp(d->ops->name, scheme) == 0)
                found = d;
        }
    }
    g_mutex_unlock(&registry_lock);
    if (!found) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_CONNECT,
                    "no connection driver available for %s", want_default ? "(default)" : uri);
        return NULL;
    }
    /* A driver URI names a path like /system; other paths are a typo worth reporting. */
    if (colon) {
        g_autofree char *path = uri_path(colon + 1);
        if (*path && strcmp(path, "/") != 0 && strcmp(path, "/system") != 0 &&
            strcmp(path, "/session") != 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_CONNECT,
                        "no connection driver available for %s: unexpected path '%s', try %s",
                        uri, path, found->ops->canonical_uri);
            return NULL;
        }
    }
    return found;
}

guint driver_event_listen(Driver *drv, DriverEventFunc func, gpointer data)
{
    DriverListener *l = g_new(DriverListener, 1);
    l->func = func;
    l->data = data;
    g_mutex_lock(&drv->event_lock);
    guint id = drv->next_listener_id++;
    g_hash_table_insert(drv->listeners, GUINT_TO_POINTER(id), l);
    g_mutex_unlock(&drv->event_lock);
    return id;
}

void driver_event_unlisten(Driver *drv, guint id)
{
    g_mutex_lock(&drv->event_lock);
    g_hash_table_remove(drv->listeners, GUINT_TO_POINTER(id));
    g_mutex_unlock(&drv->event_lock);
}

void driver_event_emit(Driver *drv, const DriverDomain *dom, int event, int detail)
{
    /* Listeners only queue a message, so calling them under the lock keeps
     * unlisten simple: after it returns, the listener is never called again. */
    g_mutex_lock(&drv->event_lock);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, drv->listeners);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        DriverListener *l = value;
        l->func(dom, event, detail, l->data);
    }
    g_mutex_unlock(&drv->event_lock);
}

void driver_probe_result_clear(DriverProbeResult *result)
{
    g_free(result->tunnel.error);
    g_free(result->proxy.error);
    memset(result, 0, sizeof(*result));
}

void driver_dirty_rate_clear(DriverDirtyRate *rate)
{
    g_free(rate->method);
    memset(rate, 0, sizeof(*rate));
}

/* ---- host facts ---- */

static guint64 read_meminfo_kib(const char *field)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents("/proc/meminfo", &text, NULL, NULL))
        return 0;
    const char *p = strstr(text, field);
    return p ? g_ascii_strtoull(p + strlen(field), NULL, 10) : 0;
}

gboolean driver_node_get_free_memory(guint64 *bytes, GError **error)
{
    /* What a new VM can get without swapping: MemAvailable counts the page
     * cache the kernel gives back, which MemFree leaves out. */
    guint64 kib = read_meminfo_kib("MemAvailable:");
    if (!kib)
        kib = read_meminfo_kib("MemFree:");
    if (!kib) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                    "cannot read the free memory from /proc/meminfo");
        return FALSE;
    }
    *bytes = kib * 1024;
    return TRUE;
}

static int read_cpu_mhz(void)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents("/proc/cpuinfo", &text, NULL, NULL))
        return 0;
    const char *p = strstr(text, "cpu MHz");
    if (!p || !(p = strchr(p, ':')))
        return 0;
    return (int)g_ascii_strtod(p + 1, NULL);
}

gboolean driver_node_get_info(DriverNodeInfo *info, GError **error)
{
    memset(info, 0, sizeof(*info));
    struct utsname u;
    uname(&u);
    g_strlcpy(info->model, u.machine, sizeof(info->model));
    info->memory_kib = read_meminfo_kib("MemTotal:");
    info->cpus = (int)g_get_num_processors();
    info->mhz = read_cpu_mhz();
    info->nodes = 1;
    info->sockets = 1;
    info->cores = info->cpus;
    info->threads = 1;
    return TRUE;
}

char *driver_node_get_hostname(void)
{
    char buf[256];
    if (gethostname(buf, sizeof(buf)) < 0)
        return g_strdup("localhost");
    buf[sizeof(buf) - 1] = '\0';
    return g_strdup(buf);
}

static char *host_uuid(void)
{
    g_autofree char *id = NULL;
    if (g_file_get_contents("/etc/machine-id", &id, NULL, NULL)) {
        g_strstrip(id);
        if (strlen(id) == 32)
            return g_strdup_printf("%.8s-%.4s-%.4s-%.4s-%.12s", id, id + 8, id + 12, id + 16,
                                   id + 20);
    }
    return g_strdup("00000000-0000-0000-0000-000000000000");
}

char *driver_node_format_capabilities(const char *guest_xml)
{
    DriverNodeInfo info;
    driver_node_get_info(&info, NULL);
    g_autofree char *uuid = host_uuid();
    GString *s = g_string_new("<capabilities>\n\n  <host>\n");
    g_string_append_printf(s, "    <uuid>%s</uuid>\n", uuid);
    g_string_append_printf(s,
                           "    <cpu>\n      <arch>%s</arch>\n"
                           "      <topology sockets='1' dies='1' cores='%d' threads='1'/>\n"
                           "    </cpu>\n",
                           info.model, info.cpus);
    g_string_append(s, "    <power_management/>\n"
                       "    <migration_features>\n      <live/>\n"
                       "      <uri_transports>\n        <uri_transport>tcp</uri_transport>\n"
                       "        <uri_transport>tls</uri_transport>\n      </uri_transports>\n"
                       "    </migration_features>\n");
    g_string_append_printf(s,
                           "    <topology>\n      <cells num='1'>\n        <cell id='0'>\n"
                           "          <memory unit='KiB'>%" G_GUINT64_FORMAT "</memory>\n"
                           "          <cpus num='%d'>\n",
                           info.memory_kib, info.cpus);
    for (int i = 0; i < info.cpus; i++)
        g_string_append_printf(s,
                               "            <cpu id='%d' socket_id='0' die_id='0' core_id='%d' "
                               "siblings='%d'/>\n",
                               i, i, i);
    g_string_append(s, "          </cpus>\n        </cell>\n      </cells>\n    </topology>\n"
                       "    <secmodel>\n      <model>none</model>\n      <doi>0</doi>\n"
                       "    </secmodel>\n  </host>\n\n");
    if (guest_xml)
        g_string_append(s, guest_xml);
    g_string_append(s, "\n</capabilities>\n");
    return g_string_free(s, FALSE);
}
