/* IoT Hub's MQTT device protocol (codecs/iothub_mqtt): the user names the SDKs send, the
 * topics a device publishes to and subscribes to, property bags both ways, and the topics
 * the hub publishes on. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/iothub_mqtt.h"
#include "tests/unit/check_main.h"

#define U8(s) ((const uint8_t *)(s))

/* Assert that b holds exactly the text s (NULL: len 0). */
#define ck_assert_bytes(b, s)                                                                                \
    do {                                                                                                     \
        iotgw_mqtt_bytes b_ = (b);                                                                           \
        const char *s_ = (s);                                                                                \
        size_t n_ = s_ ? strlen(s_) : 0;                                                                     \
        ck_assert_msg(b_.len == n_ && (n_ == 0 || memcmp(b_.data, s_, n_) == 0), "got '%.*s', want '%s'",    \
                      (int)b_.len, b_.data ? (const char *)b_.data : "", s_ ? s_ : "");                      \
    } while (0)

static int username(const char *s, iotgw_iothub_username *u, iotgw_diag *d)
{
    return iotgw_iothub_username_parse(U8(s), strlen(s), u, d);
}

static int publish(const char *s, iotgw_iothub_publish_topic *t, iotgw_diag *d)
{
    return iotgw_iothub_publish_topic_parse(U8(s), strlen(s), t, d);
}

static int props(const char *s, iotgw_mqtt_props *p, iotgw_diag *d)
{
    return iotgw_mqtt_props_parse(U8(s), strlen(s), p, d);
}

/* ------------------------------------------------------------------ user names */

START_TEST(username_from_each_sdk)
{
    static const struct {
        const char *name, *host, *api, *query, *model;
    } sdk[] = {
        {"h.azure-devices.net/d1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.0%20(node%"
         "20v18.0.0%3B%20Debian%3B%20x64)",
         "h.azure-devices.net", "2021-04-12",
         "api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.0%20(node%20v18.0.0%3B%20Debian%3B%"
         "20x64)",
         NULL},
        {"h/d1/?api-version=2019-10-01&DeviceClientType=py-azure-iot-device%2F2.12.0%3B(python%203.11%3B%"
         "20Linux)",
         "h", "2019-10-01",
         "api-version=2019-10-01&DeviceClientType=py-azure-iot-device%2F2.12.0%3B(python%203.11%3B%20Linux)",
         NULL},
        {"h/d1/"
         "?api-version=2020-09-30&DeviceClientType=iothubclient%2F1.11.0%20(native%3B%20Linux%3B%20x86_64)",
         "h", "2020-09-30",
         "api-version=2020-09-30&DeviceClientType=iothubclient%2F1.11.0%20(native%3B%20Linux%3B%20x86_64)",
         NULL},
        {"h/d1/"
         "?api-version=2020-09-30&DeviceClientType=iothubclient%2F1.11.0%20(native%3B%20Linux%3B%20x86_64)"
         "&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
         "h", "2020-09-30",
         "api-version=2020-09-30&DeviceClientType=iothubclient%2F1.11.0%20(native%3B%20Linux%3B%20x86_64)"
         "&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
         "dtmi%3Acom%3Aexample%3AThermostat%3B1"}, /* raw: not decoded */
    };
    for (size_t i = 0; i < sizeof sdk / sizeof sdk[0]; i++) {
        iotgw_iothub_username u;
        ck_assert_int_eq(username(sdk[i].name, &u, NULL), 0);
        ck_assert_bytes(u.host, sdk[i].host);
        ck_assert_bytes(u.device, "d1");
        ck_assert_uint_eq(u.module.len, 0);
        ck_assert_bytes(u.api_version, sdk[i].api);
        ck_assert_bytes(u.query, sdk[i].query);
        ck_assert_bytes(u.model_id, sdk[i].model);
    }
}
END_TEST

