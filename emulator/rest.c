#include "emulator/rest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "codecs/identity.h"
#include "codecs/percent.h"
#include "codecs/sas.h"
#include "transport/log.h"

#define MAX_PATH_SEGMENTS 6

const emu_rest_error E_UNAUTHORIZED = {401, 401002, "IotHubUnauthorizedAccess"};
const emu_rest_error E_NOT_FOUND = {404, 404001, "DeviceNotFound"};
const emu_rest_error E_ROUTE = {404, 404000, "NotFound"};
const emu_rest_error E_BAD_ARGUMENT = {400, 400004, "ArgumentInvalid"};
const emu_rest_error E_PRECONDITION = {412, 412001, "PreconditionFailed"};
const emu_rest_error E_NOT_ONLINE = {404, 404103, "DeviceNotOnline"};
const emu_rest_error E_TIMEOUT = {504, 504101, "GatewayTimeout"};
const emu_rest_error E_TOO_LARGE = {413, 413001, "MessageTooLarge"};
const emu_rest_error E_SERVER = {500, 500001, "ServerError"};
const emu_rest_error E_METHOD = {405, 405000, "MethodNotAllowed"};
const emu_rest_error E_CONFLICT = {409, 409001, "DeviceAlreadyExists"};
const emu_rest_error E_THROTTLED = {429, 429001, "ThrottlingException"};
/* not one of IoT Hub's codes: the emulator's answer to a body that is not JSON by its type */
const emu_rest_error E_MEDIA_TYPE = {415, 415000, "UnsupportedMediaType"};
/* Nor these: IoT Hub's front end refuses such requests with pages of its own; the
 * emulator answers them in the error shape of everything else. */
static const emu_rest_error E_URI_TOO_LONG = {414, 414000, "RequestUriTooLong"};
static const emu_rest_error E_HEADER_TOO_LARGE = {431, 431000, "RequestHeaderFieldsTooLarge"};

void emu_rest_answer(emu_hub *hub, iotgw_http_request *req, int status, const char *content_type,
                     const char *extra, const void *body, size_t len)
{
    emu_hub_metrics(hub)->rest[status >= 100 && status < 600 ? status / 100 : 0]++;
    iotgw_http_respond(req, status, content_type, extra, body, len);
}

void emu_rest_json(emu_hub *hub, iotgw_http_request *req, int status, json_t *body, const char *extra)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    emu_rest_answer(hub, req, status, "application/json; charset=utf-8", extra, text ? text : "{}",
                    text ? strlen(text) : 2);
    free(text);
}

void emu_rest_fail(emu_hub *hub, iotgw_http_request *req, const emu_rest_error *e, const char *message)
{
    char when[40];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *inner = json_pack("{s:i,s:s,s:s,s:s,s:{}}", "errorCode", e->code, "trackingId", "emulator",
                              "message", message, "timestampUtc", when, "info");
    char *inner_text = json_dumps(inner, JSON_COMPACT);
    json_decref(inner);
    json_t *body = json_pack("{s:s,s:s}", "Message", inner_text ? inner_text : "", "ExceptionMessage", "");
    free(inner_text);
    char header[128];
    snprintf(header, sizeof header, "iothub-errorcode: %s\r\n", e->name);
    /* The path is the client's: at most 200 bytes of it, control bytes shown as '?', so
     * that it cannot flood the log or forge lines in it. */
    char path[201];
    const char *raw = iotgw_http_path(req);
    size_t n = 0;
    for (; raw[n] && n < sizeof path - 1; n++)
        path[n] = (unsigned char)raw[n] < 0x20 || raw[n] == 0x7f ? '?' : raw[n];
    path[n] = '\0';
    iotgw_log(IOTGW_LOG_INFO, "REST %s %s%s: %d %s: %s", iotgw_http_method(req), path, raw[n] ? "..." : "",
              e->http, e->name, message);
    emu_rest_json(hub, req, e->http, body, header);
}

