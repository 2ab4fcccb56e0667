/* ferry-probe DEST_URI [DOMAIN]: checks the path of a migration before it
 * runs (docs/debugging.md, "Before a migration: ferry-probe").
 *
 * From here, as virsh would reach DEST_URI: the port, the TLS certificates
 * of both sides (names, expiry, signer), SASL, the destination's VMM and free
 * memory, the round trip. Then the source daemon (-c, the local ferryd by
 * default) measures the path as a migration uses it, daemon to daemon with
 * its own credentials: round trips, and the throughput of a tunnelled
 * stream and of a relayed data connection into a discard channel of the
 * destination ferryd (ferry's own RPC program). With DOMAIN, the guest's
 * dirty rate and a prediction of pre-copy from all of it. Every check
 * prints pass, warn or FAIL, a failure with the fix in words. */
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "remote/remote-peer.h"
#include "remote/remote-uri.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-socket.h"
#include "rpc/rpc-tls.h"
#include "tools/probe-model.h"
#include "tools/probe-tls.h"
#include "tunnel/tunnel-stream.h"
#include "util/error.h"

#define MIB (1024.0 * 1024.0)
#define CALL_TIMEOUT_MS 30000
#define CERT_SOON_DAYS 14

typedef struct {
    char *source_uri;
    char *bytes_text;
    guint64 bytes;
    int seconds;
    int rtt_samples;
    int dirty_seconds;
    gboolean data_tls;
    gboolean no_throughput;
    int timeout_s;
} Options;

static guint n_failed, n_warned;

/* ---- output ---- */

typedef enum { CHECK_PASS, CHECK_WARN, CHECK_FAIL, CHECK_SKIP } CheckStatus;

static void G_GNUC_PRINTF(4, 5)
    report(CheckStatus status, const char *check, const char *fix, const char *fmt, ...)
{
    static const char *const words[] = {"pass", "warn", "FAIL", "skip"};
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    printf("%-4s  %s: %s\n", words[status], check, text);
    if (fix)
        printf("      fix: %s\n", fix);
    if (status == CHECK_FAIL)
        n_failed++;
    else if (status == CHECK_WARN)
        n_warned++;
    fflush(stdout);
}

static char *format_time(gint64 t)
{
    g_autoptr(GDateTime) dt = g_date_time_new_from_unix_utc(t);
    return dt ? g_date_time_format(dt, "%Y-%m-%d %H:%M UTC") : g_strdup("?");
}

static char *format_days(gint64 seconds)
{
    gint64 days = seconds / 86400;
    if (days >= 2)
        return g_strdup_printf("%" G_GINT64_FORMAT " days", days);
    return g_strdup_printf("%" G_GINT64_FORMAT " hours", MAX(seconds / 3600, 0));
}

/* ---- certificates ---- */

/* Expiry and validity of one certificate; TRUE if it may be used now. */
static gboolean check_cert_times(const char *check, const char *whose, const char *path,
                                 const ProbeCertInfo *info, const char *renew)
{
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;
    g_autofree char *after = format_time(info->not_after);
    g_autofree char *before = format_time(info->not_before);
    if (info->not_after < now) {
        g_autofree char *fix = g_strdup_printf("%s (a new certificate for %s)", renew, info->names);
        report(CHECK_FAIL, check, fix, "%s%s%s expired on %s", whose, path ? " " : "",
               path ? path : "", after);
        return FALSE;
    }
    if (info->not_before > now) {
        report(CHECK_FAIL, check,
               "check the clock of both hosts (date; timedatectl), or issue a certificate "
               "valid from now",
               "%s%s%s is not valid before %s", whose, path ? " " : "", path ? path : "", before);
        return FALSE;
    }
    g_autofree char *left = format_days(info->not_after - now);
    if (info->not_after - now < CERT_SOON_DAYS * 86400) {
        report(CHECK_WARN, check, renew, "%s%s%s expires in %s (%s)", whose, path ? " " : "",
               path ? path : "", left, after);
        return TRUE;
    }
    report(CHECK_PASS, check, NULL, "%s for %s, valid until %s (%s left)", whose, info->names,
           after, left);
    return TRUE;
}

