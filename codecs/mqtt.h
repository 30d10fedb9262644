/*
 * MQTT 3.1.1 packet codec (OASIS mqtt-v3.1.1, section 2 and 3), for both roles: a
 * server (the emulator, the gateway's SDK-device listener) decodes what clients send and
 * encodes what servers send; a client (load tools, tests) the other way round.
 *
 * The decoder is incremental: feed it whatever bytes arrived, split anywhere, and it
 * returns one complete packet at a time. It refuses a packet larger than its maximum as
 * soon as the remaining-length field is known (before buffering any of it), and reports
 * each kind of malformed packet with its own words: a remaining length of more than 4
 * bytes, reserved flag bits set, a packet type the role never receives, strings that
 * run past the packet or are not well-formed UTF-8 (or hold U+0000), a PUBLISH topic
 * with a wildcard, QoS 3, a SUBSCRIBE without filters, a packet identifier of 0, bytes
 * left over after the last field. The CONNECT's protocol name and level are returned
 * as sent (not judged here): a server answers an unknown level with CONNACK 1.
 *
 * Ownership: a decoder owns its buffer; the packet it returns points into that buffer
 * or into the input given, and is valid until the next call on the decoder (or until
 * the input is released). Nothing is NUL-terminated: strings are (data, len).
 *
 * Threading: no shared state. Errors: 0 or a negative IOTGW_ERR_* code with the reason
 * in the diag; IOTGW_ERR_MQTT_MALFORMED, IOTGW_ERR_MQTT_TOO_LARGE; a failed decoder
 * stays failed (the connection must close).
 */
#ifndef IOTGW_CODECS_MQTT_H
#define IOTGW_CODECS_MQTT_H

#include <stddef.h>
#include <stdint.h>

#include "codecs/error.h"

#define IOTGW_MQTT_LEVEL_311 4 /* protocol level of MQTT 3.1.1 (name "MQTT") */
/* Fixed header: one byte, then the remaining length in 1..4 bytes. */
#define IOTGW_MQTT_MAX_FIXED_HEADER 5
/* Largest remaining length MQTT can express (268,435,455). */
#define IOTGW_MQTT_MAX_REMAINING 268435455u
/* Topic filters in one SUBSCRIBE or UNSUBSCRIBE the decoder accepts; more is malformed
 * here (IoT Hub's SDKs send at most 4). */
#define IOTGW_MQTT_MAX_FILTERS 16

typedef enum iotgw_mqtt_type {
    IOTGW_MQTT_CONNECT = 1,
    IOTGW_MQTT_CONNACK = 2,
    IOTGW_MQTT_PUBLISH = 3,
    IOTGW_MQTT_PUBACK = 4,
    IOTGW_MQTT_PUBREC = 5,
    IOTGW_MQTT_PUBREL = 6,
    IOTGW_MQTT_PUBCOMP = 7,
    IOTGW_MQTT_SUBSCRIBE = 8,
    IOTGW_MQTT_SUBACK = 9,
    IOTGW_MQTT_UNSUBSCRIBE = 10,
    IOTGW_MQTT_UNSUBACK = 11,
    IOTGW_MQTT_PINGREQ = 12,
    IOTGW_MQTT_PINGRESP = 13,
    IOTGW_MQTT_DISCONNECT = 14,
} iotgw_mqtt_type;

/* CONNACK return codes (3.2.2.3). */
enum {
    IOTGW_MQTT_CONNACK_ACCEPTED = 0,
    IOTGW_MQTT_CONNACK_BAD_PROTOCOL = 1,
    IOTGW_MQTT_CONNACK_ID_REJECTED = 2,
    IOTGW_MQTT_CONNACK_UNAVAILABLE = 3,
    IOTGW_MQTT_CONNACK_BAD_CREDENTIALS = 4,
    IOTGW_MQTT_CONNACK_NOT_AUTHORIZED = 5,
};
#define IOTGW_MQTT_SUBACK_FAILURE 0x80

typedef enum iotgw_mqtt_role {
    IOTGW_MQTT_SERVER = 1, /* decodes client packets, encodes server packets */
    IOTGW_MQTT_CLIENT = 2, /* decodes server packets, encodes client packets */
} iotgw_mqtt_role;

typedef struct iotgw_mqtt_bytes {
    const uint8_t *data;
    size_t len;
} iotgw_mqtt_bytes;

typedef struct iotgw_mqtt_connect {
    iotgw_mqtt_bytes protocol_name; /* "MQTT" for 3.1.1 */
    uint8_t protocol_level;         /* IOTGW_MQTT_LEVEL_311 */
    int clean_session;
    uint16_t keep_alive_s;
    iotgw_mqtt_bytes client_id;
    int has_will, will_retain;
    uint8_t will_qos;
    iotgw_mqtt_bytes will_topic, will_message;
    int has_username, has_password;
    iotgw_mqtt_bytes username, password;
} iotgw_mqtt_connect;

