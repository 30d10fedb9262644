/* iotgw.yaml's settings table (gateway/settings.c): every setting documented in
 * docs/configuration.md (and those a reload does not apply said to be "read at
 * start"), defaults, bounds one over each end, and a reload keeping what it must. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/config.h"
#include "gateway/settings.h"
#include "tests/unit/check_main.h"

static char *read_docs(void)
{
    const char *src = getenv("srcdir");
    char path[1024];
    snprintf(path, sizeof path, "%s/docs/configuration.md", src ? src : "..");
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot read %s (set srcdir)", path);
    static char buf[256 * 1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

START_TEST(every_setting_has_its_row_in_the_docs)
{
    const char *docs = read_docs();
    for (size_t i = 0; i < iotgw_settings_count; i++) {
        const iotgw_setting *s = &iotgw_settings[i];
        char row[128];
        snprintf(row, sizeof row, "\n| `%s` |", s->name);
        const char *at = strstr(docs, row);
        ck_assert_msg(at != NULL, "docs/configuration.md has no row for %s", s->name);
        const char *end = strchr(at + 1, '\n');
        size_t len = end ? (size_t)(end - at) : strlen(at);
        int says_start = memmem(at, len, "read at start", 13) != NULL;
        ck_assert_msg(says_start == !s->reload, "%s: a reload %s it, but its row %s \"read at start\"",
                      s->name, s->reload ? "applies" : "does not apply",
                      says_start ? "says" : "does not say");
    }
}
END_TEST

static char dir[64];

static const char *write_config(const char *name, const char *text)
{
    static char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/test_settings.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

#define BASE "hub: {hostName: hub.example%s}\ndevices: {listen: 127.0.0.1:7000%s}\n"

static int load(const char *hub_extra, const char *devices_extra, iotgw_config **c, iotgw_diag *d)
{
    char text[1024];
    snprintf(text, sizeof text, BASE, hub_extra, devices_extra);
    return iotgw_config_load(write_config("iotgw.yaml", text), c, d);
}

START_TEST(defaults_come_from_the_table)
{
    iotgw_config *c;
    iotgw_diag d = {0};
    ck_assert_int_eq(load("", "", &c, &d), 0);
    for (size_t i = 0; i < iotgw_settings_count; i++)
        if (strcmp(iotgw_settings[i].name, "hub.hostName"))
            ck_assert_msg(iotgw_setting_is_default(&iotgw_settings[i], c), "%s", iotgw_settings[i].name);
    ck_assert_uint_eq(c->token_lifetime_s, 3600);
    ck_assert_uint_eq(c->max_in_flight, 32);
    ck_assert_uint_eq(c->queue_total_bytes, 64u * 1024 * 1024);
    ck_assert_int_eq(c->hub_transport, IOTGW_TRANSPORT_WSS);
    iotgw_config_free(c);
}
END_TEST

/* Each number setting: its bounds are accepted, one over either is refused naming it. */
START_TEST(each_number_is_bounded_one_over_each_end)
{
    for (size_t i = 0; i < iotgw_settings_count; i++) {
        const iotgw_setting *s = &iotgw_settings[i];
        if (s->type != IOTGW_SETTING_UINT && s->type != IOTGW_SETTING_INT &&
            s->type != IOTGW_SETTING_UINT64 && s->type != IOTGW_SETTING_RATE)
            continue;
        int is_hub = !strncmp(s->name, "hub.", 4), is_devices = !strncmp(s->name, "devices.", 8);
        const int64_t tries[4] = {s->min, s->max, s->min - 1, s->max + 1};
        for (int k = 0; k < 4; k++) {
            char extra[160];
            snprintf(extra, sizeof extra, ", %s: %lld", iotgw_setting_key(s), (long long)tries[k]);
            iotgw_config *c = NULL;
            iotgw_diag d = {0};
            int rc;
            if (is_hub || is_devices) {
                rc = load(is_hub ? extra : "", is_hub ? "" : extra, &c, &d);
            } else { /* a section of its own: store (which needs its path) */
                char text[1024];
                snprintf(text, sizeof text, BASE "%.*s: {path: st%s}\n", "", "",
                         (int)(strchr(s->name, '.') - s->name), s->name, extra);
                rc = iotgw_config_load(write_config("iotgw.yaml", text), &c, &d);
            }
            if (k < 2) {
                ck_assert_msg(rc == 0, "%s = %lld refused: %s", s->name, (long long)tries[k], d.text);
                char v[64];
                iotgw_setting_format(s, c, v, sizeof v);
                ck_assert_int_eq(atoll(v), tries[k]);
                iotgw_config_free(c);
            } else {
                ck_assert_msg(rc == IOTGW_ERR_CONFIG, "%s = %lld accepted", s->name, (long long)tries[k]);
                ck_assert_msg(strstr(d.text, s->name) != NULL, "error does not name %s: %s", s->name, d.text);
            }
        }
    }
}
END_TEST

