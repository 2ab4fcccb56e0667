/* cyrus-sasl sessions and the SASL security-layer transport. */
#include "rpc/rpc-sasl.h"

#include <errno.h>
#include <netdb.h>
#include <sasl/sasl.h>
#include <string.h>
#include <sys/socket.h>

#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "rpc.sasl"

/* What we tell the peer we accept per decoded block; WIRE.md section 5. */
#define SASL_MAX_BUFFER 65536
/* Encoded bytes read per recv() once the layer is on. */
#define RAW_READ_SIZE (64 * 1024)

struct RpcSasl {
    gint ref;
    /* After authentication the reader decodes while the writer encodes, on
     * one sasl_conn_t: the library call itself is serialised here. Each
     * direction's output lives in its own buffer inside the mechanism (and
     * is only used by the thread that asked for it), so the lock is not held
     * while that output is written or copied. */
    GMutex lock;
    sasl_conn_t *conn;
    gboolean server;
    sasl_callback_t callbacks[5];
    char *authname, *username, *password, *realm, *origin, *hostname;
    sasl_secret_t *secret;
    const char *missing; /* the credential a mechanism asked for and we lacked */
    char *mech;
};

/* ---- library state ---- */

static void *mutex_alloc(void)
{
    GMutex *m = g_new(GMutex, 1);
    g_mutex_init(m);
    return m;
}

static int mutex_lock(void *m)
{
    g_mutex_lock(m);
    return SASL_OK;
}

static int mutex_unlock(void *m)
{
    g_mutex_unlock(m);
    return SASL_OK;
}

static void mutex_free(void *m)
{
    g_mutex_clear(m);
    g_free(m);
}

static int log_cb(void *context, int level, const char *message)
{
    if (level <= SASL_LOG_WARN)
        FERRY_INFO("cyrus-sasl: %s", message);
    else if (level <= SASL_LOG_NOTE)
        FERRY_DEBUG("cyrus-sasl: %s", message);
    return SASL_OK;
}

typedef int (*SaslCallbackFunc)(void);
#define CB(fn) ((SaslCallbackFunc)(void (*)(void))(fn))

static const sasl_callback_t global_callbacks[] = {
    {SASL_CB_LOG, CB(log_cb), NULL},
    {SASL_CB_LIST_END, NULL, NULL},
};

static GMutex global_lock;
static gboolean mutex_set, server_inited, client_inited;

static void set_mutex_once(void)
{
    if (!mutex_set) {
        /* The library's default locks do nothing; several threads run sessions. */
        sasl_set_mutex(mutex_alloc, mutex_lock, mutex_unlock, mutex_free);
        mutex_set = TRUE;
    }
}

gboolean rpc_sasl_server_global_init(const char *appname, GError **error)
{
    g_mutex_lock(&global_lock);
    set_mutex_once();
    int rc = server_inited ? SASL_OK : sasl_server_init(global_callbacks, appname);
    if (rc == SASL_OK)
        server_inited = TRUE;
    g_mutex_unlock(&global_lock);
    if (rc != SASL_OK) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "cannot initialise the SASL server library: %s",
                    sasl_errstring(rc, NULL, NULL));
        return FALSE;
    }
    return TRUE;
}

gboolean rpc_sasl_client_global_init(GError **error)
{
    g_mutex_lock(&global_lock);
    set_mutex_once();
    int rc = client_inited ? SASL_OK : sasl_client_init(global_callbacks);
    if (rc == SASL_OK)
        client_inited = TRUE;
    g_mutex_unlock(&global_lock);
    if (rc != SASL_OK) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "cannot initialise the SASL client library: %s",
                    sasl_errstring(rc, NULL, NULL));
        return FALSE;
    }
    return TRUE;
}

void rpc_sasl_global_done(void)
{
    /* Deliberately not sasl_server_done()/sasl_client_done(): sessions can
     * outlive the server (a connection is freed by whichever thread drops
     * its last reference), and unloading the plugins turns what the
     * DIGEST-MD5 plugin keeps in static storage (ciphers fetched from
     * OpenSSL, never freed) into leaks. The library stays loaded until exit. */
}

/* ---- sessions ---- */

static void set_sasl_error(GError **error, RpcSasl *s, int rc, const char *what)
{
    const char *detail = s->conn ? sasl_errdetail(s->conn) : sasl_errstring(rc, NULL, NULL);
    g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED, "%s: %s", what, detail);
}

