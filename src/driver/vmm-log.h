/* The logs of a driver's VMM processes, one per domain (libvirt keeps QEMU's
 * in /var/log/libvirt/qemu/NAME.log): DIR/NAME.log takes the VMM's stderr
 * (and ferry-vmm's log lines) and the daemon's own lines about it, appended
 * over every start of the domain and kept after it stops. Bounded: when a
 * VMM of the domain starts and the file has reached max_size bytes, it is
 * rotated (NAME.log -> NAME.log.0 -> NAME.log.1 ..., at most max_backups old
 * files kept), as virtlogd rotates (its max_size and max_backups). */
#pragma once

#include <glib.h>

typedef struct {
    char *dir;
    guint64 max_size;  /* bytes; 0: never rotated */
    guint max_backups; /* old files kept; 0: a full log is dropped */
} VmmLogConfig;

#define VMM_LOG_DEFAULT_MAX_SIZE (2 * 1024 * 1024)
#define VMM_LOG_DEFAULT_MAX_BACKUPS 3

VmmLogConfig *vmm_log_config_new(const char *dir, guint64 max_size, guint max_backups);
VmmLogConfig *vmm_log_config_copy(const VmmLogConfig *config);
void vmm_log_config_free(VmmLogConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmLogConfig, vmm_log_config_free)

/* DIR/NAME.log */
char *vmm_log_path(const VmmLogConfig *config, const char *name);

/* Before a VMM of domain name starts: creates the directory (mode 0700) if
 * missing and rotates the log if it reached max_size. A VMM of the domain
 * still running (the source of a local migration) keeps writing to the file
 * it opened, now NAME.log.0. */
gboolean vmm_log_prepare(const VmmLogConfig *config, const char *name, GError **error);

/* The last line the VMM itself wrote (not the daemon's "starting up", command
 * line or "shutting down" lines), or NULL: why a VMM exited. */
char *vmm_log_last_words(const VmmLogConfig *config, const char *name);

/* Appends "TIMESTAMP: text" and a newline: the daemon's lines about the
 * domain's VMM ("starting up", "shutting down, reason=destroyed"). Failures
 * are ignored: the log is for people. */
void vmm_log_append(const VmmLogConfig *config, const char *name, const char *text);
