/* QMP server: accepts one client at a time (later ones wait in the backlog, as
 * with QEMU), splits its byte stream into JSON values, checks the envelope and
 * the arguments, dispatches, and queues replies and events without ever
 * blocking the main loop on a slow client. */
#include "vmm/vmm-qmp-server.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib-unix.h>

#include "util/error.h"
#include "util/json-splitter.h"
#include "util/log.h"
#include "vmm/vmm-socket.h"

#define FERRY_LOG_MODULE "vmm.qmp"
#define QMP_MAX_MESSAGE (1u << 20)
/* A client that does not read its replies is dropped beyond this. */
#define QMP_MAX_OUTPUT (16u << 20)
#define QMP_MAX_PENDING_FDS 16
#define QMP_READ_SIZE 65536

typedef struct {
    int fd;
    guint in_watch;
    guint out_watch;
    FerryJsonSplitter *splitter;
    GByteArray *out;
    gboolean negotiated;
    GQueue pending_fds; /* fds received with SCM_RIGHTS, not yet claimed by getfd */
    gboolean close_when_flushed;
} QmpConn;

struct _VmmQmpServer {
    char *path;
    int listen_fd;
    guint listen_watch;
    QmpConn *conn;
    const VmmQmpCommand *commands;
    gpointer user_data;
    GHashTable *fds; /* fdname -> fd, passed with getfd; they outlive a client, as in QEMU */
    GThread *owner;

    GMutex event_lock;
    GQueue events; /* serialized events from other threads */
    guint event_source;
};

static void qmp_server_listen(VmmQmpServer *s);

JsonNode *vmm_qmp_return_object(JsonObject *object)
{
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(node, object ? object : json_object_new());
    return node;
}

static void qmp_conn_close(VmmQmpServer *s)
{
    QmpConn *c = s->conn;
    if (!c)
        return;
    s->conn = NULL;
    if (c->in_watch)
        g_source_remove(c->in_watch);
    if (c->out_watch)
        g_source_remove(c->out_watch);
    close(c->fd);
    gpointer fd;
    while ((fd = g_queue_pop_head(&c->pending_fds)))
        close(GPOINTER_TO_INT(fd) - 1);
    ferry_json_splitter_free(c->splitter);
    g_byte_array_unref(c->out);
    g_free(c);
    FERRY_INFO("QMP client disconnected");
    qmp_server_listen(s);
}

static gboolean qmp_conn_writable(gint fd, GIOCondition cond, gpointer data);

/* Writes what it can now; the rest waits for the socket to become writable. */
static void qmp_conn_flush(VmmQmpServer *s)
{
    QmpConn *c = s->conn;
    while (c->out->len) {
        ssize_t n = send(c->fd, c->out->data, c->out->len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            FERRY_INFO("cannot write to the QMP client: %s", g_strerror(errno));
            qmp_conn_close(s);
            return;
        }
        g_byte_array_remove_range(c->out, 0, (guint)n);
    }
    if (c->out->len == 0 && c->close_when_flushed) {
        qmp_conn_close(s);
        return;
    }
    if (c->out->len > QMP_MAX_OUTPUT) {
        FERRY_WARN("QMP client does not read its replies; dropping it");
        qmp_conn_close(s);
        return;
    }
    if (c->out->len && !c->out_watch)
        c->out_watch = g_unix_fd_add(c->fd, G_IO_OUT, qmp_conn_writable, s);
}

static gboolean qmp_conn_writable(gint fd, GIOCondition cond, gpointer data)
{
    VmmQmpServer *s = data;
    s->conn->out_watch = 0;
    qmp_conn_flush(s);
    return G_SOURCE_REMOVE;
}

static void qmp_conn_queue_text(QmpConn *c, const char *text)
{
    g_byte_array_append(c->out, (const guint8 *)text, strlen(text));
    g_byte_array_append(c->out, (const guint8 *)"\r\n", 2);
}

