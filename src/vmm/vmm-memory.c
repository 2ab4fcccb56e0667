/* Guest RAM of ferry-vmm: allocation (huge pages), seeded fill, dirty bitmap and the
 * digest. Fill and digest are split over threads because both sit on a critical
 * path (boot time, migration downtime). */
#include "vmm/vmm-memory.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"
#include "vmm/vmm-prng.h"

#define FERRY_LOG_MODULE "vmm.memory"

/* Contents are a function of (seed, block index) only, so the number of threads
 * never changes what a guest's RAM holds. */
#define MEMORY_FILL_BLOCK (1u << 20)
#define MEMORY_MAX_THREADS 8

typedef struct {
    VmmMemory *mem;
    guint64 first; /* unit: fill block or page, per job */
    guint64 count;
    guint64 seed;
    VmmDigest sum;
} MemoryJob;

static guint memory_thread_count(guint64 units)
{
    guint n = MIN(g_get_num_processors(), MEMORY_MAX_THREADS);
    if (units < n)
        n = MAX(units, 1);
    return n;
}

/* Runs func over [0, units) split in contiguous parts, one thread per part. */
static void memory_run_parallel(VmmMemory *mem, guint64 units, guint64 seed, GThreadFunc func,
                                VmmDigest *sum)
{
    guint n = memory_thread_count(units);
    g_autofree MemoryJob *jobs = g_new0(MemoryJob, n);
    g_autofree GThread **threads = g_new0(GThread *, n);
    guint64 per = units / n, extra = units % n, next = 0;

    for (guint i = 0; i < n; i++) {
        jobs[i].mem = mem;
        jobs[i].first = next;
        jobs[i].count = per + (i < extra ? 1 : 0);
        jobs[i].seed = seed;
        next += jobs[i].count;
        /* The last part runs here: one thread fewer to create. */
        if (i + 1 < n)
            threads[i] = g_thread_new("vmm-memory", func, &jobs[i]);
    }
    func(&jobs[n - 1]);
    for (guint i = 0; i + 1 < n; i++)
        g_thread_join(threads[i]);
    if (sum) {
        sum->hi = sum->lo = 0;
        for (guint i = 0; i < n; i++) {
            sum->hi += jobs[i].sum.hi;
            sum->lo += jobs[i].sum.lo;
        }
    }
}

/* Faulting pages in one by one costs several times the write itself (much more
 * under a hypervisor); one madvise per range allocates them in bulk. */
static void memory_populate(VmmMemory *mem, guint64 start, guint64 len)
{
    if (len && madvise(mem->base + start, len, MADV_POPULATE_WRITE) < 0)
        FERRY_DEBUG("cannot pre-populate guest memory: %s", g_strerror(errno));
}

static gpointer memory_fill_job(gpointer data)
{
    MemoryJob *job = data;
    guint64 first = job->first * MEMORY_FILL_BLOCK;
    memory_populate(job->mem, first,
                    MIN(job->mem->size, (job->first + job->count) * MEMORY_FILL_BLOCK) - first);
    for (guint64 b = job->first; b < job->first + job->count; b++) {
        guint64 state = vmm_prng_mix(job->seed ^ vmm_prng_mix(b));
        guint64 start = b * MEMORY_FILL_BLOCK;
        guint64 len = MIN((guint64)MEMORY_FILL_BLOCK, job->mem->size - start);
        guint64 *w = (guint64 *)(job->mem->base + start);
        for (guint64 i = 0; i < len / 8; i++)
            w[i] = vmm_prng_next(&state);
    }
    return NULL;
}

/* Guest RAM is anonymous memory aligned to, and advised for, transparent huge
 * pages, as VMMs back their guests: one TLB (and, under a hypervisor that
 * shadows page tables, one shadow) entry per 2 MiB instead of per 4 KiB page.
 * With 4 KiB pages the first user-space and the first kernel access to every
 * page (boot, each side's copy, digests) each cost a fault on such hosts, which
 * was most of a migration's time. Where THP is disabled this is plain memory. */
#define MEMORY_ALIGN (2u << 20)

