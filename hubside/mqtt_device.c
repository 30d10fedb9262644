/*
 * IoT Hub's MQTT device endpoint, the protocol side (hubside/mqtt_device.h): one
 * connection's CONNECT, subscriptions, keep-alive, will and topics; what each request
 * does is its back end's.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <proton/codec.h>

#include "codecs/assert.h"
#include "codecs/identity.h"
#include "codecs/list.h"
#include "hubside/mqtt_device.h"
#include "transport/amqp_map.h"
#include "transport/transport.h"

/* Output a client may leave unread: its C2D queue (50 x 64 KB) and answers. */
#define MAX_OUTPUT                 (8u * 1024 * 1024)
#define DEFAULT_CONNECT_TIMEOUT_MS 30000
/* IoT Hub's longest keep-alive; a longer one (or 0) is held to it. */
#define MAX_KEEP_ALIVE_S 1177
#define MAX_TOKEN        4096
/* A CONNECT, before anyone is authenticated: its ids, a token, and a will of up to 64 KiB;
 * what may follow it is the whole IoT Hub message (IOTGW_HUBMQTT_MAX_PACKET). */
#define MAX_CONNECT_PACKET (72 * 1024)
/* Bytes read but not yet handled while the back end holds the connection's window full. */
#define MAX_PENDING (2 * IOTGW_HUBMQTT_MAX_PACKET)

typedef enum conn_state { AWAITING_CONNECT, ONLINE, CLOSING } conn_state;

struct iotgw_hubmqtt_endpoint {
    iotgw_loop *loop;
    iotgw_hubmqtt_endpoint_options opt;
    char prefix[24];
    iotgw_list conns;               /* iotgw_hubmqtt */
    pn_message_t *scratch;          /* telemetry built here, one at a time */
    iotgw_log_limit before_connect; /* lines about clients that named no identity yet */
    uint64_t open[2], accepted[2];
    uint64_t serials; /* when the owner gives no counter */
};

struct iotgw_hubmqtt {
    iotgw_hubmqtt_endpoint *ep;
    iotgw_stream *stream;
    void *ctx;       /* the back end's */
    uint64_t serial; /* "conn 12" */
    int ws;          /* over WebSocket (else TLS) */
    conn_state state;
    int accepted; /* the back end accepted CONNECT: it hears `closed` */
    iotgw_mqtt_decoder dec;
    char *device_id, *module_id, *name;
    unsigned subs;          /* IOTGW_HUBMQTT_SUB(kind) */
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
    int no_will;           /* DISCONNECT seen, or the hub ended it */
    int told_unsubscribed; /* twin answers dropped for want of a subscription (logged once) */
    iotgw_log_limit log;
    char peer[64];    /* kept: the stream's goes with it */
    int paused;       /* the back end's window is full: packets wait in pending */
    uint8_t *pending; /* read, not yet decoded, in order */
    size_t pending_len;
    iotgw_timer resume; /* handles pending on the turn after the window opens */
    iotgw_list node;    /* ep->conns */
};

static void conn_free(iotgw_hubmqtt *c);

static const char *who(const iotgw_hubmqtt *c)
{
    return c->name ? c->name : c->peer;
}

static const char *event(iotgw_hubmqtt_endpoint *ep, char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "%s%s", ep->prefix, what);
    return buf;
}

/* The budget a line counts against: none (a fresh one each time) when every line is logged. */
static iotgw_log_limit *budget(iotgw_hubmqtt *c, iotgw_log_limit *lim)
{
    static iotgw_log_limit unlimited;
    if (c->ep->opt.log_every_line) {
        memset(&unlimited, 0, sizeof unlimited);
        return &unlimited;
    }
    return lim;
}

