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

/* always_inline: the digest runs inside the downtime, in -O0 test builds too. */
static inline __attribute__((always_inline)) guint64 memory_rotl(guint64 x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* Four independent lanes keep the multiplier busy; each lane update is a
 * bijection of its state, so a changed word always changes the lane. */
static void memory_hash_page(const guint64 *w, guint64 index, guint64 *hi, guint64 *lo)
{
    const guint64 p = 0x9fb21c651e98df25ULL;
    guint64 a = index ^ 0x243f6a8885a308d3ULL, b = 0x13198a2e03707344ULL;
    guint64 c = 0xa4093822299f31d0ULL, d = 0x082efa98ec4e6c89ULL;
    for (guint i = 0; i < VMM_PAGE_SIZE / 8; i += 4) {
        a = memory_rotl((a ^ w[i]) * p, 29);
        b = memory_rotl((b ^ w[i + 1]) * p, 29);
        c = memory_rotl((c ^ w[i + 2]) * p, 29);
        d = memory_rotl((d ^ w[i + 3]) * p, 29);
    }
    *lo = vmm_prng_mix(a + memory_rotl(b, 17) + memory_rotl(c, 31) + memory_rotl(d, 47) + index);
    *hi =
        vmm_prng_mix((a ^ memory_rotl(b, 13)) + (memory_rotl(c, 23) ^ memory_rotl(d, 41)) + ~index);
}

static gpointer memory_digest_job(gpointer data)
{
    MemoryJob *job = data;
    guint64 hi = 0, lo = 0;
    for (guint64 page = job->first; page < job->first + job->count; page++) {
        guint64 h, l;
        memory_hash_page((const guint64 *)(job->mem->base + page * VMM_PAGE_SIZE), page, &h, &l);
        hi += h;
        lo += l;
    }
    job->sum.hi = hi;
    job->sum.lo = lo;
    return NULL;
}

void vmm_memory_digest(VmmMemory *mem, VmmDigest *out)
{
    memory_run_parallel(mem, mem->npages, 0, memory_digest_job, out);
}

char *vmm_digest_to_string(const VmmDigest *digest)
{
    return g_strdup_printf("%016" G_GINT64_MODIFIER "x%016" G_GINT64_MODIFIER "x", digest->hi,
                           digest->lo);
}
