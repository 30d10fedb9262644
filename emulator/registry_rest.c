/* The identity registry over REST (shared/docs/iothub-amqp-protocol.md 7.2): devices and
 * their modules created, updated, read, listed and deleted, up to 100 devices at once
 * (bulk), and the registry's statistics; saved to the registry file after each change.
 * Disabling or deleting an identity, or changing its keys, detaches its links at once.
 * Queries are query_rest.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "codecs/base64.h"
#include "codecs/identity.h"
#include "emulator/rest.h"
#include "transport/log.h"

#define MAX_LIST 1000
#define MAX_BULK 100 /* IoT Hub's limit on one bulk registry request */

static const emu_rest_error E_MODULE_NOT_FOUND = {404, 404010, "ModuleNotFound"};
static const emu_rest_error E_MODULE_EXISTS = {409, 409301, "ModuleAlreadyExistsOnDevice"};
static const emu_rest_error E_DEFINED_TWICE = {400, 400011, "DeviceDefinedMultipleTimes"};
static const emu_rest_error E_TOO_MANY_DEVICES = {413, 413002, "TooManyDevices"};

static void iso_time(int64_t ms, char *buf, size_t len)
{
    if (ms <= 0) {
        snprintf(buf, len, "0001-01-01T00:00:00Z"); /* what IoT Hub shows for "never" */
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The identity's etag: base64 of its registry version, as IoT Hub's look. */
static void identity_etag(const emu_identity *id, char *buf, size_t len)
{
    char text[24];
    int n = snprintf(text, sizeof text, "%lld", (long long)id->registry_version + 1);
    if ((size_t)iotgw_base64_encoded_len((size_t)n) < len)
        iotgw_base64_encode((const uint8_t *)text, (size_t)n, buf);
    else
        buf[0] = '\0';
}

/* Does an etag from a request ("x", "\"x\"" or "*") match the identity's? */
static int etag_is(const char *given, const char *etag)
{
    size_t n = given ? strlen(given) : 0;
    if (!given || !strcmp(given, "*") || !strcmp(given, "\"*\""))
        return 1;
    if (n >= 2 && given[0] == '"' && given[n - 1] == '"')
        return strlen(etag) == n - 2 && !strncmp(given + 1, etag, n - 2);
    return !strcmp(given, etag);
}

static json_t *identity_json(const emu_hub *hub, const emu_identity *id)
{
    char etag[48], active[32];
    emu_identity_activity live = emu_hub_identity_activity(hub, id);
    identity_etag(id, etag, sizeof etag);
    iso_time(live.last_activity_ms, active, sizeof active);
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:{s:s,s:{s:s,s:s},s:{s:n,s:n}}}", "deviceId",
                          id->device_id, "generationId", id->generation_id, "etag", etag, "connectionState",
                          live.connected ? "Connected" : "Disconnected", "connectionStateUpdatedTime",
                          "0001-01-01T00:00:00Z", "lastActivityTime", active, "cloudToDeviceMessageCount", 0,
                          "authentication", "type", "sas", "symmetricKey", "primaryKey", id->primary_key,
                          "secondaryKey", id->secondary_key, "x509Thumbprint", "primaryThumbprint",
                          "secondaryThumbprint");
    if (!j)
        return json_object();
    if (id->module_id) {
        json_object_set_new(j, "moduleId", json_string(id->module_id));
        json_object_set_new(j, "managedBy", json_string(""));
    } else {
        json_object_set_new(j, "status", json_string(id->enabled ? "enabled" : "disabled"));
        json_object_set_new(j, "statusReason", json_null());
        json_object_set_new(j, "statusUpdatedTime", json_string("0001-01-01T00:00:00Z"));
        json_object_set_new(j, "capabilities", json_pack("{s:b}", "iotEdge", 0));
    }
    return j;
}

