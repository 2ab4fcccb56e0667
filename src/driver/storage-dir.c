/* A daemon's `dir` storage pools and their file volumes (storage-dir.h). */
#include "driver/storage-dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libxml/tree.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "driver/storage-vol.h"
#include "driver/storage-xml.h"
#include "util/error.h"
#include "util/log.h"
#include "util/uuid.h"

#define FERRY_LOG_MODULE "storage"

/* virConnectListAllStoragePoolsFlags */
#define LIST_INACTIVE 1u
#define LIST_ACTIVE 2u
#define LIST_PERSISTENT 4u
#define LIST_TRANSIENT 8u
#define LIST_AUTOSTART 16u
#define LIST_NO_AUTOSTART 32u
#define LIST_TYPE_DIR 64u
#define LIST_TYPES 0xfffc0u /* DIR (64) ... ISCSI_DIRECT (524288) */
/* virStoragePoolCreateFlags */
#define CREATE_WITH_BUILD 1u
/* virStoragePoolBuildFlags: 0 is NEW */
/* virStorageXMLFlags */
#define XML_INACTIVE 1u

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)

typedef struct {
    char *name;
    guint8 uuid[FERRY_UUID_LEN];
    char *target; /* absolute, no trailing or doubled '/' */
    guint mode;   /* of the directory pool-build makes: <permissions><mode> */
    gboolean has_mode;
    gboolean persistent, active, autostart;
} Pool;

struct _StorageDir {
    GMutex lock;
    char *config_dir, *autostart_dir, *run_dir;
    GPtrArray *pools; /* Pool*, in definition order */
};

static void pool_free(gpointer p)
{
    Pool *pool = p;
    g_free(pool->name);
    g_free(pool->target);
    g_free(pool);
}

void storage_pool_ref_free(StoragePoolRef *ref)
{
    if (!ref)
        return;
    g_free(ref->name);
    g_free(ref);
}

void storage_vol_ref_free(StorageVolRef *ref)
{
    if (!ref)
        return;
    g_free(ref->pool);
    g_free(ref->name);
    g_free(ref->key);
    g_free(ref);
}

static StoragePoolRef *pool_ref(const Pool *pool)
{
    StoragePoolRef *ref = g_new0(StoragePoolRef, 1);
    ref->name = g_strdup(pool->name);
    memcpy(ref->uuid, pool->uuid, FERRY_UUID_LEN);
    return ref;
}

static StorageVolRef *vol_ref(const Pool *pool, const char *name)
{
    StorageVolRef *ref = g_new0(StorageVolRef, 1);
    ref->pool = g_strdup(pool->name);
    ref->name = g_strdup(name);
    ref->key = g_build_filename(pool->target, name, NULL);
    return ref;
}

/* ---- errors ---- */

static gboolean refuse_flags(GError **error, guint flags, guint known, const char *function)
{
    if (flags & ~known)
        return storage_fail(error, FERRY_ERR_INVALID_ARG, "unsupported flags (0x%x) in function %s",
                            flags & ~known, function);
    return TRUE;
}

/* ---- the XML we accept: every element and attribute by name ---- */

static const StorageSchemaEntry pool_schema[] = {
    {"", "type"},
    {"name", ""},
    {"uuid", ""},
    /* Output only: libvirt ignores them in a definition, and so do we. */
    {"capacity", "unit"},
    {"allocation", "unit"},
    {"available", "unit"},
    {"source", ""},
    {"target", ""},
    {"target/path", ""},
    {"target/permissions", ""},
    {"target/permissions/mode", ""},
    {NULL, NULL},
};

/* An absolute path without doubled or trailing '/', as libvirt keeps target paths. */
static char *sanitize_path(const char *path)
{
    GString *out = g_string_new(NULL);
    for (const char *p = path; *p; p++)
        if (*p != '/' || out->len == 0 || out->str[out->len - 1] != '/')
            g_string_append_c(out, *p);
    if (out->len > 1 && out->str[out->len - 1] == '/')
        g_string_truncate(out, out->len - 1);
    return g_string_free(out, FALSE);
}

