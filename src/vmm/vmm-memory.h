/* Guest RAM: anonymous memory (transparent huge pages) filled with seeded pseudo-random data, the dirty-page bitmap
 * the migration sender consumes, and the digest that proves two RAMs are equal. */
#pragma once

#include <glib.h>

#define VMM_PAGE_SIZE 4096u

typedef struct {
    guint8 *base; /* size bytes, 2 MiB aligned; owned */
    guint64 size;
    guint64 npages;
    /* One bit per page, set by writers after they wrote (release) and taken by
     * the sender before it reads (acquire), so a write racing with a send always
     * leaves its page dirty for the next round. */
    guint64 *dirty;
    guint64 nwords;
} VmmMemory;

/* A 128-bit digest of all pages, each page hashed with its index so that moved
 * pages are caught; page hashes are summed, so threads can split the work. */
typedef struct {
    guint64 hi;
    guint64 lo;
} VmmDigest;

/* fill: write seeded pseudo-random data into every page (a booting guest);
 * FALSE leaves zeros (an incoming guest, about to be overwritten). */
VmmMemory *vmm_memory_new(guint64 size, gboolean fill, guint64 seed, GError **error);
void vmm_memory_free(VmmMemory *mem);

static inline void vmm_memory_mark_dirty(VmmMemory *mem, guint64 page)
{
    __atomic_fetch_or(&mem->dirty[page / 64], 1ULL << (page % 64), __ATOMIC_RELEASE);
}

/* Returns the dirty bits of one bitmap word and clears them. */
static inline guint64 vmm_memory_dirty_take_word(VmmMemory *mem, guint64 word)
{
    return __atomic_exchange_n(&mem->dirty[word], 0, __ATOMIC_ACQ_REL);
}

void vmm_memory_dirty_set_all(VmmMemory *mem);
guint64 vmm_memory_dirty_count(VmmMemory *mem);

/* Uses up to 8 threads; several GB/s in an optimised build. */
void vmm_memory_digest(VmmMemory *mem, VmmDigest *out);
char *vmm_digest_to_string(const VmmDigest *digest);
