/* Persistence of domain configs, autostart marks and per-instance runtime
 * state, all written atomically, and their reload when the daemon starts. */
#include "driver/domain-store.h"

#include "util/error.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FERRY_LOG_MODULE "driver.domain-store"

struct _DomainStore {
    char *config_dir;
    char *autostart_dir;
    char *run_dir;
};

static gboolean make_dir(const char *path, GError **error)
{
    if (g_mkdir_with_parents(path, 0700) < 0) {
        ferry_set_error_errno(error, errno, "cannot create directory '%s'", path);
        return FALSE;
    }
    return TRUE;
}

DomainStore *domain_store_new(const char *config_dir, const char *run_dir, GError **error)
{
    g_autoptr(DomainStore) store = g_new0(DomainStore, 1);
    store->config_dir = g_strdup(config_dir);
    store->autostart_dir = g_build_filename(config_dir, "autostart", NULL);
    store->run_dir = g_strdup(run_dir);
    if (!make_dir(store->config_dir, error) || !make_dir(store->autostart_dir, error) ||
        !make_dir(store->run_dir, error))
        return NULL;
    return g_steal_pointer(&store);
}

void domain_store_free(DomainStore *store)
{
    if (!store)
        return;
    g_free(store->config_dir);
    g_free(store->autostart_dir);
    g_free(store->run_dir);
    g_free(store);
}

const char *domain_store_get_config_dir(const DomainStore *store)
{
    return store->config_dir;
}

const char *domain_store_get_run_dir(const DomainStore *store)
{
    return store->run_dir;
}

static char *config_path(const DomainStore *store, const char *name)
{
    g_autofree char *file = g_strconcat(name, ".xml", NULL);
    return g_build_filename(store->config_dir, file, NULL);
}

static char *autostart_path(const DomainStore *store, const char *name)
{
    g_autofree char *file = g_strconcat(name, ".xml", NULL);
    return g_build_filename(store->autostart_dir, file, NULL);
}

char *domain_store_runtime_path(const DomainStore *store, const char *instance_id,
                                const char *suffix)
{
    g_autofree char *file = g_strconcat(instance_id, suffix, NULL);
    return g_build_filename(store->run_dir, file, NULL);
}

/* A rename or unlink is durable only once its directory is on disk too. */
static gboolean sync_dir(const char *dir, GError **error)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "cannot open directory '%s'", dir);
        return FALSE;
    }
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc < 0 && err != EINVAL) { /* some file systems cannot sync directories */
        ferry_set_error_errno(error, err, "cannot sync directory '%s'", dir);
        return FALSE;
    }
    return TRUE;
}

static gboolean write_atomic(const char *dir, const char *path, const char *data,
                             const char *what, GError **error)
{
    g_autoptr(GError) local = NULL;
    if (!g_file_set_contents_full(path, data, -1,
                                  G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE,
                                  0600, &local)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot save %s: %s", what,
                    local->message);
        return FALSE;
    }
    return sync_dir(dir, error);
}

gboolean domain_store_check_room(DomainStore *store, GError **error)
{
    g_autofree char *path = g_build_filename(store->run_dir, ".room-probe.XXXXXX", NULL);
    int fd = g_mkstemp_full(path, O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "cannot write to the runtime directory '%s'",
                              store->run_dir);
        return FALSE;
    }
    static const char page[4096];
    int err = 0;
    if (write(fd, page, sizeof(page)) != (ssize_t)sizeof(page))
        err = errno ? errno : ENOSPC;
    else if (fsync(fd) < 0)
        err = errno;
    close(fd);
    unlink(path);
    if (err) {
        ferry_set_error_errno(error, err, "cannot write to the runtime directory '%s'",
                              store->run_dir);
        return FALSE;
    }
    return TRUE;
}

static gboolean unlink_if_present(const char *path, GError **error)
{
    if (unlink(path) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "cannot remove '%s'", path);
        return FALSE;
    }
    return TRUE;
}

gboolean domain_store_save_config(DomainStore *store, const DomainDef *def, GError **error)
{
    g_autofree char *path = config_path(store, def->name);
    g_autofree char *xml =
        domain_def_format(def, -1, DOMAIN_DEF_FORMAT_INACTIVE | DOMAIN_DEF_FORMAT_SECURE);
    g_autofree char *what = g_strdup_printf("the config of domain '%s'", def->name);
    return write_atomic(store->config_dir, path, xml, what, error);
}

