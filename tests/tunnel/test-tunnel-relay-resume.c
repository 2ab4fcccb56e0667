/* Proxy mode's relay across broken data connections: two relays (the
 * source's and the destination's) joined by a forwarder over TCP on
 * 127.0.0.1 that the test resets (RST both ways, dropping what it held) a
 * few times mid-stream. The source's relay reconnects through the test's
 * callback, which hands the destination's relay its new connection as the
 * destination's listener would (tunnel_relay_hold, tunnel_relay_reattach).
 * Both directions must arrive complete and in order, with the
 * reconnections and the resent bytes counted: once with what was sent kept
 * as pipe pages (plaintext's way: 64 MiB through a keep of 4 MiB in small
 * pipes), once in the send ring (TLS's way, the ring wrapping several
 * times). A source relay alone shows a resend that spans the ring's wrap or
 * several of the keep's pipes, and one from a position no longer kept. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/rpc-socket.h"
#include "tunnel/tunnel-relay.h"
#include "util/error.h"
#include "util/log.h"

#define FORWARD_SIZE (64u << 20) /* source VMM -> destination VMM */
#define BACK_SIZE (3u << 20)     /* destination VMM -> source VMM */
#define BREAKS 3

/* The byte at position i of a direction's stream. */
static guint8 pattern(guint64 i, guint8 seed)
{
    guint64 x = (i >> 3) * 0x9E3779B97F4A7C15ull + seed;
    return (guint8)(x >> (8 * (i & 7)));
}

