/* QMP client. A reader thread owns the receiving side: it splits the stream
 * into messages, hands replies to the waiting callers by id, delivers events,
 * and reports the end of the connection once. Senders take turns on the socket.
 *
 * In-band commands run one at a time on the VMM's main thread, which may be
 * held up for good: a QEMU whose post-copy migration paused stalls any
 * thread that touches a page still missing, a vCPU delivering an interrupt
 * included, and that one holds QEMU's big lock. QEMU keeps reading its
 * monitor while at most 8 in-band commands wait (with the oob capability;
 * 1 without), then stops reading it, out-of-band commands included. So at
 * most one in-band command of ours is ever unanswered by the VMM, also
 * after its caller gave up on it: the next caller waits for that answer
 * (within its own timeout) instead of adding to the queue, and the
 * out-of-band commands that resume such a migration (migrate-recover,
 * migrate-pause) always reach it. */
#include "driver/qmp.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "rpc/rpc-socket.h"
#include "util/error.h"
#include "util/json-splitter.h"
#include "util/thread.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "driver.qmp"
#define QMP_CLIENT_MAX_MESSAGE (16u << 20)
#define QMP_CLIENT_READ_SIZE 65536

typedef struct {
    gint64 id;
    JsonObject *reply; /* the whole reply message, set by the reader */
} QmpPending;

struct _QmpClient {
    gint refs; /* atomic: the owner, the reader thread, each call in progress */
    int fd;    /* closed with the last reference, so never reused under a thread */
    GThread *reader;
    QmpEventFunc on_event;
    QmpCloseFunc on_close;
    gpointer user_data;

    GMutex lock; /* everything below */
    GCond cond;
    GHashTable *pending; /* id -> QmpPending, owned by the waiting callers */
    gint64 next_id;
    gint64 capabilities_id;
    JsonObject *greeting;
    gboolean ready;     /* capabilities negotiated: callbacks may run */
    gboolean closed;    /* the connection ended */
    gboolean freeing;   /* qmp_client_free() called: no callback any more */
    gboolean self_free; /* ...from a callback, on the reader thread */
    gboolean writing;   /* a caller is sending; the others wait for it */
    gboolean oob;       /* the VMM took capability oob: exec-oob works */
    gint64 inband_id;   /* the in-band command the VMM has not answered yet (0: none) */
    char *inband_command;
    GError *close_error;
    GError *send_error; /* why a sender broke the stream, for the close report */
};

static void qmp_client_unref(QmpClient *c)
{
    if (!g_atomic_int_dec_and_test(&c->refs))
        return;
    close(c->fd);
    g_hash_table_destroy(c->pending);
    if (c->greeting)
        json_object_unref(c->greeting);
    g_clear_error(&c->close_error);
    g_clear_error(&c->send_error);
    g_free(c->inband_command);
    g_mutex_clear(&c->lock);
    g_cond_clear(&c->cond);
    g_free(c);
}

/* ---- reader thread ---- */

/* An event's {"seconds", "microseconds"} in microseconds, or 0 (unknown) when
 * it is out of range: QEMU sends -1/-1 when it has no clock, and a VMM's
 * value must never overflow the sum. */
static gint64 event_timestamp(JsonObject *t)
{
    gint64 sec = json_object_get_int_member_with_default(t, "seconds", 0);
    gint64 usec = json_object_get_int_member_with_default(t, "microseconds", 0);
    if (sec < 0 || sec > G_MAXINT64 / G_USEC_PER_SEC - 1 || usec < 0 || usec >= G_USEC_PER_SEC)
        return 0;
    return sec * G_USEC_PER_SEC + usec;
}

