/* Domain XML for QEMU: the supported subset of libvirt's schema, and the
 * device model derived from a def. */
#include "driver/qemu/qemu-domain.h"

#include <libxml/tree.h>
#include <string.h>

#include "util/error.h"

/* Every element the driver runs, by path below <domain>, with the attributes
 * it accepts. Anything else is refused by name: silently dropping a setting
 * would run a different VM than the one described. */
static const struct {
    const char *path;
    const char *attrs; /* space-separated */
} schema[] = {
    {"", "type id"},
    {"name", ""},
    {"uuid", ""},
    {"title", ""},
    {"description", ""},
    {"metadata", NULL}, /* anything below: not the VM's configuration */
    {"memory", "unit"},
    {"currentMemory", "unit"},
    {"maxMemory", "slots unit"},
    {"vcpu", "placement current"},
    {"os", ""},
    {"os/type", "arch machine"},
    {"os/kernel", ""},
    {"os/initrd", ""},
    {"os/cmdline", ""},
    {"os/boot", "dev"},
    {"features", ""},
    {"features/acpi", ""},
    {"features/apic", ""},
    {"cpu", "mode match check migratable"},
    {"cpu/model", "fallback"},
    {"cpu/feature", "policy name"},
    {"clock", "offset"},
    {"clock/timer", "name tickpolicy present"},
    {"pm", ""},
    {"pm/suspend-to-mem", "enabled"},
    {"pm/suspend-to-disk", "enabled"},
    {"on_poweroff", ""},
    {"on_reboot", ""},
    {"on_crash", ""},
    {"devices", ""},
    {"devices/emulator", ""},
    {"devices/disk", "type device"},
    {"devices/disk/driver", "name type cache discard io"},
    {"devices/disk/source", "file dev"},
    {"devices/disk/target", "dev bus"},
    {"devices/disk/readonly", ""},
    {"devices/disk/shareable", ""},
    {"devices/disk/boot", "order"},
    {"devices/interface", "type"},
    {"devices/interface/mac", "address"},
    {"devices/interface/model", "type"},
    {"devices/interface/source", "bridge"},
    {"devices/interface/target", "dev"},
    {"devices/interface/boot", "order"},
    {"devices/serial", "type"},
    {"devices/serial/source", "path mode"},
    {"devices/serial/target", "type port"},
    {"devices/serial/target/model", "name"},
    {"devices/serial/log", "file append"},
    {"devices/console", "type"},
    {"devices/console/source", "path mode"},
    {"devices/console/target", "type port"},
    {"devices/console/log", "file append"},
    {"devices/graphics", "type socket"},
    {"devices/graphics/listen", "type socket"},
    {"devices/controller", "type model ports index"},
    {"devices/video", ""},
    {"devices/video/model", "type vram heads primary"},
    {"devices/input", "type bus"},
    {"devices/memballoon", "model"},
    {"devices/rng", "model"},
    {"devices/rng/backend", "model"},
    {"devices/channel", "type"},
    {"devices/channel/source", "mode path"},
    {"devices/channel/target", "type name"},
};

static gboolean G_GNUC_PRINTF(2, 3) unsupported(GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, FERRY_ERROR, FERRY_ERR_CONFIG_UNSUPPORTED,
                "%s", msg);
    return FALSE;
}

static int schema_find(const char *path)
{
    for (guint i = 0; i < G_N_ELEMENTS(schema); i++)
        if (g_str_equal(schema[i].path, path))
            return (int)i;
    return -1;
}

static gboolean check_element(const xmlNode *el, const char *path, GError **error)
{
    int i = schema_find(path);
    if (i < 0)
        return unsupported(error, "the QEMU driver does not support <%s> (in <domain>/%s)",
                           (const char *)el->name, path);
    if (!schema[i].attrs)
        return TRUE;
    g_auto(GStrv) allowed = g_strsplit(schema[i].attrs, " ", -1);
    for (const xmlAttr *a = el->properties; a; a = a->next) {
        if (a->ns || !g_strv_contains((const char *const *)allowed, (const char *)a->name))
            return unsupported(error, "the QEMU driver does not support attribute '%s' of <%s>",
                               (const char *)a->name, *path ? path : "domain");
    }
    for (const xmlNode *c = el->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (c->ns)
            return unsupported(error, "the QEMU driver does not support <%s:%s> in <%s>",
                               (const char *)c->ns->prefix, (const char *)c->name,
                               *path ? path : "domain");
        g_autofree char *child = *path ? g_strdup_printf("%s/%s", path, (const char *)c->name)
                                       : g_strdup((const char *)c->name);
        if (!check_element(c, child, error))
            return FALSE;
    }
    return TRUE;
}

/* ---- the device model --------------------------------------------------- */

static char *attr(const xmlNode *n, const char *name)
{
    xmlChar *v = n ? xmlGetProp(n, BAD_CAST name) : NULL;
    char *s = v ? g_strdup((const char *)v) : NULL;
    xmlFree(v);
    return s;
}

static char *text(const xmlNode *n)
{
    xmlChar *c = xmlNodeGetContent(n);
    char *s = g_strstrip(g_strdup(c ? (const char *)c : ""));
    xmlFree(c);
    return s;
}

