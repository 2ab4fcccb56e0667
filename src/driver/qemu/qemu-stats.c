/* Statistics and screenshots of QEMU guests, from QMP and /proc. */
#include "driver/qemu/qemu-stats.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/hv-driver.h"
#include "driver/qemu/qemu-domain.h"
#include "tunnel/tunnel-router.h"
#include "tunnel/tunnel-stream.h"
#include "util/error.h"

/* virDomainMemoryStatTags */
#define MEMORY_STAT_ACTUAL_BALLOON 6
#define MEMORY_STAT_RSS 7
/* virDomainVcpuFlags */
#define VCPU_LIVE 1
#define VCPU_CONFIG 2
#define VCPU_MAXIMUM 4
#define VCPU_GUEST 8
#define VCPU_RUNNING 1 /* virVcpuState */

/* ---- /proc ---- */

typedef struct {
    guint64 user_ns, system_ns;
    int cpu; /* the CPU it last ran on */
} ProcTimes;

/* utime, stime and processor of /proc/.../stat: fields 14, 15 and 39. */
static gboolean proc_times(const char *path, ProcTimes *out)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return FALSE;
    const char *p = strrchr(text, ')'); /* the command name may hold spaces */
    if (!p || !p[1])
        return FALSE;
    g_auto(GStrv) f = g_strsplit(p + 2, " ", 40);
    if (g_strv_length(f) < 37)
        return FALSE;
    guint64 ns_per_tick = G_USEC_PER_SEC * 1000ULL / (guint64)sysconf(_SC_CLK_TCK);
    out->user_ns = g_ascii_strtoull(f[11], NULL, 10) * ns_per_tick;
    out->system_ns = g_ascii_strtoull(f[12], NULL, 10) * ns_per_tick;
    out->cpu = (int)g_ascii_strtoll(f[36], NULL, 10);
    return TRUE;
}

/* VmRSS of /proc/PID/status, in KiB; 0 if unknown. */
static guint64 rss_kib(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", pid);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return 0;
    const char *line = strstr(text, "\nVmRSS:");
    return line ? g_ascii_strtoull(line + 7, NULL, 10) : 0;
}

/* ---- QMP answers ---- */

static JsonArray *qmp_array(VmmProcess *vm, const char *command, JsonNode **keep,
                            GError **error)
{
    *keep = vmm_process_qmp(vm, command, NULL, error);
    if (!*keep)
        return NULL;
    if (!JSON_NODE_HOLDS_ARRAY(*keep)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INTERNAL_ERROR,
                    "QEMU's answer to %s is not a list", command);
        return NULL;
    }
    return json_node_get_array(*keep);
}

static gint64 member_int(JsonObject *o, const char *name)
{
    return o ? json_object_get_int_member_with_default(o, name, 0) : 0;
}

