#include "codecs/types.h"

#include <string.h>

#include "schemas/alarm_status.pb-c.h"
#include "schemas/gateway.pb-c.h"
#include "schemas/parcel.pb-c.h"

static const ProtobufCMessageDescriptor *const builtin[] = {
    &iotgw__alarm_status__descriptor,
    &iotgw__parcel__descriptor,
    &iotgw__address__descriptor,
    &iotgw__frame__descriptor,
};

static const iotgw_type_registry builtin_registry = {builtin, sizeof builtin / sizeof builtin[0]};

const iotgw_type_registry *iotgw_types_builtin(void)
{
    return &builtin_registry;
}

const ProtobufCMessageDescriptor *iotgw_types_find(const iotgw_type_registry *r, const char *name)
{
    if (!r || !name)
        return NULL;
    if (name[0] == '.')
        name++;
    const ProtobufCMessageDescriptor *by_short = NULL;
    int short_matches = 0;
    for (size_t i = 0; i < r->n_types; i++) {
        if (!strcmp(r->types[i]->name, name))
            return r->types[i];
        if (!strcmp(r->types[i]->short_name, name)) {
            by_short = r->types[i];
            short_matches++;
        }
    }
    return short_matches == 1 ? by_short : NULL;
}