static Pool *pool_parse(const char *xml, GError **error)
{
    g_autoptr(xmlDoc) doc = storage_xml_read(xml, "pool", pool_schema, error);
    if (!doc)
        return NULL;
    xmlNode *top = xmlDocGetRootElement(doc);
    g_autofree char *type = storage_xml_attr(top, "type");
    if (!type) {
        storage_fail(error, FERRY_ERR_XML_ERROR, "storage pool missing type attribute");
        return NULL;
    }
    if (!g_str_equal(type, "dir")) {
        storage_fail(error, FERRY_ERR_CONFIG_UNSUPPORTED,
                     "storage pool type '%s': ferryd has only 'dir' pools (a directory of files)",
                     type);
        return NULL;
    }
    g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(pool_free);
    Pool *pool = g_new0(Pool, 1);
    g_ptr_array_add(keep, pool);
    pool->name = storage_xml_text(storage_xml_child(top, "name"));
    if (!storage_check_name(pool->name, "storage pool", error))
        return NULL;
    g_autofree char *uuid = storage_xml_text(storage_xml_child(top, "uuid"));
    if (uuid && *uuid) {
        if (!ferry_uuid_parse(uuid, pool->uuid, error))
            return NULL;
    } else {
        ferry_uuid_generate(pool->uuid);
    }
    /* <source> has no children or attributes: the schema refused any. */
    xmlNode *target = storage_xml_child(top, "target");
    g_autofree char *path = storage_xml_text(storage_xml_child(target, "path"));
    if (!path || !*path) {
        storage_fail(error, FERRY_ERR_XML_ERROR, "missing storage pool target path");
        return NULL;
    }
    if (path[0] != '/') {
        storage_fail(error, FERRY_ERR_XML_ERROR, "storage pool target path '%s' is not absolute",
                     path);
        return NULL;
    }
    pool->target = sanitize_path(path);
    xmlNode *mode = storage_xml_child(storage_xml_child(target, "permissions"), "mode");
    if (mode) {
        g_autofree char *m = storage_xml_text(mode);
        if (!storage_parse_mode(m, "pool/target/permissions/mode", &pool->mode, error))
            return NULL;
        pool->has_mode = TRUE;
    }
    return g_ptr_array_steal_index(keep, 0);
}

static char *pool_format(const Pool *pool, const StoragePoolInfo *info)
{
    GString *buf = g_string_new("<pool type='dir'>\n");
    storage_xml_append_element(buf, 2, "name", pool->name);
    g_autofree char *uuid = ferry_uuid_to_string(pool->uuid);
    storage_xml_append_element(buf, 2, "uuid", uuid);
    if (info) {
        g_string_append_printf(buf,
                               "  <capacity unit='bytes'>%" G_GUINT64_FORMAT "</capacity>\n"
                               "  <allocation unit='bytes'>%" G_GUINT64_FORMAT "</allocation>\n"
                               "  <available unit='bytes'>%" G_GUINT64_FORMAT "</available>\n",
                               info->capacity, info->allocation, info->available);
    }
    g_string_append(buf, "  <source>\n  </source>\n  <target>\n");
    storage_xml_append_element(buf, 4, "path", pool->target);
    if (pool->has_mode)
        g_string_append_printf(buf,
                               "    <permissions>\n      <mode>%04o</mode>\n"
                               "    </permissions>\n",
                               pool->mode);
    g_string_append(buf, "  </target>\n</pool>\n");
    return g_string_free(buf, FALSE);
}

/* ---- files ---- */

static gboolean make_dir(const char *path, GError **error)
{
    if (g_mkdir_with_parents(path, 0700) < 0) {
        ferry_set_error_errno(error, errno, "cannot create directory '%s'", path);
        return FALSE;
    }
    return TRUE;
}

static gboolean write_file(const char *dir, const char *name, const char *data, GError **error)
{
    g_autofree char *file = g_strconcat(name, ".xml", NULL);
    g_autofree char *path = g_build_filename(dir, file, NULL);
    g_autoptr(GError) local = NULL;
    if (!g_file_set_contents_full(path, data, -1,
                                  G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE,
                                  0600, &local))
        return storage_fail(error, FERRY_ERR_SYSTEM_ERROR, "cannot save storage pool '%s': %s",
                            name, local->message);
    return TRUE;
}

static gboolean remove_file(const char *dir, const char *name, GError **error)
{
    g_autofree char *file = g_strconcat(name, ".xml", NULL);
    g_autofree char *path = g_build_filename(dir, file, NULL);
    if (unlink(path) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "cannot remove '%s'", path);
        return FALSE;
    }
    return TRUE;
}

static gboolean save_config(StorageDir *sd, const Pool *pool, GError **error)
{
    g_autofree char *xml = pool_format(pool, NULL);
    return write_file(sd->config_dir, pool->name, xml, error);
}

/* A running pool's record: its definition, so that a transient one survives
 * a daemon restart as libvirt's does. */
static gboolean save_state(StorageDir *sd, const Pool *pool, GError **error)
{
    g_autofree char *xml = pool_format(pool, NULL);
    return write_file(sd->run_dir, pool->name, xml, error);
}

