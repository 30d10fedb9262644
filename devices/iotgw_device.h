/*
 * libiotgw-device: the device side of iotgw's downstream protocol
 * (docs/downstream-protocol.md), for device firmware in C.
 *
 * A session is one authenticated connection to the gateway:
 *
 *     iotgw_device *d;
 *     iotgw_device_error err;
 *     if (iotgw_device_open(&opt, &d, &err) != IOTGW_DEVICE_OK) { log err.message; back off; retry; }
 *     iotgw_device_send_parcel(d, &parcel, &seq);          // outcome comes as an event
 *     iotgw_device_event ev;
 *     while (iotgw_device_next_event(d, &ev, 1000) != IOTGW_DEVICE_ERR_CLOSED) {
 *         switch (ev.kind) { case IOTGW_DEVICE_EVENT_ACK: ...; case IOTGW_DEVICE_EVENT_METHOD: ... }
 *     }
 *     iotgw_device_close(d);
 *
 * Nothing happens behind the caller's back: the library never reconnects and never
 * resends; a lost connection makes every call return IOTGW_DEVICE_ERR_CLOSED (and one
 * CLOSED event says why), and the caller decides what to do (examples/reconnect shows
 * a loop with backoff). Pings from the gateway are answered inside the library.
 *
 * Over TLS (opt.tls) the gateway's certificate is checked against opt.ca_file (or the
 * system's CAs) and its name; a client certificate (opt.cert_file) whose common name is
 * the device id authenticates the device without a key or token.
 *
 * Two ways to drive it: blocking, with iotgw_device_next_event() waiting up to a
 * timeout; or from the caller's own poll loop: poll iotgw_device_fd() for reading (and
 * for writing while iotgw_device_wants_write()), call iotgw_device_process() when it is
 * ready, then take events with iotgw_device_next_event(d, &ev, 0).
 *
 * Ownership: the session owns everything it hands out. An event's pointers stay valid
 * until the next call to iotgw_device_next_event() or iotgw_device_close().
 * Threading: one session belongs to one thread at a time; sessions are independent.
 * Errors: every call returns IOTGW_DEVICE_OK or a negative IOTGW_DEVICE_ERR_*;
 * iotgw_device_strerror() names it.
 */
#ifndef IOTGW_DEVICE_H
#define IOTGW_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "schemas/gateway.pb-c.h"
#include "schemas/parcel.pb-c.h"

typedef struct iotgw_device iotgw_device;

enum {
    IOTGW_DEVICE_OK = 0,
    IOTGW_DEVICE_ERR_TIMEOUT = -1,  /* nothing arrived in time (not fatal) */
    IOTGW_DEVICE_ERR_CONNECT = -2,  /* no TCP connection to the gateway */
    IOTGW_DEVICE_ERR_REFUSED = -3,  /* the gateway refused the Hello: see the error's code */
    IOTGW_DEVICE_ERR_CLOSED = -4,   /* the connection is gone; close the session */
    IOTGW_DEVICE_ERR_PROTOCOL = -5, /* the gateway sent something this library cannot read */
    IOTGW_DEVICE_ERR_WINDOW = -6,   /* max_in_flight telemetry unacknowledged: wait for acks */
    IOTGW_DEVICE_ERR_INVALID = -7,  /* a bad argument */
    IOTGW_DEVICE_ERR_NOMEM = -8,
    IOTGW_DEVICE_ERR_TOKEN = -9, /* the key is not base64, or no token could be made */
    IOTGW_DEVICE_ERR_TLS = -10,  /* the TLS handshake failed (certificate, name, version) */
};

typedef struct iotgw_device_options {
    const char *host; /* the gateway: name or address */
    int port;
    const char *device_id;
    const char *hub_host;   /* the IoT Hub's host name, named in the token (the gateway's name also works) */
    const char *key;        /* the device's base64 key: the library makes the token */
    const char *token;      /* or a ready-made SAS token */
    unsigned token_ttl_s;   /* 0: 3600 */
    int methods, twin, c2d; /* capabilities: which cloud features the device handles */
    const char *client;     /* software name and version, for the gateway's logs */
    int timeout_ms;         /* for connecting and the handshake; 0: 10000 */
    int tls;                /* TLS to the gateway (devices.tls in its configuration) */
    const char *ca_file;    /* TLS: CAs to trust for the gateway's certificate; NULL: the system's */
    const char *cert_file;  /* TLS: the device's certificate (its CN its id: then no key or token needed) */
    const char *key_file;
} iotgw_device_options;

