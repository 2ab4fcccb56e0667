/* A dir pool's volume file: facts, XML, creation (storage-vol.h). */
#include "driver/storage-vol.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/domain-def.h"
#include "driver/storage-xml.h"
#include "util/error.h"

#define VOL_CREATE_PREALLOC_METADATA STORAGE_VOL_CREATE_PREALLOC_METADATA

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)

/* ---- a volume's format and sizes ---- */

/* A qcow2 image starts with "QFI\xfb"; its virtual size is the big-endian
 * 64-bit number at byte 24. Anything else is raw. */
gboolean storage_vol_read_facts(const char *path, StorageVolFacts *f, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        ferry_set_error_errno(error, errno, "cannot read volume '%s'", path);
        if (fd >= 0)
            close(fd);
        return FALSE;
    }
    guint8 head[32] = {0};
    ssize_t n = pread(fd, head, sizeof(head), 0);
    close(fd);
    f->format = "raw";
    f->physical = f->capacity = (guint64)st.st_size;
    f->allocation = (guint64)st.st_blocks * 512;
    f->mode = st.st_mode & 07777;
    f->uid = st.st_uid;
    f->gid = st.st_gid;
    if (n == (ssize_t)sizeof(head) && memcmp(head, "QFI\xfb", 4) == 0) {
        f->format = "qcow2";
        guint64 size = 0;
        for (int i = 24; i < 32; i++)
            size = (size << 8) | head[i];
        f->capacity = size;
    }
    return TRUE;
}

char *storage_vol_format(const char *name, const char *path, const StorageVolFacts *f)
{
    GString *buf = g_string_new("<volume type='file'>\n");
    storage_xml_append_element(buf, 2, "name", name);
    storage_xml_append_element(buf, 2, "key", path);
    g_string_append_printf(buf,
                           "  <capacity unit='bytes'>%" G_GUINT64_FORMAT "</capacity>\n"
                           "  <allocation unit='bytes'>%" G_GUINT64_FORMAT "</allocation>\n"
                           "  <physical unit='bytes'>%" G_GUINT64_FORMAT "</physical>\n"
                           "  <target>\n",
                           f->capacity, f->allocation, f->physical);
    storage_xml_append_element(buf, 4, "path", path);
    g_string_append_printf(buf,
                           "    <format type='%s'/>\n"
                           "    <permissions>\n      <mode>%04o</mode>\n"
                           "      <owner>%u</owner>\n      <group>%u</group>\n"
                           "    </permissions>\n  </target>\n</volume>\n",
                           f->format, f->mode, f->uid, f->gid);
    return g_string_free(buf, FALSE);
}

/* ---- creating a volume ---- */

static const StorageSchemaEntry vol_schema[] = {
    {"", "type"},
    {"name", ""},
    {"key", ""}, /* output only: a file volume's key is its path */
    {"capacity", "unit"},
    {"allocation", "unit"},
    {"physical", "unit"}, /* output only */
    {"target", ""},
    {"target/path", ""}, /* output only: the path is the pool's directory and the name */
    {"target/format", "type"},
    {"target/compat", ""},
    {"target/features", ""},
    {"target/features/lazy_refcounts", ""},
    {"target/permissions", ""},
    {"target/permissions/mode", ""},
    {"target/permissions/owner", ""},
    {"target/permissions/group", ""},
    {NULL, NULL},
};

typedef struct {
    char *name;
    char *format;
    guint64 capacity, allocation;
    gboolean has_allocation, lazy_refcounts, has_mode;
    char *compat;
    guint mode;
} VolDef;

static void vol_def_clear(VolDef *d)
{
    g_free(d->name);
    g_free(d->format);
    g_free(d->compat);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VolDef, vol_def_clear)

