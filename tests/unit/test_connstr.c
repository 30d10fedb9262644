/* Connection strings: each kind the SDKs accept, and errors that name the field; and the
 * HOST:PORT addresses of command lines and configuration (codecs/hostport). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/connstr.h"
#include "codecs/hostport.h"
#include "tests/unit/check_main.h"

#define KEY "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

START_TEST(device_string)
{
    iotgw_connstr cs;
    ck_assert_int_eq(
        iotgw_connstr_parse("HostName=hub.azure-devices.net;DeviceId=alarm-agent-1;SharedAccessKey=" KEY, &cs,
                            NULL),
        0);
    ck_assert_int_eq(cs.kind, IOTGW_CONNSTR_DEVICE);
    ck_assert_str_eq(cs.host_name, "hub.azure-devices.net");
    ck_assert_str_eq(cs.device_id, "alarm-agent-1");
    ck_assert_str_eq(cs.shared_access_key, KEY); /* '=' inside the value is kept */
    ck_assert_ptr_null(cs.module_id);
    char *text = iotgw_connstr_format(&cs);
    ck_assert_str_eq(text, "HostName=hub.azure-devices.net;DeviceId=alarm-agent-1;SharedAccessKey=" KEY);
    free(text);
    iotgw_connstr_clear(&cs);
}
END_TEST

START_TEST(module_gateway_and_trailing_separator)
{
    iotgw_connstr cs;
    ck_assert_int_eq(iotgw_connstr_parse("HostName=hub.net;DeviceId=d1;ModuleId=m1;SharedAccessKey=" KEY
                                         ";GatewayHostName=edge.local;",
                                         &cs, NULL),
                     0);
    ck_assert_int_eq(cs.kind, IOTGW_CONNSTR_MODULE);
    ck_assert_str_eq(cs.module_id, "m1");
    ck_assert_str_eq(cs.gateway_host_name, "edge.local");
    iotgw_connstr_clear(&cs);
}
END_TEST

START_TEST(service_string)
{
    iotgw_connstr cs;
    ck_assert_int_eq(iotgw_connstr_parse(
                         "HostName=hub.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" KEY, &cs, NULL),
                     0);
    ck_assert_int_eq(cs.kind, IOTGW_CONNSTR_SERVICE);
    ck_assert_str_eq(cs.shared_access_key_name, "iothubowner");
    char *text = iotgw_connstr_format(&cs);
    ck_assert_str_eq(text, "HostName=hub.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" KEY);
    free(text);
    iotgw_connstr_clear(&cs);
}
END_TEST

START_TEST(token_x509_and_policy_device_strings)
{
    iotgw_connstr cs;
    ck_assert_int_eq(
        iotgw_connstr_parse("HostName=hub.net;DeviceId=d;SharedAccessSignature=SharedAccessSignature "
                            "sr=hub.net%2Fdevices%2Fd&sig=abc%3D&se=1700000000",
                            &cs, NULL),
        0);
    ck_assert_str_eq(cs.shared_access_signature,
                     "SharedAccessSignature sr=hub.net%2Fdevices%2Fd&sig=abc%3D&se=1700000000");
    iotgw_connstr_clear(&cs);
    ck_assert_int_eq(iotgw_connstr_parse("HostName=hub.net;DeviceId=d;x509=true", &cs, NULL), 0);
    ck_assert_int_eq(cs.x509, 1);
    iotgw_connstr_clear(&cs);
    ck_assert_int_eq(
        iotgw_connstr_parse("HostName=hub.net;DeviceId=d;SharedAccessKeyName=device;SharedAccessKey=" KEY,
                            &cs, NULL),
        0);
    ck_assert_int_eq(cs.kind, IOTGW_CONNSTR_DEVICE);
    iotgw_connstr_clear(&cs);
}
END_TEST

