/* Reading and writing ferry's save images (format in save-image.h). */
#include "driver/save-image.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"

#define MAGIC "FerrySaveImage\n"
#define MAGIC_LEN 16
#define LIBVIRT_MAGIC "LibvirtQemudSave"
#define LIBVIRT_PARTIAL_MAGIC "LibvirtQemudPart"
#define VERSION 1
#define HEADER_LEN 64
#define STREAM_ALIGN 4096
#define XML_SLACK 4096           /* room for a longer XML (save-image-define) */
#define XML_MAX (4 * 1024 * 1024) /* the longest string the protocol carries */
#define FLAG_RUNNING 1u
#define FLAG_COMPLETE 2u

void save_image_header_clear(SaveImageHeader *hdr)
{
    g_clear_pointer(&hdr->xml, g_free);
}

static void put32(guint8 *p, guint32 v)
{
    v = GUINT32_TO_BE(v);
    memcpy(p, &v, 4);
}

static void put64(guint8 *p, guint64 v)
{
    v = GUINT64_TO_BE(v);
    memcpy(p, &v, 8);
}

static guint32 get32(const guint8 *p)
{
    guint32 v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_BE(v);
}

static guint64 get64(const guint8 *p)
{
    guint64 v;
    memcpy(&v, p, 8);
    return GUINT64_FROM_BE(v);
}

static gboolean write_at(int fd, const void *buf, gsize len, off_t off, const char *path,
                         GError **error)
{
    const guint8 *p = buf;
    while (len > 0) {
        gssize n = pwrite(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ferry_set_error_errno(error, n < 0 ? errno : EIO,
                                  "cannot write the save image '%s'", path);
            return FALSE;
        }
        p += n;
        len -= n;
        off += n;
    }
    return TRUE;
}

static gboolean read_at(int fd, void *buf, gsize len, off_t off, const char *path,
                        GError **error)
{
    guint8 *p = buf;
    while (len > 0) {
        gssize n = pread(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ferry_set_error_errno(error, errno, "cannot read the save image '%s'", path);
            return FALSE;
        }
        if (n == 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "the save image '%s' is truncated: it ends inside its header", path);
            return FALSE;
        }
        p += n;
        len -= n;
        off += n;
    }
    return TRUE;
}

static void format_header(guint8 *h, guint32 xml_len, guint32 room, guint32 flags,
                          guint64 stream_len)
{
    memset(h, 0, HEADER_LEN);
    memcpy(h, MAGIC, sizeof(MAGIC) - 1);
    put32(h + 16, VERSION);
    put32(h + 20, xml_len);
    put32(h + 24, room);
    put32(h + 28, flags);
    put64(h + 32, stream_len);
}

