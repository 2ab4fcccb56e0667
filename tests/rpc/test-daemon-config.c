/* Unit tests of ferryd's config parser: libvirtd.conf syntax, ranges, and
 * errors that name the file, the line and the key. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon-config.h"
#include "util/error.h"
#include "util/log.h"

START_TEST(test_values_of_every_kind_are_applied)
{
    g_autoptr(DaemonConfig) c = daemon_config_new_defaults();
    const char *text = "# comment\nlisten_tcp = 1\nlisten_addr = \"127.0.0.1\" # trailing\n"
                       "tcp_port = 1234\nunix_sock_rw_perms = \"0770\"\nauth_tcp = \"none\"\n"
                       "tls_allowed_dn_list = [\"C=GB,O=A\", \n  \"C=DE,O=B\"]\n"
                       "keepalive_interval = -1\nmax_client_requests = 10\n"
                       "mdns_adv = 0\nmigration_stall_timeout = 0\n"
                       "migration_resume_timeout = 7\n"
                       "migration_keepalive_interval = -1\nmigration_keepalive_count = 9\n";
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
    ck_assert_uint_eq(c->migration_stall_timeout, 0);
    ck_assert_uint_eq(c->migration_resume_timeout, 7);
    ck_assert_int_eq(c->migration_keepalive_interval, -1);
    ck_assert_uint_eq(c->migration_keepalive_count, 9);
}
END_TEST

/* Every value form libvirt's own parser (virconf) and libvirtd accept for
 * the keys ferryd knows, as libvirt's shipped libvirtd.conf writes them. */
START_TEST(test_libvirtd_value_forms_are_accepted)
{
    g_autoptr(DaemonConfig) c = daemon_config_new_defaults();
    const char *text =
        "tcp_port = \"16509\"\n"            /* libvirtd.conf: ports are strings */
        "tls_port = '16514'\n"
        "listen_tls = +0; listen_tcp = 1 ; max_clients = +50\n" /* ';' separates too */
        "listen_addr = \"\"\"192.0.2.1\"\"\"\n"   /* triple quotes */
        "ca_file = \"\"\"/etc/pki/a\nb.pem\"\"\"\n" /* ... which may span lines */
        "tls_allowed_dn_list = [\n  \"C=GB,*\",\n  'C=DE,*',\n]\n" /* trailing comma */
        "sasl_allowed_username_list = []\n"
        "keepalive_interval = +5\nkeepalive_count = 0\n"
        "max_anonymous_clients = 0\nmax_queued_clients = 7\n"
        "unix_sock_ro_perms = \"0777\"\n"
        "log_filters=\"1:qemu\"   # no blanks around '=' needed\n"
        "audit_logging = 1\n";
    g_autoptr(GError) e = NULL;
    ck_assert_msg(daemon_config_load_data(c, text, "t.conf", &e), "%s", e ? e->message : "");
    ck_assert_uint_eq(c->tcp_port, 16509);
    ck_assert_uint_eq(c->tls_port, 16514);
    ck_assert(!c->listen_tls);
    ck_assert(c->listen_tcp);
    ck_assert_uint_eq(c->max_clients, 50);
    ck_assert_str_eq(c->listen_addr, "192.0.2.1");
    ck_assert_str_eq(c->ca_file, "/etc/pki/a\nb.pem");
    ck_assert_uint_eq(g_strv_length(c->tls_allowed_dn_list), 2);
    ck_assert_str_eq(c->tls_allowed_dn_list[1], "C=DE,*");
    ck_assert_uint_eq(g_strv_length(c->sasl_allowed_username_list), 0);
    ck_assert_int_eq(c->keepalive_interval, 5);
    ck_assert_uint_eq(c->max_anonymous_clients, 0);
    ck_assert_uint_eq(c->max_queued_clients, 7);

    /* A port may be a service name, as getaddrinfo takes it. */
    g_autoptr(DaemonConfig) d = daemon_config_new_defaults();
    ck_assert_msg(daemon_config_load_data(d, "tcp_port = \"ssh\"\n", "t.conf", &e), "%s",
                  e ? e->message : "");
    ck_assert_uint_eq(d->tcp_port, 22);
    /* The defaults of the limits, libvirtd's. */
    g_autoptr(DaemonConfig) f = daemon_config_new_defaults();
    ck_assert_uint_eq(f->max_anonymous_clients, 20);
    ck_assert_uint_eq(f->max_queued_clients, 1000);
}
END_TEST

