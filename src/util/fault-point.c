/* The tests' pauses at named points of a migration. */
#include "util/fault-point.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define FERRY_LOG_MODULE "util.fault"

/* The entry for name in a "point:ms[:PATH]" list: its ms and its PATH (NULL
 * when none; *release owns it). FALSE when the list does not name it. */
static gboolean find_point(const char *list, const char *name, guint *ms, char **release)
{
    if (!list || !*list)
        return FALSE;
    g_auto(GStrv) items = g_strsplit(list, ",", -1);
    for (guint i = 0; items[i]; i++) {
        const char *colon = strchr(items[i], ':');
        if (!colon || (gsize)(colon - items[i]) != strlen(name) ||
            strncmp(items[i], name, strlen(name)) != 0)
            continue;
        char *end = NULL;
        *ms = (guint)strtoul(colon + 1, &end, 10);
        *release = end && *end == ':' ? g_strdup(end + 1) : NULL;
        return TRUE;
    }
    return FALSE;
}

void ferry_fault_point(const char *name)
{
    guint ms = 0;
    g_autofree char *release = NULL;
    if (find_point(g_getenv("FERRY_TEST_BUSY"), name, &ms, &release)) {
        /* A process at its work (not asleep): its CPU time grows. It spins
         * a quarter of the time, leaving the CPU to the tests beside it. */
        FERRY_WARN("test busy at %s for %u ms", name, ms);
        gint64 until = g_get_monotonic_time() + (gint64)ms * 1000;
        volatile guint64 spin = 0;
        while (g_get_monotonic_time() < until) {
            gint64 rest = g_get_monotonic_time() + 50 * 1000;
            while (g_get_monotonic_time() < rest)
                spin++;
            g_usleep(150 * 1000);
        }
        g_clear_pointer(&release, g_free);
    }
    if (!find_point(g_getenv("FERRY_TEST_PAUSE"), name, &ms, &release))
        return;
    FERRY_WARN("test pause at %s for %u ms%s%s", name, ms, release ? " or until " : "",
               release ? release : "");
    gint64 until = g_get_monotonic_time() + (gint64)ms * 1000;
    while (g_get_monotonic_time() < until) {
        if (release && g_file_test(release, G_FILE_TEST_EXISTS)) {
            FERRY_WARN("test pause at %s released", name);
            return;
        }
        g_usleep(release ? 20 * 1000 : (gulong)ms * 1000);
    }
}
