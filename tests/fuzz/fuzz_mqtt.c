/*
 * MQTT decoder fuzz target: arbitrary bytes as a connection's TCP stream, decoded by a
 * server (a client's packets) or a client (a server's), as the first byte chooses, whole
 * and cut into pieces at offsets chosen by the input itself.
 * Properties: feeding the stream whole and in pieces yields the same packets and the same
 * outcome (code and words); every packet decoded is one the other role encodes, and
 * decoding what it encodes gives the same fields back; a PUBLISH's header from
 * iotgw_mqtt_publish_header() is the encoder's. IoT Hub's layer above the packets
 * (codecs/iothub_mqtt.h) reads what a server would: each CONNECT's user name, each
 * PUBLISH's topic and property bag, each SUBSCRIBE's filters; a bag it decodes formats
 * into one that decodes to the same properties.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/iothub_mqtt.h"
#include "codecs/mqtt.h"

#define MAX_PACKET  4096
#define MAX_PACKETS 64

struct outcome {
    size_t n;
    uint32_t sum[MAX_PACKETS];
    int rc;
    iotgw_diag diag;
};

static uint32_t mix(uint32_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

static uint32_t mix_int(uint32_t h, uint32_t v)
{
    return mix(h, &v, sizeof v);
}

static uint32_t mix_bytes(uint32_t h, iotgw_mqtt_bytes b)
{
    h = mix_int(h, (uint32_t)b.len);
    return b.len ? mix(h, b.data, b.len) : h;
}

/* A checksum of every field of the packet that its type uses. */
static uint32_t packet_sum(const iotgw_mqtt_packet *p)
{
    uint32_t h = mix_int(2166136261u, p->type);
    switch (p->type) {
    case IOTGW_MQTT_CONNECT: {
        const iotgw_mqtt_connect *c = &p->u.connect;
        h = mix_bytes(h, c->protocol_name);
        h = mix_int(h, c->protocol_level);
        h = mix_int(h, (uint32_t)c->clean_session);
        h = mix_int(h, c->keep_alive_s);
        h = mix_bytes(h, c->client_id);
        h = mix_int(h, (uint32_t)(c->has_will | c->will_retain << 1 | c->will_qos << 2));
        h = mix_bytes(h, c->will_topic);
        h = mix_bytes(h, c->will_message);
        h = mix_int(h, (uint32_t)(c->has_username | c->has_password << 1));
        h = mix_bytes(h, c->username);
        return mix_bytes(h, c->password);
    }
    case IOTGW_MQTT_CONNACK:
        return mix_int(h, (uint32_t)(p->u.connack.session_present << 8 | p->u.connack.return_code));
    case IOTGW_MQTT_PUBLISH: {
        const iotgw_mqtt_publish *pub = &p->u.publish;
        h = mix_int(h, (uint32_t)(pub->qos | pub->dup << 2 | pub->retain << 3));
        h = mix_int(h, pub->packet_id);
        h = mix_bytes(h, pub->topic);
        return mix_bytes(h, pub->payload);
    }
    case IOTGW_MQTT_SUBSCRIBE:
    case IOTGW_MQTT_UNSUBSCRIBE:
        h = mix_int(h, p->u.subscribe.packet_id);
        h = mix_int(h, (uint32_t)p->u.subscribe.count);
        for (size_t i = 0; i < p->u.subscribe.count; i++) {
            h = mix_bytes(h, p->u.subscribe.filter[i]);
            if (p->type == IOTGW_MQTT_SUBSCRIBE)
                h = mix_int(h, p->u.subscribe.qos[i]);
        }
        return h;
    case IOTGW_MQTT_SUBACK:
        h = mix_int(h, p->u.suback.packet_id);
        return mix(h, p->u.suback.code, p->u.suback.count);
    case IOTGW_MQTT_PUBACK:
    case IOTGW_MQTT_PUBREC:
    case IOTGW_MQTT_PUBREL:
    case IOTGW_MQTT_PUBCOMP:
    case IOTGW_MQTT_UNSUBACK: return mix_int(h, p->u.packet_id);
    default: return h;
    }
}

static iotgw_mqtt_role other(iotgw_mqtt_role r)
{
    return r == IOTGW_MQTT_SERVER ? IOTGW_MQTT_CLIENT : IOTGW_MQTT_SERVER;
}

/* What the decoder accepts the other role encodes, and it decodes back the same. */
static void re_encode(iotgw_mqtt_role role, const iotgw_mqtt_packet *p, uint32_t sum)
{
    /* a CONNECT of another level grows by its flags, keep alive and client identifier */
    static uint8_t buf[MAX_PACKET + 16];
    size_t n;
    if (iotgw_mqtt_encode(other(role), p, buf, sizeof buf, &n) != IOTGW_OK)
        __builtin_trap();
    iotgw_mqtt_packet q;
    if (iotgw_mqtt_decode(role, buf, n, &q, NULL) != IOTGW_OK || packet_sum(&q) != sum)
        __builtin_trap();
    if (p->type == IOTGW_MQTT_PUBLISH) {
        uint8_t hdr[IOTGW_MQTT_PUBLISH_HEADER_MAX(MAX_PACKET)];
        size_t h = iotgw_mqtt_publish_header(hdr, &p->u.publish, p->u.publish.payload.len);
        if (h == 0 || h + p->u.publish.payload.len != n || memcmp(hdr, buf, h) != 0)
            __builtin_trap();
    }
}