static void check_client_cert(const RemoteUri *uri)
{
    g_autofree char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL;
    rpc_tls_client_locate_files(uri->pkipath, &ca, &crl, &cert, &key);
    if (!g_file_test(ca, G_FILE_TEST_EXISTS)) {
        report(CHECK_FAIL, "tls ca", "install the CA certificate that signed the destination's "
                                     "certificate there (or set pkipath= in the URI)",
               "no CA certificate at %s", ca);
        return;
    }
    if (!g_file_test(cert, G_FILE_TEST_EXISTS) || !g_file_test(key, G_FILE_TEST_EXISTS)) {
        report(CHECK_FAIL, "tls client certificate",
               "install a client certificate and its key signed by the destination's CA (or "
               "set pkipath= in the URI); libvirt servers ask for one",
               "no client certificate and key at %s and %s", cert, key);
        return;
    }
    g_autoptr(GError) err = NULL;
    gnutls_x509_crt_t crt = probe_cert_load(cert, &err);
    if (!crt) {
        report(CHECK_FAIL, "tls client certificate", "replace it with a PEM certificate", "%s",
               err->message);
        return;
    }
    g_auto(ProbeCertInfo) info = {0};
    probe_cert_describe(crt, &info);
    check_cert_times("tls client certificate", "the client certificate", cert, &info,
                     "renew the client certificate with the CA and install it here");
    if (!probe_cert_signed_by(crt, ca, &err)) {
        if (err)
            report(CHECK_FAIL, "tls client certificate", "fix the CA file", "%s", err->message);
        else
            report(CHECK_FAIL, "tls client certificate",
                   "have the destination's CA sign this host's client certificate",
                   "the client certificate %s is not signed by the CA in %s", cert, ca);
    }
    gnutls_x509_crt_deinit(crt);
}

static void check_server_cert(const RemoteUri *uri, int timeout_ms)
{
    g_autofree char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL;
    rpc_tls_client_locate_files(uri->pkipath, &ca, &crl, &cert, &key);
    g_autoptr(GError) err = NULL;
    g_autofree char *hs_error = NULL;
    gboolean have_client = g_file_test(cert, G_FILE_TEST_EXISTS) &&
                           g_file_test(key, G_FILE_TEST_EXISTS);
    gnutls_x509_crt_t crt =
        probe_tls_fetch_server_cert(uri->host, uri->port, have_client ? cert : NULL,
                                    have_client ? key : NULL, timeout_ms, &hs_error, &err);
    if (!crt) {
        report(CHECK_FAIL, "tls server certificate",
               "check that the port is the destination's TLS port (listen_tls, tls_port)", "%s",
               err->message);
        return;
    }
    g_auto(ProbeCertInfo) info = {0};
    probe_cert_describe(crt, &info);
    check_cert_times("tls server certificate", "the destination certificate", NULL, &info,
                     "renew the destination's server certificate (cert_file in its ferryd.conf) "
                     "and restart its ferryd");
    if (uri->no_verify) {
        report(CHECK_WARN, "tls server name", "drop no_verify=1 from the URI",
               "no_verify=1: the destination's certificate is not checked (it names %s)",
               info.names);
    } else if (!probe_cert_matches_host(crt, uri->host)) {
        g_autofree char *fix = g_strdup_printf(
            "add %s to the destination's certificate (subjectAltName) or connect by a name it "
            "holds",
            uri->host);
        report(CHECK_FAIL, "tls server name", fix,
               "the destination certificate names %s; you connected to %s", info.names,
               uri->host);
    } else {
        report(CHECK_PASS, "tls server name", NULL, "the destination certificate names %s",
               info.names);
    }
    if (g_file_test(ca, G_FILE_TEST_EXISTS)) {
        g_clear_error(&err);
        if (!probe_cert_signed_by(crt, ca, &err))
            report(CHECK_FAIL, "tls server signer",
                   "install the CA that signed the destination's certificate here, or give the "
                   "destination a certificate from this CA",
                   "the destination certificate (%s) is not signed by the CA in %s%s%s",
                   info.subject ? info.subject : "?", ca, err ? ": " : "",
                   err ? err->message : "");
        else
            report(CHECK_PASS, "tls server signer", NULL, "signed by the CA in %s", ca);
    }
    if (hs_error)
        report(CHECK_FAIL, "tls handshake",
               "the destination refused this host's client certificate: see the connect check "
               "and the destination's ferryd log",
               "the destination ended the handshake: %s", hs_error);
    gnutls_x509_crt_deinit(crt);
}

