/* Reading the maps of an AMQP message (application properties, message annotations)
 * as IoT Hub uses them: keys are strings (properties) or symbols (annotations); lookups
 * compare key text whichever of the two it is. Used by both ends of the hub protocol.
 *
 * Ownership: returned pointers point into the caller's pn_data_t (or its buf) and live
 * as long as it is unchanged. Threading: as for the data object. Errors: -1 when the
 * key is absent or its value of another type. */
#ifndef IOTGW_TRANSPORT_AMQP_MAP_H
#define IOTGW_TRANSPORT_AMQP_MAP_H

#include <stdint.h>
#include <proton/codec.h>

/* Position data on the value under key in the map at its top level; 0 when found. A NULL
 * map has no keys. */
int iotgw_map_find(pn_data_t *map, const char *key);
/* The string or symbol under key, copied into buf; NULL when absent, of another type or
 * too long for buf (a cut value could pass for another). */
const char *iotgw_map_text(pn_data_t *map, const char *key, char *buf, size_t len);
/* The integer under key (any AMQP integer type); 0 when found. */
int iotgw_map_int(pn_data_t *map, const char *key, int64_t *out);
/* A message-id or correlation-id as text, newly allocated (free it): a string as is, a
 * ulong in decimal, a uuid as 8-4-4-4-12 hex digits, "" for any other type; NULL when
 * out of memory. */
char *iotgw_atom_text(pn_atom_t a);
/* The body as bytes: a data section, or an amqp-value string or binary. NULL: none. */
const char *iotgw_body_bytes(pn_data_t *body, size_t *len);

#endif
