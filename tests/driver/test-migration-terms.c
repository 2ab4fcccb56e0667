/* The migration engine's terms: the cookie two daemons exchange (read with
 * the same safe reader as domain XML) and the bandwidth conversion. */
#include "driver/migration-cookie.h"
#include "driver/migration-params.h"
#include "test-helpers.h"

static GBytes *bytes_of(const char *text)
{
    return g_bytes_new(text, strlen(text) + 1); /* with its NUL, as peers send it */
}

START_TEST(test_cookie_round_trips)
{
    guint8 uuid[16] = {1, 2, 3};
    MigrationCookieContent in = {.name = "vm<1>", .uuid = uuid, .daemon_id = "d1",
                                 .tunnel = TRUE, .token = "t0k'en", .digest = "abc",
                                 .downtime_ms = 42};
    g_autoptr(GBytes) b = migration_cookie_format(&in);
    MigrationCookie c;
    GError *err = NULL;
    ck_assert(migration_cookie_parse(b, &c, &err));
    ck_assert_no_error(err);
    ck_assert(c.ferry);
    ck_assert_str_eq(c.daemon_id, "d1");
    ck_assert(c.credit);
    ck_assert_uint_eq(c.window, MIGRATION_WINDOW);
    ck_assert_uint_eq(c.packet, MIGRATION_PACKET_SIZE);
    ck_assert_str_eq(c.token, "t0k'en");
    ck_assert_str_eq(c.digest, "abc");
    ck_assert_uint_eq(c.downtime_ms, 42);
    migration_cookie_clear(&c);
}
END_TEST

/* --parallel's term: a count of 2..16 round-trips; absent, 1, or out of
 * range reads as absent (one stream). */
START_TEST(test_cookie_parallel_term)
{
    guint8 uuid[16] = {1, 2, 3};
    MigrationCookieContent in = {.name = "vm1", .uuid = uuid, .daemon_id = "d1", .parallel = 4};
    g_autoptr(GBytes) b = migration_cookie_format(&in);
    MigrationCookie c;
    ck_assert(migration_cookie_parse(b, &c, NULL));
    ck_assert_uint_eq(c.parallel, 4);
    migration_cookie_clear(&c);
    in.parallel = 1;
    g_autoptr(GBytes) one = migration_cookie_format(&in);
    ck_assert(!strstr(g_bytes_get_data(one, NULL), "parallel"));
    const char *odd[] = {"0", "1", "17", "-2", "x", "99999999999999999999"};
    for (guint i = 0; i < G_N_ELEMENTS(odd); i++) {
        g_autofree char *text = g_strdup_printf(
            "<ferry-migration><parallel connections='%s'/></ferry-migration>", odd[i]);
        g_autoptr(GBytes) t = bytes_of(text);
        ck_assert(migration_cookie_parse(t, &c, NULL));
        ck_assert_msg(c.parallel == 0, "%s read as %u", odd[i], c.parallel);
        migration_cookie_clear(&c);
    }
}
END_TEST

/* The flight record id names files on both hosts: a plain token only. */
START_TEST(test_cookie_flight_record_id)
{
    guint8 uuid[16] = {1, 2, 3};
    MigrationCookieContent in = {.name = "vm1", .uuid = uuid, .daemon_id = "d1",
                                 .record_id = "4cbb47fd-b1a3-4893-a9c2-7cac22036f8b"};
    g_autoptr(GBytes) b = migration_cookie_format(&in);
    MigrationCookie c;
    GError *err = NULL;
    ck_assert(migration_cookie_parse(b, &c, &err));
    ck_assert_str_eq(c.record_id, "4cbb47fd-b1a3-4893-a9c2-7cac22036f8b");
    migration_cookie_clear(&c);
    const char *bad[] = {"../../etc/passwd", "", "abc/def", "a b",
                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"};
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *x = g_markup_printf_escaped(
            "<ferry-migration><flight record='%s'/></ferry-migration>", bad[i]);
        g_autoptr(GBytes) bb = bytes_of(x);
        ck_assert(migration_cookie_parse(bb, &c, &err));
        ck_assert_msg(c.record_id == NULL, "%s accepted", bad[i]);
        migration_cookie_clear(&c);
    }
}
END_TEST

