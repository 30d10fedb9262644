/* MQTT 3.1.1 codec: round trips of every packet each role sends, the spec's byte vectors,
 * the incremental decoder under every input split, and each malformed packet's words. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/mqtt.h"
#include "tests/unit/check_main.h"

#define MAX_PACKET (1u << 20)

/* Check's passing assertions cost a message each (to the forked runner); the split tests
 * make millions, so the helpers they call fail loudly but pass silently. */
#define EXPECT(c)                                                                                            \
    do {                                                                                                     \
        if (!(c))                                                                                            \
            ck_abort_msg("%s:%d: assertion %s failed", __FILE__, __LINE__, #c);                              \
    } while (0)
#define EXPECT_EQ(a, b)                                                                                      \
    do {                                                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                  \
        if (a_ != b_)                                                                                        \
            ck_abort_msg("%s:%d: %s == %lld, %s == %lld", __FILE__, __LINE__, #a, a_, #b, b_);               \
    } while (0)

static iotgw_mqtt_bytes B(const char *s)
{
    return (iotgw_mqtt_bytes){(const uint8_t *)s, strlen(s)};
}

static iotgw_mqtt_role other(iotgw_mqtt_role r)
{
    return r == IOTGW_MQTT_SERVER ? IOTGW_MQTT_CLIENT : IOTGW_MQTT_SERVER;
}

static void assert_bytes_eq(iotgw_mqtt_bytes a, iotgw_mqtt_bytes b)
{
    EXPECT_EQ(a.len, b.len);
    EXPECT(a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static void assert_packets_eq(const iotgw_mqtt_packet *a, const iotgw_mqtt_packet *b)
{
    EXPECT_EQ(a->type, b->type);
    switch (a->type) {
    case IOTGW_MQTT_CONNECT: {
        const iotgw_mqtt_connect *x = &a->u.connect, *y = &b->u.connect;
        assert_bytes_eq(x->protocol_name, y->protocol_name);
        EXPECT_EQ(x->protocol_level, y->protocol_level);
        EXPECT_EQ(x->clean_session, y->clean_session);
        EXPECT_EQ(x->keep_alive_s, y->keep_alive_s);
        assert_bytes_eq(x->client_id, y->client_id);
        EXPECT_EQ(x->has_will, y->has_will);
        EXPECT_EQ(x->will_retain, y->will_retain);
        EXPECT_EQ(x->will_qos, y->will_qos);
        assert_bytes_eq(x->will_topic, y->will_topic);
        assert_bytes_eq(x->will_message, y->will_message);
        EXPECT_EQ(x->has_username, y->has_username);
        EXPECT_EQ(x->has_password, y->has_password);
        assert_bytes_eq(x->username, y->username);
        assert_bytes_eq(x->password, y->password);
        break;
    }
    case IOTGW_MQTT_CONNACK:
        EXPECT_EQ(a->u.connack.session_present, b->u.connack.session_present);
        EXPECT_EQ(a->u.connack.return_code, b->u.connack.return_code);
        break;
    case IOTGW_MQTT_PUBLISH:
        EXPECT_EQ(a->u.publish.qos, b->u.publish.qos);
        EXPECT_EQ(a->u.publish.dup, b->u.publish.dup);
        EXPECT_EQ(a->u.publish.retain, b->u.publish.retain);
        EXPECT_EQ(a->u.publish.packet_id, b->u.publish.packet_id);
        assert_bytes_eq(a->u.publish.topic, b->u.publish.topic);
        assert_bytes_eq(a->u.publish.payload, b->u.publish.payload);
        break;
    case IOTGW_MQTT_SUBSCRIBE:
    case IOTGW_MQTT_UNSUBSCRIBE:
        EXPECT_EQ(a->u.subscribe.packet_id, b->u.subscribe.packet_id);
        EXPECT_EQ(a->u.subscribe.count, b->u.subscribe.count);
        for (size_t i = 0; i < a->u.subscribe.count; i++) {
            assert_bytes_eq(a->u.subscribe.filter[i], b->u.subscribe.filter[i]);
            if (a->type == IOTGW_MQTT_SUBSCRIBE)
                EXPECT_EQ(a->u.subscribe.qos[i], b->u.subscribe.qos[i]);
        }
        break;
    case IOTGW_MQTT_SUBACK:
        EXPECT_EQ(a->u.suback.packet_id, b->u.suback.packet_id);
        EXPECT_EQ(a->u.suback.count, b->u.suback.count);
        EXPECT(memcmp(a->u.suback.code, b->u.suback.code, a->u.suback.count) == 0);
        break;
    case IOTGW_MQTT_PUBACK:
    case IOTGW_MQTT_PUBREC:
    case IOTGW_MQTT_PUBREL:
    case IOTGW_MQTT_PUBCOMP:
    case IOTGW_MQTT_UNSUBACK: EXPECT_EQ(a->u.packet_id, b->u.packet_id); break;
    default: break;
    }
}

static size_t encode_ok(iotgw_mqtt_role role, const iotgw_mqtt_packet *p, uint8_t *out, size_t cap)
{
    size_t n = 0;
    ck_assert_int_eq(iotgw_mqtt_encode(role, p, out, cap, &n), 0);
    ck_assert_uint_le(n, cap);
    return n;
}

/* ------------------------------------------------------------------ samples */

static const char IOTHUB_USER[] = "myhub.azure-devices.net/dev1/?api-version=2021-04-12";
static const char IOTHUB_SAS[] = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1"
                                 "&sig=c2lnbmF0dXJl%3D&se=1700000000";
static uint8_t payload_200[200], payload_300[300];

static iotgw_mqtt_packet iothub_connect(void)
{
    iotgw_mqtt_packet p = {.type = IOTGW_MQTT_CONNECT};
    iotgw_mqtt_connect *c = &p.u.connect;
    c->protocol_name = B("MQTT");
    c->protocol_level = IOTGW_MQTT_LEVEL_311;
    c->keep_alive_s = 240;
    c->client_id = B("dev1");
    c->has_username = c->has_password = 1;
    c->username = B(IOTHUB_USER);
    c->password = B(IOTHUB_SAS);
    return p;
}

static iotgw_mqtt_packet connect_with_will(void)
{
    iotgw_mqtt_packet p = {.type = IOTGW_MQTT_CONNECT};
    iotgw_mqtt_connect *c = &p.u.connect;
    static const uint8_t will_msg[] = {0x00, 0xff, 0xc0, 0x80}; /* binary: not UTF-8 */
    static const uint8_t pass[] = {'p', 0x00, 0xfe};
    c->protocol_name = B("MQTT");
    c->protocol_level = IOTGW_MQTT_LEVEL_311;
    c->clean_session = 1;
    c->keep_alive_s = 65535;
    c->client_id = B("d\xc3\xa9vice-\xf0\x9f\x98\x80"); /* é and an emoji */
    c->has_will = 1;
    c->will_qos = 2;
    c->will_retain = 1;
    c->will_topic = B("devices/dev1/status");
    c->will_message = (iotgw_mqtt_bytes){will_msg, sizeof will_msg};
    c->has_username = c->has_password = 1;
    c->username = B("user");
    c->password = (iotgw_mqtt_bytes){pass, sizeof pass};
    return p;
}

static iotgw_mqtt_packet publish(uint8_t qos, uint16_t id, const char *topic, const uint8_t *payload,
                                 size_t len)
{
    iotgw_mqtt_packet p = {.type = IOTGW_MQTT_PUBLISH};
    p.u.publish.qos = qos;
    p.u.publish.packet_id = id;
    p.u.publish.topic = B(topic);
    p.u.publish.payload = (iotgw_mqtt_bytes){payload, len};
    return p;
}

static iotgw_mqtt_packet with_id(iotgw_mqtt_type t, uint16_t id)
{
    iotgw_mqtt_packet p = {.type = t};
    p.u.packet_id = id;
    return p;
}

static iotgw_mqtt_packet subscribe(iotgw_mqtt_type t, uint16_t id, size_t n, const char *const *filters)
{
    iotgw_mqtt_packet p = {.type = t};
    p.u.subscribe.packet_id = id;
    p.u.subscribe.count = n;
    for (size_t i = 0; i < n; i++) {
        p.u.subscribe.filter[i] = B(filters[i]);
        p.u.subscribe.qos[i] = (uint8_t)(i % 3);
    }
    return p;
}

static const char *const IOTHUB_FILTERS[] = {"devices/dev1/messages/devicebound/#", "$iothub/twin/res/#",
                                             "$iothub/methods/POST/#", "a/+/b/+"};

/* What a client sends, in an order a session might. */
static size_t client_packets(iotgw_mqtt_packet *p)
{
    size_t n = 0;
    p[n++] = iothub_connect();
    p[n++] = connect_with_will();
    p[n++] = subscribe(IOTGW_MQTT_SUBSCRIBE, 1, 4, IOTHUB_FILTERS);
    p[n++] = publish(0, 0, "devices/dev1/messages/events/a=b", (const uint8_t *)"hello", 5);
    p[n++] = publish(1, 2, "devices/dev1/messages/events/", payload_200, sizeof payload_200);
    p[n] = publish(2, 65535, "$iothub/twin/PATCH/properties/reported/?$rid=1", NULL, 0);
    p[n].u.publish.dup = p[n].u.publish.retain = 1;
    n++;
    p[n++] = with_id(IOTGW_MQTT_PUBACK, 7);
    p[n++] = with_id(IOTGW_MQTT_PUBREC, 8);
    p[n++] = with_id(IOTGW_MQTT_PUBREL, 9);
    p[n++] = with_id(IOTGW_MQTT_PUBCOMP, 10);
    p[n++] = subscribe(IOTGW_MQTT_UNSUBSCRIBE, 11, 2, IOTHUB_FILTERS);
    p[n++] = (iotgw_mqtt_packet){.type = IOTGW_MQTT_PINGREQ};
    p[n++] = (iotgw_mqtt_packet){.type = IOTGW_MQTT_DISCONNECT};
    return n;
}

/* What a server sends. */
static size_t server_packets(iotgw_mqtt_packet *p)
{
    size_t n = 0;
    p[n] = (iotgw_mqtt_packet){.type = IOTGW_MQTT_CONNACK};
    p[n++].u.connack.session_present = 1;
    p[n] = (iotgw_mqtt_packet){.type = IOTGW_MQTT_CONNACK};
    p[n++].u.connack.return_code = IOTGW_MQTT_CONNACK_NOT_AUTHORIZED;
    p[n] = (iotgw_mqtt_packet){.type = IOTGW_MQTT_SUBACK};
    p[n].u.suback.packet_id = 1;
    p[n].u.suback.count = 4;
    memcpy(p[n++].u.suback.code, (uint8_t[]){0, 1, 2, IOTGW_MQTT_SUBACK_FAILURE}, 4);
    p[n++] =
        publish(1, 3, "devices/dev1/messages/devicebound/%24.mid=1&k=v", payload_300, sizeof payload_300);
    p[n++] = publish(0, 0, "$iothub/twin/res/200/?$rid=1", (const uint8_t *)"{}", 2);
    p[n++] = with_id(IOTGW_MQTT_PUBACK, 1);
    p[n++] = with_id(IOTGW_MQTT_PUBREC, 2);
    p[n++] = with_id(IOTGW_MQTT_PUBREL, 3);
    p[n++] = with_id(IOTGW_MQTT_PUBCOMP, 4);
    p[n++] = with_id(IOTGW_MQTT_UNSUBACK, 11);
    p[n++] = (iotgw_mqtt_packet){.type = IOTGW_MQTT_PINGRESP};
    return n;
}

static void fill_payloads(void)
{
    for (size_t i = 0; i < sizeof payload_200; i++)
        payload_200[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof payload_300; i++)
        payload_300[i] = (uint8_t)(255 - i);
}

/* ------------------------------------------------------------------ round trips */

/* Encode with `sender`, decode with the other role, one shot and incrementally. */
static void round_trip(iotgw_mqtt_role sender, const iotgw_mqtt_packet *p)
{
    uint8_t buf[1024];
    size_t n = encode_ok(sender, p, buf, sizeof buf);
    iotgw_mqtt_packet q;
    iotgw_diag diag = {0};
    ck_assert_msg(iotgw_mqtt_decode(other(sender), buf, n, &q, &diag) == 0, "%s: %s",
                  iotgw_mqtt_type_name(p->type), diag.text);
    assert_packets_eq(p, &q);

    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, other(sender), MAX_PACKET);
    size_t used;
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, buf, n, &used, &q, NULL), 0);
    ck_assert_uint_eq(used, n);
    assert_packets_eq(p, &q);
    ck_assert(iotgw_mqtt_decoder_idle(&d));
    iotgw_mqtt_decoder_free(&d);
}

START_TEST(every_client_packet_round_trips)
{
    iotgw_mqtt_packet p[16];
    size_t n = client_packets(p);
    for (size_t i = 0; i < n; i++)
        round_trip(IOTGW_MQTT_CLIENT, &p[i]);
}
END_TEST

START_TEST(every_server_packet_round_trips)
{
    iotgw_mqtt_packet p[16];
    size_t n = server_packets(p);
    for (size_t i = 0; i < n; i++)
        round_trip(IOTGW_MQTT_SERVER, &p[i]);
}
END_TEST

START_TEST(both_roles_send_publish_and_acks)
{
    iotgw_mqtt_packet p[] = {publish(1, 5, "a/b", (const uint8_t *)"x", 1), with_id(IOTGW_MQTT_PUBACK, 5),
                             with_id(IOTGW_MQTT_PUBREC, 5), with_id(IOTGW_MQTT_PUBREL, 5),
                             with_id(IOTGW_MQTT_PUBCOMP, 5)};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        round_trip(IOTGW_MQTT_CLIENT, &p[i]);
        round_trip(IOTGW_MQTT_SERVER, &p[i]);
    }
}
END_TEST

