/* The migration receiver: checks the sender's configuration, writes page data
 * straight into guest RAM after checking every range, and answers the final
 * COMPLETE only after its own digest of all RAM matched the sender's. Over
 * several connections, one thread per extra connection receives its pages;
 * COMPLETE is verified once every one of them ended (END). */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include "util/error.h"
#include "util/log.h"
#include "vmm/vmm-migration-private.h"
#include "vmm/vmm-wire.h"

#define FERRY_LOG_MODULE "vmm.migration"
#define RECV_SOCKET_BUFFER (4 << 20)
/* Page data is read in pieces this large, each hashed right after it landed,
 * while it is still in the CPU cache. */
#define RECV_WINDOW (1u << 20)

typedef struct {
    VmmMigration *m;
    guint index; /* the connection: 0 the main one, else as its CHANNEL hello says */
    struct Crew *crew;
    VmmStream st;
    guint8 *table;         /* range table of the current PAGES command */
    VmmPageHashes *hashes; /* of every page as last received: the final digest */
} Receiver;

static void receiver_stream_error(Receiver *r, GError **error)
{
    g_autofree char *size = ferry_format_size(r->st.received);
    g_autofree char *moved =
        r->index ? g_strdup_printf("%s on channel %u", size, r->index) : g_strdup(size);
    switch (r->st.state) {
    case VMM_STREAM_CANCELLED:
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                    "incoming migration cancelled after receiving %s", moved);
        break;
    case VMM_STREAM_CLOSED:
        g_set_error(
            error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
            "incoming migration failed: sender closed the connection after %s (end of file)",
            moved);
        break;
    default:
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "incoming migration failed: sender closed the connection after %s (%s)", moved,
                    g_strerror(r->st.err));
        break;
    }
}

static void receiver_reply(Receiver *r, guint16 type, const char *text)
{
    gsize len = text ? strlen(text) : 0;
    g_autofree guint8 *buf = g_malloc(VMM_WIRE_HEADER_SIZE + len);
    vmm_wire_encode_header(buf, type, len);
    if (len)
        memcpy(buf + VMM_WIRE_HEADER_SIZE, text, len);
    vmm_stream_write(&r->st, buf, VMM_WIRE_HEADER_SIZE + len);
}

/* Refuses the stream: the sender learns why (one try, never waiting on it), and
 * so does query-migrate here. */
