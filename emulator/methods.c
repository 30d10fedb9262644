/* Direct methods (shared/docs/iothub-amqp-protocol.md 4.4 and 7.2): a call waits up to
 * its connect timeout for the device's method link (or an MQTT device's subscription to
 * $iothub/methods/POST/#), is sent with a uuid correlation-id and IoThub-methodname (over
 * MQTT: on $iothub/methods/POST/{name}/?$rid={rid}, rid the call's number in hex), and
 * ends with the device's IoThub-status and payload, or with DeviceNotOnline (404103) or
 * GatewayTimeout (504101). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>
#include <proton/delivery.h>

#include "transport/amqp_map.h"
#include "emulator/hub_internal.h"
#include "hubside/amqp_device.h"
#include "transport/messaging.h"

struct emu_method_call {
    emu_hub *hub;
    emu_identity *id;
    char *name;
    uint8_t *payload;
    size_t len;
    pn_uuid_t uuid;
    uint64_t rid; /* MQTT's request id */
    int sent;
    int response_timeout_s;
    int delayed_status;                         /* fault injection: the answer held back */
    const char *delayed_code, *delayed_message; /* an error answered on the next turn (static text) */
    int answered;
    iotgw_timer timer; /* connect timeout before sending, response timeout after; the fault's delay */
    emu_method_done_fn done;
    void *ctx;
    iotgw_list in_hub; /* in hub->calls */
};

static void call_free(emu_method_call *call)
{
    iotgw_timer_stop(&call->timer);
    iotgw_list_remove(&call->in_hub);
    free(call->name);
    free(call->payload);
    free(call);
}

/* For the metrics: the class of the device's status, or the hub's error. */
static int outcome(int status, const char *code)
{
    if (!code)
        return status >= 100 && status < 600 ? status / 100 : 0;
    return !strcmp(code, "DeviceNotOnline")   ? EMU_METHOD_NOT_ONLINE
           : !strcmp(code, "GatewayTimeout")  ? EMU_METHOD_TIMEOUT
           : !strcmp(code, "DeviceNotFound")  ? EMU_METHOD_NOT_FOUND
           : !strcmp(code, "MessageTooLarge") ? EMU_METHOD_TOO_LARGE
           : !strcmp(code, "InjectedFailure") ? EMU_METHOD_INJECTED
                                              : EMU_METHOD_SERVER_ERROR;
}

static void finish(emu_method_call *call, int status, const uint8_t *payload, size_t len, const char *code,
                   const char *message)
{
    call->hub->metrics.methods[outcome(status, code)]++;
    emu_method_done_fn done = call->done;
    void *ctx = call->ctx;
    call_free(call);
    if (done)
        done(ctx, status, payload, len, code, message);
}

static void fail_later(emu_method_call *call, int status, const char *code, const char *message);

static void timed_out(iotgw_timer *t, void *ctx)
{
    emu_method_call *call = ctx;
    (void)t;
    iotgw_log(IOTGW_LOG_INFO, "%s: method %s: %s", call->id->id, call->name,
              call->sent ? "no answer in time" : "the device did not come online in time");
    if (call->sent)
        finish(call, 504, NULL, 0, "GatewayTimeout", "Timed out waiting for the response from device.");
    else
        finish(call, 404, NULL, 0, "DeviceNotOnline", "The device is not online.");
}

static int try_send_mqtt(emu_method_call *call, emu_live *live)
{
    char rid[24];
    snprintf(rid, sizeof rid, "%" PRIx64, call->rid);
    if (emu_mqtt_send_method(live->mqtt, call->name, rid, call->payload, call->len))
        return -1;
    call->sent = 1;
    live->methods_invoked++;
    iotgw_timer_start(&call->timer, (int64_t)call->response_timeout_s * 1000, 0);
    iotgw_log(IOTGW_LOG_INFO, "%s: method %s sent over MQTT ($rid=%s)", call->id->id, call->name, rid);
    return 0;
}