/* "127.0.0.1;16509" as cyrus-sasl wants addresses; NULL for UNIX sockets. */
static char *addr_string(int fd, gboolean local)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int rc = local ? getsockname(fd, (struct sockaddr *)&ss, &sl)
                   : getpeername(fd, (struct sockaddr *)&ss, &sl);
    if (rc < 0 || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
        return NULL;
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return NULL;
    return g_strdup_printf("%s;%s", host, port);
}

static RpcSasl *sasl_new(gboolean server)
{
    RpcSasl *s = g_new0(RpcSasl, 1);
    s->ref = 1;
    s->server = server;
    g_mutex_init(&s->lock);
    return s;
}

RpcSasl *rpc_sasl_server_new(const char *service, RpcTransport *transport, GError **error)
{
    g_autoptr(RpcSasl) s = sasl_new(TRUE);
    g_autofree char *local = addr_string(transport->fd, TRUE);
    g_autofree char *remote = addr_string(transport->fd, FALSE);
    int rc = sasl_server_new(service, NULL, NULL, local, remote, NULL, SASL_SUCCESS_DATA, &s->conn);
    if (rc != SASL_OK) {
        s->conn = NULL;
        set_sasl_error(error, s, rc, "cannot start a SASL server session");
        return NULL;
    }
    return g_steal_pointer(&s);
}

static int client_simple_cb(void *context, int id, const char **result, unsigned *len)
{
    RpcSasl *s = context;
    const char *value = NULL;
    if (id == SASL_CB_AUTHNAME) {
        value = s->authname;
        if (!value)
            s->missing = "user name (authname)";
    } else if (id == SASL_CB_USER) {
        value = s->username ? s->username : s->authname;
        if (!value)
            s->missing = "user name";
    }
    if (!value)
        return SASL_FAIL;
    *result = value;
    if (len)
        *len = strlen(value);
    return SASL_OK;
}

static int client_pass_cb(sasl_conn_t *conn, void *context, int id, sasl_secret_t **psecret)
{
    RpcSasl *s = context;
    if (!s->password) {
        s->missing = "password";
        return SASL_FAIL;
    }
    if (!s->secret) {
        gsize len = strlen(s->password);
        s->secret = g_malloc0(sizeof(sasl_secret_t) + len);
        s->secret->len = len;
        memcpy(s->secret->data, s->password, len);
    }
    *psecret = s->secret;
    return SASL_OK;
}

static int client_realm_cb(void *context, int id, const char **availrealms, const char **result)
{
    RpcSasl *s = context;
    if (s->realm)
        *result = s->realm;
    else if (availrealms && availrealms[0])
        *result = availrealms[0];
    else
        *result = "";
    return SASL_OK;
}

RpcSasl *rpc_sasl_client_new(const char *service, const char *hostname, RpcTransport *transport,
                             const RpcSaslCredentials *creds, GError **error)
{
    g_autoptr(RpcSasl) s = sasl_new(FALSE);
    if (creds) {
        s->authname = g_strdup(creds->authname);
        s->username = g_strdup(creds->username);
        s->password = g_strdup(creds->password);
        s->realm = g_strdup(creds->realm);
        s->origin = g_strdup(creds->origin);
    }
    s->hostname = g_strdup(hostname);
    s->callbacks[0] = (sasl_callback_t){SASL_CB_GETREALM, CB(client_realm_cb), s};
    s->callbacks[1] = (sasl_callback_t){SASL_CB_USER, CB(client_simple_cb), s};
    s->callbacks[2] = (sasl_callback_t){SASL_CB_AUTHNAME, CB(client_simple_cb), s};
    s->callbacks[3] = (sasl_callback_t){SASL_CB_PASS, CB(client_pass_cb), s};
    s->callbacks[4] = (sasl_callback_t){SASL_CB_LIST_END, NULL, NULL};

    g_autofree char *local = addr_string(transport->fd, TRUE);
    g_autofree char *remote = addr_string(transport->fd, FALSE);
    int rc = sasl_client_new(service, hostname, local, remote, s->callbacks, 0, &s->conn);
    if (rc != SASL_OK) {
        s->conn = NULL;
        set_sasl_error(error, s, rc, "cannot start a SASL client session");
        return NULL;
    }
    return g_steal_pointer(&s);
}

RpcSasl *rpc_sasl_ref(RpcSasl *sasl)
{
    g_atomic_int_inc(&sasl->ref);
    return sasl;
}

void rpc_sasl_unref(RpcSasl *s)
{
    if (!s || !g_atomic_int_dec_and_test(&s->ref))
        return;
    if (s->conn)
        sasl_dispose(&s->conn);
    if (s->secret) {
        memset(s->secret->data, 0, s->secret->len);
        g_free(s->secret);
    }
    if (s->password) {
        memset(s->password, 0, strlen(s->password));
        g_free(s->password);
    }
    g_free(s->authname);
    g_free(s->username);
    g_free(s->realm);
    g_free(s->origin);
    g_free(s->hostname);
    g_free(s->mech);
    g_mutex_clear(&s->lock);
    g_free(s);
}

