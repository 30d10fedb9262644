#include "codecs/sas.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "codecs/base64.h"
#include "codecs/kvlist.h"
#include "codecs/percent.h"

#define SAS_PREFIX "SharedAccessSignature "
#define HMAC_LEN   32
/* Generous bound on a token: SDK tokens are ~200 bytes. */
#define SAS_MAX_LEN 4096

/* key_text: Event Hubs' way, the key's text itself is the HMAC key; else IoT Hub's, its
 * base64-decoded bytes. */
static int hmac_sign(const char *key_base64, int key_text, const char *sr, const char *se_text,
                     uint8_t mac[HMAC_LEN], iotgw_diag *diag)
{
    size_t klen = strlen(key_base64);
    uint8_t *key = malloc(iotgw_base64_decoded_max(klen) + klen + 1);
    if (!key)
        return IOTGW_ERR_NOMEM;
    size_t key_len = key_text ? klen : 0;
    if (key_text)
        memcpy(key, key_base64, klen);
    if (klen == 0 ||
        (!key_text && iotgw_base64_decode(key_base64, klen, key, &key_len, IOTGW_BASE64_STRICT, NULL))) {
        free(key);
        return iotgw_diag_fail(diag, IOTGW_ERR_SAS_BAD_KEY, "shared access key is not valid base64");
    }
    size_t sr_len = strlen(sr), se_len = strlen(se_text);
    char *msg = malloc(sr_len + 1 + se_len + 1);
    if (!msg) {
        OPENSSL_cleanse(key, key_len);
        free(key);
        return IOTGW_ERR_NOMEM;
    }
    memcpy(msg, sr, sr_len);
    msg[sr_len] = '\n';
    memcpy(msg + sr_len + 1, se_text, se_len + 1);
    unsigned int mac_len = 0;
    const uint8_t *ok =
        HMAC(EVP_sha256(), key, (int)key_len, (const uint8_t *)msg, sr_len + 1 + se_len, mac, &mac_len);
    OPENSSL_cleanse(key, key_len);
    free(key);
    free(msg);
    return ok && mac_len == HMAC_LEN ? IOTGW_OK : IOTGW_ERR_INTERNAL;
}

int iotgw_sas_build(const char *resource_uri, const char *key_base64, uint64_t expiry, const char *skn,
                    char **token, iotgw_diag *diag)
{
    if (!resource_uri || !*resource_uri || !key_base64 || !token)
        return IOTGW_ERR_INVALID_ARG;
    char se[24];
    snprintf(se, sizeof se, "%" PRIu64, expiry);
    char *sr = iotgw_percent_encode(resource_uri);
    if (!sr)
        return IOTGW_ERR_NOMEM;
    uint8_t mac[HMAC_LEN];
    int rc = hmac_sign(key_base64, 0, sr, se, mac, diag);
    if (rc) {
        free(sr);
        return rc;
    }
    char sig_b64[64];
    iotgw_base64_encode(mac, sizeof mac, sig_b64);
    char *sig = iotgw_percent_encode(sig_b64);
    char *skn_enc = skn ? iotgw_percent_encode(skn) : NULL;
    if (!sig || (skn && !skn_enc)) {
        free(sr), free(sig), free(skn_enc);
        return IOTGW_ERR_NOMEM;
    }
    size_t need =
        strlen(SAS_PREFIX) + strlen(sr) + strlen(sig) + strlen(se) + (skn_enc ? strlen(skn_enc) + 5 : 0) + 16;
    char *t = malloc(need);
    if (t)
        snprintf(t, need, SAS_PREFIX "sr=%s&sig=%s&se=%s%s%s", sr, sig, se, skn_enc ? "&skn=" : "",
                 skn_enc ? skn_enc : "");
    free(sr), free(sig), free(skn_enc);
    if (!t)
        return IOTGW_ERR_NOMEM;
    *token = t;
    return IOTGW_OK;
}

void iotgw_sas_token_clear(iotgw_sas_token *t)
{
    if (!t)
        return;
    free(t->sr), free(t->sig), free(t->se_text), free(t->skn);
    memset(t, 0, sizeof *t);
}