static xmlNode *child(const xmlNode *n, const char *name)
{
    for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && !c->ns && xmlStrEqual(c->name, BAD_CAST name))
            return c;
    return NULL;
}

static gboolean one_of(const char *value, const char *const *allowed)
{
    return value && g_strv_contains(allowed, value);
}

/* An attribute with a fixed set of values; absent gives dflt (may be NULL). */
static gboolean choice(const xmlNode *n, const char *name, const char *const *allowed,
                       const char *dflt, const char *where, char **out, GError **error)
{
    g_autofree char *v = attr(n, name);
    if (!v) {
        *out = g_strdup(dflt);
        return TRUE;
    }
    if (!one_of(v, allowed)) {
        g_autofree char *list = g_strjoinv(", ", (char **)allowed);
        return unsupported(error, "%s='%s' of <%s> (the QEMU driver supports %s)", name, v,
                           where, list);
    }
    *out = g_steal_pointer(&v);
    return TRUE;
}

static gboolean parse_boot_order(const xmlNode *dev, const char *where, guint *out,
                                 GError **error)
{
    g_autofree char *order = attr(child(dev, "boot"), "order");
    if (!order)
        return TRUE;
    guint64 v = 0;
    if (!g_ascii_string_to_unsigned(order, 10, 1, 1000, &v, NULL)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR,
                    "invalid value '%s' for <%s/boot order>: expected 1..1000", order, where);
        return FALSE;
    }
    *out = (guint)v;
    return TRUE;
}

static void disk_free(gpointer p)
{
    QemuDisk *d = p;
    g_free(d->source);
    g_free(d->format);
    g_free(d->bus);
    g_free(d->target);
    g_free(d->cache);
    g_free(d->discard);
    g_free(d->io);
    g_free(d);
}

static void net_free(gpointer p)
{
    QemuNet *n = p;
    g_free(n->type);
    g_free(n->mac);
    g_free(n->model);
    g_free(n->ifname);
    g_free(n->bridge);
    g_free(n);
}

static void serial_free(gpointer p)
{
    QemuSerial *s = p;
    g_free(s->type);
    g_free(s->path);
    g_free(s->log_file);
    g_free(s);
}

static void channel_free(gpointer p)
{
    QemuChannel *c = p;
    g_free(c->path);
    g_free(c->name);
    g_free(c);
}

static const char *const disk_types[] = {"file", "block", NULL};
static const char *const disk_devices[] = {"disk", "cdrom", NULL};
static const char *const disk_formats[] = {"raw", "qcow2", NULL};
static const char *const disk_buses[] = {"virtio", "sata", "scsi", "ide", NULL};
static const char *const discard_modes[] = {"unmap", "ignore", NULL};
static const char *const io_modes[] = {"native", "threads", NULL};
static const char *const cache_modes[] = {"default", "none",   "writethrough", "writeback",
                                          "directsync", "unsafe", NULL};

/* The unit a target name gives: sda -> 0, hdb -> 1, vdaa -> 26. */
static guint target_unit(const char *target)
{
    guint unit = 0;
    for (const char *p = target + MIN(strlen(target), 2); *p; p++)
        unit = unit * 26 + (guint)(*p - 'a') + (p > target + 2 ? 26 : 0);
    return unit;
}

/* What QEMU's disk devices can do, checked now rather than at start. */
static gboolean check_disk_bus(const QemuDisk *d, GError **error)
{
    guint max_unit = g_str_equal(d->bus, "ide") ? 3 : g_str_equal(d->bus, "sata") ? 5 : 255;
    if (strlen(d->target) < 3 || !g_str_is_ascii(d->target) ||
        strspn(d->target + 2, "abcdefghijklmnopqrstuvwxyz") != strlen(d->target) - 2) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR,
                    "invalid value '%s' for <disk/target dev>: expected a name like vda or sda",
                    d->target);
        return FALSE;
    }
    if (d->unit > max_unit)
        return unsupported(error, "<disk/target dev='%s'>: bus '%s' has %u units", d->target,
                           d->bus, max_unit + 1);
    if (d->cdrom && g_str_equal(d->bus, "virtio"))
        return unsupported(error, "<disk device='cdrom'> on bus 'virtio'");
    if (d->readonly && !d->cdrom && (g_str_equal(d->bus, "ide") || g_str_equal(d->bus, "sata")))
        return unsupported(error, "<readonly/> <disk> on bus '%s' (only a cdrom is read-only there)",
                           d->bus);
    return TRUE;
}

