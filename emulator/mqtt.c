/*
 * IoT Hub's MQTT device endpoint in the emulator: the back end of hubside/mqtt_device.h,
 * whose front end holds the protocol (CONNECT checks, subscriptions, keep-alive, will,
 * topics). Here: who may connect (the registry, its tokens and certificates, fault
 * injection), and what each request does in the hub (the telemetry stream, the C2D
 * queue, direct methods and twins, which AMQP devices share). MQTT over TLS (--mqtts,
 * 8883 by default) and over WebSocket (subprotocol "mqtt" on the HTTPS port's
 * /$iothub/websocket); docs/emulator.md lists what is refused and how.
 *
 * A client is one accepted connection. It is its identity's presence (live->mqtt), as an
 * AMQP session is (live->active); the newest connection wins across both protocols. It is
 * freed when the front end says the connection closed; emu_mqtt_drop() may have detached
 * it from its identity before.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <jansson.h>

#include "emulator/hub_internal.h"
#include "hubside/mqtt_device.h"
#include "transport/messaging.h"

struct emu_mqtt_client {
    emu_hub *hub;
    iotgw_hubmqtt *c;
    emu_identity *id;
    emu_live *live; /* while live->mqtt == this */
    int clean_session;
    iotgw_list in_hub; /* hub->mqtt_clients, from its accepted CONNECT to its close */
};

static emu_mqtt_client *client_of(iotgw_hubmqtt *c)
{
    return iotgw_hubmqtt_context(c);
}

static emu_hub *hub_of(iotgw_hubmqtt *c)
{
    return iotgw_hubmqtt_endpoint_context(iotgw_hubmqtt_endpoint_of(c));
}

/* Let go of the identity: what it held goes back (C2D), waiting calls wait again. */
static void detach(emu_mqtt_client *m)
{
    emu_live *live = m->live;
    if (!live)
        return;
    IOTGW_ASSERT(live->mqtt == m);
    live->mqtt = NULL;
    m->live = NULL;
    if (!m->clean_session) { /* IoT Hub keeps a persistent session's subscriptions */
        live->mqtt_subscriptions = iotgw_hubmqtt_subscriptions(m->c);
        live->mqtt_session = 1;
    }
    emu_c2d_requeue(live);
    emu_methods_session_changed(m->hub, live->id);
}

void emu_mqtt_drop(emu_mqtt_client *m, const char *why)
{
    detach(m);
    iotgw_hubmqtt_drop(m->c, why);
}

uint64_t emu_mqtt_serial(const emu_mqtt_client *m)
{
    return iotgw_hubmqtt_serial(m->c);
}

int emu_mqtt_drop_all(emu_hub *hub, const char *why)
{
    emu_mqtt_client *m;
    IOTGW_LIST_FOREACH (m, &hub->mqtt_clients, emu_mqtt_client, in_hub)
        detach(m); /* at once: the front end's closed comes later */
    return hub->mqtt ? iotgw_hubmqtt_drop_all(hub->mqtt, why) : 0;
}

/* ------------------------------------------------------------------ CONNECT */

