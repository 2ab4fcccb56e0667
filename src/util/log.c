/* Logging with a timestamp, level and module: cheap enough to leave
 * info-level lines on in production. Every line is escaped and bounded here,
 * so no caller has to remember which of its arguments came from a peer.
 *
 * A message below `gate` (the lowest priority any filter, log_level and the
 * outputs could let through) is dropped with one atomic read, so debug call
 * sites cost nothing unless some filter asks for them; only messages above
 * the gate look at the filters, under a read lock. */
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include "util/error.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static gint log_level = FERRY_LOG_WARNING;
static gint gate = FERRY_LOG_WARNING;
static GMutex limit_lock;
static GRWLock config_lock;
static GPtrArray *filters;  /* FerryLogFilter*, NULL: none */
static GPtrArray *outputs;  /* FerryLogOutput*, NULL: stderr */
static char *syslog_ident;  /* openlog() keeps the pointer */

/* Called with config_lock held for writing. */
static void update_gate(void)
{
    gint lowest = g_atomic_int_get(&log_level);
    for (guint i = 0; filters && i < filters->len; i++)
        lowest = MIN(lowest, (gint)((FerryLogFilter *)filters->pdata[i])->priority);
    gint output_lowest = FERRY_LOG_DEBUG;
    if (outputs && outputs->len) {
        output_lowest = FERRY_LOG_ERROR;
        for (guint i = 0; i < outputs->len; i++)
            output_lowest = MIN(output_lowest, (gint)((FerryLogOutput *)outputs->pdata[i])->priority);
    }
    g_atomic_int_set(&gate, MAX(lowest, output_lowest));
}

void ferry_log_set_level(FerryLogLevel level)
{
    g_rw_lock_writer_lock(&config_lock);
    g_atomic_int_set(&log_level, level);
    update_gate();
    g_rw_lock_writer_unlock(&config_lock);
}

static void filter_free(gpointer data)
{
    FerryLogFilter *f = data;
    g_free(f->match);
    g_free(f->pattern);
    g_free(f);
}

static void output_free(gpointer data)
{
    FerryLogOutput *o = data;
    if (o->fd >= 0)
        close(o->fd);
    g_free(o->data);
    g_free(o);
}

static gboolean parse_priority(const char *entry, const char **rest, FerryLogLevel *priority,
                               const char *what, GError **error)
{
    if (entry[0] < '1' || entry[0] > '4' || entry[1] != ':') {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_CONF_SYNTAX,
                    "%s '%s': expected a priority 1-4 and ':' first", what, entry);
        return FALSE;
    }
    *priority = (FerryLogLevel)(entry[0] - '0');
    *rest = entry + 2;
    return TRUE;
}

GPtrArray *ferry_log_parse_filters(const char *spec, GError **error)
{
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func(filter_free);
    g_auto(GStrv) entries = g_strsplit_set(spec ? spec : "", " \t\n", -1);
    for (char **e = entries; *e; e++) {
        if (!**e)
            continue;
        FerryLogLevel priority;
        const char *match;
        if (!parse_priority(*e, &match, &priority, "log filter", error))
            return NULL;
        gboolean plus = *match == '+'; /* libvirt's stack traces: not kept by ferry */
        if (plus)
            match++;
        if (!*match || strchr(match, ':')) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_CONF_SYNTAX,
                        "log filter '%s': expected PRIORITY:MATCH, e.g. 1:tunnel", *e);
            return NULL;
        }
        FerryLogFilter *f = g_new0(FerryLogFilter, 1);
        f->priority = priority;
        f->plus = plus;
        f->match = g_strdup(match);
        f->pattern = strpbrk(match, "*?") ? g_strdup(match) : g_strdup_printf("*%s*", match);
        g_ptr_array_add(list, f);
    }
    return g_steal_pointer(&list);
}

