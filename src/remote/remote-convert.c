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
