/* The flight recorder's counters switch and their reader. */
#include "tunnel/tunnel-counters.h"

gboolean tunnel_counters_enabled = TRUE;

void tunnel_counters_read(const TunnelCounters *c, TunnelCounters *out)
{
#define R(f) out->f = __atomic_load_n(&c->f, __ATOMIC_RELAXED)
    R(bytes_out);
    R(bytes_in);
    R(wait_vmm_read_us);
    R(wait_vmm_write_us);
    R(wait_net_send_us);
    R(wait_net_recv_us);
    R(wait_credit_us);
    R(wait_throttle_us);
    R(wait_crypto_us);
    R(bytes_resent);
#undef R
}