START_TEST(type_names)
{
    ck_assert_str_eq(iotgw_mqtt_type_name(IOTGW_MQTT_CONNECT), "CONNECT");
    ck_assert_str_eq(iotgw_mqtt_type_name(IOTGW_MQTT_UNSUBACK), "UNSUBACK");
    ck_assert_str_eq(iotgw_mqtt_type_name(IOTGW_MQTT_DISCONNECT), "DISCONNECT");
    ck_assert_str_eq(iotgw_mqtt_type_name(0), "reserved");
    ck_assert_str_eq(iotgw_mqtt_type_name(15), "reserved");
    ck_assert_str_eq(iotgw_mqtt_type_name(-1), "reserved");
    ck_assert_str_eq(iotgw_mqtt_type_name(99), "reserved");
}
END_TEST

/* ------------------------------------------------------------------ byte vectors */

struct vector {
    iotgw_mqtt_role sender;
    iotgw_mqtt_packet p;
    const char *bytes;
    size_t len;
};

/* The encoder writes exactly these bytes, and the other role decodes them to p. */
static void check_vector(const struct vector *v)
{
    uint8_t buf[256];
    size_t n = encode_ok(v->sender, &v->p, buf, sizeof buf);
    ck_assert_uint_eq(n, v->len);
    ck_assert_msg(memcmp(buf, v->bytes, n) == 0, "%s encodes differently", iotgw_mqtt_type_name(v->p.type));
    iotgw_mqtt_packet q;
    ck_assert_int_eq(iotgw_mqtt_decode(other(v->sender), (const uint8_t *)v->bytes, v->len, &q, NULL), 0);
    assert_packets_eq(&v->p, &q);
}

#define VEC(role, packet, lit)                                                                               \
    {                                                                                                        \
        role, packet, lit, sizeof lit - 1                                                                    \
    }

