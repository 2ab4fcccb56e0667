/* Flag and parameter policy of the migration engine. */
#include "driver/migration-params.h"

#include <string.h>

#include "driver/driver-params.h"
#include "driver/migration-engine.h"
#include "util/error.h"

static const char *const refused_flags[] = {
    /* NON_SHARED_DISK, NON_SHARED_INC: as the VMM can (migration-storage.c) */
    /* COMPRESSED, AUTO_CONVERGE: as the VMM can (migration_tuning_from_params) */
    [14] = "RDMA_PIN_ALL",
    [15] = NULL, /* POSTCOPY: as the VMM can (migration-postcopy.c) */
    [16] = NULL, /* TLS: proxy mode only, checked below */
    [17] = NULL, /* PARALLEL: as the VMM can (migration-parallel.c) */
    [18] = "NON_SHARED_SYNCHRONOUS_WRITES",
    [19] = NULL, /* POSTCOPY_RESUME: with POSTCOPY, as the VMM can */
    [20] = "ZEROCOPY",
};

static const char *const supported_params[] = {"destination_name", "destination_xml",
                                               "persistent_xml", "bandwidth", "migrate_uri",
                                               "listen_address", "auto_converge.initial",
                                               "auto_converge.increment", "compression",
                                               "compression.xbzrle.cache", "migrate_disks",
                                               "parallel.connections", "bandwidth.postcopy",
                                               NULL};

gboolean migration_check_flags_and_params(guint flags, GPtrArray *params, GError **error)
{
    for (guint bit = 0; bit < G_N_ELEMENTS(refused_flags); bit++) {
        if ((flags & (1u << bit)) && refused_flags[bit]) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                        "migration flag %s is not supported", refused_flags[bit]);
            return FALSE;
        }
    }
    if ((flags & MIGRATION_TLS) && (flags & MIGRATION_TUNNELLED)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration flag TLS is not supported with --tunnelled: the tunnel is "
                    "encrypted by the TLS of the daemons' connection (use a +tls URI)");
        return FALSE;
    }
    /* Offline migration moves a definition: as libvirt words it. */
    if ((flags & MIGRATION_OFFLINE) && !(flags & MIGRATION_PERSIST_DEST)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "offline migration must be specified with the persistent flag set");
        return FALSE;
    }
    if ((flags & MIGRATION_OFFLINE) && (flags & MIGRATION_TUNNELLED)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "tunnelled offline migration does not make sense");
        return FALSE;
    }
    /* libvirt's words: post-copy runs the guest on the destination while
     * its memory still moves, which a paused or non-live guest cannot. */
    if ((flags & MIGRATION_POSTCOPY) &&
        (!(flags & MIGRATION_LIVE) || (flags & MIGRATION_PAUSED))) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "post-copy migration is not supported with non-live or paused migration");
        return FALSE;
    }
    if ((flags & MIGRATION_POSTCOPY_RESUME) && !(flags & MIGRATION_POSTCOPY)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "resuming failed post-copy migration requires post-copy to be enabled");
        return FALSE;
    }
    /* Each works alone; the mirror's switch-over inside post-copy is not built. */
    if ((flags & MIGRATION_POSTCOPY) &&
        (flags & (MIGRATION_NON_SHARED_DISK | MIGRATION_NON_SHARED_INC))) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration flag POSTCOPY together with NON_SHARED_DISK or NON_SHARED_INC "
                    "(copying disks) is not supported: migrate the disks pre-copy");
        return FALSE;
    }
    if ((flags & MIGRATION_NON_SHARED_DISK) && (flags & MIGRATION_NON_SHARED_INC)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "flags NON_SHARED_DISK and NON_SHARED_INC are mutually exclusive");
        return FALSE;
    }
    if (flags >> G_N_ELEMENTS(refused_flags)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "unknown migration flags 0x%x", flags);
        return FALSE;
    }
    for (guint i = 0; params && i < params->len; i++) {
        const DriverParam *p = params->pdata[i];
        if ((flags & MIGRATION_TUNNELLED) &&
            (g_str_equal(p->field, "migrate_uri") || g_str_equal(p->field, "listen_address"))) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                        "migration parameter '%s' cannot be used with tunnelled migration",
                        p->field);
            return FALSE;
        }
        if (!g_strv_contains(supported_params, p->field)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                        "migration parameter '%s' is not supported", p->field);
            return FALSE;
        }
    }
    return TRUE;
}

gboolean migration_bandwidth_to_bytes(guint64 mib_per_s, guint64 *bytes_per_s, GError **error)
{
    const guint64 max_mib = G_MAXUINT64 >> 20;
    if (mib_per_s > max_mib) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OVERFLOW,
                    "migration bandwidth %" G_GUINT64_FORMAT
                    " MiB/s is too large: it must be at most %" G_GUINT64_FORMAT " MiB/s",
                    mib_per_s, max_mib);
        return FALSE;
    }
    *bytes_per_s = mib_per_s << 20;
    return TRUE;
}

