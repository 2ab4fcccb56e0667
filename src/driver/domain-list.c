/* The domain list: membership, the name/UUID/id/instance indexes, runtime-id
 * allocation, and hidden incoming instances.
 *
 * Lock order: a domain's lock, then the list's lock. The list's lock is a leaf:
 * nothing here waits for a domain while holding it, so callers may call in
 * while holding a domain lock. To lock a domain it has found, the list takes a
 * reference, drops its own lock, locks the domain, and re-checks. */
#include "driver/domain-list.h"

#include "driver/migration-job.h"
#include "util/error.h"
#include "util/log.h"

#include <string.h>

#define FERRY_LOG_MODULE "driver.domain-list"

/* What the list knows of a member without locking it. The name and UUID are
 * the keys it was added under: a member keeps its name and UUID. */
typedef struct {
    char *name;
    guint8 uuid[FERRY_UUID_LEN];
    gboolean visible;
    int id; /* -1 while inactive */
} ListEntry;

struct _DomainList {
    GMutex lock;
    GHashTable *objs;        /* DomainObj* -> ListEntry*: every member; owns a reference */
    GHashTable *by_uuid;     /* entry->uuid -> DomainObj*: visible members */
    GHashTable *by_name;     /* entry->name -> DomainObj*: visible members */
    GHashTable *by_id;       /* id -> DomainObj*: visible running members */
    GHashTable *used_ids;    /* id -> DomainObj*: every running instance */
    GHashTable *by_instance; /* obj->instance_id -> DomainObj*: every running instance */
    int next_id;
};

static void entry_free(gpointer p)
{
    ListEntry *e = p;
    g_free(e->name);
    g_free(e);
}

DomainList *domain_list_new(void)
{
    DomainList *list = g_new0(DomainList, 1);
    g_mutex_init(&list->lock);
    list->objs = g_hash_table_new_full(g_direct_hash, g_direct_equal,
                                       (GDestroyNotify)domain_obj_unref, entry_free);
    list->by_uuid = g_hash_table_new(ferry_uuid_hash, ferry_uuid_equal);
    list->by_name = g_hash_table_new(g_str_hash, g_str_equal);
    list->by_id = g_hash_table_new(g_direct_hash, g_direct_equal);
    list->used_ids = g_hash_table_new(g_direct_hash, g_direct_equal);
    list->by_instance = g_hash_table_new(g_str_hash, g_str_equal);
    list->next_id = 1;
    return list;
}

void domain_list_free(DomainList *list)
{
    if (!list)
        return;
    /* The indexes hold no references; drop them before the members. */
    g_hash_table_destroy(list->by_uuid);
    g_hash_table_destroy(list->by_name);
    g_hash_table_destroy(list->by_id);
    g_hash_table_destroy(list->used_ids);
    g_hash_table_destroy(list->by_instance);
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, list->objs);
    while (g_hash_table_iter_next(&it, &key, NULL))
        g_atomic_int_set(&((DomainObj *)key)->removed, 1);
    g_hash_table_destroy(list->objs);
    g_mutex_clear(&list->lock);
    g_free(list);
}

/* ---- index maintenance: list->lock held -------------------------------- */

static ListEntry *entry_of(DomainList *list, DomainObj *obj)
{
    return g_hash_table_lookup(list->objs, obj);
}

static void index_show(DomainList *list, DomainObj *obj, ListEntry *e)
{
    g_hash_table_insert(list->by_uuid, e->uuid, obj);
    g_hash_table_insert(list->by_name, e->name, obj);
    if (e->id != -1)
        g_hash_table_insert(list->by_id, GINT_TO_POINTER(e->id), obj);
    e->visible = TRUE;
    g_atomic_int_set(&obj->hidden, 0);
}

static void index_hide(DomainList *list, DomainObj *obj, ListEntry *e)
{
    if (e->visible) {
        g_hash_table_remove(list->by_uuid, e->uuid);
        g_hash_table_remove(list->by_name, e->name);
        if (e->id != -1)
            g_hash_table_remove(list->by_id, GINT_TO_POINTER(e->id));
    }
    e->visible = FALSE;
    g_atomic_int_set(&obj->hidden, 1);
}