/* Two connected TCP sockets on 127.0.0.1. */
static void tcp_pair(int *a, int *b)
{
    g_autoptr(GError) e = NULL;
    guint16 port = 0;
    int l = rpc_socket_listen_tcp("127.0.0.1", 0, &port, &e);
    ck_assert_msg(l >= 0, "%s", e ? e->message : "");
    *a = rpc_socket_connect_tcp("127.0.0.1", port, 5000, &e);
    ck_assert_msg(*a >= 0, "%s", e ? e->message : "");
    *b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(*b, 0);
    close(l);
    /* Two hops hold more than one connection's kernels would: small
     * buffers keep what is lost at a break within what the ring keeps. */
    int size = 256 * 1024;
    for (int i = 0; i < 2; i++) {
        setsockopt(i ? *b : *a, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
        setsockopt(i ? *b : *a, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    }
}

/* Copies x <-> y until told to break, then resets both (SO_LINGER 0):
 * whatever it held is lost, as on a path that died. */
typedef struct {
    int x, y, wake;
    gboolean x_done, y_done; /* its end of stream was passed on */
    GThread *thread;
} Forwarder;

static gpointer forward_thread(gpointer data)
{
    Forwarder *f = data;
    static guint8 buf[256 * 1024];
    for (;;) {
        struct pollfd pf[3] = {{.fd = f->x_done ? -1 : f->x, .events = POLLIN},
                               {.fd = f->y_done ? -1 : f->y, .events = POLLIN},
                               {.fd = f->wake, .events = POLLIN}};
        if (poll(pf, 3, -1) < 0 && errno != EINTR)
            break;
        if (pf[2].revents)
            break;
        for (int i = 0; i < 2; i++) {
            if (!pf[i].revents)
                continue;
            int from = i == 0 ? f->x : f->y, to = i == 0 ? f->y : f->x;
            gssize n = read(from, buf, sizeof(buf));
            if (n <= 0) {
                shutdown(to, SHUT_WR); /* an end of stream goes on; so does an error, as one */
                *(i == 0 ? &f->x_done : &f->y_done) = TRUE;
                continue;
            }
            /* Blocking: the far relay reads on. */
            for (gssize off = 0; off < n;) {
                gssize w = write(to, buf + off, n - off);
                if (w <= 0)
                    return NULL;
                off += w;
            }
        }
    }
    return NULL;
}

static Forwarder *forwarder_new(int x, int y)
{
    Forwarder *f = g_new0(Forwarder, 1);
    f->x = x;
    f->y = y;
    f->wake = eventfd(0, EFD_CLOEXEC);
    f->thread = g_thread_new("forward", forward_thread, f);
    return f;
}

static void forwarder_break(Forwarder *f)
{
    guint64 one = 1;
    ck_assert_int_eq(write(f->wake, &one, sizeof(one)), sizeof(one));
    g_thread_join(f->thread);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(f->x, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    setsockopt(f->y, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(f->x);
    close(f->y);
    close(f->wake);
    g_free(f);
}

typedef struct {
    GMutex lock;
    Forwarder *fwd;
    TunnelRelay *dst;
    guint reconnects;
} Path;

/* The source relay's way back: a new path, the destination relay told as
 * its listener would. */
static RpcTransport *reconnect(gpointer data, guint64 ours, guint64 *theirs, int timeout_ms,
                               GError **error)
{
    Path *p = data;
    int s_net, x, d_net, y;
    tcp_pair(&s_net, &x);
    tcp_pair(&d_net, &y);
    g_mutex_lock(&p->lock);
    p->fwd = forwarder_new(x, y);
    p->reconnects++;
    g_mutex_unlock(&p->lock);
    guint64 dst_received = 0;
    if (!tunnel_relay_hold(p->dst, &dst_received, error)) {
        close(s_net);
        close(d_net);
        return NULL;
    }
    RpcTransport *dt = rpc_transport_new_socket(d_net);
    if (!tunnel_relay_reattach(p->dst, dt, ours, error)) {
        rpc_transport_free(dt);
        close(s_net);
        return NULL;
    }
    *theirs = dst_received;
    return rpc_transport_new_socket(s_net);
}

/* A VMM end: writes len bytes of its pattern, then reads the other's to its end. */
typedef struct {
    int fd;
    guint64 send_len;
    guint8 send_seed, recv_seed;
    gint64 received; /* atomic */
    guint64 bad_at;  /* first wrong byte + 1, 0: none */
    /* The destination answers as it receives (as a VMM does), and ends
     * only once it received everything: a peer that ended its side is not
     * resumed. */
    guint64 pace_of; /* 0: write at once; else the size of the stream it receives */
    gint held;       /* atomic: nonzero keeps its end of stream back until the test clears it */
    GThread *writer, *reader;
} Vmm;

static gpointer vmm_writer(gpointer data)
{
    Vmm *v = data;
    static __thread guint8 buf[64 * 1024];
    for (guint64 at = 0; at < v->send_len;) {
        while (v->pace_of && (guint64)g_atomic_pointer_get(&v->received) <
                                 MIN(at * (v->pace_of / v->send_len), v->pace_of))
            g_usleep(1000);
        gsize n = MIN(sizeof(buf), v->send_len - at);
        for (gsize i = 0; i < n; i++)
            buf[i] = pattern(at + i, v->send_seed);
        for (gsize off = 0; off < n;) {
            gssize w = write(v->fd, buf + off, n - off);
            if (w <= 0)
                return NULL;
            off += w;
        }
        at += n;
    }
    while (v->pace_of && (guint64)g_atomic_pointer_get(&v->received) < v->pace_of && !v->bad_at)
        g_usleep(1000);
    while (g_atomic_int_get(&v->held))
        g_usleep(2000);
    shutdown(v->fd, SHUT_WR);
    return NULL;
}

static gpointer vmm_reader(gpointer data)
{
    Vmm *v = data;
    static __thread guint8 buf[128 * 1024];
    guint64 at = 0;
    for (;;) {
        gssize n = read(v->fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (gssize i = 0; i < n && !v->bad_at; i++)
            if (buf[i] != pattern(at + i, v->recv_seed))
                v->bad_at = at + i + 1;
        at += n;
        g_atomic_pointer_set(&v->received, (gint64)at);
    }
    return NULL;
}

static void vmm_start(Vmm *v, int fd, guint64 send_len, guint8 send_seed, guint8 recv_seed,
                      guint64 pace_of, gboolean hold_end)
{
    *v = (Vmm){.fd = fd,
               .send_len = send_len,
               .send_seed = send_seed,
               .recv_seed = recv_seed,
               .pace_of = pace_of,
               .held = hold_end};
    v->writer = g_thread_new("vmm-wr", vmm_writer, v);
    v->reader = g_thread_new("vmm-rd", vmm_reader, v);
}

static void vmm_join(Vmm *v)
{
    g_thread_join(v->writer);
    g_thread_join(v->reader);
    close(v->fd);
}

/* The keep's pipes in these tests: 64 buffers each (at most 2 MiB). */
#define TEST_KEEP_PIPE (256u << 10)
/* The test's breaks are resets, which a relay waits 5 s for: a loaded
 * machine (a make check starting 4 GiB VMMs beside it) can hold the
 * reconnection longer than that. */
#define RESET_GRACE_S 20

/* A failed check here leaves the VMM threads running into the next test,
 * where AddressSanitizer stops the run before check reports it: said at
 * once as well. */
#define check_or_say(cond, ...)                                                                    \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            g_printerr(__VA_ARGS__);                                                               \
            g_printerr("\n");                                                                      \
        }                                                                                          \
        ck_assert_msg(cond, __VA_ARGS__);                                                          \
    } while (0)

/* Why the relay failed, if it did. */
static char *relay_failure(TunnelRelay *r)
{
    g_autoptr(GError) e = NULL;
    if (tunnel_relay_wait(r, g_get_monotonic_time(), &e) || !e)
        return g_strdup("ended");
    if (g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT))
        return g_strdup("running");
    return g_strdup(e->message);
}

/* _i: 0 keeps what was sent as pipe pages, 1 in the send ring. */
START_TEST(test_resume_both_directions)
{
    gboolean ring = _i == 1;
    int src_vmm[2], dst_vmm[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, src_vmm), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, dst_vmm), 0);
    int s_net, x, d_net, y;
    tcp_pair(&s_net, &x);
    tcp_pair(&d_net, &y);
    Path path = {0};
    g_mutex_init(&path.lock);
    path.fwd = forwarder_new(x, y);

    TunnelRelayConfig dcfg = {.vmm_name = "destination VMM",
                              .peer_name = "data connection from the source",
                              .resume_timeout_s = 20,
                              .ring_keep = 4u << 20,
                              .send_ring = ring,
                              .keep_pipe_size = TEST_KEEP_PIPE,
                              .ended_grace_s = RESET_GRACE_S};
    path.dst = tunnel_relay_new(dst_vmm[0], rpc_transport_new_socket(d_net), &dcfg);
    /* 64 MiB/s: the breaks land in the stream. */
    TunnelRelayConfig scfg = {.vmm_name = "source VMM",
                              .peer_name = "data connection to the destination",
                              .bandwidth = 64u << 20,
                              .resume_timeout_s = 20,
                              .reconnect = reconnect,
                              .reconnect_data = &path,
                              .ring_keep = 4u << 20,
                              .send_ring = ring,
                              .keep_pipe_size = TEST_KEEP_PIPE,
                              .ended_grace_s = RESET_GRACE_S};
    TunnelRelay *src = tunnel_relay_new(src_vmm[0], rpc_transport_new_socket(s_net), &scfg);
    tunnel_relay_start(path.dst);
    tunnel_relay_start(src);

    Vmm a, b;
    vmm_start(&a, src_vmm[1], FORWARD_SIZE, 1, 2, 0, FALSE);
    vmm_start(&b, dst_vmm[1], BACK_SIZE, 2, 1, FORWARD_SIZE, FALSE);

    for (guint k = 1; k <= BREAKS; k++) {
        guint64 at = (guint64)FORWARD_SIZE * k / (BREAKS + 1);
        gint64 until = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
        while ((guint64)g_atomic_pointer_get(&b.received) < at && g_get_monotonic_time() < until)
            g_usleep(2000);
        /* Wait for the previous resume before breaking again. */
        while (path.reconnects < k - 1 && g_get_monotonic_time() < until)
            g_usleep(2000);
        g_autofree char *sf = relay_failure(src), *df = relay_failure(path.dst);
        check_or_say((guint64)g_atomic_pointer_get(&b.received) >= at,
                     "break %u: the destination VMM received %" G_GUINT64_FORMAT
                     " bytes (source relay: %s; destination relay: %s)",
                     k, (guint64)g_atomic_pointer_get(&b.received), sf, df);
        g_mutex_lock(&path.lock);
        Forwarder *f = g_steal_pointer(&path.fwd);
        g_mutex_unlock(&path.lock);
        ck_assert_ptr_nonnull(f);
        forwarder_break(f);
        gint64 back = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
        while (!path.fwd && g_get_monotonic_time() < back)
            g_usleep(2000);
        g_autofree char *sf2 = relay_failure(src);
        check_or_say(path.fwd != NULL, "no reconnection after break %u (source relay: %s)", k,
                     sf2);
    }

    g_autoptr(GError) e = NULL;
    gboolean ok = tunnel_relay_wait(src, g_get_monotonic_time() + 120 * G_USEC_PER_SEC, &e);
    check_or_say(ok, "source relay: %s", e ? e->message : "");
    ok = tunnel_relay_wait(path.dst, g_get_monotonic_time() + 120 * G_USEC_PER_SEC, &e);
    check_or_say(ok, "destination relay: %s", e ? e->message : "");
    vmm_join(&a);
    vmm_join(&b);
    ck_assert_msg(!b.bad_at, "forward byte %" G_GUINT64_FORMAT " wrong", b.bad_at - 1);
    ck_assert_msg(!a.bad_at, "return byte %" G_GUINT64_FORMAT " wrong", a.bad_at - 1);
    ck_assert_uint_eq((guint64)b.received, FORWARD_SIZE);
    ck_assert_uint_eq((guint64)a.received, BACK_SIZE);

    guint sn = 0, dn = 0;
    guint64 sr = 0, dr = 0;
    tunnel_relay_get_resume_stats(src, &sn, &sr);
    tunnel_relay_get_resume_stats(path.dst, &dn, &dr);
    ck_assert_uint_eq(sn, BREAKS);
    ck_assert_uint_eq(dn, BREAKS);
    TunnelRelayStats ss, ds;
    tunnel_relay_get_stats(src, &ss);
    tunnel_relay_get_stats(path.dst, &ds);
    /* Resent bytes are counted apart, never twice in the totals. */
    ck_assert_uint_eq(ss.bytes_out, FORWARD_SIZE);
    ck_assert_uint_eq(ds.bytes_in, FORWARD_SIZE);
    ck_assert_uint_eq(ds.bytes_out, BACK_SIZE);
    ck_assert_uint_eq(ss.bytes_in, BACK_SIZE);
    tunnel_relay_unref(src);
    tunnel_relay_unref(path.dst);
    if (path.fwd)
        forwarder_break(path.fwd);
    g_mutex_clear(&path.lock);
}
END_TEST