static JsonObject *member_object(JsonObject *o, const char *name)
{
    JsonNode *n = o ? json_object_get_member(o, name) : NULL;
    return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

/* The balloon's size in KiB: QEMU's `actual`, or <currentMemory> when the
 * domain has no balloon device. */
static gboolean balloon_kib(VmmProcess *vm, const QemuDomain *qd, guint64 *out, GError **error)
{
    if (!qd->balloon) {
        *out = qd->current_memory_kib;
        return TRUE;
    }
    g_autoptr(JsonNode) r = vmm_process_qmp(vm, "query-balloon", NULL, error);
    if (!r)
        return FALSE;
    JsonObject *o = JSON_NODE_HOLDS_OBJECT(r) ? json_node_get_object(r) : NULL;
    *out = (guint64)member_int(o, "actual") / 1024;
    return TRUE;
}

/* ---- the domain ---- */

typedef struct {
    DomainObj *obj;
    VmmProcess *vm;  /* NULL while inactive */
    QemuDomain *qd;  /* of the live definition while active */
    const DomainDef *def;
} Target;

static void target_end(Target *t)
{
    qemu_domain_free(t->qd);
    domain_obj_end(t->obj);
}

static gboolean target_begin(Driver *drv, const DriverDomain *dom, gboolean need_active,
                             Target *t, GError **error)
{
    *t = (Target){0};
    t->obj = hv_lookup(hv_driver_of(drv), dom, error);
    if (!t->obj)
        return FALSE;
    if (need_active && !hv_check_active(t->obj, error)) {
        target_end(t);
        return FALSE;
    }
    t->vm = domain_obj_is_active(t->obj) ? qemu_driver_vm_of(t->obj) : NULL;
    t->def = t->vm ? t->obj->live_def : domain_obj_get_def(t->obj);
    t->qd = qemu_domain_new(t->def, error);
    if (!t->qd) {
        target_end(t);
        return FALSE;
    }
    return TRUE;
}

/* ---- CONNECT_GET_ALL_DOMAIN_STATS ---- */

static void G_GNUC_PRINTF(3, 4) add_ullong_f(GPtrArray *params, guint64 value, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *field = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    driver_params_add_ullong(params, field, value);
}

static void stats_cpu(Target *t, GPtrArray *params)
{
    ProcTimes pt = {0};
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", vmm_process_get_pid(t->vm));
    if (!proc_times(path, &pt))
        return;
    driver_params_add_ullong(params, "cpu.time", pt.user_ns + pt.system_ns);
    driver_params_add_ullong(params, "cpu.user", pt.user_ns);
    driver_params_add_ullong(params, "cpu.system", pt.system_ns);
}

static gboolean stats_balloon(Target *t, GPtrArray *params, GError **error)
{
    guint64 current = t->qd->current_memory_kib;
    if (t->vm && !balloon_kib(t->vm, t->qd, &current, error))
        return FALSE;
    driver_params_add_ullong(params, "balloon.current", current);
    driver_params_add_ullong(params, "balloon.maximum", t->qd->memory_kib);
    if (t->vm)
        driver_params_add_ullong(params, "balloon.rss", rss_kib(vmm_process_get_pid(t->vm)));
    return TRUE;
}

static gboolean stats_vcpu(Target *t, GPtrArray *params, GError **error)
{
    if (!t->vm) {
        driver_params_add_uint(params, "vcpu.current", t->qd->vcpus_current);
        driver_params_add_uint(params, "vcpu.maximum", t->qd->vcpus);
        return TRUE;
    }
    g_autoptr(JsonNode) keep = NULL;
    JsonArray *cpus = qmp_array(t->vm, "query-cpus-fast", &keep, error);
    if (!cpus)
        return FALSE;
    driver_params_add_uint(params, "vcpu.current", json_array_get_length(cpus));
    driver_params_add_uint(params, "vcpu.maximum", t->qd->vcpus);
    pid_t pid = vmm_process_get_pid(t->vm);
    for (guint i = 0; i < json_array_get_length(cpus); i++) {
        JsonObject *c = json_array_get_object_element(cpus, i);
        gint64 index = member_int(c, "cpu-index");
        g_autofree char *state = g_strdup_printf("vcpu.%" G_GINT64_FORMAT ".state", index);
        driver_params_add_int(params, state, VCPU_RUNNING);
        g_autofree char *path = g_strdup_printf("/proc/%d/task/%" G_GINT64_FORMAT "/stat", pid,
                                                member_int(c, "thread-id"));
        ProcTimes pt = {0};
        if (proc_times(path, &pt))
            add_ullong_f(params, pt.user_ns + pt.system_ns, "vcpu.%" G_GINT64_FORMAT ".time",
                         index);
    }
    return TRUE;
}

/* A tap's host-side counters are the guest's the other way round. */
static void stats_interface(Target *t, GPtrArray *params)
{
    driver_params_add_uint(params, "net.count", t->qd->nets->len);
    static const char *const counters[][2] = {
        {"rx.bytes", "tx_bytes"}, {"rx.pkts", "tx_packets"}, {"rx.errs", "tx_errors"},
        {"rx.drop", "tx_dropped"}, {"tx.bytes", "rx_bytes"}, {"tx.pkts", "rx_packets"},
        {"tx.errs", "rx_errors"},  {"tx.drop", "rx_dropped"}};
    for (guint i = 0; i < t->qd->nets->len; i++) {
        const QemuNet *n = t->qd->nets->pdata[i];
        if (!n->ifname) /* user networking has no host device to count on */
            continue;
        g_autofree char *field = g_strdup_printf("net.%u.name", i);
        driver_params_add_string(params, field, n->ifname);
        for (guint c = 0; t->vm && c < G_N_ELEMENTS(counters); c++) {
            g_autofree char *path =
                g_strdup_printf("/sys/class/net/%s/statistics/%s", n->ifname, counters[c][1]);
            g_autofree char *text = NULL;
            if (g_file_get_contents(path, &text, NULL, NULL))
                add_ullong_f(params, g_ascii_strtoull(text, NULL, 10), "net.%u.%s", i,
                             counters[c][0]);
        }
    }
}

/* The entry of a QMP block list for the disk: its drive is "drive-<target>". */
static JsonObject *find_drive(JsonArray *list, const QemuDisk *d)
{
    g_autofree char *id = g_strdup_printf("drive-%s", d->target);
    for (guint i = 0; list && i < json_array_get_length(list); i++) {
        JsonObject *o = json_array_get_object_element(list, i);
        if (o && g_strcmp0(json_object_get_string_member_with_default(o, "device", ""), id) == 0)
            return o;
    }
    return NULL;
}

/* A file's blocks in use and its size; a block device's size is where it ends. */
static gboolean source_size(const char *path, guint64 *allocation, guint64 *physical)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return FALSE;
    *allocation = (guint64)st.st_blocks * 512;
    *physical = (guint64)st.st_size;
    if (S_ISBLK(st.st_mode)) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        off_t end = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
        if (fd >= 0)
            close(fd);
        *allocation = *physical = end > 0 ? (guint64)end : 0;
    }
    return TRUE;
}

