/* Domain XML <-> DomainDef. Parsing validates what ferry models and keeps every
 * other element as XML, so `virsh dumpxml | virsh define` loses nothing. */
#include "driver/domain-def.h"

#include "util/error.h"
#include "util/log.h"

#include <libxml/parser.h>
#include <string.h>
#include <sys/utsname.h>

#define FERRY_LOG_MODULE "driver.domain-def"

/* Where unmodelled XML is written back: libvirt's element order, so the output
 * reads like libvirt's. Each group is a wrapper element in the kept document. */
typedef enum {
    GROUP_AFTER_UUID,       /* genid */
    GROUP_BEFORE_MEMORY,    /* maxMemory */
    GROUP_BEFORE_VCPU,      /* blkiotune, memtune, memoryBacking */
    GROUP_BEFORE_OS,        /* vcpus, iothreads, cputune, ..., bootloader */
    GROUP_BEFORE_LIFECYCLE, /* idmap, features, cpu, clock */
    GROUP_BEFORE_DEVICES,   /* on_lockfailure, pm, perf */
    GROUP_END,              /* seclabel, keywrap, launchSecurity, anything unknown */
    GROUP_OS_EXTRA,         /* children of <os> other than <type> */
    GROUP_METADATA,         /* namespaced <metadata> children other than ferry's */
    GROUP_DEVICES,          /* the <devices> element itself */
    N_GROUPS,
} KeptGroup;

/* Lifetime: owned by its DomainDef; doc owns every kept node. */
struct _DomainDefKept {
    xmlDoc *doc;
    xmlNode *group[N_GROUPS];
};

static const struct {
    const char *name;
    KeptGroup group;
} kept_placement[] = {
    {"genid", GROUP_AFTER_UUID},
    {"maxMemory", GROUP_BEFORE_MEMORY},
    {"blkiotune", GROUP_BEFORE_VCPU},
    {"memtune", GROUP_BEFORE_VCPU},
    {"memoryBacking", GROUP_BEFORE_VCPU},
    {"vcpus", GROUP_BEFORE_OS},
    {"iothreads", GROUP_BEFORE_OS},
    {"iothreadids", GROUP_BEFORE_OS},
    {"defaultiothread", GROUP_BEFORE_OS},
    {"cputune", GROUP_BEFORE_OS},
    {"numatune", GROUP_BEFORE_OS},
    {"resource", GROUP_BEFORE_OS},
    {"throttlegroups", GROUP_BEFORE_OS},
    {"sysinfo", GROUP_BEFORE_OS},
    {"bootloader", GROUP_BEFORE_OS},
    {"bootloader_args", GROUP_BEFORE_OS},
    {"idmap", GROUP_BEFORE_LIFECYCLE},
    {"features", GROUP_BEFORE_LIFECYCLE},
    {"cpu", GROUP_BEFORE_LIFECYCLE},
    {"clock", GROUP_BEFORE_LIFECYCLE},
    {"on_lockfailure", GROUP_BEFORE_DEVICES},
    {"pm", GROUP_BEFORE_DEVICES},
    {"perf", GROUP_BEFORE_DEVICES},
};

/* libvirt's OS types: hvm is what ferry runs, the others are refused as
 * unsupported rather than as malformed. */
static const char *const known_os_types[] = {"hvm", "xen", "linux", "exe", "xenpvh"};

/* libvirt's architecture names (virArch). */
static const char *const known_archs[] = {
    "aarch64",  "alpha",        "armv6l",   "armv7b",    "armv7l",  "cris",     "i686",
    "ia64",     "lm32",         "loongarch64", "m68k",   "microblaze", "microblazeel",
    "mips",     "mipsel",       "mips64",   "mips64el",  "openrisc", "parisc",  "parisc64",
    "ppc",      "ppcle",        "ppc64",    "ppc64le",   "ppcemb",  "riscv32",  "riscv64",
    "s390",     "s390x",        "sh4",      "sh4eb",     "sparc",   "sparc64",  "unicore32",
    "x86_64",   "xtensa",       "xtensaeb",
};

static const char *const lifecycle_names[] = {
    [DOMAIN_LIFECYCLE_DESTROY] = "destroy",
    [DOMAIN_LIFECYCLE_RESTART] = "restart",
    [DOMAIN_LIFECYCLE_RENAME_RESTART] = "rename-restart",
    [DOMAIN_LIFECYCLE_PRESERVE] = "preserve",
    [DOMAIN_LIFECYCLE_COREDUMP_DESTROY] = "coredump-destroy",
    [DOMAIN_LIFECYCLE_COREDUMP_RESTART] = "coredump-restart",
};

const char *domain_lifecycle_action_to_string(DomainLifecycleAction action)
{
    if ((guint)action >= G_N_ELEMENTS(lifecycle_names))
        return "destroy";
    return lifecycle_names[action];
}

static gboolean G_GNUC_PRINTF(2, 3) xml_fail(GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(error, FERRY_ERROR, FERRY_ERR_XML_ERROR, msg);
    return FALSE;
}

static void xml_init_once(void)
{
    static gsize done = 0;
    if (g_once_init_enter(&done)) {
        /* libxml2 wants its globals set up once before threads use it. */
        xmlInitParser();
        g_once_init_leave(&done, 1);
    }
}

