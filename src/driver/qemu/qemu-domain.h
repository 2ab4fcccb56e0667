/* What the QEMU driver runs: the domain XML checked against what it supports
 * (anything else is refused, naming the element or attribute), and the device
 * model the command line is built from. The generic DomainDef stays the
 * domain's configuration (it keeps the XML, so dumpxml round-trips); a
 * QemuDomain is derived from it whenever the driver needs one. */
#pragma once

#include <glib.h>

#include "driver/domain-def.h"

typedef struct {
    gboolean block;   /* type='block' (source dev), else a file */
    gboolean cdrom;   /* device='cdrom' */
    char *source;     /* NULL: an empty cdrom */
    char *format;     /* raw, qcow2 */
    char *bus;        /* virtio, sata, scsi, ide */
    char *target;     /* vda, sda, hda ... */
    guint unit;       /* from the target: sda 0, sdb 1 ... */
    char *cache;      /* NULL: QEMU's default */
    char *discard;    /* unmap, ignore; NULL: QEMU's default */
    char *io;         /* native, threads; NULL: QEMU's default */
    gboolean readonly, shareable;
    guint boot_order; /* 0: none */
} QemuDisk;

typedef struct {
    char *type;   /* user, ethernet, bridge */
    char *mac;    /* NULL: QEMU picks */
    char *model;  /* virtio, e1000, rtl8139 */
    char *ifname; /* ethernet: the tap device */
    char *bridge; /* bridge: its name */
    guint boot_order;
} QemuNet;

typedef struct {
    char *type;  /* pty, file, unix */
    char *path;  /* file, unix */
    gboolean bind; /* unix: mode='bind' (QEMU listens on the socket) */
    guint port;
    char *log_file; /* <log file=>: a copy of the output, NULL if none */
    gboolean log_append;
} QemuSerial;

typedef struct {
    char *path; /* NULL: QemuCommandOptions' channel_prefix and the channel's index */
    char *name; /* the virtio-serial port name */
} QemuChannel;

/* Channels 0..N-1 may leave their socket path to the driver. */
#define QEMU_CHANNELS_IN_RUN_DIR 8

/* PCIe root ports a q35 domain may have: free slots of the root bus. */
#define QEMU_PCIE_ROOT_PORTS_MAX 16

typedef struct {
    gboolean kvm; /* <domain type='kvm'> */
    char *emulator; /* NULL: the driver's */
    char *arch;
    char *machine; /* NULL: QEMU's default */
    char *kernel, *initrd, *cmdline;
    char *boot_devs; /* "cdn" from <os><boot dev=>, in order; NULL if none */
    gboolean acpi, apic;
    char *cpu_model; /* for -cpu: "max", "qemu64" ... */
    GPtrArray *cpu_features; /* "+name" / "-name" */
    gboolean clock_localtime;
    gboolean rtc_catchup; /* <timer name='rtc' tickpolicy='catchup'> */
    gboolean hpet_off;    /* <timer name='hpet' present='no'> */
    int s3, s4;           /* <pm> suspend-to-mem, -to-disk: 1 on, 0 off, -1 QEMU's default */
    gboolean no_reboot; /* on_reboot='destroy' */
    guint64 memory_kib, current_memory_kib, max_memory_kib; /* max 0: no hotplug */
    guint memory_slots;
    guint vcpus, vcpus_current;
    GPtrArray *disks;    /* QemuDisk* */
    GPtrArray *nets;     /* QemuNet* */
    GPtrArray *serials;  /* QemuSerial* */
    GPtrArray *channels; /* QemuChannel* */
    gboolean vnc;
    char *vnc_socket; /* NULL: one in the run dir */
    char *video;      /* -device name, NULL: none */
    GPtrArray *inputs; /* -device names */
    gboolean usb;      /* an input needs a USB controller */
    char *usb_model;   /* <controller type='usb' model>: NULL none given (the machine's) */
    guint usb_ports;   /* its ports='N', 0: QEMU's default */
    guint pcie_root_ports; /* <controller type='pci' model='pcie-root-port'>s (q35) */
    gboolean balloon;
    char *rng_source; /* NULL: no rng */
} QemuDomain;

/* Parses domain XML for the QEMU driver: every element and attribute must be
 * one it runs (FERRY_ERR_CONFIG_UNSUPPORTED naming it otherwise), then the
 * generic DomainDef is parsed. qemu_domain_new() then checks the values. */
DomainDef *qemu_domain_parse_xml(const char *xml, GError **error);

/* The device model of def (a def qemu_domain_parse_xml() accepted). */
QemuDomain *qemu_domain_new(const DomainDef *def, GError **error);
void qemu_domain_free(QemuDomain *dom);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(QemuDomain, qemu_domain_free)
