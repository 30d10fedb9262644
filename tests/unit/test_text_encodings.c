/* base64, percent-encoding and identity checks. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/base64.h"
#include "codecs/identity.h"
#include "codecs/percent.h"
#include "tests/unit/check_main.h"

static char *b64(const char *in)
{
    size_t n = strlen(in);
    char *out = malloc(iotgw_base64_encoded_len(n) + 1);
    iotgw_base64_encode((const uint8_t *)in, n, out);
    return out;
}

static int unb64(const char *in, int flags, char *out, size_t *len)
{
    return iotgw_base64_decode(in, strlen(in), (uint8_t *)out, len, flags, NULL);
}

START_TEST(base64_rfc4648_vectors)
{
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *e = b64(plain[i]);
        ck_assert_str_eq(e, coded[i]);
        free(e);
        char out[16];
        size_t len = 99;
        ck_assert_int_eq(unb64(coded[i], IOTGW_BASE64_STRICT, out, &len), 0);
        ck_assert_uint_eq(len, strlen(plain[i]));
        ck_assert(memcmp(out, plain[i], len) == 0);
    }
}
END_TEST

START_TEST(base64_all_byte_values_round_trip)
{
    uint8_t in[256], back[256 + 3];
    char text[400];
    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)i;
    for (size_t n = 0; n <= 256; n += 37) {
        iotgw_base64_encode(in, n, text);
        size_t len = 0;
        ck_assert_int_eq(iotgw_base64_decode(text, strlen(text), back, &len, 0, NULL), 0);
        ck_assert_uint_eq(len, n);
        ck_assert(memcmp(in, back, n) == 0);
    }
}
END_TEST

START_TEST(base64_rejects_bad_input)
{
    char out[16];
    size_t len;
    iotgw_diag d;
    ck_assert_int_eq(iotgw_base64_decode("Zm9v!mFy", 8, (uint8_t *)out, &len, 0, &d), IOTGW_ERR_BASE64);
    ck_assert_ptr_nonnull(strstr(d.text, "offset 4"));
    ck_assert_int_eq(unb64("Zm9", 0, out, &len), IOTGW_ERR_BASE64);    /* missing padding */
    ck_assert_int_eq(unb64("Z===", 0, out, &len), IOTGW_ERR_BASE64);   /* too much padding */
    ck_assert_int_eq(unb64("Zg=", 0, out, &len), IOTGW_ERR_BASE64);    /* bad length */
    ck_assert_int_eq(unb64("Zm9v_w", 0, out, &len), IOTGW_ERR_BASE64); /* url alphabet, strict */
    ck_assert_int_eq(unb64("Zm=v", 0, out, &len), IOTGW_ERR_BASE64);   /* '=' inside */
    ck_assert_int_eq(unb64("Zm9vY", IOTGW_BASE64_LENIENT, out, &len), IOTGW_ERR_BASE64); /* 1 char left */
}
END_TEST

START_TEST(base64_lenient_accepts_url_alphabet_without_padding)
{
    char out[16];
    size_t len = 0;
    ck_assert_int_eq(unb64("-_8", IOTGW_BASE64_LENIENT, out, &len), 0);
    ck_assert_uint_eq(len, 2);
    ck_assert_uint_eq((uint8_t)out[0], 0xfb);
    ck_assert_uint_eq((uint8_t)out[1], 0xff);
}
END_TEST

START_TEST(percent_encode_like_encodeURIComponent)
{
    char *e = iotgw_percent_encode("hub.net/devices/a b+c%~*'()!");
    ck_assert_str_eq(e, "hub.net%2Fdevices%2Fa%20b%2Bc%25~*'()!");
    free(e);
    e = iotgw_percent_encode("\xc3\xa9");
    ck_assert_str_eq(e, "%C3%A9");
    free(e);
}
END_TEST

START_TEST(percent_decode_keeps_plus_and_rejects_bad_escapes)
{
    char *out = NULL;
    ck_assert_int_eq(iotgw_percent_decode("a+b%2Fc%2f", 10, &out, NULL), 0);
    ck_assert_str_eq(out, "a+b/c/");
    free(out);
    iotgw_diag d;
    ck_assert_int_eq(iotgw_percent_decode("ab%2", 4, &out, &d), IOTGW_ERR_PERCENT_ENCODING);
    ck_assert_ptr_nonnull(strstr(d.text, "offset 2"));
    ck_assert_int_eq(iotgw_percent_decode("%zz", 3, &out, NULL), IOTGW_ERR_PERCENT_ENCODING);
    ck_assert_int_eq(iotgw_percent_decode("%00", 3, &out, NULL), IOTGW_ERR_PERCENT_ENCODING);
    ck_assert_int_eq(iotgw_percent_decode("%", 1, &out, NULL), IOTGW_ERR_PERCENT_ENCODING);
}
END_TEST

START_TEST(identity_rules_follow_iot_hub)
{
    iotgw_diag d;
    ck_assert_int_eq(iotgw_identity_check("alarm-agent_1.x+y%#*?!(),:=@$'", "DeviceId", NULL), 0);
    ck_assert_int_eq(iotgw_identity_check("", "DeviceId", &d), IOTGW_ERR_INVALID_ARG);
    ck_assert_str_eq(d.text, "DeviceId is empty");
    ck_assert_int_eq(iotgw_identity_check("a/b", "DeviceId", &d), IOTGW_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(d.text, "offset 1"));
    ck_assert_int_eq(iotgw_identity_check("a b", "ModuleId", NULL), IOTGW_ERR_INVALID_ARG);
    char long_id[130];
    memset(long_id, 'a', 129);
    long_id[129] = '\0';
    ck_assert_int_eq(iotgw_identity_check(long_id, "DeviceId", NULL), IOTGW_ERR_INVALID_ARG);
    long_id[128] = '\0';
    ck_assert_int_eq(iotgw_identity_check(long_id, "DeviceId", NULL), 0);
}
END_TEST

START_TEST(error_names_and_texts)
{
    ck_assert_str_eq(iotgw_errname(IOTGW_ERR_SAS_EXPIRED), "IOTGW_ERR_SAS_EXPIRED");
    ck_assert_str_eq(iotgw_strerror(IOTGW_ERR_FRAME_TOO_LARGE), "frame larger than the maximum frame size");
    ck_assert_str_eq(iotgw_errname(-9999), "IOTGW_ERR_UNKNOWN");
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("text_encodings");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, base64_rfc4648_vectors);
    tcase_add_test(tc, base64_all_byte_values_round_trip);
    tcase_add_test(tc, base64_rejects_bad_input);
    tcase_add_test(tc, base64_lenient_accepts_url_alphabet_without_padding);
    tcase_add_test(tc, percent_encode_like_encodeURIComponent);
    tcase_add_test(tc, percent_decode_keeps_plus_and_rejects_bad_escapes);
    tcase_add_test(tc, identity_rules_follow_iot_hub);
    tcase_add_test(tc, error_names_and_texts);
    suite_add_tcase(s, tc);
    return s;
}
