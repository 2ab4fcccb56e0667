/* The pre-copy model of probe-model.h. */
#include "tools/probe-model.h"

#include <math.h>
#include <string.h>

void probe_model_predict(double memory, double dirty_rate, double throughput,
                         double downtime_limit_s, ProbeModelResult *out)
{
    memset(out, 0, sizeof(*out));
    if (throughput <= 0 || memory <= 0)
        return;
    double pending = memory;
    for (out->rounds = 1;; out->rounds++) {
        double t = pending / throughput;
        out->bytes += pending;
        out->seconds += t;
        /* What the guest dirtied while this round was on the wire. */
        double dirtied = dirty_rate > 0 ? memory * (1.0 - exp(-dirty_rate * t / memory)) : 0;
        if (dirtied / throughput <= downtime_limit_s) {
            /* Small enough: the VMM stops the guest and sends the rest. */
            out->converges = TRUE;
            out->rounds++;
            out->downtime_s = dirtied / throughput;
            out->bytes += dirtied;
            out->seconds += out->downtime_s;
            return;
        }
        if (out->rounds + 1 >= PROBE_MODEL_MAX_ROUNDS || dirtied >= pending) {
            /* Not shrinking (or out of rounds): stop-and-copy of what is
             * left, with the guest paused for all of it. */
            out->converges = FALSE;
            out->rounds++;
            out->downtime_s = dirtied / throughput;
            out->bytes += dirtied;
            out->seconds += out->downtime_s;
            return;
        }
        pending = dirtied;
    }
}
