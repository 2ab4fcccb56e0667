/* The plain socket transport (TCP and UNIX). */
#include "rpc/rpc-transport.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/rpc-socket.h"
#include "util/error.h"

gboolean rpc_transport_crypto_timing = TRUE;

static gssize socket_read(RpcTransport *t, void *buf, gsize len, GError **error)
{
    for (;;) {
        gssize n = recv(t->fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        int err = rpc_transport_os_error(t, errno);
        ferry_set_error_errno(error, err, "cannot read from %s", t->peer);
        return -1;
    }
}

static gboolean socket_writev(RpcTransport *t, const struct iovec *iov_in, int iovcnt,
                              GError **error)
{
    struct iovec stack_iov[64];
    struct iovec *iov = iovcnt <= 64 ? stack_iov : g_new(struct iovec, iovcnt);
    memcpy(iov, iov_in, sizeof(*iov) * iovcnt);
    struct iovec *cur = iov;
    int left = iovcnt;
    gboolean ok = TRUE;

    while (left > 0) {
        struct msghdr mh = {.msg_iov = cur, .msg_iovlen = MIN(left, 1024)};
        gssize n = sendmsg(t->fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = rpc_transport_os_error(t, errno);
            ferry_set_error_errno(error, err, "cannot write to %s", t->peer);
            ok = FALSE;
            break;
        }
        /* Skip what was written; a partial write leaves the rest of one iovec. */
        while (left > 0 && (gsize)n >= cur->iov_len) {
            n -= cur->iov_len;
            cur++;
            left--;
        }
        if (left > 0) {
            cur->iov_base = (char *)cur->iov_base + n;
            cur->iov_len -= n;
        }
    }
    if (iov != stack_iov)
        g_free(iov);
    return ok;
}

int rpc_transport_os_error(RpcTransport *t, int err)
{
    if (err == EPIPE && !g_atomic_int_get(&t->os_error))
        ferry_os_error_note(&t->os_error, rpc_socket_lost_error(t->fd));
    return ferry_os_error_seen(&t->os_error, err);
}

static void socket_shutdown(RpcTransport *t)
{
    shutdown(t->fd, SHUT_RDWR);
}

static void socket_free(RpcTransport *t)
{
    if (t->fd >= 0)
        close(t->fd);
    g_free(t->peer);
    g_free(t);
}

static const RpcTransportOps socket_ops = {
    .read = socket_read,
    .writev = socket_writev,
    .shutdown = socket_shutdown,
    .free = socket_free,
};

RpcTransport *rpc_transport_new_socket(int fd)
{
    RpcTransport *t = g_new0(RpcTransport, 1);
    rpc_transport_init_socket(t, fd);
    t->ops = &socket_ops;
    return t;
}

void rpc_transport_init_socket(RpcTransport *t, int fd)
{
    t->fd = fd;
    t->peer_uid = -1;
    t->peer_gid = -1;
    t->peer_pid = -1;

    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX) {
        t->is_unix = TRUE;
        t->is_secure = TRUE;
        struct ucred cred;
        socklen_t cl = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0) {
            t->peer_uid = cred.uid;
            t->peer_gid = cred.gid;
            t->peer_pid = cred.pid;
        }
        t->peer = g_strdup_printf("unix peer (pid %" G_GINT64_FORMAT " uid %" G_GINT64_FORMAT ")",
                                  t->peer_pid, t->peer_uid);
    } else if (sl > 0) {
        char host[128] = "?", port[16] = "?";
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV);
        t->peer = ss.ss_family == AF_INET6 ? g_strdup_printf("[%s]:%s", host, port)
                                           : g_strdup_printf("%s:%s", host, port);
    } else {
        t->peer = g_strdup_printf("fd %d", fd);
    }
}

gboolean rpc_transport_write_all(RpcTransport *t, const void *buf, gsize len, GError **error)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return rpc_transport_writev(t, &iov, 1, error);
}

gboolean rpc_transport_read_all(RpcTransport *t, void *buf, gsize len, GError **error)
{
    gsize got = 0;
    while (got < len) {
        gssize n = rpc_transport_read(t, (char *)buf + got, len - got, error);
        if (n < 0)
            return FALSE;
        if (n == 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                        "%s closed the connection after %zu of %zu expected bytes", t->peer, got,
                        len);
            return FALSE;
        }
        got += n;
    }
    return TRUE;
}

void rpc_transport_shutdown(RpcTransport *t)
{
    t->ops->shutdown(t);
}

void rpc_transport_free(RpcTransport *t)
{
    if (t)
        t->ops->free(t);
}