gboolean rpc_sasl_set_external_ssf(RpcSasl *s, guint ssf, GError **error)
{
    sasl_ssf_t v = ssf;
    int rc = sasl_setprop(s->conn, SASL_SSF_EXTERNAL, &v);
    if (rc != SASL_OK) {
        set_sasl_error(error, s, rc, "cannot set the SASL external SSF");
        return FALSE;
    }
    return TRUE;
}

gboolean rpc_sasl_set_security(RpcSasl *s, guint min_ssf, guint max_ssf, gboolean allow_plaintext,
                               GError **error)
{
    sasl_security_properties_t sp = {
        .min_ssf = min_ssf,
        .max_ssf = max_ssf,
        .maxbufsize = SASL_MAX_BUFFER,
        .security_flags = SASL_SEC_NOANONYMOUS | (allow_plaintext ? 0 : SASL_SEC_NOPLAINTEXT),
    };
    int rc = sasl_setprop(s->conn, SASL_SEC_PROPS, &sp);
    if (rc != SASL_OK) {
        set_sasl_error(error, s, rc, "cannot set the SASL security properties");
        return FALSE;
    }
    return TRUE;
}

char *rpc_sasl_list_mechanisms(RpcSasl *s, GError **error)
{
    const char *list = NULL;
    unsigned len = 0;
    int count = 0;
    int rc = sasl_listmech(s->conn, NULL, "", ",", "", &list, &len, &count);
    if (rc != SASL_OK || !list || count == 0) {
        set_sasl_error(error, s, rc == SASL_OK ? SASL_NOMECH : rc,
                       "no SASL mechanism is available");
        return NULL;
    }
    return g_strndup(list, len);
}

static RpcSaslStatus step_result(RpcSasl *s, int rc, const char *out, unsigned outlen,
                                 const char **pout, gsize *poutlen, const char *what,
                                 GError **error)
{
    if (rc == SASL_OK || rc == SASL_CONTINUE) {
        *pout = out;
        *poutlen = out ? outlen : 0;
        return rc == SASL_OK ? RPC_SASL_COMPLETE : RPC_SASL_CONTINUE;
    }
    if (!s->server && s->missing) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "SASL mechanism %s needs a %s for %s and none was found%s%s%s",
                    s->mech ? s->mech : "?", s->missing, s->hostname ? s->hostname : "the server",
                    s->origin ? " (" : "", s->origin ? s->origin : "", s->origin ? ")" : "");
        return RPC_SASL_FAILED;
    }
    if (rc == SASL_INTERACT) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "%s: the mechanism wants interactive input", what);
        return RPC_SASL_FAILED;
    }
    set_sasl_error(error, s, rc, what);
    return RPC_SASL_FAILED;
}

RpcSaslStatus rpc_sasl_server_start(RpcSasl *s, const char *mech, const char *in, gsize inlen,
                                    const char **out, gsize *outlen, GError **error)
{
    const char *o = NULL;
    unsigned ol = 0;
    g_free(s->mech);
    s->mech = g_strdup(mech);
    int rc = sasl_server_start(s->conn, mech, in, in ? inlen : 0, &o, &ol);
    return step_result(s, rc, o, ol, out, outlen, "SASL authentication failed", error);
}

RpcSaslStatus rpc_sasl_server_step(RpcSasl *s, const char *in, gsize inlen, const char **out,
                                   gsize *outlen, GError **error)
{
    const char *o = NULL;
    unsigned ol = 0;
    int rc = sasl_server_step(s->conn, in, in ? inlen : 0, &o, &ol);
    return step_result(s, rc, o, ol, out, outlen, "SASL authentication failed", error);
}

RpcSaslStatus rpc_sasl_client_start(RpcSasl *s, const char *mechlist, const char **mech,
                                    const char **out, gsize *outlen, GError **error)
{
    const char *o = NULL, *m = NULL;
    unsigned ol = 0;
    sasl_interact_t *interact = NULL;
    int rc = sasl_client_start(s->conn, mechlist, &interact, &o, &ol, &m);
    if (m) {
        g_free(s->mech);
        s->mech = g_strdup(m);
    }
    *mech = s->mech;
    g_autofree char *what =
        g_strdup_printf("cannot start SASL with the server's mechanisms '%s'", mechlist);
    return step_result(s, rc, o, ol, out, outlen, what, error);
}

