/*
 * IoT Hub's MQTT device endpoint, the protocol side, written once for its two back ends:
 * the emulator's (its registry, telemetry stream, queues and twins) and the gateway's
 * (its upstream: each device rides it as its own hub identity). MQTT 3.1.1 as IoT Hub's
 * "Communicate with an IoT hub using the MQTT protocol" describes it, over any stream
 * (TLS, or WebSocket on subprotocol mqtt); packets are codecs/mqtt.h's, topics and
 * property bags codecs/iothub_mqtt.h's.
 *
 * The front end (this file) owns a connection's protocol: CONNECT and its checks (level
 * 4, a client id, a user name naming the client id's identity), subscriptions and the
 * QoS granted (1 at most), keep-alive (closed after 1.5 periods of silence, periods
 * capped at IoT Hub's 1177 s), the token's expiry, packet identifiers, the will (sent
 * when the connection is lost, if it is a telemetry topic of the client's own, marked
 * iothub-MessageType=Will), the mapping of each topic to a back-end call, and closing the
 * connection, without a word, on anything IoT Hub does not serve. The back end decides
 * who may connect and what each request does.
 *
 * Ownership: an endpoint is its owner's; connections belong to their endpoint, which frees
 * each after its stream closed and its back end heard `closed`; iotgw_hubmqtt_endpoint_free
 * frees those left without callbacks. Strings passed to the back end are valid during the
 * call only.
 *
 * Threading: the loop's thread only.
 *
 * Callbacks: back-end calls come from the connection's own events (its bytes, its
 * timers, its stream closing), never from inside an iotgw_hubmqtt_* call. `closed` comes
 * exactly once for each connection whose CONNECT the back end accepted, from the
 * stream's close (after an iotgw_hubmqtt_drop() too).
 *
 * Errors: functions return 0 or -1 (the connection is closing, or is not subscribed to
 * what would be sent, or out of memory).
 */
#ifndef IOTGW_HUBSIDE_MQTT_DEVICE_H
#define IOTGW_HUBSIDE_MQTT_DEVICE_H

#include <stddef.h>
#include <stdint.h>
#include <proton/message.h>

#include "codecs/iothub_mqtt.h"
#include "codecs/mqtt.h"
#include "transport/log.h"
#include "transport/stream.h"

typedef struct iotgw_hubmqtt iotgw_hubmqtt;
typedef struct iotgw_hubmqtt_endpoint iotgw_hubmqtt_endpoint;

/* A subscription kind (iotgw_iothub_filter_kind) as a bit of a set. */
#define IOTGW_HUBMQTT_SUB(kind) (1u << (kind))
/* A whole packet: IoT Hub's 256 KB message, its topic and property bag. */
#define IOTGW_HUBMQTT_MAX_PACKET    (256 * 1024 + 16 * 1024)
#define IOTGW_HUBMQTT_CONNACK_CODES 6 /* 0 accepted .. 5 not authorized */
/* A telemetry the back end acknowledges later, with iotgw_hubmqtt_puback(). */
#define IOTGW_HUBMQTT_PENDING 1

/* A CONNECT that passed the protocol's checks, for the back end to authenticate. */
typedef struct iotgw_hubmqtt_connect {
    const char *device_id; /* the client id's device */
    const char *module_id; /* its module ("{device}/{module}"), or NULL */
    const char *host;      /* the hub host the user name names */
    const char *token;     /* the password (a SAS token), or NULL */
    const char *cert_cn;   /* the verified client certificate's subject CN, or NULL */
    int clean_session;
} iotgw_hubmqtt_connect;

/* What the back end tells of an accepted CONNECT. */
typedef struct iotgw_hubmqtt_accepted {
    int64_t expires_in_ms;  /* the token's lifetime left: the connection ends then; <0: never */
    int session_present;    /* a kept session (clean session 0) with these subscriptions: */
    unsigned subscriptions; /* IOTGW_HUBMQTT_SUB() bits, granted QoS 1 */
} iotgw_hubmqtt_accepted;

