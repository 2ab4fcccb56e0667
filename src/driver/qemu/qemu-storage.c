/* QEMU's part in disks without shared storage (migration-storage.h):
 *
 * destination: the images are made with qemu-img when missing; the incoming
 * QEMU keeps its guest paused after the stream (`stop` while in migration,
 * capability late-block-activate: the images are taken over at `cont`) and
 * exports each disk, writable, on an NBD server at a UNIX socket ferryd
 * owns (nbd-server-start, block-export-add); nbd-server-stop ends it.
 *
 * source: each disk is mirrored (blockdev-mirror, sync full, or top with
 * --copy-storage-inc) into an NBD node whose connection is a socket ferryd
 * passed (getfd, server type fd): the other end is the disk's channel. The
 * jobs are not dismissed automatically, so a failed one keeps its error
 * until it is read. Completing a ready mirror with block-job-cancel leaves
 * the target a copy as of that moment (the guest is paused then); the
 * source's disk is only ever read. */
#include "driver/qemu/qemu-storage.h"

#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "driver/qemu/qemu-domain.h"
#include "driver/vmm-process.h"
#include "util/error.h"
#include "util/log.h"

#define FERRY_LOG_MODULE "qemu.storage"

#define JOB_PREFIX "ferry-mirror-"
#define QMP_FD_TIMEOUT_MS 10000
#define JOB_END_WAIT_MS 10000
#define QEMU_IMG_TIMEOUT_S 60

static JsonNode *qmp(gpointer vm, const char *command, JsonObject *args, GError **error)
{
    JsonNode *r = vmm_process_qmp(vm, command, args, error);
    if (args)
        json_object_unref(args);
    return r;
}

static gboolean run(gpointer vm, const char *command, JsonObject *args, GError **error)
{
    g_autoptr(JsonNode) r = qmp(vm, command, args, error);
    return r != NULL;
}

static const char *str_member(JsonObject *o, const char *name)
{
    return o && json_object_has_member(o, name) &&
                   JSON_NODE_HOLDS_VALUE(json_object_get_member(o, name))
               ? json_object_get_string_member(o, name)
               : NULL;
}

static JsonObject *obj_member(JsonObject *o, const char *name)
{
    return o && json_object_has_member(o, name) &&
                   JSON_NODE_HOLDS_OBJECT(json_object_get_member(o, name))
               ? json_object_get_object_member(o, name)
               : NULL;
}

static guint64 u64_member(JsonObject *o, const char *name)
{
    if (!o || !json_object_has_member(o, name))
        return 0;
    gint64 v = json_object_get_int_member(o, name);
    return v < 0 ? 0 : (guint64)v;
}

/* The driver names each disk's drive "drive-TARGET" (qemu-command.c). */
static const char *target_of(const char *device)
{
    return device && g_str_has_prefix(device, "drive-") ? device + 6 : NULL;
}

/* ---- source ---- */

static GPtrArray *list_disks(gpointer vm, gboolean inc, GError **error)
{
    g_autoptr(JsonNode) r = qmp(vm, "query-block", NULL, error);
    if (!r)
        return NULL;
    JsonArray *devs = JSON_NODE_HOLDS_ARRAY(r) ? json_node_get_array(r) : NULL;
    GPtrArray *disks = migration_disks_new();
    for (guint i = 0; devs && i < json_array_get_length(devs); i++) {
        JsonObject *d = json_array_get_object_element(devs, i);
        JsonObject *ins = obj_member(d, "inserted");
        JsonObject *image = obj_member(ins, "image");
        const char *target = target_of(str_member(d, "device"));
        /* Read-only disks and cdroms stay where they are, as libvirt leaves them. */
        if (!target || !image || json_object_get_boolean_member_with_default(ins, "ro", FALSE))
            continue;
        MigrationDisk *disk = migration_disk_new();
        disk->target = g_strdup(target);
        disk->format = g_strdup(str_member(ins, "drv"));
        disk->path = g_strdup(str_member(ins, "file"));
        disk->capacity = u64_member(image, "virtual-size");
        if (inc) {
            const char *backing = str_member(image, "full-backing-filename");
            disk->backing = g_strdup(backing ? backing : str_member(image, "backing-filename"));
            disk->backing_format = g_strdup(str_member(image, "backing-filename-format"));
            if (disk->backing && !disk->backing_format) {
                JsonObject *bimage = obj_member(image, "backing-image");
                disk->backing_format = g_strdup(str_member(bimage, "format"));
            }
        }
        g_ptr_array_add(disks, disk);
    }
    return disks;
}

