/* Pool and volume XML: reading against a schema, and shared helpers
 * (storage-xml.h). */
#include "driver/storage-xml.h"

#include <string.h>

#include "driver/domain-def.h"
#include "util/error.h"

#define NAME_MAX_LEN 255

gboolean storage_fail(GError **error, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(error, FERRY_ERROR, code, msg);
    return FALSE;
}

static gboolean check_element(const StorageSchemaEntry *schema, const char *root, const xmlNode *el,
                              const char *path, GError **error)
{
    const StorageSchemaEntry *e = schema;
    while (e->path && !g_str_equal(e->path, path))
        e++;
    if (!e->path)
        return storage_fail(error, FERRY_ERR_CONFIG_UNSUPPORTED,
                            "ferryd's dir storage does not support <%s> (in <%s>/%s)",
                            (const char *)el->name, root, path);
    g_auto(GStrv) allowed = g_strsplit(e->attrs, " ", -1);
    for (const xmlAttr *a = el->properties; a; a = a->next)
        if (a->ns || !g_strv_contains((const char *const *)allowed, (const char *)a->name))
            return storage_fail(error, FERRY_ERR_CONFIG_UNSUPPORTED,
                                "ferryd's dir storage does not support attribute '%s' of <%s>",
                                (const char *)a->name, *path ? path : root);
    for (const xmlNode *c = el->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (c->ns)
            return storage_fail(error, FERRY_ERR_CONFIG_UNSUPPORTED,
                                "ferryd's dir storage does not support <%s:%s> in <%s>",
                                (const char *)c->ns->prefix, (const char *)c->name, root);
        g_autofree char *sub = *path ? g_strdup_printf("%s/%s", path, (const char *)c->name)
                                     : g_strdup((const char *)c->name);
        if (!check_element(schema, root, c, sub, error))
            return FALSE;
    }
    return TRUE;
}

xmlDoc *storage_xml_read(const char *xml, const char *root, const StorageSchemaEntry *schema,
                         GError **error)
{
    g_autofree char *what = g_strdup_printf("%s XML", root);
    xmlDoc *doc = domain_xml_read(xml, xml ? strlen(xml) : 0, what, error);
    if (!doc)
        return NULL;
    xmlNode *top = xmlDocGetRootElement(doc);
    if (!top || !xmlStrEqual(top->name, BAD_CAST root)) {
        storage_fail(error, FERRY_ERR_XML_ERROR, "expected a <%s> document, not <%s>", root,
                     top ? (const char *)top->name : "");
    } else if (check_element(schema, root, top, "", error)) {
        return doc;
    }
    xmlFreeDoc(doc);
    return NULL;
}

xmlNode *storage_xml_child(const xmlNode *n, const char *name)
{
    for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && xmlStrEqual(c->name, BAD_CAST name))
            return c;
    return NULL;
}

char *storage_xml_attr(const xmlNode *n, const char *name)
{
    xmlChar *v = n ? xmlGetProp(n, BAD_CAST name) : NULL;
    char *s = v ? g_strdup((const char *)v) : NULL;
    xmlFree(v);
    return s;
}

char *storage_xml_text(const xmlNode *n)
{
    if (!n)
        return NULL;
    xmlChar *c = xmlNodeGetContent(n);
    char *s = g_strstrip(g_strdup(c ? (const char *)c : ""));
    xmlFree(c);
    return s;
}

void storage_xml_append_element(GString *buf, int indent, const char *name, const char *text)
{
    g_autofree char *escaped = g_markup_escape_text(text, -1);
    g_string_append_printf(buf, "%*s<%s>%s</%s>\n", indent, "", name, escaped, name);
}

gboolean storage_check_name(const char *name, const char *what, GError **error)
{
    if (!name || !*name)
        return storage_fail(error, FERRY_ERR_XML_ERROR, "missing %s name", what);
    if (strchr(name, '/') || g_str_equal(name, ".") || g_str_equal(name, "..") ||
        strlen(name) > NAME_MAX_LEN || !g_utf8_validate(name, -1, NULL))
        return storage_fail(error, FERRY_ERR_XML_ERROR,
                            "invalid %s name '%s': a name is 1..%d characters, no '/', not "
                            "'.' or '..'",
                            what, name, NAME_MAX_LEN);
    return TRUE;
}

gboolean storage_parse_mode(const char *text, const char *where, guint *mode, GError **error)
{
    guint64 v = 0;
    if (!text || !g_ascii_string_to_unsigned(text, 8, 0, 07777, &v, NULL))
        return storage_fail(error, FERRY_ERR_XML_ERROR,
                            "invalid value '%s' for <%s>: expected an octal mode such as 0755",
                            text ? text : "", where);
    *mode = (guint)v;
    return TRUE;
}