static int on_connect(iotgw_hubmqtt *c, const iotgw_hubmqtt_connect *req, iotgw_hubmqtt_accepted *out,
                      char *why, size_t why_len)
{
    emu_hub *hub = hub_of(c);
    const char *name = iotgw_hubmqtt_name(c);
    if (emu_faults_refusing_connections(hub->faults, emu_wall_ms())) {
        snprintf(why, why_len, "the hub refuses connections for now (fault injection)");
        return IOTGW_MQTT_CONNACK_UNAVAILABLE;
    }
    if (strcasecmp(req->host, hub->opt.hostname)) {
        snprintf(why, why_len, "the user name names another hub (%.200s; this is %s)", req->host,
                 hub->opt.hostname);
        return IOTGW_MQTT_CONNACK_NOT_AUTHORIZED;
    }
    emu_identity *id = emu_registry_find(hub->registry, req->device_id, req->module_id);
    if (!id) {
        snprintf(why, why_len, "%s is not registered on this hub", name);
        return IOTGW_MQTT_CONNACK_NOT_AUTHORIZED;
    }
    int64_t expires_in_ms = -1;
    if (req->token) {
        emu_auth a;
        if (emu_auth_token(hub, req->token, NULL, &a)) {
            snprintf(why, why_len, "%s: %s", id->id, a.description);
            return IOTGW_MQTT_CONNACK_NOT_AUTHORIZED;
        }
        if (a.id != id) {
            snprintf(why, why_len, "%s: the token is for %s", id->id,
                     a.id ? a.id->id : "the whole hub, not this device");
            return IOTGW_MQTT_CONNACK_NOT_AUTHORIZED;
        }
        uint64_t now = emu_now_s();
        uint64_t left = a.expiry > now ? a.expiry - now : 0;
        expires_in_ms = (int64_t)(left > 366u * 86400 ? 366u * 86400 : left) * 1000; /* a timer's range */
    } else {
        if (!req->cert_cn || strcmp(req->cert_cn, id->id)) {
            snprintf(why, why_len, "%s: no password (SAS token) and no client certificate for it", id->id);
            return IOTGW_MQTT_CONNACK_NOT_AUTHORIZED;
        }
        if (!id->enabled) {
            snprintf(why, why_len, "%s is disabled", id->id);
            return IOTGW_MQTT_CONNACK_NOT_AUTHORIZED;
        }
    }
    emu_live *live = emu_live_get(&hub->live, id);
    emu_mqtt_client *m = live ? calloc(1, sizeof *m) : NULL;
    if (!m) {
        snprintf(why, why_len, "out of memory");
        return IOTGW_MQTT_CONNACK_UNAVAILABLE;
    }
    m->hub = hub;
    m->c = c;
    iotgw_list_init(&m->in_hub);
    iotgw_list_push_front(&hub->mqtt_clients, &m->in_hub);
    iotgw_hubmqtt_set_context(c, m);

    /* one connection per identity: the newest wins, over either protocol */
    if (live->mqtt) {
        iotgw_log(IOTGW_LOG_INFO, "%s: MQTT conn %" PRIu64 " replaces conn %" PRIu64, id->id,
                  iotgw_hubmqtt_serial(c), emu_mqtt_serial(live->mqtt));
        emu_mqtt_drop(live->mqtt, "a newer connection for this identity took over");
    }
    if (live->active)
        emu_session_end(live->active, "com.microsoft:link-creation-conflict",
                        "a newer connection for this identity took its links over");
    if (req->clean_session) {
        live->mqtt_session = 0;
        live->mqtt_subscriptions = 0;
    } else if (live->mqtt_session) {
        out->session_present = 1;
        out->subscriptions = live->mqtt_subscriptions;
    }
    out->expires_in_ms = expires_in_ms;
    m->id = id;
    m->live = live;
    m->clean_session = req->clean_session;
    live->mqtt = m;
    live->auth_ok++;
    live->last_activity_ms = emu_wall_ms();
    return IOTGW_MQTT_CONNACK_ACCEPTED;
}

static void on_subscribed(iotgw_hubmqtt *c, unsigned added)
{
    emu_mqtt_client *m = client_of(c);
    if (!m->live)
        return;
    if (added & IOTGW_HUBMQTT_SUB(IOTGW_IOTHUB_SUB_METHODS))
        emu_methods_session_changed(m->hub, m->id);
    if (added & IOTGW_HUBMQTT_SUB(IOTGW_IOTHUB_SUB_C2D))
        emu_c2d_pump_mqtt(m->live);
}

static void on_closed(iotgw_hubmqtt *c, const char *why)
{
    (void)why;
    emu_mqtt_client *m = client_of(c);
    detach(m);
    iotgw_list_remove(&m->in_hub);
    free(m);
}

/* ------------------------------------------------------------------ telemetry */

static int on_telemetry(iotgw_hubmqtt *c, pn_message_t *msg, size_t counted, uint16_t packet_id,
                        const char **why)
{
    (void)packet_id;
    emu_mqtt_client *m = client_of(c);
    emu_hub *hub = m->hub;
    /* a lost connection's will comes after a newer connection may have taken over */
    emu_live *live = m->live ? m->live : emu_live_get(&hub->live, m->id);
    if (!live) {
        *why = "out of memory";
        return -1;
    }
    uint8_t *buf;
    size_t blen;
    if (iotgw_message_encode(msg, &buf, &blen)) {
        *why = "out of memory";
        return -1;
    }
    int throttled = 0;
    const char *cond = emu_telemetry_accept(hub, live, buf, blen, counted, why, &throttled);
    free(buf);
    live->last_activity_ms = emu_wall_ms();
    return cond ? -1 : 0;
}

/* ------------------------------------------------------------------ twins */

