/* systemd's socket activation and notify protocols, spoken directly: they are
 * a few environment variables and one datagram, not worth a libsystemd. */
#include "daemon/daemon-activation.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "activation"

/* sd_listen_fds(3): passed fds start here. */
#define LISTEN_FDS_START 3

static const char *const known_names[] = {DAEMON_SOCKET_RW, DAEMON_SOCKET_RO, DAEMON_SOCKET_ADMIN,
                                          DAEMON_SOCKET_TCP, DAEMON_SOCKET_TLS, NULL};

typedef struct {
    int fd; /* -1 once taken */
    char *name;
} PassedFd;

struct DaemonActivation {
    GArray *fds; /* PassedFd */
};

static void passed_fd_clear(gpointer p)
{
    PassedFd *pf = p;
    if (pf->fd >= 0)
        close(pf->fd);
    g_free(pf->name);
}

void daemon_activation_free(DaemonActivation *act)
{
    if (!act)
        return;
    g_array_free(act->fds, TRUE);
    g_free(act);
}

static gboolean is_listening_stream(int fd)
{
    struct stat st;
    int type = 0, listening = 0;
    socklen_t len = sizeof(int);
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
        return FALSE;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return FALSE;
    len = sizeof(int);
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening;
}

static gboolean parse_count(const char *text, guint64 max, guint64 *out)
{
    return text && g_ascii_string_to_unsigned(text, 10, 0, max, out, NULL);
}

DaemonActivation *daemon_activation_from_env(GError **error)
{
    g_autofree char *pid_text = g_strdup(g_getenv("LISTEN_PID"));
    g_autofree char *fds_text = g_strdup(g_getenv("LISTEN_FDS"));
    g_autofree char *names_text = g_strdup(g_getenv("LISTEN_FDNAMES"));
    /* Whatever they say, they are not for the VMMs ferryd spawns. */
    g_unsetenv("LISTEN_PID");
    g_unsetenv("LISTEN_FDS");
    g_unsetenv("LISTEN_FDNAMES");
    if (!fds_text)
        return NULL;

    guint64 pid = 0, count = 0;
    if (!parse_count(pid_text, G_MAXINT32, &pid) || (pid_t)pid != getpid())
        return NULL; /* handed to a parent that exec'd us without them, or a stale copy */
    if (!parse_count(fds_text, 1024, &count) || count == 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                    "socket activation: LISTEN_FDS='%s' is not a count of sockets", fds_text);
        return NULL;
    }
    g_auto(GStrv) names = names_text ? g_strsplit(names_text, ":", -1) : NULL;
    if (!names || g_strv_length(names) != count) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                    "socket activation: %u sockets passed but LISTEN_FDNAMES names %u; each "
                    "socket needs a name (FileDescriptorName=), one of %s, %s, %s, %s, %s",
                    (guint)count, names ? g_strv_length(names) : 0, known_names[0], known_names[1],
                    known_names[2], known_names[3], known_names[4]);
        return NULL;
    }

    g_autoptr(DaemonActivation) act = g_new0(DaemonActivation, 1);
    act->fds = g_array_new(FALSE, TRUE, sizeof(PassedFd));
    g_array_set_clear_func(act->fds, passed_fd_clear);
    /* Own every passed fd first, so each is closed on any error below. */
    for (guint i = 0; i < count; i++) {
        PassedFd pf = {.fd = LISTEN_FDS_START + (int)i, .name = g_strdup(names[i])};
        g_array_append_val(act->fds, pf);
    }
    for (guint i = 0; i < count; i++) {
        PassedFd *pf = &g_array_index(act->fds, PassedFd, i);
        if (!g_strv_contains(known_names, pf->name)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                        "socket activation: unknown socket name '%s' (fd %d); ferryd takes %s, "
                        "%s, %s, %s and %s",
                        pf->name, pf->fd, known_names[0], known_names[1], known_names[2],
                        known_names[3], known_names[4]);
            return NULL;
        }
        if (!is_listening_stream(pf->fd)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                        "socket activation: fd %d (%s) is not a listening stream socket",
                        pf->fd, pf->name);
            return NULL;
        }
        if (fcntl(pf->fd, F_SETFD, FD_CLOEXEC) < 0) {
            ferry_set_error_errno(error, errno, "socket activation: fd %d (%s)", pf->fd,
                                  pf->name);
            return NULL;
        }
    }
    return g_steal_pointer(&act);
}

gboolean daemon_activation_has(const DaemonActivation *act, const char *name)
{
    for (guint i = 0; act && i < act->fds->len; i++) {
        const PassedFd *pf = &g_array_index(act->fds, PassedFd, i);
        if (pf->fd >= 0 && strcmp(pf->name, name) == 0)
            return TRUE;
    }
    return FALSE;
}

