/* A connection's limits over a real socketpair: a length word alone
 * allocates nothing like what it announces, a message too long before
 * authentication is refused at its length word, a peer that does not read is
 * dropped once its unrequested messages reach the send limit, large messages
 * in a row are read straight into their own buffers; and the log's escaping
 * and rate limit. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/rpc-connection.h"
#include "util/error.h"
#include "util/log.h"

#if defined(__SANITIZE_ADDRESS__)
/* libasan's (its header, sanitizer/allocator_interface.h, is not always installed). */
size_t __sanitizer_get_current_allocated_bytes(void);
static gsize allocated_bytes(void)
{
    return __sanitizer_get_current_allocated_bytes();
}
#else
#include <malloc.h>
static gsize allocated_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}
#endif

typedef struct {
    GMutex lock;
    GCond cond;
    gboolean closed;
    char *why;
    guint messages;
} Peer;

static void on_message(RpcConnection *conn, RpcMessage *msg, gpointer data)
{
    Peer *p = data;
    g_mutex_lock(&p->lock);
    p->messages++;
    g_mutex_unlock(&p->lock);
    rpc_message_free(msg);
}

static void on_close(RpcConnection *conn, const GError *why, gpointer data)
{
    Peer *p = data;
    g_mutex_lock(&p->lock);
    p->closed = TRUE;
    p->why = g_strdup(why ? why->message : "");
    g_cond_broadcast(&p->cond);
    g_mutex_unlock(&p->lock);
}

static const RpcConnectionHandler handler = {.on_message = on_message, .on_close = on_close};

/* A started connection on one end of a socketpair; *other is the raw end. */
static RpcConnection *connection_pair(Peer *p, int *other)
{
    memset(p, 0, sizeof(*p));
    g_mutex_init(&p->lock);
    g_cond_init(&p->cond);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    *other = sv[1];
    return rpc_connection_new(rpc_transport_new_socket(sv[0]), &handler, p);
}

static gboolean wait_closed(Peer *p, gint64 timeout_s)
{
    gint64 end = g_get_monotonic_time() + timeout_s * G_USEC_PER_SEC;
    g_mutex_lock(&p->lock);
    while (!p->closed && g_cond_wait_until(&p->cond, &p->lock, end))
        ;
    gboolean closed = p->closed;
    g_mutex_unlock(&p->lock);
    return closed;
}

static void peer_clear(Peer *p)
{
    g_free(p->why);
    g_mutex_clear(&p->lock);
    g_cond_clear(&p->cond);
}

static void put_word(guint8 *p, guint32 v)
{
    v = GUINT32_TO_BE(v);
    memcpy(p, &v, 4);
}

START_TEST(length_word_alone_does_not_allocate_what_it_announces)
{
    Peer p;
    int fd;
    RpcConnection *conn = connection_pair(&p, &fd);
    rpc_connection_start(conn);
    gsize before = allocated_bytes();
    /* 32 MiB announced, 1000 bytes sent. */
    guint8 head[1000] = {0};
    put_word(head, 32 * 1024 * 1024);
    /* In two halves: the reader has its buffer once it counts the second. */
    for (gsize half = 0; half < 2; half++) {
        gsize want = (half + 1) * sizeof(head) / 2;
        ck_assert_int_eq(write(fd, head + half * sizeof(head) / 2, sizeof(head) / 2),
                         (gssize)sizeof(head) / 2);
        for (int i = 0; i < 1000 && rpc_connection_get_bytes_received(conn) < want; i++)
            g_usleep(10 * 1000);
        ck_assert_uint_eq(rpc_connection_get_bytes_received(conn), want);
    }
    gsize after = allocated_bytes();
    ck_assert_msg(after < before + 1024 * 1024, "%zu bytes allocated for 1000 received",
                  after - before);
    close(fd);
    ck_assert(wait_closed(&p, 10));
    ck_assert_ptr_nonnull(strstr(p.why, "closed the connection after 1000 of a 33554432 byte"));
    rpc_connection_unref(conn);
    peer_clear(&p);
}
END_TEST