static void expect_error(const char *text, const char *needle)
{
    g_autoptr(DaemonConfig) c = daemon_config_new_defaults();
    g_autoptr(GError) e = NULL;
    ck_assert(!daemon_config_load_data(c, text, "x.conf", &e));
    ck_assert_int_eq(e->code, FERRY_ERR_CONF_SYNTAX);
    /* reported as libvirt's VIR_FROM_CONF (9) when it crosses the wire (admin protocol) */
    ck_assert_int_eq(ferry_error_default_origin(e->code), 9);
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
    /* What libvirtd refuses for these keys, ferryd refuses. */
    expect_error("tcp_port = \"70000\"\n", "tcp_port = 70000 is out of range 0..65535");
    expect_error("tcp_port = \"no-such-service\"\n",
                 "tcp_port = \"no-such-service\" is neither a port number nor a known service");
    expect_error("tcp_port = [\"1\"]\n", "tcp_port must be a port number or service name");
    expect_error("max_clients = -0\n", "max_clients must not be negative");
    expect_error("listen_tcp = -1\n", "listen_tcp must be 0 or 1");
    expect_error("max_clients = \"50\"\n", "max_clients must be a number");
    expect_error("tls_allowed_dn_list = [\"a\", 5]\n", "must be a [\"list\", \"of strings\"]");
    expect_error("ca_file = \"\"\"abc\n", "unterminated string");
    expect_error("_key = 1\n", "expected a key name");
    expect_error("max_clients = 99999999999999999999\n", "is too large");
    expect_error("migration_stall_timeout = 3601\n",
                 "migration_stall_timeout = 3601 is out of range 0..3600");
    /* qemu.conf's count 0 (close after the interval without asking) is not carried. */
    expect_error("migration_keepalive_count = 0\n",
                 "migration_keepalive_count = 0 is out of range 1..1000");
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

/* log_filters and log_outputs in libvirt's syntax: parsed into what the
 * logger applies, and a malformed entry refused naming it. */
START_TEST(test_log_filters_are_parsed)
{
    g_autoptr(GError) e = NULL;
    g_autoptr(GPtrArray) f = ferry_log_parse_filters(" 3:remote\t1:+tunnel  4:rpc.*  ", &e);
    ck_assert_msg(f, "%s", e ? e->message : "");
    ck_assert_uint_eq(f->len, 3);
    FerryLogFilter *a = f->pdata[0], *b = f->pdata[1], *c = f->pdata[2];
    ck_assert_int_eq(a->priority, FERRY_LOG_WARNING);
    ck_assert_str_eq(a->match, "remote");
    ck_assert_str_eq(a->pattern, "*remote*"); /* a plain match is a substring */
    ck_assert_int_eq(b->priority, FERRY_LOG_DEBUG);
    ck_assert_str_eq(b->match, "tunnel"); /* '+' (stack traces) accepted, ignored */
    ck_assert_str_eq(c->pattern, "rpc.*"); /* a glob is kept as written */

    g_autoptr(GPtrArray) none = ferry_log_parse_filters("", &e);
    ck_assert(none && none->len == 0);

    const char *bad[] = {"5:remote", "0:remote", "remote", "1:", "1:+", "x:tunnel",
                         "1remote", "3:remote 2:a:b"};
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_clear_error(&e);
        ck_assert_msg(!ferry_log_parse_filters(bad[i], &e), "accepted %s", bad[i]);
        ck_assert_ptr_nonnull(e);
    }
    g_clear_error(&e);
    ck_assert(!ferry_log_parse_filters("1:tunnel 9:qemu", &e));
    ck_assert_msg(strstr(e->message, "'9:qemu'"), "%s", e->message);
}
END_TEST

