/* Opening an authenticated RPC client to a peer daemon by URI. */
#include "remote/remote-peer.h"

#include <string.h>
#include <unistd.h>

#include "remote/remote-uri.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-sasl.h"
#include "rpc/rpc-socket.h"
#include "rpc/rpc-tls.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "remote.peer"

#define DEFAULT_TIMEOUT_MS 30000
#define FEATURE_PROGRAM_KEEPALIVE 10
#define CONNECT_RO 1
#define MIN_SSF_PLAIN 56
#define MAX_SASL_STEPS 32

/* ---- auth files ---- */

void remote_peer_credentials_clear(RemotePeerCredentials *c)
{
    g_free(c->authname);
    g_free(c->username);
    if (c->password) {
        memset(c->password, 0, strlen(c->password));
        g_free(c->password);
    }
    g_free(c->realm);
    g_free(c->path);
    memset(c, 0, sizeof(*c));
}

void remote_peer_report_clear(RemotePeerReport *r)
{
    g_free(r->auth_file);
    g_free(r->sasl_mechs);
    g_free(r->sasl_mech);
    g_free(r->sasl_user);
    memset(r, 0, sizeof(*r));
}

char *remote_peer_find_auth_file(const char *explicit_path)
{
    if (explicit_path)
        return g_strdup(explicit_path);
    const char *env = g_getenv("LIBVIRT_AUTH_FILE");
    if (env && *env)
        return g_strdup(env);
    char *user = g_build_filename(g_get_user_config_dir(), "libvirt", "auth.conf", NULL);
    if (g_file_test(user, G_FILE_TEST_EXISTS))
        return user;
    g_free(user);
    if (g_file_test("/etc/libvirt/auth.conf", G_FILE_TEST_EXISTS))
        return g_strdup("/etc/libvirt/auth.conf");
    return NULL;
}

gboolean remote_peer_lookup_credentials(const char *path, const char *host,
                                        RemotePeerCredentials *out, GError **error)
{
    memset(out, 0, sizeof(*out));
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autoptr(GError) err = NULL;
    if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &err)) {
        /* GLib's parse errors quote the offending line: this message may
         * reach a client, so it names the file and the kind of problem only. */
        const char *why = err->domain == G_FILE_ERROR ? err->message /* names the path only */
                          : err->domain == G_KEY_FILE_ERROR
                              ? "it is not in the key file format ([group] and key=value lines)"
                              : "it cannot be parsed";
        g_set_error(error, FERRY_ERROR, FERRY_ERR_CONF_SYNTAX, "cannot read auth file %s: %s",
                    path, why);
        return FALSE;
    }
    g_autofree char *group = g_strdup_printf("auth-libvirt-%s", host ? host : "localhost");
    if (!g_key_file_has_group(kf, group)) {
        g_free(group);
        group = g_strdup("auth-libvirt-default");
        if (!g_key_file_has_group(kf, group))
            return TRUE;
    }
    g_autofree char *name = g_key_file_get_string(kf, group, "credentials", NULL);
    if (!name) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_CONF_SYNTAX,
                    "auth file %s: [%s] has no 'credentials' key", path, group);
        return FALSE;
    }
    g_autofree char *cgroup = g_strdup_printf("credentials-%s", g_strstrip(name));
    if (!g_key_file_has_group(kf, cgroup)) {
        /* Not quoting the name: it is the file's content. */
        g_set_error(error, FERRY_ERROR, FERRY_ERR_CONF_SYNTAX,
                    "auth file %s: [%s] names credentials that have no group of their own", path,
                    group);
        return FALSE;
    }
    out->authname = g_key_file_get_string(kf, cgroup, "authname", NULL);
    out->username = g_key_file_get_string(kf, cgroup, "username", NULL);
    out->password = g_key_file_get_string(kf, cgroup, "password", NULL);
    out->realm = g_key_file_get_string(kf, cgroup, "realm", NULL);
    out->path = g_strdup(path);
    return TRUE;
}

/* ---- calls ---- */

static gboolean call(RpcClient *c, int proc, xdrproc_t af, void *args, xdrproc_t rf, void *ret,
                     int timeout, GError **error)
{
    return rpc_client_call(c, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc, af, args, rf, ret,
                           timeout, error);
}