RpcSaslStatus rpc_sasl_client_step(RpcSasl *s, const char *in, gsize inlen, const char **out,
                                   gsize *outlen, GError **error)
{
    const char *o = NULL;
    unsigned ol = 0;
    sasl_interact_t *interact = NULL;
    int rc = sasl_client_step(s->conn, in, in ? inlen : 0, &interact, &o, &ol);
    return step_result(s, rc, o, ol, out, outlen, "SASL authentication failed", error);
}

guint rpc_sasl_get_ssf(RpcSasl *s)
{
    const void *v = NULL;
    if (sasl_getprop(s->conn, SASL_SSF, &v) != SASL_OK || !v)
        return 0;
    return *(const sasl_ssf_t *)v;
}

const char *rpc_sasl_get_username(RpcSasl *s)
{
    const void *v = NULL;
    if (sasl_getprop(s->conn, SASL_USERNAME, &v) != SASL_OK)
        return NULL;
    return v;
}

const char *rpc_sasl_get_mechanism(RpcSasl *s)
{
    return s->mech;
}

/* ---- the security layer ---- */

typedef struct {
    RpcTransport base;
    RpcTransport *inner;
    RpcSasl *sasl;
    gint decoding; /* atomic: set by a worker, read by the reader */
    gint encoding; /* atomic: set by the writer (after a reply) or the client */
    unsigned max_out;
    /* reader only */
    guint8 *raw;
    guint8 *plain;
    gsize plain_cap, plain_start, plain_end;
} RpcSaslTransport;

static const RpcTransportOps sasl_ops;

/* Decodes encoded bytes into the plaintext buffer (which is empty). */
static gboolean decode_into_plain(RpcSaslTransport *t, const guint8 *in, gsize len, GError **error)
{
    const char *out = NULL;
    unsigned outlen = 0;
    gint64 begin = rpc_transport_crypto_begin();
    g_mutex_lock(&t->sasl->lock);
    int rc = sasl_decode(t->sasl->conn, (const char *)in, len, &out, &outlen);
    g_mutex_unlock(&t->sasl->lock);
    rpc_transport_crypto_end(&t->base, RPC_CRYPTO_RECV, begin, 0);
    if (rc != SASL_OK) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "cannot decode SASL data from %s: %s",
                    t->base.peer, sasl_errdetail(t->sasl->conn));
        return FALSE;
    }
    if (outlen > t->plain_cap) {
        g_free(t->plain);
        t->plain_cap = MAX(outlen, SASL_MAX_BUFFER);
        t->plain = g_malloc(t->plain_cap);
    }
    if (outlen)
        memcpy(t->plain, out, outlen);
    t->plain_start = 0;
    t->plain_end = outlen;
    return TRUE;
}

static gssize sasl_transport_read(RpcTransport *base, void *buf, gsize len, GError **error)
{
    RpcSaslTransport *t = (RpcSaslTransport *)base;
    for (;;) {
        if (t->plain_end > t->plain_start) {
            gsize take = MIN(len, t->plain_end - t->plain_start);
            memcpy(buf, t->plain + t->plain_start, take);
            t->plain_start += take;
            return take;
        }
        gssize n;
        if (!g_atomic_int_get(&t->decoding)) {
            n = rpc_transport_read(t->inner, buf, len, error);
            /* Checked after the read returned: the peer sends encoded bytes
             * only after the switch, so these are encoded if it is on now. */
            if (n <= 0 || !g_atomic_int_get(&t->decoding))
                return n;
            if (!decode_into_plain(t, buf, n, error))
                return -1;
            continue;
        }
        if (!t->raw)
            t->raw = g_malloc(RAW_READ_SIZE);
        n = rpc_transport_read(t->inner, t->raw, RAW_READ_SIZE, error);
        if (n <= 0)
            return n;
        if (!decode_into_plain(t, t->raw, n, error))
            return -1;
    }
}

#define ENCODE_IOV_MAX 64

/* Encodes at most max_out plaintext bytes per sasl_encode call (the peer's
 * buffer), and writes each encoded block as it is. */