static void qmp_conn_send(VmmQmpServer *s, JsonObject *message)
{
    if (!s->conn)
        return;
    g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(node, message);
    g_autofree char *text = json_to_string(node, FALSE);
    qmp_conn_queue_text(s->conn, text);
    qmp_conn_flush(s);
}

static void qmp_send_error(VmmQmpServer *s, JsonNode *id, const char *klass, const char *desc)
{
    g_autoptr(JsonObject) reply = json_object_new();
    JsonObject *err = json_object_new();
    json_object_set_string_member(err, "class", klass);
    json_object_set_string_member(err, "desc", desc);
    json_object_set_object_member(reply, "error", err);
    if (id)
        json_object_set_member(reply, "id", json_node_copy(id));
    qmp_conn_send(s, reply);
}

static void qmp_send_return(VmmQmpServer *s, JsonNode *id, JsonNode *ret)
{
    g_autoptr(JsonObject) reply = json_object_new();
    json_object_set_member(reply, "return", ret);
    if (id)
        json_object_set_member(reply, "id", json_node_copy(id));
    qmp_conn_send(s, reply);
}

static void qmp_send_greeting(VmmQmpServer *s)
{
    g_autoptr(JsonObject) greeting = json_object_new();
    JsonObject *qmp = json_object_new();
    JsonObject *version = json_object_new();
    JsonObject *qemu = json_object_new();
    json_object_set_int_member(qemu, "major", 0);
    json_object_set_int_member(qemu, "minor", 1);
    json_object_set_int_member(qemu, "micro", 0);
    json_object_set_object_member(version, "qemu", qemu);
    json_object_set_string_member(version, "package", "ferry-vmm");
    json_object_set_object_member(qmp, "version", version);
    json_object_set_array_member(qmp, "capabilities", json_array_new());
    json_object_set_object_member(greeting, "QMP", qmp);
    qmp_conn_send(s, greeting);
}

static const char *qmp_arg_type_name(VmmQmpArgType type)
{
    switch (type) {
    case VMM_QMP_ARG_STRING:
        return "string";
    case VMM_QMP_ARG_INT:
        return "integer";
    case VMM_QMP_ARG_BOOL:
        return "boolean";
    case VMM_QMP_ARG_OBJECT:
        return "object";
    case VMM_QMP_ARG_ARRAY:
    default:
        return "array";
    }
}

static gboolean qmp_arg_type_ok(JsonNode *node, VmmQmpArgType type)
{
    switch (type) {
    case VMM_QMP_ARG_OBJECT:
        return JSON_NODE_HOLDS_OBJECT(node);
    case VMM_QMP_ARG_ARRAY:
        return JSON_NODE_HOLDS_ARRAY(node);
    default:
        break;
    }
    if (!JSON_NODE_HOLDS_VALUE(node))
        return FALSE;
    GType t = json_node_get_value_type(node);
    return (type == VMM_QMP_ARG_STRING && t == G_TYPE_STRING) ||
           (type == VMM_QMP_ARG_INT && t == G_TYPE_INT64) ||
           (type == VMM_QMP_ARG_BOOL && t == G_TYPE_BOOLEAN);
}

/* QEMU's texts, so a client matching on them works against either. */
static gboolean qmp_check_args(const VmmQmpCommand *cmd, JsonObject *args, GError **error)
{
    const VmmQmpArg *spec = cmd->args;
    for (const VmmQmpArg *a = spec; a && a->name; a++) {
        JsonNode *n = json_object_get_member(args, a->name);
        if (!n && !a->optional) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "Parameter '%s' is missing",
                        a->name);
            return FALSE;
        }
        if (n && !qmp_arg_type_ok(n, a->type)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "Invalid parameter type for '%s', expected: %s", a->name,
                        qmp_arg_type_name(a->type));
            return FALSE;
        }
    }
    g_autoptr(GList) members = json_object_get_members(args);
    for (GList *l = members; l; l = l->next) {
        gboolean known = FALSE;
        for (const VmmQmpArg *a = spec; a && a->name && !known; a++)
            known = g_str_equal(a->name, l->data);
        if (!known) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "Parameter '%s' is unexpected",
                        (const char *)l->data);
            return FALSE;
        }
    }
    return TRUE;
}