json_t *emu_rest_twin_document(emu_hub *hub, const emu_identity *id)
{
    char etag[48], active[32];
    emu_identity_activity live = emu_hub_identity_activity(hub, id);
    identity_etag(id, etag, sizeof etag);
    iso_time(live.last_activity_ms, active, sizeof active);
    json_t *t = emu_twin_json(hub, id);
    json_object_set_new(t, "deviceEtag", json_string(etag));
    json_object_set_new(t, "statusUpdateTime", json_string("0001-01-01T00:00:00Z"));
    json_object_set_new(t, "lastActivityTime", json_string(active));
    json_object_set_new(t, "cloudToDeviceMessageCount", json_integer(0));
    json_object_set_new(t, "authenticationType", json_string("sas"));
    json_object_set_new(t, "x509Thumbprint",
                        json_pack("{s:n,s:n}", "primaryThumbprint", "secondaryThumbprint"));
    json_object_set_new(t, "modelId", json_string(""));
    if (!id->module_id)
        json_object_set_new(t, "capabilities", json_pack("{s:b}", "iotEdge", 0));
    return t;
}

static int valid_key(const char *k)
{
    uint8_t raw[132];
    size_t n = 0, len = strlen(k);
    return len <= 172 && !iotgw_base64_decode(k, len, raw, &n, 0, NULL) && n >= 16 && n <= 64;
}

/* Keys and status of an identity's description (a PUT body, a bulk entry); NULL, or
 * what is wrong, naming the field. Empty keys are no keys. */
static const char *read_fields(json_t *j, const char **pk, const char **sk, int *enabled)
{
    json_t *st = json_object_get(j, "status");
    if (st && enabled) {
        const char *s = json_string_value(st);
        if (!s || (strcmp(s, "enabled") && strcmp(s, "disabled")))
            return "status must be \"enabled\" or \"disabled\"";
        *enabled = !strcmp(s, "enabled");
    }
    json_t *auth = json_object_get(j, "authentication");
    if (auth && !json_is_null(auth)) {
        const char *type = json_string_value(json_object_get(auth, "type"));
        if (type && strcmp(type, "sas"))
            return "only authentication type \"sas\" is supported by the emulator";
        json_t *keys = json_object_get(auth, "symmetricKey");
        *pk = json_string_value(json_object_get(keys, "primaryKey"));
        *sk = json_string_value(json_object_get(keys, "secondaryKey"));
        if (*pk && !**pk)
            *pk = NULL;
        if (*sk && !**sk)
            *sk = NULL;
        if ((*pk && !valid_key(*pk)) || (*sk && !valid_key(*sk)))
            return "symmetric keys must be base64 of 16 to 64 bytes";
    }
    return NULL;
}

/* A PUT body: an object whose deviceId and moduleId, when given, are the path's. */
static const char *read_body(json_t *j, const char *device, const char *module, const char **pk,
                             const char **sk, int *enabled)
{
    if (!json_is_object(j))
        return module ? "the body must be a JSON object describing the module"
                      : "the body must be a JSON object describing the device";
    const char *did = json_string_value(json_object_get(j, "deviceId"));
    const char *mid = json_string_value(json_object_get(j, "moduleId"));
    if (did && strcmp(did, device))
        return "deviceId in the body differs from the one in the path";
    if (module && mid && strcmp(mid, module))
        return "moduleId in the body differs from the one in the path";
    return read_fields(j, pk, sk, module ? NULL : enabled);
}

static int save(emu_hub *hub, iotgw_http_request *req)
{
    iotgw_diag diag = {0};
    if (emu_registry_save(emu_hub_registry(hub), &diag)) {
        iotgw_log(IOTGW_LOG_WARN, "registry: saving failed: %s", diag.text);
        emu_rest_fail(hub, req, &E_SERVER, "the registry could not be saved");
        return -1;
    }
    return 0;
}

/* New keys and status for an existing identity (NULL keys: kept); its links detach when
 * it is disabled or its keys change. */