static void qmp_client_dispatch(QmpClient *c, const char *text, GError **error)
{
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) local = NULL;
    if (!json_parser_load_from_data(parser, text, -1, &local) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "the VMM sent a malformed QMP message: %s",
                    local ? local->message : "not a JSON object");
        return;
    }
    JsonObject *msg = json_node_get_object(json_parser_get_root(parser));

    if (json_object_has_member(msg, "QMP")) {
        JsonNode *qmp = json_object_get_member(msg, "QMP");
        g_mutex_lock(&c->lock);
        if (!c->greeting && JSON_NODE_HOLDS_OBJECT(qmp))
            c->greeting = json_object_ref(json_node_get_object(qmp));
        g_cond_broadcast(&c->cond);
        g_mutex_unlock(&c->lock);
        return;
    }

    if (json_object_has_member(msg, "event")) {
        const char *name = json_object_get_string_member_with_default(msg, "event", NULL);
        JsonNode *data = json_object_get_member(msg, "data");
        JsonNode *ts = json_object_get_member(msg, "timestamp");
        gint64 stamp = ts && JSON_NODE_HOLDS_OBJECT(ts) ? event_timestamp(json_node_get_object(ts))
                                                        : 0;
        g_mutex_lock(&c->lock);
        gboolean deliver = c->ready && !c->freeing && c->on_event && name;
        g_mutex_unlock(&c->lock);
        if (deliver) {
            g_autoptr(JsonObject) empty = NULL;
            JsonObject *d = data && JSON_NODE_HOLDS_OBJECT(data) ? json_node_get_object(data)
                                                                 : (empty = json_object_new());
            c->on_event(c, name, d, stamp, c->user_data);
        }
        return;
    }

    if (json_object_has_member(msg, "return") || json_object_has_member(msg, "error")) {
        JsonNode *id = json_object_get_member(msg, "id");
        if (!id || !JSON_NODE_HOLDS_VALUE(id) || json_node_get_value_type(id) != G_TYPE_INT64) {
            /* QEMU answers input it could not parse without an id; ours is always well formed. */
            FERRY_DEBUG("QMP reply without a usable id ignored: %s", text);
            return;
        }
        gint64 key = json_node_get_int(id);
        g_mutex_lock(&c->lock);
        if (key == c->inband_id) {
            c->inband_id = 0; /* answered, whether or not its caller still waits */
            g_cond_broadcast(&c->cond);
        }
        QmpPending *p = g_hash_table_lookup(c->pending, &key);
        if (p && !p->reply) {
            p->reply = json_object_ref(msg);
            if (key == c->capabilities_id && json_object_has_member(msg, "return"))
                c->ready = TRUE;
            g_cond_broadcast(&c->cond);
        } else {
            FERRY_DEBUG("QMP reply to command %" G_GINT64_FORMAT " that no longer waits", key);
        }
        g_mutex_unlock(&c->lock);
        return;
    }
    FERRY_DEBUG("unknown QMP message ignored: %s", text);
}

static gboolean qmp_client_stopping(QmpClient *c)
{
    g_mutex_lock(&c->lock);
    gboolean stop = c->freeing;
    g_mutex_unlock(&c->lock);
    return stop;
}