START_TEST(test_log_outputs_are_parsed)
{
    g_autoptr(GError) e = NULL;
    g_autoptr(GPtrArray) o =
        ferry_log_parse_outputs("1:file:/var/log/ferry/ferryd.log 3:stderr 2:syslog:ferryd "
                                "4:journald",
                                &e);
    ck_assert_msg(o, "%s", e ? e->message : "");
    ck_assert_uint_eq(o->len, 4);
    FerryLogOutput *file = o->pdata[0], *err = o->pdata[1], *sys = o->pdata[2],
                   *jd = o->pdata[3];
    ck_assert_int_eq(file->priority, FERRY_LOG_DEBUG);
    ck_assert_int_eq(file->destination, FERRY_LOG_TO_FILE);
    ck_assert_str_eq(file->data, "/var/log/ferry/ferryd.log");
    ck_assert_int_eq(err->destination, FERRY_LOG_TO_STDERR);
    ck_assert_int_eq(err->priority, FERRY_LOG_WARNING);
    ck_assert_ptr_null(err->data);
    ck_assert_int_eq(sys->destination, FERRY_LOG_TO_SYSLOG);
    ck_assert_str_eq(sys->data, "ferryd");
    ck_assert_int_eq(jd->destination, FERRY_LOG_TO_JOURNALD);
    ck_assert_int_eq(file->fd, -1); /* parsing opens nothing */

    const char *bad[] = {"stderr", "5:stderr", "1:file", "1:file:", "1:file:relative.log",
                         "1:syslog", "1:stderr:x", "1:journald:x", "1:network:h",
                         "3:stderr 1:fil:/tmp/x"};
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_clear_error(&e);
        ck_assert_msg(!ferry_log_parse_outputs(bad[i], &e), "accepted %s", bad[i]);
        ck_assert_ptr_nonnull(e);
    }
    ck_assert_msg(strstr(e->message, "'1:fil:/tmp/x'"), "%s", e->message);
}
END_TEST

START_TEST(test_log_keys_in_the_config)
{
    g_autoptr(DaemonConfig) c = daemon_config_new_defaults();
    g_autoptr(GError) e = NULL;
    ck_assert_msg(daemon_config_load_data(c,
                                          "log_filters = \"1:tunnel 4:*\"\n"
                                          "log_outputs = \"1:file:/tmp/f.log 3:stderr\"\n",
                                          "t.conf", &e),
                  "%s", e ? e->message : "");
    ck_assert_str_eq(c->log_filters, "1:tunnel 4:*");
    ck_assert_str_eq(c->log_outputs, "1:file:/tmp/f.log 3:stderr");

    ck_assert(!daemon_config_load_data(c, "\nlog_filters = \"3:remote 7:qemu\"\n", "t.conf", &e));
    ck_assert_msg(strstr(e->message, "t.conf:2") && strstr(e->message, "log_filters") &&
                      strstr(e->message, "'7:qemu'"),
                  "%s", e->message);
    g_clear_error(&e);
    ck_assert(!daemon_config_load_data(c, "log_outputs = \"1:file:log.txt\"\n", "t.conf", &e));
    ck_assert_msg(strstr(e->message, "log_outputs") && strstr(e->message, "1:file:log.txt"),
                  "%s", e->message);
    g_clear_error(&e);
    ck_assert(!daemon_config_load_data(c, "log_outputs = 1\n", "t.conf", &e));
}
END_TEST

/* Opening outputs: a file that cannot be opened is refused naming it and
 * leaves the current outputs alone. */
START_TEST(test_log_output_that_cannot_open_is_refused)
{
    g_autoptr(GError) e = NULL;
    ck_assert(!ferry_log_set_outputs("1:file:/nonexistent-ferry-dir/x.log", &e));
    ck_assert_msg(strstr(e->message, "/nonexistent-ferry-dir/x.log"), "%s", e->message);
}
END_TEST

/* libvirtd's admin_* keys and unix_sock_admin_perms, in libvirtd.conf's
 * forms, with libvirtd's defaults; bad values named. */
