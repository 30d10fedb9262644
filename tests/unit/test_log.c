/* The log's JSON lines (transport/log.h): every line one object with the keys promised,
 * strings escaped for any bytes (read back with jansson, which refuses invalid UTF-8
 * and raw control characters), fields typed, budgets' counts carried; and the text
 * format unchanged. */
#include <check.h>
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check_main.h"
#include "transport/log.h"

static FILE *out;

static void capture(iotgw_log_format format)
{
    out = tmpfile();
    ck_assert_ptr_nonnull(out);
    iotgw_log_set_stream(out);
    iotgw_log_set_format(format);
    iotgw_log_set_level(IOTGW_LOG_INFO);
}

/* Everything logged since capture(), and back to stderr and text. */
static char *captured(void)
{
    iotgw_log_set_stream(NULL);
    iotgw_log_set_format(IOTGW_LOG_FORMAT_TEXT);
    long n = ftell(out);
    ck_assert_int_ge(n, 0);
    char *text = calloc(1, (size_t)n + 1);
    rewind(out);
    ck_assert_uint_eq(fread(text, 1, (size_t)n, out), (size_t)n);
    fclose(out);
    return text;
}

/* The lines of text, each parsed; asserts that each is one JSON object with the keys
 * every line has. */
static size_t parse_lines(const char *text, json_t **lines, size_t max)
{
    size_t n = 0;
    regex_t time_re;
    ck_assert_int_eq(regcomp(&time_re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
                             REG_EXTENDED),
                     0);
    for (const char *p = text; *p; n++) {
        const char *nl = strchr(p, '\n');
        ck_assert_msg(nl != NULL, "a line without its newline: %s", p);
        ck_assert_uint_lt(n, max);
        json_error_t err;
        lines[n] = json_loadb(p, (size_t)(nl - p), 0, &err);
        ck_assert_msg(lines[n] != NULL, "not JSON (%s): %.*s", err.text, (int)(nl - p), p);
        ck_assert(json_is_object(lines[n]));
        const char *time = json_string_value(json_object_get(lines[n], "time"));
        ck_assert_ptr_nonnull(time);
        ck_assert_msg(regexec(&time_re, time, 0, NULL, 0) == 0, "time %s", time);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(lines[n], "level")));
        ck_assert_ptr_nonnull(json_string_value(json_object_get(lines[n], "event")));
        ck_assert_ptr_nonnull(json_string_value(json_object_get(lines[n], "message")));
        p = nl + 1;
    }
    regfree(&time_re);
    return n;
}

static void free_lines(json_t **lines, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(lines[i]);
}

static const char *str(json_t *line, const char *key)
{
    return json_string_value(json_object_get(line, key));
}

static json_t *field(json_t *line, const char *key)
{
    return json_object_get(json_object_get(line, "fields"), key);
}

START_TEST(plain_line_has_event_log_and_no_device)
{
    capture(IOTGW_LOG_FORMAT_JSON);
    iotgw_log(IOTGW_LOG_WARN, "listener %s: %d refused", "0.0.0.0:7000", 3);
    iotgw_log(IOTGW_LOG_DEBUG, "dropped: above the level");
    char *text = captured();
    json_t *lines[4];
    ck_assert_uint_eq(parse_lines(text, lines, 4), 1);
    ck_assert_str_eq(str(lines[0], "level"), "warn");
    ck_assert_str_eq(str(lines[0], "event"), "log");
    ck_assert_str_eq(str(lines[0], "message"), "listener 0.0.0.0:7000: 3 refused");
    ck_assert_ptr_null(json_object_get(lines[0], "device"));
    ck_assert_ptr_null(json_object_get(lines[0], "fields"));
    /* the keys in a fixed order, for people reading the raw lines */
    ck_assert_ptr_nonnull(strstr(text, "{\"time\":\""));
    ck_assert_ptr_nonnull(strstr(text, "\",\"level\":\"warn\",\"event\":\"log\",\"message\":\""));
    free_lines(lines, 1);
    free(text);
}
END_TEST

