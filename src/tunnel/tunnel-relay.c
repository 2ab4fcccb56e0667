/* Two directions, each a reader and a writer thread. A direction ends
 * cleanly when its input reaches end of stream: its writer then half-closes
 * the output once everything read was written, so the far side sees the
 * same end. The relay is done when all four threads are. */
#include "tunnel/tunnel-relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/rpc-socket.h"
#include "tunnel/tunnel-keep.h"
#include "tunnel/tunnel-resume.h"
#include "rpc/rpc-tls.h"
#include "util/error.h"
#include "util/log.h"
#include "util/thread.h"

#define FERRY_LOG_MODULE "tunnel.relay"

#define CHUNK (1024 * 1024)
#define POLL_US (100 * 1000)
/* Resuming: the ring's room for bytes read from the VMM and not yet sent,
 * beyond what it keeps of those sent. */
#define RING_AHEAD (4u << 20)
/* Resuming plaintext: each pipe of the keep (tunnel-keep), and how many it
 * may take. Spliced buffers hold 4 to 32 KiB: 4 MiB pipes (1024 buffers)
 * keep 4-32 MiB each. Beyond pipe-max-size a pipe needs CAP_SYS_RESOURCE;
 * without it, 1 MiB pipes (the default pipe-max-size) keep 1-8 MiB. */
#define KEEP_PIPE_SIZE (4u << 20)
#define KEEP_MAX_PIPES 48
/* How long a resume waits for the network reader to stop on the old
 * connection (it may be writing into a full pipe the VMM drains). */
#define PARK_WAIT_US (10 * G_USEC_PER_SEC)
#define RECONNECT_ATTEMPT_MS 5000
#define RECONNECT_PAUSE_US (500 * 1000)

/* The most a TCP connection's kernels can hold of what we sent that the
 * peer's relay did not read: our send buffer and the peer's receive buffer
 * at their largest (tcp_wmem, tcp_rmem; the peer is assumed to be tuned as
 * this host is), and the pipe of the peer's relay is not counted (what is
 * there was taken from the network). */
static gsize tunnel_relay_ring_keep(void)
{
    gsize total = 0;
    static const char *const files[] = {"/proc/sys/net/ipv4/tcp_wmem",
                                        "/proc/sys/net/ipv4/tcp_rmem"};
    for (guint i = 0; i < G_N_ELEMENTS(files); i++) {
        g_autofree char *text = NULL;
        guint64 min = 0, def = 0, max = 0;
        if (g_file_get_contents(files[i], &text, NULL, NULL) &&
            sscanf(text, "%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, &min,
                   &def, &max) == 3)
            total += MIN(max, (guint64)64 << 20);
        else
            total += 6u << 20;
    }
    return total + (1u << 20); /* and a margin */
}

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
    /* Per direction (0 = outbound): its TLS reader and writer wait here for
     * each other, so a hand-off wakes the one thread it concerns, and only
     * when that thread sleeps (one cond for all four woke every thread on
     * every hand-off: 86,000 context switches per GiB). */
    GCond hand_off[2];
    guint threads_done; /* of four: a reader and a writer per direction */
    gboolean failed;
    gint64 failed_us; /* when: the cause of an EPIPE is awaited up to a second after */
    GError *error;
    TunnelRate *rate; /* its own, or the migration's shared by its channels */
    TunnelRelayStats stats;
    TunnelCounters counters; /* the flight recorder's: atomic adds, no lock */
    /* A dead connection reports its cause (ETIMEDOUT, ECONNRESET) to one
     * call only, often the reader's; the writer meets EPIPE. Every call on
     * the connection notes what it met in net->os_error, and a failure that
     * says EPIPE is told with that cause once the connection's reader has
     * returned (tunnel_relay_wait). */
    gboolean net_epipe;       /* the failure may be a writer's EPIPE on the connection */
    gboolean net_reader_done; /* the connection's reader returned */

    /* ---- resuming (resume_timeout_s > 0) ----
     * Outbound, the relay keeps the last ring_keep bytes it sent, at least
     * what the kernels of both sides may hold (our send buffer, the peer's
     * receive buffer), so whatever the peer's relay did not take from the
     * network can be sent again. Plaintext keeps them as pipe pages (keep:
     * each chunk tee()d before it is spliced, no copy); TLS, whose cipher
     * reads them from memory anyway, reads the VMM's bytes into the send
     * ring and sends them from it. Inbound is counted (net_received).
     * Every field under lock, but keep (the outbound writer's). */
    guint resume_timeout_s;
    guint ended_grace_s;            /* a reset or ended connection's wait */
    TunnelRelayReconnect reconnect; /* source */
    gpointer reconnect_data;
    GDestroyNotify reconnect_free;
    guint8 *ring;
    gsize ring_cap, ring_keep;
    gboolean send_ring;    /* plaintext too keeps its bytes in the ring (tests) */
    gsize keep_pipe_size;
    TunnelKeep *keep;      /* plaintext: what was sent, as pipe pages */
    guint64 keep_from;     /* the oldest byte keep may still hold for a resume */
    guint64 ring_end;      /* read from the VMM */
    guint64 ring_reading;  /* end of a read in progress (its room may hold old bytes) */
    guint64 ring_sent;     /* written to the network (set back by a resume) */
    guint64 ring_sent_max; /* the most ever written */
    guint64 net_received;  /* taken from the network */
    gboolean net_in_eof;   /* the peer ended its side in order: nothing to resume */
    guint shut_gen;        /* the connection our end of stream was passed on (gen + 1) */
    guint gen;             /* bumped by every resume */
    gboolean detached;     /* the data connection broke: waiting for a new one */
    gboolean in_parked;    /* the network reader waits for the new one */
    gboolean out_sending;  /* the ring's writer is in a send() */
    int detach_errno;      /* why it broke (0: the source came back on a new one) */
    guint resume_wait_s;
    gint64 resume_deadline_us;
    guint reconnections;
    guint64 resent;
    GPtrArray *old_nets;   /* transports of broken connections: a thread may still poll one */
};

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
    r->rate = tunnel_rate_new(config->bandwidth);
    if (config->resume_timeout_s) {
        r->resume_timeout_s = config->resume_timeout_s;
        r->reconnect = config->reconnect;
        r->ring_keep = config->ring_keep ? config->ring_keep : tunnel_relay_ring_keep();
        r->ring_cap = r->ring_keep + RING_AHEAD;
        r->send_ring = config->send_ring;
        r->ended_grace_s =
            config->ended_grace_s ? config->ended_grace_s : TUNNEL_RESUME_ENDED_GRACE_S;
        r->keep_pipe_size = config->keep_pipe_size ? config->keep_pipe_size : KEEP_PIPE_SIZE;
        r->old_nets = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_transport_free);
    }
    r->reconnect_data = config->reconnect_data;
    r->reconnect_free = config->reconnect_free;
    g_mutex_init(&r->lock);
    g_cond_init(&r->cond);
    g_cond_init(&r->hand_off[0]);
    g_cond_init(&r->hand_off[1]);
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
    if (r->old_nets)
        g_ptr_array_unref(r->old_nets);
    if (r->reconnect_free && r->reconnect_data)
        r->reconnect_free(r->reconnect_data);
    g_free(r->ring);
    tunnel_keep_free(r->keep);
    tunnel_rate_unref(r->rate);
    g_clear_error(&r->error);
    g_mutex_clear(&r->lock);
    g_cond_clear(&r->cond);
    g_cond_clear(&r->hand_off[0]);
    g_cond_clear(&r->hand_off[1]);
    g_free(r->vmm_name);
    g_free(r->peer_name);
    g_free(r);
}

