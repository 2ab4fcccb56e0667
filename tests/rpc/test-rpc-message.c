/* Unit tests of the message layer and the protocol files: header coding,
 * length limits, exact bytes from WIRE.md, XDR round trips of every
 * implemented procedure, and malformed input rejected with the right error. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "remote/remote-dispatch.h"
#include "remote/remote_protocol.h"
#include "rpc/rpc-message.h"
#include "util/error.h"

static char *hex(const guint8 *p, gsize n)
{
    GString *s = g_string_new(NULL);
    for (gsize i = 0; i < n; i++)
        g_string_append_printf(s, "%02x", p[i]);
    return g_string_free(s, FALSE);
}

static RpcMessage *message_from_hex(const char *h)
{
    gsize n = strlen(h) / 2;
    RpcMessage *m = rpc_message_new(n);
    for (gsize i = 0; i < n; i++)
        sscanf(h + 2 * i, "%2hhx", &m->buf[i]);
    m->len = n;
    return m;
}

/* A payload kept elsewhere (a tunnel stream's send ring) goes on the wire
 * as the same bytes as one copied into the message, from two iovecs; the
 * message holds its owner until it is freed, also when its buffer goes
 * back to a pool, and a message taken again from the pool is a plain one. */
static int owner_refs;

static gpointer owner_ref(gpointer owner)
{
    owner_refs++;
    return owner;
}

static void owner_release(gpointer owner)
{
    owner_refs--;
}

START_TEST(test_external_payload_is_sent_as_is_and_released_once)
{
    static const guint8 payload[] = "bytes that stay where they are";
    RpcHeader h = {.prog = REMOTE_PROGRAM, .vers = 1, .proc = 3, .type = RPC_STREAM,
                   .serial = 7, .status = RPC_CONTINUE};
    g_autoptr(RpcMessage) plain = rpc_message_new(sizeof(payload));
    plain->header = h;
    memcpy(rpc_message_payload(plain), payload, sizeof(payload));
    rpc_message_seal(plain, sizeof(payload));

    RpcMessagePool *pool = rpc_message_pool_new(0, 4);
    RpcMessage *ext = rpc_message_pool_take(pool);
    ext->header = h;
    rpc_message_seal_external(ext, payload, sizeof(payload), owner_ref, owner_release, &owner_refs);
    ck_assert_int_eq(owner_refs, 1);
    ck_assert_uint_eq(ext->len, plain->len);
    ck_assert_uint_eq(rpc_message_payload_len(ext), sizeof(payload));

    struct iovec iov[2];
    ck_assert_int_eq(rpc_message_wire_iov(plain, iov), 1);
    ck_assert_int_eq(rpc_message_wire_iov(ext, iov), 2);
    ck_assert_uint_eq(iov[0].iov_len + iov[1].iov_len, plain->len);
    ck_assert_mem_eq(iov[0].iov_base, plain->buf, iov[0].iov_len);
    ck_assert_mem_eq(iov[1].iov_base, plain->buf + iov[0].iov_len, iov[1].iov_len);
    ck_assert_ptr_eq(iov[1].iov_base, payload); /* not copied */

    rpc_message_free(ext); /* back to the pool: the owner is given back */
    ck_assert_int_eq(owner_refs, 0);
    RpcMessage *again = rpc_message_pool_take(pool);
    ck_assert_ptr_null(again->ext_payload);
    again->header = h;
    rpc_message_seal(again, 0);
    ck_assert_int_eq(rpc_message_wire_iov(again, iov), 1);
    ck_assert_uint_eq(iov[0].iov_len, RPC_PAYLOAD_OFFSET);
    rpc_message_free(again);
    rpc_message_pool_unref(pool);
    ck_assert_int_eq(owner_refs, 0);
}
END_TEST

