/* ferry-probe's certificate checks: what a certificate names, when it
 * expires, whether the CA signed it; and the destination's certificate
 * chain, fetched with a handshake that checks nothing itself, so that each
 * problem can be named on its own instead of one "handshake failed". */
#pragma once

#include <glib.h>
#include <gnutls/x509.h>

typedef struct {
    char *subject;   /* DN */
    char *names;     /* "CN host-b, DNS host-b, IP 10.1.2.3" */
    gint64 not_before, not_after; /* seconds since the epoch */
} ProbeCertInfo;

void probe_cert_info_clear(ProbeCertInfo *info);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(ProbeCertInfo, probe_cert_info_clear)

/* Loads a PEM certificate file (the first certificate in it). */
gnutls_x509_crt_t probe_cert_load(const char *path, GError **error);
void probe_cert_describe(gnutls_x509_crt_t crt, ProbeCertInfo *info);
/* TRUE if one of the CA certificates in ca_file signed crt (times not checked). */
gboolean probe_cert_signed_by(gnutls_x509_crt_t crt, const char *ca_file, GError **error);
/* Whether crt is valid for host (a name or an IP address), as libvirt checks. */
gboolean probe_cert_matches_host(gnutls_x509_crt_t crt, const char *host);

/* Connects to host:port and runs a TLS handshake with the client files (cert
 * and key may be NULL), checking nothing; returns the server's leaf
 * certificate (a chain's first), or NULL with why. The handshake may fail
 * after the server's certificate arrived (the server refused ours): the
 * certificate is returned and *handshake_error says why. */
gnutls_x509_crt_t probe_tls_fetch_server_cert(const char *host, guint port, const char *cert_file,
                                              const char *key_file, int timeout_ms,
                                              char **handshake_error, GError **error);
