/* Two splice pumps, one per direction. A direction ends cleanly when its
 * input reaches end of stream: the pump then half-closes its output, so the
 * far side sees the same end. The relay is done when both directions are. */
#include "tunnel/tunnel-relay.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/rpc-tls.h"
#include "util/error.h"
#include "util/log.h"
#include "util/thread.h"

#define FERRY_LOG_MODULE "tunnel.relay"

#define CHUNK (1024 * 1024)
#define POLL_US (100 * 1000)

struct TunnelRelay {
    gint ref;
    int vmm_fd;
    int net_fd;
    RpcTransport *net;
    gboolean tls;
    char *vmm_name;
    char *peer_name;
    GMutex lock;
    GCond cond;
    guint directions_done;
    gboolean failed;
    GError *error;
    guint64 bandwidth;
    gint64 bw_start_us;
    guint64 bw_start_bytes;
    TunnelRelayStats stats;
    TunnelCounters counters; /* the flight recorder's: atomic adds, no lock */
};

typedef struct {
    TunnelRelay *relay;
    gboolean outbound; /* VMM -> network */
} Direction;

TunnelRelay *tunnel_relay_new(int vmm_fd, RpcTransport *net, const TunnelRelayConfig *config)
{
    TunnelRelay *r = g_new0(TunnelRelay, 1);
    r->ref = 1;
    r->vmm_fd = vmm_fd;
    r->net = net;
    r->net_fd = net->fd;
    r->tls = rpc_tls_transport_is_tls(net);
    r->vmm_name = g_strdup(config->vmm_name ? config->vmm_name : "VMM");
    r->peer_name = g_strdup(config->peer_name ? config->peer_name : "data connection");
    r->bandwidth = config->bandwidth;
    r->bw_start_us = g_get_monotonic_time();
    g_mutex_init(&r->lock);
    g_cond_init(&r->cond);
    return r;
}

TunnelRelay *tunnel_relay_ref(TunnelRelay *relay)
{
    g_atomic_int_inc(&relay->ref);
    return relay;
}

void tunnel_relay_unref(TunnelRelay *r)
{
    if (!r || !g_atomic_int_dec_and_test(&r->ref))
        return;
    close(r->vmm_fd);
    rpc_transport_free(r->net);
    g_clear_error(&r->error);
    g_mutex_clear(&r->lock);
    g_cond_clear(&r->cond);
    g_free(r->vmm_name);
    g_free(r->peer_name);
    g_free(r);
}

/* Records the first failure and stops both directions. */
static void fail_locked(TunnelRelay *r, GError *why)
{
    if (!r->failed) {
        r->failed = TRUE;
        r->error = why;
        why = NULL;
        shutdown(r->vmm_fd, SHUT_RDWR);
        rpc_transport_shutdown(r->net);
        g_cond_broadcast(&r->cond);
    }
    g_clear_error(&why);
}

static void throttle(TunnelRelay *r)
{
    gint64 waited = tunnel_counters_wait_begin();
    g_mutex_lock(&r->lock);
    while (!r->failed && r->bandwidth > 0) {
        guint64 sent = r->stats.bytes_out - r->bw_start_bytes;
        gint64 due = r->bw_start_us + (gint64)(sent * (double)G_USEC_PER_SEC / r->bandwidth);
        gint64 now = g_get_monotonic_time();
        if (now >= due)
            break;
        g_cond_wait_until(&r->cond, &r->lock, MIN(due, now + POLL_US));
    }
    g_mutex_unlock(&r->lock);
    tunnel_counters_wait_end(&r->counters.wait_throttle_us, waited);
}

static GError *io_error(TunnelRelay *r, const char *verb, const char *hop, int err)
{
    g_autofree char *o = ferry_format_size(r->stats.bytes_out);
    g_autofree char *i = ferry_format_size(r->stats.bytes_in);
    return g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot %s the %s after %s sent, %s "
                       "received: %s", verb, hop, o, i, g_strerror(err));
}

