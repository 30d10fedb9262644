/* JSON <-> protobuf by descriptor: every scalar type, repeated, nested, enums, oneofs,
 * and errors that name the field. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/json_pb.h"
#include "codecs/json_text.h"
#include "codecs/parcel_json.h"
#include "schemas/alarm_status.pb-c.h"
#include "tests/unit/all_types.pb-c.h"
#include "tests/unit/check_main.h"
#include "tests/unit/sample.h"

static char *to_json(const ProtobufCMessage *m, unsigned flags)
{
    char *text = NULL;
    ck_assert_int_eq(iotgw_json_text_from_pb(m, flags, &text, NULL), 0);
    return text;
}

static Iotgw__Test__AllTypes *from_json(const char *text, int expect_rc, iotgw_diag *d)
{
    ProtobufCMessage *m = NULL;
    int rc = iotgw_pb_from_json_text(&iotgw__test__all_types__descriptor, text, strlen(text), &m, d);
    ck_assert_msg(rc == expect_rc, "rc %d (%s) for %s", rc, d ? d->text : "", text);
    return (Iotgw__Test__AllTypes *)m;
}

static void expect_error(const char *text, int code, const char *message)
{
    iotgw_diag d;
    ck_assert_ptr_null(from_json(text, code, &d));
    ck_assert_str_eq(d.text, message);
}

START_TEST(every_scalar_type_round_trips)
{
    Iotgw__Test__AllTypes m;
    iotgw__test__all_types__init(&m);
    m.f_int32 = -42;
    m.f_int64 = INT64_MIN;
    m.f_uint32 = UINT32_MAX;
    m.f_uint64 = UINT64_MAX;
    m.f_sint32 = -7;
    m.f_sint64 = -9000000000LL;
    m.f_fixed32 = 7;
    m.f_fixed64 = 1ULL << 63;
    m.f_sfixed32 = INT32_MIN;
    m.f_sfixed64 = INT64_MAX;
    m.f_float = 0.1f;
    m.f_double = 0.1;
    m.f_bool = 1;
    m.f_string = "caf\xc3\xa9 \"quoted\"\n";
    uint8_t bytes[] = {0, 1, 2, 0xfe, 0xff};
    m.f_bytes.data = bytes;
    m.f_bytes.len = sizeof bytes;
    m.f_enum = IOTGW__TEST__COLOR__GREEN;

    char *text = to_json(&m.base, 0);
    ck_assert_str_eq(
        text,
        "{\"fInt32\":-42,\"fInt64\":\"-9223372036854775808\",\"fUint32\":4294967295,"
        "\"fUint64\":\"18446744073709551615\",\"fSint32\":-7,\"fSint64\":\"-9000000000\",\"fFixed32\":7,"
        "\"fFixed64\":\"9223372036854775808\",\"fSfixed32\":-2147483648,\"fSfixed64\":"
        "\"9223372036854775807\","
        "\"fFloat\":0.1,\"fDouble\":0.1,\"fBool\":true,\"fString\":\"caf\xc3\xa9 \\\"quoted\\\"\\n\","
        "\"fBytes\":\"AAEC/v8=\",\"fEnum\":\"GREEN\"}");

    Iotgw__Test__AllTypes *back = from_json(text, 0, NULL);
    ck_assert_int_eq(back->f_int32, -42);
    ck_assert(back->f_int64 == INT64_MIN);
    ck_assert_uint_eq(back->f_uint32, UINT32_MAX);
    ck_assert(back->f_uint64 == UINT64_MAX);
    ck_assert_int_eq(back->f_sint32, -7);
    ck_assert(back->f_sint64 == -9000000000LL);
    ck_assert(back->f_fixed64 == 1ULL << 63);
    ck_assert_int_eq(back->f_sfixed32, INT32_MIN);
    ck_assert(back->f_sfixed64 == INT64_MAX);
    ck_assert(back->f_float == 0.1f);
    ck_assert(back->f_double == 0.1);
    ck_assert_int_eq(back->f_bool, 1);
    ck_assert_str_eq(back->f_string, m.f_string);
    ck_assert_uint_eq(back->f_bytes.len, sizeof bytes);
    ck_assert(memcmp(back->f_bytes.data, bytes, sizeof bytes) == 0);
    ck_assert_int_eq(back->f_enum, IOTGW__TEST__COLOR__GREEN);
    /* the same bytes on the wire */
    size_t a_len, b_len;
    uint8_t *a = sample_pack(&m.base, &a_len), *b = sample_pack(&back->base, &b_len);
    ck_assert_uint_eq(a_len, b_len);
    ck_assert(memcmp(a, b, a_len) == 0);
    free(a), free(b), free(text);
    iotgw__test__all_types__free_unpacked(back, NULL);
}
END_TEST

