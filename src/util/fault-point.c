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
        guint ms = (guint)strtoul(colon + 1, NULL, 10);
        FERRY_WARN("test pause at %s for %u ms", name, ms);
        g_usleep((gulong)ms * 1000);
        return;
    }
}
