/* ferry-probe's prediction of a pre-copy migration from four numbers: the
 * guest's memory, its dirty rate, the path's throughput and the VMM's
 * downtime limit. The model is the one both VMMs follow: round 1 sends all
 * memory, each next round what was dirtied during the previous one, until
 * what is left fits the downtime limit (then stop-and-copy), at most
 * PROBE_MODEL_MAX_ROUNDS rounds (ferry-vmm's bound). */
#pragma once

#include <glib.h>

#define PROBE_MODEL_MAX_ROUNDS 30

typedef struct {
    gboolean converges;  /* the rounds shrink to the downtime limit */
    guint rounds;        /* including stop-and-copy */
    double seconds;      /* all rounds, stop-and-copy included */
    double downtime_s;   /* the stop-and-copy round */
    double bytes;        /* sent in all */
} ProbeModelResult;

/* throughput and dirty_rate in bytes per second. Dirtied bytes over t
 * seconds are the distinct pages a random writer touches:
 * memory * (1 - exp(-dirty_rate * t / memory)), never more than memory. */
void probe_model_predict(double memory, double dirty_rate, double throughput,
                         double downtime_limit_s, ProbeModelResult *out);
