/* One device connection (docs/downstream-protocol.md): the Hello handshake checked
 * against the fleet, frames in and out, the telemetry window, method calls with their
 * deadlines, twin requests, cloud-to-device messages, keep-alive, and errors that end
 * only this connection. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <proton/codec.h>

#include "codecs/identity.h"
#include "codecs/pb_scan.h"
#include "codecs/sas.h"
#include "gateway/gateway_internal.h"
#include "transport/amqp_map.h"
#include "transport/log.h"
#include "transport/messaging.h"

#define PROTOCOL_VERSION  1
#define METHOD_TIMEOUT_MS 30000 /* what a device gets to answer; the hub's own timeout may be shorter */
#define RETRY_AFTER_MS    1000

static const char *who(const gw_session *s)
{
    return s->device_id ? s->device_id : "(no hello yet)";
}

const char *gw_session_peer(const gw_session *s)
{
    if (s->amqp)
        return gw_amqp_peer(s);
    return s->mqtt ? iotgw_hubmqtt_peer(s->mqtt) : iotgw_stream_peer(s->stream);
}

/* The device a line is about, for the log's "device": NULL before Hello named one. */
static const char *device_of(const gw_session *s)
{
    return s->device_id;
}

static const char *error_name(Iotgw__ErrorCode code)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&iotgw__error_code__descriptor, (int)code);
    return v ? v->name : "ERROR_UNSPECIFIED";
}

int gw_session_send(gw_session *s, Iotgw__Frame *f)
{
    if (s->closing)
        return -1;
    uint8_t *buf;
    size_t len;
    if (iotgw_frame_pack(&f->base, UINT32_MAX, &buf, &len))
        return -1;
    int rc = iotgw_stream_write(s->stream, buf, len);
    free(buf);
    if (rc) {
        iotgw_log_evf(IOTGW_LOG_WARN, "device_not_reading", device_of(s),
                      IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", iotgw_stream_peer(s->stream))),
                      "device %s (%s): closed: it does not read what the gateway sends", who(s),
                      iotgw_stream_peer(s->stream));
        s->closing = 1;
        return -1;
    }
    return 0;
}

/* Send Error{code, text} and close. device: the id the line is about (a Hello's, once
 * it is known to be a valid id), or NULL. */
static void session_vfail(gw_session *s, const char *device, Iotgw__ErrorCode code, const char *fmt,
                          va_list ap)
{
    if (s->closing)
        return;
    char text[300];
    vsnprintf(text, sizeof text, fmt, ap);
    /* before Hello anyone can cause this line: one budget for all of them */
    const char *peer = gw_session_peer(s);
    iotgw_log_ev_limited(s->device_id ? &s->log : &s->g->anonymous_log, IOTGW_LOG_WARN,
                         s->ready ? "device_error_sent" : "device_refused", device,
                         IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("code", error_name(code)),
                                          IOTGW_FIELD_STR("peer", peer), IOTGW_FIELD_STR("detail", text)),
                         "device %s (%s): %s: %s", who(s), peer, error_name(code), text);
    if (s->mqtt) { /* MQTT has no words for it: the connection ends */
        s->closing = 1;
        iotgw_hubmqtt_drop(s->mqtt, text);
    } else if (s->amqp) { /* the device's links end (its connection may carry others) */
        s->closing = 1;
        gw_amqp_drop(s, text);
    } else {
        Iotgw__Error e = IOTGW__ERROR__INIT;
        e.code = code;
        e.message = text;
        Iotgw__Frame f = IOTGW__FRAME__INIT;
        f.body_case = IOTGW__FRAME__BODY_ERROR;
        f.error = &e;
        gw_session_send(s, &f);
        s->closing = 1;
        iotgw_stream_close(s->stream, 1);
    }
    if ((unsigned)code < GW_ERROR_CODES)
        s->g->stats.errors[code]++;
}

void gw_session_fail(gw_session *s, Iotgw__ErrorCode code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    session_vfail(s, device_of(s), code, fmt, ap);
    va_end(ap);
}

