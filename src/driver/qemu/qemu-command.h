/* QEMU's command line for a domain. QEMU gets no network listener from it:
 * its monitor, VNC display and character devices are UNIX sockets or files. */
#pragma once

#include <glib.h>

#include "driver/qemu/qemu-domain.h"

typedef struct {
    const char *emulator; /* used when the XML names none */
    const char *qmp_path;
    const char *pid_path;
    const char *vnc_path; /* the VNC socket when the XML names none */
    const char *channel_prefix; /* channel N's socket is PREFIX<N> when the XML names none */
    gboolean incoming;    /* -incoming defer: wait for migrate-incoming */
} QemuCommandOptions;

/* The argv (NULL-terminated, strings owned by the array). Every check is
 * qemu_domain_new()'s: a QemuDomain always makes a command line. */
GPtrArray *qemu_command_build(const QemuDomain *qd, const DomainDef *def,
                              const QemuCommandOptions *options);