static void update_identity(emu_hub *hub, emu_identity *id, const char *pk, const char *sk, int enabled)
{
    char *npk = pk ? strdup(pk) : NULL, *nsk = sk ? strdup(sk) : NULL;
    int keys_changed = (npk && strcmp(npk, id->primary_key)) || (nsk && strcmp(nsk, id->secondary_key));
    if (npk) {
        free(id->primary_key);
        id->primary_key = npk;
    }
    if (nsk) {
        free(id->secondary_key);
        id->secondary_key = nsk;
    }
    int was_enabled = id->enabled;
    id->enabled = enabled;
    id->registry_version++;
    if (was_enabled && !enabled)
        emu_hub_identity_disconnect(hub, id, "amqp:unauthorized-access", "the device was disabled");
    else if (keys_changed)
        emu_hub_identity_disconnect(hub, id, "amqp:unauthorized-access",
                                    id->module_id ? "the module's keys changed"
                                                  : "the device's keys changed");
}

/* Remove an identity, and a device's modules with it; the hub lets go of each first. */
static void remove_identity(emu_hub *hub, emu_identity *id)
{
    emu_registry *r = emu_hub_registry(hub);
    if (!id->module_id)
        for (int i = emu_registry_count(r) - 1; i >= 0; i--) {
            emu_identity *m = emu_registry_at(r, i);
            if (m->module_id && !strcmp(m->device_id, id->device_id)) {
                emu_hub_identity_forget(hub, m);
                emu_registry_remove(r, m);
            }
        }
    emu_hub_identity_forget(hub, id);
    emu_registry_remove(r, id);
}

/* ------------------------------------------------------------------ one identity */

/* PUT /devices/{id} and /devices/{id}/modules/{mid}: create, or update with If-Match. */
static void put_identity(emu_hub *hub, iotgw_http_request *req, const char *device, const char *module)
{
    size_t len;
    const uint8_t *body = iotgw_http_body(req, &len);
    json_t *j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, NULL);
    emu_registry *r = emu_hub_registry(hub);
    emu_identity *id = emu_registry_find(r, device, module);
    const char *pk = NULL, *sk = NULL, *problem;
    const char *what = module ? "module" : "device";
    int enabled = id ? id->enabled : 1;
    char etag[48] = "";
    if (id)
        identity_etag(id, etag, sizeof etag);
    if (!j) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "the body is not JSON");
    } else if ((problem = read_body(j, device, module, &pk, &sk, &enabled))) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, problem);
    } else if (module && !emu_registry_find(r, device, NULL)) {
        emu_rest_fail(hub, req, &E_NOT_FOUND, "no such device");
    } else if (id && !iotgw_http_header(req, "if-match")) {
        emu_rest_fail(hub, req, module ? &E_MODULE_EXISTS : &E_CONFLICT,
                      module ? "the module already exists on the device (update it with If-Match)"
                             : "the device already exists (update it with If-Match)");
    } else if (id && !emu_rest_etag_matches(req, etag)) {
        emu_rest_fail(hub, req, &E_PRECONDITION,
                      module ? "the module's etag does not match If-Match"
                             : "the device's etag does not match If-Match");
    } else if (!id) {
        iotgw_diag diag = {0};
        if (emu_registry_add(r, device, module, pk, sk, enabled, &id, &diag))
            emu_rest_fail(hub, req, &E_BAD_ARGUMENT, diag.text);
        else if (!save(hub, req)) {
            iotgw_log(IOTGW_LOG_INFO, "registry: %s %s created (%s)", what, id->id,
                      enabled ? "enabled" : "disabled");
            emu_rest_json(hub, req, 200, identity_json(hub, id), NULL);
        }
    } else {
        update_identity(hub, id, pk, sk, enabled);
        if (!save(hub, req)) {
            iotgw_log(IOTGW_LOG_INFO, "registry: %s %s updated (%s)", what, id->id,
                      enabled ? "enabled" : "disabled");
            emu_rest_json(hub, req, 200, identity_json(hub, id), NULL);
        }
    }
    json_decref(j);
}

