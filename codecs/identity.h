/*
 * IoT Hub identity names. A device or module id is 1..128 characters of ASCII letters,
 * digits and - . + % _ # * ? ! ( ) , : = @ $ ' (IoT Hub's documented set).
 *
 * Threading: pure and reentrant. Errors: IOTGW_ERR_INVALID_ARG with the reason.
 */
#ifndef IOTGW_CODECS_IDENTITY_H
#define IOTGW_CODECS_IDENTITY_H

#include "codecs/error.h"

#define IOTGW_IDENTITY_MAX_LEN 128

/* what names the value in the message, e.g. "DeviceId". */
int iotgw_identity_check(const char *id, const char *what, iotgw_diag *diag);

#endif
