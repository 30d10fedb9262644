#include "transport/amqp_map.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int iotgw_map_find(pn_data_t *map, const char *key)
{
    if (!map) /* e.g. pn_link_remote_properties of a link attached without properties */
        return -1;
    pn_data_rewind(map);
    if (!pn_data_next(map) || pn_data_type(map) != PN_MAP)
        return -1;
    pn_data_enter(map);
    size_t klen = strlen(key);
    while (pn_data_next(map)) {
        pn_type_t t = pn_data_type(map);
        pn_bytes_t k = t == PN_STRING   ? pn_data_get_string(map)
                       : t == PN_SYMBOL ? pn_data_get_symbol(map)
                                        : pn_bytes(0, NULL);
        if (!pn_data_next(map))
            break;
        if (k.start && k.size == klen && !memcmp(k.start, key, klen))
            return 0;
    }
    return -1;
}

const char *iotgw_map_text(pn_data_t *map, const char *key, char *buf, size_t len)
{
    if (iotgw_map_find(map, key))
        return NULL;
    pn_type_t t = pn_data_type(map);
    pn_bytes_t v = t == PN_STRING   ? pn_data_get_string(map)
                   : t == PN_SYMBOL ? pn_data_get_symbol(map)
                                    : pn_bytes(0, NULL);
    if (!v.start || v.size >= len)
        return NULL;
    snprintf(buf, len, "%.*s", (int)v.size, v.start);
    return buf;
}

int iotgw_map_int(pn_data_t *map, const char *key, int64_t *out)
{
    if (iotgw_map_find(map, key))
        return -1;
    switch (pn_data_type(map)) {
    case PN_INT: *out = pn_data_get_int(map); return 0;
    case PN_LONG: *out = pn_data_get_long(map); return 0;
    case PN_UINT: *out = pn_data_get_uint(map); return 0;
    case PN_SHORT: *out = pn_data_get_short(map); return 0;
    case PN_USHORT: *out = pn_data_get_ushort(map); return 0;
    case PN_BYTE: *out = pn_data_get_byte(map); return 0;
    case PN_UBYTE: *out = pn_data_get_ubyte(map); return 0;
    default: return -1;
    }
}

char *iotgw_atom_text(pn_atom_t a)
{
    char text[40];
    switch (a.type) {
    case PN_STRING:
    case PN_SYMBOL: return strndup(a.u.as_bytes.start ? a.u.as_bytes.start : "", a.u.as_bytes.size);
    case PN_ULONG: snprintf(text, sizeof text, "%" PRIu64, a.u.as_ulong); break;
    case PN_UUID: {
        const uint8_t *u = (const uint8_t *)a.u.as_uuid.bytes;
        snprintf(text, sizeof text, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                 u[14], u[15]);
        break;
    }
    default: text[0] = '\0';
    }
    return strdup(text);
}

const char *iotgw_body_bytes(pn_data_t *body, size_t *len)
{
    pn_data_rewind(body);
    if (!pn_data_next(body))
        return NULL;
    pn_bytes_t b;
    switch (pn_data_type(body)) {
    case PN_BINARY: b = pn_data_get_binary(body); break;
    case PN_STRING: b = pn_data_get_string(body); break;
    default: return NULL;
    }
    *len = b.size;
    return b.start ? b.start : "";
}
