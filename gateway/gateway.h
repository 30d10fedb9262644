/*
 * The gateway: devices connect to its listeners (docs/downstream-protocol.md), each is
 * checked against the fleet in the configuration, and becomes an identity on the
 * upstream pool to IoT Hub (gateway/upstream.h). Telemetry goes up and is acknowledged
 * when the hub has it; direct methods, twin answers, desired updates and
 * cloud-to-device messages come down to the device that they are for.
 *
 * Ownership: the gateway keeps the configuration it is given until it is freed or
 * replaced by a reload; the loop is the caller's and outlives it.
 * Threading: the loop's thread only.
 * Errors: 0 or a negative IOTGW_ERR_* code with a message in the diag.
 */
#ifndef IOTGW_GATEWAY_GATEWAY_H
#define IOTGW_GATEWAY_GATEWAY_H

#include "gateway/config.h"
#include "transport/transport.h"

typedef struct iotgw_gateway iotgw_gateway;

/* Start listening and connecting. On success the gateway owns cfg. */
int iotgw_gateway_new(iotgw_loop *loop, iotgw_config *cfg, iotgw_gateway **out, iotgw_diag *diag);
/* The port of listener i (as configured, or chosen by the system for port 0). */
int iotgw_gateway_port(const iotgw_gateway *g, size_t i);
/* The port of devices.webSocketListen (MQTT and AMQP over WebSocket); 0: none. */
int iotgw_gateway_ws_port(const iotgw_gateway *g);
/* The port of devices.amqp.listen[i]; 0: none. */
int iotgw_gateway_amqp_port(const iotgw_gateway *g, size_t i);
/* The ops endpoint's port (ops.listen; the system's choice for port 0); 0 when off. */
int iotgw_gateway_ops_port(const iotgw_gateway *g);
/* Stop accepting devices, close every device connection with ERROR_SHUTTING_DOWN once
 * its pending work is answered or deadline_ms has passed; returns 1 when all are gone. */
int iotgw_gateway_drain(iotgw_gateway *g, int64_t deadline_ms);
/* Take a new configuration's fleet, methods and telemetry settings (the gateway then
 * owns cfg): devices added can connect, removed or disabled ones are closed, ones whose
 * key changed authenticate again at the hub, the others notice nothing. Hub and listener
 * settings keep their running values until the next start (a warning says so). */
void iotgw_gateway_reload(iotgw_gateway *g, iotgw_config *cfg);
void iotgw_gateway_free(iotgw_gateway *g);

#endif