/* AUTH_LIST: the first type, or NONE for a server that does not know the call. */
static gboolean auth_list(RpcClient *c, int timeout, int *type, GError **error)
{
    remote_auth_list_ret ret = {0};
    g_autoptr(GError) err = NULL;
    *type = REMOTE_AUTH_NONE;
    if (!call(c, REMOTE_PROC_AUTH_LIST, NULL, NULL, (xdrproc_t)xdr_remote_auth_list_ret, &ret,
              timeout, &err)) {
        if (err->domain == FERRY_REMOTE_ERROR && err->code == FERRY_ERR_NO_SUPPORT)
            return TRUE;
        g_propagate_error(error, g_steal_pointer(&err));
        return FALSE;
    }
    if (ret.types.types_len > 0)
        *type = ret.types.types_val[0];
    xdr_free((xdrproc_t)xdr_remote_auth_list_ret, (char *)&ret);
    return TRUE;
}

static char *ask(const RemotePeerOptions *o, const char *what, const char *host)
{
    return o->get_credential ? o->get_credential(what, host, o->data) : NULL;
}

/* Restricts the server's list to the mechanism the URI asks for (auth=sasl.MECH). */
static char *pick_mechanisms(const char *offered, const char *auth, GError **error)
{
    if (!auth || !g_str_has_prefix(auth, "sasl."))
        return g_strdup(offered);
    const char *want = auth + 5;
    g_auto(GStrv) list = g_strsplit(offered, ",", -1);
    for (char **p = list; *p; p++)
        if (g_ascii_strcasecmp(g_strstrip(*p), want) == 0)
            return g_strdup(*p);
    g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                "SASL mechanism %s was asked for (auth=%s) but the server offers only %s", want,
                auth, offered);
    return NULL;
}

/* A NUL-terminated copy of SASL data from the wire (mechanisms parse text). */
static char *dup_data(const char *data, gsize len)
{
    char *copy = g_malloc(len + 1);
    if (len)
        memcpy(copy, data, len);
    copy[len] = '\0';
    return copy;
}