typedef struct iotgw_hubmqtt_backend {
    /* Authenticate. IOTGW_MQTT_CONNACK_ACCEPTED with *out set (the back end may have set
     * its context, iotgw_hubmqtt_set_context), or the CONNACK code to refuse with and why
     * (the front end logs it and closes). */
    int (*connect)(iotgw_hubmqtt *c, const iotgw_hubmqtt_connect *req, iotgw_hubmqtt_accepted *out, char *why,
                   size_t why_len);
    /* Telemetry as the AMQP message IoT Hub makes of it (msg: the front end's, valid
     * during the call); counted: its size as IoT Hub counts it (body, property names and
     * values). packet_id: 0 for QoS 0 and for the will. 0: taken (a QoS 1 PUBLISH is
     * acknowledged now); IOTGW_HUBMQTT_PENDING: the back end calls iotgw_hubmqtt_puback()
     * later; <0: refused for *why, and the connection closes, as IoT Hub's does. */
    int (*telemetry)(iotgw_hubmqtt *c, pn_message_t *msg, size_t counted, uint16_t packet_id,
                     const char **why);
    /* A direct method's answer: $iothub/methods/res/{status}/?$rid={rid}. */
    void (*method_response)(iotgw_hubmqtt *c, const uint8_t *rid, size_t rid_len, int status,
                            const uint8_t *payload, size_t len);
    /* A twin GET (kind IOTGW_IOTHUB_TWIN_GET) or reported PATCH; answered later or at once
     * with iotgw_hubmqtt_twin_answer() and the rid. */
    void (*twin_request)(iotgw_hubmqtt *c, iotgw_iothub_publish_kind kind, const uint8_t *rid, size_t rid_len,
                         const uint8_t *payload, size_t len);
    /* The PUBACK of a cloud-to-device message sent at QoS 1: it is complete. */
    void (*c2d_acked)(iotgw_hubmqtt *c, uint16_t packet_id);
    /* Subscriptions new to the connection (IOTGW_HUBMQTT_SUB bits): after their SUBACK, or
     * after the CONNACK of a kept session. */
    void (*subscribed)(iotgw_hubmqtt *c, unsigned added);
    /* The connection has closed (why); after it, the context is never used again. */
    void (*closed)(iotgw_hubmqtt *c, const char *why);
} iotgw_hubmqtt_backend;

typedef struct iotgw_hubmqtt_endpoint_options {
    const iotgw_hubmqtt_backend *backend;
    void *ctx;                   /* the back end's, for all connections: iotgw_hubmqtt_endpoint_context() */
    uint64_t *connack_counts;    /* CONNACKs sent by code (IOTGW_HUBMQTT_CONNACK_CODES of them); NULL */
    unsigned connect_timeout_ms; /* CONNECT must come this soon; 0: 30000 */
    uint64_t *serials;           /* the owner's connection counter ("conn 12" in lines), shared with
                                    its other connections; NULL: the endpoint's own */
    const char *event_prefix;    /* of log events ("mqtt_" gives "mqtt_refused"...); NULL: "mqtt_" */
    int log_every_line;          /* no budget for lines (a hub emulator shows all); else each connection
                                    has its own, and those not yet CONNECTed share one */
} iotgw_hubmqtt_endpoint_options;

iotgw_hubmqtt_endpoint *iotgw_hubmqtt_endpoint_new(iotgw_loop *loop, const iotgw_hubmqtt_endpoint_options *o);
/* Close every connection at once, without callbacks, and free the endpoint. */
void iotgw_hubmqtt_endpoint_free(iotgw_hubmqtt_endpoint *ep);
void *iotgw_hubmqtt_endpoint_context(const iotgw_hubmqtt_endpoint *ep);
/* A TLS listener whose connections speak this protocol (o's on_accept and ctx are set
 * here). 0 or an error. */
