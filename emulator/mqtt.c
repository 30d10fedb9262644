/*
 * IoT Hub's MQTT device endpoint: MQTT 3.1.1 over TLS (--mqtts, 8883 by default) and
 * over WebSocket (subprotocol "mqtt" on the HTTPS port's /$iothub/websocket), as IoT
 * Hub's "Communicate with an IoT hub using the MQTT protocol" describes it. The packets
 * are codecs/mqtt.h's, the topics and property bags codecs/iothub_mqtt.h's; this file
 * holds the connection: CONNECT and its authentication, subscriptions, and the mapping
 * of each topic to the hub's telemetry stream, C2D queue, direct methods and twins,
 * which AMQP devices share (docs/emulator.md lists what is refused and how).
 *
 * A client is one connection. Once its CONNECT is accepted it is its identity's
 * presence (live->mqtt), as an AMQP session is (live->active); the newest connection
 * wins across both protocols. It is freed when its stream closes (on_closed); until
 * then emu_mqtt_drop() may have detached it from its identity already.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <proton/codec.h>

#include "codecs/iothub_mqtt.h"
#include "codecs/mqtt.h"
#include "emulator/hub_internal.h"
#include "transport/amqp_map.h"
#include "transport/messaging.h"

/* A whole packet: IoT Hub's 256 KB message, its topic and property bag. */
#define MAX_PACKET (EMU_MAX_MESSAGE_SIZE + 16 * 1024)
/* Output a client may leave unread: its C2D queue (50 x 64 KB) and answers. */
#define MAX_OUTPUT (8u * 1024 * 1024)
/* CONNECT must come this soon after the connection opens. */
#define CONNECT_TIMEOUT_MS 30000
/* IoT Hub's longest keep-alive; a longer one (or 0) is held to it. */
#define MAX_KEEP_ALIVE_S 1177
#define SUB(kind)        (1u << (kind))

typedef enum client_state { AWAITING_CONNECT, ONLINE, CLOSING } client_state;

struct emu_mqtt_client {
    emu_hub *hub;
    iotgw_stream *stream;
    uint64_t serial; /* shared with AMQP connections: "conn 12" */
    int ws;          /* over WebSocket (else TLS) */
    client_state state;
    iotgw_mqtt_decoder dec;
    emu_identity *id;
    emu_live *live; /* while live->mqtt == this */
    int clean_session;
    unsigned subs;          /* SUB(iotgw_iothub_filter_kind) */
    uint8_t granted[8];     /* granted QoS per kind */
    uint16_t keep_alive_s;  /* as agreed */
    int64_t last_packet_ms; /* the loop's clock */
    iotgw_timer timer;      /* the CONNECT deadline, then keep-alive checks */
    iotgw_timer expiry;     /* the token's expiry */
    uint16_t next_packet_id;
    char *will_topic; /* with its payload: published if the connection is lost */
    uint8_t *will_payload;
    size_t will_len;
    int will_retain;
    int disconnected;      /* DISCONNECT seen: no will */
    int told_unsubscribed; /* twin answers dropped for want of a subscription (logged once) */
    iotgw_list in_hub;     /* hub->mqtt_clients */
};

static void client_free(emu_mqtt_client *m);

static const char *who(const emu_mqtt_client *m)
{
    return m->id ? m->id->id : iotgw_stream_peer(m->stream);
}

/* ------------------------------------------------------------------ writing */

static int send_packet(emu_mqtt_client *m, const iotgw_mqtt_packet *p)
{
    uint8_t small[512];
    size_t len;
    if (!m->stream || m->state == CLOSING)
        return -1;
    int rc = iotgw_mqtt_encode(IOTGW_MQTT_SERVER, p, small, sizeof small, &len);
    if (rc == IOTGW_ERR_BUFFER_TOO_SMALL) {
        uint8_t *big = malloc(len);
        if (!big || iotgw_mqtt_encode(IOTGW_MQTT_SERVER, p, big, len, &len)) {
            free(big);
            return -1;
        }
        rc = iotgw_stream_write(m->stream, big, len);
        free(big);
        return rc ? -1 : 0;
    }
    return rc || iotgw_stream_write(m->stream, small, len) ? -1 : 0;
}

/* A PUBLISH of payload on topic. QoS 1 takes *packet_id when it is set (a redelivery),
 * else the next packet identifier, which *packet_id then holds. */
static int publish(emu_mqtt_client *m, const char *topic, const uint8_t *payload, size_t len, int qos,
                   int dup, uint16_t *packet_id)
{
    iotgw_mqtt_publish pub = {.qos = (uint8_t)qos, .dup = dup};
    pub.topic = (iotgw_mqtt_bytes){(const uint8_t *)topic, strlen(topic)};
    if (qos && packet_id && *packet_id) {
        pub.packet_id = *packet_id;
    } else if (qos) {
        if (++m->next_packet_id == 0)
            m->next_packet_id = 1;
        pub.packet_id = m->next_packet_id;
    }
    uint8_t header[IOTGW_MQTT_PUBLISH_HEADER_MAX(512)];
    if (pub.topic.len > 512 || !m->stream || m->state != ONLINE)
        return -1;
    size_t hlen = iotgw_mqtt_publish_header(header, &pub, len);
    if (!hlen || iotgw_stream_write(m->stream, header, hlen) ||
        (len && iotgw_stream_write(m->stream, payload, len)))
        return -1;
    if (packet_id)
        *packet_id = pub.packet_id;
    return 0;
}

