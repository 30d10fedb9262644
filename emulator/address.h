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
 * Ownership: the parsed struct owns its strings until emu_address_clear.
 * Threading: pure. Errors: IOTGW_ERR_INVALID_ARG with the reason.
 */
#ifndef IOTGW_EMULATOR_ADDRESS_H
#define IOTGW_EMULATOR_ADDRESS_H

#include "codecs/error.h"

typedef enum emu_address_kind {
    EMU_ADDR_CBS = 1,
    EMU_ADDR_TELEMETRY,
    EMU_ADDR_C2D,
    EMU_ADDR_METHODS,
    EMU_ADDR_TWIN,
    EMU_ADDR_SERVICE_C2D,
    EMU_ADDR_SERVICE_FEEDBACK,
    EMU_ADDR_SERVICE_FILE_NOTIFICATIONS,
    EMU_ADDR_EVENTS, /* service: the Event Hub-compatible stream */
} emu_address_kind;

typedef struct emu_address {
    emu_address_kind kind;
    char *device_id;      /* device kinds only */
    char *module_id;      /* NULL unless a module's */
    char *consumer_group; /* EMU_ADDR_EVENTS */
    int partition;        /* EMU_ADDR_EVENTS */
    char *event_hub;      /* EMU_ADDR_EVENTS by the Event Hub name; NULL for /messages/events */
} emu_address;

int emu_address_parse(const char *address, emu_address *out, iotgw_diag *diag);
void emu_address_clear(emu_address *a);
const char *emu_address_kind_name(emu_address_kind kind);

#endif
