/* The console relay. A pty is no socket: the tunnel stream could not shut it
 * down to end a pump blocked reading it. So the stream gets one end of a
 * socket pair, and a relay thread copies between the pty and the other end,
 * ending when either side closes. */
#include "driver/qemu/qemu-console.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "qemu.console"

struct QemuConsole {
    TunnelStream *ts;
    GThread *relay;
    int pty_fd;
    int sock_fd; /* the relay's end of the pair */
};

/* Writes all of buf to a non-blocking-free fd; FALSE when the other side is gone. */
static gboolean write_all(int fd, const char *buf, gssize len)
{
    while (len > 0) {
        gssize n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return FALSE;
        buf += n;
        len -= n;
    }
    return TRUE;
}

static gpointer relay_thread(gpointer data)
{
    QemuConsole *c = data;
    char buf[4096];
    struct pollfd fds[2] = {{.fd = c->pty_fd, .events = POLLIN},
                            {.fd = c->sock_fd, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[0].revents) {
            gssize n = read(c->pty_fd, buf, sizeof(buf));
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0 || !write_all(c->sock_fd, buf, n))
                break; /* the guest's pty is gone (QEMU ended) */
        }
        if (fds[1].revents) {
            gssize n = read(c->sock_fd, buf, sizeof(buf));
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0 || !write_all(c->pty_fd, buf, n))
                break; /* the stream ended */
        }
    }
    /* The stream reads end of file and finishes. */
    shutdown(c->sock_fd, SHUT_RDWR);
    return NULL;
}

QemuConsole *qemu_console_open(const char *pty_path, TunnelBinding *binding, GError **error)
{
    int pty = open(pty_path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (pty < 0) {
        ferry_set_error_errno(error, errno, "cannot open the console pty %s", pty_path);
        tunnel_binding_cancel(binding);
        return NULL;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ferry_set_error_errno(error, errno, "cannot create the console socket pair");
        close(pty);
        tunnel_binding_cancel(binding);
        return NULL;
    }
    QemuConsole *c = g_new0(QemuConsole, 1);
    c->pty_fd = pty;
    c->sock_fd = sv[1];
    /* A console is a libvirt client's plain stream: no credit, small packets. */
    TunnelStreamConfig cfg = {.role = TUNNEL_ROLE_SERVER,
                              .packet_size = 4096,
                              .window = 65536,
                              .send_queue_limit = 65536,
                              .peer_name = "console client",
                              .vmm_name = "guest console"};
    c->ts = tunnel_stream_new(tunnel_binding_get_connection(binding),
                              tunnel_binding_get_header(binding), sv[0], &cfg);
    tunnel_binding_attach(binding, c->ts);
    tunnel_stream_start(c->ts);
    c->relay = g_thread_new("qemu-console", relay_thread, c);
    return c;
}

void qemu_console_close(QemuConsole *c)
{
    g_autoptr(GError) why = g_error_new_literal(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                                "the console was closed");
    tunnel_stream_abort(c->ts, why);
    shutdown(c->sock_fd, SHUT_RDWR);
}

gboolean qemu_console_is_over(QemuConsole *c)
{
    return tunnel_stream_is_over(c->ts);
}

void qemu_console_free(QemuConsole *c)
{
    if (!c)
        return;
    qemu_console_close(c);
    g_thread_join(c->relay);
    tunnel_stream_unref(c->ts);
    close(c->sock_fd);
    close(c->pty_fd);
    g_free(c);
}
