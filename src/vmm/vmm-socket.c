/* UNIX socket plumbing of ferry-vmm: listening (with stale-file takeover),
 * cancellable connecting, and the check that an inherited fd can carry a stream. */
#include "vmm/vmm-socket.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/error.h"

static gboolean socket_fill_addr(struct sockaddr_un *addr, const char *path, GError **error)
{
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(addr->sun_path)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "UNIX socket path '%s' is longer than %zu bytes", path,
                    sizeof(addr->sun_path) - 1);
        return FALSE;
    }
    strcpy(addr->sun_path, path);
    return TRUE;
}

/* A socket file nobody listens on is what a killed process leaves behind. */
static gboolean socket_remove_stale(const char *path, const struct sockaddr_un *addr,
                                    GError **error)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return TRUE;
    if (!S_ISSOCK(st.st_mode)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "cannot listen on '%s': the file exists and is not a socket", path);
        return FALSE;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0) {
        ferry_set_error_errno(error, errno, "cannot create socket");
        return FALSE;
    }
    int rc = connect(probe, (const struct sockaddr *)addr, sizeof(*addr));
    int err = errno;
    close(probe);
    if (rc == 0 || err == EAGAIN) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "cannot listen on '%s': another process is listening there", path);
        return FALSE;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "cannot remove stale socket '%s'", path);
        return FALSE;
    }
    return TRUE;
}

int vmm_socket_listen_unix(const char *path, GError **error)
{
    struct sockaddr_un addr;
    if (!socket_fill_addr(&addr, path, error) || !socket_remove_stale(path, &addr, error))
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "cannot create socket");
        return -1;
    }
    if (bind(fd, (const struct sockaddr *)&addr, sizeof(addr)) < 0) {
        ferry_set_error_errno(error, errno, "cannot bind to '%s'", path);
        close(fd);
        return -1;
    }
    if (listen(fd, 16) < 0) {
        ferry_set_error_errno(error, errno, "cannot listen on '%s'", path);
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

int vmm_socket_connect_unix(const char *path, int cancel_fd, GError **error)
{
    struct sockaddr_un addr;
    if (!socket_fill_addr(&addr, path, error))
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "cannot create socket");
        return -1;
    }
    for (;;) {
        if (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) == 0)
            return fd;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN) {
            ferry_set_error_errno(error, errno, "cannot connect to '%s'", path);
            close(fd);
            return -1;
        }
        /* Backlog full: AF_UNIX gives no completion event, so retry on a short tick. */
        struct pollfd p = {.fd = cancel_fd, .events = POLLIN};
        if (poll(&p, cancel_fd >= 0 ? 1 : 0, 10) > 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                        "connecting to '%s' was cancelled", path);
            close(fd);
            return -1;
        }
    }
}

gboolean vmm_socket_check_stream(int fd, GError **error)
{
    int type = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        if (errno == ENOTSOCK)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "migration fd %d is not a socket (the stream needs both directions)", fd);
        else
            ferry_set_error_errno(error, errno, "cannot inspect migration fd %d", fd);
        return FALSE;
    }
    if (type != SOCK_STREAM) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "migration fd %d is not a stream socket", fd);
        return FALSE;
    }
    return TRUE;
}
