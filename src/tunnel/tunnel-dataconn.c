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
/* Channel i >= 1 of a migration: this magic, the token, i (4 bytes, big endian). */
#define MAGIC_CHANNEL "FERRYDC2"
/* A broken data connection coming back: this magic, the resume token, the
 * bytes the source took from the network so far (8 bytes, big endian); the
 * answer is 0x01 and the destination's count, or 0x00. */
#define MAGIC_RESUME "FERRYDR1"
#define MAGIC_LEN 8
#define HELLO_LEN (MAGIC_LEN + TUNNEL_DATA_TOKEN_LEN)
#define INDEX_LEN 4
/* The whole hello of one connection (TLS handshake, token, answer) must be
 * done within this; a connection still talking then is cut off. */
#define HELLO_DEADLINE_US (5 * G_USEC_PER_SEC)
/* Connections checked at once; more wait in the kernel's accept queue. */
#define MAX_PENDING 16

struct TunnelDataListener {
    int fd;
    int wake_fd;
    guint16 port;
    char *token;
    char *resume_token; /* admits resume hellos, any number of them (NULL: none) */
    char *what;
    RpcTlsContext *tls;

    GMutex lock;
    /* The token admits one connection: it is spent the first time a
     * connection presents it, even if that connection then fails, so a copy
     * seen on the wire can never be replayed. */
    guint64 used;       /* bit i: channel i's connection came */
    guint n_channels;   /* the token admits channels 0 .. n_channels - 1 */
    GAsyncQueue *done; /* Pending, from the checker threads */
    int done_fd;       /* eventfd: something is in `done` */
    /* Pending: connections in their hello. They outlive one accept call: a
     * migration's channels connect one right after the other, and the
     * second's hello must not be cut off because the first one's ended. */
    GPtrArray *pending;
};

/* One connection in its hello, checked by a thread of its own so that no
 * connection can hold up another (a stranger trickling bytes, say). */
typedef struct {
    TunnelDataListener *listener;
    int fd; /* closed by the accept loop, never by the checker */
    char *peer;
    gint64 deadline_us;
    gboolean cut; /* the accept loop shut it down (deadline or exit) */
    GThread *thread;
    /* results, written by the checker before it queues itself */
    RpcTransport *transport; /* on success; or what to free on failure */
    const char *why;         /* refusal */
    guint index;             /* the channel it claims */
    gboolean resume;         /* a resume hello: unanswered yet */
    guint64 theirs;          /* its count of bytes received */
} Pending;

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
        l->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        l->done = g_async_queue_new();
        l->pending = g_ptr_array_new();
        g_mutex_init(&l->lock);
        l->token = g_strdup(token);
        l->n_channels = 1;
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

void tunnel_data_listener_set_channels(TunnelDataListener *l, guint n)
{
    l->n_channels = CLAMP(n, 1, 64);
}

void tunnel_data_listener_set_resume_token(TunnelDataListener *l, const char *token)
{
    g_free(l->resume_token);
    l->resume_token = g_strdup(token);
}

