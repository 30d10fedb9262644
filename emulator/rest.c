#include "emulator/rest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "codecs/percent.h"
#include "codecs/sas.h"

#define MAX_PATH_SEGMENTS 6

typedef struct error_kind {
    int http;
    int code;
    const char *name;
} error_kind;

static const error_kind E_UNAUTHORIZED = {401, 401002, "IotHubUnauthorizedAccess"};
static const error_kind E_NOT_FOUND = {404, 404001, "DeviceNotFound"};
static const error_kind E_ROUTE = {404, 404000, "NotFound"};
static const error_kind E_BAD_ARGUMENT = {400, 400004, "ArgumentInvalid"};
static const error_kind E_PRECONDITION = {412, 412001, "PreconditionFailed"};
static const error_kind E_NOT_ONLINE = {404, 404103, "DeviceNotOnline"};
static const error_kind E_TIMEOUT = {504, 504101, "GatewayTimeout"};
static const error_kind E_TOO_LARGE = {413, 413001, "MessageTooLarge"};
static const error_kind E_SERVER = {500, 500001, "ServerError"};
static const error_kind E_METHOD = {405, 405000, "MethodNotAllowed"};

static void respond_json(iotgw_http_request *req, int status, json_t *body, const char *extra)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    iotgw_http_respond(req, status, "application/json; charset=utf-8", extra, text ? text : "{}",
                       text ? strlen(text) : 2);
    free(text);
}

static void respond_error(iotgw_http_request *req, const error_kind *e, const char *message)
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
    iotgw_log(IOTGW_LOG_INFO, "REST %s %s: %d %s: %s", iotgw_http_method(req), iotgw_http_path(req), e->http,
              e->name, message);
    respond_json(req, e->http, body, header);
}

/* A service token for this hub: sr names the hub, skn a policy, the signature matches. */
static int authorize(emu_hub *hub, iotgw_http_request *req, unsigned need, char *why, size_t len)
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
    emu_policy *p = t.skn ? emu_registry_policy(hub->registry, t.skn) : NULL;
    if (!p)
        snprintf(why, len, "the token must name a shared access policy of this hub (skn)");
    else if (iotgw_percent_decode(t.sr, strlen(t.sr), &sr, NULL) ||
             strncasecmp(sr, hub->opt.hostname, strlen(hub->opt.hostname)) ||
             (sr[strlen(hub->opt.hostname)] && sr[strlen(hub->opt.hostname)] != '/'))
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

/* ------------------------------------------------------------------ methods */

static void method_done(void *ctx, int status, const uint8_t *payload, size_t len, const char *code,
                        const char *message)
{
    iotgw_http_request *req = ctx;
    if (code) {
        const error_kind *e = !strcmp(code, "DeviceNotOnline")   ? &E_NOT_ONLINE
                              : !strcmp(code, "GatewayTimeout")  ? &E_TIMEOUT
                              : !strcmp(code, "MessageTooLarge") ? &E_TOO_LARGE
                                                                 : &E_SERVER;
        respond_error(req, e, message);
        return;
    }
    json_t *body = payload && len ? json_loadb((const char *)payload, len, JSON_DECODE_ANY, NULL) : NULL;
    if (!body && payload && len)
        body = json_stringn((const char *)payload, len);
    respond_json(req, 200, json_pack("{s:i,s:o}", "status", status, "payload", body ? body : json_null()),
                 NULL);
}