/* ---- the destination, as virsh reaches it ---- */

static gboolean call(RpcClient *c, guint32 prog, int proc, xdrproc_t af, void *args,
                     xdrproc_t rf, void *ret, int timeout_ms, GError **error)
{
    return rpc_client_call(c, prog, prog == REMOTE_PROGRAM ? REMOTE_PROTOCOL_VERSION
                                                           : FERRY_TUNNEL_VERSION,
                           proc, af, args, rf, ret, timeout_ms, error);
}

static const char *connect_fix(const GError *err, const RemotePeerReport *rep)
{
    const char *m = err ? err->message : "";
    if (strstr(m, "certificate") || strstr(m, "TLS"))
        return "see the tls checks above; the destination's ferryd log names what it refused";
    if (rep->sasl_mechs || strstr(m, "SASL") || strstr(m, "authentication"))
        return "check the user and password in the auth file (LIBVIRT_AUTH_FILE, "
               "$XDG_CONFIG_HOME/libvirt/auth.conf or authfile= in the URI) against the "
               "destination's SASL database (saslpasswd2 -a libvirt USER there)";
    return "see the message; the destination's ferryd log says more";
}

static RpcClient *check_connect(const char *dest, const RemoteUri *uri, int timeout_ms)
{
    g_auto(RemotePeerReport) rep = {0};
    RemotePeerOptions o = {.timeout_ms = timeout_ms, .report = &rep};
    g_autoptr(GError) err = NULL;
    RpcClient *c = remote_peer_open(dest, &o, &err);
    if (rep.sasl_mech || rep.sasl_mechs) {
        g_autofree char *from =
            rep.auth_file ? g_strdup_printf(" (credentials from %s)", rep.auth_file) : NULL;
        if (rep.sasl_done || !err)
            report(CHECK_PASS, "sasl", NULL, "authenticated as '%s' with %s%s%s",
                   rep.sasl_user ? rep.sasl_user : "?", rep.sasl_mech ? rep.sasl_mech : "?",
                   rep.sasl_ssf ? " and a security layer" : "", from ? from : "");
        else
            report(CHECK_FAIL, "sasl", connect_fix(err, &rep),
                   "user '%s' with %s (offered: %s%s%s) failed: %s",
                   rep.sasl_user ? rep.sasl_user : "(none)",
                   rep.sasl_mech ? rep.sasl_mech : "?", rep.sasl_mechs ? rep.sasl_mechs : "?",
                   rep.auth_file ? "; auth file " : "", rep.auth_file ? rep.auth_file : "",
                   err ? err->message : "?");
    }
    if (!c) {
        report(CHECK_FAIL, "connect", connect_fix(err, &rep), "%s", err->message);
        return NULL;
    }
    report(CHECK_PASS, "connect", NULL, "%s answers as virsh would reach it%s", dest,
           rep.sasl_mech ? "" : " (no SASL asked)");
    return c;
}

