/*
 * CBS (claims-based security) put-token requests, as IoT Hub clients send them on the
 * $cbs node (shared/docs/iothub-amqp-protocol.md 2.3): message-id a ulong, application
 * properties operation=put-token, type, name (the audience), body the token as an
 * amqp-value string.
 *
 * Ownership: the caller owns the message. Threading: pure, on messages the caller does
 * not share. Errors: none.
 */
#ifndef IOTGW_CODECS_CBS_H
#define IOTGW_CODECS_CBS_H

#include <stdint.h>
#include <proton/message.h>

#define IOTGW_CBS_NODE       "$cbs"
#define IOTGW_CBS_TOKEN_TYPE "servicebus.windows.net:sastoken"

/* Fill msg (cleared first) with a put-token request for audience. */
void iotgw_cbs_put_token_request(pn_message_t *msg, uint64_t id, const char *audience, const char *token);

#endif