/* A line about this connection, within its budget (or the endpoint's before CONNECT). */
static void say(iotgw_hubmqtt *c, iotgw_log_level level, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void say(iotgw_hubmqtt *c, iotgw_log_level level, const char *what, const char *fmt, ...)
{
    char text[600], ev[48];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    iotgw_log_printable(text);
    iotgw_log_ev_limited(budget(c, c->accepted ? &c->log : &c->ep->before_connect), level,
                         event(c->ep, ev, sizeof ev, what), c->device_id,
                         IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", c->peer)), "conn %" PRIu64 ": MQTT %s: %s",
                         c->serial, who(c), text);
}

/* ------------------------------------------------------------------ writing */

static int send_packet(iotgw_hubmqtt *c, const iotgw_mqtt_packet *p)
{
    uint8_t small[512];
    size_t len;
    if (!c->stream || c->state == CLOSING)
        return -1;
    int rc = iotgw_mqtt_encode(IOTGW_MQTT_SERVER, p, small, sizeof small, &len);
    if (rc == IOTGW_ERR_BUFFER_TOO_SMALL) {
        uint8_t *big = malloc(len);
        if (!big || iotgw_mqtt_encode(IOTGW_MQTT_SERVER, p, big, len, &len)) {
            free(big);
            return -1;
        }
        rc = iotgw_stream_write(c->stream, big, len);
        free(big);
        return rc ? -1 : 0;
    }
    return rc || iotgw_stream_write(c->stream, small, len) ? -1 : 0;
}

/* A PUBLISH of payload on topic. QoS 1 takes *packet_id when it is set (a redelivery),
 * else the next packet identifier, which *packet_id then holds. */
static int publish(iotgw_hubmqtt *c, const char *topic, const uint8_t *payload, size_t len, int qos, int dup,
                   uint16_t *packet_id)
{
    iotgw_mqtt_publish pub = {.qos = (uint8_t)qos, .dup = dup};
    pub.topic = (iotgw_mqtt_bytes){(const uint8_t *)topic, strlen(topic)};
    if (qos && packet_id && *packet_id) {
        pub.packet_id = *packet_id;
    } else if (qos) {
        if (++c->next_packet_id == 0)
            c->next_packet_id = 1;
        pub.packet_id = c->next_packet_id;
    }
    uint8_t small[IOTGW_MQTT_PUBLISH_HEADER_MAX(512)];
    if (pub.topic.len > 65535 || !c->stream || c->state != ONLINE)
        return -1;
    /* a C2D message's topic carries its properties: it may be long */
    uint8_t *header = pub.topic.len <= 512 ? small : malloc(IOTGW_MQTT_PUBLISH_HEADER_MAX(pub.topic.len));
    size_t hlen = header ? iotgw_mqtt_publish_header(header, &pub, len) : 0;
    int rc = !hlen || iotgw_stream_write(c->stream, header, hlen) ||
             (len && iotgw_stream_write(c->stream, payload, len));
    if (header != small)
        free(header);
    if (rc)
        return -1;
    if (packet_id)
        *packet_id = pub.packet_id;
    return 0;
}

/* ------------------------------------------------------------------ closing */

static void close_conn(iotgw_hubmqtt *c, const char *why)
{
    if (c->state == CLOSING)
        return;
    say(c, IOTGW_LOG_INFO, "closed", "closed: %s", why);
    c->state = CLOSING;
    iotgw_timer_stop(&c->timer);
    iotgw_timer_stop(&c->expiry);
    if (c->stream)
        iotgw_stream_close(c->stream, 1);
}

void iotgw_hubmqtt_drop(iotgw_hubmqtt *c, const char *why)
{
    c->no_will = 1; /* the hub ends it: no will */
    close_conn(c, why);
}

int iotgw_hubmqtt_drop_all(iotgw_hubmqtt_endpoint *ep, const char *why)
{
    int n = 0;
    iotgw_hubmqtt *c;
    IOTGW_LIST_FOREACH (c, &ep->conns, iotgw_hubmqtt, node)
        if (c->state != CLOSING) {
            iotgw_hubmqtt_drop(c, why);
            n++;
        }
    return n;
}

/* A protocol violation: IoT Hub closes the connection, and says nothing more. */
static int violation(iotgw_hubmqtt *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int violation(iotgw_hubmqtt *c, const char *fmt, ...)
{
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    say(c, IOTGW_LOG_WARN, "violation", "%s: closing the connection", why);
    close_conn(c, why);
    return -1;
}

/* ------------------------------------------------------------------ CONNECT */

static int connack(iotgw_hubmqtt *c, int code, int session_present)
{
    iotgw_mqtt_packet p = {.type = IOTGW_MQTT_CONNACK};
    p.u.connack.return_code = (uint8_t)code;
    p.u.connack.session_present = session_present;
    if (c->ep->opt.connack_counts)
        c->ep->opt
            .connack_counts[code < IOTGW_HUBMQTT_CONNACK_CODES ? code : IOTGW_HUBMQTT_CONNACK_CODES - 1]++;
    return send_packet(c, &p);
}

/* Refuse the CONNECT with code, log why, close after the CONNACK has gone. */
static int refuse(iotgw_hubmqtt *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(iotgw_hubmqtt *c, int code, const char *fmt, ...)
{
    char why[400], ev[48];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    iotgw_log_printable(why);
    const char *peer = c->peer;
    iotgw_log_ev_limited(budget(c, &c->ep->before_connect), IOTGW_LOG_WARN,
                         event(c->ep, ev, sizeof ev, "refused"), c->device_id,
                         IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", peer), IOTGW_FIELD_INT("connack", code),
                                          IOTGW_FIELD_STR("detail", why)),
                         "conn %" PRIu64 ": MQTT CONNECT from %s refused (CONNACK %d): %s", c->serial, peer,
                         code, why);
    connack(c, code, 0);
    c->no_will = 1;
    close_conn(c, why);
    return -1;
}

static int bytes_eq(iotgw_mqtt_bytes b, const char *s)
{
    return s && b.len == strlen(s) && (!b.len || !memcmp(b.data, s, b.len));
}

static char *bytes_dup(iotgw_mqtt_bytes b)
{
    char *s = malloc(b.len + 1);
    if (s) {
        if (b.len)
            memcpy(s, b.data, b.len);
        s[b.len] = '\0';
    }
    return s;
}

static void expiry_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    iotgw_hubmqtt *c = ctx;
    c->no_will = 1; /* as IoT Hub: the connection ends, the will is not sent */
    close_conn(c, "the SAS token expired");
}

static void timer_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    iotgw_hubmqtt *c = ctx;
    if (c->state == AWAITING_CONNECT) {
        violation(c, "no CONNECT within %u s", c->ep->opt.connect_timeout_ms / 1000);
        return;
    }
    /* MQTT 3.1.1 3.1.2.10: one and a half keep-alive periods without a packet; not while
     * the gateway is the one not reading */
    if (c->paused || c->pending_len) {
        c->last_packet_ms = iotgw_loop_now_ms(c->ep->loop);
        return;
    }
    int64_t quiet = iotgw_loop_now_ms(c->ep->loop) - c->last_packet_ms;
    if (quiet > (int64_t)c->keep_alive_s * 1500)
        close_conn(c,
                   "keep-alive expired: no packet for 1.5 keep-alive periods"); /* lost: the will goes out */
}

