/* Builds QEMU's argv from the device model. */
#include "driver/qemu/qemu-command.h"

#include <string.h>

#include "util/uuid.h"

static void add(GPtrArray *argv, const char *arg)
{
    g_ptr_array_add(argv, g_strdup(arg));
}

static void G_GNUC_PRINTF(3, 4) addf(GPtrArray *argv, const char *opt, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_ptr_array_add(argv, g_strdup(opt));
    g_ptr_array_add(argv, g_strdup_vprintf(fmt, ap));
    va_end(ap);
}

/* QEMU option values double a comma to escape it. */
static char *esc(const char *s)
{
    g_auto(GStrv) parts = g_strsplit(s, ",", -1);
    return g_strjoinv(",,", parts);
}

static void add_disks(GPtrArray *argv, const QemuDomain *qd)
{
    gboolean ahci = FALSE, scsi = FALSE;
    for (guint i = 0; i < qd->disks->len; i++) {
        const QemuDisk *d = qd->disks->pdata[i];
        g_autofree char *id = g_strdup_printf("drive-%s", d->target);
        GString *drive = g_string_new(NULL);
        if (d->source) {
            g_autofree char *path = esc(d->source);
            g_string_append_printf(drive, "file=%s,format=%s,", path, d->format);
        }
        g_string_append_printf(drive, "if=none,id=%s", id);
        if (d->readonly)
            g_string_append(drive, ",readonly=on");
        if (d->cdrom)
            g_string_append(drive, ",media=cdrom");
        if (d->cache && !g_str_equal(d->cache, "default"))
            g_string_append_printf(drive, ",cache=%s", d->cache);
        if (d->discard)
            g_string_append_printf(drive, ",discard=%s", d->discard);
        if (d->io)
            g_string_append_printf(drive, ",aio=%s", d->io);
        add(argv, "-drive");
        g_ptr_array_add(argv, g_string_free(drive, FALSE));

        guint unit = d->unit;
        GString *dev = g_string_new(NULL);
        if (g_str_equal(d->bus, "virtio")) {
            g_string_append(dev, "virtio-blk-pci");
        } else if (g_str_equal(d->bus, "ide")) {
            g_string_append_printf(dev, "%s,bus=ide.%u,unit=%u", d->cdrom ? "ide-cd" : "ide-hd",
                                   unit / 2, unit % 2);
        } else if (g_str_equal(d->bus, "sata")) {
            if (!ahci) {
                addf(argv, "-device", "ahci,id=sata0");
                ahci = TRUE;
            }
            g_string_append_printf(dev, "%s,bus=sata0.%u", d->cdrom ? "ide-cd" : "ide-hd", unit);
        } else {
            if (!scsi) {
                addf(argv, "-device", "virtio-scsi-pci,id=scsi0");
                scsi = TRUE;
            }
            g_string_append_printf(dev, "%s,bus=scsi0.0,scsi-id=%u",
                                   d->cdrom ? "scsi-cd" : "scsi-hd", unit);
        }
        g_string_append_printf(dev, ",drive=%s,id=%s-dev", id, d->target);
        if (d->shareable)
            g_string_append(dev, ",share-rw=on");
        if (d->boot_order)
            g_string_append_printf(dev, ",bootindex=%u", d->boot_order);
        add(argv, "-device");
        g_ptr_array_add(argv, g_string_free(dev, FALSE));
    }
}

