#include "transport/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static iotgw_log_level max_level = IOTGW_LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void iotgw_log_set_level(iotgw_log_level level)
{
    max_level = level;
}

int iotgw_log_enabled(iotgw_log_level level)
{
    return level <= max_level;
}

void iotgw_log(iotgw_log_level level, const char *fmt, ...)
{
    if (level > max_level)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr);
    fprintf(stderr, "%s.%03dZ %-5s ", when, (int)(tv.tv_usec / 1000), level_names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 1234567 as "1,234,567". */
static void with_commas(uint64_t n, char *out, size_t size)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < size; i++) {
        if (i && (len - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

static unsigned burst(void)
{
    static unsigned lines;
    if (!lines) {
        const char *env = getenv("IOTGW_LOG_BURST");
        long n = env ? strtol(env, NULL, 10) : 0;
        lines = n > 0 && n < 1000000 ? (unsigned)n : IOTGW_LOG_LIMIT_BURST;
    }
    return lines;
}

void iotgw_log_limited(iotgw_log_limit *lim, iotgw_log_level level, const char *fmt, ...)
{
    if (level > max_level)
        return;
    int64_t now = monotonic_ms();
    if (!lim->window_start_ms || now - lim->window_start_ms >= IOTGW_LOG_LIMIT_WINDOW_MS) {
        lim->window_start_ms = now;
        lim->used = 0;
    }
    if (lim->used >= burst()) {
        lim->suppressed++;
        return;
    }
    lim->used++;
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (lim->suppressed) {
        char n[40];
        with_commas(lim->suppressed, n, sizeof n);
        lim->suppressed = 0;
        iotgw_log(level, "%s (%s more like this not logged)", text, n);
    } else {
        iotgw_log(level, "%s", text);
    }
}

void iotgw_log_limit_flush(iotgw_log_limit *lim, iotgw_log_level level, const char *who)
{
    if (!lim->suppressed)
        return;
    char n[40];
    with_commas(lim->suppressed, n, sizeof n);
    lim->suppressed = 0;
    iotgw_log(level, "%s: %s more lines like the last one not logged", who, n);
}