static void check_daemon(RpcClient *c, guint64 need_bytes, const char *domain)
{
    g_autoptr(GError) err = NULL;
    remote_connect_get_type_ret type = {0};
    remote_connect_get_version_ret ver = {0};
    remote_connect_get_hostname_ret host = {0};
    if (call(c, REMOTE_PROGRAM, REMOTE_PROC_CONNECT_GET_TYPE, NULL, NULL,
             (xdrproc_t)xdr_remote_connect_get_type_ret, &type, CALL_TIMEOUT_MS, &err) &&
        call(c, REMOTE_PROGRAM, REMOTE_PROC_CONNECT_GET_VERSION, NULL, NULL,
             (xdrproc_t)xdr_remote_connect_get_version_ret, &ver, CALL_TIMEOUT_MS, &err) &&
        call(c, REMOTE_PROGRAM, REMOTE_PROC_CONNECT_GET_HOSTNAME, NULL, NULL,
             (xdrproc_t)xdr_remote_connect_get_hostname_ret, &host, CALL_TIMEOUT_MS, &err)) {
        report(CHECK_PASS, "destination vmm", NULL, "%s %llu.%llu.%llu on host %s", type.type,
               (unsigned long long)(ver.hv_ver / 1000000),
               (unsigned long long)(ver.hv_ver / 1000 % 1000),
               (unsigned long long)(ver.hv_ver % 1000), host.hostname);
    } else {
        report(CHECK_FAIL, "destination vmm", "see the destination's ferryd log", "%s",
               err->message);
    }
    xdr_free((xdrproc_t)xdr_remote_connect_get_type_ret, (char *)&type);
    xdr_free((xdrproc_t)xdr_remote_connect_get_hostname_ret, (char *)&host);

    g_clear_error(&err);
    remote_node_get_free_memory_ret mem = {0};
    if (!call(c, REMOTE_PROGRAM, REMOTE_PROC_NODE_GET_FREE_MEMORY, NULL, NULL,
              (xdrproc_t)xdr_remote_node_get_free_memory_ret, &mem, CALL_TIMEOUT_MS, &err)) {
        report(CHECK_WARN, "destination memory", NULL, "not known: %s", err->message);
        return;
    }
    if (need_bytes && mem.freeMem < need_bytes)
        report(CHECK_FAIL, "destination memory",
               "free memory on the destination (stop guests, drop caches) or pick another host",
               "the destination has %.0f MiB free, domain '%s' needs %.0f MiB",
               mem.freeMem / MIB, domain, need_bytes / MIB);
    else if (need_bytes)
        report(CHECK_PASS, "destination memory", NULL,
               "%.0f MiB free, domain '%s' needs %.0f MiB", mem.freeMem / MIB, domain,
               need_bytes / MIB);
    else
        report(CHECK_PASS, "destination memory", NULL, "%.0f MiB free", mem.freeMem / MIB);
}

static int compare_u64(const void *a, const void *b)
{
    guint64 x = *(const guint64 *)a, y = *(const guint64 *)b;
    return x < y ? -1 : x > y;
}

static void report_rtt(const char *check, guint64 *us, guint n, const char *from)
{
    if (!n)
        return;
    qsort(us, n, sizeof(*us), compare_u64);
    report(CHECK_PASS, check, NULL, "min %.2f ms, median %.2f ms, max %.2f ms over %u calls %s",
           us[0] / 1000.0, us[n / 2] / 1000.0, us[n - 1] / 1000.0, n, from);
}

static void check_rtt(RpcClient *c, int samples)
{
    g_autofree guint64 *us = g_new0(guint64, MAX(samples, 1));
    guint n = 0;
    for (int i = 0; i < samples; i++) {
        remote_connect_get_lib_version_ret r = {0};
        g_autoptr(GError) err = NULL;
        gint64 t0 = g_get_monotonic_time();
        if (!call(c, REMOTE_PROGRAM, REMOTE_PROC_CONNECT_GET_LIB_VERSION, NULL, NULL,
                  (xdrproc_t)xdr_remote_connect_get_lib_version_ret, &r, CALL_TIMEOUT_MS,
                  &err)) {
            report(CHECK_FAIL, "round trip", "see the destination's ferryd log", "%s",
                   err->message);
            return;
        }
        us[n++] = (guint64)(g_get_monotonic_time() - t0);
    }
    report_rtt("round trip", us, n, "from this host");
}

/* ---- the source daemon: the path as a migration uses it ---- */

