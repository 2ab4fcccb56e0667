/* ferry-vmm: the simulated VMM, one process per VM. main() owns the command
 * line, detaching from the parent (the VM outlives a daemon that is killed),
 * the pidfile and signals.
 *
 * ferry-vmm --memory BYTES --qmp PATH [--name NAME] [--uuid UUID] [--vcpus N]
 *           [--seed N] [--dirty-rate BYTES_PER_SEC] [--dirty-pattern random|sequential]
 *           [--incoming defer|unix:PATH] [--pidfile PATH] [--log FILE] [--debug]
 *
 * BYTES accepts a K, M, G or T suffix (powers of 1024). docs/ferry-vmm.md has the rest. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <glib-unix.h>

#include "util/error.h"
#include "util/log.h"
#include "vmm/vmm-machine.h"

#define FERRY_LOG_MODULE "vmm"

typedef struct {
    char *name;
    char *uuid;
    char *memory;
    gint vcpus;
    char *seed;
    char *dirty_rate;
    char *dirty_pattern;
    char *incoming;
    char *qmp;
    char *pidfile;
    char *log;
    gboolean debug;
} MainOptions;

static void main_options_clear(MainOptions *o)
{
    g_free(o->name);
    g_free(o->uuid);
    g_free(o->memory);
    g_free(o->seed);
    g_free(o->dirty_rate);
    g_free(o->dirty_pattern);
    g_free(o->incoming);
    g_free(o->qmp);
    g_free(o->pidfile);
    g_free(o->log);
}

/* "268435456", "256M", "4G", "4GiB". */
static gboolean main_parse_size(const char *text, const char *what, guint64 *out, GError **error)
{
    char *end = NULL;
    errno = 0;
    guint64 v = g_ascii_strtoull(text, &end, 10);
    guint shift = 0;
    if (end && *end) {
        switch (g_ascii_toupper(*end)) {
        case 'K':
            shift = 10;
            break;
        case 'M':
            shift = 20;
            break;
        case 'G':
            shift = 30;
            break;
        case 'T':
            shift = 40;
            break;
        default:
            shift = 64;
        }
        end++;
        if (g_ascii_strcasecmp(end, "") != 0 && g_ascii_strcasecmp(end, "B") != 0 &&
            g_ascii_strcasecmp(end, "iB") != 0)
            shift = 64;
    }
    if (end == text || errno || shift == 64 || (shift && v > (G_MAXUINT64 >> shift))) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "invalid %s '%s'", what, text);
        return FALSE;
    }
    *out = v << shift;
    return TRUE;
}

static gboolean main_write_pidfile(const char *path, GError **error)
{
    g_autofree char *tmp = g_strdup_printf("%s.tmp.%d", path, (int)getpid());
    g_autofree char *text = g_strdup_printf("%d\n", (int)getpid());
    /* Written then renamed: a reader never sees a half-written pid. */
    if (!g_file_set_contents(tmp, text, -1, error))
        return FALSE;
    if (rename(tmp, path) < 0) {
        ferry_set_error_errno(error, errno, "cannot write pidfile '%s'", path);
        unlink(tmp);
        return FALSE;
    }
    return TRUE;
}

/* The VM must survive its parent: no terminal, no inherited stdin/stdout, and
 * its own session so a signal to the daemon's process group misses it. */
static gboolean main_detached; /* stderr now goes to the log, not to our caller */

static gboolean main_detach(const char *log_path, GError **error)
{
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0) {
        ferry_set_error_errno(error, errno, "cannot open /dev/null");
        return FALSE;
    }
    int log_fd = -1;
    if (log_path) {
        log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (log_fd < 0) {
            ferry_set_error_errno(error, errno, "cannot open log file '%s'", log_path);
            close(null_fd);
            return FALSE;
        }
    }
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
    if (log_fd >= 0) {
        dup2(log_fd, STDERR_FILENO);
        close(log_fd);
        main_detached = TRUE;
    }
    close(null_fd);
    if (getsid(0) != getpid())
        setsid();
    return TRUE;
}

static gboolean main_on_signal(gpointer data)
{
    vmm_machine_request_exit(data, 0, "host-signal");
    return G_SOURCE_CONTINUE;
}

