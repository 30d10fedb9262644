/*
 * One log line per event on stderr: UTC time, level, message. Shared by the gateway and
 * the emulator. Callers never pass secrets (keys, tokens, signatures) here.
 *
 * Threading: lines from several threads do not interleave (stderr is locked per line).
 */
#ifndef IOTGW_TRANSPORT_LOG_H
#define IOTGW_TRANSPORT_LOG_H

#include <stdint.h>

typedef enum iotgw_log_level {
    IOTGW_LOG_ERROR = 0,
    IOTGW_LOG_WARN = 1,
    IOTGW_LOG_INFO = 2,
    IOTGW_LOG_DEBUG = 3,
} iotgw_log_level;

/* Lines above this level are dropped; default IOTGW_LOG_INFO. */
void iotgw_log_set_level(iotgw_log_level level);
int iotgw_log_enabled(iotgw_log_level level);
void iotgw_log(iotgw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A budget of lines for one source of events (a peer, a device, a listener), embedded
 * by its owner and zero-initialised: at most IOTGW_LOG_LIMIT_BURST lines each
 * IOTGW_LOG_LIMIT_WINDOW_MS (the environment variable IOTGW_LOG_BURST, read once, sets
 * another number of lines: for a test that must see every line); the lines over it are
 * counted, and the first line logged after them says how many were left out
 * ("... (1,234 more like this not logged)"). */
#define IOTGW_LOG_LIMIT_BURST     5
#define IOTGW_LOG_LIMIT_WINDOW_MS 10000
typedef struct iotgw_log_limit {
    int64_t window_start_ms; /* monotonic; 0: no line yet */
    unsigned used;           /* lines logged in this window */
    uint64_t suppressed;     /* lines left out since the last one logged */
} iotgw_log_limit;

void iotgw_log_limited(iotgw_log_limit *lim, iotgw_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Say what lim left out, if anything, as one line naming who ("device d1"); for an
 * owner that goes away. */
void iotgw_log_limit_flush(iotgw_log_limit *lim, iotgw_log_level level, const char *who);

#endif
