/* StorageDir: a daemon's storage pools of type `dir`, and their volumes (the
 * regular files in the pool's directory), as libvirt's storage driver keeps
 * them: what virt-install needs to put a guest's disk file in a directory it
 * names (`--disk path=/dir/disk.qcow2[,size=N]`), and what `virsh pool-*` and
 * `vol-*` show. Other pool types, cloning, upload, download, wiping and
 * resizing are refused naming them (docs/api.md, "Storage").
 *
 * On disk, as domains are kept (domain-store.h):
 *
 *   CONFIG_DIR/NAME.xml            a persistent pool's definition
 *   CONFIG_DIR/autostart/NAME.xml  symlink to ../NAME.xml: started with the daemon
 *   RUN_DIR/NAME.xml               a running pool (its definition: transient
 *                                  pools run across a daemon restart too)
 *
 * Volumes are not recorded: every call reads the pool's directory, so a
 * file created or removed behind the daemon's back is seen at once (refresh
 * has nothing to re-read).
 *
 * Lifetime: created by the daemon at start, freed at shutdown. Every call
 * takes the store's lock, so any thread may use it. */
#pragma once

#include <glib.h>

typedef struct _StorageDir StorageDir;

/* A pool and a volume as the RPC layer names them. */
typedef struct {
    char *name;
    guint8 uuid[16];
} StoragePoolRef;

typedef struct {
    char *pool;
    char *name;
    char *key; /* the volume's path, as libvirt keys a file volume */
} StorageVolRef;

void storage_pool_ref_free(StoragePoolRef *ref);
void storage_vol_ref_free(StorageVolRef *ref);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoragePoolRef, storage_pool_ref_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StorageVolRef, storage_vol_ref_free)

/* virStoragePoolState, virStorageVolType */
#define STORAGE_POOL_INACTIVE 0
#define STORAGE_POOL_RUNNING 2
#define STORAGE_VOL_FILE 0

typedef struct {
    int state;
    guint64 capacity, allocation, available; /* bytes, of the file system */
} StoragePoolInfo;

typedef struct {
    int type;
    guint64 capacity;   /* what the guest sees: a qcow2 image's virtual size */
    guint64 allocation; /* bytes in use on the host */
    guint64 physical;   /* the file's size */
} StorageVolInfo;

/* Creates both directories (mode 0700) if missing, loads the definitions
 * and marks running the pools that ran before (and the autostart ones). A
 * definition that cannot be read is logged and skipped. */
StorageDir *storage_dir_new(const char *config_dir, const char *run_dir, GError **error);
void storage_dir_free(StorageDir *sd);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StorageDir, storage_dir_free)

/* ---- pools ---- */

/* GPtrArray of StoragePoolRef*, by name; flags: virConnectListAllStoragePoolsFlags. */
GPtrArray *storage_dir_list_pools(StorageDir *sd, guint flags, GError **error);
/* Counts for the old list calls: running (active TRUE) or defined and stopped. */
guint storage_dir_count_pools(StorageDir *sd, gboolean active);
StoragePoolRef *storage_dir_pool_by_name(StorageDir *sd, const char *name, GError **error);
StoragePoolRef *storage_dir_pool_by_uuid(StorageDir *sd, const guint8 *uuid, GError **error);
StoragePoolRef *storage_dir_pool_by_target(StorageDir *sd, const char *path, GError **error);
StoragePoolRef *storage_dir_pool_by_volume(StorageDir *sd, const StorageVolRef *vol,
                                           GError **error);

/* define: a persistent pool, stopped; create_xml: a transient one, running.
 * flags: virStoragePoolCreateFlags (create_xml) or 0 (define). */
StoragePoolRef *storage_dir_define(StorageDir *sd, const char *xml, guint flags, GError **error);
StoragePoolRef *storage_dir_create_xml(StorageDir *sd, const char *xml, guint flags,
                                       GError **error);
gboolean storage_dir_pool_create(StorageDir *sd, const StoragePoolRef *pool, guint flags,
                                 GError **error);
gboolean storage_dir_pool_build(StorageDir *sd, const StoragePoolRef *pool, guint flags,
                                GError **error);
gboolean storage_dir_pool_destroy(StorageDir *sd, const StoragePoolRef *pool, GError **error);
gboolean storage_dir_pool_delete(StorageDir *sd, const StoragePoolRef *pool, guint flags,
                                 GError **error);
gboolean storage_dir_pool_undefine(StorageDir *sd, const StoragePoolRef *pool, GError **error);
gboolean storage_dir_pool_refresh(StorageDir *sd, const StoragePoolRef *pool, guint flags,
                                  GError **error);
gboolean storage_dir_pool_info(StorageDir *sd, const StoragePoolRef *pool, StoragePoolInfo *info,
                               GError **error);
char *storage_dir_pool_xml(StorageDir *sd, const StoragePoolRef *pool, guint flags, GError **error);
/* get_autostart, is_active, is_persistent: 0/1, or -1 on error */
int storage_dir_pool_get_autostart(StorageDir *sd, const StoragePoolRef *pool, GError **error);
gboolean storage_dir_pool_set_autostart(StorageDir *sd, const StoragePoolRef *pool,
                                        gboolean autostart, GError **error);
int storage_dir_pool_is_active(StorageDir *sd, const StoragePoolRef *pool, GError **error);
int storage_dir_pool_is_persistent(StorageDir *sd, const StoragePoolRef *pool, GError **error);

/* ---- volumes (of running pools) ---- */

/* GPtrArray of StorageVolRef*, by name. */
GPtrArray *storage_dir_list_volumes(StorageDir *sd, const StoragePoolRef *pool, GError **error);
StorageVolRef *storage_dir_vol_by_name(StorageDir *sd, const StoragePoolRef *pool, const char *name,
                                       GError **error);
/* The key of a file volume is its path. */
StorageVolRef *storage_dir_vol_by_path(StorageDir *sd, const char *path, GError **error);
/* flags: virStorageVolCreateFlags (PREALLOC_METADATA) */
StorageVolRef *storage_dir_vol_create(StorageDir *sd, const StoragePoolRef *pool, const char *xml,
                                      guint flags, GError **error);
gboolean storage_dir_vol_delete(StorageDir *sd, const StorageVolRef *vol, guint flags,
                                GError **error);
gboolean storage_dir_vol_info(StorageDir *sd, const StorageVolRef *vol, StorageVolInfo *info,
                              GError **error);
char *storage_dir_vol_xml(StorageDir *sd, const StorageVolRef *vol, guint flags, GError **error);
char *storage_dir_vol_path(StorageDir *sd, const StorageVolRef *vol, GError **error);
