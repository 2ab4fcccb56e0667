/* The REMOTE program's storage procedures: the daemon's `dir` pools and
 * their volumes (driver/storage-dir.c), whatever driver the connection
 * opened, as libvirt's storage driver sits beside its hypervisor drivers.
 * What ferryd does not do with storage is refused naming the function. */
#include "remote/remote-storage.h"

#include <string.h>

#include "driver/storage-dir.h"
#include "remote/remote-procedure.h"
#include "remote/remote_protocol.h"
#include "util/error.h"

/* Set once by the daemon before it serves a client. */
static StorageDir *storage;

void remote_storage_set(StorageDir *sd)
{
    storage = sd;
}

static gboolean no_storage(GError **error)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT, "this ferryd keeps no storage pools");
    return FALSE;
}

#define NEED_STORAGE()                                                                             \
    do {                                                                                           \
        if (!storage)                                                                              \
            return no_storage(error);                                                              \
    } while (0)

/* ---- conversions: the wire's names for pools and volumes ---- */

static void pool_out(const StoragePoolRef *ref, remote_nonnull_storage_pool *out)
{
    out->name = g_strdup(ref->name);
    memcpy(out->uuid, ref->uuid, sizeof(out->uuid));
}

/* Borrows the client's strings for the call. */
static StoragePoolRef pool_in(const remote_nonnull_storage_pool *in)
{
    StoragePoolRef ref = {.name = in->name};
    memcpy(ref.uuid, in->uuid, sizeof(ref.uuid));
    return ref;
}

static void vol_out(const StorageVolRef *ref, remote_nonnull_storage_vol *out)
{
    out->pool = g_strdup(ref->pool);
    out->name = g_strdup(ref->name);
    out->key = g_strdup(ref->key);
}

static StorageVolRef vol_in(const remote_nonnull_storage_vol *in)
{
    return (StorageVolRef){.pool = in->pool, .name = in->name, .key = in->key};
}

static gboolean reply_pool(StoragePoolRef *ref, remote_storage_pool_ret *ret)
{
    if (!ref)
        return FALSE;
    pool_out(ref, &ret->pool);
    storage_pool_ref_free(ref);
    return TRUE;
}

static gboolean reply_vol(StorageVolRef *ref, remote_storage_vol_ret *ret)
{
    if (!ref)
        return FALSE;
    vol_out(ref, &ret->vol);
    storage_vol_ref_free(ref);
    return TRUE;
}

/* ---- pool lists ---- */

static gboolean h_num_of_pools(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    ((remote_num_ret *)r)->num = (int)storage_dir_count_pools(storage, TRUE);
    return TRUE;
}

static gboolean h_num_of_defined_pools(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    ((remote_num_ret *)r)->num = (int)storage_dir_count_pools(storage, FALSE);
    return TRUE;
}

#define LIST_INACTIVE 1u
#define LIST_ACTIVE 2u
#define LIST_PERSISTENT 4u

static gboolean list_names(guint flags, int max, remote_list_names_ret *ret, GError **error)
{
    NEED_STORAGE();
    if (!remote_check_list_max(max, error))
        return FALSE;
    g_autoptr(GPtrArray) pools = storage_dir_list_pools(storage, flags, error);
    if (!pools)
        return FALSE;
    guint n = MIN(pools->len, (guint)max);
    ret->names.names_len = n;
    ret->names.names_val = g_new0(remote_nonnull_string, MAX(n, 1));
    for (guint i = 0; i < n; i++)
        ret->names.names_val[i] = g_strdup(((StoragePoolRef *)pools->pdata[i])->name);
    return TRUE;
}

static gboolean h_list_pools(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return list_names(LIST_ACTIVE, ((remote_list_names_args *)a)->maxnames, r, error);
}

static gboolean h_list_defined_pools(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return list_names(LIST_INACTIVE | LIST_PERSISTENT, ((remote_list_names_args *)a)->maxnames, r,
                      error);
}

static gboolean h_list_all_pools(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    remote_list_all_args *args = a;
    remote_connect_list_all_storage_pools_ret *ret = r;
    g_autoptr(GPtrArray) pools = storage_dir_list_pools(storage, args->flags, error);
    if (!pools)
        return FALSE;
    ret->ret = pools->len;
    if (args->need_results) {
        ret->pools.pools_len = pools->len;
        ret->pools.pools_val = g_new0(remote_nonnull_storage_pool, MAX(pools->len, 1));
        for (guint i = 0; i < pools->len; i++)
            pool_out(pools->pdata[i], &ret->pools.pools_val[i]);
    }
    return TRUE;
}