START_TEST(message_too_long_before_authentication_is_refused_at_its_length_word)
{
    Peer p;
    int fd;
    RpcConnection *conn = connection_pair(&p, &fd);
    rpc_connection_set_unauthenticated(conn, 4096, 0);
    rpc_connection_start(conn);
    guint8 word[4];
    put_word(word, 4097);
    ck_assert_int_eq(write(fd, word, 4), 4);
    ck_assert(wait_closed(&p, 10));
    ck_assert_str_eq(p.why, "message length 4097 exceeds the 4096 byte limit before "
                            "authentication");
    close(fd);
    rpc_connection_unref(conn);
    peer_clear(&p);
}
END_TEST

START_TEST(peer_that_does_not_read_is_dropped_at_the_send_limit)
{
    Peer p;
    int fd;
    RpcConnection *conn = connection_pair(&p, &fd);
    rpc_connection_set_send_limit(conn, 256 * 1024);
    rpc_connection_start(conn);
    /* PINGs, never reading the PONGs: the socket buffers fill, then the queue. */
    guint8 ping[28] = {0};
    put_word(ping, 28);
    put_word(ping + 4, KEEPALIVE_PROGRAM);
    put_word(ping + 8, KEEPALIVE_PROTOCOL_VERSION);
    put_word(ping + 12, KEEPALIVE_PROC_PING);
    put_word(ping + 16, RPC_MESSAGE);
    g_autoptr(GByteArray) burst = g_byte_array_new();
    for (int i = 0; i < 4096; i++)
        g_byte_array_append(burst, ping, sizeof(ping));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    gsize sent = 0;
    while (sent < 256 * 1024 * 1024 && !wait_closed(&p, 0)) {
        gssize n = send(fd, burst->data, burst->len, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        sent += n;
    }
    ck_assert(wait_closed(&p, 10));
    ck_assert_msg(strstr(p.why, "does not read what it is sent") &&
                      strstr(p.why, "(limit 262144)"),
                  "%s", p.why);
    close(fd);
    rpc_connection_unref(conn);
    peer_clear(&p);
}
END_TEST

static RpcMessage *message_of(guint32 type, guint32 status, gsize payload)
{
    RpcMessage *m = rpc_message_new(payload);
    m->header = (RpcHeader){.prog = 0x20008086, .vers = 1, .proc = 107, .type = type,
                            .status = status};
    memset(rpc_message_payload(m), 0, payload);
    rpc_message_seal(m, payload);
    return m;
}

/* What the limit counts: events (and every other message the peer did not
 * ask for), not replies or stream data, which have their own bounds. */
START_TEST(send_limit_counts_events_not_replies_or_stream_data)
{
    Peer p;
    int fd;
    RpcConnection *conn = connection_pair(&p, &fd);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    rpc_connection_set_send_limit(conn, 256 * 1024);
    rpc_connection_start(conn);
    /* 4 MiB of stream data and 4 MiB of replies the peer never reads: queued. */
    for (int i = 0; i < 64; i++) {
        rpc_connection_send(conn, message_of(RPC_STREAM, RPC_CONTINUE, 64 * 1024));
        RpcMessage *reply = message_of(RPC_REPLY, RPC_OK, 64 * 1024);
        reply->completes_request = TRUE;
        rpc_connection_request_begin(conn);
        rpc_connection_send(conn, reply);
    }
    ck_assert(!rpc_connection_is_closed(conn));
    /* Events: the connection is dropped once they hold 256 KiB. */
    int sent = 0;
    while (!rpc_connection_is_closed(conn) && sent < 100000) {
        rpc_connection_send(conn, message_of(RPC_MESSAGE, RPC_OK, 64));
        sent++;
    }
    ck_assert(wait_closed(&p, 10));
    ck_assert_msg(strstr(p.why, "does not read what it is sent") &&
                      strstr(p.why, "(limit 262144)"),
                  "%s", p.why);
    /* Each event holds a message struct and its buffer: fewer than 256 KiB / their size. */
    ck_assert_int_le(sent, 256 * 1024 / (int)(RPC_PAYLOAD_OFFSET + 64) + 1);
    close(fd);
    rpc_connection_unref(conn);
    peer_clear(&p);
}
END_TEST

START_TEST(log_text_is_escaped_and_cut)
{
    g_autofree char *a = ferry_log_escape("user\n2026 error: forged\r\x1b[31m\\", -1, 100);
    ck_assert_str_eq(a, "user\\n2026 error: forged\\r\\x1b[31m\\\\");
    g_autofree char *b = ferry_log_escape("caf\xc3\xa9 \xff\xfe \xc2\x9b", -1, 100);
    ck_assert_str_eq(b, "caf\xc3\xa9 \\xff\\xfe \\xc2\\x9b"); /* C1 CSI escaped too */
    g_autofree char *c = ferry_log_escape("0123456789", -1, 4);
    ck_assert_str_eq(c, "0123... (6 more bytes)");
    g_autofree char *d = ferry_log_escape("a\0b", 3, 10);
    ck_assert_str_eq(d, "a\\x00b");
}
END_TEST

static char *capture_stderr(void (*func)(void))
{
    char path[] = "/tmp/ferry-log-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    func();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    char *text = NULL;
    ck_assert(g_file_get_contents(path, &text, NULL, NULL));
    unlink(path);
    return text;
}

static FerryLogLimit limit;

static void log_fifteen(void)
{
    ferry_log_set_level(FERRY_LOG_INFO);
    for (int i = 0; i < 15; i++)
        ferry_log_limited(&limit, FERRY_LOG_WARNING, "unit", "refused %d\nforged", i);
}

static void log_after_the_window(void)
{
    limit.window_start_us -= (FERRY_LOG_LIMIT_WINDOW_S + 1) * G_USEC_PER_SEC;
    ferry_log_limited(&limit, FERRY_LOG_WARNING, "unit", "refused again");
}

START_TEST(repeated_lines_are_rate_limited)
{
    g_autofree char *first = capture_stderr(log_fifteen);
    g_auto(GStrv) lines = g_strsplit(first, "\n", -1);
    ck_assert_uint_eq(g_strv_length(lines), FERRY_LOG_LIMIT_BURST + 1); /* + the empty tail */
    ck_assert_ptr_nonnull(strstr(lines[9], "warning unit: refused 9\\nforged"));
    g_autofree char *later = capture_stderr(log_after_the_window);
    ck_assert_ptr_nonnull(strstr(later, "unit: (5 similar messages suppressed) refused again\n"));
}
END_TEST

/* ---- large messages in a row: read into their own buffers ---- */

/* A transport over the socket one that notes where each read went. */
typedef struct {
    RpcTransport base;
    RpcTransport *inner;
    GMutex lock;
    GArray *reads; /* Read: into, bytes */
    GArray *buffers; /* Read: each delivered message's buffer and capacity */
    guint messages;
    GCond cond;
} Watched;

typedef struct {
    const guint8 *at;
    gsize len;
} Read;

static gssize watched_read(RpcTransport *t, void *buf, gsize len, GError **error)
{
    Watched *w = (Watched *)t;
    gssize n = rpc_transport_read(w->inner, buf, len, error);
    if (n > 0) {
        g_mutex_lock(&w->lock);
        g_array_append_val(w->reads, ((Read){.at = buf, .len = (gsize)n}));
        g_mutex_unlock(&w->lock);
    }
    return n;
}

static gboolean watched_writev(RpcTransport *t, const struct iovec *iov, int iovcnt,
                               GError **error)
{
    return rpc_transport_writev(((Watched *)t)->inner, iov, iovcnt, error);
}

static void watched_shutdown(RpcTransport *t)
{
    rpc_transport_shutdown(((Watched *)t)->inner);
}

static void watched_free(RpcTransport *t)
{
    Watched *w = (Watched *)t;
    rpc_transport_free(w->inner);
    g_free(w->base.peer);
    /* The arrays and the rest are the test's, read after the close. */
}

static const RpcTransportOps watched_ops = {.read = watched_read, .writev = watched_writev,
                                            .shutdown = watched_shutdown, .free = watched_free};

static void watched_on_message(RpcConnection *conn, RpcMessage *msg, gpointer data)
{
    Watched *w = data;
    g_mutex_lock(&w->lock);
    g_array_append_val(w->buffers, ((Read){.at = msg->buf, .len = msg->cap}));
    w->messages++;
    g_cond_broadcast(&w->cond);
    g_mutex_unlock(&w->lock);
    rpc_message_free(msg);
}

static const RpcConnectionHandler watched_handler = {.on_message = watched_on_message};

static gboolean in_a_message(Watched *w, const Read *r)
{
    for (guint i = 0; i < w->buffers->len; i++) {
        const Read *b = &g_array_index(w->buffers, Read, i);
        if (r->at >= b->at && r->at + r->len <= b->at + b->len)
            return TRUE;
    }
    return FALSE;
}

typedef struct {
    int fd;
    guint count;
    gsize payload;
} Sender;

static gpointer send_stream_packets(gpointer data)
{
    Sender *s = data;
    g_autoptr(RpcMessage) m = rpc_message_new(s->payload);
    m->header = (RpcHeader){.prog = 0x20008086, .vers = 1, .proc = 304, .type = RPC_STREAM,
                            .serial = 9, .status = RPC_CONTINUE};
    memset(rpc_message_payload(m), 0xab, s->payload);
    rpc_message_seal(m, s->payload);
    for (guint i = 0; i < s->count; i++)
        for (gsize off = 0; off < m->len;) {
            ssize_t n = send(s->fd, m->buf + off, m->len - off, MSG_NOSIGNAL);
            if (n <= 0)
                return NULL;
            off += n;
        }
    return NULL;
}

/* A stream in full flow: after the first large message, each one's header
 * is read alone and its payload straight into its buffer (from the pool),
 * not through the connection's 64 KiB read-ahead buffer and a copy. */
START_TEST(large_messages_in_a_row_are_read_into_their_own_buffers)
{
    const guint count = 64;
    const gsize payload = 256 * 1024;
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    Watched *w = g_new0(Watched, 1);
    w->inner = rpc_transport_new_socket(sv[0]);
    w->base = *w->inner;
    w->base.ops = &watched_ops;
    w->base.peer = g_strdup(w->inner->peer);
    g_mutex_init(&w->lock);
    g_cond_init(&w->cond);
    w->reads = g_array_new(FALSE, FALSE, sizeof(Read));
    w->buffers = g_array_new(FALSE, FALSE, sizeof(Read));
    RpcConnection *conn = rpc_connection_new(&w->base, &watched_handler, w);
    RpcMessagePool *pool = rpc_message_pool_new(payload, 4);
    rpc_connection_set_rx_pool(conn, pool);
    rpc_connection_start(conn);

    Sender snd = {.fd = sv[1], .count = count, .payload = payload};
    GThread *t = g_thread_new("sender", send_stream_packets, &snd);
    gint64 end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
    g_mutex_lock(&w->lock);
    while (w->messages < count && g_cond_wait_until(&w->cond, &w->lock, end))
        ;
    ck_assert_uint_eq(w->messages, count);
    g_mutex_unlock(&w->lock);
    g_thread_join(t);
    rpc_connection_close(conn, NULL);
    rpc_connection_wait_closed(conn);

    gsize direct = 0, ahead = 0;
    for (guint i = 0; i < w->reads->len; i++) {
        const Read *r = &g_array_index(w->reads, Read, i);
        if (in_a_message(w, r))
            direct += r->len;
        else
            ahead += r->len;
    }
    ck_assert_uint_eq(direct + ahead, count * (payload + RPC_PAYLOAD_OFFSET));
    /* The first message's read-ahead (up to 64 KiB), then headers only. */
    ck_assert_msg(ahead <= 64 * 1024 + count * RPC_PAYLOAD_OFFSET,
                  "%zu of %zu bytes went through the read-ahead buffer", ahead, direct + ahead);

    rpc_connection_unref(conn);
    rpc_message_pool_unref(pool);
    close(sv[1]);
    g_array_free(w->reads, TRUE);
    g_array_free(w->buffers, TRUE);
    g_mutex_clear(&w->lock);
    g_cond_clear(&w->cond);
    g_free(w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rpc-limits");
    TCase *tc = tcase_create("connection");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, length_word_alone_does_not_allocate_what_it_announces);
    tcase_add_test(tc, message_too_long_before_authentication_is_refused_at_its_length_word);
    tcase_add_test(tc, peer_that_does_not_read_is_dropped_at_the_send_limit);
    tcase_add_test(tc, send_limit_counts_events_not_replies_or_stream_data);
    tcase_add_test(tc, large_messages_in_a_row_are_read_into_their_own_buffers);
    suite_add_tcase(s, tc);
    tc = tcase_create("log");
    tcase_add_test(tc, log_text_is_escaped_and_cut);
    tcase_add_test(tc, repeated_lines_are_rate_limited);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
