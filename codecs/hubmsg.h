/*
 * Parcels <-> IoT Hub messages (Proton pn_message_t).
 *
 * Protobuf encoding (default): the body is one AMQP data section holding the packed
 * Parcel, content-type "application/x-protobuf".
 * JSON encoding: the body is the parcel's JSON (codecs/parcel_json.h, content decoded
 * through the type registry), content-type "application/json" and content-encoding
 * "utf-8", which is what IoT Hub's message routing needs to query the body.
 *
 * Either way the message gets message-id, creation-time, and these application
 * properties promoted from the parcel (each only when not empty), so routes can filter
 * without reading the body:
 *   parcelType         the parcel's type, e.g. "iotgw.AlarmStatus"
 *   parcelSource       source.name
 *   parcelDestination  destination.name
 *
 * Ownership: the caller owns the pn_message_t (pn_message() / pn_message_free()) and
 * the returned parcel (iotgw__parcel__free_unpacked(p, NULL)).
 * Threading: pure and reentrant, on messages the caller does not share.
 * Errors: IOTGW_ERR_HUBMSG_* or IOTGW_ERR_JSON_*, details in the diag.
 */
#ifndef IOTGW_CODECS_HUBMSG_H
#define IOTGW_CODECS_HUBMSG_H

#include <stdint.h>
#include <proton/message.h>

#include "codecs/error.h"
#include "codecs/types.h"
#include "schemas/parcel.pb-c.h"

/* IoT Hub's device-to-cloud message size limit. */
#define IOTGW_HUBMSG_MAX_BODY (256 * 1024)
/* IoT Hub's limit on a message-id or correlation-id string. */
#define IOTGW_HUBMSG_MAX_ID_LEN 128

#define IOTGW_CONTENT_TYPE_PROTOBUF "application/x-protobuf"
#define IOTGW_CONTENT_TYPE_JSON     "application/json"

#define IOTGW_PROP_PARCEL_TYPE        "parcelType"
#define IOTGW_PROP_PARCEL_SOURCE      "parcelSource"
#define IOTGW_PROP_PARCEL_DESTINATION "parcelDestination"

typedef enum iotgw_hubmsg_encoding {
    IOTGW_HUBMSG_PROTOBUF = 0,
    IOTGW_HUBMSG_JSON = 1,
} iotgw_hubmsg_encoding;

typedef struct iotgw_hubmsg_options {
    iotgw_hubmsg_encoding encoding;
    const char *message_id;           /* NULL: left unset */
    int64_t creation_time_ms;         /* 0: left unset */
    const iotgw_type_registry *types; /* for JSON encoding; NULL: content stays base64 */
} iotgw_hubmsg_options;

/* Fill msg (cleared first) from the parcel. */
int iotgw_hubmsg_from_parcel(const Iotgw__Parcel *p, const iotgw_hubmsg_options *opt, pn_message_t *msg,
                             iotgw_diag *diag);

/* Read a parcel back from a hub message of either encoding (told apart by content-type;
 * none at all is taken as protobuf). */
int iotgw_hubmsg_to_parcel(pn_message_t *msg, const iotgw_type_registry *types, Iotgw__Parcel **out,
                           iotgw_diag *diag);

#endif
