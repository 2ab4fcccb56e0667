/* Logging: one line per event on stderr, with a level set from the config
 * (log_level 1=debug .. 4=error, as libvirtd.conf) or --verbose. */
#pragma once

#include <glib.h>

typedef enum {
    FERRY_LOG_DEBUG = 1,
    FERRY_LOG_INFO = 2,
    FERRY_LOG_WARNING = 3,
    FERRY_LOG_ERROR = 4,
} FerryLogLevel;

void ferry_log_set_level(FerryLogLevel level);
FerryLogLevel ferry_log_get_level(void);
void ferry_log(FerryLogLevel level, const char *module, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

#define FERRY_DEBUG(...) ferry_log(FERRY_LOG_DEBUG, FERRY_LOG_MODULE, __VA_ARGS__)
#define FERRY_INFO(...) ferry_log(FERRY_LOG_INFO, FERRY_LOG_MODULE, __VA_ARGS__)
#define FERRY_WARN(...) ferry_log(FERRY_LOG_WARNING, FERRY_LOG_MODULE, __VA_ARGS__)
#define FERRY_ERROR_LOG(...) ferry_log(FERRY_LOG_ERROR, FERRY_LOG_MODULE, __VA_ARGS__)