/* The send ring turning: a source relay whose ring keeps 4 MiB of what it
 * sent (8 MiB in all) sends 16 MiB to a peer the test plays, which reads to
 * just before the ring's end (8 MiB - 64 KiB) and stops; once the relay sent
 * past it (the kernels hold the rest), the test resets the connection and
 * takes the new one saying it received that much. The resend spans the
 * ring's wrap (its first part at the ring's end, its rest at its start),
 * and the stream arrives whole. With too_old, the peer claims a position the
 * ring no longer holds: the relay fails naming both. Kept as pipe pages
 * instead (4 MiB too, in pipes of 16 buffers, at most 512 KiB each), the
 * same resend takes several pipes. */
#define WRAP_KEEP (4u << 20)
#define WRAP_CAP (WRAP_KEEP + (4u << 20)) /* the relay's RING_AHEAD */
#define WRAP_SIZE (16u << 20)
#define WRAP_READ (WRAP_CAP - (64u << 10))
/* The break comes after that much was sent: past the ring's end, and more
 * than a keep's pipe holds past what the peer read. The relay's sends into
 * the blocking socket count only once done, up to 1 MiB at a time: under
 * load it was seen stopped at 996 KiB past the peer's 8 MiB - 64 KiB, its
 * next send waiting for room the kernels (2.5 MiB) no longer had. */
