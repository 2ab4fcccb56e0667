/* The hypervisor-driver interface: what the RPC dispatcher (src/remote) asks
 * of a driver, the registry that maps a connection URI to a driver, and the
 * lifecycle-event fan-out. Domains cross this boundary as DriverDomain
 * values (name, UUID, runtime id), never as driver-internal objects. */
#pragma once

#include <glib.h>

typedef struct Driver Driver;

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
    guint vcpus;
    guint64 cpu_time_ns;
} DriverDomainInfo;

typedef struct {
    char model[32];
    guint64 memory_kib;
    int cpus, mhz, nodes, sockets, cores, threads;
} DriverNodeInfo;

/* Each function fails with a FERRY_ERROR whose text a user can act on. A
 * driver may leave an entry NULL: the dispatcher then answers "not supported". */
typedef struct {
    const char *name;       /* URI scheme: "sim" */
    const char *type;       /* CONNECT_GET_TYPE: "SIM" */
    guint64 version;        /* hypervisor version, major*1000000 + minor*1000 + micro */
    const char *canonical_uri;

    char *(*get_capabilities)(Driver *drv, GError **error);

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
} DriverOps;

/* Lifetime: a driver lives from registration until driver_registry_shutdown(). */
struct Driver {
    const DriverOps *ops;
    gpointer priv;
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

/* Lifecycle events (virDomainEventType / detail values). Listeners run in the
 * thread that emits, and must not block. */
typedef void (*DriverEventFunc)(const DriverDomain *dom, int event, int detail, gpointer data);
guint driver_event_listen(Driver *drv, DriverEventFunc func, gpointer data);
void driver_event_unlisten(Driver *drv, guint id);
void driver_event_emit(Driver *drv, const DriverDomain *dom, int event, int detail);

/* Facts about this host, shared by drivers. */
gboolean driver_node_get_info(DriverNodeInfo *info, GError **error);
char *driver_node_get_hostname(void);
/* A capabilities document for this host with the given guest section. */
char *driver_node_format_capabilities(const char *guest_xml);
