/* Wire <-> driver conversions of domain references. */
#include "remote/remote-convert.h"

#include <string.h>

void remote_domain_to_driver(const remote_nonnull_domain *in, DriverDomain *out)
{
    out->name = g_strdup(in->name);
    memcpy(out->uuid, in->uuid, 16);
    out->id = in->id;
}

void remote_domain_from_driver(const DriverDomain *in, remote_nonnull_domain *out)
{
    /* XDR frees with free(); g_strdup allocates with malloc. */
    out->name = g_strdup(in->name);
    memcpy(out->uuid, in->uuid, 16);
    out->id = in->id;
}

#include "util/error.h"

GPtrArray *remote_params_to_driver(const remote_typed_param *params, u_int n, GError **error)
{
    GPtrArray *out = driver_params_new();
    for (u_int i = 0; i < n; i++) {
        const remote_typed_param *rp = &params[i];
        const remote_typed_param_value *v = &rp->value;
        DriverParam *p = g_new0(DriverParam, 1);
        p->field = g_strdup(rp->field);
        p->type = v->type;
        switch (v->type) {
        case DRIVER_PARAM_INT:
            p->v.i = v->remote_typed_param_value_u.i;
            break;
        case DRIVER_PARAM_UINT:
            p->v.ui = v->remote_typed_param_value_u.ui;
            break;
        case DRIVER_PARAM_LLONG:
            p->v.l = v->remote_typed_param_value_u.l;
            break;
        case DRIVER_PARAM_ULLONG:
            p->v.ul = v->remote_typed_param_value_u.ul;
            break;
        case DRIVER_PARAM_DOUBLE:
            p->v.d = v->remote_typed_param_value_u.d;
            break;
        case DRIVER_PARAM_BOOLEAN:
            p->v.b = v->remote_typed_param_value_u.b != 0;
            break;
        case DRIVER_PARAM_STRING:
            p->s = g_strdup(v->remote_typed_param_value_u.s);
            break;
        default:
            g_free(p->field);
            g_free(p);
            g_ptr_array_unref(out);
            g_set_error(error, FERRY_ERROR, FERRY_ERR_RPC, "parameter '%s' has unknown type %d",
                        rp->field, v->type);
            return NULL;
        }
        g_ptr_array_add(out, p);
    }
    return out;
}

void remote_params_from_driver(GPtrArray *params, remote_typed_param **out, u_int *n)
{
    *n = params ? params->len : 0;
    *out = g_new0(remote_typed_param, MAX(*n, 1));
    for (u_int i = 0; i < *n; i++) {
        const DriverParam *p = params->pdata[i];
        remote_typed_param *rp = &(*out)[i];
        rp->field = g_strdup(p->field);
        rp->value.type = p->type;
        switch (p->type) {
        case DRIVER_PARAM_INT:
            rp->value.remote_typed_param_value_u.i = p->v.i;
            break;
        case DRIVER_PARAM_UINT:
            rp->value.remote_typed_param_value_u.ui = p->v.ui;
            break;
        case DRIVER_PARAM_LLONG:
            rp->value.remote_typed_param_value_u.l = p->v.l;
            break;
        case DRIVER_PARAM_ULLONG:
            rp->value.remote_typed_param_value_u.ul = p->v.ul;
            break;
        case DRIVER_PARAM_DOUBLE:
            rp->value.remote_typed_param_value_u.d = p->v.d;
            break;
        case DRIVER_PARAM_BOOLEAN:
            rp->value.remote_typed_param_value_u.b = p->v.b;
            break;
        case DRIVER_PARAM_STRING:
            rp->value.remote_typed_param_value_u.s = g_strdup(p->s ? p->s : "");
            break;
        }
    }
}

GBytes *remote_cookie_to_bytes(const char *val, u_int len)
{
    return len ? g_bytes_new(val, len) : NULL;
}

void remote_cookie_from_bytes(GBytes *bytes, char **val, u_int *len)
{
    gsize n = 0;
    const void *data = bytes ? g_bytes_get_data(bytes, &n) : NULL;
    *len = (u_int)n;
    *val = n ? g_memdup2(data, n) : NULL;
}
