/* ferry's GError domain and the libvirt-compatible view of its codes. */
#include "util/error.h"

#include <errno.h>

#include <string.h>

G_DEFINE_QUARK(ferry-error-quark, ferry_error)

const char *ferry_error_prefix(int code)
{
    switch (code) {
    case FERRY_ERR_INTERNAL_ERROR:
        return "internal error: ";
    case FERRY_ERR_NO_SUPPORT:
        return "this function is not supported by the connection driver: ";
    case FERRY_ERR_NO_CONNECT:
        return "";
    case FERRY_ERR_INVALID_ARG:
        return "invalid argument: ";
    case FERRY_ERR_OPERATION_FAILED:
        return "operation failed: ";
    case FERRY_ERR_XML_ERROR:
        return "XML error: ";
    case FERRY_ERR_DOM_EXIST:
        return "operation failed: ";
    case FERRY_ERR_OPERATION_DENIED:
        return "operation forbidden: ";
    case FERRY_ERR_CONF_SYNTAX:
        return "configuration file syntax error: ";
    case FERRY_ERR_NO_DOMAIN:
        return "Domain not found: ";
    case FERRY_ERR_NO_NETWORK:
        return "Network not found: ";
    case FERRY_ERR_NO_STORAGE_POOL:
        return "Storage pool not found: ";
    case FERRY_ERR_NO_STORAGE_VOL:
        return "Storage volume not found: ";
    case FERRY_ERR_NO_NODE_DEVICE:
        return "Node device not found: ";
    case FERRY_ERR_NO_INTERFACE:
        return "Interface not found: ";
    case FERRY_ERR_NO_NWFILTER:
        return "Network filter not found: ";
    case FERRY_ERR_NO_NWFILTER_BINDING:
        return "Network filter binding not found: ";
    case FERRY_ERR_NO_SECRET:
        return "Secret not found: ";
    case FERRY_ERR_NO_DOMAIN_SNAPSHOT:
        return "Domain snapshot not found: ";
    case FERRY_ERR_NO_DOMAIN_CHECKPOINT:
        return "Domain checkpoint not found: ";
    case FERRY_ERR_AUTH_FAILED:
        return "authentication failed: ";
    case FERRY_ERR_OVERFLOW:
        return "value too large: ";
    case FERRY_ERR_OPERATION_INVALID:
        return "Requested operation is not valid: ";
    case FERRY_ERR_CONFIG_UNSUPPORTED:
        return "unsupported configuration: ";
    case FERRY_ERR_OPERATION_TIMEOUT:
        return "Timed out during operation: ";
    case FERRY_ERR_ARGUMENT_UNSUPPORTED:
        return "argument unsupported: ";
    case FERRY_ERR_OPERATION_ABORTED:
        return "operation aborted: ";
    case FERRY_ERR_MIGRATE_UNSAFE:
        return "Unsafe migration: ";
    case FERRY_ERR_OPERATION_UNSUPPORTED:
        return "Operation not supported: ";
    case FERRY_ERR_NO_SERVER:
        return "Server not found: ";
    case FERRY_ERR_NO_CLIENT:
        return "Client not found: ";
    default:
        return "";
    }
}

int ferry_error_default_origin(int code)
{
    switch (code) {
    case FERRY_ERR_RPC:
    case FERRY_ERR_AUTH_FAILED:
    case FERRY_ERR_AUTH_CANCELLED:
        return FERRY_FROM_RPC;
    case FERRY_ERR_NO_CONNECT:
        return FERRY_FROM_NONE; /* libvirt raises it from its public API layer */
    case FERRY_ERR_CONF_SYNTAX:
        return FERRY_FROM_CONF;
    case FERRY_ERR_SYSTEM_ERROR:
        return FERRY_FROM_RPC;
    /* "not found" comes from the subsystem of the object, as in libvirt */
    case FERRY_ERR_NO_NETWORK:
        return FERRY_FROM_NETWORK;
    case FERRY_ERR_NO_STORAGE_POOL:
    case FERRY_ERR_NO_STORAGE_VOL:
    case FERRY_ERR_STORAGE_VOL_EXIST:
        return FERRY_FROM_STORAGE;
    case FERRY_ERR_NO_NODE_DEVICE:
        return FERRY_FROM_NODEDEV;
    case FERRY_ERR_NO_INTERFACE:
        return FERRY_FROM_INTERFACE;
    case FERRY_ERR_NO_NWFILTER:
    case FERRY_ERR_NO_NWFILTER_BINDING:
        return FERRY_FROM_NWFILTER;
    case FERRY_ERR_NO_SECRET:
        return FERRY_FROM_SECRET;
    case FERRY_ERR_NO_DOMAIN_SNAPSHOT:
        return FERRY_FROM_DOMAIN_SNAPSHOT;
    case FERRY_ERR_NO_DOMAIN_CHECKPOINT:
        return FERRY_FROM_DOMAIN_CHECKPOINT;
    case FERRY_ERR_NO_SERVER:
    case FERRY_ERR_NO_CLIENT:
        return FERRY_FROM_ADMIN;
    default:
        return FERRY_FROM_DOMAIN;
    }
}

void ferry_set_error_errno(GError **error, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, FERRY_ERROR, FERRY_ERR_SYSTEM_ERROR, "%s: %s", what, g_strerror(errnum));
}

char *ferry_format_size(guint64 bytes)
{
    g_autofree char *text = g_format_size_full(bytes, G_FORMAT_SIZE_IEC_UNITS);
    GString *out = g_string_new(NULL);
    for (const char *p = text; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);
        if (g_unichar_isspace(c))
            g_string_append_c(out, ' ');
        else
            g_string_append_unichar(out, c);
    }
    return g_string_free(out, FALSE);
}

void ferry_os_error_note(gint *seen, int err)
{
    if (err && err != EPIPE)
        g_atomic_int_compare_and_exchange(seen, 0, err);
}

int ferry_os_error_seen(gint *seen, int err)
{
    if (err != EPIPE) {
        ferry_os_error_note(seen, err);
        return err;
    }
    for (int i = 0; i < 50 && !g_atomic_int_get(seen); i++)
        g_usleep(1000);
    int cause = g_atomic_int_get(seen);
    return cause ? cause : err;
}
