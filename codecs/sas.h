/*
 * Shared access signature (SAS) tokens, built, parsed and checked as IoT Hub does:
 *
 *   SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={policy}]
 *
 * sig is the URL-encoded base64 of HMAC-SHA256(base64-decoded key, sr + "\n" + se),
 * computed over sr and se exactly as they are written in the token (SDKs differ in how
 * they encode sr, and each signs what it writes). Field order is free. Unknown fields
 * are ignored; a field given twice makes the token malformed.
 *
 * A token expires at `se` (seconds since 1970-01-01 UTC): it is valid while now < se.
 * Callers pass `now`, so tests control the clock.
 *
 * Ownership: iotgw_sas_build() returns a malloc'd string; iotgw_sas_parse() fills a
 * struct whose strings are owned by it until iotgw_sas_token_clear().
 * Threading: pure and reentrant. Errors: IOTGW_ERR_SAS_*, details in the diag (which
 * never contains key material or signatures).
 */
#ifndef IOTGW_CODECS_SAS_H
#define IOTGW_CODECS_SAS_H

#include <stdint.h>

#include "codecs/error.h"

typedef struct iotgw_sas_token {
    char *sr;      /* as written in the token (percent-encoded or not) */
    char *sig;     /* percent-decoded: the base64 text of the signature */
    char *se_text; /* as written */
    uint64_t se;   /* expiry, seconds since the epoch */
    char *skn;     /* policy name, or NULL for a device or module key */
} iotgw_sas_token;

/* Build a token for resource_uri (e.g. "myhub.azure-devices.net/devices/dev1"), written
 * in sr percent-encoded as the Node and C# SDKs do. skn may be NULL. */
int iotgw_sas_build(const char *resource_uri, const char *key_base64, uint64_t expiry, const char *skn,
                    char **token, iotgw_diag *diag);

int iotgw_sas_parse(const char *token, iotgw_sas_token *out, iotgw_diag *diag);
void iotgw_sas_token_clear(iotgw_sas_token *t);

/* Check the signature against key_base64 (in constant time) and the expiry against now.
 * IOTGW_ERR_SAS_SIGNATURE, IOTGW_ERR_SAS_EXPIRED or IOTGW_ERR_SAS_BAD_KEY on failure. */
int iotgw_sas_verify(const iotgw_sas_token *t, const char *key_base64, uint64_t now, iotgw_diag *diag);
/* The same, the way Event Hubs (and Service Bus) sign: the HMAC key is the key's text, not
 * its decoded bytes (@azure/core-amqp signs so, and IoT Hub's Event Hub-compatible
 * endpoint, an Event Hubs namespace, checks so). */
int iotgw_sas_verify_key_text(const iotgw_sas_token *t, const char *key, uint64_t now, iotgw_diag *diag);

/* Does the token's resource grant access to device_id (and module_id, may be NULL) on
 * host? sr is percent-decoded, its host compared case-insensitively and its path as a
 * prefix by whole segments: "{host}" and "{host}/devices" cover every device,
 * "{host}/devices/{id}" covers the device and its modules. 0 or IOTGW_ERR_SAS_RESOURCE. */
int iotgw_sas_covers(const iotgw_sas_token *t, const char *host, const char *device_id, const char *module_id,
                     iotgw_diag *diag);
/* Is the token's resource exactly the identity's own, "{host}/devices/{id}" (with
 * "/modules/{module}" when module_id is set), compared as iotgw_sas_covers does? A token
 * a device signs for itself must name itself, not the whole hub. 0 or IOTGW_ERR_SAS_RESOURCE. */
int iotgw_sas_names(const iotgw_sas_token *t, const char *host, const char *device_id, const char *module_id,
                    iotgw_diag *diag);

#endif
