/* VMM logs by domain, rotated by size. */
#include "driver/vmm-log.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "driver.log"

VmmLogConfig *vmm_log_config_new(const char *dir, guint64 max_size, guint max_backups)
{
    VmmLogConfig *c = g_new0(VmmLogConfig, 1);
    c->dir = g_strdup(dir);
    c->max_size = max_size;
    c->max_backups = max_backups;
    return c;
}

VmmLogConfig *vmm_log_config_copy(const VmmLogConfig *config)
{
    return vmm_log_config_new(config->dir, config->max_size, config->max_backups);
}

void vmm_log_config_free(VmmLogConfig *config)
{
    if (!config)
        return;
    g_free(config->dir);
    g_free(config);
}

char *vmm_log_path(const VmmLogConfig *config, const char *name)
{
    g_autofree char *file = g_strdup_printf("%s.log", name);
    return g_build_filename(config->dir, file, NULL);
}

static char *backup_path(const char *log, guint i)
{
    return g_strdup_printf("%s.%u", log, i);
}

/* NAME.log.(max-1) goes, each older one moves up by one, NAME.log becomes
 * NAME.log.0. A rename keeps what a running writer still appends. */
static gboolean rotate(const VmmLogConfig *c, const char *log, GError **error)
{
    if (c->max_backups == 0) {
        if (unlink(log) < 0 && errno != ENOENT) {
            ferry_set_error_errno(error, errno, "cannot remove the full log '%s'", log);
            return FALSE;
        }
        return TRUE;
    }
    g_autofree char *oldest = backup_path(log, c->max_backups - 1);
    if (unlink(oldest) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "cannot remove the old log '%s'", oldest);
        return FALSE;
    }
    for (guint i = c->max_backups - 1; i > 0; i--) {
        g_autofree char *from = backup_path(log, i - 1);
        g_autofree char *to = backup_path(log, i);
        if (rename(from, to) < 0 && errno != ENOENT) {
            ferry_set_error_errno(error, errno, "cannot rotate the log '%s' to '%s'", from, to);
            return FALSE;
        }
    }
    g_autofree char *first = backup_path(log, 0);
    if (rename(log, first) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "cannot rotate the log '%s' to '%s'", log, first);
        return FALSE;
    }
    return TRUE;
}

gboolean vmm_log_prepare(const VmmLogConfig *c, const char *name, GError **error)
{
    if (g_mkdir_with_parents(c->dir, 0700) < 0) {
        ferry_set_error_errno(error, errno, "cannot create the log directory '%s'", c->dir);
        return FALSE;
    }
    g_autofree char *log = vmm_log_path(c, name);
    struct stat st;
    if (c->max_size == 0 || stat(log, &st) < 0 || (guint64)st.st_size < c->max_size)
        return TRUE;
    if (!rotate(c, log, error))
        return FALSE;
    FERRY_DEBUG("rotated the log of domain '%s' (%" G_GUINT64_FORMAT " bytes)", name,
                (guint64)st.st_size);
    return TRUE;
}

char *vmm_log_last_words(const VmmLogConfig *c, const char *name)
{
    g_autofree char *log = vmm_log_path(c, name);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(log, &text, NULL, NULL))
        return NULL;
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (guint i = g_strv_length(lines); i > 0; i--) {
        const char *line = g_strstrip(lines[i - 1]);
        if (!*line || *line == '/' || g_str_has_suffix(line, ": starting up") ||
            strstr(line, ": shutting down, reason="))
            continue;
        return g_strdup(line);
    }
    return NULL;
}

void vmm_log_append(const VmmLogConfig *c, const char *name, const char *text)
{
    g_autofree char *log = vmm_log_path(c, name);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return;
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autofree char *stamp = g_date_time_format(now, "%Y-%m-%d %H:%M:%S.%f");
    g_autofree char *line = g_strdup_printf("%.23s+0000: %s\n", stamp, text);
    if (write(fd, line, strlen(line)) < 0) {
        /* the log is for people: a full disk must not stop the domain */
    }
    close(fd);
}