START_TEST(defaults_are_left_out_unless_asked)
{
    Iotgw__Test__AllTypes m;
    iotgw__test__all_types__init(&m);
    char *text = to_json(&m.base, 0);
    ck_assert_str_eq(text, "{}");
    free(text);
    text = to_json(&m.base, IOTGW_JSON_EMIT_DEFAULTS | IOTGW_JSON_PROTO_NAMES);
    ck_assert_ptr_nonnull(strstr(text, "\"f_int64\":\"0\""));
    ck_assert_ptr_nonnull(strstr(text, "\"f_bool\":false"));
    ck_assert_ptr_nonnull(strstr(text, "\"f_enum\":\"COLOR_UNSPECIFIED\""));
    ck_assert_ptr_nonnull(strstr(text, "\"r_int32\":[]"));
    ck_assert_ptr_null(strstr(text, "f_leaf")); /* unset messages stay out */
    ck_assert_ptr_null(strstr(text, "c_text")); /* and unset oneofs */
    free(text);
}
END_TEST

START_TEST(repeated_nested_and_oneof)
{
    const char *in = "{\"fLeaf\":{\"label\":\"a\",\"weight\":3},\"rInt32\":[1,-2,3],\"rString\":[\"x\",\"\"],"
                     "\"rLeaf\":[{\"label\":\"p\"},{}],\"rBytes\":[\"AQ==\"],\"rEnum\":[\"RED\",2],"
                     "\"cLeaf\":{\"weight\":9}}";
    Iotgw__Test__AllTypes *m = from_json(in, 0, NULL);
    ck_assert_str_eq(m->f_leaf->label, "a");
    ck_assert_uint_eq(m->n_r_int32, 3);
    ck_assert_int_eq(m->r_int32[1], -2);
    ck_assert_uint_eq(m->n_r_string, 2);
    ck_assert_str_eq(m->r_string[1], "");
    ck_assert_uint_eq(m->n_r_leaf, 2);
    ck_assert_str_eq(m->r_leaf[0]->label, "p");
    ck_assert_int_eq(m->r_enum[1], IOTGW__TEST__COLOR__GREEN);
    ck_assert_int_eq(m->choice_case, IOTGW__TEST__ALL_TYPES__CHOICE_C_LEAF);
    ck_assert_int_eq(m->c_leaf->weight, 9);
    char *out = to_json(&m->base, 0);
    ck_assert_str_eq(out,
                     "{\"fLeaf\":{\"label\":\"a\",\"weight\":3},\"rInt32\":[1,-2,3],\"rString\":[\"x\",\"\"],"
                     "\"rLeaf\":[{\"label\":\"p\"},{}],\"rBytes\":[\"AQ==\"],\"rEnum\":[\"RED\",\"GREEN\"],"
                     "\"cLeaf\":{\"weight\":9}}");
    free(out);
    iotgw__test__all_types__free_unpacked(m, NULL);

    /* a oneof member holding its default value is still present */
    m = from_json("{\"cNumber\":\"0\"}", 0, NULL);
    ck_assert_int_eq(m->choice_case, IOTGW__TEST__ALL_TYPES__CHOICE_C_NUMBER);
    out = to_json(&m->base, 0);
    ck_assert_str_eq(out, "{\"cNumber\":\"0\"}");
    free(out);
    iotgw__test__all_types__free_unpacked(m, NULL);
}
END_TEST

START_TEST(lenient_inputs_the_mapping_allows)
{
    Iotgw__Test__AllTypes *m = from_json(
        "{\"f_int32\":\"17\",\"fInt64\":5,\"fUint32\":1e3,\"fDouble\":\"2.5\",\"fFloat\":\"Infinity\","
        "\"fBytes\":\"-_8\",\"fEnum\":1,\"fString\":null,\"fLeaf\":null}",
        0, NULL);
    ck_assert_int_eq(m->f_int32, 17);
    ck_assert_int_eq(m->f_int64, 5);
    ck_assert_uint_eq(m->f_uint32, 1000);
    ck_assert(m->f_double == 2.5);
    ck_assert(isinf(m->f_float));
    ck_assert_uint_eq(m->f_bytes.len, 2);
    ck_assert_int_eq(m->f_enum, IOTGW__TEST__COLOR__RED);
    ck_assert_str_eq(m->f_string, "");
    ck_assert_ptr_null(m->f_leaf);
    char *out = to_json(&m->base, 0);
    ck_assert_str_eq(
        out, "{\"fInt32\":17,\"fInt64\":\"5\",\"fUint32\":1000,\"fFloat\":\"Infinity\",\"fDouble\":2.5,"
             "\"fBytes\":\"+/8=\",\"fEnum\":\"RED\"}");
    free(out);
    iotgw__test__all_types__free_unpacked(m, NULL);

    m = from_json("{\"fDouble\":\"NaN\",\"fInt32\":-3.0}", 0, NULL);
    ck_assert(isnan(m->f_double));
    ck_assert_int_eq(m->f_int32, -3);
    iotgw__test__all_types__free_unpacked(m, NULL);
}
END_TEST