static gboolean parse_disk(QemuDomain *qd, const xmlNode *n, GError **error)
{
    QemuDisk *d = g_new0(QemuDisk, 1);
    g_ptr_array_add(qd->disks, d);
    g_autofree char *type = NULL, *device = NULL, *driver_name = NULL;
    if (!choice(n, "type", disk_types, "file", "disk", &type, error) ||
        !choice(n, "device", disk_devices, "disk", "disk", &device, error))
        return FALSE;
    d->block = g_str_equal(type, "block");
    d->cdrom = g_str_equal(device, "cdrom");
    const xmlNode *drv = child(n, "driver");
    static const char *const qemu_only[] = {"qemu", NULL};
    if (!choice(drv, "name", qemu_only, "qemu", "disk/driver", &driver_name, error) ||
        !choice(drv, "type", disk_formats, "raw", "disk/driver", &d->format, error) ||
        !choice(drv, "cache", cache_modes, NULL, "disk/driver", &d->cache, error) ||
        !choice(drv, "discard", discard_modes, NULL, "disk/driver", &d->discard, error) ||
        !choice(drv, "io", io_modes, NULL, "disk/driver", &d->io, error))
        return FALSE;
    /* QEMU opens a native-AIO drive only with O_DIRECT. */
    if (d->io && g_str_equal(d->io, "native") &&
        (!d->cache || (!g_str_equal(d->cache, "none") && !g_str_equal(d->cache, "directsync"))))
        return unsupported(error, "<disk/driver io='native'> needs cache='none' or 'directsync'");
    const xmlNode *src = child(n, "source");
    d->source = attr(src, d->block ? "dev" : "file");
    if (src && attr(src, d->block ? "file" : "dev")) {
        return unsupported(error, "<disk type='%s'> takes <source %s=...>", type,
                           d->block ? "dev" : "file");
    }
    if (!d->source && !d->cdrom) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR,
                    "<disk> needs a <source %s=...>", d->block ? "dev" : "file");
        return FALSE;
    }
    const xmlNode *target = child(n, "target");
    d->target = attr(target, "dev");
    if (!d->target) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR, "<disk> needs a <target dev=...>");
        return FALSE;
    }
    const char *dflt_bus = g_str_has_prefix(d->target, "vd")   ? "virtio"
                           : g_str_has_prefix(d->target, "hd") ? "ide"
                                                               : "sata";
    if (!choice(target, "bus", disk_buses, dflt_bus, "disk/target", &d->bus, error))
        return FALSE;
    d->readonly = child(n, "readonly") != NULL || d->cdrom;
    d->shareable = child(n, "shareable") != NULL;
    d->unit = target_unit(d->target);
    return check_disk_bus(d, error) && parse_boot_order(n, "disk", &d->boot_order, error);
}

static const char *const net_types[] = {"user", "ethernet", "bridge", NULL};
static const char *const net_models[] = {"virtio", "e1000", "rtl8139", NULL};

static gboolean parse_interface(QemuDomain *qd, const xmlNode *n, GError **error)
{
    QemuNet *net = g_new0(QemuNet, 1);
    g_ptr_array_add(qd->nets, net);
    if (!choice(n, "type", net_types, NULL, "interface", &net->type, error))
        return FALSE;
    if (!net->type)
        return unsupported(error, "<interface> without a type");
    net->mac = attr(child(n, "mac"), "address");
    if (!choice(child(n, "model"), "type", net_models, "virtio", "interface/model", &net->model,
                error))
        return FALSE;
    if (g_str_equal(net->type, "ethernet")) {
        net->ifname = attr(child(n, "target"), "dev");
    } else if (child(n, "target")) {
        return unsupported(error, "<interface/target> is for type='ethernet' only");
    }
    if (g_str_equal(net->type, "bridge")) {
        net->bridge = attr(child(n, "source"), "bridge");
        if (!net->bridge) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR,
                        "<interface type='bridge'> needs a <source bridge=...>");
            return FALSE;
        }
    } else if (child(n, "source")) {
        return unsupported(error, "<interface/source> is for type='bridge' only");
    }
    return parse_boot_order(n, "interface", &net->boot_order, error);
}

static const char *const serial_types[] = {"pty", "file", "unix", NULL};

/* A <serial> or <console>: both are QEMU serial ports. */
static gboolean parse_serial(QemuDomain *qd, const xmlNode *n, const char *what, GError **error)
{
    g_autofree char *type = NULL, *target_type = NULL, *port = NULL, *mode = NULL, *model = NULL;
    if (!choice(n, "type", serial_types, "pty", what, &type, error))
        return FALSE;
    const xmlNode *target = child(n, "target");
    static const char *const isa[] = {"isa-serial", "serial", NULL};
    if (!choice(target, "type", isa, NULL, what, &target_type, error) ||
        !choice(child(target, "model"), "name", isa, NULL, what, &model, error))
        return FALSE;
    port = attr(target, "port");
    guint64 p = qd->serials->len;
    if (port && !g_ascii_string_to_unsigned(port, 10, 0, 3, &p, NULL)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR,
                    "invalid value '%s' for <%s/target port>: expected 0..3", port, what);
        return FALSE;
    }
    /* libvirt writes the first serial port a second time as <console>. */
    if (g_str_equal(what, "console")) {
        for (guint i = 0; i < qd->serials->len; i++)
            if (((QemuSerial *)qd->serials->pdata[i])->port == p)
                return TRUE;
    }
    const xmlNode *src = child(n, "source");
    static const char *const modes[] = {"bind", "connect", NULL};
    if (!choice(src, "mode", modes, "bind", what, &mode, error))
        return FALSE;
    QemuSerial *s = g_new0(QemuSerial, 1);
    g_ptr_array_add(qd->serials, s);
    s->type = g_steal_pointer(&type);
    s->port = (guint)p;
    s->bind = g_str_equal(mode, "bind");
    s->path = attr(src, "path");
    if (!g_str_equal(s->type, "pty") && !s->path) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR,
                    "<%s type='%s'> needs a <source path=...>", what, s->type);
        return FALSE;
    }
    if (g_str_equal(s->type, "pty") && s->path)
        g_clear_pointer(&s->path, g_free); /* libvirt's live XML names the pty: not ours to pick */
    const xmlNode *log = child(n, "log");
    g_autofree char *append = NULL;
    static const char *const on_off[] = {"on", "off", NULL};
    if (!choice(log, "append", on_off, "off", "serial/log", &append, error))
        return FALSE;
    s->log_file = attr(log, "file");
    s->log_append = g_str_equal(append, "on");
    if (log && !s->log_file) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR, "<%s/log> needs a file", what);
        return FALSE;
    }
    return TRUE;
}