static gboolean mirror(gpointer vm, const MigrationDisk *disk, const MigrationEndpoint *ep,
                       gboolean inc, GError **error)
{
    g_autofree char *name = g_strconcat(JOB_PREFIX, disk->target, NULL);
    g_autofree char *device = g_strconcat("drive-", disk->target, NULL);
    gboolean passed =
        qmp_client_pass_fd(vmm_process_get_qmp(vm), name, ep->fd, QMP_FD_TIMEOUT_MS, error);
    close(ep->fd);
    if (!passed)
        return FALSE;
    JsonObject *server = json_object_new();
    json_object_set_string_member(server, "type", "fd");
    json_object_set_string_member(server, "str", name);
    JsonObject *add = json_object_new();
    json_object_set_string_member(add, "driver", "nbd");
    json_object_set_string_member(add, "node-name", name);
    json_object_set_object_member(add, "server", server);
    json_object_set_string_member(add, "export", disk->target);
    if (!run(vm, "blockdev-add", add, error)) {
        JsonObject *close_args = json_object_new();
        json_object_set_string_member(close_args, "fdname", name);
        run(vm, "closefd", close_args, NULL);
        return FALSE;
    }
    JsonObject *m = json_object_new();
    json_object_set_string_member(m, "job-id", name);
    json_object_set_string_member(m, "device", device);
    json_object_set_string_member(m, "target", name);
    json_object_set_string_member(m, "sync", inc ? "top" : "full");
    json_object_set_boolean_member(m, "auto-dismiss", FALSE);
    if (!run(vm, "blockdev-mirror", m, error)) {
        JsonObject *del = json_object_new();
        json_object_set_string_member(del, "node-name", name);
        run(vm, "blockdev-del", del, NULL);
        return FALSE;
    }
    return TRUE;
}

/* Our mirror jobs, as query-jobs reports them. */
static JsonArray *our_jobs(gpointer vm, JsonNode **holder, GError **error)
{
    *holder = qmp(vm, "query-jobs", NULL, error);
    if (!*holder)
        return NULL;
    JsonArray *jobs = JSON_NODE_HOLDS_ARRAY(*holder) ? json_node_get_array(*holder) : NULL;
    if (!jobs) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "QEMU answered query-jobs without a list");
        return NULL;
    }
    JsonArray *ours = json_array_new();
    for (guint i = 0; i < json_array_get_length(jobs); i++) {
        JsonObject *j = json_array_get_object_element(jobs, i);
        const char *id = str_member(j, "id");
        if (id && g_str_has_prefix(id, JOB_PREFIX))
            json_array_add_object_element(ours, json_object_ref(j));
    }
    return ours;
}

static gboolean progress(gpointer vm, guint64 *total, guint64 *copied, gboolean *ready,
                         GError **error)
{
    g_autoptr(JsonNode) holder = NULL;
    g_autoptr(JsonArray) jobs = our_jobs(vm, &holder, error);
    if (!jobs)
        return FALSE;
    *total = *copied = 0;
    *ready = json_array_get_length(jobs) > 0;
    for (guint i = 0; i < json_array_get_length(jobs); i++) {
        JsonObject *j = json_array_get_object_element(jobs, i);
        const char *status = str_member(j, "status");
        const char *err = str_member(j, "error");
        const char *target = str_member(j, "id") + strlen(JOB_PREFIX);
        if (err || g_strcmp0(status, "concluded") == 0 || g_strcmp0(status, "aborting") == 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "the mirror of disk '%s' ended: %s", target, err ? err : status);
            return FALSE;
        }
        *total += u64_member(j, "total-progress");
        *copied += u64_member(j, "current-progress");
        *ready = *ready && g_strcmp0(status, "ready") == 0;
    }
    return TRUE;
}

/* Ends every mirror (force: at once, the target left as it is; else a ready
 * mirror completes with the target a copy of the source now) and lets go of
 * the targets. FALSE with the first job's error. */