static const char *host_arch(void)
{
    static gsize init = 0;
    static char arch[65];
    if (g_once_init_enter(&init)) {
        struct utsname u;
        const char *m = uname(&u) == 0 ? u.machine : "x86_64";
        if (g_str_equal(m, "i386") || g_str_equal(m, "i486") || g_str_equal(m, "i586"))
            m = "i686";
        else if (g_str_equal(m, "amd64"))
            m = "x86_64";
        else if (g_str_equal(m, "arm64"))
            m = "aarch64";
        g_strlcpy(arch, m, sizeof(arch));
        g_once_init_leave(&init, 1);
    }
    return arch;
}

/* ---- kept XML ---------------------------------------------------------- */

static DomainDefKept *kept_new(void)
{
    DomainDefKept *kept = g_new0(DomainDefKept, 1);
    kept->doc = xmlNewDoc(BAD_CAST "1.0");
    xmlNode *root = xmlNewDocNode(kept->doc, NULL, BAD_CAST "kept", NULL);
    xmlDocSetRootElement(kept->doc, root);
    for (int g = 0; g < N_GROUPS; g++)
        kept->group[g] = xmlNewChild(root, NULL, BAD_CAST "group", NULL);
    return kept;
}

static DomainDefKept *kept_copy(const DomainDefKept *src)
{
    DomainDefKept *kept = g_new0(DomainDefKept, 1);
    kept->doc = xmlCopyDoc(src->doc, 1);
    /* The groups are the root's element children, in creation order. */
    int g = 0;
    for (xmlNode *n = xmlDocGetRootElement(kept->doc)->children; n; n = n->next)
        if (n->type == XML_ELEMENT_NODE && g < N_GROUPS)
            kept->group[g++] = n;
    g_assert(g == N_GROUPS);
    return kept;
}

static void kept_free(DomainDefKept *kept)
{
    if (!kept)
        return;
    xmlFreeDoc(kept->doc);
    g_free(kept);
}

/* Copies node (with its subtree) into a group. libxml2 declares on the copy
 * every namespace it inherited from ancestors that are not copied, so the copy
 * stands alone. */
static void kept_add(DomainDefKept *kept, KeptGroup group, xmlNode *node)
{
    xmlNode *copy = xmlDocCopyNode(node, kept->doc, 1);
    xmlAddChild(kept->group[group], copy);
}

static gboolean kept_group_empty(const DomainDefKept *kept, KeptGroup group)
{
    return kept->group[group]->children == NULL;
}

/* ---- small parsing helpers ---------------------------------------------- */

static gboolean is_element(const xmlNode *n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && n->ns == NULL && xmlStrEqual(n->name, BAD_CAST name);
}

/* The element's text, as given (NULL never: "" for an empty element). */
static char *node_text(const xmlNode *n)
{
    xmlChar *c = xmlNodeGetContent(n);
    char *s = g_strdup(c ? (const char *)c : "");
    xmlFree(c);
    return s;
}

static char *node_text_stripped(const xmlNode *n)
{
    return g_strstrip(node_text(n));
}

static char *node_attr(const xmlNode *n, const char *name)
{
    xmlChar *v = xmlGetNoNsProp(n, BAD_CAST name);
    char *s = v ? g_strdup((const char *)v) : NULL;
    xmlFree(v);
    return s;
}

/* Decimal digits only: no sign, no hex, no trailing garbage. */
static gboolean parse_u64(const char *s, guint64 *out)
{
    if (!s || !g_ascii_isdigit(*s))
        return FALSE;
    guint64 v = 0;
    for (; *s; s++) {
        if (!g_ascii_isdigit(*s))
            return FALSE;
        guint d = (guint)(*s - '0');
        if (v > (G_MAXUINT64 - d) / 10)
            return FALSE;
        v = v * 10 + d;
    }
    *out = v;
    return TRUE;
}

/* libvirt's size units, case-insensitive: "b"/"bytes", a bare prefix letter
 * or "<letter>iB" is a power of 1024, "<letter>B" a power of 1000. */
static gboolean unit_scale(const char *unit, guint64 *scale)
{
    static const char prefixes[] = "kmgtpe";
    if (g_ascii_strcasecmp(unit, "b") == 0 || g_ascii_strcasecmp(unit, "byte") == 0 ||
        g_ascii_strcasecmp(unit, "bytes") == 0) {
        *scale = 1;
        return TRUE;
    }
    if (!unit[0])
        return FALSE;
    const char *p = strchr(prefixes, g_ascii_tolower(unit[0]));
    if (!p)
        return FALSE;
    guint64 base;
    if (unit[1] == '\0' || g_ascii_strcasecmp(unit + 1, "iB") == 0)
        base = 1024;
    else if (g_ascii_tolower(unit[1]) == 'b' && unit[2] == '\0')
        base = 1000;
    else
        return FALSE;
    guint64 s = 1;
    for (const char *q = prefixes; q <= p; q++)
        s *= base;
    *scale = s;
    return TRUE;
}