static gboolean set_autostart_link(StorageDir *sd, const Pool *pool, gboolean on, GError **error)
{
    g_autofree char *file = g_strconcat(pool->name, ".xml", NULL);
    g_autofree char *link = g_build_filename(sd->autostart_dir, file, NULL);
    if (unlink(link) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "cannot remove '%s'", link);
        return FALSE;
    }
    if (!on)
        return TRUE;
    g_autofree char *to = g_build_filename("..", file, NULL);
    if (symlink(to, link) < 0) {
        ferry_set_error_errno(error, errno, "cannot create '%s'", link);
        return FALSE;
    }
    return TRUE;
}

/* ---- the pool list (sd->lock held) ---- */

static Pool *find_by_name(StorageDir *sd, const char *name)
{
    for (guint i = 0; i < sd->pools->len; i++) {
        Pool *p = sd->pools->pdata[i];
        if (g_str_equal(p->name, name))
            return p;
    }
    return NULL;
}

static Pool *find_by_uuid(StorageDir *sd, const guint8 *uuid)
{
    for (guint i = 0; i < sd->pools->len; i++) {
        Pool *p = sd->pools->pdata[i];
        if (memcmp(p->uuid, uuid, FERRY_UUID_LEN) == 0)
            return p;
    }
    return NULL;
}

static Pool *find_by_target(StorageDir *sd, const char *target)
{
    for (guint i = 0; i < sd->pools->len; i++) {
        Pool *p = sd->pools->pdata[i];
        if (g_str_equal(p->target, target))
            return p;
    }
    return NULL;
}

/* The pool a client names (by its UUID, as libvirt looks it up). */
static Pool *lookup(StorageDir *sd, const StoragePoolRef *ref, GError **error)
{
    Pool *p = find_by_uuid(sd, ref->uuid);
    if (!p) {
        g_autofree char *uuid = ferry_uuid_to_string(ref->uuid);
        storage_fail(error, FERRY_ERR_NO_STORAGE_POOL,
                     "no storage pool with matching uuid '%s' (%s)", uuid,
                     ref->name ? ref->name : "");
    }
    return p;
}

static Pool *lookup_active(StorageDir *sd, const StoragePoolRef *ref, GError **error)
{
    Pool *p = lookup(sd, ref, error);
    if (p && !p->active) {
        storage_fail(error, FERRY_ERR_OPERATION_INVALID, "storage pool '%s' is not active",
                     p->name);
        return NULL;
    }
    return p;
}

static void remove_pool(StorageDir *sd, Pool *pool)
{
    g_ptr_array_remove(sd->pools, pool);
}

/* A new definition must not clash with another pool's name, UUID or
 * directory; the same name and UUID redefine a pool. */
static gboolean check_unique(StorageDir *sd, const Pool *def, Pool **existing, GError **error)
{
    Pool *same_name = find_by_name(sd, def->name);
    Pool *same_uuid = find_by_uuid(sd, def->uuid);
    g_autofree char *uuid = ferry_uuid_to_string(def->uuid);
    if (same_name && same_name != same_uuid) {
        g_autofree char *other = ferry_uuid_to_string(same_name->uuid);
        return storage_fail(error, FERRY_ERR_OPERATION_FAILED,
                            "pool '%s' is already defined with uuid %s", def->name, other);
    }
    if (same_uuid && same_uuid != same_name)
        return storage_fail(error, FERRY_ERR_OPERATION_FAILED,
                            "pool '%s' is already defined with uuid %s", same_uuid->name, uuid);
    Pool *same_dir = find_by_target(sd, def->target);
    if (same_dir && same_dir != same_name)
        return storage_fail(error, FERRY_ERR_OPERATION_FAILED,
                            "Storage source conflict with pool: '%s' (its directory is %s)",
                            same_dir->name, def->target);
    *existing = same_name;
    return TRUE;
}

/* ---- running a pool: its directory must be there ---- */

static gboolean check_directory(const Pool *pool, GError **error)
{
    struct stat st;
    if (stat(pool->target, &st) < 0) {
        ferry_set_error_errno(error, errno, "cannot open directory '%s'", pool->target);
        return FALSE;
    }
    if (!S_ISDIR(st.st_mode))
        return storage_fail(error, FERRY_ERR_OPERATION_INVALID,
                            "storage pool '%s': '%s' is not a directory", pool->name, pool->target);
    return TRUE;
}

static gboolean build_directory(const Pool *pool, GError **error)
{
    if (g_mkdir_with_parents(pool->target, pool->has_mode ? (int)pool->mode : 0755) < 0) {
        ferry_set_error_errno(error, errno, "cannot create directory '%s'", pool->target);
        return FALSE;
    }
    if (pool->has_mode && chmod(pool->target, pool->mode) < 0) {
        ferry_set_error_errno(error, errno, "cannot set the mode of '%s'", pool->target);
        return FALSE;
    }
    return TRUE;
}

