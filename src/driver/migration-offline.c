/* Offline migration (VIR_MIGRATE_OFFLINE with PERSIST_DEST): only the
 * domain's persistent definition moves. No VMM, no channel: begin returns the
 * definition, prepare checks it, finish defines it on the destination,
 * confirm undefines the source's with UNDEFINE_SOURCE. As in libvirt, a
 * running domain keeps running where it is; what moves is its definition. */
#include <string.h>

#include "driver/migration-private.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "migration.offline"

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MigrationCookie, migration_cookie_clear)

char *migration_offline_begin(MigrationEngine *e, const DriverDomain *dom, GPtrArray *params,
                              GBytes **cookie_out, GError **error)
{
    const char *dxml = NULL;
    if (!driver_params_get_string(params, "destination_xml", &dxml, error))
        return NULL;
    DomainObj *obj = hv_lookup(e->hv, dom, error);
    if (!obj)
        return NULL;
    char *xml = NULL;
    if (dxml) {
        xml = g_strdup(dxml);
    } else if (obj->persistent_def) {
        xml = domain_def_format(obj->persistent_def, -1,
                                DOMAIN_DEF_FORMAT_INACTIVE | DOMAIN_DEF_FORMAT_MIGRATABLE);
    } else {
        /* A transient running domain: its running configuration. */
        xml = domain_obj_format_xml(obj, DOMAIN_DEF_FORMAT_MIGRATABLE);
    }
    MigrationCookieContent c = {.name = domain_obj_get_name(obj), .uuid = domain_obj_get_uuid(obj),
                                .daemon_id = e->daemon_id};
    *cookie_out = migration_cookie_format(&c);
    domain_obj_end(obj);
    return xml;
}

/* The definition the destination will hold: persistent_xml if given, else
 * the migrated one; renamed by destination_name. */
static DomainDef *offline_definition(MigrationEngine *e, GPtrArray *params, GError **error)
{
    const char *dxml = NULL, *pxml = NULL, *dname = NULL;
    if (!driver_params_get_string(params, "destination_xml", &dxml, error) ||
        !driver_params_get_string(params, "persistent_xml", &pxml, error) ||
        !driver_params_get_string(params, "destination_name", &dname, error))
        return NULL;
    if (!pxml && !dxml) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "migration parameter 'destination_xml' is missing");
        return NULL;
    }
    DomainDef *def = hv_parse_xml(e->hv, pxml ? pxml : dxml, error);
    if (def && dname) {
        g_free(def->name);
        def->name = g_strdup(dname);
    }
    return def;
}

gboolean migration_offline_prepare(MigrationEngine *e, GPtrArray *params, GBytes *cookie_in,
                                   GBytes **cookie_out, char **uri_out, GError **error)
{
    g_auto(MigrationCookie) src = {0};
    if (!migration_cookie_parse(cookie_in, &src, error))
        return FALSE;
    g_autoptr(DomainDef) def = offline_definition(e, params, error);
    if (!def) {
        g_prefix_error(error, "cannot prepare the offline migration: ");
        return FALSE;
    }
    MigrationCookieContent c = {.name = def->name, .uuid = def->uuid, .daemon_id = e->daemon_id};
    *cookie_out = migration_cookie_format(&c);
    /* Nothing will connect, but a client-managed migration wants a URI. */
    g_autofree char *host = driver_node_get_hostname();
    *uri_out = g_strdup_printf("tcp://%s", host);
    FERRY_INFO("prepared offline migration of domain '%s'", def->name);
    return TRUE;
}

DriverDomain *migration_offline_finish(MigrationEngine *e, GPtrArray *params, gboolean cancelled,
                                       GBytes **cookie_out, GError **error)
{
    if (cancelled) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_MIGRATE_FINISH_OK,
                    "migration successfully aborted");
        return NULL;
    }
    g_autoptr(DomainDef) def = offline_definition(e, params, error);
    if (!def)
        return NULL;
    g_autofree char *xml = domain_def_format(def, -1, DOMAIN_DEF_FORMAT_INACTIVE);
    Driver *drv = &e->hv->base;
    DriverDomain *d = drv->ops->define_xml(drv, xml, 0, error);
    if (!d) {
        g_prefix_error(error, "cannot define the migrated domain: ");
        return NULL;
    }
    MigrationCookieContent c = {.name = d->name, .uuid = d->uuid, .daemon_id = e->daemon_id};
    *cookie_out = migration_cookie_format(&c);
    FERRY_INFO("domain '%s' defined by an offline migration", d->name);
    return d;
}

gboolean migration_offline_confirm(MigrationEngine *e, const DriverDomain *dom, guint flags,
                                   gboolean cancelled, GError **error)
{
    if (cancelled || !(flags & MIGRATION_UNDEFINE_SOURCE))
        return TRUE;
    Driver *drv = &e->hv->base;
    if (!drv->ops->undefine(drv, dom, 0, error)) {
        g_prefix_error(error, "the domain was defined on the destination, but ");
        return FALSE;
    }
    FERRY_INFO("domain '%s' undefined after its offline migration", dom->name);
    return TRUE;
}

static gboolean require_feature(const MigrationPeerOps *ops, MigrationPeer *peer, int feature,
                                const char *what, GError **error)
{
    int r = ops->supports_feature(peer, feature, error);
    if (r == 0)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "the %s does not support %s", ops->describe(peer), what);
    return r > 0;
}

gboolean migration_offline_perform_p2p(MigrationEngine *e, const DriverDomain *dom,
                                       const char *dconnuri, GPtrArray *params, guint flags,
                                       GError **error)
{
    const MigrationPeerOps *ops = driver_get_migration_peer_ops();
    if (!ops) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "no way to reach a destination daemon");
        return FALSE;
    }
    g_autoptr(GBytes) cookie = NULL;
    g_autofree char *xml = migration_offline_begin(e, dom, params, &cookie, error);
    if (!xml)
        return FALSE;
    g_autoptr(GPtrArray) dparams = driver_params_copy(params);
    const char *dname = NULL;
    if (!driver_params_get_string(params, "destination_name", &dname, error))
        return FALSE;
    driver_params_add_string(dparams, "destination_xml", xml);
    if (!dname)
        driver_params_add_string(dparams, "destination_name", dom->name);

    const char *phase = "begin";
    gboolean ok = FALSE;
    MigrationPeer *peer = ops->open(dconnuri, error);
    if (peer) {
        g_autoptr(GBytes) pcookie = NULL, fcookie = NULL;
        g_autofree char *uri_out = NULL;
        phase = "prepare";
        if (require_feature(ops, peer, MIGRATION_FEATURE_V3, "migration protocol version 3",
                            error) &&
            require_feature(ops, peer, MIGRATION_FEATURE_PARAMS, "migration parameters", error) &&
            require_feature(ops, peer, MIGRATION_FEATURE_OFFLINE, "offline migration", error)) {
            if (!ops->prepare(peer, dparams, cookie, flags, &pcookie, &uri_out, error)) {
                g_prefix_error(error, "the destination refused: ");
            } else {
                phase = "finish";
                g_autoptr(DriverDomain) d =
                    ops->finish(peer, dparams, pcookie, flags, FALSE, &fcookie, error);
                ok = d != NULL;
            }
        }
        ops->close(peer);
    }
    if (!ok) {
        g_prefix_error(error, "offline migration failed in %s phase: ", phase);
        return FALSE;
    }
    return migration_offline_confirm(e, dom, flags, FALSE, error);
}