START_TEST(known_byte_vectors)
{
    /* What `mosquitto_pub -i dev1 -u user -P pass` sends: clean session, keep alive 60. */
    iotgw_mqtt_packet mosq = {.type = IOTGW_MQTT_CONNECT};
    mosq.u.connect.protocol_name = B("MQTT");
    mosq.u.connect.protocol_level = 4;
    mosq.u.connect.clean_session = 1;
    mosq.u.connect.keep_alive_s = 60;
    mosq.u.connect.client_id = B("dev1");
    mosq.u.connect.has_username = mosq.u.connect.has_password = 1;
    mosq.u.connect.username = B("user");
    mosq.u.connect.password = B("pass");
    /* The spec's examples: PUBLISH "a/b" id 10 (3.3.2.3), SUBSCRIBE "a/b" QoS 1 and
     * "c/d" QoS 2 (3.8.3.1), SUBACK 0, 2, failure (3.9.3), UNSUBSCRIBE (3.10.3). */
    iotgw_mqtt_packet pub = publish(1, 10, "a/b", (const uint8_t *)"hi", 2);
    iotgw_mqtt_packet sub = {.type = IOTGW_MQTT_SUBSCRIBE};
    sub.u.subscribe.packet_id = 10;
    sub.u.subscribe.count = 2;
    sub.u.subscribe.filter[0] = B("a/b");
    sub.u.subscribe.qos[0] = 1;
    sub.u.subscribe.filter[1] = B("c/d");
    sub.u.subscribe.qos[1] = 2;
    iotgw_mqtt_packet unsub = sub;
    unsub.type = IOTGW_MQTT_UNSUBSCRIBE;
    iotgw_mqtt_packet suback = {.type = IOTGW_MQTT_SUBACK};
    suback.u.suback.packet_id = 10;
    suback.u.suback.count = 3;
    memcpy(suback.u.suback.code, (uint8_t[]){0, 2, 0x80}, 3);
    iotgw_mqtt_packet connack = {.type = IOTGW_MQTT_CONNACK};
    connack.u.connack.session_present = 1;
    iotgw_mqtt_packet retained = publish(0, 0, "t", NULL, 0);
    retained.u.publish.retain = 1;

    const struct vector v[] = {
        VEC(IOTGW_MQTT_CLIENT, mosq,
            "\x10\x1c\x00\x04MQTT\x04\xc2\x00\x3c\x00\x04"
            "dev1\x00\x04user\x00\x04pass"),
        VEC(IOTGW_MQTT_CLIENT, pub,
            "\x32\x09\x00\x03"
            "a/b\x00\x0ahi"),
        VEC(IOTGW_MQTT_SERVER, retained, "\x31\x03\x00\x01t"),
        VEC(IOTGW_MQTT_CLIENT, sub,
            "\x82\x0e\x00\x0a\x00\x03"
            "a/b\x01\x00\x03"
            "c/d\x02"),
        VEC(IOTGW_MQTT_CLIENT, unsub,
            "\xa2\x0c\x00\x0a\x00\x03"
            "a/b\x00\x03"
            "c/d"),
        VEC(IOTGW_MQTT_SERVER, suback, "\x90\x05\x00\x0a\x00\x02\x80"),
        VEC(IOTGW_MQTT_SERVER, connack, "\x20\x02\x01\x00"),
        VEC(IOTGW_MQTT_CLIENT, with_id(IOTGW_MQTT_PUBACK, 0x1234), "\x40\x02\x12\x34"),
        VEC(IOTGW_MQTT_CLIENT, with_id(IOTGW_MQTT_PUBREC, 1), "\x50\x02\x00\x01"),
        VEC(IOTGW_MQTT_SERVER, with_id(IOTGW_MQTT_PUBREL, 1), "\x62\x02\x00\x01"),
        VEC(IOTGW_MQTT_CLIENT, with_id(IOTGW_MQTT_PUBCOMP, 1), "\x70\x02\x00\x01"),
        VEC(IOTGW_MQTT_SERVER, with_id(IOTGW_MQTT_UNSUBACK, 10), "\xb0\x02\x00\x0a"),
        VEC(IOTGW_MQTT_CLIENT, (iotgw_mqtt_packet){.type = IOTGW_MQTT_PINGREQ}, "\xc0\x00"),
        VEC(IOTGW_MQTT_SERVER, (iotgw_mqtt_packet){.type = IOTGW_MQTT_PINGRESP}, "\xd0\x00"),
        VEC(IOTGW_MQTT_CLIENT, (iotgw_mqtt_packet){.type = IOTGW_MQTT_DISCONNECT}, "\xe0\x00"),
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        check_vector(&v[i]);
}
END_TEST

START_TEST(remaining_length_takes_one_to_four_bytes)
{
    static const struct {
        size_t remaining;
        size_t n;
        uint8_t bytes[4];
    } cases[] = {
        {127, 1, {0x7f}},
        {128, 2, {0x80, 0x01}},
        {16383, 2, {0xff, 0x7f}},
        {16384, 3, {0x80, 0x80, 0x01}},
        {2097151, 3, {0xff, 0xff, 0x7f}},
        {2097152, 4, {0x80, 0x80, 0x80, 0x01}},
    };
    uint8_t *payload = calloc(1, 2097152);
    uint8_t *buf = malloc(2097152 + 5);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* topic "t" (3 bytes) and no packet identifier */
        iotgw_mqtt_packet p = publish(0, 0, "t", payload, cases[i].remaining - 3);
        size_t n = encode_ok(IOTGW_MQTT_CLIENT, &p, buf, 2097152 + 5);
        ck_assert_uint_eq(n, 1 + cases[i].n + cases[i].remaining);
        ck_assert(memcmp(buf + 1, cases[i].bytes, cases[i].n) == 0);
        iotgw_mqtt_packet q;
        ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, buf, n, &q, NULL), 0);
        assert_packets_eq(&p, &q);
        ck_assert_ptr_eq(q.u.publish.payload.data, buf + 1 + cases[i].n + 3);
        /* and the header alone, for a payload written after it */
        uint8_t hdr[IOTGW_MQTT_PUBLISH_HEADER_MAX(1)];
        size_t h = iotgw_mqtt_publish_header(hdr, &p.u.publish, p.u.publish.payload.len);
        ck_assert_uint_eq(h, 1 + cases[i].n + 3);
        ck_assert(memcmp(hdr, buf, h) == 0);
    }
    free(payload);
    free(buf);
}
END_TEST

START_TEST(non_minimal_remaining_length_is_accepted)
{
    /* PINGREQ with a remaining length of 0 in two bytes; PUBLISH of 5 in four */
    static const uint8_t ping[] = {0xc0, 0x80, 0x00};
    static const uint8_t pub[] = {0x30, 0x85, 0x80, 0x80, 0x00, 0x00, 0x01, 't', 'x', 'y'};
    iotgw_mqtt_packet q;
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, ping, sizeof ping, &q, NULL), 0);
    ck_assert_int_eq(q.type, IOTGW_MQTT_PINGREQ);
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, pub, sizeof pub, &q, NULL), 0);
    assert_bytes_eq(q.u.publish.topic, B("t"));
    assert_bytes_eq(q.u.publish.payload, B("xy"));
    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, IOTGW_MQTT_SERVER, 100);
    size_t used;
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, pub, sizeof pub, &used, &q, NULL), 0);
    ck_assert_uint_eq(used, sizeof pub);
    assert_bytes_eq(q.u.publish.payload, B("xy"));
    iotgw_mqtt_decoder_free(&d);
}
END_TEST

START_TEST(connect_of_another_level_returns_name_and_level)
{
    /* MQTT 5: properties after the keep alive; the server answers it with CONNACK 1 */
    static const uint8_t v5[] = {0x10, 0x11, 0, 4, 'M', 'Q', 'T', 'T', 5,  0x02,
                                 0,    60,   0, 0, 4,   'd', 'e', 'v', '1'};
    static const uint8_t v31[] = {0x10, 0x09, 0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 3};
    iotgw_mqtt_packet q;
    iotgw_diag diag;
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, v5, sizeof v5, &q, NULL), 0);
    assert_bytes_eq(q.u.connect.protocol_name, B("MQTT"));
    ck_assert_uint_eq(q.u.connect.protocol_level, 5);
    ck_assert_uint_eq(q.u.connect.client_id.len, 0);
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, v31, sizeof v31, &q, NULL), 0);
    assert_bytes_eq(q.u.connect.protocol_name, B("MQIsdp"));
    ck_assert_uint_eq(q.u.connect.protocol_level, 3);
    /* the level itself must be there */
    uint8_t cut[sizeof v31];
    memcpy(cut, v31, sizeof v31);
    cut[1] = 8;
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, cut, sizeof cut - 1, &q, &diag),
                     IOTGW_ERR_MQTT_MALFORMED);
    ck_assert_str_eq(diag.text, "CONNECT: protocol level runs past the packet");
}
END_TEST

/* ------------------------------------------------------------------ malformed packets */

struct bad {
    iotgw_mqtt_role role;
    uint8_t first;
    const char *body;
    size_t len;
    const char *diag;
};

#define BAD(role, first, body, diag)                                                                         \
    {                                                                                                        \
        role, first, body, sizeof body - 1, diag                                                             \
    }
#define S IOTGW_MQTT_SERVER
#define C IOTGW_MQTT_CLIENT
/* CONNECT up to its flags, and the keep alive after them */
#define CONN "\x00\x04MQTT\x04"
#define KA   "\x00\x3c"