typedef struct iotgw_mqtt_publish {
    uint8_t qos; /* 0, 1 or 2 */
    int dup, retain;
    uint16_t packet_id; /* QoS 1 and 2 only */
    iotgw_mqtt_bytes topic, payload;
} iotgw_mqtt_publish;

typedef struct iotgw_mqtt_subscribe { /* SUBSCRIBE, UNSUBSCRIBE (qos unused) */
    uint16_t packet_id;
    size_t count;
    iotgw_mqtt_bytes filter[IOTGW_MQTT_MAX_FILTERS];
    uint8_t qos[IOTGW_MQTT_MAX_FILTERS]; /* requested QoS, 0..2 */
} iotgw_mqtt_subscribe;

typedef struct iotgw_mqtt_suback {
    uint16_t packet_id;
    size_t count;
    uint8_t code[IOTGW_MQTT_MAX_FILTERS]; /* granted QoS, or IOTGW_MQTT_SUBACK_FAILURE */
} iotgw_mqtt_suback;

typedef struct iotgw_mqtt_packet {
    iotgw_mqtt_type type;
    union {
        iotgw_mqtt_connect connect;
        struct {
            int session_present;
            uint8_t return_code;
        } connack;
        iotgw_mqtt_publish publish;
        iotgw_mqtt_subscribe subscribe; /* SUBSCRIBE and UNSUBSCRIBE */
        iotgw_mqtt_suback suback;
        uint16_t packet_id; /* PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK */
    } u;
} iotgw_mqtt_packet;

/* "CONNECT", "PUBLISH", ... or "reserved". */
const char *iotgw_mqtt_type_name(int type);

/* ------------------------------------------------------------------ decoding */

typedef struct iotgw_mqtt_decoder {
    iotgw_mqtt_role role;
    uint32_t max_packet; /* fixed header included */
    uint8_t header[IOTGW_MQTT_MAX_FIXED_HEADER];
    unsigned header_len; /* bytes of the fixed header read so far */
    uint32_t remaining;  /* once the fixed header is complete */
    int have_header;
    int error;    /* sticky */
    uint8_t *buf; /* a packet body that arrived in pieces */
    size_t buf_cap, buf_fill;
    uint64_t offset; /* bytes consumed since init, for diagnostics */
} iotgw_mqtt_decoder;

/* max_packet: the largest whole packet accepted, fixed header included (at most
 * IOTGW_MQTT_MAX_REMAINING + 5). */
void iotgw_mqtt_decoder_init(iotgw_mqtt_decoder *d, iotgw_mqtt_role role, uint32_t max_packet);
void iotgw_mqtt_decoder_free(iotgw_mqtt_decoder *d);

/* Consume bytes from in[0..len) until one packet is complete.
 *   IOTGW_OK:        *out holds it; *consumed bytes were used, feed the rest next.
 *   IOTGW_ERR_AGAIN: all input consumed (*consumed == len), no complete packet yet.
 *   otherwise:       IOTGW_ERR_MQTT_MALFORMED or _TOO_LARGE (why in diag); failed for good.
 * A packet wholly inside in[] is decoded in place (no copy). */
int iotgw_mqtt_decoder_next(iotgw_mqtt_decoder *d, const uint8_t *in, size_t len, size_t *consumed,
                            iotgw_mqtt_packet *out, iotgw_diag *diag);

/* True when no partial packet is buffered. */
int iotgw_mqtt_decoder_idle(const iotgw_mqtt_decoder *d);

/* Decode one complete packet (fixed header included) at once, as the decoder would. */
int iotgw_mqtt_decode(iotgw_mqtt_role role, const uint8_t *in, size_t len, iotgw_mqtt_packet *out,
                      iotgw_diag *diag);

/* ------------------------------------------------------------------ encoding */

/* Encode p, a packet the role sends, into out[0..cap): 0 and *len its size; or
 * IOTGW_ERR_BUFFER_TOO_SMALL with *len the size needed (nothing written);
 * IOTGW_ERR_INVALID_ARG for a packet the role does not send or that MQTT cannot carry
 * (a string over 65,535 bytes, a packet over IOTGW_MQTT_MAX_REMAINING, QoS > 2, a
 * missing packet identifier). */
int iotgw_mqtt_encode(iotgw_mqtt_role role, const iotgw_mqtt_packet *p, uint8_t *out, size_t cap,
                      size_t *len);

/* A PUBLISH's fixed and variable header, for a payload the caller writes after it
 * (no copy of the payload): at most IOTGW_MQTT_PUBLISH_HEADER_MAX(topic_len) bytes.
 * Returns the header's length, or 0 if MQTT cannot carry it. */
#define IOTGW_MQTT_PUBLISH_HEADER_MAX(topic_len) (IOTGW_MQTT_MAX_FIXED_HEADER + 2 + (topic_len) + 2)
size_t iotgw_mqtt_publish_header(uint8_t *out, const iotgw_mqtt_publish *p, size_t payload_len);

#endif