static gboolean stats_block(Target *t, GPtrArray *params, GError **error)
{
    g_autoptr(JsonNode) keep_stats = NULL, keep_block = NULL;
    JsonArray *bstats = NULL, *blocks = NULL;
    if (t->vm && (!(bstats = qmp_array(t->vm, "query-blockstats", &keep_stats, error)) ||
                  !(blocks = qmp_array(t->vm, "query-block", &keep_block, error))))
        return FALSE;
    driver_params_add_uint(params, "block.count", t->qd->disks->len);
    for (guint i = 0; i < t->qd->disks->len; i++) {
        const QemuDisk *d = t->qd->disks->pdata[i];
        g_autofree char *name = g_strdup_printf("block.%u.name", i);
        driver_params_add_string(params, name, d->target);
        if (d->source) {
            g_autofree char *path = g_strdup_printf("block.%u.path", i);
            driver_params_add_string(params, path, d->source);
        }
        JsonObject *s = member_object(find_drive(bstats, d), "stats");
        if (s) {
            static const char *const fields[][2] = {
                {"rd.reqs", "rd_operations"},  {"rd.bytes", "rd_bytes"},
                {"rd.times", "rd_total_time_ns"}, {"wr.reqs", "wr_operations"},
                {"wr.bytes", "wr_bytes"},      {"wr.times", "wr_total_time_ns"},
                {"fl.reqs", "flush_operations"}, {"fl.times", "flush_total_time_ns"}};
            for (guint f = 0; f < G_N_ELEMENTS(fields); f++)
                add_ullong_f(params, (guint64)member_int(s, fields[f][1]), "block.%u.%s", i,
                             fields[f][0]);
        }
        JsonObject *image = member_object(member_object(find_drive(blocks, d), "inserted"),
                                          "image");
        guint64 allocation = 0, physical = 0;
        if (d->source && source_size(d->source, &allocation, &physical)) {
            add_ullong_f(params, allocation, "block.%u.allocation", i);
            add_ullong_f(params, physical, "block.%u.physical", i);
        }
        if (image)
            add_ullong_f(params, (guint64)member_int(image, "virtual-size"), "block.%u.capacity",
                         i);
    }
    return TRUE;
}

