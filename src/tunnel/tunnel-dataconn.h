/* Proxy mode's data connection between two daemons: the destination listens
 * on a port of its migration range, the source connects and proves with the
 * migration's one-time token that it belongs to that migration. Anything else
 * connecting there is refused and logged; the listener keeps waiting.
 *
 * Wire: the source sends "FERRYDC1" and the 32-character token; the
 * destination answers the single byte 0x01; then the VMMs' bytes flow. A
 * migration with several channels (the disks of --copy-storage-*) opens one
 * connection per channel: channel i >= 1 sends "FERRYDC2", the token and i
 * (4 bytes, big endian); the token admits each channel once. With
 * TLS (`virsh migrate --tls`), a TLS session with the daemons' certificates
 * comes first (libvirt's checks and confirmation byte) and the token travels
 * inside it.
 *
 * Every connection is checked by a thread of its own and must finish its
 * whole hello (TLS included) within 5 s, so a stranger that connects and
 * trickles bytes cannot hold up the source. The token is spent the first
 * time any connection presents it: without TLS it crosses the network in the
 * clear, and a copy seen there is worth nothing afterwards. */
#pragma once

#include <glib.h>

#include "rpc/rpc-tls.h"
#include "rpc/rpc-transport.h"

#define TUNNEL_DATA_TOKEN_LEN 32

typedef struct TunnelDataListener TunnelDataListener;

/* A fresh random token (TUNNEL_DATA_TOKEN_LEN hex characters). */
char *tunnel_data_token_new(void);

/* Binds the first free port in [port_min, port_max] on addr ("0.0.0.0",
 * "127.0.0.1", "::") and starts accepting. */
/* tls: the daemon's server context for an encrypted data connection, or NULL. */
TunnelDataListener *tunnel_data_listener_new(const char *addr, guint port_min, guint port_max,
                                             const char *token, RpcTlsContext *tls,
                                             const char *what, GError **error);
guint16 tunnel_data_listener_get_port(TunnelDataListener *listener);
/* The token admits channels 0 .. n - 1, each once (default 1). Set before
 * the first accept. */
void tunnel_data_listener_set_channels(TunnelDataListener *listener, guint n);
/* As tunnel_data_listener_accept, for any channel still to come: *index
 * says which it is. */
RpcTransport *tunnel_data_listener_accept_channel(TunnelDataListener *listener,
                                                  gint64 deadline_us, guint *index,
                                                  GError **error);
/* Waits for the connection that presents the token; returns its transport
 * (the caller owns it) or NULL. The token works once: called again, it
 * refuses (and logs) every connection until the deadline. deadline_us
 * monotonic. Returns at once with OPERATION_ABORTED once cancelled. Hellos
 * still running when it returns are cut off and refused. */
RpcTransport *tunnel_data_listener_accept(TunnelDataListener *listener, gint64 deadline_us,
                                          GError **error);
void tunnel_data_listener_cancel(TunnelDataListener *listener);
/* Resuming a broken data connection (inside TLS when the migration's data
 * connection is a TLS session): "FERRYDR1", the resume
 * token (another than the one-time token: it admits any number of resumes
 * of this migration) and the bytes the source took from the network (8
 * bytes, big endian); the destination answers 0x01 and its own count, or
 * 0x00 when it has nothing to resume. The listener admits resume hellos
 * with token once set (before that: none). */
void tunnel_data_listener_set_resume_token(TunnelDataListener *listener, const char *token);
/* As tunnel_data_listener_accept; *resume says the connection is a resume
 * (unanswered: tunnel_data_resume_answer), *theirs the source's count. */
RpcTransport *tunnel_data_listener_accept_resume(TunnelDataListener *listener,
                                                 gint64 deadline_us, gboolean *resume,
                                                 guint64 *theirs, GError **error);
void tunnel_data_resume_answer(RpcTransport *t, gboolean ok, guint64 ours);
/* Source: a new data connection to host:port for the migration of token
 * (over TLS as tunnel_data_connect when tls), after ours bytes received;
 * *theirs: the destination's count. Refusals (a certificate refused or
 * expired included) fail with OPERATION_DENIED, no answer in time with
 * OPERATION_TIMEOUT. */
RpcTransport *tunnel_data_resume_connect(const char *host, guint16 port, const char *token,
                                         gboolean tls, const char *pkipath, guint64 ours,
                                         guint64 *theirs, int timeout_ms, GError **error);
void tunnel_data_listener_free(TunnelDataListener *listener);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TunnelDataListener, tunnel_data_listener_free)

/* Connects to host:port and presents the token; with tls, over TLS with the
 * client files of pkipath (NULL: libvirt's default locations), the server's
 * certificate checked against host. */
RpcTransport *tunnel_data_connect(const char *host, guint16 port, const char *token, gboolean tls,
                                  const char *pkipath, int timeout_ms, GError **error);
/* The same for channel index of the migration (0: as above). */
RpcTransport *tunnel_data_connect_channel(const char *host, guint16 port, const char *token,
                                          guint index, gboolean tls, const char *pkipath,
                                          int timeout_ms, GError **error);
