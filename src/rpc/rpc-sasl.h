/* SASL (cyrus-sasl) for RPC connections: one authentication session per
 * connection, server or client side, and the security layer: a transport
 * that wraps another one and, once switched on, passes every byte through
 * sasl_encode / sasl_decode. */
#pragma once

#include <glib.h>

#include "rpc/rpc-transport.h"

typedef struct RpcSasl RpcSasl;

/* Once per process, before any session: cyrus-sasl's library state and its
 * locks. appname picks the server's config file (APPNAME.conf, found through
 * SASL_CONF_PATH or the library default), "libvirt" as libvirtd. */
gboolean rpc_sasl_server_global_init(const char *appname, GError **error);
gboolean rpc_sasl_client_global_init(GError **error);
/* At exit. Keeps the library loaded (see the .c file for why). */
void rpc_sasl_global_done(void);

/* What a client answers when its mechanism asks; NULL fields are "not
 * known" and make a mechanism that needs them fail with a message saying so. */
typedef struct {
    const char *authname; /* who logs in */
    const char *username; /* authorization id; NULL: the same as authname */
    const char *password;
    const char *realm;  /* NULL: the first realm the server offers */
    const char *origin; /* where these came from, for error messages */
} RpcSaslCredentials;

/* Sessions. `transport` gives the local and remote addresses (not kept). */
RpcSasl *rpc_sasl_server_new(const char *service, RpcTransport *transport, GError **error);
RpcSasl *rpc_sasl_client_new(const char *service, const char *hostname, RpcTransport *transport,
                             const RpcSaslCredentials *creds, GError **error);
RpcSasl *rpc_sasl_ref(RpcSasl *sasl);
void rpc_sasl_unref(RpcSasl *sasl);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcSasl, rpc_sasl_unref)

/* The security the link already has (TLS key bits), and what the session
 * must add: min_ssf 56 on plain TCP, 0 on TLS or UNIX. allow_plaintext FALSE
 * forbids mechanisms that send the password in the clear. */
gboolean rpc_sasl_set_external_ssf(RpcSasl *sasl, guint ssf, GError **error);
gboolean rpc_sasl_set_security(RpcSasl *sasl, guint min_ssf, guint max_ssf,
                               gboolean allow_plaintext, GError **error);

/* Server: the mechanisms on offer, comma-separated ("DIGEST-MD5,SCRAM-SHA-256"). */
char *rpc_sasl_list_mechanisms(RpcSasl *sasl, GError **error);

typedef enum {
    RPC_SASL_FAILED = -1,
    RPC_SASL_CONTINUE = 0,
    RPC_SASL_COMPLETE = 1,
} RpcSaslStatus;

/* One exchange step. in == NULL means "no data" (libvirt's nil = 1), distinct
 * from zero bytes. *out (NULL for no data) stays valid until the next call
 * on the session. On RPC_SASL_FAILED *error has the library's reason. */
RpcSaslStatus rpc_sasl_server_start(RpcSasl *sasl, const char *mech, const char *in, gsize inlen,
                                    const char **out, gsize *outlen, GError **error);
RpcSaslStatus rpc_sasl_server_step(RpcSasl *sasl, const char *in, gsize inlen, const char **out,
                                   gsize *outlen, GError **error);
/* Picks a mechanism from the server's list (*mech, valid as long as sasl). */
RpcSaslStatus rpc_sasl_client_start(RpcSasl *sasl, const char *mechlist, const char **mech,
                                    const char **out, gsize *outlen, GError **error);
RpcSaslStatus rpc_sasl_client_step(RpcSasl *sasl, const char *in, gsize inlen, const char **out,
                                   gsize *outlen, GError **error);

/* After completion: the strength of the negotiated layer (0: none), and who
 * authenticated (server side). */
guint rpc_sasl_get_ssf(RpcSasl *sasl);
const char *rpc_sasl_get_username(RpcSasl *sasl);
const char *rpc_sasl_get_mechanism(RpcSasl *sasl);

/* ---- the security layer ---- */

/* Wraps inner (ownership passes). Bytes pass through unchanged until the
 * layer is switched on, one direction at a time. */
RpcTransport *rpc_sasl_transport_new(RpcTransport *inner);
gboolean rpc_sasl_transport_is_sasl(RpcTransport *t);
/* The wrapped transport (e.g. TLS, to ask its key size). */
RpcTransport *rpc_sasl_transport_get_inner(RpcTransport *t);
/* "SASL MECH user 'NAME', security layer SSF N" once the layer is on, else
 * NULL (newly allocated; for flight records). */
char *rpc_sasl_transport_describe(RpcTransport *t);
/* Decode everything read from now on. Call it before the peer can send
 * encoded bytes: the server before its final reply is queued, the client
 * after it has read that reply and before its next call. Takes a reference
 * on sasl. A read blocked at the moment of the switch decodes what it gets. */
void rpc_sasl_transport_start_decoding(RpcTransport *t, RpcSasl *sasl);
/* Encode everything written from now on: the server once its final reply
 * has been written, the client at once. Needs start_decoding first. */
void rpc_sasl_transport_start_encoding(RpcTransport *t);