/* ---- one pool ---- */

static gboolean h_pool_by_name(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    return reply_pool(
        storage_dir_pool_by_name(storage, ((remote_lookup_by_name_args *)a)->name, error), r);
}

static gboolean h_pool_by_uuid(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    return reply_pool(storage_dir_pool_by_uuid(
                          storage, (const guint8 *)((remote_lookup_by_uuid_args *)a)->uuid, error),
                      r);
}

static gboolean h_pool_by_target(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    return reply_pool(
        storage_dir_pool_by_target(storage, ((remote_lookup_by_name_args *)a)->name, error), r);
}

static gboolean h_pool_by_volume(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    StorageVolRef vol = vol_in(&((remote_storage_vol_args *)a)->vol);
    return reply_pool(storage_dir_pool_by_volume(storage, &vol, error), r);
}

static gboolean h_pool_create_xml(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    remote_define_xml_flags_args *args = a;
    return reply_pool(storage_dir_create_xml(storage, args->xml, args->flags, error), r);
}

static gboolean h_pool_define_xml(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    remote_define_xml_flags_args *args = a;
    return reply_pool(storage_dir_define(storage, args->xml, args->flags, error), r);
}

/* Procedures on one pool with flags: create, build, delete, refresh. */
#define POOL_FLAGS_CALL(fn, call)                                                                  \
    static gboolean fn(RemoteContext *ctx, void *a, void *r, GError **error)                       \
    {                                                                                              \
        NEED_STORAGE();                                                                            \
        remote_storage_pool_flags_args *args = a;                                                  \
        StoragePoolRef pool = pool_in(&args->pool);                                                \
        return call(storage, &pool, args->flags, error);                                           \
    }

POOL_FLAGS_CALL(h_pool_create, storage_dir_pool_create)
POOL_FLAGS_CALL(h_pool_build, storage_dir_pool_build)
POOL_FLAGS_CALL(h_pool_delete, storage_dir_pool_delete)
POOL_FLAGS_CALL(h_pool_refresh, storage_dir_pool_refresh)

#define POOL_CALL(fn, call)                                                                        \
    static gboolean fn(RemoteContext *ctx, void *a, void *r, GError **error)                       \
    {                                                                                              \
        NEED_STORAGE();                                                                            \
        StoragePoolRef pool = pool_in(&((remote_storage_pool_args *)a)->pool);                     \
        return call(storage, &pool, error);                                                        \
    }

POOL_CALL(h_pool_destroy, storage_dir_pool_destroy)
POOL_CALL(h_pool_undefine, storage_dir_pool_undefine)

#define POOL_INT_QUERY(fn, call)                                                                   \
    static gboolean fn(RemoteContext *ctx, void *a, void *r, GError **error)                       \
    {                                                                                              \
        NEED_STORAGE();                                                                            \
        StoragePoolRef pool = pool_in(&((remote_storage_pool_args *)a)->pool);                     \
        int v = call(storage, &pool, error);                                                       \
        ((remote_int_ret *)r)->value = v;                                                          \
        return v >= 0;                                                                             \
    }

POOL_INT_QUERY(h_pool_get_autostart, storage_dir_pool_get_autostart)
POOL_INT_QUERY(h_pool_is_active, storage_dir_pool_is_active)
POOL_INT_QUERY(h_pool_is_persistent, storage_dir_pool_is_persistent)

static gboolean h_pool_set_autostart(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    remote_storage_pool_set_autostart_args *args = a;
    StoragePoolRef pool = pool_in(&args->pool);
    return storage_dir_pool_set_autostart(storage, &pool, args->autostart != 0, error);
}

static gboolean h_pool_get_info(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    StoragePoolRef pool = pool_in(&((remote_storage_pool_args *)a)->pool);
    remote_storage_pool_get_info_ret *ret = r;
    StoragePoolInfo info;
    if (!storage_dir_pool_info(storage, &pool, &info, error))
        return FALSE;
    ret->state = (u_char)info.state;
    ret->capacity = info.capacity;
    ret->allocation = info.allocation;
    ret->available = info.available;
    return TRUE;
}

static gboolean h_pool_get_xml(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    remote_storage_pool_flags_args *args = a;
    StoragePoolRef pool = pool_in(&args->pool);
    char *xml = storage_dir_pool_xml(storage, &pool, args->flags, error);
    ((remote_domain_get_xml_desc_ret *)r)->xml = xml;
    return xml != NULL;
}

