/* Parcel <-> IoT Hub message, both encodings, checked on the encoded AMQP bytes too. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <proton/codec.h>
#include <proton/message.h>

#include "codecs/hubmsg.h"
#include "tests/unit/check_main.h"
#include "tests/unit/sample.h"

static const char *app_property(pn_message_t *m, const char *key)
{
    static char value[256];
    pn_data_t *p = pn_message_properties(m);
    pn_data_rewind(p);
    if (!pn_data_next(p) || pn_data_type(p) != PN_MAP)
        return NULL;
    pn_data_enter(p);
    while (pn_data_next(p)) {
        pn_bytes_t k = pn_data_get_string(p);
        pn_data_next(p);
        if (k.size == strlen(key) && !memcmp(k.start, key, k.size)) {
            pn_bytes_t v = pn_data_get_string(p);
            snprintf(value, sizeof value, "%.*s", (int)v.size, v.start);
            pn_data_exit(p);
            return value;
        }
    }
    pn_data_exit(p);
    return NULL;
}

/* Encode as AMQP and report whether the bytes hold a data section (descriptor 0x75). */
static int encoded_has_data_section(pn_message_t *m)
{
    char buf[4096];
    size_t len = sizeof buf;
    ck_assert_int_eq(pn_message_encode(m, buf, &len), 0);
    static const char data_section[] = {0x00, 0x53, 0x75};
    static const char value_section[] = {0x00, 0x53, 0x77};
    int data = memmem(buf, len, data_section, 3) != NULL;
    ck_assert(memmem(buf, len, value_section, 3) == NULL);
    return data;
}

static pn_bytes_t body_bytes(pn_message_t *m)
{
    pn_data_t *b = pn_message_body(m);
    pn_data_rewind(b);
    ck_assert(pn_data_next(b));
    ck_assert_int_eq(pn_data_type(b), PN_BINARY);
    return pn_data_get_binary(b);
}

START_TEST(protobuf_encoding)
{
    Iotgw__Parcel *p = sample_alarm_parcel(1);
    pn_message_t *m = pn_message();
    iotgw_hubmsg_options o = {
        .encoding = IOTGW_HUBMSG_PROTOBUF, .message_id = "msg-1", .creation_time_ms = 1763800000123};
    ck_assert_int_eq(iotgw_hubmsg_from_parcel(p, &o, m, NULL), 0);
    ck_assert_str_eq(pn_message_get_content_type(m), "application/x-protobuf");
    ck_assert_ptr_null(pn_message_get_content_encoding(m));
    pn_atom_t id = pn_message_get_id(m);
    ck_assert_int_eq(id.type, PN_STRING);
    ck_assert_int_eq(strncmp(id.u.as_bytes.start, "msg-1", id.u.as_bytes.size), 0);
    ck_assert(pn_message_get_creation_time(m) == 1763800000123);
    ck_assert_str_eq(app_property(m, "parcelType"), "iotgw.AlarmStatus");
    ck_assert_str_eq(app_property(m, "parcelSource"), "alarm-agent-1");
    ck_assert_str_eq(app_property(m, "parcelDestination"), "alarm-monitor-1");
    ck_assert(encoded_has_data_section(m));

    size_t len;
    uint8_t *expect = sample_pack(&p->base, &len);
    pn_bytes_t b = body_bytes(m);
    ck_assert_uint_eq(b.size, len);
    ck_assert(memcmp(b.start, expect, len) == 0);
    free(expect);

    Iotgw__Parcel *back = NULL;
    ck_assert_int_eq(iotgw_hubmsg_to_parcel(m, NULL, &back, NULL), 0);
    ck_assert_str_eq(back->type, "iotgw.AlarmStatus");
    ck_assert_uint_eq(back->content.len, p->content.len);
    iotgw__parcel__free_unpacked(back, NULL);
    iotgw__parcel__free_unpacked(p, NULL);
    pn_message_free(m);
}
END_TEST

