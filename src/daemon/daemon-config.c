/* Parser for libvirtd.conf-style files, in every form libvirt's own parser
 * (virconf) accepts: `key = value` statements separated by newlines or ';',
 * where a value is an integer (+/- sign allowed), a 'single', "double" or
 * """triple""" quoted string, or a [list, "of", values] spanning lines with
 * an optional trailing comma; # starts a comment. Each key takes the value
 * types libvirtd takes for it (ports as "16509" strings, booleans as 0/1). */
#include "daemon/daemon-config.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>

#include "util/error.h"
#include "util/log.h"

typedef enum {
    KEY_BOOL,
    KEY_UINT,
    KEY_INT,
    KEY_PORT, /* a number, or a string: "16509" or a service name */
    KEY_STRING,
    KEY_LIST,
    KEY_AUTH,
    KEY_PERMS,
    KEY_LOG_FILTERS, /* strings in libvirt's syntax, checked here, opened by ferryd */
    KEY_LOG_OUTPUTS,
} KeyKind;

typedef struct {
    const char *name;
    KeyKind kind;
    gsize offset;
    gint64 min, max; /* integers */
} KeyDef;

#define K(name, kind) {#name, kind, G_STRUCT_OFFSET(DaemonConfig, name), 0, G_MAXUINT32}
#define KR(name, kind, lo, hi) {#name, kind, G_STRUCT_OFFSET(DaemonConfig, name), lo, hi}

static const KeyDef keys[] = {
    K(listen_tcp, KEY_BOOL),
    K(listen_tls, KEY_BOOL),
    K(listen_addr, KEY_STRING),
    KR(tcp_port, KEY_PORT, 0, 65535),
    KR(tls_port, KEY_PORT, 0, 65535),
    K(unix_sock_dir, KEY_STRING),
    K(unix_sock_ro_perms, KEY_PERMS),
    K(unix_sock_rw_perms, KEY_PERMS),
    K(unix_sock_admin_perms, KEY_PERMS),
    K(auth_tcp, KEY_AUTH),
    K(auth_tls, KEY_AUTH),
    K(auth_unix_rw, KEY_AUTH),
    K(auth_unix_ro, KEY_AUTH),
    K(key_file, KEY_STRING),
    K(cert_file, KEY_STRING),
    K(ca_file, KEY_STRING),
    K(crl_file, KEY_STRING),
    K(tls_no_verify_certificate, KEY_BOOL),
    K(tls_allowed_dn_list, KEY_LIST),
    K(tls_priority, KEY_STRING),
    KR(tls_handshake_timeout, KEY_UINT, 1, 3600),
    K(sasl_allowed_username_list, KEY_LIST),
    KR(max_clients, KEY_UINT, 1, 100000),
    K(max_anonymous_clients, KEY_UINT),
    KR(max_queued_clients, KEY_UINT, 0, G_MAXINT32), /* 0: the listen() default of 128 */
    KR(auth_timeout, KEY_UINT, 0, 3600),
    KR(max_client_send_queue, KEY_UINT, 65536, 1024 * 1024 * 1024),
    KR(max_client_requests, KEY_UINT, 1, 10000),
    KR(max_workers, KEY_UINT, 1, 1000),
    KR(min_workers, KEY_UINT, 0, 1000),
    KR(keepalive_interval, KEY_INT, -1, 3600),
    KR(keepalive_count, KEY_UINT, 0, 1000),
    KR(tcp_user_timeout, KEY_UINT, 0, 3600),
    KR(tcp_keepalive_idle, KEY_UINT, 0, 32767),
    KR(tcp_keepalive_interval, KEY_UINT, 0, 32767),
    KR(tcp_keepalive_count, KEY_UINT, 0, 127),
    KR(admin_max_clients, KEY_UINT, 1, 100000),
    KR(admin_max_queued_clients, KEY_UINT, 0, G_MAXINT32),
    KR(admin_max_workers, KEY_UINT, 1, 1000),
    KR(admin_min_workers, KEY_UINT, 0, 1000),
    KR(admin_max_client_requests, KEY_UINT, 1, 10000),
    KR(admin_keepalive_interval, KEY_INT, -1, 3600),
    KR(admin_keepalive_count, KEY_UINT, 0, 1000),
    KR(log_level, KEY_UINT, 1, 4),
    K(log_filters, KEY_LOG_FILTERS),
    K(log_outputs, KEY_LOG_OUTPUTS),
    K(domain_config_dir, KEY_STRING),
    K(domain_run_dir, KEY_STRING),
    K(vmm_binary, KEY_STRING),
    K(qemu_emulator, KEY_STRING),
    K(qemu_config_dir, KEY_STRING),
    K(qemu_run_dir, KEY_STRING),
    K(qemu_save_dir, KEY_STRING),
    K(storage_config_dir, KEY_STRING),
    K(storage_run_dir, KEY_STRING),
    K(domain_log_dir, KEY_STRING),
    K(qemu_log_dir, KEY_STRING),
    KR(vmm_log_max_size, KEY_UINT, 0, G_MAXUINT32),
    KR(vmm_log_max_backups, KEY_UINT, 0, 100),
    KR(migration_port_min, KEY_UINT, 1, 65535),
    KR(migration_port_max, KEY_UINT, 1, 65535),
    K(migration_address, KEY_STRING),
    KR(migration_stall_timeout, KEY_UINT, 0, 3600),
    KR(migration_parallel_connections, KEY_UINT, 1, 16),
    KR(migration_resume_timeout, KEY_UINT, 0, 3600),
    KR(migration_keepalive_interval, KEY_INT, -1, 3600),
    KR(migration_keepalive_count, KEY_UINT, 1, 1000),
    K(migration_pki_dir, KEY_STRING),
    K(flight_recorder, KEY_BOOL),
    K(flight_record_dir, KEY_STRING),
    KR(flight_records_max, KEY_UINT, 0, 100000),
};