/* ---- a pool's volumes ---- */

static gboolean h_num_of_volumes(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    StoragePoolRef pool = pool_in(&((remote_storage_pool_args *)a)->pool);
    g_autoptr(GPtrArray) vols = storage_dir_list_volumes(storage, &pool, error);
    if (!vols)
        return FALSE;
    ((remote_num_ret *)r)->num = (int)vols->len;
    return TRUE;
}

static gboolean h_list_volumes(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    remote_storage_pool_list_volumes_args *args = a;
    remote_list_names_ret *ret = r;
    if (!remote_check_list_max(args->maxnames, error))
        return FALSE;
    StoragePoolRef pool = pool_in(&args->pool);
    g_autoptr(GPtrArray) vols = storage_dir_list_volumes(storage, &pool, error);
    if (!vols)
        return FALSE;
    guint n = MIN(vols->len, (guint)args->maxnames);
    ret->names.names_len = n;
    ret->names.names_val = g_new0(remote_nonnull_string, MAX(n, 1));
    for (guint i = 0; i < n; i++)
        ret->names.names_val[i] = g_strdup(((StorageVolRef *)vols->pdata[i])->name);
    return TRUE;
}

static gboolean h_list_all_volumes(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    remote_storage_pool_list_all_volumes_args *args = a;
    remote_storage_pool_list_all_volumes_ret *ret = r;
    if (args->flags) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function virStoragePoolListAllVolumes",
                    args->flags);
        return FALSE;
    }
    StoragePoolRef pool = pool_in(&args->pool);
    g_autoptr(GPtrArray) vols = storage_dir_list_volumes(storage, &pool, error);
    if (!vols)
        return FALSE;
    if (vols->len > REMOTE_OBJECT_LIST_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "too many volumes (%u) for one reply",
                    vols->len);
        return FALSE;
    }
    ret->ret = vols->len;
    if (args->need_results) {
        ret->vols.vols_len = vols->len;
        ret->vols.vols_val = g_new0(remote_nonnull_storage_vol, MAX(vols->len, 1));
        for (guint i = 0; i < vols->len; i++)
            vol_out(vols->pdata[i], &ret->vols.vols_val[i]);
    }
    return TRUE;
}

/* ---- one volume ---- */

static gboolean h_vol_by_name(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    remote_storage_vol_lookup_by_name_args *args = a;
    StoragePoolRef pool = pool_in(&args->pool);
    return reply_vol(storage_dir_vol_by_name(storage, &pool, args->name, error), r);
}

/* A file volume's key is its path. */
static gboolean h_vol_by_path(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    return reply_vol(
        storage_dir_vol_by_path(storage, ((remote_lookup_by_name_args *)a)->name, error), r);
}

static gboolean h_vol_by_key(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    const char *key = ((remote_lookup_by_name_args *)a)->name;
    g_autoptr(GError) e = NULL;
    StorageVolRef *vol = storage_dir_vol_by_path(storage, key, &e);
    if (!vol)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_STORAGE_VOL,
                    "no storage vol with matching key '%s'", key);
    return reply_vol(vol, r);
}

static gboolean h_vol_create_xml(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    remote_storage_vol_create_xml_args *args = a;
    StoragePoolRef pool = pool_in(&args->pool);
    return reply_vol(storage_dir_vol_create(storage, &pool, args->xml, args->flags, error), r);
}

static gboolean h_vol_delete(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    remote_storage_vol_flags_args *args = a;
    StorageVolRef vol = vol_in(&args->vol);
    return storage_dir_vol_delete(storage, &vol, args->flags, error);
}

/* virStorageVolGetInfoFlags: VIR_STORAGE_VOL_GET_PHYSICAL reports the
 * file's size where the allocation goes; virStorageVolGetInfo has no flags. */
#define VOL_GET_PHYSICAL 1u

static gboolean vol_info(const remote_nonnull_storage_vol *rvol, guint flags,
                         remote_storage_vol_get_info_ret *ret, GError **error)
{
    NEED_STORAGE();
    if (flags & ~VOL_GET_PHYSICAL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function virStorageVolGetInfoFlags",
                    flags & ~VOL_GET_PHYSICAL);
        return FALSE;
    }
    StorageVolRef vol = vol_in(rvol);
    StorageVolInfo info;
    if (!storage_dir_vol_info(storage, &vol, &info, error))
        return FALSE;
    ret->type = (char)info.type;
    ret->capacity = info.capacity;
    ret->allocation = (flags & VOL_GET_PHYSICAL) ? info.physical : info.allocation;
    return TRUE;
}

