/* Helpers shared by the libFuzzer harnesses. */
#include "fuzz-common.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpc/rpc-message.h"
#include "util/log.h"

void fuzz_init(void)
{
    const char *v = g_getenv("FUZZ_VERBOSE");
    ferry_log_set_level(v && *v == '1' ? FERRY_LOG_DEBUG : FERRY_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    /* GLib pool threads never exit: libFuzzer checks for leaks after each
     * input, and a thread caught exiting has its thread-local state (libxml2
     * keeps its globals there) reported as leaked. */
    g_thread_pool_set_max_unused_threads(-1);
    g_thread_pool_set_max_idle_time(0);
}

void fuzz_records_init(FuzzRecords *r, const uint8_t *data, size_t size)
{
    r->data = data;
    r->size = size;
    r->pos = 0;
}

gboolean fuzz_records_next(FuzzRecords *r, const uint8_t **body, size_t *len)
{
    if (r->pos + 4 > r->size)
        return FALSE;
    guint32 word = fuzz_be32(r->data + r->pos);
    r->pos += 4;
    size_t want = word >= 4 ? word - 4 : 0;
    size_t left = r->size - r->pos;
    *len = MIN(want, left);
    *body = r->data + r->pos;
    r->pos += *len;
    return TRUE;
}

gboolean fuzz_write_all(int fd, const void *buf, size_t len)
{
    const guint8 *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return FALSE;
        p += n;
        len -= (size_t)n;
    }
    return TRUE;
}

gboolean fuzz_write_message(int fd, const uint8_t *body, size_t len)
{
    guint32 word = GUINT32_TO_BE((guint32)(len + 4));
    return fuzz_write_all(fd, &word, 4) && fuzz_write_all(fd, body, len);
}

static int wait_readable(int fd, gint64 deadline_us)
{
    for (;;) {
        gint64 left = deadline_us - g_get_monotonic_time();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rc = poll(&p, 1, (int)MIN(left / 1000 + 1, 1000));
        if (rc > 0)
            return 1;
        if (rc < 0 && errno != EINTR)
            return 0;
    }
}

int fuzz_read_exact(int fd, void *buf, size_t len, gint64 deadline_us)
{
    guint8 *p = buf;
    while (len > 0) {
        int w = wait_readable(fd, deadline_us);
        if (w <= 0)
            return w;
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        p += n;
        len -= (size_t)n;
    }
    return 1;
}

gboolean fuzz_drain(int fd, gint64 deadline_us)
{
    guint8 buf[65536];
    for (;;) {
        int w = wait_readable(fd, deadline_us);
        if (w < 0)
            return FALSE;
        if (w == 0)
            return TRUE;
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return TRUE;
    }
}

static gboolean detached_thread_alive(void)
{
    static const char *const names[] = {"rpc-read", "rpc-write", "tunnel-out", "tunnel-sink",
                                        "qmp-reader", NULL};
    GDir *d = g_dir_open("/proc/self/task", 0, NULL);
    if (!d)
        return FALSE;
    gboolean alive = FALSE;
    const char *tid;
    while (!alive && (tid = g_dir_read_name(d))) {
        g_autofree char *path = g_strdup_printf("/proc/self/task/%s/comm", tid);
        g_autofree char *comm = NULL;
        if (!g_file_get_contents(path, &comm, NULL, NULL))
            continue;
        g_strchomp(comm);
        alive = g_strv_contains(names, comm);
    }
    g_dir_close(d);
    return alive;
}

void fuzz_wait_threads_gone(void)
{
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (detached_thread_alive()) {
        if (g_get_monotonic_time() > deadline)
            fuzz_hang("a connection or stream thread is still running 10 s after its end");
        g_usleep(100);
    }
}

void fuzz_hang(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "==fuzz== HANG: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

static GPtrArray *tmpdirs;

static void remove_tree(const char *path)
{
    GDir *d = g_dir_open(path, 0, NULL);
    if (d) {
        const char *name;
        while ((name = g_dir_read_name(d))) {
            g_autofree char *p = g_build_filename(path, name, NULL);
            if (g_file_test(p, G_FILE_TEST_IS_DIR) && !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
                remove_tree(p);
            else
                unlink(p);
        }
        g_dir_close(d);
    }
    rmdir(path);
}

static void remove_tmpdirs(void)
{
    for (guint i = 0; tmpdirs && i < tmpdirs->len; i++)
        remove_tree(tmpdirs->pdata[i]);
}

char *fuzz_make_tmpdir(const char *prefix)
{
    g_autofree char *tmpl = g_strdup_printf("%s-XXXXXX", prefix);
    g_autoptr(GError) error = NULL;
    char *dir = g_dir_make_tmp(tmpl, &error);
    if (!dir) {
        fprintf(stderr, "cannot create a temporary directory: %s\n", error->message);
        abort();
    }
    if (!tmpdirs) {
        tmpdirs = g_ptr_array_new_with_free_func(g_free);
        atexit(remove_tmpdirs);
    }
    g_ptr_array_add(tmpdirs, g_strdup(dir));
    return dir;
}

gboolean fuzz_await_reply(int fd, guint32 prog, guint32 serial)
{
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    for (;;) {
        guint8 word[4];
        int rc = fuzz_read_exact(fd, word, 4, deadline);
        if (rc < 0)
            fuzz_hang("no reply to call serial %u within 10 s", serial);
        if (rc == 0)
            return FALSE;
        guint32 len = fuzz_be32(word);
        if (len < RPC_PAYLOAD_OFFSET || len > RPC_MAX_WIRE_LENGTH) {
            fprintf(stderr, "server sent a message with length word %u\n", len);
            abort();
        }
        g_autofree guint8 *msg = g_malloc(len - 4);
        rc = fuzz_read_exact(fd, msg, len - 4, deadline);
        if (rc < 0)
            fuzz_hang("reply to call serial %u cut short for 10 s", serial);
        if (rc == 0)
            return FALSE;
        if (fuzz_be32(msg + 12) == RPC_REPLY && fuzz_be32(msg) == prog &&
            fuzz_be32(msg + 16) == serial)
            return TRUE;
    }
}