/* Records the first failure and stops both directions. */
static void fail_locked(TunnelRelay *r, GError *why)
{
    if (!r->failed) {
        r->failed = TRUE;
        r->failed_us = g_get_monotonic_time();
        r->error = why;
        why = NULL;
        shutdown(r->vmm_fd, SHUT_RDWR);
        rpc_transport_shutdown(r->net);
        g_cond_broadcast(&r->cond);
        g_cond_broadcast(&r->hand_off[0]);
        g_cond_broadcast(&r->hand_off[1]);
    }
    g_clear_error(&why);
}

static void throttle(TunnelRelay *r)
{
    gint64 waited = tunnel_counters_wait_begin();
    g_mutex_lock(&r->lock);
    for (;;) {
        gint64 due = tunnel_rate_due(r->rate), now = g_get_monotonic_time();
        if (r->failed || now >= due)
            break;
        g_cond_wait_until(&r->cond, &r->lock, MIN(due, now + POLL_US));
    }
    g_mutex_unlock(&r->lock);
    tunnel_counters_wait_end(&r->counters.wait_throttle_us, waited);
}

/* A call on the network connection failed with err: its cause is noted
 * before anything else, so that no other thread's EPIPE is left without it. */
static void note_net_error(TunnelRelay *r, int err)
{
    ferry_os_error_note(&r->net->os_error, err);
}

static GError *io_error(TunnelRelay *r, const char *verb, const char *hop, int err)
{
    if (hop == r->peer_name) {
        note_net_error(r, err);
        /* A splice that moved bytes before the socket's error drops the
         * error: the connection's TCP state still tells a timeout. */
        if (err == EPIPE && !g_atomic_int_get(&r->net->os_error))
            note_net_error(r, rpc_socket_lost_error(r->net_fd));
        if (err == EPIPE) {
            int cause = g_atomic_int_get(&r->net->os_error);
            if (cause)
                err = cause;
            else {
                g_mutex_lock(&r->lock);
                r->net_epipe = TRUE;
                g_mutex_unlock(&r->lock);
            }
        }
    }
    g_autofree char *o = ferry_format_size(r->stats.bytes_out);
    g_autofree char *i = ferry_format_size(r->stats.bytes_in);
    return g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot %s the %s after %s sent, %s "
                       "received: %s", verb, hop, o, i, g_strerror(err));
}

static void count(TunnelRelay *r, gboolean outbound, gsize n)
{
    g_mutex_lock(&r->lock);
    if (outbound) {
        r->stats.bytes_out += n;
        tunnel_rate_add(r->rate, n);
    } else
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

/* Each direction runs as two threads, a reader and a writer, with a bounded
 * hand-off between them: a pipe for splice (plaintext), a few buffers over
 * TLS. So the reader keeps draining its socket while the writer waits on the
 * other one (or on the cipher): the VMM's socket buffer never fills while
 * the relay is busy elsewhere, and its awaited replies cross without waiting
 * behind a chunk in progress. */

/* TLS hand-off: buffers cycle from free to full and back. Outbound a slot
 * is a buffer the VMM's bytes are read into (the cipher then reads them);
 * inbound it is the records as gnutls decrypted them, written to the VMM
 * from there (one copy fewer than reading them out into a buffer). */
#define TLS_BUFFERS 4
#define TLS_BUFFER_SIZE (256 * 1024)
#define TLS_RECORD_MAX (16 * 1024)
#define TLS_SLOT_RECORDS (TLS_BUFFER_SIZE / TLS_RECORD_MAX)

typedef struct {
    TunnelRelay *relay;
    gboolean outbound; /* VMM -> network */
    int in, out;
    const char *in_name, *out_name;
    /* plaintext: the pipe; the reader owns [1], the writer [0]; each closes
     * its end when it stops, which wakes the other */
    int pipefd[2];
    /* TLS: under relay->lock */
    guint8 *buf[TLS_BUFFERS];
    gsize len[TLS_BUFFERS];
    RpcTlsRecord *rec[TLS_BUFFERS][TLS_SLOT_RECORDS];
    struct iovec rec_iov[TLS_BUFFERS][TLS_SLOT_RECORDS];
    guint nrec[TLS_BUFFERS];
    guint head, count; /* full buffers: head .. head + count - 1 */
    gboolean writer_gone;
    gboolean reader_waiting, writer_waiting; /* for a slot, on hand_off */
    GError *read_error; /* reader: met after data it delivers first */
    /* both: the reader reached a clean end of stream (under relay->lock) */
    gboolean in_eof;
    gboolean reader_gone;
} Direction;

/* Where the flight recorder counts the time a direction waits for its input
 * and for its output. */
static guint64 *wait_in_counter(Direction *d)
{
    TunnelCounters *c = &d->relay->counters;
    return d->outbound ? &c->wait_vmm_read_us : &c->wait_net_recv_us;
}

static guint64 *wait_out_counter(Direction *d)
{
    TunnelCounters *c = &d->relay->counters;
    return d->outbound ? &c->wait_net_send_us : &c->wait_vmm_write_us;
}

/* The data connection's cipher time, for the part of a TLS wait that was
 * encrypting (d's writer, outbound) or decrypting (d's reader, inbound)
 * rather than the network: 0 on the VMM's side, or while not counting. */
static guint64 net_cipher_us(Direction *d, gboolean writer, gint64 begin_us)
{
    if (!begin_us || writer != d->outbound)
        return 0;
    return rpc_transport_get_crypto_us(d->relay->net, writer ? RPC_CRYPTO_SEND : RPC_CRYPTO_RECV);
}

static GCond *hand_off(Direction *d)
{
    return &d->relay->hand_off[d->outbound ? 0 : 1];
}

static void slot_free_records(Direction *d, guint slot)
{
    for (guint k = 0; k < d->nrec[slot]; k++)
        rpc_tls_record_free(d->rec[slot][k]);
    d->nrec[slot] = 0;
}

static void direction_free(Direction *d)
{
    g_clear_error(&d->read_error);
    for (guint i = 0; i < TLS_BUFFERS; i++) {
        g_free(d->buf[i]);
        slot_free_records(d, i); /* full slots the writer never wrote */
    }
    g_free(d);
}

/* ---- plaintext: splice through a pipe, the bytes never enter user space ---- */

static GError *splice_reader(Direction *d)
{
    TunnelRelay *r = d->relay;
    for (;;) {
        /* Wait for input outside splice(): a splice into a pipe holds the
         * pipe's lock while it waits for its socket, which would keep the
         * writer from draining what is already in the pipe. */
        struct pollfd pfd = {.fd = d->in, .events = POLLIN};
        gint64 waited = tunnel_counters_wait_begin();
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            return io_error(r, "wait for", d->in_name, errno);
        gssize n = splice(d->in, NULL, d->pipefd[1], NULL, CHUNK, SPLICE_F_MOVE | SPLICE_F_MORE);
        int splice_errno = errno;
        tunnel_counters_wait_end(wait_in_counter(d), waited);
        errno = splice_errno;
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        int err = errno;
        if (n < 0 && !d->outbound)
            note_net_error(r, err);
        if (relay_failed(r))
            return NULL; /* the other side or an abort already said why */
        /* The connection's end, or its death whose error a writer's
         * splice dropped (it reads as an end of file then). */
        int lost = n == 0 && !d->outbound ? rpc_socket_lost_error(r->net_fd) : 0;
        if (lost)
            return io_error(r, "read from", d->in_name, lost);
        if (n == 0) {
            g_mutex_lock(&r->lock);
            d->in_eof = TRUE;
            g_mutex_unlock(&r->lock);
            return NULL;
        }
        if (err == EPIPE)
            return NULL; /* the writer stopped and said why */
        return io_error(r, "read from", d->in_name, err);
    }
}

static GError *splice_writer(Direction *d)
{
    TunnelRelay *r = d->relay;
    for (;;) {
        /* No SPLICE_F_MORE here: it corks the socket, and the VMMs'
         * protocol waits for every small reply. */
        gint64 waited = tunnel_counters_wait_begin();
        gssize n = splice(d->pipefd[0], NULL, d->out, NULL, CHUNK, SPLICE_F_MOVE);
        int splice_errno = errno;
        tunnel_counters_wait_end(wait_out_counter(d), waited);
        errno = splice_errno;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            if (d->outbound)
                note_net_error(r, err);
            return relay_failed(r) ? NULL : io_error(r, "write to", d->out_name, err);
        }
        if (n == 0)
            return NULL; /* the reader closed the pipe: its end of stream, or a failure */
        count(r, d->outbound, n);
        if (d->outbound)
            throttle(r);
    }
}