static gboolean start_pool(StorageDir *sd, Pool *pool, GError **error)
{
    if (!check_directory(pool, error) || !save_state(sd, pool, error))
        return FALSE;
    pool->active = TRUE;
    return TRUE;
}

/* ---- loading ---- */

static void load_dir(StorageDir *sd, const char *dir, gboolean running)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *file;
    while (d && (file = g_dir_read_name(d))) {
        if (!g_str_has_suffix(file, ".xml"))
            continue;
        g_autofree char *path = g_build_filename(dir, file, NULL);
        g_autofree char *xml = NULL;
        g_autoptr(GError) error = NULL;
        Pool *pool = NULL;
        if (!g_file_get_contents(path, &xml, NULL, &error) || !(pool = pool_parse(xml, &error))) {
            FERRY_WARN("skipping storage pool file %s: %s", path, error->message);
            continue;
        }
        Pool *known = find_by_name(sd, pool->name);
        if (running && known && memcmp(known->uuid, pool->uuid, FERRY_UUID_LEN) == 0) {
            known->active = TRUE; /* a persistent pool that was running */
            pool_free(pool);
            continue;
        }
        if (known || find_by_uuid(sd, pool->uuid) || find_by_target(sd, pool->target)) {
            FERRY_WARN("skipping storage pool file %s: it clashes with pool '%s'", path,
                       known ? known->name : pool->name);
            pool_free(pool);
            continue;
        }
        pool->persistent = !running;
        pool->active = running;
        if (!running) {
            g_autofree char *link = g_build_filename(sd->autostart_dir, file, NULL);
            pool->autostart = g_file_test(link, G_FILE_TEST_EXISTS);
        }
        g_ptr_array_add(sd->pools, pool);
    }
}

StorageDir *storage_dir_new(const char *config_dir, const char *run_dir, GError **error)
{
    g_autofree char *autostart = g_build_filename(config_dir, "autostart", NULL);
    if (!make_dir(config_dir, error) || !make_dir(autostart, error) || !make_dir(run_dir, error))
        return NULL;
    StorageDir *sd = g_new0(StorageDir, 1);
    g_mutex_init(&sd->lock);
    sd->config_dir = g_strdup(config_dir);
    sd->autostart_dir = g_steal_pointer(&autostart);
    sd->run_dir = g_strdup(run_dir);
    sd->pools = g_ptr_array_new_with_free_func(pool_free);
    load_dir(sd, sd->config_dir, FALSE);
    load_dir(sd, sd->run_dir, TRUE);
    for (guint i = 0; i < sd->pools->len; i++) {
        Pool *p = sd->pools->pdata[i];
        g_autoptr(GError) e = NULL;
        if (p->autostart && !p->active && !start_pool(sd, p, &e))
            FERRY_WARN("cannot autostart storage pool '%s': %s", p->name, e->message);
    }
    return sd;
}

void storage_dir_free(StorageDir *sd)
{
    if (!sd)
        return;
    g_ptr_array_unref(sd->pools);
    g_free(sd->config_dir);
    g_free(sd->autostart_dir);
    g_free(sd->run_dir);
    g_mutex_clear(&sd->lock);
    g_free(sd);
}

/* ---- pools ---- */

static gboolean list_match(const Pool *p, guint flags)
{
    if ((flags & LIST_TYPES) && !(flags & LIST_TYPE_DIR))
        return FALSE;
    if ((flags & (LIST_ACTIVE | LIST_INACTIVE)) && !((flags & LIST_ACTIVE) && p->active) &&
        !((flags & LIST_INACTIVE) && !p->active))
        return FALSE;
    if ((flags & (LIST_PERSISTENT | LIST_TRANSIENT)) &&
        !((flags & LIST_PERSISTENT) && p->persistent) &&
        !((flags & LIST_TRANSIENT) && !p->persistent))
        return FALSE;
    if ((flags & (LIST_AUTOSTART | LIST_NO_AUTOSTART)) &&
        !((flags & LIST_AUTOSTART) && p->autostart) &&
        !((flags & LIST_NO_AUTOSTART) && !p->autostart))
        return FALSE;
    return TRUE;
}

GPtrArray *storage_dir_list_pools(StorageDir *sd, guint flags, GError **error)
{
    if (!refuse_flags(error, flags, 0xfffffu, "virConnectListAllStoragePools"))
        return NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)storage_pool_ref_free);
    g_mutex_lock(&sd->lock);
    for (guint i = 0; i < sd->pools->len; i++)
        if (list_match(sd->pools->pdata[i], flags))
            g_ptr_array_add(out, pool_ref(sd->pools->pdata[i]));
    g_mutex_unlock(&sd->lock);
    return out;
}

