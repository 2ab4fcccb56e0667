/* Socket creation for listeners and clients, with errors that name the address. */
#include "rpc/rpc-socket.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
/* The kernel's own header: glibc's struct tcp_info stops before
 * tcpi_snd_wnd (the peer's advertised window, Linux 5.4). */
#include <linux/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/error.h"

/* TCP states as tcpi_state reports them (the kernel's header has no names). */
enum { TCP_STATE_ESTABLISHED = 1, TCP_STATE_CLOSE = 7 };

static RpcTcpLiveness liveness; /* set once at start */

void rpc_socket_set_tcp_liveness(const RpcTcpLiveness *l)
{
    liveness = *l;
}

static void set_int(int fd, int level, int name, int value)
{
    /* Best effort: a kernel without the option keeps its defaults. */
    setsockopt(fd, level, name, &value, sizeof(value));
}

static gboolean is_tcp(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    return getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
           (ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
}

/* peer: a connection between daemons, where unacknowledged data for
 * user_timeout_s means a dead path. Not a client's: the kernel also counts
 * a zero window as unacknowledged, and a client may stop reading for a
 * while (it is dropped by keepalive or the send-queue limit then). */
static void tune_tcp(int fd, gboolean peer)
{
    /* RPC calls are small and latency-bound; streams batch their own writes. */
    set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    if (peer && liveness.user_timeout_s)
        set_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, (int)MIN(liveness.user_timeout_s, 2000000u) * 1000);
    if (liveness.keepalive_idle_s) {
        set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
        set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, (int)liveness.keepalive_idle_s);
        if (liveness.keepalive_interval_s)
            set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, (int)liveness.keepalive_interval_s);
        if (liveness.keepalive_count)
            set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, (int)liveness.keepalive_count);
    }
}

void rpc_socket_tune_accepted(int fd)
{
    if (is_tcp(fd))
        tune_tcp(fd, FALSE);
}

void rpc_socket_tune_peer(int fd)
{
    if (is_tcp(fd))
        tune_tcp(fd, TRUE);
}

/* The connection's TCP state, and its user timeout (0: none); FALSE when
 * not TCP. A kernel before 5.4 has no tcpi_snd_wnd: G_MAXUINT32 then. */
static gboolean tcp_info_of(int fd, struct tcp_info *ti, int *user_timeout_ms)
{
    socklen_t sl = sizeof(*ti);
    memset(ti, 0, sizeof(*ti));
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &sl) < 0 ||
        sl < offsetof(struct tcp_info, tcpi_last_ack_recv) + sizeof(ti->tcpi_last_ack_recv))
        return FALSE;
    if (sl < offsetof(struct tcp_info, tcpi_snd_wnd) + sizeof(ti->tcpi_snd_wnd))
        ti->tcpi_snd_wnd = G_MAXUINT32;
    socklen_t ul = sizeof(*user_timeout_ms);
    if (getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, user_timeout_ms, &ul) < 0 ||
        *user_timeout_ms < 0)
        *user_timeout_ms = 0;
    return TRUE;
}

/* Closed by the user timeout on a zero window: the peer advertised no room
 * (what waits is unsent: everything sent was acknowledged, nothing is
 * retransmitted), and its host answered a probe within the user timeout
 * (their answers are rate-limited, so not necessarily the last one); a
 * path that died under a zero window answered nothing for that long.
 * Without a user timeout the kernel probes a zero window for ever. */
static gboolean zero_window_timeout(const struct tcp_info *ti, int user_timeout_ms)
{
    return ti->tcpi_state == TCP_STATE_CLOSE && user_timeout_ms > 0 && !ti->tcpi_retransmits &&
           !ti->tcpi_unacked && ti->tcpi_snd_wnd == 0 &&
           ti->tcpi_last_ack_recv < (guint32)user_timeout_ms;
}

int rpc_socket_lost_error(int fd)
{
    struct tcp_info ti;
    int user_timeout_ms = 0;
    if (!tcp_info_of(fd, &ti, &user_timeout_ms) || ti.tcpi_state != TCP_STATE_CLOSE)
        return 0;
    if (zero_window_timeout(&ti, user_timeout_ms))
        return ETIMEDOUT;
    if (!ti.tcpi_retransmits && !ti.tcpi_probes)
        return 0;
    /* A reset that came while a segment was being retransmitted leaves the
     * same state: only a silence as long as the user timeout is one. */
    guint32 silent_ms = MAX(1000u, (guint32)user_timeout_ms / 2);
    return ti.tcpi_last_ack_recv >= silent_ms ? ETIMEDOUT : 0;
}

gboolean rpc_socket_reset_before_our_end(int fd)
{
    struct tcp_info ti;
    int user_timeout_ms = 0;
    return tcp_info_of(fd, &ti, &user_timeout_ms) && ti.tcpi_state == TCP_STATE_CLOSE;
}

