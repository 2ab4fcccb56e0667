/* Domains on disk: atomic config and runtime-state files in a temporary
 * directory, their reload by a "restarted daemon", and corrupt files skipped. */
#include "test-helpers.h"

#include "driver/domain-store.h"

#include <glib/gstdio.h>
#include <unistd.h>

static char *tmp;
static char *config_dir;
static char *run_dir;
static DomainStore *store;
static DomainList *list;

static void rm_rf(const char *path)
{
    GDir *d = g_dir_open(path, 0, NULL);
    if (d) {
        const char *name;
        while ((name = g_dir_read_name(d))) {
            g_autofree char *child = g_build_filename(path, name, NULL);
            if (g_file_test(child, G_FILE_TEST_IS_DIR) &&
                !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
                rm_rf(child);
            else
                g_unlink(child);
        }
        g_dir_close(d);
    }
    g_rmdir(path);
}

static void setup(void)
{
    tmp = g_dir_make_tmp("ferry-store-XXXXXX", NULL);
    ck_assert_ptr_nonnull(tmp);
    config_dir = g_build_filename(tmp, "etc", "qemu", NULL); /* created by the store */
    run_dir = g_build_filename(tmp, "run", NULL);
    GError *err = NULL;
    store = domain_store_new(config_dir, run_dir, &err);
    ck_assert_no_error(err);
    list = domain_list_new();
}

static void teardown(void)
{
    g_clear_pointer(&list, domain_list_free);
    g_clear_pointer(&store, domain_store_free);
    rm_rf(tmp);
    g_clear_pointer(&tmp, g_free);
    g_clear_pointer(&config_dir, g_free);
    g_clear_pointer(&run_dir, g_free);
}

/* A fresh list loaded from the same directories: what a restarted daemon sees. */
static GPtrArray *reload(DomainList **fresh)
{
    *fresh = domain_list_new();
    GError *err = NULL;
    GPtrArray *restored = domain_store_load(store, *fresh, &err);
    ck_assert_no_error(err);
    ck_assert_ptr_nonnull(restored);
    return restored;
}

static DomainObj *define_saved(const char *name, int n)
{
    g_autofree char *uuid = test_uuid(n);
    g_autoptr(DomainDef) def = test_def_new(name, uuid);
    GError *err = NULL;
    DomainObj *obj = domain_list_add(list, &def, 0, NULL, &err);
    ck_assert_no_error(err);
    ck_assert(domain_store_save_config(store, obj->persistent_def, &err));
    ck_assert_no_error(err);
    return obj; /* locked */
}

static guint count_files(const char *dir)
{
    guint n = 0;
    GDir *d = g_dir_open(dir, 0, NULL);
    while (d && g_dir_read_name(d))
        n++;
    if (d)
        g_dir_close(d);
    return n;
}

START_TEST(test_config_is_saved_whole_and_loaded_back)
{
    DomainObj *obj = define_saved("vm1", 1);
    g_autofree char *path = g_build_filename(config_dir, "vm1.xml", NULL);
    g_autofree char *on_disk = NULL;
    ck_assert(g_file_get_contents(path, &on_disk, NULL, NULL));
    g_autofree char *expect =
        domain_def_format(obj->persistent_def, -1, DOMAIN_DEF_FORMAT_INACTIVE);
    ck_assert_str_eq(on_disk, expect);
    /* Only NAME.xml and the autostart dir: no temp file left behind. */
    ck_assert_uint_eq(count_files(config_dir), 2);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);

    /* Saving again replaces it. */
    obj->persistent_def->memory_kib = obj->persistent_def->current_memory_kib = 8192;
    ck_assert(domain_store_save_config(store, obj->persistent_def, NULL));
    ck_assert_uint_eq(count_files(config_dir), 2);

    DomainList *fresh;
    g_autoptr(GPtrArray) restored = reload(&fresh);
    ck_assert_uint_eq(restored->len, 0);
    DomainObj *back = domain_list_lookup_by_name(fresh, "vm1", NULL);
    ck_assert_ptr_nonnull(back);
    ck_assert(domain_def_equal(back->persistent_def, obj->persistent_def));
    ck_assert(!domain_obj_is_active(back));
    ck_assert(!back->autostart);
    domain_obj_end(back);
    domain_obj_end(obj);
    domain_list_free(fresh);
}
END_TEST