static void delete_identity(emu_hub *hub, iotgw_http_request *req, emu_identity *id)
{
    char etag[48];
    identity_etag(id, etag, sizeof etag);
    const char *what = id->module_id ? "module" : "device";
    if (!iotgw_http_header(req, "if-match")) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT,
                      id->module_id ? "deleting a module needs If-Match (\"*\" or its etag)"
                                    : "deleting a device needs If-Match (\"*\" or its etag)");
        return;
    }
    if (!emu_rest_etag_matches(req, etag)) {
        emu_rest_fail(hub, req, &E_PRECONDITION,
                      id->module_id ? "the module's etag does not match If-Match"
                                    : "the device's etag does not match If-Match");
        return;
    }
    char name[2 * 130];
    snprintf(name, sizeof name, "%s", id->id);
    remove_identity(hub, id);
    if (!save(hub, req)) {
        iotgw_log(IOTGW_LOG_INFO, "registry: %s %s deleted", what, name);
        emu_rest_answer(hub, req, 204, NULL, NULL, NULL, 0);
    }
}

/* GET /devices[?top=N]: devices; GET /devices/{id}/modules: a device's modules. */
static void list_identities(emu_hub *hub, iotgw_http_request *req, const char *modules_of)
{
    int top = MAX_LIST;
    const char *q = strstr(iotgw_http_query(req), "top=");
    if (!modules_of && q && (q == iotgw_http_query(req) || q[-1] == '&')) {
        top = atoi(q + 4);
        if (top < 1 || top > MAX_LIST) {
            emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "top must be 1 to 1000");
            return;
        }
    }
    emu_registry *r = emu_hub_registry(hub);
    if (modules_of && !emu_registry_find(r, modules_of, NULL)) {
        emu_rest_fail(hub, req, &E_NOT_FOUND, "no such device");
        return;
    }
    json_t *list = json_array();
    for (int i = 0, n = 0; i < emu_registry_count(r) && (modules_of || n < top); i++) {
        emu_identity *id = emu_registry_at(r, i);
        if (modules_of ? id->module_id && !strcmp(id->device_id, modules_of) : !id->module_id) {
            json_array_append_new(list, identity_json(hub, id));
            n++;
        }
    }
    emu_rest_json(hub, req, 200, list, NULL);
}

/* ------------------------------------------------------------------ bulk */

enum { BULK_CREATE, BULK_UPDATE, BULK_DELETE, BULK_UPDATE_TWIN };

static const struct {
    const char *name;
    int op, if_match;
} import_modes[] = {
    {"create", BULK_CREATE, 0},
    {"update", BULK_UPDATE, 0},
    {"updateIfMatchETag", BULK_UPDATE, 1},
    {"delete", BULK_DELETE, 0},
    {"deleteIfMatchETag", BULK_DELETE, 1},
    {"updateTwin", BULK_UPDATE_TWIN, 0},
    {"updateTwinIfMatchETag", BULK_UPDATE_TWIN, 1},
};

/* The entry's tags and desired properties applied to copies of the identity's; 0, or
 * an HTTP-like status (emu_twin_apply) with why. The copies are the caller's. */
static int twin_parts(json_t *entry, const emu_identity *id, json_t **tags, json_t **desired,
                      const char **why)
{
    json_t *t = json_object_get(entry, "tags");
    json_t *d = json_object_get(json_object_get(entry, "properties"), "desired");
    *tags = json_incref(id ? id->tags : NULL);
    *desired = json_incref(id ? id->desired : NULL);
    if (!*tags)
        *tags = json_object();
    if (!*desired)
        *desired = json_object();
    if ((t && !json_is_null(t) && !json_is_object(t)) || (d && !json_is_null(d) && !json_is_object(d))) {
        *why = "tags and properties.desired must be JSON objects";
        return 400;
    }
    int status = json_is_object(t) ? emu_twin_apply(tags, t, 0, EMU_TWIN_MAX_TAGS, why) : 0;
    if (!status && json_is_object(d))
        status = emu_twin_apply(desired, d, 0, EMU_TWIN_MAX_PROPERTIES, why);
    return status;
}

