/* SASL authentication of RPC clients: the exchange, its checks and the
 * slow-down of repeated failures. */
#include "remote/remote-auth.h"

#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

#include "rpc/rpc-sasl.h"
#include "rpc/rpc-tls.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "remote.auth"

#define SASL_SERVICE "libvirt"
/* Plain TCP needs a security layer at least this strong (libvirt's floor). */
#define MIN_SSF_PLAIN 56
#define MAX_SSF 100000
/* A client taking more steps than this is not authenticating. */
#define MAX_STEPS 32
/* Failure slow-down: from the second failure within the window, wait
 * BASE << (n - 2), at most MAX, before answering. */
#define FAILURE_WINDOW_US (15 * 60 * G_USEC_PER_SEC)
#define FAILURE_DELAY_BASE_US (250 * 1000)
#define FAILURE_DELAY_MAX_US (5 * G_USEC_PER_SEC)
#define FAILURE_TABLE_MAX 4096

G_STATIC_ASSERT(REMOTE_AUTH_MESSAGE_MAX >= RPC_PAYLOAD_OFFSET + 4 + 4 * 8 + 4 + 4 +
                                              4 * REMOTE_AUTH_SASL_DATA_MAX);

struct RemoteAuth {
    GMutex lock;   /* a client may pipeline auth calls; they run one at a time */
    RpcSasl *sasl; /* from INIT until success or failure */
    gboolean done;
    guint steps;
    char *identity; /* "SASL SCRAM-SHA-256 user 'alice'" once authenticated */
};

typedef struct {
    guint count;
    gint64 last_us;
} FailureRecord;

typedef struct {
    gint64 due_us;
    RpcServerClient *client;
    RpcMessage *reply;
} DelayedReply;

static struct {
    GMutex lock;
    GCond cond;
    gboolean inited;
    char **allowed_usernames;
    GHashTable *failures; /* peer host -> FailureRecord */
    GQueue delayed;       /* DelayedReply, by due time */
    GThread *thread;
    gboolean stopping;
} G;

/* ---- global state ---- */

gboolean remote_auth_global_init(const char *const *allowed_usernames, GError **error)
{
    if (!rpc_sasl_server_global_init(SASL_SERVICE, error))
        return FALSE;
    g_mutex_lock(&G.lock);
    g_strfreev(G.allowed_usernames);
    G.allowed_usernames = allowed_usernames ? g_strdupv((char **)allowed_usernames) : NULL;
    if (!G.failures)
        G.failures = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    G.stopping = FALSE;
    G.inited = TRUE;
    g_mutex_unlock(&G.lock);
    return TRUE;
}

static void delayed_send(DelayedReply *d)
{
    rpc_server_client_reply(d->client, d->reply);
    rpc_server_client_unref(d->client);
    g_free(d);
}

void remote_auth_global_done(void)
{
    g_mutex_lock(&G.lock);
    G.stopping = TRUE;
    g_cond_broadcast(&G.cond);
    GThread *thread = g_steal_pointer(&G.thread);
    g_mutex_unlock(&G.lock);
    if (thread)
        g_thread_join(thread);

    g_mutex_lock(&G.lock);
    GQueue left = G.delayed;
    g_queue_init(&G.delayed);
    g_strfreev(g_steal_pointer(&G.allowed_usernames));
    g_clear_pointer(&G.failures, g_hash_table_destroy);
    gboolean inited = G.inited;
    G.inited = FALSE;
    g_mutex_unlock(&G.lock);
    /* The server has stopped: these replies go to closed connections. */
    g_queue_clear_full(&left, (GDestroyNotify)delayed_send);
    if (inited)
        rpc_sasl_global_done();
}

/* ---- failure slow-down ---- */

/* "127.0.0.1" (no port: a new connection is the same attacker), or "unix". */
static char *peer_host(RpcServerClient *client)
{
    RpcTransport *t = rpc_server_client_get_transport(client);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[NI_MAXHOST];
    if (getpeername(t->fd, (struct sockaddr *)&ss, &sl) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) &&
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), NULL, 0, NI_NUMERICHOST) == 0)
        return g_strdup(host);
    return g_strdup_printf("unix uid %" G_GINT64_FORMAT, t->peer_uid);
}