START_TEST(username_module_and_short_forms)
{
    static const struct {
        const char *name, *device, *module, *query, *api;
    } cases[] = {
        {"h/d1/m1/?api-version=2021-04-12&DeviceClientType=x", "d1", "m1",
         "api-version=2021-04-12&DeviceClientType=x", "2021-04-12"},
        {"h/d1/m1/api-version=2021-04-12", "d1", "m1", "api-version=2021-04-12", "2021-04-12"}, /* no '?' */
        {"h/d1/m1/", "d1", "m1", NULL, NULL},
        {"h/d1/m1", "d1", "m1", NULL, NULL},
        {"h/d1/api-version=2016-11-14&DeviceClientType=c", "d1", NULL,
         "api-version=2016-11-14&DeviceClientType=c", "2016-11-14"}, /* no '?': an '=' says it is the query */
        {"h/d1/?", "d1", NULL, NULL, NULL},
        {"h/d1/", "d1", NULL, NULL, NULL},
        {"h/d1", "d1", NULL, NULL, NULL},
        {"h/dev-01.a:b$c/?DeviceClientType=x&api-version=2021-04-12", "dev-01.a:b$c", NULL,
         "DeviceClientType=x&api-version=2021-04-12", "2021-04-12"}, /* api-version need not be first */
        {"h/d1/?api-version=1&api-version=2&xapi-version=3", "d1", NULL,
         "api-version=1&api-version=2&xapi-version=3", "1"}, /* the first counts */
        {"h/d1/?model-id=&api-version", "d1", NULL, "model-id=&api-version", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iotgw_iothub_username u;
        ck_assert_msg(username(cases[i].name, &u, NULL) == 0, "refused %s", cases[i].name);
        ck_assert_bytes(u.host, "h");
        ck_assert_bytes(u.device, cases[i].device);
        ck_assert_bytes(u.module, cases[i].module);
        ck_assert_bytes(u.query, cases[i].query);
        ck_assert_bytes(u.api_version, cases[i].api);
        ck_assert_uint_eq(u.model_id.len, 0);
    }
}
END_TEST

START_TEST(username_errors_say_which_part)
{
    static const struct {
        const char *name, *text;
    } cases[] = {
        {"", "user name has no host name before its first '/' (expected {host}/{device}/?api-version=...)"},
        {"/d1/?api-version=2021-04-12",
         "user name has no host name before its first '/' (expected {host}/{device}/?api-version=...)"},
        {"h.azure-devices.net",
         "user name has no device id after the host name (expected {host}/{device}/?api-version=...)"},
        {"h/", "user name has no device id after the host name (expected {host}/{device}/?api-version=...)"},
        {"h//?api-version=2021-04-12",
         "user name has no device id after the host name (expected {host}/{device}/?api-version=...)"},
        {"h/d1//?api-version=2021-04-12",
         "user name has an empty module id after the device id (expected {host}/{device}/?api-version=...)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iotgw_iothub_username u;
        iotgw_diag d;
        ck_assert_int_eq(username(cases[i].name, &u, &d), IOTGW_ERR_MQTT_TOPIC);
        ck_assert_int_eq(d.code, IOTGW_ERR_MQTT_TOPIC);
        ck_assert_str_eq(d.text, cases[i].text);
    }
}
END_TEST

/* ------------------------------------------------------------------ what a device publishes */

START_TEST(telemetry_topics)
{
    static const struct {
        const char *topic, *device, *module, *bag;
    } cases[] = {
        {"devices/d1/messages/events/", "d1", NULL, NULL},
        {"devices/d1/messages/events", "d1", NULL, NULL},
        {"devices/d1/messages/events/a=1", "d1", NULL, "a=1"},
        {"devices/d1/messages/events/a=1/", "d1", NULL, "a=1"},
        {"devices/d1/messages/events/%24.mid=abc&%24.ct=application%2Fjson&%24.ce=utf-8&myprop=1", "d1", NULL,
         "%24.mid=abc&%24.ct=application%2Fjson&%24.ce=utf-8&myprop=1"},
        {"devices/d1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8/", "d1", NULL,
         "%24.ct=application%2Fjson&%24.ce=utf-8"},
        {"devices/d1/modules/m1/messages/events/", "d1", "m1", NULL},
        {"devices/d1/modules/m1/messages/events", "d1", "m1", NULL},
        {"devices/d1/modules/m1/messages/events/%24.on=out1&k=v", "d1", "m1", "%24.on=out1&k=v"},
        {"devices/other/messages/events/", "other", NULL, NULL}, /* the caller checks whose */
        {"devices/a$b:c.d/messages/events/x", "a$b:c.d", NULL, "x"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iotgw_iothub_publish_topic t;
        ck_assert_msg(publish(cases[i].topic, &t, NULL) == 0, "refused %s", cases[i].topic);
        ck_assert_int_eq(t.kind, IOTGW_IOTHUB_TELEMETRY);
        ck_assert_bytes(t.device, cases[i].device);
        ck_assert_bytes(t.module, cases[i].module);
        ck_assert_bytes(t.bag, cases[i].bag);
        ck_assert_uint_eq(t.rid.len, 0);
    }
}
END_TEST

START_TEST(telemetry_bag_with_system_properties)
{
    const char *topic =
        "devices/d1/messages/events/%24.mid=abc&%24.ct=application%2Fjson&%24.ce=utf-8&myprop=1";
    iotgw_iothub_publish_topic t;
    ck_assert_int_eq(publish(topic, &t, NULL), 0);
    iotgw_mqtt_props p;
    ck_assert_int_eq(iotgw_mqtt_props_parse(t.bag.data, t.bag.len, &p, NULL), 0);
    ck_assert_uint_eq(p.count, 4);
    ck_assert_str_eq(p.item[0].name, "$.mid");
    ck_assert_str_eq(iotgw_mqtt_props_get(&p, "$.mid"), "abc");
    ck_assert_str_eq(iotgw_mqtt_props_get(&p, "$.ct"), "application/json");
    ck_assert_str_eq(iotgw_mqtt_props_get(&p, "$.ce"), "utf-8");
    ck_assert_str_eq(iotgw_mqtt_props_get(&p, "myprop"), "1");
    ck_assert_ptr_null(iotgw_mqtt_props_get(&p, "%24.ct"));
    ck_assert_ptr_null(iotgw_mqtt_props_get(&p, "MyProp"));
    iotgw_mqtt_props_free(&p);
    ck_assert_ptr_null(p.storage);
    ck_assert_uint_eq(p.count, 0);
}
END_TEST

START_TEST(method_and_twin_topics_with_odd_rids)
{
    static const struct {
        const char *topic;
        iotgw_iothub_publish_kind kind;
        int status;
        const char *rid;
    } cases[] = {
        {"$iothub/methods/res/200/?$rid=1", IOTGW_IOTHUB_METHOD_RESPONSE, 200, "1"},
        {"$iothub/methods/res/100/?$rid=a b", IOTGW_IOTHUB_METHOD_RESPONSE, 100, "a b"},
        {"$iothub/methods/res/999/?$rid=x/y?z", IOTGW_IOTHUB_METHOD_RESPONSE, 999, "x/y?z"},
        {"$iothub/methods/res/404/?$rid=&a=b", IOTGW_IOTHUB_METHOD_RESPONSE, 404, "&a=b"},
        {"$iothub/methods/res/500/?$rid=%24%zz", IOTGW_IOTHUB_METHOD_RESPONSE, 500, "%24%zz"}, /* raw */
        {"$iothub/twin/GET/?$rid=0", IOTGW_IOTHUB_TWIN_GET, 0, "0"},
        {"$iothub/twin/GET/?$rid=6f1c2e9a-4f3b-4a1e-9d3e-2b1c0a9f8e7d", IOTGW_IOTHUB_TWIN_GET, 0,
         "6f1c2e9a-4f3b-4a1e-9d3e-2b1c0a9f8e7d"},
        {"$iothub/twin/GET/?$rid=?$rid=", IOTGW_IOTHUB_TWIN_GET, 0, "?$rid="},
        {"$iothub/twin/PATCH/properties/reported/?$rid=42", IOTGW_IOTHUB_TWIN_REPORTED, 0, "42"},
        {"$iothub/twin/PATCH/properties/reported/?$rid=42&$version=7", IOTGW_IOTHUB_TWIN_REPORTED, 0, "42"},
        {"$iothub/twin/PATCH/properties/reported/?$rid=a&$version=1&$version=2", IOTGW_IOTHUB_TWIN_REPORTED,
         0, "a&$version=1"},
        {"$iothub/twin/PATCH/properties/reported/?$rid=r&$versio=2", IOTGW_IOTHUB_TWIN_REPORTED, 0,
         "r&$versio=2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iotgw_iothub_publish_topic t;
        ck_assert_msg(publish(cases[i].topic, &t, NULL) == 0, "refused %s", cases[i].topic);
        ck_assert_int_eq(t.kind, cases[i].kind);
        ck_assert_int_eq(t.status, cases[i].status);
        ck_assert_bytes(t.rid, cases[i].rid);
        ck_assert_uint_eq(t.device.len, 0);
        ck_assert_uint_eq(t.bag.len, 0);
    }
}
END_TEST

START_TEST(publish_topics_refused)
{
    static const struct {
        const char *topic, *text;
    } cases[] = {
        {"devices/d1/foo", "topic 'devices/d1/foo' is not one IoT Hub serves (telemetry goes to "
                           "devices/{id}/messages/events/)"},
        {"devices/d1",
         "topic 'devices/d1' is not one IoT Hub serves (telemetry goes to devices/{id}/messages/events/)"},
        {"devices/d1/messages/eventsx", "topic 'devices/d1/messages/eventsx' is not one IoT Hub serves "
                                        "(telemetry goes to devices/{id}/messages/events/)"},
        {"devices/d1/messages/devicebound/", "topic 'devices/d1/messages/devicebound/' is not one IoT Hub "
                                             "serves (telemetry goes to devices/{id}/messages/events/)"},
        {"devices//messages/events/",
         "topic 'devices//messages/events/' has an empty device id (telemetry goes to "
         "devices/{id}/messages/events/)"},
        {"devices/d1/modules//messages/events/",
         "topic 'devices/d1/modules//messages/events/' has an empty module id (module telemetry goes to "
         "devices/{id}/modules/{module}/messages/events/)"},
        {"devices/d1/modules/m1",
         "topic 'devices/d1/modules/m1' is not one IoT Hub serves (telemetry goes to "
         "devices/{id}/messages/events/)"},
        {"events",
         "topic 'events' is not one IoT Hub serves (telemetry goes to devices/{id}/messages/events/)"},
        {"", "topic '' is not one IoT Hub serves (telemetry goes to devices/{id}/messages/events/)"},
        {"$iothub/methods/res/20/?$rid=1", "topic '$iothub/methods/res/20/?$rid=1': a method response's "
                                           "status must be a number from 100 to 999"},
        {"$iothub/methods/res/1000/?$rid=1",
         "topic '$iothub/methods/res/1000/?$rid=1': a method response's status must be a number from 100 to "
         "999"},
        {"$iothub/methods/res/099/?$rid=1", "topic '$iothub/methods/res/099/?$rid=1': a method response's "
                                            "status must be a number from 100 to 999"},
        {"$iothub/methods/res/ok/?$rid=1", "topic '$iothub/methods/res/ok/?$rid=1': a method response's "
                                           "status must be a number from 100 to 999"},
        {"$iothub/methods/res/200/?$rid=", "topic '$iothub/methods/res/200/?$rid=' has an empty $rid"},
        {"$iothub/twin/GET/?$rid=", "topic '$iothub/twin/GET/?$rid=' has an empty $rid"},
        {"$iothub/twin/PATCH/properties/reported/?$rid=&$version=3",
         "topic '$iothub/twin/PATCH/properties/reported/?$rid=&$version=3': $version must be a number after "
         "a "
         "non-empty $rid"},
        {"$iothub/twin/PATCH/properties/reported/?$rid=1&$version=x",
         "topic '$iothub/twin/PATCH/properties/reported/?$rid=1&$version=x': $version must be a number after "
         "a "
         "non-empty $rid"},
        {"$iothub/twin/PATCH/properties/reported/?$rid=1&$version=",
         "topic '$iothub/twin/PATCH/properties/reported/?$rid=1&$version=': $version must be a number after "
         "a "
         "non-empty $rid"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iotgw_iothub_publish_topic t;
        iotgw_diag d;
        ck_assert_msg(publish(cases[i].topic, &t, &d) == IOTGW_ERR_MQTT_TOPIC, "accepted %s", cases[i].topic);
        ck_assert_str_eq(d.text, cases[i].text);
    }
    /* These need the $iothub list, which does not fit beside the quoted topic in a test line. */
    static const char *const iothub[] = {
        "$iothub/methods/res/200",
        "$iothub/methods/res/200/",
        "$iothub/methods/res/200/$rid=1",
        "$iothub/twin/GET/",
        "$iothub/twin/GET/?rid=1",
        "$iothub/twin/GET",
        "$iothub/twin/PATCH/properties/desired/?$rid=1",
        "$iothub/methods/POST/m/?$rid=1",
        "$iothub/",
    };
    for (size_t i = 0; i < sizeof iothub / sizeof iothub[0]; i++) {
        iotgw_iothub_publish_topic t;
        iotgw_diag d;
        ck_assert_msg(publish(iothub[i], &t, &d) == IOTGW_ERR_MQTT_TOPIC, "accepted %s", iothub[i]);
        ck_assert_msg(strstr(d.text, "$iothub/twin/PATCH/properties/reported/?$rid={rid}") != NULL, "%s",
                      d.text);
    }
}
END_TEST

START_TEST(diagnostics_quote_one_short_line)
{
    char topic[400];
    memset(topic, 'x', sizeof topic);
    memcpy(topic, "devices/d1/\n", 12);
    iotgw_iothub_publish_topic t;
    iotgw_diag d;
    ck_assert_int_eq(iotgw_iothub_publish_topic_parse(U8(topic), sizeof topic, &t, &d), IOTGW_ERR_MQTT_TOPIC);
    ck_assert_ptr_null(strchr(d.text, '\n'));
    ck_assert_msg(strncmp(d.text, "topic 'devices/d1/?xxx", 22) == 0, "%s", d.text);
    ck_assert_ptr_nonnull(strstr(d.text, "xxx...' is not one IoT Hub serves"));
    ck_assert_ptr_nonnull(strstr(d.text, "(telemetry goes to devices/{id}/messages/events/)"));
}
END_TEST

/* ------------------------------------------------------------------ what a device subscribes to */

START_TEST(filters_accepted)
{
    static const struct {
        const char *filter;
        iotgw_iothub_filter_kind kind;
        const char *device;
    } cases[] = {
        {"devices/d1/messages/devicebound/#", IOTGW_IOTHUB_SUB_C2D, "d1"},
        {"devices/d1/messages/devicebound/", IOTGW_IOTHUB_SUB_C2D, "d1"},
        {"devices/someone-else/messages/devicebound/#", IOTGW_IOTHUB_SUB_C2D, "someone-else"},
        {"$iothub/methods/POST/#", IOTGW_IOTHUB_SUB_METHODS, NULL},
        {"$iothub/twin/res/#", IOTGW_IOTHUB_SUB_TWIN_RESPONSES, NULL},
        {"$iothub/twin/PATCH/properties/desired/#", IOTGW_IOTHUB_SUB_TWIN_DESIRED, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iotgw_iothub_filter_kind kind = 0;
        iotgw_mqtt_bytes dev = {U8("junk"), 4};
        ck_assert_msg(
            iotgw_iothub_filter_parse(U8(cases[i].filter), strlen(cases[i].filter), &kind, &dev, NULL) == 0,
            "refused %s", cases[i].filter);
        ck_assert_int_eq(kind, cases[i].kind);
        ck_assert_bytes(dev, cases[i].device);
    }
}
END_TEST

START_TEST(filters_refused)
{
    static const char hint[] = "(a device subscribes to devices/{id}/messages/devicebound/#, "
                               "$iothub/methods/POST/#, $iothub/twin/res/# or "
                               "$iothub/twin/PATCH/properties/desired/#)";
    static const char *const refused[] = {
        "devices/d1/messages/#",
        "#",
        "$iothub/#",
        "$iothub/methods/#",
        "$iothub/methods/POST/+",
        "$iothub/methods/POST/",
        "$iothub/twin/res/+",
        "$iothub/twin/PATCH/properties/desired/",
        "$iothub/twin/PATCH/properties/reported/#",
        "devices/d1/messages/devicebound",
        "devices/d1/messages/devicebound/+",
        "devices/d1/messages/devicebound/#/",
        "devices/d1/modules/m1/messages/devicebound/#",
        "devices/d1/messages/events/#",
        "devices/#",
        "",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        iotgw_iothub_filter_kind kind;
        iotgw_mqtt_bytes dev;
        iotgw_diag d;
        ck_assert_msg(iotgw_iothub_filter_parse(U8(refused[i]), strlen(refused[i]), &kind, &dev, &d) ==
                          IOTGW_ERR_MQTT_TOPIC,
                      "accepted %s", refused[i]);
        char want[IOTGW_DIAG_TEXT_MAX];
        snprintf(want, sizeof want, "topic filter '%s' is not one IoT Hub serves %s", refused[i], hint);
        ck_assert_str_eq(d.text, want);
    }
    static const char *const no_device[] = {
        "devices/+/messages/devicebound/#",
        "devices//messages/devicebound/#",
        "devices/#/messages/devicebound/#",
        "devices/d+/messages/devicebound/",
    };
    for (size_t i = 0; i < sizeof no_device / sizeof no_device[0]; i++) {
        iotgw_iothub_filter_kind kind;
        iotgw_mqtt_bytes dev;
        iotgw_diag d;
        ck_assert_int_eq(iotgw_iothub_filter_parse(U8(no_device[i]), strlen(no_device[i]), &kind, &dev, &d),
                         IOTGW_ERR_MQTT_TOPIC);
        char want[IOTGW_DIAG_TEXT_MAX];
        snprintf(want, sizeof want,
                 "topic filter '%s' names no single device (a device subscribes to its own "
                 "devices/{id}/messages/devicebound/#)",
                 no_device[i]);
        ck_assert_str_eq(d.text, want);
    }
}
END_TEST

/* ------------------------------------------------------------------ property bags */

START_TEST(bag_parse_rules)
{
    iotgw_mqtt_props p;
    ck_assert_int_eq(props("", &p, NULL), 0);
    ck_assert_uint_eq(p.count, 0);
    iotgw_mqtt_props_free(&p);

    /* bare names, '+' kept, empty items skipped, '=' inside a value, lower-case hex */
    ck_assert_int_eq(props("&flag&a+b=c+d&&e=&f=x=y%3d%2f&g=%e2%82%AC&", &p, NULL), 0);
    ck_assert_uint_eq(p.count, 5);
    ck_assert_str_eq(p.item[0].name, "flag");
    ck_assert_str_eq(p.item[0].value, "");
    ck_assert_str_eq(p.item[1].name, "a+b");
    ck_assert_str_eq(p.item[1].value, "c+d");
    ck_assert_str_eq(p.item[2].name, "e");
    ck_assert_str_eq(p.item[2].value, "");
    ck_assert_str_eq(p.item[3].name, "f");
    ck_assert_str_eq(p.item[3].value, "x=y=/");
    ck_assert_str_eq(p.item[4].name, "g");
    ck_assert_str_eq(p.item[4].value, "\xe2\x82\xac");
    /* the decoded strings live in the one storage block */
    for (size_t i = 0; i < p.count; i++) {
        ck_assert_ptr_nonnull(p.item[i].name);
        ck_assert(p.item[i].name >= p.storage && p.item[i].value >= p.storage);
    }
    iotgw_mqtt_props_free(&p);

    /* encoded separators are data, and duplicates are kept (get returns the first) */
    ck_assert_int_eq(props("k%26=v%3D1&k%26=2", &p, NULL), 0);
    ck_assert_uint_eq(p.count, 2);
    ck_assert_str_eq(iotgw_mqtt_props_get(&p, "k&"), "v=1");
    ck_assert_str_eq(p.item[1].value, "2");
    iotgw_mqtt_props_free(&p);

    /* a bag that is not NUL-terminated is read to its length only */
    ck_assert_int_eq(iotgw_mqtt_props_parse(U8("a=1&b=2"), 3, &p, NULL), 0);
    ck_assert_uint_eq(p.count, 1);
    ck_assert_str_eq(p.item[0].value, "1");
    iotgw_mqtt_props_free(&p);
}
END_TEST

START_TEST(bag_errors)
{
    static const struct {
        const char *bag, *text;
    } cases[] = {
        {"a=%zz", "property bag: the value of the item at offset 0 has a bad percent-escape ('%' must be "
                  "followed by two hex digits, and %00 is not allowed)"},
        {"a=1&b=%2", "property bag: the value of the item at offset 4 has a bad percent-escape ('%' must be "
                     "followed by two hex digits, and %00 is not allowed)"},
        {"x=1&%G1=x", "property bag: the name of the item at offset 4 has a bad percent-escape ('%' must be "
                      "followed by two hex digits, and %00 is not allowed)"},
        {"%", "property bag: the name of the item at offset 0 has a bad percent-escape ('%' must be followed "
              "by two hex digits, and %00 is not allowed)"},
        {"a=x%00y", "property bag: the value of the item at offset 0 has a bad percent-escape ('%' must be "
                    "followed by two hex digits, and %00 is not allowed)"},
        {"%00=1", "property bag: the name of the item at offset 0 has a bad percent-escape ('%' must be "
                  "followed by two hex digits, and %00 is not allowed)"},
        {"=x", "property bag: the item at offset 0 has an empty name"},
        {"a=1&&=2", "property bag: the item at offset 5 has an empty name"},
        {"a=1&=", "property bag: the item at offset 4 has an empty name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iotgw_mqtt_props p;
        iotgw_diag d;
        ck_assert_msg(props(cases[i].bag, &p, &d) == IOTGW_ERR_MQTT_TOPIC, "accepted %s", cases[i].bag);
        ck_assert_str_eq(d.text, cases[i].text);
        ck_assert_ptr_null(p.storage); /* nothing to free */
        ck_assert_uint_eq(p.count, 0);
    }
}
END_TEST

START_TEST(bag_property_count_limit)
{
    char bag[IOTGW_MQTT_MAX_PROPS * 8 + 16];
    size_t n = 0;
    for (int i = 0; i < IOTGW_MQTT_MAX_PROPS; i++)
        n += (size_t)snprintf(bag + n, sizeof bag - n, "%sp%d=%d", i ? "&" : "", i, i);
    iotgw_mqtt_props p;
    ck_assert_int_eq(iotgw_mqtt_props_parse(U8(bag), n, &p, NULL), 0);
    ck_assert_uint_eq(p.count, IOTGW_MQTT_MAX_PROPS);
    ck_assert_str_eq(iotgw_mqtt_props_get(&p, "p99"), "99");
    iotgw_mqtt_props_free(&p);

    snprintf(bag + n, sizeof bag - n, "&&&"); /* empty items do not count */
    ck_assert_int_eq(iotgw_mqtt_props_parse(U8(bag), n + 3, &p, NULL), 0);
    iotgw_mqtt_props_free(&p);

    snprintf(bag + n, sizeof bag - n, "&last");
    iotgw_diag d;
    ck_assert_int_eq(iotgw_mqtt_props_parse(U8(bag), n + 5, &p, &d), IOTGW_ERR_MQTT_TOPIC);
    ck_assert_str_eq(d.text, "property bag has more than 100 properties");
    ck_assert_ptr_null(p.storage);
}
END_TEST

START_TEST(bag_format_and_round_trip)
{
    static const iotgw_mqtt_prop items[] = {
        {"$.mid", "abc"},
        {"$.ct", "application/json"},
        {"$.ce", "utf-8"},
        {"a b&c=d", "x&y=z%20 +"},
        {"unreserved-_.!~*'()", "A-Z_a.z!0~9*'()"},
        {"\xc3\xbc", "\xe2\x82\xac"},
        {"empty", ""},
        {"null", NULL},
    };
    size_t n = sizeof items / sizeof items[0];
    char *bag = iotgw_mqtt_props_format(items, n);
    ck_assert_str_eq(bag,
                     "%24.mid=abc&%24.ct=application%2Fjson&%24.ce=utf-8&a%20b%26c%3Dd=x%26y%3Dz%2520%20%"
                     "2B&unreserved-_.!~*'()=A-Z_a.z!0~9*'()&%C3%BC=%E2%82%AC&empty=&null=");
    iotgw_mqtt_props p;
    ck_assert_int_eq(props(bag, &p, NULL), 0);
    ck_assert_uint_eq(p.count, n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(p.item[i].name, items[i].name);
        ck_assert_str_eq(p.item[i].value, items[i].value ? items[i].value : "");
    }
    iotgw_mqtt_props_free(&p);
    free(bag);

    bag = iotgw_mqtt_props_format(items, 0);
    ck_assert_str_eq(bag, "");
    free(bag);

    static const iotgw_mqtt_prop nameless[] = {{"a", "1"}, {"", "2"}};
    ck_assert_ptr_null(iotgw_mqtt_props_format(nameless, 2)); /* "=2" would not parse back */
}
END_TEST

/* ------------------------------------------------------------------ what the hub publishes */

START_TEST(hub_topics_exact)
{
    static const iotgw_mqtt_prop c2d[] = {{"$.mid", "m-1"}, {"$.to", "/devices/d1/messages/devicebound"}};
    char *bag = iotgw_mqtt_props_format(c2d, 2);
    struct {
        char *got;
        const char *want;
    } cases[] = {
        {iotgw_iothub_c2d_topic("d1", bag),
         "devices/d1/messages/devicebound/%24.mid=m-1&%24.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound"},
        {iotgw_iothub_c2d_topic("d1", NULL), "devices/d1/messages/devicebound/"},
        {iotgw_iothub_c2d_topic("d1", ""), "devices/d1/messages/devicebound/"},
        {iotgw_iothub_c2d_topic("a$b%c", "x=1"), "devices/a$b%c/messages/devicebound/x=1"}, /* placed raw */
        {iotgw_iothub_method_topic("reboot", "1"), "$iothub/methods/POST/reboot/?$rid=1"},
        {iotgw_iothub_method_topic("get.status", "a b"), "$iothub/methods/POST/get.status/?$rid=a b"},
        {iotgw_iothub_twin_response_topic(200, "7", -1), "$iothub/twin/res/200/?$rid=7"},
        {iotgw_iothub_twin_response_topic(204, "7", 12), "$iothub/twin/res/204/?$rid=7&$version=12"},
        {iotgw_iothub_twin_response_topic(400, "r", 0), "$iothub/twin/res/400/?$rid=r&$version=0"},
        {iotgw_iothub_desired_topic(3), "$iothub/twin/PATCH/properties/desired/?$version=3"},
        {iotgw_iothub_desired_topic(INT64_MAX),
         "$iothub/twin/PATCH/properties/desired/?$version=9223372036854775807"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_ptr_nonnull(cases[i].got);
        ck_assert_str_eq(cases[i].got, cases[i].want);
        free(cases[i].got);
    }
    free(bag);
}
END_TEST

START_TEST(hub_topics_mqtt_cannot_carry)
{
    /* IoT Hub allows '+' and '#' in ids, but a topic name cannot hold a wildcard */
    ck_assert_ptr_null(iotgw_iothub_c2d_topic("a+b", NULL));
    ck_assert_ptr_null(iotgw_iothub_c2d_topic("a#b", NULL));
    ck_assert_ptr_null(iotgw_iothub_c2d_topic("", NULL));
    ck_assert_ptr_null(iotgw_iothub_method_topic("m#", "1"));
    ck_assert_ptr_null(iotgw_iothub_method_topic("m", ""));
    ck_assert_ptr_null(iotgw_iothub_twin_response_topic(200, "", -1));
    char *big = malloc(70000);
    memset(big, 'd', 69999);
    big[69999] = '\0';
    ck_assert_ptr_null(iotgw_iothub_c2d_topic(big, NULL));
    static const char *const max = "devices/%s/messages/devicebound/";
    size_t room = 65535 - (strlen(max) - 2);
    big[room] = '\0';
    char *t = iotgw_iothub_c2d_topic(big, NULL);
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(strlen(t), 65535);
    free(t);
    free(big);
}
END_TEST

START_TEST(what_the_hub_sends_parses_back)
{
    /* A C2D topic's bag, cut after devicebound/, is a bag the parser takes. */
    static const iotgw_mqtt_prop c2d[] = {{"$.mid", "m-1"}, {"temp unit", "°C"}};
    char *bag = iotgw_mqtt_props_format(c2d, 2);
    char *topic = iotgw_iothub_c2d_topic("d1", bag);
    const char *b = topic + strlen("devices/d1/messages/devicebound/");
    iotgw_mqtt_props p;
    ck_assert_int_eq(props(b, &p, NULL), 0);
    ck_assert_str_eq(iotgw_mqtt_props_get(&p, "temp unit"), "°C");
    iotgw_mqtt_props_free(&p);
    free(topic);
    free(bag);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("iothub_mqtt");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, username_from_each_sdk);
    tcase_add_test(tc, username_module_and_short_forms);
    tcase_add_test(tc, username_errors_say_which_part);
    tcase_add_test(tc, telemetry_topics);
    tcase_add_test(tc, telemetry_bag_with_system_properties);
    tcase_add_test(tc, method_and_twin_topics_with_odd_rids);
    tcase_add_test(tc, publish_topics_refused);
    tcase_add_test(tc, diagnostics_quote_one_short_line);
    tcase_add_test(tc, filters_accepted);
    tcase_add_test(tc, filters_refused);
    tcase_add_test(tc, bag_parse_rules);
    tcase_add_test(tc, bag_errors);
    tcase_add_test(tc, bag_property_count_limit);
    tcase_add_test(tc, bag_format_and_round_trip);
    tcase_add_test(tc, hub_topics_exact);
    tcase_add_test(tc, hub_topics_mqtt_cannot_carry);
    tcase_add_test(tc, what_the_hub_sends_parses_back);
    suite_add_tcase(s, tc);
    return s;
}
