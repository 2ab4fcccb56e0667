/* The data connection's listener, token check and connect. */
#include "tunnel/tunnel-dataconn.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/rpc-socket.h"
#include "rpc/rpc-transport.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "tunnel.data"

#define MAGIC "FERRYDC1"
#define MAGIC_LEN 8
#define HELLO_LEN (MAGIC_LEN + TUNNEL_DATA_TOKEN_LEN)
#define HELLO_TIMEOUT_MS 5000

struct TunnelDataListener {
    int fd;
    int wake_fd;
    guint16 port;
    char *token;
    char *what;
    gboolean used; /* the token admits one connection only */
};

char *tunnel_data_token_new(void)
{
    guint8 raw[TUNNEL_DATA_TOKEN_LEN / 2];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        for (guint i = 0; i < sizeof(raw); i++)
            raw[i] = (guint8)g_random_int();
    GString *s = g_string_sized_new(TUNNEL_DATA_TOKEN_LEN + 1);
    for (guint i = 0; i < sizeof(raw); i++)
        g_string_append_printf(s, "%02x", raw[i]);
    return g_string_free(s, FALSE);
}

TunnelDataListener *tunnel_data_listener_new(const char *addr, guint port_min, guint port_max,
                                             const char *token, const char *what,
                                             GError **error)
{
    g_autoptr(GError) last = NULL;
    for (guint port = port_min; port <= port_max; port++) {
        g_clear_error(&last);
        guint16 bound = 0;
        int fd = rpc_socket_listen_tcp(addr, (guint16)port, &bound, &last);
        if (fd < 0)
            continue;
        TunnelDataListener *l = g_new0(TunnelDataListener, 1);
        l->fd = fd;
        l->port = bound;
        l->wake_fd = eventfd(0, EFD_CLOEXEC);
        l->token = g_strdup(token);
        l->what = g_strdup(what);
        return l;
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                "no free port for the migration data connection in %u-%u on %s%s%s", port_min,
                port_max, addr, last ? ": " : "", last ? last->message : "");
    return NULL;
}

guint16 tunnel_data_listener_get_port(TunnelDataListener *l)
{
    return l->port;
}

/* Reads exactly len bytes within the deadline. */
static gboolean read_with_deadline(int fd, guint8 *buf, gsize len, gint64 deadline_us)
{
    gsize got = 0;
    while (got < len) {
        gint64 left_ms = (deadline_us - g_get_monotonic_time()) / 1000;
        if (left_ms <= 0)
            return FALSE;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return FALSE;
        gssize n = recv(fd, buf + got, len - got, 0);
        if (n <= 0)
            return FALSE;
        got += n;
    }
    return TRUE;
}

static gboolean token_matches(const guint8 *hello, const char *token)
{
    if (memcmp(hello, MAGIC, MAGIC_LEN) != 0)
        return FALSE;
    /* Constant time: the comparison does not tell how much was right. */
    guint8 diff = 0;
    for (int i = 0; i < TUNNEL_DATA_TOKEN_LEN; i++)
        diff |= hello[MAGIC_LEN + i] ^ (guint8)token[i];
    return diff == 0;
}

int tunnel_data_listener_accept(TunnelDataListener *l, gint64 deadline_us, GError **error)
{
    for (;;) {
        gint64 left_ms = (deadline_us - g_get_monotonic_time()) / 1000;
        if (left_ms <= 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                        "the source did not open the data connection for %s on port %u",
                        l->what, l->port);
            return -1;
        }
        struct pollfd p[2] = {{.fd = l->fd, .events = POLLIN}, {.fd = l->wake_fd, .events = POLLIN}};
        int r = poll(p, 2, (int)MIN(left_ms, 1000));
        if (r < 0 && errno != EINTR) {
            ferry_set_error_errno(error, errno, "cannot wait for the data connection");
            return -1;
        }
        if (p[1].revents) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                        "waiting for the data connection of %s was canceled", l->what);
            return -1;
        }
        if (r <= 0 || !(p[0].revents & POLLIN))
            continue;
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        RpcTransport *t = rpc_transport_new_socket(fd); /* for the peer's name */
        guint8 hello[HELLO_LEN];
        gint64 hello_deadline = MIN(deadline_us, g_get_monotonic_time() + HELLO_TIMEOUT_MS * 1000);
        gboolean valid = read_with_deadline(fd, hello, sizeof(hello), hello_deadline) &&
                         token_matches(hello, l->token);
        if (valid && !l->used) {
            guint8 ok = 1;
            if (send(fd, &ok, 1, MSG_NOSIGNAL) == 1) {
                l->used = TRUE;
                FERRY_INFO("data connection for %s from %s accepted", l->what, t->peer);
                t->fd = -1; /* keep the socket */
                rpc_transport_free(t);
                return fd;
            }
        }
        FERRY_WARN("refused a connection from %s on port %u: %s", t->peer, l->port,
                   valid ? "the token of this migration was used already"
                         : "it does not carry the token of this migration");
        rpc_transport_free(t);
    }
}

void tunnel_data_listener_cancel(TunnelDataListener *l)
{
    guint64 one = 1;
    if (write(l->wake_fd, &one, sizeof(one)) < 0)
        FERRY_DEBUG("cannot wake the data listener: %s", g_strerror(errno));
}

void tunnel_data_listener_free(TunnelDataListener *l)
{
    if (!l)
        return;
    close(l->fd);
    close(l->wake_fd);
    g_free(l->token);
    g_free(l->what);
    g_free(l);
}

int tunnel_data_connect(const char *host, guint16 port, const char *token, int timeout_ms,
                        GError **error)
{
    int fd = rpc_socket_connect_tcp(host, port, timeout_ms, error);
    if (fd < 0) {
        g_prefix_error(error, "cannot open the migration data connection: ");
        return -1;
    }
    guint8 hello[HELLO_LEN];
    memcpy(hello, MAGIC, MAGIC_LEN);
    memcpy(hello + MAGIC_LEN, token, TUNNEL_DATA_TOKEN_LEN);
    guint8 ok = 0;
    if (send(fd, hello, sizeof(hello), MSG_NOSIGNAL) != (ssize_t)sizeof(hello) ||
        !read_with_deadline(fd, &ok, 1, g_get_monotonic_time() + timeout_ms * 1000LL) ||
        ok != 1) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the destination at %s:%u refused the migration data connection", host, port);
        close(fd);
        return -1;
    }
    return fd;
}