gboolean domain_parse_size(const char *text, guint64 *bytes, const char *what, GError **error)
{
    g_autofree char *s = g_strstrip(g_strdup(text ? text : ""));
    const char *unit = s;
    while (g_ascii_isdigit(*unit))
        unit++;
    g_autofree char *digits = g_strndup(s, (gsize)(unit - s));
    while (g_ascii_isspace(*unit))
        unit++;

    guint64 value, scale = 1;
    if (!parse_u64(digits, &value))
        return xml_fail(error, "invalid value '%s' for %s: expected a number with an optional unit",
                        s, what);
    if (*unit && !unit_scale(unit, &scale))
        return xml_fail(error, "invalid value '%s' for %s: unknown unit '%s'", s, what, unit);
    if (value > G_MAXUINT64 / scale)
        return xml_fail(error, "invalid value '%s' for %s: too large", s, what);
    *bytes = value * scale;
    return TRUE;
}

/* <memory unit='..'>N</memory> in KiB, rounded up like libvirt. */
static gboolean parse_memory(const xmlNode *n, guint64 *kib, GError **error)
{
    const char *el = (const char *)n->name;
    g_autofree char *text = node_text_stripped(n);
    g_autofree char *unit = node_attr(n, "unit");
    guint64 value, scale = 1024;

    if (!parse_u64(text, &value))
        return xml_fail(error, "invalid value '%s' for <%s>: expected a number", text, el);
    if (unit && !unit_scale(unit, &scale))
        return xml_fail(error, "unknown unit '%s' in <%s unit='%s'>", unit, el, unit);
    /* Bytes must fit a signed 64-bit value, so KiB * 1024 never overflows. */
    if (value > (guint64)G_MAXINT64 / scale)
        return xml_fail(error, "invalid value '%s' for <%s>: too large", text, el);
    *kib = (value * scale + 1023) / 1024;
    return TRUE;
}

static gboolean parse_lifecycle(const xmlNode *n, gboolean crash, DomainLifecycleAction *out,
                                GError **error)
{
    g_autofree char *text = node_text_stripped(n);
    guint last = crash ? DOMAIN_LIFECYCLE_COREDUMP_RESTART : DOMAIN_LIFECYCLE_PRESERVE;
    for (guint a = 0; a <= last; a++) {
        if (g_str_equal(text, lifecycle_names[a])) {
            *out = (DomainLifecycleAction)a;
            return TRUE;
        }
    }
    return xml_fail(error, "invalid value '%s' for <%s>: expected %s", text,
                    (const char *)n->name,
                    crash ? "destroy, restart, rename-restart, preserve, coredump-destroy or "
                            "coredump-restart"
                          : "destroy, restart, rename-restart or preserve");
}

static gboolean str_in(const char *s, const char *const *list, gsize n)
{
    for (gsize i = 0; i < n; i++)
        if (g_str_equal(s, list[i]))
            return TRUE;
    return FALSE;
}

/* ---- element parsers ----------------------------------------------------- */

static gboolean parse_name(DomainDef *def, const xmlNode *n, GError **error)
{
    /* Not stripped: "vm1 " is a different name, as in libvirt. */
    g_autofree char *name = node_text(n);
    if (!name[0])
        return xml_fail(error, "empty <name> element in domain XML");
    if (strchr(name, '/'))
        return xml_fail(error, "invalid value '%s' for <name>: a domain name cannot contain '/'",
                        name);
    for (const char *p = name; *p; p++) {
        if ((guchar)*p < 0x20 || *p == 0x7f) {
            g_autofree char *shown = g_strescape(name, NULL);
            return xml_fail(error,
                            "invalid value '%s' for <name>: a domain name cannot contain control "
                            "characters",
                            shown);
        }
    }
    def->name = g_steal_pointer(&name);
    return TRUE;
}

static gboolean parse_uuid(DomainDef *def, const xmlNode *n, gboolean *given, GError **error)
{
    g_autofree char *text = node_text_stripped(n);
    if (!text[0]) /* libvirt generates one for an empty element too */
        return TRUE;
    *given = TRUE;
    if (!ferry_uuid_parse(text, def->uuid, NULL))
        return xml_fail(error,
                        "invalid value '%s' for <uuid>: expected a UUID such as "
                        "'c7a5fdbd-edaf-9455-926a-d65c16db1809'",
                        text);
    return TRUE;
}

static gboolean parse_vcpu(DomainDef *def, const xmlNode *n, GError **error)
{
    g_autofree char *text = node_text_stripped(n);
    g_autofree char *placement = node_attr(n, "placement");
    g_autofree char *current = node_attr(n, "current");
    guint64 v;

    if (!parse_u64(text, &v))
        return xml_fail(error, "invalid value '%s' for <vcpu>: expected a number", text);
    if (v == 0)
        return xml_fail(error, "invalid value '0' for <vcpu>: a domain needs at least one vCPU");
    if (v > DOMAIN_MAX_VCPUS) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                    "%" G_GUINT64_FORMAT " vCPUs requested in <vcpu>, ferry supports at most %d",
                    v, DOMAIN_MAX_VCPUS);
        return FALSE;
    }
    def->vcpus = (guint)v;
    def->vcpus_current = def->vcpus;

    if (current) {
        guint64 c;
        g_strstrip(current);
        if (!parse_u64(current, &c) || c == 0 || c > v)
            return xml_fail(error,
                            "invalid value '%s' for attribute 'current' of <vcpu>: expected a "
                            "number from 1 to %u",
                            current, def->vcpus);
        def->vcpus_current = (guint)c;
    }
    if (placement) {
        if (g_str_equal(placement, "static"))
            def->vcpu_placement = DOMAIN_VCPU_PLACEMENT_STATIC;
        else if (g_str_equal(placement, "auto"))
            def->vcpu_placement = DOMAIN_VCPU_PLACEMENT_AUTO;
        else
            return xml_fail(error,
                            "invalid value '%s' for attribute 'placement' of <vcpu>: expected "
                            "'static' or 'auto'",
                            placement);
    }
    def->vcpu_cpuset = node_attr(n, "cpuset");
    return TRUE;
}