static gboolean parse_scaled(const xmlNode *n, guint64 *out, GError **error)
{
    g_autofree char *value = storage_xml_text(n);
    g_autofree char *unit = storage_xml_attr(n, "unit");
    g_autofree char *both = g_strconcat(value, unit ? unit : "", NULL);
    g_autofree char *what = g_strdup_printf("<volume/%s>", (const char *)n->name);
    return domain_parse_size(both, out, what, error);
}

/* An owner or group in a volume definition: only the daemon's own, which
 * every file it creates has. */
static gboolean check_id(const xmlNode *n, guint mine, GError **error)
{
    g_autofree char *v = storage_xml_text(n);
    guint64 id = 0;
    if (!n || (g_ascii_string_to_unsigned(v, 10, 0, G_MAXUINT32, &id, NULL) && id == mine) ||
        g_strcmp0(v, "-1") == 0)
        return TRUE;
    return storage_fail(error, FERRY_ERR_CONFIG_UNSUPPORTED,
                        "<volume/target/permissions/%s> '%s': ferryd creates files as its own user "
                        "(%u) and does not change their owner",
                        (const char *)n->name, v, mine);
}

static gboolean vol_def_parse(const char *xml, VolDef *d, GError **error)
{
    g_autoptr(xmlDoc) doc = storage_xml_read(xml, "volume", vol_schema, error);
    if (!doc)
        return FALSE;
    xmlNode *top = xmlDocGetRootElement(doc);
    g_autofree char *type = storage_xml_attr(top, "type");
    if (type && !g_str_equal(type, "file"))
        return storage_fail(error, FERRY_ERR_CONFIG_UNSUPPORTED,
                            "<volume type='%s'>: a dir pool's volumes are files", type);
    d->name = storage_xml_text(storage_xml_child(top, "name"));
    if (!storage_check_name(d->name, "storage volume", error))
        return FALSE;
    xmlNode *cap = storage_xml_child(top, "capacity"),
            *alloc = storage_xml_child(top, "allocation");
    if (!cap)
        return storage_fail(error, FERRY_ERR_XML_ERROR, "missing capacity element");
    if (!parse_scaled(cap, &d->capacity, error) ||
        (alloc && !parse_scaled(alloc, &d->allocation, error)))
        return FALSE;
    d->has_allocation = alloc != NULL;
    xmlNode *target = storage_xml_child(top, "target");
    d->format = storage_xml_attr(storage_xml_child(target, "format"), "type");
    if (!d->format)
        d->format = g_strdup("raw");
    if (!g_str_equal(d->format, "raw") && !g_str_equal(d->format, "qcow2"))
        return storage_fail(error, FERRY_ERR_CONFIG_UNSUPPORTED,
                            "volume format '%s': ferryd creates 'raw' and 'qcow2' files",
                            d->format);
    d->compat = storage_xml_text(storage_xml_child(target, "compat"));
    d->lazy_refcounts =
        storage_xml_child(storage_xml_child(target, "features"), "lazy_refcounts") != NULL;
    if ((d->compat || d->lazy_refcounts) && !g_str_equal(d->format, "qcow2"))
        return storage_fail(error, FERRY_ERR_CONFIG_UNSUPPORTED,
                            "<compat> and <features> of a volume are qcow2's, not '%s'", d->format);
    if (d->compat && !g_str_equal(d->compat, "0.10") && !g_str_equal(d->compat, "1.1"))
        return storage_fail(error, FERRY_ERR_XML_ERROR, "invalid qcow2 <compat> '%s': 0.10 or 1.1",
                            d->compat);
    xmlNode *perms = storage_xml_child(target, "permissions");
    xmlNode *mode = storage_xml_child(perms, "mode");
    if (mode) {
        g_autofree char *m = storage_xml_text(mode);
        if (!storage_parse_mode(m, "volume/target/permissions/mode", &d->mode, error))
            return FALSE;
        d->has_mode = TRUE;
    }
    return check_id(storage_xml_child(perms, "owner"), geteuid(), error) &&
           check_id(storage_xml_child(perms, "group"), getegid(), error);
}