GPtrArray *ferry_log_parse_outputs(const char *spec, GError **error)
{
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func(output_free);
    g_auto(GStrv) entries = g_strsplit_set(spec ? spec : "", " \t\n", -1);
    for (char **e = entries; *e; e++) {
        if (!**e)
            continue;
        FerryLogLevel priority;
        const char *rest;
        if (!parse_priority(*e, &rest, &priority, "log output", error))
            return NULL;
        const char *colon = strchr(rest, ':');
        g_autofree char *dest = colon ? g_strndup(rest, colon - rest) : g_strdup(rest);
        const char *data = colon ? colon + 1 : NULL;
        FerryLogDestination d;
        gboolean needs_data;
        if (strcmp(dest, "stderr") == 0) {
            d = FERRY_LOG_TO_STDERR, needs_data = FALSE;
        } else if (strcmp(dest, "journald") == 0) {
            d = FERRY_LOG_TO_JOURNALD, needs_data = FALSE;
        } else if (strcmp(dest, "file") == 0) {
            d = FERRY_LOG_TO_FILE, needs_data = TRUE;
        } else if (strcmp(dest, "syslog") == 0) {
            d = FERRY_LOG_TO_SYSLOG, needs_data = TRUE;
        } else {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_CONF_SYNTAX,
                        "log output '%s': unknown destination '%s' (stderr, file, syslog or "
                        "journald)", *e, dest);
            return NULL;
        }
        if (needs_data != (data != NULL) || (data && !*data)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_CONF_SYNTAX,
                        needs_data ? "log output '%s': %s needs a name after ':'"
                                   : "log output '%s': %s takes nothing after it",
                        *e, dest);
            return NULL;
        }
        if (d == FERRY_LOG_TO_FILE && !g_path_is_absolute(data)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_CONF_SYNTAX,
                        "log output '%s': the file path must be absolute", *e);
            return NULL;
        }
        FerryLogOutput *o = g_new0(FerryLogOutput, 1);
        o->priority = priority;
        o->destination = d;
        o->data = g_strdup(data);
        o->fd = -1;
        g_ptr_array_add(list, o);
    }
    return g_steal_pointer(&list);
}

gboolean ferry_log_set_filters(const char *spec, GError **error)
{
    GPtrArray *list = ferry_log_parse_filters(spec, error);
    if (!list)
        return FALSE;
    g_rw_lock_writer_lock(&config_lock);
    GPtrArray *old = filters;
    filters = list->len ? list : NULL;
    update_gate();
    g_rw_lock_writer_unlock(&config_lock);
    if (old)
        g_ptr_array_unref(old);
    if (!list->len)
        g_ptr_array_unref(list);
    return TRUE;
}

char *ferry_log_get_filters(guint *count)
{
    GString *out = g_string_new(NULL);
    g_rw_lock_reader_lock(&config_lock);
    guint n = filters ? filters->len : 0;
    for (guint i = 0; i < n; i++) {
        FerryLogFilter *f = filters->pdata[i];
        g_string_append_printf(out, "%s%d:%s%s", i ? " " : "", f->priority, f->plus ? "+" : "",
                               f->match);
    }
    g_rw_lock_reader_unlock(&config_lock);
    *count = n;
    return g_string_free(out, FALSE);
}

static const char *const destination_names[] = {"stderr", "file", "syslog", "journald"};

static char *output_format(const FerryLogOutput *o)
{
    return g_strdup_printf("%d:%s%s%s", o->priority, destination_names[o->destination],
                           o->data ? ":" : "", o->data ? o->data : "");
}

char *ferry_log_get_outputs(guint *count)
{
    g_rw_lock_reader_lock(&config_lock);
    if (!outputs) {
        g_rw_lock_reader_unlock(&config_lock);
        *count = 1;
        return g_strdup("1:stderr");
    }
    GString *out = g_string_new(NULL);
    for (guint i = 0; i < outputs->len; i++) {
        g_autofree char *one = output_format(outputs->pdata[i]);
        g_string_append_printf(out, "%s%s", i ? " " : "", one);
    }
    *count = outputs->len;
    g_rw_lock_reader_unlock(&config_lock);
    return g_string_free(out, FALSE);
}

static gboolean output_open(FerryLogOutput *o, const char *spec, GError **error)
{
    if (o->destination == FERRY_LOG_TO_FILE) {
        o->fd = open(o->data, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (o->fd < 0) {
            int err = errno;
            g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                        "log output '%s': cannot open %s: %s", spec, o->data, g_strerror(err));
            return FALSE;
        }
    } else if (o->destination == FERRY_LOG_TO_JOURNALD) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        g_strlcpy(sa.sun_path, JOURNAL_SOCKET, sizeof(sa.sun_path));
        o->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (o->fd < 0 || connect(o->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            int err = errno;
            g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                        "log output '%s': no systemd journal at %s: %s", spec, JOURNAL_SOCKET,
                        g_strerror(err));
            return FALSE;
        }
    }
    return TRUE;
}

