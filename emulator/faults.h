/*
 * Fault injection: what the emulated hub does wrong on purpose (iothub-emulator --admin,
 * set through /admin in admin_rest.c; docs/emulator.md), and the two rate limits it
 * enforces: device-to-cloud messages per second, which starts as --d2c-limit and which
 * the admin throttle changes (and a reset clears), and service REST requests per second,
 * set by the admin throttle only. Each limit is a token bucket of one second's worth
 * (codecs/token_bucket.h). The setters log what they set, at WARN.
 *
 * The hub asks the checks below where the fault applies: at accept (refuse
 * connections), at put-token (reject an identity's tokens), on telemetry and on REST
 * requests (the limits), on a device's method answer (fail or delay it). Times are
 * wall-clock milliseconds since the epoch, passed in by the caller.
 *
 * Ownership: the hub creates and frees its emu_faults (emu_hub_faults); the strings
 * given to it are copied. Threading: event-loop thread only. Errors: 0 or
 * IOTGW_ERR_NOMEM.
 */
#ifndef IOTGW_EMULATOR_FAULTS_H
#define IOTGW_EMULATOR_FAULTS_H

#include <stdint.h>

#include "codecs/error.h"

typedef struct emu_faults emu_faults;

/* No fault set; device-to-cloud limited to d2c_per_second (0: no limit). */
int emu_faults_new(int d2c_per_second, int64_t now_ms, emu_faults **out);
void emu_faults_free(emu_faults *f);

/* ------------------------------------------------------------------ setting */

/* Connections accepted in the next `seconds` are closed at once (0: none are). */
void emu_faults_refuse_connections(emu_faults *f, int seconds, int64_t now_ms);
/* The identity's put-tokens are answered 401 until emu_faults_accept_tokens. */
int emu_faults_reject_tokens(emu_faults *f, const char *identity);
void emu_faults_accept_tokens(emu_faults *f, const char *identity);
/* Both limits, per second (0: none); each bucket starts full. */
void emu_faults_throttle(emu_faults *f, int d2c_per_second, int rest_per_second, int64_t now_ms);
/* Devices' method answers reach callers delay_ms later, or fail with HTTP fail_status
 * (0: they do not). */
void emu_faults_set_methods(emu_faults *f, int delay_ms, int fail_status);
/* Clear every fault, the device-to-cloud limit included. */
void emu_faults_reset(emu_faults *f);

/* ------------------------------------------------------------------ query */

typedef struct emu_faults_state {
    int64_t refuse_for_ms;       /* how much longer new connections are refused; 0: not */
    const char *const *rejected; /* identities whose put-tokens are refused; the faults' own,
                                    valid until the next setter */
    int nrejected;
    int d2c_per_second, rest_per_second; /* 0: no limit */
    int method_delay_ms, method_fail_status;
} emu_faults_state;

void emu_faults_query(const emu_faults *f, int64_t now_ms, emu_faults_state *out);

/* ------------------------------------------------------------------ checks */

int emu_faults_refusing_connections(const emu_faults *f, int64_t now_ms);
int emu_faults_rejects_tokens(const emu_faults *f, const char *identity);
/* Over the limit: 1, and nothing is counted; else the messages (a batch counts each of
 * its messages) or the request are taken from the bucket and 0. */
int emu_faults_d2c_over_limit(emu_faults *f, int messages, int64_t now_ms);
int emu_faults_rest_over_limit(emu_faults *f, int64_t now_ms);
/* The HTTP status a method call is to fail with instead of the device's answer; 0: none. */
int emu_faults_method_fail_status(const emu_faults *f);
/* How long a device's method answer is held back; 0: not. */
int emu_faults_method_delay_ms(const emu_faults *f);

#endif