/* Built-in commands, which belong to the monitor rather than to the VM. */

static JsonNode *qmp_cmd_capabilities(VmmQmpServer *s, JsonObject *args, gpointer user_data,
                                      GError **error)
{
    JsonNode *node = json_object_get_member(args, "enable");
    JsonArray *enable = node ? json_node_get_array(node) : NULL;
    if (enable && json_array_get_length(enable) > 0) {
        JsonNode *first = json_array_get_element(enable, 0);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "Capability '%s' not available",
                    JSON_NODE_HOLDS_VALUE(first) && json_node_get_value_type(first) == G_TYPE_STRING
                        ? json_node_get_string(first)
                        : "?");
        return NULL;
    }
    s->conn->negotiated = TRUE;
    return vmm_qmp_return_object(NULL);
}

static JsonNode *qmp_cmd_getfd(VmmQmpServer *s, JsonObject *args, gpointer user_data,
                               GError **error)
{
    const char *name = json_object_get_string_member(args, "fdname");
    /* The fd that came with this command is this command's, even if it fails:
     * left queued, it would end up under the next getfd's name. */
    gpointer fd = g_queue_pop_head(&s->conn->pending_fds);
    if (g_ascii_isdigit(name[0]) || name[0] == '\0') {
        if (fd)
            close(GPOINTER_TO_INT(fd) - 1);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "Parameter 'fdname' expects a name not starting with a digit");
        return NULL;
    }
    if (!fd) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "No file descriptor supplied via SCM_RIGHTS");
        return NULL;
    }
    /* Replacing a name closes the fd it named, as QEMU does. */
    g_hash_table_insert(s->fds, g_strdup(name), fd);
    return vmm_qmp_return_object(NULL);
}

static JsonNode *qmp_cmd_closefd(VmmQmpServer *s, JsonObject *args, gpointer user_data,
                                 GError **error)
{
    const char *name = json_object_get_string_member(args, "fdname");
    if (!g_hash_table_remove(s->fds, name)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "File descriptor named '%s' not found", name);
        return NULL;
    }
    return vmm_qmp_return_object(NULL);
}

static JsonNode *qmp_cmd_query_commands(VmmQmpServer *s, JsonObject *args, gpointer user_data,
                                        GError **error);

static const VmmQmpArg qmp_args_capabilities[] = {{"enable", VMM_QMP_ARG_ARRAY, TRUE}, {NULL}};
static const VmmQmpArg qmp_args_fdname[] = {{"fdname", VMM_QMP_ARG_STRING, FALSE}, {NULL}};

static const VmmQmpCommand qmp_builtin_commands[] = {
    {"qmp_capabilities", qmp_cmd_capabilities, qmp_args_capabilities},
    {"getfd", qmp_cmd_getfd, qmp_args_fdname},
    {"closefd", qmp_cmd_closefd, qmp_args_fdname},
    {"query-commands", qmp_cmd_query_commands, NULL},
    {NULL},
};

static JsonNode *qmp_cmd_query_commands(VmmQmpServer *s, JsonObject *args, gpointer user_data,
                                        GError **error)
{
    JsonArray *list = json_array_new();
    const VmmQmpCommand *tables[] = {qmp_builtin_commands, s->commands};
    for (guint t = 0; t < G_N_ELEMENTS(tables); t++) {
        for (const VmmQmpCommand *c = tables[t]; c->name; c++) {
            JsonObject *o = json_object_new();
            json_object_set_string_member(o, "name", c->name);
            json_array_add_object_element(list, o);
        }
    }
    JsonNode *node = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(node, list);
    return node;
}