/* Keys libvirtd.conf has that mean nothing to ferryd: accepted, so an
 * operator's existing file loads, and ignored. */
static const char *const ignored_keys[] = {
    "unix_sock_group", "mdns_adv", "mdns_name", "listen_tls_port",
    "prio_workers", "tls_no_sanity_certificate",
    "access_drivers", "host_uuid", "host_uuid_source",
    "audit_level", "audit_logging", "ovs_timeout", "tcp_min_ssf", "auth_unix_ro_perms",
    NULL};

DaemonConfig *daemon_config_new_defaults(void)
{
    DaemonConfig *cfg = g_new0(DaemonConfig, 1);
    gboolean root = geteuid() == 0;
    cfg->listen_tcp = FALSE;
    cfg->listen_tls = FALSE;
    cfg->listen_addr = g_strdup("0.0.0.0");
    cfg->tcp_port = 16509;
    cfg->tls_port = 16514;
    cfg->unix_sock_dir = root ? g_strdup("/var/run/libvirt")
                              : g_build_filename(g_get_user_runtime_dir(), "libvirt", NULL);
    cfg->unix_sock_ro_perms = 0777;
    cfg->unix_sock_rw_perms = root ? 0700 : 0700;
    cfg->auth_tcp = g_strdup("sasl");
    cfg->auth_tls = g_strdup("none");
    cfg->auth_unix_rw = g_strdup("none");
    cfg->auth_unix_ro = g_strdup("none");
    cfg->key_file = g_strdup("/etc/pki/libvirt/private/serverkey.pem");
    cfg->cert_file = g_strdup("/etc/pki/libvirt/servercert.pem");
    cfg->ca_file = g_strdup("/etc/pki/CA/cacert.pem");
    cfg->crl_file = NULL;
    cfg->tls_priority = g_strdup("NORMAL");
    cfg->tls_handshake_timeout = 10;
    cfg->max_clients = 5000;
    cfg->max_anonymous_clients = 20;
    cfg->max_queued_clients = 1000;
    cfg->auth_timeout = 60;
    cfg->max_client_send_queue = 8 * 1024 * 1024;
    cfg->max_client_requests = 5;
    cfg->max_workers = 20;
    cfg->min_workers = 5;
    cfg->keepalive_interval = 5;
    cfg->keepalive_count = 5;
    /* A dead path is noticed within 5 s of the first byte it did not carry
     * (TCP_USER_TIMEOUT), or of the last one it did when idle (2 s of
     * silence, then a probe each second): within 10 s whatever the traffic,
     * as the keepalive PING that libvirt sends after 5 s is such a byte. */
    cfg->tcp_user_timeout = 5;
    cfg->tcp_keepalive_idle = 2;
    cfg->tcp_keepalive_interval = 1;
    cfg->tcp_keepalive_count = 3;
    cfg->unix_sock_admin_perms = 0700;
    cfg->admin_max_clients = 5;
    cfg->admin_max_queued_clients = 5;
    cfg->admin_max_workers = 5;
    cfg->admin_min_workers = 1;
    cfg->admin_max_client_requests = 5;
    cfg->admin_keepalive_interval = 5;
    cfg->admin_keepalive_count = 5;
    cfg->log_level = 3;
    cfg->domain_config_dir = root ? g_strdup("/etc/ferry/sim")
                                  : g_build_filename(g_get_user_config_dir(), "ferry", "sim", NULL);
    cfg->domain_run_dir = root ? g_strdup("/run/ferry/sim")
                               : g_build_filename(g_get_user_runtime_dir(), "ferry", "sim", NULL);
    cfg->qemu_save_dir = root ? g_strdup("/var/lib/ferry/qemu/save")
                              : g_build_filename(g_get_user_data_dir(), "ferry", "qemu", "save",
                                                 NULL);
    cfg->domain_log_dir = root ? g_strdup("/var/log/ferry/sim")
                               : g_build_filename(g_get_user_cache_dir(), "ferry", "log", "sim",
                                                  NULL);
    cfg->vmm_log_max_size = 2 * 1024 * 1024;
    cfg->vmm_log_max_backups = 3;
    cfg->vmm_binary = NULL; /* found next to ferryd, or on PATH */
    cfg->migration_port_min = 49152;
    cfg->migration_port_max = 49215;
    cfg->migration_address = NULL;
    cfg->migration_stall_timeout = 10;
    cfg->migration_parallel_connections = 1;
    cfg->migration_resume_timeout = 30;
    /* A dead destination is dropped after 8 s (libvirt's qemu.conf: 5 x 5,
     * 30 s, during which a migration can neither go on nor fail). */
    cfg->migration_keepalive_interval = 2;
    cfg->migration_keepalive_count = 3;
    cfg->flight_recorder = TRUE;
    cfg->flight_record_dir = root ? g_strdup("/var/log/ferry/flight")
                                  : g_build_filename(g_get_user_cache_dir(), "ferry", "log",
                                                     "flight", NULL);
    cfg->flight_records_max = 50;
    return cfg;
}

