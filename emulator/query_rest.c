/* POST /devices/query: IoT Hub's query language (emulator/query.h) over the registry's
 * device or module twins, paged as IoT Hub pages: at most x-ms-max-item-count rows (100
 * when absent, at most 1000), and x-ms-continuation on the answer when more follow, to
 * be sent back for the next page; x-ms-item-type says "twin" (SELECT *) or "raw". */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/base64.h"
#include "emulator/query.h"
#include "emulator/rest.h"
#include "transport/log.h"

#define PAGE_DEFAULT 100
#define PAGE_MAX     1000
#define TOKEN_MAX    128

static uint32_t fnv1a(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* x-ms-max-item-count: 1 or more (more than PAGE_MAX is served as PAGE_MAX); -1 if not
 * a number. */
static long page_size(iotgw_http_request *req)
{
    const char *h = iotgw_http_header(req, "x-ms-max-item-count");
    if (!h)
        return PAGE_DEFAULT;
    size_t n = strspn(h, "0123456789");
    if (!n || h[n] || n > 9 || atol(h) < 1)
        return -1;
    return atol(h) > PAGE_MAX ? PAGE_MAX : atol(h);
}

/* The token for rows from skip on: base64 of "emu1:{skip}:{the query's hash}". */
static void make_token(size_t skip, uint32_t hash, char *out, size_t len)
{
    char text[48];
    int n = snprintf(text, sizeof text, "emu1:%zu:%08" PRIx32, skip, hash);
    if (iotgw_base64_encoded_len((size_t)n) < len)
        iotgw_base64_encode((const uint8_t *)text, (size_t)n, out);
    else
        out[0] = '\0';
}

/* x-ms-continuation: the rows to skip (0 without one); -1 if it is not a token of this
 * query. */
static long long token_skip(iotgw_http_request *req, uint32_t hash)
{
    const char *h = iotgw_http_header(req, "x-ms-continuation");
    if (!h || !*h)
        return 0;
    uint8_t raw[TOKEN_MAX];
    size_t n = 0, len = strlen(h);
    if (len > TOKEN_MAX || iotgw_base64_decode(h, len, raw, &n, 0, NULL) || n >= sizeof raw)
        return -1;
    raw[n] = '\0';
    char tail;
    unsigned long long skip;
    uint32_t got;
    if (memchr(raw, '\0', n) ||
        sscanf((const char *)raw, "emu1:%llu:%8" SCNx32 "%c", &skip, &got, &tail) != 2 || got != hash ||
        skip > 1000000000ull)
        return -1;
    char again[TOKEN_MAX];
    make_token((size_t)skip, hash, again, sizeof again); /* one spelling of each token */
    return strcmp(again, h) ? -1 : (long long)skip;
}

void emu_rest_query(emu_hub *hub, iotgw_http_request *req)
{
    size_t len;
    const uint8_t *body = iotgw_http_body(req, &len);
    json_t *j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *text = json_object_get(j, "query");
    char why[400], msg[480];
    emu_query *q = NULL;
    long max = page_size(req);
    int rc;
    if (!json_is_string(text)) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT,
                      "the body must be a JSON object with the query as \"query\"");
    } else if (max < 0) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "x-ms-max-item-count must be a whole number from 1");
    } else if ((rc = emu_query_parse(json_string_value(text), json_string_length(text), &q, why,
                                     sizeof why))) {
        snprintf(msg, sizeof msg, "the query is not valid: %s", why);
        emu_rest_fail(hub, req, rc == -2 ? &E_SERVER : &E_BAD_ARGUMENT, msg);
    } else if (emu_query_from(q) == EMU_QUERY_JOBS) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "queries of devices.jobs are not served by the emulator");
    } else {
        uint32_t hash = fnv1a(json_string_value(text), json_string_length(text));
        long long skip = token_skip(req, hash);
        emu_query_run *run = skip < 0 ? NULL : emu_query_run_new(q, (size_t)skip, (size_t)max);
        if (skip < 0) {
            emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "x-ms-continuation is not a continuation of this query");
        } else if (!run) {
            emu_rest_fail(hub, req, &E_SERVER, "out of memory");
        } else {
            emu_registry *r = emu_hub_registry(hub);
            int modules = emu_query_from(q) == EMU_QUERY_MODULES;
            for (int i = 0, done = 0; i < emu_registry_count(r) && !done; i++) {
                emu_identity *id = emu_registry_at(r, i);
                if (!id->module_id != !modules)
                    continue;
                json_t *doc = emu_rest_twin_document(hub, id);
                done = emu_query_run_add(run, doc);
                json_decref(doc);
            }
            int more;
            json_t *rows = emu_query_run_finish(run, &more);
            char headers[64 + TOKEN_MAX], token[TOKEN_MAX];
            make_token((size_t)skip + json_array_size(rows), hash, token, sizeof token);
            snprintf(headers, sizeof headers, "x-ms-item-type: %s\r\n%s%s%s",
                     emu_query_selects_documents(q) ? "twin" : "raw", more ? "x-ms-continuation: " : "",
                     more ? token : "", more ? "\r\n" : "");
            if (rows)
                emu_rest_json(hub, req, 200, rows, headers);
            else
                emu_rest_fail(hub, req, &E_SERVER, "out of memory");
        }
    }
    emu_query_free(q);
    json_decref(j);
}
