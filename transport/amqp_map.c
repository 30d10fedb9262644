#include "transport/amqp_map.h"

#include <stdio.h>
#include <string.h>

int iotgw_map_find(pn_data_t *map, const char *key)
{
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
