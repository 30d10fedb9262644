/* Reading and writing the maps of an AMQP message (application properties, message
 * annotations) as IoT Hub uses them: keys are strings (properties) or symbols
 * (annotations); lookups compare key text whichever of the two it is. */
#ifndef IOTGW_EMULATOR_AMQP_PROPS_H
#define IOTGW_EMULATOR_AMQP_PROPS_H

#include <stdint.h>
#include <proton/codec.h>

/* Position data on the value under key in the map at its top level; 0 when found. */
int emu_map_find(pn_data_t *map, const char *key);
/* The string or symbol under key, copied into buf (truncated); NULL when absent or of
 * another type. */
const char *emu_map_text(pn_data_t *map, const char *key, char *buf, size_t len);
/* The integer under key (any AMQP integer type); 0 when found. */
int emu_map_int(pn_data_t *map, const char *key, int64_t *out);
/* The body as bytes: a data section, or an amqp-value string or binary. NULL: none. */
const char *emu_body_bytes(pn_data_t *body, size_t *len);

#endif