START_TEST(device_event_and_typed_fields)
{
    capture(IOTGW_LOG_FORMAT_JSON);
    iotgw_log_evf(IOTGW_LOG_INFO, "device_hub_state", "agent-1",
                  IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("state", "failed"),
                                   IOTGW_FIELD_INT("retry_ms", -12345678901LL),
                                   IOTGW_FIELD_BOOL("for_good", 7), IOTGW_FIELD_BOOL("passing", 0),
                                   IOTGW_FIELD_STR("none", NULL), IOTGW_FIELD_UINT("id", 42)),
                  "device %s at the hub: %s", "agent-1", "failed");
    iotgw_log_ev(IOTGW_LOG_ERROR, "c2d_released", "d\"quoted\\", "no fields");
    char *text = captured();
    json_t *lines[4];
    ck_assert_uint_eq(parse_lines(text, lines, 4), 2);
    ck_assert_str_eq(str(lines[0], "event"), "device_hub_state");
    ck_assert_str_eq(str(lines[0], "device"), "agent-1");
    ck_assert_str_eq(str(lines[0], "message"), "device agent-1 at the hub: failed");
    ck_assert_str_eq(json_string_value(field(lines[0], "state")), "failed");
    ck_assert(json_is_integer(field(lines[0], "retry_ms")));
    ck_assert_int_eq(json_integer_value(field(lines[0], "retry_ms")), -12345678901LL);
    ck_assert(json_is_true(field(lines[0], "for_good")));
    ck_assert(json_is_false(field(lines[0], "passing")));
    ck_assert(json_is_null(field(lines[0], "none")));
    ck_assert_int_eq(json_integer_value(field(lines[0], "id")), 42);
    ck_assert_str_eq(str(lines[1], "level"), "error");
    ck_assert_str_eq(str(lines[1], "device"), "d\"quoted\\");
    ck_assert_ptr_null(json_object_get(lines[1], "fields"));
    free_lines(lines, 2);
    free(text);
    /* a device's 64-bit request id, whole (jansson's integers stop at 2^63) */
    capture(IOTGW_LOG_FORMAT_JSON);
    iotgw_log_evf(IOTGW_LOG_INFO, "method_answer_late", "d1",
                  IOTGW_LOG_FIELDS(IOTGW_FIELD_UINT("request_id", UINT64_MAX)), "late");
    text = captured();
    ck_assert_ptr_nonnull(strstr(text, ",\"fields\":{\"request_id\":18446744073709551615}}\n"));
    free(text);
}
END_TEST

START_TEST(every_byte_is_escaped_or_replaced)
{
    /* bytes 1..255 in order: nothing from 0x80 on forms a valid sequence (continuation
     * bytes come before lead bytes), so each of those is one U+FFFD */
    char all[256], expected[128 + 128 * 3 + 1];
    size_t e = 0;
    for (int b = 1; b < 256; b++) {
        all[b - 1] = (char)b;
        if (b < 0x80) {
            expected[e++] = (char)b;
        } else {
            memcpy(expected + e, "\xef\xbf\xbd", 3);
            e += 3;
        }
    }
    all[255] = '\0';
    expected[e] = '\0';
    capture(IOTGW_LOG_FORMAT_JSON);
    iotgw_log_evf(IOTGW_LOG_INFO, "x", all, IOTGW_LOG_FIELDS(IOTGW_FIELD_STR(all, all)), "%s", all);
    char *text = captured();
    /* one line, in ASCII only: escapes for every control character, DEL and bad byte */
    ck_assert_ptr_eq(strchr(text, '\n'), text + strlen(text) - 1);
    for (const char *p = text; *p; p++)
        ck_assert_msg((*p >= 0x20 && *p < 0x7f) || *p == '\n', "raw byte 0x%02x in the line",
                      (unsigned char)*p);
    ck_assert_ptr_nonnull(strstr(text, "\\u0001\\u0002"));
    ck_assert_ptr_nonnull(strstr(text, "\\u000a"));
    ck_assert_ptr_nonnull(strstr(text, "\\u001f !\\\"#"));
    ck_assert_ptr_nonnull(strstr(text, "[\\\\]"));
    ck_assert_ptr_nonnull(strstr(text, "}~\\u007f\\ufffd"));
    json_t *lines[2];
    ck_assert_uint_eq(parse_lines(text, lines, 2), 1);
    ck_assert_str_eq(str(lines[0], "message"), expected);
    ck_assert_str_eq(str(lines[0], "device"), expected);
    ck_assert_str_eq(json_string_value(field(lines[0], expected)), expected);
    free_lines(lines, 1);
    free(text);
}
END_TEST