static gboolean qemu_get_stats(Driver *drv, const DriverDomain *dom, guint stats,
                               GPtrArray *params, GError **error)
{
    Target t;
    if (!target_begin(drv, dom, FALSE, &t, error))
        return FALSE;
    gboolean ok = TRUE;
    if (stats & DRIVER_STATS_STATE) {
        int reason = 0;
        int state = domain_obj_get_state(t.obj, &reason);
        driver_params_add_int(params, "state.state", state);
        driver_params_add_int(params, "state.reason", reason);
    }
    if ((stats & DRIVER_STATS_CPU_TOTAL) && t.vm)
        stats_cpu(&t, params);
    if (stats & DRIVER_STATS_BALLOON)
        ok = stats_balloon(&t, params, error);
    if (ok && (stats & DRIVER_STATS_VCPU))
        ok = stats_vcpu(&t, params, error);
    if (ok && (stats & DRIVER_STATS_INTERFACE))
        stats_interface(&t, params);
    if (ok && (stats & DRIVER_STATS_BLOCK))
        ok = stats_block(&t, params, error);
    target_end(&t);
    return ok;
}

/* ---- DOMAIN_MEMORY_STATS, DOMAIN_GET_VCPUS, DOMAIN_GET_VCPUS_FLAGS ---- */

static GArray *qemu_memory_stats(Driver *drv, const DriverDomain *dom, guint flags,
                                 GError **error)
{
    if (flags) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function virDomainMemoryStats", flags);
        return NULL;
    }
    Target t;
    if (!target_begin(drv, dom, TRUE, &t, error))
        return NULL;
    guint64 actual = 0;
    GArray *out = NULL;
    /* Without the guest's balloon driver reporting, these two are all QEMU knows. */
    if (balloon_kib(t.vm, t.qd, &actual, error)) {
        out = g_array_new(FALSE, FALSE, sizeof(DriverMemoryStat));
        DriverMemoryStat s[] = {{MEMORY_STAT_ACTUAL_BALLOON, actual},
                                {MEMORY_STAT_RSS, rss_kib(vmm_process_get_pid(t.vm))}};
        g_array_append_vals(out, s, G_N_ELEMENTS(s));
    }
    target_end(&t);
    return out;
}

static GArray *qemu_get_vcpus(Driver *drv, const DriverDomain *dom, GError **error)
{
    Target t;
    if (!target_begin(drv, dom, TRUE, &t, error))
        return NULL;
    g_autoptr(JsonNode) keep = NULL;
    JsonArray *cpus = qmp_array(t.vm, "query-cpus-fast", &keep, error);
    GArray *out = cpus ? g_array_new(FALSE, TRUE, sizeof(DriverVcpuInfo)) : NULL;
    pid_t pid = t.vm ? vmm_process_get_pid(t.vm) : 0;
    for (guint i = 0; cpus && i < json_array_get_length(cpus); i++) {
        JsonObject *c = json_array_get_object_element(cpus, i);
        pid_t tid = (pid_t)member_int(c, "thread-id");
        DriverVcpuInfo v = {.number = (guint)member_int(c, "cpu-index"),
                            .state = VCPU_RUNNING,
                            .cpu = -1};
        g_autofree char *path = g_strdup_printf("/proc/%d/task/%d/stat", pid, tid);
        ProcTimes pt = {0};
        if (proc_times(path, &pt)) {
            v.cpu_time_ns = pt.user_ns + pt.system_ns;
            v.cpu = pt.cpu;
        }
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(tid, sizeof(set), &set) == 0) {
            for (guint b = 0; b < sizeof(v.cpumap) * 8 && b < CPU_SETSIZE; b++)
                if (CPU_ISSET(b, &set))
                    v.cpumap[b / 8] |= (guint8)(1u << (b % 8));
        }
        g_array_append_val(out, v);
    }
    target_end(&t);
    return out;
}

