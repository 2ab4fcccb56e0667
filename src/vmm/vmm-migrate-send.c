/* The migration sender: HELLO, pre-copy rounds of dirty pages, stop-and-copy,
 * COMPLETE with the digest of all guest RAM. Every command waits for the
 * receiver's OK before the next one goes out. */
#include <errno.h>
#include <sys/socket.h>

#include "util/error.h"
#include "util/log.h"
#include "vmm/vmm-migration-private.h"
#include "vmm/vmm-socket.h"
#include "vmm/vmm-wire.h"

#define FERRY_LOG_MODULE "vmm.migration"
#define SEND_SOCKET_BUFFER (4 << 20)
/* Rounds that moved less than this say little about throughput. */
#define SEND_MIN_SAMPLE (256u << 10)
#define SEND_MAX_ERROR_TEXT 4096
/* Page data goes out in pieces this large, each hashed just before it is
 * handed to the socket, so that it is still in the CPU cache when the kernel
 * copies it into the receiver. */
#define SEND_WINDOW (1u << 20)

typedef struct {
    VmmMigration *m;
    VmmStream st;
    GByteArray *cmd;   /* header + round + range table of the command being built */
    struct iovec *iov; /* [0] = cmd, then one per range, pointing into guest RAM */
    guint nranges;
    guint64 npages;        /* pages in the command being built */
    guint64 round_pages;   /* pages in the current round */
    VmmPageHashes *hashes; /* of every page as last sent: the final digest */
} Sender;

static void sender_stream_error(Sender *s, GError **error)
{
    g_autofree char *moved = ferry_format_size(s->st.sent);
    switch (s->st.state) {
    case VMM_STREAM_CANCELLED:
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_ABORTED,
                    "migration cancelled after sending %s", moved);
        break;
    case VMM_STREAM_CLOSED:
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "migration failed: receiver closed the connection after %s (end of file)",
                    moved);
        break;
    default:
        if (s->st.err == EPIPE || s->st.err == ECONNRESET)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "migration failed: receiver closed the connection after %s (%s)", moved,
                        g_strerror(s->st.err));
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "migration failed: I/O error on the migration stream after %s: %s", moved,
                        g_strerror(s->st.err));
        break;
    }
}

/* A receiver that refuses a command sends ERROR and closes before reading the
 * rest, so our write fails; its reason may still sit in our receive buffer. */
static gboolean sender_salvage_refusal(Sender *s, GError **error)
{
    guint8 hdr[VMM_WIRE_HEADER_SIZE];
    VmmWireHeader h;
    if (s->st.state == VMM_STREAM_CANCELLED ||
        vmm_stream_read_pending(&s->st, hdr, sizeof(hdr)) != sizeof(hdr) ||
        !vmm_wire_decode_header(hdr, &h) || h.type != VMM_WIRE_ERROR ||
        h.length > SEND_MAX_ERROR_TEXT)
        return FALSE;
    g_autofree char *text = g_malloc0(h.length + 1);
    if (vmm_stream_read_pending(&s->st, text, h.length) != h.length)
        return FALSE;
    g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                "migration failed: destination reported: %s", text);
    return TRUE;
}

static gboolean sender_wait_reply(Sender *s, const char *what, GError **error)
{
    guint8 hdr[VMM_WIRE_HEADER_SIZE];
    VmmWireHeader h;
    if (!vmm_stream_read(&s->st, hdr, sizeof(hdr))) {
        sender_stream_error(s, error);
        return FALSE;
    }
    if (!vmm_wire_decode_header(hdr, &h) || (h.type != VMM_WIRE_OK && h.type != VMM_WIRE_ERROR) ||
        h.length > SEND_MAX_ERROR_TEXT) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "migration failed: the reply to %s is not a ferry-vmm migration reply", what);
        return FALSE;
    }
    g_autofree char *text = g_malloc0(h.length + 1);
    if (h.length && !vmm_stream_read(&s->st, text, h.length)) {
        sender_stream_error(s, error);
        return FALSE;
    }
    if (h.type == VMM_WIRE_ERROR) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "migration failed: destination reported: %s", text);
        return FALSE;
    }
    return TRUE;
}