START_TEST(test_autostart_mark_is_a_symlink_that_survives_reload)
{
    domain_obj_end(define_saved("vm1", 1));
    domain_obj_end(define_saved("vm2", 2));
    GError *err = NULL;
    ck_assert(domain_store_set_autostart(store, "vm1", TRUE, &err));
    ck_assert(domain_store_set_autostart(store, "vm1", TRUE, &err)); /* idempotent */
    ck_assert_no_error(err);
    g_autofree char *link = g_build_filename(config_dir, "autostart", "vm1.xml", NULL);
    g_autofree char *target = g_file_read_link(link, NULL);
    ck_assert_str_eq(target, "../vm1.xml");
    ck_assert(domain_store_get_autostart(store, "vm1"));
    ck_assert(!domain_store_get_autostart(store, "vm2"));

    DomainList *fresh;
    g_autoptr(GPtrArray) restored = reload(&fresh);
    g_autoptr(GPtrArray) auto_on = domain_list_collect(fresh, DOMAIN_LIST_AUTOSTART, NULL);
    ck_assert_uint_eq(auto_on->len, 1);
    domain_obj_lock(auto_on->pdata[0]);
    ck_assert_str_eq(domain_obj_get_name(auto_on->pdata[0]), "vm1");
    domain_obj_unlock(auto_on->pdata[0]);
    domain_list_free(fresh);

    ck_assert(domain_store_set_autostart(store, "vm1", FALSE, &err));
    ck_assert(domain_store_set_autostart(store, "vm1", FALSE, &err)); /* already off */
    ck_assert_no_error(err);
    ck_assert(!g_file_test(link, G_FILE_TEST_EXISTS));
}
END_TEST

START_TEST(test_undefine_removes_config_and_autostart_mark)
{
    domain_obj_end(define_saved("vm1", 1));
    ck_assert(domain_store_set_autostart(store, "vm1", TRUE, NULL));
    GError *err = NULL;
    ck_assert(domain_store_delete_config(store, "vm1", &err));
    ck_assert(domain_store_delete_config(store, "vm1", &err)); /* already gone: fine */
    ck_assert_no_error(err);
    ck_assert_uint_eq(count_files(config_dir), 1); /* the autostart dir */
    g_autofree char *autostart_dir = g_build_filename(config_dir, "autostart", NULL);
    ck_assert_uint_eq(count_files(autostart_dir), 0);
}
END_TEST

START_TEST(test_corrupt_or_misnamed_configs_are_skipped_not_fatal)
{
    domain_obj_end(define_saved("good", 1));
    g_autofree char *bad = g_build_filename(config_dir, "broken.xml", NULL);
    ck_assert(g_file_set_contents(bad, "<domain type='sim'><name>broken", -1, NULL));
    g_autofree char *invalid = g_build_filename(config_dir, "invalid.xml", NULL);
    ck_assert(g_file_set_contents(
        invalid, "<domain type='sim'><name>invalid</name><memory>abc</memory></domain>", -1,
        NULL));
    /* A file whose domain has another name than the file. */
    g_autofree char *uuid = test_uuid(9);
    g_autoptr(DomainDef) other = test_def_new("other", uuid);
    g_autofree char *other_xml = domain_def_format(other, -1, DOMAIN_DEF_FORMAT_INACTIVE);
    g_autofree char *misnamed = g_build_filename(config_dir, "misnamed.xml", NULL);
    ck_assert(g_file_set_contents(misnamed, other_xml, -1, NULL));
    /* The same UUID as "good" under another name. */
    g_autofree char *uuid1 = test_uuid(1);
    g_autoptr(DomainDef) twin = test_def_new("twin", uuid1);
    g_autofree char *twin_xml = domain_def_format(twin, -1, DOMAIN_DEF_FORMAT_INACTIVE);
    g_autofree char *twin_path = g_build_filename(config_dir, "twin.xml", NULL);
    ck_assert(g_file_set_contents(twin_path, twin_xml, -1, NULL));
    /* What an interrupted atomic write leaves: not a .xml name. */
    g_autofree char *temp = g_build_filename(config_dir, "good.xml.A1B2C3", NULL);
    ck_assert(g_file_set_contents(temp, "garbage", -1, NULL));

    DomainList *fresh;
    g_autoptr(GPtrArray) restored = reload(&fresh);
    ck_assert_int_eq(domain_list_count_inactive(fresh), 1);
    g_auto(GStrv) names = domain_list_inactive_names(fresh);
    ck_assert_str_eq(names[0], "good");
    domain_list_free(fresh);
}
END_TEST

