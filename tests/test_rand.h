/* tests/test_rand.h — a small seeded generator for test data. Header-only. */
#ifndef WEFT_TESTS_TEST_RAND_H
#define WEFT_TESTS_TEST_RAND_H

#include <stdint.h>
#include <stdlib.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1). */
static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (2.0 / 16777216.0) - 1.0);
}

/* n values uniform in [-scale, scale); malloc'd. */
static float *rand_vec(int64_t n, float scale)
{
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}

#endif