/* After a command went out (written) or failed to: its answer, or why not. */
static gboolean sender_sent(Sender *s, gboolean written, const char *what, GError **error)
{
    if (!written) {
        if (!sender_salvage_refusal(s, error))
            sender_stream_error(s, error);
        return FALSE;
    }
    return sender_wait_reply(s, what, error);
}

/* Sends one command (iov[0] must start with room for the header) and waits for its answer. */
static gboolean sender_command(Sender *s, guint16 type, struct iovec *iov, int iovcnt,
                               const char *what, GError **error)
{
    guint64 len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    vmm_wire_encode_header(iov[0].iov_base, type, len - VMM_WIRE_HEADER_SIZE);
    return sender_sent(s, vmm_stream_writev(&s->st, iov, iovcnt), what, error);
}

static gboolean sender_json_command(Sender *s, guint16 type, JsonObject *obj, const char *what,
                                    GError **error)
{
    g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(node, obj);
    g_autofree char *text = json_to_string(node, FALSE);
    gsize len = strlen(text);
    g_autofree guint8 *buf = g_malloc(VMM_WIRE_HEADER_SIZE + len);
    memcpy(buf + VMM_WIRE_HEADER_SIZE, text, len);
    struct iovec iov = {.iov_base = buf, .iov_len = VMM_WIRE_HEADER_SIZE + len};
    return sender_command(s, type, &iov, 1, what, error);
}

/* Hashes the page data in win[first_data..n) and writes all of win. */
static gboolean sender_write_window(Sender *s, const struct iovec *win, int n, int first_data)
{
    vmm_page_hashes_update_iov(s->hashes, win + first_data, n - first_data);
    /* The header and range table by copy: their buffer is reused. */
    if (first_data && !vmm_stream_writev(&s->st, win, first_data))
        return FALSE;
    return vmm_stream_write_pages(&s->st, win + first_data, n - first_data);
}

/* Writes the command built in cmd and iov[1..nranges]: the header and range
 * table, then the page data window by window, each window hashed first. */
static gboolean sender_write_pages(Sender *s)
{
    struct iovec win[SEND_WINDOW / VMM_PAGE_SIZE + 1];
    int n = 0, first_data = 1; /* win[0] is the header and range table */
    gsize bytes = 0;
    win[n++] = s->iov[0];
    for (guint i = 1; i <= s->nranges; i++) {
        guint8 *p = s->iov[i].iov_base;
        gsize left = s->iov[i].iov_len;
        while (left) {
            gsize take = MIN(left, SEND_WINDOW - bytes);
            win[n].iov_base = p;
            win[n].iov_len = take;
            n++;
            bytes += take;
            p += take;
            left -= take;
            if (bytes == SEND_WINDOW) {
                if (!sender_write_window(s, win, n, first_data))
                    return FALSE;
                n = 0;
                first_data = 0;
                bytes = 0;
            }
        }
    }
    return n == 0 || sender_write_window(s, win, n, first_data);
}

static gboolean sender_flush_pages(Sender *s, guint round, GError **error)
{
    if (s->nranges == 0)
        return TRUE;
    g_byte_array_set_size(s->cmd, VMM_WIRE_HEADER_SIZE + VMM_WIRE_PAGES_PREFIX);
    vmm_wire_put_u32(s->cmd->data + VMM_WIRE_HEADER_SIZE, round);
    vmm_wire_put_u32(s->cmd->data + VMM_WIRE_HEADER_SIZE + 4, s->nranges);
    for (guint i = 0; i < s->nranges; i++) {
        guint8 range[VMM_WIRE_RANGE_SIZE];
        guint64 first =
            (guint64)((guint8 *)s->iov[i + 1].iov_base - s->m->mem->base) / VMM_PAGE_SIZE;
        vmm_wire_put_u64(range, first);
        vmm_wire_put_u64(range + 8, s->iov[i + 1].iov_len / VMM_PAGE_SIZE);
        g_byte_array_append(s->cmd, range, sizeof(range));
    }
    s->iov[0].iov_base = s->cmd->data;
    s->iov[0].iov_len = s->cmd->len;
    vmm_wire_encode_header(s->cmd->data, VMM_WIRE_PAGES,
                           s->cmd->len - VMM_WIRE_HEADER_SIZE + s->npages * VMM_PAGE_SIZE);
    if (!sender_sent(s, sender_write_pages(s), "page data", error))
        return FALSE;

    g_mutex_lock(&s->m->lock);
    s->m->pages += s->npages;
    g_mutex_unlock(&s->m->lock);
    s->round_pages += s->npages;
    s->nranges = 0;
    s->npages = 0;
    return TRUE;
}

