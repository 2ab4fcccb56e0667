/* TLS and SASL transports in-process: bulk transfers in both directions at
 * once through each (records and encoded blocks split and joined at every
 * size), a silent TLS peer timed out, DIGEST-MD5's security layer really
 * changing the bytes; plus client URI parsing and libvirt auth files. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../test-pki.h"
#include "remote/remote-auth.h"
#include "remote/remote-dispatch.h"
#include "remote/remote-peer.h"
#include "remote/remote-uri.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-client.h"
#include "rpc/rpc-sasl.h"
#include "rpc/rpc-server.h"
#include "rpc/rpc-socket.h"
#include "rpc/rpc-tls.h"
#include "util/error.h"
#include "util/log.h"

static char *tmpdir;

static char *path_in(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

static void run_ok(const char *cmd)
{
    ck_assert_msg(system(cmd) == 0, "command failed: %s", cmd);
}

static void write_file(const char *name, const char *text)
{
    g_autofree char *p = path_in(name);
    ck_assert(g_file_set_contents(p, text, -1, NULL));
}

/* A CA, a server certificate for 127.0.0.1 and a client certificate. */
static void make_pki(void)
{
    ck_assert(test_pki_make(tmpdir));
}

static void setup(void)
{
    tmpdir = g_dir_make_tmp("ferry-security-XXXXXX", NULL);
    ck_assert_ptr_nonnull(tmpdir);
}

static void teardown(void)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
    run_ok(cmd);
    g_clear_pointer(&tmpdir, g_free);
}

/* ---- bulk transfer through any pair of transports ---- */

#define BULK_BYTES (6 * 1024 * 1024 + 12345)

static guint8 pattern(gsize i, guint8 seed)
{
    return (guint8)((i * 131 + seed) % 251);
}

typedef struct {
    RpcTransport *t;
    guint8 seed;
    gboolean ok;
    char *why;
} Side;

/* Writes BULK_BYTES in vectors of pieces from 1 byte to 200 KiB. */
static gpointer bulk_writer(gpointer data)
{
    Side *s = data;
    guint8 *buf = g_malloc(BULK_BYTES);
    for (gsize i = 0; i < BULK_BYTES; i++)
        buf[i] = pattern(i, s->seed);
    static const gsize sizes[] = {1, 28, 4000, 4095, 4096, 16384, 16385, 70000, 200 * 1024, 3};
    gsize off = 0, k = 0;
    s->ok = TRUE;
    while (off < BULK_BYTES && s->ok) {
        struct iovec iov[8];
        int n = 0;
        while (n < 8 && off < BULK_BYTES) {
            gsize len = MIN(sizes[k++ % G_N_ELEMENTS(sizes)], BULK_BYTES - off);
            iov[n].iov_base = buf + off;
            iov[n].iov_len = len;
            off += len;
            n++;
        }
        g_autoptr(GError) e = NULL;
        if (!rpc_transport_writev(s->t, iov, n, &e)) {
            s->ok = FALSE;
            s->why = g_strdup(e->message);
        }
    }
    g_free(buf);
    return NULL;
}

static gpointer bulk_reader(gpointer data)
{
    Side *s = data;
    guint8 *buf = g_malloc(256 * 1024);
    gsize got = 0;
    s->ok = TRUE;
    while (got < BULK_BYTES) {
        g_autoptr(GError) e = NULL;
        gssize n = rpc_transport_read(s->t, buf, MIN(256 * 1024, BULK_BYTES - got), &e);
        if (n <= 0) {
            s->ok = FALSE;
            s->why = g_strdup_printf("read returned %zd after %zu bytes: %s", n, got,
                                     e ? e->message : "end of stream");
            break;
        }
        for (gssize i = 0; i < n; i++) {
            if (buf[i] != pattern(got + i, s->seed)) {
                s->ok = FALSE;
                s->why = g_strdup_printf("byte %zu differs", got + i);
                break;
            }
        }
        if (!s->ok)
            break;
        got += n;
    }
    g_free(buf);
    return NULL;
}

/* a -> b and b -> a at the same time: one reader and one writer per transport. */
static void bulk_both_ways(RpcTransport *a, RpcTransport *b)
{
    Side wa = {.t = a, .seed = 7}, rb = {.t = b, .seed = 7};
    Side wb = {.t = b, .seed = 99}, ra = {.t = a, .seed = 99};
    GThread *th[4] = {g_thread_new("wa", bulk_writer, &wa), g_thread_new("rb", bulk_reader, &rb),
                      g_thread_new("wb", bulk_writer, &wb), g_thread_new("ra", bulk_reader, &ra)};
    for (int i = 0; i < 4; i++)
        g_thread_join(th[i]);
    Side *sides[] = {&wa, &rb, &wb, &ra};
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(sides[i]->ok, "side %d: %s", i, sides[i]->why);
        g_free(sides[i]->why);
    }
}

