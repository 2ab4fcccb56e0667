/* Converting between the wire's domain references and the driver's. */
#pragma once

#include "driver/driver.h"
#include "remote/remote_protocol.h"

void remote_domain_to_driver(const remote_nonnull_domain *in, DriverDomain *out);
void remote_domain_from_driver(const DriverDomain *in, remote_nonnull_domain *out);

/* remote_typed_param arrays <-> DriverParam lists (GPtrArray of DriverParam*). */
GPtrArray *remote_params_to_driver(const remote_typed_param *params, u_int n, GError **error);
/* Fills *out (malloc'd, for xdr_free) from a DriverParam list. */
void remote_params_from_driver(GPtrArray *params, remote_typed_param **out, u_int *n);

/* Opaque cookies <-> GBytes (NULL or empty = no cookie). */
GBytes *remote_cookie_to_bytes(const char *val, u_int len);
void remote_cookie_from_bytes(GBytes *bytes, char **val, u_int *len);