static gpointer qmp_client_reader(gpointer data)
{
    QmpClient *c = data;
    g_autoptr(FerryJsonSplitter) splitter = ferry_json_splitter_new(QMP_CLIENT_MAX_MESSAGE);
    g_autofree char *buf = g_malloc(QMP_CLIENT_READ_SIZE);
    GError *error = NULL;

    while (!error) {
        ssize_t n = recv(c->fd, buf, QMP_CLIENT_READ_SIZE, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            g_set_error(&error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "QMP connection closed by the VMM (end of file)");
            break;
        }
        if (n < 0) {
            ferry_set_error_errno(&error, errno, "QMP connection lost");
            break;
        }
        ferry_json_splitter_feed(splitter, buf, (gsize)n);
        while (!error && !qmp_client_stopping(c)) {
            g_autofree char *text = NULL;
            FerryJsonSplitResult r = ferry_json_splitter_next(splitter, &text);
            if (r == FERRY_JSON_SPLIT_NEED_MORE)
                break;
            if (r == FERRY_JSON_SPLIT_VALUE)
                qmp_client_dispatch(c, text, &error);
            else if (r == FERRY_JSON_SPLIT_GARBAGE)
                g_set_error(&error, FERRY_ERROR, FERRY_ERR_RPC,
                            "the VMM sent something that is not QMP: '%s'", text);
            else
                g_set_error(&error, FERRY_ERROR, FERRY_ERR_RPC,
                            "the VMM sent a QMP message larger than %u bytes",
                            QMP_CLIENT_MAX_MESSAGE);
        }
    }

    g_mutex_lock(&c->lock);
    if (c->send_error) {
        g_clear_error(&error);
        error = g_error_copy(c->send_error);
    }
    c->closed = TRUE;
    c->close_error = error;
    gboolean report = c->ready && !c->freeing && c->on_close;
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
    /* The peer must see the end too, even if it was a protocol error of ours. */
    shutdown(c->fd, SHUT_RDWR);
    FERRY_DEBUG("QMP connection ended: %s", error->message);
    if (report)
        c->on_close(c, error, c->user_data);

    g_mutex_lock(&c->lock);
    gboolean self_free = c->self_free;
    g_mutex_unlock(&c->lock);
    if (self_free)
        g_thread_unref(c->reader); /* nobody will join us */
    qmp_client_unref(c);
    return NULL;
}

/* ---- sending ---- */

/* Waits, up to deadline, for the socket to be ours to write on. */
static gboolean qmp_client_take_writer(QmpClient *c, gint64 deadline, GError **error)
{
    g_mutex_lock(&c->lock);
    while (c->writing && !c->closed) {
        if (deadline < 0)
            g_cond_wait(&c->cond, &c->lock);
        else if (!g_cond_wait_until(&c->cond, &c->lock, deadline))
            break;
    }
    gboolean busy = c->writing;
    c->writing = TRUE;
    g_mutex_unlock(&c->lock);
    if (busy)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                    "another QMP command is still being sent to the VMM");
    return !busy;
}

/* Writes text whole (with fd attached to its first byte), giving up at deadline.
 * Callers take turns, each waiting only up to its own deadline. A message cut
 * in the middle breaks the stream, so the connection is then closed. */
static gboolean qmp_client_send(QmpClient *c, const char *text, int fd, gint64 deadline,
                                GError **error)
{
    gsize len = strlen(text), done = 0;
    gboolean ok = TRUE;
    if (!qmp_client_take_writer(c, deadline, error))
        return FALSE;
    while (done < len) {
        struct iovec iov = {.iov_base = (char *)text + done, .iov_len = len - done};
        union {
            char space[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } control;
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        if (done == 0 && fd >= 0) {
            memset(&control, 0, sizeof(control));
            msg.msg_control = &control;
            msg.msg_controllen = sizeof(control);
            struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        }
        ssize_t n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            done += (gsize)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            ferry_set_error_errno(error, errno, "cannot send to the QMP socket");
            ok = FALSE;
            break;
        }
        gint64 left_ms = deadline < 0 ? -1 : (deadline - g_get_monotonic_time()) / 1000;
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        if (deadline >= 0 && (left_ms <= 0 || poll(&p, 1, (int)left_ms) == 0)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                        "the VMM did not read its QMP socket in time");
            ok = FALSE;
            break;
        }
        if (deadline < 0)
            poll(&p, 1, -1);
    }

    g_mutex_lock(&c->lock);
    c->writing = FALSE;
    g_cond_broadcast(&c->cond);
    if (!ok && done > 0 && !c->send_error)
        c->send_error =
            g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "QMP connection closed after a partial write: %s", (*error)->message);
    g_mutex_unlock(&c->lock);
    if (!ok && done > 0)
        shutdown(c->fd, SHUT_RDWR);
    return ok;
}