static gint64 record_failure(const char *host)
{
    gint64 now = g_get_monotonic_time();
    g_mutex_lock(&G.lock);
    if (!G.failures)
        G.failures = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    if (g_hash_table_size(G.failures) >= FAILURE_TABLE_MAX) {
        GHashTableIter it;
        gpointer value;
        g_hash_table_iter_init(&it, G.failures);
        while (g_hash_table_iter_next(&it, NULL, &value))
            if (now - ((FailureRecord *)value)->last_us > FAILURE_WINDOW_US)
                g_hash_table_iter_remove(&it);
        if (g_hash_table_size(G.failures) >= FAILURE_TABLE_MAX)
            g_hash_table_remove_all(G.failures);
    }
    FailureRecord *r = g_hash_table_lookup(G.failures, host);
    if (!r) {
        r = g_new0(FailureRecord, 1);
        g_hash_table_insert(G.failures, g_strdup(host), r);
    } else if (now - r->last_us > FAILURE_WINDOW_US) {
        r->count = 0;
    }
    r->count++;
    r->last_us = now;
    guint n = r->count;
    g_mutex_unlock(&G.lock);
    if (n <= 1)
        return 0;
    return MIN((gint64)FAILURE_DELAY_BASE_US << MIN(n - 2, 8u), FAILURE_DELAY_MAX_US);
}

static void forget_failures(const char *host)
{
    g_mutex_lock(&G.lock);
    if (G.failures)
        g_hash_table_remove(G.failures, host);
    g_mutex_unlock(&G.lock);
}

static gpointer delay_thread(gpointer data)
{
    g_mutex_lock(&G.lock);
    while (!G.stopping) {
        DelayedReply *d = g_queue_peek_head(&G.delayed);
        gint64 now = g_get_monotonic_time();
        if (!d) {
            g_cond_wait(&G.cond, &G.lock);
        } else if (d->due_us > now) {
            g_cond_wait_until(&G.cond, &G.lock, d->due_us);
        } else {
            g_queue_pop_head(&G.delayed);
            g_mutex_unlock(&G.lock);
            delayed_send(d);
            g_mutex_lock(&G.lock);
        }
    }
    g_mutex_unlock(&G.lock);
    return NULL;
}

static gint compare_due(gconstpointer a, gconstpointer b, gpointer data)
{
    gint64 x = ((const DelayedReply *)a)->due_us, y = ((const DelayedReply *)b)->due_us;
    return x < y ? -1 : x > y;
}

void remote_auth_reply_later(RpcServerClient *client, RpcMessage *reply, gint64 delay_us)
{
    DelayedReply *d = g_new0(DelayedReply, 1);
    d->due_us = g_get_monotonic_time() + delay_us;
    d->client = rpc_server_client_ref(client);
    d->reply = reply;
    g_mutex_lock(&G.lock);
    if (G.stopping) {
        g_mutex_unlock(&G.lock);
        delayed_send(d);
        return;
    }
    if (!G.thread) {
        g_autoptr(GError) error = NULL;
        G.thread = g_thread_try_new("auth-delay", delay_thread, NULL, &error);
        if (!G.thread) {
            /* Out of threads: answer now rather than never. */
            g_mutex_unlock(&G.lock);
            FERRY_WARN_LIMITED("cannot start the thread that delays failed logins: %s",
                               error->message);
            delayed_send(d);
            return;
        }
    }
    g_queue_insert_sorted(&G.delayed, d, compare_due, NULL);
    g_cond_broadcast(&G.cond);
    g_mutex_unlock(&G.lock);
}

/* ---- per client ---- */

RemoteAuth *remote_auth_new(void)
{
    RemoteAuth *a = g_new0(RemoteAuth, 1);
    g_mutex_init(&a->lock);
    return a;
}

void remote_auth_free(RemoteAuth *a)
{
    if (!a)
        return;
    rpc_sasl_unref(a->sasl);
    g_free(a->identity);
    g_mutex_clear(&a->lock);
    g_free(a);
}

char *remote_auth_get_identity(RemoteAuth *a)
{
    if (!a)
        return NULL;
    g_mutex_lock(&a->lock);
    char *id = g_strdup(a->identity);
    g_mutex_unlock(&a->lock);
    return id;
}

static gboolean user_allowed(const char *user)
{
    g_mutex_lock(&G.lock);
    gboolean ok = G.allowed_usernames == NULL;
    for (char **p = G.allowed_usernames; p && *p && !ok; p++)
        ok = g_pattern_match_simple(*p, user);
    g_mutex_unlock(&G.lock);
    return ok;
}

/* Logs, forgets the session, sets the reply delay and the error clients
 * see: libvirt's code 45 and text, whatever the reason (which stays in the log). */
static gboolean auth_fail(RemoteAuth *a, RpcServerClient *client, RemoteAuthOutcome *o,
                          GError **error, const char *fmt, ...) G_GNUC_PRINTF(5, 6);

