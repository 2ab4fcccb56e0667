/* ferry-vmm internals the migration's speed rests on, tested below the
 * protocol: the page hash (scalar and vector code give the same bits, the
 * digest of a known RAM is the known value), the incremental digest (equal to
 * the full one whatever the order, repeats or gaps of the updates), and the
 * stream's zero-copy and scatter paths (every byte arrives, with a socket that
 * takes spliced pages and without). The sources are included for their
 * static functions. */
#include <errno.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmm-harness.h"
#include "vmm/vmm-memory.c"
#include "vmm/vmm-stream.c"

#define MiB (1024 * 1024)

static VmmMemory *new_memory(guint64 size, guint64 seed)
{
    g_autoptr(GError) error = NULL;
    VmmMemory *mem = vmm_memory_new(size, TRUE, seed, &error);
    ck_assert_msg(mem, "%s", error ? error->message : "?");
    return mem;
}

static char *full_digest(VmmMemory *mem)
{
    VmmDigest d;
    vmm_memory_digest(mem, &d);
    return vmm_digest_to_string(&d);
}

static char *incremental_digest(VmmPageHashes *h)
{
    VmmDigest d;
    vmm_page_hashes_digest(h, &d);
    return vmm_digest_to_string(&d);
}

static void update_pages(VmmPageHashes *h, VmmMemory *mem, guint64 first, guint64 count)
{
    struct iovec iov = {mem->base + first * VMM_PAGE_SIZE, count * VMM_PAGE_SIZE};
    vmm_page_hashes_update_iov(h, &iov, 1);
}

START_TEST(test_digest_of_known_ram_is_unchanged)
{
    /* The value ferry-vmm has always given for --memory 64M --seed 7 (also
     * the example in docs/ferry-vmm.md): the hash code may change, not its bits. */
    VmmMemory *mem = new_memory(64 * MiB, 7);
    g_autofree char *hex = full_digest(mem);
    ck_assert_str_eq(hex, "b0fdc66d06e1a244daf2be585284be24");
    vmm_memory_free(mem);
}
END_TEST

START_TEST(test_vector_page_hash_matches_scalar)
{
#ifdef MEMORY_HASH_VECTOR
    if (!memory_have_avx512())
        return;
    VmmMemory *mem = new_memory(4 * MiB, 3);
    GRand *rand = g_rand_new_with_seed(11);
    for (guint round = 0; round < 200; round++) {
        guint64 pages[MEMORY_HASH_GROUP], hi[MEMORY_HASH_GROUP], lo[MEMORY_HASH_GROUP];
        /* Scattered, sometimes repeated pages, as a dirty round sends them. */
        for (guint k = 0; k < MEMORY_HASH_GROUP; k++)
            pages[k] = (guint64)g_rand_int_range(rand, 0, (gint32)mem->npages);
        if (round % 3 == 0)
            pages[5] = pages[2];
        memory_hash_group_avx512(mem->base, pages, hi, lo);
        for (guint k = 0; k < MEMORY_HASH_GROUP; k++) {
            guint64 h, l;
            memory_hash_page((const guint64 *)(mem->base + pages[k] * VMM_PAGE_SIZE), pages[k], &h,
                             &l);
            ck_assert_uint_eq(hi[k], h);
            ck_assert_uint_eq(lo[k], l);
        }
    }
    g_rand_free(rand);
    vmm_memory_free(mem);
#endif
}
END_TEST