static void on_twin(iotgw_hubmqtt *c, iotgw_iothub_publish_kind kind, const uint8_t *rid, size_t rid_len,
                    const uint8_t *payload, size_t len)
{
    emu_mqtt_client *m = client_of(c);
    emu_hub *hub = m->hub;
    emu_identity *id = m->id;
    if (!m->live)
        return;
    m->live->twin_requests++;
    m->live->last_activity_ms = emu_wall_ms();
    if (kind == IOTGW_IOTHUB_TWIN_GET) {
        char *doc = emu_twin_document_text(id);
        hub->metrics.twin[EMU_TWIN_GET][doc == NULL]++;
        iotgw_hubmqtt_twin_answer(c, doc ? 200 : 500, rid, rid_len, -1,
                                  doc ? doc : "{\"message\":\"out of memory\"}");
        free(doc);
        return;
    }
    int64_t version = -1;
    const char *error = NULL;
    int status = emu_twin_patch_reported(hub, id, payload, len, &version, &error);
    if (error) {
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": MQTT %s: reported properties refused (%d): %s",
                  iotgw_hubmqtt_serial(c), id->id, status, error);
        /* Node's SDK reads errorCode, not the status, to tell a failure */
        json_t *e = json_pack("{s:i,s:s,s:s}", "errorCode", status * 1000 + (status == 400 ? 4 : 0),
                              "message", error, "trackingId", "emulator");
        char *text = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        iotgw_hubmqtt_twin_answer(c, status, rid, rid_len, -1, text);
        free(text);
        return;
    }
    iotgw_hubmqtt_twin_answer(c, status, rid, rid_len, version, NULL);
}

int emu_mqtt_send_desired(emu_mqtt_client *m, int64_t version, const char *patch)
{
    return iotgw_hubmqtt_send_desired(m->c, version, (const uint8_t *)patch, strlen(patch));
}

/* ------------------------------------------------------------------ methods */

int emu_mqtt_send_method(emu_mqtt_client *m, const char *name, const char *rid, const uint8_t *payload,
                         size_t len)
{
    return iotgw_hubmqtt_send_method(m->c, name, rid, payload, len);
}

static void on_method_response(iotgw_hubmqtt *c, const uint8_t *rid, size_t rid_len, int status,
                               const uint8_t *payload, size_t len)
{
    emu_mqtt_client *m = client_of(c);
    if (m->live)
        m->live->last_activity_ms = emu_wall_ms();
    emu_methods_on_mqtt_response(m->hub, m->id, rid, rid_len, status, payload, len);
}

/* ------------------------------------------------------------------ C2D */

int emu_mqtt_send_c2d(emu_mqtt_client *m, const uint8_t *buf, size_t len, int dup, uint16_t *packet_id)
{
    emu_hub *hub = m->hub;
    if (!hub->mqtt_scratch && !(hub->mqtt_scratch = pn_message()))
        return -1;
    if (iotgw_message_decode(hub->mqtt_scratch, buf, len, NULL))
        return -1; /* queued encoded by c2d.c: cannot happen */
    return iotgw_hubmqtt_send_c2d(m->c, hub->mqtt_scratch, dup, packet_id);
}

static void on_c2d_acked(iotgw_hubmqtt *c, uint16_t packet_id)
{
    emu_mqtt_client *m = client_of(c);
    if (m->live) {
        m->live->last_activity_ms = emu_wall_ms();
        emu_c2d_mqtt_complete(m->live, packet_id); /* or a late one: ignored */
    }
}

/* ------------------------------------------------------------------ endpoints */

static const iotgw_hubmqtt_backend backend = {
    .connect = on_connect,
    .telemetry = on_telemetry,
    .method_response = on_method_response,
    .twin_request = on_twin,
    .c2d_acked = on_c2d_acked,
    .subscribed = on_subscribed,
    .closed = on_closed,
};

static int endpoint(emu_hub *hub)
{
    if (hub->mqtt)
        return 0;
    iotgw_hubmqtt_endpoint_options o = {
        .backend = &backend,
        .ctx = hub,
        .connack_counts = hub->metrics.mqtt_connack,
        .serials = &hub->next_serial,
        .log_every_line = 1,
    };
    hub->mqtt = iotgw_hubmqtt_endpoint_new(hub->loop, &o);
    return hub->mqtt ? 0 : -1;
}

void emu_mqtt_on_ws_stream(iotgw_listener *l, iotgw_stream *s, void *ctx)
{
    (void)l;
    emu_hub *hub = ctx;
    if (endpoint(hub))
        iotgw_stream_close(s, 0);
    else
        iotgw_hubmqtt_accept(hub->mqtt, s, 1);
}

int emu_mqtt_listen(emu_hub *hub, const char *address, int port, const char *cert_file, const char *key_file,
                    iotgw_diag *diag)
{
    if (endpoint(hub))
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    iotgw_stream_listener_options o = {
        .address = address,
        .port = port,
        .tls = {.cert_file = cert_file, .key_file = key_file},
    };
    return iotgw_hubmqtt_listen(hub->mqtt, &o, &hub->mqtts, diag);
}

void emu_mqtt_free_all(emu_hub *hub)
{
    emu_mqtt_client *m;
    IOTGW_LIST_FOREACH (m, &hub->mqtt_clients, emu_mqtt_client, in_hub) {
        if (m->live)
            m->live->mqtt = NULL;
        iotgw_list_remove(&m->in_hub);
        free(m);
    }
    iotgw_hubmqtt_endpoint_free(hub->mqtt); /* no callbacks */
    hub->mqtt = NULL;
}
