/* The cookie's XML, read with the same safe reader as domain XML. */
#include "driver/migration-cookie.h"

#include <string.h>

#include <libxml/tree.h>

#include "driver/domain-def.h"
#include "driver/driver.h"
#include "driver/migration-engine.h"
#include "util/error.h"
#include "util/uuid.h"

void migration_cookie_clear(MigrationCookie *c)
{
    g_free(c->daemon_id);
    g_free(c->digest);
    g_free(c->token);
    g_free(c->record_id);
    g_free(c->resume_token);
    if (c->disks)
        g_ptr_array_unref(c->disks);
    memset(c, 0, sizeof(*c));
}

GBytes *migration_cookie_format(const MigrationCookieContent *c)
{
    g_autofree char *u = ferry_uuid_to_string(c->uuid);
    g_autofree char *host = driver_node_get_hostname();
    GString *s = g_string_new("<ferry-migration>\n");
    g_autofree char *ename = g_markup_escape_text(c->name, -1);
    g_autofree char *ehost = g_markup_escape_text(host, -1);
    g_string_append_printf(s, "  <name>%s</name>\n  <uuid>%s</uuid>\n  <hostname>%s</hostname>\n",
                           ename, u, ehost);
    g_string_append(s, "  <daemon");
    domain_xml_append_attr(s, "id", c->daemon_id);
    g_string_append(s, "/>\n");
    if (c->tunnel)
        g_string_append_printf(s, "  <tunnel credit='yes' window='%d' packet='%d'/>\n",
                               MIGRATION_WINDOW, MIGRATION_PACKET_SIZE);
    if (c->token) {
        g_string_append(s, "  <data");
        domain_xml_append_attr(s, "token", c->token);
        g_string_append(s, "/>\n");
    }
    if (c->resume_timeout) {
        g_string_append_printf(s, "  <resume timeout='%u'", c->resume_timeout);
        if (c->resume_token)
            domain_xml_append_attr(s, "token", c->resume_token);
        g_string_append(s, "/>\n");
    }
    if (c->digest) {
        g_string_append(s, "  <statistics");
        domain_xml_append_attr(s, "digest", c->digest);
        g_string_append_printf(s, " downtime='%" G_GUINT64_FORMAT "'/>\n", c->downtime_ms);
    }
    if (c->record_id) {
        g_string_append(s, "  <flight");
        domain_xml_append_attr(s, "record", c->record_id);
        g_string_append(s, "/>\n");
    }
    if (c->postcopy)
        g_string_append(s, "  <postcopy/>\n");
    if (c->parallel > 1)
        g_string_append_printf(s, "  <parallel connections='%u'/>\n", c->parallel);
    if (c->disks) {
        g_string_append_printf(s, "  <storage inc='%s'>\n", c->storage_inc ? "yes" : "no");
        for (guint i = 0; i < c->disks->len; i++) {
            const MigrationDisk *d = c->disks->pdata[i];
            g_string_append(s, "    <disk");
            domain_xml_append_attr(s, "target", d->target);
            domain_xml_append_attr(s, "format", d->format);
            g_string_append_printf(s, " capacity='%" G_GUINT64_FORMAT "'", d->capacity);
            if (d->backing)
                domain_xml_append_attr(s, "backing", d->backing);
            if (d->backing_format)
                domain_xml_append_attr(s, "backing_format", d->backing_format);
            g_string_append(s, "/>\n");
        }
        g_string_append(s, "  </storage>\n");
    }
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

static guint64 prop_u64(xmlNode *n, const char *name)
{
    g_autofree char *v = prop(n, name);
    guint64 out = 0;
    if (!v || !g_ascii_string_to_unsigned(v, 10, 0, G_MAXUINT64, &out, NULL))
        return 0;
    return out;
}

static gboolean record_id_is_valid(const char *id)
{
    if (!id || !*id || strlen(id) > 64)
        return FALSE;
    for (const char *p = id; *p; p++)
        if (!g_ascii_isxdigit(*p) && *p != '-')
            return FALSE;
    return TRUE;
}

/* A disk's target and formats end up in file names and QMP commands: plain
 * words only. */
static gboolean is_word(const char *s)
{
    if (!s || !*s || strlen(s) > 32)
        return FALSE;
    for (const char *p = s; *p; p++)
        if (!g_ascii_isalnum(*p) && *p != '_' && *p != '-')
            return FALSE;
    return TRUE;
}

static gboolean parse_storage(xmlNode *storage, MigrationCookie *c, GError **error)
{
    g_autofree char *inc = prop(storage, "inc");
    c->storage_inc = g_strcmp0(inc, "yes") == 0;
    if (c->disks)
        g_ptr_array_unref(c->disks);
    c->disks = migration_disks_new();
    for (xmlNode *n = storage->children; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE || !xmlStrEqual(n->name, BAD_CAST "disk"))
            continue;
        g_autoptr(MigrationDisk) d = migration_disk_new();
        d->target = prop(n, "target");
        d->format = prop(n, "format");
        d->capacity = prop_u64(n, "capacity");
        d->backing = prop(n, "backing");
        d->backing_format = prop(n, "backing_format");
        if (!is_word(d->target) || !is_word(d->format) ||
            (d->backing_format && !is_word(d->backing_format)) ||
            c->disks->len >= MIGRATION_STORAGE_MAX_DISKS) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "the migration cookie names a disk ferry cannot copy ('%s')",
                        d->target ? d->target : "");
            return FALSE;
        }
        g_ptr_array_add(c->disks, g_steal_pointer(&d));
    }
    return TRUE;
}

