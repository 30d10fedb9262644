/* SAS tokens: vectors computed independently (Python's hmac), every SDK's sr spelling,
 * expiry on an injected clock, tampering, malformed tokens, resource coverage. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/sas.h"
#include "tests/unit/check_main.h"

/* base64 of "0123456789abcdef0123456789abcdef" */
#define KEY       "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define OTHER_KEY "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="
#define HOST      "myhub.azure-devices.net"
#define NOW       1699990000ULL
#define SE        1700000000ULL

/* Node/C# style: sr = encodeURIComponent("myhub.azure-devices.net/devices/dev+1") */
#define NODE_TOKEN                                                                                           \
    "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev%2B1"                                   \
    "&sig=ZBEkGFuLGaGi4By9fgEUpYdLW8r5xaMaKbKFisAkxuk%3D&se=1700000000"
/* C SDK style: raw sr, sig percent-encoded, fields in C's order */
#define C_TOKEN                                                                                              \
    "SharedAccessSignature sr=myhub.azure-devices.net/devices/dev+1"                                         \
    "&sig=oYBa34qkReeITinbAsr7t4%2FwXE1cBqn6B4cRBa8%2Bvzo%3D&se=1700000000&skn="

static int verify(const char *token, const char *key, unsigned long long now, iotgw_diag *d)
{
    iotgw_sas_token t;
    int rc = iotgw_sas_parse(token, &t, d);
    if (rc)
        return rc;
    rc = iotgw_sas_verify(&t, key, now, d);
    iotgw_sas_token_clear(&t);
    return rc;
}

START_TEST(build_matches_independent_vector)
{
    char *tok = NULL;
    ck_assert_int_eq(iotgw_sas_build(HOST "/devices/dev+1", KEY, SE, NULL, &tok, NULL), 0);
    ck_assert_str_eq(tok, NODE_TOKEN);
    free(tok);
}
END_TEST

START_TEST(verify_accepts_each_sdk_spelling)
{
    ck_assert_int_eq(verify(NODE_TOKEN, KEY, NOW, NULL), 0);
    /* C's token without the empty skn */
    ck_assert_int_eq(verify("SharedAccessSignature sr=myhub.azure-devices.net/devices/dev+1"
                            "&sig=oYBa34qkReeITinbAsr7t4%2FwXE1cBqn6B4cRBa8%2Bvzo%3D&se=1700000000",
                            KEY, NOW, NULL),
                     0);
    /* Java's field order: sig, se, sr */
    ck_assert_int_eq(verify("SharedAccessSignature sig=ZBEkGFuLGaGi4By9fgEUpYdLW8r5xaMaKbKFisAkxuk%3D"
                            "&se=1700000000&sr=myhub.azure-devices.net%2Fdevices%2Fdev%2B1",
                            KEY, NOW, NULL),
                     0);
}
END_TEST

START_TEST(empty_field_is_malformed)
{
    iotgw_diag d;
    ck_assert_int_eq(verify(C_TOKEN, KEY, NOW, &d), IOTGW_ERR_SAS_MALFORMED);
    ck_assert_str_eq(d.text, "SAS token field 'skn' is empty");
}
END_TEST

START_TEST(round_trip_with_policy_name)
{
    char *tok = NULL;
    ck_assert_int_eq(iotgw_sas_build(HOST, KEY, SE, "iothubowner", &tok, NULL), 0);
    iotgw_sas_token t;
    ck_assert_int_eq(iotgw_sas_parse(tok, &t, NULL), 0);
    ck_assert_str_eq(t.skn, "iothubowner");
    ck_assert_str_eq(t.sr, HOST);
    ck_assert_uint_eq(t.se, SE);
    ck_assert_int_eq(iotgw_sas_verify(&t, KEY, NOW, NULL), 0);
    iotgw_sas_token_clear(&t);
    free(tok);
}
END_TEST