gboolean domain_store_delete_config(DomainStore *store, const char *name, GError **error)
{
    g_autofree char *path = config_path(store, name);
    g_autofree char *link = autostart_path(store, name);
    return unlink_if_present(link, error) && unlink_if_present(path, error) &&
           sync_dir(store->autostart_dir, error) && sync_dir(store->config_dir, error);
}

gboolean domain_store_set_autostart(DomainStore *store, const char *name, gboolean autostart,
                                    GError **error)
{
    g_autofree char *link = autostart_path(store, name);
    if (!autostart)
        return unlink_if_present(link, error) && sync_dir(store->autostart_dir, error);

    if (domain_store_get_autostart(store, name))
        return TRUE;
    /* Relative, so the config dir can move. */
    g_autofree char *file = g_strconcat(name, ".xml", NULL);
    g_autofree char *target = g_build_filename("..", file, NULL);
    if (symlink(target, link) < 0 && errno != EEXIST) {
        ferry_set_error_errno(error, errno, "cannot mark domain '%s' for autostart", name);
        return FALSE;
    }
    return sync_dir(store->autostart_dir, error);
}

gboolean domain_store_get_autostart(DomainStore *store, const char *name)
{
    g_autofree char *link = autostart_path(store, name);
    struct stat st;
    return lstat(link, &st) == 0;
}

/* ---- runtime state -------------------------------------------------------- */

static int compare_strings(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* <domstatus instance='..' id='3' state='running' reason='booted' pid='123'
 *            incoming='no'>
 *   <qmp path='..'/>
 *   <data key='..' value='..'/>        (sorted by key)
 *   <domain ...>live def</domain>
 * </domstatus> */
static char *format_state(const DomainObj *obj)
{
    GString *buf = g_string_sized_new(2048);
    g_autofree char *id = g_strdup_printf("%d", obj->id);
    g_autofree char *pid = g_strdup_printf("%ld", (long)obj->pid);

    g_string_append(buf, "<domstatus");
    domain_xml_append_attr(buf, "instance", obj->instance_id);
    domain_xml_append_attr(buf, "id", id);
    domain_xml_append_attr(buf, "state", domain_state_to_string(obj->state));
    domain_xml_append_attr(buf, "reason", domain_state_reason_to_string(obj->state, obj->reason));
    domain_xml_append_attr(buf, "pid", pid);
    domain_xml_append_attr(buf, "incoming", domain_obj_is_hidden(obj) ? "yes" : "no");
    g_string_append(buf, ">\n");
    if (obj->qmp_path) {
        g_string_append(buf, "  <qmp");
        domain_xml_append_attr(buf, "path", obj->qmp_path);
        g_string_append(buf, "/>\n");
    }

    guint n;
    g_autofree gpointer keys = g_hash_table_get_keys_as_array(obj->runtime_data, &n);
    qsort(keys, n, sizeof(gpointer), compare_strings);
    for (guint i = 0; i < n; i++) {
        const char *key = ((const char **)keys)[i];
        g_string_append(buf, "  <data");
        domain_xml_append_attr(buf, "key", key);
        domain_xml_append_attr(buf, "value", g_hash_table_lookup(obj->runtime_data, key));
        g_string_append(buf, "/>\n");
    }
    domain_def_format_buf(obj->live_def, obj->id, 0, buf, 2);
    g_string_append(buf, "</domstatus>\n");
    return g_string_free(buf, FALSE);
}

gboolean domain_store_save_state(DomainStore *store, const DomainObj *obj, GError **error)
{
    if (!domain_obj_is_active(obj) || !obj->instance_id || !obj->live_def) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "cannot save the runtime state of domain '%s': it is not running",
                    domain_obj_get_name(obj));
        return FALSE;
    }
    g_autofree char *path = domain_store_runtime_path(store, obj->instance_id, ".xml");
    g_autofree char *xml = format_state(obj);
    g_autofree char *what = g_strdup_printf("the runtime state of domain '%s' (instance %s)",
                                            obj->live_def->name, obj->instance_id);
    return write_atomic(store->run_dir, path, xml, what, error);
}

gboolean domain_store_delete_state(DomainStore *store, const char *instance_id, GError **error)
{
    g_autofree char *path = domain_store_runtime_path(store, instance_id, ".xml");
    return unlink_if_present(path, error) && sync_dir(store->run_dir, error);
}

/* What a runtime-state file holds, before it is attached to a DomainObj. */
typedef struct {
    char *instance_id;
    int id;
    DomainState state;
    int reason;
    pid_t pid;
    gboolean incoming;
    char *qmp_path;
    GHashTable *data;
    DomainDef *live_def;
} SavedState;

