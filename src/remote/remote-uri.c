/* Parsing libvirt client URIs. */
#include "remote/remote-uri.h"

#include <string.h>
#include <unistd.h>

#include "util/error.h"

/* Parameters the libvirt client consumes (removed from the CONNECT_OPEN name). */
/* clang-format off */
static const char *const consumed[] = {
    "pkipath", "no_verify", "no_sanity", "tls_priority", "auth", "name", "socket",
    "command", "netcat", "keyfile", "sshauth", "known_hosts", "known_hosts_verify",
    "mode", "proxy", "no_tty", "authfile", NULL};
/* clang-format on */

/* Consumed parameters that name something on the host that opens the URI. */
/* clang-format off */
static const char *const local_resources[] = {
    "authfile", "pkipath", "socket", "keyfile", "known_hosts", "command", "netcat", NULL};
/* clang-format on */

void remote_uri_free(RemoteUri *u)
{
    if (!u)
        return;
    g_free(u->driver);
    g_free(u->user);
    g_free(u->host);
    g_free(u->name);
    g_free(u->pkipath);
    g_free(u->tls_priority);
    g_free(u->socket);
    g_free(u->auth);
    g_free(u->authfile);
    g_free(u->local_resource);
    g_free(u);
}

static gboolean bad(GError **error, const char *uri, const char *why)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "cannot use URI '%s': %s", uri, why);
    return FALSE;
}

static gboolean parse_authority(RemoteUri *u, const char *uri, const char *auth, GError **error)
{
    const char *at = strrchr(auth, '@');
    if (at) {
        u->user = g_uri_unescape_segment(auth, at, NULL);
        auth = at + 1;
    }
    const char *port = NULL;
    if (auth[0] == '[') {
        const char *end = strchr(auth, ']');
        if (!end)
            return bad(error, uri, "unterminated [IPv6 address]");
        u->host = g_strndup(auth + 1, end - auth - 1);
        if (end[1] == ':')
            port = end + 2;
        else if (end[1])
            return bad(error, uri, "garbage after the [IPv6 address]");
    } else {
        const char *colon = strchr(auth, ':');
        u->host = colon ? g_strndup(auth, colon - auth) : g_strdup(auth);
        if (colon)
            port = colon + 1;
    }
    if (!*u->host)
        g_clear_pointer(&u->host, g_free);
    if (port && *port) {
        guint64 p = 0;
        if (!g_ascii_string_to_unsigned(port, 10, 1, 65535, &p, NULL))
            return bad(error, uri, "the port is not a number from 1 to 65535");
        u->port = p;
    }
    return TRUE;
}

static gboolean is_true(const char *v)
{
    return v && strcmp(v, "0") != 0 && *v;
}