static gboolean h_vol_get_info(RemoteContext *ctx, void *a, void *r, GError **error)
{
    return vol_info(&((remote_storage_vol_args *)a)->vol, 0, r, error);
}

static gboolean h_vol_get_info_flags(RemoteContext *ctx, void *a, void *r, GError **error)
{
    remote_storage_vol_flags_args *args = a;
    return vol_info(&args->vol, args->flags, r, error);
}

static gboolean h_vol_get_xml(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    remote_storage_vol_flags_args *args = a;
    StorageVolRef vol = vol_in(&args->vol);
    char *xml = storage_dir_vol_xml(storage, &vol, args->flags, error);
    ((remote_domain_get_xml_desc_ret *)r)->xml = xml;
    return xml != NULL;
}

static gboolean h_vol_get_path(RemoteContext *ctx, void *a, void *r, GError **error)
{
    NEED_STORAGE();
    StorageVolRef vol = vol_in(&((remote_storage_vol_args *)a)->vol);
    char *path = storage_dir_vol_path(storage, &vol, error);
    ((remote_domain_get_xml_desc_ret *)r)->xml = path;
    return path != NULL;
}

/* ---- what ferryd does not do with storage ---- */

static gboolean refuse(GError **error, const char *function, const char *why)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_SUPPORT,
                "%s: %s (ferryd's storage is dir pools of files; see docs/api.md)", function, why);
    return FALSE;
}

#define REFUSE(fn, function, why)                                                                  \
    static gboolean fn(RemoteContext *ctx, void *a, void *r, GError **error)                       \
    {                                                                                              \
        return refuse(error, function, why);                                                       \
    }

REFUSE(h_find_sources, "virConnectFindStoragePoolSources", "a dir pool has no source to discover")
REFUSE(h_vol_create_from, "virStorageVolCreateXMLFrom", "ferryd does not clone volumes")
REFUSE(h_vol_wipe, "virStorageVolWipe", "ferryd does not wipe volumes")
REFUSE(h_vol_wipe_pattern, "virStorageVolWipePattern", "ferryd does not wipe volumes")
REFUSE(h_vol_resize, "virStorageVolResize", "ferryd does not resize volumes")
REFUSE(h_vol_upload, "virStorageVolUpload", "ferryd does not stream volumes")
REFUSE(h_vol_download, "virStorageVolDownload", "ferryd does not stream volumes")