/* Makes a new object a member; the list takes its own reference. */
static ListEntry *member_add(DomainList *list, DomainObj *obj, const DomainDef *def,
                             gboolean visible)
{
    ListEntry *e = g_new0(ListEntry, 1);
    e->name = g_strdup(def->name);
    memcpy(e->uuid, def->uuid, FERRY_UUID_LEN);
    e->id = -1;
    g_hash_table_insert(list->objs, domain_obj_ref(obj), e);
    if (visible)
        index_show(list, obj, e);
    else
        index_hide(list, obj, e);
    return e;
}

static void instance_unindex(DomainList *list, DomainObj *obj, ListEntry *e)
{
    if (e->id == -1)
        return;
    if (e->visible)
        g_hash_table_remove(list->by_id, GINT_TO_POINTER(e->id));
    g_hash_table_remove(list->used_ids, GINT_TO_POINTER(e->id));
    g_hash_table_remove(list->by_instance, obj->instance_id);
    e->id = -1;
}

/* The caller holds a reference of its own, so dropping the list's cannot
 * free obj here. */
static void member_drop(DomainList *list, DomainObj *obj)
{
    ListEntry *e = entry_of(list, obj);
    if (!e)
        return;
    index_hide(list, obj, e);
    instance_unindex(list, obj, e);
    g_atomic_int_set(&obj->removed, 1);
    g_hash_table_remove(list->objs, obj);
}

static int alloc_id(DomainList *list)
{
    for (;;) {
        int id = list->next_id;
        /* Wrapping takes 2^31 starts; skip ids still in use when it happens. */
        list->next_id = id == G_MAXINT ? 1 : id + 1;
        if (!g_hash_table_contains(list->used_ids, GINT_TO_POINTER(id)))
            return id;
    }
}

static char *alloc_instance_id(DomainList *list)
{
    for (;;) {
        guint8 r[FERRY_UUID_LEN];
        ferry_uuid_generate(r);
        /* 64 random bits: short enough for socket paths, unique with the check. */
        char *id = g_strdup_printf("%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
                                   r[9], r[10], r[11], r[12]);
        if (!g_hash_table_contains(list->by_instance, id))
            return id;
        g_free(id);
    }
}

/* Gives obj (locked) a running instance. id -1 / instance_id NULL: allocate. */
static void attach_instance(DomainList *list, DomainObj *obj, ListEntry *e, DomainDef *live_def,
                            int id, const char *instance_id)
{
    if (id < 0)
        id = alloc_id(list);
    else if (id >= list->next_id && id < G_MAXINT)
        list->next_id = id + 1; /* ids stay monotonic across a daemon restart */

    obj->live_def = live_def;
    obj->id = id;
    obj->instance_id = instance_id ? g_strdup(instance_id) : alloc_instance_id(list);
    domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_STARTING_UP);

    e->id = id;
    g_hash_table_insert(list->used_ids, GINT_TO_POINTER(id), obj);
    g_hash_table_insert(list->by_instance, obj->instance_id, obj);
    if (e->visible)
        g_hash_table_insert(list->by_id, GINT_TO_POINTER(id), obj);
}

static gboolean hidden_instance_exists(DomainList *list, const guint8 *uuid)
{
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, list->objs);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        ListEntry *e = value;
        if (!e->visible && memcmp(e->uuid, uuid, FERRY_UUID_LEN) == 0)
            return TRUE;
    }
    return FALSE;
}

/* Returns with list->lock held and, if a visible member has this UUID, that
 * member locked and referenced. */
static DomainObj *lock_list_and_twin(DomainList *list, const guint8 *uuid)
{
    g_mutex_lock(&list->lock);
    for (;;) {
        DomainObj *twin = g_hash_table_lookup(list->by_uuid, uuid);
        if (!twin)
            return NULL;
        domain_obj_ref(twin);
        g_mutex_unlock(&list->lock);
        domain_obj_lock(twin);
        g_mutex_lock(&list->lock);
        if (g_hash_table_lookup(list->by_uuid, uuid) == twin)
            return twin;
        /* It changed while we waited for its lock: look again. */
        domain_obj_unlock(twin);
        domain_obj_unref(twin);
    }
}

