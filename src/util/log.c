/* Logging to stderr with a timestamp, level and module: cheap enough to leave
 * info-level lines on in production. Every line is escaped and bounded here,
 * so no caller has to remember which of its arguments came from a peer. */
#include "util/log.h"

#include <stdio.h>
#include <string.h>

static gint log_level = FERRY_LOG_WARNING;
static GMutex limit_lock;

void ferry_log_set_level(FerryLogLevel level)
{
    g_atomic_int_set(&log_level, level);
}

FerryLogLevel ferry_log_get_level(void)
{
    return g_atomic_int_get(&log_level);
}

char *ferry_log_escape(const char *text, gssize len, gsize max)
{
    gsize n = len < 0 ? strlen(text) : (gsize)len;
    gsize take = MIN(n, max);
    GString *out = g_string_sized_new(take + 16);
    const char *p = text, *end = text + take;
    while (p < end) {
        guchar c = (guchar)*p;
        if (c == '\\') {
            g_string_append(out, "\\\\");
            p++;
        } else if (c == '\n') {
            g_string_append(out, "\\n");
            p++;
        } else if (c == '\r') {
            g_string_append(out, "\\r");
            p++;
        } else if (c == '\t') {
            g_string_append(out, "\\t");
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            g_string_append_printf(out, "\\x%02x", c);
            p++;
        } else if (c < 0x80) {
            g_string_append_c(out, (char)c);
            p++;
        } else {
            /* A whole, valid character that is not a C1 control passes as is. */
            gunichar u = g_utf8_get_char_validated(p, end - p);
            if (u == (gunichar)-1 || u == (gunichar)-2 || (u >= 0x80 && u < 0xa0)) {
                g_string_append_printf(out, "\\x%02x", c);
                p++;
            } else {
                const char *next = g_utf8_next_char(p);
                g_string_append_len(out, p, next - p);
                p = next;
            }
        }
    }
    if (n > take)
        g_string_append_printf(out, "... (%zu more bytes)", n - take);
    return g_string_free(out, FALSE);
}

static void log_line(FerryLogLevel level, const char *module, const char *prefix,
                     const char *fmt, va_list ap)
{
    static const char *const names[] = {"", "debug", "info", "warning", "error"};
    g_autofree char *raw = g_strdup_vprintf(fmt, ap);
    g_autofree char *msg = ferry_log_escape(raw, -1, FERRY_LOG_LINE_MAX);

    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *stamp = g_date_time_format(now, "%F %T.%f");
    /* One fprintf per line keeps lines from several threads whole. */
    fprintf(stderr, "%.23s %s %s: %s%s\n", stamp, names[level], module, prefix, msg);
}

void ferry_log(FerryLogLevel level, const char *module, const char *fmt, ...)
{
    if ((gint)level < g_atomic_int_get(&log_level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, module, "", fmt, ap);
    va_end(ap);
}

void ferry_log_limited(FerryLogLimit *limit, FerryLogLevel level, const char *module,
                       const char *fmt, ...)
{
    if ((gint)level < g_atomic_int_get(&log_level))
        return;
    gint64 now = g_get_monotonic_time();
    g_mutex_lock(&limit_lock);
    if (limit->window_start_us == 0 ||
        now - limit->window_start_us >= (gint64)FERRY_LOG_LIMIT_WINDOW_S * G_USEC_PER_SEC) {
        limit->window_start_us = now;
        limit->lines = 0;
    }
    gboolean emit = limit->lines < FERRY_LOG_LIMIT_BURST;
    guint suppressed = 0;
    if (emit) {
        limit->lines++;
        suppressed = limit->suppressed;
        limit->suppressed = 0;
    } else {
        limit->suppressed++;
    }
    g_mutex_unlock(&limit_lock);
    if (!emit)
        return;

    g_autofree char *prefix =
        suppressed ? g_strdup_printf("(%u similar messages suppressed) ", suppressed) : g_strdup("");
    va_list ap;
    va_start(ap, fmt);
    log_line(level, module, prefix, fmt, ap);
    va_end(ap);
}
