/*
 * JSON <-> protobuf-c messages, driven by ProtobufCMessageDescriptor, following the
 * proto3 JSON mapping, so that every compiled-in schema transcodes without code of its
 * own:
 *
 *   int32/uint32 and kin   JSON number (strings holding an integer are accepted)
 *   int64/uint64 and kin   JSON string of decimal digits (numbers are accepted)
 *   float/double           JSON number, or "NaN", "Infinity", "-Infinity"
 *   bool                   true / false
 *   string                 JSON string (must be valid UTF-8 both ways)
 *   bytes                  standard base64 (URL-safe and unpadded are accepted)
 *   enum                   the value's name (numbers are accepted)
 *   message                object; repeated field: array; null: the field's default
 *
 * Field names are written in lowerCamelCase ("local_id" -> "localId"); both that and
 * the .proto name are read. Fields holding their default value are left out unless
 * IOTGW_JSON_EMIT_DEFAULTS is given. protobuf-c descriptors do not mark map fields,
 * so a map reads and writes as an array of {"key":..,"value":..} objects.
 *
 * Errors name the field by its path from the root, e.g. "source.localId" or
 * "properties[2].key": unknown fields, values of the wrong type, numbers out of range,
 * unknown enum names, two members of one oneof, nesting beyond IOTGW_JSON_MAX_DEPTH.
 *
 * Ownership: *out JSON is a new reference (json_decref); *out messages are freed with
 * protobuf_c_message_free_unpacked(msg, NULL); text is malloc'd.
 * Threading: pure and reentrant.
 */
#ifndef IOTGW_CODECS_JSON_PB_H
#define IOTGW_CODECS_JSON_PB_H

#include <stddef.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "codecs/error.h"

#define IOTGW_JSON_MAX_DEPTH 32

#define IOTGW_JSON_EMIT_DEFAULTS 1u /* write every scalar field, default or not */
#define IOTGW_JSON_PROTO_NAMES   2u /* write .proto field names instead of lowerCamelCase */

int iotgw_json_from_pb(const ProtobufCMessage *msg, unsigned flags, json_t **out, iotgw_diag *diag);
int iotgw_pb_from_json(const ProtobufCMessageDescriptor *desc, const json_t *json, ProtobufCMessage **out,
                       iotgw_diag *diag);

/* Does msg, or any message inside it, hold fields its schema does not know? The JSON
 * mapping cannot carry them, so a caller that must not lose data checks this first. */
int iotgw_pb_has_unknown_fields(const ProtobufCMessage *msg);

/* The same, to and from JSON text. */
int iotgw_json_text_from_pb(const ProtobufCMessage *msg, unsigned flags, char **text, iotgw_diag *diag);
int iotgw_pb_from_json_text(const ProtobufCMessageDescriptor *desc, const char *text, size_t len,
                            ProtobufCMessage **out, iotgw_diag *diag);

#endif
