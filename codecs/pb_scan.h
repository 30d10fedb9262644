/*
 * pb_scan: looks at protobuf wire bytes without a schema, for what a decoded message
 * no longer shows. protobuf-c hands strings out NUL-terminated, so "dev-1\0dev-2" reads
 * as "dev-1"; whoever must refuse such a string asks here first.
 *
 * Pure functions: no allocation, no state; safe from any thread.
 */
#ifndef IOTGW_CODECS_PB_SCAN_H
#define IOTGW_CODECS_PB_SCAN_H

#include <stddef.h>
#include <stdint.h>

/* Does any occurrence of length-delimited field `inner` inside any occurrence of
 * length-delimited field `outer` of the message msg[0..len) contain a NUL byte?
 * 1 yes, 0 no, -1 the bytes are not a well-formed protobuf message (the caller's
 * decoder would refuse them anyway). */
int iotgw_pb_nested_field_has_nul(const uint8_t *msg, size_t len, uint32_t outer, uint32_t inner);

#endif
