/* The migration sender: HELLO, pre-copy rounds of dirty pages, stop-and-copy,
 * COMPLETE with the digest of all guest RAM. Every command waits for the
 * receiver's OK before the next one goes out. Over several connections, one
 * thread per extra connection takes its share of each round's dirty bitmap
 * (blocks of it, first come first served) and every round ends when all of
 * them got their answers. */
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
/* Each connection takes the dirty bitmap this many words (4096 pages) at a time. */
#define SEND_BLOCK_WORDS 64

typedef struct {
    VmmMigration *m;
    guint index; /* the connection: 0 the main one */
    struct Crew *crew;
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
    g_autofree char *size = ferry_format_size(s->st.sent);
    /* The main connection keeps the words of a single-connection migration. */
    g_autofree char *moved =
        s->index ? g_strdup_printf("%s on channel %u", size, s->index) : g_strdup(size);
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
    if (s->index)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "migration failed: destination reported on channel %u: %s", s->index, text);
    else
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
        if (s->index)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "migration failed: destination reported on channel %u: %s", s->index,
                        text);
        else
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

/* Takes the dirty bits word by word, a block of words at a time from the
 * round's shared cursor, and ships the pages in commands of at most
 * VMM_WIRE_MAX_PAGE_DATA bytes, contiguous pages merged into one range. */
