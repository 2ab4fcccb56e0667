/* A byte transport under the message layer: a TCP or UNIX socket, later with
 * TLS and SASL layers, behind one table of operations so the code above never
 * asks which it has. Blocking I/O: one thread reads while another writes. */
#pragma once

#include <glib.h>
#include <sys/uio.h>

typedef struct RpcTransport RpcTransport;

typedef struct {
    /* Reads up to len bytes; 0 at end of stream, -1 with *error on failure. */
    gssize (*read)(RpcTransport *t, void *buf, gsize len, GError **error);
    /* Writes every byte of the vector, or fails. */
    gboolean (*writev)(RpcTransport *t, const struct iovec *iov, int iovcnt, GError **error);
    /* Wakes blocked readers and writers; later I/O fails. Safe from any thread. */
    void (*shutdown)(RpcTransport *t);
    void (*free)(RpcTransport *t);
} RpcTransportOps;

/* Lifetime: owned by its RpcConnection, freed with it. */
struct RpcTransport {
    const RpcTransportOps *ops;
    int fd;
    char *peer;        /* "127.0.0.1:40122", "unix:/run/x.sock (pid 12 uid 0)" */
    gboolean is_unix;
    gboolean is_secure; /* TLS, or a UNIX socket */
    gint64 peer_uid;   /* UNIX sockets: the peer's uid, else -1 */
    gint64 peer_gid;
    gint64 peer_pid;
    gint os_error; /* the first OS error met on the socket (rpc_transport_os_error) */
    /* Microseconds this layer spent in its cipher (TLS records, a SASL
     * security layer), apart from the socket I/O under it: [RPC_CRYPTO_SEND]
     * encrypting (the writer), [RPC_CRYPTO_RECV] decrypting (the reader).
     * Atomic adds while rpc_transport_crypto_timing is on; the flight
     * recorder tells waiting on encryption from waiting on the network with
     * them. */
    guint64 crypto_us[2];
};

enum { RPC_CRYPTO_SEND, RPC_CRYPTO_RECV };

/* Whether ciphers time themselves (the flight recorder's switch, set once
 * at start; on by default). */
extern gboolean rpc_transport_crypto_timing;

/* A start time for rpc_transport_crypto_end, 0 when timing is off. */
static inline gint64 rpc_transport_crypto_begin(void)
{
    return __atomic_load_n(&rpc_transport_crypto_timing, __ATOMIC_RELAXED) ? g_get_monotonic_time()
                                                                           : 0;
}

/* Adds the time since begin_us, less io_us spent in the socket meanwhile,
 * to the layer's cipher time for dir. */
static inline void rpc_transport_crypto_end(RpcTransport *t, int dir, gint64 begin_us,
                                            gint64 io_us)
{
    if (!begin_us)
        return;
    gint64 spent = g_get_monotonic_time() - begin_us - io_us;
    if (spent > 0)
        __atomic_fetch_add(&t->crypto_us[dir], (guint64)spent, __ATOMIC_RELAXED);
}

static inline guint64 rpc_transport_get_crypto_us(RpcTransport *t, int dir)
{
    return __atomic_load_n(&t->crypto_us[dir], __ATOMIC_RELAXED);
}

/* Takes ownership of fd (a connected stream socket). */
RpcTransport *rpc_transport_new_socket(int fd);
/* For other transports over a socket: fills fd, peer, is_unix, is_secure
 * (UNIX only), peer_uid, peer_gid and peer_pid from the socket; leaves ops alone. */
void rpc_transport_init_socket(RpcTransport *t, int fd);

static inline gssize rpc_transport_read(RpcTransport *t, void *buf, gsize len, GError **error)
{
    return t->ops->read(t, buf, len, error);
}

static inline gboolean rpc_transport_writev(RpcTransport *t, const struct iovec *iov, int iovcnt,
                                            GError **error)
{
    return t->ops->writev(t, iov, iovcnt, error);
}

gboolean rpc_transport_write_all(RpcTransport *t, const void *buf, gsize len, GError **error);
/* Reads exactly len bytes; a short stream is an error naming what was expected. */
gboolean rpc_transport_read_all(RpcTransport *t, void *buf, gsize len, GError **error);
void rpc_transport_shutdown(RpcTransport *t);
/* The error to report for a call on t's socket that failed with err, which
 * it also notes in t->os_error: for EPIPE (a dead socket's error went to
 * another call, or was lost) the cause noted by another call, or the one
 * the socket's TCP state tells (rpc_socket_lost_error), or, waited for a
 * moment, one another thread is about to note; EPIPE when none. */
int rpc_transport_os_error(RpcTransport *t, int err);
void rpc_transport_free(RpcTransport *t);
