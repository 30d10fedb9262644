/*
 * token_bucket: a rate with a burst, for pacing and quotas. The caller passes the time
 * (any millisecond clock that does not go back), so the bucket is pure data.
 *
 * Ownership: plain struct, embedded by its owner. Threading: none. Errors: none.
 */
#ifndef IOTGW_CODECS_TOKEN_BUCKET_H
#define IOTGW_CODECS_TOKEN_BUCKET_H

#include <stdint.h>

typedef struct iotgw_token_bucket {
    double rate;  /* tokens per second; <= 0: unlimited */
    double burst; /* most tokens held */
    double tokens;
    int64_t refilled_ms;
} iotgw_token_bucket;

/* Starts with `initial` tokens (at most burst). */
static inline void iotgw_token_bucket_init(iotgw_token_bucket *b, double rate, double burst, double initial,
                                           int64_t now_ms)
{
    b->rate = rate;
    b->burst = burst;
    b->tokens = initial < burst ? initial : burst;
    b->refilled_ms = now_ms;
}

static inline void iotgw_token_bucket_refill(iotgw_token_bucket *b, int64_t now_ms)
{
    if (b->rate > 0 && now_ms > b->refilled_ms) {
        b->tokens += (double)(now_ms - b->refilled_ms) * b->rate / 1000.0;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
    b->refilled_ms = now_ms;
}

/* Take n tokens if the bucket holds them: 1, else 0 (and nothing taken). */
static inline int iotgw_token_bucket_take(iotgw_token_bucket *b, double n, int64_t now_ms)
{
    if (b->rate <= 0)
        return 1;
    iotgw_token_bucket_refill(b, now_ms);
    if (b->tokens < n)
        return 0;
    b->tokens -= n;
    return 1;
}

/* Milliseconds until n tokens will be there (0: now). */
static inline int64_t iotgw_token_bucket_wait_ms(const iotgw_token_bucket *b, double n)
{
    if (b->rate <= 0 || b->tokens >= n)
        return 0;
    return (int64_t)((n - b->tokens) * 1000.0 / b->rate) + 1;
}

#endif