START_TEST(expiry_uses_the_given_clock)
{
    iotgw_diag d;
    ck_assert_int_eq(verify(NODE_TOKEN, KEY, SE - 1, NULL), 0);
    ck_assert_int_eq(verify(NODE_TOKEN, KEY, SE, &d), IOTGW_ERR_SAS_EXPIRED);
    ck_assert_ptr_nonnull(strstr(d.text, "expired at 1700000000"));
    ck_assert_int_eq(verify(NODE_TOKEN, KEY, SE + 3600, NULL), IOTGW_ERR_SAS_EXPIRED);
}
END_TEST

START_TEST(wrong_key_and_tampering_are_refused)
{
    iotgw_diag d;
    ck_assert_int_eq(verify(NODE_TOKEN, OTHER_KEY, NOW, &d), IOTGW_ERR_SAS_SIGNATURE);
    ck_assert_ptr_null(strstr(d.text, "ZBEk")); /* never echo the signature */
    /* another device in sr */
    ck_assert_int_eq(verify("SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev%2B2"
                            "&sig=ZBEkGFuLGaGi4By9fgEUpYdLW8r5xaMaKbKFisAkxuk%3D&se=1700000000",
                            KEY, NOW, NULL),
                     IOTGW_ERR_SAS_SIGNATURE);
    /* a later expiry */
    ck_assert_int_eq(verify("SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev%2B1"
                            "&sig=ZBEkGFuLGaGi4By9fgEUpYdLW8r5xaMaKbKFisAkxuk%3D&se=1800000000",
                            KEY, NOW, NULL),
                     IOTGW_ERR_SAS_SIGNATURE);
    /* sr spelled differently from what was signed (decoded) */
    ck_assert_int_eq(verify("SharedAccessSignature sr=myhub.azure-devices.net/devices/dev+1"
                            "&sig=ZBEkGFuLGaGi4By9fgEUpYdLW8r5xaMaKbKFisAkxuk%3D&se=1700000000",
                            KEY, NOW, NULL),
                     IOTGW_ERR_SAS_SIGNATURE);
    /* truncated and garbage signatures */
    ck_assert_int_eq(verify("SharedAccessSignature sr=a&sig=ZBEk&se=1700000000", KEY, NOW, NULL),
                     IOTGW_ERR_SAS_SIGNATURE);
    ck_assert_int_eq(verify("SharedAccessSignature sr=a&sig=!!!!&se=1700000000", KEY, NOW, NULL),
                     IOTGW_ERR_SAS_SIGNATURE);
}
END_TEST

START_TEST(bad_key_is_reported_as_such)
{
    iotgw_diag d;
    ck_assert_int_eq(verify(NODE_TOKEN, "not base64!", NOW, &d), IOTGW_ERR_SAS_BAD_KEY);
    ck_assert_int_eq(verify(NODE_TOKEN, "", NOW, &d), IOTGW_ERR_SAS_BAD_KEY);
    char *tok = NULL;
    ck_assert_int_eq(iotgw_sas_build(HOST, "@@@@", SE, NULL, &tok, NULL), IOTGW_ERR_SAS_BAD_KEY);
    ck_assert_ptr_null(tok);
}
END_TEST