/* A Hello refused, naming the device it claimed to be (an id already checked). */
static void hello_fail(gw_session *s, const char *device, Iotgw__ErrorCode code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void hello_fail(gw_session *s, const char *device, Iotgw__ErrorCode code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    session_vfail(s, device, code, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ answers to the hub */

void gw_session_call_free(gw_method_call *c)
{
    free(c->response_type);
    free(c);
}

void gw_session_answer_method(gw_session *s, gw_method_call *c, int status, const char *json)
{
    gw_stats *st = &s->g->stats;
    st->methods[status >= 100 && status < 600 ? status / 100 : 0]++;
    iotgw_histogram_observe(&st->method_seconds,
                            (double)(iotgw_loop_now_ms(s->g->loop) - c->started_ms) / 1000);
    if (s->up)
        iotgw_upstream_method_respond(s->up, c->hub_id, status, (const uint8_t *)json, strlen(json));
}

void gw_error_json(char *buf, size_t len, const char *text)
{
    json_t *j = json_pack("{s:s}", "error", text);
    char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
    snprintf(buf, len, "%s", t ? t : "{\"error\":\"gateway error\"}");
    free(t);
    json_decref(j);
}

/* The device is leaving the hub: its pending method calls are answered at once. */
static void release_upstream(gw_session *s, const char *why)
{
    char body[256];
    gw_error_json(body, sizeof body, why);
    while (s->calls) {
        gw_method_call *c = s->calls;
        s->calls = c->next;
        gw_session_answer_method(s, c, 503, body);
        gw_session_call_free(c);
    }
    while (s->twin_calls) {
        gw_twin_call *t = s->twin_calls;
        s->twin_calls = t->next;
        free(t->rid);
        free(t);
    }
    if (s->fwd) {
        gw_forward_detach(s); /* with a backlog, the identity stays at the hub to send it */
    } else if (s->up) {
        iotgw_upstream_device *up = s->up;
        s->up = NULL;
        iotgw_upstream_device_remove(up); /* its pending telemetry is dropped without outcomes */
        s->in_flight = 0;
    }
    if (s->device_id && s->g->by_device[s->device_index] == s)
        s->g->by_device[s->device_index] = NULL;
}

/* ------------------------------------------------------------------ frames to the device */

static void send_nack(gw_session *s, uint64_t seq, Iotgw__NackReason reason, const char *detail,
                      uint32_t retry)
{
    if ((unsigned)reason < GW_NACK_REASONS)
        s->g->stats.nacked[reason]++;
    if (s->mqtt) {
        gw_mqtt_refused(s, seq, reason, detail);
        return;
    }
    if (s->amqp) {
        gw_amqp_refused(s, seq, reason, detail);
        return;
    }
    Iotgw__Nack n = IOTGW__NACK__INIT;
    n.seq = seq;
    n.reason = reason;
    n.detail = (char *)(detail ? detail : "");
    n.retry_after_ms = retry;
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_NACK;
    f.nack = &n;
    gw_session_send(s, &f);
}

static void send_ack(gw_session *s, uint64_t seq)
{
    s->g->stats.acked++;
    if (s->mqtt) {
        gw_mqtt_acked(s, seq);
        return;
    }
    if (s->amqp) {
        gw_amqp_acked(s, seq);
        return;
    }
    Iotgw__Ack a = IOTGW__ACK__INIT;
    a.seq = seq;
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_ACK;
    f.ack = &a;
    gw_session_send(s, &f);
}

/* When resending is worth it: at once if the device is online at the hub (its queue
 * drains), else when the upstream next tries it. */
static uint32_t retry_after(gw_session *s)
{
    iotgw_device_info info;
    iotgw_upstream_device_info(s->up, &info);
    int64_t wait = RETRY_AFTER_MS;
    if (info.state == IOTGW_DEVICE_FAILED && info.next_retry_ms)
        wait = info.next_retry_ms - iotgw_loop_now_ms(s->g->loop);
    return wait < RETRY_AFTER_MS ? RETRY_AFTER_MS : wait > 60000 ? 60000 : (uint32_t)wait;
}

void gw_session_on_outcome(gw_session *s, uint64_t seq, iotgw_outcome outcome, const char *cond,
                           const char *description)
{
    if (s->in_flight)
        s->in_flight--;
    if (s->closing || !s->up)
        return;
    if (outcome == IOTGW_OUTCOME_ACCEPTED) {
        send_ack(s, seq);
        return;
    }
    /* docs/downstream-protocol.md, "Which nack": only a refusal the upstream holds to be
     * for good is NACK_UNAUTHORIZED; what passes is worth resending */
    char detail[300];
    snprintf(detail, sizeof detail, "%s: %s", cond ? cond : "", description ? description : "");
    int has = cond != NULL;
    if (outcome == IOTGW_OUTCOME_RETRY && has && !strcmp(cond, IOTGW_COND_DELIVERY_TIMEOUT))
        send_nack(s, seq, IOTGW__NACK_REASON__NACK_TIMEOUT, detail, 0);
    else if (outcome == IOTGW_OUTCOME_RETRY && has && !strcmp(cond, IOTGW_COND_REFUSED))
        send_nack(s, seq, IOTGW__NACK_REASON__NACK_UNAUTHORIZED, detail, 0);
    else if (outcome == IOTGW_OUTCOME_RETRY || (has && !strcmp(cond, "amqp:unauthorized-access")))
        send_nack(s, seq, IOTGW__NACK_REASON__NACK_RETRY_LATER, detail, retry_after(s));
    else if (has && !strcmp(cond, "amqp:link:message-size-exceeded"))
        send_nack(s, seq, IOTGW__NACK_REASON__NACK_TOO_LARGE, detail, 0);
    else if (has && (!strcmp(cond, "com.microsoft:device-container-throttled") ||
                     !strcmp(cond, "amqp:resource-limit-exceeded")))
        send_nack(s, seq, IOTGW__NACK_REASON__NACK_THROTTLED, detail, RETRY_AFTER_MS);
    else
        send_nack(s, seq, IOTGW__NACK_REASON__NACK_REJECTED, detail, 0);
}

gw_method_call *gw_session_new_call(gw_session *s, const iotgw_method_request *req, const char *response_type)
{
    gw_method_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->id = ++s->next_call_id;
    memcpy(c->hub_id, req->request_id, 16);
    c->response_type = response_type ? strdup(response_type) : NULL;
    c->started_ms = iotgw_loop_now_ms(s->g->loop);
    c->deadline_ms = c->started_ms + METHOD_TIMEOUT_MS;
    c->next = s->calls;
    s->calls = c;
    return c;
}

gw_method_call *gw_session_take_call(gw_session *s, uint64_t id)
{
    gw_method_call **pp = &s->calls;
    while (*pp && (*pp)->id != id)
        pp = &(*pp)->next;
    gw_method_call *c = *pp;
    if (c) {
        *pp = c->next;
        iotgw_histogram_observe(&s->g->stats.method_device_seconds,
                                (double)(iotgw_loop_now_ms(s->g->loop) - c->started_ms) / 1000);
    }
    return c;
}

void gw_session_on_method(gw_session *s, const iotgw_method_request *req)
{
    if (s->mqtt || s->amqp) { /* an SDK device answers JSON itself */
        gw_method_call *c = gw_session_new_call(s, req, NULL);
        if (c && s->mqtt)
            gw_mqtt_method(s, c, req);
        else if (c)
            gw_amqp_method(s, c, req);
        return;
    }
    const iotgw_config_method *m = iotgw_config_method_find(s->g->cfg, req->name);
    Iotgw__MethodRequest r = IOTGW__METHOD_REQUEST__INIT;
    uint8_t *pb = NULL;
    size_t pblen = 0;
    if (m && m->request_type) {
        iotgw_diag diag = {0};
        if (gw_json_to_protobuf(m->request_type, req->payload, req->payload_len, &pb, &pblen, &diag)) {
            char body[400], text[300];
            snprintf(text, sizeof text, "payload is not a valid %s: %s", m->request_type, diag.text);
            gw_error_json(body, sizeof body, text);
            iotgw_log_ev_limited(&s->log, IOTGW_LOG_WARN, "method_payload_refused", device_of(s),
                                 IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("method", req->name)),
                                 "device %s: method %s refused: %s", who(s), req->name, text);
            iotgw_upstream_method_respond(s->up, req->request_id, 400, (const uint8_t *)body, strlen(body));
            return;
        }
        r.payload_case = IOTGW__METHOD_REQUEST__PAYLOAD_PROTOBUF;
        r.protobuf = (ProtobufCBinaryData){.len = pblen, .data = pb};
        r.payload_type = m->request_type;
    } else {
        r.payload_case = IOTGW__METHOD_REQUEST__PAYLOAD_JSON;
        r.json = (ProtobufCBinaryData){.len = req->payload_len, .data = (uint8_t *)req->payload};
    }
    gw_method_call *c = gw_session_new_call(s, req, m ? m->response_type : NULL);
    if (!c) {
        free(pb);
        return;
    }
    r.request_id = c->id;
    r.name = (char *)req->name;
    r.timeout_ms = METHOD_TIMEOUT_MS;
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_METHOD_REQUEST;
    f.method_request = &r;
    gw_session_send(s, &f);
    free(pb);
}

gw_twin_call *gw_session_take_twin_call(gw_session *s, uint64_t upstream_id)
{
    for (gw_twin_call **pp = &s->twin_calls; *pp; pp = &(*pp)->next) {
        gw_twin_call *t = *pp;
        if (t->upstream_id == upstream_id) {
            *pp = t->next;
            return t;
        }
    }
    return NULL;
}

void gw_session_on_twin(gw_session *s, const iotgw_twin_response *r)
{
    if (r->request_id && r->status >= 200 && r->status < 300)
        s->g->stats.twin_ok++;
    else if (r->request_id)
        s->g->stats.twin_failed++;
    else
        s->g->stats.desired_updates++;
    if (s->mqtt) {
        gw_mqtt_twin(s, r);
        return;
    }
    if (s->amqp) {
        gw_amqp_twin(s, r);
        return;
    }
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    if (!r->request_id) {
        Iotgw__DesiredUpdate u = IOTGW__DESIRED_UPDATE__INIT;
        u.version = r->version;
        u.patch_json = (ProtobufCBinaryData){.len = r->len, .data = (uint8_t *)r->body};
        f.body_case = IOTGW__FRAME__BODY_DESIRED_UPDATE;
        f.desired_update = &u;
        gw_session_send(s, &f);
        return;
    }
    gw_twin_call *t = gw_session_take_twin_call(s, r->request_id);
    if (t) {
        Iotgw__TwinResult tr = IOTGW__TWIN_RESULT__INIT;
        tr.request_id = t->device_id;
        tr.status = r->status ? r->status : 503;
        tr.version = r->version;
        tr.twin_json = (ProtobufCBinaryData){.len = r->len, .data = (uint8_t *)r->body};
        tr.detail = (char *)(r->error ? r->error : "");
        f.body_case = IOTGW__FRAME__BODY_TWIN_RESULT;
        f.twin_result = &tr;
        gw_session_send(s, &f);
        free(t);
    }
}

/* The message's string application properties, as the hub sends them, copied into
 * c (all of them: the hub bounds the message, 256 KiB here). 0, or -1 out of memory. */
static int copy_properties(pn_message_t *msg, Iotgw__C2dMessage *c)
{
    pn_data_t *ap = pn_message_properties(msg);
    pn_data_rewind(ap);
    if (!pn_data_next(ap) || pn_data_type(ap) != PN_MAP)
        return 0;
    size_t n = pn_data_get_map(ap) / 2;
    c->properties = calloc(n ? n : 1, sizeof *c->properties);
    if (!c->properties)
        return -1;
    pn_data_enter(ap);
    while (pn_data_next(ap)) {
        pn_bytes_t k = pn_data_type(ap) == PN_STRING ? pn_data_get_string(ap) : pn_bytes(0, NULL);
        if (!pn_data_next(ap))
            break;
        pn_bytes_t v = pn_data_type(ap) == PN_STRING ? pn_data_get_string(ap) : pn_bytes(0, NULL);
        if (!k.start || !v.start || c->n_properties == n)
            continue;
        Iotgw__Property *p = malloc(sizeof *p);
        if (!p)
            return -1;
        iotgw__property__init(p);
        c->properties[c->n_properties++] = p;
        p->key = strndup(k.start, k.size);
        p->value = strndup(v.start, v.size);
        if (!p->key || !p->value)
            return -1;
    }
    pn_data_exit(ap);
    return 0;
}

static void free_c2d_texts(Iotgw__C2dMessage *c)
{
    free(c->message_id);
    free(c->correlation_id);
    for (size_t i = 0; i < c->n_properties; i++) {
        free(c->properties[i]->key);
        free(c->properties[i]->value);
        free(c->properties[i]);
    }
    free(c->properties);
}

void gw_session_on_c2d(gw_session *s, const iotgw_c2d_message *m)
{
    if (s->mqtt) {
        gw_mqtt_c2d(s, m);
        return;
    }
    if (s->amqp) {
        gw_amqp_c2d(s, m);
        return;
    }
    pn_message_t *msg = m->message;
    Iotgw__C2dMessage c = IOTGW__C2D_MESSAGE__INIT;
    c.delivery_id = m->id;
    size_t blen = 0;
    const char *body = iotgw_body_bytes(pn_message_body(msg), &blen);
    c.body = (ProtobufCBinaryData){.len = body ? blen : 0, .data = (uint8_t *)(body ? body : "")};
    c.content_type = (char *)(pn_message_get_content_type(msg) ? pn_message_get_content_type(msg) : "");
    c.content_encoding =
        (char *)(pn_message_get_content_encoding(msg) ? pn_message_get_content_encoding(msg) : "");
    c.expiry_unix_ms = pn_message_get_expiry_time(msg) > 0 ? (uint64_t)pn_message_get_expiry_time(msg) : 0;
    c.message_id = iotgw_atom_text(pn_message_get_id(msg));
    c.correlation_id = iotgw_atom_text(pn_message_get_correlation_id(msg));
    if (!c.message_id || !c.correlation_id || copy_properties(msg, &c)) {
        /* the hub keeps it: released, it is offered again */
        iotgw_log_ev(IOTGW_LOG_ERROR, "c2d_released", device_of(s),
                     "device %s: cloud-to-device message released: out of memory", who(s));
        iotgw_upstream_c2d_settle(s->up, m->id, IOTGW_OUTCOME_RETRY);
    } else {
        Iotgw__Frame f = IOTGW__FRAME__INIT;
        f.body_case = IOTGW__FRAME__BODY_C2D_MESSAGE;
        f.c2d_message = &c;
        if (gw_session_send(s, &f) == 0)
            s->g->stats.c2d_delivered++;
    }
    free_c2d_texts(&c);
}

/* ------------------------------------------------------------------ frames from the device */

int gw_session_check_token(gw_session *s, const iotgw_config_device *dev, const char *token, const char *cn,
                           Iotgw__ErrorCode *code, iotgw_diag *diag)
{
    *code = IOTGW__ERROR_CODE__ERROR_BAD_TOKEN;
    if (!token || !*token) {
        /* no token: a verified client certificate must name the device */
        if (cn && !strcmp(cn, dev->id))
            return 0;
        return iotgw_diag_fail(diag, IOTGW_ERR_SAS_MALFORMED,
                               "no token, and no client certificate naming the device%s%.64s",
                               cn ? ": it names " : "", cn ? cn : "");
    }
    if (!dev->key)
        return iotgw_diag_fail(
            diag, IOTGW_ERR_SAS_RESOURCE,
            "the device has no key in the fleet: it authenticates by client certificate only");
    iotgw_sas_token t;
    int rc = iotgw_sas_parse(token, &t, diag);
    if (rc)
        return rc;
    const iotgw_config *cfg = s->g->cfg;
    if (t.skn)
        rc = iotgw_diag_fail(diag, IOTGW_ERR_SAS_RESOURCE,
                             "the token must be signed with the device's own key");
    /* exactly the device's resource, under the hub's name or the gateway's: a token for
     * the whole hub, signed with a device key, names no device */
    if (!rc && iotgw_sas_names(&t, cfg->hub_host, dev->id, NULL, NULL) &&
        !(cfg->gateway_id && !iotgw_sas_names(&t, cfg->gateway_id, dev->id, NULL, NULL)))
        rc = iotgw_diag_fail(diag, IOTGW_ERR_SAS_RESOURCE, "the token's sr is not %s/devices/%s",
                             cfg->hub_host, dev->id);
    if (!rc)
        rc = iotgw_sas_verify(&t, dev->key, (uint64_t)time(NULL), diag);
    if (rc == IOTGW_ERR_SAS_EXPIRED)
        *code = IOTGW__ERROR_CODE__ERROR_TOKEN_EXPIRED;
    iotgw_sas_token_clear(&t);
    return rc;
}

const iotgw_config_device *gw_session_find_device(iotgw_gateway *g, const char *id, int *id_valid,
                                                  Iotgw__ErrorCode *code, iotgw_diag *diag)
{
    *id_valid = 0;
    *code = IOTGW__ERROR_CODE__ERROR_UNKNOWN_DEVICE;
    /* checked before any lookup or log line: an id with control characters could
     * forge log lines; one IoT Hub would refuse can be in no fleet */
    if (iotgw_identity_check(id, "device_id", diag))
        return NULL;
    *id_valid = 1;
    const iotgw_config_device *dev = iotgw_config_device_find(g->cfg, id);
    int home = dev ? -1 : iotgw_config_device_elsewhere(g->cfg, id);
    if (home >= 0) { /* fleet.shard: the device's home is another gateway */
        iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                        "device %s belongs to shard %d of %u; this gateway serves shard %u", id, home,
                        g->cfg->shard_count, g->cfg->shard_index);
        return NULL;
    }
    if (!dev) {
        iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "device \"%.64s\" is not in this gateway's fleet", id);
        return NULL;
    }
    if (dev->disabled) {
        *code = IOTGW__ERROR_CODE__ERROR_DEVICE_DISABLED;
        iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "device %s is disabled", dev->id);
        return NULL;
    }
    return dev;
}