static gboolean parse_graphics(QemuDomain *qd, const xmlNode *n, GError **error)
{
    g_autofree char *type = NULL;
    static const char *const types[] = {"vnc", "none", NULL};
    if (!choice(n, "type", types, NULL, "graphics", &type, error))
        return FALSE;
    if (!type)
        return unsupported(error, "<graphics> without a type");
    /* ferry's VNC listens on a UNIX socket only: <listen type='socket'>,
     * whose path (or the socket attribute's) virsh domdisplay reads. */
    const xmlNode *listen = child(n, "listen");
    static const char *const listen_types[] = {"socket", NULL};
    g_autofree char *listen_type = NULL;
    if (listen && (!choice(listen, "type", listen_types, NULL, "graphics/listen", &listen_type,
                           error)))
        return FALSE;
    if (listen && !listen_type)
        return unsupported(error, "<graphics/listen> without type='socket'");
    if (g_str_equal(type, "vnc")) {
        qd->vnc = TRUE;
        qd->vnc_socket = attr(n, "socket");
        g_autofree char *path = attr(listen, "socket");
        if (path && qd->vnc_socket && !g_str_equal(path, qd->vnc_socket)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR,
                        "<graphics socket='%s'> and <listen socket='%s'> differ", qd->vnc_socket,
                        path);
            return FALSE;
        }
        if (path && !qd->vnc_socket)
            qd->vnc_socket = g_steal_pointer(&path);
    } else if (listen) {
        return unsupported(error, "<graphics type='none'> with a <listen>");
    }
    return TRUE;
}

static gboolean machine_is_q35(const QemuDomain *qd)
{
    return qd->machine && strstr(qd->machine, "q35");
}

/* PCI controllers: the machine's root bus (pci-root on i440fx, pcie-root on
 * q35: QEMU has it anyway) and PCIe root ports on q35, the free slots
 * virt-install adds for hotplug. Devices stay on the root bus. */
static gboolean parse_pci_controller(QemuDomain *qd, const xmlNode *n, GError **error)
{
    static const char *const models[] = {"pci-root", "pcie-root", "pcie-root-port", NULL};
    g_autofree char *model = NULL, *index = attr(n, "index"), *ports = attr(n, "ports");
    if (!choice(n, "model", models, NULL, "controller type='pci'", &model, error))
        return FALSE;
    if (!model)
        return unsupported(error, "<controller type='pci'> without a model (the QEMU driver "
                                  "supports pci-root, pcie-root, pcie-root-port)");
    if (ports)
        return unsupported(error, "attribute 'ports' of <controller type='pci'>");
    gboolean root = !g_str_equal(model, "pcie-root-port");
    if (g_str_equal(model, "pci-root") == machine_is_q35(qd) ||
        (!root && !machine_is_q35(qd)))
        return unsupported(error, "<controller type='pci' model='%s'> on machine '%s'", model,
                           qd->machine ? qd->machine : "pc");
    if (root && index && !g_str_equal(index, "0"))
        return unsupported(error, "<controller type='pci' model='%s' index='%s'>: the root bus "
                                  "is index 0", model, index);
    if (!root && qd->pcie_root_ports >= QEMU_PCIE_ROOT_PORTS_MAX)
        return unsupported(error, "more than %d <controller type='pci' model='pcie-root-port'>",
                           QEMU_PCIE_ROOT_PORTS_MAX);
    if (!root)
        qd->pcie_root_ports++;
    return TRUE;
}