/* A service token for this hub: sr names the hub, skn a policy, the signature matches. */
int emu_rest_authorize(emu_hub *hub, iotgw_http_request *req, unsigned need, char *why, size_t len)
{
    const char *auth = iotgw_http_header(req, "authorization");
    if (!auth) {
        snprintf(why, len, "the Authorization header with a SAS token is missing");
        return -1;
    }
    iotgw_sas_token t;
    iotgw_diag diag = {0};
    if (iotgw_sas_parse(auth, &t, &diag)) {
        snprintf(why, len, "%s", diag.text);
        return -1;
    }
    int rc = -1;
    char *sr = NULL;
    const char *host = emu_hub_hostname(hub);
    emu_policy *p = t.skn ? emu_registry_policy(emu_hub_registry(hub), t.skn) : NULL;
    if (!p)
        snprintf(why, len, "the token must name a shared access policy of this hub (skn)");
    else if (iotgw_percent_decode(t.sr, strlen(t.sr), &sr, NULL) || strncasecmp(sr, host, strlen(host)) ||
             (sr[strlen(host)] && sr[strlen(host)] != '/'))
        snprintf(why, len, "the token is not for this hub");
    else if (iotgw_sas_verify(&t, p->primary_key, emu_now_s(), &diag) &&
             iotgw_sas_verify(&t, p->secondary_key, emu_now_s(), &diag))
        snprintf(why, len, "%s", diag.text);
    else if (!(p->rights & need))
        snprintf(why, len, "policy %s lacks the right this operation needs", p->name);
    else
        rc = 0;
    free(sr);
    iotgw_sas_token_clear(&t);
    return rc;
}

/* A device (and module) id from the path, checked before it is looked up: IoT Hub's
 * characters and length (codecs/identity.c), so no control byte goes further. */
int emu_rest_ids_valid(emu_hub *hub, iotgw_http_request *req, const char *device, const char *module)
{
    iotgw_diag diag = {0};
    if (iotgw_identity_check(device, "the device id", &diag) ||
        (module && iotgw_identity_check(module, "the module id", &diag))) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, diag.text);
        return 0;
    }
    return 1;
}

int emu_rest_loopback(const char *peer)
{
    return !strncmp(peer, "127.", 4) || !strcmp(peer, "::1") || !strncmp(peer, "::ffff:127.", 11);
}

/* ------------------------------------------------------------------ methods */

/* A REST caller waiting for a device's answer; the hub is there for the answer's count. */
typedef struct rest_call {
    emu_hub *hub;
    iotgw_http_request *req;
    emu_method_call *call;
} rest_call;

static void method_done(void *ctx, int status, const uint8_t *payload, size_t len, const char *code,
                        const char *message)
{
    rest_call *rc = ctx;
    emu_hub *hub = rc->hub;
    iotgw_http_request *req = rc->req;
    free(rc);
    if (code && !strcmp(code, "InjectedFailure")) {
        emu_rest_error e = {status, status * 1000 + 1, "InjectedFailure"};
        emu_rest_fail(hub, req, &e, message);
        return;
    }
    if (code) {
        const emu_rest_error *e = !strcmp(code, "DeviceNotOnline")   ? &E_NOT_ONLINE
                                  : !strcmp(code, "DeviceNotFound")  ? &E_NOT_FOUND
                                  : !strcmp(code, "GatewayTimeout")  ? &E_TIMEOUT
                                  : !strcmp(code, "MessageTooLarge") ? &E_TOO_LARGE
                                                                     : &E_SERVER;
        emu_rest_fail(hub, req, e, message);
        return;
    }
    json_t *body = payload && len ? json_loadb((const char *)payload, len, JSON_DECODE_ANY, NULL) : NULL;
    if (!body && payload && len)
        body = json_stringn((const char *)payload, len);
    emu_rest_json(hub, req, 200,
                  json_pack("{s:i,s:o}", "status", status, "payload", body ? body : json_null()), NULL);
}

static void method_request_gone(iotgw_http_request *req, void *ctx)
{
    rest_call *rc = ctx;
    (void)req;
    emu_method_cancel(rc->call);
    free(rc);
}

static int timeout_field(json_t *req, const char *name, int def, int min, int max, int *out)
{
    json_t *v = json_object_get(req, name);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return -1;
    *out = (int)json_integer_value(v);
    return 0;
}