/* Until no in-band command of ours waits in the VMM (c->lock held), at most
 * to deadline: FALSE with why not. */
static gboolean qmp_client_wait_inband_locked(QmpClient *c, const char *command, gint64 deadline,
                                              GError **error)
{
    gint64 since = g_get_monotonic_time();
    while (c->inband_id && !c->closed && !c->freeing) {
        if (deadline < 0)
            g_cond_wait(&c->cond, &c->lock);
        else if (!g_cond_wait_until(&c->cond, &c->lock, deadline))
            break;
    }
    if (!c->inband_id || c->closed || c->freeing)
        return TRUE; /* a closed connection answers below */
    g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                "QMP command '%s' not sent: the VMM has not answered '%s' for %" G_GINT64_FORMAT
                " ms (its main thread is busy or blocked)",
                command, c->inband_command, (g_get_monotonic_time() - since) / 1000);
    return FALSE;
}

static JsonNode *qmp_client_call(QmpClient *c, const char *command, gboolean oob,
                                 JsonObject *arguments, int fd, int timeout_ms, GError **error)
{
    gint64 deadline = timeout_ms < 0 ? -1 : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    QmpPending p = {0};
    g_atomic_int_inc(&c->refs);

    g_mutex_lock(&c->lock);
    oob = oob && c->oob; /* a VMM without it runs the command in band */
    if (!c->closed && !c->freeing && !oob &&
        !qmp_client_wait_inband_locked(c, command, deadline, error)) {
        g_mutex_unlock(&c->lock);
        qmp_client_unref(c);
        return NULL;
    }
    if (c->closed || c->freeing) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "cannot run QMP command '%s': %s", command,
                    c->close_error ? c->close_error->message : "the QMP client is closing");
        g_mutex_unlock(&c->lock);
        qmp_client_unref(c);
        return NULL;
    }
    p.id = ++c->next_id;
    if (g_str_equal(command, "qmp_capabilities"))
        c->capabilities_id = p.id;
    if (!oob) {
        c->inband_id = p.id;
        g_free(c->inband_command);
        c->inband_command = g_strdup(command);
    }
    g_hash_table_insert(c->pending, &p.id, &p);
    g_mutex_unlock(&c->lock);

    g_autoptr(JsonObject) msg = json_object_new();
    json_object_set_string_member(msg, oob ? "exec-oob" : "execute", command);
    if (arguments)
        json_object_set_object_member(msg, "arguments", json_object_ref(arguments));
    json_object_set_int_member(msg, "id", p.id);
    g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(node, msg);
    g_autofree char *text = json_to_string(node, FALSE);
    g_autoptr(GError) send_error = NULL;
    gboolean sent = qmp_client_send(c, text, fd, deadline, &send_error);

    g_mutex_lock(&c->lock);
    if (!sent && c->inband_id == p.id) {
        c->inband_id = 0; /* never reached the VMM (or the connection closes) */
        g_cond_broadcast(&c->cond);
    }
    while (sent && !p.reply && !c->closed && !c->freeing) {
        if (deadline < 0)
            g_cond_wait(&c->cond, &c->lock);
        else if (!g_cond_wait_until(&c->cond, &c->lock, deadline))
            break;
    }
    g_hash_table_remove(c->pending, &p.id);
    if (!sent)
        g_set_error(error, FERRY_ERROR, send_error->code, "cannot run QMP command '%s': %s",
                    command, send_error->message);
    else if (!p.reply && (c->closed || c->freeing))
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "QMP command '%s' got no reply: %s", command,
                    c->close_error ? c->close_error->message : "the QMP client is closing");
    else if (!p.reply)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                    "QMP command '%s' got no reply within %d ms", command, timeout_ms);
    g_mutex_unlock(&c->lock);
    qmp_client_unref(c);
    if (!p.reply)
        return NULL;

    g_autoptr(JsonObject) reply = p.reply;
    JsonNode *ret = json_object_get_member(reply, "return");
    if (ret)
        return json_node_copy(ret);
    JsonNode *err = json_object_get_member(reply, "error");
    JsonObject *eo = err && JSON_NODE_HOLDS_OBJECT(err) ? json_node_get_object(err) : NULL;
    const char *klass = eo ? json_object_get_string_member_with_default(eo, "class", "") : "";
    const char *desc = eo ? json_object_get_string_member_with_default(eo, "desc", NULL) : NULL;
    g_set_error_literal(error, FERRY_ERROR,
                        g_str_equal(klass, "CommandNotFound") ? FERRY_ERR_OPERATION_UNSUPPORTED
                                                              : FERRY_ERR_OPERATION_FAILED,
                        desc ? desc : "the VMM reported an error without a description");
    return NULL;
}