START_TEST(float_extremes_round_trip)
{
    static const float values[] = {FLT_MAX, -FLT_MAX, FLT_MIN, 1e-45f, 16777217.0f, -0.0f};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        Iotgw__Test__AllTypes m;
        iotgw__test__all_types__init(&m);
        m.f_float = values[i];
        m.f_double = (double)values[i] * 1e300;
        char *text = to_json(&m.base, 0);
        Iotgw__Test__AllTypes *back = from_json(text, 0, NULL);
        ck_assert_msg(memcmp(&back->f_float, &values[i], sizeof(float)) == 0, "float %s", text);
        ck_assert_msg(back->f_double == m.f_double, "double %s", text);
        free(text);
        iotgw__test__all_types__free_unpacked(back, NULL);
    }
}
END_TEST

START_TEST(errors_name_the_field_path)
{
    expect_error("{\"fLeaf\":{\"labl\":\"x\"}}", IOTGW_ERR_JSON_UNKNOWN_FIELD,
                 "field fLeaf.labl: iotgw.test.Leaf has no such field");
    expect_error("{\"rLeaf\":[{},{\"weight\":\"heavy\"}]}", IOTGW_ERR_JSON_TYPE,
                 "field rLeaf[1].weight: expected an integer");
    expect_error("{\"fBool\":1}", IOTGW_ERR_JSON_TYPE, "field fBool: expected true or false");
    expect_error("{\"fString\":5}", IOTGW_ERR_JSON_TYPE, "field fString: expected a string");
    expect_error("{\"fBytes\":\"!!\"}", IOTGW_ERR_JSON_TYPE, "field fBytes: expected a base64 string");
    expect_error("{\"fLeaf\":[]}", IOTGW_ERR_JSON_TYPE, "field fLeaf: expected an object");
    expect_error("{\"rInt32\":5}", IOTGW_ERR_JSON_TYPE, "field rInt32: expected an array");
    expect_error("{\"rInt32\":[1,null]}", IOTGW_ERR_JSON_TYPE,
                 "field rInt32[1]: expected a value (null is not allowed in an array)");
    expect_error("{\"fInt32\":2147483648}", IOTGW_ERR_JSON_RANGE,
                 "field fInt32: value out of range for int32");
    expect_error("{\"fUint32\":-1}", IOTGW_ERR_JSON_RANGE, "field fUint32: value out of range for uint32");
    expect_error("{\"fUint64\":\"-1\"}", IOTGW_ERR_JSON_RANGE,
                 "field fUint64: value out of range for uint64");
    expect_error("{\"fInt64\":\"9223372036854775808\"}", IOTGW_ERR_JSON_RANGE,
                 "field fInt64: value out of range for int64");
    expect_error("{\"fInt32\":1.5}", IOTGW_ERR_JSON_TYPE, "field fInt32: expected an integer");
    expect_error("{\"fInt64\":\"12abc\"}", IOTGW_ERR_JSON_TYPE, "field fInt64: expected an integer");
    expect_error("{\"fFloat\":1e39}", IOTGW_ERR_JSON_RANGE, "field fFloat: value out of range for float");
    expect_error("{\"fEnum\":\"BLUE\"}", IOTGW_ERR_JSON_ENUM,
                 "field fEnum: 'BLUE' is not a value of iotgw.test.Color");
    expect_error("{\"cText\":\"a\",\"cNumber\":\"1\"}", IOTGW_ERR_JSON_ONEOF,
                 "field cNumber: another member of its oneof is already set");
    expect_error("[1]", IOTGW_ERR_JSON_TYPE, "field (message): expected an object");
    expect_error("{\"fInt32\":1,\"fInt32\":2}", IOTGW_ERR_JSON_SYNTAX,
                 "JSON syntax error at line 1 column 20: duplicate object key near '\"fInt32\"'");
    /* the same field under both its names: refused, nothing of either value kept */
    expect_error("{\"f_bytes\":\"AAEC\",\"fBytes\":\"AwQ=\"}", IOTGW_ERR_JSON_DUPLICATE,
                 "field fBytes: given twice (as fBytes and as its other name)");
    expect_error("{\"fString\":\"a\\u0000b\"}", IOTGW_ERR_JSON_SYNTAX,
                 "JSON syntax error at line 1 column 21: \\u0000 is not allowed without JSON_ALLOW_NUL near "
                 "'\"a\\u0000b\"'");
    /* a tree built with NULs inside strings (JSON_ALLOW_NUL) is refused too */
    json_t *j = json_pack("{s:s%}", "fString", "a\0b", (size_t)3);
    ProtobufCMessage *m = NULL;
    iotgw_diag d;
    ck_assert_int_eq(iotgw_pb_from_json(&iotgw__test__all_types__descriptor, j, &m, &d), IOTGW_ERR_JSON_TYPE);
    ck_assert_str_eq(d.text, "field fString: string contains a NUL character");
    json_decref(j);
    expect_error("{", IOTGW_ERR_JSON_SYNTAX,
                 "JSON syntax error at line 1 column 1: string or '}' expected near end of file");
}
END_TEST