/* The device is who it says: it takes its place (a connection it had before is
 * replaced) and its upstream identity. 0, or an error in diag. */
int gw_session_admit(gw_session *s, const iotgw_config_device *dev, unsigned caps, iotgw_diag *diag)
{
    iotgw_gateway *g = s->g;
    size_t index = (size_t)(dev - g->cfg->devices);
    gw_session *old = g->by_device[index];
    if (old && old != s) {
        release_upstream(old, "the device connected again");
        gw_session_fail(old, IOTGW__ERROR_CODE__ERROR_REPLACED, "a newer connection for %s took over",
                        dev->id);
    }
    free(s->device_id);
    if (!(s->device_id = strdup(dev->id)))
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    s->device_index = index;
    s->capabilities = caps;
    iotgw_device_credential cred = {.device_id = dev->id};
    iotgw_config_hub_credential(g->cfg, dev, &cred.key, &cred.policy_name);
    int rc = g->store ? gw_forward_attach(s, diag)
                      : iotgw_upstream_device_add(g->up, &cred, s->capabilities, s, &s->up, diag);
    if (rc)
        return rc;
    g->by_device[index] = s;
    return 0;
}

static void on_hello(gw_session *s, const Iotgw__Hello *h)
{
    iotgw_gateway *g = s->g;
    if (h->protocol_version != PROTOCOL_VERSION) {
        gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_PROTOCOL_VERSION,
                        "protocol version %u is not supported; this gateway speaks %d", h->protocol_version,
                        PROTOCOL_VERSION);
        return;
    }
    iotgw_diag diag = {0};
    Iotgw__ErrorCode code;
    int id_valid = 0;
    const iotgw_config_device *dev = gw_session_find_device(g, h->device_id, &id_valid, &code, &diag);
    if (!dev) {
        hello_fail(s, id_valid ? h->device_id : NULL, code, "%s", diag.text);
        return;
    }
    if (gw_session_check_token(s, dev, h->token, iotgw_stream_peer_cn(s->stream), &code, &diag)) {
        hello_fail(s, dev->id, code, "device %s: %s", dev->id, diag.text);
        return;
    }
    unsigned features = 0;
    if (h->capabilities) {
        features |= h->capabilities->methods ? IOTGW_UPSTREAM_METHODS : 0;
        features |= h->capabilities->twin ? IOTGW_UPSTREAM_TWIN : 0;
        features |= h->capabilities->c2d ? IOTGW_UPSTREAM_C2D : 0;
    }
    if (gw_session_admit(s, dev, features, &diag)) {
        hello_fail(s, dev->id, IOTGW__ERROR_CODE__ERROR_INTERNAL, "%s", diag.text);
        return;
    }
    s->ready = 1;
    g->stats.welcomed++;
    iotgw_timer_stop(&s->hello_timer); /* keep-alive and method deadlines come from the gateway's tick now */
    s->dec.max_frame_size = g->cfg->max_frame_size;
    Iotgw__Welcome w = IOTGW__WELCOME__INIT;
    w.protocol_version = PROTOCOL_VERSION;
    w.max_frame_size = g->cfg->max_frame_size;
    w.max_in_flight = g->cfg->max_in_flight;
    w.keepalive_seconds = g->cfg->keepalive_s;
    w.gateway_id = g->cfg->gateway_id ? g->cfg->gateway_id : "";
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_WELCOME;
    f.welcome = &w;
    gw_session_send(s, &f);
    char caps[32];
    snprintf(caps, sizeof caps, "%s%s%s", s->capabilities & IOTGW_UPSTREAM_METHODS ? " methods" : "",
             s->capabilities & IOTGW_UPSTREAM_TWIN ? " twin" : "",
             s->capabilities & IOTGW_UPSTREAM_C2D ? " c2d" : "");
    const char *peer = iotgw_stream_peer(s->stream);
    iotgw_log_evf(IOTGW_LOG_INFO, "device_connected", dev->id,
                  IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", peer), IOTGW_FIELD_STR("client", h->client),
                                   IOTGW_FIELD_STR("capabilities", caps[0] ? caps + 1 : "")),
                  "device %s connected from %s (%s)%s", dev->id, peer,
                  h->client && *h->client ? h->client : "client unnamed", caps);
}