/* libvirt's uniqueness rules: a UUID has one name and a name one UUID. */
static gboolean check_name_and_uuid(DomainList *list, const DomainDef *def, DomainObj *twin,
                                    GError **error)
{
    char uuid[FERRY_UUID_STRING_LEN];
    if (twin) {
        ListEntry *e = entry_of(list, twin);
        if (!g_str_equal(e->name, def->name)) {
            ferry_uuid_format(e->uuid, uuid);
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "domain '%s' is already defined with uuid %s", e->name, uuid);
            return FALSE;
        }
        return TRUE;
    }
    DomainObj *other = g_hash_table_lookup(list->by_name, def->name);
    if (other) {
        ferry_uuid_format(entry_of(list, other)->uuid, uuid);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "domain '%s' already exists with uuid %s", def->name, uuid);
        return FALSE;
    }
    return TRUE;
}

typedef struct {
    gboolean live;
    gboolean hidden;
    gboolean allow_running_twin;
    int id;                  /* -1: allocate */
    const char *instance_id; /* NULL: allocate */
} AddRequest;

static DomainObj *add_common(DomainList *list, DomainDef **defp, const AddRequest *req,
                             DomainDef **old_def, GError **error)
{
    DomainDef *def = *defp;
    /* A new member is locked before the list is, so even an object nobody
     * can see yet follows the one lock order. Dropped if not needed. */
    DomainObj *fresh = domain_obj_new();
    domain_obj_lock(fresh);
    DomainObj *twin = lock_list_and_twin(list, def->uuid);
    DomainObj *ret = NULL;

    if (req->id >= 0 && g_hash_table_contains(list->used_ids, GINT_TO_POINTER(req->id))) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "runtime id %d of domain '%s' is already used by another instance", req->id,
                    def->name);
        goto out;
    }
    if (req->instance_id && g_hash_table_contains(list->by_instance, req->instance_id)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "instance '%s' of domain '%s' is already known", req->instance_id, def->name);
        goto out;
    }
    if (!check_name_and_uuid(list, def, twin, error))
        goto out;

    if (req->hidden) {
        if (hidden_instance_exists(list, def->uuid)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                        "domain '%s' already has an instance being migrated", def->name);
            goto out;
        }
        if (twin && domain_obj_is_active(twin) && !req->allow_running_twin) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                        "domain '%s' is already active", def->name);
            goto out;
        }
        ret = g_steal_pointer(&fresh);
        ListEntry *e = member_add(list, ret, def, FALSE);
        attach_instance(list, ret, e, def, req->id, req->instance_id);
    } else if (twin) {
        if (req->live) {
            if (domain_obj_is_active(twin)) {
                g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                            "domain '%s' is already active", def->name);
                goto out;
            }
            attach_instance(list, twin, entry_of(list, twin), def, req->id, req->instance_id);
        } else {
            DomainDef *old = twin->persistent_def;
            twin->persistent_def = def;
            if (old_def)
                *old_def = old;
            else
                domain_def_free(old);
        }
        ret = g_steal_pointer(&twin); /* locked, and our reference is the caller's */
    } else {
        ret = g_steal_pointer(&fresh);
        ListEntry *e = member_add(list, ret, def, TRUE);
        if (req->live)
            attach_instance(list, ret, e, def, req->id, req->instance_id);
        else
            ret->persistent_def = def;
    }
    *defp = NULL;

out:
    g_mutex_unlock(&list->lock);
    domain_obj_end(twin);
    domain_obj_end(fresh);
    return ret;
}

DomainObj *domain_list_add(DomainList *list, DomainDef **def, guint flags, DomainDef **old_def,
                           GError **error)
{
    AddRequest req = {
        .live = (flags & (DOMAIN_LIST_ADD_LIVE | DOMAIN_LIST_ADD_HIDDEN)) != 0,
        .hidden = (flags & DOMAIN_LIST_ADD_HIDDEN) != 0,
        .allow_running_twin = (flags & DOMAIN_LIST_ADD_ALLOW_RUNNING_TWIN) != 0,
        .id = -1,
    };
    if (old_def)
        *old_def = NULL;
    return add_common(list, def, &req, old_def, error);
}

DomainObj *domain_list_restore(DomainList *list, DomainDef **live_def, int id,
                               const char *instance_id, gboolean hidden, GError **error)
{
    if (id < 1 || !instance_id || !instance_id[0]) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "cannot restore an instance of domain '%s' without its runtime id and "
                    "instance id",
                    (*live_def)->name);
        return NULL;
    }
    AddRequest req = {
        .live = TRUE,
        .hidden = hidden,
        /* The daemon stopped in the middle of a local migration. */
        .allow_running_twin = hidden,
        .id = id,
        .instance_id = instance_id,
    };
    return add_common(list, live_def, &req, NULL, error);
}

