/* transport/amqp_map: lookups in application properties and annotations find string
 * and symbol keys alike, and never hand back a value cut to fit the caller's buffer. */
#include <check.h>
#include <proton/codec.h>
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

Suite *suite_under_test(void)
{
    Suite *s = suite_create("amqp_map");
    TCase *tc = tcase_create("amqp_map");
    tcase_add_test(tc, text_found_under_string_and_symbol_keys);
    tcase_add_test(tc, text_too_long_for_the_buffer_is_not_cut);
    suite_add_tcase(s, tc);
    return s;
}
