/*
 * Devices written with the Azure IoT SDKs, unchanged, over IoT Hub's own MQTT
 * (devices.mqtt, docs/sdk-devices.md): the gateway's back end of hubside/mqtt_device.h.
 * The front end holds the protocol; here a CONNECT is checked against the fleet as a
 * Hello is (the device's SAS token, signed with its fleet key, for the hub's name or the
 * gateway's, or a client certificate naming it), and the device then becomes a session
 * (session.c) like any other: its own hub identity on the upstream, the store when there
 * is one, one connection per device whatever its protocol (the newest wins).
 *
 * What MQTT cannot say: a PUBACK is the Ack (sent once the hub, or the store, has the
 * message; in order); MQTT has no Nack, so telemetry the gateway cannot take ends the
 * connection, as IoT Hub ends it, and the SDK sends it again once reconnected. The window
 * (devices.maxInFlight) holds by not reading the device while it is full.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "codecs/sas.h"
#include "gateway/gateway_internal.h"
#include "transport/messaging.h"

/* A token valid longer than this ends its connection after this (a timer's range). */
#define MAX_TOKEN_WAIT_S (366u * 86400)

static gw_session *session_of(iotgw_hubmqtt *c)
{
    return iotgw_hubmqtt_context(c);
}

static iotgw_gateway *gateway_of(iotgw_hubmqtt *c)
{
    return iotgw_hubmqtt_endpoint_context(iotgw_hubmqtt_endpoint_of(c));
}

/* ------------------------------------------------------------------ CONNECT */

static int64_t token_expires_in_ms(const char *token)
{
    iotgw_sas_token t;
    iotgw_diag diag = {0};
    if (!token || iotgw_sas_parse(token, &t, &diag))
        return -1;
    uint64_t now = (uint64_t)time(NULL), se = t.se;
    iotgw_sas_token_clear(&t);
    if (se <= now)
        return 0;
    uint64_t left = se - now;
    return (int64_t)(left > MAX_TOKEN_WAIT_S ? MAX_TOKEN_WAIT_S : left) * 1000;
}

static int on_connect(iotgw_hubmqtt *c, const iotgw_hubmqtt_connect *req, iotgw_hubmqtt_accepted *out,
                      char *why, size_t why_len)
{
    iotgw_gateway *g = gateway_of(c);
    const iotgw_config *cfg = g->cfg;
    if (g->draining) {
        snprintf(why, why_len, "the gateway is stopping");
        return IOTGW_MQTT_CONNACK_UNAVAILABLE;
    }
    if (req->module_id) {
        snprintf(why, why_len, "modules are not served through the gateway: connect %s/%s to the hub",
                 req->device_id, req->module_id);
        return IOTGW_MQTT_CONNACK_NOT_AUTHORIZED;
    }
    if (strcasecmp(req->host, cfg->hub_host) &&
        !(cfg->gateway_id && !strcasecmp(req->host, cfg->gateway_id))) {
        snprintf(why, why_len, "the user name names another hub (%.200s; this gateway serves %s)", req->host,
                 cfg->hub_host);
        return IOTGW_MQTT_CONNACK_NOT_AUTHORIZED;
    }
    iotgw_diag diag = {0};
    Iotgw__ErrorCode code;
    int id_valid = 0;
    const iotgw_config_device *dev = gw_session_find_device(g, req->device_id, &id_valid, &code, &diag);
    if (!dev) {
        snprintf(why, why_len, "%s", diag.text);
        return IOTGW_MQTT_CONNACK_NOT_AUTHORIZED;
    }
    gw_session *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(why, why_len, "out of memory");
        return IOTGW_MQTT_CONNACK_UNAVAILABLE;
    }
    s->g = g;
    s->mqtt = c;
    iotgw_list_init(&s->node);
    iotgw_list_push_front(&g->sessions, &s->node);
    s->last_rx_ms = iotgw_loop_now_ms(g->loop);
    g->stats.connections++;
    if (gw_session_check_token(s, dev, req->token, req->cert_cn, &code, &diag)) {
        snprintf(why, why_len, "device %s: %s", dev->id, diag.text);
        gw_session_free(s);
        return IOTGW_MQTT_CONNACK_NOT_AUTHORIZED;
    }
    /* twin and methods at once; cloud-to-device messages once it subscribes to them,
     * so that the hub keeps them meanwhile, as it does for a device connected to it */
    if (gw_session_admit(s, dev, IOTGW_UPSTREAM_METHODS | IOTGW_UPSTREAM_TWIN, &diag)) {
        snprintf(why, why_len, "device %s: %s", dev->id, diag.text);
        gw_session_free(s);
        return IOTGW_MQTT_CONNACK_UNAVAILABLE;
    }
    s->ready = 1;
    g->stats.welcomed++;
    iotgw_hubmqtt_set_context(c, s);
    out->expires_in_ms = req->token ? token_expires_in_ms(req->token) : -1;
    iotgw_log_evf(
        IOTGW_LOG_INFO, "device_connected", dev->id,
        IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", iotgw_hubmqtt_peer(c)), IOTGW_FIELD_STR("client", "MQTT")),
        "device %s connected from %s (MQTT over %s%s)", dev->id, iotgw_hubmqtt_peer(c),
        iotgw_hubmqtt_is_ws(c) ? "WebSocket" : "TLS", req->token ? "" : ", client certificate");
    return IOTGW_MQTT_CONNACK_ACCEPTED;
}

