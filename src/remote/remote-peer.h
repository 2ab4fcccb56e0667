/* Connecting to another daemon by libvirt URI, as the libvirt client does:
 * transport (UNIX, TCP, TLS with libvirt's certificate files), AUTH_LIST,
 * the SASL exchange with credentials from a libvirt auth file, keepalive
 * (feature 10) and CONNECT_OPEN. The source daemon of a peer-to-peer
 * migration reaches its destination with this. */
#pragma once

#include <glib.h>

#include "rpc/rpc-client.h"

/* What remote_peer_open found out on the way, for tools that explain a
 * connection (ferry-probe); filled as far as it got, also on failure. */
typedef struct {
    char *auth_file;  /* the auth file it read, or NULL */
    char *sasl_mechs; /* what the server offered */
    char *sasl_mech;  /* the mechanism chosen */
    char *sasl_user;  /* the authname it presented */
    guint sasl_ssf;   /* the security layer's strength (0: none or TLS does it) */
    gboolean sasl_done;
} RemotePeerReport;

void remote_peer_report_clear(RemotePeerReport *report);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(RemotePeerReport, remote_peer_report_clear)

typedef struct {
    /* Asked for a SASL credential the auth file does not hold: what is
     * "authname", "password", "username" or "realm"; host is the URI's host.
     * Returns a new string, or NULL for "none". May be NULL. */
    char *(*get_credential)(const char *what, const char *host, gpointer data);
    gpointer data;
    /* The auth file; NULL: the URI's authfile=, then $LIBVIRT_AUTH_FILE,
     * $XDG_CONFIG_HOME/libvirt/auth.conf, /etc/libvirt/auth.conf. */
    const char *authfile;
    /* The client certificate files when the URI has no pkipath=; NULL:
     * libvirt's client locations. */
    const char *pkipath;
    gboolean readonly;        /* CONNECT_OPEN's read-only bit */
    int timeout_ms;           /* connect, handshake, each setup call; 0: 30 s */
    guint keepalive_interval; /* 0: 5 s, as libvirt's client */
    guint keepalive_count;    /* 0: 5 */
    gboolean no_keepalive;
    const RpcClientCallbacks *callbacks;
    RemotePeerReport *report; /* may be NULL */
} RemotePeerOptions;

/* How remote_peer_open's errors about this host's own TLS files begin
 * (files that do not load, a certificate expired or not yet valid): no new
 * attempt cures them. */
#define REMOTE_PEER_OWN_TLS_ERROR "cannot use this host's TLS certificates: "

/* Returns a connected, authenticated and opened client, or NULL with an
 * error naming the problem (and the file, for certificates and auth files). */
RpcClient *remote_peer_open(const char *uri, const RemotePeerOptions *options, GError **error);

/* ---- libvirt auth files, exposed for tests and tools ---- */

typedef struct {
    char *authname;
    char *username;
    char *password;
    char *realm;
    char *path; /* the file they came from */
} RemotePeerCredentials;

/* The auth file to read: explicit if given, else $LIBVIRT_AUTH_FILE, else
 * the first existing of $XDG_CONFIG_HOME/libvirt/auth.conf and
 * /etc/libvirt/auth.conf; NULL if none. */
char *remote_peer_find_auth_file(const char *explicit_path);

/* Looks up [auth-libvirt-HOST] (else [auth-libvirt-default]) and its
 * [credentials-NAME] group in path. Nothing found is not an error (the
 * fields stay NULL); an unreadable or malformed file, or a missing
 * credentials group, is. */
gboolean remote_peer_lookup_credentials(const char *path, const char *host,
                                        RemotePeerCredentials *out, GError **error);
void remote_peer_credentials_clear(RemotePeerCredentials *creds);
