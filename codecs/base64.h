/*
 * Base64 (RFC 4648). Keys in connection strings and SAS signatures use the standard
 * alphabet with padding; proto3 JSON writes standard base64 and must read both
 * alphabets, with or without padding (IOTGW_BASE64_LENIENT).
 *
 * Threading: pure and reentrant. Errors: IOTGW_ERR_BASE64 with the offending offset.
 */
#ifndef IOTGW_CODECS_BASE64_H
#define IOTGW_CODECS_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "codecs/error.h"

#define IOTGW_BASE64_STRICT  0
#define IOTGW_BASE64_LENIENT 1 /* accept '-' '_' for '+' '/', and missing padding */

/* Characters base64 of n bytes takes, without the terminating NUL. */
size_t iotgw_base64_encoded_len(size_t n);
/* Write base64 of in[0..n) and a NUL to out (iotgw_base64_encoded_len(n) + 1 bytes). */
void iotgw_base64_encode(const uint8_t *in, size_t n, char *out);
/* Upper bound of the bytes that decoding n characters yields. */
size_t iotgw_base64_decoded_max(size_t n);
/* Decode in[0..n) into out (iotgw_base64_decoded_max(n) bytes); *out_len gets the size. */
int iotgw_base64_decode(const char *in, size_t n, uint8_t *out, size_t *out_len, int flags, iotgw_diag *diag);

#endif