static int main_run(MainOptions *o, GError **error)
{
    VmmConfig config = {.vcpus = (guint)o->vcpus, .pattern = VMM_DIRTY_RANDOM};
    if (!o->memory || !o->qmp) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "--memory and --qmp are required");
        return 2;
    }
    if (!main_parse_size(o->memory, "memory size", &config.memory, error) ||
        !main_parse_size(o->seed ? o->seed : "1", "seed", &config.seed, error) ||
        !main_parse_size(o->dirty_rate ? o->dirty_rate : "0", "dirty rate", &config.dirty_rate,
                         error))
        return 2;
    if (o->vcpus < 1 || o->vcpus > 256) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "--vcpus must be 1 to 256");
        return 2;
    }
    if (o->dirty_pattern && !vmm_dirty_pattern_from_string(o->dirty_pattern, &config.pattern)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "--dirty-pattern must be 'random' or 'sequential'");
        return 2;
    }
    if (o->uuid && !g_uuid_string_is_valid(o->uuid)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "invalid --uuid '%s'", o->uuid);
        return 2;
    }
    if (o->incoming && !g_str_equal(o->incoming, "defer") &&
        !g_str_has_prefix(o->incoming, "unix:")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "--incoming must be 'defer' or 'unix:PATH'");
        return 2;
    }
    g_autofree char *uuid = o->uuid ? g_strdup(o->uuid) : g_uuid_string_random();
    config.name = o->name ? o->name : "ferry-vm";
    config.uuid = uuid;
    config.incoming = o->incoming != NULL;

    if (!main_detach(o->log, error))
        return 1;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    ferry_log_set_level(o->debug ? FERRY_LOG_DEBUG : FERRY_LOG_INFO);

    VmmMachine *machine = vmm_machine_new(&config, error);
    if (!machine)
        return 1;
    int code = 1;
    guint sig_term = 0, sig_int = 0;
    if (!vmm_machine_serve(machine, o->qmp, error))
        goto out;
    if (o->incoming && !g_str_equal(o->incoming, "defer") &&
        !vmm_machine_listen_incoming(machine, o->incoming, error))
        goto out;
    /* The pidfile is the readiness signal: QMP already accepts connections. */
    if (o->pidfile && !main_write_pidfile(o->pidfile, error))
        goto out;
    sig_term = g_unix_signal_add(SIGTERM, main_on_signal, machine);
    sig_int = g_unix_signal_add(SIGINT, main_on_signal, machine);
    FERRY_INFO("QMP listening on %s", o->qmp);
    code = vmm_machine_run(machine);
    if (o->pidfile)
        unlink(o->pidfile);
out:
    if (sig_term)
        g_source_remove(sig_term);
    if (sig_int)
        g_source_remove(sig_int);
    vmm_machine_free(machine);
    return code;
}

int main(int argc, char **argv)
{
    MainOptions o = {.vcpus = 1};
    GOptionEntry entries[] = {
        {"name", 0, 0, G_OPTION_ARG_STRING, &o.name, "VM name (default ferry-vm)", "NAME"},
        {"uuid", 0, 0, G_OPTION_ARG_STRING, &o.uuid, "VM UUID (default: random)", "UUID"},
        {"memory", 0, 0, G_OPTION_ARG_STRING, &o.memory, "guest RAM size (K/M/G/T suffix)",
         "BYTES"},
        {"vcpus", 0, 0, G_OPTION_ARG_INT, &o.vcpus, "vCPUs = workload threads (default 1)", "N"},
        {"qmp", 0, 0, G_OPTION_ARG_FILENAME, &o.qmp, "UNIX socket to serve QMP on", "PATH"},
        {"seed", 0, 0, G_OPTION_ARG_STRING, &o.seed, "seed of RAM contents (default 1)", "N"},
        {"dirty-rate", 0, 0, G_OPTION_ARG_STRING, &o.dirty_rate,
         "bytes of guest pages dirtied per second (default 0 = idle)", "BYTES_PER_SEC"},
        {"dirty-pattern", 0, 0, G_OPTION_ARG_STRING, &o.dirty_pattern,
         "random (default) or sequential", "PATTERN"},
        {"incoming", 0, 0, G_OPTION_ARG_STRING, &o.incoming,
         "start paused, waiting for an incoming migration", "defer|unix:PATH"},
        {"pidfile", 0, 0, G_OPTION_ARG_FILENAME, &o.pidfile, "write the pid here once ready",
         "PATH"},
        {"log", 0, 0, G_OPTION_ARG_FILENAME, &o.log, "append log lines (stderr) to FILE", "FILE"},
        {"debug", 0, 0, G_OPTION_ARG_NONE, &o.debug, "log debug lines", NULL},
        {NULL},
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- ferry's simulated VMM");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) error = NULL;
    /* Until detached, errors go to the caller's stderr; after, to the log too. */
    int caller_stderr = dup(STDERR_FILENO);
    int code = 2;
    if (g_option_context_parse(ctx, &argc, &argv, &error)) {
        code = main_run(&o, &error);
    }
    if (error) {
        fprintf(stderr, "ferry-vmm: %s\n", error->message);
        fflush(stderr);
        if (main_detached && caller_stderr >= 0) {
            g_autofree char *line = g_strdup_printf("ferry-vmm: %s\n", error->message);
            if (write(caller_stderr, line, strlen(line)) < 0) {
                /* the caller is gone; the log has it */
            }
        }
    }
    if (caller_stderr >= 0)
        close(caller_stderr);
    main_options_clear(&o);
    return code;
}