static guint64 domain_memory(RpcClient *src, const char *domain)
{
    remote_domain_lookup_by_name_args la = {.name = (char *)domain};
    remote_domain_lookup_by_name_ret lr = {0};
    g_autoptr(GError) err = NULL;
    if (!call(src, REMOTE_PROGRAM, REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME,
              (xdrproc_t)xdr_remote_domain_lookup_by_name_args, &la,
              (xdrproc_t)xdr_remote_domain_lookup_by_name_ret, &lr, CALL_TIMEOUT_MS, &err)) {
        report(CHECK_FAIL, "domain", "name a domain of the source daemon (virsh list --all)",
               "%s", err->message);
        return 0;
    }
    remote_domain_args ia = {.dom = lr.dom};
    remote_domain_get_info_ret ir = {0};
    guint64 bytes = 0;
    if (call(src, REMOTE_PROGRAM, REMOTE_PROC_DOMAIN_GET_INFO,
             (xdrproc_t)xdr_remote_domain_args, &ia, (xdrproc_t)xdr_remote_domain_get_info_ret,
             &ir, CALL_TIMEOUT_MS, &err))
        bytes = ir.maxMem * 1024;
    else
        report(CHECK_FAIL, "domain", "see the source daemon's log", "%s", err->message);
    xdr_free((xdrproc_t)xdr_remote_domain_lookup_by_name_ret, (char *)&lr);
    return bytes;
}

typedef struct {
    gboolean measured;
    double bytes_per_s;
} Throughput;

static void report_channel(const char *check, const char *what,
                           const ferry_probe_channel_result *r, Throughput *out)
{
    if (r->error) {
        const char *e = *r->error;
        if (strstr(e, "not a ferry daemon"))
            report(CHECK_SKIP, check, NULL, "%s: throughput not measured", e);
        else
            report(CHECK_FAIL, check,
                   "see the message; both daemons' logs say more (a data connection needs the "
                   "destination's migration ports open: migration_port_min..max)",
                   "%s: %s", what, e);
        return;
    }
    double s = r->usec / 1e6;
    out->measured = TRUE;
    out->bytes_per_s = r->bytes / MAX(s, 1e-6);
    report(CHECK_PASS, check, NULL, "%.1f MiB/s (%.0f MiB in %.2f s, %s)", out->bytes_per_s / MIB,
           r->bytes / MIB, s, what);
}

/* The URI the source daemon is given: without the parameters that name
 * files of this host (pkipath=, authfile=, ...), which it refuses from a
 * client: it reaches the destination with its own files, as for a migration. */
static char *uri_for_source(const char *dest)
{
    static const char *const local[] = {"pkipath", "authfile", "socket", "keyfile",
                                         "known_hosts", "command", "netcat", NULL};
    const char *q = strchr(dest, '?');
    if (!q)
        return g_strdup(dest);
    GString *out = g_string_new_len(dest, q - dest);
    g_auto(GStrv) params = g_strsplit(q + 1, "&", -1);
    gboolean first = TRUE;
    for (char **p = params; *p; p++) {
        g_autofree char *name = g_uri_unescape_segment(*p, strchr(*p, '='), NULL);
        if (!**p || (name && g_strv_contains(local, name)))
            continue;
        g_string_append(out, first ? "?" : "&");
        g_string_append(out, *p);
        first = FALSE;
    }
    return g_string_free(out, FALSE);
}

