/*
 * What the example devices share: their command line (where the gateway is, who the
 * device is) and a reconnect loop with backoff done by the caller, as libiotgw-device
 * never reconnects by itself.
 */
#ifndef IOTGW_EXAMPLE_COMMON_H
#define IOTGW_EXAMPLE_COMMON_H

#include "devices/iotgw_device.h"

typedef struct example_args {
    iotgw_device_options opt;
    int count;        /* --count: how many things to do before exiting (0: for ever) */
    int interval_ms;  /* --interval-ms */
    int delay_ms;     /* --delay-ms */
    const char *peer; /* --peer: another device's id */
} example_args;

/* Parse --gateway HOST:PORT --device ID --key KEY --hub HOST [--count N] [--interval-ms N]
 * [--delay-ms N] [--peer ID]; the key may also come from IOTGW_DEVICE_KEY. Prints usage
 * and exits 2 on a mistake. */
void example_parse(int argc, char **argv, const char *what, example_args *a);

/* Open a session, retrying with exponential backoff (0.5 s doubling up to 30 s, with
 * jitter) for up to give_up_ms; NULL when it never worked. Refusals are printed. */
iotgw_device *example_connect(const example_args *a, int give_up_ms);

/* "2026-11-22T10:00:00Z" and "10:00:00" / "2026-11-22" for now, UTC. */
void example_utc(char *iso, size_t n, char *time_hms, char *date_ymd);

#endif