/* The client id's identity ("{device}" or "{device}/{module}"), into c: 0, -1 out of
 * memory, or IOTGW_ERR_INVALID_ARG for ids IoT Hub would not have (nothing is kept of
 * them: no line may carry what an unauthenticated peer wrote). */
static int take_identity(iotgw_hubmqtt *c, iotgw_mqtt_bytes client_id)
{
    char *text = bytes_dup(client_id);
    if (!text)
        return -1;
    char *slash = strchr(text, '/');
    if (slash)
        *slash = '\0';
    iotgw_diag diag = {0};
    if (iotgw_identity_check(text, "device id", &diag) ||
        (slash && iotgw_identity_check(slash + 1, "module id", &diag))) {
        free(text);
        return IOTGW_ERR_INVALID_ARG;
    }
    c->device_id = strdup(text);
    c->module_id = slash ? strdup(slash + 1) : NULL;
    if (slash)
        *slash = '/';
    c->name = strdup(text);
    free(text);
    return c->name && c->device_id && (!slash || c->module_id) ? 0 : -1;
}

static int on_connect(iotgw_hubmqtt *c, const iotgw_mqtt_connect *p)
{
    iotgw_diag diag = {0};
    if (!bytes_eq(p->protocol_name, "MQTT") || p->protocol_level != IOTGW_MQTT_LEVEL_311)
        return refuse(c, IOTGW_MQTT_CONNACK_BAD_PROTOCOL,
                      "protocol %.*s level %u: IoT Hub speaks MQTT 3.1.1 only",
                      (int)(p->protocol_name.len > 16 ? 16 : p->protocol_name.len),
                      (const char *)p->protocol_name.data, p->protocol_level);
    /* IoT Hub answers every other refusal with 5, Not authorized (3 when it cannot serve) */
    if (!p->client_id.len)
        return refuse(c, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED,
                      "the client id is empty: it must be the device id");
    iotgw_iothub_username user;
    if (!p->has_username || iotgw_iothub_username_parse(p->username.data, p->username.len, &user, &diag))
        return refuse(c, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED, "user name: %s",
                      p->has_username ? diag.text
                                      : "none given; it must be {hub host}/{device id}/?api-version=...");
    int taken = take_identity(c, p->client_id);
    if (taken == IOTGW_ERR_INVALID_ARG)
        return refuse(c, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED,
                      "the client id is not a device id (or device/module) IoT Hub would have");
    if (taken)
        return refuse(c, IOTGW_MQTT_CONNACK_UNAVAILABLE, "out of memory");
    int user_device = bytes_eq(user.device, c->device_id),
        user_module = c->module_id ? bytes_eq(user.module, c->module_id) : user.module.len == 0;
    if (!user_device || !user_module)
        return refuse(c, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED,
                      "the user name's identity is not the client id's (%s)", c->name);
    if (p->has_password && p->password.len > MAX_TOKEN)
        return refuse(c, IOTGW_MQTT_CONNACK_NOT_AUTHORIZED, "%s: the token is too long", c->name);
    char *host = bytes_dup(user.host);
    char *token = p->has_password ? bytes_dup(p->password) : NULL;
    if (!host || (p->has_password && !token)) {
        free(host), free(token);
        return refuse(c, IOTGW_MQTT_CONNACK_UNAVAILABLE, "out of memory");
    }
    iotgw_hubmqtt_connect req = {
        .device_id = c->device_id,
        .module_id = c->module_id,
        .host = host,
        .token = token,
        .cert_cn = iotgw_stream_peer_cn(c->stream),
        .clean_session = p->clean_session,
    };
    iotgw_hubmqtt_accepted acc = {.expires_in_ms = -1};
    char why[400] = "";
    int code = c->ep->opt.backend->connect(c, &req, &acc, why, sizeof why);
    free(host), free(token);
    if (code != IOTGW_MQTT_CONNACK_ACCEPTED)
        return refuse(c, code, "%s", why[0] ? why : "refused");
    c->accepted = 1;
    if (p->has_will) {
        c->will_topic = bytes_dup(p->will_topic);
        c->will_payload = malloc(p->will_message.len ? p->will_message.len : 1);
        if (!c->will_topic || !c->will_payload) {
            iotgw_hubmqtt_drop(c, "out of memory");
            return -1;
        }
        if (p->will_message.len)
            memcpy(c->will_payload, p->will_message.data, p->will_message.len);
        c->will_len = p->will_message.len;
        c->will_retain = p->will_retain;
    }
    if (acc.session_present) {
        c->subs = acc.subscriptions;
        for (int k = 0; k < 8; k++)
            c->granted[k] = 1;
    }
    c->keep_alive_s =
        p->keep_alive_s && p->keep_alive_s <= MAX_KEEP_ALIVE_S ? p->keep_alive_s : MAX_KEEP_ALIVE_S;
    c->state = ONLINE;
    int64_t check_ms =
        (int64_t)c->keep_alive_s * 250; /* a lost client is closed within 1.5 to 1.75 periods */
    iotgw_timer_start(&c->timer, check_ms, check_ms);
    if (acc.expires_in_ms >= 0)
        iotgw_timer_start(&c->expiry, acc.expires_in_ms, 0);
    say(c, IOTGW_LOG_INFO, "connected", "connected (%s, keep-alive %u s%s)", c->ws ? "WebSocket" : "TLS",
        c->keep_alive_s, p->clean_session ? "" : ", persistent session");
    int rc = connack(c, IOTGW_MQTT_CONNACK_ACCEPTED, acc.session_present);
    if (acc.session_present && c->subs && c->ep->opt.backend->subscribed)
        c->ep->opt.backend->subscribed(c, c->subs); /* what the kept subscriptions want goes out now */
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
static void telemetry_message(pn_message_t *msg, const iotgw_mqtt_props *props, const uint8_t *payload,
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
}

/* To the back end; 0, IOTGW_HUBMQTT_PENDING, or -1 with *why. */
static int on_telemetry(iotgw_hubmqtt *c, const iotgw_mqtt_bytes bag, const uint8_t *payload, size_t len,
                        int retain, uint16_t packet_id, const char **why)
{
    iotgw_hubmqtt_endpoint *ep = c->ep;
    iotgw_mqtt_props props;
    iotgw_diag diag = {0};
    if (iotgw_mqtt_props_parse(bag.data, bag.len, &props, &diag)) {
        say(c, IOTGW_LOG_WARN, "telemetry_refused", "telemetry refused: %s", diag.text);
        *why = "the property bag does not decode";
        return -1;
    }
    if (!ep->scratch && !(ep->scratch = pn_message())) {
        iotgw_mqtt_props_free(&props);
        *why = "out of memory";
        return -1;
    }
    telemetry_message(ep->scratch, &props, payload, len, retain);
    size_t counted = len ? len : 1; /* IoT Hub's count: the body, property names and values */
    for (size_t i = 0; i < props.count; i++)
        counted += strlen(props.item[i].name) + strlen(props.item[i].value);
    iotgw_mqtt_props_free(&props);
    int rc = ep->opt.backend->telemetry(c, ep->scratch, counted, packet_id, why);
    if (rc < 0)
        say(c, IOTGW_LOG_WARN, "telemetry_refused", "telemetry refused: %s (%zu bytes)", *why ? *why : "",
            len);
    return rc;
}

/* ------------------------------------------------------------------ to the client */

void iotgw_hubmqtt_twin_answer(iotgw_hubmqtt *c, int status, const uint8_t *rid, size_t rid_len,
                               int64_t version, const char *body)
{
    if (!(c->subs &
          IOTGW_HUBMQTT_SUB(IOTGW_IOTHUB_SUB_TWIN_RESPONSES))) { /* IoT Hub answers only a subscriber */
        if (!c->told_unsubscribed++)
            say(c, IOTGW_LOG_INFO, "twin_unanswered",
                "twin request served, answer not sent: not subscribed to $iothub/twin/res/#");
        return;
    }
    char ridz[256];
    snprintf(ridz, sizeof ridz, "%.*s", (int)(rid_len < sizeof ridz ? rid_len : sizeof ridz - 1),
             (const char *)rid);
    char *topic = iotgw_iothub_twin_response_topic(status, ridz, version);
    if (topic)
        publish(c, topic, (const uint8_t *)(body ? body : ""), body ? strlen(body) : 0, 0, 0, NULL);
    free(topic);
}

int iotgw_hubmqtt_send_desired(iotgw_hubmqtt *c, int64_t version, const uint8_t *patch, size_t len)
{
    if (c->state != ONLINE || !(c->subs & IOTGW_HUBMQTT_SUB(IOTGW_IOTHUB_SUB_TWIN_DESIRED)))
        return -1;
    char *topic = iotgw_iothub_desired_topic(version);
    int rc = topic ? publish(c, topic, patch, len, 0, 0, NULL) : -1;
    free(topic);
    return rc;
}

int iotgw_hubmqtt_send_method(iotgw_hubmqtt *c, const char *name, const char *rid, const uint8_t *payload,
                              size_t len)
{
    if (c->state != ONLINE || !(c->subs & IOTGW_HUBMQTT_SUB(IOTGW_IOTHUB_SUB_METHODS)))
        return -1;
    char *topic = iotgw_iothub_method_topic(name, rid);
    uint16_t id = 0; /* a QoS 1 subscriber's PUBACK is not waited for: its answer is what counts */
    int rc = topic ? publish(c, topic, payload, len, c->granted[IOTGW_IOTHUB_SUB_METHODS], 0, &id) : -1;
    free(topic);
    return rc;
}

/* The bag of a cloud-to-device message: its system properties, then its application ones. */
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

int iotgw_hubmqtt_send_c2d(iotgw_hubmqtt *c, pn_message_t *msg, int dup, uint16_t *packet_id)
{
    if (c->state != ONLINE || !(c->subs & IOTGW_HUBMQTT_SUB(IOTGW_IOTHUB_SUB_C2D)))
        return -1;
    size_t blen = 0;
    const char *body = iotgw_body_bytes(pn_message_body(msg), &blen);
    char *bag = c2d_bag(msg);
    char *topic = bag ? iotgw_iothub_c2d_topic(c->device_id, bag) : NULL;
    int qos = c->granted[IOTGW_IOTHUB_SUB_C2D] ? 1 : 0;
    if (!qos)
        *packet_id = 0;
    int rc =
        topic ? publish(c, topic, (const uint8_t *)(body ? body : ""), body ? blen : 0, qos, dup, packet_id)
              : -1;
    free(bag);
    free(topic);
    return rc;
}

void iotgw_hubmqtt_pause(iotgw_hubmqtt *c, int paused)
{
    c->paused = paused;
    if (c->stream)
        iotgw_stream_pause(c->stream, paused);
    if (!paused && c->pending_len) /* what was read meanwhile: on the next turn */
        iotgw_timer_start(&c->resume, 0, 0);
}

int iotgw_hubmqtt_puback(iotgw_hubmqtt *c, uint16_t packet_id)
{
    if (c->state != ONLINE)
        return -1;
    iotgw_mqtt_packet ack = {.type = IOTGW_MQTT_PUBACK};
    ack.u.packet_id = packet_id;
    return send_packet(c, &ack);
}

/* ------------------------------------------------------------------ packets */

static int on_subscribe(iotgw_hubmqtt *c, const iotgw_mqtt_subscribe *sub, int unsubscribe)
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
        if (ok && kind == IOTGW_IOTHUB_SUB_C2D && (c->module_id || !bytes_eq(device, c->device_id))) {
            ok = 0;
            snprintf(diag.text, sizeof diag.text, "%s",
                     c->module_id ? "modules get no cloud-to-device messages"
                                  : "cloud-to-device messages of another device");
        }
        if (!ok) /* IoT Hub serves only its own filters, and closes the connection on others */
            return violation(c, "%s %.*s: %s", unsubscribe ? "UNSUBSCRIBE" : "SUBSCRIBE",
                             (int)(sub->filter[i].len > 200 ? 200 : sub->filter[i].len),
                             (const char *)sub->filter[i].data, diag.text);
        if (unsubscribe) {
            c->subs &= ~IOTGW_HUBMQTT_SUB(kind);
            continue;
        }
        uint8_t qos = sub->qos[i] > 1 ? 1 : sub->qos[i]; /* IoT Hub grants QoS 1 at most */
        c->granted[kind] = qos;
        ack.u.suback.code[i] = qos;
        added |= IOTGW_HUBMQTT_SUB(kind) & ~c->subs;
        c->subs |= IOTGW_HUBMQTT_SUB(kind);
    }
    int rc = send_packet(c, &ack);
    /* after the acknowledgement: what waited for these subscriptions goes out */
    if (added && c->ep->opt.backend->subscribed)
        c->ep->opt.backend->subscribed(c, added);
    return rc;
}