START_TEST(test_header_round_trip)
{
    g_autoptr(RpcMessage) m = rpc_message_new(0);
    m->header = (RpcHeader){.prog = REMOTE_PROGRAM, .vers = 1, .proc = -7, .type = RPC_STREAM,
                            .serial = 0xdeadbeef, .status = RPC_CONTINUE};
    rpc_message_seal(m, 0);
    ck_assert_uint_eq(m->len, 28);
    g_autoptr(RpcMessage) copy = rpc_message_new(0);
    memcpy(copy->buf, m->buf, m->len);
    copy->len = m->len;
    ck_assert(rpc_message_decode_header(copy, NULL));
    ck_assert_int_eq(copy->header.proc, -7); /* proc is signed on the wire */
    ck_assert_uint_eq(copy->header.serial, 0xdeadbeef);
    ck_assert_uint_eq(copy->header.type, RPC_STREAM);
    ck_assert_uint_eq(copy->header.status, RPC_CONTINUE);
}
END_TEST

START_TEST(test_auth_list_call_bytes_match_the_spec)
{
    g_autoptr(RpcMessage) m = rpc_message_new(0);
    m->header = (RpcHeader){.prog = REMOTE_PROGRAM, .vers = 1, .proc = REMOTE_PROC_AUTH_LIST,
                            .type = RPC_CALL, .serial = 0, .status = RPC_OK};
    ck_assert(rpc_message_encode(m, RPC_XDR_VOID, NULL, NULL));
    g_autofree char *h = hex(m->buf, m->len);
    ck_assert_str_eq(h, "0000001c200080860000000100000042000000000000000000000000");
}
END_TEST

START_TEST(test_connect_open_call_bytes_match_the_spec)
{
    g_autoptr(RpcMessage) m = rpc_message_new(0);
    m->header = (RpcHeader){.prog = REMOTE_PROGRAM, .vers = 1, .proc = REMOTE_PROC_CONNECT_OPEN,
                            .type = RPC_CALL, .serial = 2, .status = RPC_OK};
    char *name = "sim:///system";
    remote_connect_open_args args = {.name = &name, .flags = 0};
    ck_assert(rpc_message_encode(m, (xdrproc_t)xdr_remote_connect_open_args, &args, NULL));
    g_autofree char *h = hex(m->buf, m->len);
    ck_assert_str_eq(h, "0000003820008086000000010000000100000000000000020000000000000001"
                        "0000000d73696d3a2f2f2f73797374656d00000000000000");
}
END_TEST

START_TEST(test_error_payload_bytes_match_the_spec)
{
    g_autoptr(GError) e = g_error_new_literal(FERRY_REMOTE_ERROR, 42, "Domain not found");
    RpcHeader call = {.prog = REMOTE_PROGRAM, .vers = 1, .proc = 23, .type = RPC_CALL};
    g_autoptr(RpcMessage) m = rpc_message_new_error(&call, RPC_REPLY, e);
    g_autofree char *h = hex(rpc_message_payload(m), rpc_message_payload_len(m));
    /* code 42, domain REMOTE (relayed), message, level 2, no dom, no strs, -1, -1, no net */
    ck_assert_str_eq(h, "0000002a0000000d0000000100000010446f"
                        "6d61696e206e6f7420666f756e6400000002000000000000000000000000000000"
                        "00ffffffffffffffff00000000");
}
END_TEST

START_TEST(test_ferry_error_gets_the_libvirt_prefix_and_origin)
{
    g_autoptr(GError) e = g_error_new_literal(FERRY_ERROR, FERRY_ERR_NO_DOMAIN,
                                              "no domain with matching name 'x'");
    rpc_error err;
    rpc_error_from_gerror(&err, e);
    ck_assert_int_eq(err.code, 42);
    ck_assert_int_eq(err.domain, FERRY_FROM_DOMAIN);
    ck_assert_str_eq(*err.message, "Domain not found: no domain with matching name 'x'");
    ck_assert_int_eq(err.level, 2);
    xdr_free((xdrproc_t)xdr_rpc_error, (char *)&err);
}
END_TEST