/* Resuming: the source offers a time, the destination answers the time and
 * the token; a cookie without it (or an older ferryd's) offers none, and an
 * absurd time is capped. */
START_TEST(test_cookie_resume_terms)
{
    guint8 uuid[16] = {1, 2, 3};
    MigrationCookieContent offer = {.name = "vm1", .uuid = uuid, .tunnel = TRUE,
                                    .resume_timeout = 30};
    g_autoptr(GBytes) b = migration_cookie_format(&offer);
    MigrationCookie c;
    GError *err = NULL;
    ck_assert(migration_cookie_parse(b, &c, &err));
    ck_assert_uint_eq(c.resume_timeout, 30);
    ck_assert_ptr_null(c.resume_token);
    migration_cookie_clear(&c);

    MigrationCookieContent answer = {.name = "vm1", .uuid = uuid, .tunnel = TRUE,
                                     .resume_timeout = 12, .resume_token = "0123abcd"};
    g_autoptr(GBytes) a = migration_cookie_format(&answer);
    ck_assert(migration_cookie_parse(a, &c, &err));
    ck_assert_uint_eq(c.resume_timeout, 12);
    ck_assert_str_eq(c.resume_token, "0123abcd");
    migration_cookie_clear(&c);

    MigrationCookieContent none = {.name = "vm1", .uuid = uuid, .tunnel = TRUE};
    g_autoptr(GBytes) n = migration_cookie_format(&none);
    ck_assert(migration_cookie_parse(n, &c, &err));
    ck_assert_uint_eq(c.resume_timeout, 0);
    migration_cookie_clear(&c);

    g_autoptr(GBytes) big =
        bytes_of("<ferry-migration><resume timeout='99999999999'/></ferry-migration>");
    ck_assert(migration_cookie_parse(big, &c, &err));
    ck_assert_uint_eq(c.resume_timeout, 3600);
    migration_cookie_clear(&c);
}
END_TEST

START_TEST(test_cookie_of_a_libvirt_peer_means_a_plain_peer)
{
    g_autoptr(GBytes) b = bytes_of("<qemu-migration><name>vm</name></qemu-migration>");
    MigrationCookie c;
    GError *err = NULL;
    ck_assert(migration_cookie_parse(b, &c, &err));
    ck_assert(!c.ferry);
    TunnelStreamConfig cfg;
    migration_cookie_tunnel_config(&c, TUNNEL_ROLE_SERVER, "peer", "vmm", &cfg);
    ck_assert(!cfg.credit);
    ck_assert_uint_eq(cfg.packet_size, 65536);
    migration_cookie_clear(&c);
    ck_assert(migration_cookie_parse(NULL, &c, &err)); /* no cookie at all */
    ck_assert(!c.ferry);
}
END_TEST

/* Regression (issue 10 item 11): the cookie came from the network and was
 * read with entity and DTD handling that domain XML refuses. */
START_TEST(test_cookie_with_a_doctype_is_refused)
{
    static const char *const hostile[] = {
        "<!DOCTYPE ferry-migration [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>"
        "<ferry-migration><daemon id='&b;'/></ferry-migration>",
        "<!DOCTYPE ferry-migration SYSTEM 'file:///etc/passwd'><ferry-migration/>",
    };
    for (guint i = 0; i < G_N_ELEMENTS(hostile); i++) {
        g_autoptr(GBytes) b = bytes_of(hostile[i]);
        MigrationCookie c;
        GError *err = NULL;
        ck_assert(!migration_cookie_parse(b, &c, &err));
        ck_assert_ferry_error(err, FERRY_ERR_XML_ERROR, "a DOCTYPE is not allowed in migration cookie");
        g_clear_error(&err);
        ck_assert(c.daemon_id == NULL && !c.ferry);
    }
}
END_TEST

