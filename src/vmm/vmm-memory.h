/* Guest RAM: anonymous memory (transparent huge pages) filled with seeded pseudo-random data, the
 * dirty-page bitmap the migration sender consumes, and the digest that proves two RAMs are equal.
 */
#pragma once

#include <glib.h>
#include <sys/uio.h>

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

/* Returns the dirty bits of one bitmap word and clears them. A bit set while
 * this runs is either taken or left for the next round; a clean word costs a
 * plain load, not a locked write. */
static inline guint64 vmm_memory_dirty_take_word(VmmMemory *mem, guint64 word)
{
    if (__atomic_load_n(&mem->dirty[word], __ATOMIC_RELAXED) == 0)
        return 0;
    return __atomic_exchange_n(&mem->dirty[word], 0, __ATOMIC_ACQ_REL);
}

void vmm_memory_dirty_set_all(VmmMemory *mem);
guint64 vmm_memory_dirty_count(VmmMemory *mem);

/* Uses up to 8 threads; several GB/s in an optimised build. */
void vmm_memory_digest(VmmMemory *mem, VmmDigest *out);

/* The same digest kept up to date page by page during a migration, so that the
 * final one costs nothing however large RAM is: each side hashes a page when it
 * sends or receives it, and the digest is the sum of the latest hash of every
 * page (a page never hashed is hashed at the end). It equals vmm_memory_digest()
 * as long as every write to a page was followed by hashing it again, which the
 * dirty bitmap guarantees for the sender and stop-and-copy makes final.
 * 16 bytes per page (0.4% of RAM) plus one bit; not thread-safe. */
typedef struct _VmmPageHashes VmmPageHashes;

VmmPageHashes *vmm_page_hashes_new(VmmMemory *mem);
void vmm_page_hashes_free(VmmPageHashes *hashes);
/* Hashes the pages of iov (page-aligned pieces of guest RAM) as they are now. */
void vmm_page_hashes_update_iov(VmmPageHashes *hashes, const struct iovec *iov, int iovcnt);
void vmm_page_hashes_digest(VmmPageHashes *hashes, VmmDigest *out);
char *vmm_digest_to_string(const VmmDigest *digest);