static void on_closed(iotgw_hubmqtt *c, const char *why)
{
    gw_session *s = session_of(c);
    if (!s) /* the gateway is being freed */
        return;
    if (s->device_id)
        iotgw_log_evf(
            IOTGW_LOG_INFO, "device_disconnected", s->device_id,
            IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", iotgw_hubmqtt_peer(c)), IOTGW_FIELD_STR("reason", why)),
            "device %s (%s) disconnected: %s", s->device_id, iotgw_hubmqtt_peer(c), why);
    s->mqtt = NULL;
    s->closing = 1;
    gw_session_free(s);
}

/* ------------------------------------------------------------------ telemetry */

static void window_check(gw_session *s)
{
    int full = s->in_flight >= s->g->cfg->max_in_flight;
    if (full != s->paused && s->mqtt) {
        s->paused = full;
        iotgw_hubmqtt_pause(s->mqtt, full);
    }
}

/* MQTT wants PUBACKs in the order of their PUBLISHes (3.1.1, 4.6); the hub's outcomes
 * may come in another: each waits here until those before it are done. */
typedef struct gw_puback {
    uint16_t packet_id;
    uint8_t done;
} gw_puback;

static int puback_push(gw_session *s, uint16_t packet_id)
{
    if (s->puback_len == s->puback_cap) { /* grows, kept in order */
        size_t cap = s->puback_cap ? s->puback_cap * 2 : 16;
        gw_puback *p = malloc(cap * sizeof *p);
        if (!p)
            return -1;
        for (size_t i = 0; i < s->puback_len; i++)
            p[i] = s->pubacks[(s->puback_head + i) % s->puback_cap];
        free(s->pubacks);
        s->pubacks = p;
        s->puback_cap = cap;
        s->puback_head = 0;
    }
    s->pubacks[(s->puback_head + s->puback_len++) % s->puback_cap] = (gw_puback){packet_id, 0};
    return 0;
}

/* packet_id is done: acknowledge it and those after it that are, in order. */
static void puback_done(gw_session *s, uint16_t packet_id)
{
    for (size_t i = 0; i < s->puback_len; i++) {
        gw_puback *p = &s->pubacks[(s->puback_head + i) % s->puback_cap];
        if (p->packet_id == packet_id && !p->done) {
            p->done = 1;
            break;
        }
    }
    while (s->puback_len && s->pubacks[s->puback_head].done) {
        iotgw_hubmqtt_puback(s->mqtt, s->pubacks[s->puback_head].packet_id);
        s->puback_head = (s->puback_head + 1) % s->puback_cap;
        s->puback_len--;
    }
}

static int on_telemetry(iotgw_hubmqtt *c, pn_message_t *msg, size_t counted, uint16_t packet_id,
                        const char **why)
{
    gw_session *s = session_of(c);
    if (!s || s->closing) {
        *why = "the device is leaving";
        return -1;
    }
    s->g->stats.telemetry++;
    s->g->stats.telemetry_bytes += counted;
    if (packet_id && puback_push(s, packet_id)) {
        *why = "out of memory";
        return -1;
    }
    gw_session_submit(s, packet_id, msg); /* its outcome: gw_mqtt_acked or gw_mqtt_refused */
    if (s->closing) {
        *why = "not taken";
        return -1;
    }
    window_check(s);
    return packet_id ? IOTGW_HUBMQTT_PENDING : 0;
}

void gw_mqtt_acked(gw_session *s, uint64_t seq)
{
    if (!s->mqtt)
        return;
    if (seq)
        puback_done(s, (uint16_t)seq);
    window_check(s);
}

