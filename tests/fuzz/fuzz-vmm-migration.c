/* ferry-vmm's migration protocol (docs/ferry-vmm.md), from both ends: the
 * receiver reading what a hostile sender sends (selector bit 0 clear), and
 * the sender reading what a hostile receiver answers (bit 0 set). The guest
 * has 16 KiB of RAM (4 pages), the size the seed streams were recorded with.
 *
 * Input: one selector byte, then the raw bytes of the peer's side of the
 * socket; after them the peer shuts its side down. The migration must then
 * end (completed, failed) within 10 s. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz-common.h"
#include "vmm/vmm-migration.h"

#define GUEST_RAM (16 * 1024)
#define WAIT_US (10 * G_USEC_PER_SEC)

static VmmMemory *memory;

typedef struct {
    gboolean finished;
    VmmMigrationStatus status;
} Outcome;

static JsonObject *stop_vm(gpointer data, gboolean *was_running)
{
    *was_running = TRUE;
    JsonObject *device = json_object_new();
    json_object_set_string_member(device, "state", "fuzz");
    return device;
}

static void finished(gpointer data, gboolean incoming, VmmMigrationStatus status,
                     gboolean vm_was_running, JsonObject *device)
{
    Outcome *o = data;
    o->finished = TRUE;
    o->status = status;
}

static void event(gpointer data, const char *name, JsonObject *obj)
{
    if (obj)
        json_object_unref(obj);
}

static const VmmMigrationHooks hooks = {.stop_vm = stop_vm, .finished = finished, .event = event};

static gpointer drain_thread(gpointer data)
{
    fuzz_drain(GPOINTER_TO_INT(data), G_MAXINT64);
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    g_autoptr(GError) error = NULL;
    memory = vmm_memory_new(GUEST_RAM, TRUE, 1, &error);
    if (!memory) {
        fprintf(stderr, "%s\n", error->message);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    gboolean outgoing = data[0] & 1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    Outcome o = {0};
    VmmMigration *m = vmm_migration_new(memory, 1, &hooks, &o);
    g_autoptr(GError) error = NULL;
    gboolean started = outgoing ? vmm_migration_start_outgoing(m, sv[0], NULL, NULL, 0, &error)
                                : vmm_migration_start_incoming(m, sv[0], -1, NULL, NULL, 0, &error);
    if (!started) {
        fprintf(stderr, "cannot start the migration: %s\n", error->message);
        abort();
    }
    GThread *reader = g_thread_new("fuzz-peer", drain_thread, GINT_TO_POINTER(sv[1]));
    fuzz_write_all(sv[1], data + 1, size - 1);
    shutdown(sv[1], SHUT_WR);

    gint64 deadline = g_get_monotonic_time() + WAIT_US;
    while (!o.finished) {
        if (g_get_monotonic_time() > deadline)
            fuzz_hang("the %s migration did not end 10 s after the peer's last byte",
                      outgoing ? "outgoing" : "incoming");
        g_main_context_iteration(NULL, FALSE);
        if (!o.finished)
            g_usleep(50);
    }
    vmm_migration_free(m);
    g_thread_join(reader);
    close(sv[1]);
    return 0;
}