/* Starts domain obj (locked) as the driver would and saves its state. */
static void start_and_save(DomainObj *obj)
{
    GError *err = NULL;
    DomainDef *live = domain_def_copy(obj->persistent_def);
    ck_assert(domain_list_activate(list, obj, &live, &err));
    domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    obj->pid = 4242;
    obj->qmp_path = domain_store_runtime_path(store, obj->instance_id, ".qmp");
    domain_obj_set_runtime_data(obj, "vmm", "ferry-vmm");
    domain_obj_set_runtime_data(obj, "odd value", "a'b\"c&<d>\nline\ttab");
    ck_assert(domain_store_save_state(store, obj, &err));
    ck_assert_no_error(err);
}

START_TEST(test_runtime_state_brings_a_running_instance_back)
{
    DomainObj *obj = define_saved("vm1", 1);
    start_and_save(obj);
    g_autofree char *instance = g_strdup(obj->instance_id);
    int id = obj->id;
    g_autofree char *state_file = g_strconcat(instance, ".xml", NULL);
    g_autofree char *state_path = g_build_filename(run_dir, state_file, NULL);
    ck_assert(g_file_test(state_path, G_FILE_TEST_IS_REGULAR));
    g_autofree char *qmp = domain_store_runtime_path(store, instance, ".qmp");
    ck_assert_str_eq(obj->qmp_path, qmp);
    ck_assert(g_str_has_prefix(qmp, run_dir));

    DomainList *fresh;
    g_autoptr(GPtrArray) restored = reload(&fresh);
    ck_assert_uint_eq(restored->len, 1);
    DomainObj *back = restored->pdata[0];
    domain_obj_lock(back);
    ck_assert_str_eq(domain_obj_get_name(back), "vm1");
    ck_assert_int_eq(back->id, id);
    ck_assert_str_eq(back->instance_id, instance);
    int reason;
    ck_assert_int_eq(domain_obj_get_state(back, &reason), DOMAIN_STATE_RUNNING);
    ck_assert_int_eq(reason, DOMAIN_RUNNING_BOOTED);
    ck_assert_int_eq(back->pid, 4242);
    ck_assert_str_eq(back->qmp_path, qmp);
    ck_assert_str_eq(domain_obj_get_runtime_data(back, "vmm"), "ferry-vmm");
    ck_assert_str_eq(domain_obj_get_runtime_data(back, "odd value"), "a'b\"c&<d>\nline\ttab");
    ck_assert(domain_def_equal(back->live_def, obj->live_def));
    /* One object: the running instance is attached to its persistent config. */
    ck_assert(domain_obj_is_persistent(back));
    ck_assert(!domain_obj_is_hidden(back));
    domain_obj_unlock(back);
    ck_assert_int_eq(domain_list_count_active(fresh), 1);
    ck_assert_int_eq(domain_list_count_inactive(fresh), 0);

    /* The restarted daemon's next id continues above the restored one. */
    DomainObj *o = domain_list_lookup_by_id(fresh, id, NULL);
    ck_assert_ptr_eq(o, back);
    domain_obj_end(o);
    domain_list_free(fresh);

    /* The instance stops: its state file goes. */
    GError *err = NULL;
    ck_assert(domain_store_delete_state(store, instance, &err));
    ck_assert(domain_store_delete_state(store, instance, &err));
    ck_assert_no_error(err);
    ck_assert(!g_file_test(state_path, G_FILE_TEST_EXISTS));
    domain_obj_end(obj);
}
END_TEST