START_TEST(utf8_kept_and_invalid_sequences_replaced)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}, /* kept */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                                 /* overlong '/' */
        {"\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong, 3 bytes */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},                 /* a surrogate */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* past U+10FFFF */
        {"ok\xe2\x82", "ok\xef\xbf\xbd\xef\xbf\xbd"},                             /* cut at the end */
        {"\xe2\x82x", "\xef\xbf\xbd\xef\xbf\xbdx"},                               /* cut before ASCII */
        {"\xf5\x80\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* no such lead byte */
        {"a\xe2\x80\xa8"
         "b\xe2\x80\xa9",
         "a\xe2\x80\xa8"
         "b\xe2\x80\xa9"}, /* line separators, escaped */
    };
    size_t n = sizeof cases / sizeof *cases;
    capture(IOTGW_LOG_FORMAT_JSON);
    for (size_t i = 0; i < n; i++)
        iotgw_log_ev(IOTGW_LOG_INFO, "x", NULL, "%s", cases[i].in);
    char *text = captured();
    ck_assert_ptr_nonnull(strstr(text, "\"a\\u2028b\\u2029\""));
    json_t *lines[16];
    ck_assert_uint_eq(parse_lines(text, lines, 16), n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(!strcmp(str(lines[i], "message"), cases[i].out), "case %zu: %s", i,
                      str(lines[i], "message"));
    free_lines(lines, n);
    free(text);
}
END_TEST

START_TEST(long_message_is_whole)
{
    size_t len = 100000;
    char *big = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        big[i] = i % 100 == 99 ? '\n' : (char)('a' + i % 26);
    big[len] = '\0';
    capture(IOTGW_LOG_FORMAT_JSON);
    iotgw_log(IOTGW_LOG_INFO, "%s", big);
    char *text = captured();
    json_t *lines[2];
    ck_assert_uint_eq(parse_lines(text, lines, 2), 1);
    ck_assert_str_eq(str(lines[0], "message"), big);
    free_lines(lines, 1);
    free(text);
    free(big);
}
END_TEST

START_TEST(budget_counts_what_it_left_out)
{
    iotgw_log_limit lim = {0};
    capture(IOTGW_LOG_FORMAT_JSON);
    for (int i = 0; i < IOTGW_LOG_LIMIT_BURST + 3; i++)
        iotgw_log_ev_limited(&lim, IOTGW_LOG_WARN, "device_hub_refused", "d1",
                             IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("try", i)), "refused %d", i);
    lim.window_start_ms -= IOTGW_LOG_LIMIT_WINDOW_MS; /* the next window */
    iotgw_log_ev_limited(&lim, IOTGW_LOG_WARN, "device_hub_refused", "d1",
                         IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("try", 99)), "refused again");
    for (int i = 0; i < IOTGW_LOG_LIMIT_BURST + 2; i++)
        iotgw_log_limited(&lim, IOTGW_LOG_WARN, "plain %d", i);
    iotgw_log_limit_flush_device(&lim, IOTGW_LOG_INFO, "d1");
    iotgw_log_limit_flush_device(&lim, IOTGW_LOG_INFO, "d1"); /* nothing left to say */
    char *text = captured();
    json_t *lines[32];
    size_t n = parse_lines(text, lines, 32);
    ck_assert_uint_eq(n, IOTGW_LOG_LIMIT_BURST + 1 + (IOTGW_LOG_LIMIT_BURST - 1) + 1);
    ck_assert_str_eq(str(lines[0], "device"), "d1");
    ck_assert_int_eq(json_integer_value(field(lines[0], "try")), 0);
    ck_assert_ptr_null(field(lines[0], "suppressed"));
    json_t *again = lines[IOTGW_LOG_LIMIT_BURST];
    ck_assert_str_eq(str(again, "message"), "refused again (3 more like this not logged)");
    ck_assert_str_eq(str(again, "event"), "device_hub_refused");
    ck_assert_int_eq(json_integer_value(field(again, "try")), 99);
    ck_assert_int_eq(json_integer_value(field(again, "suppressed")), 3);
    json_t *plain = lines[IOTGW_LOG_LIMIT_BURST + 1];
    ck_assert_str_eq(str(plain, "event"), "log");
    ck_assert_ptr_null(json_object_get(plain, "device"));
    json_t *last = lines[n - 1];
    ck_assert_str_eq(str(last, "event"), "log_suppressed");
    ck_assert_str_eq(str(last, "device"), "d1");
    ck_assert_str_eq(str(last, "level"), "info");
    ck_assert_str_eq(str(last, "message"), "d1: 3 more lines like the last one not logged");
    ck_assert_int_eq(json_integer_value(field(last, "suppressed")), 3);
    free_lines(lines, n);
    free(text);
}
END_TEST