/* ---- TLS ---- */

typedef struct {
    RpcTlsContext *ctx;
    int fd;
    RpcTransport *t;
    GError *error;
} ServerHandshake;

static gpointer server_handshake(gpointer data)
{
    ServerHandshake *h = data;
    h->t = rpc_tls_server_handshake(h->ctx, h->fd, &h->error);
    return NULL;
}

static RpcTlsContext *server_context(guint timeout_ms)
{
    g_autofree char *ca = path_in("cacert.pem"), *cert = path_in("server-cert.pem"),
                    *key = path_in("server-key.pem");
    RpcTlsConfig cfg = {.ca_file = ca,
                        .cert_file = cert,
                        .key_file = key,
                        .verify_peer = TRUE,
                        .handshake_timeout_ms = timeout_ms};
    g_autoptr(GError) e = NULL;
    RpcTlsContext *ctx = rpc_tls_context_new_server(&cfg, &e);
    ck_assert_msg(ctx != NULL, "%s", e ? e->message : "");
    return ctx;
}

START_TEST(tls_bulk_both_directions)
{
    make_pki();
    g_autoptr(RpcTlsContext) sctx = server_context(5000);
    g_autofree char *ca = path_in("cacert.pem"), *cert = path_in("client-cert.pem"),
                    *key = path_in("client-key.pem");
    RpcTlsConfig ccfg = {.ca_file = ca, .cert_file = cert, .key_file = key, .verify_peer = TRUE};
    g_autoptr(GError) e = NULL;
    g_autoptr(RpcTlsContext) cctx = rpc_tls_context_new_client(&ccfg, &e);
    ck_assert_msg(cctx != NULL, "%s", e ? e->message : "");

    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ServerHandshake h = {.ctx = sctx, .fd = sv[0]};
    GThread *th = g_thread_new("hs", server_handshake, &h);
    RpcTransport *client = rpc_tls_client_handshake(cctx, sv[1], "127.0.0.1", &e);
    g_thread_join(th);
    ck_assert_msg(h.t != NULL, "server: %s", h.error ? h.error->message : "");
    ck_assert_msg(client != NULL, "client: %s", e ? e->message : "");
    ck_assert_str_eq(rpc_tls_transport_get_peer_dn(h.t), "C=GB,O=unit,CN=client");
    ck_assert_uint_ge(rpc_tls_transport_get_key_bits(client), 128);
    ck_assert(client->is_secure);

    bulk_both_ways(client, h.t);
    rpc_transport_free(client);
    rpc_transport_free(h.t);
}
END_TEST

START_TEST(tls_silent_client_times_out)
{
    make_pki();
    g_autoptr(RpcTlsContext) sctx = server_context(300);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    gint64 start = g_get_monotonic_time();
    g_autoptr(GError) e = NULL;
    RpcTransport *t = rpc_tls_server_handshake(sctx, sv[0], &e);
    gint64 took_ms = (g_get_monotonic_time() - start) / 1000;
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(e->message, "did not complete within 300 ms"), "%s", e->message);
    ck_assert_int_ge(took_ms, 250);
    ck_assert_int_lt(took_ms, 3000);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

START_TEST(tls_missing_files_are_named)
{
    make_pki();
    g_autofree char *ca = path_in("cacert.pem"), *cert = path_in("server-cert.pem"),
                    *key = path_in("client-key.pem");
    RpcTlsConfig cfg = {
        .ca_file = ca, .cert_file = cert, .key_file = "/nonexistent/key.pem", .verify_peer = TRUE};
    g_autoptr(GError) e = NULL;
    ck_assert_ptr_null(rpc_tls_context_new_server(&cfg, &e));
    ck_assert_str_eq(e->message,
                     "cannot read key_file '/nonexistent/key.pem': No such file or directory");
    g_clear_error(&e);
    cfg.key_file = key; /* the client's key: not the server certificate's */
    ck_assert_ptr_null(rpc_tls_context_new_server(&cfg, &e));
    ck_assert_msg(strstr(e->message, "is not the key of cert_file"), "%s", e->message);
}
END_TEST

/* ---- SASL ---- */

static void sasl_config(void)
{
    g_autofree char *db = path_in("sasldb");
    g_autofree char *cmd =
        g_strdup_printf("printf secret1 | saslpasswd2 -f '%s' -a libvirt -p alice", db);
    run_ok(cmd);
    g_autofree char *conf = g_strdup_printf("mech_list: digest-md5\nsasldb_path: %s\n", db);
    write_file("libvirt.conf", conf);
    g_setenv("SASL_CONF_PATH", tmpdir, TRUE);
}

/* Runs the exchange between two sessions directly, as the RPC calls would
 * (each side's output stays valid until that side's next call). */
