/* Typed parameters (virTypedParameter) as a migration call carries them:
 * the input is the XDR payload of PREPARE3_PARAMS (params, cookie, flags).
 * Decoded params go to the driver's form and back, and must encode and
 * decode to the same list; the lookups the migration engine makes are run
 * on them, and every string value is also read as a connection URI (the
 * engine reads dconnuri, migrate_uri and friends that way). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/driver-params.h"
#include "fuzz-common.h"
#include "remote/remote-convert.h"
#include "remote/remote-uri.h"
#include "remote/remote_protocol.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

static gboolean decode(const uint8_t *data, size_t size, remote_domain_migrate_prepare3_params_args *args)
{
    XDR xdr;
    memset(args, 0, sizeof(*args));
    xdrmem_create(&xdr, (char *)data, (u_int)size, XDR_DECODE);
    gboolean ok = xdr_remote_domain_migrate_prepare3_params_args(&xdr, args);
    xdr_destroy(&xdr);
    if (!ok)
        xdr_free((xdrproc_t)xdr_remote_domain_migrate_prepare3_params_args, (char *)args);
    return ok;
}

static void run_lookups(GPtrArray *params)
{
    const char *strings[] = {"destination_name", "destination_xml", "persistent_xml",
                             "migrate_uri", "listen_address", "migrate_disks", NULL};
    for (int i = 0; strings[i]; i++) {
        const char *v = NULL;
        g_autoptr(GError) error = NULL;
        driver_params_get_string(params, strings[i], &v, &error);
    }
    guint64 bw = 0;
    gboolean present = FALSE;
    g_autoptr(GError) error = NULL;
    driver_params_get_ullong(params, "bandwidth", &bw, &present, &error);
    for (guint i = 0; i < params->len; i++) {
        const DriverParam *p = params->pdata[i];
        if (p->type == DRIVER_PARAM_STRING && p->s) {
            g_autoptr(GError) uri_error = NULL;
            g_autoptr(RemoteUri) uri = remote_uri_parse(p->s, &uri_error);
            (void)uri; /* parsed for the parser's sake; freed at scope end */
        }
    }
}

static gboolean param_equal(const remote_typed_param *a, const remote_typed_param *b)
{
    if (strcmp(a->field, b->field) != 0 || a->value.type != b->value.type)
        return FALSE;
    const remote_typed_param_value *x = &a->value, *y = &b->value;
    switch (x->type) {
    case DRIVER_PARAM_INT:
        return x->remote_typed_param_value_u.i == y->remote_typed_param_value_u.i;
    case DRIVER_PARAM_UINT:
        return x->remote_typed_param_value_u.ui == y->remote_typed_param_value_u.ui;
    case DRIVER_PARAM_LLONG:
        return x->remote_typed_param_value_u.l == y->remote_typed_param_value_u.l;
    case DRIVER_PARAM_ULLONG:
        return x->remote_typed_param_value_u.ul == y->remote_typed_param_value_u.ul;
    case DRIVER_PARAM_DOUBLE: /* bit for bit: NaN stays NaN */
        return memcmp(&x->remote_typed_param_value_u.d, &y->remote_typed_param_value_u.d,
                      sizeof(double)) == 0;
    case DRIVER_PARAM_BOOLEAN:
        return (x->remote_typed_param_value_u.b != 0) == (y->remote_typed_param_value_u.b != 0);
    case DRIVER_PARAM_STRING:
        return strcmp(x->remote_typed_param_value_u.s, y->remote_typed_param_value_u.s) == 0;
    }
    return FALSE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    remote_domain_migrate_prepare3_params_args args;
    if (!decode(data, size, &args))
        return 0;
    g_autoptr(GError) error = NULL;
    GPtrArray *params = remote_params_to_driver(args.params.params_val, args.params.params_len,
                                                &error);
    if (params) {
        run_lookups(params);
        g_autoptr(GPtrArray) copy = driver_params_copy(params);
        g_ptr_array_unref(params);

        /* Back to the wire: the same list, value for value. */
        remote_domain_migrate_prepare3_params_args out = {0};
        remote_params_from_driver(copy, &out.params.params_val, &out.params.params_len);
        g_autofree char *buf = g_malloc(size + 64);
        XDR xdr;
        xdrmem_create(&xdr, buf, (u_int)size + 64, XDR_ENCODE);
        if (!xdr_remote_domain_migrate_prepare3_params_args(&xdr, &out)) {
            fprintf(stderr, "decoded params do not encode again\n");
            abort();
        }
        u_int n = xdr_getpos(&xdr);
        xdr_destroy(&xdr);
        remote_domain_migrate_prepare3_params_args back;
        if (!decode((const uint8_t *)buf, n, &back) ||
            back.params.params_len != args.params.params_len) {
            fprintf(stderr, "re-encoded params do not decode to the same count\n");
            abort();
        }
        for (u_int i = 0; i < back.params.params_len; i++) {
            if (!param_equal(&back.params.params_val[i], &args.params.params_val[i])) {
                fprintf(stderr, "param %u ('%s') changed on the way back\n", i,
                            args.params.params_val[i].field);
                abort();
            }
        }
        xdr_free((xdrproc_t)xdr_remote_domain_migrate_prepare3_params_args, (char *)&back);
        xdr_free((xdrproc_t)xdr_remote_domain_migrate_prepare3_params_args, (char *)&out);
    }
    xdr_free((xdrproc_t)xdr_remote_domain_migrate_prepare3_params_args, (char *)&args);
    return 0;
}