/* USB controllers: QEMU's xHCI or the PIIX3 UHCI, or none at all. */
static gboolean parse_controller(QemuDomain *qd, const xmlNode *n, GError **error)
{
    static const char *const types[] = {"usb", "pci", NULL};
    static const char *const models[] = {"qemu-xhci", "piix3-uhci", "none", NULL};
    g_autofree char *type = NULL, *model = NULL, *index = attr(n, "index"),
                     *ports = attr(n, "ports");
    if (!choice(n, "type", types, NULL, "controller", &type, error))
        return FALSE;
    if (!type)
        return unsupported(error, "<controller> without a type");
    if (g_str_equal(type, "pci"))
        return parse_pci_controller(qd, n, error);
    if (!choice(n, "model", models, NULL, "controller", &model, error))
        return FALSE;
    if (!model)
        return unsupported(error, "<controller type='usb'> without a model (the QEMU driver "
                                  "supports qemu-xhci, piix3-uhci, none)");
    if (qd->usb_model || (index && !g_str_equal(index, "0")))
        return unsupported(error, "a second <controller type='usb'>");
    guint64 nports = 0;
    if (ports && (!g_str_equal(model, "qemu-xhci") ||
                  !g_ascii_string_to_unsigned(ports, 10, 1, 15, &nports, NULL))) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR,
                    "invalid value '%s' for <controller ports>: qemu-xhci has 1..15", ports);
        return FALSE;
    }
    qd->usb_model = g_steal_pointer(&model);
    qd->usb_ports = (guint)nports;
    return TRUE;
}

static gboolean parse_video(QemuDomain *qd, const xmlNode *n, GError **error)
{
    static const char *const models[] = {"vga", "cirrus", "virtio", "bochs", "none", NULL};
    g_autofree char *model = NULL;
    if (!choice(child(n, "model"), "type", models, "vga", "video/model", &model, error))
        return FALSE;
    const char *dev = g_str_equal(model, "vga")      ? "VGA"
                      : g_str_equal(model, "cirrus") ? "cirrus-vga"
                      : g_str_equal(model, "virtio") ? "virtio-vga"
                      : g_str_equal(model, "bochs")  ? "bochs-display"
                                                     : NULL;
    g_free(qd->video);
    qd->video = g_strdup(dev);
    return TRUE;
}

static gboolean parse_input(QemuDomain *qd, const xmlNode *n, GError **error)
{
    static const char *const types[] = {"mouse", "keyboard", "tablet", NULL};
    static const char *const buses[] = {"ps2", "usb", "virtio", NULL};
    g_autofree char *type = NULL, *bus = NULL;
    if (!choice(n, "type", types, NULL, "input", &type, error) ||
        !choice(n, "bus", buses, NULL, "input", &bus, error))
        return FALSE;
    if (!type)
        return unsupported(error, "<input> without a type");
    if (!bus)
        bus = g_strdup(g_str_equal(type, "tablet") ? "usb" : "ps2");
    if (g_str_equal(bus, "ps2")) {
        if (g_str_equal(type, "tablet"))
            return unsupported(error, "<input type='tablet' bus='ps2'>");
        return TRUE; /* the PC machine has both */
    }
    if (g_str_equal(bus, "usb")) {
        qd->usb = TRUE;
        g_ptr_array_add(qd->inputs, g_strdup_printf(
                                        "usb-%s", g_str_equal(type, "keyboard") ? "kbd" : type));
    } else {
        g_ptr_array_add(qd->inputs, g_strdup_printf("virtio-%s-pci", type));
    }
    return TRUE;
}

static gboolean parse_rng(QemuDomain *qd, const xmlNode *n, GError **error)
{
    static const char *const models[] = {"virtio", NULL};
    static const char *const backends[] = {"random", NULL};
    static const char *const sources[] = {"/dev/random", "/dev/urandom", "/dev/hwrng", NULL};
    g_autofree char *model = NULL, *backend_model = NULL;
    const xmlNode *backend = child(n, "backend");
    if (!choice(n, "model", models, NULL, "rng", &model, error) ||
        !choice(backend, "model", backends, NULL, "rng/backend", &backend_model, error))
        return FALSE;
    if (!model || !backend_model)
        return unsupported(error, "<rng> needs model='virtio' and <backend model='random'>");
    g_autofree char *given = text(backend);
    g_autofree char *src = g_strdup(*given ? given : "/dev/urandom");
    if (!one_of(src, sources))
        return unsupported(error, "<rng/backend> source '%s'", src);
    g_free(qd->rng_source);
    qd->rng_source = g_steal_pointer(&src);
    return TRUE;
}

static gboolean parse_channel(QemuDomain *qd, const xmlNode *n, GError **error)
{
    static const char *const types[] = {"unix", NULL};
    static const char *const modes[] = {"bind", NULL};
    static const char *const targets[] = {"virtio", NULL};
    g_autofree char *type = NULL, *mode = NULL, *ttype = NULL;
    const xmlNode *src = child(n, "source"), *target = child(n, "target");
    if (!choice(n, "type", types, NULL, "channel", &type, error) ||
        !choice(src, "mode", modes, "bind", "channel/source", &mode, error) ||
        !choice(target, "type", targets, NULL, "channel/target", &ttype, error))
        return FALSE;
    if (!type || !ttype)
        return unsupported(error, "<channel> needs type='unix' and <target type='virtio'>");
    QemuChannel *c = g_new0(QemuChannel, 1);
    g_ptr_array_add(qd->channels, c);
    c->path = attr(src, "path");
    c->name = attr(target, "name");
    if (!c->name) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR, "<channel> needs <target name=...>");
        return FALSE;
    }
    /* Without a path the socket is in the run dir, as libvirt picks one
     * (virt-install's guest-agent channel has none). */
    if (!c->path && qd->channels->len > QEMU_CHANNELS_IN_RUN_DIR)
        return unsupported(error, "more than %d <channel>s without <source path=...>",
                           QEMU_CHANNELS_IN_RUN_DIR);
    return TRUE;
}