void daemon_config_free(DaemonConfig *cfg)
{
    if (!cfg)
        return;
    for (guint i = 0; i < G_N_ELEMENTS(keys); i++) {
        gpointer field = G_STRUCT_MEMBER_P(cfg, keys[i].offset);
        if (keys[i].kind == KEY_STRING || keys[i].kind == KEY_AUTH ||
            keys[i].kind == KEY_LOG_FILTERS || keys[i].kind == KEY_LOG_OUTPUTS)
            g_free(*(char **)field);
        else if (keys[i].kind == KEY_LIST)
            g_strfreev(*(char ***)field);
    }
    g_free(cfg);
}

typedef struct {
    const char *p;
    const char *origin;
    int line;
} Parser;

/* Blanks, and a # comment up to the end of the line. */
static void skip_blank(Parser *ps, gboolean newlines)
{
    for (;;) {
        if (*ps->p == '#') {
            while (*ps->p && *ps->p != '\n')
                ps->p++;
        } else if (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r') {
            ps->p++;
        } else if (newlines && *ps->p == '\n') {
            ps->line++;
            ps->p++;
        } else {
            return;
        }
    }
}

static gboolean syntax_error(Parser *ps, GError **error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static gboolean syntax_error(Parser *ps, GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, FERRY_ERROR, FERRY_ERR_CONF_SYNTAX, "%s:%d: %s", ps->origin, ps->line,
                msg);
    return FALSE;
}