static gboolean auth_fail(RemoteAuth *a, RpcServerClient *client, RemoteAuthOutcome *o,
                          GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *why = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    const char *user = a && a->sasl ? rpc_sasl_get_username(a->sasl) : NULL;
    const char *mech = a && a->sasl ? rpc_sasl_get_mechanism(a->sasl) : NULL;
    g_autofree char *host = peer_host(client);
    o->reply_delay_us = record_failure(host);
    /* The user and mechanism names come from the client; the log escapes them. */
    FERRY_WARN_LIMITED("authentication failed for %s (user '%s', mechanism %s): %s%s",
               rpc_server_client_get_peer(client), user ? user : "unknown", mech ? mech : "none",
               why, o->reply_delay_us ? " (repeated failure: answer delayed)" : "");
    if (a)
        g_clear_pointer(&a->sasl, rpc_sasl_unref);
    g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED, "authentication failed");
    return FALSE;
}

static gboolean sasl_init_locked(RemoteAuth *a, RpcServerClient *client,
                                 remote_auth_sasl_init_ret *ret, RemoteAuthOutcome *o,
                                 GError **error)
{
    if (a->done)
        return auth_fail(a, client, o, error, "the client is already authenticated");
    g_clear_pointer(&a->sasl, rpc_sasl_unref);
    a->steps = 0;

    g_autoptr(GError) err = NULL;
    RpcTransport *t = rpc_server_client_get_transport(client);
    RpcTransport *inner = rpc_sasl_transport_get_inner(t);
    g_autoptr(RpcSasl) sasl = rpc_sasl_server_new(SASL_SERVICE, t, &err);
    if (!sasl)
        return auth_fail(a, client, o, error, "%s", err->message);
    /* TLS counts as the layer's strength; a UNIX socket needs none. */
    guint external = rpc_tls_transport_get_key_bits(inner);
    gboolean secure = inner->is_secure;
    if ((external && !rpc_sasl_set_external_ssf(sasl, external, &err)) ||
        !rpc_sasl_set_security(sasl, secure ? 0 : MIN_SSF_PLAIN, MAX_SSF, secure, &err))
        return auth_fail(a, client, o, error, "%s", err->message);
    char *mechs = rpc_sasl_list_mechanisms(sasl, &err);
    if (!mechs)
        return auth_fail(a, client, o, error, "%s%s", err->message,
                         secure ? ""
                                : " (plain TCP needs a mechanism with a security layer, "
                                  "SSF >= 56, e.g. DIGEST-MD5 or GSSAPI, in mech_list)");
    FERRY_DEBUG("%s: offering SASL mechanisms %s", rpc_server_client_get_peer(client), mechs);
    ret->mechlist = mechs;
    a->sasl = g_steal_pointer(&sasl);
    return TRUE;
}

gboolean remote_auth_sasl_init(RemoteAuth *a, RpcServerClient *client,
                               remote_auth_sasl_init_ret *ret, RemoteAuthOutcome *o, GError **error)
{
    if (!a)
        return auth_fail(NULL, client, o, error, "SASL is not offered on this socket");
    g_mutex_lock(&a->lock);
    gboolean ok = sasl_init_locked(a, client, ret, o, error);
    g_mutex_unlock(&a->lock);
    return ok;
}

/* Shared tail of START and STEP: the reply fields and, on success, the checks. */
static gboolean finish_step(RemoteAuth *a, RpcServerClient *client, RpcSaslStatus status,
                            const char *out, gsize outlen, GError *err, int *complete, int *nil,
                            u_int *data_len, char **data_val, RemoteAuthOutcome *o, GError **error)
{
    if (status == RPC_SASL_FAILED)
        return auth_fail(a, client, o, error, "%s", err->message);
    if (outlen > REMOTE_AUTH_SASL_DATA_MAX)
        return auth_fail(a, client, o, error, "SASL reply of %zu bytes is too long", outlen);
    if (status == RPC_SASL_CONTINUE && ++a->steps > MAX_STEPS)
        return auth_fail(a, client, o, error, "more than %u SASL steps", MAX_STEPS);

    /* Copied now: out belongs to the session, which success releases. */
    *complete = status == RPC_SASL_COMPLETE;
    if (out) {
        *nil = 0;
        *data_len = outlen;
        *data_val = outlen ? g_memdup2(out, outlen) : NULL;
    } else {
        *nil = 1;
        *data_len = 0;
        *data_val = NULL;
    }

    if (status == RPC_SASL_COMPLETE) {
        RpcTransport *t = rpc_server_client_get_transport(client);
        RpcTransport *inner = rpc_sasl_transport_get_inner(t);
        guint ssf = rpc_sasl_get_ssf(a->sasl);
        const char *user = rpc_sasl_get_username(a->sasl);
        if (!inner->is_secure && ssf < MIN_SSF_PLAIN)
            return auth_fail(a, client, o, error,
                             "negotiated SSF %u is below %u on a connection without TLS", ssf,
                             MIN_SSF_PLAIN);
        if (!user)
            return auth_fail(a, client, o, error, "the mechanism named no user");
        if (ssf > 0 && !rpc_sasl_transport_is_sasl(t))
            return auth_fail(a, client, o, error,
                             "a security layer was negotiated but this listener has no "
                             "SASL layer slot (RpcListenerOptions.sasl_layer)");
        if (!user_allowed(user))
            return auth_fail(a, client, o, error, "user '%s' is not in sasl_allowed_username_list",
                             user);
        FERRY_INFO("%s authenticated as '%s' with SASL %s (SSF %u%s)",
                   rpc_server_client_get_peer(client), user, rpc_sasl_get_mechanism(a->sasl), ssf,
                   ssf ? ", security layer on" : "");
        g_autofree char *host = peer_host(client);
        forget_failures(host);
        a->done = TRUE;
        g_free(a->identity);
        a->identity = g_strdup_printf("SASL %s user '%s'", rpc_sasl_get_mechanism(a->sasl), user);
        o->authenticated = TRUE;
        if (ssf > 0) {
            /* Decode from now on (the client sends encoded bytes only after
             * reading this reply); encode once the reply is written. Nothing
             * after this call has been read yet: an unauthenticated
             * connection reads one message at a time and not a byte beyond
             * it, so plaintext sent behind this call is decoded, and fails. */
            rpc_sasl_transport_start_decoding(t, a->sasl);
            o->layer = TRUE;
        }
        rpc_server_client_set_sasl_username(client, user); /* virt-admin client-info */
        rpc_server_client_set_authenticated(client);
        g_clear_pointer(&a->sasl, rpc_sasl_unref);
    }
    return TRUE;
}