static gboolean parse_devices(QemuDomain *qd, const xmlNode *devices, GError **error)
{
    gboolean balloon_seen = FALSE;
    for (const xmlNode *n = devices ? devices->children : NULL; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        const char *name = (const char *)n->name;
        gboolean ok = TRUE;
        if (g_str_equal(name, "emulator")) {
            g_free(qd->emulator);
            qd->emulator = text(n);
        } else if (g_str_equal(name, "disk")) {
            ok = parse_disk(qd, n, error);
        } else if (g_str_equal(name, "interface")) {
            ok = parse_interface(qd, n, error);
        } else if (g_str_equal(name, "serial")) {
            ok = parse_serial(qd, n, "serial", error);
        } else if (g_str_equal(name, "graphics")) {
            ok = parse_graphics(qd, n, error);
        } else if (g_str_equal(name, "controller")) {
            ok = parse_controller(qd, n, error);
        } else if (g_str_equal(name, "video")) {
            ok = parse_video(qd, n, error);
        } else if (g_str_equal(name, "input")) {
            ok = parse_input(qd, n, error);
        } else if (g_str_equal(name, "memballoon")) {
            static const char *const models[] = {"virtio", "none", NULL};
            g_autofree char *model = NULL;
            ok = choice(n, "model", models, NULL, "memballoon", &model, error);
            if (ok && !model)
                ok = unsupported(error, "<memballoon> without a model");
            qd->balloon = ok && g_str_equal(model, "virtio");
            balloon_seen = TRUE;
        } else if (g_str_equal(name, "rng")) {
            ok = parse_rng(qd, n, error);
        } else if (g_str_equal(name, "channel")) {
            ok = parse_channel(qd, n, error);
        }
        if (!ok)
            return FALSE;
    }
    /* Consoles after the serial ports they may repeat. */
    for (const xmlNode *n = devices ? devices->children : NULL; n; n = n->next)
        if (n->type == XML_ELEMENT_NODE && xmlStrEqual(n->name, BAD_CAST "console") &&
            !parse_serial(qd, n, "console", error))
            return FALSE;
    if (!balloon_seen)
        qd->balloon = TRUE; /* libvirt's default: a virtio balloon */
    if (qd->usb && g_strcmp0(qd->usb_model, "none") == 0)
        return unsupported(error, "<input bus='usb'> with <controller type='usb' model='none'>");
    return TRUE;
}

static gboolean parse_cpu(QemuDomain *qd, const xmlNode *cpu, GError **error)
{
    static const char *const modes[] = {"custom", "host-model", "host-passthrough", "maximum",
                                        NULL};
    g_autofree char *mode = NULL;
    if (!choice(cpu, "mode", modes, "custom", "cpu", &mode, error))
        return FALSE;
    const xmlNode *model = child(cpu, "model");
    if (g_str_equal(mode, "custom")) {
        g_autofree char *m = model ? text(model) : NULL;
        qd->cpu_model = g_strdup(m && *m ? m : "qemu64");
    } else if (model) {
        return unsupported(error, "<cpu/model> with mode='%s'", mode);
    } else if (g_str_equal(mode, "host-passthrough") && qd->kvm) {
        qd->cpu_model = g_strdup("host");
    } else {
        /* TCG has no host CPU to copy: "max" is everything it emulates. */
        qd->cpu_model = g_strdup("max");
    }
    static const char *const policies[] = {"require", "force", "disable", "forbid", NULL};
    for (const xmlNode *f = cpu ? cpu->children : NULL; f; f = f->next) {
        if (f->type != XML_ELEMENT_NODE || !xmlStrEqual(f->name, BAD_CAST "feature"))
            continue;
        g_autofree char *policy = NULL, *name = attr(f, "name");
        if (!choice(f, "policy", policies, "require", "cpu/feature", &policy, error))
            return FALSE;
        if (!name) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR, "<cpu/feature> needs a name");
            return FALSE;
        }
        gboolean on = g_str_equal(policy, "require") || g_str_equal(policy, "force");
        g_ptr_array_add(qd->cpu_features, g_strdup_printf("%c%s", on ? '+' : '-', name));
    }
    return TRUE;
}

