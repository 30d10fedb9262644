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

static void parcel_round_trip(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return;
    Iotgw__Parcel *p = NULL;
    if (iotgw_parcel_from_json(j, iotgw_types_builtin(), &p, NULL) == IOTGW_OK) {
        json_t *back = NULL;
        if (iotgw_parcel_to_json(p, iotgw_types_builtin(), 0, &back, NULL) == IOTGW_OK) {
            Iotgw__Parcel *again = NULL;
            if (iotgw_parcel_from_json(back, iotgw_types_builtin(), &again, NULL) != IOTGW_OK)
                abort();
            same_bytes(&p->base, &again->base);
            iotgw__parcel__free_unpacked(again, NULL);
            json_decref(back);
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