START_TEST(test_state_is_rewritten_on_every_change)
{
    DomainObj *obj = define_saved("vm1", 1);
    start_and_save(obj);
    domain_obj_set_state(obj, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_USER);
    ck_assert(domain_store_save_state(store, obj, NULL));
    ck_assert_uint_eq(count_files(run_dir), 1);

    DomainList *fresh;
    g_autoptr(GPtrArray) restored = reload(&fresh);
    DomainObj *back = restored->pdata[0];
    domain_obj_lock(back);
    int reason;
    ck_assert_int_eq(domain_obj_get_state(back, &reason), DOMAIN_STATE_PAUSED);
    ck_assert_int_eq(reason, DOMAIN_PAUSED_USER);
    domain_obj_unlock(back);
    domain_list_free(fresh);
    domain_obj_end(obj);
}
END_TEST

START_TEST(test_transient_instance_comes_back_without_a_config)
{
    g_autofree char *uuid = test_uuid(3);
    g_autoptr(DomainDef) def = test_def_new("t", uuid);
    DomainObj *obj = domain_list_add(list, &def, DOMAIN_LIST_ADD_LIVE, NULL, NULL);
    domain_obj_set_state(obj, DOMAIN_STATE_RUNNING, DOMAIN_RUNNING_BOOTED);
    ck_assert(domain_store_save_state(store, obj, NULL));
    domain_obj_end(obj);

    DomainList *fresh;
    g_autoptr(GPtrArray) restored = reload(&fresh);
    ck_assert_uint_eq(restored->len, 1);
    DomainObj *back = restored->pdata[0];
    domain_obj_lock(back);
    ck_assert(!domain_obj_is_persistent(back));
    ck_assert_int_eq(back->pid, 0);
    ck_assert_ptr_null(back->qmp_path);
    domain_obj_unlock(back);
    domain_list_free(fresh);
}
END_TEST

START_TEST(test_incoming_instance_comes_back_hidden_next_to_its_twin)
{
    DomainObj *src = define_saved("vm1", 1);
    start_and_save(src);
    g_autofree char *src_instance = g_strdup(src->instance_id);
    domain_obj_unlock(src);

    g_autofree char *uuid = test_uuid(1);
    g_autoptr(DomainDef) def = test_def_new("vm1", uuid);
    DomainObj *in = domain_list_add(
        list, &def, DOMAIN_LIST_ADD_HIDDEN | DOMAIN_LIST_ADD_ALLOW_RUNNING_TWIN, NULL, NULL);
    domain_obj_set_state(in, DOMAIN_STATE_PAUSED, DOMAIN_PAUSED_MIGRATION);
    ck_assert(domain_store_save_state(store, in, NULL));
    g_autofree char *in_instance = g_strdup(in->instance_id);
    domain_obj_end(in);

    DomainList *fresh;
    g_autoptr(GPtrArray) restored = reload(&fresh);
    ck_assert_uint_eq(restored->len, 2);
    DomainObj *vis = domain_list_lookup_by_name(fresh, "vm1", NULL);
    ck_assert_str_eq(vis->instance_id, src_instance);
    domain_obj_end(vis);
    DomainObj *hidden = domain_list_lookup_by_instance(fresh, in_instance, NULL);
    ck_assert_ptr_nonnull(hidden);
    ck_assert(domain_obj_is_hidden(hidden));
    int reason;
    ck_assert_int_eq(domain_obj_get_state(hidden, &reason), DOMAIN_STATE_PAUSED);
    ck_assert_int_eq(reason, DOMAIN_PAUSED_MIGRATION);
    domain_obj_end(hidden);
    domain_list_free(fresh);
    domain_obj_unref(src);
}
END_TEST