/* Takes the dirty bits word by word and ships the pages in commands of at most
 * VMM_WIRE_MAX_PAGE_DATA bytes, contiguous pages merged into one range. */
static gboolean sender_round(Sender *s, guint round, GError **error)
{
    VmmMemory *mem = s->m->mem;
    s->round_pages = 0;
    for (guint64 w = 0; w < mem->nwords; w++) {
        guint64 bits = vmm_memory_dirty_take_word(mem, w);
        while (bits) {
            guint64 page = w * 64 + (guint64)__builtin_ctzll(bits);
            bits &= bits - 1;
            struct iovec *last = s->nranges ? &s->iov[s->nranges] : NULL;
            guint8 *addr = mem->base + page * VMM_PAGE_SIZE;
            if (last && (guint8 *)last->iov_base + last->iov_len == addr) {
                last->iov_len += VMM_PAGE_SIZE;
            } else {
                s->nranges++;
                s->iov[s->nranges].iov_base = addr;
                s->iov[s->nranges].iov_len = VMM_PAGE_SIZE;
            }
            s->npages++;
            if (s->nranges == VMM_WIRE_MAX_RANGES ||
                s->npages * VMM_PAGE_SIZE >= VMM_WIRE_MAX_PAGE_DATA) {
                if (!sender_flush_pages(s, round, error))
                    return FALSE;
            }
        }
    }
    return sender_flush_pages(s, round, error);
}

static void sender_emit_pass(VmmMigration *m, guint round)
{
    JsonObject *data = json_object_new();
    json_object_set_int_member(data, "pass", round);
    vmm_migration_emit(m, "MIGRATION_PASS", data);
}

static int sender_open(VmmMigration *m, GError **error)
{
    g_mutex_lock(&m->lock);
    int fd = m->fd;
    g_autofree char *path = g_strdup(m->connect_path);
    g_mutex_unlock(&m->lock);
    if (fd >= 0)
        return fd;
    g_autoptr(GError) local = NULL;
    fd = vmm_socket_connect_unix(path, m->cancel_fd, &local);
    if (fd < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "migration failed: %s",
                    local->message);
        return -1;
    }
    return fd;
}

