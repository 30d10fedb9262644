#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#include "emulator/hub.h"

/* One line per event on stderr: UTC time, level, message. Secrets are never passed here. */
void emu_log(const char *level, const char *fmt, ...)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr);
    fprintf(stderr, "%s.%03dZ %-5s ", when, (int)(tv.tv_usec / 1000), level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
}
