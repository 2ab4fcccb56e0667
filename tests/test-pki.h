/* A throwaway PKI for unit tests, made with gnutls' certtool in `dir`: a CA
 * (cacert.pem, ca-key.pem), a server certificate for 127.0.0.1
 * (server-cert.pem, server-key.pem) and a client certificate
 * (client-cert.pem, client-key.pem, DN C=GB,O=unit,CN=client). */
#pragma once

#include <glib.h>
#include <stdlib.h>

static inline gboolean test_pki_make(const char *dir)
{
    static const struct {
        const char *name, *text;
    } templates[] = {
        {"ca.info", "cn = unit CA\nca\ncert_signing_key\nexpiration_days = 2\n"},
        {"server.info", "cn = 127.0.0.1\nip_address = 127.0.0.1\ntls_www_server\n"
                        "encryption_key\nsigning_key\nexpiration_days = 2\n"},
        {"client.info", "country = GB\norganization = unit\ncn = client\ntls_www_client\n"
                        "encryption_key\nsigning_key\nexpiration_days = 2\n"},
    };
    for (guint i = 0; i < G_N_ELEMENTS(templates); i++) {
        g_autofree char *path = g_build_filename(dir, templates[i].name, NULL);
        if (!g_file_set_contents(path, templates[i].text, -1, NULL))
            return FALSE;
    }
    g_autofree char *cmd = g_strdup_printf(
        "cd '%s' && for k in ca server client; do certtool --generate-privkey --bits 2048 "
        "--outfile $k-key.pem >/dev/null 2>&1 || exit 1; done && "
        "certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info "
        "--outfile cacert.pem >/dev/null 2>&1 && "
        "for k in server client; do certtool --generate-certificate --load-privkey $k-key.pem "
        "--load-ca-certificate cacert.pem --load-ca-privkey ca-key.pem --template $k.info "
        "--outfile $k-cert.pem >/dev/null 2>&1 || exit 1; done",
        dir);
    return system(cmd) == 0;
}