static gboolean sasl_authenticate(RpcClient *c, RpcTransport *t, const RemoteUri *uri,
                                  const RemotePeerOptions *o, int timeout, GError **error)
{
    if (!rpc_sasl_client_global_init(error))
        return FALSE;
    const char *host = uri->host ? uri->host : "localhost";

    /* Credentials: the auth file, then the caller. */
    RemotePeerCredentials file = {0};
    g_autofree char *path = remote_peer_find_auth_file(o->authfile ? o->authfile : uri->authfile);
    if (path && !remote_peer_lookup_credentials(path, host, &file, error))
        return FALSE;
    if (!file.authname)
        file.authname = ask(o, "authname", host);
    if (!file.password)
        file.password = ask(o, "password", host);
    if (!file.username)
        file.username = ask(o, "username", host);
    RemotePeerReport *report = o->report;
    if (report) {
        report->auth_file = g_strdup(path);
        report->sasl_user = g_strdup(file.authname ? file.authname : file.username);
    }
    g_autofree char *origin = path ? g_strdup_printf("looked in auth file %s", path)
                                   : g_strdup("no auth file: set LIBVIRT_AUTH_FILE or create "
                                              "$XDG_CONFIG_HOME/libvirt/auth.conf");
    RpcSaslCredentials creds = {.authname = file.authname,
                                .username = file.username,
                                .password = file.password,
                                .realm = file.realm,
                                .origin = origin};
    g_autoptr(RpcSasl) sasl = rpc_sasl_client_new("libvirt", host, t, &creds, error);
    remote_peer_credentials_clear(&file);
    if (!sasl)
        return FALSE;

    RpcTransport *inner = rpc_sasl_transport_get_inner(t);
    guint external = rpc_tls_transport_get_key_bits(inner);
    gboolean secure = inner->is_secure;
    if ((external && !rpc_sasl_set_external_ssf(sasl, external, error)) ||
        !rpc_sasl_set_security(sasl, secure ? 0 : MIN_SSF_PLAIN, 100000, secure, error))
        return FALSE;

    remote_auth_sasl_init_ret init = {0};
    if (!call(c, REMOTE_PROC_AUTH_SASL_INIT, NULL, NULL, (xdrproc_t)xdr_remote_auth_sasl_init_ret,
              &init, timeout, error))
        return FALSE;
    if (report)
        report->sasl_mechs = g_strdup(init.mechlist);
    g_autofree char *mechs = pick_mechanisms(init.mechlist, uri->auth, error);
    xdr_free((xdrproc_t)xdr_remote_auth_sasl_init_ret, (char *)&init);
    if (!mechs)
        return FALSE;

    const char *mech = NULL, *out = NULL;
    gsize outlen = 0;
    RpcSaslStatus mine = rpc_sasl_client_start(sasl, mechs, &mech, &out, &outlen, error);
    if (mine == RPC_SASL_FAILED)
        return FALSE;
    FERRY_DEBUG("SASL with %s: mechanism %s", host, mech);
    if (report)
        report->sasl_mech = g_strdup(mech);

    remote_auth_sasl_start_args sargs = {.mech = (char *)mech,
                                         .nil = out == NULL,
                                         .data = {.data_len = outlen, .data_val = (char *)out}};
    remote_auth_sasl_start_ret sret = {0};
    if (!call(c, REMOTE_PROC_AUTH_SASL_START, (xdrproc_t)xdr_remote_auth_sasl_start_args, &sargs,
              (xdrproc_t)xdr_remote_auth_sasl_start_ret, &sret, timeout, error))
        return FALSE;
    /* The server's last answer, as (complete, data); STEP's ret has START's layout. */
    gboolean server_done = sret.complete;
    g_autofree char *in = sret.nil ? NULL : dup_data(sret.data.data_val, sret.data.data_len);
    gsize inlen = sret.data.data_len;
    xdr_free((xdrproc_t)xdr_remote_auth_sasl_start_ret, (char *)&sret);

    for (guint steps = 0;; steps++) {
        if (server_done) {
            /* The server's final data (e.g. its proof) completes our side. */
            if (mine != RPC_SASL_COMPLETE) {
                mine = rpc_sasl_client_step(sasl, in, inlen, &out, &outlen, error);
                if (mine == RPC_SASL_FAILED)
                    return FALSE;
            }
            if (mine != RPC_SASL_COMPLETE) {
                g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                            "SASL %s: the server %s finished before we did", mech, host);
                return FALSE;
            }
            break;
        }
        if (steps >= MAX_SASL_STEPS) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                        "SASL %s with %s did not finish within %u steps", mech, host, steps);
            return FALSE;
        }
        mine = rpc_sasl_client_step(sasl, in, inlen, &out, &outlen, error);
        if (mine == RPC_SASL_FAILED)
            return FALSE;
        remote_auth_sasl_step_args args = {.nil = out == NULL,
                                           .data = {.data_len = outlen, .data_val = (char *)out}};
        remote_auth_sasl_step_ret ret = {0};
        if (!call(c, REMOTE_PROC_AUTH_SASL_STEP, (xdrproc_t)xdr_remote_auth_sasl_step_args, &args,
                  (xdrproc_t)xdr_remote_auth_sasl_step_ret, &ret, timeout, error))
            return FALSE;
        server_done = ret.complete;
        g_free(in);
        in = ret.nil ? NULL : dup_data(ret.data.data_val, ret.data.data_len);
        inlen = ret.data.data_len;
        xdr_free((xdrproc_t)xdr_remote_auth_sasl_step_ret, (char *)&ret);
    }

    guint ssf = rpc_sasl_get_ssf(sasl);
    if (!secure && ssf < MIN_SSF_PLAIN) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "SASL %s with %s negotiated SSF %u; a connection without TLS needs %u", mech,
                    host, ssf, MIN_SSF_PLAIN);
        return FALSE;
    }
    if (ssf > 0) {
        /* The server encodes from its next reply on, which answers our next
         * (encoded) call: both directions switch now. */
        rpc_sasl_transport_start_decoding(t, sasl);
        rpc_sasl_transport_start_encoding(t);
    }
    FERRY_DEBUG("authenticated to %s with SASL %s (SSF %u)", host, mech, ssf);
    if (report) {
        report->sasl_ssf = ssf;
        report->sasl_done = TRUE;
    }
    return TRUE;
}

/* ---- connecting ---- */

