/* What a channel's pumps count for the flight recorder: bytes each way and
 * the time each pump waited, by cause. Updated on the hot path with relaxed
 * atomic adds only (no lock, no allocation); a sampler reads them every
 * 100 ms. Turned off (the recorder's config), the pumps skip the clock reads
 * too. */
#pragma once

#include <glib.h>

typedef struct {
    guint64 bytes_out; /* VMM -> peer */
    guint64 bytes_in;  /* peer -> VMM */
    /* microseconds each pump spent waiting, by what it waited on */
    guint64 wait_vmm_read_us;  /* reading the local VMM (it had nothing to send) */
    guint64 wait_vmm_write_us; /* writing to the local VMM (it did not take the bytes) */
    guint64 wait_net_send_us;  /* sending: connection queue or socket full */
    guint64 wait_net_recv_us;  /* nothing arrived from the peer */
    guint64 wait_credit_us;    /* credit flow control: the peer's window was full */
    guint64 wait_throttle_us;  /* the migration's bandwidth limit */
    /* Of the network and credit waits above, the part the connection's
     * cipher accounts for (TLS, a SASL security layer): while the pump
     * waited, the connection was encrypting (sending) or decrypting
     * (receiving) for this long. Counted here instead of there. */
    guint64 wait_crypto_us;
    guint64 bytes_resent;      /* sent again after the connection was resumed */
} TunnelCounters;

/* Process-wide switch (flight_recorder in the config); on by default. */
extern gboolean tunnel_counters_enabled;

static inline gboolean tunnel_counters_on(void)
{
    return __atomic_load_n(&tunnel_counters_enabled, __ATOMIC_RELAXED);
}

/* A start time for tunnel_counters_wait_end, 0 when counting is off. */
static inline gint64 tunnel_counters_wait_begin(void)
{
    return tunnel_counters_on() ? g_get_monotonic_time() : 0;
}

static inline void tunnel_counters_wait_end(guint64 *counter, gint64 begin_us)
{
    if (begin_us)
        __atomic_fetch_add(counter, (guint64)(g_get_monotonic_time() - begin_us),
                           __ATOMIC_RELAXED);
}

/* Ends a wait of which the cipher may account for a part: what the cipher
 * spent meanwhile (crypto_end - crypto_begin, a transport's
 * rpc_transport_get_crypto_us for the wait's direction before and after; at
 * most the wait) goes to wait_crypto_us, the rest to counter. */
static inline void tunnel_counters_wait_end_split(TunnelCounters *c, guint64 *counter,
                                                  gint64 begin_us, guint64 crypto_begin,
                                                  guint64 crypto_end)
{
    if (!begin_us)
        return;
    guint64 waited = (guint64)MAX(g_get_monotonic_time() - begin_us, 0);
    guint64 crypto = crypto_end > crypto_begin ? MIN(crypto_end - crypto_begin, waited) : 0;
    __atomic_fetch_add(counter, waited - crypto, __ATOMIC_RELAXED);
    if (crypto)
        __atomic_fetch_add(&c->wait_crypto_us, crypto, __ATOMIC_RELAXED);
}

static inline void tunnel_counters_add(guint64 *counter, guint64 n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

/* A consistent-enough copy (each field read atomically). */
void tunnel_counters_read(const TunnelCounters *c, TunnelCounters *out);