guint storage_dir_count_pools(StorageDir *sd, gboolean active)
{
    guint n = 0;
    g_mutex_lock(&sd->lock);
    for (guint i = 0; i < sd->pools->len; i++) {
        const Pool *p = sd->pools->pdata[i];
        n += active ? p->active : (!p->active && p->persistent);
    }
    g_mutex_unlock(&sd->lock);
    return n;
}

StoragePoolRef *storage_dir_pool_by_name(StorageDir *sd, const char *name, GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = find_by_name(sd, name);
    StoragePoolRef *ref = p ? pool_ref(p) : NULL;
    g_mutex_unlock(&sd->lock);
    if (!ref)
        storage_fail(error, FERRY_ERR_NO_STORAGE_POOL, "no storage pool with matching name '%s'",
                     name);
    return ref;
}

StoragePoolRef *storage_dir_pool_by_uuid(StorageDir *sd, const guint8 *uuid, GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = find_by_uuid(sd, uuid);
    StoragePoolRef *ref = p ? pool_ref(p) : NULL;
    g_mutex_unlock(&sd->lock);
    if (!ref) {
        g_autofree char *u = ferry_uuid_to_string(uuid);
        storage_fail(error, FERRY_ERR_NO_STORAGE_POOL, "no storage pool with matching uuid '%s'",
                     u);
    }
    return ref;
}

StoragePoolRef *storage_dir_pool_by_target(StorageDir *sd, const char *path, GError **error)
{
    g_autofree char *clean = sanitize_path(path);
    g_mutex_lock(&sd->lock);
    Pool *p = find_by_target(sd, clean);
    StoragePoolRef *ref = p ? pool_ref(p) : NULL;
    g_mutex_unlock(&sd->lock);
    if (!ref)
        storage_fail(error, FERRY_ERR_NO_STORAGE_POOL,
                     "no storage pool with matching target path '%s'", path);
    return ref;
}

StoragePoolRef *storage_dir_pool_by_volume(StorageDir *sd, const StorageVolRef *vol, GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = find_by_name(sd, vol->pool);
    StoragePoolRef *ref = p ? pool_ref(p) : NULL;
    g_mutex_unlock(&sd->lock);
    if (!ref)
        storage_fail(error, FERRY_ERR_NO_STORAGE_POOL, "no storage pool with matching name '%s'",
                     vol->pool);
    return ref;
}

/* Adds or replaces the definition (sd->lock held); the pool in the list. */
static Pool *install(StorageDir *sd, Pool *def, gboolean persistent, GError **error)
{
    Pool *existing = NULL;
    if (!check_unique(sd, def, &existing, error)) {
        pool_free(def);
        return NULL;
    }
    if (existing && !persistent) {
        storage_fail(error, FERRY_ERR_OPERATION_INVALID, "storage pool '%s' already exists",
                     def->name);
        pool_free(def);
        return NULL;
    }
    if (existing && existing->active && !g_str_equal(existing->target, def->target)) {
        storage_fail(error, FERRY_ERR_OPERATION_INVALID,
                     "storage pool '%s' is running on %s: stop it before changing its directory",
                     def->name, existing->target);
        pool_free(def);
        return NULL;
    }
    def->persistent = persistent;
    if (persistent && !save_config(sd, def, error)) {
        pool_free(def);
        return NULL;
    }
    if (existing) {
        def->active = existing->active;
        def->autostart = existing->autostart;
        g_ptr_array_remove(sd->pools, existing);
    }
    g_ptr_array_add(sd->pools, def);
    return def;
}

StoragePoolRef *storage_dir_define(StorageDir *sd, const char *xml, guint flags, GError **error)
{
    if (!refuse_flags(error, flags, 0, "virStoragePoolDefineXML"))
        return NULL;
    Pool *def = pool_parse(xml, error);
    if (!def)
        return NULL;
    g_mutex_lock(&sd->lock);
    Pool *p = install(sd, def, TRUE, error);
    StoragePoolRef *ref = p ? pool_ref(p) : NULL;
    g_mutex_unlock(&sd->lock);
    return ref;
}

StoragePoolRef *storage_dir_create_xml(StorageDir *sd, const char *xml, guint flags, GError **error)
{
    if (!refuse_flags(error, flags, CREATE_WITH_BUILD, "virStoragePoolCreateXML"))
        return NULL;
    Pool *def = pool_parse(xml, error);
    if (!def)
        return NULL;
    g_mutex_lock(&sd->lock);
    Pool *p = install(sd, def, FALSE, error);
    if (p && (((flags & CREATE_WITH_BUILD) && !build_directory(p, error)) ||
              !start_pool(sd, p, error))) {
        remove_pool(sd, p);
        p = NULL;
    }
    StoragePoolRef *ref = p ? pool_ref(p) : NULL;
    g_mutex_unlock(&sd->lock);
    return ref;
}

