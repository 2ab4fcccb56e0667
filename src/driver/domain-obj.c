/* DomainObj lifetime, locking and accessors, and the names of libvirt's
 * domain states and reasons. */
#include "driver/domain-obj.h"

#include "driver/migration-job.h"

static const char *const state_names[DOMAIN_STATE_LAST] = {
    [DOMAIN_STATE_NOSTATE] = "nostate",   [DOMAIN_STATE_RUNNING] = "running",
    [DOMAIN_STATE_BLOCKED] = "blocked",   [DOMAIN_STATE_PAUSED] = "paused",
    [DOMAIN_STATE_SHUTDOWN] = "shutdown", [DOMAIN_STATE_SHUTOFF] = "shutoff",
    [DOMAIN_STATE_CRASHED] = "crashed",   [DOMAIN_STATE_PMSUSPENDED] = "pmsuspended",
};

static const char *const running_reasons[] = {
    "unknown",  "booted",     "migrated", "restored",  "from-snapshot",
    "unpaused", "migration-canceled", "save-canceled", "wakeup", "crashed",
    "postcopy", "postcopy-failed",
};
static const char *const paused_reasons[] = {
    "unknown",       "user",     "migration", "save",        "dump",
    "ioerror",       "watchdog", "from-snapshot", "shutting-down", "snapshot",
    "crashed",       "starting-up", "postcopy", "postcopy-failed", "api-error",
};
static const char *const shutdown_reasons[] = {"unknown", "user"};
static const char *const shutoff_reasons[] = {
    "unknown", "shutdown", "destroyed", "crashed", "migrated",
    "saved",   "failed",   "from-snapshot", "daemon",
};
static const char *const crashed_reasons[] = {"unknown", "panicked"};
static const char *const unknown_only[] = {"unknown"};

static const char *const *reason_table(DomainState state, gsize *n)
{
    switch (state) {
    case DOMAIN_STATE_RUNNING:
        *n = G_N_ELEMENTS(running_reasons);
        return running_reasons;
    case DOMAIN_STATE_PAUSED:
        *n = G_N_ELEMENTS(paused_reasons);
        return paused_reasons;
    case DOMAIN_STATE_SHUTDOWN:
        *n = G_N_ELEMENTS(shutdown_reasons);
        return shutdown_reasons;
    case DOMAIN_STATE_SHUTOFF:
        *n = G_N_ELEMENTS(shutoff_reasons);
        return shutoff_reasons;
    case DOMAIN_STATE_CRASHED:
        *n = G_N_ELEMENTS(crashed_reasons);
        return crashed_reasons;
    default:
        *n = G_N_ELEMENTS(unknown_only);
        return unknown_only;
    }
}

const char *domain_state_to_string(DomainState state)
{
    if ((guint)state >= DOMAIN_STATE_LAST)
        return "nostate";
    return state_names[state];
}

gboolean domain_state_from_string(const char *str, DomainState *state)
{
    for (guint s = 0; s < DOMAIN_STATE_LAST; s++) {
        if (g_strcmp0(str, state_names[s]) == 0) {
            *state = (DomainState)s;
            return TRUE;
        }
    }
    return FALSE;
}

const char *domain_state_reason_to_string(DomainState state, int reason)
{
    gsize n;
    const char *const *t = reason_table(state, &n);
    if (reason < 0 || (gsize)reason >= n)
        return "unknown";
    return t[reason];
}

gboolean domain_state_reason_from_string(DomainState state, const char *str, int *reason)
{
    gsize n;
    const char *const *t = reason_table(state, &n);
    for (gsize i = 0; i < n; i++) {
        if (g_strcmp0(str, t[i]) == 0) {
            *reason = (int)i;
            return TRUE;
        }
    }
    return FALSE;
}

DomainObj *domain_obj_new(void)
{
    DomainObj *obj = g_new0(DomainObj, 1);
    g_mutex_init(&obj->lock);
    g_atomic_ref_count_init(&obj->refs);
    obj->id = -1;
    obj->state = DOMAIN_STATE_SHUTOFF;
    obj->reason = DOMAIN_SHUTOFF_UNKNOWN;
    obj->runtime_data = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    return obj;
}

DomainObj *domain_obj_ref(DomainObj *obj)
{
    g_atomic_ref_count_inc(&obj->refs);
    return obj;
}

void domain_obj_unref(DomainObj *obj)
{
    if (!obj || !g_atomic_ref_count_dec(&obj->refs))
        return;
    if (obj->priv_free)
        obj->priv_free(obj->priv);
    domain_def_free(obj->persistent_def);
    domain_def_free(obj->live_def);
    g_free(obj->instance_id);
    g_free(obj->qmp_path);
    g_hash_table_unref(obj->runtime_data);
    migration_job_unref(obj->job);
    g_mutex_clear(&obj->lock);
    g_free(obj);
}

void domain_obj_lock(DomainObj *obj)
{
    g_mutex_lock(&obj->lock);
}

void domain_obj_unlock(DomainObj *obj)
{
    g_mutex_unlock(&obj->lock);
}

void domain_obj_end(DomainObj *obj)
{
    if (!obj)
        return;
    domain_obj_unlock(obj);
    domain_obj_unref(obj);
}

gboolean domain_obj_is_active(const DomainObj *obj)
{
    return obj->id != -1;
}

gboolean domain_obj_is_persistent(const DomainObj *obj)
{
    return obj->persistent_def != NULL;
}

DomainDef *domain_obj_get_def(const DomainObj *obj)
{
    return obj->live_def ? obj->live_def : obj->persistent_def;
}

const char *domain_obj_get_name(const DomainObj *obj)
{
    return domain_obj_get_def(obj)->name;
}

const guint8 *domain_obj_get_uuid(const DomainObj *obj)
{
    return domain_obj_get_def(obj)->uuid;
}

void domain_obj_set_state(DomainObj *obj, DomainState state, int reason)
{
    obj->state = state;
    obj->reason = reason;
}

DomainState domain_obj_get_state(const DomainObj *obj, int *reason)
{
    if (reason)
        *reason = obj->reason;
    return obj->state;
}

char *domain_obj_format_xml(const DomainObj *obj, guint flags)
{
    const DomainDef *def = domain_obj_get_def(obj);
    if ((flags & DOMAIN_DEF_FORMAT_INACTIVE) && obj->persistent_def)
        def = obj->persistent_def;
    return domain_def_format(def, obj->id, flags);
}

void domain_obj_set_priv(DomainObj *obj, gpointer priv, GDestroyNotify priv_free)
{
    if (obj->priv_free)
        obj->priv_free(obj->priv);
    obj->priv = priv;
    obj->priv_free = priv_free;
}

gpointer domain_obj_get_priv(const DomainObj *obj)
{
    return obj->priv;
}

void domain_obj_set_runtime_data(DomainObj *obj, const char *key, const char *value)
{
    if (value)
        g_hash_table_replace(obj->runtime_data, g_strdup(key), g_strdup(value));
    else
        g_hash_table_remove(obj->runtime_data, key);
}

const char *domain_obj_get_runtime_data(const DomainObj *obj, const char *key)
{
    return g_hash_table_lookup(obj->runtime_data, key);
}

gboolean domain_obj_is_hidden(const DomainObj *obj)
{
    return g_atomic_int_get(&obj->hidden) != 0;
}

gboolean domain_obj_is_removed(const DomainObj *obj)
{
    return g_atomic_int_get(&obj->removed) != 0;
}