/* ---- TLS: each byte copied once, into or out of the cipher ---- */

/* Inbound: a record (16 KiB) and every further one already received, so
 * the VMM gets fewer, larger writes. */
static gssize read_records_from(Direction *d, RpcTransport *net, guint slot, GError **error)
{
    gsize total = 0;
    guint k = 0;
    do {
        RpcTlsRecord *rec;
        const guint8 *data;
        gssize m = rpc_tls_transport_read_record(net, &rec, &data,
                                                 k == 0 ? error : &d->read_error);
        if (m <= 0) {
            if (k == 0)
                return m;
            break; /* an end comes again; an error is kept for after this data */
        }
        d->rec[slot][k] = rec;
        d->rec_iov[slot][k].iov_base = (void *)data;
        d->rec_iov[slot][k].iov_len = m;
        k++;
        total += m;
    } while (k < TLS_SLOT_RECORDS && !d->read_error && rpc_tls_transport_has_pending(net));
    d->nrec[slot] = k;
    return total;
}

static gssize read_records(Direction *d, guint slot, GError **error)
{
    return read_records_from(d, d->relay->net, slot, error);
}

/* Inbound: a slot's records to the VMM, in as few calls as it takes. */
static gboolean send_records(Direction *d, guint slot, int *err)
{
    struct iovec *iov = d->rec_iov[slot];
    guint cnt = d->nrec[slot];
    while (cnt > 0) {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = cnt};
        gssize w = sendmsg(d->relay->vmm_fd, &msg, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            *err = w < 0 ? errno : EPIPE;
            return FALSE;
        }
        while (cnt > 0 && (gsize)w >= iov->iov_len) {
            w -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (guint8 *)iov->iov_base + w;
            iov->iov_len -= w;
        }
    }
    return TRUE;
}

static GError *copy_reader(Direction *d)
{
    TunnelRelay *r = d->relay;
    for (;;) {
        g_mutex_lock(&r->lock);
        while (!r->failed && !d->writer_gone && d->count == TLS_BUFFERS) {
            d->reader_waiting = TRUE;
            g_cond_wait(hand_off(d), &r->lock);
            d->reader_waiting = FALSE;
        }
        gboolean stop = r->failed || d->writer_gone;
        guint slot = (d->head + d->count) % TLS_BUFFERS;
        g_mutex_unlock(&r->lock);
        if (stop)
            return NULL;
        if (d->outbound && !d->buf[slot])
            d->buf[slot] = g_malloc(TLS_BUFFER_SIZE);

        gssize n;
        g_autoptr(GError) e = g_steal_pointer(&d->read_error);
        gint64 waited = tunnel_counters_wait_begin();
        guint64 dec = net_cipher_us(d, FALSE, waited);
        if (e) {
            n = -1;
        } else if (d->outbound) {
            do {
                n = read(r->vmm_fd, d->buf[slot], TLS_BUFFER_SIZE);
            } while (n < 0 && errno == EINTR);
        } else {
            n = read_records(d, slot, &e);
        }
        int err = n < 0 ? (d->outbound ? errno : ECONNRESET) : 0;
        tunnel_counters_wait_end_split(&r->counters, wait_in_counter(d), waited, dec,
                                       net_cipher_us(d, FALSE, waited));
        g_mutex_lock(&r->lock);
        if (n > 0) {
            d->len[slot] = n;
            d->count++;
        } else if (n == 0 && !r->failed) {
            d->in_eof = TRUE;
        }
        if (d->writer_waiting)
            g_cond_broadcast(hand_off(d));
        gboolean failed = r->failed;
        g_mutex_unlock(&r->lock);
        if (n > 0)
            continue;
        if (n == 0 || failed)
            return NULL;
        if (e)
            return g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot read from the %s: %s",
                               d->in_name, e->message);
        return io_error(r, "read from", d->in_name, err);
    }
}

static GError *copy_writer(Direction *d)
{
    TunnelRelay *r = d->relay;
    for (;;) {
        g_mutex_lock(&r->lock);
        while (!r->failed && !d->reader_gone && d->count == 0) {
            d->writer_waiting = TRUE;
            g_cond_wait(hand_off(d), &r->lock);
            d->writer_waiting = FALSE;
        }
        if (r->failed || d->count == 0) {
            g_mutex_unlock(&r->lock);
            return NULL; /* failed, or the reader is gone: the caller checks in_eof */
        }
        guint slot = d->head;
        gsize n = d->len[slot];
        g_mutex_unlock(&r->lock);

        g_autoptr(GError) e = NULL;
        gboolean ok;
        int err = EPIPE;
        gint64 waited = tunnel_counters_wait_begin();
        guint64 enc = net_cipher_us(d, TRUE, waited);
        if (d->outbound) {
            ok = rpc_transport_write_all(r->net, d->buf[slot], n, &e);
        } else {
            ok = send_records(d, slot, &err);
            if (ok)
                slot_free_records(d, slot);
        }
        tunnel_counters_wait_end_split(&r->counters, wait_out_counter(d), waited, enc,
                                       net_cipher_us(d, TRUE, waited));
        if (!ok) {
            if (relay_failed(r))
                return NULL;
            if (e) {
                if (d->outbound && g_str_has_suffix(e->message, g_strerror(EPIPE))) {
                    g_mutex_lock(&r->lock);
                    r->net_epipe = TRUE; /* the TLS transport noted the cause it met */
                    g_mutex_unlock(&r->lock);
                }
                return g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot write to the %s: %s",
                                   d->out_name, e->message);
            }
            return io_error(r, "write to", d->out_name, err);
        }
        g_mutex_lock(&r->lock);
        d->head = (d->head + 1) % TLS_BUFFERS;
        d->count--;
        if (d->reader_waiting)
            g_cond_broadcast(hand_off(d));
        g_mutex_unlock(&r->lock);
        count(r, d->outbound, n);
        if (d->outbound)
            throttle(r);
    }
}

/* ---- resuming: the send ring, a broken connection, a new one ---- */

typedef enum {
    BROKEN_WAIT,   /* detached (or already): wait for the new connection */
    BROKEN_OVER,   /* the relay failed meanwhile: stop quietly */
    BROKEN_FAIL,   /* not resumable: fail with the error */
    BROKEN_STUCK,  /* the peer's host still answers: fail, not waited for */
} Broken;