START_TEST(json_encoding_for_hub_routing)
{
    Iotgw__Parcel *p = sample_alarm_parcel(0);
    pn_message_t *m = pn_message();
    iotgw_hubmsg_options o = {.encoding = IOTGW_HUBMSG_JSON, .types = iotgw_types_builtin()};
    ck_assert_int_eq(iotgw_hubmsg_from_parcel(p, &o, m, NULL), 0);
    ck_assert_str_eq(pn_message_get_content_type(m), "application/json");
    ck_assert_str_eq(pn_message_get_content_encoding(m), "utf-8");
    ck_assert(encoded_has_data_section(m));
    pn_bytes_t b = body_bytes(m);
    const char *expect =
        "{\"source\":{\"name\":\"alarm-agent-1\",\"localId\":\"zone-3\",\"domainAgent\":\"site-agent\","
        "\"domain\":\"plant-north\"},"
        "\"destination\":{\"name\":\"alarm-monitor-1\",\"localId\":\"panel-1\",\"domainAgent\":\"site-"
        "agent\",\"domain\":\"plant-north\"},"
        "\"type\":\"iotgw.AlarmStatus\",\"content\":{\"timeUtc\":\"12:34:56\",\"dateUtc\":\"2026-11-22\"}}";
    ck_assert_uint_eq(b.size, strlen(expect));
    ck_assert(memcmp(b.start, expect, b.size) == 0);

    Iotgw__Parcel *back = NULL;
    ck_assert_int_eq(iotgw_hubmsg_to_parcel(m, iotgw_types_builtin(), &back, NULL), 0);
    ck_assert_uint_eq(back->content.len, p->content.len);
    ck_assert(memcmp(back->content.data, p->content.data, p->content.len) == 0);
    iotgw__parcel__free_unpacked(back, NULL);
    iotgw__parcel__free_unpacked(p, NULL);
    pn_message_free(m);
}
END_TEST

START_TEST(empty_names_are_not_promoted)
{
    Iotgw__Parcel p;
    iotgw__parcel__init(&p);
    pn_message_t *m = pn_message();
    ck_assert_int_eq(iotgw_hubmsg_from_parcel(&p, NULL, m, NULL), 0);
    ck_assert_ptr_null(app_property(m, "parcelType"));
    ck_assert_ptr_null(app_property(m, "parcelSource"));
    ck_assert(encoded_has_data_section(m)); /* even an empty body is a data section */
    pn_message_free(m);
}
END_TEST

START_TEST(reading_tolerates_charset_and_missing_content_type)
{
    Iotgw__Parcel *p = sample_alarm_parcel(1);
    pn_message_t *m = pn_message();
    iotgw_hubmsg_options o = {.encoding = IOTGW_HUBMSG_JSON, .types = iotgw_types_builtin()};
    ck_assert_int_eq(iotgw_hubmsg_from_parcel(p, &o, m, NULL), 0);
    pn_message_set_content_type(m, "application/json; charset=utf-8");
    Iotgw__Parcel *back = NULL;
    ck_assert_int_eq(iotgw_hubmsg_to_parcel(m, iotgw_types_builtin(), &back, NULL), 0);
    iotgw__parcel__free_unpacked(back, NULL);

    ck_assert_int_eq(iotgw_hubmsg_from_parcel(p, NULL, m, NULL), 0);
    pn_message_set_content_type(m, NULL);
    ck_assert_int_eq(iotgw_hubmsg_to_parcel(m, NULL, &back, NULL), 0);
    iotgw__parcel__free_unpacked(back, NULL);
    iotgw__parcel__free_unpacked(p, NULL);
    pn_message_free(m);
}
END_TEST