static const struct bad bad_packets[] = {
    /* fixed header */
    BAD(S, 0x00, "", "reserved packet type 0"),
    BAD(C, 0xf0, "", "reserved packet type 15"),
    BAD(S, 0x90, "\x00\x01\x00", "a client does not send SUBACK"),
    BAD(S, 0x20, "\x00\x00", "a client does not send CONNACK"),
    BAD(S, 0xb0, "\x00\x01", "a client does not send UNSUBACK"),
    BAD(S, 0xd0, "", "a client does not send PINGRESP"),
    BAD(C, 0x10, CONN "\x02" KA "\x00\x00", "a server does not send CONNECT"),
    BAD(C, 0x82, "\x00\x01\x00\x01#\x00", "a server does not send SUBSCRIBE"),
    BAD(C, 0xa2, "\x00\x01\x00\x01#", "a server does not send UNSUBSCRIBE"),
    BAD(C, 0xc0, "", "a server does not send PINGREQ"),
    BAD(C, 0xe0, "", "a server does not send DISCONNECT"),
    BAD(S, 0x80, "\x00\x01\x00\x01#\x00", "SUBSCRIBE: reserved flags 0x0, must be 0x2"),
    BAD(S, 0xa0, "\x00\x01\x00\x01#", "UNSUBSCRIBE: reserved flags 0x0, must be 0x2"),
    BAD(S, 0x60, "\x00\x01", "PUBREL: reserved flags 0x0, must be 0x2"),
    BAD(C, 0x63, "\x00\x01", "PUBREL: reserved flags 0x3, must be 0x2"),
    BAD(S, 0x42, "\x00\x01", "PUBACK: reserved flags 0x2, must be 0x0"),
    BAD(S, 0x11, CONN "\x02" KA "\x00\x00", "CONNECT: reserved flags 0x1, must be 0x0"),
    BAD(S, 0xc8, "", "PINGREQ: reserved flags 0x8, must be 0x0"),
    BAD(S, 0xe1, "", "DISCONNECT: reserved flags 0x1, must be 0x0"),
    BAD(C, 0x24, "\x00\x00", "CONNACK: reserved flags 0x4, must be 0x0"),
    BAD(S, 0x36, "\x00\x01t\x00\x01", "PUBLISH: QoS 3"),
    BAD(C, 0x3f, "\x00\x01t\x00\x01", "PUBLISH: QoS 3"),
    BAD(S, 0x38, "\x00\x01t", "PUBLISH: DUP set on a QoS 0 message"),
    /* CONNECT */
    BAD(S, 0x10, CONN "\x03" KA "\x00\x00", "CONNECT: reserved connect flag is set"),
    BAD(S, 0x10, CONN "\x0a" KA "\x00\x00", "CONNECT: will QoS without a will"),
    BAD(S, 0x10, CONN "\x22" KA "\x00\x00", "CONNECT: will retain without a will"),
    BAD(S, 0x10, CONN "\x1e" KA "\x00\x00\x00\x01t\x00\x00", "CONNECT: will QoS 3"),
    BAD(S, 0x10, CONN "\x42" KA "\x00\x00\x00\x01p", "CONNECT: password without a user name"),
    BAD(S, 0x10, CONN "\x02" KA "\x00\x02\xc0\x80", "CONNECT: client identifier is not valid UTF-8"),
    BAD(S, 0x10, CONN "\x02" KA "\x00\x03\xed\xa0\x80", "CONNECT: client identifier is not valid UTF-8"),
    BAD(S, 0x10,
        CONN "\x02" KA "\x00\x02"
             "a\x00",
        "CONNECT: client identifier holds U+0000"),
    BAD(S, 0x10,
        CONN "\x02" KA "\x00\x05"
             "abc",
        "CONNECT: client identifier runs past the packet"),
    BAD(S, 0x10, CONN "\x02" KA "\x00", "CONNECT: client identifier runs past the packet"),
    BAD(S, 0x10, CONN "\x02\x00", "CONNECT: keep alive runs past the packet"),
    BAD(S, 0x10, CONN, "CONNECT: connect flags runs past the packet"),
    BAD(S, 0x10, "\x00\x04MQ", "CONNECT: protocol name runs past the packet"),
    BAD(S, 0x10, CONN "\x82" KA "\x00\x00\x00\x02\xff\xfe", "CONNECT: user name is not valid UTF-8"),
    BAD(S, 0x10, CONN "\x82" KA "\x00\x00\x00\x05user", "CONNECT: user name runs past the packet"),
    BAD(S, 0x10, CONN "\xc2" KA "\x00\x00\x00\x01u", "CONNECT: password runs past the packet"),
    BAD(S, 0x10, CONN "\x06" KA "\x00\x00\x00\x02\xf8\x88\x00\x00", "CONNECT: will topic is not valid UTF-8"),
    BAD(S, 0x10,
        CONN "\x06" KA "\x00\x00\x00\x03"
             "a/#\x00\x00",
        "CONNECT: will topic has a wildcard"),
    BAD(S, 0x10, CONN "\x06" KA "\x00\x00\x00\x00\x00\x00", "CONNECT: will topic is empty"),
    BAD(S, 0x10, CONN "\x06" KA "\x00\x00\x00\x01t", "CONNECT: will message runs past the packet"),
    BAD(S, 0x10, CONN "\x02" KA "\x00\x00x", "CONNECT: 1 byte(s) left over after the last field"),
    BAD(S, 0x10, CONN "\xc2" KA "\x00\x00\x00\x01u\x00\x01pxyz",
        "CONNECT: 3 byte(s) left over after the last field"),
    /* PUBLISH */
    BAD(S, 0x30, "\x00\x00", "PUBLISH: topic name is empty"),
    BAD(S, 0x30,
        "\x00\x03"
        "a/+",
        "PUBLISH: topic name has a wildcard"),
    BAD(C, 0x30, "\x00\x01#", "PUBLISH: topic name has a wildcard"),
    BAD(S, 0x30, "\x00\x02\xc3\x28", "PUBLISH: topic name is not valid UTF-8"),
    BAD(S, 0x30, "\x00\x02\xe2\x82", "PUBLISH: topic name is not valid UTF-8"),         /* cut short */
    BAD(S, 0x30, "\x00\x03\xe0\x80\xaf", "PUBLISH: topic name is not valid UTF-8"),     /* overlong '/' */
    BAD(S, 0x30, "\x00\x04\xf4\x90\x80\x80", "PUBLISH: topic name is not valid UTF-8"), /* > U+10FFFF */
    BAD(S, 0x30, "\x00\x03\xed\xbf\xbf", "PUBLISH: topic name is not valid UTF-8"),     /* surrogate */
    BAD(S, 0x30, "\x00\x01\x80", "PUBLISH: topic name is not valid UTF-8"),
    BAD(C, 0x30,
        "\x00\x03"
        "a\x00"
        "b",
        "PUBLISH: topic name holds U+0000"),
    BAD(S, 0x30,
        "\x00\x09"
        "a/b",
        "PUBLISH: topic name runs past the packet"),
    BAD(S, 0x30, "\x00", "PUBLISH: topic name runs past the packet"),
    BAD(S, 0x30, "", "PUBLISH: topic name runs past the packet"),
    BAD(S, 0x32, "\x00\x01t\x00\x00payload", "PUBLISH: packet identifier is 0"),
    BAD(C, 0x34, "\x00\x01t\x00\x00", "PUBLISH: packet identifier is 0"),
    BAD(S, 0x32, "\x00\x01t\x00", "PUBLISH: packet identifier runs past the packet"),
    /* SUBSCRIBE, UNSUBSCRIBE */
    BAD(S, 0x82, "\x00\x01", "SUBSCRIBE: no topic filters"),
    BAD(S, 0x82, "\x00\x00\x00\x01#\x00", "SUBSCRIBE: packet identifier is 0"),
    BAD(S, 0x82, "\x00", "SUBSCRIBE: packet identifier runs past the packet"),
    BAD(S, 0x82, "\x00\x01\x00\x00\x00", "SUBSCRIBE: topic filter 1 is empty"),
    BAD(S, 0x82, "\x00\x01\x00\x01#\x04", "SUBSCRIBE: requested QoS of topic filter 1 is 0x04, must be 0..2"),
    BAD(S, 0x82, "\x00\x01\x00\x01#\x00\x00\x01+\x03",
        "SUBSCRIBE: requested QoS of topic filter 2 is 0x03, must be 0..2"),
    BAD(S, 0x82, "\x00\x01\x00\x01#\x81", "SUBSCRIBE: requested QoS of topic filter 1 is 0x81, must be 0..2"),
    BAD(S, 0x82, "\x00\x01\x00\x01#", "SUBSCRIBE: requested QoS of topic filter 1 runs past the packet"),
    BAD(S, 0x82,
        "\x00\x01\x00\x05"
        "a/#/b\x00",
        "SUBSCRIBE: topic filter 1 has a misplaced wildcard"),
    BAD(S, 0x82,
        "\x00\x01\x00\x02"
        "a+\x00",
        "SUBSCRIBE: topic filter 1 has a misplaced wildcard"),
    BAD(S, 0x82, "\x00\x01\x00\x03+/#\x00\x00\x02#a\x00",
        "SUBSCRIBE: topic filter 2 has a misplaced wildcard"),
    BAD(S, 0x82, "\x00\x01\x00\x02\xc0\xaf\x00", "SUBSCRIBE: topic filter 1 is not valid UTF-8"),
    BAD(S, 0x82, "\x00\x01\x00\x04#", "SUBSCRIBE: topic filter 1 runs past the packet"),
    BAD(S, 0x82, "\x00\x01\x00\x01#\x00\x00", "SUBSCRIBE: topic filter 2 runs past the packet"),
    BAD(S, 0x82,
        "\x00\x01"
        "\x00\x01"
        "a\x00\x00\x01"
        "b\x00\x00\x01"
        "c\x00\x00\x01"
        "d\x00"
        "\x00\x01"
        "e\x00\x00\x01"
        "f\x00\x00\x01"
        "g\x00\x00\x01"
        "h\x00"
        "\x00\x01"
        "i\x00\x00\x01"
        "j\x00\x00\x01"
        "k\x00\x00\x01"
        "l\x00"
        "\x00\x01"
        "m\x00\x00\x01"
        "n\x00\x00\x01"
        "o\x00\x00\x01"
        "p\x00"
        "\x00\x01"
        "q\x00",
        "SUBSCRIBE: more than 16 topic filters"),
    BAD(S, 0xa2, "\x00\x01", "UNSUBSCRIBE: no topic filters"),
    BAD(S, 0xa2, "\x00\x00\x00\x01#", "UNSUBSCRIBE: packet identifier is 0"),
    BAD(S, 0xa2, "\x00\x01\x00\x01#\x00", "UNSUBSCRIBE: topic filter 2 runs past the packet"),
    BAD(S, 0xa2, "\x00\x01\x00\x00", "UNSUBSCRIBE: topic filter 1 is empty"),
    /* acknowledgements */
    BAD(C, 0x20, "\x00", "CONNACK: remaining length 1, must be 2"),
    BAD(C, 0x20, "\x02\x00", "CONNACK: reserved acknowledge flags 0x02"),
    BAD(C, 0x20, "\x00\x00\x00", "CONNACK: remaining length 3, must be 2"),
    BAD(S, 0x40, "\x00\x00", "PUBACK: packet identifier is 0"),
    BAD(C, 0x40, "\x00\x01\x00", "PUBACK: remaining length 3, must be 2"),
    BAD(S, 0x50, "\x00", "PUBREC: remaining length 1, must be 2"),
    BAD(S, 0x62, "\x00\x00", "PUBREL: packet identifier is 0"),
    BAD(C, 0x70, "", "PUBCOMP: remaining length 0, must be 2"),
    BAD(C, 0xb0, "\x00\x00", "UNSUBACK: packet identifier is 0"),
    BAD(C, 0x90, "\x00\x01", "SUBACK: no return codes"),
    BAD(C, 0x90, "\x00\x00\x00", "SUBACK: packet identifier is 0"),
    BAD(C, 0x90, "\x00\x01\x00\x01\x03", "SUBACK: return code 0x03 for topic filter 3"),
    BAD(C, 0x90, "\x00\x01\x81", "SUBACK: return code 0x81 for topic filter 1"),
    BAD(C, 0x90, "\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        "SUBACK: more than 16 return codes"),
    BAD(S, 0xc0, "\x00", "PINGREQ: remaining length 1, must be 0"),
    BAD(C, 0xd0, "\x00\x00", "PINGRESP: remaining length 2, must be 0"),
    BAD(S, 0xe0, "\x00", "DISCONNECT: remaining length 1, must be 0"),
};

/* The packet with its fixed header, into out (room for len + 5). */
static size_t with_header(uint8_t first, const char *body, size_t len, uint8_t *out)
{
    size_t n = 0;
    out[n++] = first;
    size_t v = len;
    do {
        out[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    memcpy(out + n, body, len);
    return n + len;
}

/* Same code and words from decode(), the decoder fed whole and the decoder fed byte by byte. */
static void assert_refused(iotgw_mqtt_role role, const uint8_t *pkt, size_t n, int code, const char *words)
{
    iotgw_mqtt_packet q;
    iotgw_diag diag = {0};
    int rc = iotgw_mqtt_decode(role, pkt, n, &q, &diag);
    ck_assert_msg(rc == code, "got %d (%s), wanted \"%s\"", rc, rc ? diag.text : "accepted", words);
    ck_assert_str_eq(diag.text, words);
    ck_assert_int_eq(diag.code, code);

    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, role, MAX_PACKET);
    size_t used;
    memset(&diag, 0, sizeof diag);
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, pkt, n, &used, &q, &diag), code);
    ck_assert_str_eq(diag.text, words);
    ck_assert(!iotgw_mqtt_decoder_idle(&d));
    iotgw_mqtt_decoder_free(&d);

    iotgw_mqtt_decoder_init(&d, role, MAX_PACKET);
    rc = IOTGW_ERR_AGAIN;
    memset(&diag, 0, sizeof diag);
    for (size_t i = 0; i < n && rc == IOTGW_ERR_AGAIN; i++)
        rc = iotgw_mqtt_decoder_next(&d, pkt + i, 1, &used, &q, &diag);
    ck_assert_int_eq(rc, code);
    ck_assert_str_eq(diag.text, words);
    iotgw_mqtt_decoder_free(&d);
}

