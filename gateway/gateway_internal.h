/*
 * Inside the gateway (gateway/gateway.h). Files: gateway.c (listeners, the table of
 * connected devices, upstream callbacks routed to sessions, draining), session.c (one
 * device connection: handshake, frames in and out, windows, keep-alive), wrap.c
 * (telemetry frames to hub messages), transcode.c (method payloads JSON <-> protobuf).
 */
#ifndef IOTGW_GATEWAY_GATEWAY_INTERNAL_H
#define IOTGW_GATEWAY_GATEWAY_INTERNAL_H

#include <proton/message.h>

#include "codecs/frame.h"
#include "codecs/list.h"
#include "codecs/prom.h"
#include "gateway/gateway.h"
#include "gateway/store.h"
#include "gateway/upstream.h"
#include "hubside/mqtt_device.h"
#include "schemas/gateway.pb-c.h"
#include "transport/log.h"
#include "transport/stream.h"

#define HELLO_MAX_FRAME 8192 /* frames accepted before the handshake */

typedef struct gw_session gw_session;
typedef struct gw_forward gw_forward;

/* What the gateway counts, rendered by gateway/ops.c at each scrape (docs/operations.md). */
#define GW_ERROR_CODES  16 /* Iotgw__ErrorCode values */
#define GW_NACK_REASONS 9  /* Iotgw__NackReason values */
typedef struct gw_stats {
    uint64_t connections, welcomed;          /* device connections accepted; Hellos answered Welcome */
    uint64_t errors[GW_ERROR_CODES];         /* Error frames sent, by code */
    uint64_t telemetry, telemetry_bytes;     /* Telemetry frames received, their frames' bytes */
    uint64_t acked, nacked[GW_NACK_REASONS]; /* by NackReason */
    uint64_t methods[6];                     /* direct methods answered to the hub, by status / 100 */
    iotgw_histogram method_seconds;          /* the hub's request in, the answer out */
    iotgw_histogram method_device_seconds;   /* the request to the device, its answer in */
    uint64_t twin_requests, twin_ok, twin_failed, desired_updates;
    uint64_t c2d_delivered, c2d_completed, c2d_rejected, c2d_abandoned;
    uint64_t store_forwarded, store_rejected; /* stored messages the hub accepted; refused for good */
    uint64_t store_nacked;                    /* telemetry nacked because the store was full or failed */
    uint64_t mqtt_connack[IOTGW_HUBMQTT_CONNACK_CODES]; /* MQTT CONNACKs sent to devices, by code */
} gw_stats;

/* A method request waiting for the device's answer. */
typedef struct gw_method_call {
    struct gw_method_call *next;
    uint64_t id; /* the device sees this */
    uint8_t hub_id[16];
    char *response_type; /* the device answers this protobuf type; NULL: JSON (a copy: reloads free the
                            config) */
    int64_t started_ms, deadline_ms; /* started: when the hub's request came */
} gw_method_call;

/* A device twin request: the device's id and the upstream's. */
typedef struct gw_twin_call {
    struct gw_twin_call *next;
    uint64_t device_id, upstream_id;
    char *rid; /* an MQTT device's $rid; NULL for protobuf */
} gw_twin_call;

/* A cloud-to-device message out to an MQTT device at QoS 1, until its PUBACK; or, with
 * buf, one kept (still locked at the hub) while the device is not subscribed. */
typedef struct gw_c2d_id {
    uint64_t upstream;
    uint16_t packet_id;
    uint8_t *buf; /* the message encoded, while kept */
    size_t len;
} gw_c2d_id;

/* One device connection: its device's lifecycle here (session.c), whichever its wire:
 * the gateway's protobuf frames (session.c, stream), or IoT Hub's MQTT for devices
 * written with the Azure IoT SDKs (sdk_mqtt.c, mqtt: the front end's connection, which
 * owns the stream; such a session exists from its accepted CONNECT on). */