static const RemoteProcedure procedures[] = {
    {REMOTE_PROC_CONNECT_NUM_OF_STORAGE_POOLS, "CONNECT_NUM_OF_STORAGE_POOLS", VOID,
     X(remote_num_ret), h_num_of_pools, 0},
    {REMOTE_PROC_CONNECT_NUM_OF_DEFINED_STORAGE_POOLS, "CONNECT_NUM_OF_DEFINED_STORAGE_POOLS", VOID,
     X(remote_num_ret), h_num_of_defined_pools, 0},
    {REMOTE_PROC_CONNECT_LIST_STORAGE_POOLS, "CONNECT_LIST_STORAGE_POOLS",
     X(remote_list_names_args), X(remote_list_names_ret), h_list_pools, 0},
    {REMOTE_PROC_CONNECT_LIST_DEFINED_STORAGE_POOLS, "CONNECT_LIST_DEFINED_STORAGE_POOLS",
     X(remote_list_names_args), X(remote_list_names_ret), h_list_defined_pools, 0},
    {REMOTE_PROC_CONNECT_LIST_ALL_STORAGE_POOLS, "CONNECT_LIST_ALL_STORAGE_POOLS",
     X(remote_list_all_args), X(remote_connect_list_all_storage_pools_ret), h_list_all_pools, 0},
    {REMOTE_PROC_CONNECT_FIND_STORAGE_POOL_SOURCES, "CONNECT_FIND_STORAGE_POOL_SOURCES",
     X(remote_connect_find_storage_pool_sources_args), X(remote_define_xml_args), h_find_sources,
     0},
    {REMOTE_PROC_STORAGE_POOL_CREATE_XML, "STORAGE_POOL_CREATE_XML",
     X(remote_define_xml_flags_args), X(remote_storage_pool_ret), h_pool_create_xml, PROC_WRITE},
    {REMOTE_PROC_STORAGE_POOL_DEFINE_XML, "STORAGE_POOL_DEFINE_XML",
     X(remote_define_xml_flags_args), X(remote_storage_pool_ret), h_pool_define_xml, PROC_WRITE},
    {REMOTE_PROC_STORAGE_POOL_CREATE, "STORAGE_POOL_CREATE", X(remote_storage_pool_flags_args),
     VOID, h_pool_create, PROC_WRITE},
    {REMOTE_PROC_STORAGE_POOL_BUILD, "STORAGE_POOL_BUILD", X(remote_storage_pool_flags_args), VOID,
     h_pool_build, PROC_WRITE},
    {REMOTE_PROC_STORAGE_POOL_DESTROY, "STORAGE_POOL_DESTROY", X(remote_storage_pool_args), VOID,
     h_pool_destroy, PROC_WRITE},
    {REMOTE_PROC_STORAGE_POOL_DELETE, "STORAGE_POOL_DELETE", X(remote_storage_pool_flags_args),
     VOID, h_pool_delete, PROC_WRITE},
    {REMOTE_PROC_STORAGE_POOL_UNDEFINE, "STORAGE_POOL_UNDEFINE", X(remote_storage_pool_args), VOID,
     h_pool_undefine, PROC_WRITE},
    {REMOTE_PROC_STORAGE_POOL_REFRESH, "STORAGE_POOL_REFRESH", X(remote_storage_pool_flags_args),
     VOID, h_pool_refresh, PROC_WRITE},
    {REMOTE_PROC_STORAGE_POOL_LOOKUP_BY_NAME, "STORAGE_POOL_LOOKUP_BY_NAME",
     X(remote_lookup_by_name_args), X(remote_storage_pool_ret), h_pool_by_name, 0},
    {REMOTE_PROC_STORAGE_POOL_LOOKUP_BY_UUID, "STORAGE_POOL_LOOKUP_BY_UUID",
     X(remote_lookup_by_uuid_args), X(remote_storage_pool_ret), h_pool_by_uuid, 0},
    {REMOTE_PROC_STORAGE_POOL_LOOKUP_BY_TARGET_PATH, "STORAGE_POOL_LOOKUP_BY_TARGET_PATH",
     X(remote_lookup_by_name_args), X(remote_storage_pool_ret), h_pool_by_target, 0},
    {REMOTE_PROC_STORAGE_POOL_LOOKUP_BY_VOLUME, "STORAGE_POOL_LOOKUP_BY_VOLUME",
     X(remote_storage_vol_args), X(remote_storage_pool_ret), h_pool_by_volume, 0},
    {REMOTE_PROC_STORAGE_POOL_GET_INFO, "STORAGE_POOL_GET_INFO", X(remote_storage_pool_args),
     X(remote_storage_pool_get_info_ret), h_pool_get_info, 0},
    {REMOTE_PROC_STORAGE_POOL_GET_XML_DESC, "STORAGE_POOL_GET_XML_DESC",
     X(remote_storage_pool_flags_args), X(remote_domain_get_xml_desc_ret), h_pool_get_xml, 0},
    {REMOTE_PROC_STORAGE_POOL_GET_AUTOSTART, "STORAGE_POOL_GET_AUTOSTART",
     X(remote_storage_pool_args), X(remote_int_ret), h_pool_get_autostart, 0},
    {REMOTE_PROC_STORAGE_POOL_SET_AUTOSTART, "STORAGE_POOL_SET_AUTOSTART",
     X(remote_storage_pool_set_autostart_args), VOID, h_pool_set_autostart, PROC_WRITE},
    {REMOTE_PROC_STORAGE_POOL_IS_ACTIVE, "STORAGE_POOL_IS_ACTIVE", X(remote_storage_pool_args),
     X(remote_int_ret), h_pool_is_active, 0},
    {REMOTE_PROC_STORAGE_POOL_IS_PERSISTENT, "STORAGE_POOL_IS_PERSISTENT",
     X(remote_storage_pool_args), X(remote_int_ret), h_pool_is_persistent, 0},
    {REMOTE_PROC_STORAGE_POOL_NUM_OF_VOLUMES, "STORAGE_POOL_NUM_OF_VOLUMES",
     X(remote_storage_pool_args), X(remote_num_ret), h_num_of_volumes, 0},
    {REMOTE_PROC_STORAGE_POOL_LIST_VOLUMES, "STORAGE_POOL_LIST_VOLUMES",
     X(remote_storage_pool_list_volumes_args), X(remote_list_names_ret), h_list_volumes, 0},
    {REMOTE_PROC_STORAGE_POOL_LIST_ALL_VOLUMES, "STORAGE_POOL_LIST_ALL_VOLUMES",
     X(remote_storage_pool_list_all_volumes_args), X(remote_storage_pool_list_all_volumes_ret),
     h_list_all_volumes, 0},
    {REMOTE_PROC_STORAGE_VOL_LOOKUP_BY_NAME, "STORAGE_VOL_LOOKUP_BY_NAME",
     X(remote_storage_vol_lookup_by_name_args), X(remote_storage_vol_ret), h_vol_by_name, 0},
    {REMOTE_PROC_STORAGE_VOL_LOOKUP_BY_KEY, "STORAGE_VOL_LOOKUP_BY_KEY",
     X(remote_lookup_by_name_args), X(remote_storage_vol_ret), h_vol_by_key, 0},
    {REMOTE_PROC_STORAGE_VOL_LOOKUP_BY_PATH, "STORAGE_VOL_LOOKUP_BY_PATH",
     X(remote_lookup_by_name_args), X(remote_storage_vol_ret), h_vol_by_path, 0},
    {REMOTE_PROC_STORAGE_VOL_CREATE_XML, "STORAGE_VOL_CREATE_XML",
     X(remote_storage_vol_create_xml_args), X(remote_storage_vol_ret), h_vol_create_xml,
     PROC_WRITE},
    {REMOTE_PROC_STORAGE_VOL_DELETE, "STORAGE_VOL_DELETE", X(remote_storage_vol_flags_args), VOID,
     h_vol_delete, PROC_WRITE},
    {REMOTE_PROC_STORAGE_VOL_GET_INFO, "STORAGE_VOL_GET_INFO", X(remote_storage_vol_args),
     X(remote_storage_vol_get_info_ret), h_vol_get_info, 0},
    {REMOTE_PROC_STORAGE_VOL_GET_INFO_FLAGS, "STORAGE_VOL_GET_INFO_FLAGS",
     X(remote_storage_vol_flags_args), X(remote_storage_vol_get_info_ret), h_vol_get_info_flags, 0},
    {REMOTE_PROC_STORAGE_VOL_GET_XML_DESC, "STORAGE_VOL_GET_XML_DESC",
     X(remote_storage_vol_flags_args), X(remote_domain_get_xml_desc_ret), h_vol_get_xml, 0},
    {REMOTE_PROC_STORAGE_VOL_GET_PATH, "STORAGE_VOL_GET_PATH", X(remote_storage_vol_args),
     X(remote_domain_get_xml_desc_ret), h_vol_get_path, 0},
    {REMOTE_PROC_STORAGE_VOL_CREATE_XML_FROM, "STORAGE_VOL_CREATE_XML_FROM",
     X(remote_storage_vol_create_xml_from_args), X(remote_storage_vol_ret), h_vol_create_from,
     PROC_WRITE},
    {REMOTE_PROC_STORAGE_VOL_WIPE, "STORAGE_VOL_WIPE", X(remote_storage_vol_flags_args), VOID,
     h_vol_wipe, PROC_WRITE},
    {REMOTE_PROC_STORAGE_VOL_WIPE_PATTERN, "STORAGE_VOL_WIPE_PATTERN",
     X(remote_storage_vol_wipe_pattern_args), VOID, h_vol_wipe_pattern, PROC_WRITE},
    {REMOTE_PROC_STORAGE_VOL_RESIZE, "STORAGE_VOL_RESIZE", X(remote_storage_vol_resize_args), VOID,
     h_vol_resize, PROC_WRITE},
    {REMOTE_PROC_STORAGE_VOL_UPLOAD, "STORAGE_VOL_UPLOAD", X(remote_storage_vol_transfer_args),
     VOID, h_vol_upload, PROC_WRITE},
    {REMOTE_PROC_STORAGE_VOL_DOWNLOAD, "STORAGE_VOL_DOWNLOAD", X(remote_storage_vol_transfer_args),
     VOID, h_vol_download, PROC_WRITE},
};

const RemoteProcedure *remote_storage_procedures(guint *n)
{
    *n = G_N_ELEMENTS(procedures);
    return procedures;
}