/* The twin parts become the identity's. */
static void set_twin(emu_hub *hub, emu_identity *id, json_t *entry, json_t *tags, json_t *desired)
{
    json_t *t = json_object_get(entry, "tags");
    json_t *d = json_object_get(json_object_get(entry, "properties"), "desired");
    json_decref(id->tags);
    json_decref(id->desired);
    id->tags = json_incref(tags);
    id->desired = json_incref(desired);
    if (json_is_object(t))
        id->tags_version++;
    if (json_is_object(d)) {
        id->desired_version++;
        emu_twin_notify_desired(hub, id, d);
    }
}

/* One bulk entry; NULL, or what failed with IoT Hub's errorCode in *code. *changed: the
 * registry changed. */
static const char *bulk_one(emu_hub *hub, json_t *entry, int op, int if_match, const char **code,
                            int *changed, char *buf, size_t buf_len)
{
    emu_registry *r = emu_hub_registry(hub);
    const char *device = json_string_value(json_object_get(entry, "id"));
    emu_identity *id = emu_registry_find(r, device, NULL);
    const char *pk = NULL, *sk = NULL, *why = NULL;
    int enabled = id ? id->enabled : 1;
    char etag[48] = "";
    *code = "ArgumentInvalid";
    if (id)
        identity_etag(id, etag, sizeof etag);
    if (json_object_get(entry, "moduleId") && !json_is_null(json_object_get(entry, "moduleId")))
        return "modules are not part of bulk registry operations in the emulator";
    if ((why = read_fields(entry, &pk, &sk, &enabled)))
        return why;
    if (op == BULK_CREATE && id) {
        *code = "DeviceAlreadyExists";
        return "the device already exists";
    }
    if (op != BULK_CREATE && !id) {
        *code = "DeviceNotFound";
        return "no such device";
    }
    if (if_match) {
        json_t *twin = op == BULK_UPDATE_TWIN ? emu_twin_json(hub, id) : NULL;
        const char *field = op == BULK_UPDATE_TWIN           ? "twinETag"
                            : json_object_get(entry, "eTag") ? "eTag"
                                                             : "etag";
        const char *given = json_string_value(json_object_get(entry, field));
        int ok = given && etag_is(given, twin ? json_string_value(json_object_get(twin, "etag")) : etag);
        json_decref(twin);
        if (!ok) {
            *code = "PreconditionFailed";
            return op == BULK_UPDATE_TWIN ? "twinETag does not match the twin's etag"
                                          : "eTag does not match the device's etag";
        }
    }
    if (op == BULK_DELETE) {
        remove_identity(hub, id);
        *changed = 1;
        return NULL;
    }
    json_t *tags = NULL, *desired = NULL;
    int status = op != BULK_UPDATE ? twin_parts(entry, id, &tags, &desired, &why) : 0;
    if (status) {
        json_decref(tags);
        json_decref(desired);
        *code = status == 413 ? "MessageTooLarge" : "ArgumentInvalid";
        return why;
    }
    if (op == BULK_CREATE) {
        iotgw_diag diag = {0};
        if (emu_registry_add(r, device, NULL, pk, sk, enabled, &id, &diag)) {
            json_decref(tags);
            json_decref(desired);
            snprintf(buf, buf_len, "%s", diag.text);
            return buf;
        }
        *changed = 1;
    } else if (op == BULK_UPDATE) {
        update_identity(hub, id, pk, sk, enabled);
        *changed = 1;
    }
    if (tags)
        set_twin(hub, id, entry, tags, desired);
    json_decref(tags);
    json_decref(desired);
    return NULL;
}

/* POST /devices: up to 100 entries, each in its import mode; IoT Hub's
 * BulkRegistryOperationResult. Entries fail one by one (200, isSuccessful false); a
 * request that is not a list of entries fails as a whole. */