static gboolean token_matches(const guint8 *hello, const char *token)
{
    if (!token || strlen(token) != TUNNEL_DATA_TOKEN_LEN)
        return FALSE;
    if (memcmp(hello, MAGIC, MAGIC_LEN) != 0 && memcmp(hello, MAGIC_CHANNEL, MAGIC_LEN) != 0 &&
        memcmp(hello, MAGIC_RESUME, MAGIC_LEN) != 0)
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

/* The hello of one connection: TLS first if asked, then the token. Fills
 * p->transport on success, p->why otherwise. Blocking reads end at the
 * deadline: the accept loop shuts the socket down then. */
static void check_connection(Pending *p)
{
    TunnelDataListener *l = p->listener;
    /* The transport gets a copy of the socket: p->fd stays ours to shut
     * down and close whatever happens here. */
    int fd = dup(p->fd);
    if (l->tls) {
        g_autoptr(GError) e = NULL;
        p->transport = rpc_tls_server_handshake(l->tls, fd, &e);
        if (!p->transport) {
            close(fd); /* a failed handshake leaves the socket to us */
            p->why = "no valid TLS session";
            FERRY_DEBUG("data connection TLS handshake with %s failed: %s", p->peer, e->message);
            return;
        }
    } else {
        p->transport = rpc_transport_new_socket(fd);
    }
    guint8 hello[HELLO_LEN];
    if (!rpc_transport_read_all(p->transport, hello, sizeof(hello), NULL)) {
        p->why = "it does not carry the token of this migration";
        return;
    }
    if (memcmp(hello, MAGIC_RESUME, MAGIC_LEN) == 0) {
        /* Answered by whoever takes it: the answer says where its relay stands. */
        guint8 pos[8];
        if (!l->resume_token || !token_matches(hello, l->resume_token) ||
            !rpc_transport_read_all(p->transport, pos, sizeof(pos), NULL)) {
            p->why = "it does not carry the resume token of this migration";
            return;
        }
        p->resume = TRUE;
        for (int i = 0; i < 8; i++)
            p->theirs = p->theirs << 8 | pos[i];
        return;
    }
    gboolean valid = token_matches(hello, l->token);
    if (valid && memcmp(hello, MAGIC_CHANNEL, MAGIC_LEN) == 0) {
        guint8 idx[INDEX_LEN];
        valid = rpc_transport_read_all(p->transport, idx, sizeof(idx), NULL);
        p->index = (guint)idx[0] << 24 | (guint)idx[1] << 16 | (guint)idx[2] << 8 | idx[3];
        valid = valid && p->index >= 1;
    }
    g_mutex_lock(&l->lock);
    gboolean in_range = valid && p->index < l->n_channels;
    gboolean first = in_range && !(l->used & (G_GUINT64_CONSTANT(1) << p->index));
    if (in_range)
        l->used |= G_GUINT64_CONSTANT(1) << p->index;
    g_mutex_unlock(&l->lock);
    if (!first) {
        p->why = !valid      ? "it does not carry the token of this migration"
                 : !in_range ? "it names a channel this migration does not have"
                             : "the token of this migration was used already";
        return;
    }
    static const guint8 ok = 1;
    if (!rpc_transport_write_all(p->transport, &ok, 1, NULL)) {
        p->why = "it went away during the hello";
        return;
    }
}

static gpointer checker_thread(gpointer data)
{
    Pending *p = data;
    check_connection(p);
    g_async_queue_push(p->listener->done, p);
    guint64 one = 1;
    if (write(p->listener->done_fd, &one, sizeof(one)) < 0)
        FERRY_DEBUG("cannot wake the data listener: %s", g_strerror(errno));
    return NULL;
}

static void pending_free(Pending *p)
{
    if (p->thread)
        g_thread_join(p->thread);
    if (p->transport)
        rpc_transport_free(p->transport);
    if (p->fd >= 0)
        close(p->fd);
    g_free(p->peer);
    g_free(p);
}

/* A new connection: its own checker, or refused at once when too many are
 * being checked (or no thread can be made). */
static void start_check(TunnelDataListener *l, int fd)
{
    GPtrArray *pending = l->pending;
    /* Replies are small and awaited (TCP_NODELAY); a dead peer or path is
     * noticed by the connection itself (the daemon's TCP liveness). */
    rpc_socket_tune_peer(fd);
    RpcTransport named = {0};
    rpc_transport_init_socket(&named, fd);
    Pending *p = g_new0(Pending, 1);
    p->listener = l;
    p->fd = fd;
    p->peer = g_steal_pointer(&named.peer);
    p->deadline_us = g_get_monotonic_time() + HELLO_DEADLINE_US;
    if (pending->len >= MAX_PENDING) {
        FERRY_WARN_LIMITED(
            "refused a connection from %s on port %u: %u connections are in their hello "
            "already",
            p->peer, l->port, pending->len);
        pending_free(p);
        return;
    }
    g_autoptr(GError) e = NULL;
    p->thread = g_thread_try_new("data-hello", checker_thread, p, &e);
    if (!p->thread) {
        FERRY_WARN_LIMITED("refused a connection from %s on port %u: %s", p->peer, l->port,
                           e->message);
        pending_free(p);
        return;
    }
    g_ptr_array_add(pending, p);
}

/* A checker is done: the transport on success, else NULL (refusal logged). */
static RpcTransport *finish_check(TunnelDataListener *l, Pending *p)
{
    g_ptr_array_remove_fast(l->pending, p);
    RpcTransport *t = NULL;
    if (!p->why) {
        t = g_steal_pointer(&p->transport);
        if (p->resume)
            FERRY_INFO("data connection for %s from %s: the source resumes (it received %"
                       G_GUINT64_FORMAT " bytes)", l->what, p->peer, p->theirs);
        else
            FERRY_INFO("data connection for %s from %s accepted%s (channel %u)", l->what, p->peer,
                       l->tls ? " (TLS)" : "", p->index);
    } else {
        FERRY_WARN_LIMITED("refused a connection from %s on port %u: %s", p->peer, l->port,
                           p->cut ? "it did not finish its hello in time" : p->why);
    }
    pending_free(p);
    return t;
}

RpcTransport *tunnel_data_listener_accept(TunnelDataListener *l, gint64 deadline_us, GError **error)
{
    return tunnel_data_listener_accept_channel(l, deadline_us, NULL, error);
}

static RpcTransport *accept_any(TunnelDataListener *l, gint64 deadline_us, guint *index,
                                gboolean *resume, guint64 *theirs, GError **error);

RpcTransport *tunnel_data_listener_accept_channel(TunnelDataListener *l, gint64 deadline_us,
                                                  guint *index, GError **error)
{
    for (;;) {
        gboolean resume = FALSE;
        guint64 theirs = 0;
        RpcTransport *t = accept_any(l, deadline_us, index, &resume, &theirs, error);
        if (!t || !resume)
            return t;
        /* Nothing to resume before the channels are open. */
        tunnel_data_resume_answer(t, FALSE, 0);
        rpc_transport_free(t);
    }
}

RpcTransport *tunnel_data_listener_accept_resume(TunnelDataListener *l, gint64 deadline_us,
                                                 gboolean *resume, guint64 *theirs,
                                                 GError **error)
{
    return accept_any(l, deadline_us, NULL, resume, theirs, error);
}

/* Cuts off every hello still going on, and waits for their checkers. */
static void cut_pending(TunnelDataListener *l)
{
    for (guint i = 0; i < l->pending->len; i++) {
        Pending *p = l->pending->pdata[i];
        p->cut = TRUE;
        shutdown(p->fd, SHUT_RDWR);
    }
    while (l->pending->len > 0) {
        Pending *p = g_async_queue_pop(l->done);
        /* A channel whose hello ended meanwhile: nobody will take it now. */
        rpc_transport_free(finish_check(l, p));
    }
}

static RpcTransport *accept_any(TunnelDataListener *l, gint64 deadline_us, guint *index,
                                gboolean *resume, guint64 *theirs, GError **error)
{
    GPtrArray *pending = l->pending;
    RpcTransport *accepted = NULL;
    for (;;) {
        /* A hello that ended, maybe during an earlier call. */
        Pending *done;
        while (!accepted && (done = g_async_queue_try_pop(l->done))) {
            if (index)
                *index = done->index;
            *resume = done->resume && !done->why;
            *theirs = done->theirs;
            accepted = finish_check(l, done);
        }
        if (accepted)
            return accepted;
        gint64 now = g_get_monotonic_time();
        /* Cut off every hello past its deadline: its checker returns soon. */
        gint64 next = deadline_us;
        for (guint i = 0; i < pending->len; i++) {
            Pending *p = pending->pdata[i];
            if (!p->cut && now >= p->deadline_us) {
                p->cut = TRUE;
                shutdown(p->fd, SHUT_RDWR);
            }
            if (!p->cut)
                next = MIN(next, p->deadline_us);
        }
        if (now >= deadline_us) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                        "the source did not open the data connection for %s on port %u", l->what,
                        l->port);
            break;
        }
        struct pollfd pf[3] = {{.fd = l->fd, .events = POLLIN},
                               {.fd = l->wake_fd, .events = POLLIN},
                               {.fd = l->done_fd, .events = POLLIN}};
        gint64 wait_ms = (next - now + 999) / 1000;
        int r = poll(pf, 3, (int)MIN(wait_ms, 1000));
        if (r < 0 && errno != EINTR) {
            ferry_set_error_errno(error, errno, "cannot wait for the data connection");
            break;
        }
        if (pf[1].revents) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                        "waiting for the data connection of %s was canceled", l->what);
            break;
        }
        if (pf[2].revents) {
            guint64 count;
            if (read(l->done_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
                FERRY_DEBUG("cannot read the data listener's event: %s", g_strerror(errno));
        }
        if (r > 0 && (pf[0].revents & POLLIN)) {
            int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                start_check(l, fd);
        }
    }
    /* No channel comes now: whoever is still in its hello is refused. */
    cut_pending(l);
    return NULL;
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
    cut_pending(l);
    g_ptr_array_unref(l->pending);
    close(l->fd);
    close(l->wake_fd);
    close(l->done_fd);
    g_async_queue_unref(l->done);
    g_mutex_clear(&l->lock);
    rpc_tls_context_unref(l->tls);
    g_free(l->token);
    g_free(l->resume_token);
    g_free(l->what);
    g_free(l);
}

