/* The fast pseudo-random generator behind guest RAM contents and the workload:
 * one 64-bit add and one 64x64->128 multiply per 8 bytes, output incompressible. */
#pragma once

#include <glib.h>

/* Spreads a seed so that neighbouring seeds (block 0, 1, 2...) give unrelated streams. */
static inline __attribute__((always_inline)) guint64 vmm_prng_mix(guint64 x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline __attribute__((always_inline)) guint64 vmm_prng_next(guint64 *state)
{
    *state += 0xa0761d6478bd642fULL;
    __uint128_t t = (__uint128_t)*state * (*state ^ 0xe7037ed1a0b428dbULL);
    return (guint64)(t >> 64) ^ (guint64)t;
}