static gboolean end_mirrors(gpointer vm, gboolean force, GError **error)
{
    g_autoptr(GError) first = NULL;
    g_autoptr(JsonNode) holder = NULL;
    g_autoptr(JsonArray) jobs = our_jobs(vm, &holder, force ? NULL : error);
    if (!jobs)
        return force;
    g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < json_array_get_length(jobs); i++) {
        JsonObject *j = json_array_get_object_element(jobs, i);
        g_ptr_array_add(ids, g_strdup(str_member(j, "id")));
        if (g_strcmp0(str_member(j, "status"), "concluded") == 0)
            continue;
        JsonObject *args = json_object_new();
        json_object_set_string_member(args, "device", str_member(j, "id"));
        json_object_set_boolean_member(args, "force", force);
        g_autoptr(GError) e = NULL;
        if (!run(vm, "block-job-cancel", args, &e) && !first)
            first = g_steal_pointer(&e);
    }
    /* Each job concludes once its last writes reached the target. */
    gint64 deadline = g_get_monotonic_time() + JOB_END_WAIT_MS * 1000LL;
    for (;;) {
        g_autoptr(JsonNode) h = NULL;
        g_autoptr(JsonArray) now = our_jobs(vm, &h, NULL);
        gboolean settled = TRUE;
        for (guint i = 0; now && i < json_array_get_length(now); i++) {
            JsonObject *j = json_array_get_object_element(now, i);
            if (g_strcmp0(str_member(j, "status"), "concluded") != 0)
                settled = FALSE;
            else if (str_member(j, "error") && !first)
                first = g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                                    "the mirror of disk '%s' failed: %s",
                                    str_member(j, "id") + strlen(JOB_PREFIX),
                                    str_member(j, "error"));
        }
        if (!now || settled)
            break;
        if (g_get_monotonic_time() > deadline) {
            if (!first)
                first = g_error_new(FERRY_ERROR, FERRY_ERR_OPERATION_TIMEOUT,
                                    "the disk mirrors did not end within %d s",
                                    JOB_END_WAIT_MS / 1000);
            break;
        }
        g_usleep(20 * 1000);
    }
    for (guint i = 0; i < ids->len; i++) {
        g_autoptr(GError) e = NULL;
        JsonObject *args = json_object_new();
        json_object_set_string_member(args, "id", ids->pdata[i]);
        if (!run(vm, "job-dismiss", args, &e))
            FERRY_WARN("cannot dismiss the disk mirror %s: %s", (char *)ids->pdata[i], e->message);
        g_clear_error(&e);
        JsonObject *del = json_object_new();
        json_object_set_string_member(del, "node-name", ids->pdata[i]);
        if (!run(vm, "blockdev-del", del, &e))
            FERRY_WARN("cannot remove the mirror target %s: %s", (char *)ids->pdata[i], e->message);
    }
    if (first && !force) {
        g_propagate_error(error, g_steal_pointer(&first));
        return FALSE;
    }
    return TRUE;
}

static gboolean complete(gpointer vm, GError **error)
{
    return end_mirrors(vm, FALSE, error);
}

static void cancel(gpointer vm)
{
    end_mirrors(vm, TRUE, NULL);
}

/* ---- destination ---- */

static gboolean qemu_img_create(const MigrationDisk *src, const char *path, gboolean inc,
                                GError **error)
{
    g_autofree char *size = g_strdup_printf("%" G_GUINT64_FORMAT, src->capacity);
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_ptr_array_add(argv, "qemu-img");
    g_ptr_array_add(argv, "create");
    g_ptr_array_add(argv, "-q");
    g_ptr_array_add(argv, "-f");
    g_ptr_array_add(argv, src->format);
    if (inc && src->backing) {
        g_ptr_array_add(argv, "-b");
        g_ptr_array_add(argv, src->backing);
        if (src->backing_format) {
            g_ptr_array_add(argv, "-F");
            g_ptr_array_add(argv, src->backing_format);
        }
    }
    g_ptr_array_add(argv, (gpointer)path);
    g_ptr_array_add(argv, size);
    g_ptr_array_add(argv, NULL);
    g_autofree char *out = NULL, *err = NULL;
    int status = 0;
    g_autoptr(GError) e = NULL;
    if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out,
                      &err, &status, &e)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "cannot run qemu-img to create %s: %s", path, e->message);
        return FALSE;
    }
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_strstrip(err);
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "qemu-img cannot create %s: %s", path, *err ? err : "failed");
        g_unlink(path); /* whatever it left */
        return FALSE;
    }
    return TRUE;
}