/* With a store: the message is acknowledged once durable (gw_session_on_durable). */
static void to_store(gw_session *s, uint64_t seq, const uint8_t *buf, size_t len)
{
    iotgw_gateway *g = s->g;
    if (g->durable_len == g->durable_cap) { /* the ring grows, kept in order */
        size_t cap = g->durable_cap ? g->durable_cap * 2 : 1024;
        gw_durable *d = malloc(cap * sizeof *d);
        if (!d) {
            send_nack(s, seq, IOTGW__NACK_REASON__NACK_RETRY_LATER, "the gateway is out of memory",
                      RETRY_AFTER_MS);
            return;
        }
        for (size_t i = 0; i < g->durable_len; i++)
            d[i] = g->durable[(g->durable_head + i) % g->durable_cap];
        free(g->durable);
        g->durable = d;
        g->durable_cap = cap;
        g->durable_head = 0;
    }
    int rc = iotgw_store_append(g->store, s->device_id, buf, len, 0);
    if (rc) {
        g->stats.store_nacked++;
        send_nack(s, seq, IOTGW__NACK_REASON__NACK_RETRY_LATER,
                  rc == IOTGW_ERR_STORE_FULL ? "the gateway's store is full (store.maxBytes)"
                                             : "the gateway's store refused the message",
                  RETRY_AFTER_MS);
        return;
    }
    g->durable[(g->durable_head + g->durable_len++) % g->durable_cap] = (gw_durable){s, seq};
    s->in_flight++;
}