static gboolean parse_os(DomainDef *def, xmlNode *os, GError **error)
{
    gboolean seen_type = FALSE;
    for (xmlNode *n = os->children; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        if (!is_element(n, "type")) {
            kept_add(def->kept, GROUP_OS_EXTRA, n);
            continue;
        }
        if (seen_type)
            return xml_fail(error, "duplicate <type> element in <os>");
        seen_type = TRUE;

        g_autofree char *type = node_text_stripped(n);
        g_autofree char *arch = node_attr(n, "arch");
        if (type[0] && !g_str_equal(type, "hvm")) {
            if (str_in(type, known_os_types, G_N_ELEMENTS(known_os_types))) {
                g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                            "OS type '%s' in <os><type> is not supported: ferry runs hvm guests",
                            type);
                return FALSE;
            }
            return xml_fail(error, "invalid value '%s' for <os><type>: expected 'hvm'", type);
        }
        if (arch) {
            if (!str_in(arch, known_archs, G_N_ELEMENTS(known_archs))) {
                g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                            "unknown architecture '%s' in <os><type arch='%s'>", arch, arch);
                return FALSE;
            }
            g_free(def->os_arch);
            def->os_arch = g_steal_pointer(&arch);
        }
        def->os_machine = node_attr(n, "machine");
    }
    return TRUE;
}

static gboolean parse_workload(DomainDef *def, const xmlNode *n, GError **error)
{
    g_autofree char *rate = node_attr(n, "dirty-rate");
    g_autofree char *pattern = node_attr(n, "pattern");
    g_autofree char *seed = node_attr(n, "seed");

    if (rate && !domain_parse_size(rate, &def->workload.dirty_rate,
                                   "attribute 'dirty-rate' of <ferry:workload>", error))
        return FALSE;
    if (pattern) {
        if (g_str_equal(pattern, "random"))
            def->workload.pattern = DOMAIN_WORKLOAD_RANDOM;
        else if (g_str_equal(pattern, "sequential"))
            def->workload.pattern = DOMAIN_WORKLOAD_SEQUENTIAL;
        else
            return xml_fail(error,
                            "invalid value '%s' for attribute 'pattern' of <ferry:workload>: "
                            "expected 'random' or 'sequential'",
                            pattern);
    }
    if (seed && !parse_u64(g_strstrip(seed), &def->workload.seed))
        return xml_fail(error,
                        "invalid value '%s' for attribute 'seed' of <ferry:workload>: expected "
                        "a number",
                        seed);
    return TRUE;
}

/* libvirt's rules for <metadata>: children without a namespace are dropped and
 * only the first child of each namespace is kept (the metadata APIs address
 * one element per namespace). ferry's own namespace is parsed. */
static gboolean parse_metadata(DomainDef *def, xmlNode *md, GError **error)
{
    gboolean seen_workload = FALSE;
    /* Namespaces kept so far: a set, so a document with many children stays
     * linear (a list scan per child was quadratic: 4 MiB took minutes). */
    g_autoptr(GHashTable) kept_ns = g_hash_table_new(g_str_hash, g_str_equal);
    for (xmlNode *k = def->kept->group[GROUP_METADATA]->children; k; k = k->next)
        if (k->ns && k->ns->href)
            g_hash_table_add(kept_ns, (gpointer)k->ns->href);
    for (xmlNode *n = md->children; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        if (!n->ns || !n->ns->href) {
            FERRY_DEBUG("dropping <%s> from <metadata>: it has no namespace", n->name);
            continue;
        }
        if (xmlStrEqual(n->ns->href, BAD_CAST DOMAIN_FERRY_NS_HREF)) {
            if (!xmlStrEqual(n->name, BAD_CAST "workload"))
                return xml_fail(error, "unknown element <%s:%s> in <metadata>",
                                DOMAIN_FERRY_NS_PREFIX, (const char *)n->name);
            if (seen_workload)
                return xml_fail(error, "duplicate <%s:workload> element in <metadata>",
                                DOMAIN_FERRY_NS_PREFIX);
            seen_workload = TRUE;
            if (!parse_workload(def, n, error))
                return FALSE;
            continue;
        }
        if (g_hash_table_contains(kept_ns, n->ns->href)) {
            FERRY_DEBUG("dropping a second <metadata> element of namespace %s", n->ns->href);
            continue;
        }
        kept_add(def->kept, GROUP_METADATA, n);
        g_hash_table_add(kept_ns, (gpointer)n->ns->href);
    }
    return TRUE;
}

static DomainDef *domain_def_new_defaults(void)
{
    DomainDef *def = g_new0(DomainDef, 1);
    def->kept = kept_new();
    def->vcpu_placement = DOMAIN_VCPU_PLACEMENT_STATIC;
    def->os_type = g_strdup("hvm");
    def->os_arch = g_strdup(host_arch());
    def->on_poweroff = DOMAIN_LIFECYCLE_DESTROY;
    def->on_reboot = DOMAIN_LIFECYCLE_RESTART;
    def->on_crash = DOMAIN_LIFECYCLE_DESTROY;
    def->workload.pattern = DOMAIN_WORKLOAD_RANDOM;
    return def;
}