START_TEST(malformed_packets_are_refused_with_their_words)
{
    const struct bad *b = &bad_packets[_i];
    uint8_t pkt[512];
    size_t n = with_header(b->first, b->body, b->len, pkt);
    assert_refused(b->role, pkt, n, IOTGW_ERR_MQTT_MALFORMED, b->diag);
}
END_TEST

START_TEST(binary_fields_take_any_bytes)
{
    /* password, will message and payload are binary: NUL, 0xff and broken UTF-8 are fine */
    static const char conn[] = CONN "\xc6" KA "\x00\x00"
                                    "\x00\x01t\x00\x03\x00\xff\xc0"
                                    "\x00\x01u\x00\x03\x00\xed\xa0";
    static const char pub[] = "\x00\x01t\x00\xff\xed\xa0\x80";
    uint8_t pkt[64];
    iotgw_mqtt_packet q;
    size_t n = with_header(0x10, conn, sizeof conn - 1, pkt);
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, pkt, n, &q, NULL), 0);
    ck_assert_uint_eq(q.u.connect.will_message.len, 3);
    ck_assert_uint_eq(q.u.connect.password.len, 3);
    ck_assert_uint_eq(q.u.connect.will_message.data[1], 0xff);
    n = with_header(0x30, pub, sizeof pub - 1, pkt);
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_CLIENT, pkt, n, &q, NULL), 0);
    ck_assert_uint_eq(q.u.publish.payload.len, 5);
    /* an empty client identifier is the server's to judge (CONNACK 2), not malformed */
    static const char anon[] = CONN "\x02" KA "\x00\x00";
    n = with_header(0x10, anon, sizeof anon - 1, pkt);
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, pkt, n, &q, NULL), 0);
    ck_assert_uint_eq(q.u.connect.client_id.len, 0);
    /* wildcards in their place, '$' topics, and the largest code point */
    static const char sub[] =
        "\x00\x01\x00\x01#\x00\x00\x01+\x01\x00\x05+/+/#\x02\x00\x04\xf4\x8f\xbf\xbf\x00";
    n = with_header(0x82, sub, sizeof sub - 1, pkt);
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, pkt, n, &q, NULL), 0);
    ck_assert_uint_eq(q.u.subscribe.count, 4);
    ck_assert_uint_eq(q.u.subscribe.qos[2], 2);
}
END_TEST

START_TEST(remaining_length_of_five_bytes_is_refused)
{
    static const uint8_t pkt[] = {0x30, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00};
    assert_refused(IOTGW_MQTT_SERVER, pkt, sizeof pkt, IOTGW_ERR_MQTT_MALFORMED,
                   "PUBLISH: remaining length longer than 4 bytes");
    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, IOTGW_MQTT_SERVER, MAX_PACKET);
    iotgw_mqtt_packet q;
    size_t used;
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, pkt, sizeof pkt, &used, &q, NULL), IOTGW_ERR_MQTT_MALFORMED);
    ck_assert_uint_eq(d.offset, 5); /* stopped at the fourth length byte, read no further */
    ck_assert_ptr_null(d.buf);
    iotgw_mqtt_decoder_free(&d);
}
END_TEST

START_TEST(decode_wants_exactly_one_packet)
{
    static const uint8_t pkt[] = {0x30, 0x05, 0x00, 0x01, 't', 'x', 'y', 0xc0};
    iotgw_mqtt_packet q;
    iotgw_diag diag;
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, pkt, 7, &q, NULL), 0);
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, pkt, 6, &q, &diag), IOTGW_ERR_MQTT_MALFORMED);
    ck_assert_str_eq(diag.text, "PUBLISH: packet of 7 bytes given 6 bytes");
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, pkt, 8, &q, &diag), IOTGW_ERR_MQTT_MALFORMED);
    ck_assert_str_eq(diag.text, "PUBLISH: packet of 7 bytes given 8 bytes");
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, pkt, 1, &q, &diag), IOTGW_ERR_MQTT_MALFORMED);
    ck_assert_str_eq(diag.text, "PUBLISH: packet ends inside its fixed header");
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, pkt, 0, &q, &diag), IOTGW_ERR_MQTT_MALFORMED);
    ck_assert_int_eq(iotgw_mqtt_decode(IOTGW_MQTT_SERVER, NULL, 3, &q, &diag), IOTGW_ERR_INVALID_ARG);
    ck_assert_int_eq(iotgw_mqtt_decode(0, pkt, 7, &q, &diag), IOTGW_ERR_INVALID_ARG);
}
END_TEST

/* ------------------------------------------------------------------ the incremental decoder */

struct stream {
    iotgw_mqtt_role role; /* the decoding role */
    uint8_t *buf;
    size_t len;
    size_t n;
    size_t start[16]; /* each packet's offset; start[n] == len */
    iotgw_mqtt_packet expect[16];
};

/* Concatenates what `sender` encodes of p[0..n) into s, for the other role to decode. */
static void make_stream(struct stream *s, iotgw_mqtt_role sender, const iotgw_mqtt_packet *p, size_t n)
{
    memset(s, 0, sizeof *s);
    s->role = other(sender);
    for (size_t i = 0; i < n; i++) {
        size_t need = 0;
        ck_assert_int_eq(iotgw_mqtt_encode(sender, &p[i], NULL, 0, &need), IOTGW_ERR_BUFFER_TOO_SMALL);
        s->buf = realloc(s->buf, s->len + need);
        s->start[i] = s->len;
        s->len += encode_ok(sender, &p[i], s->buf + s->len, need);
    }
    s->n = n;
    s->start[n] = s->len;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(iotgw_mqtt_decode(s->role, s->buf + s->start[i], s->start[i + 1] - s->start[i],
                                           &s->expect[i], NULL),
                         0);
        assert_packets_eq(&p[i], &s->expect[i]);
    }
}