static void bag_round_trip(const uint8_t *bag, size_t len)
{
    static iotgw_mqtt_props a, b;
    if (iotgw_mqtt_props_parse(bag, len, &a, NULL) != IOTGW_OK)
        return;
    char *text = iotgw_mqtt_props_format(a.item, a.count);
    if (text) {
        if (iotgw_mqtt_props_parse((const uint8_t *)text, strlen(text), &b, NULL) != IOTGW_OK ||
            b.count != a.count)
            __builtin_trap();
        for (size_t i = 0; i < a.count; i++)
            if (strcmp(a.item[i].name, b.item[i].name) || strcmp(a.item[i].value, b.item[i].value))
                __builtin_trap();
        iotgw_mqtt_props_free(&b);
        free(text);
    }
    iotgw_mqtt_props_free(&a);
}

/* What a server reads of a client's packet above MQTT. */
static void iothub_layer(const iotgw_mqtt_packet *p)
{
    iotgw_diag diag;
    switch (p->type) {
    case IOTGW_MQTT_CONNECT: {
        iotgw_iothub_username u;
        if (p->u.connect.has_username)
            iotgw_iothub_username_parse(p->u.connect.username.data, p->u.connect.username.len, &u, &diag);
        break;
    }
    case IOTGW_MQTT_PUBLISH: {
        iotgw_iothub_publish_topic t;
        if (iotgw_iothub_publish_topic_parse(p->u.publish.topic.data, p->u.publish.topic.len, &t, &diag) ==
                IOTGW_OK &&
            t.kind == IOTGW_IOTHUB_TELEMETRY)
            bag_round_trip(t.bag.data, t.bag.len);
        bag_round_trip(p->u.publish.payload.data, p->u.publish.payload.len); /* any bytes as a bag */
        break;
    }
    case IOTGW_MQTT_SUBSCRIBE:
    case IOTGW_MQTT_UNSUBSCRIBE:
        for (size_t i = 0; i < p->u.subscribe.count; i++) {
            iotgw_iothub_filter_kind kind;
            iotgw_mqtt_bytes device;
            iotgw_iothub_filter_parse(p->u.subscribe.filter[i].data, p->u.subscribe.filter[i].len, &kind,
                                      &device, &diag);
        }
        break;
    default: break;
    }
}

/* Pieces of 1..max bytes, their sizes drawn from the seed; max 0: the whole input. */
static void feed(iotgw_mqtt_role role, const uint8_t *data, size_t size, size_t max, uint32_t seed,
                 struct outcome *o)
{
    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, role, MAX_PACKET);
    memset(o, 0, sizeof *o);
    int rc = IOTGW_ERR_AGAIN;
    for (size_t off = 0; off < size && (rc == IOTGW_OK || rc == IOTGW_ERR_AGAIN);) {
        size_t piece = size - off;
        if (max) {
            seed = seed * 1103515245u + 12345u;
            if (piece > (seed >> 16) % max + 1)
                piece = (seed >> 16) % max + 1;
        }
        const uint8_t *in = data + off;
        off += piece;
        while (1) {
            iotgw_mqtt_packet p;
            size_t used;
            rc = iotgw_mqtt_decoder_next(&d, in, piece, &used, &p, &o->diag);
            if (used > piece || (rc == IOTGW_ERR_AGAIN && used != piece))
                abort();
            in += used;
            piece -= used;
            if (rc != IOTGW_OK)
                break;
            uint32_t sum = packet_sum(&p);
            if (o->n < MAX_PACKETS)
                o->sum[o->n] = sum;
            o->n++;
            re_encode(role, &p, sum);
            if (role == IOTGW_MQTT_SERVER && !max)
                iothub_layer(&p);
        }
    }
    /* the stream ended between packets, inside one, or the decoder failed */
    if (rc == IOTGW_OK || rc == IOTGW_ERR_AGAIN)
        rc = iotgw_mqtt_decoder_idle(&d) ? IOTGW_OK : IOTGW_ERR_AGAIN;
    else if (iotgw_mqtt_decoder_idle(&d) || d.error != rc)
        abort();
    o->rc = rc;
    iotgw_mqtt_decoder_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    iotgw_mqtt_role role = data[0] & 1 ? IOTGW_MQTT_CLIENT : IOTGW_MQTT_SERVER;
    static struct outcome whole, pieces, bytes;
    feed(role, data + 1, size - 1, 0, 0, &whole);
    feed(role, data + 1, size - 1, (size_t)(data[0] >> 1) % 61 + 2, data[0], &pieces);
    feed(role, data + 1, size - 1, 1, 0, &bytes);
    const struct outcome *o[2] = {&pieces, &bytes};
    for (int k = 0; k < 2; k++) {
        if (whole.rc != o[k]->rc || whole.n != o[k]->n || strcmp(whole.diag.text, o[k]->diag.text) != 0)
            abort();
        for (size_t i = 0; i < whole.n && i < MAX_PACKETS; i++)
            if (whole.sum[i] != o[k]->sum[i])
                abort();
    }
    return 0;
}