static int parse_expiry(const char *text, uint64_t *out)
{
    size_t n = strlen(text);
    if (n == 0 || n > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        unsigned d = (unsigned)(text[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int set_field(char **slot, const char *name, const char *val, size_t n, iotgw_diag *diag)
{
    if (*slot)
        return iotgw_diag_fail(diag, IOTGW_ERR_SAS_MALFORMED, "SAS token has field '%s' twice", name);
    if (n == 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_SAS_MALFORMED, "SAS token field '%s' is empty", name);
    *slot = strndup(val, n);
    return *slot ? IOTGW_OK : IOTGW_ERR_NOMEM;
}

int iotgw_sas_parse(const char *token, iotgw_sas_token *out, iotgw_diag *diag)
{
    memset(out, 0, sizeof *out);
    if (!token)
        return IOTGW_ERR_INVALID_ARG;
    size_t tlen = strlen(token);
    if (tlen > SAS_MAX_LEN)
        return iotgw_diag_fail(diag, IOTGW_ERR_SAS_MALFORMED, "SAS token is %zu bytes, maximum is %d", tlen,
                               SAS_MAX_LEN);
    if (strncmp(token, SAS_PREFIX, strlen(SAS_PREFIX)) != 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_SAS_MALFORMED,
                               "SAS token does not start with 'SharedAccessSignature '");
    char *sig_written = NULL;
    int rc = IOTGW_OK, more;
    const char *fields = token + strlen(SAS_PREFIX), *cursor = fields;
    iotgw_kv kv;
    while (rc == IOTGW_OK && (more = iotgw_kv_next(fields, &cursor, '&', &kv)) != 0) {
        if (more < 0) {
            rc = iotgw_diag_fail(diag, IOTGW_ERR_SAS_MALFORMED, "SAS token field at offset %zu has no '='",
                                 kv.offset + strlen(SAS_PREFIX));
            break;
        }
        static const char *const names[] = {"sr", "sig", "se", "skn"};
        char **slots[] = {&out->sr, &sig_written, &out->se_text, &out->skn};
        for (int i = 0; i < 4; i++)
            if (kv.key_len == strlen(names[i]) && !strncmp(kv.key, names[i], kv.key_len))
                rc = set_field(slots[i], names[i], kv.value, kv.value_len, diag);
    }
    if (rc == IOTGW_OK) {
        const char *missing = !out->sr ? "sr" : !sig_written ? "sig" : !out->se_text ? "se" : NULL;
        if (missing)
            rc = iotgw_diag_fail(diag, IOTGW_ERR_SAS_MALFORMED, "SAS token has no '%s' field", missing);
    }
    if (rc == IOTGW_OK && parse_expiry(out->se_text, &out->se))
        rc =
            iotgw_diag_fail(diag, IOTGW_ERR_SAS_MALFORMED, "SAS token field 'se' is not a number of seconds");
    if (rc == IOTGW_OK && iotgw_percent_decode(sig_written, strlen(sig_written), &out->sig, NULL) != IOTGW_OK)
        rc = iotgw_diag_fail(diag, IOTGW_ERR_SAS_MALFORMED, "SAS token field 'sig' is badly percent-encoded");
    if (rc == IOTGW_OK && out->skn) {
        char *skn = NULL;
        if (iotgw_percent_decode(out->skn, strlen(out->skn), &skn, NULL) != IOTGW_OK)
            rc = iotgw_diag_fail(diag, IOTGW_ERR_SAS_MALFORMED,
                                 "SAS token field 'skn' is badly percent-encoded");
        free(out->skn);
        out->skn = skn;
    }
    free(sig_written);
    if (rc)
        iotgw_sas_token_clear(out);
    return rc;
}

static int verify(const iotgw_sas_token *t, const char *key_base64, int key_text, uint64_t now,
                  iotgw_diag *diag)
{
    if (!t || !t->sr || !t->sig || !t->se_text || !key_base64)
        return IOTGW_ERR_INVALID_ARG;
    uint8_t mac[HMAC_LEN];
    int rc = hmac_sign(key_base64, key_text, t->sr, t->se_text, mac, diag);
    if (rc)
        return rc;
    uint8_t given[HMAC_LEN + 3];
    size_t given_len = 0, slen = strlen(t->sig);
    /* A signature that does not even decode to 32 bytes cannot match; decoding the
     * given text (not encoding ours) means base64 variants of the same bytes agree. */
    int match = slen <= 44 &&
                iotgw_base64_decode(t->sig, slen, given, &given_len, IOTGW_BASE64_STRICT, NULL) == 0 &&
                given_len == HMAC_LEN && CRYPTO_memcmp(given, mac, HMAC_LEN) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
    if (!match)
        return iotgw_diag_fail(diag, IOTGW_ERR_SAS_SIGNATURE,
                               "SAS token signature does not match the key for '%s'", t->sr);
    if (now >= t->se)
        return iotgw_diag_fail(diag, IOTGW_ERR_SAS_EXPIRED,
                               "SAS token for '%s' expired at %" PRIu64 " (now %" PRIu64 ")", t->sr, t->se,
                               now);
    return IOTGW_OK;
}

int iotgw_sas_verify(const iotgw_sas_token *t, const char *key_base64, uint64_t now, iotgw_diag *diag)
{
    return verify(t, key_base64, 0, now, diag);
}

int iotgw_sas_verify_key_text(const iotgw_sas_token *t, const char *key, uint64_t now, iotgw_diag *diag)
{
    return verify(t, key, 1, now, diag);
}

/* Next '/'-separated segment of *p, or NULL at the end. */
static const char *next_segment(const char **p, size_t *len)
{
    while (**p == '/')
        (*p)++;
    if (!**p)
        return NULL;
    const char *s = *p;
    const char *e = strchr(s, '/');
    *len = e ? (size_t)(e - s) : strlen(s);
    *p = s + *len;
    return s;
}

static int covers(const iotgw_sas_token *t, const char *host, const char *device_id, const char *module_id,
                  int exactly, iotgw_diag *diag)
{
    if (!t || !t->sr || !host || !device_id)
        return IOTGW_ERR_INVALID_ARG;
    char *sr = NULL;
    if (iotgw_percent_decode(t->sr, strlen(t->sr), &sr, NULL) != IOTGW_OK)
        return iotgw_diag_fail(diag, IOTGW_ERR_SAS_RESOURCE,
                               "SAS token resource '%s' is badly percent-encoded", t->sr);

    const char *path = strchr(sr, '/');
    size_t host_len = path ? (size_t)(path - sr) : strlen(sr);
    int ok = host_len == strlen(host) && strncasecmp(sr, host, host_len) == 0;

    /* The identity's own path, segment by segment; sr's segments must be a prefix. */
    const char *want[4] = {"devices", device_id, module_id ? "modules" : NULL, module_id};
    size_t nwant = module_id ? 4 : 2;
    const char *p = path ? path : "";
    size_t i = 0, seglen = 0;
    const char *seg;
    while (ok && (seg = next_segment(&p, &seglen)) != NULL) {
        /* "devices" and "modules" are matched like the hub's addresses, ignoring case;
         * ids are case-sensitive. */
        ok = i < nwant && seglen == strlen(want[i]) &&
             ((i % 2 == 0) ? strncasecmp(seg, want[i], seglen) : strncmp(seg, want[i], seglen)) == 0;
        i++;
    }
    free(sr);
    if (ok && exactly && i != nwant)
        return iotgw_diag_fail(diag, IOTGW_ERR_SAS_RESOURCE,
                               "SAS token resource '%s' is not %s/devices/%s%s%s", t->sr, host, device_id,
                               module_id ? "/modules/" : "", module_id ? module_id : "");
    if (!ok)
        return iotgw_diag_fail(diag, IOTGW_ERR_SAS_RESOURCE,
                               "SAS token resource '%s' does not cover %s/devices/%s%s%s", t->sr, host,
                               device_id, module_id ? "/modules/" : "", module_id ? module_id : "");
    return IOTGW_OK;
}

int iotgw_sas_covers(const iotgw_sas_token *t, const char *host, const char *device_id, const char *module_id,
                     iotgw_diag *diag)
{
    return covers(t, host, device_id, module_id, 0, diag);
}

int iotgw_sas_names(const iotgw_sas_token *t, const char *host, const char *device_id, const char *module_id,
                    iotgw_diag *diag)
{
    return covers(t, host, device_id, module_id, 1, diag);
}