static void count(TunnelRelay *r, gboolean outbound, gsize n)
{
    g_mutex_lock(&r->lock);
    if (outbound)
        r->stats.bytes_out += n;
    else
        r->stats.bytes_in += n;
    g_mutex_unlock(&r->lock);
    tunnel_counters_add(outbound ? &r->counters.bytes_out : &r->counters.bytes_in, n);
}

static gboolean relay_failed(TunnelRelay *r)
{
    g_mutex_lock(&r->lock);
    gboolean failed = r->failed;
    g_mutex_unlock(&r->lock);
    return failed;
}

/* Over TLS: one buffer per direction, each byte copied once (into or out of
 * the encryption). */
static GError *copy_direction(TunnelRelay *r, gboolean outbound)
{
    const char *in_name = outbound ? r->vmm_name : r->peer_name;
    const char *out_name = outbound ? r->peer_name : r->vmm_name;
    g_autofree guint8 *buf = g_malloc(256 * 1024);
    for (;;) {
        gssize n;
        g_autoptr(GError) e = NULL;
        gint64 waited = tunnel_counters_wait_begin();
        if (outbound) {
            do {
                n = read(r->vmm_fd, buf, 256 * 1024);
            } while (n < 0 && errno == EINTR);
        } else {
            n = rpc_transport_read(r->net, buf, 256 * 1024, &e);
        }
        tunnel_counters_wait_end(outbound ? &r->counters.wait_vmm_read_us
                                          : &r->counters.wait_net_recv_us,
                                 waited);
        if (n <= 0) {
            int err = n < 0 ? (outbound ? errno : ECONNRESET) : 0;
            if (relay_failed(r))
                return NULL;
            if (n == 0) {
                if (outbound)
                    rpc_tls_transport_close_write(r->net);
                else
                    shutdown(r->vmm_fd, SHUT_WR);
                return NULL;
            }
            if (e)
                return g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot read from the %s: %s",
                                   in_name, e->message);
            return io_error(r, "read from", in_name, err);
        }
        gboolean ok;
        int err = EPIPE;
        waited = tunnel_counters_wait_begin();
        if (outbound) {
            ok = rpc_transport_write_all(r->net, buf, n, &e);
        } else {
            ok = TRUE;
            for (gssize off = 0; off < n && ok;) {
                gssize w = send(r->vmm_fd, buf + off, n - off, MSG_NOSIGNAL);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0) {
                    err = w < 0 ? errno : EPIPE;
                    ok = FALSE;
                } else {
                    off += w;
                }
            }
        }
        tunnel_counters_wait_end(outbound ? &r->counters.wait_net_send_us
                                          : &r->counters.wait_vmm_write_us,
                                 waited);
        if (!ok) {
            if (e)
                return g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot write to the %s: %s",
                                   out_name, e->message);
            return io_error(r, "write to", out_name, err);
        }
        count(r, outbound, n);
        if (outbound)
            throttle(r);
    }
}

static gpointer direction_thread(gpointer data)
{
    Direction *d = data;
    TunnelRelay *r = d->relay;
    int in = d->outbound ? r->vmm_fd : r->net_fd;
    int out = d->outbound ? r->net_fd : r->vmm_fd;
    const char *in_name = d->outbound ? r->vmm_name : r->peer_name;
    const char *out_name = d->outbound ? r->peer_name : r->vmm_name;
    int pipefd[2];
    GError *why = NULL;

    if (r->tls) {
        why = copy_direction(r, d->outbound);
    } else if (pipe2(pipefd, O_CLOEXEC) < 0) {
        ferry_set_error_errno(&why, errno, "cannot create the relay pipe");
    } else {
        fcntl(pipefd[1], F_SETPIPE_SZ, CHUNK); /* fewer, larger splices */
        TunnelCounters *c = &r->counters;
        guint64 *wait_in = d->outbound ? &c->wait_vmm_read_us : &c->wait_net_recv_us;
        guint64 *wait_out = d->outbound ? &c->wait_net_send_us : &c->wait_vmm_write_us;
        for (;;) {
            gint64 waited = tunnel_counters_wait_begin();
            gssize n = splice(in, NULL, pipefd[1], NULL, CHUNK, SPLICE_F_MOVE | SPLICE_F_MORE);
            tunnel_counters_wait_end(wait_in, waited);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 || n == 0) {
                int err = errno;
                if (relay_failed(r))
                    break; /* the other direction or an abort already said why */
                if (n == 0) {
                    shutdown(out, SHUT_WR); /* pass the end of stream on */
                    break;
                }
                why = io_error(r, "read from", in_name, err);
                break;
            }
            gssize left = n;
            waited = tunnel_counters_wait_begin();
            while (left > 0) {
                /* No SPLICE_F_MORE here: it corks the socket, and the VMMs'
                 * protocol waits for every small reply. */
                gssize w = splice(pipefd[0], NULL, out, NULL, left, SPLICE_F_MOVE);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0) {
                    why = io_error(r, "write to", out_name, w < 0 ? errno : EPIPE);
                    break;
                }
                left -= w;
            }
            tunnel_counters_wait_end(wait_out, waited);
            if (why)
                break;
            count(r, d->outbound, n);
            if (d->outbound)
                throttle(r);
        }
        close(pipefd[0]);
        close(pipefd[1]);
    }

    g_mutex_lock(&r->lock);
    if (why)
        fail_locked(r, why);
    r->directions_done++;
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
    g_free(d);
    tunnel_relay_unref(r);
    return NULL;
}