START_TEST(bad_hub_messages_get_specific_errors)
{
    pn_message_t *m = pn_message();
    iotgw_diag d;
    Iotgw__Parcel *out = NULL;

    /* no body */
    ck_assert_int_eq(iotgw_hubmsg_to_parcel(m, NULL, &out, &d), IOTGW_ERR_HUBMSG_BODY);
    /* body is a number */
    pn_data_put_int(pn_message_body(m), 5);
    ck_assert_int_eq(iotgw_hubmsg_to_parcel(m, NULL, &out, &d), IOTGW_ERR_HUBMSG_BODY);
    ck_assert_str_eq(d.text, "hub message body is not binary data");

    /* unsupported content-type */
    pn_message_clear(m);
    pn_data_put_binary(pn_message_body(m), pn_bytes(3, "abc"));
    pn_message_set_content_type(m, "text/plain");
    ck_assert_int_eq(iotgw_hubmsg_to_parcel(m, NULL, &out, &d), IOTGW_ERR_HUBMSG_CONTENT_TYPE);
    ck_assert_str_eq(
        d.text,
        "hub message content-type 'text/plain' is neither application/x-protobuf nor application/json");
    /* a prefix of a supported type is not that type */
    pn_message_set_content_type(m, "application/jsonx");
    ck_assert_int_eq(iotgw_hubmsg_to_parcel(m, NULL, &out, &d), IOTGW_ERR_HUBMSG_CONTENT_TYPE);

    /* protobuf that is not a Parcel */
    pn_message_set_content_type(m, "application/x-protobuf");
    pn_data_clear(pn_message_body(m));
    pn_data_put_binary(pn_message_body(m), pn_bytes(3, "\x0a\x09x"));
    ck_assert_int_eq(iotgw_hubmsg_to_parcel(m, NULL, &out, &d), IOTGW_ERR_HUBMSG_PAYLOAD);
    ck_assert_str_eq(d.text, "hub message body (3 bytes) is not a valid Parcel");

    /* JSON that does not parse */
    pn_message_set_content_type(m, "application/json");
    pn_data_clear(pn_message_body(m));
    pn_data_put_binary(pn_message_body(m), pn_bytes(6, "{\"type"));
    ck_assert_int_eq(iotgw_hubmsg_to_parcel(m, NULL, &out, &d), IOTGW_ERR_JSON_SYNTAX);
    /* JSON that is not a parcel */
    pn_data_clear(pn_message_body(m));
    pn_data_put_binary(pn_message_body(m), pn_bytes(14, "{\"colour\":\"x\"}"));
    ck_assert_int_eq(iotgw_hubmsg_to_parcel(m, NULL, &out, &d), IOTGW_ERR_JSON_UNKNOWN_FIELD);
    ck_assert_str_eq(d.text, "field colour: iotgw.Parcel has no such field");
    ck_assert_ptr_null(out);
    pn_message_free(m);
}
END_TEST

START_TEST(oversize_parcels_are_refused_before_sending)
{
    Iotgw__Parcel p;
    iotgw__parcel__init(&p);
    p.content.len = IOTGW_HUBMSG_MAX_BODY;
    p.content.data = calloc(1, p.content.len);
    pn_message_t *m = pn_message();
    iotgw_diag d;
    ck_assert_int_eq(iotgw_hubmsg_from_parcel(&p, NULL, m, &d), IOTGW_ERR_HUBMSG_TOO_LARGE);
    ck_assert_str_eq(d.text, "message body is 262148 bytes, IoT Hub accepts 262144");
    p.content.len = IOTGW_HUBMSG_MAX_BODY - 10;
    ck_assert_int_eq(iotgw_hubmsg_from_parcel(&p, NULL, m, NULL), 0);
    free(p.content.data);
    pn_message_free(m);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("hubmsg");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, protobuf_encoding);
    tcase_add_test(tc, json_encoding_for_hub_routing);
    tcase_add_test(tc, empty_names_are_not_promoted);
    tcase_add_test(tc, reading_tolerates_charset_and_missing_content_type);
    tcase_add_test(tc, bad_hub_messages_get_specific_errors);
    tcase_add_test(tc, oversize_parcels_are_refused_before_sending);
    suite_add_tcase(s, tc);
    return s;
}
