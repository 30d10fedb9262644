/*
 * One log line per event on stderr: UTC time, level, message. Shared by the gateway and
 * the emulator. Callers never pass secrets (keys, tokens, signatures) here.
 *
 * Threading: lines from several threads do not interleave (stderr is locked per line).
 */
#ifndef IOTGW_TRANSPORT_LOG_H
#define IOTGW_TRANSPORT_LOG_H

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

#endif