void gw_mqtt_on_hub_failed(gw_session *s)
{
    if (!s->up || s->closing)
        return;
    iotgw_device_info info;
    iotgw_upstream_device_info(s->up, &info);
    if (!info.refused && !strstr(info.reason, "unauthorized"))
        return; /* throttled, or the hub was busy: its telemetry waits */
    gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_DEVICE_DISABLED, "the hub refuses device %s: %s",
                    s->device_id, info.reason);
}

void gw_mqtt_refused(gw_session *s, uint64_t seq, Iotgw__NackReason reason, const char *detail)
{
    if (!s->mqtt || s->closing)
        return;
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&iotgw__nack_reason__descriptor, (int)reason);
    char text[400];
    snprintf(text, sizeof text,
             "telemetry (packet %" PRIu64 ") not taken: %s: %s; closing, so that the device sends it again",
             seq, v ? v->name : "NACK", detail ? detail : "");
    iotgw_log_ev_limited(&s->log, IOTGW_LOG_WARN, "device_telemetry_refused", s->device_id,
                         IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("reason", v ? v->name : "")), "device %s: %s",
                         s->device_id, text);
    s->closing = 1;
    iotgw_hubmqtt_drop(s->mqtt, text);
}

/* ------------------------------------------------------------------ methods */

void gw_mqtt_method(gw_session *s, gw_method_call *call, const iotgw_method_request *req)
{
    char rid[24];
    snprintf(rid, sizeof rid, "%" PRIx64, call->id);
    if (s->mqtt && !iotgw_hubmqtt_send_method(s->mqtt, req->name, rid, req->payload, req->payload_len))
        return;
    gw_method_call *c = gw_session_take_call(s, call->id);
    if (!c)
        return;
    char body[200];
    gw_error_json(body, sizeof body, "the device is not subscribed to direct methods");
    gw_session_answer_method(s, c, 404, body);
    gw_session_call_free(c);
}

static void on_method_response(iotgw_hubmqtt *c, const uint8_t *rid, size_t rid_len, int status,
                               const uint8_t *payload, size_t len)
{
    gw_session *s = session_of(c);
    if (!s)
        return;
    char text[24];
    uint64_t id = 0;
    int ok = rid_len > 0 && rid_len < sizeof text;
    if (ok) {
        memcpy(text, rid, rid_len);
        text[rid_len] = '\0';
        char *end;
        id = strtoull(text, &end, 16);
        ok = *end == '\0';
    }
    gw_method_call *call = ok ? gw_session_take_call(s, id) : NULL;
    if (!call) {
        iotgw_log_ev_limited(&s->log, IOTGW_LOG_INFO, "method_answer_late", s->device_id, NULL,
                             "device %s: answer to method request %.*s came too late or names none; dropped",
                             s->device_id, (int)(rid_len > 32 ? 32 : rid_len), (const char *)rid);
        return;
    }
    gw_session_answer_json(s, call, status, payload, len);
}

/* ------------------------------------------------------------------ twin */

static void twin_refuse(iotgw_hubmqtt *c, int status, const uint8_t *rid, size_t rid_len, const char *text)
{
    char body[300];
    gw_error_json(body, sizeof body, text);
    iotgw_hubmqtt_twin_answer(c, status, rid, rid_len, -1, body);
}

static void on_twin_request(iotgw_hubmqtt *c, iotgw_iothub_publish_kind kind, const uint8_t *rid,
                            size_t rid_len, const uint8_t *payload, size_t len)
{
    gw_session *s = session_of(c);
    if (!s)
        return;
    char ridz[128];
    if (!rid_len || rid_len >= sizeof ridz) {
        twin_refuse(c, 400, rid, rid_len, "the request id ($rid) must be 1 to 127 characters");
        return;
    }
    memcpy(ridz, rid, rid_len);
    ridz[rid_len] = '\0';
    iotgw_twin_op op = kind == IOTGW_IOTHUB_TWIN_GET ? IOTGW_TWIN_GET : IOTGW_TWIN_PATCH_REPORTED;
    if (gw_session_twin_request(s, 0, ridz, op, payload, len))
        twin_refuse(c, 503, rid, rid_len, "the device is not online at the hub yet");
}