#define WRAP_SENT (WRAP_READ + (576u << 10))

typedef struct {
    guint64 theirs;
    int peer; /* the new connection's far end (atomic), -1: none yet */
    guint reconnects;
} WrapPath;

static RpcTransport *reconnect_wrap(gpointer data, guint64 ours, guint64 *theirs, int timeout_ms,
                                    GError **error)
{
    WrapPath *w = data;
    int s_net, peer;
    tcp_pair(&s_net, &peer);
    *theirs = w->theirs;
    w->reconnects++;
    g_atomic_int_set(&w->peer, peer);
    return rpc_transport_new_socket(s_net);
}

/* Reads from fd the stream's bytes [at, until), checking them; returns
 * the position reached (short: the end came first). */
static guint64 read_checked(int fd, guint64 at, guint64 until, guint8 seed)
{
    static guint8 buf[128 * 1024];
    while (at < until) {
        gssize n = read(fd, buf, MIN(sizeof(buf), until - at));
        if (n <= 0)
            break;
        gssize bad = -1;
        for (gssize i = 0; i < n && bad < 0; i++)
            if (buf[i] != pattern(at + i, seed))
                bad = i;
        ck_assert_msg(bad < 0, "byte %" G_GUINT64_FORMAT " wrong", at + bad);
        at += n;
    }
    return at;
}

