/* gateway/backoff: decorrelated jitter stays within [base, cap], grows, spreads peers
 * that failed together, and starts over after a reset. */
#include <check.h>
#include <stdint.h>

#include "gateway/backoff.h"
#include "tests/unit/check_main.h"

START_TEST(waits_stay_between_base_and_cap)
{
    iotgw_backoff b;
    iotgw_backoff_init(&b, 1000, 60000, 42);
    for (int i = 0; i < 10000; i++) {
        int64_t w = iotgw_backoff_next(&b);
        ck_assert_int_ge(w, 1000);
        ck_assert_int_le(w, 60000);
    }
}
END_TEST

START_TEST(waits_grow_towards_the_cap)
{
    /* after a few failures the average wait is far above base: it is a backoff */
    int64_t sum_first = 0, sum_tenth = 0;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        iotgw_backoff b;
        iotgw_backoff_init(&b, 1000, 60000, seed);
        sum_first += iotgw_backoff_next(&b);
        for (int i = 0; i < 8; i++)
            iotgw_backoff_next(&b);
        sum_tenth += iotgw_backoff_next(&b);
    }
    ck_assert_int_lt(sum_first / 200, 2500);  /* first wait: uniform in [1 s, 3 s] */
    ck_assert_int_gt(sum_tenth / 200, 15000); /* tenth: most of the way to the cap */
}
END_TEST

START_TEST(peers_failing_together_spread_out)
{
    /* 100 connections lost at once must not all come back in the same second */
    int buckets[61] = {0};
    for (uint64_t seed = 1; seed <= 100; seed++) {
        iotgw_backoff b;
        iotgw_backoff_init(&b, 1000, 60000, seed * 7919);
        int64_t at = 0;
        for (int i = 0; i < 4; i++)
            at += iotgw_backoff_next(&b);
        buckets[at / 1000 > 60 ? 60 : at / 1000]++;
    }
    for (int s = 0; s <= 60; s++)
        ck_assert_int_lt(buckets[s], 25);
}
END_TEST

START_TEST(reset_starts_from_base_again)
{
    iotgw_backoff b;
    iotgw_backoff_init(&b, 500, 30000, 9);
    for (int i = 0; i < 20; i++)
        iotgw_backoff_next(&b);
    iotgw_backoff_reset(&b);
    ck_assert_int_le(iotgw_backoff_next(&b), 1500);
}
END_TEST

START_TEST(same_seed_same_sequence)
{
    iotgw_backoff a, b;
    iotgw_backoff_init(&a, 100, 5000, 77);
    iotgw_backoff_init(&b, 100, 5000, 77);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(iotgw_backoff_next(&a), iotgw_backoff_next(&b));
    ck_assert_int_ge(iotgw_backoff_uniform(&a, 5, 5), 5);
    ck_assert_int_le(iotgw_backoff_uniform(&a, 5, 5), 5);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("backoff");
    TCase *tc = tcase_create("backoff");
    tcase_add_test(tc, waits_stay_between_base_and_cap);
    tcase_add_test(tc, waits_grow_towards_the_cap);
    tcase_add_test(tc, peers_failing_together_spread_out);
    tcase_add_test(tc, reset_starts_from_base_again);
    tcase_add_test(tc, same_seed_same_sequence);
    suite_add_tcase(s, tc);
    return s;
}