static gboolean sender_round(Sender *s, guint round, guint64 *cursor, GError **error)
{
    VmmMemory *mem = s->m->mem;
    s->round_pages = 0;
    for (;;) {
        guint64 w0 = __atomic_fetch_add(cursor, SEND_BLOCK_WORDS, __ATOMIC_RELAXED);
        if (w0 >= mem->nwords)
            break;
        guint64 wend = MIN(w0 + SEND_BLOCK_WORDS, mem->nwords);
        for (guint64 w = w0; w < wend; w++) {
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
    }
    return sender_flush_pages(s, round, error);
}

/* ---- several connections: the crew of senders ---- */

typedef struct Crew {
    VmmMigration *m;
    guint n;           /* connections */
    Sender *senders;   /* [n]; [0] runs on the migration thread */
    GThread **threads; /* [n]: [i] sends on connection i >= 1 */
    guint64 cursor;    /* the round's next bitmap word (atomic) */
    GMutex lock;       /* the fields below */
    GCond cond;
    guint round;       /* the round to send; 0: none yet */
    gboolean quit;     /* the rounds are over: the extra connections end */
    guint done;        /* extra connections done with the round (or gone) */
    GError *error;     /* the first failure of any connection */
} Crew;

static void crew_fail(Crew *c, GError *err)
{
    vmm_migration_fail_first(c->m, &c->lock, &c->cond, &c->error, err);
}

static void sender_init(Sender *s, Crew *c, guint index, VmmPageHashes *hashes)
{
    s->m = c->m;
    s->crew = c;
    s->index = index;
    s->cmd = g_byte_array_sized_new(VMM_WIRE_HEADER_SIZE + VMM_WIRE_PAGES_PREFIX +
                                    VMM_WIRE_MAX_RANGES * VMM_WIRE_RANGE_SIZE);
    s->iov = g_new0(struct iovec, VMM_WIRE_MAX_RANGES + 1);
    s->hashes = hashes;
    vmm_stream_init(&s->st, -1, -1, NULL); /* for vmm_stream_clear, should we fail first */
}

static void sender_clear(Sender *s)
{
    vmm_stream_clear(&s->st);
    g_byte_array_unref(s->cmd);
    g_free(s->iov);
}

/* An extra connection: its CHANNEL hello, then each round the migration
 * thread starts, then END once the rounds are over. */
static gboolean crew_member_run(Sender *s, GError **error)
{
    Crew *c = s->crew;
    JsonObject *hello = json_object_new();
    json_object_set_int_member(hello, "channel", s->index);
    json_object_set_int_member(hello, "channels", c->n);
    if (!sender_json_command(s, VMM_WIRE_CHANNEL, hello, "the channel's hello", error))
        return FALSE;
    guint last = 0;
    for (;;) {
        g_mutex_lock(&c->lock);
        while (c->round == last && !c->quit && !c->error)
            g_cond_wait(&c->cond, &c->lock);
        gboolean quit = c->quit || c->error;
        last = c->round;
        g_mutex_unlock(&c->lock);
        if (quit)
            break;
        gboolean ok = sender_round(s, last, &c->cursor, error);
        g_mutex_lock(&c->lock);
        c->done++;
        g_cond_broadcast(&c->cond);
        g_mutex_unlock(&c->lock);
        if (!ok)
            return FALSE;
    }
    guint8 end[VMM_WIRE_HEADER_SIZE];
    struct iovec iov = {.iov_base = end, .iov_len = sizeof(end)};
    return c->error || sender_command(s, VMM_WIRE_END, &iov, 1, "the channel's end", error);
}

static gpointer crew_thread(gpointer data)
{
    Sender *s = data;
    Crew *c = s->crew;
    GError *err = NULL;
    /* A failure wakes a waiting round: it sees the error. */
    if (!crew_member_run(s, &err))
        crew_fail(c, err);
    return NULL;
}

/* One round over every connection: the migration thread sends its share on
 * connection 0 and waits for the others. */
static gboolean crew_round(Crew *c, guint round, GError **error)
{
    g_mutex_lock(&c->lock);
    c->cursor = 0;
    c->done = 0;
    c->round = round;
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
    GError *err = NULL;
    if (!sender_round(&c->senders[0], round, &c->cursor, &err))
        crew_fail(c, err);
    g_mutex_lock(&c->lock);
    while (c->done < c->n - 1 && !c->error)
        g_cond_wait(&c->cond, &c->lock);
    gboolean ok = c->error == NULL;
    if (!ok)
        g_propagate_error(error, g_error_copy(c->error));
    g_mutex_unlock(&c->lock);
    return ok;
}

static guint64 crew_sent(Crew *c)
{
    guint64 sent = 0;
    for (guint i = 0; i < c->n; i++)
        sent += __atomic_load_n(&c->senders[i].st.sent, __ATOMIC_RELAXED);
    return sent;
}

/* The rounds are over: each extra connection ends (END answered), or the
 * first failure of any. */
static gboolean crew_finish(Crew *c, GError **error)
{
    g_mutex_lock(&c->lock);
    c->quit = TRUE;
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
    for (guint i = 1; i < c->n; i++)
        if (c->threads[i])
            g_thread_join(g_steal_pointer(&c->threads[i]));
    if (c->error) {
        g_propagate_error(error, g_error_copy(c->error));
        return FALSE;
    }
    return TRUE;
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

static gboolean sender_run(Crew *c, GError **error)
{
    VmmMigration *m = c->m;
    VmmMemory *mem = m->mem;
    Sender *s = &c->senders[0];
    int fd = sender_open(m, error);
    if (fd < 0)
        return FALSE;
    int size = SEND_SOCKET_BUFFER;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    vmm_stream_init(&s->st, fd, m->cancel_fd, &m->max_bandwidth);
    s->st.share = c->n;
    vmm_migration_set_fd(m, fd, &s->st);

    JsonObject *hello = json_object_new();
    json_object_set_int_member(hello, "protocol", VMM_WIRE_PROTOCOL);
    json_object_set_int_member(hello, "memory", (gint64)mem->size);
    json_object_set_int_member(hello, "vcpus", m->vcpus);
    json_object_set_int_member(hello, "page-size", VMM_PAGE_SIZE);
    if (c->n > 1)
        json_object_set_int_member(hello, "channels", c->n);
    if (!sender_json_command(s, VMM_WIRE_HELLO, hello, "the configuration", error))
        return FALSE;
    /* The extra connections, once the receiver knows how many come. */
    g_mutex_lock(&m->lock);
    for (guint i = 1; i < c->n; i++) {
        Sender *x = &c->senders[i];
        int xfd = g_array_index(m->extra_fds, int, i - 1);
        setsockopt(xfd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
        vmm_stream_init(&x->st, xfd, m->cancel_fd, &m->max_bandwidth);
        x->st.share = c->n;
        g_ptr_array_add(m->extra_streams, &x->st);
    }
    g_mutex_unlock(&m->lock);
    for (guint i = 1; i < c->n; i++)
        c->threads[i] = g_thread_new("vmm-migrate-out+", crew_thread, &c->senders[i]);
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
        guint64 sent0 = crew_sent(c);
        if (!crew_round(c, round, error))
            return FALSE;
        gint64 dt = MAX(g_get_monotonic_time() - t0, 1);
        guint64 bytes = crew_sent(c) - sent0;
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
        FERRY_DEBUG("round %u: %" G_GUINT64_FORMAT " bytes in %" G_GINT64_FORMAT
                    " us, %" G_GUINT64_FORMAT " bytes dirty, expected downtime %" G_GINT64_FORMAT
                    " ms",
                    round, bytes, dt, remaining, expected_ms);
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
    /* Every connection's last pages are answered before COMPLETE goes. */
    if (!crew_round(c, round, error) || !crew_finish(c, error)) {
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
    Crew c = {.m = m};
    g_mutex_lock(&m->lock);
    c.n = 1 + m->extra_fds->len;
    g_mutex_unlock(&m->lock);
    g_mutex_init(&c.lock);
    g_cond_init(&c.cond);
    c.senders = g_new0(Sender, c.n);
    c.threads = g_new0(GThread *, c.n);
    VmmPageHashes *hashes = vmm_page_hashes_new(m->mem);
    for (guint i = 0; i < c.n; i++)
        sender_init(&c.senders[i], &c, i, hashes);
    gboolean ok = sender_run(&c, error);
    if (!ok) /* the other connections stop at once: their sockets are shut down */
        vmm_migration_shutdown_all(m);
    g_autoptr(GError) ignored = NULL;
    crew_finish(&c, &ignored);
    vmm_migration_stream_done(m);
    for (guint i = 0; i < c.n; i++)
        sender_clear(&c.senders[i]);
    vmm_page_hashes_free(hashes);
    g_free(c.senders);
    g_free(c.threads);
    g_clear_error(&c.error);
    g_mutex_clear(&c.lock);
    g_cond_clear(&c.cond);
    return ok;
}
