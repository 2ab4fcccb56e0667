/* ferry-peer-probe: opens a connection with remote_peer_open (ferry's own
 * client, as a migration source uses it) and makes one call, so the
 * integration tests can drive that client like they drive virsh.
 *   ferry-peer-probe [--readonly] [--authfile FILE] [--password PW] URI [hostname|secure|define]
 * Prints the result on stdout; on failure "error: MESSAGE" on stderr, exit 1. */
#include <stdio.h>
#include <string.h>

#include "remote/remote-peer.h"
#include "remote/remote_protocol.h"
#include "util/error.h"

static char *password_arg;

static char *get_credential(const char *what, const char *host, gpointer data)
{
    return strcmp(what, "password") == 0 && password_arg ? g_strdup(password_arg) : NULL;
}

static gboolean run(RpcClient *c, const char *what, GError **error)
{
    if (strcmp(what, "hostname") == 0) {
        remote_connect_get_hostname_ret ret = {0};
        if (!rpc_client_call(c, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
                             REMOTE_PROC_CONNECT_GET_HOSTNAME, NULL, NULL,
                             (xdrproc_t)xdr_remote_connect_get_hostname_ret, &ret, 10000, error))
            return FALSE;
        printf("%s\n", ret.hostname);
        xdr_free((xdrproc_t)xdr_remote_connect_get_hostname_ret, (char *)&ret);
        return TRUE;
    }
    if (strcmp(what, "secure") == 0) {
        remote_connect_is_secure_ret ret = {0};
        if (!rpc_client_call(c, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
                             REMOTE_PROC_CONNECT_IS_SECURE, NULL, NULL,
                             (xdrproc_t)xdr_remote_connect_is_secure_ret, &ret, 10000, error))
            return FALSE;
        printf("%d\n", ret.secure);
        return TRUE;
    }
    if (strcmp(what, "define") == 0) {
        remote_domain_define_xml_args args = {.xml = "<domain type='sim'><name>x</name></domain>"};
        remote_domain_ret ret = {0};
        if (!rpc_client_call(c, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
                             REMOTE_PROC_DOMAIN_DEFINE_XML,
                             (xdrproc_t)xdr_remote_domain_define_xml_args, &args,
                             (xdrproc_t)xdr_remote_domain_ret, &ret, 10000, error))
            return FALSE;
        printf("%s\n", ret.dom.name);
        xdr_free((xdrproc_t)xdr_remote_domain_ret, (char *)&ret);
        return TRUE;
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG, "unknown command '%s'", what);
    return FALSE;
}

int main(int argc, char **argv)
{
    gboolean readonly = FALSE;
    char *authfile = NULL;
    GOptionEntry entries[] = {
        {"readonly", 'r', 0, G_OPTION_ARG_NONE, &readonly, "open read-only", NULL},
        {"authfile", 'a', 0, G_OPTION_ARG_FILENAME, &authfile, "libvirt auth file", "FILE"},
        {"password", 'p', 0, G_OPTION_ARG_STRING, &password_arg, "password callback answer", "PW"},
        {NULL}};
    g_autoptr(GOptionContext) octx = g_option_context_new("URI [hostname|secure|define]");
    g_option_context_add_main_entries(octx, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(octx, &argc, &argv, &error) || argc < 2) {
        fprintf(stderr, "error: %s\n", error ? error->message : "no URI");
        return 2;
    }
    RemotePeerOptions opts = {.readonly = readonly,
                              .authfile = authfile,
                              .get_credential = get_credential,
                              .timeout_ms = 15000};
    RpcClient *c = remote_peer_open(argv[1], &opts, &error);
    int rc = 0;
    if (!c || !run(c, argc > 2 ? argv[2] : "hostname", &error)) {
        fprintf(stderr, "error: %s\n", error->message);
        rc = 1;
    }
    if (c)
        rpc_client_free(c);
    g_free(authfile);
    g_free(password_arg);
    return rc;
}
