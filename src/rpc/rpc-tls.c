/* gnutls credentials, handshakes with libvirt's certificate checks and
 * confirmation byte, and the TLS transport. */
#include "rpc/rpc-tls.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "rpc.tls"

#define DEFAULT_HANDSHAKE_TIMEOUT_MS 10000
/* Ciphertext read ahead per recv(): several records per syscall. */
#define RX_AHEAD_SIZE (64 * 1024)
/* Ciphertext collected before one send() in bulk writes: about eight full
 * records. Allocated by the first write that spans several records, so idle
 * and control-only connections never carry it. */
#define TX_BUFFER_SIZE (136 * 1024)
/* Plaintext record size; gnutls' default maximum. */
#define RECORD_SIZE (16 * 1024)
/* iovec pieces below this are gathered into one record instead of one each. */
#define SMALL_PIECE 4096

struct RpcTlsContext {
    gint ref;
    gboolean server;
    gboolean verify_peer;
    gnutls_certificate_credentials_t creds;
    gnutls_priority_t priority;
    char *ca_file;
    char **allowed_dn_list;
    guint timeout_ms;
};

typedef struct {
    RpcTransport base;
    RpcTlsContext *ctx;
    gnutls_session_t session;
    char *peer_dn;
    guint key_bits;

    /* reader thread (and the handshake): ciphertext read ahead */
    guint8 *rx;
    gsize rx_start, rx_end;
    gboolean rx_timed; /* a timed read: recv() time is kept apart from the cipher's */
    gint64 rx_io_us;
    int rx_errno; /* the last failed recv(): gnutls says only "pull error" */

    /* writer thread (and the handshake): ciphertext batched while corked */
    gboolean corked;
    guint8 *tx;
    gsize tx_len;
    int tx_errno;
    gboolean tx_timed; /* a timed write: send() time is kept apart from the cipher's */
    gint64 tx_io_us;
} RpcTlsTransport;

static const RpcTransportOps tls_ops;

/* ---- helpers ---- */

static void set_tls_error(GError **error, int rc, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static void set_tls_error(GError **error, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "%s: %s", what, gnutls_strerror(rc));
}

static char *format_time(time_t t)
{
    g_autoptr(GDateTime) dt = g_date_time_new_from_unix_utc(t);
    return dt ? g_date_time_format(dt, "%Y-%m-%d %H:%M:%S UTC") : g_strdup("?");
}

/* A file must exist and be readable; the error names the role and the path. */
static gboolean check_readable(const char *role, const char *path, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "cannot read %s '%s'", role, path);
        return FALSE;
    }
    close(fd);
    return TRUE;
}

static gnutls_x509_crt_t load_first_cert(const char *path, GError **error)
{
    gnutls_datum_t data = {0};
    int rc = gnutls_load_file(path, &data);
    if (rc < 0) {
        set_tls_error(error, rc, "cannot load '%s'", path);
        return NULL;
    }
    gnutls_x509_crt_t cert = NULL;
    gnutls_x509_crt_init(&cert);
    rc = gnutls_x509_crt_import(cert, &data, GNUTLS_X509_FMT_PEM);
    gnutls_free(data.data);
    if (rc < 0) {
        gnutls_x509_crt_deinit(cert);
        set_tls_error(error, rc, "'%s' does not hold a PEM certificate", path);
        return NULL;
    }
    return cert;
}

static char *cert_dn(gnutls_x509_crt_t cert)
{
    size_t size = 0;
    if (gnutls_x509_crt_get_dn(cert, NULL, &size) != GNUTLS_E_SHORT_MEMORY_BUFFER)
        return g_strdup("");
    char *dn = g_malloc0(size + 1);
    if (gnutls_x509_crt_get_dn(cert, dn, &size) < 0)
        dn[0] = '\0';
    return dn;
}