static gboolean parse_os(QemuDomain *qd, const xmlNode *os, GError **error)
{
    GString *boot = g_string_new(NULL);
    for (const xmlNode *n = os ? os->children : NULL; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        if (xmlStrEqual(n->name, BAD_CAST "kernel"))
            qd->kernel = text(n);
        else if (xmlStrEqual(n->name, BAD_CAST "initrd"))
            qd->initrd = text(n);
        else if (xmlStrEqual(n->name, BAD_CAST "cmdline"))
            qd->cmdline = text(n);
        else if (xmlStrEqual(n->name, BAD_CAST "boot")) {
            static const char *const devs[] = {"hd", "cdrom", "network", "fd", NULL};
            g_autofree char *dev = NULL;
            if (!choice(n, "dev", devs, NULL, "os/boot", &dev, error)) {
                g_string_free(boot, TRUE);
                return FALSE;
            }
            if (dev)
                g_string_append_c(boot, g_str_equal(dev, "hd")      ? 'c'
                                        : g_str_equal(dev, "cdrom") ? 'd'
                                        : g_str_equal(dev, "fd")    ? 'a'
                                                                    : 'n');
        }
    }
    qd->boot_devs = g_string_free(boot, boot->len == 0);
    if ((qd->initrd || qd->cmdline) && !qd->kernel)
        return unsupported(error, "<os/initrd> or <os/cmdline> without <os/kernel>");
    return TRUE;
}

/* The PC machine's timers: their tick policies QEMU offers under TCG. */
static gboolean parse_timers(QemuDomain *qd, const xmlNode *clock, GError **error)
{
    static const char *const names[] = {"rtc", "pit", "hpet", NULL};
    static const char *const yes_no[] = {"yes", "no", NULL};
    for (const xmlNode *t = clock ? clock->children : NULL; t; t = t->next) {
        if (t->type != XML_ELEMENT_NODE)
            continue;
        g_autofree char *name = NULL, *present = NULL, *policy = attr(t, "tickpolicy");
        if (!choice(t, "name", names, NULL, "clock/timer", &name, error) ||
            !choice(t, "present", yes_no, "yes", "clock/timer", &present, error))
            return FALSE;
        if (!name)
            return unsupported(error, "<clock/timer> without a name");
        gboolean rtc = g_str_equal(name, "rtc"), hpet = g_str_equal(name, "hpet");
        if (!hpet && g_str_equal(present, "no"))
            return unsupported(error, "<timer name='%s' present='no'> (the PC machine has one)",
                               name);
        /* pit 'delay' is what QEMU's emulated PIT does; rtc 'catchup' is driftfix=slew. */
        if (policy && !(rtc && (g_str_equal(policy, "catchup") || g_str_equal(policy, "delay"))) &&
            !(g_str_equal(name, "pit") && g_str_equal(policy, "delay")))
            return unsupported(error, "<timer name='%s' tickpolicy='%s'>", name, policy);
        qd->rtc_catchup = qd->rtc_catchup || (rtc && policy && g_str_equal(policy, "catchup"));
        if (hpet)
            qd->hpet_off = g_str_equal(present, "no");
    }
    return TRUE;
}

static gboolean parse_pm(QemuDomain *qd, const xmlNode *pm, GError **error)
{
    static const char *const yes_no[] = {"yes", "no", NULL};
    g_autofree char *mem = NULL, *disk = NULL;
    if (!choice(child(pm, "suspend-to-mem"), "enabled", yes_no, NULL, "pm/suspend-to-mem", &mem,
                error) ||
        !choice(child(pm, "suspend-to-disk"), "enabled", yes_no, NULL, "pm/suspend-to-disk",
                &disk, error))
        return FALSE;
    qd->s3 = mem ? g_str_equal(mem, "yes") : -1;
    qd->s4 = disk ? g_str_equal(disk, "yes") : -1;
    return TRUE;
}

static gboolean parse_lifecycle(QemuDomain *qd, const DomainDef *def, GError **error)
{
    if (def->on_poweroff != DOMAIN_LIFECYCLE_DESTROY)
        return unsupported(error, "<on_poweroff>%s</on_poweroff> (the QEMU driver supports destroy)",
                           domain_lifecycle_action_to_string(def->on_poweroff));
    if (def->on_reboot != DOMAIN_LIFECYCLE_RESTART && def->on_reboot != DOMAIN_LIFECYCLE_DESTROY)
        return unsupported(error,
                           "<on_reboot>%s</on_reboot> (the QEMU driver supports restart, destroy)",
                           domain_lifecycle_action_to_string(def->on_reboot));
    if (def->on_crash != DOMAIN_LIFECYCLE_DESTROY)
        return unsupported(error, "<on_crash>%s</on_crash> (the QEMU driver supports destroy)",
                           domain_lifecycle_action_to_string(def->on_crash));
    qd->no_reboot = def->on_reboot == DOMAIN_LIFECYCLE_DESTROY;
    return TRUE;
}

static gboolean parse_memory(QemuDomain *qd, const xmlNode *root, GError **error)
{
    const xmlNode *max = child(root, "maxMemory");
    if (max) {
        g_autofree char *value = text(max), *unit = attr(max, "unit"), *slots = attr(max, "slots");
        g_autofree char *size = g_strdup_printf("%s%s", value, unit ? unit : "KiB");
        guint64 bytes = 0, nslots = 0;
        if (!domain_parse_size(size, &bytes, "maxMemory", error))
            return FALSE;
        if (!slots || !g_ascii_string_to_unsigned(slots, 10, 1, 255, &nslots, NULL)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR,
                        "<maxMemory> needs slots='1..255'");
            return FALSE;
        }
        qd->max_memory_kib = (bytes + 1023) / 1024;
        qd->memory_slots = (guint)nslots;
        if (qd->max_memory_kib < qd->memory_kib) {
            g_set_error(error, FERRY_ERROR, FERRY_ERR_XML_ERROR,
                        "<maxMemory> must not be less than <memory>");
            return FALSE;
        }
    }
    if (qd->current_memory_kib < qd->memory_kib && !qd->balloon)
        return unsupported(error, "<currentMemory> below <memory> needs <memballoon model='virtio'>");
    return TRUE;
}