static int qemu_get_vcpus_flags(Driver *drv, const DriverDomain *dom, guint flags,
                                GError **error)
{
    if (flags & VCPU_GUEST) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_ARGUMENT_UNSUPPORTED,
                    "VIR_DOMAIN_VCPU_GUEST: ferryd has no guest agent to ask");
        return -1;
    }
    if (flags & ~(guint)(VCPU_LIVE | VCPU_CONFIG | VCPU_MAXIMUM)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function virDomainGetVcpusFlags", flags);
        return -1;
    }
    if ((flags & VCPU_LIVE) && (flags & VCPU_CONFIG)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "flags 'affect live' and 'affect config' are mutually exclusive");
        return -1;
    }
    Target t;
    if (!target_begin(drv, dom, (flags & VCPU_LIVE) != 0, &t, error))
        return -1;
    const DomainDef *def = t.def;
    if ((flags & VCPU_CONFIG) && t.obj->persistent_def)
        def = t.obj->persistent_def;
    int n = (flags & VCPU_MAXIMUM) ? (int)def->vcpus
                                   : (int)(def->vcpus_current ? def->vcpus_current : def->vcpus);
    target_end(&t);
    return n;
}

/* ---- DOMAIN_INTERFACE_STATS ---- */

/* The domain's interface whose host device or MAC address is `device`. */
static const QemuNet *find_net(const QemuDomain *qd, const char *device)
{
    for (guint i = 0; i < qd->nets->len; i++) {
        const QemuNet *n = qd->nets->pdata[i];
        if (g_strcmp0(n->ifname, device) == 0 ||
            (n->mac && g_ascii_strcasecmp(n->mac, device) == 0))
            return n;
    }
    return NULL;
}

static gboolean read_net_stats(const char *ifname, DriverInterfaceStats *out, GError **error)
{
    /* A tap's host-side counters are the guest's the other way round. */
    struct {
        const char *file;
        gint64 *value;
    } counters[] = {{"tx_bytes", &out->rx_bytes},   {"tx_packets", &out->rx_packets},
                    {"tx_errors", &out->rx_errs},   {"tx_dropped", &out->rx_drop},
                    {"rx_bytes", &out->tx_bytes},   {"rx_packets", &out->tx_packets},
                    {"rx_errors", &out->tx_errs},   {"rx_dropped", &out->tx_drop}};
    for (guint c = 0; c < G_N_ELEMENTS(counters); c++) {
        g_autofree char *path =
            g_strdup_printf("/sys/class/net/%s/statistics/%s", ifname, counters[c].file);
        g_autofree char *text = NULL;
        g_autoptr(GError) local = NULL;
        if (!g_file_get_contents(path, &text, NULL, &local)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                        "cannot read the counters of interface '%s': %s", ifname,
                        local->message);
            return FALSE;
        }
        *counters[c].value = (gint64)g_ascii_strtoull(text, NULL, 10);
    }
    return TRUE;
}

static gboolean qemu_interface_stats(Driver *drv, const DriverDomain *dom, const char *device,
                                     DriverInterfaceStats *out, GError **error)
{
    Target t;
    if (!target_begin(drv, dom, TRUE, &t, error))
        return FALSE;
    gboolean ok = FALSE;
    const QemuNet *n = find_net(t.qd, device);
    if (!n)
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "invalid path, '%s' is not a known interface", device);
    else if (!n->ifname)
        /* QEMU's user networking has no host device, and QMP has no counters
         * for a netdev; the bridge helper's tap gets a name QEMU picks. */
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_UNSUPPORTED,
                    "interface '%s' of domain '%s' is <interface type='%s'>%s: it has no host "
                    "device whose counters ferryd could read (type='ethernet' with "
                    "<target dev=...> has)",
                    device, domain_obj_get_name(t.obj), n->type,
                    g_str_equal(n->type, "user") ? " (QEMU's user networking)" : "");
    else
        ok = read_net_stats(n->ifname, out, error);
    target_end(&t);
    return ok;
}

/* ---- vCPU pinning: DOMAIN_GET_VCPU_PIN_INFO, DOMAIN_PIN_VCPU(_FLAGS) ----
 * Live only: a running vCPU's affinity is its QEMU thread's
 * (sched_getaffinity, sched_setaffinity on the thread query-cpus-fast
 * names). ferryd keeps no pinning in the domain XML (<cputune>): the config
 * pins every vCPU to every host CPU, and changing it is refused. */

#define AFFECT_LIVE 1u
#define AFFECT_CONFIG 2u

