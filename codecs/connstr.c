#include "codecs/connstr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codecs/base64.h"
#include "codecs/identity.h"
#include "codecs/kvlist.h"
#include "codecs/sas.h"

#define CONNSTR_MAX_LEN 8192

enum field_id { F_HOST, F_DEVICE, F_MODULE, F_KEY, F_KEYNAME, F_SAS, F_GATEWAY, F_X509, F_COUNT };

static const char *const field_names[F_COUNT] = {
    "HostName",
    "DeviceId",
    "ModuleId",
    "SharedAccessKey",
    "SharedAccessKeyName",
    "SharedAccessSignature",
    "GatewayHostName",
    "x509",
};

static char **field_slot(iotgw_connstr *cs, enum field_id f, char **x509_text)
{
    switch (f) {
    case F_HOST: return &cs->host_name;
    case F_DEVICE: return &cs->device_id;
    case F_MODULE: return &cs->module_id;
    case F_KEY: return &cs->shared_access_key;
    case F_KEYNAME: return &cs->shared_access_key_name;
    case F_SAS: return &cs->shared_access_signature;
    case F_GATEWAY: return &cs->gateway_host_name;
    default: return x509_text;
    }
}

static int check_host(const char *field, const char *v, iotgw_diag *diag)
{
    size_t n = strlen(v);
    if (n > 253)
        return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_BAD_VALUE, "%s is longer than a DNS name can be",
                               field);
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '.'))
            return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_BAD_VALUE,
                                   "%s has a character not allowed in a host name at offset %zu", field, i);
    }
    return IOTGW_OK;
}

static int check_key(const char *v, iotgw_diag *diag)
{
    size_t n = strlen(v);
    uint8_t *tmp = malloc(iotgw_base64_decoded_max(n) + 1);
    if (!tmp)
        return IOTGW_ERR_NOMEM;
    size_t len = 0;
    int rc = iotgw_base64_decode(v, n, tmp, &len, IOTGW_BASE64_STRICT, NULL);
    free(tmp);
    if (rc || len == 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_BAD_VALUE, "SharedAccessKey is not valid base64");
    return IOTGW_OK;
}

static int check_values(iotgw_connstr *cs, const char *x509_text, iotgw_diag *diag)
{
    int rc;
    if (!cs->host_name)
        return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_MISSING_FIELD, "HostName is missing");
    if ((rc = check_host("HostName", cs->host_name, diag)))
        return rc;
    if (cs->gateway_host_name && (rc = check_host("GatewayHostName", cs->gateway_host_name, diag)))
        return rc;
    iotgw_diag sub;
    if (cs->device_id && iotgw_identity_check(cs->device_id, "DeviceId", &sub))
        return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_BAD_VALUE, "%s", sub.text);
    if (cs->module_id && iotgw_identity_check(cs->module_id, "ModuleId", &sub))
        return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_BAD_VALUE, "%s", sub.text);
    if (cs->shared_access_key && (rc = check_key(cs->shared_access_key, diag)))
        return rc;
    if (x509_text) {
        if (!strcasecmp(x509_text, "true"))
            cs->x509 = 1;
        else if (strcasecmp(x509_text, "false") != 0)
            return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_BAD_VALUE, "x509 must be 'true' or 'false'");
    }
    if (cs->shared_access_signature) {
        iotgw_sas_token t;
        if (iotgw_sas_parse(cs->shared_access_signature, &t, &sub))
            return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_BAD_VALUE, "SharedAccessSignature: %s", sub.text);
        iotgw_sas_token_clear(&t);
    }
    return IOTGW_OK;
}

static int check_combination(iotgw_connstr *cs, iotgw_diag *diag)
{
    if (cs->module_id && !cs->device_id)
        return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_MISSING_FIELD, "ModuleId needs a DeviceId");
    if (!cs->device_id) {
        if (!cs->shared_access_key_name)
            return iotgw_diag_fail(
                diag, IOTGW_ERR_CONNSTR_MISSING_FIELD,
                "DeviceId is missing (device string) or SharedAccessKeyName is missing (service string)");
        if (!cs->shared_access_key)
            return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_MISSING_FIELD, "SharedAccessKey is missing");
        if (cs->shared_access_signature || cs->x509)
            return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_CONFLICT,
                                   "a service connection string takes SharedAccessKey only");
        cs->kind = IOTGW_CONNSTR_SERVICE;
        return IOTGW_OK;
    }
    int methods = !!cs->shared_access_key + !!cs->shared_access_signature + !!cs->x509;
    if (methods == 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_MISSING_FIELD,
                               "one of SharedAccessKey, SharedAccessSignature or x509=true is needed");
    if (methods > 1)
        return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_CONFLICT,
                               "use only one of SharedAccessKey, SharedAccessSignature and x509=true");
    if (cs->shared_access_key_name && !cs->shared_access_key)
        return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_CONFLICT, "SharedAccessKeyName needs SharedAccessKey");
    cs->kind = cs->module_id ? IOTGW_CONNSTR_MODULE : IOTGW_CONNSTR_DEVICE;
    return IOTGW_OK;
}