static void check_path(RpcClient *src, const char *dest, const Options *opt, Throughput *tunnel,
                       Throughput *proxy)
{
    g_autofree char *dconnuri = uri_for_source(dest);
    ferry_probe_path_args a = {.dconnuri = dconnuri,
                               .bytes = opt->bytes,
                               .seconds = (guint)opt->seconds,
                               .rtt_samples = opt->rtt_samples,
                               .flags = opt->no_throughput ? 0
                                                           : FERRY_PROBE_TUNNEL | FERRY_PROBE_PROXY |
                                                                 (opt->data_tls ? FERRY_PROBE_PROXY_TLS : 0)};
    ferry_probe_path_ret r = {0};
    g_autoptr(GError) err = NULL;
    /* Each channel: its seconds, plus draining and setting up. */
    int timeout_ms = (2 * opt->seconds + 120) * 1000;
    if (!call(src, FERRY_TUNNEL_PROGRAM, FERRY_PROC_PROBE_PATH,
              (xdrproc_t)xdr_ferry_probe_path_args, &a, (xdrproc_t)xdr_ferry_probe_path_ret, &r,
              timeout_ms, &err)) {
        if (err->domain == FERRY_REMOTE_ERROR && strstr(err->message, "unknown"))
            report(CHECK_SKIP, "source path",
                   "run ferry-probe against a ferryd source (-c URI) that knows the probe",
                   "the source daemon is not a ferry daemon that answers probes (%s): path not "
                   "measured",
                   err->message);
        else
            report(CHECK_FAIL, "source path",
                   "the source daemon uses its own credentials for the destination "
                   "(migration_pki_dir, its auth file): fix them as for a migration",
                   "the source daemon cannot reach %s: %s", dconnuri, err->message);
        return;
    }
    report_rtt("source round trip", r.rtt_usec.rtt_usec_val, r.rtt_usec.rtt_usec_len,
               "from the source daemon");
    if (!opt->no_throughput) {
        report_channel("tunnel throughput", "a tunnelled stream, source ferryd to destination",
                       &r.tunnel, tunnel);
        report_channel("proxy throughput",
                       opt->data_tls ? "a TLS data connection, source ferryd to destination"
                                     : "a data connection, source ferryd to destination",
                       &r.proxy, proxy);
    }
    xdr_free((xdrproc_t)xdr_ferry_probe_path_ret, (char *)&r);
}

static void predict(const char *mode, const ferry_probe_dirty_rate_ret *d, const Throughput *t)
{
    g_autofree char *check = g_strdup_printf("prediction (%s)", mode);
    if (!t->measured) {
        report(CHECK_SKIP, check, NULL, "no throughput measured for this path");
        return;
    }
    ProbeModelResult m;
    probe_model_predict((double)d->memory_bytes, (double)d->bytes_per_second, t->bytes_per_s,
                        d->downtime_ms / 1000.0, &m);
    if (m.converges)
        report(CHECK_PASS, check, NULL,
               "pre-copy converges in %u rounds; predicted migration time %.2f s once the "
               "destination VMM is up (%.0f MiB memory, %.1f MiB/s dirtied, %.1f MiB/s "
               "carried), downtime about %.0f ms (limit %llu ms)",
               m.rounds, m.seconds, d->memory_bytes / MIB, d->bytes_per_second / MIB,
               t->bytes_per_s / MIB, m.downtime_s * 1000, (unsigned long long)d->downtime_ms);
    else
        report(CHECK_FAIL, check,
               "lower the guest's write load during the migration, give the migration a faster "
               "path, or migrate it paused (without --live)",
               "pre-copy will not converge: the guest dirties %.1f MiB/s of its %.0f MiB, the "
               "path carries %.1f MiB/s; after %u rounds the guest would stop for %.1f s "
               "(limit %llu ms); predicted migration time %.2f s",
               d->bytes_per_second / MIB, d->memory_bytes / MIB, t->bytes_per_s / MIB, m.rounds,
               m.downtime_s, (unsigned long long)d->downtime_ms, m.seconds);
}