static RpcTransport *connect_transport(const RemoteUri *uri, const RemotePeerOptions *o,
                                       int timeout, GError **error)
{
    if (uri->transport == REMOTE_URI_UNIX) {
        g_autofree char *path =
            uri->socket ? g_strdup(uri->socket) : remote_uri_default_socket(o->readonly);
        int fd = rpc_socket_connect_unix(path, error);
        return fd < 0 ? NULL : rpc_transport_new_socket(fd);
    }
    if (uri->transport == REMOTE_URI_TCP) {
        int fd = rpc_socket_connect_tcp(uri->host, uri->port, timeout, error);
        return fd < 0 ? NULL : rpc_transport_new_socket(fd);
    }

    g_autofree char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL;
    rpc_tls_client_locate_files(uri->pkipath ? uri->pkipath : o->pkipath, &ca, &crl, &cert,
                                &key);
    RpcTlsConfig tc = {
        .ca_file = ca,
        .crl_file = crl,
        .cert_file = cert,
        .key_file = key,
        .verify_peer = !uri->no_verify,
        .priority = uri->tls_priority,
        .skip_own_cert_checks = uri->no_sanity,
        .handshake_timeout_ms = timeout,
    };
    g_autoptr(RpcTlsContext) ctx = rpc_tls_context_new_client(&tc, error);
    if (!ctx) {
        g_prefix_error(error, REMOTE_PEER_OWN_TLS_ERROR);
        return NULL;
    }
    int fd = rpc_socket_connect_tcp(uri->host, uri->port, timeout, error);
    if (fd < 0)
        return NULL;
    RpcTransport *t = rpc_tls_client_handshake(ctx, fd, uri->host, error);
    if (!t)
        close(fd);
    return t;
}

RpcClient *remote_peer_open(const char *uri_text, const RemotePeerOptions *options, GError **error)
{
    static const RemotePeerOptions defaults = {0};
    const RemotePeerOptions *o = options ? options : &defaults;
    int timeout = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;

    g_autoptr(RemoteUri) uri = remote_uri_parse(uri_text, error);
    if (!uri)
        return NULL;
    RpcTransport *t = connect_transport(uri, o, timeout, error);
    if (!t)
        return NULL;
    /* Every connection gets a SASL layer slot; it stays a pass-through
     * unless SASL negotiates a layer. */
    t = rpc_sasl_transport_new(t);
    g_autoptr(RpcClient) c = rpc_client_new_for_transport(t, o->callbacks);

    int type = REMOTE_AUTH_NONE;
    if (!auth_list(c, timeout, &type, error))
        return NULL;
    if (uri->auth && g_str_has_prefix(uri->auth, "sasl"))
        type = REMOTE_AUTH_SASL;
    else if (uri->auth && strcmp(uri->auth, "polkit") == 0)
        type = REMOTE_AUTH_POLKIT;
    if (type == REMOTE_AUTH_SASL) {
        if (!sasl_authenticate(c, t, uri, o, timeout, error))
            return NULL;
    } else if (type != REMOTE_AUTH_NONE) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_AUTH_FAILED,
                    "the server at %s asks for authentication type %d, which ferry's client "
                    "does not speak (only none and sasl)",
                    rpc_client_get_peer(c), type);
        return NULL;
    }
    /* Read events and stream packets as they come from now on (through the
     * layer, if SASL switched one on). */
    rpc_client_set_authenticated(c);

    if (!o->no_keepalive) {
        remote_connect_supports_feature_args fa = {.feature = FEATURE_PROGRAM_KEEPALIVE};
        remote_connect_supports_feature_ret fr = {0};
        if (!call(c, REMOTE_PROC_CONNECT_SUPPORTS_FEATURE,
                  (xdrproc_t)xdr_remote_connect_supports_feature_args, &fa,
                  (xdrproc_t)xdr_remote_connect_supports_feature_ret, &fr, timeout, error))
            return NULL;
        if (fr.supported)
            rpc_client_start_keepalive(c, o->keepalive_interval ? o->keepalive_interval : 5,
                                       o->keepalive_count ? o->keepalive_count : 5);
    }

    char *name = uri->name;
    remote_connect_open_args oa = {.name = &name, .flags = o->readonly ? CONNECT_RO : 0};
    if (!call(c, REMOTE_PROC_CONNECT_OPEN, (xdrproc_t)xdr_remote_connect_open_args, &oa, NULL, NULL,
              timeout, error))
        return NULL;
    return g_steal_pointer(&c);
}