static int own_telemetry_topic(const iotgw_hubmqtt *c, const iotgw_iothub_publish_topic *t)
{
    return bytes_eq(t->device, c->device_id) &&
           (c->module_id ? bytes_eq(t->module, c->module_id) : t->module.len == 0);
}

static int on_publish(iotgw_hubmqtt *c, const iotgw_mqtt_publish *p)
{
    const iotgw_hubmqtt_backend *be = c->ep->opt.backend;
    if (p->qos == 2)
        return violation(c, "PUBLISH with QoS 2, which IoT Hub does not support");
    iotgw_iothub_publish_topic t;
    iotgw_diag diag = {0};
    if (iotgw_iothub_publish_topic_parse(p->topic.data, p->topic.len, &t, &diag))
        return violation(c, "%s", diag.text);
    const char *why = NULL;
    int rc = 0;
    switch (t.kind) {
    case IOTGW_IOTHUB_TELEMETRY:
        if (!own_telemetry_topic(c, &t))
            return violation(c, "PUBLISH to another identity's topic %.*s",
                             (int)(p->topic.len > 200 ? 200 : p->topic.len), (const char *)p->topic.data);
        rc = on_telemetry(c, t.bag, p->payload.data, p->payload.len, p->retain, p->qos ? p->packet_id : 0,
                          &why);
        if (rc < 0)
            return violation(c, "telemetry refused: %s", why ? why : ""); /* IoT Hub closes the connection */
        break;
    case IOTGW_IOTHUB_METHOD_RESPONSE:
        be->method_response(c, t.rid.data, t.rid.len, t.status, p->payload.data, p->payload.len);
        break;
    case IOTGW_IOTHUB_TWIN_GET:
    case IOTGW_IOTHUB_TWIN_REPORTED:
        be->twin_request(c, t.kind, t.rid.data, t.rid.len, p->payload.data, p->payload.len);
        break;
    }
    if (p->qos == 1 && rc != IOTGW_HUBMQTT_PENDING)
        return iotgw_hubmqtt_puback(c, p->packet_id);
    return 0;
}