/* A call on the data connection (fd, of generation gen) failed with err.
 * A path that broke (a timeout) may come back for the whole resume time;
 * a connection the peer reset, soon if at all; one the peer ended in order
 * (its relay failed or finished), or one whose peer is frozen (it timed out
 * on a zero window its host kept answering), never. */
static Broken net_broken(TunnelRelay *r, int err, int fd, guint gen)
{
    gboolean stuck = err == ETIMEDOUT && rpc_socket_timed_out_on_zero_window(fd);
    g_mutex_lock(&r->lock);
    if (gen == r->gen)
        note_net_error(r, err); /* the cause of the current connection's end */
    Broken b = BROKEN_WAIT;
    if (r->failed)
        b = BROKEN_OVER;
    else if (gen != r->gen || r->detached)
        b = BROKEN_WAIT; /* an old connection's, or already told */
    else if (!r->resume_timeout_s || r->net_in_eof)
        b = BROKEN_FAIL;
    else if (stuck)
        b = BROKEN_STUCK;
    if (b == BROKEN_WAIT && gen == r->gen && !r->detached) {
        gboolean broke = err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH ||
                         err == ENETDOWN;
        r->detached = TRUE;
        r->detach_errno = err;
        r->resume_wait_s =
            broke ? r->resume_timeout_s : MIN(r->resume_timeout_s, r->ended_grace_s);
        r->resume_deadline_us = g_get_monotonic_time() + (gint64)r->resume_wait_s * G_USEC_PER_SEC;
        shutdown(fd, SHUT_RDWR); /* the other threads on it wake and wait */
        g_cond_broadcast(&r->hand_off[1]);
        g_autofree char *o = ferry_format_size(r->stats.bytes_out);
        g_autofree char *i = ferry_format_size(r->stats.bytes_in);
        FERRY_INFO("the %s closed after %s sent, %s received: %s; waiting up to %u s for it to "
                   "come back",
                   r->peer_name, o, i, g_strerror(err), r->resume_wait_s);
        g_cond_broadcast(&r->cond);
    }
    g_mutex_unlock(&r->lock);
    return b;
}

/* e, saying so when the peer is stuck (b). */
static GError *name_stuck(Broken b, GError *e)
{
    if (b == BROKEN_STUCK) {
        char *m = g_strdup_printf("%s; " TUNNEL_PEER_STUCK, e->message);
        g_free(e->message);
        e->message = m;
    }
    return e;
}

static GError *broken_error(TunnelRelay *r, Broken b, const char *verb, const char *hop, int err)
{
    if (b == BROKEN_OVER || b == BROKEN_WAIT)
        return NULL;
    return name_stuck(b, io_error(r, verb, hop, err));
}

/* A detached relay whose connection did not come back in time. */
static void resume_expired_locked(TunnelRelay *r, const GError *last)
{
    g_autofree char *o = ferry_format_size(r->stats.bytes_out);
    g_autofree char *i = ferry_format_size(r->stats.bytes_in);
    fail_locked(r, g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                               "the %s closed after %s sent, %s received: %s, and did not come "
                               "back within %u s%s%s%s",
                               r->peer_name, o, i,
                               r->detach_errno ? g_strerror(r->detach_errno) : "broken",
                               r->resume_wait_s, last ? " (the last attempt: " : "",
                               last ? last->message : "", last ? ")" : ""));
}

static void check_resume_deadline_locked(TunnelRelay *r)
{
    if (r->detached && !r->failed && g_get_monotonic_time() >= r->resume_deadline_us)
        resume_expired_locked(r, NULL);
}

/* Outbound, resumable: the VMM's bytes into the ring. It never overwrites
 * the last ring_keep bytes sent. */
static GError *ring_reader(Direction *d)
{
    TunnelRelay *r = d->relay;
    for (;;) {
        g_mutex_lock(&r->lock);
        gint64 waited = tunnel_counters_wait_begin();
        while (!r->failed && !d->writer_gone &&
               r->ring_end - r->ring_sent >= r->ring_cap - r->ring_keep)
            g_cond_wait(&r->cond, &r->lock);
        tunnel_counters_wait_end(&r->counters.wait_net_send_us, waited);
        if (r->failed || d->writer_gone) {
            g_mutex_unlock(&r->lock);
            return NULL;
        }
        if (!r->ring)
            r->ring = g_malloc(r->ring_cap); /* pages are only touched as written */
        guint64 at = r->ring_end;
        gsize off = at % r->ring_cap;
        gsize room = (gsize)(r->ring_sent + r->ring_cap - r->ring_keep - at);
        gsize len = MIN(MIN(room, r->ring_cap - off), (gsize)CHUNK);
        r->ring_reading = at + len;
        guint8 *into = r->ring + off;
        g_mutex_unlock(&r->lock);

        waited = tunnel_counters_wait_begin();
        gssize n;
        do {
            n = read(r->vmm_fd, into, len);
        } while (n < 0 && errno == EINTR);
        int err = errno;
        tunnel_counters_wait_end(wait_in_counter(d), waited);
        g_mutex_lock(&r->lock);
        r->ring_reading = r->ring_end;
        if (n > 0)
            r->ring_end += n;
        else if (n == 0)
            d->in_eof = TRUE;
        g_cond_broadcast(&r->cond);
        gboolean failed = r->failed;
        g_mutex_unlock(&r->lock);
        if (n > 0)
            continue;
        if (n == 0 || failed)
            return NULL;
        return io_error(r, "read from", d->in_name, err);
    }
}

/* The outbound writers of a resumable relay (ring_writer, keep_writer)
 * wait here, lock held, until they have something to do: bytes from
 * ring_sent to *end (read under the lock: the ring's reader moves it), or
 * more to come (more), or the end to pass on, or a resumed connection.
 * FALSE: the relay failed (lock still held). */
static gboolean wait_to_send_locked(TunnelRelay *r, Direction *d, const guint64 *end,
                                    gboolean more)
{
    gint64 waited = tunnel_counters_wait_begin();
    for (;;) {
        check_resume_deadline_locked(r);
        if (r->failed)
            break;
        if (!r->detached && (r->ring_sent < *end || more ||
                             (d->in_eof && (r->shut_gen != r->gen + 1 || r->net_in_eof))))
            break;
        if (r->detached)
            g_cond_wait_until(&r->cond, &r->lock, r->resume_deadline_us);
        else
            g_cond_wait(&r->cond, &r->lock);
    }
    tunnel_counters_wait_end(wait_in_counter(d), waited);
    return !r->failed;
}

/* Everything read was sent on connection gen (lock held, released here):
 * passes the end of stream on, once per connection. FALSE when it was, and
 * the writer waited until the peer ended its side too: done. */
static gboolean pass_end_on(TunnelRelay *r, RpcTransport *net, int fd, guint gen)
{
    if (r->shut_gen == gen + 1) {
        g_mutex_unlock(&r->lock);
        return FALSE; /* both ends passed on */
    }
    r->shut_gen = gen + 1;
    g_mutex_unlock(&r->lock);
    if (r->tls)
        rpc_tls_transport_close_write(net);
    else
        shutdown(fd, SHUT_WR);
    return TRUE;
}

/* A send moved fresh new bytes and again resent ones. */
static void count_sent(TunnelRelay *r, gsize fresh, gsize again)
{
    if (again)
        tunnel_counters_add(&r->counters.bytes_resent, again);
    if (fresh) {
        count(r, TRUE, fresh);
        throttle(r);
    }
}

