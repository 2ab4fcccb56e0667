/* Workload threads of ferry-vmm. Each thread paces itself against the clock
 * (rate / threads), so the dirty rate holds whatever the CPU speed; a dirtied
 * page gets 64 random bytes at a random offset, then its dirty bit. */
#include "vmm/vmm-workload.h"

#include "vmm/vmm-prng.h"

#define WORKLOAD_MAX_THREADS 64
/* Pages written between two looks at the pause flag: bounds the pause latency. */
#define WORKLOAD_BATCH 256
#define WORKLOAD_WRITE_BYTES 64
/* Pacing granularity. */
#define WORKLOAD_TICK_US 1000

typedef struct {
    VmmWorkload *workload;
    guint index;
    GThread *thread;
} WorkloadThread;

struct _VmmWorkload {
    VmmMemory *mem;
    guint nthreads;
    guint64 seed;
    WorkloadThread *threads;
    guint64 dirtied; /* atomic: pages dirtied since boot */

    GMutex lock; /* protects everything below */
    GCond wake;  /* workers wait on it */
    GCond parked_cond;
    guint parked; /* workers inside a wait: not touching guest memory */
    gboolean paused;
    gboolean quit;
    guint64 rate;
    VmmDirtyPattern pattern;
    guint generation; /* bumped on every change, restarts each thread's pacing */
};

const char *vmm_dirty_pattern_to_string(VmmDirtyPattern pattern)
{
    return pattern == VMM_DIRTY_SEQUENTIAL ? "sequential" : "random";
}

gboolean vmm_dirty_pattern_from_string(const char *text, VmmDirtyPattern *pattern)
{
    if (g_strcmp0(text, "random") == 0)
        *pattern = VMM_DIRTY_RANDOM;
    else if (g_strcmp0(text, "sequential") == 0)
        *pattern = VMM_DIRTY_SEQUENTIAL;
    else
        return FALSE;
    return TRUE;
}

/* Waits with the lock held; a waiting thread counts as parked. end_time 0 = no limit. */
static void workload_wait(VmmWorkload *w, gint64 end_time)
{
    w->parked++;
    g_cond_broadcast(&w->parked_cond);
    if (end_time)
        g_cond_wait_until(&w->wake, &w->lock, end_time);
    else
        g_cond_wait(&w->wake, &w->lock);
    w->parked--;
}

static void workload_dirty_page(VmmMemory *mem, guint64 page, guint64 *rng)
{
    guint64 offset =
        (vmm_prng_next(rng) % (VMM_PAGE_SIZE / WORKLOAD_WRITE_BYTES)) * WORKLOAD_WRITE_BYTES;
    guint64 *p = (guint64 *)(mem->base + page * VMM_PAGE_SIZE + offset);
    for (guint i = 0; i < WORKLOAD_WRITE_BYTES / 8; i++)
        p[i] = vmm_prng_next(rng);
    vmm_memory_mark_dirty(mem, page);
}