static int on_packet(iotgw_hubmqtt *c, const iotgw_mqtt_packet *p)
{
    c->last_packet_ms = iotgw_loop_now_ms(c->ep->loop);
    if (c->state == AWAITING_CONNECT) {
        if (p->type != IOTGW_MQTT_CONNECT)
            return violation(c, "%s before CONNECT", iotgw_mqtt_type_name(p->type));
        return on_connect(c, &p->u.connect);
    }
    switch (p->type) {
    case IOTGW_MQTT_CONNECT: return violation(c, "a second CONNECT");
    case IOTGW_MQTT_PUBLISH: return on_publish(c, &p->u.publish);
    case IOTGW_MQTT_PUBACK:
        if (c->ep->opt.backend->c2d_acked)
            c->ep->opt.backend->c2d_acked(c, p->u.packet_id); /* or a late one: the back end ignores it */
        return 0;
    case IOTGW_MQTT_SUBSCRIBE: return on_subscribe(c, &p->u.subscribe, 0);
    case IOTGW_MQTT_UNSUBSCRIBE: return on_subscribe(c, &p->u.subscribe, 1);
    case IOTGW_MQTT_PINGREQ: {
        iotgw_mqtt_packet pong = {.type = IOTGW_MQTT_PINGRESP};
        return send_packet(c, &pong);
    }
    case IOTGW_MQTT_DISCONNECT:
        c->no_will = 1;
        close_conn(c, "the client disconnected");
        return -1;
    default: /* PUBREC, PUBREL, PUBCOMP: QoS 2 */
        return violation(c, "%s: IoT Hub does not support QoS 2", iotgw_mqtt_type_name(p->type));
    }
}

