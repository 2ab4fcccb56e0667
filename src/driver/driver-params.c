/* Typed parameter lists. */
#include "driver/driver-params.h"

#include "util/error.h"

static void param_free(gpointer data)
{
    DriverParam *p = data;
    g_free(p->field);
    g_free(p->s);
    g_free(p);
}

GPtrArray *driver_params_new(void)
{
    return g_ptr_array_new_with_free_func(param_free);
}

static DriverParam *add(GPtrArray *params, const char *field, DriverParamType type)
{
    DriverParam *p = g_new0(DriverParam, 1);
    p->field = g_strdup(field);
    p->type = type;
    g_ptr_array_add(params, p);
    return p;
}

void driver_params_add_string(GPtrArray *params, const char *field, const char *value)
{
    add(params, field, DRIVER_PARAM_STRING)->s = g_strdup(value);
}

void driver_params_add_ullong(GPtrArray *params, const char *field, guint64 value)
{
    add(params, field, DRIVER_PARAM_ULLONG)->v.ul = value;
}

void driver_params_add_int(GPtrArray *params, const char *field, gint32 value)
{
    add(params, field, DRIVER_PARAM_INT)->v.i = value;
}

void driver_params_add_uint(GPtrArray *params, const char *field, guint32 value)
{
    add(params, field, DRIVER_PARAM_UINT)->v.ui = value;
}

const DriverParam *driver_params_find(GPtrArray *params, const char *field)
{
    for (guint i = 0; params && i < params->len; i++) {
        const DriverParam *p = params->pdata[i];
        if (g_strcmp0(p->field, field) == 0)
            return p;
    }
    return NULL;
}

gboolean driver_params_get_string(GPtrArray *params, const char *field, const char **value,
                                  GError **error)
{
    const DriverParam *p = driver_params_find(params, field);
    *value = NULL;
    if (!p)
        return TRUE;
    if (p->type != DRIVER_PARAM_STRING) {
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "parameter '%s' must be a string (type %d given)", field, p->type);
        return FALSE;
    }
    *value = p->s;
    return TRUE;
}

gboolean driver_params_get_ullong(GPtrArray *params, const char *field, guint64 *value,
                                  gboolean *present, GError **error)
{
    const DriverParam *p = driver_params_find(params, field);
    if (present)
        *present = p != NULL;
    if (!p)
        return TRUE;
    switch (p->type) {
    case DRIVER_PARAM_ULLONG:
        *value = p->v.ul;
        return TRUE;
    case DRIVER_PARAM_UINT:
        *value = p->v.ui;
        return TRUE;
    default:
        g_set_error(error, FERRY_ERROR, FERRY_ERR_INVALID_ARG,
                    "parameter '%s' must be an unsigned long long (type %d given)", field,
                    p->type);
        return FALSE;
    }
}

GPtrArray *driver_params_copy(GPtrArray *params)
{
    GPtrArray *copy = driver_params_new();
    for (guint i = 0; params && i < params->len; i++) {
        const DriverParam *p = params->pdata[i];
        DriverParam *c = add(copy, p->field, p->type);
        c->v = p->v;
        c->s = g_strdup(p->s);
    }
    return copy;
}
