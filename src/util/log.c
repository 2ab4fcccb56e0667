/* Logging to stderr with a timestamp, level and module: cheap enough to leave
 * info-level lines on in production. */
#include "util/log.h"

#include <stdio.h>

static gint log_level = FERRY_LOG_WARNING;

void ferry_log_set_level(FerryLogLevel level)
{
    g_atomic_int_set(&log_level, level);
}

FerryLogLevel ferry_log_get_level(void)
{
    return g_atomic_int_get(&log_level);
}

void ferry_log(FerryLogLevel level, const char *module, const char *fmt, ...)
{
    static const char *const names[] = {"", "debug", "info", "warning", "error"};
    if ((gint)level < g_atomic_int_get(&log_level))
        return;

    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);

    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *stamp = g_date_time_format(now, "%F %T.%f");
    /* One fprintf per line keeps lines from several threads whole. */
    fprintf(stderr, "%.23s %s %s: %s\n", stamp, names[level], module, msg);
}
