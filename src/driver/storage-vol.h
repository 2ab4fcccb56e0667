/* One volume of a dir pool: a regular file of the pool's directory. Its
 * format and sizes, read from the file (a qcow2 image's virtual size from
 * its header); its XML; and its creation from a volume definition: a sparse
 * raw file, or a qcow2 image made by qemu-img. */
#pragma once

#include <glib.h>

typedef struct {
    const char *format; /* raw or qcow2 */
    guint64 capacity;   /* what the guest sees */
    guint64 allocation; /* bytes in use on the host */
    guint64 physical;   /* the file's size */
    guint mode;
    guint uid, gid;
} StorageVolFacts;

/* virStorageVolCreateFlags */
#define STORAGE_VOL_CREATE_PREALLOC_METADATA 1u

gboolean storage_vol_read_facts(const char *path, StorageVolFacts *f, GError **error);
char *storage_vol_format(const char *name, const char *path, const StorageVolFacts *f);
/* Creates the volume `xml` defines in dir, never over an existing file
 * (FERRY_ERR_STORAGE_VOL_EXIST); *name: its name. What the definition asks
 * and ferryd does not do is refused naming it. */
gboolean storage_vol_create(const char *dir, const char *xml, guint flags, char **name,
                            GError **error);
