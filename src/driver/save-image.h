/* ferry's save image format (virsh save, managedsave): a fixed header, the
 * domain XML, then the VMM's migration stream to the end of the file. It is
 * ferry's own (docs/qemu.md), not libvirt's: libvirt's images are recognised
 * and refused by name.
 *
 *   offset size
 *        0   16  magic "FerrySaveImage\n\0"
 *       16    4  version, 1 (integers big-endian)
 *       20    4  XML length in bytes (no NUL)
 *       24    4  room for the XML: the stream starts at 64 + this (a multiple
 *                of 4096), so the XML can be replaced in place
 *       28    4  flags: 1 the guest ran when saved, 2 the image is complete
 *       32    8  length of the VMM stream (written when the save completed)
 *       40   24  zero
 *       64       the XML, then zeros up to the stream
 *
 * An image is complete only once the VMM finished its stream and the file is
 * on disk: a save that failed or was interrupted leaves flag 2 clear, and a
 * file shorter than its header says is truncated. Both are refused before a
 * VMM is started. */
#pragma once

#include <glib.h>

typedef struct {
    char *xml;
    gboolean running; /* the guest ran when saved */
    guint64 stream_offset;
    guint64 stream_len;
    guint32 xml_room;
} SaveImageHeader;

void save_image_header_clear(SaveImageHeader *hdr);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(SaveImageHeader, save_image_header_clear)

/* Creates (or truncates) path, mode 0600, and writes an incomplete header
 * and the XML. Returns the fd, positioned where the stream starts; -1 with
 * an error naming the path and the OS error. *created: the file did not
 * exist before (so a failed save may remove it). */
int save_image_create(const char *path, const char *xml, gboolean running, gboolean *created,
                      GError **error);
/* The stream is written (everything from the current end back to the
 * stream's start): records its length, marks the image complete and waits
 * until the file is on disk. */
gboolean save_image_complete(int fd, const char *path, GError **error);

/* Opens a complete image read-only and checks it (magic, version, complete,
 * not truncated); fills hdr and returns the fd positioned at the stream. */
int save_image_open(const char *path, SaveImageHeader *hdr, GError **error);
/* Reads and checks the header of a complete image (no fd kept). */
gboolean save_image_read(const char *path, SaveImageHeader *hdr, GError **error);
/* Replaces the XML in place (it must fit the image's room) and, running >= 0,
 * the "ran when saved" flag. */
gboolean save_image_update(const char *path, const char *xml, int running, GError **error);
