/* Device twins over AMQP (shared/docs/iothub-amqp-protocol.md 4.5): GET, PATCH of
 * reported properties, PUT/DELETE of the desired-update subscription, and desired
 * updates pushed to subscribed devices; the GET and PATCH themselves and the desired
 * pushes serve MQTT devices too (mqtt.c). Status and version travel as message
 * annotations, status an int and version a long (the C SDK refuses other types). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <proton/delivery.h>

#include "codecs/base64.h"
#include "transport/amqp_map.h"
#include "emulator/hub_internal.h"
#include "hubside/amqp_device.h"
#include "transport/messaging.h"

#define TWIN_MAX_DEPTH 10

/* RFC 7396 merge: members set to null are removed, objects merge, the rest replaces. */
static void merge_patch(json_t *target, json_t *patch)
{
    const char *key;
    json_t *value;
    json_object_foreach(patch, key, value)
    {
        if (json_is_null(value)) {
            json_object_del(target, key);
        } else if (json_is_object(value)) {
            json_t *old = json_object_get(target, key);
            if (!json_is_object(old)) {
                old = json_object();
                json_object_set_new(target, key, old);
            }
            merge_patch(old, value);
        } else {
            json_object_set(target, key, value);
        }
    }
}

static int depth_of(json_t *v)
{
    int d = 0;
    const char *key;
    json_t *m;
    if (json_is_object(v))
        json_object_foreach(v, key, m)
        {
            int x = depth_of(m);
            if (x > d)
                d = x;
        }
    return json_is_object(v) ? d + 1 : 0;
}

int emu_twin_apply(json_t **props, json_t *patch, int replace, size_t max_bytes, const char **error)
{
    json_t *next = replace ? json_object() : json_deep_copy(*props);
    json_t *clean = json_deep_copy(patch);
    if (!next || !clean) {
        json_decref(next);
        json_decref(clean);
        *error = "out of memory";
        return 500;
    }
    json_object_del(clean, "$version");
    json_object_del(clean, "$metadata");
    merge_patch(next, clean);
    json_decref(clean);
    char *text = json_dumps(next, JSON_COMPACT);
    int status = 0;
    if (!text || strlen(text) > max_bytes) {
        *error = "the properties would exceed IoT Hub's size limit";
        status = 413;
    } else if (depth_of(next) > TWIN_MAX_DEPTH) {
        *error = "the properties would nest deeper than 10 levels";
        status = 400;
    }
    free(text);
    if (status) {
        json_decref(next);
        return status;
    }
    json_decref(*props);
    *props = next;
    return 0;
}

static json_t *with_version(json_t *props, int64_t version)
{
    json_t *o = json_deep_copy(props);
    json_object_set_new(o, "$version", json_integer(version));
    return o;
}

json_t *emu_twin_json(const emu_hub *hub, const emu_identity *id)
{
    const emu_live *live = emu_live_find(&hub->live, id);
    json_t *t = json_object();
    json_object_set_new(t, "deviceId", json_string(id->device_id));
    if (id->module_id)
        json_object_set_new(t, "moduleId", json_string(id->module_id));
    /* One version for every change of the twin; the etag is its base64, as IoT Hub's look. */
    int64_t version = id->desired_version + id->reported_version + id->tags_version;
    uint8_t be[8];
    char etag[16];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)((uint64_t)version >> (56 - 8 * i));
    iotgw_base64_encode(be, sizeof be, etag);
    json_object_set_new(t, "etag", json_string(etag));
    json_object_set_new(t, "version", json_integer(version));
    json_object_set_new(t, "status", json_string(id->enabled ? "enabled" : "disabled"));
    json_object_set_new(t, "connectionState",
                        json_string(emu_live_connected(live) ? "Connected" : "Disconnected"));
    json_object_set_new(t, "tags", json_deep_copy(id->tags));
    json_t *props = json_object();
    json_object_set_new(props, "desired", with_version(id->desired, id->desired_version));
    json_object_set_new(props, "reported", with_version(id->reported, id->reported_version));
    json_object_set_new(t, "properties", props);
    return t;
}

static void send_twin(emu_session *s, pn_msgid_t correlation, int has_correlation, int status,
                      int64_t version, const char *body)
{
    if (!s->twin_responses)
        return;
    pn_message_t *m = pn_message();
    if (m && !iotgw_hubamqp_twin_message(m, has_correlation ? &correlation : NULL, status, version,
                                         (const uint8_t *)body, body ? strlen(body) : 0))
        emu_link_answer(s->twin_responses, m);
    pn_message_free(m);
}

char *emu_twin_document_text(const emu_identity *id)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "desired", with_version(id->desired, id->desired_version));
    json_object_set_new(doc, "reported", with_version(id->reported, id->reported_version));
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return text;
}