static void bulk(emu_hub *hub, iotgw_http_request *req)
{
    size_t len;
    const uint8_t *body = iotgw_http_body(req, &len);
    json_t *j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, NULL);
    char msg[300];
    if (!json_is_array(j) || !json_array_size(j)) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT,
                      "the body must be a JSON array of 1 to 100 device operations");
        json_decref(j);
        return;
    }
    if (json_array_size(j) > MAX_BULK) {
        snprintf(msg, sizeof msg, "a bulk registry operation takes at most %d devices, not %zu", MAX_BULK,
                 json_array_size(j));
        emu_rest_fail(hub, req, &E_TOO_MANY_DEVICES, msg);
        json_decref(j);
        return;
    }
    int ops[MAX_BULK], if_match[MAX_BULK];
    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *e = json_array_get(j, i);
        const char *device = json_string_value(json_object_get(e, "id"));
        const char *mode = json_string_value(json_object_get(e, "importMode"));
        iotgw_diag diag = {0};
        ops[i] = -1;
        for (size_t k = 0; mode && k < sizeof import_modes / sizeof import_modes[0]; k++)
            if (!strcasecmp(mode, import_modes[k].name)) {
                ops[i] = import_modes[k].op;
                if_match[i] = import_modes[k].if_match;
            }
        const char *problem = !json_is_object(e) ? "is not a JSON object"
                              : !device          ? "has no id"
                              : ops[i] < 0       ? "has no importMode of create, update, updateIfMatchETag, "
                                                   "delete, deleteIfMatchETag, updateTwin, updateTwinIfMatchETag"
                                                 : NULL;
        if (!problem && iotgw_identity_check(device, "its id", &diag))
            problem = diag.text;
        if (problem) {
            snprintf(msg, sizeof msg, "entry %zu %s", i, problem);
            emu_rest_fail(hub, req, &E_BAD_ARGUMENT, msg);
            json_decref(j);
            return;
        }
        for (size_t k = 0; k < i; k++)
            if (!strcmp(device, json_string_value(json_object_get(json_array_get(j, k), "id")))) {
                snprintf(msg, sizeof msg, "device %s is listed more than once", device);
                emu_rest_fail(hub, req, &E_DEFINED_TWICE, msg);
                json_decref(j);
                return;
            }
    }
    json_t *errors = json_array();
    int changed = 0;
    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *e = json_array_get(j, i);
        const char *device = json_string_value(json_object_get(e, "id"));
        char text[300];
        const char *code, *why = bulk_one(hub, e, ops[i], if_match[i], &code, &changed, text, sizeof text);
        if (why) {
            json_array_append_new(errors, json_pack("{s:s,s:n,s:s,s:s,s:s}", "deviceId", device, "moduleId",
                                                    "errorCode", code, "errorStatus", why, "operation",
                                                    json_string_value(json_object_get(e, "importMode"))));
            iotgw_log(IOTGW_LOG_INFO, "registry: bulk %s of %s failed: %s",
                      json_string_value(json_object_get(e, "importMode")), device, why);
        }
    }
    iotgw_log(IOTGW_LOG_INFO, "registry: bulk operation on %zu devices, %zu failed", json_array_size(j),
              json_array_size(errors));
    json_decref(j);
    if (changed && save(hub, req)) {
        json_decref(errors);
        return;
    }
    emu_rest_json(hub, req, 200,
                  json_pack("{s:b,s:o,s:[]}", "isSuccessful", json_array_size(errors) == 0, "errors", errors,
                            "warnings"),
                  NULL);
}

/* ------------------------------------------------------------------ statistics */

