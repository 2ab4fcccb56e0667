/* Disks without shared storage (virsh migrate --copy-storage-all/-inc,
 * --migrate-disks): the disk a migration copies, as the source describes it
 * to the destination. The destination exports its images over NBD, the
 * source's VMM mirrors into them, and each disk's NBD connection rides a
 * channel of its own beside the VMM's stream (channel 1 + the disk's index).
 * The sequences are in migration-storage.c; a VMM takes part through the
 * storage hooks of MigrationHooks. */
#pragma once

#include <glib.h>

typedef struct {
    char *target;     /* the guest's name of the disk: "vda" */
    char *format;     /* the image format: "raw", "qcow2" */
    guint64 capacity; /* the virtual size in bytes */
    /* --copy-storage-inc: the backing file the destination's image keeps
     * (it must exist there), and its format; NULL: none */
    char *backing;
    char *backing_format;
    /* this side's image (the source's, or the destination's own path) */
    char *path;
} MigrationDisk;

MigrationDisk *migration_disk_new(void);
MigrationDisk *migration_disk_copy(const MigrationDisk *disk);
void migration_disk_free(MigrationDisk *disk);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigrationDisk, migration_disk_free)
/* A GPtrArray of MigrationDisk*, owning them. */
GPtrArray *migration_disks_new(void);

/* The channel that carries disk i of a migration: the VMM's own stream is
 * channel 0. */
#define MIGRATION_STORAGE_CHANNEL(i) ((i) + 1u)
/* At most this many disks move with one migration. */
#define MIGRATION_STORAGE_MAX_DISKS 16

/* The destination's side of a migration's disks, kept by its job. */
typedef struct MigrationStorageDest MigrationStorageDest;
void migration_storage_dest_free(MigrationStorageDest *st);
