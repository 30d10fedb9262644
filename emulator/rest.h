/*
 * The service REST API on the HTTPS listener (shared/docs/iothub-amqp-protocol.md 7.2):
 * direct method invocation and twins so far. Requests carry a service SAS token in
 * Authorization; errors have IoT Hub's shape: status, header iothub-errorcode and a JSON
 * body whose Message holds {"errorCode": n, ...} as text.
 *
 * Threading: event-loop thread only.
 */
#ifndef IOTGW_EMULATOR_REST_H
#define IOTGW_EMULATOR_REST_H

#include "emulator/hub.h"

/* The listener's on_http callback; ctx is the emu_hub. */
void emu_rest_on_request(iotgw_http_request *req, void *ctx);

#endif