void gw_session_on_durable(gw_session *s, uint64_t seq, int rc, const char *why)
{
    if (s->in_flight)
        s->in_flight--;
    if (s->closing)
        return;
    if (rc == 0) {
        send_ack(s, seq);
        return;
    }
    s->g->stats.store_nacked++;
    char detail[200];
    snprintf(detail, sizeof detail, "the gateway's store could not write it: %s", why ? why : "");
    send_nack(s, seq, IOTGW__NACK_REASON__NACK_RETRY_LATER, detail, RETRY_AFTER_MS);
}

static void on_telemetry(gw_session *s, const Iotgw__Telemetry *t)
{
    iotgw_gateway *g = s->g;
    if (s->in_flight >= g->cfg->max_in_flight) {
        send_nack(s, t->seq, IOTGW__NACK_REASON__NACK_WINDOW_FULL, "more than max_in_flight unacknowledged",
                  0);
        return;
    }
    iotgw_diag diag = {0};
    pn_message_t *m = g->scratch;
    if (gw_wrap_telemetry(g, t, m, &diag)) {
        send_nack(s, t->seq, IOTGW__NACK_REASON__NACK_MALFORMED, diag.text, 0);
        return;
    }
    gw_session_submit(s, t->seq, m);
}

void gw_session_submit(gw_session *s, uint64_t seq, pn_message_t *m)
{
    uint8_t *buf;
    size_t len;
    if (iotgw_message_encode(m, &buf, &len)) {
        send_nack(s, seq, IOTGW__NACK_REASON__NACK_MALFORMED, "the message could not be encoded", 0);
        return;
    }
    gw_session_submit_encoded(s, seq, buf, len);
    free(buf);
}

