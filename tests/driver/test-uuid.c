/* UUID text forms and generation. */
#include "test-helpers.h"

#include "util/uuid.h"

START_TEST(test_uuid_parses_dashed_and_plain_forms)
{
    guint8 a[FERRY_UUID_LEN], b[FERRY_UUID_LEN];
    GError *err = NULL;
    ck_assert(ferry_uuid_parse("c7a5fdbd-edaf-9455-926a-d65c16db1809", a, &err));
    ck_assert(ferry_uuid_parse("C7A5FDBDEDAF9455926AD65C16DB1809", b, &err));
    ck_assert_no_error(err);
    ck_assert_mem_eq(a, b, FERRY_UUID_LEN);
    ck_assert_uint_eq(a[0], 0xc7);
    ck_assert_uint_eq(a[15], 0x09);
}
END_TEST

START_TEST(test_uuid_rejects_malformed_text)
{
    static const char *const bad[] = {
        "",
        "c7a5fdbd-edaf-9455-926a-d65c16db180",   /* one digit short */
        "c7a5fdbd-edaf-9455-926a-d65c16db18099", /* one digit long */
        "c7a5fdbdedaf-9455-926a-d65c16db1809-",  /* dashes misplaced */
        "g7a5fdbd-edaf-9455-926a-d65c16db1809",  /* not hex */
        "c7a5fdbdedaf9455926ad65c16db180 ",      /* space */
    };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        guint8 u[FERRY_UUID_LEN] = {0};
        GError *err = NULL;
        ck_assert_msg(!ferry_uuid_parse(bad[i], u, &err), "accepted '%s'", bad[i]);
        ck_assert_ferry_error(err, FERRY_ERR_INVALID_ARG, "invalid UUID");
        ck_assert(ferry_uuid_is_null(u)); /* untouched on failure */
        g_error_free(err);
    }
    ck_assert(!ferry_uuid_parse(NULL, (guint8[16]){0}, NULL));
}
END_TEST

START_TEST(test_uuid_format_round_trips)
{
    guint8 u[FERRY_UUID_LEN], back[FERRY_UUID_LEN];
    char s[FERRY_UUID_STRING_LEN];
    ck_assert(ferry_uuid_parse("C7A5FDBD-EDAF-9455-926A-D65C16DB1809", u, NULL));
    ferry_uuid_format(u, s);
    ck_assert_str_eq(s, "c7a5fdbd-edaf-9455-926a-d65c16db1809");
    ck_assert(ferry_uuid_parse(s, back, NULL));
    ck_assert_mem_eq(u, back, FERRY_UUID_LEN);
    g_autofree char *dup = ferry_uuid_to_string(u);
    ck_assert_str_eq(dup, s);
}
END_TEST

START_TEST(test_uuid_generate_gives_distinct_version_4_uuids)
{
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (int i = 0; i < 1000; i++) {
        guint8 u[FERRY_UUID_LEN];
        ferry_uuid_generate(u);
        ck_assert_uint_eq(u[6] >> 4, 4);
        ck_assert_uint_eq(u[8] >> 6, 2);
        char *s = ferry_uuid_to_string(u);
        ck_assert_msg(!g_hash_table_contains(seen, s), "duplicate %s", s);
        g_hash_table_add(seen, s);
    }
}
END_TEST

START_TEST(test_uuid_hash_spreads_uuids_differing_only_at_the_end)
{
    guint8 a[FERRY_UUID_LEN], b[FERRY_UUID_LEN];
    ferry_uuid_parse("aaaaaaaa-bbbb-cccc-dddd-000000000001", a, NULL);
    ferry_uuid_parse("aaaaaaaa-bbbb-cccc-dddd-000000000002", b, NULL);
    ck_assert_uint_ne(ferry_uuid_hash(a), ferry_uuid_hash(b));
    ck_assert(!ferry_uuid_equal(a, b));
    ck_assert(ferry_uuid_equal(a, a));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("uuid");
    TCase *tc = tcase_create("uuid");
    tcase_add_test(tc, test_uuid_parses_dashed_and_plain_forms);
    tcase_add_test(tc, test_uuid_rejects_malformed_text);
    tcase_add_test(tc, test_uuid_format_round_trips);
    tcase_add_test(tc, test_uuid_generate_gives_distinct_version_4_uuids);
    tcase_add_test(tc, test_uuid_hash_spreads_uuids_differing_only_at_the_end);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
