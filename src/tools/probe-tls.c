/* ferry-probe's certificate checks (probe-tls.h). */
#include "tools/probe-tls.h"

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <string.h>
#include <unistd.h>

#include "rpc/rpc-socket.h"
#include "util/error.h"

void probe_cert_info_clear(ProbeCertInfo *info)
{
    g_free(info->subject);
    g_free(info->names);
    memset(info, 0, sizeof(*info));
}

gnutls_x509_crt_t probe_cert_load(const char *path, GError **error)
{
    gnutls_datum_t data = {0};
    int r = gnutls_load_file(path, &data);
    if (r < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot read %s: %s", path,
                    gnutls_strerror(r));
        return NULL;
    }
    gnutls_x509_crt_t crt = NULL;
    gnutls_x509_crt_init(&crt);
    r = gnutls_x509_crt_import(crt, &data, GNUTLS_X509_FMT_PEM);
    gnutls_free(data.data);
    if (r < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                    "%s holds no PEM certificate: %s", path, gnutls_strerror(r));
        gnutls_x509_crt_deinit(crt);
        return NULL;
    }
    return crt;
}

static void append_name(GString *s, const char *kind, const char *name)
{
    if (s->len)
        g_string_append(s, ", ");
    g_string_append_printf(s, "%s %s", kind, name);
}

void probe_cert_describe(gnutls_x509_crt_t crt, ProbeCertInfo *info)
{
    memset(info, 0, sizeof(*info));
    char buf[1024];
    size_t len = sizeof(buf);
    if (gnutls_x509_crt_get_dn(crt, buf, &len) == 0)
        info->subject = g_strndup(buf, len);
    GString *names = g_string_new(NULL);
    len = sizeof(buf);
    if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &len) == 0)
        append_name(names, "CN", buf);
    for (unsigned i = 0;; i++) {
        len = sizeof(buf) - 1;
        int type = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &len, NULL);
        if (type < 0)
            break;
        if (type == GNUTLS_SAN_DNSNAME) {
            buf[len] = '\0';
            append_name(names, "DNS", buf);
        } else if (type == GNUTLS_SAN_IPADDRESS && (len == 4 || len == 16)) {
            char ip[INET6_ADDRSTRLEN];
            if (inet_ntop(len == 4 ? AF_INET : AF_INET6, buf, ip, sizeof(ip)))
                append_name(names, "IP", ip);
        }
    }
    info->names = g_string_free(names, FALSE);
    info->not_before = (gint64)gnutls_x509_crt_get_activation_time(crt);
    info->not_after = (gint64)gnutls_x509_crt_get_expiration_time(crt);
}

gboolean probe_cert_signed_by(gnutls_x509_crt_t crt, const char *ca_file, GError **error)
{
    gnutls_x509_trust_list_t tl = NULL;
    gnutls_x509_trust_list_init(&tl, 0);
    int r = gnutls_x509_trust_list_add_trust_file(tl, ca_file, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
    if (r <= 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                    "cannot read a CA certificate from %s: %s", ca_file,
                    r < 0 ? gnutls_strerror(r) : "none in the file");
        gnutls_x509_trust_list_deinit(tl, 1);
        return FALSE;
    }
    unsigned status = 0;
    /* Expiry is checked on its own, to name it. */
    r = gnutls_x509_trust_list_verify_crt(tl, &crt, 1,
                                          GNUTLS_VERIFY_DISABLE_TIME_CHECKS |
                                              GNUTLS_VERIFY_DISABLE_TRUSTED_TIME_CHECKS,
                                          &status, NULL);
    gnutls_x509_trust_list_deinit(tl, 1);
    if (r < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "cannot verify: %s",
                    gnutls_strerror(r));
        return FALSE;
    }
    return status == 0;
}

gboolean probe_cert_matches_host(gnutls_x509_crt_t crt, const char *host)
{
    return gnutls_x509_crt_check_hostname2(crt, host, 0) != 0;
}

gnutls_x509_crt_t probe_tls_fetch_server_cert(const char *host, guint port, const char *cert_file,
                                              const char *key_file, int timeout_ms,
                                              char **handshake_error, GError **error)
{
    *handshake_error = NULL;
    int fd = rpc_socket_connect_tcp(host, (guint16)port, timeout_ms, error);
    if (fd < 0)
        return NULL;
    gnutls_certificate_credentials_t cred = NULL;
    gnutls_session_t session = NULL;
    gnutls_x509_crt_t crt = NULL;
    gnutls_certificate_allocate_credentials(&cred);
    /* Our certificate, so that a server that asks for one goes on. */
    if (cert_file && key_file)
        gnutls_certificate_set_x509_key_file(cred, cert_file, key_file, GNUTLS_X509_FMT_PEM);
    gnutls_init(&session, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL);
    gnutls_set_default_priority(session);
    gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, cred);
    gnutls_transport_set_int(session, fd);
    gnutls_handshake_set_timeout(session, (unsigned)timeout_ms);
    int r;
    do {
        r = gnutls_handshake(session);
    } while (r < 0 && !gnutls_error_is_fatal(r));
    if (r < 0)
        *handshake_error = g_strdup(gnutls_strerror(r));
    unsigned n = 0;
    const gnutls_datum_t *chain = gnutls_certificate_get_peers(session, &n);
    if (chain && n > 0) {
        gnutls_x509_crt_init(&crt);
        if (gnutls_x509_crt_import(crt, &chain[0], GNUTLS_X509_FMT_DER) < 0) {
            gnutls_x509_crt_deinit(crt);
            crt = NULL;
        }
    }
    if (!crt)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR,
                    "the TLS handshake with %s:%u failed before the server showed a "
                    "certificate: %s",
                    host, port, *handshake_error ? *handshake_error : "no certificate sent");
    if (r == 0)
        gnutls_bye(session, GNUTLS_SHUT_WR);
    gnutls_deinit(session);
    gnutls_certificate_free_credentials(cred);
    close(fd);
    return crt;
}