static gboolean sender_run(Sender *s, GError **error)
{
    VmmMigration *m = s->m;
    VmmMemory *mem = m->mem;
    int fd = sender_open(m, error);
    if (fd < 0)
        return FALSE;
    int size = SEND_SOCKET_BUFFER;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    vmm_stream_init(&s->st, fd, m->cancel_fd, &m->max_bandwidth);
    vmm_migration_set_fd(m, fd, &s->st);

    JsonObject *hello = json_object_new();
    json_object_set_int_member(hello, "protocol", VMM_WIRE_PROTOCOL);
    json_object_set_int_member(hello, "memory", (gint64)mem->size);
    json_object_set_int_member(hello, "vcpus", m->vcpus);
    json_object_set_int_member(hello, "page-size", VMM_PAGE_SIZE);
    if (!sender_json_command(s, VMM_WIRE_HELLO, hello, "the configuration", error))
        return FALSE;
    vmm_migration_set_active(m);

    /* Pre-copy: round 1 is all of RAM, each later round what the guest dirtied
     * meanwhile, until the rest fits in the downtime limit. */
    vmm_memory_dirty_set_all(mem);
    double throughput = 0; /* bytes/s */
    guint round = 0;
    for (;;) {
        round++;
        sender_emit_pass(m, round);
        gint64 t0 = g_get_monotonic_time();
        guint64 sent0 = s->st.sent;
        if (!sender_round(s, round, error))
            return FALSE;
        gint64 dt = MAX(g_get_monotonic_time() - t0, 1);
        guint64 bytes = s->st.sent - sent0;
        if (bytes >= SEND_MIN_SAMPLE || throughput == 0)
            throughput = MAX((double)bytes * G_USEC_PER_SEC / dt, 1.0);
        guint64 remaining = vmm_memory_dirty_count(mem) * VMM_PAGE_SIZE;
        gint64 expected_ms = (gint64)((double)remaining * 1000 / throughput);
        gint64 limit_ms = __atomic_load_n(&m->downtime_limit, __ATOMIC_RELAXED);

        g_mutex_lock(&m->lock);
        m->rounds = round;
        m->dirty_pages_rate = (guint64)((double)remaining / VMM_PAGE_SIZE * G_USEC_PER_SEC / dt);
        m->expected_downtime_ms = expected_ms;
        g_mutex_unlock(&m->lock);
        FERRY_DEBUG("round %u: %" G_GUINT64_FORMAT " pages in %" G_GINT64_FORMAT
                    " us, %" G_GUINT64_FORMAT " bytes dirty, expected downtime %" G_GINT64_FORMAT
                    " ms",
                    round, s->round_pages, dt, remaining, expected_ms);
        if (expected_ms <= limit_ms || round >= VMM_MIGRATION_MAX_ROUNDS)
            break;
    }

    /* Stop-and-copy: from here on the guest is paused until the receiver answers. */
    gint64 stop_us = g_get_monotonic_time();
    gboolean was_running = FALSE;
    JsonObject *device = m->hooks.stop_vm(m->user_data, &was_running);
    g_mutex_lock(&m->lock);
    m->stop_us = stop_us;
    m->vm_was_running = was_running;
    g_mutex_unlock(&m->lock);

    round++;
    sender_emit_pass(m, round);
    if (!sender_round(s, round, error)) {
        json_object_unref(device);
        return FALSE;
    }
    /* Every page was hashed when it was last sent, and the guest is stopped. */
    VmmDigest digest;
    vmm_page_hashes_digest(s->hashes, &digest);
    g_autofree char *hex = vmm_digest_to_string(&digest);
    g_mutex_lock(&m->lock);
    m->rounds = round;
    m->digest = g_strdup(hex);
    g_mutex_unlock(&m->lock);

    JsonObject *complete = json_object_new();
    json_object_set_string_member(complete, "digest", hex);
    json_object_set_int_member(complete, "rounds", round);
    json_object_set_int_member(complete, "dirty-rate",
                               (gint64)(m->dirty_pages_rate * VMM_PAGE_SIZE));
    json_object_set_object_member(complete, "device", device);
    if (!sender_json_command(s, VMM_WIRE_COMPLETE, complete, "the final state", error))
        return FALSE;

    g_mutex_lock(&m->lock);
    m->downtime_ms = (g_get_monotonic_time() - stop_us) / 1000;
    g_mutex_unlock(&m->lock);
    return TRUE;
}

gboolean vmm_migration_send(VmmMigration *m, GError **error)
{
    Sender s = {.m = m};
    s.cmd = g_byte_array_sized_new(VMM_WIRE_HEADER_SIZE + VMM_WIRE_PAGES_PREFIX +
                                   VMM_WIRE_MAX_RANGES * VMM_WIRE_RANGE_SIZE);
    s.iov = g_new0(struct iovec, VMM_WIRE_MAX_RANGES + 1);
    s.hashes = vmm_page_hashes_new(m->mem);
    vmm_stream_init(&s.st, -1, -1, NULL); /* for vmm_stream_clear, should we fail first */
    gboolean ok = sender_run(&s, error);
    vmm_migration_stream_done(m);
    vmm_page_hashes_free(s.hashes);
    vmm_stream_clear(&s.st);
    g_byte_array_unref(s.cmd);
    g_free(s.iov);
    return ok;
}