gboolean storage_dir_pool_create(StorageDir *sd, const StoragePoolRef *ref, guint flags,
                                 GError **error)
{
    if (!refuse_flags(error, flags, CREATE_WITH_BUILD, "virStoragePoolCreate"))
        return FALSE;
    g_mutex_lock(&sd->lock);
    Pool *p = lookup(sd, ref, error);
    gboolean ok = p != NULL;
    if (ok && p->active)
        ok = storage_fail(error, FERRY_ERR_OPERATION_INVALID, "storage pool '%s' is already active",
                          p->name);
    if (ok && (flags & CREATE_WITH_BUILD))
        ok = build_directory(p, error);
    ok = ok && start_pool(sd, p, error);
    g_mutex_unlock(&sd->lock);
    return ok;
}

gboolean storage_dir_pool_build(StorageDir *sd, const StoragePoolRef *ref, guint flags,
                                GError **error)
{
    if (flags)
        return storage_fail(
            error, FERRY_ERR_ARGUMENT_UNSUPPORTED,
            "virStoragePoolBuild flags 0x%x (repair, resize, overwrite): a dir pool's "
            "build only makes its directory",
            flags);
    g_mutex_lock(&sd->lock);
    Pool *p = lookup(sd, ref, error);
    gboolean ok = p != NULL;
    if (ok && p->active)
        ok = storage_fail(error, FERRY_ERR_OPERATION_INVALID, "storage pool '%s' is already active",
                          p->name);
    ok = ok && build_directory(p, error);
    g_mutex_unlock(&sd->lock);
    return ok;
}

gboolean storage_dir_pool_destroy(StorageDir *sd, const StoragePoolRef *ref, GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = lookup_active(sd, ref, error);
    gboolean ok = p && remove_file(sd->run_dir, p->name, error);
    if (ok) {
        p->active = FALSE;
        if (!p->persistent)
            remove_pool(sd, p);
    }
    g_mutex_unlock(&sd->lock);
    return ok;
}

gboolean storage_dir_pool_delete(StorageDir *sd, const StoragePoolRef *ref, guint flags,
                                 GError **error)
{
    if (flags)
        return storage_fail(error, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                            "virStoragePoolDelete flags 0x%x (zeroed): a dir pool's delete only "
                            "removes its empty directory",
                            flags);
    g_mutex_lock(&sd->lock);
    Pool *p = lookup(sd, ref, error);
    gboolean ok = p != NULL;
    if (ok && p->active)
        ok = storage_fail(error, FERRY_ERR_OPERATION_INVALID, "storage pool '%s' is still active",
                          p->name);
    if (ok && rmdir(p->target) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "cannot remove directory '%s'", p->target);
        ok = FALSE;
    }
    g_mutex_unlock(&sd->lock);
    return ok;
}

gboolean storage_dir_pool_undefine(StorageDir *sd, const StoragePoolRef *ref, GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = lookup(sd, ref, error);
    gboolean ok = p != NULL;
    if (ok && !p->persistent)
        ok = storage_fail(error, FERRY_ERR_OPERATION_INVALID, "storage pool '%s' is not persistent",
                          p->name);
    ok = ok && set_autostart_link(sd, p, FALSE, error) &&
         remove_file(sd->config_dir, p->name, error);
    if (ok) {
        /* A running pool goes on running, as a transient one. */
        p->persistent = FALSE;
        p->autostart = FALSE;
        if (!p->active)
            remove_pool(sd, p);
    }
    g_mutex_unlock(&sd->lock);
    return ok;
}

gboolean storage_dir_pool_refresh(StorageDir *sd, const StoragePoolRef *ref, guint flags,
                                  GError **error)
{
    if (!refuse_flags(error, flags, 0, "virStoragePoolRefresh"))
        return FALSE;
    g_mutex_lock(&sd->lock);
    /* Nothing is cached: the directory is read at every call. It must still be there. */
    Pool *p = lookup_active(sd, ref, error);
    gboolean ok = p && check_directory(p, error);
    g_mutex_unlock(&sd->lock);
    return ok;
}

static gboolean fs_info(const Pool *p, StoragePoolInfo *info, GError **error)
{
    struct statvfs vfs;
    if (statvfs(p->target, &vfs) < 0) {
        ferry_set_error_errno(error, errno, "cannot read the file system of '%s'", p->target);
        return FALSE;
    }
    guint64 unit = vfs.f_frsize ? vfs.f_frsize : vfs.f_bsize;
    info->capacity = unit * vfs.f_blocks;
    info->available = unit * vfs.f_bavail;
    info->allocation = info->capacity - unit * vfs.f_bfree;
    return TRUE;
}