RemoteUri *remote_uri_parse(const char *uri, GError **error)
{
    g_autoptr(RemoteUri) u = g_new0(RemoteUri, 1);
    const char *sep = strstr(uri, "://");
    if (!sep || sep == uri) {
        bad(error, uri, "expected DRIVER[+TRANSPORT]://[HOST[:PORT]]/PATH");
        return NULL;
    }
    g_autofree char *scheme = g_strndup(uri, sep - uri);
    const char *rest = sep + 3;

    char *plus = strchr(scheme, '+');
    const char *transport = NULL;
    if (plus) {
        *plus = '\0';
        transport = plus + 1;
    }
    u->driver = g_strdup(scheme);

    gsize alen = strcspn(rest, "/?#");
    g_autofree char *authority = g_strndup(rest, alen);
    rest += alen;
    gsize plen = strcspn(rest, "?#");
    g_autofree char *path = g_strndup(rest, plen);
    rest += plen;
    g_autofree char *query = NULL;
    if (*rest == '?') {
        gsize qlen = strcspn(rest + 1, "#");
        query = g_strndup(rest + 1, qlen);
        rest += 1 + qlen;
    }
    const char *fragment = *rest == '#' ? rest + 1 : NULL;

    if (!parse_authority(u, uri, authority, error))
        return NULL;

    if (!transport)
        u->transport = u->host ? REMOTE_URI_TLS : REMOTE_URI_UNIX;
    else if (strcmp(transport, "tls") == 0)
        u->transport = REMOTE_URI_TLS;
    else if (strcmp(transport, "tcp") == 0)
        u->transport = REMOTE_URI_TCP;
    else if (strcmp(transport, "unix") == 0)
        u->transport = REMOTE_URI_UNIX;
    else {
        g_autofree char *why = g_strdup_printf(
            "transport '+%s' is not supported by ferry's client (use +tls, +tcp or +unix)",
            transport);
        bad(error, uri, why);
        return NULL;
    }
    if (u->transport != REMOTE_URI_UNIX && !u->host) {
        bad(error, uri, "a TCP or TLS URI needs a host");
        return NULL;
    }
    if (!u->port)
        u->port = u->transport == REMOTE_URI_TCP ? REMOTE_URI_TCP_PORT : REMOTE_URI_TLS_PORT;

    /* Parameters: consumed ones are decoded and kept here, the others pass
     * through to the server in the name exactly as written. */
    g_autoptr(GPtrArray) kept = g_ptr_array_new();
    g_auto(GStrv) params = query ? g_strsplit(query, "&", -1) : NULL;
    g_autofree char *name_param = NULL;
    for (char **p = params; p && *p; p++) {
        if (!**p)
            continue;
        char *eq = strchr(*p, '=');
        g_autofree char *key =
            eq ? g_uri_unescape_segment(*p, eq, NULL) : g_uri_unescape_string(*p, NULL);
        g_autofree char *value = eq ? g_uri_unescape_string(eq + 1, NULL) : g_strdup("");
        if (!key || !value) {
            bad(error, uri, "a query parameter has a bad %-escape");
            return NULL;
        }
        if (!g_strv_contains(consumed, key)) {
            g_ptr_array_add(kept, *p);
            continue;
        }
        if (!u->local_resource && g_strv_contains(local_resources, key))
            u->local_resource = g_strdup(key);
        if (strcmp(key, "pkipath") == 0)
            g_free(u->pkipath), u->pkipath = g_steal_pointer(&value);
        else if (strcmp(key, "no_verify") == 0)
            u->no_verify = is_true(value);
        else if (strcmp(key, "no_sanity") == 0)
            u->no_sanity = is_true(value);
        else if (strcmp(key, "tls_priority") == 0)
            g_free(u->tls_priority), u->tls_priority = g_steal_pointer(&value);
        else if (strcmp(key, "socket") == 0)
            g_free(u->socket), u->socket = g_steal_pointer(&value);
        else if (strcmp(key, "auth") == 0)
            g_free(u->auth), u->auth = g_steal_pointer(&value);
        else if (strcmp(key, "authfile") == 0)
            g_free(u->authfile), u->authfile = g_steal_pointer(&value);
        else if (strcmp(key, "name") == 0)
            g_free(name_param), name_param = g_steal_pointer(&value);
        /* the rest (ssh and ext options) mean nothing to our transports */
    }

    if (name_param) {
        u->name = g_steal_pointer(&name_param);
    } else if (strcmp(u->driver, "remote") == 0) {
        u->name = g_strdup(""); /* "server, pick your default" */
    } else {
        GString *name = g_string_new(u->driver);
        g_string_append(name, "://");
        g_string_append(name, path);
        for (guint i = 0; i < kept->len; i++)
            g_string_append_printf(name, "%c%s", i == 0 ? '?' : '&', (const char *)kept->pdata[i]);
        if (fragment)
            g_string_append_printf(name, "#%s", fragment);
        u->name = g_string_free(name, FALSE);
    }
    return g_steal_pointer(&u);
}

gboolean remote_uri_check_from_client(const char *uri, GError **error)
{
    g_autoptr(RemoteUri) u = remote_uri_parse(uri, error);
    if (!u)
        return FALSE;
    if (u->local_resource) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_OPERATION_DENIED,
                    "the destination URI parameter '%s' names a file, socket or command on "
                    "this host, which a client may not choose (the daemon uses its own: "
                    "migration_pki_dir, LIBVIRT_AUTH_FILE)",
                    u->local_resource);
        return FALSE;
    }
    return TRUE;
}

char *remote_uri_default_socket(gboolean readonly)
{
    const char *file = readonly ? "libvirt-sock-ro" : "libvirt-sock";
    if (geteuid() == 0)
        return g_build_filename("/var/run/libvirt", file, NULL);
    return g_build_filename(g_get_user_runtime_dir(), "libvirt", file, NULL);
}