START_TEST(test_corrupt_runtime_state_is_skipped_not_fatal)
{
    DomainObj *obj = define_saved("vm1", 1);
    start_and_save(obj);
    domain_obj_end(obj);
    static const char *const bad[] = {
        "not xml at all",
        "<domstatus instance='aaaa' id='9' state='running' reason='booted'/>", /* no domain */
        "<domstatus instance='bbbb' id='x' state='running' reason='booted'/>",
        "<domstatus instance='cccc' id='9' state='flying' reason='booted'/>",
        "<domstatus instance='dddd' id='9' state='running' reason='booted'>"
        "<domain type='sim'><name>z</name></domain></domstatus>", /* invalid domain */
        "<domstatus instance='../x' id='9' state='running' reason='booted'/>",
        "<domstatus instance='ffff' id='9' state='running' reason='booted'>" /* wrong file */
        "<domain type='sim'><name>z</name><memory>1</memory></domain></domstatus>",
    };
    const char *files[] = {"1111", "aaaa", "bbbb", "cccc", "dddd", "eeee", "gggg"};
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *file = g_strconcat(files[i], ".xml", NULL);
        g_autofree char *path = g_build_filename(run_dir, file, NULL);
        ck_assert(g_file_set_contents(path, bad[i], -1, NULL));
    }

    DomainList *fresh;
    g_autoptr(GPtrArray) restored = reload(&fresh);
    ck_assert_uint_eq(restored->len, 1);
    ck_assert_int_eq(domain_list_count_active(fresh), 1);
    domain_list_free(fresh);
}
END_TEST

START_TEST(test_state_of_an_inactive_domain_cannot_be_saved)
{
    DomainObj *obj = define_saved("vm1", 1);
    GError *err = NULL;
    ck_assert(!domain_store_save_state(store, obj, &err));
    ck_assert_ferry_error(err, FERRY_ERR_OPERATION_INVALID, "domain 'vm1': it is not running");
    g_clear_error(&err);
    domain_obj_end(obj);
}
END_TEST

START_TEST(test_unwritable_config_dir_reports_a_system_error)
{
    if (geteuid() == 0)
        return; /* root writes anywhere */
    DomainObj *obj = define_saved("vm1", 1);
    ck_assert_int_eq(g_chmod(config_dir, 0500), 0);
    GError *err = NULL;
    ck_assert(!domain_store_save_config(store, obj->persistent_def, &err));
    ck_assert_ferry_error(err, FERRY_ERR_SYSTEM_ERROR, "cannot save the config of domain 'vm1'");
    g_clear_error(&err);
    g_chmod(config_dir, 0700);
    domain_obj_end(obj);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("domain-store");
    TCase *tc = tcase_create("domain-store");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_config_is_saved_whole_and_loaded_back);
    tcase_add_test(tc, test_autostart_mark_is_a_symlink_that_survives_reload);
    tcase_add_test(tc, test_undefine_removes_config_and_autostart_mark);
    tcase_add_test(tc, test_corrupt_or_misnamed_configs_are_skipped_not_fatal);
    tcase_add_test(tc, test_runtime_state_brings_a_running_instance_back);
    tcase_add_test(tc, test_state_is_rewritten_on_every_change);
    tcase_add_test(tc, test_transient_instance_comes_back_without_a_config);
    tcase_add_test(tc, test_incoming_instance_comes_back_hidden_next_to_its_twin);
    tcase_add_test(tc, test_corrupt_runtime_state_is_skipped_not_fatal);
    tcase_add_test(tc, test_state_of_an_inactive_domain_cannot_be_saved);
    tcase_add_test(tc, test_unwritable_config_dir_reports_a_system_error);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