/* ------------------------------------------------------------------ identity */

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
        live->mqtt_subscriptions = m->subs;
        live->mqtt_session = 1;
    }
    emu_c2d_requeue(live);
    emu_methods_session_changed(m->hub, live->id);
}

static void close_client(emu_mqtt_client *m, const char *why)
{
    if (m->state == CLOSING)
        return;
    iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": MQTT %s: closed: %s", m->serial, who(m), why);
    detach(m);
    m->state = CLOSING;
    iotgw_timer_stop(&m->timer);
    iotgw_timer_stop(&m->expiry);
    if (m->stream)
        iotgw_stream_close(m->stream, 1);
}

void emu_mqtt_drop(emu_mqtt_client *m, const char *why)
{
    m->disconnected = 1; /* the hub ends it: no will */
    close_client(m, why);
}

uint64_t emu_mqtt_serial(const emu_mqtt_client *m)
{
    return m->serial;
}

int emu_mqtt_drop_all(emu_hub *hub, const char *why)
{
    int n = 0;
    emu_mqtt_client *m;
    IOTGW_LIST_FOREACH (m, &hub->mqtt_clients, emu_mqtt_client, in_hub)
        if (m->state != CLOSING) {
            emu_mqtt_drop(m, why);
            n++;
        }
    return n;
}

/* A protocol violation: IoT Hub closes the connection, and says nothing more. */
static int violation(emu_mqtt_client *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int violation(emu_mqtt_client *m, const char *fmt, ...)
{
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": MQTT %s: %s: closing the connection", m->serial, who(m),
              why);
    close_client(m, why);
    return -1;
}

/* ------------------------------------------------------------------ CONNECT */

static int connack(emu_mqtt_client *m, int code, int session_present)
{
    iotgw_mqtt_packet p = {.type = IOTGW_MQTT_CONNACK};
    p.u.connack.return_code = (uint8_t)code;
    p.u.connack.session_present = session_present;
    m->hub->metrics.mqtt_connack[code < EMU_MQTT_CONNACK_CODES ? code : EMU_MQTT_CONNACK_CODES - 1]++;
    return send_packet(m, &p);
}

/* Refuse the CONNECT with code, log why, close after the CONNACK has gone. */
static int refuse(emu_mqtt_client *m, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(emu_mqtt_client *m, int code, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": MQTT CONNECT from %s refused (CONNACK %d): %s", m->serial,
              iotgw_stream_peer(m->stream), code, why);
    connack(m, code, 0);
    m->disconnected = 1;
    close_client(m, why);
    return -1;
}

static int bytes_eq(iotgw_mqtt_bytes b, const char *s)
{
    return s && b.len == strlen(s) && !memcmp(b.data, s, b.len);
}

static char *bytes_dup(iotgw_mqtt_bytes b)
{
    char *s = malloc(b.len + 1);
    if (s) {
        memcpy(s, b.data, b.len);
        s[b.len] = '\0';
    }
    return s;
}

static void expiry_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    emu_mqtt_client *m = ctx;
    iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": MQTT %s: its SAS token expired", m->serial, who(m));
    m->disconnected = 1; /* as IoT Hub: the connection ends, the will is not sent */
    close_client(m, "the SAS token expired");
}

static void timer_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    emu_mqtt_client *m = ctx;
    if (m->state == AWAITING_CONNECT) {
        violation(m, "no CONNECT within %d s", CONNECT_TIMEOUT_MS / 1000);
        return;
    }
    /* MQTT 3.1.1 3.1.2.10: one and a half keep-alive periods without a packet */
    int64_t quiet = iotgw_loop_now_ms(m->hub->loop) - m->last_packet_ms;
    if (quiet > (int64_t)m->keep_alive_s * 1500) {
        m->disconnected = 0; /* lost: the will goes out */
        close_client(m, "keep-alive expired: no packet for 1.5 keep-alive periods");
    }
}

/* The identity the client id names ("{device}" or "{device}/{module}"). */
static emu_identity *identity_of(emu_hub *hub, iotgw_mqtt_bytes client_id, char **device, char **module)
{
    char *text = bytes_dup(client_id);
    if (!text)
        return NULL;
    char *slash = strchr(text, '/');
    if (slash)
        *slash = '\0';
    *device = strdup(text);
    *module = slash ? strdup(slash + 1) : NULL;
    free(text);
    if (!*device || (slash && !*module))
        return NULL;
    return emu_registry_find(hub->registry, *device, *module);
}