void gw_session_submit_encoded(gw_session *s, uint64_t seq, const uint8_t *buf, size_t len)
{
    iotgw_gateway *g = s->g;
    if (len > IOTGW_HUBMSG_MAX_BODY) {
        send_nack(s, seq, IOTGW__NACK_REASON__NACK_TOO_LARGE, "over the hub's 256 KB message limit", 0);
        return;
    }
    if (g->store) {
        to_store(s, seq, buf, len);
        return;
    }
    int rc = iotgw_upstream_send(s->up, buf, len, (void *)(uintptr_t)seq);
    if (rc == 0) {
        s->in_flight++;
    } else if (rc == IOTGW_ERR_UPSTREAM_NOT_ONLINE) {
        iotgw_device_info info;
        iotgw_upstream_device_info(s->up, &info);
        send_nack(s, seq, IOTGW__NACK_REASON__NACK_UNAUTHORIZED, info.reason, 0);
    } else {
        send_nack(s, seq, IOTGW__NACK_REASON__NACK_RETRY_LATER,
                  "the gateway holds all it may for the hub (per device or in total)", retry_after(s));
    }
}

static void on_method_response(gw_session *s, const Iotgw__MethodResponse *r)
{
    gw_method_call *c = gw_session_take_call(s, r->request_id);
    if (!c) {
        iotgw_log_ev_limited(&s->log, IOTGW_LOG_INFO, "method_answer_late", device_of(s),
                             IOTGW_LOG_FIELDS(IOTGW_FIELD_UINT("request_id", r->request_id)),
                             "device %s: answer to method request %" PRIu64 " came too late; dropped", who(s),
                             r->request_id);
        return;
    }
    if (r->payload_case != IOTGW__METHOD_RESPONSE__PAYLOAD_PROTOBUF) {
        gw_session_answer_json(s, c, r->status,
                               r->payload_case == IOTGW__METHOD_RESPONSE__PAYLOAD_JSON ? r->json.data : NULL,
                               r->payload_case == IOTGW__METHOD_RESPONSE__PAYLOAD_JSON ? r->json.len : 0);
        return;
    }
    char *json = NULL, body[400];
    int status = r->status;
    iotgw_diag diag = {0};
    const char *type = c->response_type;
    if (!type || gw_protobuf_to_json(type, r->protobuf.data, r->protobuf.len, &json, &diag)) {
        gw_error_json(body, sizeof body,
                      type ? diag.text : "the device answered protobuf for a method with no response type");
        status = 502;
    }
    gw_session_answer_method(s, c, status, json ? json : body);
    free(json);
    gw_session_call_free(c);
}

void gw_session_answer_json(gw_session *s, gw_method_call *c, int status, const uint8_t *data, size_t len)
{
    char *json = NULL, body[400];
    if (len) {
        json_error_t jerr;
        json_t *j = json_loadb((const char *)data, len, 0, &jerr);
        if (!j) {
            gw_error_json(body, sizeof body, "the device's answer is not JSON");
            status = 502;
        } else {
            json = strndup((const char *)data, len);
            json_decref(j);
        }
    }
    gw_session_answer_method(s, c, status, json ? json : status == 502 ? body : "");
    free(json);
    gw_session_call_free(c);
}

int gw_session_twin_request(gw_session *s, uint64_t id, const char *rid, iotgw_twin_op op,
                            const uint8_t *patch, size_t len)
{
    uint64_t upstream_id = 0;
    int rc = !(s->capabilities & IOTGW_UPSTREAM_TWIN)
                 ? IOTGW_ERR_INVALID_ARG
                 : iotgw_upstream_twin_request(s->up, op, patch, len, &upstream_id);
    s->g->stats.twin_requests++;
    gw_twin_call *t = rc ? NULL : calloc(1, sizeof *t);
    if (t && rid && !(t->rid = strdup(rid))) {
        free(t);
        t = NULL;
    }
    if (!t)
        return rc ? rc : IOTGW_ERR_NOMEM;
    t->device_id = id;
    t->upstream_id = upstream_id;
    t->next = s->twin_calls;
    s->twin_calls = t;
    return 0;
}

static void on_twin_request(gw_session *s, uint64_t id, iotgw_twin_op op, const ProtobufCBinaryData *patch)
{
    int rc = gw_session_twin_request(s, id, NULL, op, patch ? patch->data : NULL, patch ? patch->len : 0);
    if (rc) {
        Iotgw__TwinResult tr = IOTGW__TWIN_RESULT__INIT;
        tr.request_id = id;
        tr.status = rc == IOTGW_ERR_INVALID_ARG ? 400 : 503;
        tr.detail = (char *)(rc == IOTGW_ERR_INVALID_ARG ? "twin was not among the capabilities in Hello"
                                                         : "the device is not online at the hub");
        Iotgw__Frame f = IOTGW__FRAME__INIT;
        f.body_case = IOTGW__FRAME__BODY_TWIN_RESULT;
        f.twin_result = &tr;
        gw_session_send(s, &f);
    }
}

/* Whether the Hello in raw (a packed Frame) has a NUL inside the string field named
 * field: protobuf-c's decoded strings end at the first one. */
static int hello_string_has_nul(const uint8_t *raw, size_t len, const char *field)
{
    const ProtobufCFieldDescriptor *hello =
        protobuf_c_message_descriptor_get_field_by_name(&iotgw__frame__descriptor, "hello");
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(&iotgw__hello__descriptor, field);
    return iotgw_pb_nested_field_has_nul(raw, len, hello->id, f->id) != 0;
}

