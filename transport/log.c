#include "transport/log.h"

#include <stdarg.h>
#include <stdio.h>
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