/* 'single', "double" (one line each) or """triple""" (may span lines) quotes,
 * no escapes: libvirt's config syntax. */
static char *parse_string(Parser *ps, GError **error)
{
    if (g_str_has_prefix(ps->p, "\"\"\"")) {
        const char *start = ps->p + 3;
        const char *end = strstr(start, "\"\"\"");
        if (!end) {
            syntax_error(ps, error, "unterminated string");
            return NULL;
        }
        for (const char *q = start; q < end; q++)
            if (*q == '\n')
                ps->line++;
        ps->p = end + 3;
        return g_strndup(start, end - start);
    }
    char quote = *ps->p;
    if (quote != '"' && quote != '\'') {
        syntax_error(ps, error, "expected a quoted string");
        return NULL;
    }
    const char *start = ++ps->p;
    while (*ps->p && *ps->p != quote && *ps->p != '\n' && *ps->p != '\r')
        ps->p++;
    if (*ps->p != quote) {
        syntax_error(ps, error, "unterminated string");
        return NULL;
    }
    char *s = g_strndup(start, ps->p - start);
    ps->p++;
    return s;
}

typedef struct Value {
    enum { VAL_INT, VAL_STRING, VAL_LIST } type;
    gint64 i;
    gboolean negative; /* written with a '-': libvirt's signed kind, refused for unsigned keys */
    char *s;
    GPtrArray *list; /* Value* */
} Value;

static void value_clear(Value *v)
{
    g_free(v->s);
    if (v->list)
        g_ptr_array_unref(v->list);
}

static void value_free(gpointer data)
{
    value_clear(data);
    g_free(data);
}

/* Integers beyond this are refused rather than wrapped. */
#define NUMBER_DIGITS_MAX 18

static gboolean parse_value(Parser *ps, Value *v, GError **error)
{
    if (*ps->p == '"' || *ps->p == '\'') {
        v->type = VAL_STRING;
        return (v->s = parse_string(ps, error)) != NULL;
    }
    if (*ps->p == '[') {
        /* Any values, across lines, a trailing comma allowed; the key's kind
         * decides whether its elements may be other than strings. */
        ps->p++;
        v->type = VAL_LIST;
        v->list = g_ptr_array_new_with_free_func(value_free);
        skip_blank(ps, TRUE);
        while (*ps->p != ']') {
            Value *e = g_new0(Value, 1);
            g_ptr_array_add(v->list, e);
            if (!parse_value(ps, e, error))
                return FALSE;
            skip_blank(ps, TRUE);
            if (*ps->p == ',') {
                ps->p++;
                skip_blank(ps, TRUE);
            } else if (*ps->p != ']') {
                return syntax_error(ps, error, "expected ',' or ']' in a list");
            }
        }
        ps->p++;
        return TRUE;
    }
    v->type = VAL_INT;
    v->negative = *ps->p == '-';
    if (*ps->p == '-' || *ps->p == '+')
        ps->p++;
    const char *digits = ps->p;
    while (g_ascii_isdigit(*ps->p))
        ps->p++;
    if (ps->p == digits)
        return syntax_error(ps, error, "expected a number, a \"string\" or a [list]");
    if (ps->p - digits > NUMBER_DIGITS_MAX)
        return syntax_error(ps, error, "number %.*s is too large", (int)(ps->p - digits),
                            digits);
    g_autofree char *num = g_strndup(digits, ps->p - digits);
    v->i = g_ascii_strtoll(num, NULL, 10);
    if (v->negative)
        v->i = -v->i;
    return TRUE;
}