static void saved_state_free(SavedState *s)
{
    if (!s)
        return;
    g_free(s->instance_id);
    g_free(s->qmp_path);
    if (s->data)
        g_hash_table_unref(s->data);
    domain_def_free(s->live_def);
    g_free(s);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SavedState, saved_state_free)

static char *prop(const xmlNode *n, const char *name)
{
    xmlChar *v = xmlGetNoNsProp(n, BAD_CAST name);
    char *s = v ? g_strdup((const char *)v) : NULL;
    xmlFree(v);
    return s;
}

static gboolean prop_int(const xmlNode *n, const char *name, gint64 min, gint64 max, gint64 *out)
{
    g_autofree char *v = prop(n, name);
    return v && g_ascii_string_to_signed(v, 10, min, max, out, NULL);
}

static gboolean valid_instance_id(const char *s)
{
    if (!s || !*s)
        return FALSE;
    for (; *s; s++)
        if (!g_ascii_isalnum(*s) && *s != '-' && *s != '_')
            return FALSE;
    return TRUE;
}

/* Fills s from a <domstatus> element; returns what is wrong, or NULL. */
static const char *parse_domstatus(const xmlNode *root, SavedState *s, GError **def_error)
{
    gint64 v;
    if (!root || !xmlStrEqual(root->name, BAD_CAST "domstatus"))
        return "expected <domstatus> as root element";

    s->instance_id = prop(root, "instance");
    if (!valid_instance_id(s->instance_id))
        return "missing or invalid attribute 'instance'";
    if (!prop_int(root, "id", 1, G_MAXINT, &v))
        return "missing or invalid attribute 'id'";
    s->id = (int)v;

    g_autofree char *state = prop(root, "state");
    g_autofree char *reason = prop(root, "reason");
    if (!domain_state_from_string(state, &s->state) ||
        !domain_state_reason_from_string(s->state, reason, &s->reason))
        return "missing or invalid attribute 'state' or 'reason'";

    g_autofree char *pid = prop(root, "pid");
    if (pid) {
        if (!prop_int(root, "pid", 0, G_MAXINT, &v))
            return "invalid attribute 'pid'";
        s->pid = (pid_t)v;
    }
    g_autofree char *incoming = prop(root, "incoming");
    s->incoming = g_strcmp0(incoming, "yes") == 0;

    for (xmlNode *n = root->children; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        if (xmlStrEqual(n->name, BAD_CAST "qmp")) {
            g_free(s->qmp_path);
            s->qmp_path = prop(n, "path");
        } else if (xmlStrEqual(n->name, BAD_CAST "data")) {
            g_autofree char *key = prop(n, "key");
            g_autofree char *value = prop(n, "value");
            if (!key || !value)
                return "<data> needs attributes 'key' and 'value'";
            g_hash_table_replace(s->data, g_steal_pointer(&key), g_steal_pointer(&value));
        } else if (xmlStrEqual(n->name, BAD_CAST "domain")) {
            if (s->live_def)
                return "more than one <domain>";
            s->live_def = domain_def_parse_node(n, def_error);
            if (!s->live_def)
                return "invalid <domain>";
        }
    }
    if (!s->live_def)
        return "missing <domain>";
    return NULL;
}

static SavedState *parse_state_file(const char *path, GError **error)
{
    g_autofree char *contents = NULL;
    gsize len;
    g_autoptr(GError) local = NULL;
    if (!g_file_get_contents(path, &contents, &len, &local)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "%s", local->message);
        return NULL;
    }
    xmlDoc *doc = domain_xml_read(contents, len, "runtime state", &local);
    if (!doc) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR, "invalid runtime state file '%s': %s",
                    path, local->message);
        return NULL;
    }
    g_autoptr(SavedState) s = g_new0(SavedState, 1);
    s->data = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    const char *bad = parse_domstatus(xmlDocGetRootElement(doc), s, &local);
    xmlFreeDoc(doc);
    if (bad) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR,
                    "invalid runtime state file '%s': %s%s%s", path, bad, local ? ": " : "",
                    local ? local->message : "");
        return NULL;
    }
    return g_steal_pointer(&s);
}

/* ---- loading --------------------------------------------------------------- */

/* Sorted names of the *.xml regular files in dir: temp files of an
 * interrupted write ("NAME.xml.XXXXXX") do not match. */
