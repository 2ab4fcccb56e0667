/* Helpers shared by the driver's Check tests: error assertions, domain
 * definitions from a few fields, and a runner that keeps tests in-process so
 * the sanitizers see every allocation. */
#pragma once

#include <check.h>
#include <glib.h>
#include <string.h>

#include "driver/domain-def.h"
#include "util/error.h"

/* err is a FERRY_ERROR of this code whose message contains substr. */
#define ck_assert_ferry_error(err, want_code, want_text)                                           \
    do {                                                                                           \
        const GError *e_ = (err);                                                                  \
        ck_assert_msg(e_ != NULL, "expected an error containing \"%s\"", (want_text));            \
        ck_assert_msg(e_->domain == FERRY_ERROR && e_->code == (int)(want_code),                   \
                      "expected code %d, got %d: %s", (int)(want_code), e_->code, e_->message);    \
        ck_assert_msg(strstr(e_->message, (want_text)) != NULL,                                    \
                      "\"%s\" does not contain \"%s\"", e_->message, (want_text));                \
    } while (0)

#define ck_assert_no_error(err)                                                                    \
    ck_assert_msg((err) == NULL, "unexpected error: %s", (err) ? (err)->message : "")

static inline DomainDef *test_def_new(const char *name, const char *uuid)
{
    g_autofree char *xml = g_strdup_printf("<domain type='sim'><name>%s</name><uuid>%s</uuid>"
                                           "<memory unit='MiB'>256</memory><vcpu>1</vcpu></domain>",
                                           name, uuid);
    GError *err = NULL;
    DomainDef *def = domain_def_parse_string(xml, &err);
    ck_assert_no_error(err);
    return def;
}

/* "00000000-0000-4000-8000-0000000000NN" */
static inline char *test_uuid(int n)
{
    return g_strdup_printf("00000000-0000-4000-8000-%012d", n);
}

static inline int test_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    /* No fork: one process, so ASan's leak check covers every test. */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
