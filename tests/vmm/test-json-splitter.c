/* The QMP stream splitter: values come out whole whatever the read boundaries,
 * stray tokens are reported and skipped, oversized input is refused. */
#include <string.h>

#include "util/json-splitter.h"
#include "vmm-harness.h"

static const char *const stream = "{\"execute\": \"a\", \"arguments\": {\"s\": \"}{\\\"[\"}}\r\n"
                                  "  [1, {\"x\": [2]}]{\"event\":\"E\"}\n";

static void expect_values(FerryJsonSplitter *s, GPtrArray *out)
{
    for (;;) {
        char *text = NULL;
        FerryJsonSplitResult r = ferry_json_splitter_next(s, &text);
        if (r == FERRY_JSON_SPLIT_NEED_MORE)
            return;
        ck_assert_int_eq(r, FERRY_JSON_SPLIT_VALUE);
        g_ptr_array_add(out, text);
    }
}

static void check_three(GPtrArray *out)
{
    ck_assert_int_eq(out->len, 3);
    ck_assert_str_eq(out->pdata[0], "{\"execute\": \"a\", \"arguments\": {\"s\": \"}{\\\"[\"}}");
    ck_assert_str_eq(out->pdata[1], "[1, {\"x\": [2]}]");
    ck_assert_str_eq(out->pdata[2], "{\"event\":\"E\"}");
}

START_TEST(test_json_splitter_whole_values_across_any_boundary)
{
    for (gsize chunk = 1; chunk <= strlen(stream); chunk++) {
        g_autoptr(FerryJsonSplitter) s = ferry_json_splitter_new(1024);
        g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func(g_free);
        for (gsize off = 0; off < strlen(stream); off += chunk) {
            ferry_json_splitter_feed(s, stream + off, MIN(chunk, strlen(stream) - off));
            expect_values(s, out);
        }
        check_three(out);
    }
}
END_TEST

START_TEST(test_json_splitter_reports_and_skips_garbage)
{
    g_autoptr(FerryJsonSplitter) s = ferry_json_splitter_new(1024);
    const char *input = "garbage 42{\"ok\":1} \"str\"\n";
    ferry_json_splitter_feed(s, input, strlen(input));
    const char *want[] = {"garbage", "42", NULL, "\"str\""};
    for (guint i = 0; i < G_N_ELEMENTS(want); i++) {
        g_autofree char *text = NULL;
        FerryJsonSplitResult r = ferry_json_splitter_next(s, &text);
        if (want[i]) {
            ck_assert_int_eq(r, FERRY_JSON_SPLIT_GARBAGE);
            ck_assert_str_eq(text, want[i]);
        } else {
            ck_assert_int_eq(r, FERRY_JSON_SPLIT_VALUE);
            ck_assert_str_eq(text, "{\"ok\":1}");
        }
    }
    g_autofree char *none = NULL;
    ck_assert_int_eq(ferry_json_splitter_next(s, &none), FERRY_JSON_SPLIT_NEED_MORE);
}
END_TEST

START_TEST(test_json_splitter_refuses_oversized_and_deep_values)
{
    g_autoptr(FerryJsonSplitter) big = ferry_json_splitter_new(64);
    g_autofree char *long_value = g_strnfill(100, 'a');
    ferry_json_splitter_feed(big, "{\"", 2);
    ferry_json_splitter_feed(big, long_value, 100);
    g_autofree char *t1 = NULL;
    ck_assert_int_eq(ferry_json_splitter_next(big, &t1), FERRY_JSON_SPLIT_TOO_BIG);
    ferry_json_splitter_feed(big, "{}", 2);
    ck_assert_int_eq(ferry_json_splitter_next(big, &t1), FERRY_JSON_SPLIT_TOO_BIG);

    g_autoptr(FerryJsonSplitter) deep = ferry_json_splitter_new(1 << 20);
    g_autofree char *brackets = g_strnfill(5000, '[');
    ferry_json_splitter_feed(deep, brackets, 5000);
    g_autofree char *t2 = NULL;
    ck_assert_int_eq(ferry_json_splitter_next(deep, &t2), FERRY_JSON_SPLIT_TOO_BIG);
}
END_TEST

static Suite *splitter_suite(void)
{
    Suite *s = suite_create("json-splitter");
    TEST_ADD(s, test_json_splitter_whole_values_across_any_boundary, 10);
    TEST_ADD(s, test_json_splitter_reports_and_skips_garbage, 10);
    TEST_ADD(s, test_json_splitter_refuses_oversized_and_deep_values, 10);
    return s;
}

TEST_RUN_SUITE(splitter_suite)
