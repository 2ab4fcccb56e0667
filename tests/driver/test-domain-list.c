/* The domain list: libvirt's uniqueness errors, lookups, filters, ids,
 * hidden incoming instances, and concurrent use. */
#include "test-helpers.h"

#include "driver/domain-list.h"

static DomainList *list;

static void setup(void)
{
    list = domain_list_new();
}

static void teardown(void)
{
    g_clear_pointer(&list, domain_list_free);
}

/* Defines domain NAME with test UUID n; returns nothing (unlocked). */
static void define(const char *name, int n)
{
    g_autofree char *uuid = test_uuid(n);
    g_autoptr(DomainDef) def = test_def_new(name, uuid);
    GError *err = NULL;
    DomainObj *obj = domain_list_add(list, &def, 0, NULL, &err);
    ck_assert_no_error(err);
    ck_assert_ptr_null(def); /* taken */
    domain_obj_end(obj);
}

/* Starts the defined domain NAME; returns its runtime id. */
static int start(const char *name, DomainState state, int reason)
{
    GError *err = NULL;
    DomainObj *obj = domain_list_lookup_by_name(list, name, &err);
    ck_assert_no_error(err);
    DomainDef *live = domain_def_copy(obj->persistent_def);
    ck_assert(domain_list_activate(list, obj, &live, &err));
    ck_assert_ptr_null(live);
    domain_obj_set_state(obj, state, reason);
    int id = obj->id;
    domain_obj_end(obj);
    return id;
}

/* Creates a transient running domain; returns its runtime id. */
static int create(const char *name, int n)
{
    g_autofree char *uuid = test_uuid(n);
    g_autoptr(DomainDef) def = test_def_new(name, uuid);
    GError *err = NULL;
    DomainObj *obj = domain_list_add(list, &def, DOMAIN_LIST_ADD_LIVE, NULL, &err);
    ck_assert_no_error(err);
    domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    int id = obj->id;
    domain_obj_end(obj);
    return id;
}

static void stop(const char *name)
{
    DomainObj *obj = domain_list_lookup_by_name(list, name, NULL);
    ck_assert_ptr_nonnull(obj);
    domain_list_deactivate(list, obj, DOMAIN_SHUTOFF_DESTROYED);
    domain_obj_end(obj);
}

/* The names a filter returns, comma-separated. */
static char *names_for(guint filter)
{
    GError *err = NULL;
    g_autoptr(GPtrArray) doms = domain_list_collect(list, filter, &err);
    ck_assert_no_error(err);
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < doms->len; i++) {
        DomainObj *obj = doms->pdata[i];
        domain_obj_lock(obj);
        g_string_append_printf(s, "%s%s", i ? "," : "", domain_obj_get_name(obj));
        domain_obj_unlock(obj);
    }
    return g_string_free(s, FALSE);
}

START_TEST(test_defined_domain_is_found_by_name_and_uuid)
{
    define("vm1", 1);
    GError *err = NULL;
    DomainObj *a = domain_list_lookup_by_name(list, "vm1", &err);
    ck_assert_no_error(err);
    guint8 uuid[FERRY_UUID_LEN];
    g_autofree char *uuidstr = test_uuid(1);
    ferry_uuid_parse(uuidstr, uuid, NULL);
    domain_obj_unlock(a); /* lookups return the object locked */
    DomainObj *b = domain_list_lookup_by_uuid(list, uuid, &err);
    ck_assert_no_error(err);
    ck_assert_ptr_eq(a, b);
    ck_assert(!domain_obj_is_active(b));
    ck_assert(domain_obj_is_persistent(b));
    ck_assert_int_eq(b->id, -1);
    ck_assert_int_eq(domain_obj_get_state(b, NULL), DOMAIN_STATE_SHUTOFF);
    domain_obj_end(b);
    domain_obj_unref(a);
}
END_TEST