static int on_connect(emu_mqtt_client *m, const iotgw_mqtt_connect *c)
{
    emu_hub *hub = m->hub;
    iotgw_diag diag = {0};
    if (!bytes_eq(c->protocol_name, "MQTT") || c->protocol_level != IOTGW_MQTT_LEVEL_311)
        return refuse(m, IOTGW_MQTT_CONNACK_BAD_PROTOCOL,
                      "protocol %.*s level %u: IoT Hub speaks MQTT 3.1.1 only",
                      (int)(c->protocol_name.len > 16 ? 16 : c->protocol_name.len),
                      (const char *)c->protocol_name.data, c->protocol_level);
    /* IoT Hub answers every other refusal with 5, Not authorized (3 when it cannot serve) */
    if (!c->client_id.len)
        return refuse(m, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED,
                      "the client id is empty: it must be the device id");
    if (emu_faults_refusing_connections(hub->faults, emu_wall_ms()))
        return refuse(m, IOTGW_MQTT_CONNACK_UNAVAILABLE,
                      "the hub refuses connections for now (fault injection)");
    iotgw_iothub_username user;
    if (!c->has_username || iotgw_iothub_username_parse(c->username.data, c->username.len, &user, &diag))
        return refuse(m, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED, "user name: %s",
                      c->has_username ? diag.text
                                      : "none given; it must be {hub host}/{device id}/?api-version=...");
    char *device = NULL, *module = NULL;
    emu_identity *id = identity_of(hub, c->client_id, &device, &module);
    int rc = 0;
    int user_device = bytes_eq(user.device, device),
        user_module = module ? bytes_eq(user.module, module) : user.module.len == 0;
    if (!device)
        rc = refuse(m, IOTGW_MQTT_CONNACK_UNAVAILABLE, "out of memory");
    else if (user.host.len != strlen(hub->opt.hostname) ||
             strncasecmp((const char *)user.host.data, hub->opt.hostname, user.host.len))
        rc =
            refuse(m, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED, "the user name names another hub (%.*s; this is %s)",
                   (int)(user.host.len > 200 ? 200 : user.host.len), (const char *)user.host.data,
                   hub->opt.hostname);
    else if (!user_device || !user_module)
        rc = refuse(m, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED,
                    "the user name's identity is not the client id's (%s%s%s)", device, module ? "/" : "",
                    module ? module : "");
    else if (!id)
        rc = refuse(m, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED, "%s%s%s is not registered on this hub", device,
                    module ? "/" : "", module ? module : "");
    if (rc) {
        free(device), free(module);
        return rc;
    }
    free(device), free(module);

    uint64_t expiry = 0;
    if (c->has_password) {
        char *token = bytes_dup(c->password);
        emu_auth a;
        int bad = !token || c->password.len > 4096 || emu_auth_token(hub, token, NULL, &a);
        free(token);
        if (bad)
            return refuse(m, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED, "%s: %s", id->id,
                          c->password.len > 4096 ? "the token is too long" : a.description);
        if (a.id != id)
            return refuse(m, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED, "%s: the token is for %s", id->id,
                          a.id ? a.id->id : "the whole hub, not this device");
        expiry = a.expiry;
    } else {
        const char *cn = iotgw_stream_peer_cn(m->stream);
        if (!cn || strcmp(cn, id->id))
            return refuse(m, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED,
                          "%s: no password (SAS token) and no client certificate for it", id->id);
        if (!id->enabled)
            return refuse(m, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED, "%s is disabled", id->id);
    }
    emu_live *live = emu_live_get(&hub->live, id);
    if (!live)
        return refuse(m, IOTGW_MQTT_CONNACK_UNAVAILABLE, "out of memory");
    if (c->has_will) {
        m->will_topic = bytes_dup(c->will_topic);
        m->will_payload = malloc(c->will_message.len ? c->will_message.len : 1);
        if (!m->will_topic || !m->will_payload)
            return refuse(m, IOTGW_MQTT_CONNACK_UNAVAILABLE, "out of memory");
        memcpy(m->will_payload, c->will_message.data, c->will_message.len);
        m->will_len = c->will_message.len;
        m->will_retain = c->will_retain;
    }

    /* one connection per identity: the newest wins, over either protocol */
    if (live->mqtt) {
        iotgw_log(IOTGW_LOG_INFO, "%s: MQTT conn %" PRIu64 " replaces conn %" PRIu64, id->id, m->serial,
                  live->mqtt->serial);
        emu_mqtt_drop(live->mqtt, "a newer connection for this identity took over");
    }
    if (live->active)
        emu_session_end(live->active, "com.microsoft:link-creation-conflict",
                        "a newer connection for this identity took its links over");
    int session_present = 0;
    if (c->clean_session) {
        live->mqtt_session = 0;
        live->mqtt_subscriptions = 0;
    } else if (live->mqtt_session) {
        session_present = 1;
        m->subs = live->mqtt_subscriptions;
        for (int k = 0; k < 8; k++)
            m->granted[k] = 1;
    }
    m->id = id;
    m->live = live;
    live->mqtt = m;
    live->auth_ok++;
    live->last_activity_ms = emu_wall_ms();
    m->clean_session = c->clean_session;
    m->keep_alive_s =
        c->keep_alive_s && c->keep_alive_s <= MAX_KEEP_ALIVE_S ? c->keep_alive_s : MAX_KEEP_ALIVE_S;
    m->state = ONLINE;
    int64_t check_ms =
        (int64_t)m->keep_alive_s * 250; /* a lost client is closed within 1.5 to 1.75 periods */
    iotgw_timer_start(&m->timer, check_ms, check_ms);
    if (expiry) {
        uint64_t now = emu_now_s();
        iotgw_timer_start(&m->expiry, expiry > now ? (int64_t)(expiry - now) * 1000 : 0, 0);
    }
    iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": MQTT %s connected (%s, keep-alive %u s%s)", m->serial,
              id->id, m->ws ? "WebSocket" : "TLS", m->keep_alive_s,
              c->clean_session ? "" : ", persistent session");
    rc = connack(m, IOTGW_MQTT_CONNACK_ACCEPTED, session_present);
    if (session_present) { /* what the kept subscriptions want goes out now */
        emu_methods_session_changed(hub, id);
        emu_c2d_pump_mqtt(live);
    }
    return rc;
}

