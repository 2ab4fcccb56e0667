/* QMP client: drives a VMM (ferry-vmm or QEMU) over its monitor socket. One
 * reader thread per connection; commands may be issued from any thread. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct _QmpClient QmpClient;

/* Called on the client's reader thread for every event, in stream order.
 * data is the event's "data" (an empty object when absent) and timestamp_us its
 * "timestamp" (0 when absent or out of range); data is valid during the call only. */
typedef void (*QmpEventFunc)(QmpClient *client, const char *event, JsonObject *data,
                             gint64 timestamp_us, gpointer user_data);

/* Called on the reader thread exactly once per client returned by
 * qmp_client_connect(), when the connection ends for any reason but
 * qmp_client_free(): end of file (the VMM exited or was killed), a read error, a
 * protocol error. error says which. Never called after qmp_client_free() began. */
typedef void (*QmpCloseFunc)(QmpClient *client, const GError *error, gpointer user_data);

/* Connects to socket_path, retrying while it does not exist yet or refuses
 * (a VMM that is starting), reads the greeting and negotiates capabilities,
 * all within timeout_ms. Callbacks (nullable) may start running before this
 * returns. FALSE/NULL with error set on failure; no callback ran then. */
QmpClient *qmp_client_connect(const char *socket_path, int timeout_ms, QmpEventFunc on_event,
                              QmpCloseFunc on_close, gpointer user_data, GError **error);

/* The same with two limits: connect_timeout_ms for the socket to accept a
 * connection, then handshake_timeout_ms for the greeting and capabilities.
 * A VMM serves one monitor client at a time, and a client that gives up on a
 * slow greeting leaves a dead connection in the VMM's backlog that the VMM
 * must serve before the next: retrying a connected socket on a loaded host
 * only lengthens that queue, so a VMM starting up is waited for on one
 * connection (its exit ends the wait at once: the connection closes). */
QmpClient *qmp_client_connect_staged(const char *socket_path, int connect_timeout_ms,
                                     int handshake_timeout_ms, QmpEventFunc on_event,
                                     QmpCloseFunc on_close, gpointer user_data, GError **error);

/* Runs command with arguments (nullable, not consumed) and returns its
 * "return" member (caller frees), or NULL with error set: an error reply gives
 * the reply's desc as message (code FERRY_ERR_OPERATION_UNSUPPORTED for
 * CommandNotFound, FERRY_ERR_OPERATION_FAILED otherwise); no reply within
 * timeout_ms (-1 = no limit) gives FERRY_ERR_OPERATION_TIMEOUT; a closed
 * connection gives FERRY_ERR_OPERATION_FAILED with the reason. Any thread.
 * In-band commands go one at a time: while the VMM has not answered an
 * earlier one (even one whose caller timed out), a call waits for that
 * answer within its timeout and then fails (OPERATION_TIMEOUT) unsent. */
JsonNode *qmp_client_execute(QmpClient *client, const char *command, JsonObject *arguments,
                             int timeout_ms, GError **error);

/* The same as an out-of-band command ("exec-oob") when the VMM took
 * capability oob at the handshake (QEMU), which QEMU runs on its monitor's
 * own thread even while its main thread is blocked; only commands that
 * allow it (QEMU: migrate-recover, migrate-pause ...). Without the
 * capability (ferry-vmm) it runs in band, as qmp_client_execute. */
JsonNode *qmp_client_execute_oob(QmpClient *client, const char *command, JsonObject *arguments,
                                 int timeout_ms, GError **error);

/* Whether the VMM took capability oob. */
gboolean qmp_client_has_oob(QmpClient *client);

/* Sends fd (not consumed; the caller still closes its copy) with SCM_RIGHTS
 * along with "getfd" naming it fdname, for "migrate fd:NAME" and the like. */
gboolean qmp_client_pass_fd(QmpClient *client, const char *fdname, int fd, int timeout_ms,
                            GError **error);

/* FALSE once the connection ended (the close callback has run or is running). */
gboolean qmp_client_is_connected(QmpClient *client);

/* The greeting's "QMP" object ({"version": ..., "capabilities": ...}); owned by
 * the client, valid until qmp_client_free(). */
JsonObject *qmp_client_get_greeting(QmpClient *client);

/* Closes the connection and releases the client. Lifetime rules:
 * - callable from any thread, including from the client's own callbacks (the
 *   reader thread then releases the client once the callback returned);
 * - from another thread it waits for a callback in progress to return, and no
 *   callback runs after it returned;
 * - calls of qmp_client_execute() already waiting on other threads return an
 *   error; no call may start after qmp_client_free() was called. */
void qmp_client_free(QmpClient *client);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(QmpClient, qmp_client_free)