static const VmmQmpCommand *qmp_find_command(VmmQmpServer *s, const char *name)
{
    for (const VmmQmpCommand *c = qmp_builtin_commands; c->name; c++)
        if (g_str_equal(c->name, name))
            return c;
    for (const VmmQmpCommand *c = s->commands; c->name; c++)
        if (g_str_equal(c->name, name))
            return c;
    return NULL;
}

static void qmp_dispatch(VmmQmpServer *s, const char *text)
{
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) error = NULL;
    if (!json_parser_load_from_data(parser, text, -1, &error)) {
        g_autofree char *desc = g_strdup_printf("JSON parse error, %s", error->message);
        qmp_send_error(s, NULL, "GenericError", desc);
        return;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!JSON_NODE_HOLDS_OBJECT(root)) {
        qmp_send_error(s, NULL, "GenericError", "QMP input must be a JSON object");
        return;
    }
    JsonObject *msg = json_node_get_object(root);
    JsonNode *id = json_object_get_member(msg, "id");
    JsonNode *execute = json_object_get_member(msg, "execute");
    JsonNode *arguments = json_object_get_member(msg, "arguments");

    g_autoptr(GList) members = json_object_get_members(msg);
    for (GList *l = members; l; l = l->next) {
        if (!g_str_equal(l->data, "execute") && !g_str_equal(l->data, "arguments") &&
            !g_str_equal(l->data, "id")) {
            g_autofree char *desc =
                g_strdup_printf("QMP input member '%s' is unexpected", (const char *)l->data);
            qmp_send_error(s, id, "GenericError", desc);
            return;
        }
    }
    if (!execute) {
        qmp_send_error(s, id, "GenericError", "QMP input lacks member 'execute'");
        return;
    }
    if (!JSON_NODE_HOLDS_VALUE(execute) || json_node_get_value_type(execute) != G_TYPE_STRING) {
        qmp_send_error(s, id, "GenericError", "QMP input member 'execute' must be a string");
        return;
    }
    if (arguments && !JSON_NODE_HOLDS_OBJECT(arguments)) {
        qmp_send_error(s, id, "GenericError", "QMP input member 'arguments' must be an object");
        return;
    }
    const char *name = json_node_get_string(execute);
    const VmmQmpCommand *cmd = qmp_find_command(s, name);
    gboolean negotiating = g_str_equal(name, "qmp_capabilities");
    if (!s->conn->negotiated && !negotiating) {
        qmp_send_error(s, id, "CommandNotFound",
                       "Expecting capabilities negotiation with 'qmp_capabilities'");
        return;
    }
    if (s->conn->negotiated && negotiating) {
        qmp_send_error(s, id, "CommandNotFound",
                       "Capabilities negotiation is already complete, command ignored");
        return;
    }
    if (!cmd) {
        g_autofree char *desc = g_strdup_printf("The command %s has not been found", name);
        qmp_send_error(s, id, "CommandNotFound", desc);
        return;
    }

    g_autoptr(JsonObject) args =
        arguments ? json_object_ref(json_node_get_object(arguments)) : json_object_new();
    JsonNode *ret = NULL;
    if (qmp_check_args(cmd, args, &error))
        ret = cmd->handler(s, args, s->user_data, &error);
    if (!s->conn)
        return;
    if (ret) {
        qmp_send_return(s, id, ret);
    } else {
        FERRY_DEBUG("command %s failed: %s", name, error ? error->message : "?");
        qmp_send_error(s, id, "GenericError", error ? error->message : "command failed");
    }
}

static void qmp_conn_take_fds(QmpConn *c, struct msghdr *msg)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        gsize n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *fds = (int *)CMSG_DATA(cm);
        for (gsize i = 0; i < n; i++) {
            if (g_queue_get_length(&c->pending_fds) >= QMP_MAX_PENDING_FDS) {
                FERRY_WARN("QMP client passed more than %d unclaimed fds; closing fd %d",
                           QMP_MAX_PENDING_FDS, fds[i]);
                close(fds[i]);
                continue;
            }
            /* Stored +1 so that fd 0 is not a NULL pointer. */
            g_queue_push_tail(&c->pending_fds, GINT_TO_POINTER(fds[i] + 1));
        }
    }
}