static guint8 *memory_map(guint64 size, GError **error)
{
    guint64 len = size + MEMORY_ALIGN;
    guint8 *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        ferry_set_error_errno(error, errno,
                              "cannot map %" G_GUINT64_FORMAT " bytes of guest memory", size);
        return NULL;
    }
    guint8 *base = (guint8 *)(((guintptr)raw + MEMORY_ALIGN - 1) & ~(guintptr)(MEMORY_ALIGN - 1));
    if (base > raw)
        munmap(raw, (gsize)(base - raw));
    if (raw + len > base + size)
        munmap(base + size, (gsize)(raw + len - (base + size)));
    if (madvise(base, size, MADV_HUGEPAGE) < 0)
        FERRY_DEBUG("no transparent huge pages for guest memory: %s", g_strerror(errno));
    /* Private memory: a child process must not make us copy it on write. */
    if (madvise(base, size, MADV_DONTFORK) < 0)
        FERRY_DEBUG("cannot keep guest memory from child processes: %s", g_strerror(errno));
    return base;
}

VmmMemory *vmm_memory_new(guint64 size, gboolean fill, guint64 seed, GError **error)
{
    if (size == 0 || size % VMM_PAGE_SIZE != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "guest memory size %" G_GUINT64_FORMAT " is not a positive multiple of %u",
                    size, VMM_PAGE_SIZE);
        return NULL;
    }
    guint8 *base = memory_map(size, error);
    if (!base)
        return NULL;

    VmmMemory *mem = g_new0(VmmMemory, 1);
    mem->base = base;
    mem->size = size;
    mem->npages = size / VMM_PAGE_SIZE;
    mem->nwords = (mem->npages + 63) / 64;
    mem->dirty = g_new0(guint64, mem->nwords);
    if (fill)
        memory_run_parallel(mem, (size + MEMORY_FILL_BLOCK - 1) / MEMORY_FILL_BLOCK, seed,
                            memory_fill_job, NULL);
    else
        /* Or the first migration round pays for allocating every page. */
        memory_populate(mem, 0, size);
    return mem;
}

void vmm_memory_free(VmmMemory *mem)
{
    if (!mem)
        return;
    munmap(mem->base, mem->size);
    g_free(mem->dirty);
    g_free(mem);
}

void vmm_memory_dirty_set_all(VmmMemory *mem)
{
    for (guint64 w = 0; w < mem->nwords; w++) {
        guint64 bits = ~0ULL;
        guint64 first = w * 64;
        if (mem->npages - first < 64)
            bits = (1ULL << (mem->npages - first)) - 1;
        __atomic_fetch_or(&mem->dirty[w], bits, __ATOMIC_RELEASE);
    }
}

guint64 vmm_memory_dirty_count(VmmMemory *mem)
{
    guint64 n = 0;
    for (guint64 w = 0; w < mem->nwords; w++)
        n += (guint64)__builtin_popcountll(__atomic_load_n(&mem->dirty[w], __ATOMIC_RELAXED));
    return n;
}

/* always_inline: the digest is on migration paths, in -O0 test builds too. */
static inline __attribute__((always_inline)) guint64 memory_rotl(guint64 x, int r)
{
    return (x << r) | (x >> (64 - r));
}

#define MEMORY_HASH_SEED_A 0x243f6a8885a308d3ULL
#define MEMORY_HASH_SEED_B 0x13198a2e03707344ULL
#define MEMORY_HASH_SEED_C 0xa4093822299f31d0ULL
#define MEMORY_HASH_SEED_D 0x082efa98ec4e6c89ULL
#define MEMORY_HASH_MUL 0x9fb21c651e98df25ULL
/* Pages hashed together: the vector path runs this many lane sets at once. */
#define MEMORY_HASH_GROUP 8

static inline __attribute__((always_inline)) void memory_hash_final(guint64 a, guint64 b, guint64 c,
                                                                    guint64 d, guint64 index,
                                                                    guint64 *hi, guint64 *lo)
{
    *lo = vmm_prng_mix(a + memory_rotl(b, 17) + memory_rotl(c, 31) + memory_rotl(d, 47) + index);
    *hi =
        vmm_prng_mix((a ^ memory_rotl(b, 13)) + (memory_rotl(c, 23) ^ memory_rotl(d, 41)) + ~index);
}

/* Four independent lanes keep the multiplier busy; each lane update is a
 * bijection of its state, so a changed word always changes the lane. */