void tunnel_relay_start(TunnelRelay *relay)
{
    for (int i = 0; i < 2; i++) {
        Direction *d = g_new0(Direction, 1);
        d->relay = tunnel_relay_ref(relay);
        d->outbound = i == 0;
        GError *why = NULL;
        GThread *t =
            ferry_thread_try_new(i == 0 ? "relay-out" : "relay-in", direction_thread, d, &why);
        if (t) {
            g_thread_unref(t);
            continue;
        }
        /* The relay fails with the reason: a running direction stops, and the
         * caller's wait reports it like any other failure of the relay. */
        g_free(d);
        g_mutex_lock(&relay->lock);
        fail_locked(relay, why);
        relay->directions_done += 2 - i;
        g_cond_broadcast(&relay->cond);
        g_mutex_unlock(&relay->lock);
        tunnel_relay_unref(relay);
        return;
    }
}

gboolean tunnel_relay_wait(TunnelRelay *r, gint64 deadline_us, GError **error)
{
    g_mutex_lock(&r->lock);
    while (!r->failed && r->directions_done < 2) {
        if (!deadline_us) {
            g_cond_wait(&r->cond, &r->lock);
        } else if (!g_cond_wait_until(&r->cond, &r->lock, deadline_us)) {
            if (!r->failed && r->directions_done < 2) {
                g_mutex_unlock(&r->lock);
                g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                            "the relay to the %s did not end in time", r->peer_name);
                return FALSE;
            }
        }
    }
    gboolean ok = !r->failed;
    if (!ok)
        g_propagate_error(error, g_error_copy(r->error));
    g_mutex_unlock(&r->lock);
    return ok;
}

void tunnel_relay_abort(TunnelRelay *r, const GError *why)
{
    g_mutex_lock(&r->lock);
    fail_locked(r, why ? g_error_copy(why)
                       : g_error_new_literal(FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                                             "the relay was aborted"));
    g_mutex_unlock(&r->lock);
}

gboolean tunnel_relay_is_over(TunnelRelay *r)
{
    g_mutex_lock(&r->lock);
    gboolean over = r->failed || r->directions_done == 2;
    g_mutex_unlock(&r->lock);
    return over;
}

void tunnel_relay_get_stats(TunnelRelay *r, TunnelRelayStats *stats)
{
    g_mutex_lock(&r->lock);
    *stats = r->stats;
    g_mutex_unlock(&r->lock);
}

void tunnel_relay_set_bandwidth(TunnelRelay *r, guint64 bytes_per_second)
{
    g_mutex_lock(&r->lock);
    r->bandwidth = bytes_per_second;
    r->bw_start_us = g_get_monotonic_time();
    r->bw_start_bytes = r->stats.bytes_out;
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
}

const TunnelCounters *tunnel_relay_get_counters(TunnelRelay *r)
{
    return &r->counters;
}
