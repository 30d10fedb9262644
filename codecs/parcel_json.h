/*
 * A Parcel as JSON with its content readable: when the parcel's `type` is in the type
 * registry, `content` is written as that message's JSON object instead of base64:
 *
 *   {"source":{"name":"alarm-agent-1"},"destination":{"name":"alarm-monitor-1"},
 *    "type":"iotgw.AlarmStatus","content":{"alarmActive":true,"timeUtc":"12:00:00",...}}
 *
 * Content whose type is unknown, or which holds fields the compiled-in schema does not
 * know (a newer sender's), stays base64 so that nothing is lost.
 *
 * This is the form the hub's message routing can query and the form direct-method
 * payloads carry (the hub's methods take JSON only). Reading accepts `content` as such
 * an object (the type must then be known) or as a base64 string.
 *
 * Ownership: *out JSON is a new reference; *out parcels are freed with
 * iotgw__parcel__free_unpacked(p, NULL). Threading: pure and reentrant.
 * Errors: IOTGW_ERR_JSON_* naming the field, IOTGW_ERR_HUBMSG_PAYLOAD when the
 * content does not parse as its declared type.
 */
#ifndef IOTGW_CODECS_PARCEL_JSON_H
#define IOTGW_CODECS_PARCEL_JSON_H

#include <jansson.h>

#include "codecs/error.h"
#include "codecs/types.h"
#include "schemas/parcel.pb-c.h"

int iotgw_parcel_to_json(const Iotgw__Parcel *p, const iotgw_type_registry *types, unsigned flags,
                         json_t **out, iotgw_diag *diag);
int iotgw_parcel_from_json(const json_t *json, const iotgw_type_registry *types, Iotgw__Parcel **out,
                           iotgw_diag *diag);

#endif
