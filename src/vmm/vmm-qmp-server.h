/* The QMP monitor of ferry-vmm: a UNIX socket serving one client at a time,
 * QEMU's framing and error texts, fd passing (getfd/closefd) and events. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct _VmmQmpServer VmmQmpServer;

typedef enum {
    VMM_QMP_ARG_STRING,
    VMM_QMP_ARG_INT,
    VMM_QMP_ARG_BOOL,
    VMM_QMP_ARG_OBJECT,
    VMM_QMP_ARG_ARRAY,
} VmmQmpArgType;

typedef struct {
    const char *name;
    VmmQmpArgType type;
    gboolean optional;
} VmmQmpArg;

/* Runs on the main thread with arguments already checked against the
 * command's table. Returns the "return" value, NULL with error set on failure
 * (sent as a GenericError with the message as desc). */
typedef JsonNode *(*VmmQmpHandler)(VmmQmpServer *server, JsonObject *args, gpointer user_data,
                                   GError **error);

typedef struct {
    const char *name;
    VmmQmpHandler handler;
    const VmmQmpArg *args; /* ended by a NULL name; NULL = takes no argument */
} VmmQmpCommand;

/* commands: ended by a NULL name; must outlive the server. Serves on the
 * thread-default main context of the calling thread (the "main thread"). */
VmmQmpServer *vmm_qmp_server_new(const char *path, const VmmQmpCommand *commands,
                                 gpointer user_data, GError **error);
/* Closes the client, every passed fd, and removes the socket file. */
void vmm_qmp_server_free(VmmQmpServer *server);

/* Any thread; data (nullable) is consumed. Dropped when no client negotiated. */
void vmm_qmp_server_emit_event(VmmQmpServer *server, const char *name, JsonObject *data);
/* Main thread: writes out what is queued for the client, for at most timeout_ms
 * (used before exiting, so the last reply and SHUTDOWN reach the client). */
void vmm_qmp_server_flush(VmmQmpServer *server, int timeout_ms);
/* Main thread: removes a fd passed with getfd from the table; the caller owns it. */
int vmm_qmp_server_take_fd(VmmQmpServer *server, const char *fdname, GError **error);

/* Helpers for handlers. */
JsonNode *vmm_qmp_return_object(JsonObject *object /* consumed, NULL = {} */);