gboolean storage_dir_pool_info(StorageDir *sd, const StoragePoolRef *ref, StoragePoolInfo *info,
                               GError **error)
{
    *info = (StoragePoolInfo){0};
    g_mutex_lock(&sd->lock);
    Pool *p = lookup(sd, ref, error);
    gboolean ok = p != NULL;
    if (ok) {
        info->state = p->active ? STORAGE_POOL_RUNNING : STORAGE_POOL_INACTIVE;
        if (p->active)
            ok = fs_info(p, info, error);
    }
    g_mutex_unlock(&sd->lock);
    return ok;
}

char *storage_dir_pool_xml(StorageDir *sd, const StoragePoolRef *ref, guint flags, GError **error)
{
    if (!refuse_flags(error, flags, XML_INACTIVE, "virStoragePoolGetXMLDesc"))
        return NULL;
    g_mutex_lock(&sd->lock);
    Pool *p = lookup(sd, ref, error);
    char *xml = NULL;
    StoragePoolInfo info = {0};
    if (p && (!p->active || (flags & XML_INACTIVE)))
        xml = pool_format(p, &info);
    else if (p && fs_info(p, &info, error))
        xml = pool_format(p, &info);
    g_mutex_unlock(&sd->lock);
    return xml;
}

int storage_dir_pool_get_autostart(StorageDir *sd, const StoragePoolRef *ref, GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = lookup(sd, ref, error);
    int v = p ? p->autostart : -1;
    g_mutex_unlock(&sd->lock);
    return v;
}

gboolean storage_dir_pool_set_autostart(StorageDir *sd, const StoragePoolRef *ref,
                                        gboolean autostart, GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = lookup(sd, ref, error);
    gboolean ok = p != NULL;
    if (ok && !p->persistent)
        ok = storage_fail(error, FERRY_ERR_OPERATION_INVALID,
                          "cannot set autostart for transient storage pool '%s'", p->name);
    if (ok && set_autostart_link(sd, p, autostart, error))
        p->autostart = autostart;
    else
        ok = FALSE;
    g_mutex_unlock(&sd->lock);
    return ok;
}

int storage_dir_pool_is_active(StorageDir *sd, const StoragePoolRef *ref, GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = lookup(sd, ref, error);
    int v = p ? p->active : -1;
    g_mutex_unlock(&sd->lock);
    return v;
}

int storage_dir_pool_is_persistent(StorageDir *sd, const StoragePoolRef *ref, GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = lookup(sd, ref, error);
    int v = p ? p->persistent : -1;
    g_mutex_unlock(&sd->lock);
    return v;
}

/* ---- volumes ---- */

static int compare_names(gconstpointer a, gconstpointer b)
{
    const StorageVolRef *x = *(StorageVolRef *const *)a, *y = *(StorageVolRef *const *)b;
    return strcmp(x->name, y->name);
}

/* A volume is a regular file of the directory (not a link, a device or a
 * sub-directory). */