static gboolean qmp_conn_readable(gint fd, GIOCondition cond, gpointer data)
{
    VmmQmpServer *s = data;
    QmpConn *c = s->conn;
    char buf[QMP_READ_SIZE];
    union {
        char space[CMSG_SPACE(sizeof(int) * QMP_MAX_PENDING_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = &control,
                         .msg_controllen = sizeof(control)};

    ssize_t n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR || errno == EWOULDBLOCK))
        return G_SOURCE_CONTINUE;
    qmp_conn_take_fds(c, &msg);
    if (n <= 0) {
        if (n < 0)
            FERRY_INFO("QMP client read error: %s", g_strerror(errno));
        c->in_watch = 0;
        qmp_conn_close(s);
        return G_SOURCE_REMOVE;
    }
    if (c->close_when_flushed)
        return G_SOURCE_CONTINUE;

    ferry_json_splitter_feed(c->splitter, buf, (gsize)n);
    for (;;) {
        g_autofree char *text = NULL;
        FerryJsonSplitResult r = ferry_json_splitter_next(c->splitter, &text);
        if (r == FERRY_JSON_SPLIT_NEED_MORE)
            break;
        if (r == FERRY_JSON_SPLIT_GARBAGE) {
            g_autofree char *desc = g_strdup_printf("JSON parse error, invalid token '%s'", text);
            qmp_send_error(s, NULL, "GenericError", desc);
        } else if (r == FERRY_JSON_SPLIT_TOO_BIG) {
            qmp_send_error(s, NULL, "GenericError",
                           "JSON parse error, message too large or nested too deeply; closing");
            if (s->conn == c) {
                c->close_when_flushed = TRUE;
                qmp_conn_flush(s);
            }
            break;
        } else {
            qmp_dispatch(s, text);
        }
        if (s->conn != c)
            break; /* the connection went away while we answered */
    }
    if (s->conn != c)
        return G_SOURCE_REMOVE; /* its watch was removed with it */
    return G_SOURCE_CONTINUE;
}

static gboolean qmp_server_accept(gint fd, GIOCondition cond, gpointer data)
{
    VmmQmpServer *s = data;
    int cfd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (cfd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            FERRY_WARN("cannot accept a QMP client: %s", g_strerror(errno));
        return G_SOURCE_CONTINUE;
    }
    QmpConn *c = g_new0(QmpConn, 1);
    c->fd = cfd;
    c->splitter = ferry_json_splitter_new(QMP_MAX_MESSAGE);
    c->out = g_byte_array_new();
    g_queue_init(&c->pending_fds);
    s->conn = c;
    c->in_watch = g_unix_fd_add(cfd, G_IO_IN | G_IO_HUP | G_IO_ERR, qmp_conn_readable, s);
    FERRY_INFO("QMP client connected");
    /* One client at a time: the next waits in the backlog until this one leaves. */
    s->listen_watch = 0;
    qmp_send_greeting(s);
    return G_SOURCE_REMOVE;
}

static void qmp_server_listen(VmmQmpServer *s)
{
    if (!s->listen_watch && s->listen_fd >= 0)
        s->listen_watch = g_unix_fd_add(s->listen_fd, G_IO_IN, qmp_server_accept, s);
}

static void qmp_close_named_fd(gpointer fd)
{
    close(GPOINTER_TO_INT(fd) - 1);
}

VmmQmpServer *vmm_qmp_server_new(const char *path, const VmmQmpCommand *commands,
                                 gpointer user_data, GError **error)
{
    int fd = vmm_socket_listen_unix(path, error);
    if (fd < 0)
        return NULL;
    VmmQmpServer *s = g_new0(VmmQmpServer, 1);
    s->path = g_strdup(path);
    s->listen_fd = fd;
    s->commands = commands;
    s->user_data = user_data;
    s->fds = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, qmp_close_named_fd);
    s->owner = g_thread_self();
    g_mutex_init(&s->event_lock);
    g_queue_init(&s->events);
    qmp_server_listen(s);
    return s;
}