/* Elements ferry models; each may appear once. */
typedef enum {
    EL_NAME,
    EL_UUID,
    EL_TITLE,
    EL_DESCRIPTION,
    EL_METADATA,
    EL_MEMORY,
    EL_CURRENT_MEMORY,
    EL_VCPU,
    EL_OS,
    EL_ON_POWEROFF,
    EL_ON_REBOOT,
    EL_ON_CRASH,
    EL_DEVICES,
    N_ELS,
} ModelledElement;

static const char *const modelled_names[N_ELS] = {
    "name", "uuid",  "title",      "description", "metadata", "memory",  "currentMemory",
    "vcpu", "os",    "on_poweroff", "on_reboot",  "on_crash", "devices",
};

/* What the checks after the last element need to know. */
typedef struct {
    gboolean seen[N_ELS];
    gboolean has_uuid;
    gboolean has_current;
} ParseState;

static gboolean parse_child(DomainDef *def, ModelledElement el, xmlNode *n, ParseState *ps,
                            GError **error)
{
    switch (el) {
    case EL_NAME:
        return parse_name(def, n, error);
    case EL_UUID:
        return parse_uuid(def, n, &ps->has_uuid, error);
    case EL_TITLE: {
        g_autofree char *t = node_text(n);
        if (strchr(t, '\n'))
            return xml_fail(error, "invalid value for <title>: a title cannot contain a newline");
        def->title = t[0] ? g_steal_pointer(&t) : NULL;
        return TRUE;
    }
    case EL_DESCRIPTION: {
        g_autofree char *d = node_text(n);
        def->description = d[0] ? g_steal_pointer(&d) : NULL;
        return TRUE;
    }
    case EL_METADATA:
        return parse_metadata(def, n, error);
    case EL_MEMORY:
        return parse_memory(n, &def->memory_kib, error);
    case EL_CURRENT_MEMORY:
        ps->has_current = TRUE;
        return parse_memory(n, &def->current_memory_kib, error);
    case EL_VCPU:
        return parse_vcpu(def, n, error);
    case EL_OS:
        return parse_os(def, n, error);
    case EL_ON_POWEROFF:
        return parse_lifecycle(n, FALSE, &def->on_poweroff, error);
    case EL_ON_REBOOT:
        return parse_lifecycle(n, FALSE, &def->on_reboot, error);
    case EL_ON_CRASH:
        return parse_lifecycle(n, TRUE, &def->on_crash, error);
    case EL_DEVICES:
        kept_add(def->kept, GROUP_DEVICES, n);
        return TRUE;
    case N_ELS:
        break;
    }
    g_assert_not_reached();
}

static KeptGroup kept_group_for(const xmlNode *n)
{
    if (n->ns == NULL)
        for (gsize i = 0; i < G_N_ELEMENTS(kept_placement); i++)
            if (xmlStrEqual(n->name, BAD_CAST kept_placement[i].name))
                return kept_placement[i].group;
    return GROUP_END;
}

static gboolean valid_virt_type(const char *t)
{
    if (!t[0])
        return FALSE;
    for (; *t; t++)
        if (!g_ascii_isalnum(*t) && *t != '_' && *t != '-')
            return FALSE;
    return TRUE;
}

DomainDef *domain_def_parse_node(xmlNode *root, GError **error)
{
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    xml_init_once();

    if (!root || root->type != XML_ELEMENT_NODE) {
        xml_fail(error, "expected <domain> as root element, found nothing");
        return NULL;
    }
    if (!is_element(root, "domain")) {
        if (root->ns && root->ns->prefix)
            xml_fail(error, "expected <domain> as root element, found <%s:%s>",
                     (const char *)root->ns->prefix, (const char *)root->name);
        else
            xml_fail(error, "expected <domain> as root element, found <%s>",
                     (const char *)root->name);
        return NULL;
    }

    g_autoptr(DomainDef) def = domain_def_new_defaults();
    def->virt_type = node_attr(root, "type");
    if (!def->virt_type) {
        xml_fail(error, "missing attribute 'type' in <domain>");
        return NULL;
    }
    if (!valid_virt_type(def->virt_type)) {
        xml_fail(error, "invalid value '%s' for attribute 'type' of <domain>", def->virt_type);
        return NULL;
    }

    ParseState ps = {{FALSE}};
    for (xmlNode *n = root->children; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue; /* text, comments and PIs between elements are layout */
        int el = -1;
        if (n->ns == NULL)
            for (int i = 0; i < N_ELS; i++)
                if (xmlStrEqual(n->name, BAD_CAST modelled_names[i]))
                    el = i;
        if (el < 0) {
            kept_add(def->kept, kept_group_for(n), n);
            continue;
        }
        if (ps.seen[el]) {
            xml_fail(error, "duplicate <%s> element in domain XML", modelled_names[el]);
            return NULL;
        }
        ps.seen[el] = TRUE;
        if (!parse_child(def, (ModelledElement)el, n, &ps, error))
            return NULL;
    }

    if (!ps.seen[EL_NAME]) {
        xml_fail(error, "missing <name> element in domain XML");
        return NULL;
    }
    if (!ps.seen[EL_MEMORY]) {
        xml_fail(error, "missing <memory> element in domain XML");
        return NULL;
    }
    if (def->memory_kib == 0) {
        xml_fail(error, "invalid value '0' for <memory>: a domain needs memory");
        return NULL;
    }
    /* libvirt treats a zero balloon as "not set". */
    if (!ps.has_current || def->current_memory_kib == 0)
        def->current_memory_kib = def->memory_kib;
    if (def->current_memory_kib > def->memory_kib) {
        xml_fail(error,
                 "<currentMemory> (%" G_GUINT64_FORMAT " KiB) may not exceed <memory> (%" G_GUINT64_FORMAT
                 " KiB)",
                 def->current_memory_kib, def->memory_kib);
        return NULL;
    }
    if (!ps.seen[EL_VCPU])
        def->vcpus = def->vcpus_current = 1;
    if (!ps.has_uuid)
        ferry_uuid_generate(def->uuid);
    return g_steal_pointer(&def);
}

