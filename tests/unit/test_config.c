/* The gateway's configuration (gateway/config): fleet.shard, which splits the fleet over
 * several gateways. What each gateway keeps, where it says another one's devices belong,
 * and the refusals of every value out of bounds, each naming the key. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/config.h"
#include "tests/unit/check_main.h"

#define KEY "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

/* sim-0001..sim-0009 and their homes among 3 shards (tests/unit/test_shard.c's hash):
 * shard 0: 0003 0004 0008; shard 1: 0005 0006 0009; shard 2: 0001 0002 0007 */
static const char FLEET_FILE[] = "sim-0001 " KEY "\n"
                                 "sim-0002 " KEY "\n"
                                 "sim-0003 " KEY "\n"
                                 "sim-0004 " KEY "\n"
                                 "sim-0005 " KEY " disabled\n"
                                 "sim-0006 " KEY "\n"
                                 "sim-0007 " KEY "\n"
                                 "sim-0008 " KEY "\n";

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/test_config.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/fleet.txt", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(FLEET_FILE, f);
    fclose(f);
}

static void remove_dir(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/fleet.txt", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/iotgw.yaml", dir);
    unlink(path);
    rmdir(dir);
}

/* Load a configuration whose fleet section ends in shard_yaml (the lines under fleet:,
 * after devices and devicesFile). */
static int load(const char *shard_yaml, iotgw_config **c, iotgw_diag *d)
{
    char path[128];
    snprintf(path, sizeof path, "%s/iotgw.yaml", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "hub: {hostName: hub.example}\n"
            "devices: {listen: \"127.0.0.1:7000\"}\n"
            "fleet:\n"
            "  devices:\n"
            "    - {id: sim-0009, key: %s}\n"
            "  devicesFile: fleet.txt\n"
            "%s",
            KEY, shard_yaml);
    fclose(f);
    memset(d, 0, sizeof *d);
    *c = NULL;
    return iotgw_config_load(path, c, d);
}

static iotgw_config *loaded(const char *shard_yaml)
{
    iotgw_config *c;
    iotgw_diag d;
    int rc = load(shard_yaml, &c, &d);
    ck_assert_msg(rc == 0, "%s", d.text);
    return c;
}

/* The error a configuration is refused with (the part after "file:"). */
static const char *refused(const char *shard_yaml)
{
    static iotgw_diag d;
    iotgw_config *c;
    int rc = load(shard_yaml, &c, &d);
    ck_assert_msg(rc == IOTGW_ERR_CONFIG, "accepted (%d):\n%s", rc, shard_yaml);
    ck_assert_ptr_null(c);
    ck_assert_ptr_null(strstr(d.text, KEY)); /* never a key */
    const char *after = strstr(d.text, "iotgw.yaml:");
    ck_assert_msg(after != NULL, "%s", d.text);
    return after + strlen("iotgw.yaml:");
}