/* A send on connection gen (fd) moved nothing (n) and said err: the
 * connection broke (BROKEN_WAIT: a resume comes), or why not. */
static Broken send_broken(TunnelRelay *r, gssize n, int *err, int fd, guint gen)
{
    if (*err == EPIPE || n == 0) {
        int lost = rpc_socket_lost_error(fd);
        *err = lost ? lost : *err ? *err : EPIPE;
    }
    return net_broken(r, *err, fd, gen);
}

/* Outbound, resumable: the ring to the network, from ring_sent (which a
 * resume sets back to what the peer received). Once the VMM ended and all
 * is sent, passes the end on, and stays until the peer ended its side: a
 * break before that still resends the rest and passes the end on again. */
static GError *ring_writer(Direction *d)
{
    TunnelRelay *r = d->relay;
    for (;;) {
        g_mutex_lock(&r->lock);
        if (!wait_to_send_locked(r, d, &r->ring_end, FALSE)) {
            g_mutex_unlock(&r->lock);
            return NULL;
        }
        int fd = r->net_fd;
        RpcTransport *net = r->net; /* kept (old_nets) until the relay goes */
        guint gen = r->gen;
        if (r->ring_sent == r->ring_end) {
            if (pass_end_on(r, net, fd, gen))
                continue;
            return NULL;
        }
        guint64 from = r->ring_sent;
        gsize off = from % r->ring_cap;
        gsize len = MIN(MIN((gsize)(r->ring_end - from), r->ring_cap - off), (gsize)CHUNK);
        const guint8 *p = r->ring + off;
        r->out_sending = TRUE; /* a resume waits: what this send moves counts */
        g_mutex_unlock(&r->lock);

        gint64 waited = tunnel_counters_wait_begin();
        guint64 enc = net_cipher_us(d, TRUE, waited);
        gssize n;
        int err = 0;
        if (r->tls) {
            /* All or nothing here: the peer's count says what arrived. */
            n = rpc_transport_write_all(net, p, len, NULL) ? (gssize)len : -1;
            if (n < 0)
                err = g_atomic_int_get(&net->os_error) ? g_atomic_int_get(&net->os_error) : EPIPE;
        } else {
            n = send(fd, p, len, MSG_NOSIGNAL);
            err = errno;
        }
        tunnel_counters_wait_end_split(&r->counters, wait_out_counter(d), waited, enc,
                                       net_cipher_us(d, TRUE, waited));
        g_mutex_lock(&r->lock);
        r->out_sending = FALSE;
        g_cond_broadcast(&r->cond);
        g_mutex_unlock(&r->lock);
        if (n < 0 && err == EINTR)
            continue;
        if (n > 0) {
            g_mutex_lock(&r->lock);
            gsize fresh = 0, again = 0;
            /* Bytes the old connection took may have reached the peer: they
             * count as sent even when it broke meanwhile (its count says). */
            if (gen == r->gen && r->ring_sent == from) {
                r->ring_sent += n;
                if (r->ring_sent > r->ring_sent_max) {
                    fresh = r->ring_sent - MAX(r->ring_sent_max, from);
                    r->ring_sent_max = r->ring_sent;
                }
                again = n - fresh;
                r->resent += again;
                g_cond_broadcast(&r->cond); /* room for the reader */
            }
            g_mutex_unlock(&r->lock);
            count_sent(r, fresh, again);
            continue;
        }
        Broken b = send_broken(r, n, &err, fd, gen);
        if (b != BROKEN_WAIT)
            return broken_error(r, b, "write to", d->out_name, err);
    }
}

/* Outbound, resumable, plaintext: the pipe to the network, each chunk
 * kept (tee: the pipe's pages, no copy) before it is spliced out. A resume
 * sets ring_sent back to what the peer received: the bytes from there to
 * ring_sent_max are spliced again from the keep before anything new. The
 * end is passed on as ring_writer does. */
static GError *keep_writer(Direction *d)
{
    TunnelRelay *r = d->relay;
    gboolean pipe_eof = FALSE; /* the reader closed the pipe, now empty */
    gboolean short_told = FALSE;
    for (;;) {
        guint64 teed = tunnel_keep_end(r->keep);
        g_mutex_lock(&r->lock);
        if (!wait_to_send_locked(r, d, &teed, !pipe_eof)) {
            g_mutex_unlock(&r->lock);
            return NULL;
        }
        int fd = r->net_fd;
        guint gen = r->gen;
        guint64 from = r->ring_sent, sent = r->ring_sent_max;
        if (from == teed && pipe_eof) {
            if (pass_end_on(r, r->net, fd, gen))
                continue;
            return NULL;
        }
        if (from == teed) {
            /* All kept was sent: drop what no resume needs (a resume's
             * check sees the new start at once), then keep the next. */
            guint64 drop = MIN(from, sent > r->ring_keep ? sent - r->ring_keep : 0);
            r->keep_from = MAX(r->keep_from, drop);
            g_mutex_unlock(&r->lock);
            tunnel_keep_drop_before(r->keep, drop);
            /* A bounded wait: a resume (the top) must not wait for the
             * VMM's next bytes, which may wait for those to be resent. */
            struct pollfd pfd = {.fd = d->pipefd[0], .events = POLLIN};
            gint64 waited = tunnel_counters_wait_begin();
            int pr = poll(&pfd, 1, POLL_US / 1000);
            tunnel_counters_wait_end(wait_in_counter(d), waited);
            if (pr < 0 && errno != EINTR)
                return io_error(r, "wait for", d->in_name, errno);
            if (pr <= 0)
                continue;
            gssize n = tunnel_keep_tee(r->keep, d->pipefd[0], CHUNK);
            int err = errno;
            g_mutex_lock(&r->lock);
            r->keep_from = MAX(r->keep_from, tunnel_keep_from(r->keep));
            g_mutex_unlock(&r->lock);
            if (n == 0)
                pipe_eof = TRUE;
            if (tunnel_keep_short(r->keep) && !short_told) {
                short_told = TRUE;
                FERRY_WARN("the %s keeps fewer of the bytes it sent than its kernels may hold "
                           "(no pipe buffer left): a break may not be resumable",
                           d->out_name);
            }
            if (n >= 0 || err == EAGAIN || err == EINTR)
                continue;
            return g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                               "cannot keep what is sent on the %s for a resume: %s",
                               d->out_name, g_strerror(err));
        }
        r->out_sending = TRUE; /* a resume waits: what this send moves counts */
        g_mutex_unlock(&r->lock);

        gint64 waited = tunnel_counters_wait_begin();
        gssize n = from < sent ? tunnel_keep_send(r->keep, from, sent, fd)
                               : splice(d->pipefd[0], NULL, fd, NULL, teed - sent, SPLICE_F_MOVE);
        int err = errno;
        tunnel_counters_wait_end(wait_out_counter(d), waited);
        g_mutex_lock(&r->lock);
        r->out_sending = FALSE;
        gsize fresh = 0, again = 0;
        if (n > 0) {
            if (from == sent) {
                r->ring_sent_max += n; /* out of the pipe: sent, whatever the connection */
                fresh = n;
            }
            /* Bytes the old connection took may have reached the peer: they
             * count as sent even when it broke meanwhile (its count says). */
            if (gen == r->gen && r->ring_sent == from) {
                r->ring_sent += n;
                again = n - fresh;
                r->resent += again;
            }
        }
        g_cond_broadcast(&r->cond);
        g_mutex_unlock(&r->lock);
        if (n > 0) {
            count_sent(r, fresh, again);
            continue;
        }
        if (n < 0 && err == EINTR)
            continue;
        if (n < 0 && from < sent && (err == ERANGE || err == ENOBUFS))
            return g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                               "cannot send again what the %s lost: the bytes from %"
                               G_GUINT64_FORMAT " are no longer kept (%s)",
                               d->out_name, from, g_strerror(err));
        Broken b = send_broken(r, n, &err, fd, gen);
        if (b != BROKEN_WAIT)
            return broken_error(r, b, "write to", d->out_name, err);
    }
}

