/* `virsh console` for QEMU guests: a guest serial port's pty carried inside
 * an RPC stream, as a tunnel carries a migration. */
#pragma once

#include "tunnel/tunnel-router.h"

typedef struct QemuConsole QemuConsole;

/* Opens pty_path and starts carrying it over the stream binding names (the
 * binding is used up either way). The stream ends when the client closes it,
 * the console is closed, or the guest's pty goes away. */
QemuConsole *qemu_console_open(const char *pty_path, TunnelBinding *binding, GError **error);
/* Ends the stream (another client forced its way in, the domain stopped). */
void qemu_console_close(QemuConsole *console);
gboolean qemu_console_is_over(QemuConsole *console);
/* Lifetime: freeing closes it first. */
void qemu_console_free(QemuConsole *console);