static void method_request_gone(iotgw_http_request *req, void *ctx)
{
    (void)req;
    emu_method_cancel(ctx);
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

static void invoke_method(emu_hub *hub, iotgw_http_request *req, emu_identity *id)
{
    size_t len;
    const uint8_t *body = iotgw_http_body(req, &len);
    json_error_t jerr;
    json_t *j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *name = j ? json_string_value(json_object_get(j, "methodName")) : NULL;
    int response_timeout, connect_timeout;
    char msg[300];
    if (!json_is_object(j)) {
        snprintf(msg, sizeof msg, "the body is not a JSON object: %s", jerr.text);
        respond_error(req, &E_BAD_ARGUMENT, msg);
    } else if (!name || !*name || strlen(name) > 128) {
        respond_error(req, &E_BAD_ARGUMENT, "methodName must be a string of 1 to 128 characters");
    } else if (timeout_field(j, "responseTimeoutInSeconds", 30, 5, 300, &response_timeout)) {
        respond_error(req, &E_BAD_ARGUMENT, "responseTimeoutInSeconds must be a whole number from 5 to 300");
    } else if (timeout_field(j, "connectTimeoutInSeconds", 0, 0, 300, &connect_timeout)) {
        respond_error(req, &E_BAD_ARGUMENT, "connectTimeoutInSeconds must be a whole number from 0 to 300");
    } else {
        json_t *payload = json_object_get(j, "payload");
        char *text = json_dumps(payload ? payload : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text) {
            respond_error(req, &E_SERVER, "out of memory");
        } else if (strlen(text) > EMU_METHOD_MAX_PAYLOAD) {
            respond_error(req, &E_TOO_LARGE, "the method payload is larger than 128 KB");
        } else {
            emu_method_call *call = emu_method_invoke(hub, id, name, (const uint8_t *)text, strlen(text),
                                                      response_timeout, connect_timeout, method_done, req);
            if (call)
                iotgw_http_set_context(req, call, method_request_gone);
        }
        free(text);
    }
    json_decref(j);
}

/* ------------------------------------------------------------------ twins */

static int etag_matches(iotgw_http_request *req, json_t *twin)
{
    const char *m = iotgw_http_header(req, "if-match");
    if (!m || !strcmp(m, "*") || !strcmp(m, "\"*\""))
        return 1;
    const char *etag = json_string_value(json_object_get(twin, "etag"));
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
    json_t *props = json_object_get(j, "properties");
    json_t *desired = props ? json_object_get(props, "desired") : NULL;
    json_t *tags = json_object_get(j, "tags");
    const char *error = NULL;
    if (!json_is_object(j)) {
        respond_error(req, &E_BAD_ARGUMENT, "the body is not a JSON object");
    } else if (!etag_matches(req, twin)) {
        respond_error(req, &E_PRECONDITION, "the twin's etag does not match If-Match");
    } else if ((desired && !json_is_object(desired)) || (tags && !json_is_object(tags))) {
        respond_error(req, &E_BAD_ARGUMENT, "tags and properties.desired must be JSON objects");
    } else {
        /* Both parts are checked before either is applied. */
        json_t *new_tags = json_incref(id->tags), *new_desired = json_incref(id->desired);
        int status = tags ? emu_twin_apply(&new_tags, tags, replace, EMU_TWIN_MAX_TAGS, &error) : 0;
        if (!status && desired)
            status = emu_twin_apply(&new_desired, desired, replace, EMU_TWIN_MAX_PROPERTIES, &error);
        if (status) {
            json_decref(new_tags);
            json_decref(new_desired);
            respond_error(req,
                          status == 413   ? &E_TOO_LARGE
                          : status == 400 ? &E_BAD_ARGUMENT
                                          : &E_SERVER,
                          error);
        } else {
            json_decref(id->tags);
            json_decref(id->desired);
            id->tags = new_tags;
            id->desired = new_desired;
            if (tags)
                id->tags_version++;
            if (desired) {
                id->desired_version++;
                emu_twin_notify_desired(hub, id, replace ? id->desired : desired);
            }
            respond_json(req, 200, emu_twin_json(hub, id), NULL);
        }
    }
    json_decref(twin);
    json_decref(j);
}

/* ------------------------------------------------------------------ routing */

void emu_rest_on_request(iotgw_http_request *req, void *ctx)
{
    emu_hub *hub = ctx;
    const char *method = iotgw_http_method(req);
    char *path = NULL;
    const char *raw = iotgw_http_path(req);
    if (iotgw_percent_decode(raw, strlen(raw), &path, NULL)) {
        respond_error(req, &E_ROUTE, "the path is not validly percent-encoded");
        return;
    }
    char *seg[MAX_PATH_SEGMENTS + 1] = {0}, *save = NULL;
    int n = 0;
    for (char *p = strtok_r(path, "/", &save); p && n <= MAX_PATH_SEGMENTS; p = strtok_r(NULL, "/", &save))
        seg[n++] = p;
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
        respond_error(req, &E_ROUTE, "no such resource");
    } else if ((is_methods && strcmp(method, "POST")) ||
               (is_twin && strcmp(method, "GET") && strcmp(method, "PATCH") && strcmp(method, "PUT"))) {
        respond_error(req, &E_METHOD, "this resource does not take that HTTP method");
    } else if (authorize(hub, req,
                         is_twin && !strcmp(method, "GET")
                             ? EMU_RIGHT_SERVICE_CONNECT | EMU_RIGHT_REGISTRY_READ
                             : EMU_RIGHT_SERVICE_CONNECT,
                         why, sizeof why)) {
        respond_error(req, &E_UNAUTHORIZED, why);
    } else {
        emu_identity *id = emu_registry_find(hub->registry, device, module);
        if (!id)
            respond_error(req, &E_NOT_FOUND, "no such device or module");
        else if (is_methods)
            invoke_method(hub, req, id);
        else if (!strcmp(method, "GET"))
            respond_json(req, 200, emu_twin_json(hub, id), NULL);
        else
            patch_twin(hub, req, id, !strcmp(method, "PUT"));
    }
    free(path);
}
