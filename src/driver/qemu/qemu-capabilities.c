/* The installed QEMU's machine types, CPU models and device types, and the
 * domain capabilities document built from them. */
#include "driver/qemu/qemu-capabilities.h"

#include <gio/gio.h>
#include <json-glib/json-glib.h>
#include <string.h>

#include "driver/domain-def.h"
#include "util/error.h"

typedef struct {
    char *name;
    char *alias; /* "pc" for pc-i440fx-7.2; NULL if none */
    guint cpu_max;
} QemuMachine;

typedef struct {
    char *name;
    gboolean usable; /* under TCG: QEMU emulates every feature it names */
} QemuCpuModel;

struct QemuCaps {
    char *emulator;
    GMutex lock;
    gboolean probed;
    GArray *machines;   /* QemuMachine; the default first */
    GArray *cpu_models; /* QemuCpuModel */
    GHashTable *types;  /* device type names (a set) */
};

static void machine_clear(gpointer p)
{
    QemuMachine *m = p;
    g_free(m->name);
    g_free(m->alias);
}

static void cpu_model_clear(gpointer p)
{
    g_free(((QemuCpuModel *)p)->name);
}

QemuCaps *qemu_caps_new(const char *emulator)
{
    QemuCaps *caps = g_new0(QemuCaps, 1);
    caps->emulator = g_strdup(emulator);
    g_mutex_init(&caps->lock);
    caps->machines = g_array_new(FALSE, TRUE, sizeof(QemuMachine));
    g_array_set_clear_func(caps->machines, machine_clear);
    caps->cpu_models = g_array_new(FALSE, TRUE, sizeof(QemuCpuModel));
    g_array_set_clear_func(caps->cpu_models, cpu_model_clear);
    caps->types = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return caps;
}

void qemu_caps_free(QemuCaps *caps)
{
    if (!caps)
        return;
    g_free(caps->emulator);
    g_mutex_clear(&caps->lock);
    g_array_unref(caps->machines);
    g_array_unref(caps->cpu_models);
    g_hash_table_unref(caps->types);
    g_free(caps);
}

/* ---- the probe ---------------------------------------------------------- */

/* The QMP conversation with a `-machine none` QEMU on its stdin/stdout: the
 * answers come back in order, one JSON object a line, after the greeting. */
static const char probe_script[] =
    "{\"execute\":\"qmp_capabilities\"}\n"
    "{\"execute\":\"query-machines\"}\n"
    "{\"execute\":\"query-cpu-definitions\"}\n"
    "{\"execute\":\"qom-list-types\",\"arguments\":{\"implements\":\"device\","
    "\"abstract\":false}}\n"
    "{\"execute\":\"quit\"}\n";

enum { ANSWER_CAPABILITIES, ANSWER_MACHINES, ANSWER_CPUS, ANSWER_TYPES, ANSWER_COUNT };

static void add_machines(QemuCaps *caps, JsonArray *list)
{
    for (guint i = 0; i < json_array_get_length(list); i++) {
        JsonObject *o = json_array_get_object_element(list, i);
        const char *name = o ? json_object_get_string_member_with_default(o, "name", NULL) : NULL;
        if (!name || g_str_equal(name, "none"))
            continue;
        QemuMachine m = {
            .name = g_strdup(name),
            .alias = g_strdup(json_object_get_string_member_with_default(o, "alias", NULL)),
            .cpu_max = (guint)json_object_get_int_member_with_default(o, "cpu-max", 1),
        };
        if (json_object_get_boolean_member_with_default(o, "is-default", FALSE))
            g_array_prepend_val(caps->machines, m);
        else
            g_array_append_val(caps->machines, m);
    }
}