static void authenticate(RpcSasl *server, RpcSasl *client)
{
    g_autoptr(GError) e = NULL;
    g_autofree char *mechs = rpc_sasl_list_mechanisms(server, &e);
    ck_assert_msg(mechs != NULL, "%s", e ? e->message : "");
    const char *mech = NULL, *cout = NULL, *sout = NULL;
    gsize coutlen = 0, soutlen = 0;
    RpcSaslStatus c = rpc_sasl_client_start(client, mechs, &mech, &cout, &coutlen, &e);
    ck_assert_msg(c != RPC_SASL_FAILED, "%s", e ? e->message : "");
    ck_assert_str_eq(mech, "DIGEST-MD5");
    RpcSaslStatus s = rpc_sasl_server_start(server, mech, cout, coutlen, &sout, &soutlen, &e);
    for (int i = 0; i < 10; i++) {
        ck_assert_msg(s != RPC_SASL_FAILED, "server: %s", e ? e->message : "");
        c = rpc_sasl_client_step(client, sout, soutlen, &cout, &coutlen, &e);
        ck_assert_msg(c != RPC_SASL_FAILED, "client: %s", e ? e->message : "");
        if (s == RPC_SASL_COMPLETE)
            break;
        s = rpc_sasl_server_step(server, cout, coutlen, &sout, &soutlen, &e);
    }
    ck_assert_int_eq(s, RPC_SASL_COMPLETE);
    ck_assert_int_eq(c, RPC_SASL_COMPLETE);
    ck_assert_str_eq(rpc_sasl_get_username(server), "alice");
    ck_assert_uint_ge(rpc_sasl_get_ssf(server), 56);
    ck_assert_uint_eq(rpc_sasl_get_ssf(server), rpc_sasl_get_ssf(client));
}

START_TEST(sasl_layer_bulk_both_directions)
{
    sasl_config();
    g_autoptr(GError) e = NULL;
    ck_assert(rpc_sasl_server_global_init("libvirt", &e));
    ck_assert(rpc_sasl_client_global_init(&e));

    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    RpcTransport *st = rpc_sasl_transport_new(rpc_transport_new_socket(sv[0]));
    RpcTransport *ct = rpc_sasl_transport_new(rpc_transport_new_socket(sv[1]));
    ck_assert(rpc_sasl_transport_is_sasl(st));

    RpcSaslCredentials creds = {.authname = "alice", .password = "secret1"};
    g_autoptr(RpcSasl) server = rpc_sasl_server_new("libvirt", st, &e);
    g_autoptr(RpcSasl) client = rpc_sasl_client_new("libvirt", "localhost", ct, &creds, &e);
    ck_assert_msg(server && client, "%s", e ? e->message : "");
    /* A UNIX socket needs no layer; ask for one, as plain TCP does. */
    ck_assert(rpc_sasl_set_security(server, 56, 100000, FALSE, &e));
    ck_assert(rpc_sasl_set_security(client, 56, 100000, FALSE, &e));
    authenticate(server, client);

    rpc_sasl_transport_start_decoding(st, server);
    rpc_sasl_transport_start_encoding(st);
    rpc_sasl_transport_start_decoding(ct, client);
    rpc_sasl_transport_start_encoding(ct);

    /* The layer changes the bytes: what the raw socket carries is not the text. */
    static const char text[] = "a known string that must not appear in the clear";
    ck_assert(rpc_transport_write_all(ct, text, sizeof(text), &e));
    guint8 raw[4096];
    gssize n = recv(sv[0], raw, sizeof(raw), MSG_PEEK);
    ck_assert_int_gt(n, (gssize)sizeof(text));
    ck_assert_ptr_null(memmem(raw, n, "known string", 12));
    char back[sizeof(text)];
    ck_assert(rpc_transport_read_all(st, back, sizeof(back), &e));
    ck_assert_str_eq(back, text);

    bulk_both_ways(ct, st);
    rpc_transport_free(st);
    rpc_transport_free(ct);
    g_clear_pointer(&server, rpc_sasl_unref);
    g_clear_pointer(&client, rpc_sasl_unref);
    rpc_sasl_global_done();
}
END_TEST

/* ---- plaintext behind the last SASL step ---- */

/* One call as raw bytes on fd, followed by `extra` bytes in the same write. */
static void send_call(int fd, int proc, guint32 serial, xdrproc_t filter, void *args,
                      const void *extra, gsize extra_len)
{
    g_autoptr(RpcMessage) m = rpc_message_new(512);
    m->header = (RpcHeader){.prog = REMOTE_PROGRAM, .vers = REMOTE_PROTOCOL_VERSION, .proc = proc,
                            .type = RPC_CALL, .serial = serial, .status = RPC_OK};
    g_autoptr(GError) e = NULL;
    ck_assert_msg(rpc_message_encode(m, filter, args, &e), "%s", e ? e->message : "");
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    g_byte_array_append(bytes, m->buf, m->len);
    if (extra_len)
        g_byte_array_append(bytes, extra, extra_len);
    ck_assert_int_eq(send(fd, bytes->data, bytes->len, MSG_NOSIGNAL), (gssize)bytes->len);
}