static void check_domain(RpcClient *src, const char *domain, const Options *opt,
                         const Throughput *tunnel, const Throughput *proxy)
{
    remote_domain_lookup_by_name_args la = {.name = (char *)domain};
    remote_domain_lookup_by_name_ret lr = {0};
    g_autoptr(GError) err = NULL;
    if (!call(src, REMOTE_PROGRAM, REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME,
              (xdrproc_t)xdr_remote_domain_lookup_by_name_args, &la,
              (xdrproc_t)xdr_remote_domain_lookup_by_name_ret, &lr, CALL_TIMEOUT_MS, &err))
        return; /* reported by the memory check */
    ferry_probe_dirty_rate_args a = {.dom = lr.dom, .seconds = (guint)opt->dirty_seconds};
    ferry_probe_dirty_rate_ret d = {0};
    gboolean ok = call(src, FERRY_TUNNEL_PROGRAM, FERRY_PROC_PROBE_DIRTY_RATE,
                       (xdrproc_t)xdr_ferry_probe_dirty_rate_args, &a,
                       (xdrproc_t)xdr_ferry_probe_dirty_rate_ret, &d,
                       (opt->dirty_seconds + 30) * 1000, &err);
    xdr_free((xdrproc_t)xdr_remote_domain_lookup_by_name_ret, (char *)&lr);
    if (!ok) {
        report(CHECK_FAIL, "dirty rate", "start the domain; see the source daemon's log",
               "%s", err->message);
        return;
    }
    report(CHECK_PASS, "dirty rate", NULL, "domain '%s' dirties %.1f MiB/s of %.0f MiB (%s)",
           domain, d.bytes_per_second / MIB, d.memory_bytes / MIB, d.method);
    predict("tunnelled", &d, tunnel);
    predict("proxy", &d, proxy);
    xdr_free((xdrproc_t)xdr_ferry_probe_dirty_rate_ret, (char *)&d);
}

/* The local daemon of the destination's driver: sim+tls://b/system -> sim:///system. */
static char *default_source(const RemoteUri *uri)
{
    const char *env = g_getenv("LIBVIRT_DEFAULT_URI");
    if (env && *env)
        return g_strdup(env);
    const char *drv = uri->driver && !g_str_equal(uri->driver, "remote") ? uri->driver : "sim";
    return g_strdup_printf("%s:///system", drv);
}

static gboolean parse_options(int *argc, char ***argv, Options *o, GError **error)
{
    o->seconds = 5;
    o->rtt_samples = 5;
    o->dirty_seconds = 2;
    o->timeout_s = 30;
    GOptionEntry entries[] = {
        {"connect", 'c', 0, G_OPTION_ARG_STRING, &o->source_uri,
         "the source daemon (default: LIBVIRT_DEFAULT_URI, else the local ferryd of the "
         "destination's driver)",
         "URI"},
        {"bytes", 0, 0, G_OPTION_ARG_STRING, &o->bytes_text,
         "bytes per throughput channel, at most (default 256M; K, M, G suffixes)", "SIZE"},
        {"seconds", 0, 0, G_OPTION_ARG_INT, &o->seconds,
         "seconds per throughput channel, at most (default 5)", "N"},
        {"rtt", 0, 0, G_OPTION_ARG_INT, &o->rtt_samples, "round-trip samples (default 5)", "N"},
        {"dirty-seconds", 0, 0, G_OPTION_ARG_INT, &o->dirty_seconds,
         "seconds over which the dirty rate is measured (default 2)", "N"},
        {"tls", 0, 0, G_OPTION_ARG_NONE, &o->data_tls,
         "measure the proxy path's data connection over TLS, as virsh migrate --tls", NULL},
        {"no-throughput", 0, 0, G_OPTION_ARG_NONE, &o->no_throughput,
         "skip the throughput measurements", NULL},
        {"timeout", 0, 0, G_OPTION_ARG_INT, &o->timeout_s,
         "seconds to wait for a connection or a call (default 30)", "N"},
        {NULL},
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("DEST_URI [DOMAIN]");
    g_option_context_set_summary(ctx, "Checks the path of a migration to DEST_URI before it "
                                      "runs; with DOMAIN, predicts its pre-copy.");
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, argc, argv, error))
        return FALSE;
    o->bytes = 256 * 1024 * 1024;
    if (o->bytes_text) {
        char *end = NULL;
        guint64 v = g_ascii_strtoull(o->bytes_text, &end, 10);
        guint64 mult = 1;
        if (end && (*end == 'K' || *end == 'k'))
            mult = 1024, end++;
        else if (end && (*end == 'M' || *end == 'm'))
            mult = 1024 * 1024, end++;
        else if (end && (*end == 'G' || *end == 'g'))
            mult = 1024 * 1024 * 1024, end++;
        if (end == o->bytes_text || *end || v == 0 || v > G_MAXUINT64 / mult) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "--bytes: '%s' is not a size (e.g. 256M)", o->bytes_text);
            return FALSE;
        }
        o->bytes = v * mult;
    }
    if (o->seconds < 1 || o->seconds > 60 || o->rtt_samples < 0 || o->rtt_samples > 64 ||
        o->dirty_seconds < 1 || o->dirty_seconds > 60 || o->timeout_s < 1) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "--seconds and --dirty-seconds take 1..60, --rtt 0..64, --timeout >= 1");
        return FALSE;
    }
    if (*argc < 2 || *argc > 3) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "usage: ferry-probe [OPTION...] DEST_URI [DOMAIN] (--help for more)");
        return FALSE;
    }
    return TRUE;
}

