/*
 * Connection string and SAS token fuzz target.
 * Properties: a string that parses formats to a string that parses to the same fields;
 * a token never verifies against a key it was not signed with... unless the fuzzer
 * found a signature, which would be a finding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/connstr.h"
#include "codecs/sas.h"

#define KEY "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';

    iotgw_connstr cs, again;
    if (iotgw_connstr_parse(s, &cs, NULL) == IOTGW_OK) {
        char *text = iotgw_connstr_format(&cs);
        if (iotgw_connstr_parse(text, &again, NULL) != IOTGW_OK)
            abort();
        if (cs.kind != again.kind || cs.x509 != again.x509 || !same(cs.host_name, again.host_name) ||
            !same(cs.device_id, again.device_id) || !same(cs.module_id, again.module_id) ||
            !same(cs.shared_access_key, again.shared_access_key) ||
            !same(cs.shared_access_key_name, again.shared_access_key_name) ||
            !same(cs.shared_access_signature, again.shared_access_signature) ||
            !same(cs.gateway_host_name, again.gateway_host_name))
            abort();
        iotgw_connstr_clear(&again);
        iotgw_connstr_clear(&cs);
        free(text);
    }

    iotgw_sas_token t;
    if (iotgw_sas_parse(s, &t, NULL) == IOTGW_OK) {
        if (iotgw_sas_verify(&t, KEY, 0, NULL) == IOTGW_OK)
            abort(); /* forged a signature */
        iotgw_sas_covers(&t, "hub.azure-devices.net", "dev", NULL, NULL);
        iotgw_sas_covers(&t, "hub.azure-devices.net", "dev", "mod", NULL);
        iotgw_sas_token_clear(&t);
    }
    free(s);
    return 0;
}