static void add_cpu_models(QemuCaps *caps, JsonArray *list)
{
    for (guint i = 0; i < json_array_get_length(list); i++) {
        JsonObject *o = json_array_get_object_element(list, i);
        const char *name = o ? json_object_get_string_member_with_default(o, "name", NULL) : NULL;
        if (!name || g_str_equal(name, "host") || g_str_equal(name, "max") ||
            g_str_equal(name, "base"))
            continue; /* not models: <cpu mode=...> names host and max */
        JsonArray *missing = json_object_has_member(o, "unavailable-features")
                                 ? json_object_get_array_member(o, "unavailable-features")
                                 : NULL;
        QemuCpuModel c = {.name = g_strdup(name),
                          .usable = missing && json_array_get_length(missing) == 0};
        g_array_append_val(caps->cpu_models, c);
    }
}

static void add_types(QemuCaps *caps, JsonArray *list)
{
    for (guint i = 0; i < json_array_get_length(list); i++) {
        JsonObject *o = json_array_get_object_element(list, i);
        const char *name = o ? json_object_get_string_member_with_default(o, "name", NULL) : NULL;
        if (name)
            g_hash_table_add(caps->types, g_strdup(name));
    }
}

static gboolean probe(QemuCaps *caps, GError **error)
{
    const char *argv[] = {caps->emulator, "-machine", "none", "-accel", "tcg", "-nodefaults",
                          "-nographic", "-no-user-config", "-S", "-qmp", "stdio", NULL};
    g_autoptr(GSubprocess) p = g_subprocess_newv(
        argv, G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                  G_SUBPROCESS_FLAGS_STDERR_SILENCE,
        error);
    g_autofree char *out = NULL;
    if (!p || !g_subprocess_communicate_utf8(p, probe_script, NULL, &out, NULL, error))
        return FALSE;
    g_auto(GStrv) lines = g_strsplit(out ? out : "", "\n", -1);
    JsonArray *answers[ANSWER_COUNT] = {0};
    g_autoptr(GPtrArray) parsers = g_ptr_array_new_with_free_func(g_object_unref);
    guint n = 0;
    for (guint i = 0; lines[i] && n < ANSWER_COUNT; i++) {
        JsonParser *parser = json_parser_new();
        g_ptr_array_add(parsers, parser);
        if (!*lines[i] || !json_parser_load_from_data(parser, lines[i], -1, NULL))
            continue;
        JsonNode *root = json_parser_get_root(parser);
        JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
        if (!o || json_object_has_member(o, "QMP") || json_object_has_member(o, "event"))
            continue;
        JsonNode *ret = json_object_get_member(o, "return");
        answers[n++] = ret && JSON_NODE_HOLDS_ARRAY(ret) ? json_node_get_array(ret) : NULL;
    }
    if (n < ANSWER_COUNT || !answers[ANSWER_MACHINES] || !answers[ANSWER_CPUS] ||
        !answers[ANSWER_TYPES]) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED,
                    "cannot read the machine types, CPU models and devices of %s over QMP",
                    caps->emulator);
        return FALSE;
    }
    add_machines(caps, answers[ANSWER_MACHINES]);
    add_cpu_models(caps, answers[ANSWER_CPUS]);
    add_types(caps, answers[ANSWER_TYPES]);
    return TRUE;
}

static gboolean ensure_probed(QemuCaps *caps, GError **error)
{
    g_mutex_lock(&caps->lock);
    gboolean ok = caps->probed || probe(caps, error);
    caps->probed = ok;
    g_mutex_unlock(&caps->lock);
    return ok;
}

/* ---- the document ------------------------------------------------------- */

static const QemuMachine *find_machine(QemuCaps *caps, const char *name)
{
    for (guint i = 0; i < caps->machines->len; i++) {
        const QemuMachine *m = &g_array_index(caps->machines, QemuMachine, i);
        if (!name || g_str_equal(m->name, name) || g_strcmp0(m->alias, name) == 0)
            return m;
    }
    return NULL;
}

static gboolean refuse(GError **error, const char *what, const char *value, const char *why)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                "%s '%s' is not supported by the QEMU driver: %s", what, value, why);
    return FALSE;
}