G_GNUC_PRINTF(3, 4)
static gboolean receiver_refuse(Receiver *r, GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    guint8 hdr[VMM_WIRE_HEADER_SIZE];
    gsize len = strlen(text);
    vmm_wire_encode_header(hdr, VMM_WIRE_ERROR, len);
    struct iovec iov[2] = {{hdr, sizeof(hdr)}, {text, len}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    if (sendmsg(r->st.fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        FERRY_DEBUG("cannot tell the sender why: %s", g_strerror(errno));
    g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "incoming migration failed: %s",
                text);
    return FALSE;
}

static JsonObject *receiver_read_json(Receiver *r, guint64 length, const char *what, GError **error)
{
    if (length > VMM_WIRE_MAX_JSON) {
        receiver_refuse(r, error, "%s is %" G_GUINT64_FORMAT " bytes, more than the %u allowed",
                        what, length, VMM_WIRE_MAX_JSON);
        return NULL;
    }
    g_autofree char *text = g_malloc0(length + 1);
    if (!vmm_stream_read(&r->st, text, length)) {
        receiver_stream_error(r, error);
        return NULL;
    }
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) local = NULL;
    if (!json_parser_load_from_data(parser, text, (gssize)length, &local) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
        receiver_refuse(r, error, "%s is not a JSON object", what);
        return NULL;
    }
    return json_object_ref(json_node_get_object(json_parser_get_root(parser)));
}

static gboolean receiver_read_header(Receiver *r, VmmWireHeader *h, GError **error)
{
    guint8 hdr[VMM_WIRE_HEADER_SIZE];
    if (!vmm_stream_read(&r->st, hdr, sizeof(hdr))) {
        receiver_stream_error(r, error);
        return FALSE;
    }
    if (!vmm_wire_decode_header(hdr, h))
        return receiver_refuse(
            r, error,
            "the stream is not a ferry-vmm migration stream (bad magic after %" G_GUINT64_FORMAT
            " bytes)",
            r->st.received - VMM_WIRE_HEADER_SIZE);
    return TRUE;
}

static gint64 receiver_get_int(JsonObject *o, const char *name)
{
    JsonNode *n = json_object_get_member(o, name);
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64
               ? json_node_get_int(n)
               : -1;
}

static gboolean receiver_hello(Receiver *r, guint *channels, GError **error)
{
    VmmMigration *m = r->m;
    VmmWireHeader h;
    if (!receiver_read_header(r, &h, error))
        return FALSE;
    if (h.type != VMM_WIRE_HELLO)
        return receiver_refuse(r, error, "the stream does not start with a configuration (type %u)",
                               h.type);
    g_autoptr(JsonObject) hello = receiver_read_json(r, h.length, "the configuration", error);
    if (!hello)
        return FALSE;
    gint64 protocol = receiver_get_int(hello, "protocol");
    gint64 memory = receiver_get_int(hello, "memory");
    gint64 vcpus = receiver_get_int(hello, "vcpus");
    gint64 page_size = receiver_get_int(hello, "page-size");
    if (protocol != VMM_WIRE_PROTOCOL)
        return receiver_refuse(r, error,
                               "unsupported migration protocol version %" G_GINT64_FORMAT
                               " (this VMM speaks %d)",
                               protocol, VMM_WIRE_PROTOCOL);
    if (page_size != VMM_PAGE_SIZE)
        return receiver_refuse(r, error,
                               "page size mismatch: source %" G_GINT64_FORMAT ", destination %u",
                               page_size, VMM_PAGE_SIZE);
    if (memory != (gint64)m->mem->size)
        return receiver_refuse(r, error,
                               "guest memory size mismatch: source %" G_GINT64_FORMAT
                               " bytes, destination %" G_GUINT64_FORMAT " bytes",
                               memory, m->mem->size);
    if (vcpus != (gint64)m->vcpus)
        return receiver_refuse(r, error,
                               "vCPU count mismatch: source %" G_GINT64_FORMAT ", destination %u",
                               vcpus, m->vcpus);
    gint64 n = json_object_has_member(hello, "channels") ? receiver_get_int(hello, "channels") : 1;
    if (n < 1 || n > VMM_WIRE_MAX_CHANNELS)
        return receiver_refuse(r, error,
                               "the sender announces %" G_GINT64_FORMAT
                               " connections (1 to %d allowed)",
                               n, VMM_WIRE_MAX_CHANNELS);
    *channels = (guint)n;
    receiver_reply(r, VMM_WIRE_OK, NULL);
    return TRUE;
}

static gboolean receiver_read_window(Receiver *r, struct iovec *win, int n)
{
    if (!vmm_stream_readv(&r->st, win, n))
        return FALSE;
    vmm_page_hashes_update_iov(r->hashes, win, n);
    return TRUE;
}

/* Reads the page data of the checked ranges in the table straight into their
 * pages, window by window, and hashes each window as it lands. */
static gboolean receiver_read_pages(Receiver *r, guint32 nranges)
{
    guint8 *base = r->m->mem->base;
    struct iovec win[RECV_WINDOW / VMM_PAGE_SIZE];
    int n = 0;
    gsize bytes = 0;
    for (guint32 i = 0; i < nranges; i++) {
        guint8 *p = base + vmm_wire_get_u64(r->table + i * VMM_WIRE_RANGE_SIZE) * VMM_PAGE_SIZE;
        gsize left = vmm_wire_get_u64(r->table + i * VMM_WIRE_RANGE_SIZE + 8) * VMM_PAGE_SIZE;
        while (left) {
            gsize take = MIN(left, RECV_WINDOW - bytes);
            win[n].iov_base = p;
            win[n].iov_len = take;
            n++;
            bytes += take;
            p += take;
            left -= take;
            if (bytes == RECV_WINDOW) {
                if (!receiver_read_window(r, win, n))
                    return FALSE;
                n = 0;
                bytes = 0;
            }
        }
    }
    return n == 0 || receiver_read_window(r, win, n);
}

/* Ranges are checked against guest RAM before a byte of data is read, and the
 * data goes straight to its pages. */
static gboolean receiver_pages(Receiver *r, guint64 length, GError **error)
{
    VmmMigration *m = r->m;
    guint8 prefix[VMM_WIRE_PAGES_PREFIX];
    if (length < sizeof(prefix))
        return receiver_refuse(
            r, error, "page data command of %" G_GUINT64_FORMAT " bytes is too short", length);
    if (!vmm_stream_read(&r->st, prefix, sizeof(prefix))) {
        receiver_stream_error(r, error);
        return FALSE;
    }
    guint32 round = vmm_wire_get_u32(prefix);
    guint32 nranges = vmm_wire_get_u32(prefix + 4);
    if (nranges == 0 || nranges > VMM_WIRE_MAX_RANGES)
        return receiver_refuse(r, error, "page data command with %u ranges (1 to %u allowed)",
                               nranges, VMM_WIRE_MAX_RANGES);
    gsize table_len = (gsize)nranges * VMM_WIRE_RANGE_SIZE;
    if (!vmm_stream_read(&r->st, r->table, table_len)) {
        receiver_stream_error(r, error);
        return FALSE;
    }
    guint64 pages = 0;
    for (guint32 i = 0; i < nranges; i++) {
        guint64 first = vmm_wire_get_u64(r->table + i * VMM_WIRE_RANGE_SIZE);
        guint64 count = vmm_wire_get_u64(r->table + i * VMM_WIRE_RANGE_SIZE + 8);
        if (count == 0 || first >= m->mem->npages || count > m->mem->npages - first)
            return receiver_refuse(r, error,
                                   "page range %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
                                   " is outside guest memory (%" G_GUINT64_FORMAT " pages)",
                                   first, count, m->mem->npages);
        pages += count;
    }
    if (pages > VMM_WIRE_MAX_PAGE_DATA / VMM_PAGE_SIZE ||
        length != sizeof(prefix) + table_len + pages * VMM_PAGE_SIZE)
        return receiver_refuse(r, error,
                               "page data command length %" G_GUINT64_FORMAT
                               " does not match its %" G_GUINT64_FORMAT " pages",
                               length, pages);
    if (!receiver_read_pages(r, nranges)) {
        receiver_stream_error(r, error);
        return FALSE;
    }
    g_mutex_lock(&m->lock);
    m->pages += pages;
    m->rounds = MAX(m->rounds, round);
    g_mutex_unlock(&m->lock);
    receiver_reply(r, VMM_WIRE_OK, NULL);
    return TRUE;
}

static gboolean receiver_complete(Receiver *r, guint64 length, GError **error)
{
    VmmMigration *m = r->m;
    g_autoptr(JsonObject) complete = receiver_read_json(r, length, "the final state", error);
    if (!complete)
        return FALSE;
    const char *sent = json_object_get_string_member_with_default(complete, "digest", NULL);
    JsonNode *device = json_object_get_member(complete, "device");
    if (!sent || !device || !JSON_NODE_HOLDS_OBJECT(device))
        return receiver_refuse(r, error, "the final state lacks the digest or the device state");

    /* Every page as it arrived last; pages never sent are hashed now. */
    VmmDigest digest;
    vmm_page_hashes_digest(r->hashes, &digest);
    g_autofree char *received = vmm_digest_to_string(&digest);
    if (g_strcmp0(sent, received) != 0)
        return receiver_refuse(r, error,
                               "guest memory digest mismatch after migration: sent %s, received %s",
                               sent, received);

    g_mutex_lock(&m->lock);
    m->digest = g_strdup(received);
    m->rounds = MAX(m->rounds, (guint64)MAX(receiver_get_int(complete, "rounds"), 0));
    m->dirty_pages_rate = (guint64)MAX(receiver_get_int(complete, "dirty-rate"), 0) / VMM_PAGE_SIZE;
    m->device = json_object_ref(json_node_get_object(device));
    g_mutex_unlock(&m->lock);
    receiver_reply(r, VMM_WIRE_OK, NULL);
    if (r->st.state != VMM_STREAM_OK) {
        receiver_stream_error(r, error);
        return FALSE;
    }
    return TRUE;
}

static int receiver_accept(VmmMigration *m, GError **error)
{
    struct pollfd p[2] = {
        {.fd = m->cancel_fd, .events = POLLIN},
        {.fd = m->listen_fd, .events = POLLIN},
    };
    for (;;) {
        if (poll(p, 2, -1) < 0 && errno != EINTR) {
            ferry_set_error_errno(error, errno, "incoming migration failed: poll");
            return -1;
        }
        if (p[0].revents & POLLIN) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                        "incoming migration cancelled before the sender connected");
            return -1;
        }
        int fd = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
            ferry_set_error_errno(error, errno, "incoming migration failed: accept");
            return -1;
        }
    }
}

