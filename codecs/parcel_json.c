#include "codecs/parcel_json.h"

#include <stdio.h>
#include <stdlib.h>

#include "codecs/json_pb.h"

/* Errors inside the content name their field relative to the content: say so. */
static void prefix_content(iotgw_diag *diag)
{
    char text[IOTGW_DIAG_TEXT_MAX];
    snprintf(text, sizeof text, "%s", diag->text);
    snprintf(diag->text, sizeof diag->text, "parcel content: %.230s", text);
}

int iotgw_parcel_to_json(const Iotgw__Parcel *p, const iotgw_type_registry *types, unsigned flags,
                         json_t **out, iotgw_diag *diag)
{
    json_t *j = NULL;
    int rc = iotgw_json_from_pb(&p->base, flags, &j, diag);
    if (rc)
        return rc;
    const ProtobufCMessageDescriptor *d = iotgw_types_find(types, p->type);
    if (!d || p->content.len == 0) { /* unknown type: content stays base64 */
        *out = j;
        return IOTGW_OK;
    }
    ProtobufCMessage *content = protobuf_c_message_unpack(d, NULL, p->content.len, p->content.data);
    if (!content) {
        json_decref(j);
        return iotgw_diag_fail(diag, IOTGW_ERR_HUBMSG_PAYLOAD, "parcel content (%zu bytes) is not a valid %s",
                               p->content.len, d->name);
    }
    if (iotgw_pb_has_unknown_fields(content)) {
        /* Fields our schema does not know (a newer sender's) would be lost in JSON:
         * keep the content lossless, as base64. */
        protobuf_c_message_free_unpacked(content, NULL);
        *out = j;
        return IOTGW_OK;
    }
    json_t *cj = NULL;
    rc = iotgw_json_from_pb(content, flags, &cj, diag);
    if (rc && diag)
        prefix_content(diag);
    protobuf_c_message_free_unpacked(content, NULL);
    if (rc == IOTGW_OK && json_object_set_new(j, "content", cj))
        rc = IOTGW_ERR_NOMEM;
    if (rc) {
        json_decref(j);
        return rc;
    }
    *out = j;
    return IOTGW_OK;
}

int iotgw_parcel_from_json(const json_t *json, const iotgw_type_registry *types, Iotgw__Parcel **out,
                           iotgw_diag *diag)
{
    if (!json_is_object(json))
        return iotgw_diag_fail(diag, IOTGW_ERR_JSON_TYPE, "parcel: expected an object");
    json_t *content = json_object_get(json, "content");
    if (!json_is_object(content)) /* absent, null or base64: the plain mapping does it */
        return iotgw_pb_from_json(&iotgw__parcel__descriptor, json, (ProtobufCMessage **)out, diag);

    json_t *envelope = json_copy((json_t *)json); /* shallow: content is not touched */
    if (!envelope)
        return IOTGW_ERR_NOMEM;
    json_object_del(envelope, "content");
    Iotgw__Parcel *p = NULL;
    int rc = iotgw_pb_from_json(&iotgw__parcel__descriptor, envelope, (ProtobufCMessage **)&p, diag);
    json_decref(envelope);
    if (rc)
        return rc;

    const ProtobufCMessageDescriptor *d = iotgw_types_find(types, p->type);
    ProtobufCMessage *inner = NULL;
    if (!d)
        rc = iotgw_diag_fail(diag, IOTGW_ERR_JSON_TYPE,
                             "field content: an object needs a known type, and '%.64s' is not one "
                             "(send content as base64 instead)",
                             p->type);
    else
        rc = iotgw_pb_from_json(d, content, &inner, diag);
    if (rc && diag && d)
        prefix_content(diag);
    if (rc == IOTGW_OK) {
        size_t len = protobuf_c_message_get_packed_size(inner);
        p->content.data = malloc(len + 1);
        if (!p->content.data)
            rc = IOTGW_ERR_NOMEM;
        else
            p->content.len = protobuf_c_message_pack(inner, p->content.data);
    }
    protobuf_c_message_free_unpacked(inner, NULL);
    if (rc) {
        iotgw__parcel__free_unpacked(p, NULL);
        return rc;
    }
    *out = p;
    return IOTGW_OK;
}
