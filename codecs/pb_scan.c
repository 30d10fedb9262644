/* Schema-less walks over protobuf wire bytes (codecs/pb_scan.h). */
#include <string.h>

#include "codecs/pb_scan.h"

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* The next field of [*p, end): its number, and for a length-delimited one its bytes. */
static int next_field(const uint8_t **p, const uint8_t *end, uint32_t *number, const uint8_t **data,
                      size_t *len)
{
    uint64_t key, n;
    /* field 0 is not valid protobuf, but protobuf-c skips it as an unknown field: so do we */
    if (varint(p, end, &key) || key >> 3 > UINT32_MAX)
        return -1;
    *number = (uint32_t)(key >> 3);
    *data = NULL;
    *len = 0;
    switch (key & 7) {
    case WIRE_VARINT: return varint(p, end, &n);
    case WIRE_I64:
        if (end - *p < 8)
            return -1;
        *p += 8;
        return 0;
    case WIRE_I32:
        if (end - *p < 4)
            return -1;
        *p += 4;
        return 0;
    case WIRE_LEN:
        if (varint(p, end, &n) || n > (uint64_t)(end - *p))
            return -1;
        *data = *p;
        *len = (size_t)n;
        *p += n;
        return 0;
    default: return -1; /* groups are not used by proto3 */
    }
}

int iotgw_pb_nested_field_has_nul(const uint8_t *msg, size_t len, uint32_t outer, uint32_t inner)
{
    const uint8_t *p = msg, *end = msg + len;
    int found = 0;
    while (p < end) {
        uint32_t number;
        const uint8_t *sub;
        size_t sublen;
        if (next_field(&p, end, &number, &sub, &sublen))
            return -1;
        if (number != outer || !sub)
            continue;
        const uint8_t *q = sub, *qend = sub + sublen;
        while (q < qend) {
            const uint8_t *s;
            size_t slen;
            if (next_field(&q, qend, &number, &s, &slen))
                return -1;
            if (number == inner && s && memchr(s, '\0', slen))
                found = 1;
        }
    }
    return found;
}