/* Keep what cannot be handled now, after what waits already. */
static void keep_pending(iotgw_hubmqtt *c, const uint8_t *data, size_t len)
{
    uint8_t *p = c->pending_len + len <= MAX_PENDING ? realloc(c->pending, c->pending_len + len) : NULL;
    if (!p) {
        violation(c, "more than %u bytes sent while its telemetry window is full", (unsigned)MAX_PENDING);
        return;
    }
    memcpy(p + c->pending_len, data, len);
    c->pending = p;
    c->pending_len += len;
}

/* Decode and handle packets until the window fills (the rest is kept for later). */
static void feed(iotgw_hubmqtt *c, const uint8_t *data, size_t len)
{
    while (len && c->state != CLOSING && !c->paused) {
        iotgw_mqtt_packet p;
        size_t used = 0;
        iotgw_diag diag = {0};
        int rc = iotgw_mqtt_decoder_next(&c->dec, data, len, &used, &p, &diag);
        data += used;
        len -= used;
        if (rc == IOTGW_ERR_AGAIN)
            break;
        if (rc) {
            violation(c, "%s", diag.text);
            return;
        }
        if (p.type == IOTGW_MQTT_CONNECT && c->state == AWAITING_CONNECT)
            c->dec.max_packet = IOTGW_HUBMQTT_MAX_PACKET; /* what may follow a CONNECT */
        on_packet(c, &p);
    }
    if (len && c->state != CLOSING)
        keep_pending(c, data, len);
}