/* Feed the stream in the pieces given by cuts[] and check that exactly its packets come out. */
static void feed_in_pieces(const struct stream *s, const size_t *cuts, size_t ncuts)
{
    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, s->role, MAX_PACKET);
    size_t got = 0, start = 0;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t end = c < ncuts ? cuts[c] : s->len;
        const uint8_t *in = s->buf + start;
        size_t len = end - start;
        while (1) {
            size_t used = 0;
            iotgw_mqtt_packet q;
            int rc = iotgw_mqtt_decoder_next(&d, in, len, &used, &q, NULL);
            EXPECT(used <= len);
            in += used;
            len -= used;
            if (rc == IOTGW_ERR_AGAIN) {
                EXPECT_EQ(len, 0);
                break;
            }
            EXPECT_EQ(rc, 0);
            EXPECT(got < s->n);
            assert_packets_eq(&s->expect[got], &q);
            got++;
        }
        start = end;
    }
    EXPECT_EQ(got, s->n);
    EXPECT(iotgw_mqtt_decoder_idle(&d));
    EXPECT_EQ(d.offset, s->len);
    iotgw_mqtt_decoder_free(&d);
}

/* A session's worth each way, small enough to try every pair of cuts; and a stream with
 * a PUBLISH of 20,000 bytes (a 3-byte remaining length) between small packets. */
static struct stream from_client, from_server, big;
static uint8_t *big_payload;

static void make_streams(void)
{
    iotgw_mqtt_packet p[16];
    fill_payloads();
    size_t n = client_packets(p);
    make_stream(&from_client, IOTGW_MQTT_CLIENT, p, n);
    n = server_packets(p);
    make_stream(&from_server, IOTGW_MQTT_SERVER, p, n);
    big_payload = malloc(20000);
    for (size_t i = 0; i < 20000; i++)
        big_payload[i] = (uint8_t)(i * 31 + 1);
    iotgw_mqtt_packet q[] = {(iotgw_mqtt_packet){.type = IOTGW_MQTT_PINGREQ},
                             publish(2, 77, "devices/dev1/messages/events/", big_payload, 20000),
                             publish(1, 78, "devices/dev1/messages/events/", payload_200, sizeof payload_200),
                             with_id(IOTGW_MQTT_PUBREL, 77)};
    make_stream(&big, IOTGW_MQTT_CLIENT, q, 4);
    ck_assert_uint_eq(big.buf[big.start[1] + 1] & 0x80, 0x80); /* 3-byte remaining length */
    ck_assert_uint_eq(big.buf[big.start[1] + 2] & 0x80, 0x80);
    ck_assert_uint_eq(big.buf[big.start[1] + 3] & 0x80, 0);
    ck_assert_uint_eq(from_client.buf[from_client.start[4] + 1] & 0x80, 0x80); /* 2-byte */
}

static void free_streams(void)
{
    free(from_client.buf);
    free(from_server.buf);
    free(big.buf);
    free(big_payload);
}

static void every_single_split(const struct stream *s)
{
    for (size_t cut = 0; cut <= s->len; cut++)
        feed_in_pieces(s, &cut, 1);
}

static void every_pair_of_splits(const struct stream *s)
{
    for (size_t a = 0; a <= s->len; a++)
        for (size_t b = a; b <= s->len; b++) {
            size_t cuts[2] = {a, b};
            feed_in_pieces(s, cuts, 2);
        }
}

static void one_byte_at_a_time(const struct stream *s)
{
    size_t *cuts = malloc(s->len * sizeof *cuts);
    for (size_t i = 0; i < s->len; i++)
        cuts[i] = i + 1;
    feed_in_pieces(s, cuts, s->len - 1);
    free(cuts);
}

START_TEST(client_stream_every_single_split)
{
    every_single_split(&from_client);
}
END_TEST

START_TEST(client_stream_every_pair_of_splits)
{
    every_pair_of_splits(&from_client);
}
END_TEST

START_TEST(server_stream_every_single_split)
{
    every_single_split(&from_server);
}
END_TEST

START_TEST(server_stream_every_pair_of_splits)
{
    every_pair_of_splits(&from_server);
}
END_TEST

START_TEST(streams_one_byte_at_a_time)
{
    one_byte_at_a_time(&from_client);
    one_byte_at_a_time(&from_server);
    one_byte_at_a_time(&big);
}
END_TEST

START_TEST(big_stream_every_single_split)
{
    every_single_split(&big);
}
END_TEST

/* Every pair of cuts among the offsets near each packet's start (its fixed header). */
START_TEST(big_stream_pairs_of_splits_near_headers)
{
    size_t at[128], n = 0;
    for (size_t i = 0; i <= big.n; i++)
        for (size_t k = 0; k < 12; k++) {
            size_t o = big.start[i] + k;
            if (o >= 3 && o - 3 <= big.len)
                at[n++] = o - 3;
        }
    for (size_t a = 0; a < n; a++)
        for (size_t b = a; b < n; b++) {
            size_t cuts[2] = {at[a], at[b]};
            if (cuts[0] <= cuts[1])
                feed_in_pieces(&big, cuts, 2);
        }
}
END_TEST

START_TEST(whole_packets_are_decoded_in_place)
{
    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, IOTGW_MQTT_SERVER, MAX_PACKET);
    const struct stream *s = &from_client;
    size_t i = 4; /* the PUBLISH with 200 bytes of payload */
    const uint8_t *pkt = s->buf + s->start[i];
    size_t n = s->start[i + 1] - s->start[i], used;
    iotgw_mqtt_packet q;
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, pkt, n, &used, &q, NULL), 0);
    ck_assert_uint_eq(used, n);
    ck_assert_ptr_eq(q.u.publish.payload.data, pkt + n - sizeof payload_200);
    ck_assert_ptr_null(d.buf);
    /* a fixed header in pieces, then the whole body: still no copy */
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, pkt, 2, &used, &q, NULL), IOTGW_ERR_AGAIN);
    ck_assert(!iotgw_mqtt_decoder_idle(&d));
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, pkt + 2, n - 2, &used, &q, NULL), 0);
    ck_assert_ptr_eq(q.u.publish.topic.data, pkt + 5);
    ck_assert_ptr_null(d.buf);
    ck_assert(iotgw_mqtt_decoder_idle(&d));
    iotgw_mqtt_decoder_free(&d);
}
END_TEST

START_TEST(too_large_is_refused_before_the_body_arrives)
{
    /* a PUBLISH of 300,000 bytes: remaining length 299,996 in three bytes */
    uint8_t hdr[4] = {0x30};
    size_t r = 299996;
    hdr[1] = (uint8_t)(0x80 | (r & 0x7f));
    hdr[2] = (uint8_t)(0x80 | ((r >> 7) & 0x7f));
    hdr[3] = (uint8_t)(r >> 14);
    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, IOTGW_MQTT_SERVER, 262144);
    iotgw_mqtt_packet q;
    iotgw_diag diag;
    size_t used;
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, hdr, 3, &used, &q, &diag), IOTGW_ERR_AGAIN);
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, hdr + 3, 1, &used, &q, &diag), IOTGW_ERR_MQTT_TOO_LARGE);
    ck_assert_str_eq(diag.text, "PUBLISH: packet of 300000 bytes over the limit of 262144");
    ck_assert_ptr_null(d.buf); /* nothing was allocated for it */
    /* the error is sticky: nothing more is read, even a good packet */
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, (const uint8_t *)"\xc0\x00", 2, &used, &q, NULL),
                     IOTGW_ERR_MQTT_TOO_LARGE);
    ck_assert_uint_eq(used, 0);
    ck_assert(!iotgw_mqtt_decoder_idle(&d));
    iotgw_mqtt_decoder_free(&d);

    /* exactly the maximum is fine, one more is not */
    static uint8_t pkt[100] = {0x30, 98, 0x00, 0x01, 't'};
    iotgw_mqtt_decoder_init(&d, IOTGW_MQTT_SERVER, 100);
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, pkt, 100, &used, &q, NULL), 0);
    ck_assert_uint_eq(q.u.publish.payload.len, 95);
    iotgw_mqtt_decoder_free(&d);
    iotgw_mqtt_decoder_init(&d, IOTGW_MQTT_SERVER, 99);
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, pkt, 2, &used, &q, &diag), IOTGW_ERR_MQTT_TOO_LARGE);
    ck_assert_str_eq(diag.text, "PUBLISH: packet of 100 bytes over the limit of 99");
    iotgw_mqtt_decoder_free(&d);
}
END_TEST