/* ------------------------------------------------------------------ telemetry */

static void put_string_key(pn_data_t *d, const char *key, const char *value)
{
    pn_data_put_string(d, pn_bytes(strlen(key), key));
    pn_data_put_string(d, pn_bytes(strlen(value), value));
}

/* The property bag and payload as the AMQP message IoT Hub stores: system properties
 * ($.mid, $.cid, $.uid, $.to, $.ct, $.ce) become the message's, the rest application
 * properties. */
static int telemetry_message(pn_message_t *msg, const iotgw_mqtt_props *props, const uint8_t *payload,
                             size_t len, int retain)
{
    pn_message_clear(msg);
    pn_data_t *ap = pn_message_properties(msg);
    pn_data_put_map(ap);
    pn_data_enter(ap);
    for (size_t i = 0; i < props->count; i++) {
        const char *k = props->item[i].name, *v = props->item[i].value;
        if (!strcmp(k, "$.mid"))
            pn_message_set_id(msg, (pn_atom_t){.type = PN_STRING, .u.as_bytes = pn_bytes(strlen(v), v)});
        else if (!strcmp(k, "$.cid"))
            pn_message_set_correlation_id(
                msg, (pn_atom_t){.type = PN_STRING, .u.as_bytes = pn_bytes(strlen(v), v)});
        else if (!strcmp(k, "$.uid"))
            pn_message_set_user_id(msg, pn_bytes(strlen(v), v));
        else if (!strcmp(k, "$.to"))
            pn_message_set_address(msg, v);
        else if (!strcmp(k, "$.ct"))
            pn_message_set_content_type(msg, v);
        else if (!strcmp(k, "$.ce"))
            pn_message_set_content_encoding(msg, v);
        else if (!strcmp(k, "$.ctime"))
            put_string_key(ap, "iothub-creation-time-utc", v);
        else if (!strncmp(k, "$.", 2))
            continue; /* other system properties ($.exp, $.ifid, $.on, $.sub...): not carried */
        else
            put_string_key(ap, k, v);
    }
    if (retain) /* IoT Hub marks a retained message rather than retaining it */
        put_string_key(ap, "mqtt-retain", "true");
    pn_data_exit(ap);
    pn_data_put_binary(pn_message_body(msg), pn_bytes(len, (const char *)payload));
    pn_message_set_inferred(msg, true);
    return 0;
}

static int on_telemetry(emu_mqtt_client *m, const iotgw_mqtt_bytes bag, const uint8_t *payload, size_t len,
                        int retain, const char **why_out)
{
    emu_hub *hub = m->hub;
    iotgw_mqtt_props props;
    iotgw_diag diag = {0};
    if (iotgw_mqtt_props_parse(bag.data, bag.len, &props, &diag)) {
        *why_out = "the property bag does not decode";
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": MQTT %s: telemetry refused: %s", m->serial, who(m),
                  diag.text);
        return -1;
    }
    if (!hub->mqtt_scratch && !(hub->mqtt_scratch = pn_message())) {
        iotgw_mqtt_props_free(&props);
        *why_out = "out of memory";
        return -1;
    }
    telemetry_message(hub->mqtt_scratch, &props, payload, len, retain);
    size_t counted = len ? len : 1; /* IoT Hub's count: the body, property names and values */
    for (size_t i = 0; i < props.count; i++)
        counted += strlen(props.item[i].name) + strlen(props.item[i].value);
    iotgw_mqtt_props_free(&props);
    uint8_t *buf;
    size_t blen;
    if (iotgw_message_encode(hub->mqtt_scratch, &buf, &blen)) {
        *why_out = "out of memory";
        return -1;
    }
    const char *why = NULL;
    int throttled = 0;
    const char *cond = emu_telemetry_accept(hub, m->live, buf, blen, counted, &why, &throttled);
    free(buf);
    if (cond) {
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": MQTT %s: telemetry refused: %s (%zu bytes)", m->serial,
                  who(m), why, len);
        *why_out = why;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ twins */