static RpcMessage *read_raw_message(int fd)
{
    RpcTransport *t = rpc_transport_new_socket(dup(fd));
    guint32 len_be;
    g_autoptr(GError) e = NULL;
    ck_assert_msg(rpc_transport_read_all(t, &len_be, 4, &e), "%s", e ? e->message : "");
    guint32 len = GUINT32_FROM_BE(len_be);
    ck_assert_uint_lt(len, 1024 * 1024);
    RpcMessage *m = rpc_message_new(len);
    memcpy(m->buf, &len_be, 4);
    ck_assert_msg(rpc_transport_read_all(t, m->buf + 4, len - 4, &e), "%s", e ? e->message : "");
    rpc_transport_free(t);
    m->len = len;
    ck_assert(rpc_message_decode_header(m, &e));
    return m;
}

static void recv_reply(int fd, guint32 serial, xdrproc_t filter, void *ret)
{
    g_autoptr(RpcMessage) m = read_raw_message(fd);
    g_autoptr(GError) e = NULL;
    ck_assert_uint_eq(m->header.serial, serial);
    ck_assert_uint_eq(m->header.status, RPC_OK);
    ck_assert_msg(rpc_message_decode(m, filter, ret, &e), "%s", e ? e->message : "");
}

/* An attacker in the path appends plaintext messages to the client's last
 * SASL step: they must go through the security layer that step switches
 * on (and fail there), never be read as if they had. */
START_TEST(sasl_plaintext_behind_the_last_step_is_not_parsed)
{
    sasl_config();
    g_autoptr(GError) e = NULL;
    ck_assert(remote_auth_global_init(NULL, &e));
    ck_assert(rpc_sasl_client_global_init(&e));
    RpcServerConfig cfg = {.max_clients = 10, .max_client_requests = 5, .max_workers = 2};
    RpcServer *server = rpc_server_new(&cfg);
    remote_dispatch_register(server);
    g_autofree char *path = path_in("sock");
    int lfd = rpc_socket_listen_unix(path, 0700, &e);
    ck_assert_msg(lfd >= 0, "%s", e ? e->message : "");
    RpcListenerOptions lo = {.auth_type = REMOTE_AUTH_SASL, .description = "unit",
                             .sasl_layer = TRUE};
    rpc_server_add_listener(server, lfd, &lo);
    ck_assert(rpc_server_start(server, &e));

    int fd = rpc_socket_connect_unix(path, &e);
    ck_assert_msg(fd >= 0, "%s", e ? e->message : "");
    RpcTransport *ct = rpc_transport_new_socket(dup(fd));
    RpcSaslCredentials creds = {.authname = "alice", .password = "secret1"};
    g_autoptr(RpcSasl) client = rpc_sasl_client_new("libvirt", "localhost", ct, &creds, &e);
    ck_assert_msg(client != NULL, "%s", e ? e->message : "");
    /* Ask for a layer, as a client on plain TCP does. */
    ck_assert(rpc_sasl_set_security(client, 56, 100000, FALSE, &e));

    remote_auth_sasl_init_ret init = {0};
    send_call(fd, REMOTE_PROC_AUTH_SASL_INIT, 1, RPC_XDR_VOID, NULL, NULL, 0);
    recv_reply(fd, 1, (xdrproc_t)xdr_remote_auth_sasl_init_ret, &init);
    const char *mech = NULL, *out = NULL;
    gsize outlen = 0;
    ck_assert(rpc_sasl_client_start(client, init.mechlist, &mech, &out, &outlen, &e) !=
              RPC_SASL_FAILED);
    remote_auth_sasl_start_args start = {.mech = (char *)mech, .nil = out == NULL,
                                         .data = {.data_len = outlen, .data_val = (char *)out}};
    remote_auth_sasl_start_ret sret = {0};
    send_call(fd, REMOTE_PROC_AUTH_SASL_START, 2, (xdrproc_t)xdr_remote_auth_sasl_start_args,
              &start, NULL, 0);
    recv_reply(fd, 2, (xdrproc_t)xdr_remote_auth_sasl_start_ret, &sret);
    ck_assert_int_eq(sret.complete, 0); /* DIGEST-MD5: the challenge */
    ck_assert(rpc_sasl_client_step(client, sret.data.data_val, sret.data.data_len, &out, &outlen,
                                   &e) != RPC_SASL_FAILED);

    /* The last step, and behind it, in the same write, plaintext PINGs. */
    guint8 pings[3 * 28];
    for (int i = 0; i < 3; i++) {
        guint32 words[7] = {GUINT32_TO_BE(28), GUINT32_TO_BE(KEEPALIVE_PROGRAM),
                            GUINT32_TO_BE(KEEPALIVE_PROTOCOL_VERSION),
                            GUINT32_TO_BE(KEEPALIVE_PROC_PING), GUINT32_TO_BE(RPC_MESSAGE), 0, 0};
        memcpy(pings + 28 * i, words, 28);
    }
    remote_auth_sasl_step_args step = {.nil = out == NULL,
                                       .data = {.data_len = outlen, .data_val = (char *)out}};
    remote_auth_sasl_step_ret stret = {0};
    send_call(fd, REMOTE_PROC_AUTH_SASL_STEP, 3, (xdrproc_t)xdr_remote_auth_sasl_step_args, &step,
              pings, sizeof(pings));
    recv_reply(fd, 3, (xdrproc_t)xdr_remote_auth_sasl_step_ret, &stret);
    ck_assert_int_eq(stret.complete, 1);

    /* They were decoded as SASL data, which they are not: the server drops
     * the connection. Read as plaintext, they would be answered with PONGs
     * and the connection would stay open. */
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    guint8 buf[256];
    gssize n = recv(fd, buf, sizeof(buf), 0);
    ck_assert_msg(n == 0 || (n < 0 && errno == ECONNRESET),
                  "the server answered the injected messages (%zd bytes)", n);

    xdr_free((xdrproc_t)xdr_remote_auth_sasl_init_ret, &init);
    xdr_free((xdrproc_t)xdr_remote_auth_sasl_start_ret, &sret);
    xdr_free((xdrproc_t)xdr_remote_auth_sasl_step_ret, &stret);
    close(fd);
    g_clear_pointer(&client, rpc_sasl_unref);
    rpc_transport_free(ct);
    rpc_server_free(server);
    remote_auth_global_done();
}
END_TEST

