/* Client-side libvirt URIs: `DRIVER[+TRANSPORT]://[user@]host[:port]/path[?params]`
 * as the libvirt remote driver reads them (WIRE.md section 5): the transport
 * and where to connect, the parameters the client consumes, and the name
 * sent in CONNECT_OPEN. */
#pragma once

#include <glib.h>

typedef enum {
    REMOTE_URI_TLS,
    REMOTE_URI_TCP,
    REMOTE_URI_UNIX,
} RemoteUriTransport;

#define REMOTE_URI_TCP_PORT 16509
#define REMOTE_URI_TLS_PORT 16514

typedef struct {
    char *driver; /* "sim", "qemu", "remote" */
    RemoteUriTransport transport;
    char *user;   /* NULL if none */
    char *host;   /* NULL for UNIX */
    guint16 port; /* the default of the transport if not given */
    char *name;   /* for CONNECT_OPEN: "sim:///system?foo=bar"; "" for remote:// */
    /* consumed parameters (NULL / FALSE when absent) */
    char *pkipath;
    gboolean no_verify;
    gboolean no_sanity;
    char *tls_priority;
    char *socket; /* UNIX: the socket path */
    char *auth;   /* "sasl", "sasl.DIGEST-MD5", "polkit" */
    char *authfile;
    /* The first parameter naming a local file, socket or command (see
     * remote_uri_check_from_client), NULL if none. */
    char *local_resource;
} RemoteUri;

/* Unknown transports (ssh, ext, ...) and malformed URIs are errors that say so. */
RemoteUri *remote_uri_parse(const char *uri, GError **error);
void remote_uri_free(RemoteUri *uri);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RemoteUri, remote_uri_free)

/* For a URI a client hands the daemon to connect to (PERFORM3's dconnuri):
 * refuses, naming it, a parameter that would make the daemon read a file,
 * reach a socket or run a command of the client's choosing on this host
 * (authfile, pkipath, socket, keyfile, known_hosts, command, netcat). The
 * daemon uses its own files instead. */
gboolean remote_uri_check_from_client(const char *uri, GError **error);

/* The UNIX socket a URI without socket= means: libvirt's default for root
 * (/var/run/libvirt/libvirt-sock[-ro]) or $XDG_RUNTIME_DIR/libvirt/... */
char *remote_uri_default_socket(gboolean readonly);