/* RFC 4422: 1 to 20 of A-Z, 0-9, '-', '_' (cyrus-sasl also matches lower case). */
static gboolean mechanism_name_valid(const char *mech)
{
    gsize n = 0;
    for (; mech[n]; n++)
        if (n >= REMOTE_AUTH_MECH_NAME_MAX ||
            !(g_ascii_isalnum(mech[n]) || mech[n] == '-' || mech[n] == '_'))
            return FALSE;
    return n > 0;
}

gboolean remote_auth_sasl_start(RemoteAuth *a, RpcServerClient *client,
                                const remote_auth_sasl_start_args *args,
                                remote_auth_sasl_start_ret *ret, RemoteAuthOutcome *o,
                                GError **error)
{
    if (!a)
        return auth_fail(NULL, client, o, error, "SASL is not offered on this socket");
    g_mutex_lock(&a->lock);
    gboolean ok;
    if (!mechanism_name_valid(args->mech)) {
        ok = auth_fail(a, client, o, error,
                       "the client asked for a mechanism name that is no SASL mechanism "
                       "(%zu bytes: '%.*s')", strlen(args->mech), REMOTE_AUTH_MECH_NAME_MAX + 1,
                       args->mech);
    } else if (!a->sasl || a->done || a->steps > 0) {
        ok = auth_fail(a, client, o, error, "AUTH_SASL_START out of order");
    } else {
        g_autoptr(GError) err = NULL;
        const char *out = NULL;
        gsize outlen = 0;
        const char *in = args->nil ? NULL : args->data.data_val ? args->data.data_val : "";
        RpcSaslStatus st = rpc_sasl_server_start(a->sasl, args->mech, in, args->data.data_len, &out,
                                                 &outlen, &err);
        ok = finish_step(a, client, st, out, outlen, err, &ret->complete, &ret->nil,
                         &ret->data.data_len, &ret->data.data_val, o, error);
    }
    g_mutex_unlock(&a->lock);
    return ok;
}

gboolean remote_auth_sasl_step(RemoteAuth *a, RpcServerClient *client,
                               const remote_auth_sasl_step_args *args,
                               remote_auth_sasl_step_ret *ret, RemoteAuthOutcome *o, GError **error)
{
    if (!a)
        return auth_fail(NULL, client, o, error, "SASL is not offered on this socket");
    g_mutex_lock(&a->lock);
    gboolean ok;
    if (!a->sasl || a->done || a->steps == 0) {
        ok = auth_fail(a, client, o, error, "AUTH_SASL_STEP out of order");
    } else {
        g_autoptr(GError) err = NULL;
        const char *out = NULL;
        gsize outlen = 0;
        const char *in = args->nil ? NULL : args->data.data_val ? args->data.data_val : "";
        RpcSaslStatus st =
            rpc_sasl_server_step(a->sasl, in, args->data.data_len, &out, &outlen, &err);
        ok = finish_step(a, client, st, out, outlen, err, &ret->complete, &ret->nil,
                         &ret->data.data_len, &ret->data.data_val, o, error);
    }
    g_mutex_unlock(&a->lock);
    return ok;
}

void remote_auth_layer_reply_written(gpointer transport)
{
    rpc_sasl_transport_start_encoding(transport);
}