/* The mirror image, for ferry's client: a server (or an attacker in the
 * path) appends a plaintext event to the reply that completes SASL. */
typedef struct {
    int fd;
    RpcSasl *sasl;
    guint8 extra[28 + 4];
} FakeServer;

static void send_raw_reply(int fd, const RpcHeader *call, xdrproc_t filter, void *ret,
                           const void *extra, gsize extra_len)
{
    g_autoptr(RpcMessage) m = rpc_message_new(512);
    m->header = *call;
    m->header.type = RPC_REPLY;
    m->header.status = RPC_OK;
    g_autoptr(GError) e = NULL;
    ck_assert(rpc_message_encode(m, filter, ret, &e));
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    g_byte_array_append(bytes, m->buf, m->len);
    if (extra_len)
        g_byte_array_append(bytes, extra, extra_len);
    ck_assert_int_eq(send(fd, bytes->data, bytes->len, MSG_NOSIGNAL), (gssize)bytes->len);
}

static gpointer fake_sasl_server(gpointer data)
{
    FakeServer *fs = data;
    for (;;) {
        g_autoptr(RpcMessage) call = read_raw_message(fs->fd);
        g_autoptr(GError) e = NULL;
        const char *out = NULL;
        gsize outlen = 0;
        if (call->header.proc == REMOTE_PROC_AUTH_SASL_INIT) {
            g_autofree char *mechs = rpc_sasl_list_mechanisms(fs->sasl, &e);
            remote_auth_sasl_init_ret r = {.mechlist = mechs};
            send_raw_reply(fs->fd, &call->header, (xdrproc_t)xdr_remote_auth_sasl_init_ret, &r,
                           NULL, 0);
            continue;
        }
        RpcSaslStatus st;
        if (call->header.proc == REMOTE_PROC_AUTH_SASL_START) {
            remote_auth_sasl_start_args a = {0};
            ck_assert(rpc_message_decode(call, (xdrproc_t)xdr_remote_auth_sasl_start_args, &a, &e));
            st = rpc_sasl_server_start(fs->sasl, a.mech, a.nil ? NULL : a.data.data_val,
                                       a.data.data_len, &out, &outlen, &e);
            xdr_free((xdrproc_t)xdr_remote_auth_sasl_start_args, (char *)&a);
        } else {
            ck_assert_int_eq(call->header.proc, REMOTE_PROC_AUTH_SASL_STEP);
            remote_auth_sasl_step_args a = {0};
            ck_assert(rpc_message_decode(call, (xdrproc_t)xdr_remote_auth_sasl_step_args, &a, &e));
            st = rpc_sasl_server_step(fs->sasl, a.nil ? NULL : a.data.data_val, a.data.data_len,
                                      &out, &outlen, &e);
            xdr_free((xdrproc_t)xdr_remote_auth_sasl_step_args, (char *)&a);
        }
        ck_assert_msg(st != RPC_SASL_FAILED, "%s", e ? e->message : "");
        remote_auth_sasl_step_ret r = {.complete = st == RPC_SASL_COMPLETE, .nil = out == NULL,
                                       .data = {.data_len = outlen, .data_val = (char *)out}};
        /* START's and STEP's replies have the same layout. */
        gboolean done = st == RPC_SASL_COMPLETE;
        send_raw_reply(fs->fd, &call->header, (xdrproc_t)xdr_remote_auth_sasl_step_ret, &r,
                       done ? fs->extra : NULL, done ? sizeof(fs->extra) : 0);
        if (done)
            return NULL;
    }
}