static gboolean create_images(DomainObj *obj, GPtrArray *disks, gboolean inc,
                              GPtrArray *created, GError **error)
{
    g_autoptr(QemuDomain) dom = qemu_domain_new(obj->live_def, error);
    if (!dom)
        return FALSE;
    for (guint i = 0; i < disks->len; i++) {
        MigrationDisk *src = disks->pdata[i];
        const QemuDisk *mine = NULL;
        for (guint j = 0; j < dom->disks->len && !mine; j++)
            if (g_str_equal(((QemuDisk *)dom->disks->pdata[j])->target, src->target))
                mine = dom->disks->pdata[j];
        if (!mine || mine->cdrom || mine->readonly || !mine->source) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                        "the destination's definition has no writable disk '%s' to copy into",
                        src->target);
            return FALSE;
        }
        if (!g_str_equal(mine->format, src->format)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                        "disk '%s' is %s on the source but %s in the destination's definition",
                        src->target, src->format, mine->format);
            return FALSE;
        }
        g_free(src->path);
        src->path = g_strdup(mine->source);
        if (g_file_test(mine->source, G_FILE_TEST_EXISTS))
            continue; /* the destination's own image, as libvirt uses one */
        if (mine->block) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "disk '%s': the block device %s does not exist on the destination",
                        src->target, mine->source);
            return FALSE;
        }
        if (inc && src->backing && !g_file_test(src->backing, G_FILE_TEST_EXISTS)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "disk '%s': its backing file %s is not on the destination "
                        "(--copy-storage-inc copies the top image only)",
                        src->target, src->backing);
            return FALSE;
        }
        if (!qemu_img_create(src, mine->source, inc, error))
            return FALSE;
        g_ptr_array_add(created, g_strdup(mine->source));
    }
    return TRUE;
}

static gboolean export_disks(gpointer vm, const char *socket_path, GPtrArray *disks,
                             GError **error)
{
    /* In migration, `stop` only turns autostart off: the guest stays paused
     * after the stream, and with late-block-activate QEMU takes its images
     * over at `cont`, after the export (which writes them) ended. */
    if (!run(vm, "stop", NULL, error))
        return FALSE;
    JsonObject *cap = json_object_new();
    json_object_set_string_member(cap, "capability", "late-block-activate");
    json_object_set_boolean_member(cap, "state", TRUE);
    JsonArray *caps = json_array_new();
    json_array_add_object_element(caps, cap);
    JsonObject *cargs = json_object_new();
    json_object_set_array_member(cargs, "capabilities", caps);
    if (!run(vm, "migrate-set-capabilities", cargs, error))
        return FALSE;
    g_autoptr(JsonNode) blocks = qmp(vm, "query-block", NULL, error);
    if (!blocks)
        return FALSE;
    JsonObject *data = json_object_new();
    json_object_set_string_member(data, "path", socket_path);
    JsonObject *addr = json_object_new();
    json_object_set_string_member(addr, "type", "unix");
    json_object_set_object_member(addr, "data", data);
    JsonObject *sargs = json_object_new();
    json_object_set_object_member(sargs, "addr", addr);
    if (!run(vm, "nbd-server-start", sargs, error))
        return FALSE;
    JsonArray *devs = JSON_NODE_HOLDS_ARRAY(blocks) ? json_node_get_array(blocks) : NULL;
    for (guint i = 0; i < disks->len; i++) {
        const MigrationDisk *disk = disks->pdata[i];
        const char *node = NULL;
        for (guint j = 0; devs && j < json_array_get_length(devs) && !node; j++) {
            JsonObject *d = json_array_get_object_element(devs, j);
            if (g_strcmp0(target_of(str_member(d, "device")), disk->target) == 0)
                node = str_member(obj_member(d, "inserted"), "node-name");
        }
        if (!node) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "QEMU has no image for disk '%s'", disk->target);
            return FALSE;
        }
        g_autofree char *id = g_strconcat("ferry-export-", disk->target, NULL);
        JsonObject *e = json_object_new();
        json_object_set_string_member(e, "type", "nbd");
        json_object_set_string_member(e, "id", id);
        json_object_set_string_member(e, "node-name", node);
        json_object_set_string_member(e, "name", disk->target);
        json_object_set_boolean_member(e, "writable", TRUE);
        if (!run(vm, "block-export-add", e, error))
            return FALSE;
    }
    return TRUE;
}

static gboolean unexport(gpointer vm, GError **error)
{
    return run(vm, "nbd-server-stop", NULL, error);
}

void qemu_storage_hooks_init(MigrationHooks *hooks)
{
    hooks->storage_list = list_disks;
    hooks->storage_create = create_images;
    hooks->storage_export = export_disks;
    hooks->storage_unexport = unexport;
    hooks->storage_mirror = mirror;
    hooks->storage_progress = progress;
    hooks->storage_complete = complete;
    hooks->storage_cancel = cancel;
}