gboolean migration_cookie_parse(GBytes *bytes, MigrationCookie *c, GError **error)
{
    memset(c, 0, sizeof(*c));
    gsize len = 0;
    const char *data = bytes ? g_bytes_get_data(bytes, &len) : NULL;
    while (len > 0 && data[len - 1] == '\0')
        len--;
    if (!len)
        return TRUE;
    xmlDoc *doc = domain_xml_read(data, len, "migration cookie", error);
    if (!doc)
        return FALSE;
    xmlNode *root = xmlDocGetRootElement(doc);
    if (root && xmlStrEqual(root->name, BAD_CAST "ferry-migration")) {
        c->ferry = TRUE;
        for (xmlNode *n = root->children; n; n = n->next) {
            if (n->type != XML_ELEMENT_NODE)
                continue;
            if (xmlStrEqual(n->name, BAD_CAST "daemon")) {
                g_free(c->daemon_id);
                c->daemon_id = prop(n, "id");
            } else if (xmlStrEqual(n->name, BAD_CAST "tunnel")) {
                g_autofree char *credit = prop(n, "credit");
                c->credit = g_strcmp0(credit, "yes") == 0;
                c->window = prop_u64(n, "window");
                c->packet = prop_u64(n, "packet");
            } else if (xmlStrEqual(n->name, BAD_CAST "data")) {
                g_free(c->token);
                c->token = prop(n, "token");
            } else if (xmlStrEqual(n->name, BAD_CAST "resume")) {
                c->resume_timeout = (guint)MIN(prop_u64(n, "timeout"), 3600);
                g_free(c->resume_token);
                c->resume_token = prop(n, "token");
                if (c->resume_token && strlen(c->resume_token) > 64)
                    g_clear_pointer(&c->resume_token, g_free);
            } else if (xmlStrEqual(n->name, BAD_CAST "statistics")) {
                g_free(c->digest);
                c->digest = prop(n, "digest");
                c->downtime_ms = prop_u64(n, "downtime");
            } else if (xmlStrEqual(n->name, BAD_CAST "postcopy")) {
                c->postcopy = TRUE;
            } else if (xmlStrEqual(n->name, BAD_CAST "parallel")) {
                guint64 n_conn = prop_u64(n, "connections");
                /* out of range: as absent, one stream */
                c->parallel = n_conn >= 2 && n_conn <= MIGRATION_MAX_CONNECTIONS ? (guint)n_conn : 0;
            } else if (xmlStrEqual(n->name, BAD_CAST "storage")) {
                if (!parse_storage(n, c, error)) {
                    xmlFreeDoc(doc);
                    return FALSE;
                }
            } else if (xmlStrEqual(n->name, BAD_CAST "flight")) {
                g_free(c->record_id);
                c->record_id = prop(n, "record");
                if (!record_id_is_valid(c->record_id)) /* it names files: a plain token only */
                    g_clear_pointer(&c->record_id, g_free);
            }
        }
    }
    xmlFreeDoc(doc);
    return TRUE;
}

void migration_cookie_tunnel_config(const MigrationCookie *peer, TunnelRole role,
                                    const char *peer_name, const char *vmm_name,
                                    TunnelStreamConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->role = role;
    cfg->peer_name = peer_name;
    cfg->vmm_name = vmm_name;
    if (peer->ferry && peer->credit && peer->window >= 65536 && peer->packet >= 65536) {
        cfg->credit = TRUE;
        cfg->packet_size = MIN((gsize)peer->packet, (gsize)MIGRATION_PACKET_SIZE);
        cfg->peer_window = MIN((gsize)peer->window, (gsize)64 * 1024 * 1024);
        cfg->window = MIGRATION_WINDOW;
    } else {
        cfg->credit = FALSE;
        cfg->packet_size = 65536; /* what libvirt peers send and expect */
        cfg->window = 4 * 65536;
        cfg->send_queue_limit = 4 * 65536;
    }
}
