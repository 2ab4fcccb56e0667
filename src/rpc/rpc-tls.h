/* TLS (gnutls) for RPC connections: x509 credentials, the handshake with its
 * certificate checks and libvirt's one-byte confirmation, and a transport
 * that moves RPC bytes through the TLS session (several records per syscall,
 * no allocation per message). */
#pragma once

#include <glib.h>

#include "rpc/rpc-transport.h"

typedef struct RpcTlsContext RpcTlsContext;

typedef struct {
    const char *ca_file;   /* required unless verify_peer is FALSE (client side) */
    const char *crl_file;  /* optional; a missing file is ignored on the client side */
    const char *cert_file; /* server: required; client: optional (with key_file) */
    const char *key_file;
    /* Server: request and check the client's certificate (tls_no_verify_certificate = 0).
     * Client: check the server's certificate and host name (no_verify=0). */
    gboolean verify_peer;
    /* Server: glob patterns a client certificate's DN must match one of
     * (tls_allowed_dn_list); NULL allows every DN the CA signed. */
    const char *const *allowed_dn_list;
    const char *priority; /* gnutls priority string; NULL = "NORMAL" */
    /* Skip the load-time checks of our own certificate (validity, signed by
     * the CA); the URI parameter no_sanity=1 on the client side. */
    gboolean skip_own_cert_checks;
    /* Bound on the whole handshake (and the confirmation byte); 0 = 10 s. */
    guint handshake_timeout_ms;
} RpcTlsConfig;

/* Loads and checks the credentials: a missing, unreadable or mismatched file,
 * an expired certificate or one not signed by the CA is an error naming the
 * file. Refcounted; sessions hold a reference. */
RpcTlsContext *rpc_tls_context_new_server(const RpcTlsConfig *config, GError **error);
RpcTlsContext *rpc_tls_context_new_client(const RpcTlsConfig *config, GError **error);
RpcTlsContext *rpc_tls_context_ref(RpcTlsContext *ctx);
void rpc_tls_context_unref(RpcTlsContext *ctx);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcTlsContext, rpc_tls_context_unref)

/* Server side on a freshly accepted socket: handshake, checks of the client
 * certificate (CA, validity, DN list), then the confirmation byte 0x01. On
 * success the returned transport owns fd. On failure fd stays open and owned
 * by the caller (the peer has been told with a TLS close); *error says why,
 * naming the peer. shutdown(fd) from another thread aborts a handshake. */
RpcTransport *rpc_tls_server_handshake(RpcTlsContext *ctx, int fd, GError **error);

/* Client side on a connected socket: handshake, checks of the server
 * certificate against the CA and `hostname` (CN or subjectAltName, IP
 * addresses included) unless verify_peer is FALSE, then waits for the
 * server's 0x01. Same fd ownership rule as the server side. */
RpcTransport *rpc_tls_client_handshake(RpcTlsContext *ctx, int fd, const char *hostname,
                                       GError **error);

/* TRUE if t is a TLS transport. */
gboolean rpc_tls_transport_is_tls(RpcTransport *t);
/* The negotiated cipher's key size in bits (SASL's external SSF); 0 if not TLS. */
guint rpc_tls_transport_get_key_bits(RpcTransport *t);
/* The peer certificate's DN ("C=GB,O=x,CN=y"), NULL if none or not TLS. */
const char *rpc_tls_transport_get_peer_dn(RpcTransport *t);
/* TRUE if a read would return data without waiting: decrypted bytes, or
 * ciphertext already read ahead (reader thread only). */
gboolean rpc_tls_transport_has_pending(RpcTransport *t);
/* "TLS1.3 AES-256-GCM" (the negotiated version and cipher), NULL if not TLS. */
char *rpc_tls_transport_describe(RpcTransport *t);
/* Ends our sending half with close_notify (writer thread only). */
void rpc_tls_transport_close_write(RpcTransport *t);

/* One decrypted record, left where gnutls decrypted it: a relay writes it
 * on without copying it out first. Freed with rpc_tls_record_free, from
 * any thread. */
typedef struct RpcTlsRecord RpcTlsRecord;
/* Reads the next record (reader thread only): its length with *record and
 * *data set, 0 at the end of stream (as tls read: no close_notify is an end
 * too), -1 with error set. */
gssize rpc_tls_transport_read_record(RpcTransport *t, RpcTlsRecord **record, const guint8 **data,
                                     GError **error);
void rpc_tls_record_free(RpcTlsRecord *record);

/* Where a client finds its files, as libvirt: with pkipath, DIR/cacert.pem,
 * DIR/cacrl.pem, DIR/clientcert.pem, DIR/clientkey.pem; else for root
 * /etc/pki/CA/cacert.pem, /etc/pki/CA/cacrl.pem, /etc/pki/libvirt/clientcert.pem,
 * /etc/pki/libvirt/private/clientkey.pem; for other users each file in
 * $HOME/.pki/libvirt/ if present (cert and key as a pair), else the system
 * path. Free the strings with g_free. */
void rpc_tls_client_locate_files(const char *pkipath, char **ca_file, char **crl_file,
                                 char **cert_file, char **key_file);