struct gw_session {
    iotgw_gateway *g;
    iotgw_stream *stream; /* protobuf; NULL for MQTT */
    iotgw_hubmqtt *mqtt;  /* MQTT; NULL for protobuf */
    struct gw_amqp_device *amqp; /* AMQP (sdk_amqp.c): the device on its connection; NULL otherwise */
    gw_c2d_id *c2d_ids;   /* MQTT: C2D messages waiting for their PUBACK */
    size_t nc2d_ids;
    int paused;                /* MQTT: reading stopped while the window is full */
    struct gw_puback *pubacks; /* MQTT: QoS 1 telemetry not yet acknowledged, in arrival order (a ring) */
    size_t puback_head, puback_len, puback_cap;
    iotgw_frame_decoder dec;
    int ready;                 /* Welcome sent */
    int closing;               /* Error sent or the stream is going */
    char *device_id;           /* its own copy, once Hello named a device of the fleet (a reload frees
                                  the configuration, not this) */
    size_t device_index;       /* of that device in g->cfg->devices: set again by every reload */
    unsigned capabilities;     /* IOTGW_UPSTREAM_* */
    iotgw_upstream_device *up; /* its own; with a store, its gw_forward's (fwd) */
    gw_forward *fwd;
    unsigned in_flight; /* telemetry frames without Ack or Nack yet */
    gw_method_call *calls;
    uint64_t next_call_id;
    gw_twin_call *twin_calls;
    iotgw_timer hello_timer; /* the hello deadline, until Hello */
    int64_t last_rx_ms, ping_sent_ms;
    iotgw_log_limit log; /* this connection's lines, once Hello named the device */
    iotgw_list node;     /* in g->sessions */
};

struct iotgw_gateway {
    iotgw_loop *loop;
    iotgw_config *cfg;
    iotgw_upstream *up;
    iotgw_stream_listener **listeners; /* devices.listen, then devices.mqtt.listen */
    size_t nlisteners;
    iotgw_hubmqtt_endpoint *mqtt; /* sdk_mqtt.c's; NULL: no MQTT listener */
    iotgw_listener *mqtt_ws;      /* devices.mqtt.webSocketListen; NULL: none */
    iotgw_listener **amqp_listeners; /* devices.amqp.listen (sdk_amqp.c) */
    size_t namqp_listeners;
    iotgw_list amqp_conns;           /* sdk_amqp.c's connections */
    uint64_t amqp_serial;            /* their numbers, for lines */
    iotgw_log_limit amqp_log;        /* lines about AMQP connections that named no device yet */
    gw_session **by_device;       /* per cfg->devices index: its live session, or NULL */
    iotgw_list sessions;          /* every session, newest first */
    int draining;
    iotgw_timer tick; /* every second: gw_session_tick for each session */
    pn_message_t *scratch;
    iotgw_log_limit anonymous_log; /* lines about connections that named no device yet */
    gw_stats stats;
    struct gw_ops *ops;    /* the ops endpoint; NULL: off */
    int64_t last_tick_ms;  /* the 1 s tick's last run: /healthz */
    uint64_t boot_id;      /* random at start: generated message ids are unique across restarts */
    uint64_t next_message; /* generated message ids: one counter for every device and connection */
    /* store-and-forward (forward.c); store NULL: none */
    iotgw_store *store;
    iotgw_list forwards;            /* gw_forward */
    gw_forward **forward_by_device; /* per cfg->devices index */
    struct gw_durable *durable;     /* appends waiting for the disk, in append order (a ring) */
    size_t durable_head, durable_len, durable_cap;
    iotgw_log_limit store_log;
    int64_t store_report_ms;
    uint64_t store_report_forwarded;
};

/* A message appended to the store, waiting for its on_durable: whose Ack it is. */
typedef struct gw_durable {
    gw_session *session; /* NULL once the session went */
    uint64_t seq;
} gw_durable;

/* session.c */
void gw_session_accept(iotgw_gateway *g, iotgw_stream *s);
/* Keep-alive and method deadlines; the gateway calls it for every session each second. */
void gw_session_tick(gw_session *s, int64_t now);
/* Close at once and forget (the gateway is going). */
void gw_session_destroy(gw_session *s);
/* After a reload: the device's entry in the new configuration (NULL: removed). A removed
 * or disabled device is closed; one whose hub credential changed (its key, or the fleet's
 * DeviceConnect policy) authenticates again at the hub. */