int iotgw_hubmqtt_listen(iotgw_hubmqtt_endpoint *ep, const iotgw_stream_listener_options *o,
                         iotgw_stream_listener **out, iotgw_diag *diag);
/* Take a stream that was accepted elsewhere (a WebSocket on subprotocol mqtt).
 * ws: over WebSocket (logs and iotgw_hubmqtt_is_ws). NULL: out of memory (closed). */
iotgw_hubmqtt *iotgw_hubmqtt_accept(iotgw_hubmqtt_endpoint *ep, iotgw_stream *s, int ws);
/* iotgw_hubmqtt_drop() every connection; returns how many. */
int iotgw_hubmqtt_drop_all(iotgw_hubmqtt_endpoint *ep, const char *why);
/* Connections open, by transport (0 TLS, 1 WebSocket), and accepted in all. */
void iotgw_hubmqtt_endpoint_counts(const iotgw_hubmqtt_endpoint *ep, uint64_t open[2], uint64_t accepted[2]);

void iotgw_hubmqtt_set_context(iotgw_hubmqtt *c, void *ctx);
void *iotgw_hubmqtt_context(const iotgw_hubmqtt *c);
iotgw_hubmqtt_endpoint *iotgw_hubmqtt_endpoint_of(const iotgw_hubmqtt *c);
uint64_t iotgw_hubmqtt_serial(const iotgw_hubmqtt *c);
int iotgw_hubmqtt_is_ws(const iotgw_hubmqtt *c);
const char *iotgw_hubmqtt_peer(const iotgw_hubmqtt *c);
/* "device" or "device/module" once CONNECT named it, else the peer. */
const char *iotgw_hubmqtt_name(const iotgw_hubmqtt *c);
unsigned iotgw_hubmqtt_subscriptions(const iotgw_hubmqtt *c);
/* The connection's own budget of log lines (the back end's lines about it use it too). */
iotgw_log_limit *iotgw_hubmqtt_log_limit(iotgw_hubmqtt *c);

/* The hub ends the connection (a newer one took over, the identity was disabled...):
 * no will is sent; `closed` follows from the stream's close. */
void iotgw_hubmqtt_drop(iotgw_hubmqtt *c, const char *why);
/* Stop (1) or resume (0) reading the client's packets: its telemetry window is full. */
void iotgw_hubmqtt_pause(iotgw_hubmqtt *c, int paused);
/* Acknowledge a QoS 1 telemetry the back end took as IOTGW_HUBMQTT_PENDING. */
int iotgw_hubmqtt_puback(iotgw_hubmqtt *c, uint16_t packet_id);
/* A twin answer on $iothub/twin/res/{status}/?$rid={rid}[&$version={version}] (version
 * <0: none); body NUL-terminated, or NULL for none. Not sent (logged once) when the
 * client did not subscribe to $iothub/twin/res/#, as IoT Hub does. */
void iotgw_hubmqtt_twin_answer(iotgw_hubmqtt *c, int status, const uint8_t *rid, size_t rid_len,
                               int64_t version, const char *body);
/* A desired-properties update; -1 unless subscribed to them. */
int iotgw_hubmqtt_send_desired(iotgw_hubmqtt *c, int64_t version, const uint8_t *patch, size_t len);
/* A direct method request; -1 unless subscribed to methods. */
int iotgw_hubmqtt_send_method(iotgw_hubmqtt *c, const char *name, const char *rid, const uint8_t *payload,
                              size_t len);
/* A cloud-to-device message (msg as the hub queued it: system and application
 * properties become the topic's bag); -1 unless subscribed. At QoS 1 its packet
 * identifier is *packet_id when set (a redelivery, with dup), else a new one, left in
 * *packet_id; at QoS 0 *packet_id is set to 0 (no PUBACK will come). */
int iotgw_hubmqtt_send_c2d(iotgw_hubmqtt *c, pn_message_t *msg, int dup, uint16_t *packet_id);

#endif
