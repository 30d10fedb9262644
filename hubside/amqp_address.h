/*
 * IoT Hub link addresses, as the SDKs write them (shared/docs/iothub-amqp-protocol.md,
 * 3.1): an optional "amqps://host[:port]" prefix, then
 *
 *   /devices/{d}[/modules/{m}]/messages/events        telemetry
 *   /devices/{d}[/modules/{m}]/messages/devicebound   cloud-to-device
 *   /devices/{d}[/modules/{m}]/methods/devicebound    direct methods
 *   /devices/{d}[/modules/{m}]/twin                   twin
 *   /messages/devicebound                             service: cloud-to-device send
 *   /messages/serviceBound/feedback                   service: delivery feedback
 *   /messages/serviceBound/filenotifications          service: file upload notifications
 *   /messages/events/ConsumerGroups/{g}/Partitions/{n} service: telemetry stream
 *   /{event hub}/ConsumerGroups/{g}/Partitions/{n}     the same, at its Event Hub name
 *   $cbs                                              claims-based security
 *
 * Fixed words match case-insensitively (C# writes "deviceBound"); ids are
 * percent-decoded ("+" stays "+": it is legal in ids) and checked.
 *
 * Ownership: the parsed struct owns its strings until iotgw_hubaddr_clear.
 * Threading: pure. Errors: IOTGW_ERR_INVALID_ARG with the reason.
 */
#ifndef IOTGW_HUBSIDE_AMQP_ADDRESS_H
#define IOTGW_HUBSIDE_AMQP_ADDRESS_H

#include "codecs/error.h"

typedef enum iotgw_hubaddr_kind {
    IOTGW_HUBADDR_CBS = 1,
    IOTGW_HUBADDR_TELEMETRY,
    IOTGW_HUBADDR_C2D,
    IOTGW_HUBADDR_METHODS,
    IOTGW_HUBADDR_TWIN,
    IOTGW_HUBADDR_SERVICE_C2D,
    IOTGW_HUBADDR_SERVICE_FEEDBACK,
    IOTGW_HUBADDR_SERVICE_FILE_NOTIFICATIONS,
    IOTGW_HUBADDR_EVENTS, /* service: the Event Hub-compatible stream */
} iotgw_hubaddr_kind;

typedef struct iotgw_hubaddr {
    iotgw_hubaddr_kind kind;
    char *device_id;      /* device kinds only */
    char *module_id;      /* NULL unless a module's */
    char *consumer_group; /* IOTGW_HUBADDR_EVENTS */
    int partition;        /* IOTGW_HUBADDR_EVENTS */
    char *event_hub;      /* IOTGW_HUBADDR_EVENTS by the Event Hub name; NULL for /messages/events */
} iotgw_hubaddr;

int iotgw_hubaddr_parse(const char *address, iotgw_hubaddr *out, iotgw_diag *diag);
void iotgw_hubaddr_clear(iotgw_hubaddr *a);
const char *iotgw_hubaddr_kind_name(iotgw_hubaddr_kind kind);

#endif
