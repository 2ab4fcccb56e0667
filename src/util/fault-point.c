/* The tests' pauses at named points of a migration. */
#include "util/fault-point.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define FERRY_LOG_MODULE "util.fault"

void ferry_fault_point(const char *name)
{
    const char *list = g_getenv("FERRY_TEST_PAUSE");
    if (!list || !*list)
        return;
    g_auto(GStrv) items = g_strsplit(list, ",", -1);
    for (guint i = 0; items[i]; i++) {
        const char *colon = strchr(items[i], ':');
        if (!colon || (gsize)(colon - items[i]) != strlen(name) ||
            strncmp(items[i], name, strlen(name)) != 0)
            continue;
        char *end = NULL;
        guint ms = (guint)strtoul(colon + 1, &end, 10);
        const char *release = end && *end == ':' ? end + 1 : NULL;
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
        return;
    }
}