START_TEST(test_missing_domain_lookups_say_what_was_asked)
{
    define("vm1", 1);
    GError *err = NULL;
    ck_assert_ptr_null(domain_list_lookup_by_name(list, "x", &err));
    ck_assert_ferry_error(err, FERRY_ERR_NO_DOMAIN, "no domain with matching name 'x'");
    g_clear_error(&err);

    guint8 uuid[FERRY_UUID_LEN];
    ferry_uuid_parse("c7a5fdbd-edaf-9455-926a-d65c16db1809", uuid, NULL);
    ck_assert_ptr_null(domain_list_lookup_by_uuid(list, uuid, &err));
    ck_assert_ferry_error(err, FERRY_ERR_NO_DOMAIN,
                          "no domain with matching uuid 'c7a5fdbd-edaf-9455-926a-d65c16db1809'");
    g_clear_error(&err);

    ck_assert_ptr_null(domain_list_lookup_by_id(list, 5, &err));
    ck_assert_ferry_error(err, FERRY_ERR_NO_DOMAIN, "no domain with matching id 5");
    g_clear_error(&err);

    ck_assert_ptr_null(domain_list_lookup_by_instance(list, "abc", &err));
    ck_assert_ferry_error(err, FERRY_ERR_NO_DOMAIN, "no domain with matching instance 'abc'");
    g_clear_error(&err);
}
END_TEST

START_TEST(test_same_name_with_other_uuid_is_rejected_like_libvirt)
{
    define("vm1", 1);
    g_autofree char *uuid2 = test_uuid(2);
    g_autofree char *uuid1 = test_uuid(1);
    g_autoptr(DomainDef) def = test_def_new("vm1", uuid2);
    GError *err = NULL;
    ck_assert_ptr_null(domain_list_add(list, &def, 0, NULL, &err));
    ck_assert_ptr_nonnull(def); /* still ours */
    g_autofree char *msg = g_strdup_printf("domain 'vm1' already exists with uuid %s", uuid1);
    ck_assert_ferry_error(err, FERRY_ERR_OPERATION_FAILED, msg);
    g_clear_error(&err);
    /* The same for a create. */
    ck_assert_ptr_null(domain_list_add(list, &def, DOMAIN_LIST_ADD_LIVE, NULL, &err));
    ck_assert_ferry_error(err, FERRY_ERR_OPERATION_FAILED, msg);
    g_clear_error(&err);
    ck_assert_int_eq(domain_list_count_inactive(list), 1);
}
END_TEST

START_TEST(test_same_uuid_with_other_name_is_rejected_like_libvirt)
{
    define("vm1", 1);
    g_autofree char *uuid1 = test_uuid(1);
    g_autoptr(DomainDef) def = test_def_new("vm2", uuid1);
    GError *err = NULL;
    ck_assert_ptr_null(domain_list_add(list, &def, 0, NULL, &err));
    g_autofree char *msg = g_strdup_printf("domain 'vm1' is already defined with uuid %s", uuid1);
    ck_assert_ferry_error(err, FERRY_ERR_OPERATION_FAILED, msg);
    g_clear_error(&err);
}
END_TEST

START_TEST(test_redefine_replaces_persistent_def_and_hands_back_the_old)
{
    define("vm1", 1);
    g_autofree char *uuid1 = test_uuid(1);
    g_autoptr(DomainDef) def = test_def_new("vm1", uuid1);
    def->memory_kib = 4096;
    g_autoptr(DomainDef) old = NULL;
    GError *err = NULL;
    DomainObj *obj = domain_list_add(list, &def, 0, &old, &err);
    ck_assert_no_error(err);
    ck_assert_ptr_nonnull(old);
    ck_assert_uint_eq(old->memory_kib, 256 * 1024);
    ck_assert_uint_eq(obj->persistent_def->memory_kib, 4096);
    domain_obj_end(obj);
    ck_assert_int_eq(domain_list_count_inactive(list), 1);
}
END_TEST

START_TEST(test_runtime_ids_start_at_1_and_are_never_reused)
{
    define("a", 1);
    define("b", 2);
    ck_assert_int_eq(start("a", DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED), 1);
    ck_assert_int_eq(create("t", 3), 2);
    ck_assert_int_eq(start("b", DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED), 3);
    stop("a");
    ck_assert_int_eq(start("a", DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED), 4);

    DomainObj *obj = domain_list_lookup_by_id(list, 4, NULL);
    ck_assert_ptr_nonnull(obj);
    ck_assert_str_eq(domain_obj_get_name(obj), "a");
    ck_assert_ptr_nonnull(obj->instance_id);
    ck_assert_uint_eq(strlen(obj->instance_id), 16);
    domain_obj_end(obj);
    ck_assert_ptr_null(domain_list_lookup_by_id(list, 1, NULL)); /* a's old id is gone */
}
END_TEST