gboolean rpc_socket_peer_host_answers(int fd, guint within_ms)
{
    struct tcp_info ti;
    int user_timeout_ms = 0;
    return tcp_info_of(fd, &ti, &user_timeout_ms) && ti.tcpi_state == TCP_STATE_ESTABLISHED &&
           ti.tcpi_last_ack_recv < within_ms;
}

gboolean rpc_socket_timed_out_on_zero_window(int fd)
{
    struct tcp_info ti;
    int user_timeout_ms = 0;
    return tcp_info_of(fd, &ti, &user_timeout_ms) && zero_window_timeout(&ti, user_timeout_ms);
}

int rpc_socket_listen_tcp(const char *addr, guint16 port, guint16 *bound_port, GError **error)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    g_snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(addr && *addr ? addr : NULL, portstr, &hints, &res);
    if (rc != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                    "cannot resolve listen address '%s': %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "cannot create a socket for %s:%u", addr, port);
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 128) < 0) {
        ferry_set_error_errno(error, errno, "cannot listen on %s:%u", addr, port);
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    if (bound_port) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        *bound_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                               : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

static gboolean fill_sockaddr_un(struct sockaddr_un *sun, const char *path, GError **error)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun->sun_path)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "UNIX socket path '%s' is longer than %zu bytes", path,
                    sizeof(sun->sun_path) - 1);
        return FALSE;
    }
    strcpy(sun->sun_path, path);
    return TRUE;
}

int rpc_socket_listen_unix(const char *path, guint mode, GError **error)
{
    struct sockaddr_un sun;
    if (!fill_sockaddr_un(&sun, path, error))
        return -1;

    g_autofree char *dir = g_path_get_dirname(path);
    if (g_mkdir_with_parents(dir, 0755) < 0) {
        ferry_set_error_errno(error, errno, "cannot create socket directory %s", dir);
        return -1;
    }

    /* A socket file that answers belongs to a live daemon: never steal it. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        if (connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
            close(probe);
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "another daemon is already listening on %s", path);
            return -1;
        }
        close(probe);
    }
    /* Bind and listen under a temporary name, then rename into place: the
     * path appears only once a client can connect to it. */
    g_autofree char *tmp = g_strdup_printf("%s.%d.tmp", path, (int)getpid());
    struct sockaddr_un tmp_sun;
    if (!fill_sockaddr_un(&tmp_sun, tmp, error))
        return -1;
    unlink(tmp);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "cannot create a UNIX socket for %s", path);
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&tmp_sun, sizeof(tmp_sun)) < 0 || listen(fd, 128) < 0) {
        ferry_set_error_errno(error, errno, "cannot listen on %s", path);
        close(fd);
        unlink(tmp);
        return -1;
    }
    if (chmod(tmp, mode) < 0 || rename(tmp, path) < 0) {
        ferry_set_error_errno(error, errno, "cannot put socket %s in place", path);
        close(fd);
        unlink(tmp);
        return -1;
    }
    return fd;
}

int rpc_socket_connect_tcp(const char *host, guint16 port, int timeout_ms, GError **error)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    g_snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "unable to resolve '%s': %s",
                    host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    int last_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            last_errno = errno;
            close(fd);
            fd = -1;
            continue;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int pr;
        do {
            pr = poll(&pfd, 1, timeout_ms > 0 ? timeout_ms : -1);
        } while (pr < 0 && errno == EINTR);
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (pr == 0)
            soerr = ETIMEDOUT;
        else
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr != 0) {
            last_errno = soerr;
            close(fd);
            fd = -1;
            continue;
        }
        /* Back to blocking: each connection has its own reader and writer threads. */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        tune_tcp(fd, TRUE);
        break;
    }
    freeaddrinfo(res);
    if (fd < 0)
        ferry_set_error_errno(error, last_errno ? last_errno : ECONNREFUSED,
                              "unable to connect to server at '%s:%u'", host, port);
    return fd;
}

int rpc_socket_connect_unix_until(const char *path, gint64 deadline_us, int *errnum)
{
    struct sockaddr_un sun;
    if (!fill_sockaddr_un(&sun, path, NULL)) {
        *errnum = ENAMETOOLONG;
        return -1;
    }
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            *errnum = errno;
            return -1;
        }
        if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
            return fd;
        int err = errno;
        close(fd);
        /* No socket yet, or no listener behind it: the process is still starting. */
        gboolean retry = err == ENOENT || err == ECONNREFUSED || err == EAGAIN || err == EINTR;
        if (!retry || g_get_monotonic_time() >= deadline_us) {
            *errnum = err;
            return -1;
        }
        g_usleep(20 * 1000);
    }
}

int rpc_socket_connect_unix(const char *path, GError **error)
{
    struct sockaddr_un sun;
    if (!fill_sockaddr_un(&sun, path, error))
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "cannot create a UNIX socket");
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        ferry_set_error_errno(error, errno, "failed to connect to socket '%s'", path);
        close(fd);
        return -1;
    }
    return fd;
}