static gboolean sasl_transport_writev(RpcTransport *base, const struct iovec *iov, int iovcnt,
                                      GError **error)
{
    RpcSaslTransport *t = (RpcSaslTransport *)base;
    if (!g_atomic_int_get(&t->encoding))
        return rpc_transport_writev(t->inner, iov, iovcnt, error);

    int i = 0;
    gsize off = 0; /* into iov[i] */
    while (i < iovcnt) {
        struct iovec chunk[ENCODE_IOV_MAX];
        unsigned n = 0;
        gsize total = 0;
        while (i < iovcnt && n < ENCODE_IOV_MAX && total < t->max_out) {
            gsize avail = iov[i].iov_len - off;
            gsize take = MIN(avail, t->max_out - total);
            if (take > 0) {
                chunk[n].iov_base = (char *)iov[i].iov_base + off;
                chunk[n].iov_len = take;
                n++;
                total += take;
            }
            off += take;
            if (off == iov[i].iov_len) {
                i++;
                off = 0;
            }
        }
        if (n == 0)
            break;
        const char *out = NULL;
        unsigned outlen = 0;
        gint64 begin = rpc_transport_crypto_begin();
        g_mutex_lock(&t->sasl->lock);
        int rc = sasl_encodev(t->sasl->conn, chunk, n, &out, &outlen);
        g_mutex_unlock(&t->sasl->lock);
        rpc_transport_crypto_end(base, RPC_CRYPTO_SEND, begin, 0);
        if (rc != SASL_OK) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "cannot encode SASL data for %s: %s",
                        base->peer, sasl_errdetail(t->sasl->conn));
            return FALSE;
        }
        if (!rpc_transport_write_all(t->inner, out, outlen, error))
            return FALSE;
    }
    return TRUE;
}

static void sasl_transport_shutdown(RpcTransport *base)
{
    rpc_transport_shutdown(((RpcSaslTransport *)base)->inner);
}

static void sasl_transport_free(RpcTransport *base)
{
    RpcSaslTransport *t = (RpcSaslTransport *)base;
    rpc_transport_free(t->inner);
    rpc_sasl_unref(t->sasl);
    g_free(t->raw);
    g_free(t->plain);
    g_free(base->peer);
    g_free(t);
}

static const RpcTransportOps sasl_ops = {
    .read = sasl_transport_read,
    .writev = sasl_transport_writev,
    .shutdown = sasl_transport_shutdown,
    .free = sasl_transport_free,
};

RpcTransport *rpc_sasl_transport_new(RpcTransport *inner)
{
    RpcSaslTransport *t = g_new0(RpcSaslTransport, 1);
    t->base.ops = &sasl_ops;
    t->base.fd = inner->fd;
    t->base.peer = g_strdup(inner->peer);
    t->base.is_unix = inner->is_unix;
    t->base.is_secure = inner->is_secure;
    t->base.peer_uid = inner->peer_uid;
    t->base.peer_gid = inner->peer_gid;
    t->base.peer_pid = inner->peer_pid;
    t->inner = inner;
    return &t->base;
}

gboolean rpc_sasl_transport_is_sasl(RpcTransport *t)
{
    return t && t->ops == &sasl_ops;
}

RpcTransport *rpc_sasl_transport_get_inner(RpcTransport *t)
{
    return rpc_sasl_transport_is_sasl(t) ? ((RpcSaslTransport *)t)->inner : t;
}

void rpc_sasl_transport_start_decoding(RpcTransport *base, RpcSasl *sasl)
{
    g_return_if_fail(rpc_sasl_transport_is_sasl(base));
    RpcSaslTransport *t = (RpcSaslTransport *)base;
    g_return_if_fail(t->sasl == NULL);
    t->sasl = rpc_sasl_ref(sasl);
    const void *v = NULL;
    t->max_out = SASL_MAX_BUFFER;
    if (sasl_getprop(sasl->conn, SASL_MAXOUTBUF, &v) == SASL_OK && v && *(const unsigned *)v > 0)
        t->max_out = *(const unsigned *)v;
    if (rpc_sasl_get_ssf(sasl) >= 56)
        base->is_secure = TRUE;
    g_atomic_int_set(&t->decoding, 1);
}

void rpc_sasl_transport_start_encoding(RpcTransport *base)
{
    g_return_if_fail(rpc_sasl_transport_is_sasl(base));
    RpcSaslTransport *t = (RpcSaslTransport *)base;
    g_return_if_fail(t->sasl != NULL);
    g_atomic_int_set(&t->encoding, 1);
}

char *rpc_sasl_transport_describe(RpcTransport *t)
{
    if (!rpc_sasl_transport_is_sasl(t))
        return NULL;
    RpcSaslTransport *st = (RpcSaslTransport *)t;
    if (!g_atomic_int_get(&st->decoding) || !st->sasl)
        return NULL;
    const char *mech = rpc_sasl_get_mechanism(st->sasl);
    const char *user = rpc_sasl_get_username(st->sasl);
    return g_strdup_printf("SASL %s%s%s%s, security layer SSF %u", mech ? mech : "?",
                           user ? " user '" : "", user ? user : "", user ? "'" : "",
                           rpc_sasl_get_ssf(st->sasl));
}