gboolean ferry_log_set_outputs(const char *spec, GError **error)
{
    g_autoptr(GPtrArray) list = ferry_log_parse_outputs(spec, error);
    if (!list)
        return FALSE;
    const char *ident = NULL;
    for (guint i = 0; i < list->len; i++) {
        FerryLogOutput *o = list->pdata[i];
        g_autofree char *one = output_format(o);
        if (!output_open(o, one, error))
            return FALSE;
        if (o->destination == FERRY_LOG_TO_SYSLOG)
            ident = o->data;
    }
    g_rw_lock_writer_lock(&config_lock);
    GPtrArray *old = outputs;
    outputs = list->len ? g_steal_pointer(&list) : NULL;
    if (ident) {
        g_free(syslog_ident);
        syslog_ident = g_strdup(ident);
        openlog(syslog_ident, LOG_PID, LOG_DAEMON);
    }
    update_gate();
    g_rw_lock_writer_unlock(&config_lock);
    if (old)
        g_ptr_array_unref(old);
    return TRUE;
}

/* Whether a message passes the filters (or log_level when none matches). */
static gboolean passes(FerryLogLevel level, const char *module)
{
    if ((gint)level < g_atomic_int_get(&gate))
        return FALSE;
    g_rw_lock_reader_lock(&config_lock);
    gint threshold = g_atomic_int_get(&log_level);
    for (guint i = 0; filters && i < filters->len; i++) {
        FerryLogFilter *f = filters->pdata[i];
        if (g_pattern_match_simple(f->pattern, module)) {
            threshold = f->priority;
            break;
        }
    }
    g_rw_lock_reader_unlock(&config_lock);
    return (gint)level >= threshold;
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
                     const char *fmt, va_list ap) G_GNUC_PRINTF(4, 0);

static void log_line(FerryLogLevel level, const char *module, const char *prefix,
                     const char *fmt, va_list ap)
{
    static const char *const names[] = {"", "debug", "info", "warning", "error"};
    g_autofree char *raw = g_strdup_vprintf(fmt, ap);
    g_autofree char *msg = ferry_log_escape(raw, -1, FERRY_LOG_LINE_MAX);

    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *stamp = g_date_time_format(now, "%F %T.%f");
    g_autofree char *line =
        g_strdup_printf("%.23s %s %s: %s%s\n", stamp, names[level], module, prefix, msg);

    g_rw_lock_reader_lock(&config_lock);
    if (!outputs) {
        /* One write per line keeps lines from several threads whole. */
        fputs(line, stderr);
    }
    for (guint i = 0; outputs && i < outputs->len; i++) {
        FerryLogOutput *o = outputs->pdata[i];
        if (level < o->priority)
            continue;
        switch (o->destination) {
        case FERRY_LOG_TO_STDERR:
            fputs(line, stderr);
            break;
        case FERRY_LOG_TO_FILE:
            /* O_APPEND: one write per line, whole even beside other threads */
            if (write(o->fd, line, strlen(line)) < 0) {
                /* nowhere left to say it */
            }
            break;
        case FERRY_LOG_TO_SYSLOG: {
            static const int prio[] = {LOG_DEBUG, LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
            syslog(prio[level], "%s: %s%s", module, prefix, msg);
            break;
        }
        case FERRY_LOG_TO_JOURNALD: {
            static const int prio[] = {7, 7, 6, 4, 3};
            g_autofree char *entry =
                g_strdup_printf("PRIORITY=%d\nSYSLOG_IDENTIFIER=ferry\nFERRY_MODULE=%s\n"
                                "MESSAGE=%s: %s%s\n",
                                prio[level], module, module, prefix, msg);
            if (send(o->fd, entry, strlen(entry), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                /* a full or gone journal drops the line, never blocks */
            }
            break;
        }
        }
    }
    g_rw_lock_reader_unlock(&config_lock);
}

void ferry_log(FerryLogLevel level, const char *module, const char *fmt, ...)
{
    if (!passes(level, module))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, module, "", fmt, ap);
    va_end(ap);
}

void ferry_log_limited(FerryLogLimit *limit, FerryLogLevel level, const char *module,
                       const char *fmt, ...)
{
    if (!passes(level, module))
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