START_TEST(nesting_is_bounded)
{
    char text[4096] = "";
    for (int i = 0; i < 40; i++)
        strcat(text, "{\"child\":");
    strcat(text, "{}");
    for (int i = 0; i < 40; i++)
        strcat(text, "}");
    ProtobufCMessage *m = NULL;
    iotgw_diag d;
    ck_assert_int_eq(iotgw_pb_from_json_text(&iotgw__test__node__descriptor, text, strlen(text), &m, &d),
                     IOTGW_ERR_JSON_DEPTH);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(d.text, "nested deeper than 32"));
    /* 30 levels are fine */
    strcpy(text, "");
    for (int i = 0; i < 30; i++)
        strcat(text, "{\"child\":");
    strcat(text, "{\"value\":7}");
    for (int i = 0; i < 30; i++)
        strcat(text, "}");
    ck_assert_int_eq(iotgw_pb_from_json_text(&iotgw__test__node__descriptor, text, strlen(text), &m, NULL),
                     0);
    protobuf_c_message_free_unpacked(m, NULL);
}
END_TEST

START_TEST(invalid_utf8_from_protobuf_is_refused)
{
    Iotgw__Test__AllTypes m;
    iotgw__test__all_types__init(&m);
    m.f_string = "bad \xff byte";
    char *text = NULL;
    iotgw_diag d;
    ck_assert_int_eq(iotgw_json_text_from_pb(&m.base, 0, &text, &d), IOTGW_ERR_JSON_UTF8);
    ck_assert_str_eq(d.text, "field fString: string is not valid UTF-8");
}
END_TEST

START_TEST(parcel_content_is_shown_as_its_type)
{
    Iotgw__Parcel *p = sample_alarm_parcel(1);
    json_t *j = NULL;
    ck_assert_int_eq(iotgw_parcel_to_json(p, iotgw_types_builtin(), 0, &j, NULL), 0);
    char *text = iotgw_json_text(j);
    ck_assert_str_eq(text, "{\"source\":{\"name\":\"alarm-agent-1\",\"localId\":\"zone-3\",\"domainAgent\":"
                           "\"site-agent\",\"domain\":\"plant-north\"},"
                           "\"destination\":{\"name\":\"alarm-monitor-1\",\"localId\":\"panel-1\","
                           "\"domainAgent\":\"site-agent\",\"domain\":\"plant-north\"},"
                           "\"type\":\"iotgw.AlarmStatus\",\"content\":{\"alarmActive\":true,\"timeUtc\":"
                           "\"12:34:56\",\"dateUtc\":\"2026-11-22\"}}");
    Iotgw__Parcel *back = NULL;
    ck_assert_int_eq(iotgw_parcel_from_json(j, iotgw_types_builtin(), &back, NULL), 0);
    ck_assert_uint_eq(back->content.len, p->content.len);
    ck_assert(memcmp(back->content.data, p->content.data, p->content.len) == 0);
    ck_assert_str_eq(back->destination->name, "alarm-monitor-1");
    iotgw__parcel__free_unpacked(back, NULL);
    json_decref(j);
    free(text);

    /* unknown type: content stays base64, and base64 reads back */
    free(p->type);
    p->type = strdup("vendor.Unknown");
    ck_assert_int_eq(iotgw_parcel_to_json(p, iotgw_types_builtin(), 0, &j, NULL), 0);
    ck_assert(json_is_string(json_object_get(j, "content")));
    ck_assert_int_eq(iotgw_parcel_from_json(j, iotgw_types_builtin(), &back, NULL), 0);
    ck_assert_uint_eq(back->content.len, p->content.len);
    iotgw__parcel__free_unpacked(back, NULL);
    json_decref(j);
    iotgw__parcel__free_unpacked(p, NULL);
}
END_TEST

