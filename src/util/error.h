/* ferry's one GError domain. Codes are libvirt's virErrorNumber values, so the
 * RPC boundary can hand them to libvirt clients without a second table. */
#pragma once

#include <glib.h>

#define FERRY_ERROR (ferry_error_quark())
GQuark ferry_error_quark(void);

/* virErrorNumber values (libvirt's public ABI; see shared/spec/WIRE.md §2). */
typedef enum {
    FERRY_ERR_INTERNAL_ERROR = 1,
    FERRY_ERR_NO_MEMORY = 2,
    FERRY_ERR_NO_SUPPORT = 3,
    FERRY_ERR_NO_CONNECT = 5,
    FERRY_ERR_INVALID_CONN = 6,
    FERRY_ERR_INVALID_DOMAIN = 7,
    FERRY_ERR_INVALID_ARG = 8,
    FERRY_ERR_OPERATION_FAILED = 9,
    FERRY_ERR_XML_ERROR = 27,
    FERRY_ERR_DOM_EXIST = 28,
    FERRY_ERR_OPERATION_DENIED = 29,
    FERRY_ERR_CONF_SYNTAX = 33,
    FERRY_ERR_SYSTEM_ERROR = 38,
    FERRY_ERR_RPC = 39,
    FERRY_ERR_NO_DOMAIN = 42,
    FERRY_ERR_NO_NETWORK = 43,
    FERRY_ERR_AUTH_FAILED = 45,
    FERRY_ERR_NO_STORAGE_POOL = 49,
    FERRY_ERR_NO_STORAGE_VOL = 50,
    FERRY_ERR_NO_NODE_DEVICE = 53,
    FERRY_ERR_OPERATION_INVALID = 55,
    FERRY_ERR_NO_INTERFACE = 57,
    FERRY_ERR_NO_NWFILTER = 62,
    FERRY_ERR_NO_SECRET = 66,
    FERRY_ERR_OPERATION_TIMEOUT = 68,
    FERRY_ERR_CONFIG_UNSUPPORTED = 67,
    FERRY_ERR_MIGRATE_PERSIST_FAILED = 69,
    FERRY_ERR_NO_DOMAIN_SNAPSHOT = 72,
    FERRY_ERR_ARGUMENT_UNSUPPORTED = 74,
    FERRY_ERR_OPERATION_ABORTED = 78,
    FERRY_ERR_AUTH_CANCELLED = 79,
    FERRY_ERR_MIGRATE_UNSAFE = 81,
    FERRY_ERR_OVERFLOW = 82,
    FERRY_ERR_OPERATION_UNSUPPORTED = 84,
    FERRY_ERR_STORAGE_VOL_EXIST = 90,
    FERRY_ERR_MIGRATE_FINISH_OK = 93,
    FERRY_ERR_NO_SERVER = 95,
    FERRY_ERR_NO_CLIENT = 96,
    FERRY_ERR_NO_NWFILTER_BINDING = 101,
    FERRY_ERR_NO_DOMAIN_CHECKPOINT = 103,
} FerryErrorCode;

/* virErrorDomain values: where an error came from. */
typedef enum {
    FERRY_FROM_NONE = 0,
    FERRY_FROM_CONF = 9,
    FERRY_FROM_RPC = 7,
    FERRY_FROM_QEMU = 10,
    FERRY_FROM_TEST = 12,
    FERRY_FROM_REMOTE = 13,
    FERRY_FROM_DOMAIN = 20,
    FERRY_FROM_STORAGE = 18,
    FERRY_FROM_NETWORK = 19,
    FERRY_FROM_NODEDEV = 22,
    FERRY_FROM_INTERFACE = 26,
    FERRY_FROM_SECRET = 30,
    FERRY_FROM_NWFILTER = 33,
    FERRY_FROM_DOMAIN_SNAPSHOT = 35,
    FERRY_FROM_STREAMS = 38,
    FERRY_FROM_ADMIN = 62,
    FERRY_FROM_DOMAIN_CHECKPOINT = 69,
} FerryErrorOrigin;

/* The text libvirt puts in front of a message of this code ("Domain not found: "),
 * so users read the same words they know from libvirt. Empty for codes that
 * carry their whole text themselves. */
const char *ferry_error_prefix(int code);

/* Which virErrorDomain a code is reported from when nothing more specific is known. */
int ferry_error_default_origin(int code);

/* "1.2 GiB", "16 bytes": IEC units with a plain space (GLib's own formatter
 * puts a no-break space there, which breaks grep on logs and messages). */
char *ferry_format_size(guint64 bytes);

/* Sets *error to a FERRY_ERROR with the OS error's text appended:
 * "cannot connect to 127.0.0.1:16509: Connection refused". */
void ferry_set_error_errno(GError **error, int errnum, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* A dead socket reports its own error (ETIMEDOUT, ECONNRESET...) to one call
 * only; a writer then meets EPIPE, which says nothing about why. Each
 * connection keeps the first other error any of its calls met in *seen
 * (atomic, 0 at first). ferry_os_error_seen records err; for EPIPE it waits
 * up to 50 ms for another thread to record the real cause and returns that
 * (or EPIPE). */
int ferry_os_error_seen(gint *seen, int err);
/* Records err in *seen, if it is the first and says why (not 0, not EPIPE):
 * for the call that consumed a socket's error, whatever it does next. */
void ferry_os_error_note(gint *seen, int err);
