/* The migration cookie: what two daemons tell each other about a migration
 * (who they are, the tunnel terms, the data connection's token, what the
 * VMM verified), and the stream settings both sides derive from it. */
#pragma once

#include <glib.h>

#include "driver/migration-storage.h"
#include "tunnel/tunnel-stream.h"

/* Tunnel sizes between two ferryd: big packets, a window that keeps a
 * loopback or LAN link busy, memory bounded whatever the VM's size. A VMM
 * socket hands over about 200 KiB per read: larger packets would only leave
 * most of each pooled buffer unused. */
#define MIGRATION_PACKET_SIZE (256 * 1024)
#define MIGRATION_WINDOW (8 * 1024 * 1024)

typedef struct {
    gboolean ferry;  /* the peer is a ferryd */
    char *daemon_id; /* tells a local migration (same daemon) apart */
    gboolean credit; /* tunnel terms offered */
    guint64 window;
    guint64 packet;
    char *token; /* proxy mode: the data connection's one-time token */
    char *digest; /* what the source VMM moved and the destination verified */
    guint64 downtime_ms;
    /* the migration's flight record id: the source names it, a destination
     * that keeps a record for the source to fetch answers it back */
    char *record_id;
    /* tunnelled: resuming after a broken connection. The source offers its
     * time (seconds); the destination answers the time both keep (the
     * shorter) and the token that names this migration's stream. */
    guint resume_timeout;
    char *resume_token;
    /* finish: the source's VMM switched to post-copy (the stream still runs) */
    gboolean postcopy;
    /* disks without shared storage: the disks to copy (MigrationDisk*,
     * path unset), in channel order; a destination that exports them
     * answers the same list. NULL: none. */
    GPtrArray *disks;
    gboolean storage_inc; /* --copy-storage-inc */
    /* several connections for the memory stream: what the source asks for,
     * what the destination accepts; 0: the term is absent (one) */
    guint parallel;
} MigrationCookie;

void migration_cookie_clear(MigrationCookie *cookie);

/* What to put in a cookie; NULL/0/FALSE fields are left out. */
typedef struct {
    const char *name;
    const guint8 *uuid;
    const char *daemon_id;
    gboolean tunnel; /* offer credit flow control and big packets */
    const char *token;
    const char *digest;
    guint64 downtime_ms;
    const char *record_id;
    guint resume_timeout; /* 0: no resume offered or agreed */
    const char *resume_token;
    gboolean postcopy;
    GPtrArray *disks; /* MigrationDisk*: the disks copied, NULL none */
    gboolean storage_inc;
    guint parallel; /* > 1: the connections of the memory stream */
} MigrationCookieContent;

/* The cookie's XML, NUL-terminated as libvirt peers send it. */
GBytes *migration_cookie_format(const MigrationCookieContent *content);
/* An empty cookie or one that is not ferry's (a libvirt peer's) leaves
 * cookie->ferry FALSE. A cookie that is not well-formed XML, or that carries
 * a DOCTYPE, is refused as domain XML is. */
gboolean migration_cookie_parse(GBytes *bytes, MigrationCookie *cookie, GError **error);

/* The stream settings both sides agree on: credit and big packets only when
 * the peer is a ferryd that offered them; the plain protocol otherwise. */
void migration_cookie_tunnel_config(const MigrationCookie *peer, TunnelRole role,
                                    const char *peer_name, const char *vmm_name,
                                    TunnelStreamConfig *config);