static inline __attribute__((always_inline)) void memory_hash_page(const guint64 *w, guint64 index,
                                                                   guint64 *hi, guint64 *lo)
{
    const guint64 p = MEMORY_HASH_MUL;
    guint64 a = index ^ MEMORY_HASH_SEED_A, b = MEMORY_HASH_SEED_B;
    guint64 c = MEMORY_HASH_SEED_C, d = MEMORY_HASH_SEED_D;
    for (guint i = 0; i < VMM_PAGE_SIZE / 8; i += 4) {
        a = memory_rotl((a ^ w[i]) * p, 29);
        b = memory_rotl((b ^ w[i + 1]) * p, 29);
        c = memory_rotl((c ^ w[i + 2]) * p, 29);
        d = memory_rotl((d ^ w[i + 3]) * p, 29);
    }
    memory_hash_final(a, b, c, d, index, hi, lo);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MEMORY_HASH_VECTOR 1

/* The same hash, bit for bit, of MEMORY_HASH_GROUP pages at once: one page's
 * four lanes per 256-bit register, eight registers in flight. The scalar code
 * waits on each multiply's latency; this keeps the multiplier busy (about 2.5
 * times the throughput on the machines we run on). */
__attribute__((target("avx512f,avx512vl,avx512dq"))) static void
memory_hash_group_avx512(const guint8 *base, const guint64 *pages, guint64 *hi, guint64 *lo)
{
    const __m256i p = _mm256_set1_epi64x((long long)MEMORY_HASH_MUL);
    const guint8 *src[MEMORY_HASH_GROUP];
    __m256i s[MEMORY_HASH_GROUP];
    for (guint k = 0; k < MEMORY_HASH_GROUP; k++) {
        src[k] = base + pages[k] * VMM_PAGE_SIZE;
        s[k] = _mm256_set_epi64x((long long)MEMORY_HASH_SEED_D, (long long)MEMORY_HASH_SEED_C,
                                 (long long)MEMORY_HASH_SEED_B,
                                 (long long)(pages[k] ^ MEMORY_HASH_SEED_A));
    }
    for (guint i = 0; i < VMM_PAGE_SIZE; i += 32) {
        for (guint k = 0; k < MEMORY_HASH_GROUP; k++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(src[k] + i));
            s[k] = _mm256_rol_epi64(_mm256_mullo_epi64(_mm256_xor_si256(s[k], v), p), 29);
        }
    }
    for (guint k = 0; k < MEMORY_HASH_GROUP; k++) {
        guint64 t[4];
        _mm256_storeu_si256((__m256i *)t, s[k]);
        memory_hash_final(t[0], t[1], t[2], t[3], pages[k], &hi[k], &lo[k]);
    }
}

static gboolean memory_have_avx512(void)
{
    static gint have; /* 0 unknown, 1 yes, 2 no */
    gint v = g_atomic_int_get(&have);
    if (v == 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                    __builtin_cpu_supports("avx512dq")
                ? 1
                : 2;
        g_atomic_int_set(&have, v);
    }
    return v == 1;
}
#endif

/* Hashes n (at most MEMORY_HASH_GROUP) pages given by index. */
static void memory_hash_group(const guint8 *base, const guint64 *pages, guint n, guint64 *hi,
                              guint64 *lo)
{
#ifdef MEMORY_HASH_VECTOR
    if (n == MEMORY_HASH_GROUP && memory_have_avx512()) {
        memory_hash_group_avx512(base, pages, hi, lo);
        return;
    }
#endif
    for (guint k = 0; k < n; k++)
        memory_hash_page((const guint64 *)(base + pages[k] * VMM_PAGE_SIZE), pages[k], &hi[k],
                         &lo[k]);
}

static gpointer memory_digest_job(gpointer data)
{
    MemoryJob *job = data;
    guint64 sum_hi = 0, sum_lo = 0;
    for (guint64 page = job->first; page < job->first + job->count;) {
        guint64 pages[MEMORY_HASH_GROUP], hi[MEMORY_HASH_GROUP], lo[MEMORY_HASH_GROUP];
        guint n = 0;
        while (n < MEMORY_HASH_GROUP && page < job->first + job->count)
            pages[n++] = page++;
        memory_hash_group(job->mem->base, pages, n, hi, lo);
        for (guint k = 0; k < n; k++) {
            sum_hi += hi[k];
            sum_lo += lo[k];
        }
    }
    job->sum.hi = sum_hi;
    job->sum.lo = sum_lo;
    return NULL;
}

void vmm_memory_digest(VmmMemory *mem, VmmDigest *out)
{
    memory_run_parallel(mem, mem->npages, 0, memory_digest_job, out);
}