gboolean domain_list_activate(DomainList *list, DomainObj *obj, DomainDef **live_def,
                              GError **error)
{
    if (domain_obj_is_active(obj)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain '%s' is already active", domain_obj_get_name(obj));
        return FALSE;
    }
    g_mutex_lock(&list->lock);
    ListEntry *e = entry_of(list, obj);
    if (e)
        attach_instance(list, obj, e, *live_def, -1, NULL);
    g_mutex_unlock(&list->lock);
    if (!e) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain '%s' is no longer defined", domain_obj_get_name(obj));
        return FALSE;
    }
    *live_def = NULL;
    return TRUE;
}

void domain_list_deactivate(DomainList *list, DomainObj *obj, DomainShutoffReason reason)
{
    g_mutex_lock(&list->lock);
    ListEntry *e = entry_of(list, obj);
    if (e)
        instance_unindex(list, obj, e);

    g_clear_pointer(&obj->live_def, domain_def_free);
    obj->id = -1;
    g_clear_pointer(&obj->instance_id, g_free);
    obj->pid = 0;
    g_clear_pointer(&obj->qmp_path, g_free);
    g_hash_table_remove_all(obj->runtime_data);
    g_clear_pointer(&obj->job, migration_job_unref);
    obj->max_speed_mib = 0;
    domain_obj_set_state(obj, DOMAIN_STATE_SHUTOFF, reason);

    /* Nothing is left of a stopped transient or incoming domain. */
    if (e && (!obj->persistent_def || !e->visible))
        member_drop(list, obj);
    g_mutex_unlock(&list->lock);
}

void domain_list_undefine(DomainList *list, DomainObj *obj)
{
    g_clear_pointer(&obj->persistent_def, domain_def_free);
    obj->autostart = FALSE;
    obj->has_managed_save = FALSE;
    if (!domain_obj_is_active(obj))
        domain_list_remove(list, obj);
}

void domain_list_remove(DomainList *list, DomainObj *obj)
{
    g_mutex_lock(&list->lock);
    member_drop(list, obj);
    g_mutex_unlock(&list->lock);
}

/* Hands the displaced twin's configuration to incoming. Both locked. */
static void adopt_config(DomainObj *incoming, DomainObj *displaced)
{
    if (!incoming->persistent_def)
        incoming->persistent_def = g_steal_pointer(&displaced->persistent_def);
    else
        g_clear_pointer(&displaced->persistent_def, domain_def_free);
    incoming->autostart = displaced->autostart;
    incoming->has_managed_save = displaced->has_managed_save;
    incoming->n_snapshots = displaced->n_snapshots;
    incoming->n_checkpoints = displaced->n_checkpoints;
    displaced->autostart = FALSE;
    displaced->has_managed_save = FALSE;
}

gboolean domain_list_reveal(DomainList *list, DomainObj *incoming, GError **error)
{
    const DomainDef *def = domain_obj_get_def(incoming);
    if (domain_obj_is_removed(incoming)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "incoming instance of domain '%s' is no longer known", def->name);
        return FALSE;
    }
    /* Stable while we hold incoming's lock; checked first, because a visible
     * incoming would be its own twin below. */
    if (!domain_obj_is_hidden(incoming))
        return TRUE;

    DomainObj *displaced = lock_list_and_twin(list, def->uuid);
    ListEntry *e = entry_of(list, incoming);
    gboolean ok = FALSE;

    g_assert(e); /* members leave only under their own lock, which we hold */
    if (!check_name_and_uuid(list, def, displaced, error))
        goto out;

    if (displaced) {
        ListEntry *de = entry_of(list, displaced);
        index_hide(list, displaced, de);
        adopt_config(incoming, displaced);
        if (de->id == -1)
            member_drop(list, displaced);
        else
            FERRY_DEBUG("domain '%s': instance %s hidden, instance %s now visible", def->name,
                        displaced->instance_id, incoming->instance_id);
    }
    index_show(list, incoming, e);
    ok = TRUE;

out:
    g_mutex_unlock(&list->lock);
    domain_obj_end(displaced);
    return ok;
}

/* ---- lookups ------------------------------------------------------------- */

typedef enum {
    BY_NAME,
    BY_UUID,
    BY_ID,
    BY_INSTANCE,
} LookupKind;

