/* Converting between the wire's domain references and the driver's. */
#pragma once

#include "driver/driver.h"
#include "remote/remote_protocol.h"

void remote_domain_to_driver(const remote_nonnull_domain *in, DriverDomain *out);
void remote_domain_from_driver(const DriverDomain *in, remote_nonnull_domain *out);