void emu_rest_statistics(emu_hub *hub, iotgw_http_request *req, const char *method, char **seg, int n)
{
    int devices = n == 2 && !strcmp(seg[1], "devices"), service = n == 2 && !strcmp(seg[1], "service");
    char why[300];
    if (!devices && !service) {
        emu_rest_fail(hub, req, &E_ROUTE, "no such resource (/statistics/devices, /statistics/service)");
        return;
    }
    if (strcmp(method, "GET")) {
        emu_rest_fail(hub, req, &E_METHOD, "this resource does not take that HTTP method");
        return;
    }
    if (emu_rest_authorize(hub, req,
                           devices ? EMU_RIGHT_REGISTRY_READ | EMU_RIGHT_REGISTRY_WRITE
                                   : EMU_RIGHT_SERVICE_CONNECT,
                           why, sizeof why)) {
        emu_rest_fail(hub, req, &E_UNAUTHORIZED, why);
        return;
    }
    emu_registry *r = emu_hub_registry(hub);
    json_int_t total = 0, enabled = 0, connected = 0;
    for (int i = 0; i < emu_registry_count(r); i++) {
        emu_identity *id = emu_registry_at(r, i);
        if (id->module_id)
            continue;
        total++;
        enabled += id->enabled;
        connected += emu_hub_identity_activity(hub, id).connected;
    }
    if (devices)
        emu_rest_json(hub, req, 200,
                      json_pack("{s:I,s:I,s:I}", "totalDeviceCount", total, "enabledDeviceCount", enabled,
                                "disabledDeviceCount", total - enabled),
                      NULL);
    else
        emu_rest_json(hub, req, 200, json_pack("{s:I}", "connectedDeviceCount", connected), NULL);
}

/* ------------------------------------------------------------------ routing */

void emu_rest_devices(emu_hub *hub, iotgw_http_request *req, const char *method, char **seg, int n)
{
    char why[300];
    int read = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    int query = n == 2 && !strcmp(seg[1], "query") && post;
    int modules = n >= 3 && !strcmp(seg[2], "modules");
    if ((n >= 3 && !strcmp(seg[2], "files")) || (n >= 5 && modules && !strcmp(seg[4], "files"))) {
        emu_rest_files(hub, req, method, seg, n); /* the device side's, files_rest.c */
        return;
    }
    if (n > 4 || (n >= 3 && !modules)) {
        emu_rest_fail(hub, req, &E_ROUTE, "no such resource");
        return;
    }
    int allowed = n == 1   ? read || post
                  : n == 3 ? read
                  : query  ? 1
                           : read || !strcmp(method, "PUT") || !strcmp(method, "DELETE");
    if (!allowed) {
        emu_rest_fail(hub, req, &E_METHOD, "this resource does not take that HTTP method");
        return;
    }
    if (emu_rest_authorize(hub, req,
                           read || query ? EMU_RIGHT_REGISTRY_READ | EMU_RIGHT_REGISTRY_WRITE
                                         : EMU_RIGHT_REGISTRY_WRITE,
                           why, sizeof why)) {
        emu_rest_fail(hub, req, &E_UNAUTHORIZED, why);
        return;
    }
    if (n == 1) {
        if (post)
            bulk(hub, req);
        else
            list_identities(hub, req, NULL);
        return;
    }
    if (query) {
        emu_rest_query(hub, req);
        return;
    }
    const char *module = n == 4 ? seg[3] : NULL;
    if (!emu_rest_ids_valid(hub, req, seg[1], module))
        return;
    if (n == 3) {
        list_identities(hub, req, seg[1]);
        return;
    }
    if (!strcmp(method, "PUT")) {
        put_identity(hub, req, seg[1], module);
        return;
    }
    emu_identity *id = emu_registry_find(emu_hub_registry(hub), seg[1], module);
    if (!id && module && emu_registry_find(emu_hub_registry(hub), seg[1], NULL))
        emu_rest_fail(hub, req, &E_MODULE_NOT_FOUND, "no such module on the device");
    else if (!id)
        emu_rest_fail(hub, req, &E_NOT_FOUND, "no such device");
    else if (read)
        emu_rest_json(hub, req, 200, identity_json(hub, id), NULL);
    else
        delete_identity(hub, req, id);
}
