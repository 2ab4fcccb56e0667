/* Migration flags and parameters: which of libvirt's the engine carries,
 * which it refuses (by name), and the values they hold. */
#pragma once

#include <glib.h>

/* virDomainMigrateFlags */
#define MIGRATION_LIVE (1u << 0)
#define MIGRATION_PEER2PEER (1u << 1)
#define MIGRATION_TUNNELLED (1u << 2)
#define MIGRATION_PERSIST_DEST (1u << 3)
#define MIGRATION_UNDEFINE_SOURCE (1u << 4)
#define MIGRATION_PAUSED (1u << 5)
#define MIGRATION_NON_SHARED_DISK (1u << 6)
#define MIGRATION_NON_SHARED_INC (1u << 7)
#define MIGRATION_CHANGE_PROTECTION (1u << 8)
#define MIGRATION_UNSAFE (1u << 9)
#define MIGRATION_OFFLINE (1u << 10)
#define MIGRATION_COMPRESSED (1u << 11)
#define MIGRATION_ABORT_ON_ERROR (1u << 12)
#define MIGRATION_AUTO_CONVERGE (1u << 13)
#define MIGRATION_POSTCOPY (1u << 15)
#define MIGRATION_TLS (1u << 16)
#define MIGRATION_PARALLEL (1u << 17)
#define MIGRATION_POSTCOPY_RESUME (1u << 19)

/* Features the destination must have (virDrvFeature). */
#define MIGRATION_FEATURE_P2P 4
#define MIGRATION_FEATURE_V3 6
#define MIGRATION_FEATURE_OFFLINE 12
#define MIGRATION_FEATURE_PARAMS 13

/* Refuses, naming it, any flag or parameter the engine does not carry, and
 * combinations that make no sense (TLS with a tunnel, an address with a
 * tunnel). */
gboolean migration_check_flags_and_params(guint flags, GPtrArray *params, GError **error);

/* The tuning the flags and params ask for (--auto-converge and
 * auto_converge.*, --compressed and compression*), refused naming the flag
 * when the VMM (vmm, its tunable_flags) cannot, or with libvirt's words when
 * a parameter comes without its flag. downtime_ms and a cache size set with
 * migrate-compcache are the caller's to add. */
typedef struct MigrationTuning MigrationTuning;
gboolean migration_tuning_from_params(guint flags, GPtrArray *params, guint tunable,
                                      const char *vmm, MigrationTuning *tuning, GError **error);

/* MiB/s as the API counts bandwidth, to bytes/s. A value whose bytes do not
 * fit 64 bits is refused naming it: wrapped, it could read 0 (unlimited). */
gboolean migration_bandwidth_to_bytes(guint64 mib_per_s, guint64 *bytes_per_s, GError **error);

/* "tcp://host:port", "tcp:host:port", "tcp://[v6]:port" -> host, port (0 if
 * absent). */
gboolean migration_parse_tcp_uri(const char *uri, char **host, guint *port, GError **error);
/* NULL, "", "0.0.0.0" or "::": any address. */
gboolean migration_is_wildcard_address(const char *host);