/* "CN 'host', DNS 'a.example', IP '10.0.0.1'": what a certificate is for. */
static char *cert_names(gnutls_x509_crt_t cert)
{
    GString *s = g_string_new(NULL);
    char buf[256];
    size_t size = sizeof(buf);
    if (gnutls_x509_crt_get_dn_by_oid(cert, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &size) == 0)
        g_string_append_printf(s, "CN '%s'", buf);
    for (unsigned i = 0;; i++) {
        size = sizeof(buf);
        unsigned type = 0;
        int rc = gnutls_x509_crt_get_subject_alt_name2(cert, i, buf, &size, &type, NULL);
        if (rc == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
            break;
        if (rc < 0)
            continue;
        if (rc == GNUTLS_SAN_DNSNAME) {
            g_string_append_printf(s, "%sDNS '%.*s'", s->len ? ", " : "", (int)size, buf);
        } else if (rc == GNUTLS_SAN_IPADDRESS) {
            char ip[64] = "?";
            GInetAddress *a = g_inet_address_new_from_bytes(
                (const guint8 *)buf, size == 16 ? G_SOCKET_FAMILY_IPV6 : G_SOCKET_FAMILY_IPV4);
            if (a && (size == 4 || size == 16)) {
                g_autofree char *t = g_inet_address_to_string(a);
                g_strlcpy(ip, t, sizeof(ip));
            }
            g_clear_object(&a);
            g_string_append_printf(s, "%sIP '%s'", s->len ? ", " : "", ip);
        }
    }
    if (s->len == 0)
        g_string_append(s, "no name");
    return g_string_free(s, FALSE);
}

/* Turns gnutls verification status bits into one sentence about `who`. */
static void set_verify_error(GError **error, unsigned status, gnutls_x509_crt_t cert,
                             const char *who, const char *ca_file, const char *purpose)
{
    time_t now = time(NULL);
    if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED, "%s is not signed by the CA in %s",
                    who, ca_file);
    } else if (status & GNUTLS_CERT_REVOKED) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "%s has been revoked (CA revocation list)", who);
    } else if (status & GNUTLS_CERT_EXPIRED) {
        time_t end = gnutls_x509_crt_get_expiration_time(cert);
        g_autofree char *when = format_time(end);
        if (end < now)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                        "%s has expired (valid until %s)", who, when);
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                        "%s was issued by an expired CA certificate in %s", who, ca_file);
    } else if (status & GNUTLS_CERT_NOT_ACTIVATED) {
        time_t start = gnutls_x509_crt_get_activation_time(cert);
        g_autofree char *when = format_time(start);
        if (start > now)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                        "%s is not yet valid (valid from %s)", who, when);
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                        "%s was issued by a CA certificate in %s that is not yet valid", who,
                        ca_file);
    } else if (status & GNUTLS_CERT_PURPOSE_MISMATCH) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "%s is not for %s use (its extended key usage lacks it)", who, purpose);
    } else if (status & GNUTLS_CERT_INSECURE_ALGORITHM) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "%s is signed with an insecure algorithm", who);
    } else {
        gnutls_datum_t out = {0};
        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED, "%s failed verification: %s", who,
                    out.data ? (const char *)out.data : "unknown reason");
        gnutls_free(out.data);
    }
}

/* ---- contexts ---- */

/* Checks our own certificate at load time, as libvirt does: valid now and
 * signed by the CA, so a mistake shows at start and not at first connect. */
static gboolean check_own_cert(const char *cert_file, const char *ca_file, const char *role,
                               GError **error)
{
    gnutls_x509_crt_t cert = load_first_cert(cert_file, error);
    if (!cert)
        return FALSE;
    gboolean ok = TRUE;
    time_t now = time(NULL);
    g_autofree char *who = g_strdup_printf("%s '%s'", role, cert_file);
    if (gnutls_x509_crt_get_expiration_time(cert) < now) {
        g_autofree char *when = format_time(gnutls_x509_crt_get_expiration_time(cert));
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "%s has expired (valid until %s)",
                    who, when);
        ok = FALSE;
    } else if (gnutls_x509_crt_get_activation_time(cert) > now) {
        g_autofree char *when = format_time(gnutls_x509_crt_get_activation_time(cert));
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                    "%s is not yet valid (valid from %s)", who, when);
        ok = FALSE;
    } else if (ca_file) {
        gnutls_datum_t data = {0};
        gnutls_x509_crt_t *cas = NULL;
        unsigned ncas = 0;
        if (gnutls_load_file(ca_file, &data) == 0 &&
            gnutls_x509_crt_list_import2(&cas, &ncas, &data, GNUTLS_X509_FMT_PEM, 0) == 0) {
            unsigned status = 0;
            if (gnutls_x509_crt_list_verify(&cert, 1, cas, ncas, NULL, 0, 0, &status) < 0)
                status = GNUTLS_CERT_INVALID;
            if (status != 0) {
                set_verify_error(error, status, cert, who, ca_file, role);
                ok = FALSE;
            }
            for (unsigned i = 0; i < ncas; i++)
                gnutls_x509_crt_deinit(cas[i]);
            gnutls_free(cas);
        }
        gnutls_free(data.data);
    }
    gnutls_x509_crt_deinit(cert);
    return ok;
}

