/* The simulated guest: one thread per vCPU writing pseudo-random data into guest
 * pages at a configured rate and pattern, marking each page dirty. */
#pragma once

#include <glib.h>

#include "vmm/vmm-memory.h"

typedef enum {
    VMM_DIRTY_RANDOM,
    VMM_DIRTY_SEQUENTIAL,
} VmmDirtyPattern;

typedef struct _VmmWorkload VmmWorkload;

/* Threads start paused (a VM starts with its vCPUs stopped). */
VmmWorkload *vmm_workload_new(VmmMemory *mem, guint vcpus, guint64 seed);
void vmm_workload_free(VmmWorkload *workload);

/* rate: bytes of guest pages made dirty per second, 0 = idle. Takes effect at once. */
void vmm_workload_set(VmmWorkload *workload, guint64 rate, VmmDirtyPattern pattern);
void vmm_workload_get(VmmWorkload *workload, guint64 *rate, VmmDirtyPattern *pattern,
                      guint64 *dirtied_bytes);

/* Returns once no workload thread is writing guest memory, so a digest or the
 * last migration round sees memory that stays still. */
void vmm_workload_pause(VmmWorkload *workload);
void vmm_workload_resume(VmmWorkload *workload);

const char *vmm_dirty_pattern_to_string(VmmDirtyPattern pattern);
gboolean vmm_dirty_pattern_from_string(const char *text, VmmDirtyPattern *pattern);