static void add_nets(GPtrArray *argv, const QemuDomain *qd)
{
    for (guint i = 0; i < qd->nets->len; i++) {
        const QemuNet *n = qd->nets->pdata[i];
        if (g_str_equal(n->type, "user")) {
            addf(argv, "-netdev", "user,id=net%u", i);
        } else if (g_str_equal(n->type, "ethernet")) {
            g_autofree char *ifname = n->ifname ? esc(n->ifname) : NULL;
            addf(argv, "-netdev", "tap,id=net%u%s%s,script=no,downscript=no", i,
                 ifname ? ",ifname=" : "", ifname ? ifname : "");
        } else {
            g_autofree char *br = esc(n->bridge);
            addf(argv, "-netdev", "bridge,id=net%u,br=%s", i, br);
        }
        const char *model = g_str_equal(n->model, "virtio") ? "virtio-net-pci" : n->model;
        GString *dev = g_string_new(NULL);
        g_string_append_printf(dev, "%s,netdev=net%u,id=net%u-dev", model, i, i);
        if (n->mac)
            g_string_append_printf(dev, ",mac=%s", n->mac);
        if (n->boot_order)
            g_string_append_printf(dev, ",bootindex=%u", n->boot_order);
        add(argv, "-device");
        g_ptr_array_add(argv, g_string_free(dev, FALSE));
    }
}

static void add_chardevs(GPtrArray *argv, const QemuDomain *qd, const QemuCommandOptions *o)
{
    for (guint i = 0; i < qd->serials->len; i++) {
        const QemuSerial *s = qd->serials->pdata[i];
        g_autofree char *path = s->path ? esc(s->path) : NULL;
        g_autofree char *log = s->log_file ? esc(s->log_file) : NULL;
        g_autofree char *logopt = log ? g_strdup_printf(",logfile=%s,logappend=%s", log,
                                                        s->log_append ? "on" : "off")
                                      : g_strdup("");
        if (g_str_equal(s->type, "pty"))
            addf(argv, "-chardev", "pty,id=charserial%u%s", s->port, logopt);
        else if (g_str_equal(s->type, "file"))
            addf(argv, "-chardev", "file,id=charserial%u,path=%s%s", s->port, path, logopt);
        else
            addf(argv, "-chardev", "socket,id=charserial%u,path=%s,server=%s%s%s", s->port, path,
                 s->bind ? "on" : "off", s->bind ? ",wait=off" : "", logopt);
        addf(argv, "-device", "isa-serial,chardev=charserial%u,id=serial%u,index=%u", s->port,
             s->port, s->port);
    }
    if (qd->channels->len)
        addf(argv, "-device", "virtio-serial-pci,id=virtio-serial0");
    for (guint i = 0; i < qd->channels->len; i++) {
        const QemuChannel *c = qd->channels->pdata[i];
        g_autofree char *chosen = c->path ? NULL : g_strdup_printf("%s%u", o->channel_prefix, i);
        g_autofree char *path = esc(c->path ? c->path : chosen);
        g_autofree char *name = esc(c->name);
        addf(argv, "-chardev", "socket,id=charchannel%u,path=%s,server=on,wait=off", i, path);
        addf(argv, "-device",
             "virtserialport,bus=virtio-serial0.0,nr=%u,chardev=charchannel%u,id=channel%u,name=%s",
             i + 1, i, i, name);
    }
}

