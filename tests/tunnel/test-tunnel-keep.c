/* The keep of a resumable plaintext relay (tunnel-keep): bytes tee()d from
 * a pipe the test fills 4 KiB at a time (one pipe buffer each), what was
 * kept then taken out of the pipe as the relay's splice would. What is kept is sent again
 * byte for byte from any position held; the oldest bytes go when told, or
 * when the pipes allowed are full (then it says it dropped early), but
 * pipes of small buffers are merged instead; the input's end reads as 0. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tunnel/tunnel-keep.h"

#define PAGE 4096
#define KEEP_PIPE (64u << 10) /* 16 buffers */
#define KEEP_PIPES 3          /* 48 buffers of 4 KiB: 192 KiB at most */

static guint8 pattern(guint64 i)
{
    return (guint8)((i * 2654435761u) >> 13);
}

typedef struct {
    int in[2]; /* the relay's pipe */
    guint64 written;
    TunnelKeep *keep;
} Rig;

static void rig_init(Rig *r)
{
    ck_assert_int_eq(pipe2(r->in, O_CLOEXEC), 0);
    ck_assert_int_ge(fcntl(r->in[1], F_SETPIPE_SZ, 256 << 10), 0);
    r->written = 0;
    g_autoptr(GError) e = NULL;
    r->keep = tunnel_keep_new(KEEP_PIPE, KEEP_PIPES, &e);
    ck_assert_msg(r->keep != NULL, "%s", e ? e->message : "");
}

static void rig_clear(Rig *r)
{
    tunnel_keep_free(r->keep);
    close(r->in[0]);
    if (r->in[1] >= 0)
        close(r->in[1]);
}

/* len bytes more into the pipe, kept, then taken out of the pipe. */
static void feed(Rig *r, gsize len)
{
    guint8 buf[PAGE];
    for (gsize done = 0; done < len; done += PAGE) {
        for (gsize i = 0; i < PAGE; i++)
            buf[i] = pattern(r->written + i);
        ck_assert_int_eq(write(r->in[1], buf, PAGE), PAGE);
        r->written += PAGE;
    }
    /* tee() takes from the pipe's head: what it kept is taken out before
     * the next, as the relay splices it out. */
    for (gsize kept = 0; kept < len;) {
        gssize n = tunnel_keep_tee(r->keep, r->in[0], len - kept);
        ck_assert_msg(n > 0, "tee: %zd (%s)", n, g_strerror(errno));
        kept += n;
        for (gssize out = 0; out < n;) {
            gssize m = read(r->in[0], buf, MIN((gssize)sizeof(buf), n - out));
            ck_assert_int_gt(m, 0);
            out += m;
        }
    }
    ck_assert_uint_eq(tunnel_keep_end(r->keep), r->written);
}

/* The kept bytes [pos, until) arrive whole and right on a socket. */
static void check_resend(Rig *r, guint64 pos, guint64 until)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    guint pieces = 0;
    for (guint64 at = pos; at < until; pieces++) {
        gssize n = tunnel_keep_send(r->keep, at, until, sv[0]);
        ck_assert_msg(n > 0, "send from %" G_GUINT64_FORMAT ": %s", at, g_strerror(errno));
        at += n;
    }
    ck_assert_uint_gt(pieces, 1); /* it spanned pipes */
    close(sv[0]);
    guint8 buf[PAGE];
    guint64 at = pos;
    for (;;) {
        gssize n = read(sv[1], buf, sizeof(buf));
        if (n <= 0)
            break;
        for (gssize i = 0; i < n; i++)
            ck_assert_msg(buf[i] == pattern(at + i), "byte %" G_GUINT64_FORMAT, at + i);
        at += n;
    }
    close(sv[1]);
    ck_assert_uint_eq(at, until);
}