/* Locks what the index had and checks it still fits: it may have been
 * removed, hidden or stopped while we waited for its lock. */
static DomainObj *lookup(DomainList *list, LookupKind kind, gconstpointer key)
{
    GHashTable *index = kind == BY_NAME   ? list->by_name
                        : kind == BY_UUID ? list->by_uuid
                        : kind == BY_ID   ? list->by_id
                                          : list->by_instance;
    g_mutex_lock(&list->lock);
    DomainObj *obj = g_hash_table_lookup(index, key);
    if (obj)
        domain_obj_ref(obj);
    g_mutex_unlock(&list->lock);
    if (!obj)
        return NULL;

    domain_obj_lock(obj);
    gboolean fits = !domain_obj_is_removed(obj);
    switch (kind) {
    case BY_NAME:
    case BY_UUID:
        fits = fits && !domain_obj_is_hidden(obj);
        break;
    case BY_ID:
        fits = fits && !domain_obj_is_hidden(obj) && obj->id == GPOINTER_TO_INT(key);
        break;
    case BY_INSTANCE:
        fits = fits && g_strcmp0(obj->instance_id, key) == 0;
        break;
    }
    if (!fits) {
        domain_obj_end(obj);
        return NULL;
    }
    return obj;
}

DomainObj *domain_list_lookup_by_name(DomainList *list, const char *name, GError **error)
{
    DomainObj *obj = lookup(list, BY_NAME, name);
    if (!obj)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_DOMAIN, "no domain with matching name '%s'",
                    name);
    return obj;
}

DomainObj *domain_list_lookup_by_uuid(DomainList *list, const guint8 *uuid, GError **error)
{
    DomainObj *obj = lookup(list, BY_UUID, uuid);
    if (!obj) {
        char s[FERRY_UUID_STRING_LEN];
        ferry_uuid_format(uuid, s);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_DOMAIN, "no domain with matching uuid '%s'",
                    s);
    }
    return obj;
}

DomainObj *domain_list_lookup_by_id(DomainList *list, int id, GError **error)
{
    DomainObj *obj = lookup(list, BY_ID, GINT_TO_POINTER(id));
    if (!obj)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_DOMAIN, "no domain with matching id %d", id);
    return obj;
}

DomainObj *domain_list_lookup_by_instance(DomainList *list, const char *instance_id,
                                          GError **error)
{
    DomainObj *obj = lookup(list, BY_INSTANCE, instance_id);
    if (!obj)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_NO_DOMAIN,
                    "no domain with matching instance '%s'", instance_id);
    return obj;
}

/* ---- listings ------------------------------------------------------------ */

/* One filter pair: no bit = no filtering, both = anything passes. */
static gboolean pair_passes(guint filter, guint yes, guint no, gboolean value)
{
    if (!(filter & (yes | no)))
        return TRUE;
    return ((filter & yes) && value) || ((filter & no) && !value);
}

static gboolean filter_passes(DomainObj *obj, guint f)
{
    DomainState st = obj->state;
    if (!pair_passes(f, DOMAIN_LIST_ACTIVE, DOMAIN_LIST_INACTIVE, domain_obj_is_active(obj)) ||
        !pair_passes(f, DOMAIN_LIST_PERSISTENT, DOMAIN_LIST_TRANSIENT,
                     domain_obj_is_persistent(obj)) ||
        !pair_passes(f, DOMAIN_LIST_MANAGEDSAVE, DOMAIN_LIST_NO_MANAGEDSAVE,
                     obj->has_managed_save) ||
        !pair_passes(f, DOMAIN_LIST_AUTOSTART, DOMAIN_LIST_NO_AUTOSTART, obj->autostart) ||
        !pair_passes(f, DOMAIN_LIST_HAS_SNAPSHOT, DOMAIN_LIST_NO_SNAPSHOT, obj->n_snapshots > 0) ||
        !pair_passes(f, DOMAIN_LIST_HAS_CHECKPOINT, DOMAIN_LIST_NO_CHECKPOINT,
                     obj->n_checkpoints > 0))
        return FALSE;

    const guint states =
        DOMAIN_LIST_RUNNING | DOMAIN_LIST_PAUSED | DOMAIN_LIST_SHUTOFF | DOMAIN_LIST_OTHER;
    if (!(f & states))
        return TRUE;
    gboolean other = st != DOMAIN_STATE_RUNNING && st != DOMAIN_STATE_PAUSED &&
                     st != DOMAIN_STATE_SHUTOFF;
    return ((f & DOMAIN_LIST_RUNNING) && st == DOMAIN_STATE_RUNNING) ||
           ((f & DOMAIN_LIST_PAUSED) && st == DOMAIN_STATE_PAUSED) ||
           ((f & DOMAIN_LIST_SHUTOFF) && st == DOMAIN_STATE_SHUTOFF) ||
           ((f & DOMAIN_LIST_OTHER) && other);
}