void vmm_qmp_server_free(VmmQmpServer *server)
{
    VmmQmpServer *s = server;
    if (!s)
        return;
    if (s->listen_watch)
        g_source_remove(s->listen_watch);
    s->listen_watch = 0;
    close(s->listen_fd);
    s->listen_fd = -1;
    unlink(s->path);
    qmp_conn_close(s);
    g_mutex_lock(&s->event_lock);
    if (s->event_source)
        g_source_remove(s->event_source);
    g_queue_clear_full(&s->events, g_free);
    g_mutex_unlock(&s->event_lock);
    g_mutex_clear(&s->event_lock);
    g_hash_table_destroy(s->fds);
    g_free(s->path);
    g_free(s);
}

/* Main thread: sends events other threads queued, oldest first. */
static void qmp_server_drain_events(VmmQmpServer *s)
{
    GQueue pending = G_QUEUE_INIT;
    g_mutex_lock(&s->event_lock);
    pending = s->events;
    g_queue_init(&s->events);
    if (s->event_source)
        g_source_remove(s->event_source);
    s->event_source = 0;
    g_mutex_unlock(&s->event_lock);
    char *text;
    while ((text = g_queue_pop_head(&pending))) {
        if (s->conn && s->conn->negotiated) {
            qmp_conn_queue_text(s->conn, text);
            qmp_conn_flush(s);
        }
        g_free(text);
    }
}

static gboolean qmp_server_events_idle(gpointer data)
{
    VmmQmpServer *s = data;
    g_mutex_lock(&s->event_lock);
    s->event_source = 0; /* this source ends by returning REMOVE */
    g_mutex_unlock(&s->event_lock);
    qmp_server_drain_events(s);
    return G_SOURCE_REMOVE;
}

void vmm_qmp_server_emit_event(VmmQmpServer *server, const char *name, JsonObject *data)
{
    VmmQmpServer *s = server;
    gint64 now = g_get_real_time();
    g_autoptr(JsonObject) ev = json_object_new();
    JsonObject *ts = json_object_new();
    json_object_set_int_member(ts, "seconds", now / G_USEC_PER_SEC);
    json_object_set_int_member(ts, "microseconds", now % G_USEC_PER_SEC);
    json_object_set_string_member(ev, "event", name);
    json_object_set_object_member(ev, "data", data ? data : json_object_new());
    json_object_set_object_member(ev, "timestamp", ts);
    g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(node, ev);
    char *text = json_to_string(node, FALSE);
    FERRY_DEBUG("event %s", text);

    g_mutex_lock(&s->event_lock);
    g_queue_push_tail(&s->events, text);
    if (!s->event_source && g_thread_self() != s->owner)
        s->event_source = g_idle_add(qmp_server_events_idle, s);
    g_mutex_unlock(&s->event_lock);
    if (g_thread_self() == s->owner)
        qmp_server_drain_events(s);
}

void vmm_qmp_server_flush(VmmQmpServer *server, int timeout_ms)
{
    VmmQmpServer *s = server;
    qmp_server_drain_events(s);
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    while (s->conn && s->conn->out->len) {
        gint64 left = (deadline - g_get_monotonic_time()) / 1000;
        if (left <= 0)
            break;
        struct pollfd p = {.fd = s->conn->fd, .events = POLLOUT};
        if (poll(&p, 1, (int)left) <= 0)
            break;
        qmp_conn_flush(s);
    }
}

int vmm_qmp_server_take_fd(VmmQmpServer *server, const char *fdname, GError **error)
{
    gpointer key = NULL, fd = NULL;
    if (!g_hash_table_steal_extended(server->fds, fdname, &key, &fd)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "File descriptor named '%s' has not been found", fdname);
        return -1;
    }
    g_free(key);
    return GPOINTER_TO_INT(fd) - 1;
}
