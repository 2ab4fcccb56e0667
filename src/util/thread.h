/* Thread creation that refuses instead of aborting. */
#pragma once

#include <glib.h>

/* g_thread_try_new, failing with "cannot create a thread for <name>: <reason>"
 * (g_thread_new aborts the whole daemon when the system has no thread left).
 * FERRY_TEST_FAIL_THREADS (a comma-separated list of thread names) makes those
 * threads fail as if the system refused them: the tests' deterministic trigger. */
GThread *ferry_thread_try_new(const char *name, GThreadFunc func, gpointer data, GError **error);

/* Whether error is ferry_thread_try_new's refusal: callers that retry other
 * failures (a VMM's monitor not up yet) must not retry this one. */
gboolean ferry_thread_error_is_refusal(const GError *error);