START_TEST(malformed_error_is_sticky)
{
    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, IOTGW_MQTT_SERVER, MAX_PACKET);
    iotgw_mqtt_packet q;
    iotgw_diag diag;
    size_t used;
    /* a PINGREQ, then a SUBACK (which a client never sends), then a PINGREQ */
    static const uint8_t in[] = {0xc0, 0x00, 0x90, 0x03, 0x00, 0x01, 0x00, 0xc0, 0x00};
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, in, sizeof in, &used, &q, NULL), 0);
    ck_assert_uint_eq(used, 2);
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, in + 2, sizeof in - 2, &used, &q, &diag),
                     IOTGW_ERR_MQTT_MALFORMED);
    ck_assert_str_eq(diag.text, "a client does not send SUBACK");
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, in + 7, 2, &used, &q, NULL), IOTGW_ERR_MQTT_MALFORMED);
    ck_assert_uint_eq(used, 0);
    ck_assert(!iotgw_mqtt_decoder_idle(&d));
    iotgw_mqtt_decoder_free(&d);

    /* a body error is sticky too, from a buffered packet as from one in place */
    iotgw_mqtt_decoder_init(&d, IOTGW_MQTT_SERVER, MAX_PACKET);
    static const uint8_t bad[] = {0x30, 0x03, 0x00, 0x01, '#'};
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, bad, 3, &used, &q, NULL), IOTGW_ERR_AGAIN);
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, bad + 3, 2, &used, &q, &diag), IOTGW_ERR_MQTT_MALFORMED);
    ck_assert_str_eq(diag.text, "PUBLISH: topic name has a wildcard");
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, in, 2, &used, &q, NULL), IOTGW_ERR_MQTT_MALFORMED);
    iotgw_mqtt_decoder_free(&d);
}
END_TEST

START_TEST(idle_only_between_packets)
{
    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, IOTGW_MQTT_CLIENT, MAX_PACKET);
    iotgw_mqtt_packet q;
    size_t used;
    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x00};
    ck_assert(iotgw_mqtt_decoder_idle(&d));
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, connack + i, 1, &used, &q, NULL), IOTGW_ERR_AGAIN);
        ck_assert(!iotgw_mqtt_decoder_idle(&d));
    }
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, connack + 3, 1, &used, &q, NULL), 0);
    ck_assert(iotgw_mqtt_decoder_idle(&d));
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, NULL, 0, &used, &q, NULL), IOTGW_ERR_AGAIN);
    ck_assert(iotgw_mqtt_decoder_idle(&d));
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, NULL, 1, &used, &q, NULL), IOTGW_ERR_INVALID_ARG);
    iotgw_mqtt_decoder_free(&d);
}
END_TEST

START_TEST(large_buffer_is_released_after_its_packet)
{
    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, IOTGW_MQTT_SERVER, MAX_PACKET);
    size_t body = 100000, used;
    uint8_t *buf = calloc(1, body + 5);
    buf[0] = 0x30;
    buf[1] = (uint8_t)(0x80 | (body & 0x7f));
    buf[2] = (uint8_t)(0x80 | ((body >> 7) & 0x7f));
    buf[3] = (uint8_t)(body >> 14);
    buf[5] = 1;
    buf[6] = 't';
    iotgw_mqtt_packet q;
    /* a peer that announces 100,000 bytes and sends 10 costs no more than a small buffer */
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, buf, 4 + 10, &used, &q, NULL), IOTGW_ERR_AGAIN);
    ck_assert_uint_le(d.buf_cap, 256);
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, buf + 14, body - 10, &used, &q, NULL), 0);
    ck_assert_uint_eq(q.u.publish.payload.len, body - 3);
    ck_assert_uint_le(d.buf_cap, body); /* grew no further than the packet */
    ck_assert_ptr_eq(q.u.publish.topic.data, d.buf + 2);
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, NULL, 0, &used, &q, NULL), IOTGW_ERR_AGAIN);
    ck_assert_ptr_null(d.buf);

    /* a small buffer is kept for the next split packet */
    static const uint8_t small[] = {0x30, 0x04, 0x00, 0x01, 't', 'x'};
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, small, 3, &used, &q, NULL), IOTGW_ERR_AGAIN);
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, small + 3, 3, &used, &q, NULL), 0);
    ck_assert_int_eq(iotgw_mqtt_decoder_next(&d, small, 6, &used, &q, NULL), 0);
    ck_assert_ptr_nonnull(d.buf);
    ck_assert_uint_le(d.buf_cap, 4096);
    iotgw_mqtt_decoder_free(&d);
    ck_assert_ptr_null(d.buf);
    free(buf);
}
END_TEST

/* ------------------------------------------------------------------ encoding */