struct _VmmPageHashes {
    VmmMemory *mem;
    VmmDigest *page; /* latest hash of each page where hashed says so */
    guint64 page_bytes;
    guint64 *hashed; /* one bit per page */
    guint64 nhashed; /* pages with a hash */
    VmmDigest sum;   /* of page[] over the hashed pages */
};

VmmPageHashes *vmm_page_hashes_new(VmmMemory *mem)
{
    VmmPageHashes *h = g_new0(VmmPageHashes, 1);
    h->mem = mem;
    /* Huge pages too: the table is written at the pace of the stream. */
    h->page_bytes =
        (mem->npages * sizeof(VmmDigest) + MEMORY_ALIGN - 1) & ~(guint64)(MEMORY_ALIGN - 1);
    g_autoptr(GError) error = NULL;
    h->page = (VmmDigest *)memory_map(h->page_bytes, &error);
    if (!h->page)
        g_error("%s", error->message); /* out of memory, as g_malloc() */
    h->hashed = g_new0(guint64, mem->nwords);
    return h;
}

void vmm_page_hashes_free(VmmPageHashes *hashes)
{
    if (!hashes)
        return;
    munmap(hashes->page, hashes->page_bytes);
    g_free(hashes->hashed);
    g_free(hashes);
}

/* Replaces the stored hashes of n pages (a page may come twice) by new ones.
 * Several streams of one migration hash at once, each its own pages (a page
 * goes over one connection per round): the slots are theirs alone, the sum
 * and the count are shared and added to atomically. */
static void page_hashes_apply(VmmPageHashes *h, const guint64 *pages, guint n)
{
    guint64 hi[MEMORY_HASH_GROUP], lo[MEMORY_HASH_GROUP];
    memory_hash_group(h->mem->base, pages, n, hi, lo);
    guint64 dhi = 0, dlo = 0, fresh = 0;
    for (guint k = 0; k < n; k++) {
        VmmDigest *slot = &h->page[pages[k]];
        guint64 bit = 1ULL << (pages[k] % 64);
        if (__atomic_fetch_or(&h->hashed[pages[k] / 64], bit, __ATOMIC_RELAXED) & bit) {
            dhi -= slot->hi;
            dlo -= slot->lo;
        } else {
            fresh++;
        }
        slot->hi = hi[k];
        slot->lo = lo[k];
        dhi += hi[k];
        dlo += lo[k];
    }
    __atomic_fetch_add(&h->sum.hi, dhi, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum.lo, dlo, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->nhashed, fresh, __ATOMIC_RELAXED);
}

void vmm_page_hashes_update_iov(VmmPageHashes *hashes, const struct iovec *iov, int iovcnt)
{
    VmmPageHashes *h = hashes;
    guint64 pages[MEMORY_HASH_GROUP];
    guint n = 0;
    for (int i = 0; i < iovcnt; i++) {
        guint64 off = (guint64)((const guint8 *)iov[i].iov_base - h->mem->base);
        g_assert(off % VMM_PAGE_SIZE == 0 && iov[i].iov_len % VMM_PAGE_SIZE == 0 &&
                 off <= h->mem->size && iov[i].iov_len <= h->mem->size - off);
        for (guint64 page = off / VMM_PAGE_SIZE; page < (off + iov[i].iov_len) / VMM_PAGE_SIZE;
             page++) {
            pages[n++] = page;
            if (n == MEMORY_HASH_GROUP) {
                page_hashes_apply(h, pages, n);
                n = 0;
            }
        }
    }
    if (n)
        page_hashes_apply(h, pages, n);
}

void vmm_page_hashes_digest(VmmPageHashes *hashes, VmmDigest *out)
{
    VmmPageHashes *h = hashes;
    /* Normally every page went through a migration's first round already. */
    for (guint64 w = 0; h->nhashed < h->mem->npages && w < h->mem->nwords; w++) {
        guint64 missing = ~h->hashed[w];
        if (w == h->mem->nwords - 1 && h->mem->npages % 64)
            missing &= (1ULL << (h->mem->npages % 64)) - 1;
        while (missing) {
            guint64 page = w * 64 + (guint64)__builtin_ctzll(missing);
            missing &= missing - 1;
            page_hashes_apply(h, &page, 1);
        }
    }
    *out = h->sum;
}

char *vmm_digest_to_string(const VmmDigest *digest)
{
    return g_strdup_printf("%016" G_GINT64_MODIFIER "x%016" G_GINT64_MODIFIER "x", digest->hi,
                           digest->lo);
}