RpcTransport *tunnel_data_connect(const char *host, guint16 port, const char *token, gboolean tls,
                                  const char *pkipath, int timeout_ms, GError **error)
{
    return tunnel_data_connect_channel(host, port, token, 0, tls, pkipath, timeout_ms, error);
}

/* The TLS client side of a data connection: the certificates in pkipath
 * (libvirt's client locations when NULL), the peer's verified. */
static RpcTlsContext *client_tls_context(const char *pkipath, int timeout_ms, GError **error)
{
    g_autofree char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL;
    rpc_tls_client_locate_files(pkipath, &ca, &crl, &cert, &key);
    RpcTlsConfig cfg = {.ca_file = ca,
                        .crl_file = crl,
                        .cert_file = cert,
                        .key_file = key,
                        .verify_peer = TRUE,
                        .handshake_timeout_ms = (guint)timeout_ms};
    RpcTlsContext *ctx = rpc_tls_context_new_client(&cfg, error);
    if (!ctx)
        g_prefix_error(error, "cannot set up TLS for the migration data connection: ");
    return ctx;
}

RpcTransport *tunnel_data_connect_channel(const char *host, guint16 port, const char *token,
                                          guint index, gboolean tls, const char *pkipath,
                                          int timeout_ms, GError **error)
{
    g_autoptr(RpcTlsContext) ctx = NULL;
    if (tls && !(ctx = client_tls_context(pkipath, timeout_ms, error)))
        return NULL;
    int fd = rpc_socket_connect_tcp(host, port, timeout_ms, error);
    if (fd < 0) {
        g_prefix_error(error, "cannot open the migration data connection: ");
        return NULL;
    }
    RpcTransport *t =
        tls ? rpc_tls_client_handshake(ctx, fd, host, error) : rpc_transport_new_socket(fd);
    if (!t) {
        close(fd); /* a failed handshake leaves the socket to us */
        g_prefix_error(error, "TLS on the migration data connection to %s:%u failed: ", host, port);
        return NULL;
    }
    set_timeouts(t->fd, timeout_ms);
    guint8 hello[HELLO_LEN + INDEX_LEN];
    memcpy(hello, index ? MAGIC_CHANNEL : MAGIC, MAGIC_LEN);
    memcpy(hello + MAGIC_LEN, token, TUNNEL_DATA_TOKEN_LEN);
    hello[HELLO_LEN] = (guint8)(index >> 24);
    hello[HELLO_LEN + 1] = (guint8)(index >> 16);
    hello[HELLO_LEN + 2] = (guint8)(index >> 8);
    hello[HELLO_LEN + 3] = (guint8)index;
    guint8 ok = 0;
    if (!rpc_transport_write_all(t, hello, index ? sizeof(hello) : HELLO_LEN, NULL) ||
        !rpc_transport_read_all(t, &ok, 1, NULL) || ok != 1) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the destination at %s:%u refused the migration data connection", host, port);
        rpc_transport_free(t);
        return NULL;
    }
    set_timeouts(t->fd, 0);
    return t;
}