static RpcTlsContext *context_new(const RpcTlsConfig *cfg, gboolean server, GError **error)
{
    const char *ca_role = server ? "ca_file" : "CA certificate";
    const char *crl_role = server ? "crl_file" : "CA revocation list";
    const char *cert_role = server ? "cert_file" : "client certificate";
    const char *key_role = server ? "key_file" : "client key";

    g_autoptr(RpcTlsContext) ctx = g_new0(RpcTlsContext, 1);
    ctx->ref = 1;
    ctx->server = server;
    ctx->verify_peer = cfg->verify_peer;
    ctx->timeout_ms =
        cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : DEFAULT_HANDSHAKE_TIMEOUT_MS;
    ctx->ca_file = g_strdup(cfg->ca_file);
    ctx->allowed_dn_list = cfg->allowed_dn_list ? g_strdupv((char **)cfg->allowed_dn_list) : NULL;

    int rc = gnutls_certificate_allocate_credentials(&ctx->creds);
    if (rc < 0) {
        set_tls_error(error, rc, "cannot allocate TLS credentials");
        return NULL;
    }

    /* The CA is needed to check peers; a client told not to verify can go without. */
    gboolean need_ca = server || cfg->verify_peer;
    if (cfg->ca_file && (need_ca || g_file_test(cfg->ca_file, G_FILE_TEST_EXISTS))) {
        if (!check_readable(ca_role, cfg->ca_file, error))
            return NULL;
        rc = gnutls_certificate_set_x509_trust_file(ctx->creds, cfg->ca_file, GNUTLS_X509_FMT_PEM);
        if (rc < 0) {
            set_tls_error(error, rc, "cannot load %s '%s'", ca_role, cfg->ca_file);
            return NULL;
        }
        if (rc == 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "%s '%s' holds no certificate",
                        ca_role, cfg->ca_file);
            return NULL;
        }
    } else if (need_ca) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "no %s given", ca_role);
        return NULL;
    }

    /* The server's crl_file must exist when set; the client's is optional. */
    if (cfg->crl_file && (server || g_file_test(cfg->crl_file, G_FILE_TEST_EXISTS))) {
        if (!check_readable(crl_role, cfg->crl_file, error))
            return NULL;
        rc = gnutls_certificate_set_x509_crl_file(ctx->creds, cfg->crl_file, GNUTLS_X509_FMT_PEM);
        if (rc < 0) {
            set_tls_error(error, rc, "cannot load %s '%s'", crl_role, cfg->crl_file);
            return NULL;
        }
    }

    gboolean have_cert = cfg->cert_file && cfg->key_file;
    if (!server && have_cert && !g_file_test(cfg->cert_file, G_FILE_TEST_EXISTS) &&
        !g_file_test(cfg->key_file, G_FILE_TEST_EXISTS))
        have_cert = FALSE; /* a client without a certificate: the server may not need one */
    if (server && !have_cert) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                    "TLS needs both cert_file and key_file");
        return NULL;
    }
    if (have_cert) {
        if (!check_readable(cert_role, cfg->cert_file, error) ||
            !check_readable(key_role, cfg->key_file, error))
            return NULL;
        rc = gnutls_certificate_set_x509_key_file(ctx->creds, cfg->cert_file, cfg->key_file,
                                                  GNUTLS_X509_FMT_PEM);
        if (rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                        "%s '%s' is not the key of %s '%s'", key_role, cfg->key_file, cert_role,
                        cfg->cert_file);
            return NULL;
        }
        if (rc < 0) {
            set_tls_error(error, rc, "cannot load %s '%s' with %s '%s'", cert_role, cfg->cert_file,
                          key_role, cfg->key_file);
            return NULL;
        }
        if (!cfg->skip_own_cert_checks &&
            !check_own_cert(cfg->cert_file, cfg->ca_file && need_ca ? cfg->ca_file : NULL,
                            cert_role, error))
            return NULL;
    }

    const char *prio = cfg->priority && *cfg->priority ? cfg->priority : "NORMAL";
    const char *err_pos = NULL;
    rc = gnutls_priority_init(&ctx->priority, prio, &err_pos);
    if (rc < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                    "TLS priority string '%s' is invalid at '%s': %s", prio, err_pos ? err_pos : "",
                    gnutls_strerror(rc));
        return NULL;
    }
    return g_steal_pointer(&ctx);
}

RpcTlsContext *rpc_tls_context_new_server(const RpcTlsConfig *config, GError **error)
{
    return context_new(config, TRUE, error);
}

RpcTlsContext *rpc_tls_context_new_client(const RpcTlsConfig *config, GError **error)
{
    return context_new(config, FALSE, error);
}

RpcTlsContext *rpc_tls_context_ref(RpcTlsContext *ctx)
{
    g_atomic_int_inc(&ctx->ref);
    return ctx;
}

void rpc_tls_context_unref(RpcTlsContext *ctx)
{
    if (!ctx || !g_atomic_int_dec_and_test(&ctx->ref))
        return;
    if (ctx->priority)
        gnutls_priority_deinit(ctx->priority);
    if (ctx->creds)
        gnutls_certificate_free_credentials(ctx->creds);
    g_free(ctx->ca_file);
    g_strfreev(ctx->allowed_dn_list);
    g_free(ctx);
}

