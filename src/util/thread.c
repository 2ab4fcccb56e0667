/* Thread creation that refuses instead of aborting. */
#include "util/thread.h"

#include <errno.h>

#include "util/error.h"

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
                    "cannot create a thread for %s: Error creating thread: %s", name,
                    g_strerror(EAGAIN));
        return NULL;
    }
    g_autoptr(GError) local = NULL;
    GThread *t = g_thread_try_new(name, func, data, &local);
    if (!t)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                    "cannot create a thread for %s: %s", name, local->message);
    return t;
}