static gpointer workload_thread_main(gpointer data)
{
    WorkloadThread *t = data;
    VmmWorkload *w = t->workload;
    VmmMemory *mem = w->mem;
    guint64 rng = vmm_prng_mix(w->seed ^ vmm_prng_mix(t->index + 1));
    guint64 cursor = t->index * mem->npages / w->nthreads;
    guint generation = G_MAXUINT;
    gint64 t0 = 0;
    double done = 0;

    g_mutex_lock(&w->lock);
    while (!w->quit) {
        if (w->paused || w->rate == 0) {
            workload_wait(w, 0);
            continue;
        }
        gint64 now = g_get_monotonic_time();
        if (generation != w->generation) {
            generation = w->generation;
            t0 = now;
            done = 0;
        }
        double pages_per_sec = (double)w->rate / w->nthreads / VMM_PAGE_SIZE;
        double due = (double)(now - t0) * pages_per_sec / G_USEC_PER_SEC;
        if (due - done > pages_per_sec) {
            /* More than a second behind (starved of CPU): don't catch up in a burst. */
            t0 = now;
            done = 0;
            continue;
        }
        /* Wake up once per tick at most: a wake-up costs more than dirtying
         * dozens of pages (most of all under a hypervisor), and at 300 MiB/s a
         * page is due every 26 us per thread. */
        double quantum = MAX(1.0, pages_per_sec * WORKLOAD_TICK_US / G_USEC_PER_SEC);
        if (due < done + quantum) {
            workload_wait(w, t0 + (gint64)((done + quantum) * G_USEC_PER_SEC / pages_per_sec));
            continue;
        }
        guint todo = (guint)MIN(due - done, (double)WORKLOAD_BATCH);
        VmmDirtyPattern pattern = w->pattern;
        g_mutex_unlock(&w->lock);

        for (guint i = 0; i < todo; i++) {
            guint64 page;
            if (pattern == VMM_DIRTY_SEQUENTIAL) {
                page = cursor;
                cursor = (cursor + 1) % mem->npages;
            } else {
                page = (guint64)(((__uint128_t)vmm_prng_next(&rng) * mem->npages) >> 64);
            }
            workload_dirty_page(mem, page, &rng);
        }
        __atomic_fetch_add(&w->dirtied, todo, __ATOMIC_RELAXED);
        done += todo;

        g_mutex_lock(&w->lock);
    }
    g_mutex_unlock(&w->lock);
    return NULL;
}

VmmWorkload *vmm_workload_new(VmmMemory *mem, guint vcpus, guint64 seed)
{
    VmmWorkload *w = g_new0(VmmWorkload, 1);
    w->mem = mem;
    w->nthreads = CLAMP(vcpus, 1, WORKLOAD_MAX_THREADS);
    w->seed = seed;
    w->paused = TRUE;
    g_mutex_init(&w->lock);
    g_cond_init(&w->wake);
    g_cond_init(&w->parked_cond);
    w->threads = g_new0(WorkloadThread, w->nthreads);
    for (guint i = 0; i < w->nthreads; i++) {
        w->threads[i].workload = w;
        w->threads[i].index = i;
        w->threads[i].thread = g_thread_new("vmm-vcpu", workload_thread_main, &w->threads[i]);
    }
    return w;
}

void vmm_workload_free(VmmWorkload *workload)
{
    VmmWorkload *w = workload;
    if (!w)
        return;
    g_mutex_lock(&w->lock);
    w->quit = TRUE;
    g_cond_broadcast(&w->wake);
    g_mutex_unlock(&w->lock);
    for (guint i = 0; i < w->nthreads; i++)
        g_thread_join(w->threads[i].thread);
    g_free(w->threads);
    g_mutex_clear(&w->lock);
    g_cond_clear(&w->wake);
    g_cond_clear(&w->parked_cond);
    g_free(w);
}

void vmm_workload_set(VmmWorkload *workload, guint64 rate, VmmDirtyPattern pattern)
{
    g_mutex_lock(&workload->lock);
    workload->rate = rate;
    workload->pattern = pattern;
    workload->generation++;
    g_cond_broadcast(&workload->wake);
    g_mutex_unlock(&workload->lock);
}

void vmm_workload_get(VmmWorkload *workload, guint64 *rate, VmmDirtyPattern *pattern,
                      guint64 *dirtied_bytes)
{
    g_mutex_lock(&workload->lock);
    if (rate)
        *rate = workload->rate;
    if (pattern)
        *pattern = workload->pattern;
    g_mutex_unlock(&workload->lock);
    if (dirtied_bytes)
        *dirtied_bytes = __atomic_load_n(&workload->dirtied, __ATOMIC_RELAXED) * VMM_PAGE_SIZE;
}

void vmm_workload_pause(VmmWorkload *workload)
{
    g_mutex_lock(&workload->lock);
    workload->paused = TRUE;
    g_cond_broadcast(&workload->wake);
    while (workload->parked < workload->nthreads)
        g_cond_wait(&workload->parked_cond, &workload->lock);
    g_mutex_unlock(&workload->lock);
}

void vmm_workload_resume(VmmWorkload *workload)
{
    g_mutex_lock(&workload->lock);
    workload->paused = FALSE;
    workload->generation++;
    g_cond_broadcast(&workload->wake);
    g_mutex_unlock(&workload->lock);
}
