/*
 * IoT Hub's AMQP device side, the messages of it, written once for its two servers: the
 * emulator (emulator/cbs.c, twin.c, methods.c) and the gateway's AMQP listener for SDK
 * devices (gateway/sdk_amqp.c). shared/docs/iothub-amqp-protocol.md 2 (CBS), 4.4 (direct
 * methods) and 4.5 (twin); link addresses are hubside/amqp_address.h's.
 *
 * - CBS: a put-token request (application properties operation, type, name; the token
 *   the body) and its reply (correlation-id the request's message-id, status-code and
 *   status-description). The request is accepted before the reply is sent and its
 *   disposition reaches the wire first, as IoT Hub orders them: the Azure IoT C SDK
 *   (uAMQP) fails a put-token whose reply comes before the disposition.
 * - Twin: the operation and resource of a request (message annotations), and the answers
 *   and desired-properties updates (annotations status, an int, and version, a long: the
 *   C SDK refuses other types; the body a data section).
 * - Direct methods: the request (correlation-id a uuid, IoThub-methodname, body the JSON
 *   payload as a data section) and the device's answer (the same uuid, IoThub-status).
 *
 * Ownership: messages are the caller's; pointers into a message (token, body) are valid
 * while it is unchanged. Threading: pure functions but iotgw_hubamqp_accept_first (the
 * loop's thread). Errors: as each says.
 */
#ifndef IOTGW_HUBSIDE_AMQP_DEVICE_H
#define IOTGW_HUBSIDE_AMQP_DEVICE_H

#include <stddef.h>
#include <stdint.h>
#include <proton/delivery.h>
#include <proton/message.h>

#include "transport/transport.h"

#define IOTGW_HUBAMQP_TOKEN_TYPE_SB  "servicebus.windows.net:sastoken"
#define IOTGW_HUBAMQP_TOKEN_TYPE_IOT "azure-devices.net:sastoken"
#define IOTGW_HUBAMQP_MAX_TOKEN      4096
#define IOTGW_HUBAMQP_MAX_AUDIENCE   600

/* ------------------------------------------------------------------ CBS */

typedef struct iotgw_hubamqp_put_token {
    char audience[IOTGW_HUBAMQP_MAX_AUDIENCE]; /* "name": "{host}/devices/{id}" and the like */
    const char *token;                         /* the body, not NUL-terminated */
    size_t token_len;
} iotgw_hubamqp_put_token;

/* A put-token request: 0, or 400 with *why (another operation or token type, no
 * audience, no token or one over IOTGW_HUBAMQP_MAX_TOKEN bytes). */
int iotgw_hubamqp_put_token_parse(pn_message_t *request, iotgw_hubamqp_put_token *out, const char **why);
/* The reply to request into reply (cleared first). 0, or -1 out of memory. */
int iotgw_hubamqp_cbs_reply(pn_message_t *request, int status, const char *description, pn_message_t *reply);
/* Accept a request's delivery and encode its disposition now, so that what is sent after
 * (the reply) follows it on the wire. c: the delivery's connection, or NULL. */
void iotgw_hubamqp_accept_first(iotgw_conn *c, pn_delivery_t *d);

/* ------------------------------------------------------------------ twin */

typedef enum iotgw_hubamqp_twin_op {
    IOTGW_HUBAMQP_TWIN_UNKNOWN = 0,
    IOTGW_HUBAMQP_TWIN_GET,                 /* operation GET */
    IOTGW_HUBAMQP_TWIN_PATCH_REPORTED,      /* PATCH /properties/reported, body the patch */
    IOTGW_HUBAMQP_TWIN_SUBSCRIBE_DESIRED,   /* PUT /notifications/twin/properties/desired */
    IOTGW_HUBAMQP_TWIN_UNSUBSCRIBE_DESIRED, /* DELETE of it */
} iotgw_hubamqp_twin_op;

/* The request's operation; op and resource (for logs) get its annotations' text ("" when
 * absent, cut to their size). */
iotgw_hubamqp_twin_op iotgw_hubamqp_twin_op_of(pn_message_t *request, char op[16], char resource[64]);
/* An answer (correlation: the request's correlation-id) or, with correlation NULL, a
 * desired-properties update (resource /properties/desired). status 0: none; version <0:
 * none; body (len bytes) NULL: none. Into m (cleared first). 0 or -1. */
int iotgw_hubamqp_twin_message(pn_message_t *m, const pn_msgid_t *correlation, int status, int64_t version,
                               const uint8_t *body, size_t len);

/* ------------------------------------------------------------------ direct methods */

/* A method request into m (cleared first). 0 or -1. */
int iotgw_hubamqp_method_request(pn_message_t *m, const uint8_t uuid[16], const char *name,
                                 const uint8_t *payload, size_t len);
/* A device's answer: 0 with its uuid, status and body (NULL, 0 when none); -1 when it has
 * no uuid correlation-id or no integer IoThub-status. */
int iotgw_hubamqp_method_response(pn_message_t *m, uint8_t uuid[16], int *status, const uint8_t **body,
                                  size_t *len);

#endif
