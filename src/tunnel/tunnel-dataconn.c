/* The data connection's listener, token check and connect. */
#include "tunnel/tunnel-dataconn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
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
    RpcTlsContext *tls;
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
                                             const char *token, RpcTlsContext *tls,
                                             const char *what, GError **error)
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
        l->tls = tls ? rpc_tls_context_ref(tls) : NULL;
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

static void set_timeouts(int fd, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* The hello of one connection: TLS first if asked, then the token. Returns
 * the transport, or NULL with why it was refused. */
static RpcTransport *check_connection(TunnelDataListener *l, int fd, const char **why)
{
    /* A stranger must not hold the listener: bound every read and write. */
    set_timeouts(fd, HELLO_TIMEOUT_MS);
    RpcTransport *t = NULL;
    if (l->tls) {
        g_autoptr(GError) e = NULL;
        t = rpc_tls_server_handshake(l->tls, fd, &e);
        if (!t) {
            *why = "no valid TLS session";
            FERRY_DEBUG("data connection TLS handshake failed: %s", e->message);
            return NULL;
        }
    } else {
        t = rpc_transport_new_socket(fd);
    }
    guint8 hello[HELLO_LEN];
    gboolean valid = rpc_transport_read_all(t, hello, sizeof(hello), NULL) &&
                     token_matches(hello, l->token);
    if (!valid || l->used) {
        *why = valid ? "the token of this migration was used already"
                     : "it does not carry the token of this migration";
        rpc_transport_free(t);
        return NULL;
    }
    static const guint8 ok = 1;
    if (!rpc_transport_write_all(t, &ok, 1, NULL)) {
        *why = "it went away during the hello";
        rpc_transport_free(t);
        return NULL;
    }
    set_timeouts(fd, 0);
    return t;
}

RpcTransport *tunnel_data_listener_accept(TunnelDataListener *l, gint64 deadline_us,
                                          GError **error)
{
    for (;;) {
        gint64 left_ms = (deadline_us - g_get_monotonic_time()) / 1000;
        if (left_ms <= 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                        "the source did not open the data connection for %s on port %u",
                        l->what, l->port);
            return NULL;
        }
        struct pollfd p[2] = {{.fd = l->fd, .events = POLLIN}, {.fd = l->wake_fd, .events = POLLIN}};
        int r = poll(p, 2, (int)MIN(left_ms, 1000));
        if (r < 0 && errno != EINTR) {
            ferry_set_error_errno(error, errno, "cannot wait for the data connection");
            return NULL;
        }
        if (p[1].revents) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                        "waiting for the data connection of %s was canceled", l->what);
            return NULL;
        }
        if (r <= 0 || !(p[0].revents & POLLIN))
            continue;
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int one = 1; /* replies are small and awaited: never hold them back */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        RpcTransport *named = rpc_transport_new_socket(dup(fd)); /* for the peer's name */
        g_autofree char *peer = g_strdup(named->peer);
        rpc_transport_free(named);
        const char *why = NULL;
        RpcTransport *t = check_connection(l, fd, &why);
        if (t) {
            l->used = TRUE;
            FERRY_INFO("data connection for %s from %s accepted%s", l->what, peer,
                       l->tls ? " (TLS)" : "");
            return t;
        }
        FERRY_WARN_LIMITED("refused a connection from %s on port %u: %s", peer, l->port, why);
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
    rpc_tls_context_unref(l->tls);
    g_free(l->token);
    g_free(l->what);
    g_free(l);
}

RpcTransport *tunnel_data_connect(const char *host, guint16 port, const char *token, gboolean tls,
                                  const char *pkipath, int timeout_ms, GError **error)
{
    g_autoptr(RpcTlsContext) ctx = NULL;
    if (tls) {
        g_autofree char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL;
        rpc_tls_client_locate_files(pkipath, &ca, &crl, &cert, &key);
        RpcTlsConfig cfg = {.ca_file = ca, .crl_file = crl, .cert_file = cert, .key_file = key,
                            .verify_peer = TRUE, .handshake_timeout_ms = (guint)timeout_ms};
        ctx = rpc_tls_context_new_client(&cfg, error);
        if (!ctx) {
            g_prefix_error(error, "cannot set up TLS for the migration data connection: ");
            return NULL;
        }
    }
    int fd = rpc_socket_connect_tcp(host, port, timeout_ms, error);
    if (fd < 0) {
        g_prefix_error(error, "cannot open the migration data connection: ");
        return NULL;
    }
    RpcTransport *t = tls ? rpc_tls_client_handshake(ctx, fd, host, error)
                          : rpc_transport_new_socket(fd);
    if (!t) {
        g_prefix_error(error, "TLS on the migration data connection to %s:%u failed: ", host,
                       port);
        return NULL;
    }
    set_timeouts(t->fd, timeout_ms);
    guint8 hello[HELLO_LEN];
    memcpy(hello, MAGIC, MAGIC_LEN);
    memcpy(hello + MAGIC_LEN, token, TUNNEL_DATA_TOKEN_LEN);
    guint8 ok = 0;
    if (!rpc_transport_write_all(t, hello, sizeof(hello), NULL) ||
        !rpc_transport_read_all(t, &ok, 1, NULL) || ok != 1) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the destination at %s:%u refused the migration data connection", host, port);
        rpc_transport_free(t);
        return NULL;
    }
    set_timeouts(t->fd, 0);
    return t;
}