START_TEST(choices_name_the_words_allowed)
{
    iotgw_config *c = NULL;
    iotgw_diag d = {0};
    ck_assert_int_eq(load(", transport: mqtt", "", &c, &d), IOTGW_ERR_CONFIG);
    ck_assert_msg(strstr(d.text, "hub.transport: expected amqp-ws or amqps, got \"mqtt\"") != NULL, "%s",
                  d.text);
    ck_assert_int_eq(load(", transport: amqps", "", &c, &d), 0);
    ck_assert_int_eq(c->hub_transport, IOTGW_TRANSPORT_AMQPS);
    iotgw_config_free(c);
}
END_TEST

START_TEST(ca_file_is_relative_to_the_configuration_and_must_be_readable)
{
    iotgw_config *c = NULL;
    iotgw_diag d = {0};
    ck_assert_int_eq(load(", caFile: ca.pem", "", &c, &d), IOTGW_ERR_CONFIG);
    ck_assert_msg(strstr(d.text, "hub.caFile: cannot read") != NULL, "%s", d.text);
    write_config("ca.pem", "not checked here\n");
    ck_assert_int_eq(load(", caFile: ca.pem", "", &c, &d), 0);
    char want[200];
    snprintf(want, sizeof want, "%s/ca.pem", dir);
    ck_assert_str_eq(c->hub_ca_file, want);
    iotgw_config_free(c);
}
END_TEST

static int changed[64], nchanged;

static void on_changed(const iotgw_setting *s, void *ctx)
{
    (void)ctx;
    changed[nchanged++] = (int)(s - iotgw_settings);
}

START_TEST(reload_keeps_what_it_does_not_apply_and_names_it)
{
    iotgw_config *running = NULL, *next = NULL;
    iotgw_diag d = {0};
    ck_assert_int_eq(
        load(", tokenLifetimeSeconds: 600, proxy: proxy.example:3128", ", maxInFlight: 8", &running, &d), 0);
    ck_assert_int_eq(load(", tokenLifetimeSeconds: 900", ", maxInFlight: 16, queuePerDevice: 5", &next, &d),
                     0);
    nchanged = 0;
    iotgw_settings_keep_running(next, running, on_changed, NULL);
    ck_assert_uint_eq(next->token_lifetime_s, 600); /* read at start */
    ck_assert_str_eq(next->hub_proxy, "proxy.example:3128");
    ck_assert_uint_eq(next->device_queue, 1000); /* read at start: the running default stays */
    ck_assert_uint_eq(next->max_in_flight, 16);  /* a reload applies it */
    ck_assert_int_eq(nchanged, 3);               /* tokenLifetimeSeconds, proxy, queuePerDevice */
    for (int i = 0; i < nchanged; i++)
        ck_assert(!iotgw_settings[changed[i]].reload);
    iotgw_config_free(running);
    iotgw_config_free(next);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("settings");
    TCase *tc = tcase_create("table");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, every_setting_has_its_row_in_the_docs);
    tcase_add_test(tc, defaults_come_from_the_table);
    tcase_add_test(tc, each_number_is_bounded_one_over_each_end);
    tcase_add_test(tc, choices_name_the_words_allowed);
    tcase_add_test(tc, ca_file_is_relative_to_the_configuration_and_must_be_readable);
    tcase_add_test(tc, reload_keeps_what_it_does_not_apply_and_names_it);
    suite_add_tcase(s, tc);
    return s;
}
