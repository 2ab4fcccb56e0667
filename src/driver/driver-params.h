/* Typed parameters (virTypedParameter) as the driver sees them: migration
 * params in, job statistics out. */
#pragma once

#include <glib.h>

typedef enum {
    DRIVER_PARAM_INT = 1,
    DRIVER_PARAM_UINT = 2,
    DRIVER_PARAM_LLONG = 3,
    DRIVER_PARAM_ULLONG = 4,
    DRIVER_PARAM_DOUBLE = 5,
    DRIVER_PARAM_BOOLEAN = 6,
    DRIVER_PARAM_STRING = 7,
} DriverParamType;

typedef struct {
    char *field;
    DriverParamType type;
    union {
        gint32 i;
        guint32 ui;
        gint64 l;
        guint64 ul;
        double d;
        gboolean b;
    } v;
    char *s;
} DriverParam;

/* A GPtrArray of DriverParam*, owning them. */
GPtrArray *driver_params_new(void);
void driver_params_add_string(GPtrArray *params, const char *field, const char *value);
void driver_params_add_ullong(GPtrArray *params, const char *field, guint64 value);
void driver_params_add_int(GPtrArray *params, const char *field, gint32 value);
void driver_params_add_uint(GPtrArray *params, const char *field, guint32 value);
const DriverParam *driver_params_find(GPtrArray *params, const char *field);
/* The first string param of that name, or NULL; a param of another type is
 * an error naming it. */
gboolean driver_params_get_string(GPtrArray *params, const char *field, const char **value,
                                  GError **error);
gboolean driver_params_get_ullong(GPtrArray *params, const char *field, guint64 *value,
                                  gboolean *present, GError **error);
GPtrArray *driver_params_copy(GPtrArray *params);