START_TEST(test_admin_keys)
{
    g_autoptr(DaemonConfig) d = daemon_config_new_defaults();
    ck_assert_uint_eq(d->unix_sock_admin_perms, 0700);
    ck_assert_uint_eq(d->admin_max_clients, 5);
    ck_assert_uint_eq(d->admin_max_queued_clients, 5);
    ck_assert_uint_eq(d->admin_max_workers, 5);
    ck_assert_uint_eq(d->admin_min_workers, 1);
    ck_assert_uint_eq(d->admin_max_client_requests, 5);
    ck_assert_int_eq(d->admin_keepalive_interval, 5);
    ck_assert_uint_eq(d->admin_keepalive_count, 5);

    g_autoptr(DaemonConfig) c = daemon_config_new_defaults();
    const char *text = "unix_sock_admin_perms = \"0600\"\n"
                       "admin_max_clients = +10; admin_max_queued_clients = 0\n"
                       "admin_max_workers = 2\nadmin_min_workers = 0\n"
                       "admin_max_client_requests = 1\n"
                       "admin_keepalive_interval = -1\nadmin_keepalive_count = 0\n";
    g_autoptr(GError) e = NULL;
    ck_assert_msg(daemon_config_load_data(c, text, "t.conf", &e), "%s", e ? e->message : "");
    ck_assert_uint_eq(c->unix_sock_admin_perms, 0600);
    ck_assert_uint_eq(c->admin_max_clients, 10);
    ck_assert_uint_eq(c->admin_max_queued_clients, 0);
    ck_assert_uint_eq(c->admin_max_workers, 2);
    ck_assert_uint_eq(c->admin_min_workers, 0);
    ck_assert_uint_eq(c->admin_max_client_requests, 1);
    ck_assert_int_eq(c->admin_keepalive_interval, -1);
    ck_assert_uint_eq(c->admin_keepalive_count, 0);

    expect_error("admin_max_workers = 0\n", "admin_max_workers = 0 is out of range 1..1000");
    expect_error("admin_max_clients = -5\n", "admin_max_clients must not be negative");
    expect_error("admin_keepalive_interval = \"5\"\n", "admin_keepalive_interval must be a number");
    expect_error("unix_sock_admin_perms = 700\n", "unix_sock_admin_perms must be an octal mode");
}
END_TEST

/* What virt-admin daemon-log-filters / -outputs read back: the settings in
 * force, in the syntax they were set with, '+' included. */
START_TEST(test_log_settings_read_back)
{
    g_autoptr(GError) e = NULL;
    guint n = 99;
    ck_assert(ferry_log_set_filters("3:remote   1:+tunnel 4:rpc.*", &e));
    g_autofree char *f = ferry_log_get_filters(&n);
    ck_assert_str_eq(f, "3:remote 1:+tunnel 4:rpc.*");
    ck_assert_uint_eq(n, 3);
    ck_assert(ferry_log_set_filters("", &e));
    g_autofree char *none = ferry_log_get_filters(&n);
    ck_assert_str_eq(none, "");
    ck_assert_uint_eq(n, 0);

    g_autofree char *stderr_only = ferry_log_get_outputs(&n);
    ck_assert_str_eq(stderr_only, "1:stderr");
    ck_assert_uint_eq(n, 1);
    ck_assert(ferry_log_set_outputs("4:stderr 3:syslog:ferry-test", &e));
    g_autofree char *o = ferry_log_get_outputs(&n);
    ck_assert_str_eq(o, "4:stderr 3:syslog:ferry-test");
    ck_assert_uint_eq(n, 2);
    /* A refused setting keeps what is in force. */
    ck_assert(!ferry_log_set_outputs("1:file:relative", &e));
    g_clear_error(&e);
    ck_assert(!ferry_log_set_filters("9:x", &e));
    g_clear_error(&e);
    g_autofree char *kept = ferry_log_get_outputs(&n);
    ck_assert_str_eq(kept, "4:stderr 3:syslog:ferry-test");
    ck_assert(ferry_log_set_outputs(NULL, &e));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("daemon-config");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_values_of_every_kind_are_applied);
    tcase_add_test(tc, test_libvirtd_value_forms_are_accepted);
    tcase_add_test(tc, test_bad_input_is_named);
    tcase_add_test(tc, test_missing_file_is_an_error);
    tcase_add_test(tc, test_log_filters_are_parsed);
    tcase_add_test(tc, test_log_outputs_are_parsed);
    tcase_add_test(tc, test_log_keys_in_the_config);
    tcase_add_test(tc, test_log_output_that_cannot_open_is_refused);
    tcase_add_test(tc, test_admin_keys);
    tcase_add_test(tc, test_log_settings_read_back);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