const emu_rest_error *emu_rest_method_request(json_t *j, const char **name, char **payload,
                                              int *response_timeout, int *connect_timeout, char *msg,
                                              size_t len)
{
    *name = json_string_value(json_object_get(j, "methodName"));
    *payload = NULL;
    if (!*name || !**name || strlen(*name) > 128) {
        snprintf(msg, len, "methodName must be a string of 1 to 128 characters");
        return &E_BAD_ARGUMENT;
    }
    if (timeout_field(j, "responseTimeoutInSeconds", 30, 5, 300, response_timeout)) {
        snprintf(msg, len, "responseTimeoutInSeconds must be a whole number from 5 to 300");
        return &E_BAD_ARGUMENT;
    }
    if (timeout_field(j, "connectTimeoutInSeconds", 0, 0, 300, connect_timeout)) {
        snprintf(msg, len, "connectTimeoutInSeconds must be a whole number from 0 to 300");
        return &E_BAD_ARGUMENT;
    }
    json_t *p = json_object_get(j, "payload");
    *payload = json_dumps(p ? p : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    if (!*payload) {
        snprintf(msg, len, "out of memory");
        return &E_SERVER;
    }
    if (strlen(*payload) > EMU_METHOD_MAX_PAYLOAD) {
        free(*payload);
        *payload = NULL;
        snprintf(msg, len, "the method payload is larger than 128 KB");
        return &E_TOO_LARGE;
    }
    return NULL;
}

static void invoke_method(emu_hub *hub, iotgw_http_request *req, emu_identity *id)
{
    size_t len;
    const uint8_t *body = iotgw_http_body(req, &len);
    json_error_t jerr;
    json_t *j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *name;
    char *text = NULL;
    int response_timeout, connect_timeout;
    rest_call *rc;
    char msg[300];
    const emu_rest_error *e;
    if (!json_is_object(j)) {
        snprintf(msg, sizeof msg, "the body is not a JSON object: %s", jerr.text);
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, msg);
    } else if ((e = emu_rest_method_request(j, &name, &text, &response_timeout, &connect_timeout, msg,
                                            sizeof msg))) {
        emu_rest_fail(hub, req, e, msg);
    } else if (!(rc = malloc(sizeof *rc))) {
        emu_rest_fail(hub, req, &E_SERVER, "out of memory");
    } else {
        *rc = (rest_call){.hub = hub, .req = req};
        /* NULL: done was called already, and rc is gone */
        emu_method_call *call = emu_method_invoke(hub, id, name, (const uint8_t *)text, strlen(text),
                                                  response_timeout, connect_timeout, method_done, rc);
        if (call) {
            rc->call = call;
            iotgw_http_set_context(req, rc, method_request_gone);
        }
    }
    free(text);
    json_decref(j);
}

/* ------------------------------------------------------------------ twins */

int emu_rest_etag_matches(iotgw_http_request *req, const char *etag)
{
    const char *m = iotgw_http_header(req, "if-match");
    if (!m || !strcmp(m, "*") || !strcmp(m, "\"*\""))
        return 1;
    size_t n = strlen(m);
    if (n >= 2 && m[0] == '"' && m[n - 1] == '"')
        return etag && strlen(etag) == n - 2 && !strncmp(m + 1, etag, n - 2);
    return etag && !strcmp(m, etag);
}

static void patch_twin(emu_hub *hub, iotgw_http_request *req, emu_identity *id, int replace)
{
    size_t len;
    const uint8_t *body = iotgw_http_body(req, &len);
    json_t *j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *twin = emu_twin_json(hub, id);
    const char *error = NULL;
    int failed = 1, status;
    if (!json_is_object(j)) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "the body is not a JSON object");
    } else if (!emu_rest_etag_matches(req, json_string_value(json_object_get(twin, "etag")))) {
        emu_rest_fail(hub, req, &E_PRECONDITION, "the twin's etag does not match If-Match");
    } else if ((status = emu_twin_service_update(hub, id, j, replace, &error))) {
        emu_rest_fail(hub, req,
                      status == 413   ? &E_TOO_LARGE
                      : status == 400 ? &E_BAD_ARGUMENT
                                      : &E_SERVER,
                      error);
    } else {
        emu_rest_json(hub, req, 200, emu_twin_json(hub, id), NULL);
        failed = 0;
    }
    emu_hub_metrics(hub)->twin[replace ? EMU_TWIN_SERVICE_REPLACE : EMU_TWIN_SERVICE_PATCH][failed]++;
    json_decref(twin);
    json_decref(j);
}

/* ------------------------------------------------------------------ routing */

/* What the transport refused (over a bound, a method it does not know), in IoT Hub's
 * error shape; 1 if answered. */
static int refused(emu_hub *hub, iotgw_http_request *req)
{
    const char *why;
    switch (iotgw_http_refused(req, &why)) {
    case IOTGW_HTTP_ACCEPTED: return 0;
    case IOTGW_HTTP_BODY_TOO_LARGE: emu_rest_fail(hub, req, &E_TOO_LARGE, why); break;
    case IOTGW_HTTP_URI_TOO_LONG: emu_rest_fail(hub, req, &E_URI_TOO_LONG, why); break;
    case IOTGW_HTTP_HEADER_TOO_LARGE: emu_rest_fail(hub, req, &E_HEADER_TOO_LARGE, why); break;
    /* 405, as for a known method that a resource does not take (below), rather than
     * HTTP's 501 for a method the server does not know: to an IoT Hub client both mean
     * "not this method here", and one ErrorCode keeps them alike. */
    case IOTGW_HTTP_UNKNOWN_METHOD: emu_rest_fail(hub, req, &E_METHOD, why); break;
    case IOTGW_HTTP_BAD_REQUEST: /* fall through */
    default: emu_rest_fail(hub, req, &E_BAD_ARGUMENT, why); break;
    }
    return 1;
}