START_TEST(test_incremental_digest_equals_full_digest)
{
    VmmMemory *mem = new_memory(8 * MiB + 5 * VMM_PAGE_SIZE, 5); /* not a multiple of 64 pages */
    g_autofree char *full = full_digest(mem);

    /* Whole RAM in uneven ranges, out of order. */
    VmmPageHashes *h = vmm_page_hashes_new(mem);
    for (guint64 first = 0; first < mem->npages;) {
        guint64 count = MIN(1 + first % 37, mem->npages - first);
        update_pages(h, mem, mem->npages - first - count, count);
        first += count;
    }
    g_autofree char *inc = incremental_digest(h);
    ck_assert_str_eq(inc, full);

    /* Pages written and hashed again (some twice in one list) follow RAM. */
    GRand *rand = g_rand_new_with_seed(2);
    struct iovec iov[40];
    for (guint i = 0; i < G_N_ELEMENTS(iov); i++) {
        guint64 page = (guint64)g_rand_int_range(rand, 0, (gint32)mem->npages);
        if (i % 10 == 9)
            page = (guint64)((guint8 *)iov[i - 1].iov_base - mem->base) / VMM_PAGE_SIZE;
        mem->base[page * VMM_PAGE_SIZE + i * 7] ^= 0x5a;
        iov[i].iov_base = mem->base + page * VMM_PAGE_SIZE;
        iov[i].iov_len = VMM_PAGE_SIZE;
    }
    vmm_page_hashes_update_iov(h, iov, G_N_ELEMENTS(iov));
    g_autofree char *full2 = full_digest(mem);
    g_autofree char *inc2 = incremental_digest(h);
    ck_assert_str_ne(full2, full);
    ck_assert_str_eq(inc2, full2);

    /* A write nobody hashed again is not in the incremental digest: the
     * contract is that every written page is sent (hashed) again. */
    mem->base[3 * VMM_PAGE_SIZE] ^= 1;
    g_autofree char *full3 = full_digest(mem);
    g_autofree char *inc3 = incremental_digest(h);
    ck_assert_str_ne(inc3, full3);
    ck_assert_str_eq(inc3, full2);
    vmm_page_hashes_free(h);

    /* Pages never hashed (never received) are hashed when the digest is taken. */
    VmmPageHashes *partial = vmm_page_hashes_new(mem);
    update_pages(partial, mem, 10, 100);
    update_pages(partial, mem, mem->npages - 3, 3);
    g_autofree char *inc4 = incremental_digest(partial);
    ck_assert_str_eq(inc4, full3);
    vmm_page_hashes_free(partial);

    g_rand_free(rand);
    vmm_memory_free(mem);
}
END_TEST

/* ---- the stream: page data written by one thread, read by another ---- */

typedef struct {
    VmmStream st;
    const struct iovec *iov;
    int iovcnt;
    gboolean no_splice;
    gboolean unsplice_first; /* start with data already in the pipe, then lose splice */
    gboolean ok;
} Writer;

static gpointer writer_main(gpointer data)
{
    Writer *w = data;
    w->st.no_splice = w->no_splice;
    int idx = 0;
    if (w->unsplice_first) {
        /* As if splice() had just been refused with the first piece in the pipe. */
        ck_assert(stream_open_pipe(&w->st));
        ck_assert_int_eq(vmsplice(w->st.pipe_w, &w->iov[0], 1, 0), (ssize_t)w->iov[0].iov_len);
        w->st.pipe_bytes = w->iov[0].iov_len;
        w->ok = stream_unsplice(&w->st);
        ck_assert(w->st.no_splice);
        idx = 1;
    } else {
        w->ok = TRUE;
    }
    /* In two calls, as the sender writes windows. */
    int half = idx + (w->iovcnt - idx) / 2;
    w->ok = w->ok && vmm_stream_write_pages(&w->st, w->iov + idx, half - idx) &&
            vmm_stream_write_pages(&w->st, w->iov + half, w->iovcnt - half);
    return NULL;
}

/* A connected TCP pair on loopback: TCP takes spliced pages on every kernel
 * (AF_UNIX only since Linux 6.5), so the zero-copy path is sure to be used. */
