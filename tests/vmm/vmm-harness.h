/* Test harness for the ferry-vmm and QMP client tests: a temporary directory
 * per test, real ferry-vmm processes started, stopped and reaped by PID, and
 * QMP helpers that fail the test with the VMM's own error text. */
#pragma once

#include <check.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "driver/qmp.h"

#define TEST_QMP_TIMEOUT_MS 10000

typedef struct {
    char *name;
    GPid pid;
    char *qmp_path;
    char *log_path;
    char *pidfile;
    QmpClient *qmp;
    gboolean reaped;
    int status; /* wait status once reaped */

    GMutex lock;
    GCond cond;
    GPtrArray *events; /* JsonObject {"event": NAME, "data": {...}}, in arrival order */
    int closes;        /* close callbacks seen */
    char *close_message;
} TestVmm;

/* main(): the runner adopts orphans (so a VMM whose parent died stays
 * reapable) and owns the root temporary directory. */
void harness_init(void);
/* main(), after the suite: kills and reaps any process left, removes the root. */
void harness_finish(void);
/* Check fixture, per test: a directory of its own; teardown quits every VMM
 * still alive (asserting it exits 0, i.e. LeakSanitizer found nothing), kills
 * what does not quit, and removes the directory. */
void harness_setup(void);
void harness_teardown(void);
char *harness_path(const char *file);

/* Starts ferry-vmm with --name, --qmp, --log and --pidfile in the test
 * directory plus the NULL-terminated extra arguments, and connects to it. */
TestVmm *test_vmm_start(const char *name, ...) G_GNUC_NULL_TERMINATED;
/* Same, but started by an intermediate process that the caller can kill, so
 * the VMM's parent dies; returns the intermediate's pid in *parent. */
TestVmm *test_vmm_start_via_parent(const char *name, GPid *parent, ...) G_GNUC_NULL_TERMINATED;

/* Arguments are JSON written with ' for " (NULL = none). Asserts success. */
JsonNode *test_vmm_exec(TestVmm *v, const char *command, const char *args_fmt, ...)
    G_GNUC_PRINTF(3, 4);
JsonObject *test_vmm_query(TestVmm *v, const char *command); /* asserts an object reply */
/* Asserts failure; returns the error message. */
char *test_vmm_exec_fail(TestVmm *v, const char *command, const char *args_fmt, ...)
    G_GNUC_PRINTF(3, 4);
void test_vmm_pass_fd(TestVmm *v, const char *fdname, int fd);
char *test_vmm_digest(TestVmm *v);
const char *test_vmm_status(TestVmm *v); /* query-status "status", static string */

/* Polls query-migrate until completed/failed/cancelled; asserts it got there in time. */
JsonObject *test_vmm_wait_migration(TestVmm *v, int timeout_ms);
/* Polls query-migrate until status is one of statuses (|-separated) or transferred >= bytes. */
JsonObject *test_vmm_wait_progress(TestVmm *v, guint64 bytes, int timeout_ms);
gboolean test_vmm_wait_event(TestVmm *v, const char *event, int timeout_ms);
gboolean test_vmm_has_event(TestVmm *v, const char *event, const char *status);
/* Returns the wait status; asserts the process ended within timeout_ms. */
int test_vmm_wait_exit(TestVmm *v, int timeout_ms);
void test_vmm_signal(TestVmm *v, int sig);
/* Drops the harness's QMP client (the VMM serves one client at a time) / makes a new one. */
void test_vmm_disconnect(TestVmm *v);
void test_vmm_reconnect(TestVmm *v);

/* Text of a JSON object member path like "ram.transferred" (for messages). */
gint64 test_json_int(JsonObject *o, const char *path);
const char *test_json_str(JsonObject *o, const char *path);

#define TEST_RUN_SUITE(suite_func)                                                                 \
    int main(void)                                                                                 \
    {                                                                                              \
        harness_init();                                                                            \
        SRunner *sr = srunner_create(suite_func());                                                \
        srunner_run_all(sr, CK_NORMAL);                                                            \
        int failed = srunner_ntests_failed(sr);                                                    \
        srunner_free(sr);                                                                          \
        harness_finish();                                                                          \
        return failed ? 1 : 0;                                                                     \
    }

#define TEST_ADD(suite, test, timeout_s)                                                           \
    do {                                                                                           \
        TCase *tc_ = tcase_create(#test);                                                          \
        tcase_add_checked_fixture(tc_, harness_setup, harness_teardown);                           \
        tcase_set_timeout(tc_, (timeout_s));                                                       \
        tcase_add_test(tc_, test);                                                                 \
        suite_add_tcase((suite), tc_);                                                             \
    } while (0)