static guint host_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_CONF);
    return (guint)CLAMP(n, 1, (long)sizeof(((DriverVcpuInfo *)NULL)->cpumap) * 8);
}

static void map_all(guint8 *map)
{
    for (guint c = 0; c < host_cpus(); c++)
        map[c / 8] |= (guint8)(1u << (c % 8));
}

/* Which of flags' live and config the call means (CURRENT: the domain's state). */
static gboolean resolve_impact(Target *t, guint flags, const char *function, gboolean *live,
                               GError **error)
{
    if (flags & ~(AFFECT_LIVE | AFFECT_CONFIG)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function %s",
                    flags & ~(AFFECT_LIVE | AFFECT_CONFIG), function);
        return FALSE;
    }
    if ((flags & AFFECT_LIVE) && (flags & AFFECT_CONFIG)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "flags 'affect live' and 'affect config' are mutually exclusive");
        return FALSE;
    }
    *live = (flags & AFFECT_LIVE) || (!(flags & AFFECT_CONFIG) && t->vm);
    if (*live && !t->vm) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID, "domain is not running");
        return FALSE;
    }
    return TRUE;
}

/* query-cpus-fast: each online vCPU's thread, by vCPU index. */
static GHashTable *vcpu_threads(Target *t, GError **error)
{
    g_autoptr(JsonNode) keep = NULL;
    JsonArray *cpus = qmp_array(t->vm, "query-cpus-fast", &keep, error);
    if (!cpus)
        return NULL;
    GHashTable *threads = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (guint i = 0; i < json_array_get_length(cpus); i++) {
        JsonObject *c = json_array_get_object_element(cpus, i);
        g_hash_table_insert(threads, GINT_TO_POINTER((gint)member_int(c, "cpu-index")),
                            GINT_TO_POINTER((gint)member_int(c, "thread-id")));
    }
    return threads;
}

static GArray *qemu_get_vcpu_pin_info(Driver *drv, const DriverDomain *dom, guint flags,
                                      GError **error)
{
    Target t;
    if (!target_begin(drv, dom, FALSE, &t, error))
        return NULL;
    gboolean live = FALSE;
    g_autoptr(GHashTable) threads = NULL;
    GArray *out = NULL;
    if (resolve_impact(&t, flags, "virDomainGetVcpuPinInfo", &live, error) &&
        (!live || (threads = vcpu_threads(&t, error)))) {
        out = g_array_new(FALSE, TRUE, sizeof(DriverVcpuInfo));
        for (guint v = 0; v < t.qd->vcpus; v++) {
            DriverVcpuInfo info = {.number = v, .state = VCPU_RUNNING, .cpu = -1};
            gpointer tid = NULL;
            cpu_set_t set;
            CPU_ZERO(&set);
            if (live && g_hash_table_lookup_extended(threads, GINT_TO_POINTER((gint)v), NULL,
                                                     &tid) &&
                sched_getaffinity(GPOINTER_TO_INT(tid), sizeof(set), &set) == 0) {
                for (guint b = 0; b < sizeof(info.cpumap) * 8 && b < CPU_SETSIZE; b++)
                    if (CPU_ISSET(b, &set))
                        info.cpumap[b / 8] |= (guint8)(1u << (b % 8));
            } else {
                map_all(info.cpumap); /* offline, or the config: anywhere */
            }
            g_array_append_val(out, info);
        }
    }
    target_end(&t);
    return out;
}