int emu_twin_patch_reported(emu_hub *hub, emu_identity *id, const uint8_t *body, size_t len, int64_t *version,
                            const char **error)
{
    json_error_t jerr;
    json_t *patch = body ? json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    int status;
    *error = NULL;
    if (!json_is_object(patch)) {
        *error = "the body must be a JSON object of reported properties";
        status = 400;
    } else if ((status = emu_twin_apply(&id->reported, patch, 0, EMU_TWIN_MAX_PROPERTIES, error)) == 0) {
        id->reported_version++;
        status = 204;
        *version = id->reported_version;
    }
    json_decref(patch);
    hub->metrics.twin[EMU_TWIN_PATCH_REPORTED][*error != NULL]++;
    return status;
}

void emu_twin_on_request(emu_link *l, pn_delivery_t *d)
{
    emu_session *s = l->session;
    emu_identity *id = s->id;
    pn_message_t *m = emu_take_request(l, d, "twin request");
    if (!m)
        return;
    iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);
    s->live->twin_requests++;
    s->live->last_activity_ms = emu_wall_ms();

    char op[16], resource[64];
    iotgw_hubamqp_twin_op top = iotgw_hubamqp_twin_op_of(m, op, resource);
    pn_msgid_t corr = pn_message_get_correlation_id(m);
    int status = 400, kind = EMU_TWIN_UNKNOWN;
    int64_t version = -1;
    char *answer = NULL;
    const char *error = NULL;
    int counted = 0;
    if (top == IOTGW_HUBAMQP_TWIN_GET) {
        kind = EMU_TWIN_GET;
        answer = emu_twin_document_text(id);
        status = 200;
        version = id->reported_version;
    } else if (top == IOTGW_HUBAMQP_TWIN_PATCH_REPORTED) {
        size_t blen = 0;
        const char *body = iotgw_body_bytes(pn_message_body(m), &blen);
        status = emu_twin_patch_reported(l->conn->hub, id, (const uint8_t *)body, blen, &version, &error);
        counted = 1;
    } else if (top == IOTGW_HUBAMQP_TWIN_SUBSCRIBE_DESIRED || top == IOTGW_HUBAMQP_TWIN_UNSUBSCRIBE_DESIRED) {
        s->desired_subscribed = top == IOTGW_HUBAMQP_TWIN_SUBSCRIBE_DESIRED;
        kind = s->desired_subscribed ? EMU_TWIN_SUBSCRIBE : EMU_TWIN_UNSUBSCRIBE;
        status = 200;
    } else {
        error = "unknown twin operation or resource";
    }
    if (error) {
        json_t *e = json_pack("{s:s}", "message", error);
        answer = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": %s: twin %s %s refused: %s", l->conn->serial, id->id, op,
                  resource, error);
    }
    if (!counted)
        l->conn->hub->metrics.twin[kind][error != NULL]++;
    send_twin(s, corr, corr.type != PN_NULL, status, version, answer);
    free(answer);
}

void emu_twin_notify_desired(emu_hub *hub, emu_identity *id, json_t *patch)
{
    emu_live *live = emu_live_find(&hub->live, id);
    emu_session *s = live ? live->active : NULL;
    if (live && live->mqtt) {
        json_t *p = with_version(patch, id->desired_version);
        char *text = json_dumps(p, JSON_COMPACT);
        json_decref(p);
        if (text && !emu_mqtt_send_desired(live->mqtt, id->desired_version, text))
            hub->metrics.desired_pushes++;
        free(text);
        return;
    }
    if (!s || !s->desired_subscribed || !s->twin_responses)
        return;
    hub->metrics.desired_pushes++;
    json_t *p = with_version(patch, id->desired_version);
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    pn_msgid_t none = {.type = PN_NULL};
    send_twin(s, none, 0, 0, id->desired_version, text);
    free(text);
    if (s->conn->conn)
        iotgw_conn_wake(s->conn->conn);
}

int emu_twin_service_update(emu_hub *hub, emu_identity *id, json_t *body, int replace, const char **error)
{
    json_t *props = json_object_get(body, "properties");
    json_t *desired = props ? json_object_get(props, "desired") : NULL;
    json_t *tags = json_object_get(body, "tags");
    if ((desired && !json_is_object(desired)) || (tags && !json_is_object(tags))) {
        *error = "tags and properties.desired must be JSON objects";
        return 400;
    }
    /* Both parts are checked before either is applied. */
    json_t *new_tags = json_incref(id->tags), *new_desired = json_incref(id->desired);
    int status = tags ? emu_twin_apply(&new_tags, tags, replace, EMU_TWIN_MAX_TAGS, error) : 0;
    if (!status && desired)
        status = emu_twin_apply(&new_desired, desired, replace, EMU_TWIN_MAX_PROPERTIES, error);
    if (status) {
        json_decref(new_tags);
        json_decref(new_desired);
        return status;
    }
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
    return 0;
}
