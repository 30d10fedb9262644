/* Small helpers shared by the benchmarks and test drivers: a monotonic clock in seconds
 * and integer settings from the environment. */
#ifndef IOTGW_TESTS_CLOCK_ENV_H
#define IOTGW_TESTS_CLOCK_ENV_H

#include <stdlib.h>
#include <time.h>

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The positive integer in environment variable name, else def. */
static inline int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : def;
}

#endif