void gw_mqtt_twin(gw_session *s, const iotgw_twin_response *r)
{
    if (!s->mqtt)
        return;
    char *body = r->len ? strndup((const char *)r->body, r->len) : NULL;
    if (!r->request_id) { /* a desired-properties update */
        iotgw_hubmqtt_send_desired(s->mqtt, r->version, r->body, r->len);
        free(body);
        return;
    }
    gw_twin_call *t = gw_session_take_twin_call(s, r->request_id);
    if (t && t->rid) {
        if (!r->status) {
            char err[300];
            gw_error_json(err, sizeof err, r->error ? r->error : "no answer from the hub");
            iotgw_hubmqtt_twin_answer(s->mqtt, 503, (const uint8_t *)t->rid, strlen(t->rid), -1, err);
        } else {
            /* IoT Hub names the new version in the answer to a PATCH (204) only */
            iotgw_hubmqtt_twin_answer(s->mqtt, r->status, (const uint8_t *)t->rid, strlen(t->rid),
                                      r->status == 204 ? r->version : -1, body);
        }
    }
    if (t)
        free(t->rid);
    free(t);
    free(body);
}

/* ------------------------------------------------------------------ C2D */

static int track_c2d(gw_session *s, gw_c2d_id id)
{
    gw_c2d_id *ids = realloc(s->c2d_ids, (s->nc2d_ids + 1) * sizeof *ids);
    if (!ids)
        return -1;
    s->c2d_ids = ids;
    ids[s->nc2d_ids++] = id;
    return 0;
}

/* Not subscribed (it unsubscribed, or not yet): the message stays locked at the hub and
 * waits here, as IoT Hub keeps it for a device not subscribed; at most the link's credit. */
static int keep_c2d(gw_session *s, const iotgw_c2d_message *m)
{
    gw_c2d_id id = {.upstream = m->id};
    if (iotgw_message_encode(m->message, &id.buf, &id.len))
        return -1;
    if (track_c2d(s, id)) {
        free(id.buf);
        return -1;
    }
    return 0;
}

/* Send the kept messages, now that the device subscribed again. */
static void send_kept_c2d(gw_session *s)
{
    pn_message_t *msg = NULL;
    for (size_t i = 0; i < s->nc2d_ids && s->mqtt; i++) {
        gw_c2d_id *k = &s->c2d_ids[i];
        if (!k->buf || (!msg && !(msg = pn_message())))
            continue;
        uint16_t packet_id = 0;
        if (iotgw_message_decode(msg, k->buf, k->len, NULL) ||
            iotgw_hubmqtt_send_c2d(s->mqtt, msg, 0, &packet_id))
            break;
        free(k->buf);
        k->buf = NULL;
        s->g->stats.c2d_delivered++;
        k->packet_id = packet_id;
        if (!packet_id) { /* QoS 0 */
            s->g->stats.c2d_completed++;
            iotgw_upstream_c2d_settle(s->up, k->upstream, IOTGW_OUTCOME_ACCEPTED);
            s->c2d_ids[i--] = s->c2d_ids[--s->nc2d_ids];
        }
    }
    if (msg)
        pn_message_free(msg);
}

void gw_mqtt_c2d(gw_session *s, const iotgw_c2d_message *m)
{
    uint16_t packet_id = 0;
    int subscribed =
        s->mqtt && (iotgw_hubmqtt_subscriptions(s->mqtt) & IOTGW_HUBMQTT_SUB(IOTGW_IOTHUB_SUB_C2D));
    if (s->mqtt && !s->closing && !subscribed && !keep_c2d(s, m))
        return;
    if (!subscribed || iotgw_hubmqtt_send_c2d(s->mqtt, m->message, 0, &packet_id)) {
        /* the connection is going (or out of memory): the hub offers it again */
        iotgw_upstream_c2d_settle(s->up, m->id, IOTGW_OUTCOME_RETRY);
        return;
    }
    s->g->stats.c2d_delivered++;
    if (!packet_id) { /* QoS 0: delivered at most once, as the hub does */
        s->g->stats.c2d_completed++;
        iotgw_upstream_c2d_settle(s->up, m->id, IOTGW_OUTCOME_ACCEPTED);
        return;
    }
    if (track_c2d(s, (gw_c2d_id){.upstream = m->id, .packet_id = packet_id}))
        iotgw_upstream_c2d_settle(s->up, m->id, IOTGW_OUTCOME_RETRY);
}