static int parse_pair(iotgw_connstr *cs, const iotgw_kv *kv, char **x509_text, iotgw_diag *diag)
{
    size_t klen = kv->key_len;
    const char *p = kv->key;
    if (klen == 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_SYNTAX, "empty field name at offset %zu", kv->offset);
    for (int f = 0; f < F_COUNT; f++) {
        if (strlen(field_names[f]) != klen)
            continue;
        if (strncmp(p, field_names[f], klen) != 0) {
            if (strncasecmp(p, field_names[f], klen) == 0)
                return iotgw_diag_fail(
                    diag, IOTGW_ERR_CONNSTR_UNKNOWN_FIELD,
                    "unknown field '%.*s' (field names are case-sensitive: did you mean '%s'?)", (int)klen, p,
                    field_names[f]);
            continue;
        }
        char **slot = field_slot(cs, (enum field_id)f, x509_text);
        if (*slot)
            return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_DUPLICATE_FIELD, "%s is given twice",
                                   field_names[f]);
        if (kv->value_len == 0)
            return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_BAD_VALUE, "%s is empty", field_names[f]);
        *slot = strndup(kv->value, kv->value_len);
        return *slot ? IOTGW_OK : IOTGW_ERR_NOMEM;
    }
    return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_UNKNOWN_FIELD, "unknown field '%.*s'",
                           klen > 64 ? 64 : (int)klen, p);
}

int iotgw_connstr_parse(const char *s, iotgw_connstr *out, iotgw_diag *diag)
{
    memset(out, 0, sizeof *out);
    if (!s)
        return IOTGW_ERR_INVALID_ARG;
    size_t n = strlen(s);
    if (n > CONNSTR_MAX_LEN)
        return iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_SYNTAX,
                               "connection string is %zu bytes, maximum is %d", n, CONNSTR_MAX_LEN);
    char *x509_text = NULL;
    int rc = IOTGW_OK, more;
    const char *cursor = s;
    iotgw_kv kv;
    while (rc == IOTGW_OK && (more = iotgw_kv_next(s, &cursor, ';', &kv)) != 0)
        rc = more < 0 ? iotgw_diag_fail(diag, IOTGW_ERR_CONNSTR_SYNTAX, "expected Key=Value at offset %zu",
                                        kv.offset)
                      : parse_pair(out, &kv, &x509_text, diag);
    if (rc == IOTGW_OK)
        rc = check_values(out, x509_text, diag);
    if (rc == IOTGW_OK)
        rc = check_combination(out, diag);
    free(x509_text);
    if (rc)
        iotgw_connstr_clear(out);
    return rc;
}

void iotgw_connstr_clear(iotgw_connstr *cs)
{
    if (!cs)
        return;
    free(cs->host_name), free(cs->device_id), free(cs->module_id);
    free(cs->shared_access_key), free(cs->shared_access_key_name);
    free(cs->shared_access_signature), free(cs->gateway_host_name);
    memset(cs, 0, sizeof *cs);
}

char *iotgw_connstr_format(const iotgw_connstr *cs)
{
    const char *vals[F_COUNT] = {
        cs->host_name,         cs->device_id,
        cs->module_id,         cs->shared_access_key_name,
        cs->shared_access_key, cs->shared_access_signature,
        cs->gateway_host_name, cs->x509 ? "true" : NULL,
    };
    /* output order: HostName, DeviceId, ModuleId, SharedAccessKeyName, SharedAccessKey, ... */
    const char *names[F_COUNT] = {
        "HostName",        "DeviceId",
        "ModuleId",        "SharedAccessKeyName",
        "SharedAccessKey", "SharedAccessSignature",
        "GatewayHostName", "x509",
    };
    size_t need = 1;
    for (int i = 0; i < F_COUNT; i++)
        if (vals[i])
            need += strlen(names[i]) + strlen(vals[i]) + 2;
    char *out = malloc(need);
    if (!out)
        return NULL;
    size_t o = 0;
    for (int i = 0; i < F_COUNT; i++)
        if (vals[i])
            o += (size_t)snprintf(out + o, need - o, "%s%s=%s", o ? ";" : "", names[i], vals[i]);
    out[o] = '\0';
    return out;
}