void gw_session_reconfigure(gw_session *s, const iotgw_config *cfg, const iotgw_config_device *nd,
                            size_t index);
/* Send an Error frame and close after it has left. */
void gw_session_fail(gw_session *s, Iotgw__ErrorCode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Write one frame; 0, or -1 when the session is closing. */
int gw_session_send(gw_session *s, Iotgw__Frame *f);
void gw_session_on_outcome(gw_session *s, uint64_t seq, iotgw_outcome outcome, const char *cond,
                           const char *description);
void gw_session_on_method(gw_session *s, const iotgw_method_request *req);
void gw_session_on_twin(gw_session *s, const iotgw_twin_response *r);
void gw_session_on_c2d(gw_session *s, const iotgw_c2d_message *m);

/* session.c, shared by both wires */
const char *gw_session_peer(const gw_session *s);
/* The fleet's device id, enabled and served here; NULL with the code and words to refuse
 * with (*id_valid: the id itself is one a log line may name). */
const iotgw_config_device *gw_session_find_device(iotgw_gateway *g, const char *id, int *id_valid,
                                                  Iotgw__ErrorCode *code, iotgw_diag *diag);
/* A device's credential: a SAS token for it (audience the hub or gatewayId), or, with no
 * token, a verified client certificate whose CN (cn) is its id. */
int gw_session_check_token(gw_session *s, const iotgw_config_device *dev, const char *token, const char *cn,
                           Iotgw__ErrorCode *code, iotgw_diag *diag);
int gw_session_admit(gw_session *s, const iotgw_config_device *dev, unsigned caps, iotgw_diag *diag);
/* Telemetry to the store or the hub; its Ack or Nack (seq) comes later, or at once. */
void gw_session_submit(gw_session *s, uint64_t seq, pn_message_t *m);
/* The same for a message already encoded (an AMQP device's, as it sent it). */
void gw_session_submit_encoded(gw_session *s, uint64_t seq, const uint8_t *buf, size_t len);
gw_method_call *gw_session_new_call(gw_session *s, const iotgw_method_request *req,
                                    const char *response_type);
/* The call with the device's id, taken off the session; NULL: none (answered already). */
gw_method_call *gw_session_take_call(gw_session *s, uint64_t id);
void gw_session_answer_method(gw_session *s, gw_method_call *c, int status, const char *json);
/* Answer with the device's JSON (502 if it is not JSON), and free the call. */
void gw_session_answer_json(gw_session *s, gw_method_call *c, int status, const uint8_t *json, size_t len);
void gw_session_call_free(gw_method_call *c);
int gw_session_twin_request(gw_session *s, uint64_t id, const char *rid, iotgw_twin_op op,
                            const uint8_t *patch, size_t len);
gw_twin_call *gw_session_take_twin_call(gw_session *s, uint64_t upstream_id);
void gw_session_free(gw_session *s);
/* {"error": text} as JSON into buf. */
void gw_error_json(char *buf, size_t len, const char *text);

/* sdk_mqtt.c: devices written with the Azure IoT SDKs, over IoT Hub's MQTT */
int gw_mqtt_start(iotgw_gateway *g, iotgw_diag *diag);
/* The WebSocket listener's port; 0: none. */
int gw_mqtt_ws_port(const iotgw_gateway *g);
void gw_mqtt_stop(iotgw_gateway *g);
void gw_mqtt_acked(gw_session *s, uint64_t seq);
/* The hub refused the device: its MQTT connection ends if the refusal is its identity's
 * (disabled, deleted, a wrong key), as the hub ends it; a throttled device stays. */
void gw_mqtt_on_hub_failed(gw_session *s);
void gw_mqtt_refused(gw_session *s, uint64_t seq, Iotgw__NackReason reason, const char *detail);

/* sdk_amqp.c: devices written with the Azure IoT SDKs, over IoT Hub's AMQP */
int gw_amqp_start(iotgw_gateway *g, iotgw_diag *diag);
/* Close every AMQP connection (their sessions are gone). */
void gw_amqp_stop(iotgw_gateway *g);
int gw_amqp_port(const iotgw_gateway *g, size_t i);
/* An AMQP connection accepted on a listener (ws: the WebSocket one). */
void gw_amqp_accept(iotgw_gateway *g, iotgw_conn *c, int ws);
const char *gw_amqp_peer(const gw_session *s);
/* End the device's links on its connection (why: the condition's words); its session is
 * freed on a later turn. */
void gw_amqp_drop(gw_session *s, const char *why);
/* The gateway is going: the session is freed by the caller, its device record stays with
 * its connection. */
void gw_amqp_forget(gw_session *s);
void gw_amqp_tick(gw_session *s, int64_t now);
void gw_amqp_acked(gw_session *s, uint64_t seq);
void gw_amqp_refused(gw_session *s, uint64_t seq, Iotgw__NackReason reason, const char *detail);
void gw_amqp_method(gw_session *s, gw_method_call *call, const iotgw_method_request *req);
void gw_amqp_twin(gw_session *s, const iotgw_twin_response *r);
void gw_amqp_c2d(gw_session *s, const iotgw_c2d_message *m);
void gw_mqtt_method(gw_session *s, gw_method_call *c, const iotgw_method_request *req);
void gw_mqtt_twin(gw_session *s, const iotgw_twin_response *r);
void gw_mqtt_c2d(gw_session *s, const iotgw_c2d_message *m);

/* forward.c: store-and-forward */
/* The session takes its device's upstream identity (s->up), made with its features. */
int gw_forward_attach(gw_session *s, iotgw_diag *diag);
/* The device's hub credential changed (a reload, with cfg the new configuration and dev
 * its entry there): its upstream identity is made anew with it. */
int gw_forward_reattach(gw_session *s, const iotgw_config *cfg, const iotgw_config_device *dev,
                        iotgw_diag *diag);
/* The session lets go: with a backlog the identity stays at the hub, telemetry only. */
void gw_forward_detach(gw_session *s);
/* Hand the device's stored messages to its upstream, as far as it takes them. */
void gw_forward_pump(gw_forward *f);
void gw_forward_on_outcome(gw_forward *f, uint64_t id, iotgw_outcome outcome, const char *cond,
                           const char *description);
/* An upstream device's forward (its context, with a store), and the forward's session. */
gw_forward *gw_forward_of(iotgw_upstream_device *dev);
gw_session *gw_forward_session(const gw_forward *f);
/* At start: devices with a backlog and no connection send it. */
void gw_forward_start(iotgw_gateway *g);
void gw_forward_tick(iotgw_gateway *g, int64_t now_ms);
/* A reload: each forward's index in cfg (into by_device); those of devices gone from the
 * fleet and unconnected are freed (their backlog waits for its ttl). */
void gw_forward_reindex(iotgw_gateway *g, gw_forward **by_device, const iotgw_config *cfg);
void gw_forward_free_all(iotgw_gateway *g);
/* session.c: the store's on_durable for a session's telemetry */
void gw_session_on_durable(gw_session *s, uint64_t seq, int rc, const char *why);

/* ops.c: the ops endpoint (ops.listen): /metrics, /healthz, /readyz, /devices. */
int gw_ops_start(iotgw_gateway *g, iotgw_diag *diag);
int gw_ops_port(const iotgw_gateway *g);
void gw_ops_stop(iotgw_gateway *g);
void gw_stats_init(gw_stats *st);

/* wrap.c: a Telemetry frame as the hub message to send (into msg) */
int gw_wrap_telemetry(iotgw_gateway *g, const Iotgw__Telemetry *t, pn_message_t *msg, iotgw_diag *diag);

/* transcode.c */
/* JSON text to the packed protobuf of type (a Parcel's content typed by its registry). */
int gw_json_to_protobuf(const char *type, const uint8_t *json, size_t len, uint8_t **out, size_t *out_len,
                        iotgw_diag *diag);
/* Packed protobuf of type to JSON text. */
int gw_protobuf_to_json(const char *type, const uint8_t *pb, size_t len, char **out, iotgw_diag *diag);

#endif