/* ---- raw socket I/O under gnutls ---- */

static gboolean send_all(int fd, const guint8 *p, gsize len, int *err)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            return FALSE;
        }
        p += n;
        len -= n;
    }
    return TRUE;
}

/* send_all, its time kept apart from the cipher's during a timed write. */
static gboolean tx_send(RpcTlsTransport *t, const guint8 *p, gsize len)
{
    gint64 begin = t->tx_timed ? g_get_monotonic_time() : 0;
    gboolean ok = send_all(t->base.fd, p, len, &t->tx_errno);
    if (begin)
        t->tx_io_us += g_get_monotonic_time() - begin;
    /* Noted for the other calls; an EPIPE says nothing, its cause is told. */
    if (!ok)
        t->tx_errno = rpc_transport_os_error(&t->base, t->tx_errno);
    return ok;
}

static gboolean tx_flush(RpcTlsTransport *t)
{
    if (t->tx_len == 0)
        return TRUE;
    gboolean ok = tx_send(t, t->tx, t->tx_len);
    t->tx_len = 0;
    return ok;
}

static ssize_t tls_push(gnutls_transport_ptr_t ptr, const void *data, size_t len)
{
    RpcTlsTransport *t = ptr;
    if (t->corked) {
        if (t->tx_len + len > TX_BUFFER_SIZE && !tx_flush(t))
            goto fail;
        if (len <= TX_BUFFER_SIZE) {
            memcpy(t->tx + t->tx_len, data, len);
            t->tx_len += len;
            return len;
        }
    }
    if (!tx_send(t, data, len))
        goto fail;
    return len;
fail:
    /* errno, not gnutls_transport_set_errno(): that field is shared by the
     * reading and the writing thread, errno is per thread. */
    errno = t->tx_errno;
    return -1;
}

static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *data, size_t len)
{
    RpcTlsTransport *t = ptr;
    if (t->rx_start == t->rx_end) {
        ssize_t n;
        gint64 begin = t->rx_timed ? g_get_monotonic_time() : 0;
        do {
            n = recv(t->base.fd, t->rx, RX_AHEAD_SIZE, 0);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            t->rx_errno = errno;
            ferry_os_error_note(&t->base.os_error, errno); /* the cause a writer's EPIPE lacks */
        }
        if (begin) {
            int err = errno;
            t->rx_io_us += g_get_monotonic_time() - begin;
            errno = err;
        }
        if (n <= 0)
            return n; /* errno tells gnutls why */
        t->rx_start = 0;
        t->rx_end = n;
    }
    gsize take = MIN(len, t->rx_end - t->rx_start);
    memcpy(data, t->rx + t->rx_start, take);
    t->rx_start += take;
    return take;
}

static int tls_pull_timeout(gnutls_transport_ptr_t ptr, unsigned int ms)
{
    RpcTlsTransport *t = ptr;
    if (t->rx_start < t->rx_end)
        return 1;
    struct pollfd pfd = {.fd = t->base.fd, .events = POLLIN};
    int timeout = ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)MIN(ms, (unsigned)G_MAXINT);
    for (;;) {
        int n = poll(&pfd, 1, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        return n > 0 ? 1 : n;
    }
}

/* ---- the transport ---- */

/* gnutls_record_recv, its time less the recv() calls under it counted as
 * decrypting (the flight recorder's). */
static ssize_t record_recv_timed(RpcTlsTransport *t, void *buf, gsize len)
{
    gint64 begin = rpc_transport_crypto_begin();
    t->rx_timed = begin != 0;
    t->rx_io_us = 0;
    ssize_t n = gnutls_record_recv(t->session, buf, len);
    rpc_transport_crypto_end(&t->base, RPC_CRYPTO_RECV, begin, t->rx_io_us);
    t->rx_timed = FALSE;
    return n;
}

static gssize tls_read(RpcTransport *base, void *buf, gsize len, GError **error)
{
    RpcTlsTransport *t = (RpcTlsTransport *)base;
    for (;;) {
        ssize_t n = record_recv_timed(t, buf, len);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
            continue;
        /* Peers (libvirt's included) close without close_notify: that is an
         * end of stream, as is our own shutdown(). */
        if (n == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        /* A socket error (a timeout, a reset) is named as a plain socket's. */
        if (n == GNUTLS_E_PULL_ERROR && t->rx_errno)
            ferry_set_error_errno(error, t->rx_errno, "cannot read from %s", base->peer);
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot read from %s: %s",
                        base->peer, gnutls_strerror(n));
        return -1;
    }
}