/* A port as libvirtd writes it, "16509" or a service name ("libvirt"), or
 * as a bare number. */
static gboolean port_value(Parser *ps, const KeyDef *k, const Value *v, gint64 *port,
                           GError **error)
{
    if (v->type == VAL_INT && !v->negative) {
        *port = v->i;
        return TRUE;
    }
    if (v->type != VAL_STRING || !*v->s)
        return syntax_error(ps, error, "%s must be a port number or service name", k->name);
    const char *p = v->s;
    while (g_ascii_isdigit(*p))
        p++;
    if (!*p) {
        if (p - v->s > NUMBER_DIGITS_MAX)
            return syntax_error(ps, error, "%s = \"%s\" is out of range %" G_GINT64_FORMAT
                                "..%" G_GINT64_FORMAT, k->name, v->s, k->min, k->max);
        *port = g_ascii_strtoll(v->s, NULL, 10);
        return TRUE;
    }
    struct servent result, *se = NULL;
    char buf[1024];
    if (getservbyname_r(v->s, "tcp", &result, buf, sizeof(buf), &se) != 0 || !se)
        return syntax_error(ps, error, "%s = \"%s\" is neither a port number nor a known "
                            "service name", k->name, v->s);
    *port = ntohs((guint16)se->s_port);
    return TRUE;
}

static gboolean apply_value(DaemonConfig *cfg, Parser *ps, const KeyDef *k, Value *v,
                            GError **error)
{
    gpointer field = G_STRUCT_MEMBER_P(cfg, k->offset);
    switch (k->kind) {
    case KEY_BOOL:
        if (v->type != VAL_INT || v->negative || (v->i != 0 && v->i != 1))
            return syntax_error(ps, error, "%s must be 0 or 1", k->name);
        *(gboolean *)field = v->i == 1;
        return TRUE;
    case KEY_PORT:
    case KEY_UINT:
    case KEY_INT: {
        gint64 n = v->i;
        if (k->kind == KEY_PORT) {
            if (!port_value(ps, k, v, &n, error))
                return FALSE;
        } else if (v->type != VAL_INT) {
            return syntax_error(ps, error, "%s must be a number", k->name);
        } else if (k->kind == KEY_UINT && v->negative) {
            /* libvirt reads these as unsigned: even -0 is refused */
            return syntax_error(ps, error, "%s must not be negative", k->name);
        }
        if (n < k->min || n > k->max)
            return syntax_error(ps, error, "%s = %" G_GINT64_FORMAT " is out of range %" G_GINT64_FORMAT
                                "..%" G_GINT64_FORMAT,
                                k->name, n, k->min, k->max);
        if (k->kind == KEY_INT)
            *(int *)field = (int)n;
        else
            *(guint *)field = (guint)n;
        return TRUE;
    }
    case KEY_STRING:
        if (v->type != VAL_STRING)
            return syntax_error(ps, error, "%s must be a \"string\"", k->name);
        g_free(*(char **)field);
        *(char **)field = g_steal_pointer(&v->s);
        return TRUE;
    case KEY_AUTH:
        if (v->type != VAL_STRING ||
            (strcmp(v->s, "none") != 0 && strcmp(v->s, "sasl") != 0))
            return syntax_error(ps, error, "%s must be \"none\" or \"sasl\"", k->name);
        g_free(*(char **)field);
        *(char **)field = g_steal_pointer(&v->s);
        return TRUE;
    case KEY_LOG_FILTERS:
    case KEY_LOG_OUTPUTS: {
        if (v->type != VAL_STRING)
            return syntax_error(ps, error, "%s must be a \"string\"", k->name);
        g_autoptr(GError) local = NULL;
        g_autoptr(GPtrArray) parsed = k->kind == KEY_LOG_FILTERS
                                          ? ferry_log_parse_filters(v->s, &local)
                                          : ferry_log_parse_outputs(v->s, &local);
        if (!parsed)
            return syntax_error(ps, error, "%s: %s", k->name, local->message);
        g_free(*(char **)field);
        *(char **)field = g_steal_pointer(&v->s);
        return TRUE;
    }
    case KEY_PERMS: {
        /* libvirt writes socket modes as strings: "0770" */
        char *end = NULL;
        guint64 mode = v->type == VAL_STRING ? g_ascii_strtoull(v->s, &end, 8) : G_MAXUINT64;
        if (v->type != VAL_STRING || !end || *end || mode > 0777)
            return syntax_error(ps, error, "%s must be an octal mode string like \"0770\"",
                                k->name);
        *(guint *)field = (guint)mode;
        return TRUE;
    }
    case KEY_LIST: {
        gboolean strings = v->type == VAL_LIST;
        for (guint i = 0; strings && i < v->list->len; i++)
            strings = ((Value *)v->list->pdata[i])->type == VAL_STRING;
        if (!strings)
            return syntax_error(ps, error, "%s must be a [\"list\", \"of strings\"]", k->name);
        char **strv = g_new0(char *, v->list->len + 1);
        for (guint i = 0; i < v->list->len; i++)
            strv[i] = g_steal_pointer(&((Value *)v->list->pdata[i])->s);
        g_strfreev(*(char ***)field);
        *(char ***)field = strv;
        return TRUE;
    }
    }
    return FALSE;
}