void emu_rest_on_request(iotgw_http_request *req, void *ctx)
{
    emu_hub *hub = ctx;
    if (refused(hub, req))
        return;
    const char *method = iotgw_http_method(req);
    /* libwebsockets has percent-decoded the path already: decoding it again would turn
     * "%2531" into "1" and refuse ids that hold '%', which IoT Hub allows. */
    char *path = strdup(iotgw_http_path(req));
    if (!path) {
        emu_rest_fail(hub, req, &E_SERVER, "out of memory");
        return;
    }
    char *seg[MAX_PATH_SEGMENTS + 1] = {0}, *save = NULL;
    int n = 0;
    for (char *p = strtok_r(path, "/", &save); p && n <= MAX_PATH_SEGMENTS; p = strtok_r(NULL, "/", &save))
        seg[n++] = p;
    const char *ctype = iotgw_http_header(req, "content-type");
    size_t blen = 0;
    iotgw_http_body(req, &blen);
    if (blen && ctype && strncasecmp(ctype, "application/json", 16)) {
        emu_rest_fail(hub, req, &E_MEDIA_TYPE, "the body must be application/json");
        free(path);
        return;
    }
    /* The emulator's own routes: not IoT Hub's, so never throttled as its API is. */
    if (n == 1 && !strcmp(seg[0], "metrics")) {
        emu_rest_metrics(hub, req, method);
        free(path);
        return;
    }
    /* The admin throttle's REST part. */
    if (n >= 1 && strcmp(seg[0], "admin") && emu_faults_rest_over_limit(emu_hub_faults(hub), emu_wall_ms())) {
        emu_hub_metrics(hub)->throttled_rest++;
        emu_rest_fail(hub, req, &E_THROTTLED, "the hub's request rate limit is exceeded (fault injection)");
        free(path);
        return;
    }
    if (n >= 1 && !strcmp(seg[0], "admin") && emu_hub_admin_enabled(hub)) {
        emu_rest_admin(hub, req, method, seg, n);
        free(path);
        return;
    }
    if (n >= 1 && !strcmp(seg[0], "devices")) {
        emu_rest_devices(hub, req, method, seg, n);
        free(path);
        return;
    }
    if (n >= 1 && !strcmp(seg[0], "statistics")) {
        emu_rest_statistics(hub, req, method, seg, n);
        free(path);
        return;
    }
    if (n >= 1 && !strcmp(seg[0], "jobs")) {
        emu_rest_jobs(hub, req, method, seg, n);
        free(path);
        return;
    }
    int twins = n >= 2 && !strcmp(seg[0], "twins");
    const char *device = twins ? seg[1] : NULL, *module = NULL;
    int rest = 2;
    if (twins && n >= 4 && !strcmp(seg[2], "modules")) {
        module = seg[3];
        rest = 4;
    }
    int is_methods = twins && n == rest + 1 && !strcmp(seg[rest], "methods");
    int is_twin = twins && n == rest;
    char why[300];
    if (!is_methods && !is_twin) {
        emu_rest_fail(hub, req, &E_ROUTE, "no such resource");
    } else if ((is_methods && strcmp(method, "POST")) ||
               (is_twin && strcmp(method, "GET") && strcmp(method, "PATCH") && strcmp(method, "PUT"))) {
        emu_rest_fail(hub, req, &E_METHOD, "this resource does not take that HTTP method");
    } else if (emu_rest_authorize(hub, req,
                                  is_twin && !strcmp(method, "GET")
                                      ? EMU_RIGHT_SERVICE_CONNECT | EMU_RIGHT_REGISTRY_READ
                                      : EMU_RIGHT_SERVICE_CONNECT,
                                  why, sizeof why)) {
        emu_rest_fail(hub, req, &E_UNAUTHORIZED, why);
    } else if (emu_rest_ids_valid(hub, req, device, module)) {
        emu_identity *id = emu_registry_find(emu_hub_registry(hub), device, module);
        if (!id)
            emu_rest_fail(hub, req, &E_NOT_FOUND, "no such device or module");
        else if (is_methods)
            invoke_method(hub, req, id);
        else if (!strcmp(method, "GET")) {
            emu_hub_metrics(hub)->twin[EMU_TWIN_SERVICE_GET][0]++;
            emu_rest_json(hub, req, 200, emu_twin_json(hub, id), NULL);
        } else
            patch_twin(hub, req, id, !strcmp(method, "PUT"));
    }
    free(path);
}
