/* Fleet sharding (codecs/shard): the hash that decides each device's home gateway, pinned
 * by fixed vectors (a change of the function moves devices between gateways and must fail
 * here), and StatefulSet pod names read as shard indexes. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "codecs/shard.h"
#include "tests/unit/check_main.h"

static uint32_t hash_of(const char *s)
{
    return iotgw_shard_hash(s, strlen(s));
}

START_TEST(fnv1a_matches_the_published_vectors)
{
    /* the FNV reference test suite's values for 32-bit FNV-1a */
    ck_assert_uint_eq(hash_of(""), 0x811c9dc5u);
    ck_assert_uint_eq(hash_of("a"), 0xe40c292cu);
    ck_assert_uint_eq(hash_of("foobar"), 0xbf9cf968u);
}
END_TEST

START_TEST(hash_of_device_ids_is_fixed)
{
    /* computed independently (Python) from the definition */
    ck_assert_uint_eq(hash_of("sim-0001"), 0x9c7a2b98u);
    ck_assert_uint_eq(hash_of("sim-0002"), 0x9f7a3051u);
    ck_assert_uint_eq(hash_of("alarm-agent-1"), 0x06e3db50u);
    ck_assert_uint_eq(hash_of("example-device-01"), 0x8a904d0eu);
    char longest[129];
    memset(longest, 'x', 128);
    longest[128] = '\0';
    ck_assert_uint_eq(hash_of(longest), 0x2f5e97c5u);
    /* bytes are taken unsigned: a byte over 0x7f must not be sign-extended */
    ck_assert_uint_eq(hash_of("\xff"), 0x7a0b824eu);
    /* the length given, not the NUL, bounds the bytes */
    ck_assert_uint_eq(iotgw_shard_hash("foobarXYZ", 6), 0xbf9cf968u);
}
END_TEST

START_TEST(home_shard_is_the_hash_modulo_the_count)
{
    ck_assert_uint_eq(iotgw_shard_of("sim-0001", 3), 2);
    ck_assert_uint_eq(iotgw_shard_of("sim-0003", 3), 0);
    ck_assert_uint_eq(iotgw_shard_of("sim-0005", 3), 1);
    ck_assert_uint_eq(iotgw_shard_of("sim-0002", 2), 1);
    ck_assert_uint_eq(iotgw_shard_of("sim-0001", 1024), 920);
    ck_assert_uint_eq(iotgw_shard_of("sim-0001", 1), 0);
    ck_assert_uint_eq(iotgw_shard_of("sim-0001", 0), 0);
    /* every device has a home below the count, and the fleet spreads over every shard */
    unsigned seen[7] = {0};
    for (int i = 0; i < 700; i++) {
        char id[16];
        snprintf(id, sizeof id, "sim-%04d", i);
        unsigned home = iotgw_shard_of(id, 7);
        ck_assert_uint_lt(home, 7);
        seen[home]++;
    }
    for (int k = 0; k < 7; k++)
        ck_assert_uint_gt(seen[k], 50); /* 100 each on average */
}
END_TEST

static unsigned ordinal_of(const char *name)
{
    unsigned v = 12345;
    iotgw_diag d = {0};
    ck_assert_msg(iotgw_shard_ordinal(name, &v, &d) == 0, "%s: %s", name, d.text);
    return v;
}

static const char *refusal(const char *name)
{
    static iotgw_diag d;
    memset(&d, 0, sizeof d);
    unsigned v = 12345;
    ck_assert_int_eq(iotgw_shard_ordinal(name, &v, &d), IOTGW_ERR_INVALID_ARG);
    ck_assert_uint_eq(v, 12345); /* untouched */
    return d.text;
}

START_TEST(pod_names_give_their_ordinal)
{
    ck_assert_uint_eq(ordinal_of("iotgw-0"), 0);
    ck_assert_uint_eq(ordinal_of("iotgw-2"), 2);
    ck_assert_uint_eq(ordinal_of("edge-gw-10"), 10);
    ck_assert_uint_eq(ordinal_of("site.north-1023"), 1023);
    ck_assert_uint_eq(ordinal_of("a-999999999"), 999999999);
    char longest[254];
    memset(longest, 'a', 253);
    memcpy(longest + 251, "-7", 2);
    longest[253] = '\0';
    ck_assert_uint_eq(ordinal_of(longest), 7);
}
END_TEST

START_TEST(names_without_an_ordinal_are_refused_by_name)
{
    ck_assert_str_eq(refusal("iotgw"),
                     "is \"iotgw\", which does not end in -N, a StatefulSet pod's ordinal (e.g. iotgw-2)");
    ck_assert_ptr_nonnull(strstr(refusal("iotgw-"), "\"iotgw-\""));
    ck_assert_ptr_nonnull(strstr(refusal("-2"), "\"-2\""));             /* nothing before the dash */
    ck_assert_ptr_nonnull(strstr(refusal("iotgw-02"), "\"iotgw-02\"")); /* no StatefulSet writes this */
    ck_assert_ptr_nonnull(strstr(refusal("iotgw-2a"), "\"iotgw-2a\""));
    ck_assert_ptr_nonnull(strstr(refusal("iotgw-1000000000"), "does not end in -N")); /* 10 digits */
    ck_assert_ptr_nonnull(strstr(refusal("2"), "\"2\""));
    ck_assert_str_eq(refusal(""), "is empty, not a pod name ending in -N");
    ck_assert_str_eq(refusal(NULL), "is empty, not a pod name ending in -N");
}
END_TEST

START_TEST(names_that_are_no_pod_name_are_not_quoted)
{
    /* a control character could forge a log line: the reason names the byte instead */
    const char *why = refusal("iotgw\n-1");
    ck_assert_str_eq(why, "is not a pod name: byte 5 is 0x0a (a pod name is a-z, 0-9, '-', '.')");
    ck_assert_ptr_null(strchr(why, '\n'));
    ck_assert_ptr_nonnull(strstr(refusal("IOTGW-1"), "byte 0 is 0x49"));
    ck_assert_ptr_nonnull(strstr(refusal("iotgw-1 "), "byte 7 is 0x20"));
    ck_assert_ptr_nonnull(strstr(refusal("iotgw_1"), "byte 5 is 0x5f"));
    char over[255];
    memset(over, 'a', 254); /* one byte over a Kubernetes name's 253 */
    memcpy(over + 252, "-1", 2);
    over[254] = '\0';
    ck_assert_str_eq(refusal(over), "is 254 characters long: a pod name has at most 253");
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("shard");
    TCase *tc = tcase_create("shard");
    tcase_add_test(tc, fnv1a_matches_the_published_vectors);
    tcase_add_test(tc, hash_of_device_ids_is_fixed);
    tcase_add_test(tc, home_shard_is_the_hash_modulo_the_count);
    tcase_add_test(tc, pod_names_give_their_ordinal);
    tcase_add_test(tc, names_without_an_ordinal_are_refused_by_name);
    tcase_add_test(tc, names_that_are_no_pod_name_are_not_quoted);
    suite_add_tcase(s, tc);
    return s;
}
