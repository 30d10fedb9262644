/* The device registry over REST (shared/docs/iothub-amqp-protocol.md 7.2): create,
 * update, read, list and delete devices, saved to the registry file after each change.
 * Disabling or deleting a device detaches its links at once. Modules are read-only here
 * (they come from the registry file). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codecs/base64.h"
#include "emulator/rest.h"
#include "transport/log.h"

#define MAX_LIST 1000

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

/* The device's etag: base64 of its registry version, as IoT Hub's look. */
static void device_etag(const emu_identity *id, char *buf, size_t len)
{
    char text[24];
    int n = snprintf(text, sizeof text, "%lld", (long long)id->registry_version + 1);
    if ((size_t)iotgw_base64_encoded_len((size_t)n) < len)
        iotgw_base64_encode((const uint8_t *)text, (size_t)n, buf);
    else
        buf[0] = '\0';
}

static json_t *device_json(const emu_hub *hub, const emu_identity *id)
{
    char etag[48], active[32];
    emu_identity_activity live = emu_hub_identity_activity(hub, id);
    device_etag(id, etag, sizeof etag);
    iso_time(live.last_activity_ms, active, sizeof active);
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:n,s:s,s:s,s:s,s:i,"
                     "s:{s:s,s:{s:s,s:s},s:{s:n,s:n}},s:{s:b}}",
                     "deviceId", id->device_id, "generationId", id->generation_id, "etag", etag,
                     "connectionState", live.connected ? "Connected" : "Disconnected", "status",
                     id->enabled ? "enabled" : "disabled", "statusReason", "connectionStateUpdatedTime",
                     "0001-01-01T00:00:00Z", "statusUpdatedTime", "0001-01-01T00:00:00Z", "lastActivityTime",
                     active, "cloudToDeviceMessageCount", 0, "authentication", "type", "sas", "symmetricKey",
                     "primaryKey", id->primary_key, "secondaryKey", id->secondary_key, "x509Thumbprint",
                     "primaryThumbprint", "secondaryThumbprint", "capabilities", "iotEdge", 0);
}

static int valid_key(const char *k)
{
    uint8_t raw[132];
    size_t n = 0, len = strlen(k);
    return len <= 172 && !iotgw_base64_decode(k, len, raw, &n, 0, NULL) && n >= 16 && n <= 64;
}

/* Keys and status from a PUT body; messages name the offending field. */
static const char *read_body(json_t *j, const char *path_id, const char **pk, const char **sk, int *enabled)
{
    if (!json_is_object(j))
        return "the body must be a JSON object describing the device";
    const char *did = json_string_value(json_object_get(j, "deviceId"));
    if (did && strcmp(did, path_id))
        return "deviceId in the body differs from the one in the path";
    json_t *st = json_object_get(j, "status");
    if (st) {
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

static void put_device(emu_hub *hub, iotgw_http_request *req, const char *device)
{
    size_t len;
    const uint8_t *body = iotgw_http_body(req, &len);
    json_error_t jerr;
    json_t *j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    emu_identity *id = emu_registry_find(emu_hub_registry(hub), device, NULL);
    const char *pk = NULL, *sk = NULL, *problem;
    int enabled = id ? id->enabled : 1;
    char etag[48] = "";
    if (id)
        device_etag(id, etag, sizeof etag);
    if (!j) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "the body is not JSON");
    } else if ((problem = read_body(j, device, &pk, &sk, &enabled))) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, problem);
    } else if (id && !iotgw_http_header(req, "if-match")) {
        emu_rest_fail(hub, req, &E_CONFLICT, "the device already exists (update it with If-Match)");
    } else if (id && !emu_rest_etag_matches(req, etag)) {
        emu_rest_fail(hub, req, &E_PRECONDITION, "the device's etag does not match If-Match");
    } else if (!id) {
        iotgw_diag diag = {0};
        if (emu_registry_add(emu_hub_registry(hub), device, NULL, pk, sk, enabled, &id, &diag))
            emu_rest_fail(hub, req, &E_BAD_ARGUMENT, diag.text);
        else if (!save(hub, req)) {
            iotgw_log(IOTGW_LOG_INFO, "registry: device %s created (%s)", device,
                      enabled ? "enabled" : "disabled");
            emu_rest_json(hub, req, 200, device_json(hub, id), NULL);
        }
    } else {
        char *npk = pk ? strdup(pk) : NULL, *nsk = sk ? strdup(sk) : NULL;
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
        else if (npk || nsk)
            emu_hub_identity_disconnect(hub, id, "amqp:unauthorized-access", "the device's keys changed");
        if (!save(hub, req)) {
            iotgw_log(IOTGW_LOG_INFO, "registry: device %s updated (%s)", device,
                      enabled ? "enabled" : "disabled");
            emu_rest_json(hub, req, 200, device_json(hub, id), NULL);
        }
    }
    json_decref(j);
}