static void on_c2d_acked(iotgw_hubmqtt *c, uint16_t packet_id)
{
    gw_session *s = session_of(c);
    if (!s)
        return;
    for (size_t i = 0; i < s->nc2d_ids; i++) {
        if (s->c2d_ids[i].buf || s->c2d_ids[i].packet_id != packet_id)
            continue;
        uint64_t id = s->c2d_ids[i].upstream;
        s->c2d_ids[i] = s->c2d_ids[--s->nc2d_ids];
        s->g->stats.c2d_completed++;
        if (s->up)
            iotgw_upstream_c2d_settle(s->up, id, IOTGW_OUTCOME_ACCEPTED);
        return;
    }
}

static void on_subscribed(iotgw_hubmqtt *c, unsigned added)
{
    gw_session *s = session_of(c);
    if (!s || !s->up || !(added & IOTGW_HUBMQTT_SUB(IOTGW_IOTHUB_SUB_C2D)))
        return;
    if (s->capabilities & IOTGW_UPSTREAM_C2D) { /* subscribed again: what waited goes */
        send_kept_c2d(s);
        return;
    }
    s->capabilities |= IOTGW_UPSTREAM_C2D;
    iotgw_upstream_device_enable(s->up, IOTGW_UPSTREAM_C2D);
}

/* ------------------------------------------------------------------ listeners */

static const iotgw_hubmqtt_backend backend = {
    .connect = on_connect,
    .telemetry = on_telemetry,
    .method_response = on_method_response,
    .twin_request = on_twin_request,
    .c2d_acked = on_c2d_acked,
    .subscribed = on_subscribed,
    .closed = on_closed,
};

/* The WebSocket listener serves both of IoT Hub's device protocols, as IoT Hub does on
 * 443: subprotocol mqtt here, AMQPWSB10 to sdk_amqp.c. */
static void on_amqp_accept(iotgw_listener *l, iotgw_conn *c, void *ctx)
{
    (void)l;
    gw_amqp_accept(ctx, c, 1);
}

static void on_ws_stream(iotgw_listener *l, iotgw_stream *s, void *ctx)
{
    (void)l;
    iotgw_gateway *g = ctx;
    iotgw_hubmqtt_accept(g->mqtt, s, 1);
}

int gw_mqtt_ws_port(const iotgw_gateway *g)
{
    return g->mqtt_ws ? iotgw_listener_port(g->mqtt_ws) : 0;
}

int gw_mqtt_start(iotgw_gateway *g, iotgw_diag *diag)
{
    const iotgw_config *cfg = g->cfg;
    if (!cfg->nmqtt_listen && !cfg->ws_listen.address)
        return 0;
    iotgw_hubmqtt_endpoint_options o = {
        .backend = &backend,
        .ctx = g,
        .connack_counts = g->stats.mqtt_connack,
        .connect_timeout_ms = cfg->hello_timeout_ms,
        .event_prefix = "device_mqtt_",
    };
    if (!(g->mqtt = iotgw_hubmqtt_endpoint_new(g->loop, &o)))
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < cfg->nmqtt_listen; i++) {
        iotgw_stream_listener_options lo = {
            .address = cfg->mqtt_listen[i].address,
            .port = cfg->mqtt_listen[i].port,
            .tls = {.cert_file = cfg->tls_cert, .key_file = cfg->tls_key, .ca_file = cfg->tls_client_ca},
        };
        int rc = iotgw_hubmqtt_listen(g->mqtt, &lo, &g->listeners[g->nlisteners], diag);
        if (rc)
            return rc;
        g->nlisteners++;
    }
    if (cfg->ws_listen.address) {
        iotgw_listener_options wo = {
            .kind = IOTGW_TRANSPORT_WSS,
            .address = cfg->ws_listen.address,
            .port = cfg->ws_listen.port,
            .tls = {.cert_file = cfg->tls_cert, .key_file = cfg->tls_key, .ca_file = cfg->tls_client_ca},
            .on_accept = on_amqp_accept,
            .ws_stream_subprotocol = "mqtt", /* as IoT Hub: MQTT on /$iothub/websocket */
            .on_ws_stream = on_ws_stream,
            .ws_stream_max_output = 8u * 1024 * 1024,
            .max_output = 8u * 1024 * 1024, /* the AMQP connections' (sdk_amqp.c's MAX_OUTPUT) */
            .ctx = g,
        };
        return iotgw_listener_new(g->loop, &wo, &g->mqtt_ws, diag);
    }
    return 0;
}

void gw_mqtt_stop(iotgw_gateway *g)
{
    if (g->mqtt_ws)
        iotgw_listener_free(g->mqtt_ws);
    g->mqtt_ws = NULL;
    iotgw_hubmqtt_endpoint_free(g->mqtt);
    g->mqtt = NULL;
}