static void assert_ids(const iotgw_config *c, const char *expected)
{
    char got[256] = "";
    for (size_t i = 0; i < c->ndevices; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", i ? " " : "", c->devices[i].id);
    ck_assert_str_eq(got, expected);
}

START_TEST(without_shard_the_gateway_serves_every_device)
{
    iotgw_config *c = loaded("");
    ck_assert_uint_eq(c->shard_count, 1);
    ck_assert_uint_eq(c->shard_index, 0);
    ck_assert_int_eq(c->shard_given, 0);
    ck_assert_uint_eq(c->ndevices, 9);
    ck_assert_uint_eq(c->fleet_size, 9);
    ck_assert_uint_eq(c->nelsewhere, 0);
    ck_assert_int_eq(iotgw_config_device_elsewhere(c, "sim-0001"), -1);
    iotgw_config_free(c);
}
END_TEST

START_TEST(a_shard_keeps_its_devices_and_only_the_ids_of_the_others)
{
    iotgw_config *c = loaded("  shard: {count: 3, index: 1}\n");
    ck_assert_uint_eq(c->shard_count, 3);
    ck_assert_uint_eq(c->shard_index, 1);
    ck_assert_int_eq(c->shard_given, 1);
    ck_assert_ptr_null(c->shard_from);
    ck_assert_uint_eq(c->fleet_size, 9);
    assert_ids(c, "sim-0005 sim-0006 sim-0009"); /* still sorted: lookups are a binary search */
    for (size_t i = 0; i < c->ndevices; i++)
        ck_assert_str_eq(c->devices[i].key, KEY);
    ck_assert_int_eq(iotgw_config_device_find(c, "sim-0005")->disabled, 1); /* flags stay */
    ck_assert_ptr_nonnull(iotgw_config_device_find(c, "sim-0009"));         /* from fleet.devices */
    ck_assert_ptr_null(iotgw_config_device_find(c, "sim-0001"));
    ck_assert_uint_eq(c->nelsewhere, 6);
    ck_assert_int_eq(iotgw_config_device_elsewhere(c, "sim-0001"), 2);
    ck_assert_int_eq(iotgw_config_device_elsewhere(c, "sim-0003"), 0);
    ck_assert_int_eq(iotgw_config_device_elsewhere(c, "sim-0008"), 0);
    ck_assert_int_eq(iotgw_config_device_elsewhere(c, "sim-0007"), 2);
    ck_assert_int_eq(iotgw_config_device_elsewhere(c, "sim-0005"), -1); /* this gateway's */
    ck_assert_int_eq(iotgw_config_device_elsewhere(c, "sim-0012"), -1); /* in no shard of the fleet */
    ck_assert_int_eq(iotgw_config_device_elsewhere(c, NULL), -1);
    iotgw_config_free(c);

    c = loaded("  shard: {count: 3, index: 0}\n");
    assert_ids(c, "sim-0003 sim-0004 sim-0008");
    iotgw_config_free(c);
    c = loaded("  shard: {count: 3, index: 2}\n");
    assert_ids(c, "sim-0001 sim-0002 sim-0007");
    iotgw_config_free(c);
    c = loaded("  shard: {count: 1, index: 0}\n");
    ck_assert_uint_eq(c->ndevices, 9);
    ck_assert_int_eq(c->shard_given, 1);
    iotgw_config_free(c);
}
END_TEST

START_TEST(the_index_comes_from_a_pod_name)
{
    setenv("TEST_POD_NAME", "iotgw-2", 1);
    iotgw_config *c = loaded("  shard:\n    count: 3\n    index: {podNameEnv: TEST_POD_NAME}\n");
    ck_assert_uint_eq(c->shard_index, 2);
    ck_assert_str_eq(c->shard_from, "TEST_POD_NAME=iotgw-2");
    assert_ids(c, "sim-0001 sim-0002 sim-0007");
    iotgw_config_free(c);
    setenv("TEST_POD_NAME", "edge-gw-0", 1);
    c = loaded("  shard: {count: 1024, index: {podNameEnv: TEST_POD_NAME}}\n");
    ck_assert_uint_eq(c->shard_index, 0);
    iotgw_config_free(c);
    unsetenv("TEST_POD_NAME");
}
END_TEST

START_TEST(pod_names_without_an_ordinal_are_refused_naming_the_variable)
{
    const char *yaml = "  shard: {count: 3, index: {podNameEnv: TEST_POD_NAME}}\n";
    setenv("TEST_POD_NAME", "iotgw", 1);
    ck_assert_str_eq(refused(yaml), "7: fleet.shard.index.podNameEnv: environment variable TEST_POD_NAME is "
                                    "\"iotgw\", which does not end in -N, a StatefulSet pod's ordinal (e.g. "
                                    "iotgw-2)");
    setenv("TEST_POD_NAME", "iotgw-3", 1); /* a 4th replica of 3 shards */
    ck_assert_str_eq(refused(yaml), "7: fleet.shard.index.podNameEnv: environment variable TEST_POD_NAME is "
                                    "\"iotgw-3\": ordinal 3 is not below fleet.shard.count 3 (more replicas "
                                    "than shards?)");
    setenv("TEST_POD_NAME", "", 1);
    ck_assert_str_eq(refused(yaml), "7: fleet.shard.index.podNameEnv: environment variable TEST_POD_NAME is "
                                    "empty, not a pod name ending in -N");
    setenv("TEST_POD_NAME", "iotgw-1\x1b[2J", 1);
    const char *why = refused(yaml);
    ck_assert_ptr_nonnull(
        strstr(why, "environment variable TEST_POD_NAME is not a pod name: byte 7 is 0x1b"));
    ck_assert_ptr_null(strchr(why, '\x1b'));
    unsetenv("TEST_POD_NAME");
    ck_assert_str_eq(refused(yaml),
                     "7: fleet.shard.index.podNameEnv: environment variable TEST_POD_NAME is "
                     "not set (on Kubernetes: env TEST_POD_NAME from the downward API, fieldRef "
                     "metadata.name)");
    ck_assert_str_eq(refused("  shard: {count: 3, index: {podNameEnv: \"POD NAME\"}}\n"),
                     "7: fleet.shard.index.podNameEnv: not an environment variable's name (1 to 128 of A-Z, "
                     "a-z, 0-9, _)");
    ck_assert_str_eq(refused("  shard: {count: 3, index: {podNameEnv: 1POD}}\n"),
                     "7: fleet.shard.index.podNameEnv: not an environment variable's name (1 to 128 of A-Z, "
                     "a-z, 0-9, _)");
    ck_assert_ptr_nonnull(strstr(refused("  shard: {count: 3, index: {podName: POD_NAME}}\n"), "podName"));
    ck_assert_str_eq(refused("  shard: {count: 3, index: {}}\n"),
                     "7: fleet.shard.index: a number, or podNameEnv: the environment variable that holds the "
                     "pod's name (e.g. {podNameEnv: POD_NAME})");
}
END_TEST

START_TEST(count_and_index_are_bounded)
{
    ck_assert_str_eq(refused("  shard: {count: 0, index: 0}\n"),
                     "7: fleet.shard.count: 0 is out of range 1..1024");
    ck_assert_str_eq(refused("  shard: {count: 1025, index: 0}\n"),
                     "7: fleet.shard.count: 1025 is out of range 1..1024");
    ck_assert_str_eq(refused("  shard: {count: -1, index: 0}\n"),
                     "7: fleet.shard.count: -1 is out of range 1..1024");
    ck_assert_str_eq(refused("  shard: {count: three, index: 0}\n"),
                     "7: fleet.shard.count: expected a whole number, got \"three\"");
    ck_assert_str_eq(refused("  shard: {count: 3.0, index: 0}\n"),
                     "7: fleet.shard.count: expected a whole number, got \"3.0\"");
    ck_assert_str_eq(refused("  shard: {count: 99999999999999999999, index: 0}\n"),
                     "7: fleet.shard.count: expected a whole number, got \"99999999999999999999\"");
    ck_assert_str_eq(refused("  shard: {count: [3], index: 0}\n"),
                     "7: fleet.shard.count: expected a single value");
    ck_assert_str_eq(refused("  shard: {count: 3, index: 3}\n"),
                     "7: fleet.shard.index: 3 is not below fleet.shard.count 3 (shards are 0..count-1)");
    ck_assert_str_eq(refused("  shard: {count: 3, index: -1}\n"),
                     "7: fleet.shard.index: -1 is out of range 0..1023");
    ck_assert_str_eq(refused("  shard: {count: 1024, index: 1024}\n"),
                     "7: fleet.shard.index: 1024 is out of range 0..1023");
    ck_assert_str_eq(refused("  shard: {count: 3, index: [1]}\n"),
                     "7: fleet.shard.index: expected a single value");
    iotgw_config *c = loaded("  shard: {count: 1024, index: 1023}\n");
    ck_assert_uint_eq(c->shard_index, 1023);
    iotgw_config_free(c);
}
END_TEST

START_TEST(shard_needs_both_keys_and_no_others)
{
    ck_assert_str_eq(refused("  shard: {count: 3}\n"),
                     "7: fleet.shard: index is required (e.g. {count: 3, index: {podNameEnv: POD_NAME}})");
    ck_assert_str_eq(refused("  shard: {index: 1}\n"),
                     "7: fleet.shard: count is required (e.g. {count: 3, index: {podNameEnv: POD_NAME}})");
    ck_assert_ptr_nonnull(strstr(refused("  shard: {count: 3, index: 1, replicas: 3}\n"), "replicas"));
    ck_assert_ptr_nonnull(strstr(refused("  shard: 3\n"), "fleet.shard"));
}
END_TEST

START_TEST(a_device_listed_twice_is_found_whatever_its_shard)
{
    /* sim-0001 is in shard 2: a gateway of shard 0 refuses the duplicate all the same */
    char path[128];
    snprintf(path, sizeof path, "%s/fleet.txt", dir);
    FILE *f = fopen(path, "a");
    ck_assert_ptr_nonnull(f);
    fputs("sim-0001 " KEY "\n", f);
    fclose(f);
    ck_assert_ptr_nonnull(
        strstr(refused("  shard: {count: 3, index: 0}\n"), "device \"sim-0001\" is listed twice"));
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("shard");
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_add_test(tc, without_shard_the_gateway_serves_every_device);
    tcase_add_test(tc, a_shard_keeps_its_devices_and_only_the_ids_of_the_others);
    tcase_add_test(tc, the_index_comes_from_a_pod_name);
    tcase_add_test(tc, pod_names_without_an_ordinal_are_refused_naming_the_variable);
    tcase_add_test(tc, count_and_index_are_bounded);
    tcase_add_test(tc, shard_needs_both_keys_and_no_others);
    tcase_add_test(tc, a_device_listed_twice_is_found_whatever_its_shard);
    suite_add_tcase(s, tc);
    return s;
}