static gboolean run_qemu_img(const char *path, const VolDef *d, guint flags, GError **error)
{
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    if (!qemu_img)
        return storage_fail(error, FERRY_ERR_OPERATION_FAILED,
                            "cannot create a qcow2 volume: qemu-img is not installed (package "
                            "qemu-utils)");
    GString *opts = g_string_new(NULL);
    const char *compat = d->compat ? d->compat : (d->lazy_refcounts ? "1.1" : NULL);
    if (compat)
        g_string_append_printf(opts, "compat=%s,", compat);
    if (d->lazy_refcounts)
        g_string_append(opts, "lazy_refcounts=on,");
    if ((flags & VOL_CREATE_PREALLOC_METADATA) ||
        (d->has_allocation && d->allocation >= d->capacity && d->capacity > 0))
        g_string_append(opts, "preallocation=metadata,");
    if (opts->len)
        g_string_truncate(opts, opts->len - 1);
    g_autofree char *o = g_string_free(opts, FALSE);
    g_autofree char *size = g_strdup_printf("%" G_GUINT64_FORMAT, d->capacity);
    const char *argv[] = {qemu_img, "create", "-q", "-f", "qcow2", "-o", *o ? o : "compat=1.1",
                          path,     size,     NULL};
    g_autofree char *out = NULL, *err = NULL;
    int status = 0;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDIN_FROM_DEV_NULL, NULL, NULL, &out,
                      &err, &status, error))
        return FALSE;
    if (!g_spawn_check_wait_status(status, NULL))
        return storage_fail(error, FERRY_ERR_OPERATION_FAILED, "qemu-img cannot create '%s': %s",
                            path, g_strstrip(err ? err : ""));
    return TRUE;
}

/* Claims the name (O_EXCL: never over an existing file), then fills it. */
static gboolean create_file(const char *path, const VolDef *d, guint flags, GError **error)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                  d->has_mode ? d->mode : 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return storage_fail(error, FERRY_ERR_STORAGE_VOL_EXIST,
                                "storage volume '%s' exists already", d->name);
        ferry_set_error_errno(error, errno, "cannot create volume '%s'", path);
        return FALSE;
    }
    gboolean ok = TRUE;
    int err = 0;
    if (d->has_mode && fchmod(fd, d->mode) < 0)
        err = errno;
    else if (g_str_equal(d->format, "raw")) {
        if (ftruncate(fd, (off_t)d->capacity) < 0)
            err = errno;
        else if (d->allocation > 0)
            err = posix_fallocate(fd, 0, (off_t)MIN(d->allocation, d->capacity));
    }
    if (err) {
        ferry_set_error_errno(error, err, "cannot create volume '%s'", path);
        ok = FALSE;
    }
    close(fd);
    if (ok && g_str_equal(d->format, "qcow2"))
        ok = run_qemu_img(path, d, flags, error);
    if (!ok)
        unlink(path);
    return ok;
}

gboolean storage_vol_create(const char *dir, const char *xml, guint flags, char **name,
                            GError **error)
{
    if (flags & ~VOL_CREATE_PREALLOC_METADATA)
        return storage_fail(error, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                            "virStorageVolCreateXML flags 0x%x (reflink, validate): not "
                            "supported",
                            flags & ~VOL_CREATE_PREALLOC_METADATA);
    g_auto(VolDef) d = {0};
    if (!vol_def_parse(xml, &d, error))
        return FALSE;
    if ((flags & VOL_CREATE_PREALLOC_METADATA) && !g_str_equal(d.format, "qcow2"))
        return storage_fail(error, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                            "VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA is for qcow2 volumes, "
                            "not '%s'",
                            d.format);
    g_autofree char *path = g_build_filename(dir, d.name, NULL);
    if (!create_file(path, &d, flags, error))
        return FALSE;
    *name = g_steal_pointer(&d.name);
    return TRUE;
}