static void tcp_pair(int sp[2])
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(l, 1), 0);
    ck_assert_int_eq(getsockname(l, (struct sockaddr *)&a, &len), 0);
    sp[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(connect(sp[0], (struct sockaddr *)&a, sizeof(a)), 0);
    sp[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(sp[1], 0);
    close(l);
}

/* tcp: over TCP, where every page must go by splice (no_splice stays FALSE:
 * had the stream fallen back to copying, a zero-copy test would prove nothing). */
static void check_transfer(gboolean no_splice, gboolean unsplice_first, gboolean tcp)
{
    VmmMemory *src = new_memory(4 * MiB, 9);
    guint8 *dst = g_malloc0(src->size);
    int sp[2];
    if (tcp)
        tcp_pair(sp);
    else
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);

    /* Scattered pieces of various sizes, and what they add up to. */
    struct iovec out[64], in[64];
    guint64 total = 0, off = 0;
    for (int i = 0; i < 64; i++) {
        gsize len = (gsize)(i % 5 + 1) * VMM_PAGE_SIZE + (i % 3 ? 0 : 100);
        out[i].iov_base = src->base + off;
        out[i].iov_len = len;
        off += len + VMM_PAGE_SIZE;
        total += len;
    }
    /* The reader's pieces have other boundaries: one buffer per 3 writer pieces. */
    int nin = 0;
    for (int i = 0; i < 64; i += 3) {
        gsize len = 0;
        for (int j = i; j < MIN(i + 3, 64); j++)
            len += out[j].iov_len;
        in[nin].iov_base = dst + ((guint8 *)out[i].iov_base - src->base);
        in[nin].iov_len = len;
        nin++;
    }

    Writer w = {.iov = out, .iovcnt = 64, .no_splice = no_splice, .unsplice_first = unsplice_first};
    vmm_stream_init(&w.st, sp[0], -1, NULL);
    VmmStream rd;
    vmm_stream_init(&rd, sp[1], -1, NULL);
    GThread *t = g_thread_new("writer", writer_main, &w);
    ck_assert(vmm_stream_readv(&rd, in, nin));
    g_thread_join(t);
    ck_assert(w.ok);
    if (tcp)
        ck_assert_msg(!w.st.no_splice, "the pages were copied, not spliced");
    ck_assert_uint_eq(w.st.sent, total);
    ck_assert_uint_eq(rd.received, total);

    /* Each reader piece holds the writer pieces it covers, back to back. */
    for (int i = 0, r = 0; i < 64; i += 3, r++) {
        const guint8 *p = in[r].iov_base;
        for (int j = i; j < MIN(i + 3, 64); j++) {
            ck_assert(memcmp(p, out[j].iov_base, out[j].iov_len) == 0);
            p += out[j].iov_len;
        }
    }
    vmm_stream_clear(&w.st);
    close(sp[0]);
    close(sp[1]);
    g_free(dst);
    vmm_memory_free(src);
}

START_TEST(test_stream_pages_zero_copy)
{
    check_transfer(FALSE, FALSE, TRUE);
}
END_TEST

START_TEST(test_stream_pages_by_copy)
{
    check_transfer(TRUE, FALSE, FALSE);
}
END_TEST

START_TEST(test_stream_pages_refused_splice_falls_back_to_copy)
{
    check_transfer(FALSE, TRUE, FALSE);
}
END_TEST

START_TEST(test_stream_pages_to_closed_peer_fail)
{
    signal(SIGPIPE, SIG_IGN); /* as ferry-vmm does */
    VmmMemory *src = new_memory(2 * MiB, 1);
    int sp[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    close(sp[1]);
    VmmStream st;
    vmm_stream_init(&st, sp[0], -1, NULL);
    struct iovec iov = {src->base, src->size};
    ck_assert(!vmm_stream_write_pages(&st, &iov, 1));
    ck_assert_int_eq(st.state, VMM_STREAM_ERROR);
    ck_assert_msg(st.err == EPIPE || st.err == ECONNRESET, "%s", g_strerror(st.err));
    vmm_stream_clear(&st);
    close(sp[0]);
    vmm_memory_free(src);
}
END_TEST

static Suite *internals_suite(void)
{
    Suite *s = suite_create("vmm-internals");
    TEST_ADD(s, test_digest_of_known_ram_is_unchanged, 30);
    TEST_ADD(s, test_vector_page_hash_matches_scalar, 30);
    TEST_ADD(s, test_incremental_digest_equals_full_digest, 30);
    TEST_ADD(s, test_stream_pages_zero_copy, 30);
    TEST_ADD(s, test_stream_pages_by_copy, 30);
    TEST_ADD(s, test_stream_pages_refused_splice_falls_back_to_copy, 30);
    TEST_ADD(s, test_stream_pages_to_closed_peer_fail, 30);
    return s;
}

TEST_RUN_SUITE(internals_suite)
