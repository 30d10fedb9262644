/*
 * Project-wide error codes and diagnostics.
 *
 * Every function of the project returns 0 (IOTGW_OK) or one of the negative codes
 * below, grouped by area, plus out-parameters. Codes are stable numbers: logs, the
 * downstream protocol documentation and HTTP APIs may quote them.
 *
 * Functions that parse outside input also take an optional `iotgw_diag *` (may be
 * NULL). On failure it receives the code and a one-line, human-readable explanation
 * that names the offending field or byte offset, fit to return to the peer that sent
 * the input. It never contains key material.
 *
 * Threading: all functions here are pure and reentrant.
 */
#ifndef IOTGW_CODECS_ERROR_H
#define IOTGW_CODECS_ERROR_H

#include <stddef.h>

enum iotgw_err {
    IOTGW_OK = 0,

    /* general: -1 .. -99 */
    IOTGW_ERR_NOMEM = -1,
    IOTGW_ERR_INVALID_ARG = -2,
    IOTGW_ERR_AGAIN = -3, /* not an error: more input is needed */
    IOTGW_ERR_BUFFER_TOO_SMALL = -4,
    IOTGW_ERR_INTERNAL = -5,

    /* frame codec: -100 .. -149 */
    IOTGW_ERR_FRAME_BAD_VARINT = -100,       /* length prefix longer than 5 bytes or > 2^32-1 */
    IOTGW_ERR_FRAME_TRUNCATED_VARINT = -101, /* stream ended inside the length prefix */
    IOTGW_ERR_FRAME_TRUNCATED = -102,        /* stream ended inside a frame body */
    IOTGW_ERR_FRAME_TOO_LARGE = -103,
    IOTGW_ERR_FRAME_MALFORMED = -104, /* body is not a valid protobuf message */

    /* text encodings: -150 .. -199 */
    IOTGW_ERR_BASE64 = -150,
    IOTGW_ERR_PERCENT_ENCODING = -151,

    /* SAS tokens: -200 .. -249 */
    IOTGW_ERR_SAS_MALFORMED = -200,
    IOTGW_ERR_SAS_BAD_KEY = -201,
    IOTGW_ERR_SAS_SIGNATURE = -202,
    IOTGW_ERR_SAS_EXPIRED = -203,
    IOTGW_ERR_SAS_RESOURCE = -204, /* token does not cover the identity asked for */

    /* connection strings: -250 .. -299 */
    IOTGW_ERR_CONNSTR_SYNTAX = -250,
    IOTGW_ERR_CONNSTR_UNKNOWN_FIELD = -251,
    IOTGW_ERR_CONNSTR_DUPLICATE_FIELD = -252,
    IOTGW_ERR_CONNSTR_MISSING_FIELD = -253,
    IOTGW_ERR_CONNSTR_BAD_VALUE = -254,
    IOTGW_ERR_CONNSTR_CONFLICT = -255, /* fields that cannot go together */

    /* JSON <-> protobuf: -300 .. -349 */
    IOTGW_ERR_JSON_SYNTAX = -300,
    IOTGW_ERR_JSON_UNKNOWN_FIELD = -301,
    IOTGW_ERR_JSON_TYPE = -302,      /* JSON value of the wrong kind for the field */
    IOTGW_ERR_JSON_RANGE = -303,     /* number out of the field's range */
    IOTGW_ERR_JSON_ENUM = -304,      /* unknown enum name or number */
    IOTGW_ERR_JSON_ONEOF = -305,     /* two members of one oneof */
    IOTGW_ERR_JSON_DEPTH = -306,     /* nesting deeper than IOTGW_JSON_MAX_DEPTH */
    IOTGW_ERR_JSON_UTF8 = -307,      /* protobuf string field holding invalid UTF-8 */
    IOTGW_ERR_JSON_DUPLICATE = -308, /* one field under both its JSON and its proto name */

    /* hub messages: -350 .. -399 */
    IOTGW_ERR_HUBMSG_CONTENT_TYPE = -350, /* content-type we cannot turn into a parcel */
    IOTGW_ERR_HUBMSG_BODY = -351,         /* body section missing or of the wrong kind */
    IOTGW_ERR_HUBMSG_PAYLOAD = -352,      /* parcel content does not parse as its type */
    IOTGW_ERR_HUBMSG_TOO_LARGE = -353,

    /* configuration files */
    IOTGW_ERR_CONFIG = -400, /* syntax or value; the diag names file, line and key */
    IOTGW_ERR_IO = -401,     /* a file could not be read or written */

    /* the gateway's upstream to the hub */
    IOTGW_ERR_UPSTREAM_FULL = -450,       /* the device's queue is full: retry later */
    IOTGW_ERR_UPSTREAM_NOT_ONLINE = -451, /* the device is not online at the hub */
    IOTGW_ERR_STORE_FULL = -460,          /* the durable store is at its maxBytes (onFull: rejectNew) */

    /* MQTT (codecs/mqtt.h, codecs/iothub_mqtt.h) */
    IOTGW_ERR_MQTT_MALFORMED = -500, /* a packet MQTT 3.1.1 does not allow */
    IOTGW_ERR_MQTT_TOO_LARGE = -501, /* a packet over the decoder's maximum */
    IOTGW_ERR_MQTT_TOPIC = -502,     /* a topic or property bag IoT Hub does not serve */
};

/* Symbolic name of a code ("IOTGW_ERR_SAS_EXPIRED"), or "IOTGW_ERR_UNKNOWN". */
const char *iotgw_errname(int code);
/* Short English description of a code. Never NULL. */
const char *iotgw_strerror(int code);

#define IOTGW_DIAG_TEXT_MAX 256

typedef struct iotgw_diag {
    int code;
    char text[IOTGW_DIAG_TEXT_MAX];
} iotgw_diag;

/* Record a failure in d (which may be NULL) and return code, so that callers can write
 * `return iotgw_diag_fail(d, IOTGW_ERR_X, "field %s: ...", name);`. */
int iotgw_diag_fail(iotgw_diag *d, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Clear d (which may be NULL). */
void iotgw_diag_clear(iotgw_diag *d);

#endif