START_TEST(test_keeps_sends_again_and_drops_when_told)
{
    Rig r;
    rig_init(&r);
    /* 1 MiB through, keeping the last 100 KiB: pipes are dropped and
     * reused, never more than allowed. */
    for (guint i = 0; i < 64; i++) {
        feed(&r, 16 << 10);
        tunnel_keep_drop_before(r.keep, r.written > (100 << 10) ? r.written - (100 << 10) : 0);
    }
    ck_assert_uint_eq(tunnel_keep_from(r.keep), r.written - (100 << 10));
    ck_assert(!tunnel_keep_short(r.keep));
    /* From within a buffer, across pipes, to within another. */
    check_resend(&r, tunnel_keep_from(r.keep) + 1000, r.written - 300);
    /* The keep holds on to them: again, all of it. */
    check_resend(&r, tunnel_keep_from(r.keep), r.written);
    /* A position not held. */
    errno = 0;
    ck_assert_int_lt(tunnel_keep_send(r.keep, tunnel_keep_from(r.keep) - 1, r.written, 1), 0);
    ck_assert_int_eq(errno, ERANGE);
    rig_clear(&r);
}
END_TEST

START_TEST(test_full_pipes_drop_the_oldest_early)
{
    Rig r;
    rig_init(&r);
    feed(&r, 192 << 10); /* all 48 buffers */
    ck_assert_uint_eq(tunnel_keep_from(r.keep), 0);
    ck_assert(!tunnel_keep_short(r.keep));
    feed(&r, 16 << 10); /* no pipe left: the oldest (16 buffers) goes */
    ck_assert(tunnel_keep_short(r.keep));
    ck_assert_uint_eq(tunnel_keep_from(r.keep), 64 << 10);
    check_resend(&r, tunnel_keep_from(r.keep), r.written);
    rig_clear(&r);
}
END_TEST

/* Buffers of 16 bytes each (messages spliced one by one from a socket, as
 * a VMM's small replies are): the pipes fill with few bytes, and are
 * merged rather than dropped. */
START_TEST(test_sparse_pipes_are_merged_not_dropped)
{
    Rig r;
    rig_init(&r);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    guint8 msg[16], sink[16];
    for (guint i = 0; i < 1000; i++) {
        for (gsize j = 0; j < sizeof(msg); j++)
            msg[j] = pattern(r.written + j);
        ck_assert_int_eq(write(sv[0], msg, sizeof(msg)), sizeof(msg));
        ck_assert_int_eq(splice(sv[1], NULL, r.in[1], NULL, sizeof(msg), 0), sizeof(msg));
        r.written += sizeof(msg);
        ck_assert_int_eq(tunnel_keep_tee(r.keep, r.in[0], sizeof(msg)), sizeof(msg));
        ck_assert_int_eq(read(r.in[0], sink, sizeof(sink)), sizeof(sink));
    }
    /* 1000 buffers where 48 fit: all 16,000 bytes still kept */
    ck_assert(!tunnel_keep_short(r.keep));
    ck_assert_uint_eq(tunnel_keep_from(r.keep), 0);
    check_resend(&r, 0, r.written);
    close(sv[0]);
    close(sv[1]);
    rig_clear(&r);
}
END_TEST

START_TEST(test_end_of_input)
{
    Rig r;
    rig_init(&r);
    feed(&r, 8 << 10);
    ck_assert_int_lt(tunnel_keep_tee(r.keep, r.in[0], PAGE), 0);
    ck_assert_int_eq(errno, EAGAIN); /* empty, its writer still there */
    close(r.in[1]);
    r.in[1] = -1;
    ck_assert_int_eq(tunnel_keep_tee(r.keep, r.in[0], PAGE), 0);
    rig_clear(&r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tunnel-keep");
    TCase *tc = tcase_create("keep");
    tcase_add_test(tc, test_keeps_sends_again_and_drops_when_told);
    tcase_add_test(tc, test_full_pipes_drop_the_oldest_early);
    tcase_add_test(tc, test_sparse_pipes_are_merged_not_dropped);
    tcase_add_test(tc, test_end_of_input);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