START_TEST(test_malformed_cookie_is_refused)
{
    g_autoptr(GBytes) b = bytes_of("<ferry-migration><daemon");
    MigrationCookie c;
    GError *err = NULL;
    ck_assert(!migration_cookie_parse(b, &c, &err));
    ck_assert_ferry_error(err, FERRY_ERR_XML_ERROR, "malformed migration cookie");
    g_clear_error(&err);
}
END_TEST

/* Regression (issue 10 item 11): MiB/s * 2^20 wrapped to 0, i.e. unlimited. */
START_TEST(test_bandwidth_that_overflows_is_refused_naming_it)
{
    guint64 bytes = 1;
    GError *err = NULL;
    ck_assert(!migration_bandwidth_to_bytes(G_GUINT64_CONSTANT(1) << 44, &bytes, &err));
    ck_assert_ferry_error(err, FERRY_ERR_OVERFLOW, "migration bandwidth 17592186044416 MiB/s");
    g_clear_error(&err);
    ck_assert(!migration_bandwidth_to_bytes(G_MAXUINT64, &bytes, &err));
    ck_assert_ferry_error(err, FERRY_ERR_OVERFLOW, "too large");
    g_clear_error(&err);
    ck_assert_uint_eq(bytes, 1); /* untouched */

    ck_assert(migration_bandwidth_to_bytes((G_GUINT64_CONSTANT(1) << 44) - 1, &bytes, &err));
    ck_assert_uint_eq(bytes, G_MAXUINT64 - ((1 << 20) - 1));
    ck_assert(migration_bandwidth_to_bytes(0, &bytes, &err));
    ck_assert_uint_eq(bytes, 0);
    ck_assert(migration_bandwidth_to_bytes(32, &bytes, &err));
    ck_assert_uint_eq(bytes, 32 << 20);
    ck_assert_no_error(err);
}
END_TEST

START_TEST(test_tcp_uri_forms)
{
    char *host = NULL;
    guint port = 0;
    GError *err = NULL;
    ck_assert(migration_parse_tcp_uri("tcp://[::1]:49152", &host, &port, &err));
    ck_assert_str_eq(host, "::1");
    ck_assert_uint_eq(port, 49152);
    g_free(host);
    ck_assert(migration_parse_tcp_uri("tcp:10.0.0.2", &host, &port, &err));
    ck_assert_str_eq(host, "10.0.0.2");
    ck_assert_uint_eq(port, 0);
    g_free(host);
    host = NULL;
    ck_assert(!migration_parse_tcp_uri("tcp://h:70000", &host, &port, &err));
    ck_assert_ferry_error(err, FERRY_ERR_INVALID_ARG, "bad port in 'tcp://h:70000'");
    g_clear_error(&err);
    ck_assert(host == NULL);
    ck_assert(!migration_parse_tcp_uri("unix:/x", &host, &port, &err));
    ck_assert_ferry_error(err, FERRY_ERR_INVALID_ARG, "is not tcp://HOST[:PORT]");
    g_clear_error(&err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("migration-terms");
    TCase *tc = tcase_create("migration-terms");
    tcase_add_test(tc, test_cookie_round_trips);
    tcase_add_test(tc, test_cookie_flight_record_id);
    tcase_add_test(tc, test_cookie_parallel_term);
    tcase_add_test(tc, test_cookie_resume_terms);
    tcase_add_test(tc, test_cookie_of_a_libvirt_peer_means_a_plain_peer);
    tcase_add_test(tc, test_cookie_with_a_doctype_is_refused);
    tcase_add_test(tc, test_malformed_cookie_is_refused);
    tcase_add_test(tc, test_bandwidth_that_overflows_is_refused_naming_it);
    tcase_add_test(tc, test_tcp_uri_forms);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
