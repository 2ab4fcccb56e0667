/* Helpers shared by the libFuzzer harnesses: quiet logging, wire framing of
 * fuzz inputs, blocking socket I/O with a deadline, temporary directories. */
#pragma once

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry points (the harness defines them). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Once per process: only errors are logged (FUZZ_VERBOSE=1 logs everything),
 * a write to a closed socket is an error, not a signal, and GLib's pool
 * threads stay alive between inputs. */
void fuzz_init(void);

/* A fuzz input read as a sequence of RPC messages in wire form. Each record
 * starts with a length word; the harness rewrites it to the bytes actually
 * left, so a mutation of a length or a truncation still yields a framed
 * message (the framing itself is the job of the framing harness). */
typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
} FuzzRecords;

void fuzz_records_init(FuzzRecords *r, const uint8_t *data, size_t size);
/* Next message body (header + payload, without the length word); FALSE at the end. */
gboolean fuzz_records_next(FuzzRecords *r, const uint8_t **body, size_t *len);

/* Writes a framed message (length word + body) to fd; FALSE if the peer is gone. */
gboolean fuzz_write_message(int fd, const uint8_t *body, size_t len);
gboolean fuzz_write_all(int fd, const void *buf, size_t len);

/* Reads exactly len bytes before the monotonic deadline. 1 read, 0 end of
 * stream or error, -1 deadline passed. */
int fuzz_read_exact(int fd, void *buf, size_t len, gint64 deadline_us);

/* Reads and throws away everything until end of stream; FALSE if the
 * deadline passed first. */
gboolean fuzz_drain(int fd, gint64 deadline_us);

/* Waits until no thread of the process has one of the names the library
 * gives its per-connection and per-stream threads (rpc-read, rpc-write,
 * tunnel-out, tunnel-sink, qmp-reader): they are detached, and libFuzzer's
 * leak check after the input would take the thread-local state of one that
 * is still exiting for a leak. A hang after 10 s. */
void fuzz_wait_threads_gone(void);

/* Reads the server's messages until the reply to `serial` of program `prog`
 * (a call to an unknown program is answered in that program's name; events
 * and stream packets meanwhile are skipped). FALSE if the server closed; a
 * hang if no reply comes within 10 s; an abort on a length word the server
 * must never send. */
gboolean fuzz_await_reply(int fd, guint32 prog, guint32 serial);

/* Reports a hang the way libFuzzer reports crashes: message, then abort. */
G_NORETURN void fuzz_hang(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* A fresh directory under $TMPDIR, removed at exit. */
char *fuzz_make_tmpdir(const char *prefix);

/* Big-endian 32-bit load, as XDR writes. */
static inline guint32 fuzz_be32(const uint8_t *p)
{
    return ((guint32)p[0] << 24) | ((guint32)p[1] << 16) | ((guint32)p[2] << 8) | p[3];
}