static void delete_device(emu_hub *hub, iotgw_http_request *req, emu_identity *id)
{
    char etag[48];
    device_etag(id, etag, sizeof etag);
    if (!iotgw_http_header(req, "if-match")) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "deleting a device needs If-Match (\"*\" or its etag)");
        return;
    }
    if (!emu_rest_etag_matches(req, etag)) {
        emu_rest_fail(hub, req, &E_PRECONDITION, "the device's etag does not match If-Match");
        return;
    }
    /* its modules go with it; the hub lets go of each before the registry frees it */
    emu_registry *r = emu_hub_registry(hub);
    for (int i = emu_registry_count(r) - 1; i >= 0; i--) {
        emu_identity *m = emu_registry_at(r, i);
        if (m->module_id && !strcmp(m->device_id, id->device_id)) {
            emu_hub_identity_forget(hub, m);
            emu_registry_remove(r, m);
        }
    }
    char name[256];
    snprintf(name, sizeof name, "%s", id->device_id);
    emu_hub_identity_forget(hub, id);
    emu_registry_remove(r, id);
    if (!save(hub, req)) {
        iotgw_log(IOTGW_LOG_INFO, "registry: device %s deleted", name);
        emu_rest_answer(hub, req, 204, NULL, NULL, NULL, 0);
    }
}

static void list_devices(emu_hub *hub, iotgw_http_request *req)
{
    int top = MAX_LIST;
    const char *q = strstr(iotgw_http_query(req), "top=");
    if (q && (q == iotgw_http_query(req) || q[-1] == '&')) {
        top = atoi(q + 4);
        if (top < 1 || top > MAX_LIST) {
            emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "top must be 1 to 1000");
            return;
        }
    }
    json_t *list = json_array();
    emu_registry *r = emu_hub_registry(hub);
    for (int i = 0, n = 0; i < emu_registry_count(r) && n < top; i++) {
        emu_identity *id = emu_registry_at(r, i);
        if (!id->module_id) {
            json_array_append_new(list, device_json(hub, id));
            n++;
        }
    }
    emu_rest_json(hub, req, 200, list, NULL);
}

void emu_rest_devices(emu_hub *hub, iotgw_http_request *req, const char *method, char **seg, int n)
{
    char why[300];
    int read = !strcmp(method, "GET");
    if (n > 2) {
        emu_rest_fail(hub, req, &E_ROUTE,
                      "no such resource (modules are not served by the registry API here)");
        return;
    }
    if ((n == 1 && !read) || (n == 2 && !read && strcmp(method, "PUT") && strcmp(method, "DELETE"))) {
        emu_rest_fail(hub, req, &E_METHOD, "this resource does not take that HTTP method");
        return;
    }
    if (emu_rest_authorize(
            hub, req, read ? EMU_RIGHT_REGISTRY_READ | EMU_RIGHT_REGISTRY_WRITE : EMU_RIGHT_REGISTRY_WRITE,
            why, sizeof why)) {
        emu_rest_fail(hub, req, &E_UNAUTHORIZED, why);
        return;
    }
    if (n == 1) {
        list_devices(hub, req);
        return;
    }
    if (!emu_rest_ids_valid(hub, req, seg[1], NULL))
        return;
    if (!strcmp(method, "PUT")) {
        put_device(hub, req, seg[1]);
        return;
    }
    emu_identity *id = emu_registry_find(emu_hub_registry(hub), seg[1], NULL);
    if (!id)
        emu_rest_fail(hub, req, &E_NOT_FOUND, "no such device");
    else if (read)
        emu_rest_json(hub, req, 200, device_json(hub, id), NULL);
    else
        delete_device(hub, req, id);
}