gboolean migration_parse_tcp_uri(const char *uri, char **host, guint *port, GError **error)
{
    const char *p = uri;
    if (g_str_has_prefix(p, "tcp://"))
        p += 6;
    else if (g_str_has_prefix(p, "tcp:"))
        p += 4;
    else {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "migration URI '%s' is not tcp://HOST[:PORT]", uri);
        return FALSE;
    }
    g_autofree char *rest = g_strdup(p);
    char *slash = strchr(rest, '/');
    if (slash)
        *slash = '\0';
    char *colon = NULL;
    if (rest[0] == '[') {
        char *close = strchr(rest, ']');
        if (!close) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "bad address in '%s'", uri);
            return FALSE;
        }
        *close = '\0';
        colon = close[1] == ':' ? close + 1 : NULL;
        *host = g_strdup(rest + 1);
    } else {
        colon = strrchr(rest, ':');
        if (colon)
            *colon = '\0';
        *host = g_strdup(rest);
    }
    guint64 n = 0;
    if (colon && !g_ascii_string_to_unsigned(colon + 1, 10, 1, 65535, &n, NULL)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "bad port in '%s'", uri);
        g_clear_pointer(host, g_free);
        return FALSE;
    }
    *port = (guint)n;
    return TRUE;
}

gboolean migration_is_wildcard_address(const char *host)
{
    return !host || !*host || g_str_equal(host, "0.0.0.0") || g_str_equal(host, "::");
}

static gboolean param_int(const DriverParam *p, int lo, int hi, int *out, GError **error)
{
    if (p->type != DRIVER_PARAM_INT || p->v.i < lo || p->v.i > hi) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "migration parameter '%s' must be an int from %d to %d", p->field, lo, hi);
        return FALSE;
    }
    *out = p->v.i;
    return TRUE;
}

static gboolean refuse_flag(guint flags, guint flag, const char *name, guint tunable,
                            const char *vmm, GError **error)
{
    if ((flags & flag) && !(tunable & flag)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "migration flag %s is not supported by %s", name, vmm);
        return FALSE;
    }
    return TRUE;
}

gboolean migration_tuning_from_params(guint flags, GPtrArray *params, guint tunable,
                                      const char *vmm, MigrationTuning *t, GError **error)
{
    *t = (MigrationTuning){.auto_converge = (flags & MIGRATION_AUTO_CONVERGE) != 0,
                           .throttle_initial = -1,
                           .throttle_increment = -1,
                           .xbzrle = (flags & MIGRATION_COMPRESSED) != 0,
                           .postcopy = (flags & MIGRATION_POSTCOPY) != 0};
    if (!refuse_flag(flags, MIGRATION_AUTO_CONVERGE, "AUTO_CONVERGE", tunable, vmm, error) ||
        !refuse_flag(flags, MIGRATION_COMPRESSED, "COMPRESSED", tunable, vmm, error) ||
        !refuse_flag(flags, MIGRATION_POSTCOPY, "POSTCOPY", tunable, vmm, error))
        return FALSE;
    for (guint i = 0; params && i < params->len; i++) {
        const DriverParam *p = params->pdata[i];
        if (g_str_has_prefix(p->field, "auto_converge.")) {
            /* libvirt's words */
            if (!t->auto_converge) {
                g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                            "Turn auto convergence on to tune it (migration parameter '%s')",
                            p->field);
                return FALSE;
            }
            if (!param_int(p, 0, 100, g_str_equal(p->field, "auto_converge.initial")
                                           ? &t->throttle_initial
                                           : &t->throttle_increment,
                           error))
                return FALSE;
        } else if (g_str_has_prefix(p->field, "compression")) {
            if (!t->xbzrle) {
                g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                            "Turn migration compression on to tune it (migration parameter "
                            "'%s')",
                            p->field);
                return FALSE;
            }
            if (g_str_equal(p->field, "compression")) {
                if (p->type != DRIVER_PARAM_STRING || g_strcmp0(p->s, "xbzrle") != 0) {
                    g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                                "migration compression method '%s' is not supported (only "
                                "xbzrle)",
                                p->type == DRIVER_PARAM_STRING ? p->s : "?");
                    return FALSE;
                }
            } else if (p->type != DRIVER_PARAM_ULLONG) {
                g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                            "migration parameter '%s' must be an unsigned long long", p->field);
                return FALSE;
            } else {
                t->xbzrle_cache = p->v.ul;
            }
        }
    }
    return TRUE;
}