START_TEST(test_activation_gives_each_instance_its_own_instance_id)
{
    define("a", 1);
    start("a", DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    DomainObj *obj = domain_list_lookup_by_name(list, "a", NULL);
    g_autofree char *first = g_strdup(obj->instance_id);
    domain_obj_unlock(obj);
    DomainObj *same = domain_list_lookup_by_instance(list, first, NULL);
    ck_assert_ptr_eq(same, obj);
    domain_obj_end(same);
    domain_obj_lock(obj);
    domain_list_deactivate(list, obj, DOMAIN_SHUTOFF_SHUTDOWN);
    ck_assert_ptr_null(obj->instance_id);
    ck_assert_ptr_null(obj->live_def);
    int reason;
    ck_assert_int_eq(domain_obj_get_state(obj, &reason), DOMAIN_STATE_SHUTOFF);
    ck_assert_int_eq(reason, DOMAIN_SHUTOFF_SHUTDOWN);
    domain_obj_end(obj);

    start("a", DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    obj = domain_list_lookup_by_name(list, "a", NULL);
    ck_assert_str_ne(obj->instance_id, first);
    domain_obj_end(obj);
    ck_assert_ptr_null(domain_list_lookup_by_instance(list, first, NULL));
}
END_TEST

START_TEST(test_activation_sets_starting_up_and_refuses_a_running_domain)
{
    define("a", 1);
    DomainObj *obj = domain_list_lookup_by_name(list, "a", NULL);
    DomainDef *live = domain_def_copy(obj->persistent_def);
    ck_assert(domain_list_activate(list, obj, &live, NULL));
    int reason;
    ck_assert_int_eq(domain_obj_get_state(obj, &reason), DOMAIN_STATE_PAUSED);
    ck_assert_int_eq(reason, DOMAIN_PAUSED_STARTING_UP);
    g_autoptr(DomainDef) again = domain_def_copy(obj->persistent_def);
    GError *err = NULL;
    ck_assert(!domain_list_activate(list, obj, &again, &err));
    ck_assert_ptr_nonnull(again);
    ck_assert_ferry_error(err, FERRY_ERR_OPERATION_INVALID, "domain 'a' is already active");
    g_clear_error(&err);
    domain_obj_end(obj);
}
END_TEST

START_TEST(test_create_of_a_running_domain_is_refused)
{
    define("a", 1);
    start("a", DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    g_autofree char *uuid = test_uuid(1);
    g_autoptr(DomainDef) def = test_def_new("a", uuid);
    GError *err = NULL;
    ck_assert_ptr_null(domain_list_add(list, &def, DOMAIN_LIST_ADD_LIVE, NULL, &err));
    ck_assert_ferry_error(err, FERRY_ERR_OPERATION_INVALID, "domain 'a' is already active");
    g_clear_error(&err);
}
END_TEST

START_TEST(test_create_from_xml_starts_a_defined_inactive_domain)
{
    define("a", 1);
    g_autofree char *uuid = test_uuid(1);
    g_autoptr(DomainDef) def = test_def_new("a", uuid);
    def->vcpus = def->vcpus_current = 2;
    DomainObj *obj = domain_list_add(list, &def, DOMAIN_LIST_ADD_LIVE, NULL, NULL);
    ck_assert_ptr_nonnull(obj);
    ck_assert(domain_obj_is_active(obj));
    ck_assert(domain_obj_is_persistent(obj)); /* keeps its config */
    ck_assert_uint_eq(obj->live_def->vcpus, 2);
    ck_assert_uint_eq(obj->persistent_def->vcpus, 1);
    domain_obj_end(obj);
    ck_assert_int_eq(domain_list_count_active(list), 1);
    ck_assert_int_eq(domain_list_count_inactive(list), 0);
}
END_TEST

START_TEST(test_stopped_transient_domain_disappears_persistent_one_stays)
{
    define("p", 1);
    start("p", DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    create("t", 2);
    DomainObj *t = domain_list_lookup_by_name(list, "t", NULL);
    domain_list_deactivate(list, t, DOMAIN_SHUTOFF_DESTROYED);
    ck_assert(domain_obj_is_removed(t));
    domain_obj_end(t);
    stop("p");
    ck_assert_ptr_null(domain_list_lookup_by_name(list, "t", NULL));
    DomainObj *p = domain_list_lookup_by_name(list, "p", NULL);
    ck_assert_ptr_nonnull(p);
    ck_assert(!domain_obj_is_removed(p));
    domain_obj_end(p);
}
END_TEST

START_TEST(test_undefine_of_a_running_domain_waits_for_it_to_stop)
{
    define("p", 1);
    define("q", 2);
    start("p", DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    DomainObj *p = domain_list_lookup_by_name(list, "p", NULL);
    domain_list_undefine(list, p);
    ck_assert(!domain_obj_is_persistent(p));
    ck_assert(!domain_obj_is_removed(p));
    domain_obj_end(p);
    ck_assert_ptr_nonnull((p = domain_list_lookup_by_name(list, "p", NULL)));
    domain_obj_end(p);
    stop("p");
    ck_assert_ptr_null(domain_list_lookup_by_name(list, "p", NULL));

    DomainObj *q = domain_list_lookup_by_name(list, "q", NULL);
    domain_list_undefine(list, q); /* inactive: gone at once */
    ck_assert(domain_obj_is_removed(q));
    domain_obj_end(q);
    ck_assert_int_eq(domain_list_count_inactive(list), 0);
}
END_TEST

/* a: running, persistent, autostart;  b: paused, transient;
 * c: shut off, persistent, managed save;  d: crashed (active), persistent,
 * snapshot;  e: shut off, persistent, checkpoint. */
static void setup_states(void)
{
    define("a", 1);
    start("a", DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    create("b", 2);
    DomainObj *b = domain_list_lookup_by_name(list, "b", NULL);
    domain_obj_set_state(b, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_USER);
    domain_obj_end(b);
    define("c", 3);
    define("d", 4);
    start("d", DOMAIN_STATE_CRASHED, DOMAIN_CRASHED_PANICKED);
    define("e", 5);

    DomainObj *o = domain_list_lookup_by_name(list, "a", NULL);
    o->autostart = TRUE;
    domain_obj_end(o);
    o = domain_list_lookup_by_name(list, "c", NULL);
    o->has_managed_save = TRUE;
    domain_obj_end(o);
    o = domain_list_lookup_by_name(list, "d", NULL);
    o->n_snapshots = 2;
    domain_obj_end(o);
    o = domain_list_lookup_by_name(list, "e", NULL);
    o->n_checkpoints = 1;
    domain_obj_end(o);
}

static const struct {
    guint filter;
    const char *names;
} filter_cases[] = {
    {0, "a,b,c,d,e"},
    {DOMAIN_LIST_ACTIVE, "a,b,d"},
    {DOMAIN_LIST_INACTIVE, "c,e"},
    {DOMAIN_LIST_ACTIVE | DOMAIN_LIST_INACTIVE, "a,b,c,d,e"},
    {DOMAIN_LIST_PERSISTENT, "a,c,d,e"},
    {DOMAIN_LIST_TRANSIENT, "b"},
    {DOMAIN_LIST_PERSISTENT | DOMAIN_LIST_TRANSIENT, "a,b,c,d,e"},
    {DOMAIN_LIST_RUNNING, "a"},
    {DOMAIN_LIST_PAUSED, "b"},
    {DOMAIN_LIST_SHUTOFF, "c,e"},
    {DOMAIN_LIST_OTHER, "d"},
    {DOMAIN_LIST_RUNNING | DOMAIN_LIST_PAUSED, "a,b"},
    {DOMAIN_LIST_MANAGEDSAVE, "c"},
    {DOMAIN_LIST_NO_MANAGEDSAVE, "a,b,d,e"},
    {DOMAIN_LIST_AUTOSTART, "a"},
    {DOMAIN_LIST_NO_AUTOSTART, "b,c,d,e"},
    {DOMAIN_LIST_HAS_SNAPSHOT, "d"},
    {DOMAIN_LIST_NO_SNAPSHOT, "a,b,c,e"},
    {DOMAIN_LIST_HAS_CHECKPOINT, "e"},
    {DOMAIN_LIST_NO_CHECKPOINT, "a,b,c,d"},
    {DOMAIN_LIST_ACTIVE | DOMAIN_LIST_PERSISTENT, "a,d"},
    {DOMAIN_LIST_INACTIVE | DOMAIN_LIST_NO_MANAGEDSAVE, "e"},
    /* Both bits of every pair and every state: no filtering at all. */
    {DOMAIN_LIST_FILTERS_ALL, "a,b,c,d,e"},
};

START_TEST(test_list_filter_flags_select_like_libvirt)
{
    setup_states();
    const char *want = filter_cases[_i].names;
    g_autofree char *got = names_for(filter_cases[_i].filter);
    ck_assert_msg(g_str_equal(got, want), "filter 0x%x: got '%s', want '%s'",
                  filter_cases[_i].filter, got, want);
}
END_TEST

START_TEST(test_list_refuses_unknown_filter_flags)
{
    GError *err = NULL;
    ck_assert_ptr_null(domain_list_collect(list, 1u << 16, &err));
    ck_assert_ferry_error(err, FERRY_ERR_INVALID_ARG, "unsupported flags (0x10000)");
    g_clear_error(&err);
}
END_TEST

START_TEST(test_counts_and_legacy_lists)
{
    setup_states();
    ck_assert_int_eq(domain_list_count_active(list), 3);
    ck_assert_int_eq(domain_list_count_inactive(list), 2);
    g_autoptr(GArray) ids = domain_list_active_ids(list);
    ck_assert_uint_eq(ids->len, 3);
    ck_assert_int_eq(g_array_index(ids, int, 0), 1);
    ck_assert_int_eq(g_array_index(ids, int, 1), 2);
    ck_assert_int_eq(g_array_index(ids, int, 2), 3);
    g_auto(GStrv) names = domain_list_inactive_names(list);
    ck_assert_uint_eq(g_strv_length(names), 2);
    ck_assert_str_eq(names[0], "c");
    ck_assert_str_eq(names[1], "e");
}
END_TEST

/* ---- hidden incoming instances ---------------------------------------------- */

static DomainObj *add_incoming(const char *name, int n, guint flags, GError **error)
{
    g_autofree char *uuid = test_uuid(n);
    g_autoptr(DomainDef) def = test_def_new(name, uuid);
    DomainObj *obj = domain_list_add(list, &def, DOMAIN_LIST_ADD_HIDDEN | flags, NULL, error);
    if (obj)
        domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
    return obj;
}

START_TEST(test_incoming_instance_coexists_hidden_with_running_twin)
{
    define("vm1", 1);
    int src_id = start("vm1", DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
    GError *err = NULL;
    DomainObj *in = add_incoming("vm1", 1, DOMAIN_LIST_ADD_ALLOW_RUNNING_TWIN, &err);
    ck_assert_no_error(err);
    ck_assert(domain_obj_is_hidden(in));
    ck_assert(domain_obj_is_active(in));
    ck_assert_int_ne(in->id, src_id);
    g_autofree char *in_instance = g_strdup(in->instance_id);
    int in_id = in->id;
    domain_obj_unlock(in);

    /* Lookups and listings see only the visible instance. */
    DomainObj *vis = domain_list_lookup_by_name(list, "vm1", NULL);
    ck_assert_ptr_ne(vis, in);
    ck_assert_int_eq(vis->id, src_id);
    ck_assert_str_ne(vis->instance_id, in_instance);
    domain_obj_end(vis);
    ck_assert_ptr_null(domain_list_lookup_by_id(list, in_id, NULL));
    g_autofree char *names = names_for(0);
    ck_assert_str_eq(names, "vm1");
    ck_assert_int_eq(domain_list_count_active(list), 1);
    /* ... but its instance id finds it, and it is among the instances. */
    DomainObj *found = domain_list_lookup_by_instance(list, in_instance, NULL);
    ck_assert_ptr_eq(found, in);
    domain_obj_end(found);
    g_autoptr(GPtrArray) all = domain_list_get_instances(list);
    ck_assert_uint_eq(all->len, 2);

    /* A second incoming instance of the same domain is refused. */
    ck_assert_ptr_null(add_incoming("vm1", 1, DOMAIN_LIST_ADD_ALLOW_RUNNING_TWIN, &err));
    ck_assert_ferry_error(err, FERRY_ERR_OPERATION_INVALID,
                          "domain 'vm1' already has an instance being migrated");
    g_clear_error(&err);
    domain_obj_unref(in);
}
END_TEST

START_TEST(test_incoming_next_to_running_twin_needs_the_local_flag)
{
    define("vm1", 1);
    start("vm1", DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    GError *err = NULL;
    ck_assert_ptr_null(add_incoming("vm1", 1, 0, &err));
    ck_assert_ferry_error(err, FERRY_ERR_OPERATION_INVALID, "domain 'vm1' is already active");
    g_clear_error(&err);
}
END_TEST

START_TEST(test_incoming_with_clashing_name_or_uuid_is_refused)
{
    define("vm1", 1);
    GError *err = NULL;
    ck_assert_ptr_null(add_incoming("vm1", 2, 0, &err));
    ck_assert_ferry_error(err, FERRY_ERR_OPERATION_FAILED, "domain 'vm1' already exists with uuid");
    g_clear_error(&err);
    ck_assert_ptr_null(add_incoming("other", 1, 0, &err));
    ck_assert_ferry_error(err, FERRY_ERR_OPERATION_FAILED,
                          "domain 'vm1' is already defined with uuid");
    g_clear_error(&err);
}
END_TEST

START_TEST(test_reveal_displaces_running_twin_which_leaves_when_stopped)
{
    define("vm1", 1);
    int src_id = start("vm1", DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
    DomainObj *src = domain_list_lookup_by_name(list, "vm1", NULL);
    src->autostart = TRUE;
    domain_obj_unlock(src);

    DomainObj *in = add_incoming("vm1", 1, DOMAIN_LIST_ADD_ALLOW_RUNNING_TWIN, NULL);
    GError *err = NULL;
    ck_assert(domain_list_reveal(list, in, &err));
    ck_assert_no_error(err);
    domain_obj_set_state(in, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_MIGRATED);
    /* The config follows the visible instance. */
    ck_assert(domain_obj_is_persistent(in));
    ck_assert(in->autostart);
    int in_id = in->id;
    domain_obj_unlock(in);

    DomainObj *vis = domain_list_lookup_by_name(list, "vm1", NULL);
    ck_assert_ptr_eq(vis, in);
    domain_obj_end(vis);
    vis = domain_list_lookup_by_id(list, in_id, NULL);
    ck_assert_ptr_eq(vis, in);
    domain_obj_end(vis);
    ck_assert_ptr_null(domain_list_lookup_by_id(list, src_id, NULL));

    domain_obj_lock(src);
    ck_assert(domain_obj_is_hidden(src));
    ck_assert(!domain_obj_is_persistent(src));
    ck_assert(!src->autostart);
    domain_list_deactivate(list, src, DOMAIN_SHUTOFF_MIGRATED);
    ck_assert(domain_obj_is_removed(src));
    domain_obj_end(src);

    g_autofree char *names = names_for(0);
    ck_assert_str_eq(names, "vm1");
    ck_assert_int_eq(domain_list_count_active(list), 1);
    domain_obj_unref(in);
}
END_TEST

START_TEST(test_reveal_merges_with_inactive_persistent_entry)
{
    define("vm1", 1);
    DomainObj *old = domain_list_lookup_by_name(list, "vm1", NULL);
    old->autostart = TRUE;
    domain_obj_unlock(old);

    DomainObj *in = add_incoming("vm1", 1, 0, NULL); /* no flag: the twin is not running */
    ck_assert_ptr_nonnull(in);
    ck_assert(!domain_obj_is_persistent(in));
    ck_assert(domain_list_reveal(list, in, NULL));
    ck_assert(domain_obj_is_persistent(in));
    ck_assert(in->autostart);
    domain_obj_unlock(in);
    ck_assert(domain_obj_is_removed(old));
    domain_obj_unref(old);

    DomainObj *vis = domain_list_lookup_by_name(list, "vm1", NULL);
    ck_assert_ptr_eq(vis, in);
    ck_assert(domain_obj_is_active(vis));
    domain_obj_end(vis);
    ck_assert_int_eq(domain_list_count_active(list), 1);
    ck_assert_int_eq(domain_list_count_inactive(list), 0);
    domain_obj_unref(in);
}
END_TEST

START_TEST(test_reveal_keeps_a_persistent_def_brought_by_the_migration)
{
    define("vm1", 1);
    DomainObj *in = add_incoming("vm1", 1, 0, NULL);
    in->persistent_def = domain_def_copy(in->live_def);
    in->persistent_def->memory_kib = 8192; /* --persistent with a new config */
    ck_assert(domain_list_reveal(list, in, NULL));
    ck_assert_uint_eq(in->persistent_def->memory_kib, 8192);
    domain_obj_end(in);
}
END_TEST

START_TEST(test_reveal_without_twin_just_shows_the_instance)
{
    DomainObj *in = add_incoming("new", 7, 0, NULL);
    int id = in->id;
    ck_assert(domain_list_reveal(list, in, NULL));
    ck_assert(!domain_obj_is_hidden(in));
    ck_assert(domain_list_reveal(list, in, NULL)); /* twice is harmless */
    domain_obj_end(in);
    DomainObj *vis = domain_list_lookup_by_id(list, id, NULL);
    ck_assert_ptr_eq(vis, in);
    domain_obj_end(vis);
}
END_TEST

START_TEST(test_reveal_rechecks_a_name_taken_meanwhile)
{
    DomainObj *in = add_incoming("vm1", 1, 0, NULL);
    domain_obj_unlock(in);
    define("vm1", 2); /* the hidden instance does not hold the name */
    domain_obj_lock(in);
    GError *err = NULL;
    ck_assert(!domain_list_reveal(list, in, &err));
    ck_assert_ferry_error(err, FERRY_ERR_OPERATION_FAILED, "domain 'vm1' already exists with uuid");
    g_clear_error(&err);
    ck_assert(domain_obj_is_hidden(in));
    domain_obj_end(in);
}
END_TEST

START_TEST(test_dropped_incoming_leaves_the_visible_domain_untouched)
{
    define("vm1", 1);
    start("vm1", DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    DomainObj *in = add_incoming("vm1", 1, DOMAIN_LIST_ADD_ALLOW_RUNNING_TWIN, NULL);
    domain_list_deactivate(list, in, DOMAIN_SHUTOFF_FAILED); /* migration failed */
    ck_assert(domain_obj_is_removed(in));
    domain_obj_end(in);

    DomainObj *vis = domain_list_lookup_by_name(list, "vm1", NULL);
    ck_assert(domain_obj_is_active(vis));
    ck_assert(domain_obj_is_persistent(vis));
    domain_obj_end(vis);
    g_autoptr(GPtrArray) all = domain_list_get_instances(list);
    ck_assert_uint_eq(all->len, 1);

    /* A new incoming instance is possible again; remove() drops it too. */
    in = add_incoming("vm1", 1, DOMAIN_LIST_ADD_ALLOW_RUNNING_TWIN, NULL);
    ck_assert_ptr_nonnull(in);
    domain_list_remove(list, in);
    domain_obj_end(in);
    g_autoptr(GPtrArray) after = domain_list_get_instances(list);
    ck_assert_uint_eq(after->len, 1);
}
END_TEST

START_TEST(test_restore_keeps_ids_and_later_ids_continue_above_them)
{
    define("p", 1);
    g_autofree char *uuid = test_uuid(1);
    DomainDef *live = test_def_new("p", uuid);
    GError *err = NULL;
    DomainObj *obj = domain_list_restore(list, &live, 41, "feedfacecafebeef", FALSE, &err);
    ck_assert_no_error(err);
    ck_assert_int_eq(obj->id, 41);
    ck_assert_str_eq(obj->instance_id, "feedfacecafebeef");
    ck_assert(domain_obj_is_persistent(obj)); /* attached to its config */
    domain_obj_end(obj);
    ck_assert_int_eq(create("t", 2), 42);

    /* The same runtime id or instance id twice is refused. */
    g_autofree char *uuid3 = test_uuid(3);
    g_autoptr(DomainDef) dup = test_def_new("u", uuid3);
    ck_assert_ptr_null(domain_list_restore(list, &dup, 41, "0000000000000001", FALSE, &err));
    ck_assert_ferry_error(err, FERRY_ERR_INTERNAL_ERROR, "runtime id 41");
    g_clear_error(&err);
    ck_assert_ptr_null(domain_list_restore(list, &dup, 50, "feedfacecafebeef", FALSE, &err));
    ck_assert_ferry_error(err, FERRY_ERR_INTERNAL_ERROR, "instance 'feedfacecafebeef'");
    g_clear_error(&err);
}
END_TEST

/* ---- concurrency ----------------------------------------------------------- */

#define N_THREADS 8
#define PER_THREAD 200

static gpointer define_and_lookup_thread(gpointer data)
{
    int t = GPOINTER_TO_INT(data);
    for (int i = 0; i < PER_THREAD; i++) {
        int n = t * PER_THREAD + i + 1;
        g_autofree char *name = g_strdup_printf("t%d-%d", t, i);
        g_autofree char *uuid = test_uuid(n);
        g_autoptr(DomainDef) def = test_def_new(name, uuid);
        DomainObj *obj = domain_list_add(list, &def, i % 2 ? DOMAIN_LIST_ADD_LIVE : 0, NULL, NULL);
        g_assert(obj);
        domain_obj_end(obj);

        /* Look up something another thread is adding right now. */
        g_autofree char *other = g_strdup_printf("t%d-%d", (t + 1) % N_THREADS, i);
        DomainObj *o = domain_list_lookup_by_name(list, other, NULL);
        if (o) {
            g_assert(g_str_equal(domain_obj_get_name(o), other));
            domain_obj_end(o);
        }
        g_autoptr(GPtrArray) some = domain_list_collect(list, DOMAIN_LIST_ACTIVE, NULL);
        g_assert(some);
    }
    return NULL;
}

/* Everyone defines "contested" with a UUID of their own: one wins. */
static gint contested_wins;

static gpointer contest_thread(gpointer data)
{
    g_autofree char *uuid = test_uuid(100000 + GPOINTER_TO_INT(data));
    g_autoptr(DomainDef) def = test_def_new("contested", uuid);
    GError *err = NULL;
    DomainObj *obj = domain_list_add(list, &def, 0, NULL, &err);
    if (obj) {
        g_atomic_int_inc(&contested_wins);
        domain_obj_end(obj);
    } else {
        g_assert(err->code == FERRY_ERR_OPERATION_FAILED);
        g_error_free(err);
    }
    return NULL;
}

START_TEST(test_concurrent_adds_and_lookups_from_many_threads)
{
    GThread *threads[2 * N_THREADS];
    contested_wins = 0;
    for (int t = 0; t < N_THREADS; t++) {
        threads[t] = g_thread_new("define", define_and_lookup_thread, GINT_TO_POINTER(t));
        threads[N_THREADS + t] = g_thread_new("contest", contest_thread, GINT_TO_POINTER(t));
    }
    for (int t = 0; t < 2 * N_THREADS; t++)
        g_thread_join(threads[t]);

    ck_assert_int_eq(contested_wins, 1);
    int total = N_THREADS * PER_THREAD + 1;
    ck_assert_int_eq(domain_list_count_active(list) + domain_list_count_inactive(list), total);
    ck_assert_int_eq(domain_list_count_active(list), N_THREADS * PER_THREAD / 2);

    /* Every active domain got its own id, and they are exactly 1..N. */
    g_autoptr(GArray) ids = domain_list_active_ids(list);
    for (guint i = 0; i < ids->len; i++)
        ck_assert_int_eq(g_array_index(ids, int, i), (int)i + 1);
    g_autoptr(GPtrArray) all = domain_list_collect(list, 0, NULL);
    ck_assert_uint_eq(all->len, (guint)total);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("domain-list");
    TCase *tc = tcase_create("domain-list");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_defined_domain_is_found_by_name_and_uuid);
    tcase_add_test(tc, test_missing_domain_lookups_say_what_was_asked);
    tcase_add_test(tc, test_same_name_with_other_uuid_is_rejected_like_libvirt);
    tcase_add_test(tc, test_same_uuid_with_other_name_is_rejected_like_libvirt);
    tcase_add_test(tc, test_redefine_replaces_persistent_def_and_hands_back_the_old);
    tcase_add_test(tc, test_runtime_ids_start_at_1_and_are_never_reused);
    tcase_add_test(tc, test_activation_gives_each_instance_its_own_instance_id);
    tcase_add_test(tc, test_activation_sets_starting_up_and_refuses_a_running_domain);
    tcase_add_test(tc, test_create_of_a_running_domain_is_refused);
    tcase_add_test(tc, test_create_from_xml_starts_a_defined_inactive_domain);
    tcase_add_test(tc, test_stopped_transient_domain_disappears_persistent_one_stays);
    tcase_add_test(tc, test_undefine_of_a_running_domain_waits_for_it_to_stop);
    tcase_add_loop_test(tc, test_list_filter_flags_select_like_libvirt, 0,
                        G_N_ELEMENTS(filter_cases));
    tcase_add_test(tc, test_list_refuses_unknown_filter_flags);
    tcase_add_test(tc, test_counts_and_legacy_lists);
    tcase_add_test(tc, test_incoming_instance_coexists_hidden_with_running_twin);
    tcase_add_test(tc, test_incoming_next_to_running_twin_needs_the_local_flag);
    tcase_add_test(tc, test_incoming_with_clashing_name_or_uuid_is_refused);
    tcase_add_test(tc, test_reveal_displaces_running_twin_which_leaves_when_stopped);
    tcase_add_test(tc, test_reveal_merges_with_inactive_persistent_entry);
    tcase_add_test(tc, test_reveal_keeps_a_persistent_def_brought_by_the_migration);
    tcase_add_test(tc, test_reveal_without_twin_just_shows_the_instance);
    tcase_add_test(tc, test_reveal_rechecks_a_name_taken_meanwhile);
    tcase_add_test(tc, test_dropped_incoming_leaves_the_visible_domain_untouched);
    tcase_add_test(tc, test_restore_keeps_ids_and_later_ids_continue_above_them);
    tcase_add_test(tc, test_concurrent_adds_and_lookups_from_many_threads);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