static int try_send(emu_method_call *call)
{
    emu_live *live = emu_live_find(&call->hub->live, call->id);
    if (live && live->mqtt)
        return try_send_mqtt(call, live);
    emu_session *s = live ? live->active : NULL;
    if (!s || !s->method_requests || pn_link_credit(s->method_requests->link) <= 0)
        return -1;
    pn_message_t *m = pn_message();
    if (!m || iotgw_hubamqp_method_request(m, (const uint8_t *)call->uuid.bytes, call->name, call->payload, call->len)) {
        pn_message_free(m);
        return -1;
    }
    pn_delivery_t *d = iotgw_link_send_message(s->method_requests->link, m);
    pn_message_free(m);
    if (!d)
        return -1;
    call->sent = 1;
    live->methods_invoked++;
    iotgw_timer_start(&call->timer, (int64_t)call->response_timeout_s * 1000, 0);
    iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": %s: method %s sent", s->conn->serial, call->id->id,
              call->name);
    if (s->conn->conn)
        iotgw_conn_wake(s->conn->conn);
    return 0;
}

emu_method_call *emu_method_invoke(emu_hub *hub, emu_identity *id, const char *name, const uint8_t *payload,
                                   size_t len, int response_timeout_s, int connect_timeout_s,
                                   emu_method_done_fn done, void *ctx)
{
    emu_method_call *call = calloc(1, sizeof *call);
    if (!call || !(call->name = strdup(name)) || !(call->payload = malloc(len ? len : 1))) {
        if (call)
            free(call->name);
        free(call);
        hub->metrics.methods[EMU_METHOD_SERVER_ERROR]++;
        done(ctx, 500, NULL, 0, "ServerError", "out of memory");
        return NULL;
    }
    memcpy(call->payload, payload, len);
    call->len = len;
    call->hub = hub;
    iotgw_list_init(&call->in_hub);
    iotgw_timer_init(hub->loop, &call->timer, timed_out, call);
    call->id = id;
    call->rid = ++hub->next_method_rid;
    call->response_timeout_s = response_timeout_s;
    call->done = done;
    call->ctx = ctx;
    RAND_bytes((unsigned char *)call->uuid.bytes, sizeof call->uuid.bytes);
    call->uuid.bytes[6] = (char)((call->uuid.bytes[6] & 0x0f) | 0x40); /* version 4 */
    call->uuid.bytes[8] = (char)((call->uuid.bytes[8] & 0x3f) | 0x80);
    iotgw_list_push_front(&hub->calls, &call->in_hub);
    if (try_send(call) == 0)
        return call;
    if (connect_timeout_s <= 0) {
        fail_later(call, 404, "DeviceNotOnline", "The device is not online.");
        return call;
    }
    iotgw_timer_start(&call->timer, (int64_t)connect_timeout_s * 1000, 0);
    return call;
}

/* Fault injection: hand the device's answer to the caller delay_ms later. */
static void delayed_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    emu_method_call *call = ctx;
    uint8_t *payload = call->payload; /* finish frees the call: the answer must outlive it */
    call->payload = NULL;
    finish(call, call->delayed_status, payload, call->len, NULL, NULL);
    free(payload);
}

/* An error that ends the call, told through done on the next turn of the loop: never
 * inside the call (invoke, an identity's deletion) that caused it. */
static void error_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    emu_method_call *call = ctx;
    finish(call, call->delayed_status, NULL, 0, call->delayed_code, call->delayed_message);
}

static void fail_later(emu_method_call *call, int status, const char *code, const char *message)
{
    call->delayed_status = status;
    call->delayed_code = code;
    call->delayed_message = message;
    call->answered = 1; /* no answer, no send: it is over */
    iotgw_timer_stop(&call->timer);
    iotgw_timer_init(call->hub->loop, &call->timer, error_fired, call);
    iotgw_timer_start(&call->timer, 0, 0);
}

static void finish_later(emu_method_call *call, int status, const uint8_t *payload, size_t len, int delay_ms)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) {
        finish(call, status, payload, len, NULL, NULL);
        return;
    }
    memcpy(copy, payload ? payload : (const uint8_t *)"", len);
    free(call->payload);
    call->payload = copy;
    call->len = len;
    call->delayed_status = status;
    call->answered = 1;             /* a second answer for it finds no waiting call */
    iotgw_timer_stop(&call->timer); /* the response deadline: replaced by the delay */
    iotgw_timer_init(call->hub->loop, &call->timer, delayed_fired, call);
    iotgw_timer_start(&call->timer, delay_ms, 0);
}