static void twin_answer(emu_mqtt_client *m, int status, const uint8_t *rid, size_t rid_len, int64_t version,
                        const char *body)
{
    if (!(m->subs & SUB(IOTGW_IOTHUB_SUB_TWIN_RESPONSES))) { /* IoT Hub answers only a subscriber */
        if (!m->told_unsubscribed++)
            iotgw_log(IOTGW_LOG_INFO,
                      "conn %" PRIu64 ": MQTT %s: twin request served, answer not sent: not subscribed to "
                      "$iothub/twin/res/#",
                      m->serial, who(m));
        return;
    }
    char ridz[256];
    snprintf(ridz, sizeof ridz, "%.*s", (int)(rid_len < sizeof ridz ? rid_len : sizeof ridz - 1),
             (const char *)rid);
    char *topic = iotgw_iothub_twin_response_topic(status, ridz, version);
    if (topic)
        publish(m, topic, (const uint8_t *)(body ? body : ""), body ? strlen(body) : 0, 0, 0, NULL);
    free(topic);
}

static void on_twin(emu_mqtt_client *m, const iotgw_iothub_publish_topic *t, const uint8_t *payload,
                    size_t len)
{
    emu_hub *hub = m->hub;
    emu_identity *id = m->id;
    m->live->twin_requests++;
    m->live->last_activity_ms = emu_wall_ms();
    if (t->kind == IOTGW_IOTHUB_TWIN_GET) {
        char *doc = emu_twin_document_text(id);
        hub->metrics.twin[EMU_TWIN_GET][doc == NULL]++;
        twin_answer(m, doc ? 200 : 500, t->rid.data, t->rid.len, -1,
                    doc ? doc : "{\"message\":\"out of memory\"}");
        free(doc);
        return;
    }
    int64_t version = -1;
    const char *error = NULL;
    int status = emu_twin_patch_reported(hub, id, payload, len, &version, &error);
    if (error) {
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": MQTT %s: reported properties refused (%d): %s",
                  m->serial, id->id, status, error);
        /* Node's SDK reads errorCode, not the status, to tell a failure */
        json_t *e = json_pack("{s:i,s:s,s:s}", "errorCode", status * 1000 + (status == 400 ? 4 : 0),
                              "message", error, "trackingId", "emulator");
        char *text = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        twin_answer(m, status, t->rid.data, t->rid.len, -1, text);
        free(text);
        return;
    }
    twin_answer(m, status, t->rid.data, t->rid.len, version, NULL);
}

int emu_mqtt_send_desired(emu_mqtt_client *m, int64_t version, const char *patch)
{
    if (m->state != ONLINE || !(m->subs & SUB(IOTGW_IOTHUB_SUB_TWIN_DESIRED)))
        return -1;
    char *topic = iotgw_iothub_desired_topic(version);
    int rc = topic ? publish(m, topic, (const uint8_t *)patch, strlen(patch), 0, 0, NULL) : -1;
    free(topic);
    return rc;
}

/* ------------------------------------------------------------------ methods */

int emu_mqtt_send_method(emu_mqtt_client *m, const char *name, const char *rid, const uint8_t *payload,
                         size_t len)
{
    if (m->state != ONLINE || !(m->subs & SUB(IOTGW_IOTHUB_SUB_METHODS)))
        return -1;
    char *topic = iotgw_iothub_method_topic(name, rid);
    uint16_t id = 0; /* a QoS 1 subscriber's PUBACK is not waited for: its answer is what counts */
    int rc = topic ? publish(m, topic, payload, len, m->granted[IOTGW_IOTHUB_SUB_METHODS], 0, &id) : -1;
    free(topic);
    return rc;
}

/* ------------------------------------------------------------------ C2D */

