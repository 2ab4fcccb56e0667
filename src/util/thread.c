/* Thread creation that refuses instead of aborting. */
#include "util/thread.h"

#include <errno.h>

#include "util/error.h"

#define THREAD_REFUSAL "cannot create a thread for "

static gboolean injected_failure(const char *name)
{
    const char *list = g_getenv("FERRY_TEST_FAIL_THREADS");
    if (!list || !*list)
        return FALSE;
    g_auto(GStrv) names = g_strsplit(list, ",", -1);
    return g_strv_contains((const char *const *)names, name);
}

GThread *ferry_thread_try_new(const char *name, GThreadFunc func, gpointer data, GError **error)
{
    if (injected_failure(name)) {
        /* What GLib says when the system refuses. */
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                    THREAD_REFUSAL "%s: Error creating thread: %s", name,
                    g_strerror(EAGAIN));
        return NULL;
    }
    g_autoptr(GError) local = NULL;
    GThread *t = g_thread_try_new(name, func, data, &local);
    if (!t)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, THREAD_REFUSAL "%s: %s", name,
                    local->message);
    return t;
}

gboolean ferry_thread_error_is_refusal(const GError *error)
{
    return error && g_error_matches(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR) &&
           g_str_has_prefix(error->message, THREAD_REFUSAL);
}