START_TEST(parcel_content_with_unknown_fields_stays_lossless)
{
    /* An AlarmStatus from a newer schema: field 1 (alarm_active) and field 9, unknown here. */
    uint8_t newer[] = {0x08, 0x01, 0x48, 0x07};
    Iotgw__Parcel p;
    iotgw__parcel__init(&p);
    p.type = "iotgw.AlarmStatus";
    p.content.data = newer;
    p.content.len = sizeof newer;
    json_t *j = NULL;
    ck_assert_int_eq(iotgw_parcel_to_json(&p, iotgw_types_builtin(), 0, &j, NULL), 0);
    ck_assert_str_eq(json_string_value(json_object_get(j, "content")), "CAFIBw==");
    Iotgw__Parcel *back = NULL;
    ck_assert_int_eq(iotgw_parcel_from_json(j, iotgw_types_builtin(), &back, NULL), 0);
    ck_assert_uint_eq(back->content.len, sizeof newer);
    ck_assert(memcmp(back->content.data, newer, sizeof newer) == 0);
    iotgw__parcel__free_unpacked(back, NULL);
    json_decref(j);
}
END_TEST

START_TEST(parcel_content_errors)
{
    iotgw_diag d;
    Iotgw__Parcel *p = NULL;
    json_t *j = json_loads("{\"type\":\"AlarmStatus\",\"content\":{\"alarmActive\":\"yes\"}}", 0, NULL);
    ck_assert_int_eq(iotgw_parcel_from_json(j, iotgw_types_builtin(), &p, &d), IOTGW_ERR_JSON_TYPE);
    ck_assert_str_eq(d.text, "parcel content: field alarmActive: expected true or false");
    json_decref(j);

    j = json_loads("{\"type\":\"x.Nope\",\"content\":{\"a\":1}}", 0, NULL);
    ck_assert_int_eq(iotgw_parcel_from_json(j, iotgw_types_builtin(), &p, &d), IOTGW_ERR_JSON_TYPE);
    ck_assert_str_eq(d.text, "field content: an object needs a known type, and 'x.Nope' is not one (send "
                             "content as base64 instead)");
    json_decref(j);

    /* content bytes that are not the declared type */
    Iotgw__Parcel bad;
    iotgw__parcel__init(&bad);
    bad.type = "iotgw.AlarmStatus";
    uint8_t junk[] = {0x0a, 0x05, 0x01};
    bad.content.data = junk;
    bad.content.len = sizeof junk;
    ck_assert_int_eq(iotgw_parcel_to_json(&bad, iotgw_types_builtin(), 0, &j, &d), IOTGW_ERR_HUBMSG_PAYLOAD);
    ck_assert_str_eq(d.text, "parcel content (3 bytes) is not a valid iotgw.AlarmStatus");
}
END_TEST

START_TEST(type_registry_lookup)
{
    const iotgw_type_registry *r = iotgw_types_builtin();
    ck_assert_ptr_eq(iotgw_types_find(r, "iotgw.AlarmStatus"), &iotgw__alarm_status__descriptor);
    ck_assert_ptr_eq(iotgw_types_find(r, ".iotgw.AlarmStatus"), &iotgw__alarm_status__descriptor);
    ck_assert_ptr_eq(iotgw_types_find(r, "AlarmStatus"), &iotgw__alarm_status__descriptor);
    ck_assert_ptr_null(iotgw_types_find(r, "alarmstatus"));
    ck_assert_ptr_null(iotgw_types_find(r, NULL));
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("json_pb");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, every_scalar_type_round_trips);
    tcase_add_test(tc, defaults_are_left_out_unless_asked);
    tcase_add_test(tc, repeated_nested_and_oneof);
    tcase_add_test(tc, lenient_inputs_the_mapping_allows);
    tcase_add_test(tc, float_extremes_round_trip);
    tcase_add_test(tc, errors_name_the_field_path);
    tcase_add_test(tc, nesting_is_bounded);
    tcase_add_test(tc, invalid_utf8_from_protobuf_is_refused);
    tcase_add_test(tc, parcel_content_is_shown_as_its_type);
    tcase_add_test(tc, parcel_content_with_unknown_fields_stays_lossless);
    tcase_add_test(tc, parcel_content_errors);
    tcase_add_test(tc, type_registry_lookup);
    suite_add_tcase(s, tc);
    return s;
}