void emu_method_cancel(emu_method_call *call)
{
    call->done = NULL;
    call_free(call);
}

void emu_methods_cancel_all(emu_hub *hub)
{
    emu_method_call *call;
    IOTGW_LIST_FOREACH (call, &hub->calls, emu_method_call, in_hub)
        emu_method_cancel(call);
}

void emu_methods_identity_gone(emu_hub *hub, emu_identity *id)
{
    emu_method_call *call;
    IOTGW_LIST_FOREACH (call, &hub->calls, emu_method_call, in_hub)
        if (call->id == id && !call->answered)
            fail_later(call, 0, "DeviceNotFound", "the device was deleted");
}

void emu_methods_session_changed(emu_hub *hub, emu_identity *id)
{
    emu_method_call *call;
    IOTGW_LIST_FOREACH (call, &hub->calls, emu_method_call, in_hub)
        if (call->id == id && !call->sent && !call->answered)
            try_send(call);
}

/* The device answered call: the caller gets it, unless a fault says otherwise. */
static void answer(emu_method_call *call, int status, const uint8_t *body, size_t blen)
{
    emu_hub *hub = call->hub;
    int fail_status = emu_faults_method_fail_status(hub->faults);
    int delay_ms = emu_faults_method_delay_ms(hub->faults);
    if (blen > EMU_METHOD_MAX_PAYLOAD)
        finish(call, 413, NULL, 0, "MessageTooLarge", "The device's response is larger than 128 KB.");
    else if (fail_status)
        finish(call, fail_status, NULL, 0, "InjectedFailure",
               "the hub failed the method call (fault injection)");
    else if (delay_ms)
        finish_later(call, status, body, blen, delay_ms);
    else
        finish(call, status, body, blen, NULL, NULL);
}

void emu_methods_on_response(emu_link *l, pn_delivery_t *d)
{
    emu_hub *hub = l->conn->hub;
    emu_identity *id = l->session->id;
    pn_message_t *m = emu_take_request(l, d, "method response");
    if (!m)
        return;
    uint8_t uuid[16];
    int status;
    const uint8_t *body;
    size_t blen;
    if (iotgw_hubamqp_method_response(m, uuid, &status, &body, &blen)) {
        iotgw_log(IOTGW_LOG_WARN,
                  "conn %" PRIu64 ": %s: method response without a uuid correlation-id or IoThub-status",
                  l->conn->serial, id->id);
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:invalid-field",
                              "a method response needs a uuid correlation-id and an int IoThub-status");
        return;
    }
    iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);
    emu_method_call *call;
    IOTGW_LIST_FOREACH (call, &hub->calls, emu_method_call, in_hub) {
        if (call->sent && !call->answered && call->id == id &&
            !memcmp(call->uuid.bytes, uuid, 16)) {
            answer(call, status, body, blen);
            return;
        }
    }
    iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": %s: method response for no waiting call (late?)",
              l->conn->serial, id->id);
}

void emu_methods_on_mqtt_response(emu_hub *hub, emu_identity *id, const uint8_t *rid, size_t rid_len,
                                  int status, const uint8_t *body, size_t len)
{
    char text[24];
    emu_method_call *call;
    IOTGW_LIST_FOREACH (call, &hub->calls, emu_method_call, in_hub) {
        if (!call->sent || call->answered || call->id != id)
            continue;
        int n = snprintf(text, sizeof text, "%" PRIx64, call->rid);
        if ((size_t)n == rid_len && !memcmp(text, rid, rid_len)) {
            answer(call, status, body, len);
            return;
        }
    }
    iotgw_log(IOTGW_LOG_INFO, "%s: MQTT method response $rid=%.*s for no waiting call (late?)", id->id,
              (int)(rid_len > 40 ? 40 : rid_len), (const char *)rid);
}
