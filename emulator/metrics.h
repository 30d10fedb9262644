/*
 * What the emulated hub counts for GET /metrics (metrics_rest.c): plain counters, each
 * raised where the thing happens (the hub's files, and the REST layer for its answers),
 * rendered only when scraped. Per-identity counts are the hub's live state
 * (emu_hub_identity_activity in emulator/hub.h).
 *
 * Ownership: the hub holds one emu_metrics (emu_hub_metrics); nothing in it is allocated.
 * Threading: event-loop thread only. Errors: none.
 */
#ifndef IOTGW_EMULATOR_METRICS_H
#define IOTGW_EMULATOR_METRICS_H

#include <stdint.h>

enum { EMU_D2C_TOO_LARGE, EMU_D2C_UNDECODABLE, EMU_D2C_THROTTLED, EMU_D2C_REJECT_REASONS };
enum {
    EMU_C2D_SENT,      /* the service's message is queued */
    EMU_C2D_REFUSED,   /* the service's message is not (unknown device, too large, full queue) */
    EMU_C2D_DELIVERED, /* to a device, each delivery (redeliveries included) */
    EMU_C2D_COMPLETED,
    EMU_C2D_REJECTED,
    EMU_C2D_ABANDONED,
    EMU_C2D_EXPIRED,
    EMU_C2D_EVENTS
};
/* How a direct method call ended: the class of the device's status (0: not 1xx-5xx), or
 * the hub's error when the device's answer did not reach the caller. */
enum {
    EMU_METHOD_CLASSES = 6, /* other, 1xx .. 5xx */
    EMU_METHOD_NOT_ONLINE = EMU_METHOD_CLASSES,
    EMU_METHOD_TIMEOUT,
    EMU_METHOD_NOT_FOUND,
    EMU_METHOD_TOO_LARGE,
    EMU_METHOD_INJECTED,
    EMU_METHOD_SERVER_ERROR,
    EMU_METHOD_RESULTS
};
enum {
    EMU_TWIN_GET, /* device side, over AMQP */
    EMU_TWIN_PATCH_REPORTED,
    EMU_TWIN_SUBSCRIBE,
    EMU_TWIN_UNSUBSCRIBE,
    EMU_TWIN_UNKNOWN,
    EMU_TWIN_SERVICE_GET, /* service side, REST */
    EMU_TWIN_SERVICE_PATCH,
    EMU_TWIN_SERVICE_REPLACE,
    EMU_TWIN_OPS
};
enum { EMU_LISTENER_WSS, EMU_LISTENER_AMQPS, EMU_LISTENERS };
enum { EMU_CBS_200, EMU_CBS_400, EMU_CBS_401, EMU_CBS_404, EMU_CBS_500, EMU_CBS_STATUSES };
enum { EMU_MQTT_TLS, EMU_MQTT_WS, EMU_MQTT_LISTENERS };
#define EMU_MQTT_CONNACK_CODES 6 /* 0 accepted .. 5 not authorized: IOTGW_HUBMQTT_CONNACK_CODES */

typedef struct emu_metrics {
    uint64_t d2c_messages; /* accepted: stored in the telemetry stream, each of a batch */
    uint64_t d2c_rejected[EMU_D2C_REJECT_REASONS]; /* transfers */
    uint64_t stream_read;                          /* messages sent to readers of the telemetry stream */
    uint64_t c2d[EMU_C2D_EVENTS];
    uint64_t methods[EMU_METHOD_RESULTS];
    uint64_t twin[EMU_TWIN_OPS][2]; /* [op][0: answered, 1: failed] */
    uint64_t desired_pushes;
    uint64_t conns_accepted[EMU_LISTENERS], conns_open[EMU_LISTENERS], conns_refused;
    uint64_t put_tokens[EMU_CBS_STATUSES];
    uint64_t sasl_plain[2]; /* [0: accepted, 1: refused] */
    uint64_t mqtt_conns_accepted[EMU_MQTT_LISTENERS], mqtt_conns_open[EMU_MQTT_LISTENERS];
    uint64_t mqtt_connack[EMU_MQTT_CONNACK_CODES]; /* CONNACKs sent, by return code */
    uint64_t rest[6];                              /* answers by status class: other, 1xx .. 5xx */
    uint64_t throttled_rest;
} emu_metrics;

#endif