gssize rpc_tls_transport_read_record(RpcTransport *base, RpcTlsRecord **record,
                                     const guint8 **data, GError **error)
{
    RpcTlsTransport *t = (RpcTlsTransport *)base;
    for (;;) {
        gnutls_packet_t packet = NULL;
        gint64 begin = rpc_transport_crypto_begin();
        t->rx_timed = begin != 0;
        t->rx_io_us = 0;
        ssize_t n = gnutls_record_recv_packet(t->session, &packet);
        rpc_transport_crypto_end(&t->base, RPC_CRYPTO_RECV, begin, t->rx_io_us);
        t->rx_timed = FALSE;
        if (n > 0) {
            gnutls_datum_t d;
            gnutls_packet_get(packet, &d, NULL);
            *record = (RpcTlsRecord *)packet;
            *data = d.data;
            return d.size;
        }
        if (packet)
            gnutls_packet_deinit(packet);
        if (n == 0)
            return 0;
        if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
            continue;
        if (n == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        if (n == GNUTLS_E_PULL_ERROR && t->rx_errno)
            ferry_set_error_errno(error, t->rx_errno, "cannot read from %s", base->peer);
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot read from %s: %s",
                        base->peer, gnutls_strerror(n));
        return -1;
    }
}

void rpc_tls_record_free(RpcTlsRecord *record)
{
    if (record)
        gnutls_packet_deinit((gnutls_packet_t)record);
}

static gboolean send_record(RpcTlsTransport *t, const guint8 *p, gsize len, GError **error)
{
    while (len > 0) {
        ssize_t n = gnutls_record_send(t->session, p, MIN(len, RECORD_SIZE));
        if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
            continue;
        if (n < 0) {
            if (t->tx_errno)
                ferry_set_error_errno(error, t->tx_errno, "cannot write to %s", t->base.peer);
            else
                g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot write to %s: %s",
                            t->base.peer, gnutls_strerror(n));
            return FALSE;
        }
        p += n;
        len -= n;
    }
    return TRUE;
}

typedef struct {
    guint8 buf[RECORD_SIZE];
    gsize len;
} Stage;

static gboolean stage_flush(RpcTlsTransport *t, Stage *st, GError **error)
{
    if (st->len == 0)
        return TRUE;
    gsize len = st->len;
    st->len = 0;
    return send_record(t, st->buf, len, error);
}

/* Encrypts the whole vector into records of up to 16 KiB, small pieces
 * sharing a record (gathered on the stack: no allocation per message). A
 * vector spanning several records is corked: the records collect in the tx
 * buffer and reach the kernel up to TX_BUFFER_SIZE per send(). */
static gboolean tls_writev(RpcTransport *base, const struct iovec *iov, int iovcnt, GError **error)
{
    RpcTlsTransport *t = (RpcTlsTransport *)base;
    gsize total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total > RECORD_SIZE) {
        if (!t->tx)
            t->tx = g_malloc(TX_BUFFER_SIZE);
        t->corked = TRUE;
    }
    t->tx_errno = 0;
    /* The time in here less the send() calls is the cipher's (the flight
     * recorder's encryption wait). */
    gint64 begin = rpc_transport_crypto_begin();
    t->tx_timed = begin != 0;
    t->tx_io_us = 0;

    Stage st;
    st.len = 0;
    gboolean ok = TRUE;
    for (int i = 0; ok && i < iovcnt; i++) {
        const guint8 *p = iov[i].iov_base;
        gsize len = iov[i].iov_len;
        if (len < SMALL_PIECE) {
            if (st.len + len > RECORD_SIZE)
                ok = stage_flush(t, &st, error);
            if (ok) {
                memcpy(st.buf + st.len, p, len);
                st.len += len;
            }
        } else {
            ok = stage_flush(t, &st, error) && send_record(t, p, len, error);
        }
    }
    if (ok)
        ok = stage_flush(t, &st, error);
    t->corked = FALSE;
    if (ok && !tx_flush(t)) {
        ferry_set_error_errno(error, t->tx_errno, "cannot write to %s", base->peer);
        ok = FALSE;
    }
    t->tx_len = 0;
    rpc_transport_crypto_end(base, RPC_CRYPTO_SEND, begin, t->tx_io_us);
    t->tx_timed = FALSE;
    return ok;
}

gboolean rpc_tls_transport_has_pending(RpcTransport *base)
{
    RpcTlsTransport *t = (RpcTlsTransport *)base;
    return gnutls_record_check_pending(t->session) > 0 || t->rx_start < t->rx_end;
}