static int compare_entry_names(gconstpointer a, gconstpointer b, gpointer user)
{
    GHashTable *objs = user;
    const ListEntry *ea = g_hash_table_lookup(objs, *(DomainObj *const *)a);
    const ListEntry *eb = g_hash_table_lookup(objs, *(DomainObj *const *)b);
    return strcmp(ea->name, eb->name);
}

GPtrArray *domain_list_collect(DomainList *list, guint filter, GError **error)
{
    if (filter & ~DOMAIN_LIST_FILTERS_ALL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function %s", filter & ~DOMAIN_LIST_FILTERS_ALL,
                    G_STRFUNC);
        return NULL;
    }

    g_autoptr(GPtrArray) all = g_ptr_array_new_with_free_func((GDestroyNotify)domain_obj_unref);
    g_mutex_lock(&list->lock);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, list->by_uuid);
    while (g_hash_table_iter_next(&it, NULL, &value))
        g_ptr_array_add(all, domain_obj_ref(value));
    /* Names never change while a member, so sorting by them here is stable. */
    g_ptr_array_sort_with_data(all, compare_entry_names, list->objs);
    g_mutex_unlock(&list->lock);

    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)domain_obj_unref);
    for (guint i = 0; i < all->len; i++) {
        DomainObj *obj = all->pdata[i];
        domain_obj_lock(obj);
        gboolean keep = !domain_obj_is_removed(obj) && !domain_obj_is_hidden(obj) &&
                        filter_passes(obj, filter);
        domain_obj_unlock(obj);
        if (keep)
            g_ptr_array_add(out, domain_obj_ref(obj));
    }
    return out;
}

static int compare_ints(gconstpointer a, gconstpointer b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The ids that key an id table, ascending. list->lock held. */
static GArray *sorted_ids(GHashTable *ids_table)
{
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int));
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, ids_table);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        int id = GPOINTER_TO_INT(key);
        g_array_append_val(ids, id);
    }
    g_array_sort(ids, compare_ints);
    return ids;
}

GPtrArray *domain_list_get_instances(DomainList *list)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)domain_obj_unref);
    g_mutex_lock(&list->lock);
    g_autoptr(GArray) ids = sorted_ids(list->used_ids);
    for (guint i = 0; i < ids->len; i++) {
        int id = g_array_index(ids, int, i);
        g_ptr_array_add(out,
                        domain_obj_ref(g_hash_table_lookup(list->used_ids, GINT_TO_POINTER(id))));
    }
    g_mutex_unlock(&list->lock);
    return out;
}

int domain_list_count_active(DomainList *list)
{
    g_mutex_lock(&list->lock);
    int n = (int)g_hash_table_size(list->by_id);
    g_mutex_unlock(&list->lock);
    return n;
}

int domain_list_count_inactive(DomainList *list)
{
    g_mutex_lock(&list->lock);
    int n = (int)(g_hash_table_size(list->by_uuid) - g_hash_table_size(list->by_id));
    g_mutex_unlock(&list->lock);
    return n;
}

GArray *domain_list_active_ids(DomainList *list)
{
    g_mutex_lock(&list->lock);
    GArray *ids = sorted_ids(list->by_id);
    g_mutex_unlock(&list->lock);
    return ids;
}

static int compare_strings(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char **domain_list_inactive_names(DomainList *list)
{
    GPtrArray *names = g_ptr_array_new();
    g_mutex_lock(&list->lock);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, list->objs);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        ListEntry *e = value;
        if (e->visible && e->id == -1)
            g_ptr_array_add(names, g_strdup(e->name));
    }
    g_mutex_unlock(&list->lock);
    g_ptr_array_sort(names, compare_strings);
    g_ptr_array_add(names, NULL);
    return (char **)g_ptr_array_free(names, FALSE);
}