static gboolean check_filters(QemuCaps *caps, const char *kvm_problem, const char *emulatorbin,
                              const char *arch, const char *machine, const char *virttype,
                              guint flags, GError **error)
{
    if (flags) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "unsupported flags (0x%x) in function get_domain_capabilities", flags);
        return FALSE;
    }
    if (virttype && !g_str_equal(virttype, "qemu") && !g_str_equal(virttype, "kvm"))
        return refuse(error, "virttype", virttype, "it runs 'qemu' and 'kvm' domains");
    if (virttype && g_str_equal(virttype, "kvm") && kvm_problem)
        return refuse(error, "virttype", virttype, kvm_problem);
    if (arch && !g_str_equal(arch, "x86_64") && !g_str_equal(arch, "i686"))
        return refuse(error, "architecture", arch, "it runs x86_64 and i686");
    if (emulatorbin && !g_str_equal(emulatorbin, caps->emulator)) {
        g_autofree char *base = g_path_get_basename(caps->emulator);
        if (!g_str_equal(emulatorbin, base))
            return refuse(error, "emulator", emulatorbin, caps->emulator);
    }
    if (machine && !find_machine(caps, machine))
        return refuse(error, "machine type", machine, "the emulator has no such machine");
    return TRUE;
}

static void enum_values(GString *g, const char *indent, const char *name,
                        const char *const *values)
{
    if (!values[0]) {
        g_string_append_printf(g, "%s<enum name='%s'/>\n", indent, name);
        return;
    }
    g_string_append_printf(g, "%s<enum name='%s'>\n", indent, name);
    for (guint i = 0; values[i]; i++)
        g_string_append_printf(g, "%s  <value>%s</value>\n", indent, values[i]);
    g_string_append_printf(g, "%s</enum>\n", indent);
}

/* The values of a qemu-domain.c choice whose QEMU device this QEMU has:
 * pairs of (XML value, device type or NULL for none needed). */
static void enum_if_present(QemuCaps *caps, GString *g, const char *indent, const char *name,
                            const char *const *pairs)
{
    g_autoptr(GPtrArray) values = g_ptr_array_new();
    for (guint i = 0; pairs[i]; i += 2)
        if (!pairs[i + 1] || g_hash_table_contains(caps->types, pairs[i + 1]))
            g_ptr_array_add(values, (gpointer)pairs[i]);
    g_ptr_array_add(values, NULL);
    enum_values(g, indent, name, (const char *const *)values->pdata);
}

static void format_cpu(QemuCaps *caps, GString *g, gboolean kvm)
{
    g_string_append(g, "  <cpu>\n");
    /* Under TCG there is no host CPU to pass through or to copy. */
    g_string_append_printf(g, "    <mode name='host-passthrough' supported='%s'/>\n",
                           kvm ? "yes" : "no");
    g_string_append(g, "    <mode name='maximum' supported='yes'/>\n"
                       "    <mode name='host-model' supported='no'/>\n"
                       "    <mode name='custom' supported='yes'>\n");
    for (guint i = 0; i < caps->cpu_models->len; i++) {
        const QemuCpuModel *c = &g_array_index(caps->cpu_models, QemuCpuModel, i);
        g_autofree char *name = g_markup_escape_text(c->name, -1);
        /* The probe ran TCG: under KVM the host CPU decides, unasked. */
        const char *usable = kvm ? "unknown" : c->usable ? "yes" : "no";
        g_string_append_printf(g, "      <model usable='%s'>%s</model>\n", usable, name);
    }
    g_string_append(g, "    </mode>\n  </cpu>\n");
}

