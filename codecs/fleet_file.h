/*
 * Fleet files: the devices of a fleet, one per line, for fleets too large to list in YAML.
 *
 *   # comment
 *   alarm-agent-1  AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
 *   camera-17      -                       (no key: authenticates by client certificate)
 *   old-sensor-3   ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8= disabled
 *
 * iotgw reads them (fleet.devicesFile), iotgw-devsim reads (--fleet) and writes
 * (--generate) them. Errors name the file and the line, never a key.
 *
 * Threading: reentrant. Errors: IOTGW_ERR_CONFIG (content), IOTGW_ERR_IO (the file),
 * IOTGW_ERR_NOMEM, or the callback's own code, with the message in the diag.
 */
#ifndef IOTGW_CODECS_FLEET_FILE_H
#define IOTGW_CODECS_FLEET_FILE_H

#include <stddef.h>

#include "codecs/error.h"

typedef struct iotgw_fleet_entry {
    const char *id;  /* a valid IoT Hub device id */
    const char *key; /* base64 of 16..64 bytes; NULL for "-" */
    int disabled;
} iotgw_fleet_entry;

/* Called for each device line; the entry lives until the callback returns. A nonzero
 * return stops the reading with that code; a message written to why (at most whylen
 * bytes) is reported with the file and line. */
typedef int (*iotgw_fleet_fn)(const iotgw_fleet_entry *e, void *ctx, char *why, size_t whylen);

int iotgw_fleet_file_read(const char *path, iotgw_fleet_fn fn, void *ctx, iotgw_diag *diag);

/* Write n devices, PREFIX1..PREFIXn (numbers zero-padded to n's width), each with a fresh
 * random 32-byte key, to path, which must not exist yet (a fleet's keys are never
 * overwritten). */
int iotgw_fleet_file_generate(const char *path, const char *prefix, unsigned n, iotgw_diag *diag);

/* 1 when text is the base64 of 16 to 64 bytes: a key as IoT Hub takes it. */
int iotgw_key_is_valid(const char *text);

#endif