static void handle_frame(gw_session *s, const Iotgw__Frame *f, const uint8_t *raw, size_t raw_len)
{
    if (f->body_case == IOTGW__FRAME__BODY_HELLO) {
        if (s->ready)
            gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_UNEXPECTED_FRAME, "a second Hello");
        else if (hello_string_has_nul(raw, raw_len, "device_id"))
            gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_UNKNOWN_DEVICE, "device_id has a NUL character");
        else if (hello_string_has_nul(raw, raw_len, "token"))
            gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_BAD_TOKEN, "the token has a NUL character");
        else
            on_hello(s, f->hello);
        return;
    }
    if (!s->ready) {
        gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_HELLO_REQUIRED, "the first frame must be Hello");
        return;
    }
    switch (f->body_case) {
    case IOTGW__FRAME__BODY_TELEMETRY:
        s->g->stats.telemetry++;
        s->g->stats.telemetry_bytes += raw_len;
        on_telemetry(s, f->telemetry);
        break;
    case IOTGW__FRAME__BODY_METHOD_RESPONSE: on_method_response(s, f->method_response); break;
    case IOTGW__FRAME__BODY_TWIN_GET:
        on_twin_request(s, f->twin_get->request_id, IOTGW_TWIN_GET, NULL);
        break;
    case IOTGW__FRAME__BODY_REPORTED_PATCH:
        on_twin_request(s, f->reported_patch->request_id, IOTGW_TWIN_PATCH_REPORTED,
                        &f->reported_patch->patch_json);
        break;
    case IOTGW__FRAME__BODY_C2D_SETTLE: {
        iotgw_outcome o = f->c2d_settle->outcome == IOTGW__C2D_OUTCOME__C2D_COMPLETE ? IOTGW_OUTCOME_ACCEPTED
                          : f->c2d_settle->outcome == IOTGW__C2D_OUTCOME__C2D_REJECT ? IOTGW_OUTCOME_REJECTED
                                                                                     : IOTGW_OUTCOME_RETRY;
        gw_stats *st = &s->g->stats;
        ++*(o == IOTGW_OUTCOME_ACCEPTED   ? &st->c2d_completed
            : o == IOTGW_OUTCOME_REJECTED ? &st->c2d_rejected
                                          : &st->c2d_abandoned);
        if (iotgw_upstream_c2d_settle(s->up, f->c2d_settle->delivery_id, o))
            iotgw_log_ev_limited(
                &s->log, IOTGW_LOG_INFO, "c2d_settle_stale", device_of(s),
                IOTGW_LOG_FIELDS(IOTGW_FIELD_UINT("delivery_id", f->c2d_settle->delivery_id)),
                "device %s: C2D delivery %" PRIu64 " was no longer pending", who(s),
                f->c2d_settle->delivery_id);
        break;
    }
    case IOTGW__FRAME__BODY_PING: {
        Iotgw__Pong p = IOTGW__PONG__INIT;
        p.nonce = f->ping->nonce;
        Iotgw__Frame out = IOTGW__FRAME__INIT;
        out.body_case = IOTGW__FRAME__BODY_PONG;
        out.pong = &p;
        gw_session_send(s, &out);
        break;
    }
    case IOTGW__FRAME__BODY_PONG: s->ping_sent_ms = 0; break;
    case IOTGW__FRAME__BODY_ERROR:
        iotgw_log_evf(IOTGW_LOG_INFO, "device_error_received", device_of(s),
                      IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("code", error_name(f->error->code)),
                                       IOTGW_FIELD_STR("detail", f->error->message ? f->error->message : "")),
                      "device %s closes: %s: %s", who(s), error_name(f->error->code),
                      f->error->message ? f->error->message : "");
        s->closing = 1;
        iotgw_stream_close(s->stream, 0);
        break;
    case IOTGW__FRAME__BODY__NOT_SET:
        gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_UNEXPECTED_FRAME, "a frame without a body");
        break;
    default:
        gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_UNEXPECTED_FRAME,
                        "frame %s is sent by the gateway, not to it",
                        iotgw__frame__descriptor.fields[f->body_case - 1].name);
        break;
    }
}

static int on_data(iotgw_stream *st, const uint8_t *data, size_t len, void *ctx)
{
    (void)st;
    gw_session *s = ctx;
    s->last_rx_ms = iotgw_loop_now_ms(s->g->loop);
    while (len && !s->closing) {
        size_t used = 0, flen = 0;
        const uint8_t *frame = NULL;
        iotgw_diag diag = {0};
        int rc = iotgw_frame_decoder_next(&s->dec, data, len, &used, &frame, &flen, &diag);
        data += used;
        len -= used;
        if (rc == IOTGW_ERR_AGAIN)
            break;
        if (rc) {
            gw_session_fail(s,
                            rc == IOTGW_ERR_FRAME_TOO_LARGE ? IOTGW__ERROR_CODE__ERROR_FRAME_TOO_LARGE
                                                            : IOTGW__ERROR_CODE__ERROR_MALFORMED_FRAME,
                            "%s", diag.text);
            break;
        }
        Iotgw__Frame *f = iotgw__frame__unpack(NULL, flen, frame);
        if (!f) {
            gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_MALFORMED_FRAME,
                            "a frame that does not parse as Frame");
            break;
        }
        handle_frame(s, f, frame, flen);
        iotgw__frame__free_unpacked(f, NULL);
    }
    return 0;
}

void gw_session_free(gw_session *s)
{
    if (s->device_id)
        iotgw_log_limit_flush_device(&s->log, IOTGW_LOG_INFO, s->device_id);
    release_upstream(s, "the device disconnected");
    iotgw_gateway *g = s->g;
    for (size_t i = 0; i < g->durable_len; i++) /* their acks have nobody to go to */
        if (g->durable[(g->durable_head + i) % g->durable_cap].session == s)
            g->durable[(g->durable_head + i) % g->durable_cap].session = NULL;
    iotgw_timer_stop(&s->hello_timer);
    iotgw_frame_decoder_free(&s->dec);       /* none for MQTT: a zeroed one */
    for (size_t i = 0; i < s->nc2d_ids; i++) /* kept C2D messages: the hub has them still */
        free(s->c2d_ids[i].buf);
    free(s->c2d_ids);
    free(s->pubacks);
    free(s->device_id);
    iotgw_list_remove(&s->node);
    free(s);
}

static void on_closed(iotgw_stream *st, const char *reason, void *ctx)
{
    (void)st;
    gw_session *s = ctx;
    if (s->device_id)
        iotgw_log_evf(IOTGW_LOG_INFO, "device_disconnected", s->device_id,
                      IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", iotgw_stream_peer(st)),
                                       IOTGW_FIELD_STR("reason", reason)),
                      "device %s (%s) disconnected: %s", s->device_id, iotgw_stream_peer(st), reason);
    gw_session_free(s);
}

/* ------------------------------------------------------------------ time */