START_TEST(test_unknown_procedure_from_a_peer_becomes_no_support)
{
    char *text = "unknown procedure: 305";
    rpc_error err = {.code = FERRY_ERR_RPC, .domain = FERRY_FROM_RPC, .message = &text};
    g_autoptr(GError) e = rpc_error_to_gerror(&err);
    ck_assert_int_eq(e->code, FERRY_ERR_NO_SUPPORT);
    ck_assert_str_eq(e->message, "unknown procedure: 305");
}
END_TEST

START_TEST(test_typed_param_bytes_match_the_spec)
{
    remote_typed_param p = {.field = "bandwidth", .value = {.type = 4}};
    p.value.remote_typed_param_value_u.ul = 100;
    g_autoptr(RpcMessage) m = rpc_message_new(0);
    ck_assert(rpc_message_encode(m, (xdrproc_t)xdr_remote_typed_param, &p, NULL));
    g_autofree char *h = hex(rpc_message_payload(m), rpc_message_payload_len(m));
    ck_assert_str_eq(h, "0000000962616e64776964746800000000000004" "0000000000000064");

    remote_typed_param s = {.field = "destination_name", .value = {.type = 7}};
    s.value.remote_typed_param_value_u.s = "vm1";
    g_autoptr(RpcMessage) m2 = rpc_message_new(0);
    ck_assert(rpc_message_encode(m2, (xdrproc_t)xdr_remote_typed_param, &s, NULL));
    g_autofree char *h2 = hex(rpc_message_payload(m2), rpc_message_payload_len(m2));
    ck_assert_str_eq(h2, "0000001064657374696e6174696f6e5f6e616d6500000007" "00000003766d3100");
}
END_TEST

START_TEST(test_node_info_model_is_a_char_vector_of_4_byte_cells)
{
    remote_node_get_info_ret r = {0};
    memcpy(r.model, "x86_64", 6);
    g_autoptr(RpcMessage) m = rpc_message_new(0);
    ck_assert(rpc_message_encode(m, (xdrproc_t)xdr_remote_node_get_info_ret, &r, NULL));
    ck_assert_uint_eq(rpc_message_payload_len(m), 32 * 4 + 8 + 6 * 4);
}
END_TEST

START_TEST(test_length_limits)
{
    g_autoptr(GError) e1 = NULL, e2 = NULL;
    ck_assert(!rpc_message_check_length(27, &e1));
    ck_assert_int_eq(e1->code, FERRY_ERR_RPC);
    ck_assert_ptr_nonnull(strstr(e1->message, "shorter than the 28 byte header"));
    ck_assert(!rpc_message_check_length(RPC_MAX_WIRE_LENGTH + 1, &e2));
    ck_assert_ptr_nonnull(strstr(e2->message, "exceeds"));
    ck_assert(rpc_message_check_length(28, NULL));
    ck_assert(rpc_message_check_length(RPC_MAX_WIRE_LENGTH, NULL));
}
END_TEST

START_TEST(test_bad_type_and_status_are_rejected)
{
    g_autoptr(RpcMessage) t = message_from_hex(
        "0000001c200080860000000100000042000000070000000000000000");
    g_autoptr(GError) e1 = NULL;
    ck_assert(!rpc_message_decode_header(t, &e1));
    ck_assert_ptr_nonnull(strstr(e1->message, "unknown type 7"));
    g_autoptr(RpcMessage) s = message_from_hex(
        "0000001c200080860000000100000042000000000000000000000009");
    g_autoptr(GError) e2 = NULL;
    ck_assert(!rpc_message_decode_header(s, &e2));
    ck_assert_ptr_nonnull(strstr(e2->message, "unknown status 9"));
}
END_TEST

START_TEST(test_truncated_payload_fails_to_decode)
{
    /* LOOKUP_BY_NAME whose string claims 100 bytes but carries 4 */
    g_autoptr(RpcMessage) m = message_from_hex(
        "00000024200080860000000100000017000000000000000000000000" "0000006461626364");
    ck_assert(rpc_message_decode_header(m, NULL));
    remote_domain_lookup_by_name_args args = {0};
    g_autoptr(GError) e = NULL;
    ck_assert(!rpc_message_decode(m, (xdrproc_t)xdr_remote_domain_lookup_by_name_args, &args, &e));
    ck_assert_ptr_nonnull(strstr(e->message, "unable to decode the payload of procedure 23"));
}
END_TEST

