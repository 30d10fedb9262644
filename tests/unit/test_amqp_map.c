/* transport/amqp_map: lookups in application properties and annotations find string
 * and symbol keys alike, and never hand back a value cut to fit the caller's buffer;
 * message ids of every type IoT Hub allows read as text. */
#include <check.h>
#include <proton/codec.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check_main.h"
#include "transport/amqp_map.h"

/* {"IoThub-methodname": name, symbol "operation": "PATCH", "status": 200} */
static pn_data_t *sample_map(const char *name)
{
    pn_data_t *d = pn_data(0);
    pn_data_put_map(d);
    pn_data_enter(d);
    pn_data_put_string(d, pn_bytes(strlen("IoThub-methodname"), "IoThub-methodname"));
    pn_data_put_string(d, pn_bytes(strlen(name), name));
    pn_data_put_symbol(d, pn_bytes(strlen("operation"), "operation"));
    pn_data_put_string(d, pn_bytes(strlen("PATCH"), "PATCH"));
    pn_data_put_string(d, pn_bytes(strlen("status"), "status"));
    pn_data_put_int(d, 200);
    pn_data_exit(d);
    return d;
}

START_TEST(text_found_under_string_and_symbol_keys)
{
    pn_data_t *d = sample_map("rebootDevice");
    char buf[32];
    ck_assert_str_eq(iotgw_map_text(d, "IoThub-methodname", buf, sizeof buf), "rebootDevice");
    ck_assert_str_eq(iotgw_map_text(d, "operation", buf, sizeof buf), "PATCH");
    ck_assert_ptr_null(iotgw_map_text(d, "resource", buf, sizeof buf));
    ck_assert_ptr_null(iotgw_map_text(d, "status", buf, sizeof buf)); /* an int, not text */
    int64_t status = 0;
    ck_assert_int_eq(iotgw_map_int(d, "status", &status), 0);
    ck_assert_int_eq(status, 200);
    pn_data_free(d);
}
END_TEST

START_TEST(text_too_long_for_the_buffer_is_not_cut)
{
    /* a 128-character method name fits 129 bytes; one more character is refused,
     * never passed on as its first 128 */
    char name[130];
    memset(name, 'm', 129);
    name[128] = '\0';
    pn_data_t *d = sample_map(name);
    char buf[129];
    ck_assert_ptr_nonnull(iotgw_map_text(d, "IoThub-methodname", buf, sizeof buf));
    ck_assert_uint_eq(strlen(buf), 128);
    pn_data_free(d);
    name[128] = 'm';
    name[129] = '\0';
    d = sample_map(name);
    ck_assert_ptr_null(iotgw_map_text(d, "IoThub-methodname", buf, sizeof buf));
    pn_data_free(d);
}
END_TEST

START_TEST(message_ids_as_text)
{
    char *t = iotgw_atom_text((pn_atom_t){.type = PN_STRING, .u.as_bytes = pn_bytes(5, "m-001")});
    ck_assert_str_eq(t, "m-001");
    free(t);
    t = iotgw_atom_text((pn_atom_t){.type = PN_ULONG, .u.as_ulong = 18446744073709551615u});
    ck_assert_str_eq(t, "18446744073709551615");
    free(t);
    pn_atom_t u = {.type = PN_UUID};
    const uint8_t b[16] = {0x3f, 0x0a, 0x9c, 0x1e, 0x7b, 0x2d, 0x4e, 0x5f,
                           0x8a, 0x6b, 0x0c, 0x1d, 0x2e, 0x3f, 0x4a, 0x5b};
    memcpy(u.u.as_uuid.bytes, b, 16);
    t = iotgw_atom_text(u);
    ck_assert_str_eq(t, "3f0a9c1e-7b2d-4e5f-8a6b-0c1d2e3f4a5b");
    free(t);
    t = iotgw_atom_text((pn_atom_t){.type = PN_NULL});
    ck_assert_str_eq(t, "");
    free(t);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("amqp_map");
    TCase *tc = tcase_create("amqp_map");
    tcase_add_test(tc, text_found_under_string_and_symbol_keys);
    tcase_add_test(tc, text_too_long_for_the_buffer_is_not_cut);
    tcase_add_test(tc, message_ids_as_text);
    suite_add_tcase(s, tc);
    return s;
}