/* An inbound reader's end of file on connection gen, under r->lock, *lost
 * the cause the socket's state gave (0: none): TRUE for the peer's orderly
 * end, recorded (nothing to resume then). A reset whose error the writer's
 * send took also reads as end of file: *lost becomes ECONNRESET, FALSE. */
static gboolean peer_ended_locked(TunnelRelay *r, Direction *d, int fd, guint gen, int *lost)
{
    if (!*lost && r->shut_gen != gen + 1 && rpc_socket_reset_before_our_end(fd))
        *lost = ECONNRESET;
    if (*lost)
        return FALSE;
    d->in_eof = TRUE;
    r->net_in_eof = TRUE; /* the peer passed its end on */
    g_cond_broadcast(&r->cond);
    return TRUE;
}

/* Inbound, resumable: the network into the pipe, counted; waits while the
 * connection is being replaced. */
static GError *net_reader(Direction *d)
{
    TunnelRelay *r = d->relay;
    for (;;) {
        g_mutex_lock(&r->lock);
        while (!r->failed && r->detached) {
            r->in_parked = TRUE;
            g_cond_broadcast(&r->cond);
            g_cond_wait(&r->cond, &r->lock);
        }
        r->in_parked = FALSE;
        gboolean failed = r->failed;
        int fd = r->net_fd;
        guint gen = r->gen;
        g_mutex_unlock(&r->lock);
        if (failed)
            return NULL;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        gint64 waited = tunnel_counters_wait_begin();
        int pr = poll(&pfd, 1, -1);
        gssize n = pr < 0 ? -1
                          : splice(fd, NULL, d->pipefd[1], NULL, CHUNK,
                                   SPLICE_F_MOVE | SPLICE_F_MORE);
        int err = errno;
        tunnel_counters_wait_end(wait_in_counter(d), waited);
        if (n > 0) {
            g_mutex_lock(&r->lock);
            r->net_received += n;
            g_mutex_unlock(&r->lock);
            continue;
        }
        if (n < 0 && (err == EINTR || err == EAGAIN))
            continue;
        if (n < 0 && err == EPIPE && pr >= 0)
            return NULL; /* the writer to the VMM stopped and said why */
        int lost = n == 0 ? rpc_socket_lost_error(fd) : err;
        g_mutex_lock(&r->lock);
        gboolean replaced = r->failed || gen != r->gen || r->detached;
        if (n == 0 && !replaced && peer_ended_locked(r, d, fd, gen, &lost)) {
            g_mutex_unlock(&r->lock);
            return NULL;
        }
        g_mutex_unlock(&r->lock);
        if (replaced && !lost)
            continue; /* the top waits or stops */
        Broken b = net_broken(r, lost ? lost : ECONNRESET, fd, gen);
        if (b != BROKEN_WAIT)
            return broken_error(r, b, "read from", d->in_name, lost ? lost : ECONNRESET);
    }
}

/* Inbound over TLS, resumable: the decrypted records into the hand-off
 * slots (the writer gives them to the VMM), counted; waits while the
 * connection is being replaced. A close_notify or a plain end (the peer's
 * relay passed its end on, or failed) is an end; an error or an end the
 * socket's TCP state calls a timeout is a break. */
static GError *tls_net_reader(Direction *d)
{
    TunnelRelay *r = d->relay;
    for (;;) {
        g_mutex_lock(&r->lock);
        while (!r->failed && !d->writer_gone && (r->detached || d->count == TLS_BUFFERS)) {
            if (r->detached) {
                r->in_parked = TRUE;
                g_cond_broadcast(&r->cond);
                g_cond_wait(&r->cond, &r->lock);
                continue;
            }
            d->reader_waiting = TRUE;
            g_cond_wait(hand_off(d), &r->lock);
            d->reader_waiting = FALSE;
        }
        r->in_parked = FALSE;
        gboolean stop = r->failed || d->writer_gone;
        guint slot = (d->head + d->count) % TLS_BUFFERS;
        RpcTransport *net = r->net;
        int fd = r->net_fd;
        guint gen = r->gen;
        g_mutex_unlock(&r->lock);
        if (stop)
            return NULL;

        g_autoptr(GError) e = NULL;
        gint64 waited = tunnel_counters_wait_begin();
        guint64 dec = net_cipher_us(d, FALSE, waited);
        gssize n = read_records_from(d, net, slot, &e);
        g_clear_error(&d->read_error); /* the session is broken: its next read says so */
        tunnel_counters_wait_end_split(&r->counters, wait_in_counter(d), waited, dec,
                                       net_cipher_us(d, FALSE, waited));
        if (n > 0) {
            g_mutex_lock(&r->lock);
            r->net_received += n;
            d->len[slot] = n;
            d->count++;
            if (d->writer_waiting)
                g_cond_broadcast(hand_off(d));
            g_mutex_unlock(&r->lock);
            continue;
        }
        int lost = rpc_socket_lost_error(fd);
        if (n < 0 && !lost)
            lost = g_atomic_int_get(&net->os_error) ? g_atomic_int_get(&net->os_error)
                                                    : ECONNRESET;
        g_mutex_lock(&r->lock);
        gboolean replaced = r->failed || gen != r->gen || r->detached;
        if (n == 0 && !replaced && peer_ended_locked(r, d, fd, gen, &lost)) {
            g_cond_broadcast(hand_off(d));
            g_mutex_unlock(&r->lock);
            return NULL;
        }
        g_mutex_unlock(&r->lock);
        if (replaced)
            continue; /* the top waits or stops */
        Broken b = net_broken(r, lost, fd, gen);
        if (b == BROKEN_WAIT)
            continue;
        if (b == BROKEN_OVER)
            return NULL;
        return name_stuck(b, e ? g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                                             "cannot read from the %s: %s", d->in_name,
                                             e->message)
                               : io_error(r, "read from", d->in_name, lost));
    }
}

/* Waits (lock held) until the network reader stopped on the old connection
 * and the ring's writer is out of its send(): the positions are final. */
static gboolean wait_parked_locked(TunnelRelay *r, gint64 until)
{
    while (!r->failed && r->detached && ((!r->in_parked && !r->net_reader_done) || r->out_sending))
        if (!g_cond_wait_until(&r->cond, &r->lock, until))
            break;
    return !r->failed && r->detached && (r->in_parked || r->net_reader_done) && !r->out_sending;
}

gboolean tunnel_relay_hold(TunnelRelay *r, guint64 *ours, GError **error)
{
    g_mutex_lock(&r->lock);
    if (!r->resume_timeout_s || r->failed || r->threads_done == 4) {
        g_mutex_unlock(&r->lock);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the migration's data connection %s",
                    r->resume_timeout_s ? "is over here" : "cannot be resumed");
        return FALSE;
    }
    if (!r->detached) {
        /* It still looked alive here: it is dead to the source. */
        r->detached = TRUE;
        r->detach_errno = 0;
        r->resume_wait_s = r->resume_timeout_s;
        r->resume_deadline_us =
            g_get_monotonic_time() + (gint64)r->resume_wait_s * G_USEC_PER_SEC;
        shutdown(r->net_fd, SHUT_RDWR);
        g_cond_broadcast(&r->cond);
        g_cond_broadcast(&r->hand_off[1]);
    }
    gboolean parked = wait_parked_locked(r, g_get_monotonic_time() + PARK_WAIT_US);
    *ours = r->net_received;
    g_mutex_unlock(&r->lock);
    if (!parked)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the relay did not let its old data connection go in time");
    return parked;
}