/* Decoding zeros gives every field its empty value; encoding that must give
 * the same zeros back, and decoding random bytes must never crash. */
static void round_trip_filter(int proc, xdrproc_t filter, gsize size)
{
    guint8 zeros[8192] = {0};
    g_autofree void *obj = g_malloc0(MAX(size, 1));
    XDR x;
    xdrmem_create(&x, (char *)zeros, sizeof(zeros), XDR_DECODE);
    ck_assert_msg(filter(&x, obj, 0), "procedure %d: zeros did not decode", proc);
    u_int used = xdr_getpos(&x);
    xdr_destroy(&x);

    guint8 out[8192];
    memset(out, 0xee, sizeof(out));
    xdrmem_create(&x, (char *)out, sizeof(out), XDR_ENCODE);
    ck_assert_msg(filter(&x, obj, 0), "procedure %d: did not encode", proc);
    ck_assert_uint_eq(xdr_getpos(&x), used);
    xdr_destroy(&x);
    ck_assert_msg(memcmp(out, zeros, used) == 0, "procedure %d: round trip differs", proc);
    xdr_free(filter, obj);

    GRand *rand = g_rand_new_with_seed(proc);
    for (int i = 0; i < 200; i++) {
        guint8 junk[256];
        for (gsize j = 0; j < sizeof(junk); j++)
            junk[j] = (guint8)g_rand_int(rand);
        /* keep length words small so some decodes succeed deep into the struct */
        if (i % 2)
            for (gsize j = 0; j < sizeof(junk); j += 4)
                junk[j] = junk[j + 1] = junk[j + 2] = 0;
        memset(obj, 0, MAX(size, 1));
        xdrmem_create(&x, (char *)junk, (u_int)(g_rand_int_range(rand, 0, sizeof(junk))), XDR_DECODE);
        filter(&x, obj, 0);
        xdr_destroy(&x);
        xdr_free(filter, obj);
    }
    g_rand_free(rand);
}

START_TEST(test_every_procedure_round_trips)
{
    g_autoptr(GArray) procs = remote_dispatch_list_procedures();
    ck_assert_uint_gt(procs->len, 40);
    for (guint i = 0; i < procs->len; i++) {
        int proc = g_array_index(procs, int, i);
        xdrproc_t a, r;
        gsize as, rs;
        ck_assert(remote_dispatch_get_filters(proc, &a, &as, &r, &rs));
        round_trip_filter(proc, a, as);
        round_trip_filter(proc, r, rs);
    }
}
END_TEST

static Suite *message_suite(void)
{
    Suite *s = suite_create("rpc-message");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_header_round_trip);
    tcase_add_test(tc, test_auth_list_call_bytes_match_the_spec);
    tcase_add_test(tc, test_connect_open_call_bytes_match_the_spec);
    tcase_add_test(tc, test_error_payload_bytes_match_the_spec);
    tcase_add_test(tc, test_ferry_error_gets_the_libvirt_prefix_and_origin);
    tcase_add_test(tc, test_unknown_procedure_from_a_peer_becomes_no_support);
    tcase_add_test(tc, test_typed_param_bytes_match_the_spec);
    tcase_add_test(tc, test_node_info_model_is_a_char_vector_of_4_byte_cells);
    tcase_add_test(tc, test_length_limits);
    tcase_add_test(tc, test_bad_type_and_status_are_rejected);
    tcase_add_test(tc, test_truncated_payload_fails_to_decode);
    tcase_add_test(tc, test_every_procedure_round_trips);
    tcase_add_test(tc, test_external_payload_is_sent_as_is_and_released_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(message_suite());
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