typedef struct {
    gint events;
    gint closed;
    char *why;
} ClientSeen;

static void seen_event(RpcClient *c, RpcMessage *msg, gpointer data)
{
    g_atomic_int_inc(&((ClientSeen *)data)->events);
}

static void seen_close(RpcClient *c, const GError *why, gpointer data)
{
    ClientSeen *seen = data;
    seen->why = g_strdup(why ? why->message : "");
    g_atomic_int_set(&seen->closed, 1);
}

START_TEST(sasl_client_does_not_parse_plaintext_behind_the_last_reply)
{
    sasl_config();
    g_autoptr(GError) e = NULL;
    ck_assert(rpc_sasl_server_global_init("libvirt", &e));
    ck_assert(rpc_sasl_client_global_init(&e));
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);

    FakeServer fs = {.fd = sv[0]};
    RpcTransport *addr = rpc_transport_new_socket(dup(sv[0]));
    fs.sasl = rpc_sasl_server_new("libvirt", addr, &e);
    rpc_transport_free(addr);
    ck_assert_msg(fs.sasl != NULL, "%s", e ? e->message : "");
    ck_assert(rpc_sasl_set_security(fs.sasl, 56, 100000, FALSE, &e));
    /* A plaintext event message, and 4 bytes so a decoder has a whole block. */
    guint32 words[8] = {GUINT32_TO_BE(28), GUINT32_TO_BE(REMOTE_PROGRAM),
                        GUINT32_TO_BE(REMOTE_PROTOCOL_VERSION), GUINT32_TO_BE(107),
                        GUINT32_TO_BE(RPC_MESSAGE), 0, 0, 0};
    memcpy(fs.extra, words, sizeof(fs.extra));
    GThread *server = g_thread_new("fake-server", fake_sasl_server, &fs);

    ClientSeen seen = {0};
    RpcClientCallbacks cb = {.on_event = seen_event, .on_close = seen_close, .data = &seen};
    RpcTransport *ct = rpc_sasl_transport_new(rpc_transport_new_socket(sv[1]));
    RpcClient *c = rpc_client_new_for_transport(ct, &cb);
    RpcSaslCredentials creds = {.authname = "alice", .password = "secret1"};
    g_autoptr(RpcSasl) client = rpc_sasl_client_new("libvirt", "localhost", ct, &creds, &e);
    ck_assert_msg(client != NULL, "%s", e ? e->message : "");
    ck_assert(rpc_sasl_set_security(client, 56, 100000, FALSE, &e));

    remote_auth_sasl_init_ret init = {0};
    ck_assert(rpc_client_call(c, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
                              REMOTE_PROC_AUTH_SASL_INIT, NULL, NULL,
                              (xdrproc_t)xdr_remote_auth_sasl_init_ret, &init, 10000, &e));
    const char *mech = NULL, *out = NULL;
    gsize outlen = 0;
    RpcSaslStatus mine = rpc_sasl_client_start(client, init.mechlist, &mech, &out, &outlen, &e);
    ck_assert(mine != RPC_SASL_FAILED);
    remote_auth_sasl_start_args sa = {.mech = (char *)mech, .nil = out == NULL,
                                      .data = {.data_len = outlen, .data_val = (char *)out}};
    remote_auth_sasl_start_ret r = {0};
    ck_assert(rpc_client_call(c, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
                              REMOTE_PROC_AUTH_SASL_START,
                              (xdrproc_t)xdr_remote_auth_sasl_start_args, &sa,
                              (xdrproc_t)xdr_remote_auth_sasl_start_ret, &r, 10000, &e));
    while (!r.complete) {
        mine = rpc_sasl_client_step(client, r.data.data_val, r.data.data_len, &out, &outlen, &e);
        ck_assert(mine != RPC_SASL_FAILED);
        remote_auth_sasl_step_args st = {.nil = out == NULL,
                                         .data = {.data_len = outlen, .data_val = (char *)out}};
        xdr_free((xdrproc_t)xdr_remote_auth_sasl_start_ret, (char *)&r);
        memset(&r, 0, sizeof(r));
        ck_assert(rpc_client_call(c, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
                                  REMOTE_PROC_AUTH_SASL_STEP,
                                  (xdrproc_t)xdr_remote_auth_sasl_step_args, &st,
                                  (xdrproc_t)xdr_remote_auth_sasl_step_ret, &r, 10000, &e));
    }
    if (mine != RPC_SASL_COMPLETE)
        ck_assert(rpc_sasl_client_step(client, r.data.data_val, r.data.data_len, &out, &outlen,
                                       &e) == RPC_SASL_COMPLETE);
    g_thread_join(server);
    /* As remote_peer_open does: the layer on, then reading on. */
    rpc_sasl_transport_start_decoding(ct, client);
    rpc_sasl_transport_start_encoding(ct);
    rpc_client_set_authenticated(c);

    for (int i = 0; i < 1000 && !g_atomic_int_get(&seen.closed); i++)
        g_usleep(10 * 1000);
    ck_assert_int_eq(g_atomic_int_get(&seen.events), 0);
    ck_assert(g_atomic_int_get(&seen.closed));
    ck_assert_msg(strstr(seen.why, "cannot decode SASL data"), "%s", seen.why);

    xdr_free((xdrproc_t)xdr_remote_auth_sasl_init_ret, (char *)&init);
    xdr_free((xdrproc_t)xdr_remote_auth_sasl_start_ret, (char *)&r);
    rpc_client_free(c);
    g_free(seen.why);
    g_clear_pointer(&client, rpc_sasl_unref);
    rpc_sasl_unref(fs.sasl);
    close(sv[0]);
    rpc_sasl_global_done();
}
END_TEST

