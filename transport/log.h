/*
 * One log line per event on stderr, shared by the gateway and the emulator. Two formats:
 *
 *   text (the default): "2026-11-22T19:02:18.123Z info  device d1 connected from ..."
 *   JSON lines:         {"time":"2026-11-22T19:02:18.123Z","level":"info","event":"device_connected",
 *                        "device":"d1","message":"device d1 connected from ...",
 *                        "fields":{"peer":"127.0.0.1:50312","client":"firmware 1.2"}}
 *
 * In JSON every line is one object: time (RFC 3339, UTC, milliseconds), level (error, warn,
 * info, debug), event (a snake_case name; "log" for lines logged with iotgw_log()), device
 * (only when the line is about one device), message (the text line's message, the same
 * words), and fields (only when the call site gave some). Strings are escaped for any
 * bytes: quote and backslash, control characters and DEL as \u00XX, U+2028/U+2029 as
 * \u2028/\u2029, and each byte that is not part of valid UTF-8 as \ufffd; messages may
 * carry peer text (a hub's descriptions, TLS reasons, a device's client name).
 *
 * Callers never pass secrets (keys, tokens, signatures) here, in messages or in fields.
 *
 * Ownership: nothing is kept; the strings given are read during the call only.
 *
 * Threading: lines from several threads do not interleave (the stream is locked per
 * line). The level, the format and the stream are set at start, before other threads log.
 *
 * Errors: none reported; a line that cannot be written is lost.
 */
#ifndef IOTGW_TRANSPORT_LOG_H
#define IOTGW_TRANSPORT_LOG_H

#include <stdint.h>
#include <stdio.h>

typedef enum iotgw_log_level {
    IOTGW_LOG_ERROR = 0,
    IOTGW_LOG_WARN = 1,
    IOTGW_LOG_INFO = 2,
    IOTGW_LOG_DEBUG = 3,
} iotgw_log_level;

typedef enum iotgw_log_format {
    IOTGW_LOG_FORMAT_TEXT = 0, /* the default */
    IOTGW_LOG_FORMAT_JSON = 1,
} iotgw_log_format;

/* Lines above this level are dropped; default IOTGW_LOG_INFO. */
void iotgw_log_set_level(iotgw_log_level level);
int iotgw_log_enabled(iotgw_log_level level);
void iotgw_log_set_format(iotgw_log_format format);
iotgw_log_format iotgw_log_get_format(void);
/* "text" or "json" into *out: 0, or -1 (and *out untouched) for anything else. */
int iotgw_log_format_parse(const char *name, iotgw_log_format *out);
/* Where lines go; NULL: stderr (the default). For tests. */
void iotgw_log_set_stream(FILE *f);

/* A line with event "log" and no device. */
void iotgw_log(iotgw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Control characters a peer put in a string (a topic, an address) become '?', in place: a
 * line of the text log stays one line (the JSON log escapes them itself). */
void iotgw_log_printable(char *text);

/* A named value of a JSON line's "fields" (not shown in the text format: the message says
 * it there). A list of them ends with a field whose key is NULL; IOTGW_LOG_FIELDS() makes
 * one in place:
 *
 *   iotgw_log_evf(IOTGW_LOG_INFO, "device_connected", id,
 *                 IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", peer), IOTGW_FIELD_INT("n", n)), ...);
 *
 * A text field that is NULL is JSON null. */
typedef enum iotgw_log_field_type {
    IOTGW_FIELD_TEXT = 0,
    IOTGW_FIELD_NUMBER = 1,
    IOTGW_FIELD_BOOLEAN = 2,
    IOTGW_FIELD_UNSIGNED = 3,
} iotgw_log_field_type;
typedef struct iotgw_log_field {
    const char *key;
    iotgw_log_field_type type;
    const char *text;
    int64_t number; /* NUMBER; UNSIGNED: a uint64_t's bits; BOOLEAN: 0 false, else true */
} iotgw_log_field;
#define IOTGW_FIELD_STR(k, v) ((iotgw_log_field){.key = (k), .type = IOTGW_FIELD_TEXT, .text = (v)})
#define IOTGW_FIELD_INT(k, v)                                                                                \
    ((iotgw_log_field){.key = (k), .type = IOTGW_FIELD_NUMBER, .number = (int64_t)(v)})
#define IOTGW_FIELD_BOOL(k, v) ((iotgw_log_field){.key = (k), .type = IOTGW_FIELD_BOOLEAN, .number = !!(v)})
#define IOTGW_FIELD_UINT(k, v)                                                                               \
    ((iotgw_log_field){.key = (k), .type = IOTGW_FIELD_UNSIGNED, .number = (int64_t)(uint64_t)(v)})
#define IOTGW_LOG_FIELDS(...) ((const iotgw_log_field[]){__VA_ARGS__, {0}})

/* A line about event (snake_case, listed in docs/configuration.md; NULL: "log") and, when
 * device is not NULL, that device. The text format shows the message only, as iotgw_log()
 * does. */
void iotgw_log_ev(iotgw_log_level level, const char *event, const char *device, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same with fields (NULL: none). */
void iotgw_log_evf(iotgw_log_level level, const char *event, const char *device,
                   const iotgw_log_field *fields, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A line a library wrote through its own log callback (libwebsockets: "lws"), trailing
 * newline optional. Text: "lws: LINE" as the library wrote it (no time, no level); JSON:
 * event "library_log" with field "library". */
void iotgw_log_library(iotgw_log_level level, const char *library, const char *line);

/* A budget of lines for one source of events (a peer, a device, a listener), embedded
 * by its owner and zero-initialised: at most IOTGW_LOG_LIMIT_BURST lines each
 * IOTGW_LOG_LIMIT_WINDOW_MS (the environment variable IOTGW_LOG_BURST, read once, sets
 * another number of lines: for a test that must see every line); the lines over it are
 * counted, and the first line logged after them says how many were left out
 * ("... (1,234 more like this not logged)"; in JSON also the field "suppressed"). */
#define IOTGW_LOG_LIMIT_BURST     5
#define IOTGW_LOG_LIMIT_WINDOW_MS 10000
typedef struct iotgw_log_limit {
    int64_t window_start_ms; /* monotonic; 0: no line yet */
    unsigned used;           /* lines logged in this window */
    uint64_t suppressed;     /* lines left out since the last one logged */
} iotgw_log_limit;

/* iotgw_log() within lim's budget. */
void iotgw_log_limited(iotgw_log_limit *lim, iotgw_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* iotgw_log_evf() within lim's budget (fields may be NULL). */
void iotgw_log_ev_limited(iotgw_log_limit *lim, iotgw_log_level level, const char *event, const char *device,
                          const iotgw_log_field *fields, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Say what lim left out, if anything, as one line naming who ("listener 0.0.0.0:7000");
 * for an owner that goes away. Event "log_suppressed", field "suppressed". */
void iotgw_log_limit_flush(iotgw_log_limit *lim, iotgw_log_level level, const char *who);
/* The same for a budget of one device's lines: the line names the device ("d1: 12 more
 * lines like the last one not logged") and carries it as "device" in JSON. */
void iotgw_log_limit_flush_device(iotgw_log_limit *lim, iotgw_log_level level, const char *device);

#endif