static void receiver_close_listener(VmmMigration *m)
{
    g_mutex_lock(&m->lock);
    if (m->listen_fd >= 0)
        close(m->listen_fd);
    m->listen_fd = -1;
    if (m->listen_path)
        unlink(m->listen_path);
    g_mutex_unlock(&m->lock);
}

/* ---- several connections ---- */

typedef struct Crew {
    VmmMigration *m;
    guint n;           /* connections */
    Receiver *rx;      /* [n]: [0] the main connection */
    GThread **threads; /* [n]: [i] receives on extra connection i */
    guint64 seen;      /* CHANNEL indexes already claimed (bits, under lock) */
    GMutex lock;
    GError *error;     /* the first failure of any connection */
} Crew;

static void crew_fail(Crew *c, GError *err)
{
    vmm_migration_fail_first(c->m, &c->lock, NULL, &c->error, err);
}

/* An extra connection: CHANNEL (its index, claimed once), then PAGES until
 * END. */
static gboolean receiver_channel_run(Receiver *r, GError **error)
{
    Crew *c = r->crew;
    VmmWireHeader h;
    if (!receiver_read_header(r, &h, error))
        return FALSE;
    if (h.type != VMM_WIRE_CHANNEL)
        return receiver_refuse(r, error,
                               "an extra connection does not start with its channel (type %u)",
                               h.type);
    g_autoptr(JsonObject) hello = receiver_read_json(r, h.length, "the channel's hello", error);
    if (!hello)
        return FALSE;
    gint64 index = receiver_get_int(hello, "channel");
    if (index < 1 || index >= (gint64)c->n)
        return receiver_refuse(r, error, "channel %" G_GINT64_FORMAT " is not one of 1..%u", index,
                               c->n - 1);
    g_mutex_lock(&c->lock);
    gboolean again = (c->seen >> index) & 1;
    c->seen |= 1ULL << index;
    g_mutex_unlock(&c->lock);
    if (again)
        return receiver_refuse(r, error, "channel %" G_GINT64_FORMAT " connected twice", index);
    r->index = (guint)index;
    receiver_reply(r, VMM_WIRE_OK, NULL);
    for (;;) {
        if (!receiver_read_header(r, &h, error))
            return FALSE;
        switch (h.type) {
        case VMM_WIRE_PAGES:
            if (!receiver_pages(r, h.length, error))
                return FALSE;
            break;
        case VMM_WIRE_END:
            receiver_reply(r, VMM_WIRE_OK, NULL);
            return TRUE;
        default:
            return receiver_refuse(r, error, "unexpected command type %u on channel %u", h.type,
                                   r->index);
        }
        if (r->st.state != VMM_STREAM_OK) {
            receiver_stream_error(r, error);
            return FALSE;
        }
    }
}