/* The hello deadline: a one-shot timer per connection until its Hello. */
static void on_hello_deadline(iotgw_timer *t, void *ctx)
{
    (void)t;
    gw_session *s = ctx;
    if (!s->ready && !s->closing)
        gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_HELLO_TIMEOUT, "no Hello within %u ms",
                        s->g->cfg->hello_timeout_ms);
}

/* Keep-alive and method deadlines, from the gateway's one tick for all sessions: one pass
 * a second costs less than a timer restarted on every frame of every session. */
void gw_session_tick(gw_session *s, int64_t now)
{
    const iotgw_config *cfg = s->g->cfg;
    if (s->closing || !s->ready)
        return;
    int64_t keepalive = (int64_t)cfg->keepalive_s * 1000;
    if (s->amqp) {
        gw_amqp_tick(s, now); /* its token's expiry; keep-alive is the AMQP idle timeout's */
        if (s->closing)
            return;
    } else if (s->mqtt) {
        /* MQTT's keep-alive is the front end's */
    } else if (now - s->last_rx_ms >= 2 * keepalive) {
        gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_KEEPALIVE_TIMEOUT, "nothing received for %" PRId64 " s",
                        (now - s->last_rx_ms) / 1000);
        return;
    }
    if (!s->mqtt && !s->amqp && now - s->last_rx_ms >= keepalive && !s->ping_sent_ms) {
        Iotgw__Ping p = IOTGW__PING__INIT;
        p.nonce = (uint64_t)now;
        Iotgw__Frame f = IOTGW__FRAME__INIT;
        f.body_case = IOTGW__FRAME__BODY_PING;
        f.ping = &p;
        gw_session_send(s, &f);
        s->ping_sent_ms = now;
    }
    if (s->closing)
        return;
    char body[200];
    for (gw_method_call **pp = &s->calls; *pp;) {
        gw_method_call *c = *pp;
        if (now < c->deadline_ms) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        gw_error_json(body, sizeof body, "the device did not answer in time");
        gw_session_answer_method(s, c, 504, body);
        gw_session_call_free(c);
    }
}

/* Whether two strings, either of which may be NULL, differ. */
static int differ(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b));
}

void gw_session_reconfigure(gw_session *s, const iotgw_config *cfg, const iotgw_config_device *nd,
                            size_t index)
{
    if (!s->device_id || s->closing)
        return;
    if (!nd || nd->disabled) {
        release_upstream(s, "the device was removed from the gateway's fleet");
        gw_session_fail(
            s, nd ? IOTGW__ERROR_CODE__ERROR_DEVICE_DISABLED : IOTGW__ERROR_CODE__ERROR_UNKNOWN_DEVICE,
            "device %s was %s by a configuration reload", s->device_id,
            nd ? "disabled" : "removed from the fleet");
        free(s->device_id);
        s->device_id = NULL;
        return;
    }
    /* s->g->cfg is still the configuration being replaced: the device's entry there */
    const char *old_key, *old_policy;
    iotgw_device_credential cred = {.device_id = nd->id};
    iotgw_config_hub_credential(s->g->cfg, &s->g->cfg->devices[s->device_index], &old_key, &old_policy);
    iotgw_config_hub_credential(cfg, nd, &cred.key, &cred.policy_name);
    int key_changed = differ(old_key, cred.key) || differ(old_policy, cred.policy_name);
    iotgw_diag diag = {0};
    if (key_changed && s->fwd) { /* the same identity, anew; its backlog stays with it */
        s->device_index = index;
        if (gw_forward_reattach(s, cfg, nd, &diag))
            gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_INTERNAL, "%s", diag.text);
        else
            iotgw_log_ev(IOTGW_LOG_INFO, "device_key_changed", nd->id,
                         "device %s: new key: authenticating again at the hub", nd->id);
        return;
    }
    if (key_changed && (s->mqtt || s->amqp)) { /* what it sent is unanswered: its SDK sends it again once connected */
        release_upstream(s, "the key signing its hub tokens changed");
        gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_REPLACED, "device %s: its key changed: connect again",
                        nd->id);
        return;
    }
    if (key_changed)
        release_upstream(s, "the key signing its hub tokens changed");
    s->device_index = index;
    if (!key_changed)
        return;
    if (iotgw_upstream_device_add(s->g->up, &cred, s->capabilities, s, &s->up, &diag))
        gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_INTERNAL, "%s", diag.text);
    else
        iotgw_log_ev(IOTGW_LOG_INFO, "device_key_changed", nd->id,
                     "device %s: new key: authenticating again at the hub", nd->id);
}

void gw_session_destroy(gw_session *s)
{
    static const iotgw_stream_handler none = {0};
    if (s->mqtt) {
        iotgw_hubmqtt_set_context(s->mqtt, NULL); /* its connection closes with the endpoint */
    } else if (s->amqp) {
        gw_amqp_forget(s); /* its connection closes in gw_amqp_stop */
    } else {
        iotgw_stream_set_handler(s->stream, &none, NULL);
        iotgw_stream_close(s->stream, 0);
    }
    gw_session_free(s);
}

void gw_session_accept(iotgw_gateway *g, iotgw_stream *st)
{
    gw_session *s = calloc(1, sizeof *s);
    if (!s) {
        iotgw_stream_close(st, 0);
        return;
    }
    s->g = g;
    iotgw_list_init(&s->node);
    s->stream = st;
    iotgw_timer_init(g->loop, &s->hello_timer, on_hello_deadline, s);
    g->stats.connections++;
    iotgw_frame_decoder_init(&s->dec, HELLO_MAX_FRAME);
    static const iotgw_stream_handler handler = {.on_data = on_data, .on_closed = on_closed};
    iotgw_stream_set_handler(st, &handler, s);
    iotgw_list_push_front(&g->sessions, &s->node);
    s->last_rx_ms = iotgw_loop_now_ms(g->loop);
    if (g->draining) {
        gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_SHUTTING_DOWN, "the gateway is stopping");
        return;
    }
    iotgw_timer_start(&s->hello_timer, g->cfg->hello_timeout_ms, 0);
}