static gboolean is_volume(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

GPtrArray *storage_dir_list_volumes(StorageDir *sd, const StoragePoolRef *ref, GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = lookup_active(sd, ref, error);
    GPtrArray *out = NULL;
    DIR *d = p ? opendir(p->target) : NULL;
    if (p && !d)
        ferry_set_error_errno(error, errno, "cannot open directory '%s'", p->target);
    if (d) {
        out = g_ptr_array_new_with_free_func((GDestroyNotify)storage_vol_ref_free);
        struct dirent *e;
        while ((e = readdir(d))) {
            g_autofree char *path = g_build_filename(p->target, e->d_name, NULL);
            if (e->d_name[0] != '.' && is_volume(path))
                g_ptr_array_add(out, vol_ref(p, e->d_name));
        }
        closedir(d);
        g_ptr_array_sort(out, compare_names);
    }
    g_mutex_unlock(&sd->lock);
    return out;
}

/* The volume `name` of a running pool (sd->lock held). */
static StorageVolRef *find_volume(Pool *p, const char *name, const char *how, const char *value,
                                  GError **error)
{
    g_autofree char *path = g_build_filename(p->target, name, NULL);
    if (!strchr(name, '/') && name[0] != '.' && is_volume(path))
        return vol_ref(p, name);
    storage_fail(error, FERRY_ERR_NO_STORAGE_VOL, "no storage vol with matching %s '%s'", how,
                 value);
    return NULL;
}

StorageVolRef *storage_dir_vol_by_name(StorageDir *sd, const StoragePoolRef *ref, const char *name,
                                       GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = lookup_active(sd, ref, error);
    StorageVolRef *vol = p ? find_volume(p, name, "name", name, error) : NULL;
    g_mutex_unlock(&sd->lock);
    return vol;
}

StorageVolRef *storage_dir_vol_by_path(StorageDir *sd, const char *path, GError **error)
{
    g_autofree char *clean = sanitize_path(path);
    g_autofree char *dir = g_path_get_dirname(clean);
    g_autofree char *name = g_path_get_basename(clean);
    g_mutex_lock(&sd->lock);
    Pool *p = clean[0] == '/' ? find_by_target(sd, dir) : NULL;
    StorageVolRef *vol = NULL;
    if (p && p->active)
        vol = find_volume(p, name, "path", path, error);
    else
        storage_fail(error, FERRY_ERR_NO_STORAGE_VOL, "no storage vol with matching path '%s'",
                     path);
    g_mutex_unlock(&sd->lock);
    return vol;
}

/* The volume a client names: its pool by name, then the file. */
static Pool *vol_pool(StorageDir *sd, const StorageVolRef *vol, GError **error)
{
    Pool *p = find_by_name(sd, vol->pool);
    if (!p)
        storage_fail(error, FERRY_ERR_NO_STORAGE_POOL, "no storage pool with matching name '%s'",
                     vol->pool);
    else if (!p->active)
        storage_fail(error, FERRY_ERR_OPERATION_INVALID, "storage pool '%s' is not active",
                     p->name);
    else
        return p;
    return NULL;
}

static char *vol_file(StorageDir *sd, const StorageVolRef *vol, GError **error)
{
    Pool *p = vol_pool(sd, vol, error);
    g_autoptr(StorageVolRef) found = p ? find_volume(p, vol->name, "name", vol->name, error) : NULL;
    return found ? g_steal_pointer(&found->key) : NULL;
}

gboolean storage_dir_vol_info(StorageDir *sd, const StorageVolRef *vol, StorageVolInfo *info,
                              GError **error)
{
    g_mutex_lock(&sd->lock);
    g_autofree char *path = vol_file(sd, vol, error);
    StorageVolFacts f = {0};
    gboolean ok = path && storage_vol_read_facts(path, &f, error);
    g_mutex_unlock(&sd->lock);
    if (ok)
        *info = (StorageVolInfo){.type = STORAGE_VOL_FILE,
                                 .capacity = f.capacity,
                                 .allocation = f.allocation,
                                 .physical = f.physical};
    return ok;
}

char *storage_dir_vol_xml(StorageDir *sd, const StorageVolRef *vol, guint flags, GError **error)
{
    if (!refuse_flags(error, flags, 0, "virStorageVolGetXMLDesc"))
        return NULL;
    g_mutex_lock(&sd->lock);
    g_autofree char *path = vol_file(sd, vol, error);
    StorageVolFacts f = {0};
    gboolean ok = path && storage_vol_read_facts(path, &f, error);
    g_mutex_unlock(&sd->lock);
    if (!ok)
        return NULL;
    return storage_vol_format(vol->name, path, &f);
}

char *storage_dir_vol_path(StorageDir *sd, const StorageVolRef *vol, GError **error)
{
    g_mutex_lock(&sd->lock);
    char *path = vol_file(sd, vol, error);
    g_mutex_unlock(&sd->lock);
    return path;
}

gboolean storage_dir_vol_delete(StorageDir *sd, const StorageVolRef *vol, guint flags,
                                GError **error)
{
    if (flags)
        return storage_fail(error, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                            "virStorageVolDelete flags 0x%x (zeroed, with snapshots): ferryd only "
                            "removes the file",
                            flags);
    g_mutex_lock(&sd->lock);
    g_autofree char *path = vol_file(sd, vol, error);
    gboolean ok = path != NULL;
    if (ok && unlink(path) < 0) {
        ferry_set_error_errno(error, errno, "cannot remove volume '%s'", path);
        ok = FALSE;
    }
    g_mutex_unlock(&sd->lock);
    return ok;
}

StorageVolRef *storage_dir_vol_create(StorageDir *sd, const StoragePoolRef *ref, const char *xml,
                                      guint flags, GError **error)
{
    g_mutex_lock(&sd->lock);
    Pool *p = lookup_active(sd, ref, error);
    g_autofree char *name = NULL;
    /* The lock is held while qemu-img runs: creating a qcow2 image only
     * writes its header and tables, a fraction of a second. */
    StorageVolRef *vol =
        p && storage_vol_create(p->target, xml, flags, &name, error) ? vol_ref(p, name) : NULL;
    g_mutex_unlock(&sd->lock);
    return vol;
}