static gboolean build(QemuDomain *qd, const DomainDef *def, const xmlNode *root, GError **error)
{
    if (!def->virt_type || (!g_str_equal(def->virt_type, "qemu") &&
                            !g_str_equal(def->virt_type, "kvm")))
        return unsupported(error, "domain type '%s' (the QEMU driver runs 'qemu' and 'kvm')",
                           def->virt_type ? def->virt_type : "");
    qd->kvm = g_str_equal(def->virt_type, "kvm");
    if (def->os_arch && !g_str_equal(def->os_arch, "x86_64") && !g_str_equal(def->os_arch, "i686"))
        return unsupported(error, "architecture '%s' (the QEMU driver runs x86_64 and i686)",
                           def->os_arch);
    if (def->vcpu_cpuset)
        return unsupported(error, "the QEMU driver does not support attribute 'cpuset' of <vcpu>");
    qd->arch = g_strdup(def->os_arch ? def->os_arch : "x86_64");
    qd->machine = g_strdup(def->os_machine);
    qd->memory_kib = def->memory_kib;
    qd->current_memory_kib = def->current_memory_kib;
    qd->vcpus = def->vcpus;
    qd->vcpus_current = def->vcpus_current ? def->vcpus_current : def->vcpus;
    const xmlNode *features = child(root, "features");
    qd->acpi = child(features, "acpi") != NULL;
    qd->apic = child(features, "apic") != NULL;
    g_autofree char *offset = NULL;
    static const char *const offsets[] = {"utc", "localtime", NULL};
    if (!choice(child(root, "clock"), "offset", offsets, "utc", "clock", &offset, error))
        return FALSE;
    qd->clock_localtime = g_str_equal(offset, "localtime");
    return parse_timers(qd, child(root, "clock"), error) && parse_pm(qd, child(root, "pm"), error) &&
           parse_lifecycle(qd, def, error) && parse_os(qd, child(root, "os"), error) &&
           parse_cpu(qd, child(root, "cpu"), error) &&
           parse_devices(qd, child(root, "devices"), error) && parse_memory(qd, root, error);
}

QemuDomain *qemu_domain_new(const DomainDef *def, GError **error)
{
    g_autofree char *xml = domain_def_format(def, -1, DOMAIN_DEF_FORMAT_INACTIVE);
    xmlDoc *doc = domain_xml_read(xml, strlen(xml), "domain XML", error);
    if (!doc)
        return NULL;
    QemuDomain *qd = g_new0(QemuDomain, 1);
    qd->cpu_features = g_ptr_array_new_with_free_func(g_free);
    qd->disks = g_ptr_array_new_with_free_func(disk_free);
    qd->nets = g_ptr_array_new_with_free_func(net_free);
    qd->serials = g_ptr_array_new_with_free_func(serial_free);
    qd->channels = g_ptr_array_new_with_free_func(channel_free);
    qd->inputs = g_ptr_array_new_with_free_func(g_free);
    gboolean ok = build(qd, def, xmlDocGetRootElement(doc), error);
    xmlFreeDoc(doc);
    if (!ok) {
        qemu_domain_free(qd);
        return NULL;
    }
    return qd;
}

void qemu_domain_free(QemuDomain *qd)
{
    if (!qd)
        return;
    g_free(qd->emulator);
    g_free(qd->arch);
    g_free(qd->machine);
    g_free(qd->kernel);
    g_free(qd->initrd);
    g_free(qd->cmdline);
    g_free(qd->boot_devs);
    g_free(qd->cpu_model);
    g_ptr_array_unref(qd->cpu_features);
    g_ptr_array_unref(qd->disks);
    g_ptr_array_unref(qd->nets);
    g_ptr_array_unref(qd->serials);
    g_ptr_array_unref(qd->channels);
    g_free(qd->vnc_socket);
    g_free(qd->video);
    g_free(qd->usb_model);
    g_ptr_array_unref(qd->inputs);
    g_free(qd->rng_source);
    g_free(qd);
}

DomainDef *qemu_domain_parse_xml(const char *xml, GError **error)
{
    xmlDoc *doc = domain_xml_read(xml, strlen(xml), "domain XML", error);
    if (!doc)
        return NULL;
    xmlNode *root = xmlDocGetRootElement(doc);
    gboolean ok = root && xmlStrEqual(root->name, BAD_CAST "domain")
                      ? check_element(root, "", error)
                      : TRUE; /* the generic parser names a wrong root */
    xmlFreeDoc(doc);
    if (!ok)
        return NULL;
    return domain_def_parse_string(xml, error);
}