JsonNode *qmp_client_execute(QmpClient *client, const char *command, JsonObject *arguments,
                             int timeout_ms, GError **error)
{
    return qmp_client_call(client, command, FALSE, arguments, -1, timeout_ms, error);
}

JsonNode *qmp_client_execute_oob(QmpClient *client, const char *command, JsonObject *arguments,
                                 int timeout_ms, GError **error)
{
    return qmp_client_call(client, command, TRUE, arguments, -1, timeout_ms, error);
}

gboolean qmp_client_has_oob(QmpClient *client)
{
    g_mutex_lock(&client->lock);
    gboolean oob = client->oob;
    g_mutex_unlock(&client->lock);
    return oob;
}

gboolean qmp_client_pass_fd(QmpClient *client, const char *fdname, int fd, int timeout_ms,
                            GError **error)
{
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "fdname", fdname);
    g_autoptr(JsonNode) ret = qmp_client_call(client, "getfd", FALSE, args, fd, timeout_ms, error);
    return ret != NULL;
}

/* ---- lifetime ---- */

static int qmp_client_open_socket(const char *path, gint64 deadline, GError **error)
{
    /* A VMM that is still starting has no socket yet, or no listener behind it. */
    int err = 0;
    int fd = rpc_socket_connect_unix_until(path, deadline, &err);
    if (fd < 0)
        ferry_set_error_errno(error, err, "cannot connect to QMP socket '%s'", path);
    return fd;
}

static QmpClient *qmp_client_handshake(int fd, const char *socket_path, int timeout_ms,
                                       QmpEventFunc on_event, QmpCloseFunc on_close,
                                       gpointer user_data, GError **error);

QmpClient *qmp_client_connect(const char *socket_path, int timeout_ms, QmpEventFunc on_event,
                              QmpCloseFunc on_close, gpointer user_data, GError **error)
{
    gint64 start = g_get_monotonic_time();
    int fd = qmp_client_open_socket(socket_path, start + (gint64)MAX(timeout_ms, 0) * 1000, error);
    if (fd < 0)
        return NULL;
    /* One budget for both stages. */
    int left_ms = (int)MAX(timeout_ms - (g_get_monotonic_time() - start) / 1000, 1);
    return qmp_client_handshake(fd, socket_path, left_ms, on_event, on_close, user_data, error);
}

QmpClient *qmp_client_connect_staged(const char *socket_path, int connect_timeout_ms,
                                     int handshake_timeout_ms, QmpEventFunc on_event,
                                     QmpCloseFunc on_close, gpointer user_data, GError **error)
{
    int fd = qmp_client_open_socket(
        socket_path, g_get_monotonic_time() + (gint64)MAX(connect_timeout_ms, 0) * 1000, error);
    if (fd < 0)
        return NULL;
    return qmp_client_handshake(fd, socket_path, MAX(handshake_timeout_ms, 1), on_event, on_close,
                                user_data, error);
}

/* Whether the greeting's capabilities list name (the greeting is set and
 * stays until the client is freed). */
