/* Unit tests of ferryd's config parser: libvirtd.conf syntax, ranges, and
 * errors that name the file, the line and the key. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon-config.h"
#include "util/error.h"

START_TEST(test_values_of_every_kind_are_applied)
{
    g_autoptr(DaemonConfig) c = daemon_config_new_defaults();
    const char *text = "# comment\nlisten_tcp = 1\nlisten_addr = \"127.0.0.1\" # trailing\n"
                       "tcp_port = 1234\nunix_sock_rw_perms = \"0770\"\nauth_tcp = \"none\"\n"
                       "tls_allowed_dn_list = [\"C=GB,O=A\", \n  \"C=DE,O=B\"]\n"
                       "keepalive_interval = -1\nmax_client_requests = 10\n"
                       "mdns_adv = 0\n";
    g_autoptr(GError) e = NULL;
    ck_assert_msg(daemon_config_load_data(c, text, "t.conf", &e), "%s", e ? e->message : "");
    ck_assert(c->listen_tcp);
    ck_assert_str_eq(c->listen_addr, "127.0.0.1");
    ck_assert_uint_eq(c->tcp_port, 1234);
    ck_assert_uint_eq(c->unix_sock_rw_perms, 0770);
    ck_assert_str_eq(c->auth_tcp, "none");
    ck_assert_uint_eq(g_strv_length(c->tls_allowed_dn_list), 2);
    ck_assert_str_eq(c->tls_allowed_dn_list[1], "C=DE,O=B");
    ck_assert_int_eq(c->keepalive_interval, -1);
    ck_assert_uint_eq(c->max_client_requests, 10);
}
END_TEST

static void expect_error(const char *text, const char *needle)
{
    g_autoptr(DaemonConfig) c = daemon_config_new_defaults();
    g_autoptr(GError) e = NULL;
    ck_assert(!daemon_config_load_data(c, text, "x.conf", &e));
    ck_assert_int_eq(e->code, FERRY_ERR_CONF_SYNTAX);
    ck_assert_msg(strstr(e->message, needle), "'%s' not in '%s'", needle, e->message);
}

START_TEST(test_bad_input_is_named)
{
    expect_error("listen_tcp = 1\nbogus_key = 3\n", "x.conf:2: unknown configuration key 'bogus_key'");
    expect_error("tcp_port = 70000\n", "tcp_port = 70000 is out of range 0..65535");
    expect_error("listen_tcp = 2\n", "listen_tcp must be 0 or 1");
    expect_error("listen_addr = 5\n", "listen_addr must be a \"string\"");
    expect_error("auth_tcp = \"kerberos\"\n", "auth_tcp must be \"none\" or \"sasl\"");
    expect_error("listen_addr = \"abc\n", "unterminated string");
    expect_error("tcp_port 16509\n", "expected '=' after tcp_port");
    expect_error("tls_allowed_dn_list = [\"a\" \"b\"]\n", "expected ',' or ']'");
    expect_error("unix_sock_rw_perms = \"0999\"\n", "octal mode");
    expect_error("tcp_port = 1 2\n", "unexpected text after the value of tcp_port");
}
END_TEST

START_TEST(test_missing_file_is_an_error)
{
    g_autoptr(DaemonConfig) c = daemon_config_new_defaults();
    g_autoptr(GError) e = NULL;
    ck_assert(!daemon_config_load_file(c, "/nonexistent/ferryd.conf", &e));
    ck_assert(strstr(e->message, "/nonexistent/ferryd.conf"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("daemon-config");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_values_of_every_kind_are_applied);
    tcase_add_test(tc, test_bad_input_is_named);
    tcase_add_test(tc, test_missing_file_is_an_error);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