static gboolean qemu_pin_vcpu(Driver *drv, const DriverDomain *dom, guint vcpu,
                              const guint8 *cpumap, gsize maplen, guint flags, GError **error)
{
    Target t;
    if (!target_begin(drv, dom, FALSE, &t, error))
        return FALSE;
    gboolean live = FALSE, ok = FALSE;
    g_autoptr(GHashTable) threads = NULL;
    gpointer tid = NULL;
    if (!resolve_impact(&t, flags, "virDomainPinVcpuFlags", &live, error)) {
        /* refused above */
    } else if (!live) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_UNSUPPORTED,
                    "vCPU pinning in the domain's config (VIR_DOMAIN_AFFECT_CONFIG, virsh "
                    "vcpupin --config, <cputune>): ferryd pins running vCPUs only (--live)");
    } else if (!(threads = vcpu_threads(&t, error))) {
        /* QMP failed */
    } else if (!g_hash_table_lookup_extended(threads, GINT_TO_POINTER((gint)vcpu), NULL,
                                             &tid)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "vcpu %u is out of range of live cpu count %u", vcpu,
                    g_hash_table_size(threads));
    } else {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (gsize b = 0; b < maplen * 8 && b < CPU_SETSIZE; b++)
            if (cpumap[b / 8] & (1u << (b % 8)))
                CPU_SET(b, &set);
        if (CPU_COUNT(&set) == 0)
            g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                        "an empty CPU map for vcpu %u: it must run somewhere", vcpu);
        else if (sched_setaffinity(GPOINTER_TO_INT(tid), sizeof(set), &set) < 0)
            ferry_set_error_errno(error, errno, "cannot pin vcpu %u of domain '%s'", vcpu,
                                  domain_obj_get_name(t.obj));
        else
            ok = TRUE;
    }
    target_end(&t);
    return ok;
}

/* ---- DOMAIN_SCREENSHOT ---- */

static gboolean take_screenshot(HvDriver *hv, Target *t, guint screen, TunnelBinding *binding,
                                GError **error)
{
    if (!t->qd->video) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_INVALID,
                    "domain '%s' has no video device to take a screenshot of",
                    domain_obj_get_name(t->obj));
        return FALSE;
    }
    if (screen != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "no screen %u: the domain's video device has one (screen 0)", screen);
        return FALSE;
    }
    g_autofree char *path = domain_store_runtime_path(hv->store, t->obj->instance_id,
                                                      ".screendump");
    JsonObject *args = json_object_new();
    json_object_set_string_member(args, "filename", path);
    g_autoptr(JsonNode) r = vmm_process_qmp(t->vm, "screendump", args, error);
    json_object_unref(args);
    if (!r)
        return FALSE;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int saved = errno;
    unlink(path); /* the stream reads it through the fd */
    if (fd < 0) {
        ferry_set_error_errno(error, saved, "cannot open QEMU's screen dump %s", path);
        return FALSE;
    }
    /* The client reads the file as a plain libvirt stream, then it ends. */
    TunnelStreamConfig cfg = {.role = TUNNEL_ROLE_SERVER,
                              .packet_size = 65536,
                              .window = 65536,
                              .send_queue_limit = 262144,
                              .peer_name = "screenshot client",
                              .vmm_name = "screen dump"};
    TunnelStream *ts = tunnel_stream_new(tunnel_binding_get_connection(binding),
                                         tunnel_binding_get_header(binding), fd, &cfg);
    tunnel_binding_attach(binding, ts);
    tunnel_stream_start(ts);
    tunnel_stream_unref(ts); /* its pumps keep it until it ends */
    return TRUE;
}

static gboolean qemu_screenshot(Driver *drv, const DriverDomain *dom, guint screen, guint flags,
                                TunnelBinding *binding, char **mime, GError **error)
{
    Target t;
    gboolean ok = FALSE;
    if (flags) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function virDomainScreenshot", flags);
    } else if (target_begin(drv, dom, TRUE, &t, error)) {
        ok = take_screenshot(hv_driver_of(drv), &t, screen, binding, error);
        target_end(&t);
    }
    if (!ok) {
        tunnel_binding_cancel(binding);
        return FALSE;
    }
    *mime = g_strdup("image/x-portable-pixmap"); /* QEMU's screendump writes PPM */
    return TRUE;
}

void qemu_stats_install_ops(DriverOps *ops)
{
    ops->get_stats = qemu_get_stats;
    ops->memory_stats = qemu_memory_stats;
    ops->get_vcpus = qemu_get_vcpus;
    ops->get_vcpus_flags = qemu_get_vcpus_flags;
    ops->interface_stats = qemu_interface_stats;
    ops->get_vcpu_pin_info = qemu_get_vcpu_pin_info;
    ops->pin_vcpu = qemu_pin_vcpu;
    ops->screenshot = qemu_screenshot;
}
