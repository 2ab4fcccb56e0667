/* Logging: one line per event, with a level set from the config (log_level
 * 1=debug .. 4=error, as libvirtd.conf) or --verbose, and libvirt's filters
 * and outputs (log_filters, log_outputs; docs/configuration.md). A line goes
 * to stderr unless outputs are set. Each file names its module with
 * `#define FERRY_LOG_MODULE "tunnel.stream"` before including this header;
 * filters match that name.
 *
 * Lines often quote what a peer sent (a SASL mechanism name, a user name, an
 * error text), so every line is made safe here, whatever its source: control
 * characters and invalid UTF-8 are escaped (\n, \x1b, ...), so a client cannot
 * forge a line or drive the operator's terminal, and a line is cut at
 * FERRY_LOG_LINE_MAX bytes. Events a stranger can repeat at will (a dropped
 * packet, a refused connection) are logged through the _LIMITED macros. */
#pragma once

#include <glib.h>

typedef enum {
    FERRY_LOG_DEBUG = 1,
    FERRY_LOG_INFO = 2,
    FERRY_LOG_WARNING = 3,
    FERRY_LOG_ERROR = 4,
} FerryLogLevel;

/* Longest message text of one line; the rest is cut and counted. */
#define FERRY_LOG_LINE_MAX 2048

/* Messages of modules no filter matches pass at this level and above. */
void ferry_log_set_level(FerryLogLevel level);
FerryLogLevel ferry_log_get_level(void);
void ferry_log(FerryLogLevel level, const char *module, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* One log_filters entry, "PRIORITY:MATCH" or "PRIORITY:+MATCH" (libvirt's
 * stack-trace flag, accepted and ignored): messages of a module whose name
 * matches pass at `priority` and above, whatever log_level says. A match
 * without * or ? matches any module name containing it; the first filter
 * that matches a module decides. */
typedef struct {
    FerryLogLevel priority;
    gboolean plus; /* written with the '+' (kept only to be shown back) */
    char *match;   /* as written, without the '+' */
    char *pattern; /* glob: the match itself, or *match* */
} FerryLogFilter;

typedef enum {
    FERRY_LOG_TO_STDERR,
    FERRY_LOG_TO_FILE,
    FERRY_LOG_TO_SYSLOG,
    FERRY_LOG_TO_JOURNALD,
} FerryLogDestination;

/* One log_outputs entry: "P:stderr", "P:file:/ABSOLUTE/PATH",
 * "P:syslog:IDENT" or "P:journald"; messages at priority P and above that
 * passed the filters are written there. */
typedef struct {
    FerryLogLevel priority;
    FerryLogDestination destination;
    char *data; /* the file path or the syslog ident; NULL otherwise */
    int fd;     /* file or journal socket once opened; -1 before */
} FerryLogOutput;

/* Parse libvirt's whitespace-separated lists into arrays of FerryLogFilter
 * or FerryLogOutput (the array frees them). A malformed entry is an error
 * naming it. Nothing is opened. */
GPtrArray *ferry_log_parse_filters(const char *spec, GError **error);
GPtrArray *ferry_log_parse_outputs(const char *spec, GError **error);
/* Parse and install: the filters, or the outputs once every one of them is
 * open (a file that cannot be opened, or no systemd journal, is an error
 * naming it and changes nothing). NULL or "": none (lines go to stderr). */
gboolean ferry_log_set_filters(const char *spec, GError **error);
gboolean ferry_log_set_outputs(const char *spec, GError **error);
/* What is in force, in the same syntax, and how many entries (virt-admin
 * daemon-log-filters / daemon-log-outputs). No filters: "". No outputs (lines
 * go to stderr, whatever their priority): "1:stderr", 1. */
char *ferry_log_get_filters(guint *count);
char *ferry_log_get_outputs(guint *count);

/* Makes text safe for one log line: escapes control characters, backslashes
 * and invalid UTF-8, and cuts it after `max` input bytes (noting how many
 * were cut). len < 0: NUL-terminated. */
char *ferry_log_escape(const char *text, gssize len, gsize max);

/* A rate limit for one call site: at most FERRY_LOG_LIMIT_BURST lines per
 * FERRY_LOG_LIMIT_WINDOW_S seconds; the first line after a quiet spell says
 * how many were suppressed. Zero-initialised (static) state. */
#define FERRY_LOG_LIMIT_BURST 10
#define FERRY_LOG_LIMIT_WINDOW_S 10
typedef struct {
    gint64 window_start_us;
    guint lines;
    guint suppressed;
} FerryLogLimit;

void ferry_log_limited(FerryLogLimit *limit, FerryLogLevel level, const char *module,
                       const char *fmt, ...) G_GNUC_PRINTF(4, 5);

#define FERRY_DEBUG(...) ferry_log(FERRY_LOG_DEBUG, FERRY_LOG_MODULE, __VA_ARGS__)
#define FERRY_INFO(...) ferry_log(FERRY_LOG_INFO, FERRY_LOG_MODULE, __VA_ARGS__)
#define FERRY_WARN(...) ferry_log(FERRY_LOG_WARNING, FERRY_LOG_MODULE, __VA_ARGS__)
#define FERRY_ERROR_LOG(...) ferry_log(FERRY_LOG_ERROR, FERRY_LOG_MODULE, __VA_ARGS__)

#define FERRY_LOG_LIMITED_(level, ...)                                                   \
    do {                                                                                 \
        static FerryLogLimit ferry_log_limit_;                                           \
        ferry_log_limited(&ferry_log_limit_, level, FERRY_LOG_MODULE, __VA_ARGS__);      \
    } while (0)
#define FERRY_INFO_LIMITED(...) FERRY_LOG_LIMITED_(FERRY_LOG_INFO, __VA_ARGS__)
#define FERRY_WARN_LIMITED(...) FERRY_LOG_LIMITED_(FERRY_LOG_WARNING, __VA_ARGS__)