/* The bag of a queued C2D message: its system properties, then its application ones. */
static char *c2d_bag(pn_message_t *msg)
{
    iotgw_mqtt_prop items[IOTGW_MQTT_MAX_PROPS];
    char *owned[IOTGW_MQTT_MAX_PROPS];
    size_t n = 0, nowned = 0;
    char *mid = iotgw_atom_text(pn_message_get_id(msg));
    char *cid = iotgw_atom_text(pn_message_get_correlation_id(msg));
    if (mid && *mid)
        items[n++] = (iotgw_mqtt_prop){"$.mid", mid};
    if (cid && *cid)
        items[n++] = (iotgw_mqtt_prop){"$.cid", cid};
    if (pn_message_get_address(msg))
        items[n++] = (iotgw_mqtt_prop){"$.to", pn_message_get_address(msg)};
    if (pn_message_get_content_type(msg))
        items[n++] = (iotgw_mqtt_prop){"$.ct", pn_message_get_content_type(msg)};
    if (pn_message_get_content_encoding(msg))
        items[n++] = (iotgw_mqtt_prop){"$.ce", pn_message_get_content_encoding(msg)};
    pn_bytes_t uid = pn_message_get_user_id(msg);
    if (uid.size && (owned[nowned] = strndup(uid.start, uid.size)))
        items[n++] = (iotgw_mqtt_prop){"$.uid", owned[nowned++]};
    /* then iothub-ack, always (none when the sender asked for nothing), then the rest */
    char ack[16];
    const char *a = iotgw_map_text(pn_message_properties(msg), "iothub-ack", ack, sizeof ack);
    items[n++] = (iotgw_mqtt_prop){"iothub-ack", a ? a : "none"};
    pn_data_t *ap = pn_message_properties(msg);
    pn_data_rewind(ap);
    if (pn_data_next(ap) && pn_data_type(ap) == PN_MAP) {
        pn_data_enter(ap);
        while (n + 1 < IOTGW_MQTT_MAX_PROPS && nowned + 2 < IOTGW_MQTT_MAX_PROPS && pn_data_next(ap)) {
            pn_bytes_t k = pn_data_type(ap) == PN_STRING ? pn_data_get_string(ap) : pn_bytes(0, NULL);
            if (!pn_data_next(ap))
                break;
            if (!k.size || (k.size == 10 && !memcmp(k.start, "iothub-ack", 10)))
                continue;
            char value[64];
            const char *v = NULL;
            pn_bytes_t sv;
            switch (pn_data_type(ap)) {
            case PN_STRING: sv = pn_data_get_string(ap); break;
            case PN_SYMBOL: sv = pn_data_get_symbol(ap); break;
            case PN_BOOL: v = pn_data_get_bool(ap) ? "true" : "false"; break;
            case PN_INT: snprintf(value, sizeof value, "%d", pn_data_get_int(ap)), v = value; break;
            case PN_LONG: snprintf(value, sizeof value, "%" PRId64, pn_data_get_long(ap)), v = value; break;
            case PN_UINT: snprintf(value, sizeof value, "%u", pn_data_get_uint(ap)), v = value; break;
            case PN_ULONG: snprintf(value, sizeof value, "%" PRIu64, pn_data_get_ulong(ap)), v = value; break;
            case PN_DOUBLE: snprintf(value, sizeof value, "%.17g", pn_data_get_double(ap)), v = value; break;
            default: continue;
            }
            char *kk = strndup(k.start, k.size);
            char *vv = v ? strdup(v) : strndup(sv.start, sv.size);
            if (!kk || !vv) {
                free(kk), free(vv);
                continue;
            }
            owned[nowned++] = kk;
            owned[nowned++] = vv;
            items[n++] = (iotgw_mqtt_prop){kk, vv};
        }
    }
    char *bag = iotgw_mqtt_props_format(items, n);
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    free(mid), free(cid);
    return bag;
}

int emu_mqtt_send_c2d(emu_mqtt_client *m, const uint8_t *buf, size_t len, int dup, uint16_t *packet_id)
{
    if (m->state != ONLINE || !(m->subs & SUB(IOTGW_IOTHUB_SUB_C2D)))
        return -1;
    emu_hub *hub = m->hub;
    if (!hub->mqtt_scratch && !(hub->mqtt_scratch = pn_message()))
        return -1;
    pn_message_t *msg = hub->mqtt_scratch;
    if (iotgw_message_decode(msg, buf, len, NULL))
        return -1; /* queued encoded by c2d.c: cannot happen */
    size_t blen = 0;
    const char *body = iotgw_body_bytes(pn_message_body(msg), &blen);
    char *bag = c2d_bag(msg);
    char *topic = bag ? iotgw_iothub_c2d_topic(m->id->device_id, bag) : NULL;
    int qos = m->granted[IOTGW_IOTHUB_SUB_C2D] ? 1 : 0;
    if (!qos)
        *packet_id = 0;
    int rc =
        topic ? publish(m, topic, (const uint8_t *)(body ? body : ""), body ? blen : 0, qos, dup, packet_id)
              : -1;
    free(bag);
    free(topic);
    return rc;
}

/* ------------------------------------------------------------------ packets */

static int on_subscribe(emu_mqtt_client *m, const iotgw_mqtt_subscribe *sub, int unsubscribe)
{
    iotgw_mqtt_packet ack = {.type = unsubscribe ? IOTGW_MQTT_UNSUBACK : IOTGW_MQTT_SUBACK};
    unsigned added = 0;
    if (unsubscribe)
        ack.u.packet_id = sub->packet_id;
    else
        ack.u.suback.packet_id = sub->packet_id, ack.u.suback.count = sub->count;
    for (size_t i = 0; i < sub->count; i++) {
        iotgw_iothub_filter_kind kind;
        iotgw_mqtt_bytes device;
        iotgw_diag diag = {0};
        int ok = !iotgw_iothub_filter_parse(sub->filter[i].data, sub->filter[i].len, &kind, &device, &diag);
        if (ok && kind == IOTGW_IOTHUB_SUB_C2D && (m->id->module_id || !bytes_eq(device, m->id->device_id))) {
            ok = 0;
            snprintf(diag.text, sizeof diag.text, "%s",
                     m->id->module_id ? "modules get no cloud-to-device messages"
                                      : "cloud-to-device messages of another device");
        }
        if (!ok) /* IoT Hub serves only its own filters, and closes the connection on others */
            return violation(m, "%s %.*s: %s", unsubscribe ? "UNSUBSCRIBE" : "SUBSCRIBE",
                             (int)(sub->filter[i].len > 200 ? 200 : sub->filter[i].len),
                             (const char *)sub->filter[i].data, diag.text);
        if (unsubscribe) {
            m->subs &= ~SUB(kind);
            continue;
        }
        uint8_t qos = sub->qos[i] > 1 ? 1 : sub->qos[i]; /* IoT Hub grants QoS 1 at most */
        m->granted[kind] = qos;
        ack.u.suback.code[i] = qos;
        added |= SUB(kind) & ~m->subs;
        m->subs |= SUB(kind);
    }
    int rc = send_packet(m, &ack);
    /* after the acknowledgement: what waited for these subscriptions goes out */
    if (added & SUB(IOTGW_IOTHUB_SUB_METHODS))
        emu_methods_session_changed(m->hub, m->id);
    if (added & SUB(IOTGW_IOTHUB_SUB_C2D))
        emu_c2d_pump_mqtt(m->live);
    return rc;
}