static void format_devices(QemuCaps *caps, GString *g)
{
    static const char *const disk_devices[] = {"disk", "ide-hd", "cdrom", "ide-cd", NULL};
    static const char *const disk_buses[] = {"ide",  "ide-hd",          "scsi", "virtio-scsi-pci",
                                             "virtio", "virtio-blk-pci", "sata", "ich9-ahci",
                                             NULL};
    static const char *const none[] = {NULL};
    static const char *const graphics[] = {"vnc", NULL};
    static const char *const videos[] = {"vga",    "VGA",        "cirrus", "cirrus-vga",
                                         "virtio", "virtio-vga", "bochs",  "bochs-display",
                                         "none",   NULL,         NULL};
    static const char *const rng_models[] = {"virtio", "virtio-rng-pci", NULL};
    static const char *const rng_backends[] = {"random", NULL};
    static const char *const channels[] = {"unix", "virtio-serial-pci", NULL};
    const char *in = "      ";
    g_string_append(g, "  <devices>\n    <disk supported='yes'>\n");
    enum_if_present(caps, g, in, "diskDevice", disk_devices);
    enum_if_present(caps, g, in, "bus", disk_buses);
    enum_values(g, in, "model", none);
    g_string_append(g, "    </disk>\n    <graphics supported='yes'>\n");
    enum_values(g, in, "type", graphics);
    g_string_append(g, "    </graphics>\n    <video supported='yes'>\n");
    enum_if_present(caps, g, in, "modelType", videos);
    g_string_append(g, "    </video>\n"
                       "    <hostdev supported='no'/>\n");
    gboolean rng = g_hash_table_contains(caps->types, "virtio-rng-pci");
    g_string_append_printf(g, "    <rng supported='%s'>\n", rng ? "yes" : "no");
    enum_if_present(caps, g, in, "model", rng_models);
    enum_values(g, in, "backendModel", rng_backends);
    g_string_append(g, "    </rng>\n"
                       "    <filesystem supported='no'/>\n"
                       "    <tpm supported='no'/>\n"
                       "    <redirdev supported='no'/>\n"
                       "    <channel supported='yes'>\n");
    enum_if_present(caps, g, in, "type", channels);
    g_string_append(g, "    </channel>\n"
                       "    <crypto supported='no'/>\n"
                       "  </devices>\n");
}

char *qemu_caps_domain_capabilities(QemuCaps *caps, const char *kvm_problem,
                                    const char *emulatorbin, const char *arch,
                                    const char *machine, const char *virttype, guint flags,
                                    GError **error)
{
    if (!ensure_probed(caps, error) ||
        !check_filters(caps, kvm_problem, emulatorbin, arch, machine, virttype, flags, error))
        return NULL;
    const QemuMachine *m = find_machine(caps, machine);
    if (!m) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_FAILED, "%s has no machine types",
                    caps->emulator);
        return NULL;
    }
    /* libvirt's default: KVM where it can run, else TCG. */
    gboolean kvm = virttype ? g_str_equal(virttype, "kvm") : kvm_problem == NULL;
    g_autofree char *path = g_markup_escape_text(caps->emulator, -1);
    g_autofree char *mname = g_markup_escape_text(m->name, -1);
    GString *g = g_string_new(NULL);
    g_string_append_printf(g,
                           "<domainCapabilities>\n"
                           "  <path>%s</path>\n"
                           "  <domain>%s</domain>\n"
                           "  <machine>%s</machine>\n"
                           "  <arch>%s</arch>\n"
                           "  <vcpu max='%u'/>\n"
                           "  <iothreads supported='no'/>\n"
                           "  <os supported='yes'>\n"
                           "    <enum name='firmware'/>\n"
                           "    <loader supported='no'/>\n"
                           "  </os>\n",
                           path, kvm ? "kvm" : "qemu", mname, arch ? arch : "x86_64",
                           MIN(m->cpu_max, (guint)DOMAIN_MAX_VCPUS));
    format_cpu(caps, g, kvm);
    g_string_append(g, "  <memoryBacking supported='no'/>\n");
    format_devices(caps, g);
    g_string_append(g, "  <features>\n"
                       "    <gic supported='no'/>\n"
                       "    <vmcoreinfo supported='no'/>\n"
                       "    <genid supported='no'/>\n"
                       "    <backingStoreInput supported='no'/>\n"
                       "    <backup supported='no'/>\n"
                       "    <sev supported='no'/>\n"
                       "    <sgx supported='no'/>\n"
                       "  </features>\n"
                       "</domainCapabilities>\n");
    return g_string_free(g, FALSE);
}