START_TEST(errors_name_the_field)
{
    static const struct {
        const char *s;
        int code;
        const char *text;
    } cases[] = {
        {"DeviceId=d;SharedAccessKey=" KEY, IOTGW_ERR_CONNSTR_MISSING_FIELD, "HostName is missing"},
        {"HostName=h;DeviceId=d", IOTGW_ERR_CONNSTR_MISSING_FIELD,
         "one of SharedAccessKey, SharedAccessSignature or x509=true is needed"},
        {"HostName=h;SharedAccessKey=" KEY, IOTGW_ERR_CONNSTR_MISSING_FIELD,
         "DeviceId is missing (device string) or SharedAccessKeyName is missing (service string)"},
        {"HostName=h;SharedAccessKeyName=p", IOTGW_ERR_CONNSTR_MISSING_FIELD, "SharedAccessKey is missing"},
        {"HostName=h;ModuleId=m;SharedAccessKeyName=p;SharedAccessKey=" KEY, IOTGW_ERR_CONNSTR_MISSING_FIELD,
         "ModuleId needs a DeviceId"},
        {"hostname=h;DeviceId=d;SharedAccessKey=" KEY, IOTGW_ERR_CONNSTR_UNKNOWN_FIELD,
         "unknown field 'hostname' (field names are case-sensitive: did you mean 'HostName'?)"},
        {"HostName=h;DeviceId=d;SharedAccesKey=" KEY, IOTGW_ERR_CONNSTR_UNKNOWN_FIELD,
         "unknown field 'SharedAccesKey'"},
        {"HostName=h;HostName=i;DeviceId=d;SharedAccessKey=" KEY, IOTGW_ERR_CONNSTR_DUPLICATE_FIELD,
         "HostName is given twice"},
        {"HostName=;DeviceId=d;SharedAccessKey=" KEY, IOTGW_ERR_CONNSTR_BAD_VALUE, "HostName is empty"},
        {"HostName=h;DeviceId=d;SharedAccessKey=secret!", IOTGW_ERR_CONNSTR_BAD_VALUE,
         "SharedAccessKey is not valid base64"},
        {"HostName=h h;DeviceId=d;SharedAccessKey=" KEY, IOTGW_ERR_CONNSTR_BAD_VALUE,
         "HostName has a character not allowed in a host name at offset 1"},
        {"HostName=h;DeviceId=a/b;SharedAccessKey=" KEY, IOTGW_ERR_CONNSTR_BAD_VALUE,
         "DeviceId has a character IoT Hub does not allow (0x2f at offset 1)"},
        {"HostName=h;DeviceId=d;SharedAccessKey=" KEY ";x509=true", IOTGW_ERR_CONNSTR_CONFLICT,
         "use only one of SharedAccessKey, SharedAccessSignature and x509=true"},
        {"HostName=h;DeviceId=d;x509=yes", IOTGW_ERR_CONNSTR_BAD_VALUE, "x509 must be 'true' or 'false'"},
        {"HostName=h;DeviceId=d;SharedAccessSignature=sr=x", IOTGW_ERR_CONNSTR_BAD_VALUE,
         "SharedAccessSignature: SAS token does not start with 'SharedAccessSignature '"},
        {"HostName=h;DeviceId", IOTGW_ERR_CONNSTR_SYNTAX, "expected Key=Value at offset 11"},
        {"=h", IOTGW_ERR_CONNSTR_SYNTAX, "empty field name at offset 0"},
        {"HostName=h;DeviceId=d;SharedAccessKeyName=p;x509=true", IOTGW_ERR_CONNSTR_CONFLICT,
         "SharedAccessKeyName needs SharedAccessKey"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iotgw_connstr cs;
        iotgw_diag d;
        ck_assert_int_eq(iotgw_connstr_parse(cases[i].s, &cs, &d), cases[i].code);
        ck_assert_str_eq(d.text, cases[i].text);
        ck_assert_ptr_null(cs.host_name);
    }
}
END_TEST

START_TEST(secrets_never_appear_in_errors)
{
    iotgw_connstr cs;
    iotgw_diag d;
    ck_assert_int_eq(iotgw_connstr_parse("HostName=h;DeviceId=d;SharedAccessKey=topsecret#", &cs, &d),
                     IOTGW_ERR_CONNSTR_BAD_VALUE);
    ck_assert_ptr_null(strstr(d.text, "topsecret"));
}
END_TEST

START_TEST(oversize_string_is_refused)
{
    char *s = malloc(10000);
    memset(s, 'a', 9999);
    s[9999] = '\0';
    iotgw_connstr cs;
    ck_assert_int_eq(iotgw_connstr_parse(s, &cs, NULL), IOTGW_ERR_CONNSTR_SYNTAX);
    free(s);
}
END_TEST

START_TEST(host_and_port)
{
    char host[16];
    int port = -1;
    ck_assert_int_eq(iotgw_hostport_parse("127.0.0.1:443", host, sizeof host, &port), 0);
    ck_assert_str_eq(host, "127.0.0.1");
    ck_assert_int_eq(port, 443);
    ck_assert_int_eq(iotgw_hostport_parse("[::1]:0", host, sizeof host, &port), 0);
    ck_assert_str_eq(host, "::1");
    ck_assert_int_eq(port, 0);
    ck_assert_int_eq(iotgw_hostport_parse("localhost:65535", host, sizeof host, &port), 0);
    ck_assert_str_eq(host, "localhost");
    static const char *const bad[] = {
        "localhost", ":443",      "host:",     "host:65536",
        "host:-1",   "host:44x3", "host: 443", "::1:443",
        "[::1:443",  "[]:443",    NULL,        "a-name-longer-than-fifteen:1", /* does not fit host[16] */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        port = 7;
        ck_assert_msg(iotgw_hostport_parse(bad[i], host, sizeof host, &port) == IOTGW_ERR_INVALID_ARG,
                      "accepted \"%s\"", bad[i] ? bad[i] : "(null)");
        ck_assert_int_eq(port, 7); /* nothing written on refusal */
    }
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("connstr");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, device_string);
    tcase_add_test(tc, module_gateway_and_trailing_separator);
    tcase_add_test(tc, service_string);
    tcase_add_test(tc, token_x509_and_policy_device_strings);
    tcase_add_test(tc, errors_name_the_field);
    tcase_add_test(tc, secrets_never_appear_in_errors);
    tcase_add_test(tc, oversize_string_is_refused);
    tcase_add_test(tc, host_and_port);
    suite_add_tcase(s, tc);
    return s;
}
