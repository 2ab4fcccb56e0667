/* UUIDs as libvirt uses them: 16 raw bytes on the wire, 36-character text in XML
 * and on the command line. */
#pragma once

#include <glib.h>

#define FERRY_UUID_LEN 16
/* 36 characters plus the terminating NUL. */
#define FERRY_UUID_STRING_LEN 37

/* Accepts "c7a5fdbd-edaf-9455-926a-d65c16db1809" and the same 32 hex digits
 * without dashes, in either case. Fails with FERRY_ERR_INVALID_ARG. */
gboolean ferry_uuid_parse(const char *str, guint8 uuid[FERRY_UUID_LEN], GError **error);

/* Writes the lower-case 8-4-4-4-12 form into out. */
void ferry_uuid_format(const guint8 uuid[FERRY_UUID_LEN], char out[FERRY_UUID_STRING_LEN]);

/* The same, newly allocated. */
char *ferry_uuid_to_string(const guint8 uuid[FERRY_UUID_LEN]);

/* A random (version 4) UUID from the kernel's random source. */
void ferry_uuid_generate(guint8 uuid[FERRY_UUID_LEN]);

gboolean ferry_uuid_is_null(const guint8 uuid[FERRY_UUID_LEN]);

/* GHashTable helpers for keys that are 16 raw bytes. */
guint ferry_uuid_hash(gconstpointer uuid);
gboolean ferry_uuid_equal(gconstpointer a, gconstpointer b);
