/*
 * JSON -> protobuf fuzz target over every field shape (tests/unit/all_types.proto) and
 * over Parcels with typed content.
 * Property: whatever parses writes back to JSON that parses to the same protobuf bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/json_pb.h"
#include "codecs/json_text.h"
#include "codecs/parcel_json.h"
#include "tests/unit/all_types.pb-c.h"

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len + 1);
    protobuf_c_message_pack(m, b);
    return b;
}

static void same_bytes(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t la, lb;
    uint8_t *pa = pack(a, &la), *pb = pack(b, &lb);
    if (la != lb || memcmp(pa, pb, la) != 0)
        abort();
    free(pa);
    free(pb);
}

static void round_trip(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t size)
{
    ProtobufCMessage *m = NULL;
    if (iotgw_pb_from_json_text(desc, (const char *)data, size, &m, NULL) != IOTGW_OK)
        return;
    char *text = NULL;
    if (iotgw_json_text_from_pb(m, 0, &text, NULL) == IOTGW_OK) {
        ProtobufCMessage *again = NULL;
        if (iotgw_pb_from_json_text(desc, text, strlen(text), &again, NULL) != IOTGW_OK)
            abort();
        same_bytes(m, again);
        protobuf_c_message_free_unpacked(again, NULL);
        free(text);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Parcel JSON -> Parcel -> JSON -> Parcel. The first trip may canonicalise typed content
 * (field order, varint widths, repeated scalars), so the property is that the content
 * means the same (packs the same once re-parsed) and that a second trip changes nothing. */
static Iotgw__Parcel *parcel_trip(const Iotgw__Parcel *p)
{
    json_t *j = NULL;
    if (iotgw_parcel_to_json(p, iotgw_types_builtin(), 0, &j, NULL) != IOTGW_OK)
        return NULL;
    Iotgw__Parcel *again = NULL;
    if (iotgw_parcel_from_json(j, iotgw_types_builtin(), &again, NULL) != IOTGW_OK)
        abort();
    json_decref(j);
    return again;
}

static void same_content_meaning(const Iotgw__Parcel *a, const Iotgw__Parcel *b)
{
    const ProtobufCMessageDescriptor *d = iotgw_types_find(iotgw_types_builtin(), a->type);
    if (!d) {
        if (a->content.len != b->content.len ||
            (a->content.len && memcmp(a->content.data, b->content.data, a->content.len)))
            abort();
        return;
    }
    ProtobufCMessage *ma = protobuf_c_message_unpack(d, NULL, a->content.len, a->content.data);
    ProtobufCMessage *mb = protobuf_c_message_unpack(d, NULL, b->content.len, b->content.data);
    if (!ma || !mb)
        abort();
    same_bytes(ma, mb);
    protobuf_c_message_free_unpacked(ma, NULL);
    protobuf_c_message_free_unpacked(mb, NULL);
}

static void parcel_round_trip(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return;
    Iotgw__Parcel *p = NULL;
    if (iotgw_parcel_from_json(j, iotgw_types_builtin(), &p, NULL) == IOTGW_OK) {
        Iotgw__Parcel *once = parcel_trip(p);
        if (once) {
            same_content_meaning(p, once);
            Iotgw__Parcel *twice = parcel_trip(once);
            if (!twice)
                abort();
            same_bytes(&once->base, &twice->base);
            iotgw__parcel__free_unpacked(twice, NULL);
            iotgw__parcel__free_unpacked(once, NULL);
        }
        iotgw__parcel__free_unpacked(p, NULL);
    }
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    round_trip(&iotgw__test__all_types__descriptor, data, size);
    round_trip(&iotgw__test__node__descriptor, data, size);
    parcel_round_trip(data, size);
    return 0;
}