static gboolean offers_capability(JsonObject *greeting, const char *name)
{
    JsonNode *caps = json_object_get_member(greeting, "capabilities");
    JsonArray *a = caps && JSON_NODE_HOLDS_ARRAY(caps) ? json_node_get_array(caps) : NULL;
    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonNode *n = json_array_get_element(a, i);
        if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING &&
            g_str_equal(json_node_get_string(n), name))
            return TRUE;
    }
    return FALSE;
}

/* Takes fd: reads the greeting and negotiates capabilities within timeout_ms. */
static QmpClient *qmp_client_handshake(int fd, const char *socket_path, int timeout_ms,
                                       QmpEventFunc on_event, QmpCloseFunc on_close,
                                       gpointer user_data, GError **error)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

    QmpClient *c = g_new0(QmpClient, 1);
    c->refs = 2; /* the owner and the reader thread */
    c->fd = fd;
    c->on_event = on_event;
    c->on_close = on_close;
    c->user_data = user_data;
    g_mutex_init(&c->lock);
    g_cond_init(&c->cond);
    c->pending = g_hash_table_new(g_int64_hash, g_int64_equal);
    c->reader = ferry_thread_try_new("qmp-reader", qmp_client_reader, c, error);
    if (!c->reader) {
        c->refs = 1; /* no reader took its reference */
        qmp_client_unref(c);
        return NULL;
    }

    g_mutex_lock(&c->lock);
    while (!c->greeting && !c->closed && g_cond_wait_until(&c->cond, &c->lock, deadline))
        ;
    gboolean greeted = c->greeting != NULL;
    if (!greeted)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                    "no QMP greeting on '%s' within %d ms%s%s", socket_path, timeout_ms,
                    c->close_error ? ": " : "", c->close_error ? c->close_error->message : "");
    g_mutex_unlock(&c->lock);
    if (!greeted) {
        qmp_client_free(c);
        return NULL;
    }

    gint64 left_ms = MAX((deadline - g_get_monotonic_time()) / 1000, 1);
    g_autoptr(GError) local = NULL;
    /* Out-of-band execution when the VMM offers it (QEMU does; ferry-vmm
     * does not): what resumes a paused post-copy migration needs it. */
    gboolean oob = offers_capability(c->greeting, "oob");
    g_autoptr(JsonObject) args = NULL;
    if (oob) {
        args = json_object_new();
        JsonArray *enable = json_array_new();
        json_array_add_string_element(enable, "oob");
        json_object_set_array_member(args, "enable", enable);
    }
    g_autoptr(JsonNode) ret = qmp_client_execute(c, "qmp_capabilities", args, (int)left_ms, &local);
    if (!ret) {
        g_set_error(error, FERRY_ERROR, local->code,
                    "QMP capabilities negotiation on '%s' failed: %s", socket_path, local->message);
        qmp_client_free(c);
        return NULL;
    }
    g_mutex_lock(&c->lock);
    c->oob = oob;
    g_mutex_unlock(&c->lock);
    return c;
}

gboolean qmp_client_is_connected(QmpClient *client)
{
    g_mutex_lock(&client->lock);
    gboolean connected = !client->closed;
    g_mutex_unlock(&client->lock);
    return connected;
}

JsonObject *qmp_client_get_greeting(QmpClient *client)
{
    g_mutex_lock(&client->lock);
    JsonObject *greeting = client->greeting;
    g_mutex_unlock(&client->lock);
    return greeting;
}

void qmp_client_free(QmpClient *client)
{
    QmpClient *c = client;
    if (!c)
        return;
    gboolean on_reader = g_thread_self() == c->reader;
    g_mutex_lock(&c->lock);
    c->freeing = TRUE;
    c->self_free = on_reader;
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
    /* Wakes the reader's recv(); the fd itself stays open until the last reference. */
    shutdown(c->fd, SHUT_RDWR);
    if (!on_reader)
        g_thread_join(c->reader);
    qmp_client_unref(c);
}