static void options_clear(Options *o)
{
    g_free(o->source_uri);
    g_free(o->bytes_text);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Options, options_clear)

int main(int argc, char **argv)
{
    setlocale(LC_ALL, "");
    /* A peer that closes while we write must give an error, not end us. */
    signal(SIGPIPE, SIG_IGN);
    g_auto(Options) opt = {0};
    g_autoptr(GError) err = NULL;
    if (!parse_options(&argc, &argv, &opt, &err)) {
        fprintf(stderr, "ferry-probe: %s\n", err->message);
        return 2;
    }
    const char *dest = argv[1];
    const char *domain = argc > 2 ? argv[2] : NULL;
    int timeout_ms = opt.timeout_s * 1000;

    g_autoptr(RemoteUri) uri = remote_uri_parse(dest, &err);
    if (!uri) {
        report(CHECK_FAIL, "uri", "write it as virsh takes it: sim+tls://HOST/system", "%s",
               err->message);
        return 1;
    }
    if (uri->transport != REMOTE_URI_UNIX) {
        gint64 t0 = g_get_monotonic_time();
        int fd = rpc_socket_connect_tcp(uri->host, uri->port, timeout_ms, &err);
        if (fd < 0) {
            g_autofree char *fix = g_strdup_printf(
                "start ferryd on %s with listen_%s = 1 (or its ferryd-%s.socket), check the "
                "port in the URI (%u) and any firewall between",
                uri->host, uri->transport == REMOTE_URI_TLS ? "tls" : "tcp",
                uri->transport == REMOTE_URI_TLS ? "tls" : "tcp", uri->port);
            report(CHECK_FAIL, "reach", fix, "%s", err->message);
            printf("%u failed, %u warnings\n", n_failed, n_warned);
            return 1;
        }
        close(fd);
        report(CHECK_PASS, "reach", NULL, "%s:%u accepts connections (%.2f ms)", uri->host,
               uri->port, (g_get_monotonic_time() - t0) / 1000.0);
    }
    if (uri->transport == REMOTE_URI_TLS) {
        check_client_cert(uri);
        check_server_cert(uri, timeout_ms);
    }

    g_autofree char *source = opt.source_uri ? g_strdup(opt.source_uri) : default_source(uri);
    g_autoptr(RpcClient) src = NULL;
    guint64 need = 0;
    {
        RemotePeerOptions so = {.timeout_ms = timeout_ms};
        g_autoptr(GError) serr = NULL;
        src = remote_peer_open(source, &so, &serr);
        if (!src)
            report(CHECK_FAIL, "source daemon",
                   "start the source ferryd, or name it with -c URI",
                   "cannot reach the source daemon %s: %s", source, serr->message);
        else if (domain)
            need = domain_memory(src, domain);
    }

    g_autoptr(RpcClient) c = check_connect(dest, uri, timeout_ms);
    if (c) {
        check_daemon(c, need, domain);
        check_rtt(c, opt.rtt_samples);
    }
    Throughput tunnel = {0}, proxy = {0};
    if (src && c) {
        check_path(src, dest, &opt, &tunnel, &proxy);
        if (domain && need)
            check_domain(src, domain, &opt, &tunnel, &proxy);
    }
    printf("%u failed, %u warnings\n", n_failed, n_warned);
    return n_failed ? 1 : 0;
}