static int on_data(iotgw_stream *s, const uint8_t *data, size_t len, void *ctx)
{
    (void)s;
    iotgw_hubmqtt *c = ctx;
    if (c->pending_len) /* in order: after what waits */
        keep_pending(c, data, len);
    else
        feed(c, data, len);
    return 0;
}

static void resume_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    iotgw_hubmqtt *c = ctx;
    if (c->paused || !c->pending_len || c->state == CLOSING)
        return;
    uint8_t *buf = c->pending;
    size_t len = c->pending_len;
    c->pending = NULL;
    c->pending_len = 0;
    feed(c, buf, len);
    free(buf);
}

/* The connection is lost (not ended by DISCONNECT or by the hub): the will, if a
 * telemetry topic of the client's own, goes to the back end as IoT Hub sends it. */
static void send_will(iotgw_hubmqtt *c)
{
    if (!c->will_topic || c->no_will || !c->accepted)
        return;
    iotgw_iothub_publish_topic t;
    iotgw_diag diag = {0};
    if (iotgw_iothub_publish_topic_parse((const uint8_t *)c->will_topic, strlen(c->will_topic), &t, &diag) ||
        t.kind != IOTGW_IOTHUB_TELEMETRY || !own_telemetry_topic(c, &t)) {
        say(c, IOTGW_LOG_INFO, "will_not_sent", "will on %s not sent: not a telemetry topic of its own",
            c->will_topic);
        return;
    }
    /* IoT Hub marks it: iothub-MessageType Will */
    size_t n = t.bag.len;
    char *bag = malloc(n + 32);
    if (!bag)
        return;
    if (n) /* an empty bag has no data */
        memcpy(bag, t.bag.data, n);
    snprintf(bag + n, 32, "%siothub-MessageType=Will", n ? "&" : "");
    const char *why = NULL;
    on_telemetry(c, (iotgw_mqtt_bytes){(const uint8_t *)bag, strlen(bag)}, c->will_payload, c->will_len,
                 c->will_retain, 0, &why);
    free(bag);
}

static void on_closed(iotgw_stream *s, const char *reason, void *ctx)
{
    (void)s;
    iotgw_hubmqtt *c = ctx;
    if (c->state != CLOSING)
        say(c, IOTGW_LOG_INFO, "closed", "%s", reason);
    c->state = CLOSING;
    send_will(c);
    c->stream = NULL;
    if (c->accepted)
        c->ep->opt.backend->closed(c, reason);
    conn_free(c);
}

static void conn_free(iotgw_hubmqtt *c)
{
    iotgw_hubmqtt_endpoint *ep = c->ep;
    IOTGW_ASSERT(ep->open[c->ws] > 0);
    ep->open[c->ws]--;
    if (c->name)
        iotgw_log_limit_flush_device(&c->log, IOTGW_LOG_INFO, c->device_id);
    iotgw_timer_stop(&c->timer);
    iotgw_timer_stop(&c->expiry);
    iotgw_timer_stop(&c->resume);
    free(c->pending);
    iotgw_list_remove(&c->node);
    iotgw_mqtt_decoder_free(&c->dec);
    free(c->device_id), free(c->module_id), free(c->name);
    free(c->will_topic);
    free(c->will_payload);
    free(c);
}

/* ------------------------------------------------------------------ endpoint */