static void discard_generic_error(void *ctx, const char *msg, ...)
{
}

xmlDoc *domain_xml_read(const char *data, gsize len, const char *what, GError **error)
{
    xml_init_once();
    /* Some errors (an input encoding that cannot convert the bytes) go to
     * libxml2's generic channel, stderr by default, whatever the parse
     * options: the text of a client or a peer would reach the daemon's log.
     * The channel is per thread; the parse error below still says why. */
    xmlSetGenericErrorFunc(NULL, discard_generic_error);
    if (len > G_MAXINT) {
        xml_fail(error, "%s is too large", what);
        return NULL;
    }
    xmlParserCtxt *ctxt = xmlNewParserCtxt();
    if (!ctxt)
        g_error("out of memory creating an XML parser");
    /* NONET: never fetch anything; NOCDATA: CDATA becomes plain text. No
     * entity substitution and no DTD loading. Errors are collected, not printed. */
    int options = XML_PARSE_NONET | XML_PARSE_NOCDATA | XML_PARSE_NOERROR | XML_PARSE_NOWARNING;
    xmlDoc *doc = xmlCtxtReadMemory(ctxt, data ? data : "", (int)len, "ferry.xml", NULL, options);
    if (!doc) {
        const xmlError *e = xmlCtxtGetLastError(ctxt);
        g_autofree char *msg = g_strdup(e && e->message ? e->message : "cannot parse");
        g_strstrip(msg);
        xml_fail(error, "malformed %s at line %d: %s", what, e ? e->line : 0, msg);
    } else if (doc->intSubset) {
        xml_fail(error, "a DOCTYPE is not allowed in %s", what);
        g_clear_pointer(&doc, xmlFreeDoc);
    }
    xmlFreeParserCtxt(ctxt);
    return doc;
}

DomainDef *domain_def_parse_string(const char *xml, GError **error)
{
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    xmlDoc *doc = domain_xml_read(xml, xml ? strlen(xml) : 0, "domain XML", error);
    if (!doc)
        return NULL;
    DomainDef *def = domain_def_parse_node(xmlDocGetRootElement(doc), error);
    xmlFreeDoc(doc);
    return def;
}

/* ---- formatting ---------------------------------------------------------- */

static void append_escaped(GString *buf, const char *s, gboolean attr)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            g_string_append(buf, "&amp;");
            break;
        case '<':
            g_string_append(buf, "&lt;");
            break;
        case '>':
            g_string_append(buf, "&gt;");
            break;
        case '\'':
            g_string_append(buf, attr ? "&apos;" : "'");
            break;
        case '"':
            g_string_append(buf, attr ? "&quot;" : "\"");
            break;
        case '\r':
            g_string_append(buf, "&#13;");
            break;
        /* A parser normalises raw newlines and tabs in attribute values to
         * spaces; character references survive. */
        case '\n':
            g_string_append(buf, attr ? "&#10;" : "\n");
            break;
        case '\t':
            g_string_append(buf, attr ? "&#9;" : "\t");
            break;
        default:
            g_string_append_c(buf, *s);
        }
    }
}

void domain_xml_append_attr(GString *buf, const char *name, const char *value)
{
    g_string_append_printf(buf, " %s='", name);
    append_escaped(buf, value, TRUE);
    g_string_append_c(buf, '\'');
}

static void append_indent(GString *buf, int indent)
{
    for (int i = 0; i < indent; i++)
        g_string_append_c(buf, ' ');
}

/* <name>text</name> on its own line. */
static void append_text_element(GString *buf, int indent, const char *name, const char *text)
{
    append_indent(buf, indent);
    g_string_append_printf(buf, "<%s>", name);
    append_escaped(buf, text, FALSE);
    g_string_append_printf(buf, "</%s>\n", name);
}

static void append_qname(GString *buf, const xmlNs *ns, const xmlChar *name)
{
    if (ns && ns->prefix)
        g_string_append_printf(buf, "%s:", (const char *)ns->prefix);
    g_string_append(buf, (const char *)name);
}

static gboolean is_blank_text(const xmlNode *n)
{
    if (n->type != XML_TEXT_NODE && n->type != XML_CDATA_SECTION_NODE)
        return FALSE;
    for (const xmlChar *p = n->content; p && *p; p++)
        if (!g_ascii_isspace(*p))
            return FALSE;
    return TRUE;
}