static gpointer receiver_channel_thread(gpointer data)
{
    Receiver *r = data;
    GError *err = NULL;
    if (!receiver_channel_run(r, &err))
        crew_fail(r->crew, err);
    return NULL;
}

/* After HELLO announced n connections: the n - 1 extra ones, given or
 * accepted on the listener, each on a thread of its own. */
static gboolean receiver_start_channels(Receiver *r, guint n, GError **error)
{
    Crew *c = r->crew;
    VmmMigration *m = r->m;
    if (n < 1 || n > VMM_WIRE_MAX_CHANNELS)
        return receiver_refuse(r, error, "the sender announces %u connections (1 to %d allowed)",
                               n, VMM_WIRE_MAX_CHANNELS);
    g_mutex_lock(&m->lock);
    gboolean listening = m->listen_fd >= 0;
    guint given = m->extra_fds->len;
    g_mutex_unlock(&m->lock);
    if (!listening && given != n - 1)
        return receiver_refuse(r, error,
                               "the sender opens %u connections, this VMM was given %u", n,
                               given + 1);
    for (guint i = 1; listening && i < n; i++) {
        int fd = receiver_accept(m, error);
        if (fd < 0)
            return FALSE;
        g_mutex_lock(&m->lock);
        g_array_append_val(m->extra_fds, fd);
        g_mutex_unlock(&m->lock);
    }
    if (listening)
        receiver_close_listener(m);
    c->n = n;
    c->threads = g_new0(GThread *, n);
    int size = RECV_SOCKET_BUFFER;
    for (guint i = 1; i < n; i++) {
        Receiver *x = &c->rx[i];
        *x = (Receiver){.m = m, .index = i, .crew = c, .hashes = c->rx[0].hashes};
        x->table = g_malloc((gsize)VMM_WIRE_MAX_RANGES * VMM_WIRE_RANGE_SIZE);
        g_mutex_lock(&m->lock);
        int fd = g_array_index(m->extra_fds, int, i - 1);
        g_mutex_unlock(&m->lock);
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
        vmm_stream_init(&x->st, fd, m->cancel_fd, NULL);
        vmm_migration_add_stream(m, &x->st);
    }
    g_mutex_lock(&m->lock);
    m->channels = n;
    g_mutex_unlock(&m->lock);
    for (guint i = 1; i < n; i++)
        c->threads[i] = g_thread_new("vmm-migrate-in+", receiver_channel_thread, &c->rx[i]);
    return TRUE;
}