/* ---- URIs ---- */

START_TEST(uri_names_as_libvirt)
{
    static const struct {
        const char *uri, *name;
        RemoteUriTransport transport;
        guint16 port;
    } cases[] = {
        {"sim+tcp://127.0.0.1:31601/system", "sim:///system", REMOTE_URI_TCP, 31601},
        {"sim+tcp://127.0.0.1:31601/", "sim:///", REMOTE_URI_TCP, 31601},
        {"sim+tcp://127.0.0.1:31601", "sim://", REMOTE_URI_TCP, 31601},
        {"sim+tcp://127.0.0.1:31601/system?foo=bar&no_verify=1", "sim:///system?foo=bar",
         REMOTE_URI_TCP, 31601},
        {"qemu+tcp://127.0.0.1/system", "qemu:///system", REMOTE_URI_TCP, 16509},
        {"remote+tcp://127.0.0.1:31601/", "", REMOTE_URI_TCP, 31601},
        {"sim+tls://user@host.example/system", "sim:///system", REMOTE_URI_TLS, 16514},
        {"sim://host.example/system", "sim:///system", REMOTE_URI_TLS, 16514},
        {"sim+tls://[::1]:999/system?pkipath=/a%20b&x=1#frag", "sim:///system?x=1#frag",
         REMOTE_URI_TLS, 999},
        {"sim+unix:///system?socket=/tmp/s", "sim:///system", REMOTE_URI_UNIX, 16514},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) e = NULL;
        g_autoptr(RemoteUri) u = remote_uri_parse(cases[i].uri, &e);
        ck_assert_msg(u != NULL, "%s: %s", cases[i].uri, e ? e->message : "");
        ck_assert_str_eq(u->name, cases[i].name);
        ck_assert_int_eq(u->transport, cases[i].transport);
        if (cases[i].transport != REMOTE_URI_UNIX)
            ck_assert_uint_eq(u->port, cases[i].port);
    }
    g_autoptr(GError) e = NULL;
    g_autoptr(RemoteUri) u =
        remote_uri_parse("sim+tls://fred@[::1]:999/system?pkipath=/a%20b&no_verify=1&"
                         "tls_priority=NORMAL&auth=sasl.SCRAM-SHA-256&authfile=/f",
                         &e);
    ck_assert_ptr_nonnull(u);
    ck_assert_str_eq(u->host, "::1");
    ck_assert_str_eq(u->user, "fred");
    ck_assert_str_eq(u->pkipath, "/a b");
    ck_assert(u->no_verify);
    ck_assert_str_eq(u->tls_priority, "NORMAL");
    ck_assert_str_eq(u->auth, "sasl.SCRAM-SHA-256");
    ck_assert_str_eq(u->authfile, "/f");
    g_autoptr(RemoteUri) s = remote_uri_parse("sim+unix:///system?socket=/tmp/x.sock", &e);
    ck_assert_str_eq(s->socket, "/tmp/x.sock");

    ck_assert_ptr_null(remote_uri_parse("sim+ssh://h/system", &e));
    ck_assert_msg(strstr(e->message, "transport '+ssh' is not supported"), "%s", e->message);
    g_clear_error(&e);
    ck_assert_ptr_null(remote_uri_parse("sim+tcp:///system", &e));
    ck_assert_msg(strstr(e->message, "needs a host"), "%s", e->message);
    g_clear_error(&e);
    ck_assert_ptr_null(remote_uri_parse("sim+tcp://h:99999/", &e));
    g_clear_error(&e);
    ck_assert_ptr_null(remote_uri_parse("nonsense", &e));
}
END_TEST