START_TEST(malformed_tokens_name_the_problem)
{
    static const struct {
        const char *token, *text;
    } cases[] = {
        {"sr=a&sig=b&se=1", "SAS token does not start with 'SharedAccessSignature '"},
        {"SharedAccessSignature sig=b&se=1", "SAS token has no 'sr' field"},
        {"SharedAccessSignature sr=a&se=1", "SAS token has no 'sig' field"},
        {"SharedAccessSignature sr=a&sig=b", "SAS token has no 'se' field"},
        {"SharedAccessSignature sr=a&sig=b&se=1&sr=c", "SAS token has field 'sr' twice"},
        {"SharedAccessSignature sr=a&sig=b&se=12x", "SAS token field 'se' is not a number of seconds"},
        {"SharedAccessSignature sr=a&sig=b&se=99999999999999999999999",
         "SAS token field 'se' is not a number of seconds"},
        {"SharedAccessSignature sr=a&sig=b&se=-1", "SAS token field 'se' is not a number of seconds"},
        {"SharedAccessSignature sr=a&sig&se=1", "SAS token field at offset 27 has no '='"},
        {"SharedAccessSignature sr=a&sig=%zz&se=1", "SAS token field 'sig' is badly percent-encoded"},
        {"SharedAccessSignature sr=&sig=b&se=1", "SAS token field 'sr' is empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iotgw_sas_token t;
        iotgw_diag d;
        ck_assert_int_eq(iotgw_sas_parse(cases[i].token, &t, &d), IOTGW_ERR_SAS_MALFORMED);
        ck_assert_str_eq(d.text, cases[i].text);
        ck_assert_ptr_null(t.sr); /* nothing left allocated */
    }
    char *huge = malloc(5000);
    memset(huge, 'a', 4999);
    huge[4999] = '\0';
    memcpy(huge, "SharedAccessSignature ", 22);
    iotgw_sas_token t;
    ck_assert_int_eq(iotgw_sas_parse(huge, &t, NULL), IOTGW_ERR_SAS_MALFORMED);
    free(huge);
}
END_TEST

START_TEST(unknown_fields_are_ignored)
{
    iotgw_sas_token t;
    ck_assert_int_eq(iotgw_sas_parse(NODE_TOKEN "&future=1", &t, NULL), 0);
    ck_assert_int_eq(iotgw_sas_verify(&t, KEY, NOW, NULL), 0);
    iotgw_sas_token_clear(&t);
}
END_TEST

static int covers(const char *sr, const char *host, const char *dev, const char *mod)
{
    iotgw_sas_token t = {.sr = (char *)sr};
    return iotgw_sas_covers(&t, host, dev, mod, NULL);
}

START_TEST(resource_coverage_by_segments)
{
    /* device token, every encoding */
    ck_assert_int_eq(covers("myhub.azure-devices.net/devices/dev+1", HOST, "dev+1", NULL), 0);
    ck_assert_int_eq(covers("myhub.azure-devices.net%2Fdevices%2Fdev%2B1", HOST, "dev+1", NULL), 0);
    ck_assert_int_eq(covers("MyHub.Azure-Devices.NET%2fdevices%2fdev%2b1", HOST, "dev+1", NULL), 0);
    ck_assert_int_eq(covers("myhub.azure-devices.net/Devices/dev+1", HOST, "dev+1", NULL), 0);
    /* '+' is never a space */
    ck_assert_int_eq(covers("myhub.azure-devices.net/devices/dev+1", HOST, "dev 1", NULL),
                     IOTGW_ERR_SAS_RESOURCE);
    /* whole segments only, ids case-sensitive */
    ck_assert_int_eq(covers("myhub.azure-devices.net/devices/dev", HOST, "dev+1", NULL),
                     IOTGW_ERR_SAS_RESOURCE);
    ck_assert_int_eq(covers("myhub.azure-devices.net/devices/DEV+1", HOST, "dev+1", NULL),
                     IOTGW_ERR_SAS_RESOURCE);
    ck_assert_int_eq(covers("myhub.azure-devices.net/devices/dev+1", HOST, "dev+12", NULL),
                     IOTGW_ERR_SAS_RESOURCE);
    /* hub-wide and all-devices tokens */
    ck_assert_int_eq(covers("myhub.azure-devices.net", HOST, "anything", NULL), 0);
    ck_assert_int_eq(covers("myhub.azure-devices.net/devices", HOST, "anything", "m1"), 0);
    /* modules: a device token covers its modules, a module token only its module */
    ck_assert_int_eq(covers("myhub.azure-devices.net/devices/d/modules/m1", HOST, "d", "m1"), 0);
    ck_assert_int_eq(covers("myhub.azure-devices.net/devices/d", HOST, "d", "m1"), 0);
    ck_assert_int_eq(covers("myhub.azure-devices.net/devices/d/modules/m1", HOST, "d", "m2"),
                     IOTGW_ERR_SAS_RESOURCE);
    ck_assert_int_eq(covers("myhub.azure-devices.net/devices/d/modules/m1", HOST, "d", NULL),
                     IOTGW_ERR_SAS_RESOURCE);
    /* other hosts: a gateway name is checked by calling again with that name */
    ck_assert_int_eq(covers("otherhub.azure-devices.net/devices/d", HOST, "d", NULL), IOTGW_ERR_SAS_RESOURCE);
    ck_assert_int_eq(covers("myhub.azure-devices.net.evil/devices/d", HOST, "d", NULL),
                     IOTGW_ERR_SAS_RESOURCE);
    ck_assert_int_eq(covers("edge-gw/devices/d", "edge-gw", "d", NULL), 0);
    ck_assert_int_eq(covers("myhub.azure-devices.net/twins/d", HOST, "d", NULL), IOTGW_ERR_SAS_RESOURCE);
    ck_assert_int_eq(covers("myhub.azure-devices.net/devices/d%zz", HOST, "d", NULL), IOTGW_ERR_SAS_RESOURCE);
}
END_TEST

static int names(const char *sr, const char *host, const char *dev, const char *mod)
{
    iotgw_sas_token t = {.sr = (char *)sr};
    return iotgw_sas_names(&t, host, dev, mod, NULL);
}

/* A device's own token must name exactly its resource: what covers it is not enough. */
START_TEST(resource_named_exactly)
{
    ck_assert_int_eq(names("myhub.azure-devices.net/devices/dev+1", HOST, "dev+1", NULL), 0);
    ck_assert_int_eq(names("MyHub.Azure-Devices.NET%2fdevices%2fdev%2b1", HOST, "dev+1", NULL), 0);
    ck_assert_int_eq(names("myhub.azure-devices.net/devices/d/modules/m1", HOST, "d", "m1"), 0);
    ck_assert_int_eq(names("myhub.azure-devices.net", HOST, "d", NULL), IOTGW_ERR_SAS_RESOURCE);
    ck_assert_int_eq(names("myhub.azure-devices.net/devices", HOST, "d", NULL), IOTGW_ERR_SAS_RESOURCE);
    ck_assert_int_eq(names("myhub.azure-devices.net/devices/d", HOST, "d", "m1"), IOTGW_ERR_SAS_RESOURCE);
    ck_assert_int_eq(names("myhub.azure-devices.net/devices/d/modules/m1", HOST, "d", NULL),
                     IOTGW_ERR_SAS_RESOURCE);
    ck_assert_int_eq(names("myhub.azure-devices.net/devices/dx", HOST, "d", NULL), IOTGW_ERR_SAS_RESOURCE);
    iotgw_diag d = {0};
    iotgw_sas_token t = {.sr = "myhub.azure-devices.net"};
    ck_assert_int_eq(iotgw_sas_names(&t, HOST, "d", NULL, &d), IOTGW_ERR_SAS_RESOURCE);
    ck_assert_str_eq(d.text,
                     "SAS token resource 'myhub.azure-devices.net' is not myhub.azure-devices.net/devices/d");
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("sas");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, build_matches_independent_vector);
    tcase_add_test(tc, verify_accepts_each_sdk_spelling);
    tcase_add_test(tc, empty_field_is_malformed);
    tcase_add_test(tc, round_trip_with_policy_name);
    tcase_add_test(tc, expiry_uses_the_given_clock);
    tcase_add_test(tc, wrong_key_and_tampering_are_refused);
    tcase_add_test(tc, bad_key_is_reported_as_such);
    tcase_add_test(tc, malformed_tokens_name_the_problem);
    tcase_add_test(tc, unknown_fields_are_ignored);
    tcase_add_test(tc, resource_coverage_by_segments);
    tcase_add_test(tc, resource_named_exactly);
    suite_add_tcase(s, tc);
    return s;
}