typedef struct iotgw_device_error {
    int gateway_code; /* REFUSED and CLOSED: the gateway's Iotgw__ErrorCode, else 0 */
    char message[256];
} iotgw_device_error;

typedef enum iotgw_device_event_kind {
    IOTGW_DEVICE_EVENT_ACK = 1,     /* id: the telemetry seq the hub has */
    IOTGW_DEVICE_EVENT_NACK,        /* id: seq; status: Iotgw__NackReason; text; retry_after_ms */
    IOTGW_DEVICE_EVENT_METHOD,      /* id: request id; name; data/len: payload (JSON, or protobuf of type) */
    IOTGW_DEVICE_EVENT_TWIN_RESULT, /* id: request id; status; data/len: twin JSON (get); version; text */
    IOTGW_DEVICE_EVENT_DESIRED,     /* data/len: the desired patch JSON; version */
    IOTGW_DEVICE_EVENT_C2D,         /* id: delivery id; data/len: body; c2d: the whole message */
    IOTGW_DEVICE_EVENT_CLOSED,      /* status: the gateway's error code or 0; text: why */
} iotgw_device_event_kind;

typedef struct iotgw_device_event {
    iotgw_device_event_kind kind;
    uint64_t id;
    int status;
    const char *name;
    const char *text;
    const uint8_t *data;
    size_t len;
    const char *type; /* METHOD: protobuf type of data, or NULL for JSON */
    int64_t version;
    uint32_t retry_after_ms;
    const Iotgw__C2dMessage *c2d;
} iotgw_device_event;

/* Connect, send Hello and wait for Welcome (up to timeout_ms). */
int iotgw_device_open(const iotgw_device_options *opt, iotgw_device **out, iotgw_device_error *err);
void iotgw_device_close(iotgw_device *d);

/* Send telemetry; *seq (may be NULL) is what its ACK or NACK will carry. */
int iotgw_device_send_parcel(iotgw_device *d, const Iotgw__Parcel *parcel, uint64_t *seq);
int iotgw_device_send_raw(iotgw_device *d, const void *data, size_t len, const char *content_type,
                          uint64_t *seq);
/* A burst in one write: between these two calls every send only queues its frame, and
 * batch_end writes them all at once (a device sending several messages together spares
 * itself and the gateway a system call per message). */
int iotgw_device_batch_begin(iotgw_device *d);
int iotgw_device_batch_end(iotgw_device *d);
/* Telemetry sent and not yet acknowledged. */
unsigned iotgw_device_in_flight(const iotgw_device *d);

/* Answer a METHOD event with a status and a JSON payload (json may be NULL), or with a
 * protobuf payload for methods the gateway transcodes. */
int iotgw_device_method_respond(iotgw_device *d, uint64_t request_id, int status, const char *json);
int iotgw_device_method_respond_protobuf(iotgw_device *d, uint64_t request_id, int status,
                                         const ProtobufCMessage *msg);

int iotgw_device_twin_get(iotgw_device *d, uint64_t *request_id);
int iotgw_device_report(iotgw_device *d, const char *patch_json, uint64_t *request_id);
/* Settle a C2D event: Iotgw__C2dOutcome (COMPLETE, REJECT, ABANDON). */
int iotgw_device_c2d_settle(iotgw_device *d, uint64_t delivery_id, Iotgw__C2dOutcome outcome);

/* The next event, waiting up to timeout_ms (0: only what is already here, -1: for ever).
 * IOTGW_DEVICE_ERR_TIMEOUT when none; after the CLOSED event, IOTGW_DEVICE_ERR_CLOSED. */
int iotgw_device_next_event(iotgw_device *d, iotgw_device_event *ev, int timeout_ms);

/* For the caller's own poll loop. */
int iotgw_device_fd(const iotgw_device *d);
int iotgw_device_wants_write(const iotgw_device *d);
/* Read and write what the socket allows without waiting; events queue up. */
int iotgw_device_process(iotgw_device *d);

/* What the gateway said in Welcome. */
uint32_t iotgw_device_max_in_flight(const iotgw_device *d);

const char *iotgw_device_strerror(int code);

#endif
