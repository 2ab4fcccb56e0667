/* The XML of storage pools and volumes (storage-dir.c, storage-vol.c):
 * read without network access or DTDs and walked against a table of the
 * elements and attributes ferryd supports, anything else refused naming it;
 * and the small helpers both documents share. */
#pragma once

#include <glib.h>
#include <libxml/tree.h>

/* One supported element, by its path below the root ("" is the root,
 * "target/path"), with its attributes (space-separated). A table ends with
 * {NULL, NULL}. */
typedef struct {
    const char *path;
    const char *attrs;
} StorageSchemaEntry;

/* Parses a <root> document and checks it against the schema. Free with xmlFreeDoc(). */
xmlDoc *storage_xml_read(const char *xml, const char *root, const StorageSchemaEntry *schema,
                         GError **error);
xmlNode *storage_xml_child(const xmlNode *n, const char *name);
char *storage_xml_attr(const xmlNode *n, const char *name);
/* The stripped text of an element, NULL when it is absent. */
char *storage_xml_text(const xmlNode *n);
/* Appends `<name>text</name>` (escaped) on a line of its own. */
void storage_xml_append_element(GString *buf, int indent, const char *name, const char *text);

/* A pool or volume name is a file name: 1..255 characters, no '/', not '.' or '..'. */
gboolean storage_check_name(const char *name, const char *what, GError **error);
/* An octal <permissions><mode>; where names the element in the error. */
gboolean storage_parse_mode(const char *text, const char *where, guint *mode, GError **error);

/* Sets a FERRY_ERROR of code and returns FALSE. */
gboolean storage_fail(GError **error, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
