/*
 * Decorrelated-jitter backoff: each wait is drawn uniformly from [base, 3 x the previous
 * wait], capped. Spreads the reconnects of many peers that failed together, and grows
 * about as fast as doubling. The random source is a seed the caller gives, so that
 * tests can replay a sequence.
 *
 * Threading: pure; one state per user. Errors: none.
 */
#ifndef IOTGW_GATEWAY_BACKOFF_H
#define IOTGW_GATEWAY_BACKOFF_H

#include <stdint.h>

typedef struct iotgw_backoff {
    int64_t base_ms, cap_ms;
    int64_t last_ms; /* 0: no wait yet */
    uint64_t rng;
} iotgw_backoff;

void iotgw_backoff_init(iotgw_backoff *b, int64_t base_ms, int64_t cap_ms, uint64_t seed);
/* The next wait in milliseconds. */
int64_t iotgw_backoff_next(iotgw_backoff *b);
/* After a success: the next wait starts from base again. */
void iotgw_backoff_reset(iotgw_backoff *b);
/* A uniform draw in [lo, hi] from the state's generator (jitter for other timers). */
int64_t iotgw_backoff_uniform(iotgw_backoff *b, int64_t lo, int64_t hi);

#endif