static void format_kept_node(GString *buf, const xmlNode *node, int indent, gboolean pretty);

static void format_kept_children(GString *buf, const xmlNode *node, int indent, gboolean pretty)
{
    for (const xmlNode *c = node->children; c; c = c->next) {
        if (pretty && is_blank_text(c))
            continue;
        format_kept_node(buf, c, indent, pretty);
    }
}

/* Writes a kept node the way libvirt's XML looks. An element whose children are
 * only elements and layout whitespace is re-indented; one with text among its
 * children (mixed content) is written exactly as parsed, since there the
 * whitespace is data. */
static void format_kept_node(GString *buf, const xmlNode *node, int indent, gboolean pretty)
{
    switch (node->type) {
    case XML_TEXT_NODE:
    case XML_CDATA_SECTION_NODE:
        append_escaped(buf, (const char *)node->content, FALSE);
        return;
    case XML_COMMENT_NODE:
        if (pretty)
            append_indent(buf, indent);
        g_string_append_printf(buf, "<!--%s-->", (const char *)node->content);
        if (pretty)
            g_string_append_c(buf, '\n');
        return;
    case XML_ELEMENT_NODE:
        break;
    default:
        return; /* processing instructions, entity references: not kept */
    }

    if (pretty)
        append_indent(buf, indent);
    g_string_append_c(buf, '<');
    append_qname(buf, node->ns, node->name);
    for (const xmlNs *ns = node->nsDef; ns; ns = ns->next) {
        if (ns->prefix) {
            g_autofree char *attr = g_strdup_printf("xmlns:%s", (const char *)ns->prefix);
            domain_xml_append_attr(buf, attr, (const char *)ns->href);
        } else {
            domain_xml_append_attr(buf, "xmlns", (const char *)ns->href);
        }
    }
    for (const xmlAttr *a = node->properties; a; a = a->next) {
        g_string_append_c(buf, ' ');
        append_qname(buf, a->ns, a->name);
        /* inLine = 1: the raw value, which we escape ourselves. */
        xmlChar *v = xmlNodeListGetString(node->doc, a->children, 1);
        g_string_append(buf, "='");
        append_escaped(buf, (const char *)v, TRUE);
        g_string_append_c(buf, '\'');
        xmlFree(v);
    }

    gboolean has_content = FALSE, mixed = FALSE;
    for (const xmlNode *c = node->children; c; c = c->next) {
        if (is_blank_text(c))
            continue;
        has_content = TRUE;
        if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE)
            mixed = TRUE;
    }
    if (!has_content && (pretty || !node->children)) {
        g_string_append(buf, "/>");
    } else if (pretty && !mixed) {
        g_string_append(buf, ">\n");
        format_kept_children(buf, node, indent + 2, TRUE);
        append_indent(buf, indent);
        g_string_append(buf, "</");
        append_qname(buf, node->ns, node->name);
        g_string_append_c(buf, '>');
    } else {
        g_string_append_c(buf, '>');
        format_kept_children(buf, node, 0, FALSE);
        g_string_append(buf, "</");
        append_qname(buf, node->ns, node->name);
        g_string_append_c(buf, '>');
    }
    if (pretty)
        g_string_append_c(buf, '\n');
}

static void format_group(GString *buf, const DomainDef *def, KeptGroup group, int indent)
{
    format_kept_children(buf, def->kept->group[group], indent, TRUE);
}

/* "209715200" -> "200MiB": the largest binary unit that divides exactly. */
static char *format_rate(guint64 bytes)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    int u = -1;
    while (u + 1 < (int)G_N_ELEMENTS(units) && bytes >= 1024 && bytes % 1024 == 0) {
        bytes /= 1024;
        u++;
    }
    return u < 0 ? g_strdup_printf("%" G_GUINT64_FORMAT, bytes)
                 : g_strdup_printf("%" G_GUINT64_FORMAT "%s", bytes, units[u]);
}

static gboolean workload_is_default(const DomainWorkload *w)
{
    return w->dirty_rate == 0 && w->pattern == DOMAIN_WORKLOAD_RANDOM && w->seed == 0;
}

static void format_metadata(GString *buf, const DomainDef *def, int indent)
{
    gboolean workload = !workload_is_default(&def->workload);
    if (!workload && kept_group_empty(def->kept, GROUP_METADATA))
        return;
    append_indent(buf, indent);
    g_string_append(buf, "<metadata>\n");
    if (workload) {
        g_autofree char *rate = format_rate(def->workload.dirty_rate);
        g_autofree char *seed = g_strdup_printf("%" G_GUINT64_FORMAT, def->workload.seed);
        append_indent(buf, indent + 2);
        g_string_append(buf, "<" DOMAIN_FERRY_NS_PREFIX ":workload");
        domain_xml_append_attr(buf, "xmlns:" DOMAIN_FERRY_NS_PREFIX, DOMAIN_FERRY_NS_HREF);
        domain_xml_append_attr(buf, "dirty-rate", rate);
        domain_xml_append_attr(buf, "pattern",
                    def->workload.pattern == DOMAIN_WORKLOAD_SEQUENTIAL ? "sequential" : "random");
        domain_xml_append_attr(buf, "seed", seed);
        g_string_append(buf, "/>\n");
    }
    format_group(buf, def, GROUP_METADATA, indent + 2);
    append_indent(buf, indent);
    g_string_append(buf, "</metadata>\n");
}

