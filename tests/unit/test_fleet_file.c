/* Fleet files (codecs/fleet_file): what iotgw's fleet.devicesFile and iotgw-devsim read,
 * errors by file and line that never show a key, and generated fleets. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codecs/fleet_file.h"
#include "tests/unit/check_main.h"

#define KEY "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

typedef struct seen {
    int n;
    char ids[16][64], keys[16][64];
    int disabled[16];
    int refuse_at; /* refuse the nth device (1-based); 0: none */
} seen;

static int collect(const iotgw_fleet_entry *e, void *ctx, char *why, size_t whylen)
{
    seen *s = ctx;
    if (s->n + 1 == s->refuse_at) {
        snprintf(why, whylen, "device %s is not wanted", e->id);
        return IOTGW_ERR_CONFIG;
    }
    snprintf(s->ids[s->n], sizeof s->ids[s->n], "%s", e->id);
    snprintf(s->keys[s->n], sizeof s->keys[s->n], "%s", e->key ? e->key : "(none)");
    s->disabled[s->n++] = e->disabled;
    return 0;
}

static char *write_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_fleet_file.XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

START_TEST(reads_devices_comments_and_flags)
{
    char *path =
        write_file("# the fleet\n\nagent-1 " KEY "\n  camera-17\t-  \nold-3 " KEY " disabled\n# end");
    seen s = {0};
    iotgw_diag d = {0};
    ck_assert_int_eq(iotgw_fleet_file_read(path, collect, &s, &d), 0);
    ck_assert_int_eq(s.n, 3);
    ck_assert_str_eq(s.ids[0], "agent-1");
    ck_assert_str_eq(s.keys[0], KEY);
    ck_assert_int_eq(s.disabled[0], 0);
    ck_assert_str_eq(s.ids[1], "camera-17");
    ck_assert_str_eq(s.keys[1], "(none)");
    ck_assert_str_eq(s.ids[2], "old-3");
    ck_assert_int_eq(s.disabled[2], 1);
    unlink(path);
}
END_TEST

START_TEST(errors_name_file_and_line_never_the_key)
{
    static const struct {
        const char *text, *expect;
    } cases[] = {
        {"a " KEY "\nb\n", ":2: expected \"ID KEY\""},
        {"a AAECAwQFBgc=\n", ":1: device a: the key is not base64 of 16 to 64 bytes"},
        {"a " KEY " off\n", ":1: expected \"ID KEY\", optionally followed by \"disabled\""},
        {"a " KEY " disabled x\n", ":1: expected \"ID KEY\", optionally followed by \"disabled\""},
        {"a/b " KEY "\n", ":1: device id has a character IoT Hub does not allow"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_file(cases[i].text);
        seen s = {0};
        iotgw_diag d = {0};
        ck_assert_int_eq(iotgw_fleet_file_read(path, collect, &s, &d), IOTGW_ERR_CONFIG);
        ck_assert_msg(strstr(d.text, path) && strstr(d.text, cases[i].expect), "%s", d.text);
        ck_assert_msg(!strstr(d.text, KEY) && !strstr(d.text, "AAECAwQFBgc"), "%s", d.text);
        unlink(path);
    }
    char *longline = malloc(3000);
    memset(longline, 'x', 2998);
    memcpy(longline + 2998, "\n", 2);
    char *path = write_file(longline);
    free(longline);
    seen s = {0};
    iotgw_diag d = {0};
    ck_assert_int_eq(iotgw_fleet_file_read(path, collect, &s, &d), IOTGW_ERR_CONFIG);
    ck_assert_msg(strstr(d.text, ":1: line too long"), "%s", d.text);
    unlink(path);
}
END_TEST

START_TEST(the_callback_refuses_with_its_reason)
{
    char *path = write_file("a " KEY "\nb " KEY "\nc " KEY "\n");
    seen s = {.refuse_at = 2};
    iotgw_diag d = {0};
    ck_assert_int_eq(iotgw_fleet_file_read(path, collect, &s, &d), IOTGW_ERR_CONFIG);
    ck_assert_int_eq(s.n, 1); /* nothing read after the refusal */
    ck_assert_msg(strstr(d.text, ":2: device b is not wanted"), "%s", d.text);
    unlink(path);
    d = (iotgw_diag){0};
    ck_assert_int_eq(iotgw_fleet_file_read("/nonexistent/fleet.txt", collect, &s, &d), IOTGW_ERR_IO);
    ck_assert_msg(strstr(d.text, "No such file"), "%s", d.text);
}
END_TEST

START_TEST(generated_fleets_are_new_files_with_fresh_keys)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_fleet_gen.%d", (int)getpid());
    unlink(path);
    iotgw_diag d = {0};
    ck_assert_int_eq(iotgw_fleet_file_generate(path, "p", 12, &d), 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    seen s = {0};
    ck_assert_int_eq(iotgw_fleet_file_read(path, collect, &s, &d), 0);
    ck_assert_int_eq(s.n, 12);
    ck_assert_str_eq(s.ids[0], "p01");
    ck_assert_str_eq(s.ids[11], "p12");
    for (int i = 0; i < 12; i++) {
        ck_assert_int_eq(strlen(s.keys[i]), 44); /* 32 bytes */
        for (int j = 0; j < i; j++)
            ck_assert_str_ne(s.keys[i], s.keys[j]);
    }
    /* never overwritten */
    ck_assert_int_eq(iotgw_fleet_file_generate(path, "q", 3, &d), IOTGW_ERR_IO);
    ck_assert_msg(strstr(d.text, "never overwritten"), "%s", d.text);
    seen again = {0};
    ck_assert_int_eq(iotgw_fleet_file_read(path, collect, &again, &d), 0);
    ck_assert_str_eq(again.keys[0], s.keys[0]);
    unlink(path);
    /* a prefix that makes bad ids: refused before any file exists */
    ck_assert_int_eq(iotgw_fleet_file_generate(path, "a/", 3, &d), IOTGW_ERR_INVALID_ARG);
    ck_assert_int_ne(access(path, F_OK), 0);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("fleet_file");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, reads_devices_comments_and_flags);
    tcase_add_test(tc, errors_name_file_and_line_never_the_key);
    tcase_add_test(tc, the_callback_refuses_with_its_reason);
    tcase_add_test(tc, generated_fleets_are_new_files_with_fresh_keys);
    suite_add_tcase(s, tc);
    return s;
}