GPtrArray *qemu_command_build(const QemuDomain *qd, const DomainDef *def,
                              const QemuCommandOptions *o)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    add(argv, qd->emulator ? qd->emulator : o->emulator);
    g_autofree char *name = esc(def->name);
    g_autofree char *uuid = ferry_uuid_to_string(def->uuid);
    addf(argv, "-name", "guest=%s,debug-threads=on", name);
    addf(argv, "-uuid", "%s", uuid);
    add(argv, "-nodefaults");
    add(argv, "-no-user-config");
    addf(argv, "-msg", "timestamp=on");
    const char *machine = qd->machine ? qd->machine : "pc";
    addf(argv, "-machine", "%s%s%s", machine, qd->acpi ? "" : ",acpi=off",
         qd->hpet_off ? ",hpet=off" : "");
    addf(argv, "-accel", "%s", qd->kvm ? "kvm" : "tcg");
    GString *cpu = g_string_new(qd->cpu_model);
    for (guint i = 0; i < qd->cpu_features->len; i++)
        g_string_append_printf(cpu, ",%s", (const char *)qd->cpu_features->pdata[i]);
    add(argv, "-cpu");
    g_ptr_array_add(argv, g_string_free(cpu, FALSE));
    if (qd->max_memory_kib)
        addf(argv, "-m", "size=%" G_GUINT64_FORMAT "k,slots=%u,maxmem=%" G_GUINT64_FORMAT "k",
             qd->memory_kib, qd->memory_slots, qd->max_memory_kib);
    else
        addf(argv, "-m", "size=%" G_GUINT64_FORMAT "k", qd->memory_kib);
    addf(argv, "-smp", "%u,maxcpus=%u,sockets=%u,cores=1,threads=1", qd->vcpus_current,
         qd->vcpus, qd->vcpus);
    addf(argv, "-rtc", "base=%s%s", qd->clock_localtime ? "localtime" : "utc",
         qd->rtc_catchup ? ",driftfix=slew" : "");
    /* ACPI sleep states live in the machine's power-management device. */
    const char *pm = strstr(machine, "q35") ? "ICH9-LPC" : "PIIX4_PM";
    if (qd->s3 >= 0)
        addf(argv, "-global", "%s.disable_s3=%d", pm, !qd->s3);
    if (qd->s4 >= 0)
        addf(argv, "-global", "%s.disable_s4=%d", pm, !qd->s4);
    if (qd->no_reboot)
        add(argv, "-no-reboot");
    if (qd->kernel)
        addf(argv, "-kernel", "%s", qd->kernel);
    if (qd->initrd)
        addf(argv, "-initrd", "%s", qd->initrd);
    if (qd->cmdline)
        addf(argv, "-append", "%s", qd->cmdline);
    if (qd->boot_devs)
        addf(argv, "-boot", "order=%s", qd->boot_devs);
    g_autofree char *qmp = esc(o->qmp_path);
    addf(argv, "-chardev", "socket,id=charmonitor,path=%s,server=on,wait=off", qmp);
    addf(argv, "-mon", "chardev=charmonitor,id=monitor,mode=control");
    addf(argv, "-pidfile", "%s", o->pid_path);
    if (qd->vnc) {
        g_autofree char *vnc = esc(qd->vnc_socket ? qd->vnc_socket : o->vnc_path);
        addf(argv, "-vnc", "unix:%s", vnc);
    } else {
        addf(argv, "-display", "none");
    }
    if (qd->video)
        addf(argv, "-device", "%s,id=video0", qd->video);
    /* Empty root ports on q35's root bus (pcie.0), numbered as libvirt does. */
    for (guint i = 1; i <= qd->pcie_root_ports; i++)
        addf(argv, "-device", "pcie-root-port,id=pci.%u,chassis=%u,port=0x%x,bus=pcie.0", i, i,
             0x10 + i - 1);
    if (g_strcmp0(qd->usb_model, "qemu-xhci") == 0 && qd->usb_ports)
        addf(argv, "-device", "qemu-xhci,id=usb,p2=%u,p3=%u", qd->usb_ports, qd->usb_ports);
    else if (g_strcmp0(qd->usb_model, "qemu-xhci") == 0)
        addf(argv, "-device", "qemu-xhci,id=usb");
    else if (g_strcmp0(qd->usb_model, "piix3-uhci") == 0)
        addf(argv, "-device", "piix3-usb-uhci,id=usb");
    else if (qd->usb && !qd->usb_model)
        add(argv, "-usb");
    for (guint i = 0; i < qd->inputs->len; i++)
        addf(argv, "-device", "%s,id=input%u", (const char *)qd->inputs->pdata[i], i);
    add_disks(argv, qd);
    add_nets(argv, qd);
    add_chardevs(argv, qd, o);
    if (qd->balloon)
        addf(argv, "-device", "virtio-balloon-pci,id=balloon0");
    if (qd->rng_source) {
        addf(argv, "-object", "rng-random,id=objrng0,filename=%s", qd->rng_source);
        addf(argv, "-device", "virtio-rng-pci,rng=objrng0,id=rng0");
    }
    if (o->incoming)
        addf(argv, "-incoming", "defer");
    g_ptr_array_add(argv, NULL);
    return g_steal_pointer(&argv);
}