static int on_publish(emu_mqtt_client *m, const iotgw_mqtt_publish *p)
{
    if (p->qos == 2)
        return violation(m, "PUBLISH with QoS 2, which IoT Hub does not support");
    iotgw_iothub_publish_topic t;
    iotgw_diag diag = {0};
    if (iotgw_iothub_publish_topic_parse(p->topic.data, p->topic.len, &t, &diag))
        return violation(m, "%s", diag.text);
    const emu_identity *id = m->id;
    const char *why = NULL;
    switch (t.kind) {
    case IOTGW_IOTHUB_TELEMETRY:
        if (!bytes_eq(t.device, id->device_id) ||
            (id->module_id ? !bytes_eq(t.module, id->module_id) : t.module.len != 0))
            return violation(m, "PUBLISH to another identity's topic %.*s",
                             (int)(p->topic.len > 200 ? 200 : p->topic.len), (const char *)p->topic.data);
        if (on_telemetry(m, t.bag, p->payload.data, p->payload.len, p->retain, &why))
            return violation(m, "telemetry refused: %s", why); /* IoT Hub closes the connection */
        break;
    case IOTGW_IOTHUB_METHOD_RESPONSE:
        emu_methods_on_mqtt_response(m->hub, m->id, t.rid.data, t.rid.len, t.status, p->payload.data,
                                     p->payload.len);
        break;
    case IOTGW_IOTHUB_TWIN_GET:
    case IOTGW_IOTHUB_TWIN_REPORTED: on_twin(m, &t, p->payload.data, p->payload.len); break;
    }
    if (p->qos == 1 && m->state == ONLINE) {
        iotgw_mqtt_packet ack = {.type = IOTGW_MQTT_PUBACK};
        ack.u.packet_id = p->packet_id;
        return send_packet(m, &ack);
    }
    return 0;
}

static int on_packet(emu_mqtt_client *m, const iotgw_mqtt_packet *p)
{
    m->last_packet_ms = iotgw_loop_now_ms(m->hub->loop);
    if (m->state == AWAITING_CONNECT) {
        if (p->type != IOTGW_MQTT_CONNECT)
            return violation(m, "%s before CONNECT", iotgw_mqtt_type_name(p->type));
        return on_connect(m, &p->u.connect);
    }
    if (m->live)
        m->live->last_activity_ms = emu_wall_ms();
    switch (p->type) {
    case IOTGW_MQTT_CONNECT: return violation(m, "a second CONNECT");
    case IOTGW_MQTT_PUBLISH: return on_publish(m, &p->u.publish);
    case IOTGW_MQTT_PUBACK:
        if (m->live)
            emu_c2d_mqtt_complete(m->live, p->u.packet_id); /* or a late one: ignored */
        return 0;
    case IOTGW_MQTT_SUBSCRIBE: return on_subscribe(m, &p->u.subscribe, 0);
    case IOTGW_MQTT_UNSUBSCRIBE: return on_subscribe(m, &p->u.subscribe, 1);
    case IOTGW_MQTT_PINGREQ: {
        iotgw_mqtt_packet pong = {.type = IOTGW_MQTT_PINGRESP};
        return send_packet(m, &pong);
    }
    case IOTGW_MQTT_DISCONNECT:
        m->disconnected = 1;
        close_client(m, "the client disconnected");
        return -1;
    default: /* PUBREC, PUBREL, PUBCOMP: QoS 2 */
        return violation(m, "%s: IoT Hub does not support QoS 2", iotgw_mqtt_type_name(p->type));
    }
}

static int on_data(iotgw_stream *s, const uint8_t *data, size_t len, void *ctx)
{
    (void)s;
    emu_mqtt_client *m = ctx;
    while (len && m->state != CLOSING) {
        iotgw_mqtt_packet p;
        size_t used = 0;
        iotgw_diag diag = {0};
        int rc = iotgw_mqtt_decoder_next(&m->dec, data, len, &used, &p, &diag);
        data += used;
        len -= used;
        if (rc == IOTGW_ERR_AGAIN)
            break;
        if (rc) {
            violation(m, "%s", diag.text);
            break;
        }
        on_packet(m, &p);
    }
    return 0;
}

/* The connection is lost (not ended by DISCONNECT or by the hub): the will, if a
 * telemetry topic of the client's own, goes to the stream as IoT Hub sends it. */