void rpc_tls_transport_close_write(RpcTransport *base)
{
    RpcTlsTransport *t = (RpcTlsTransport *)base;
    /* close_notify: the peer reads a clean end of stream; its sending half
     * stays usable (a relay ends one direction at a time). */
    int rc;
    do {
        rc = gnutls_bye(t->session, GNUTLS_SHUT_WR);
    } while (rc == GNUTLS_E_INTERRUPTED || rc == GNUTLS_E_AGAIN);
}

static void tls_shutdown(RpcTransport *base)
{
    shutdown(base->fd, SHUT_RDWR);
}

static void tls_free(RpcTransport *base)
{
    RpcTlsTransport *t = (RpcTlsTransport *)base;
    gnutls_deinit(t->session);
    if (base->fd >= 0)
        close(base->fd);
    rpc_tls_context_unref(t->ctx);
    g_free(t->peer_dn);
    g_free(t->rx);
    g_free(t->tx);
    g_free(base->peer);
    g_free(t);
}

static const RpcTransportOps tls_ops = {
    .read = tls_read,
    .writev = tls_writev,
    .shutdown = tls_shutdown,
    .free = tls_free,
};

gboolean rpc_tls_transport_is_tls(RpcTransport *t)
{
    return t && t->ops == &tls_ops;
}

guint rpc_tls_transport_get_key_bits(RpcTransport *t)
{
    return rpc_tls_transport_is_tls(t) ? ((RpcTlsTransport *)t)->key_bits : 0;
}

const char *rpc_tls_transport_get_peer_dn(RpcTransport *t)
{
    return rpc_tls_transport_is_tls(t) ? ((RpcTlsTransport *)t)->peer_dn : NULL;
}

/* ---- handshakes ---- */

/* A session over fd, not yet owning it (see the fd rule in the header). */
static RpcTlsTransport *session_new(RpcTlsContext *ctx, int fd, const char *hostname,
                                    GError **error)
{
    RpcTlsTransport *t = g_new0(RpcTlsTransport, 1);
    rpc_transport_init_socket(&t->base, fd);
    t->base.ops = &tls_ops;
    t->base.fd = -1;
    t->base.is_secure = TRUE;
    t->ctx = rpc_tls_context_ref(ctx);
    t->rx = g_malloc(RX_AHEAD_SIZE);

    /* No TLS 1.3 session tickets from the server: a ticket arriving with the
     * confirmation byte makes the libvirt client fail (WIRE.md pitfall 13). */
    int rc =
        gnutls_init(&t->session, ctx->server ? GNUTLS_SERVER | GNUTLS_NO_TICKETS : GNUTLS_CLIENT);
    if (rc < 0) {
        set_tls_error(error, rc, "cannot start a TLS session with %s", t->base.peer);
        t->session = NULL;
        goto fail;
    }
    if ((rc = gnutls_priority_set(t->session, ctx->priority)) < 0 ||
        (rc = gnutls_credentials_set(t->session, GNUTLS_CRD_CERTIFICATE, ctx->creds)) < 0) {
        set_tls_error(error, rc, "cannot set up the TLS session with %s", t->base.peer);
        goto fail;
    }
    if (ctx->server) {
        /* Request, never require: the checks after the handshake give a
         * precise reason instead of a handshake alert. Not advertising our
         * CA makes a client send its certificate even when another CA signed
         * it, so that case is named too. */
        gnutls_certificate_server_set_request(t->session, GNUTLS_CERT_REQUEST);
        gnutls_certificate_send_x509_rdn_sequence(t->session, 1);
    } else if (hostname && !g_hostname_is_ip_address(hostname)) {
        gnutls_server_name_set(t->session, GNUTLS_NAME_DNS, hostname, strlen(hostname));
    }
    gnutls_transport_set_ptr(t->session, t);
    gnutls_transport_set_push_function(t->session, tls_push);
    gnutls_transport_set_pull_function(t->session, tls_pull);
    gnutls_transport_set_pull_timeout_function(t->session, tls_pull_timeout);
    gnutls_handshake_set_timeout(t->session, ctx->timeout_ms);
    t->base.fd = fd;
    return t;

fail:
    if (t->session)
        gnutls_deinit(t->session);
    rpc_tls_context_unref(t->ctx);
    g_free(t->rx);
    g_free(t->base.peer);
    g_free(t);
    return NULL;
}

/* Frees a session that failed, leaving fd open for the caller. */
static void session_abandon(RpcTlsTransport *t)
{
    t->base.fd = -1;
    tls_free(&t->base);
}

