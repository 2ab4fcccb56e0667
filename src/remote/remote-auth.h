/* Server side of SASL authentication (AUTH_SASL_INIT/START/STEP): the
 * per-client exchange, the SSF rules (56 on plain TCP, TLS key bits as
 * external SSF), sasl_allowed_username_list, switching the security layer
 * on, and slowing down repeated failures from one address. */
#pragma once

#include "remote/remote_protocol.h"
#include "rpc/rpc-server.h"

typedef struct RemoteAuth RemoteAuth;

/* The largest message a client needs before it has authenticated: an
 * AUTH_SASL_START with the longest mechanism name (20 characters, RFC 4422)
 * and REMOTE_AUTH_SASL_DATA_MAX bytes of data, each byte an XDR int. Larger
 * ones are refused before authentication (RpcServerConfig). */
#define REMOTE_AUTH_MECH_NAME_MAX 20
#define REMOTE_AUTH_MESSAGE_MAX                                                             \
    (28 /* length word and header */ + 4 + 4 * 8 /* mechanism */ + 4 /* nil */ +            \
     4 + 4 * REMOTE_AUTH_SASL_DATA_MAX)

/* Once at start when a listener uses SASL: the cyrus-sasl server library
 * (service "libvirt", config libvirt.conf) and the allowed user names
 * (globs; NULL allows every user the mechanism accepts). */
gboolean remote_auth_global_init(const char *const *allowed_usernames, GError **error);
/* At exit, after the server stopped: sends (drops) delayed replies, frees state. */
void remote_auth_global_done(void);

/* Per client, for SASL listeners. */
RemoteAuth *remote_auth_new(void);
void remote_auth_free(RemoteAuth *auth);
/* "SASL MECH user 'NAME'" once SASL succeeded, else NULL (newly allocated). */
char *remote_auth_get_identity(RemoteAuth *auth);

/* What a handler tells the dispatcher to do with its reply. */
typedef struct {
    gboolean authenticated; /* the client may now make every call */
    gboolean layer;         /* switch the SSF layer's encoding on once the reply is out */
    gint64 reply_delay_us;  /* > 0: send the (failure) reply this much later */
} RemoteAuthOutcome;

/* auth may be NULL (the socket does not offer SASL): the call fails. Every
 * failure is AUTH_FAILED "authentication failed", logged with the peer and
 * user; the session can start again with INIT. */
gboolean remote_auth_sasl_init(RemoteAuth *auth, RpcServerClient *client,
                               remote_auth_sasl_init_ret *ret, RemoteAuthOutcome *outcome,
                               GError **error);
gboolean remote_auth_sasl_start(RemoteAuth *auth, RpcServerClient *client,
                                const remote_auth_sasl_start_args *args,
                                remote_auth_sasl_start_ret *ret, RemoteAuthOutcome *outcome,
                                GError **error);
gboolean remote_auth_sasl_step(RemoteAuth *auth, RpcServerClient *client,
                               const remote_auth_sasl_step_args *args,
                               remote_auth_sasl_step_ret *ret, RemoteAuthOutcome *outcome,
                               GError **error);

/* For RpcMessage.after_write: data is the client's transport. */
void remote_auth_layer_reply_written(gpointer transport);

/* Sends reply (ownership passes) delay_us from now, from a timer thread, so
 * a slowed-down client never holds a worker thread. */
void remote_auth_reply_later(RpcServerClient *client, RpcMessage *reply, gint64 delay_us);
