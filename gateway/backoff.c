#include "gateway/backoff.h"

void iotgw_backoff_init(iotgw_backoff *b, int64_t base_ms, int64_t cap_ms, uint64_t seed)
{
    b->base_ms = base_ms > 0 ? base_ms : 1;
    b->cap_ms = cap_ms >= b->base_ms ? cap_ms : b->base_ms;
    b->last_ms = 0;
    b->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

/* splitmix64: small, fast, and good enough for spreading timers. */
static uint64_t next_random(iotgw_backoff *b)
{
    uint64_t z = (b->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int64_t iotgw_backoff_uniform(iotgw_backoff *b, int64_t lo, int64_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + (int64_t)(next_random(b) % (uint64_t)(hi - lo + 1));
}

int64_t iotgw_backoff_next(iotgw_backoff *b)
{
    int64_t prev = b->last_ms ? b->last_ms : b->base_ms;
    int64_t hi = prev > b->cap_ms / 3 ? b->cap_ms : prev * 3;
    int64_t wait = iotgw_backoff_uniform(b, b->base_ms, hi);
    b->last_ms = wait < b->cap_ms ? wait : b->cap_ms;
    return b->last_ms;
}

void iotgw_backoff_reset(iotgw_backoff *b)
{
    b->last_ms = 0;
}
