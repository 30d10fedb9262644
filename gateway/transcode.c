/* Direct-method payloads between the hub's JSON and a device's protobuf, for methods
 * configured with request/response types. A Parcel's content is read and written as
 * its own type's JSON (codecs/parcel_json.h), so the cloud sends readable alarms. */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "codecs/json_pb.h"
#include "codecs/parcel_json.h"
#include "codecs/types.h"
#include "gateway/gateway_internal.h"

int gw_json_to_protobuf(const char *type, const uint8_t *json, size_t len, uint8_t **out, size_t *out_len,
                        iotgw_diag *diag)
{
    const ProtobufCMessageDescriptor *d = iotgw_types_find(iotgw_types_builtin(), type);
    if (!d)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "unknown payload type %s", type);
    ProtobufCMessage *msg = NULL;
    int rc;
    if (d == &iotgw__parcel__descriptor) {
        json_error_t jerr;
        json_t *j = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!j)
            return iotgw_diag_fail(diag, IOTGW_ERR_JSON_SYNTAX, "payload is not JSON: %s (offset %d)",
                                   jerr.text, jerr.position);
        Iotgw__Parcel *p = NULL;
        rc = iotgw_parcel_from_json(j, iotgw_types_builtin(), &p, diag);
        json_decref(j);
        msg = p ? &p->base : NULL;
    } else {
        rc = iotgw_pb_from_json_text(d, (const char *)json, len, &msg, diag);
    }
    if (rc)
        return rc;
    *out_len = protobuf_c_message_get_packed_size(msg);
    *out = malloc(*out_len ? *out_len : 1);
    if (*out)
        protobuf_c_message_pack(msg, *out);
    protobuf_c_message_free_unpacked(msg, NULL);
    return *out ? 0 : iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
}

int gw_protobuf_to_json(const char *type, const uint8_t *pb, size_t len, char **out, iotgw_diag *diag)
{
    const ProtobufCMessageDescriptor *d = iotgw_types_find(iotgw_types_builtin(), type);
    if (!d)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "unknown payload type %s", type);
    ProtobufCMessage *msg = protobuf_c_message_unpack(d, NULL, len, pb);
    if (!msg)
        return iotgw_diag_fail(diag, IOTGW_ERR_FRAME_MALFORMED, "payload does not parse as %s", d->name);
    int rc;
    if (d == &iotgw__parcel__descriptor) {
        json_t *j = NULL;
        rc = iotgw_parcel_to_json((const Iotgw__Parcel *)msg, iotgw_types_builtin(), 0, &j, diag);
        if (!rc) {
            *out = json_dumps(j, JSON_COMPACT);
            json_decref(j);
            if (!*out)
                rc = iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
        }
    } else {
        rc = iotgw_json_text_from_pb(msg, 0, out, diag);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}