int save_image_create(const char *path, const char *xml, gboolean running, gboolean *created,
                      GError **error)
{
    gsize xml_len = strlen(xml);
    if (xml_len > XML_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "the domain XML is too long for a save image (%zu bytes)", xml_len);
        return -1;
    }
    struct stat st;
    *created = stat(path, &st) < 0 && errno == ENOENT;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "cannot create the save image '%s'", path);
        return -1;
    }
    guint64 stream = (HEADER_LEN + xml_len + XML_SLACK + STREAM_ALIGN - 1) / STREAM_ALIGN *
                     STREAM_ALIGN;
    guint32 room = (guint32)(stream - HEADER_LEN);
    g_autofree guint8 *head = g_malloc0(stream);
    format_header(head, (guint32)xml_len, room, running ? FLAG_RUNNING : 0, 0);
    memcpy(head + HEADER_LEN, xml, xml_len);
    if (!write_at(fd, head, stream, 0, path, error) || lseek(fd, (off_t)stream, SEEK_SET) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

gboolean save_image_complete(int fd, const char *path, GError **error)
{
    guint8 h[HEADER_LEN];
    struct stat st;
    if (!read_at(fd, h, HEADER_LEN, 0, path, error))
        return FALSE;
    if (fstat(fd, &st) < 0) {
        ferry_set_error_errno(error, errno, "cannot read the size of the save image '%s'", path);
        return FALSE;
    }
    guint64 stream = HEADER_LEN + (guint64)get32(h + 24);
    format_header(h, get32(h + 20), get32(h + 24), get32(h + 28) | FLAG_COMPLETE,
                  (guint64)st.st_size - stream);
    /* The stream must be on disk before the header says it is complete. */
    if (fdatasync(fd) < 0 || !write_at(fd, h, HEADER_LEN, 0, path, error) || fdatasync(fd) < 0) {
        if (error && !*error)
            ferry_set_error_errno(error, errno, "cannot write the save image '%s' to disk", path);
        return FALSE;
    }
    return TRUE;
}

static gboolean parse(int fd, const char *path, SaveImageHeader *hdr, GError **error)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        ferry_set_error_errno(error, errno, "cannot read the save image '%s'", path);
        return FALSE;
    }
    guint8 h[HEADER_LEN];
    if ((guint64)st.st_size < HEADER_LEN) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "'%s' is not a ferry save image: it is %" G_GUINT64_FORMAT
                    " bytes long, shorter than the header",
                    path, (guint64)st.st_size);
        return FALSE;
    }
    if (!read_at(fd, h, HEADER_LEN, 0, path, error))
        return FALSE;
    if (memcmp(h, LIBVIRT_MAGIC, 16) == 0 || memcmp(h, LIBVIRT_PARTIAL_MAGIC, 16) == 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "'%s' is a libvirt save image: ferry restores only its own save images "
                    "(docs/qemu.md)",
                    path);
        return FALSE;
    }
    if (memcmp(h, MAGIC, MAGIC_LEN) != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "'%s' is not a ferry save image (no save image header)", path);
        return FALSE;
    }
    guint32 version = get32(h + 16), xml_len = get32(h + 20), room = get32(h + 24);
    guint32 flags = get32(h + 28);
    if (version != VERSION) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the save image '%s' has format version %u; this ferryd reads version %u",
                    path, version, VERSION);
        return FALSE;
    }
    if (xml_len == 0 || xml_len > XML_MAX || xml_len > room || (HEADER_LEN + room) % STREAM_ALIGN) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the save image '%s' has a damaged header (XML of %u bytes in %u)", path,
                    xml_len, room);
        return FALSE;
    }
    if (!(flags & FLAG_COMPLETE)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the save image '%s' is incomplete: the save that wrote it did not finish",
                    path);
        return FALSE;
    }
    guint64 stream = HEADER_LEN + (guint64)room, len = get64(h + 32);
    if ((guint64)st.st_size < stream || (guint64)st.st_size - stream < len) {
        g_autofree char *have = ferry_format_size((guint64)st.st_size);
        g_autofree char *want = ferry_format_size(stream + len);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the save image '%s' is truncated: %s of %s", path, have, want);
        return FALSE;
    }
    g_autofree char *xml = g_malloc0(xml_len + 1);
    if (!read_at(fd, xml, xml_len, HEADER_LEN, path, error))
        return FALSE;
    if (strlen(xml) != xml_len || !g_utf8_validate(xml, xml_len, NULL)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "the save image '%s' has a damaged domain XML", path);
        return FALSE;
    }
    hdr->xml = g_steal_pointer(&xml);
    hdr->running = (flags & FLAG_RUNNING) != 0;
    hdr->stream_offset = stream;
    hdr->stream_len = len;
    hdr->xml_room = room;
    return TRUE;
}

static int open_checked(const char *path, int mode, SaveImageHeader *hdr, GError **error)
{
    int fd = open(path, mode | O_CLOEXEC);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "cannot open the save image '%s'", path);
        return -1;
    }
    if (!parse(fd, path, hdr, error)) {
        close(fd);
        return -1;
    }
    return fd;
}

int save_image_open(const char *path, SaveImageHeader *hdr, GError **error)
{
    int fd = open_checked(path, O_RDONLY, hdr, error);
    if (fd >= 0 && lseek(fd, (off_t)hdr->stream_offset, SEEK_SET) < 0) {
        ferry_set_error_errno(error, errno, "cannot read the save image '%s'", path);
        save_image_header_clear(hdr);
        close(fd);
        return -1;
    }
    return fd;
}

gboolean save_image_read(const char *path, SaveImageHeader *hdr, GError **error)
{
    int fd = open_checked(path, O_RDONLY, hdr, error);
    if (fd < 0)
        return FALSE;
    close(fd);
    return TRUE;
}

gboolean save_image_update(const char *path, const char *xml, int running, GError **error)
{
    g_auto(SaveImageHeader) hdr = {0};
    int fd = open_checked(path, O_RDWR, &hdr, error);
    if (fd < 0)
        return FALSE;
    gsize len = strlen(xml);
    if (len > hdr.xml_room) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "the new domain XML (%zu bytes) does not fit the save image '%s' "
                    "(room for %u)",
                    len, path, hdr.xml_room);
        close(fd);
        return FALSE;
    }
    gboolean run = running < 0 ? hdr.running : running != 0;
    g_autofree guint8 *block = g_malloc0(HEADER_LEN + hdr.xml_room);
    format_header(block, (guint32)len, hdr.xml_room,
                  FLAG_COMPLETE | (run ? FLAG_RUNNING : 0), hdr.stream_len);
    memcpy(block + HEADER_LEN, xml, len);
    gboolean ok = write_at(fd, block, HEADER_LEN + hdr.xml_room, 0, path, error);
    if (ok && fdatasync(fd) < 0) {
        ferry_set_error_errno(error, errno, "cannot write the save image '%s' to disk", path);
        ok = FALSE;
    }
    close(fd);
    return ok;
}