iotgw_hubmqtt *iotgw_hubmqtt_accept(iotgw_hubmqtt_endpoint *ep, iotgw_stream *s, int ws)
{
    static const iotgw_stream_handler handler = {.on_data = on_data, .on_closed = on_closed};
    iotgw_hubmqtt *c = calloc(1, sizeof *c);
    if (!c) {
        iotgw_stream_close(s, 0);
        return NULL;
    }
    ws = ws ? 1 : 0;
    c->ep = ep;
    c->stream = s;
    c->ws = ws;
    c->serial = ++*ep->opt.serials;
    snprintf(c->peer, sizeof c->peer, "%s", iotgw_stream_peer(s));
    iotgw_list_init(&c->node);
    iotgw_list_push_front(&ep->conns, &c->node);
    iotgw_mqtt_decoder_init(&c->dec, IOTGW_MQTT_SERVER, MAX_CONNECT_PACKET);
    iotgw_timer_init(ep->loop, &c->timer, timer_fired, c);
    iotgw_timer_init(ep->loop, &c->expiry, expiry_fired, c);
    iotgw_timer_init(ep->loop, &c->resume, resume_fired, c);
    iotgw_timer_start(&c->timer, ep->opt.connect_timeout_ms, 0);
    ep->accepted[ws]++;
    ep->open[ws]++;
    iotgw_stream_set_handler(s, &handler, c);
    say(c, IOTGW_LOG_DEBUG, "accepted", "accepted over %s", ws ? "WebSocket" : "TLS");
    return c;
}

static void on_tls_accept(iotgw_stream_listener *l, iotgw_stream *s, void *ctx)
{
    (void)l;
    iotgw_hubmqtt_accept(ctx, s, 0);
}

int iotgw_hubmqtt_listen(iotgw_hubmqtt_endpoint *ep, const iotgw_stream_listener_options *o,
                         iotgw_stream_listener **out, iotgw_diag *diag)
{
    iotgw_stream_listener_options lo = *o;
    lo.on_accept = on_tls_accept;
    lo.ctx = ep;
    if (!lo.max_output)
        lo.max_output = MAX_OUTPUT;
    return iotgw_stream_listener_new(ep->loop, &lo, out, diag);
}

iotgw_hubmqtt_endpoint *iotgw_hubmqtt_endpoint_new(iotgw_loop *loop, const iotgw_hubmqtt_endpoint_options *o)
{
    IOTGW_ASSERT(o->backend && o->backend->connect && o->backend->telemetry && o->backend->closed &&
                 o->backend->method_response && o->backend->twin_request);
    iotgw_hubmqtt_endpoint *ep = calloc(1, sizeof *ep);
    if (!ep)
        return NULL;
    ep->loop = loop;
    ep->opt = *o;
    if (!ep->opt.serials)
        ep->opt.serials = &ep->serials;
    if (!ep->opt.connect_timeout_ms)
        ep->opt.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    snprintf(ep->prefix, sizeof ep->prefix, "%s", o->event_prefix ? o->event_prefix : "mqtt_");
    iotgw_list_init(&ep->conns);
    return ep;
}

void iotgw_hubmqtt_endpoint_free(iotgw_hubmqtt_endpoint *ep)
{
    if (!ep)
        return;
    static const iotgw_stream_handler none = {0};
    iotgw_hubmqtt *c;
    IOTGW_LIST_FOREACH (c, &ep->conns, iotgw_hubmqtt, node) {
        if (c->stream) {
            iotgw_stream_set_handler(c->stream, &none, NULL);
            iotgw_stream_close(c->stream, 0);
            c->stream = NULL;
        }
        conn_free(c);
    }
    if (ep->scratch)
        pn_message_free(ep->scratch);
    iotgw_log_limit_flush(&ep->before_connect, IOTGW_LOG_INFO, "MQTT endpoint");
    free(ep);
}

void iotgw_hubmqtt_endpoint_counts(const iotgw_hubmqtt_endpoint *ep, uint64_t open[2], uint64_t accepted[2])
{
    for (int i = 0; i < 2; i++)
        open[i] = ep->open[i], accepted[i] = ep->accepted[i];
}

void *iotgw_hubmqtt_endpoint_context(const iotgw_hubmqtt_endpoint *ep)
{
    return ep->opt.ctx;
}

void iotgw_hubmqtt_set_context(iotgw_hubmqtt *c, void *ctx)
{
    c->ctx = ctx;
}

void *iotgw_hubmqtt_context(const iotgw_hubmqtt *c)
{
    return c->ctx;
}

iotgw_hubmqtt_endpoint *iotgw_hubmqtt_endpoint_of(const iotgw_hubmqtt *c)
{
    return c->ep;
}

uint64_t iotgw_hubmqtt_serial(const iotgw_hubmqtt *c)
{
    return c->serial;
}

int iotgw_hubmqtt_is_ws(const iotgw_hubmqtt *c)
{
    return c->ws;
}

const char *iotgw_hubmqtt_peer(const iotgw_hubmqtt *c)
{
    return c->peer;
}

const char *iotgw_hubmqtt_name(const iotgw_hubmqtt *c)
{
    return who(c);
}

unsigned iotgw_hubmqtt_subscriptions(const iotgw_hubmqtt *c)
{
    return c->subs;
}

iotgw_log_limit *iotgw_hubmqtt_log_limit(iotgw_hubmqtt *c)
{
    return &c->log;
}