gboolean daemon_config_load_data(DaemonConfig *cfg, const char *text, const char *origin,
                                 GError **error)
{
    Parser ps = {.p = text, .origin = origin, .line = 1};
    for (;;) {
        skip_blank(&ps, TRUE);
        if (!*ps.p)
            return TRUE;
        if (*ps.p == ';') { /* an empty statement between separators */
            ps.p++;
            continue;
        }
        const char *start = ps.p;
        if (g_ascii_isalpha(*ps.p))
            while (g_ascii_isalnum(*ps.p) || *ps.p == '_')
                ps.p++;
        if (ps.p == start)
            return syntax_error(&ps, error, "expected a key name");
        g_autofree char *name = g_strndup(start, ps.p - start);
        skip_blank(&ps, FALSE);
        if (*ps.p != '=')
            return syntax_error(&ps, error, "expected '=' after %s", name);
        ps.p++;
        skip_blank(&ps, FALSE);
        Value v = {0};
        if (!parse_value(&ps, &v, error)) {
            value_clear(&v);
            return FALSE;
        }
        skip_blank(&ps, FALSE);
        if (*ps.p == ';') {
            ps.p++; /* statements may also be separated by ';' */
        } else if (*ps.p && *ps.p != '\n') {
            value_clear(&v);
            return syntax_error(&ps, error, "unexpected text after the value of %s", name);
        }

        const KeyDef *k = NULL;
        for (guint i = 0; i < G_N_ELEMENTS(keys) && !k; i++)
            if (strcmp(keys[i].name, name) == 0)
                k = &keys[i];
        gboolean ok = TRUE;
        if (k)
            ok = apply_value(cfg, &ps, k, &v, error);
        else if (!g_strv_contains(ignored_keys, name))
            ok = syntax_error(&ps, error, "unknown configuration key '%s'", name);
        value_clear(&v);
        if (!ok)
            return FALSE;
    }
}

gboolean daemon_config_load_file(DaemonConfig *cfg, const char *path, GError **error)
{
    g_autofree char *text = NULL;
    g_autoptr(GError) local = NULL;
    if (!g_file_get_contents(path, &text, NULL, &local)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_CONF_SYNTAX, "cannot read config file: %s",
                    local->message);
        return FALSE;
    }
    return daemon_config_load_data(cfg, text, path, error);
}
