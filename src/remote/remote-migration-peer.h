/* The source daemon's connection to a destination daemon for peer-to-peer
 * migration: the MigrationPeerOps the driver layer uses. */
#pragma once

#include <rpc/rpc.h>

#include "driver/driver.h"
#include "rpc/rpc-transport.h"

const MigrationPeerOps *remote_migration_peer_ops(void);

/* FERRY_TUNNEL_PROC_FLIGHT_RECORD's XDR (ferry's own program). */
#define REMOTE_FLIGHT_RECORD_MAX (4 * 1024 * 1024)
typedef struct {
    char *id;
} RemoteFlightRecordArgs;
typedef struct {
    gint64 now_us;
    char *record;
} RemoteFlightRecordRet;
bool_t remote_xdr_flight_record_args(XDR *xdr, RemoteFlightRecordArgs *args);
bool_t remote_xdr_flight_record_ret(XDR *xdr, RemoteFlightRecordRet *ret);
/* A transport's security in words, for flight records ("TLS1.3 AES-256-GCM,
 * peer DN CN=b"; "SASL over plain TCP"; "unix socket"). */
char *remote_describe_transport(RpcTransport *t);
/* Where the client files for destinations are (migration_pki_dir); NULL:
 * libvirt's client locations. Set once, before the first migration. */
void remote_migration_peer_set_pki_dir(const char *dir);
/* The keepalive of connections to destinations (migration_keepalive_*, as
 * qemu.conf's keepalive_*): a PING after interval seconds of silence, the
 * connection dropped after count unanswered; interval -1: no PINGs sent
 * (the destination's are still answered). Set once, at start. */
void remote_migration_peer_set_keepalive(int interval, guint count);
