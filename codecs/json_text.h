/*
 * Compact JSON text from a jansson tree, with numbers written in their shortest form
 * that reads back to the same double (jansson writes 0.1 as 0.10000000000000001).
 * Keys keep their insertion order. Non-finite reals are not valid JSON and are refused.
 *
 * Ownership: returns a malloc'd NUL-terminated string, or NULL (out of memory, or a
 * tree holding a non-finite real). Threading: pure and reentrant.
 */
#ifndef IOTGW_CODECS_JSON_TEXT_H
#define IOTGW_CODECS_JSON_TEXT_H

#include <jansson.h>

char *iotgw_json_text(const json_t *json);

#endif