void tunnel_data_resume_answer(RpcTransport *t, gboolean ok, guint64 ours)
{
    guint8 answer[9] = {ok ? 1 : 0};
    for (int i = 0; i < 8; i++)
        answer[1 + i] = (guint8)(ours >> (56 - 8 * i));
    set_timeouts(t->fd, HELLO_DEADLINE_US / 1000);
    if (!rpc_transport_write_all(t, answer, ok ? sizeof(answer) : 1, NULL))
        FERRY_DEBUG("the resuming source went away before its answer");
    set_timeouts(t->fd, 0);
}

RpcTransport *tunnel_data_resume_connect(const char *host, guint16 port, const char *token,
                                         gboolean tls, const char *pkipath, guint64 ours,
                                         guint64 *theirs, int timeout_ms, GError **error)
{
    g_autoptr(RpcTlsContext) ctx = NULL;
    if (tls && !(ctx = client_tls_context(pkipath, timeout_ms, error))) {
        /* Our own files: no new attempt cures them. */
        if (error && *error)
            (*error)->code = FERRY_ERR_OPERATION_DENIED;
        return NULL;
    }
    int fd = rpc_socket_connect_tcp(host, port, timeout_ms, error);
    if (fd < 0) {
        g_prefix_error(error, "cannot open a new data connection: ");
        return NULL;
    }
    RpcTransport *t = NULL;
    if (tls) {
        g_autoptr(GError) he = NULL;
        t = rpc_tls_client_handshake(ctx, fd, host, &he);
        if (!t) {
            close(fd); /* a failed handshake leaves the socket to us */
            /* A certificate the peer's host refuses, or one of its own that
             * expired meanwhile, stays so: refused. A handshake the path
             * cut off is worth another try. */
            int err = g_error_matches(he, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR) ||
                              g_error_matches(he, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT)
                          ? FERRY_ERR_OPERATION_TIMEOUT
                          : FERRY_ERR_OPERATION_DENIED;
            g_set_error(error, FERRY_ERROR, err,
                        "TLS on the migration data connection to %s:%u failed: %s", host, port,
                        he ? he->message : "no reason given");
            return NULL;
        }
    } else {
        t = rpc_transport_new_socket(fd);
    }
    set_timeouts(t->fd, timeout_ms);
    guint8 hello[HELLO_LEN + 8];
    memcpy(hello, MAGIC_RESUME, MAGIC_LEN);
    memcpy(hello + MAGIC_LEN, token, TUNNEL_DATA_TOKEN_LEN);
    for (int i = 0; i < 8; i++)
        hello[HELLO_LEN + i] = (guint8)(ours >> (56 - 8 * i));
    guint8 answer[9] = {0};
    g_autoptr(GError) e = NULL;
    if (!rpc_transport_write_all(t, hello, sizeof(hello), &e) ||
        !rpc_transport_read_all(t, answer, 1, &e) ||
        (answer[0] == 1 && !rpc_transport_read_all(t, answer + 1, 8, &e))) {
        /* No answer in time is worth another try; a connection closed on
         * us is a refusal (a wrong token, or nothing to resume there). */
        gboolean closed = g_error_matches(e, FERRY_ERROR, FERRY_ERR_RPC);
        g_set_error(error, FERRY_ERROR,
                    closed ? FERRY_ERR_OPERATION_DENIED : FERRY_ERR_OPERATION_TIMEOUT,
                    "the destination at %s:%u did not take the resumed data connection%s%s",
                    host, port, e ? ": " : "", e ? e->message : "");
        rpc_transport_free(t);
        return NULL;
    }
    if (answer[0] != 1) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_DENIED,
                    "the destination at %s:%u refused to resume the data connection (the "
                    "migration is over there)",
                    host, port);
        rpc_transport_free(t);
        return NULL;
    }
    *theirs = 0;
    for (int i = 0; i < 8; i++)
        *theirs = *theirs << 8 | answer[1 + i];
    set_timeouts(t->fd, 0);
    return t;
}