START_TEST(tls_client_file_locations)
{
    g_autofree char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL;
    rpc_tls_client_locate_files("/pki", &ca, &crl, &cert, &key);
    ck_assert_str_eq(ca, "/pki/cacert.pem");
    ck_assert_str_eq(crl, "/pki/cacrl.pem");
    ck_assert_str_eq(cert, "/pki/clientcert.pem");
    ck_assert_str_eq(key, "/pki/clientkey.pem");
    g_free(ca), g_free(crl), g_free(cert), g_free(key);
    rpc_tls_client_locate_files(NULL, &ca, &crl, &cert, &key);
    if (geteuid() == 0) {
        ck_assert_str_eq(ca, "/etc/pki/CA/cacert.pem");
        ck_assert_str_eq(cert, "/etc/pki/libvirt/clientcert.pem");
        ck_assert_str_eq(key, "/etc/pki/libvirt/private/clientkey.pem");
    }
}
END_TEST

/* ---- auth files ---- */

START_TEST(auth_file_lookup)
{
    write_file("auth.conf", "# libvirt auth file\n"
                            "[credentials-a]\nauthname=alice\npassword=secret1\n\n"
                            "[credentials-d]\nauthname=dave\npassword=pw\nrealm=r\n\n"
                            "[auth-libvirt-127.0.0.1]\ncredentials=a\n\n"
                            "[auth-libvirt-default]\ncredentials=d\n\n"
                            "[auth-libvirt-broken]\ncredentials=nope\n");
    g_autofree char *path = path_in("auth.conf");
    RemotePeerCredentials c;
    g_autoptr(GError) e = NULL;
    ck_assert(remote_peer_lookup_credentials(path, "127.0.0.1", &c, &e));
    ck_assert_str_eq(c.authname, "alice");
    ck_assert_str_eq(c.password, "secret1");
    remote_peer_credentials_clear(&c);
    ck_assert(remote_peer_lookup_credentials(path, "other.example", &c, &e));
    ck_assert_str_eq(c.authname, "dave");
    ck_assert_str_eq(c.realm, "r");
    remote_peer_credentials_clear(&c);
    ck_assert(!remote_peer_lookup_credentials(path, "broken", &c, &e));
    ck_assert_msg(strstr(e->message, "[auth-libvirt-broken] names credentials that have no "
                                     "group of their own"),
                  "%s", e->message);
    ck_assert_msg(!strstr(e->message, "nope"), "%s", e->message); /* never the file's content */
    g_clear_error(&e);
    /* Not a key file at all: the error names the file, never quotes a line. */
    write_file("passwd", "root:x:0:0:root:/root:/bin/bash\n");
    g_autofree char *passwd = path_in("passwd");
    ck_assert(!remote_peer_lookup_credentials(passwd, "h", &c, &e));
    g_autofree char *want = g_strdup_printf(
        "cannot read auth file %s: it is not in the key file format ([group] and key=value lines)",
        passwd);
    ck_assert_str_eq(e->message, want);
    g_clear_error(&e);
    g_autofree char *missing = path_in("missing.conf");
    ck_assert(!remote_peer_lookup_credentials(missing, "h", &c, &e));
    ck_assert_msg(strstr(e->message, "cannot read auth file"), "%s", e->message);

    g_setenv("LIBVIRT_AUTH_FILE", path, TRUE);
    g_autofree char *found = remote_peer_find_auth_file(NULL);
    ck_assert_str_eq(found, path);
    g_autofree char *explicit_path = remote_peer_find_auth_file("/x/auth.conf");
    ck_assert_str_eq(explicit_path, "/x/auth.conf");
    g_unsetenv("LIBVIRT_AUTH_FILE");
}
END_TEST

static Suite *security_suite(void)
{
    Suite *s = suite_create("rpc-security");
    TCase *tc = tcase_create("tls");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, tls_bulk_both_directions);
    tcase_add_test(tc, tls_silent_client_times_out);
    tcase_add_test(tc, tls_missing_files_are_named);
    tcase_add_test(tc, tls_client_file_locations);
    suite_add_tcase(s, tc);
    tc = tcase_create("sasl");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, sasl_layer_bulk_both_directions);
    tcase_add_test(tc, sasl_plaintext_behind_the_last_step_is_not_parsed);
    tcase_add_test(tc, sasl_client_does_not_parse_plaintext_behind_the_last_reply);
    suite_add_tcase(s, tc);
    tc = tcase_create("client");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, uri_names_as_libvirt);
    tcase_add_test(tc, auth_file_lookup);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(security_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