void domain_def_format_buf(const DomainDef *def, int id, guint flags, GString *buf, int indent)
{
    const int in = indent + 2;
    char uuid[FERRY_UUID_STRING_LEN];
    ferry_uuid_format(def->uuid, uuid);

    append_indent(buf, indent);
    g_string_append(buf, "<domain");
    domain_xml_append_attr(buf, "type", def->virt_type);
    if (id >= 0 && !(flags & (DOMAIN_DEF_FORMAT_INACTIVE | DOMAIN_DEF_FORMAT_MIGRATABLE)))
        g_string_append_printf(buf, " id='%d'", id);
    g_string_append(buf, ">\n");

    append_text_element(buf, in, "name", def->name);
    append_text_element(buf, in, "uuid", uuid);
    format_group(buf, def, GROUP_AFTER_UUID, in);
    if (def->title)
        append_text_element(buf, in, "title", def->title);
    if (def->description)
        append_text_element(buf, in, "description", def->description);
    format_metadata(buf, def, in);
    format_group(buf, def, GROUP_BEFORE_MEMORY, in);

    append_indent(buf, in);
    g_string_append_printf(buf, "<memory unit='KiB'>%" G_GUINT64_FORMAT "</memory>\n",
                           def->memory_kib);
    append_indent(buf, in);
    g_string_append_printf(buf,
                           "<currentMemory unit='KiB'>%" G_GUINT64_FORMAT "</currentMemory>\n",
                           def->current_memory_kib);
    format_group(buf, def, GROUP_BEFORE_VCPU, in);

    append_indent(buf, in);
    g_string_append(buf, "<vcpu");
    domain_xml_append_attr(buf, "placement",
                def->vcpu_placement == DOMAIN_VCPU_PLACEMENT_AUTO ? "auto" : "static");
    if (def->vcpu_cpuset)
        domain_xml_append_attr(buf, "cpuset", def->vcpu_cpuset);
    if (def->vcpus_current != def->vcpus)
        g_string_append_printf(buf, " current='%u'", def->vcpus_current);
    g_string_append_printf(buf, ">%u</vcpu>\n", def->vcpus);
    format_group(buf, def, GROUP_BEFORE_OS, in);

    append_indent(buf, in);
    g_string_append(buf, "<os>\n");
    append_indent(buf, in + 2);
    g_string_append(buf, "<type");
    domain_xml_append_attr(buf, "arch", def->os_arch);
    if (def->os_machine)
        domain_xml_append_attr(buf, "machine", def->os_machine);
    g_string_append_c(buf, '>');
    append_escaped(buf, def->os_type, FALSE);
    g_string_append(buf, "</type>\n");
    format_group(buf, def, GROUP_OS_EXTRA, in + 2);
    append_indent(buf, in);
    g_string_append(buf, "</os>\n");
    format_group(buf, def, GROUP_BEFORE_LIFECYCLE, in);

    append_text_element(buf, in, "on_poweroff", domain_lifecycle_action_to_string(def->on_poweroff));
    append_text_element(buf, in, "on_reboot", domain_lifecycle_action_to_string(def->on_reboot));
    append_text_element(buf, in, "on_crash", domain_lifecycle_action_to_string(def->on_crash));
    format_group(buf, def, GROUP_BEFORE_DEVICES, in);
    format_group(buf, def, GROUP_DEVICES, in);
    format_group(buf, def, GROUP_END, in);

    append_indent(buf, indent);
    g_string_append(buf, "</domain>\n");
}

char *domain_def_format(const DomainDef *def, int id, guint flags)
{
    GString *buf = g_string_sized_new(1024);
    domain_def_format_buf(def, id, flags, buf, 0);
    return g_string_free(buf, FALSE);
}

DomainDef *domain_def_copy(const DomainDef *src)
{
    DomainDef *def = g_new0(DomainDef, 1);
    *def = *src;
    def->virt_type = g_strdup(src->virt_type);
    def->name = g_strdup(src->name);
    def->title = g_strdup(src->title);
    def->description = g_strdup(src->description);
    def->vcpu_cpuset = g_strdup(src->vcpu_cpuset);
    def->os_type = g_strdup(src->os_type);
    def->os_arch = g_strdup(src->os_arch);
    def->os_machine = g_strdup(src->os_machine);
    def->kept = kept_copy(src->kept);
    return def;
}

gboolean domain_def_equal(const DomainDef *a, const DomainDef *b)
{
    g_autofree char *xa = domain_def_format(a, -1, DOMAIN_DEF_FORMAT_INACTIVE);
    g_autofree char *xb = domain_def_format(b, -1, DOMAIN_DEF_FORMAT_INACTIVE);
    return g_str_equal(xa, xb);
}

void domain_def_free(DomainDef *def)
{
    if (!def)
        return;
    g_free(def->virt_type);
    g_free(def->name);
    g_free(def->title);
    g_free(def->description);
    g_free(def->vcpu_cpuset);
    g_free(def->os_type);
    g_free(def->os_arch);
    g_free(def->os_machine);
    kept_free(def->kept);
    g_free(def);
}