#define WRAP_KEEP_PIPE (64u << 10)
#define WRAP_PIPE_MAX (16u * (32u << 10)) /* the most a pipe of 16 buffers holds */

/* A source relay alone, keeping WRAP_KEEP bytes (in the ring, or in pipes
 * of WRAP_KEEP_PIPE), reconnecting through w. */
static TunnelRelay *start_source_alone(int vmm_fd, int s_net, WrapPath *w, gboolean ring)
{
    TunnelRelayConfig cfg = {.vmm_name = "source VMM",
                             .peer_name = "data connection to the destination",
                             .resume_timeout_s = 20,
                             .reconnect = reconnect_wrap,
                             .reconnect_data = w,
                             .ring_keep = WRAP_KEEP,
                             .send_ring = ring,
                             .keep_pipe_size = WRAP_KEEP_PIPE,
                             .ended_grace_s = RESET_GRACE_S};
    TunnelRelay *src = tunnel_relay_new(vmm_fd, rpc_transport_new_socket(s_net), &cfg);
    tunnel_relay_start(src);
    return src;
}

static void run_wrap(gboolean too_old, gboolean ring)
{
    int src_vmm[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, src_vmm), 0);
    int s_net, peer;
    tcp_pair(&s_net, &peer);
    /* Fixed buffers (the kernel doubles them: 2 MiB to send, 512 KiB to
     * receive). The relay sends up to 1 MiB per blocking send(), so once
     * the peer stops reading, the kernels must take a whole one beyond the
     * ring's end (more than 1 MiB + 64 KiB) and may hold no more than the
     * ring keeps (4 MiB). Autotuned they were sometimes smaller: the relay
     * stayed at the ring's end (a make check, and 2 runs of 6 here). */
    int sndbuf = 1 << 20, rcvbuf = 256 << 10;
    ck_assert_int_eq(setsockopt(s_net, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    ck_assert_int_eq(setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    WrapPath w = {.theirs = too_old ? 0 : WRAP_READ, .peer = -1};
    TunnelRelay *src = start_source_alone(src_vmm[0], s_net, &w, ring);
    Vmm a;
    vmm_start(&a, src_vmm[1], WRAP_SIZE, 1, 2, 0, FALSE);

    ck_assert_uint_eq(read_checked(peer, 0, WRAP_READ, 1), WRAP_READ);
    /* The relay sends on into the kernels' buffers, past the ring's end. */
    gint64 until = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    TunnelRelayStats st = {0};
    while (st.bytes_out < WRAP_SENT && g_get_monotonic_time() < until) {
        g_usleep(2000);
        tunnel_relay_get_stats(src, &st);
    }
    ck_assert_msg(st.bytes_out >= WRAP_SENT, "the relay sent only %" G_GUINT64_FORMAT " bytes",
                  st.bytes_out);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(peer); /* a reset: the bytes the kernels held are lost */

    g_autoptr(GError) e = NULL;
    if (too_old) {
        ck_assert(!tunnel_relay_wait(src, g_get_monotonic_time() + 60 * G_USEC_PER_SEC, &e));
        ck_assert_msg(strstr(e->message, "cannot resume the data connection to the destination: "
                                         "the peer received 0 bytes, while ") != NULL,
                      "%s", e->message);
        ck_assert_msg(strstr(e->message, " kept") != NULL, "%s", e->message);
    } else {
        int p2 = -1;
        while ((p2 = g_atomic_int_get(&w.peer)) < 0 && g_get_monotonic_time() < until + 60 * G_USEC_PER_SEC)
            g_usleep(2000);
        ck_assert_int_ge(p2, 0);
        ck_assert_uint_eq(read_checked(p2, WRAP_READ, WRAP_SIZE + 1, 1), WRAP_SIZE);
        shutdown(p2, SHUT_WR); /* our end: the relay is done */
        gboolean ok = tunnel_relay_wait(src, g_get_monotonic_time() + 60 * G_USEC_PER_SEC, &e);
        ck_assert_msg(ok, "source relay: %s", e ? e->message : "");
        guint n = 0;
        guint64 resent = 0;
        tunnel_relay_get_resume_stats(src, &n, &resent);
        ck_assert_uint_eq(n, 1);
        /* From WRAP_READ to what was sent at the break: across WRAP_CAP. */
        ck_assert_msg(WRAP_READ + resent > WRAP_CAP, "resent %" G_GUINT64_FORMAT, resent);
        G_STATIC_ASSERT(WRAP_SENT - WRAP_READ > WRAP_PIPE_MAX);
        if (!ring)
            ck_assert_msg(resent > WRAP_PIPE_MAX, "resent %" G_GUINT64_FORMAT ": one pipe's worth",
                          resent);
        tunnel_relay_get_stats(src, &st);
        ck_assert_uint_eq(st.bytes_out, WRAP_SIZE); /* resent bytes counted apart */
    }
    shutdown(src_vmm[1], SHUT_RDWR); /* the VMM's threads end either way */
    vmm_join(&a);
    if (!too_old)
        ck_assert_uint_eq((guint64)a.received, 0);
    tunnel_relay_unref(src);
    if (w.peer >= 0)
        close(w.peer);
}

START_TEST(test_resend_spans_wrap)
{
    run_wrap(FALSE, TRUE);
}
END_TEST

START_TEST(test_resend_spans_keep_pipes)
{
    run_wrap(FALSE, FALSE);
}
END_TEST

/* _i: 0 pipe pages, 1 the ring */
START_TEST(test_resend_too_old)
{
    run_wrap(TRUE, _i == 1);
}
END_TEST

/* A resend must not wait for the VMM: a source VMM that wrote 4 MiB and
 * then waits (for an answer that needs them, say) while the relay sent all
 * of it and waits for more; the peer read all but 512 KiB, the rest in the
 * kernels when the connection resets. The new connection gets the last
 * 512 KiB while the VMM still writes nothing, then the VMM's end. */
#define IDLE_SIZE (4u << 20)
#define IDLE_READ (IDLE_SIZE - (512u << 10))

static void run_resend_idle_vmm(gboolean ring)
{
    int src_vmm[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, src_vmm), 0);
    int s_net, peer;
    tcp_pair(&s_net, &peer);
    int sndbuf = 1 << 20; /* doubled: the kernels hold the last 512 KiB */
    ck_assert_int_eq(setsockopt(s_net, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    WrapPath w = {.theirs = IDLE_READ, .peer = -1};
    TunnelRelay *src = start_source_alone(src_vmm[0], s_net, &w, ring);
    Vmm a;
    vmm_start(&a, src_vmm[1], IDLE_SIZE, 3, 4, 0, TRUE);

    ck_assert_uint_eq(read_checked(peer, 0, IDLE_READ, 3), IDLE_READ);
    gint64 until = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    TunnelRelayStats st = {0};
    while (st.bytes_out < IDLE_SIZE && g_get_monotonic_time() < until) {
        g_usleep(2000);
        tunnel_relay_get_stats(src, &st);
    }
    ck_assert_uint_eq(st.bytes_out, IDLE_SIZE);
    g_usleep(300 * 1000); /* the relay waits for the VMM's next bytes */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(peer);

    int p2 = -1;
    while ((p2 = g_atomic_int_get(&w.peer)) < 0 && g_get_monotonic_time() < until)
        g_usleep(2000);
    ck_assert_int_ge(p2, 0);
    /* Within 10 s, the VMM silent all along. */
    struct timeval tv = {.tv_sec = 10};
    setsockopt(p2, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ck_assert_uint_eq(read_checked(p2, IDLE_READ, IDLE_SIZE, 3), IDLE_SIZE);
    g_atomic_int_set(&a.held, 0);
    guint8 one;
    ck_assert_int_eq(read(p2, &one, 1), 0); /* the VMM's end, passed on */
    shutdown(p2, SHUT_WR);
    g_autoptr(GError) e = NULL;
    gboolean ok = tunnel_relay_wait(src, g_get_monotonic_time() + 60 * G_USEC_PER_SEC, &e);
    ck_assert_msg(ok, "source relay: %s", e ? e->message : "");
    vmm_join(&a);
    ck_assert_uint_eq((guint64)a.received, 0);
    tunnel_relay_unref(src);
    close(p2);
}

/* _i: 0 pipe pages, 1 the ring */
START_TEST(test_resend_while_the_vmm_waits)
{
    run_resend_idle_vmm(_i == 1);
}
END_TEST

/* The destination's relay never sees its source again: it fails naming the
 * cause and the resume time. */
START_TEST(test_resume_time_over)
{
    int vmm[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, vmm), 0);
    int d_net, y;
    tcp_pair(&d_net, &y);
    TunnelRelayConfig cfg = {.vmm_name = "destination VMM",
                             .peer_name = "data connection from the source",
                             .resume_timeout_s = 1};
    TunnelRelay *r = tunnel_relay_new(vmm[0], rpc_transport_new_socket(d_net), &cfg);
    tunnel_relay_start(r);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(y, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(y); /* a reset: waited for min(resume time, 5 s) */
    g_autoptr(GError) e = NULL;
    ck_assert(!tunnel_relay_wait(r, g_get_monotonic_time() + 60 * G_USEC_PER_SEC, &e));
    ck_assert_msg(strstr(e->message, "did not come back within 1 s") != NULL, "%s", e->message);
    ck_assert_msg(strstr(e->message, g_strerror(ECONNRESET)) != NULL, "%s", e->message);
    close(vmm[1]);
    tunnel_relay_unref(r);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* a relay's peer gone is an error here, not a signal */
    if (g_getenv("FERRY_TEST_DEBUG"))
        ferry_log_set_level(FERRY_LOG_DEBUG);
    Suite *s = suite_create("tunnel-relay-resume");
    TCase *tc = tcase_create("resume");
    tcase_set_timeout(tc, 240);
    tcase_add_loop_test(tc, test_resume_both_directions, 0, 2);
    tcase_add_test(tc, test_resume_time_over);
    tcase_add_test(tc, test_resend_spans_wrap);
    tcase_add_test(tc, test_resend_spans_keep_pipes);
    tcase_add_loop_test(tc, test_resend_too_old, 0, 2);
    tcase_add_loop_test(tc, test_resend_while_the_vmm_waits, 0, 2);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