static gboolean do_handshake(RpcTlsTransport *t, GError **error)
{
    int rc;
    do {
        rc = gnutls_handshake(t->session);
    } while (rc < 0 && !gnutls_error_is_fatal(rc));
    if (rc == GNUTLS_E_TIMEDOUT) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                    "TLS handshake with %s did not complete within %u ms", t->base.peer,
                    t->ctx->timeout_ms);
        return FALSE;
    }
    if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                    "TLS handshake with %s failed: the peer refused it (%s)", t->base.peer,
                    gnutls_alert_get_name(gnutls_alert_get(t->session)));
        return FALSE;
    }
    if (rc < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "TLS handshake with %s failed: %s",
                    t->base.peer, gnutls_strerror(rc));
        return FALSE;
    }
    gnutls_cipher_algorithm_t cipher = gnutls_cipher_get(t->session);
    t->key_bits = gnutls_cipher_get_key_size(cipher) * 8;
    char *desc = gnutls_session_get_desc(t->session);
    FERRY_DEBUG("TLS session with %s: %s", t->base.peer, desc ? desc : "?");
    gnutls_free(desc);
    return TRUE;
}

/* The peer's leaf certificate, imported; NULL if it sent none. */
static gnutls_x509_crt_t peer_cert(RpcTlsTransport *t)
{
    if (gnutls_certificate_type_get(t->session) != GNUTLS_CRT_X509)
        return NULL;
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->session, &n);
    if (!certs || n == 0)
        return NULL;
    gnutls_x509_crt_t cert = NULL;
    gnutls_x509_crt_init(&cert);
    if (gnutls_x509_crt_import(cert, &certs[0], GNUTLS_X509_FMT_DER) < 0) {
        gnutls_x509_crt_deinit(cert);
        return NULL;
    }
    return cert;
}

static gboolean verify_peer(RpcTlsTransport *t, gnutls_x509_crt_t cert, const char *who,
                            gboolean server_cert, GError **error)
{
    gnutls_typed_vdata_st purpose = {
        .type = GNUTLS_DT_KEY_PURPOSE_OID,
        .data =
            (unsigned char *)(server_cert ? GNUTLS_KP_TLS_WWW_SERVER : GNUTLS_KP_TLS_WWW_CLIENT),
    };
    unsigned status = 0;
    int rc = gnutls_certificate_verify_peers(t->session, &purpose, 1, &status);
    if (rc < 0) {
        set_tls_error(error, rc, "cannot verify %s", who);
        return FALSE;
    }
    if (status != 0) {
        set_verify_error(error, status, cert, who, t->ctx->ca_file,
                         server_cert ? "TLS server" : "TLS client");
        return FALSE;
    }
    return TRUE;
}

static gboolean server_checks(RpcTlsTransport *t, GError **error)
{
    gnutls_x509_crt_t cert = peer_cert(t);
    if (cert)
        t->peer_dn = cert_dn(cert);
    if (!t->ctx->verify_peer) {
        if (cert)
            gnutls_x509_crt_deinit(cert);
        return TRUE;
    }
    gboolean ok = FALSE;
    if (!cert) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "client certificate required: the client sent none");
        return FALSE;
    }
    g_autofree char *who = g_strdup_printf("client certificate '%s'", t->peer_dn);
    if (!verify_peer(t, cert, who, FALSE, error))
        goto out;
    if (t->ctx->allowed_dn_list) {
        gboolean allowed = FALSE;
        for (char **p = t->ctx->allowed_dn_list; *p && !allowed; p++)
            allowed = g_pattern_match_simple(*p, t->peer_dn);
        if (!allowed) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                        "client certificate DN '%s' is not in tls_allowed_dn_list", t->peer_dn);
            goto out;
        }
    }
    ok = TRUE;
out:
    gnutls_x509_crt_deinit(cert);
    return ok;
}

static gboolean client_checks(RpcTlsTransport *t, const char *hostname, GError **error)
{
    gnutls_x509_crt_t cert = peer_cert(t);
    if (cert)
        t->peer_dn = cert_dn(cert);
    if (!t->ctx->verify_peer) {
        if (cert)
            gnutls_x509_crt_deinit(cert);
        return TRUE;
    }
    if (!cert) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED, "server %s sent no certificate",
                    t->base.peer);
        return FALSE;
    }
    gboolean ok = FALSE;
    g_autofree char *who = g_strdup_printf("certificate of %s", hostname);
    if (!verify_peer(t, cert, who, TRUE, error))
        goto out;
    if (!gnutls_x509_crt_check_hostname2(cert, hostname, 0)) {
        g_autofree char *names = cert_names(cert);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "certificate of %s does not match the host name '%s': it is for %s", hostname,
                    hostname, names);
        goto out;
    }
    ok = TRUE;
out:
    gnutls_x509_crt_deinit(cert);
    return ok;
}

