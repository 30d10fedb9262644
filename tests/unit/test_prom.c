/* The Prometheus text exposition (codecs/prom.h): families, escaped label values,
 * cumulative histogram buckets, and what a writer that ran out of room says. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/prom.h"
#include "tests/unit/check_main.h"

static char *render(void (*fn)(iotgw_prom *))
{
    iotgw_prom w = {0};
    fn(&w);
    char *text = iotgw_prom_take(&w, NULL);
    ck_assert_ptr_nonnull(text);
    return text;
}

static void families(iotgw_prom *w)
{
    iotgw_prom_counter(w, "x_total", "things\nseen \\ here", 3);
    iotgw_prom_gauge(w, "y", "a gauge", 0.25);
    iotgw_prom_family(w, "z_total", "counter", "by label");
    iotgw_prom_value(w, "z_total", "reason", "a \"quoted\\path\"\nnext", 1e16);
    iotgw_prom_label two[] = {{"a", "1"}, {"b", NULL}};
    iotgw_prom_sample(w, "z_total", two, 2, -2);
}

START_TEST(families_and_escaping)
{
    char *t = render(families);
    ck_assert_str_eq(t, "# HELP x_total things\\nseen \\\\ here\n"
                        "# TYPE x_total counter\n"
                        "x_total 3\n"
                        "# HELP y a gauge\n"
                        "# TYPE y gauge\n"
                        "y 0.25\n"
                        "# HELP z_total by label\n"
                        "# TYPE z_total counter\n"
                        "z_total{reason=\"a \\\"quoted\\\\path\\\"\\nnext\"} 10000000000000000\n"
                        "z_total{a=\"1\",b=\"\"} -2\n");
    free(t);
}
END_TEST

static const double bounds[] = {0.1, 1, 10};

static void histogram(iotgw_prom *w)
{
    iotgw_histogram h;
    iotgw_histogram_init(&h, bounds, 3);
    iotgw_histogram_observe(&h, 0.05);
    iotgw_histogram_observe(&h, 0.1); /* on a bound: that bucket (le) */
    iotgw_histogram_observe(&h, 5);
    iotgw_histogram_observe(&h, 50);
    iotgw_prom_label l = {"share", "device"};
    iotgw_prom_histogram(w, "m_seconds", &l, 1, &h);
}

START_TEST(histogram_buckets_are_cumulative)
{
    char *t = render(histogram);
    ck_assert_str_eq(t, "m_seconds_bucket{share=\"device\",le=\"0.1\"} 2\n"
                        "m_seconds_bucket{share=\"device\",le=\"1\"} 2\n"
                        "m_seconds_bucket{share=\"device\",le=\"10\"} 3\n"
                        "m_seconds_bucket{share=\"device\",le=\"+Inf\"} 4\n"
                        "m_seconds_sum{share=\"device\"} 55.149999999999999\n"
                        "m_seconds_count{share=\"device\"} 4\n");
    free(t);
}
END_TEST

START_TEST(empty_and_failed_writers)
{
    iotgw_prom w = {0};
    size_t len = 1;
    char *t = iotgw_prom_take(&w, &len);
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(t, "");
    ck_assert_uint_eq(len, 0);
    free(t);
    iotgw_prom_counter(&w, "a_total", "x", 1);
    w.failed = 1; /* as after a realloc that failed */
    ck_assert_ptr_null(iotgw_prom_take(&w, &len));
    ck_assert_ptr_null(w.buf); /* and nothing leaks */
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("prom");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, families_and_escaping);
    tcase_add_test(tc, histogram_buckets_are_cumulative);
    tcase_add_test(tc, empty_and_failed_writers);
    suite_add_tcase(s, tc);
    return s;
}