static void send_will(emu_mqtt_client *m)
{
    if (!m->will_topic || m->disconnected || !m->id)
        return;
    iotgw_iothub_publish_topic t;
    iotgw_diag diag = {0};
    const char *why = NULL;
    emu_live *live = emu_live_get(&m->hub->live, m->id);
    if (!live ||
        iotgw_iothub_publish_topic_parse((const uint8_t *)m->will_topic, strlen(m->will_topic), &t, &diag) ||
        t.kind != IOTGW_IOTHUB_TELEMETRY || !bytes_eq(t.device, m->id->device_id) ||
        (m->id->module_id ? !bytes_eq(t.module, m->id->module_id) : t.module.len != 0)) {
        iotgw_log(IOTGW_LOG_INFO,
                  "conn %" PRIu64 ": MQTT %s: will on %s not sent: not a telemetry topic of its own",
                  m->serial, m->id->id, m->will_topic);
        return;
    }
    emu_live *was = m->live;
    m->live = live;
    /* IoT Hub marks it: iothub-MessageType Will */
    size_t n = t.bag.len;
    char *bag = malloc(n + 32);
    if (bag) {
        memcpy(bag, t.bag.data, n);
        snprintf(bag + n, 32, "%siothub-MessageType=Will", n ? "&" : "");
        on_telemetry(m, (iotgw_mqtt_bytes){(const uint8_t *)bag, strlen(bag)}, m->will_payload, m->will_len,
                     m->will_retain, &why);
        free(bag);
    }
    m->live = was;
}

static void on_closed(iotgw_stream *s, const char *reason, void *ctx)
{
    (void)s;
    emu_mqtt_client *m = ctx;
    m->stream = NULL;
    if (m->state != CLOSING)
        iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": MQTT %s: %s", m->serial, m->id ? m->id->id : "client",
                  reason);
    detach(m);
    send_will(m);
    client_free(m);
}

static void client_free(emu_mqtt_client *m)
{
    IOTGW_ASSERT(!m->live);
    emu_hub *hub = m->hub;
    hub->metrics.mqtt_conns_open[m->ws]--;
    iotgw_timer_stop(&m->timer);
    iotgw_timer_stop(&m->expiry);
    iotgw_list_remove(&m->in_hub);
    iotgw_mqtt_decoder_free(&m->dec);
    free(m->will_topic);
    free(m->will_payload);
    free(m);
}

static void accept_stream(emu_hub *hub, iotgw_stream *s, int ws)
{
    static const iotgw_stream_handler handler = {.on_data = on_data, .on_closed = on_closed};
    emu_mqtt_client *m = calloc(1, sizeof *m);
    if (!m) {
        iotgw_stream_close(s, 0);
        return;
    }
    m->hub = hub;
    m->stream = s;
    m->ws = ws;
    m->serial = ++hub->next_serial;
    iotgw_list_init(&m->in_hub);
    iotgw_list_push_front(&hub->mqtt_clients, &m->in_hub);
    iotgw_mqtt_decoder_init(&m->dec, IOTGW_MQTT_SERVER, MAX_PACKET);
    iotgw_timer_init(hub->loop, &m->timer, timer_fired, m);
    iotgw_timer_init(hub->loop, &m->expiry, expiry_fired, m);
    iotgw_timer_start(&m->timer, CONNECT_TIMEOUT_MS, 0);
    hub->metrics.mqtt_conns_accepted[ws]++;
    hub->metrics.mqtt_conns_open[ws]++;
    iotgw_stream_set_handler(s, &handler, m);
    iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": accepted MQTT over %s from %s", m->serial,
              ws ? "WebSocket" : "TLS", iotgw_stream_peer(s));
}

static void on_tls_accept(iotgw_stream_listener *l, iotgw_stream *s, void *ctx)
{
    (void)l;
    accept_stream(ctx, s, 0);
}

void emu_mqtt_on_ws_stream(iotgw_listener *l, iotgw_stream *s, void *ctx)
{
    (void)l;
    accept_stream(ctx, s, 1);
}

int emu_mqtt_listen(emu_hub *hub, const char *address, int port, const char *cert_file, const char *key_file,
                    iotgw_diag *diag)
{
    iotgw_stream_listener_options o = {
        .address = address,
        .port = port,
        .on_accept = on_tls_accept,
        .ctx = hub,
        .max_output = MAX_OUTPUT,
        .tls = {.cert_file = cert_file, .key_file = key_file},
    };
    return iotgw_stream_listener_new(hub->loop, &o, &hub->mqtts, diag);
}

void emu_mqtt_free_all(emu_hub *hub)
{
    static const iotgw_stream_handler none = {0};
    emu_mqtt_client *m;
    IOTGW_LIST_FOREACH (m, &hub->mqtt_clients, emu_mqtt_client, in_hub) {
        if (m->live) {
            m->live->mqtt = NULL;
            m->live = NULL;
        }
        if (m->stream) {
            iotgw_stream_set_handler(m->stream, &none, NULL);
            iotgw_stream_close(m->stream, 0);
        }
        client_free(m);
    }
}