START_TEST(encode_reports_the_size_it_needs)
{
    iotgw_mqtt_packet p = iothub_connect();
    uint8_t buf[256], copy[256];
    size_t need = 0, len = 0;
    ck_assert_int_eq(iotgw_mqtt_encode(IOTGW_MQTT_CLIENT, &p, NULL, 0, &need), IOTGW_ERR_BUFFER_TOO_SMALL);
    size_t body = 10 + 6 + 2 + strlen(IOTHUB_USER) + 2 + strlen(IOTHUB_SAS);
    ck_assert_uint_gt(body, 127);
    ck_assert_uint_eq(need, 1 + 2 + body);
    memset(buf, 0xaa, sizeof buf);
    memcpy(copy, buf, sizeof buf);
    ck_assert_int_eq(iotgw_mqtt_encode(IOTGW_MQTT_CLIENT, &p, buf, need - 1, &len),
                     IOTGW_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(len, need);
    ck_assert(memcmp(buf, copy, sizeof buf) == 0); /* nothing written */
    ck_assert_int_eq(iotgw_mqtt_encode(IOTGW_MQTT_CLIENT, &p, buf, need, &len), 0);
    ck_assert_uint_eq(len, need);
    ck_assert_uint_eq(buf[need], 0xaa); /* nothing past it */
    iotgw_mqtt_packet ping = {.type = IOTGW_MQTT_PINGRESP};
    ck_assert_int_eq(iotgw_mqtt_encode(IOTGW_MQTT_SERVER, &ping, buf, 1, &len), IOTGW_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(len, 2);
}
END_TEST

static void assert_invalid(iotgw_mqtt_role role, const iotgw_mqtt_packet *p)
{
    uint8_t buf[256];
    size_t len = 12345;
    ck_assert_int_eq(iotgw_mqtt_encode(role, p, buf, sizeof buf, &len), IOTGW_ERR_INVALID_ARG);
}

START_TEST(encode_refuses_what_mqtt_cannot_carry)
{
    /* packets the role never sends */
    iotgw_mqtt_packet p[16];
    size_t n = client_packets(p);
    for (size_t i = 0; i < n; i++)
        if (p[i].type != IOTGW_MQTT_PUBLISH &&
            (p[i].type < IOTGW_MQTT_PUBACK || p[i].type > IOTGW_MQTT_PUBCOMP))
            assert_invalid(IOTGW_MQTT_SERVER, &p[i]);
    n = server_packets(p);
    for (size_t i = 0; i < n; i++)
        if (p[i].type != IOTGW_MQTT_PUBLISH &&
            (p[i].type < IOTGW_MQTT_PUBACK || p[i].type > IOTGW_MQTT_PUBCOMP))
            assert_invalid(IOTGW_MQTT_CLIENT, &p[i]);
    assert_invalid(IOTGW_MQTT_CLIENT, &(iotgw_mqtt_packet){.type = 0});
    assert_invalid(IOTGW_MQTT_SERVER, &(iotgw_mqtt_packet){.type = 15});
    assert_invalid(0, &(iotgw_mqtt_packet){.type = IOTGW_MQTT_PINGREQ});
    size_t len;
    ck_assert_int_eq(iotgw_mqtt_encode(IOTGW_MQTT_CLIENT, NULL, NULL, 0, &len), IOTGW_ERR_INVALID_ARG);

    /* PUBLISH */
    iotgw_mqtt_packet pub = publish(3, 1, "t", NULL, 0);
    assert_invalid(IOTGW_MQTT_CLIENT, &pub);
    pub = publish(1, 0, "t", NULL, 0);
    assert_invalid(IOTGW_MQTT_CLIENT, &pub);
    pub = publish(0, 0, "t", NULL, 0);
    pub.u.publish.dup = 1;
    assert_invalid(IOTGW_MQTT_SERVER, &pub);
    pub = publish(0, 0, "a/+", NULL, 0);
    assert_invalid(IOTGW_MQTT_SERVER, &pub);
    pub = publish(0, 0, "", NULL, 0);
    assert_invalid(IOTGW_MQTT_CLIENT, &pub);
    pub = publish(0, 0, "\xc0\xaf", NULL, 0);
    assert_invalid(IOTGW_MQTT_CLIENT, &pub);
    pub = publish(0, 0, "t", NULL, 5); /* payload length without data */
    assert_invalid(IOTGW_MQTT_CLIENT, &pub);
    char *long_topic = malloc(65537);
    memset(long_topic, 'a', 65536);
    long_topic[65536] = '\0';
    pub = publish(0, 0, long_topic, NULL, 0);
    assert_invalid(IOTGW_MQTT_CLIENT, &pub);
    long_topic[65535] = '\0';
    pub = publish(0, 0, long_topic, NULL, 0);
    ck_assert_int_eq(iotgw_mqtt_encode(IOTGW_MQTT_CLIENT, &pub, NULL, 0, &len), IOTGW_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(len, 1 + 3 + 2 + 65535);
    free(long_topic);
    /* a packet over the largest remaining length (the payload is never read) */
    static const uint8_t any[1];
    pub = publish(0, 0, "t", any, IOTGW_MQTT_MAX_REMAINING - 3);
    ck_assert_int_eq(iotgw_mqtt_encode(IOTGW_MQTT_CLIENT, &pub, NULL, 0, &len), IOTGW_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(len, 5 + IOTGW_MQTT_MAX_REMAINING);
    pub = publish(0, 0, "t", any, IOTGW_MQTT_MAX_REMAINING - 2);
    assert_invalid(IOTGW_MQTT_CLIENT, &pub);
    pub = publish(0, 0, "t", any, SIZE_MAX);
    assert_invalid(IOTGW_MQTT_CLIENT, &pub);

    /* acknowledgements and subscriptions without a packet identifier */
    for (int t = IOTGW_MQTT_PUBACK; t <= IOTGW_MQTT_PUBCOMP; t++)
        assert_invalid(IOTGW_MQTT_CLIENT, &(iotgw_mqtt_packet){.type = t});
    assert_invalid(IOTGW_MQTT_SERVER, &(iotgw_mqtt_packet){.type = IOTGW_MQTT_UNSUBACK});
    iotgw_mqtt_packet sub = subscribe(IOTGW_MQTT_SUBSCRIBE, 0, 1, IOTHUB_FILTERS);
    assert_invalid(IOTGW_MQTT_CLIENT, &sub);
    sub = subscribe(IOTGW_MQTT_SUBSCRIBE, 1, 0, IOTHUB_FILTERS);
    assert_invalid(IOTGW_MQTT_CLIENT, &sub);
    sub = subscribe(IOTGW_MQTT_SUBSCRIBE, 1, 1, IOTHUB_FILTERS);
    sub.u.subscribe.count = IOTGW_MQTT_MAX_FILTERS + 1;
    assert_invalid(IOTGW_MQTT_CLIENT, &sub);
    sub = subscribe(IOTGW_MQTT_SUBSCRIBE, 1, 1, IOTHUB_FILTERS);
    sub.u.subscribe.qos[0] = 3;
    assert_invalid(IOTGW_MQTT_CLIENT, &sub);
    sub.type = IOTGW_MQTT_UNSUBSCRIBE; /* UNSUBSCRIBE has no QoS to be wrong */
    encode_ok(IOTGW_MQTT_CLIENT, &sub, (uint8_t[64]){0}, 64);
    static const char *const bad_filters[] = {"a/#/b", ""};
    sub = subscribe(IOTGW_MQTT_UNSUBSCRIBE, 1, 1, bad_filters);
    assert_invalid(IOTGW_MQTT_CLIENT, &sub);
    sub = subscribe(IOTGW_MQTT_SUBSCRIBE, 1, 1, bad_filters + 1);
    assert_invalid(IOTGW_MQTT_CLIENT, &sub);
    iotgw_mqtt_packet suback = {.type = IOTGW_MQTT_SUBACK};
    suback.u.suback.packet_id = 1;
    assert_invalid(IOTGW_MQTT_SERVER, &suback); /* no codes */
    suback.u.suback.count = 1;
    suback.u.suback.code[0] = 3;
    assert_invalid(IOTGW_MQTT_SERVER, &suback);

    /* CONNECT flags that 3.1.1 forbids */
    iotgw_mqtt_packet c = iothub_connect();
    c.u.connect.has_username = 0;
    assert_invalid(IOTGW_MQTT_CLIENT, &c);
    c = iothub_connect();
    c.u.connect.will_qos = 1;
    assert_invalid(IOTGW_MQTT_CLIENT, &c);
    c = connect_with_will();
    c.u.connect.will_qos = 3;
    assert_invalid(IOTGW_MQTT_CLIENT, &c);
    c = connect_with_will();
    c.u.connect.will_topic = B("a/#");
    assert_invalid(IOTGW_MQTT_CLIENT, &c);
    c = iothub_connect();
    c.u.connect.client_id = B("a\xed\xa0\x80");
    assert_invalid(IOTGW_MQTT_CLIENT, &c);
}
END_TEST

START_TEST(publish_header_goes_before_the_callers_payload)
{
    iotgw_mqtt_packet p[] = {
        publish(0, 0, "devices/dev1/messages/events/a=b", payload_200, sizeof payload_200),
        publish(2, 9, "t", payload_200, 3)};
    p[1].u.publish.dup = p[1].u.publish.retain = 1;
    for (size_t i = 0; i < 2; i++) {
        uint8_t hdr[IOTGW_MQTT_PUBLISH_HEADER_MAX(64)], whole[512];
        const iotgw_mqtt_publish *pub = &p[i].u.publish;
        size_t h = iotgw_mqtt_publish_header(hdr, pub, pub->payload.len);
        ck_assert_uint_le(h, IOTGW_MQTT_PUBLISH_HEADER_MAX(pub->topic.len));
        size_t n = encode_ok(IOTGW_MQTT_CLIENT, &p[i], whole, sizeof whole);
        ck_assert_uint_eq(h + pub->payload.len, n);
        ck_assert(memcmp(hdr, whole, h) == 0);
    }
    uint8_t hdr[IOTGW_MQTT_PUBLISH_HEADER_MAX(8)];
    iotgw_mqtt_packet bad = publish(0, 0, "a/#", NULL, 0);
    ck_assert_uint_eq(iotgw_mqtt_publish_header(hdr, &bad.u.publish, 0), 0);
    bad = publish(1, 0, "a", NULL, 0);
    ck_assert_uint_eq(iotgw_mqtt_publish_header(hdr, &bad.u.publish, 0), 0);
    bad = publish(3, 1, "a", NULL, 0);
    ck_assert_uint_eq(iotgw_mqtt_publish_header(hdr, &bad.u.publish, 0), 0);
    bad = publish(0, 0, "a", NULL, 0);
    ck_assert_uint_eq(iotgw_mqtt_publish_header(hdr, &bad.u.publish, IOTGW_MQTT_MAX_REMAINING - 3), 5 + 3);
    ck_assert_uint_eq(iotgw_mqtt_publish_header(hdr, &bad.u.publish, IOTGW_MQTT_MAX_REMAINING - 2), 0);
    ck_assert_uint_eq(iotgw_mqtt_publish_header(hdr, &bad.u.publish, SIZE_MAX), 0);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("mqtt");
    TCase *splits = tcase_create("splits");
    tcase_set_timeout(splits, 600);
    tcase_add_checked_fixture(splits, make_streams, free_streams);
    tcase_add_test(splits, client_stream_every_single_split);
    tcase_add_test(splits, client_stream_every_pair_of_splits);
    tcase_add_test(splits, server_stream_every_single_split);
    tcase_add_test(splits, server_stream_every_pair_of_splits);
    tcase_add_test(splits, streams_one_byte_at_a_time);
    tcase_add_test(splits, big_stream_every_single_split);
    tcase_add_test(splits, big_stream_pairs_of_splits_near_headers);
    tcase_add_test(splits, whole_packets_are_decoded_in_place);
    suite_add_tcase(s, splits);
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, fill_payloads, NULL);
    tcase_add_test(tc, type_names);
    tcase_add_test(tc, every_client_packet_round_trips);
    tcase_add_test(tc, every_server_packet_round_trips);
    tcase_add_test(tc, both_roles_send_publish_and_acks);
    tcase_add_test(tc, known_byte_vectors);
    tcase_add_test(tc, remaining_length_takes_one_to_four_bytes);
    tcase_add_test(tc, non_minimal_remaining_length_is_accepted);
    tcase_add_test(tc, connect_of_another_level_returns_name_and_level);
    tcase_add_loop_test(tc, malformed_packets_are_refused_with_their_words, 0,
                        (int)(sizeof bad_packets / sizeof bad_packets[0]));
    tcase_add_test(tc, binary_fields_take_any_bytes);
    tcase_add_test(tc, remaining_length_of_five_bytes_is_refused);
    tcase_add_test(tc, decode_wants_exactly_one_packet);
    tcase_add_test(tc, too_large_is_refused_before_the_body_arrives);
    tcase_add_test(tc, malformed_error_is_sticky);
    tcase_add_test(tc, idle_only_between_packets);
    tcase_add_test(tc, large_buffer_is_released_after_its_packet);
    tcase_add_test(tc, encode_reports_the_size_it_needs);
    tcase_add_test(tc, encode_refuses_what_mqtt_cannot_carry);
    tcase_add_test(tc, publish_header_goes_before_the_callers_payload);
    suite_add_tcase(s, tc);
    return s;
}
