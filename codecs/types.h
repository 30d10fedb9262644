/*
 * Registry of payload message types the product knows, by protobuf name, so that a
 * Parcel's `type` can be turned into its descriptor (for JSON transcoding) without
 * code per type.
 *
 * Ownership: registries and descriptors are static; nothing to free.
 * Threading: read-only, safe from any thread.
 */
#ifndef IOTGW_CODECS_TYPES_H
#define IOTGW_CODECS_TYPES_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

typedef struct iotgw_type_registry {
    const ProtobufCMessageDescriptor *const *types;
    size_t n_types;
} iotgw_type_registry;

/* Every message type compiled in from schemas/ (iotgw.AlarmStatus, iotgw.Parcel, ...). */
const iotgw_type_registry *iotgw_types_builtin(void);

/* Find a type by its full name ("iotgw.AlarmStatus", a leading '.' allowed) or, when
 * unambiguous, its short name ("AlarmStatus"). NULL when unknown. */
const ProtobufCMessageDescriptor *iotgw_types_find(const iotgw_type_registry *r, const char *name);

#endif