int daemon_activation_take(DaemonActivation *act, const char *name)
{
    for (guint i = 0; act && i < act->fds->len; i++) {
        PassedFd *pf = &g_array_index(act->fds, PassedFd, i);
        if (pf->fd >= 0 && strcmp(pf->name, name) == 0) {
            int fd = pf->fd;
            pf->fd = -1;
            return fd;
        }
    }
    return -1;
}

char *daemon_socket_describe(int fd, const char *kind)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return g_strdup_printf("%s fd %d", kind, fd);
    if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&ss;
        return g_strdup_printf("unix %s", sun->sun_path[0] ? sun->sun_path : "(abstract)");
    }
    char host[INET6_ADDRSTRLEN] = "?";
    guint port = 0;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        port = ntohs(sin->sin_port);
        return g_strdup_printf("%s %s:%u", kind, host, port);
    }
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        port = ntohs(sin6->sin6_port);
        return g_strdup_printf("%s [%s]:%u", kind, host, port);
    }
    return g_strdup_printf("%s fd %d", kind, fd);
}

static char *notify_path;

void daemon_notify_init(void)
{
    g_free(notify_path);
    notify_path = g_strdup(g_getenv("NOTIFY_SOCKET"));
    g_unsetenv("NOTIFY_SOCKET");
}

void daemon_notify(const char *state)
{
    if (!notify_path || !*notify_path)
        return;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    gsize n = strlen(notify_path);
    if (n >= sizeof(sun.sun_path) || (notify_path[0] != '/' && notify_path[0] != '@')) {
        FERRY_WARN("NOTIFY_SOCKET '%s' is not a usable socket address", notify_path);
        return;
    }
    memcpy(sun.sun_path, notify_path, n);
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        FERRY_WARN("cannot tell the service manager '%s': %s", state, g_strerror(errno));
        return;
    }
    socklen_t len = (socklen_t)(G_STRUCT_OFFSET(struct sockaddr_un, sun_path) + n);
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, len) < 0)
        FERRY_WARN("cannot tell the service manager '%s' on %s: %s", state, notify_path,
                   g_strerror(errno));
    close(fd);
}

struct DaemonIdleExit {
    gint timeout_s;  /* atomic; 0: never */
    gint restart;    /* atomic: count from now (a new timeout was set) */
    DaemonBusyFunc busy;
    gpointer data;
    GMainLoop *loop;
    gint64 idle_since; /* loop thread only; -1: busy */
    GSource *source;
};

static gboolean idle_check(gpointer p)
{
    DaemonIdleExit *w = p;
    gint64 now = g_get_monotonic_time();
    guint timeout_s = (guint)g_atomic_int_get(&w->timeout_s);
    if (g_atomic_int_compare_and_exchange(&w->restart, 1, 0) || timeout_s == 0 ||
        w->busy(w->data)) {
        w->idle_since = -1;
        return G_SOURCE_CONTINUE;
    }
    if (w->idle_since < 0)
        w->idle_since = now;
    if (now - w->idle_since < (gint64)timeout_s * G_USEC_PER_SEC)
        return G_SOURCE_CONTINUE;
    FERRY_INFO("no client and no running domain for %u s (--timeout): exiting", timeout_s);
    g_main_loop_quit(w->loop);
    return G_SOURCE_REMOVE;
}

DaemonIdleExit *daemon_idle_exit_new(guint timeout_s, DaemonBusyFunc busy, gpointer data,
                                     GMainLoop *loop)
{
    DaemonIdleExit *w = g_new0(DaemonIdleExit, 1);
    *w = (DaemonIdleExit){.timeout_s = (gint)MIN(timeout_s, (guint)G_MAXINT), .busy = busy,
                          .data = data, .loop = loop, .idle_since = -1};
    w->source = g_timeout_source_new_seconds(1);
    g_source_set_callback(w->source, idle_check, w, NULL);
    g_source_attach(w->source, g_main_loop_get_context(loop));
    return w;
}

void daemon_idle_exit_set_timeout(DaemonIdleExit *idle, guint timeout_s)
{
    g_atomic_int_set(&idle->timeout_s, (gint)MIN(timeout_s, (guint)G_MAXINT));
    g_atomic_int_set(&idle->restart, 1);
}

void daemon_idle_exit_free(DaemonIdleExit *idle)
{
    if (!idle)
        return;
    g_source_destroy(idle->source);
    g_source_unref(idle->source);
    g_free(idle);
}
