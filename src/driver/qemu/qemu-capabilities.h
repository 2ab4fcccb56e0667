/* What the installed QEMU offers, as the QEMU driver may use it: machine
 * types, CPU models and device types, asked once of a short-lived
 * `-machine none` QEMU over QMP and kept; and the domain capabilities
 * document (`virsh domcapabilities`) built from them and from what
 * qemu-domain.c accepts. */
#pragma once

#include <glib.h>

typedef struct QemuCaps QemuCaps;

/* Nothing runs until a document is asked for. */
QemuCaps *qemu_caps_new(const char *emulator);
void qemu_caps_free(QemuCaps *caps);

/* libvirt's <domainCapabilities> for the given filters (each NULL when the
 * client gave none). One naming what the driver cannot run (another
 * emulator, architecture, machine type or virt type) is refused naming it;
 * kvm_problem says why type 'kvm' cannot run here (NULL if it can). */
char *qemu_caps_domain_capabilities(QemuCaps *caps, const char *kvm_problem,
                                    const char *emulatorbin, const char *arch,
                                    const char *machine, const char *virttype, guint flags,
                                    GError **error);