/* Until every extra connection ended: FALSE with the first failure. */
static gboolean receiver_join_channels(Crew *c, GError **error)
{
    for (guint i = 1; i < c->n; i++)
        if (c->threads && c->threads[i])
            g_thread_join(g_steal_pointer(&c->threads[i]));
    g_mutex_lock(&c->lock);
    gboolean ok = c->error == NULL;
    if (!ok)
        g_propagate_error(error, g_error_copy(c->error));
    g_mutex_unlock(&c->lock);
    return ok;
}

static gboolean receiver_run(Receiver *r, GError **error)
{
    VmmMigration *m = r->m;
    g_mutex_lock(&m->lock);
    int fd = m->fd;
    gboolean listening = m->listen_fd >= 0;
    g_mutex_unlock(&m->lock);
    if (listening) {
        fd = receiver_accept(m, error);
        if (fd < 0)
            return FALSE;
    }
    int size = RECV_SOCKET_BUFFER;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    vmm_stream_init(&r->st, fd, m->cancel_fd, NULL);
    vmm_migration_set_fd(m, fd, &r->st);

    guint channels = 1;
    if (!receiver_hello(r, &channels, error))
        return FALSE;
    /* The listener and its path go once every connection came. */
    if (channels > 1 || m->extra_fds->len) {
        if (!receiver_start_channels(r, channels, error))
            return FALSE;
    } else if (listening) {
        receiver_close_listener(m);
    }
    vmm_migration_set_active(m);
    for (;;) {
        VmmWireHeader h;
        if (!receiver_read_header(r, &h, error))
            return FALSE;
        switch (h.type) {
        case VMM_WIRE_PAGES:
            if (!receiver_pages(r, h.length, error))
                return FALSE;
            break;
        case VMM_WIRE_COMPLETE:
            /* Every connection's pages landed before the digest is compared. */
            if (!receiver_join_channels(r->crew, error))
                return FALSE;
            return receiver_complete(r, h.length, error);
        default:
            return receiver_refuse(r, error, "unexpected command type %u", h.type);
        }
        if (r->st.state != VMM_STREAM_OK) {
            receiver_stream_error(r, error);
            return FALSE;
        }
    }
}

gboolean vmm_migration_receive(VmmMigration *m, GError **error)
{
    Crew c = {.m = m, .n = 1};
    g_mutex_init(&c.lock);
    /* Room for every connection at once: receivers are never moved. */
    c.rx = g_new0(Receiver, VMM_WIRE_MAX_CHANNELS);
    Receiver *r = &c.rx[0];
    r->m = m;
    r->crew = &c;
    r->table = g_malloc((gsize)VMM_WIRE_MAX_RANGES * VMM_WIRE_RANGE_SIZE);
    r->hashes = vmm_page_hashes_new(m->mem);
    GError *err = NULL;
    gboolean ok = receiver_run(r, &err);
    if (!ok)
        crew_fail(&c, err); /* the others stop: their sockets are shut down */
    g_autoptr(GError) ignored = NULL;
    receiver_join_channels(&c, &ignored);
    /* The first failure of any connection is the cause. */
    if (!ok)
        g_propagate_error(error, g_error_copy(c.error));
    vmm_migration_stream_done(m);
    vmm_page_hashes_free(c.rx[0].hashes);
    for (guint i = 0; i < c.n; i++)
        g_free(c.rx[i].table);
    g_free(c.rx);
    g_free(c.threads);
    g_clear_error(&c.error);
    g_mutex_clear(&c.lock);
    return ok;
}
