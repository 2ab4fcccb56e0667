/* A VMM socket and a file, one direction: the data plane of save (VMM ->
 * file) and restore (file -> VMM). The daemon, not the VMM, owns the file:
 * it sees and reports every write error (a full disk), counts the bytes for
 * the job, throttles, and cancels at any moment by shutting the VMM's socket
 * down. Bytes move with splice() through a pipe, never entering user space. */
#pragma once

#include <glib.h>

#include "tunnel/tunnel-rate.h"

typedef struct TunnelFile TunnelFile;

typedef struct {
    const char *vmm_name;  /* "QEMU" */
    const char *file_name; /* "the save image '/x/y.save'" */
    gboolean to_file;      /* save; FALSE: restore */
    guint64 bandwidth;     /* bytes per second, 0 = unlimited */
} TunnelFileConfig;

/* Takes both fds on every path. Lifetime: refcounted; the pump thread holds
 * a reference while it runs. */
TunnelFile *tunnel_file_new(int vmm_fd, int file_fd, const TunnelFileConfig *config);
TunnelFile *tunnel_file_ref(TunnelFile *tf);
void tunnel_file_unref(TunnelFile *tf);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TunnelFile, tunnel_file_unref)

void tunnel_file_start(TunnelFile *tf);
/* TRUE once the source side reached its end (the VMM closed its socket; the
 * file's end, passed on to the VMM as a half-close); FALSE with the failure,
 * or OPERATION_TIMEOUT once deadline_us (monotonic; 0 = none) passed. */
gboolean tunnel_file_wait(TunnelFile *tf, gint64 deadline_us, GError **error);
/* Stops at once (shuts the VMM's socket down); never waits. */
void tunnel_file_abort(TunnelFile *tf, const GError *why);
gboolean tunnel_file_is_over(TunnelFile *tf);
void tunnel_file_set_bandwidth(TunnelFile *tf, guint64 bytes_per_second);
/* Counts against rate (shared with other channels) from now on. */
void tunnel_file_set_rate(TunnelFile *tf, TunnelRate *rate);
/* Bytes moved: VMM -> file (save), file -> VMM (restore). */
void tunnel_file_get_bytes(TunnelFile *tf, guint64 *out, guint64 *in);
