/*
 * Percent-encoding as IoT Hub's SDKs use it in SAS tokens and link addresses.
 *
 * Encoding follows JavaScript's encodeURIComponent (what the Node SDK writes): every
 * byte except A-Z a-z 0-9 - _ . ! ~ * ' ( ) becomes %XX with upper-case hex.
 * Decoding turns %XX into its byte and leaves '+' alone: '+' is legal in device ids
 * and is never a space here.
 *
 * Ownership: returned strings are malloc'd; the caller frees them.
 * Threading: pure and reentrant. Errors: IOTGW_ERR_PERCENT_ENCODING, IOTGW_ERR_NOMEM.
 */
#ifndef IOTGW_CODECS_PERCENT_H
#define IOTGW_CODECS_PERCENT_H

#include <stddef.h>

#include "codecs/error.h"

char *iotgw_percent_encode(const char *s);
/* Decode s[0..n). A '%' not followed by two hex digits, or an encoded NUL, is an error. */
int iotgw_percent_decode(const char *s, size_t n, char **out, iotgw_diag *diag);

#endif