RpcTransport *rpc_tls_server_handshake(RpcTlsContext *ctx, int fd, GError **error)
{
    g_return_val_if_fail(ctx->server, NULL);
    static const guint8 confirm = 1;
    GError *werr = NULL;
    struct iovec iov = {.iov_base = (void *)&confirm, .iov_len = 1};
    RpcTlsTransport *t = session_new(ctx, fd, NULL, error);
    if (!t)
        return NULL;
    if (!do_handshake(t, error))
        goto fail;
    if (!server_checks(t, error)) {
        /* A clean close (not an alert): the libvirt client then reports
         * "server verification (of our certificate or IP address) failed". */
        gnutls_bye(t->session, GNUTLS_SHUT_WR);
        goto fail;
    }
    if (!tls_writev(&t->base, &iov, 1, &werr)) {
        g_propagate_prefixed_error(error, werr, "cannot confirm the TLS session: ");
        goto fail;
    }
    return &t->base;
fail:
    session_abandon(t);
    return NULL;
}

RpcTransport *rpc_tls_client_handshake(RpcTlsContext *ctx, int fd, const char *hostname,
                                       GError **error)
{
    g_return_val_if_fail(!ctx->server, NULL);
    guint8 byte = 0;
    ssize_t n;
    RpcTlsTransport *t = session_new(ctx, fd, hostname, error);
    if (!t)
        return NULL;
    if (!do_handshake(t, error) || !client_checks(t, hostname, error))
        goto fail;

    gnutls_record_set_timeout(t->session, ctx->timeout_ms);
    do {
        n = gnutls_record_recv(t->session, &byte, 1);
    } while (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN);
    gnutls_record_set_timeout(t->session, 0);
    if (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "server %s refused our TLS session after the handshake (our certificate "
                    "or address did not pass its checks; its log says why)",
                    t->base.peer);
        goto fail;
    }
    if (n == GNUTLS_E_TIMEDOUT) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                    "server %s did not confirm the TLS session within %u ms", t->base.peer,
                    ctx->timeout_ms);
        goto fail;
    }
    if (n < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                    "cannot read the TLS confirmation from %s: %s", t->base.peer,
                    gnutls_strerror(n));
        goto fail;
    }
    if (byte != 1) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC,
                    "server %s sent %#x instead of the TLS confirmation byte 0x01", t->base.peer,
                    byte);
        goto fail;
    }
    return &t->base;
fail:
    session_abandon(t);
    return NULL;
}

/* ---- client file locations ---- */

void rpc_tls_client_locate_files(const char *pkipath, char **ca_file, char **crl_file,
                                 char **cert_file, char **key_file)
{
    *ca_file = *crl_file = *cert_file = *key_file = NULL;
    if (pkipath) {
        *ca_file = g_build_filename(pkipath, "cacert.pem", NULL);
        *crl_file = g_build_filename(pkipath, "cacrl.pem", NULL);
        *cert_file = g_build_filename(pkipath, "clientcert.pem", NULL);
        *key_file = g_build_filename(pkipath, "clientkey.pem", NULL);
        return;
    }
    if (geteuid() != 0) {
        g_autofree char *dir = g_build_filename(g_get_home_dir(), ".pki", "libvirt", NULL);
        char *ca = g_build_filename(dir, "cacert.pem", NULL);
        char *crl = g_build_filename(dir, "cacrl.pem", NULL);
        char *cert = g_build_filename(dir, "clientcert.pem", NULL);
        char *key = g_build_filename(dir, "clientkey.pem", NULL);
        if (g_file_test(ca, G_FILE_TEST_EXISTS))
            *ca_file = g_steal_pointer(&ca);
        if (g_file_test(crl, G_FILE_TEST_EXISTS))
            *crl_file = g_steal_pointer(&crl);
        if (g_file_test(cert, G_FILE_TEST_EXISTS) && g_file_test(key, G_FILE_TEST_EXISTS)) {
            *cert_file = g_steal_pointer(&cert);
            *key_file = g_steal_pointer(&key);
        }
        g_free(ca);
        g_free(crl);
        g_free(cert);
        g_free(key);
    }
    if (!*ca_file)
        *ca_file = g_strdup("/etc/pki/CA/cacert.pem");
    if (!*crl_file)
        *crl_file = g_strdup("/etc/pki/CA/cacrl.pem");
    if (!*cert_file) {
        *cert_file = g_strdup("/etc/pki/libvirt/clientcert.pem");
        *key_file = g_strdup("/etc/pki/libvirt/private/clientkey.pem");
    }
}

char *rpc_tls_transport_describe(RpcTransport *t)
{
    if (!rpc_tls_transport_is_tls(t))
        return NULL;
    gnutls_session_t session = ((RpcTlsTransport *)t)->session;
    const char *version = gnutls_protocol_get_name(gnutls_protocol_get_version(session));
    const char *cipher = gnutls_cipher_get_name(gnutls_cipher_get(session));
    return g_strdup_printf("%s %s", version ? version : "TLS", cipher ? cipher : "?");
}