gboolean tunnel_relay_reattach(TunnelRelay *r, RpcTransport *net, guint64 theirs, GError **error)
{
    g_mutex_lock(&r->lock);
    if (r->failed || !r->detached) {
        g_mutex_unlock(&r->lock);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the migration's data connection %s",
                    r->failed ? "is over here" : "did not wait for a new connection");
        return FALSE;
    }
    guint64 top = MAX(r->ring_end, r->ring_reading);
    guint64 kept = r->keep ? r->keep_from : top > r->ring_cap ? top - r->ring_cap : 0;
    if (theirs > r->ring_sent_max || theirs < kept) {
        GError *e = g_error_new(FERRY_ERROR, FERRY_ERR_RPC,
                                "cannot resume the %s: the peer received %" G_GUINT64_FORMAT
                                " bytes, while %" G_GUINT64_FORMAT " were sent and those from %"
                                G_GUINT64_FORMAT " kept",
                                r->peer_name, theirs, r->ring_sent_max, kept);
        g_propagate_error(error, g_error_copy(e));
        fail_locked(r, e);
        g_mutex_unlock(&r->lock);
        return FALSE;
    }
    g_ptr_array_add(r->old_nets, r->net);
    r->net = net;
    r->net_fd = net->fd;
    r->gen++;
    guint64 again = r->ring_sent_max - theirs;
    r->ring_sent = theirs;
    r->detached = FALSE;
    r->reconnections++;
    FERRY_INFO("the %s resumed on a new connection: %" G_GUINT64_FORMAT " bytes to send again, %"
               G_GUINT64_FORMAT " received here",
               r->peer_name, again, r->net_received);
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
    return TRUE;
}

/* Errors no new attempt can cure: the destination no longer listens (its
 * daemon is gone, or the migration is over there), or refused. */
static gboolean reconnect_error_is_final(const GError *e)
{
    if (g_error_matches(e, FERRY_ERROR, FERRY_ERR_OPERATION_DENIED))
        return TRUE;
    return g_error_matches(e, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR) &&
           g_str_has_suffix(e->message, g_strerror(ECONNREFUSED));
}

/* The source's: while the relay waits for a new data connection, makes one
 * every RECONNECT_PAUSE_US (each within RECONNECT_ATTEMPT_MS) until it
 * carries on, the destination refuses, or the resume time is up. */
static gpointer reconnector_thread(gpointer data)
{
    TunnelRelay *r = data;
    g_autoptr(GError) last = NULL;
    guint attempts = 0;
    g_mutex_lock(&r->lock);
    for (;;) {
        while (!r->failed && r->threads_done < 4 && !r->detached)
            g_cond_wait(&r->cond, &r->lock);
        if (r->failed || r->threads_done == 4)
            break;
        gint64 now = g_get_monotonic_time();
        if (now >= r->resume_deadline_us) {
            resume_expired_locked(r, last);
            break;
        }
        if (!wait_parked_locked(r, r->resume_deadline_us))
            continue; /* failed, expired (the top says), or resumed */
        guint64 ours = r->net_received;
        gint64 left_ms = (r->resume_deadline_us - now) / 1000;
        g_mutex_unlock(&r->lock);
        attempts++;
        g_clear_error(&last);
        guint64 theirs = 0;
        RpcTransport *t = r->reconnect(r->reconnect_data, ours, &theirs,
                                       (int)CLAMP(left_ms, 200, RECONNECT_ATTEMPT_MS), &last);
        gboolean ok = t && tunnel_relay_reattach(r, t, theirs, &last);
        if (t && !ok)
            rpc_transport_free(t);
        g_mutex_lock(&r->lock);
        if (ok) {
            FERRY_INFO("resumed the %s (attempt %u)", r->peer_name, attempts);
            attempts = 0;
            continue;
        }
        if (r->failed)
            break;
        if (reconnect_error_is_final(last)) {
            g_autofree char *o = ferry_format_size(r->stats.bytes_out);
            g_autofree char *i = ferry_format_size(r->stats.bytes_in);
            fail_locked(r, g_error_new(FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                                       "the %s closed after %s sent, %s received: %s, and could "
                                       "not be resumed: %s",
                                       r->peer_name, o, i,
                                       r->detach_errno ? g_strerror(r->detach_errno) : "broken",
                                       last->message));
            break;
        }
        FERRY_INFO("reconnecting the %s (attempt %u): %s", r->peer_name, attempts, last->message);
        gint64 pause = g_get_monotonic_time() + RECONNECT_PAUSE_US;
        while (!r->failed && g_cond_wait_until(&r->cond, &r->lock, pause))
            ;
    }
    g_mutex_unlock(&r->lock);
    tunnel_relay_unref(r);
    return NULL;
}

gboolean tunnel_relay_break_silent_path(TunnelRelay *r, guint silent_ms)
{
    g_mutex_lock(&r->lock);
    gboolean resumable = r->resume_timeout_s && !r->failed && !r->detached && !r->net_in_eof;
    int fd = r->net_fd; /* a replaced connection's socket stays open (old_nets) */
    guint gen = r->gen;
    g_mutex_unlock(&r->lock);
    if (!resumable || rpc_socket_peer_host_answers(fd, silent_ms))
        return FALSE;
    FERRY_INFO("the %s moved nothing and its peer's host acknowledged nothing for %u ms: "
               "taken for a broken connection",
               r->peer_name, silent_ms);
    return net_broken(r, ETIMEDOUT, fd, gen) == BROKEN_WAIT;
}

gboolean tunnel_relay_awaits_resume(TunnelRelay *r)
{
    g_mutex_lock(&r->lock);
    gboolean waiting = r->detached && !r->failed;
    g_mutex_unlock(&r->lock);
    return waiting;
}

void tunnel_relay_get_resume_stats(TunnelRelay *r, guint *reconnections, guint64 *resent)
{
    g_mutex_lock(&r->lock);
    *reconnections = r->reconnections;
    *resent = r->resent;
    g_mutex_unlock(&r->lock);
}

/* ---- the threads ---- */

static void thread_done(TunnelRelay *r, GError *why)
{
    g_mutex_lock(&r->lock);
    if (why)
        fail_locked(r, why);
    r->threads_done++;
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
}

/* The last of a direction's two threads frees it. */
static void direction_unref(Direction *d, gboolean *gone_flag)
{
    TunnelRelay *r = d->relay;
    g_mutex_lock(&r->lock);
    *gone_flag = TRUE;
    gboolean last = d->reader_gone && d->writer_gone;
    g_cond_broadcast(&r->cond);
    g_cond_broadcast(hand_off(d));
    g_mutex_unlock(&r->lock);
    if (last)
        direction_free(d);
}

