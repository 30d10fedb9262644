/*
 * IoT Hub connection strings: `Key=Value` pairs separated by ';'.
 *
 *   device:  HostName=h;DeviceId=d;SharedAccessKey=k          (or SharedAccessSignature=...,
 *            or x509=true; optional ModuleId=m, GatewayHostName=g; SharedAccessKeyName=p with
 *            SharedAccessKey makes it a policy-signed device string, as the C# SDK allows)
 *   service: HostName=h;SharedAccessKeyName=p;SharedAccessKey=k
 *
 * Field names are case-sensitive as in the SDKs; a field named with the wrong case or
 * an unknown one is an error that names it. A value may contain '=' (base64 padding,
 * embedded tokens). Errors name the offending field, never its value when it is secret.
 *
 * Ownership: the parsed struct owns its strings until iotgw_connstr_clear();
 * iotgw_connstr_format() returns a malloc'd string.
 * Threading: pure and reentrant. Errors: IOTGW_ERR_CONNSTR_*.
 */
#ifndef IOTGW_CODECS_CONNSTR_H
#define IOTGW_CODECS_CONNSTR_H

#include "codecs/error.h"

typedef enum iotgw_connstr_kind {
    IOTGW_CONNSTR_DEVICE = 1,
    IOTGW_CONNSTR_MODULE = 2,
    IOTGW_CONNSTR_SERVICE = 3,
} iotgw_connstr_kind;

typedef struct iotgw_connstr {
    iotgw_connstr_kind kind;
    char *host_name;
    char *device_id;
    char *module_id;
    char *shared_access_key;       /* base64, validated */
    char *shared_access_key_name;  /* policy name */
    char *shared_access_signature; /* a ready-made token, validated as one */
    char *gateway_host_name;
    int x509;
} iotgw_connstr;

int iotgw_connstr_parse(const char *s, iotgw_connstr *out, iotgw_diag *diag);
void iotgw_connstr_clear(iotgw_connstr *cs);
/* The canonical text of a parsed string (fields in the SDKs' usual order). */
char *iotgw_connstr_format(const iotgw_connstr *cs);

#endif