static GPtrArray *list_xml_files(const char *dir, GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(GDir) d = g_dir_open(dir, 0, &local);
    if (!d) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot read directory: %s",
                    local->message);
        return NULL;
    }
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    while ((name = g_dir_read_name(d))) {
        g_autofree char *path = g_build_filename(dir, name, NULL);
        if (g_str_has_suffix(name, ".xml") && strlen(name) > 4 &&
            g_file_test(path, G_FILE_TEST_IS_REGULAR))
            g_ptr_array_add(names, g_strdup(name));
    }
    g_ptr_array_sort(names, compare_strings);
    return names;
}

static void load_config(DomainStore *store, DomainList *list, const char *file)
{
    g_autofree char *path = g_build_filename(store->config_dir, file, NULL);
    g_autofree char *stem = g_strndup(file, strlen(file) - 4);
    g_autofree char *xml = NULL;
    g_autoptr(GError) err = NULL;

    if (!g_file_get_contents(path, &xml, NULL, &err)) {
        FERRY_WARN("skipping domain config: %s", err->message);
        return;
    }
    g_autoptr(DomainDef) def = domain_def_parse_string(xml, &err);
    if (!def) {
        FERRY_WARN("skipping domain config '%s': %s", path, err->message);
        return;
    }
    if (!g_str_equal(def->name, stem)) {
        FERRY_WARN("skipping domain config '%s': it defines domain '%s'", path, def->name);
        return;
    }
    DomainObj *obj = domain_list_add(list, &def, 0, NULL, &err);
    if (!obj) {
        FERRY_WARN("skipping domain config '%s': %s", path, err->message);
        return;
    }
    obj->autostart = domain_store_get_autostart(store, obj->persistent_def->name);
    domain_obj_end(obj);
}

static DomainObj *load_state(DomainList *list, SavedState *s)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *name = g_strdup(s->live_def->name);
    DomainObj *obj =
        domain_list_restore(list, &s->live_def, s->id, s->instance_id, s->incoming, &err);
    if (!obj) {
        /* The VMM may still run: say where, so an operator can act. */
        FERRY_WARN("cannot restore instance %s of domain '%s' (pid %ld): %s", s->instance_id, name,
                   (long)s->pid, err->message);
        return NULL;
    }
    domain_obj_set_state(obj, s->state, s->reason);
    obj->pid = s->pid;
    obj->qmp_path = g_steal_pointer(&s->qmp_path);
    g_hash_table_unref(obj->runtime_data);
    obj->runtime_data = g_steal_pointer(&s->data);
    FERRY_INFO("found instance %s of domain '%s' (id %d, pid %ld, %s)", obj->instance_id, name,
               obj->id, (long)obj->pid, domain_state_to_string(obj->state));
    domain_obj_unlock(obj);
    return obj;
}

GPtrArray *domain_store_load(DomainStore *store, DomainList *list, GError **error)
{
    g_autoptr(GPtrArray) configs = list_xml_files(store->config_dir, error);
    if (!configs)
        return NULL;
    g_autoptr(GPtrArray) states = list_xml_files(store->run_dir, error);
    if (!states)
        return NULL;

    for (guint i = 0; i < configs->len; i++)
        load_config(store, list, configs->pdata[i]);

    g_autoptr(GPtrArray) saved = g_ptr_array_new_with_free_func((GDestroyNotify)saved_state_free);
    for (guint i = 0; i < states->len; i++) {
        const char *file = states->pdata[i];
        g_autofree char *path = g_build_filename(store->run_dir, file, NULL);
        g_autofree char *stem = g_strndup(file, strlen(file) - 4);
        g_autoptr(GError) err = NULL;
        SavedState *s = parse_state_file(path, &err);
        if (!s) {
            FERRY_WARN("skipping runtime state: %s", err->message);
            continue;
        }
        if (!g_str_equal(s->instance_id, stem)) {
            FERRY_WARN("skipping runtime state '%s': it belongs to instance '%s'", path,
                       s->instance_id);
            saved_state_free(s);
            continue;
        }
        g_ptr_array_add(saved, s);
    }

    /* Visible instances first: an incoming one (a local migration that was in
     * flight) may only be restored next to its visible twin. */
    GPtrArray *restored = g_ptr_array_new_with_free_func((GDestroyNotify)domain_obj_unref);
    for (int pass = 0; pass < 2; pass++) {
        for (guint i = 0; i < saved->len; i++) {
            SavedState *s = saved->pdata[i];
            if (s->incoming != (pass == 1))
                continue;
            DomainObj *obj = load_state(list, s);
            if (obj)
                g_ptr_array_add(restored, obj);
        }
    }
    return restored;
}