static gpointer reader_thread(gpointer data)
{
    Direction *d = data;
    TunnelRelay *r = d->relay;
    GError *why = !r->resume_timeout_s ? (r->tls ? copy_reader(d) : splice_reader(d))
                  : d->outbound        ? (r->keep ? splice_reader(d) : ring_reader(d))
                  : r->tls             ? tls_net_reader(d)
                                       : net_reader(d);
    if (!r->tls && d->pipefd[1] >= 0)
        close(d->pipefd[1]); /* the writer drains the pipe, then sees the end */
    if (!d->outbound) {
        g_mutex_lock(&r->lock);
        r->net_reader_done = TRUE;
        g_mutex_unlock(&r->lock); /* thread_done wakes the waiters */
    }
    thread_done(r, why);
    direction_unref(d, &d->reader_gone);
    tunnel_relay_unref(r);
    return NULL;
}

static gpointer writer_thread(gpointer data)
{
    Direction *d = data;
    TunnelRelay *r = d->relay;
    gboolean ring = r->resume_timeout_s && d->outbound;
    GError *why = ring     ? (r->keep ? keep_writer(d) : ring_writer(d))
                  : r->tls ? copy_writer(d)
                           : splice_writer(d);
    if (!r->tls && d->pipefd[0] >= 0)
        close(d->pipefd[0]); /* a reader blocked on a full pipe gets EPIPE */
    g_mutex_lock(&r->lock);
    gboolean eof = !why && !r->failed && d->in_eof && !ring; /* the ring's writer passed it on */
    g_mutex_unlock(&r->lock);
    if (eof) {
        /* Everything read was written: pass the end of stream on. */
        if (d->outbound && r->tls)
            rpc_tls_transport_close_write(r->net);
        else
            shutdown(d->out, SHUT_WR);
    }
    thread_done(r, why);
    direction_unref(d, &d->writer_gone);
    tunnel_relay_unref(r);
    return NULL;
}

static void fail_start(TunnelRelay *r, GError *why, guint threads_not_started)
{
    g_mutex_lock(&r->lock);
    fail_locked(r, why);
    r->threads_done += threads_not_started;
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
}

void tunnel_relay_start(TunnelRelay *relay)
{
    static const char *const names[2][2] = {{"relay-out", "relay-out-wr"},
                                            {"relay-in", "relay-in-wr"}};
    if (relay->resume_timeout_s && !relay->tls && !relay->send_ring) {
        g_autoptr(GError) e = NULL;
        relay->keep = tunnel_keep_new(relay->keep_pipe_size, KEEP_MAX_PIPES, &e);
        if (!relay->keep)
            FERRY_WARN("the %s copies what it sends into a ring: %s", relay->peer_name,
                       e->message);
    }
    for (int i = 0; i < 2; i++) {
        Direction *d = g_new0(Direction, 1);
        d->relay = relay;
        d->outbound = i == 0;
        d->in = d->outbound ? relay->vmm_fd : relay->net_fd;
        d->out = d->outbound ? relay->net_fd : relay->vmm_fd;
        d->in_name = d->outbound ? relay->vmm_name : relay->peer_name;
        d->out_name = d->outbound ? relay->peer_name : relay->vmm_name;
        d->pipefd[0] = d->pipefd[1] = -1;
        if (!relay->tls && !(relay->resume_timeout_s && d->outbound && !relay->keep)) {
            if (pipe2(d->pipefd, O_CLOEXEC) < 0) {
                GError *why = NULL;
                ferry_set_error_errno(&why, errno, "cannot create the relay pipe");
                g_free(d);
                fail_start(relay, why, 4 - 2 * i);
                return;
            }
            fcntl(d->pipefd[1], F_SETPIPE_SZ, CHUNK); /* fewer, larger splices */
        }
        for (int j = 0; j < 2; j++) {
            GError *why = NULL;
            tunnel_relay_ref(relay);
            GThread *t = ferry_thread_try_new(names[i][j], j == 0 ? reader_thread : writer_thread,
                                              d, &why);
            if (t) {
                g_thread_unref(t);
                continue;
            }
            /* The relay fails with the reason: running threads stop, and the
             * caller's wait reports it like any other failure of the relay. */
            tunnel_relay_unref(relay);
            fail_start(relay, why, 4 - 2 * i - j);
            if (j == 0) {
                if (d->pipefd[0] >= 0) {
                    close(d->pipefd[0]);
                    close(d->pipefd[1]);
                }
                direction_free(d);
            } else {
                /* The reader runs: it ends on the shut-down socket. */
                if (d->pipefd[0] >= 0)
                    close(d->pipefd[0]);
                direction_unref(d, &d->writer_gone);
            }
            return;
        }
    }
    if (relay->reconnect) {
        g_autoptr(GError) why = NULL;
        tunnel_relay_ref(relay);
        GThread *t = ferry_thread_try_new("relay-resume", reconnector_thread, relay, &why);
        if (t) {
            g_thread_unref(t);
        } else {
            tunnel_relay_unref(relay);
            FERRY_WARN("a broken %s will not be resumed: %s", relay->peer_name, why->message);
        }
    }
}

/* A failure that ends in EPIPE on the connection: once the connection's
 * reader returned (the failure shut the socket down: it does at once), the
 * cause it met, if any, replaces the EPIPE. The reader may have taken the
 * socket's error in the kernel and not yet noted it (a loaded machine can
 * hold a thread there for a while): up to a second after the failure is
 * waited for it, whatever the caller's deadline (a poller's 200 ms slice
 * cut it short: about 1 in 10 proxy link cuts said only EPIPE). */
static void name_epipe_cause_locked(TunnelRelay *r)
{
    const char *pipe = g_strerror(EPIPE);
    if (!r->net_epipe || !g_str_has_suffix(r->error->message, pipe))
        return;
    gint64 until = r->failed_us + G_USEC_PER_SEC;
    while (!r->net_reader_done && g_cond_wait_until(&r->cond, &r->lock, until))
        ;
    int cause = g_atomic_int_get(&r->net->os_error);
    if (!cause)
        return;
    r->net_epipe = FALSE;
    gsize keep = strlen(r->error->message) - strlen(pipe);
    char *named = g_strdup_printf("%.*s%s", (int)keep, r->error->message, g_strerror(cause));
    g_free(r->error->message);
    r->error->message = named;
}

gboolean tunnel_relay_wait(TunnelRelay *r, gint64 deadline_us, GError **error)
{
    g_mutex_lock(&r->lock);
    for (;;) {
        check_resume_deadline_locked(r);
        if (r->failed || r->threads_done >= 4)
            break;
        gint64 until = deadline_us;
        if (r->detached && (!until || r->resume_deadline_us < until))
            until = r->resume_deadline_us;
        if (!until) {
            g_cond_wait(&r->cond, &r->lock);
        } else if (!g_cond_wait_until(&r->cond, &r->lock, until)) {
            check_resume_deadline_locked(r);
            if (!r->failed && r->threads_done < 4 && deadline_us &&
                g_get_monotonic_time() >= deadline_us) {
                g_mutex_unlock(&r->lock);
                g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                            "the relay to the %s did not end in time", r->peer_name);
                return FALSE;
            }
        }
    }
    gboolean ok = !r->failed;
    if (!ok) {
        name_epipe_cause_locked(r);
        g_propagate_error(error, g_error_copy(r->error));
    }
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
    check_resume_deadline_locked(r);
    gboolean over = r->failed || r->threads_done == 4;
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
    tunnel_rate_set(r->rate, bytes_per_second);
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
}

void tunnel_relay_set_rate(TunnelRelay *r, TunnelRate *rate)
{
    g_mutex_lock(&r->lock);
    tunnel_rate_unref(r->rate);
    r->rate = tunnel_rate_ref(rate);
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
}

const TunnelCounters *tunnel_relay_get_counters(TunnelRelay *r)
{
    return &r->counters;
}