START_TEST(text_format_is_unchanged)
{
    iotgw_log_limit lim = {0};
    capture(IOTGW_LOG_FORMAT_TEXT);
    iotgw_log(IOTGW_LOG_INFO, "hello %d", 1);
    iotgw_log_evf(IOTGW_LOG_WARN, "device_connected", "d1", IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", "p")),
                  "device %s connected", "d1");
    for (int i = 0; i < IOTGW_LOG_LIMIT_BURST + 2; i++)
        iotgw_log_ev_limited(&lim, IOTGW_LOG_ERROR, "e", "d1", NULL, "limited");
    iotgw_log_limit_flush(&lim, IOTGW_LOG_WARN, "listener x");
    char *text = captured();
    regex_t re;
    ck_assert_int_eq(
        regcomp(&re,
                "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z info  hello 1\n"
                "[0-9T:.Z-]{24} warn  device d1 connected\n"
                "([0-9T:.Z-]{24} error limited\n){5}"
                "[0-9T:.Z-]{24} warn  listener x: 2 more lines like the last one not logged\n$",
                REG_EXTENDED),
        0);
    ck_assert_msg(regexec(&re, text, 0, NULL, 0) == 0, "%s", text);
    regfree(&re);
    free(text);
}
END_TEST

START_TEST(library_lines)
{
    capture(IOTGW_LOG_FORMAT_JSON);
    iotgw_log_library(IOTGW_LOG_ERROR, "lws", "[2026/11/22 19:02:18:1234] E: accept: errno 24\n");
    iotgw_log_library(IOTGW_LOG_DEBUG, "lws", "dropped\n");
    char *text = captured();
    json_t *lines[2];
    ck_assert_uint_eq(parse_lines(text, lines, 2), 1);
    ck_assert_str_eq(str(lines[0], "event"), "library_log");
    ck_assert_str_eq(str(lines[0], "level"), "error");
    ck_assert_str_eq(str(lines[0], "message"), "[2026/11/22 19:02:18:1234] E: accept: errno 24");
    ck_assert_str_eq(json_string_value(field(lines[0], "library")), "lws");
    free_lines(lines, 1);
    free(text);
    capture(IOTGW_LOG_FORMAT_TEXT); /* as loop.c always wrote them */
    iotgw_log_library(IOTGW_LOG_ERROR, "lws", "E: accept: errno 24\n");
    text = captured();
    ck_assert_str_eq(text, "lws: E: accept: errno 24\n");
    free(text);
}
END_TEST

START_TEST(format_names)
{
    iotgw_log_format f = IOTGW_LOG_FORMAT_TEXT;
    ck_assert_int_eq(iotgw_log_format_parse("json", &f), 0);
    ck_assert_int_eq(f, IOTGW_LOG_FORMAT_JSON);
    ck_assert_int_eq(iotgw_log_format_parse("text", &f), 0);
    ck_assert_int_eq(f, IOTGW_LOG_FORMAT_TEXT);
    ck_assert_int_eq(iotgw_log_format_parse("JSON", &f), -1);
    ck_assert_int_eq(iotgw_log_format_parse("", &f), -1);
    ck_assert_int_eq(iotgw_log_format_parse(NULL, &f), -1);
    ck_assert_int_eq(f, IOTGW_LOG_FORMAT_TEXT);
}
END_TEST

Suite *suite_under_test(void)
{
    unsetenv("IOTGW_LOG_BURST"); /* the budgets' default */
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, plain_line_has_event_log_and_no_device);
    tcase_add_test(tc, device_event_and_typed_fields);
    tcase_add_test(tc, every_byte_is_escaped_or_replaced);
    tcase_add_test(tc, utf8_kept_and_invalid_sequences_replaced);
    tcase_add_test(tc, long_message_is_whole);
    tcase_add_test(tc, budget_counts_what_it_left_out);
    tcase_add_test(tc, text_format_is_unchanged);
    tcase_add_test(tc, library_lines);
    tcase_add_test(tc, format_names);
    suite_add_tcase(s, tc);
    return s;
}
