/* The IoT Hub query language of the emulator (emulator/query.c): each construct over a
 * small fleet of twin documents, paging windows, and the refusals, each bound tried at
 * its limit and one over it. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "emulator/query.h"
#include "tests/unit/check_main.h"

static const char *const FLEET =
    "["
    "{\"deviceId\":\"d1\",\"status\":\"enabled\",\"connectionState\":\"Connected\","
    " \"tags\":{\"location\":{\"region\":\"US\",\"plant\":\"Redmond43\"},\"floor\":1},"
    " \"properties\":{\"desired\":{\"interval\":30,\"$version\":2},"
    "   "
    "\"reported\":{\"telemetryConfig\":{\"status\":\"Success\"},\"temp\":21.5,\"fw\":\"1.2.0\",\"$version\":"
    "3}}},"
    "{\"deviceId\":\"d2\",\"status\":\"enabled\",\"connectionState\":\"Disconnected\","
    " \"tags\":{\"location\":{\"region\":\"EU\"},\"floor\":2},"
    " \"properties\":{\"desired\":{\"interval\":60,\"$version\":2},"
    "   "
    "\"reported\":{\"telemetryConfig\":{\"status\":\"Pending\"},\"temp\":19,\"fw\":\"1.1.9\",\"$version\":2}}"
    "},"
    "{\"deviceId\":\"d3\",\"status\":\"disabled\",\"connectionState\":\"Disconnected\","
    " \"tags\":{\"location\":{\"region\":\"US\"},\"floor\":3,\"my-key\":\"x\"},"
    " \"properties\":{\"desired\":{\"$version\":1},"
    "   "
    "\"reported\":{\"telemetryConfig\":{\"status\":\"Success\"},\"temp\":25,\"list\":[7,8],\"$version\":4}}},"
    "{\"deviceId\":\"d4\",\"status\":\"enabled\",\"connectionState\":\"Disconnected\",\"tags\":{},"
    " \"properties\":{\"desired\":{\"$version\":1},\"reported\":{\"temp\":null,\"$version\":1}}},"
    "{\"deviceId\":\"d5\",\"status\":\"enabled\",\"connectionState\":\"Connected\","
    " \"tags\":{\"location\":{\"region\":\"US\"},\"floor\":\"3\"},"
    " \"properties\":{\"desired\":{\"interval\":30,\"$version\":5},"
    "   \"reported\":{\"telemetryConfig\":{\"status\":\"Error\"},\"temp\":30,\"$version\":2}}}"
    "]";

static json_t *fleet(void)
{
    json_t *docs = json_loads(FLEET, 0, NULL);
    ck_assert_ptr_nonnull(docs);
    return docs;
}

static emu_query *parse_ok(const char *text)
{
    emu_query *q;
    char why[300];
    int rc = emu_query_parse(text, strlen(text), &q, why, sizeof why);
    ck_assert_msg(rc == 0, "%s: %s", text, why);
    return q;
}

/* The refusal's reason, or "" if it parsed. */
static const char *refusal(const char *text, size_t len)
{
    static char why[300];
    emu_query *q;
    if (emu_query_parse(text, len, &q, why, sizeof why) == 0) {
        emu_query_free(q);
        return "";
    }
    ck_assert_ptr_null(q);
    return why;
}

static void refused(const char *text, const char *because)
{
    const char *why = refusal(text, strlen(text));
    ck_assert_msg(strstr(why, because), "%s: expected \"%s\", got \"%s\"", text, because, why);
}

/* Rows skip .. skip + max - 1 of the query over docs, as compact JSON text. */
static char *rows_window(const char *text, json_t *docs, size_t skip, size_t max, int *more)
{
    emu_query *q = parse_ok(text);
    emu_query_run *r = emu_query_run_new(q, skip, max);
    ck_assert_ptr_nonnull(r);
    for (size_t i = 0; i < json_array_size(docs); i++)
        if (emu_query_run_add(r, json_array_get(docs, i)) == 1)
            break;
    json_t *rows = emu_query_run_finish(r, more);
    ck_assert_ptr_nonnull(rows);
    char *out = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    emu_query_free(q);
    return out;
}

static char *rows(const char *text)
{
    json_t *docs = fleet();
    int more;
    char *out = rows_window(text, docs, 0, 1000, &more);
    ck_assert_int_eq(more, 0);
    json_decref(docs);
    return out;
}

/* The deviceIds the query selects, joined with commas. */
static char *ids(const char *text)
{
    json_t *docs = fleet();
    emu_query *q = parse_ok(text);
    char *out = calloc(1, 256);
    for (size_t i = 0; i < json_array_size(docs); i++)
        if (emu_query_matches(q, json_array_get(docs, i))) {
            if (out[0])
                strcat(out, ",");
            strcat(out, json_string_value(json_object_get(json_array_get(docs, i), "deviceId")));
        }
    emu_query_free(q);
    json_decref(docs);
    return out;
}

#define IDS(query, expected)                                                                                 \
    do {                                                                                                     \
        char *got_ = ids(query);                                                                             \
        ck_assert_msg(!strcmp(got_, expected), "%s: expected %s, got %s", query, expected, got_);            \
        free(got_);                                                                                          \
    } while (0)

#define ROWS(query, expected)                                                                                \
    do {                                                                                                     \
        char *got_ = rows(query);                                                                            \
        ck_assert_msg(!strcmp(got_, expected), "%s:\n expected %s\n got      %s", query, expected, got_);    \
        free(got_);                                                                                          \
    } while (0)

START_TEST(select_star_and_projections)
{
    emu_query *q = parse_ok("SELECT * FROM devices");
    ck_assert_int_eq(emu_query_from(q), EMU_QUERY_DEVICES);
    ck_assert_int_eq(emu_query_selects_documents(q), 1);
    emu_query_free(q);
    json_t *docs = fleet();
    int more;
    char *all = rows_window("select * from DEVICES", docs, 0, 100, &more);
    char *expected = json_dumps(docs, JSON_COMPACT);
    ck_assert_str_eq(all, expected); /* the documents themselves */
    free(all);
    free(expected);
    json_decref(docs);
    ROWS("SELECT deviceId FROM devices", "[{\"deviceId\":\"d1\"},{\"deviceId\":\"d2\"},{\"deviceId\":\"d3\"},"
                                         "{\"deviceId\":\"d4\"},{\"deviceId\":"
                                         "\"d5\"}]");
    /* names are matched without case and shown as the document has them; undefined is left out */
    ROWS("SELECT DeviceId, tags.location.region, properties.reported.temp AS t FROM devices WHERE tags.floor "
         ">= 2",
         "[{\"deviceId\":\"d2\",\"region\":\"EU\",\"t\":19},{\"deviceId\":\"d3\",\"region\":\"US\",\"t\":25}"
         "]");
    ROWS("SELECT tags['my-key'], properties.reported.list[1] FROM devices WHERE deviceId = 'd3'",
         "[{\"my-key\":\"x\",\"$2\":8}]");
    ROWS("SELECT TOP 2 deviceId FROM devices", "[{\"deviceId\":\"d1\"},{\"deviceId\":\"d2\"}]");
    ROWS("SELECT TOP 0 * FROM devices", "[]");
    q = parse_ok("SELECT deviceId FROM devices");
    ck_assert_int_eq(emu_query_selects_documents(q), 0);
    emu_query_free(q);
}
END_TEST

START_TEST(where_on_each_part_of_the_twin)
{
    IDS("SELECT * FROM devices WHERE tags.location.region = 'US'", "d1,d3,d5");
    IDS("SELECT * FROM devices WHERE properties.reported.telemetryConfig.status = \"Success\"", "d1,d3");
    IDS("SELECT * FROM devices WHERE properties.desired.interval = 30", "d1,d5");
    IDS("SELECT * FROM devices WHERE status = 'disabled'", "d3");
    IDS("SELECT * FROM devices WHERE deviceId = 'd4'", "d4");
    IDS("SELECT * FROM devices WHERE connectionState = 'Connected'", "d1,d5");
    IDS("SELECT * FROM devices WHERE properties.reported.$version = 2", "d2,d5");
    IDS("SELECT * FROM devices WHERE devices.tags.floor = 1", "d1"); /* the collection's name may lead */
    IDS("SELECT * FROM devices WHERE TAGS.Location.REGION = 'EU'", "d2");
}
END_TEST

START_TEST(comparisons)
{
    IDS("SELECT * FROM devices WHERE properties.reported.temp > 21.5", "d3,d5");
    IDS("SELECT * FROM devices WHERE properties.reported.temp >= 21.5", "d1,d3,d5");
    IDS("SELECT * FROM devices WHERE properties.reported.temp < 21.5", "d2");
    IDS("SELECT * FROM devices WHERE properties.reported.temp <= 25", "d1,d2,d3");
    IDS("SELECT * FROM devices WHERE properties.reported.temp != 25",
        "d1,d2,d5"); /* null and missing: undefined */
    IDS("SELECT * FROM devices WHERE properties.reported.temp <> 25", "d1,d2,d5");
    IDS("SELECT * FROM devices WHERE properties.reported.fw >= '1.2'", "d1"); /* strings, ordinal */
    IDS("SELECT * FROM devices WHERE deviceId < 'd3'", "d1,d2");
    IDS("SELECT * FROM devices WHERE tags.floor = 3", "d3");     /* not d5's "3": another type */
    IDS("SELECT * FROM devices WHERE tags.floor != 3", "d1,d2"); /* neither d5's "3" nor d4's missing one */
    IDS("SELECT * FROM devices WHERE properties.reported.temp = null", "d4");
    IDS("SELECT * FROM devices WHERE tags.location = tags.location", ""); /* objects do not compare */
    IDS("SELECT * FROM devices WHERE true = true AND false != true", "d1,d2,d3,d4,d5");
    IDS("SELECT * FROM devices WHERE false < true", ""); /* Booleans are not ordered */
    IDS("SELECT * FROM devices WHERE tags.floor = 1.0", "d1");
}
END_TEST

START_TEST(logic_and_parentheses)
{
    IDS("SELECT * FROM devices WHERE tags.location.region = 'US' AND status = 'enabled'", "d1,d5");
    IDS("SELECT * FROM devices WHERE deviceId = 'd1' OR deviceId = 'd4'", "d1,d4");
    IDS("SELECT * FROM devices WHERE NOT status = 'enabled'", "d3");
    /* AND binds tighter than OR */
    IDS("SELECT * FROM devices WHERE deviceId = 'd1' OR deviceId = 'd2' AND status = 'disabled'", "d1");
    IDS("SELECT * FROM devices WHERE (deviceId = 'd1' OR deviceId = 'd2') AND status = 'enabled'", "d1,d2");
    IDS("SELECT * FROM devices WHERE NOT (deviceId = 'd1' OR deviceId = 'd2')", "d3,d4,d5");
    /* undefined: NOT of it, and AND with true, select nothing; OR with true selects */
    IDS("SELECT * FROM devices WHERE NOT tags.location.region = 'US'", "d2");
    IDS("SELECT * FROM devices WHERE tags.missing = 1 OR deviceId = 'd2'", "d2");
    IDS("SELECT * FROM devices WHERE tags.missing = 1 AND deviceId = 'd2'", "");
    IDS("SELECT * FROM devices WHERE NOT (tags.missing = 1 AND deviceId = 'd2')", "d1,d3,d4,d5");
    IDS("SELECT * FROM devices WHERE deviceId", ""); /* only true selects */
    IDS("select * from devices where not not deviceId = 'd2'", "d2");
}
END_TEST

START_TEST(literals)
{
    IDS("SELECT * FROM devices WHERE deviceId = \"d2\"", "d2");
    IDS("SELECT * FROM devices WHERE deviceId = 'd\\u0032'", "d2");
    IDS("SELECT * FROM devices WHERE 'it\\'s' = \"it's\" AND '\\\\\\\"' = \"\\\\\\\"\"", "d1,d2,d3,d4,d5");
    IDS("SELECT * FROM devices WHERE '\\ud83d\\ude00' = '\xf0\x9f\x98\x80' AND 'caf\xc3\xa9' = 'caf\\u00e9'",
        "d1,d2,d3,d4,d5");
    IDS("SELECT * FROM devices WHERE properties.desired.interval = 0x1E", "d1,d5");
    IDS("SELECT * FROM devices WHERE properties.reported.temp = 2.15e1", "d1");
    IDS("SELECT * FROM devices WHERE -properties.reported.temp = -19", "d2");
    IDS("SELECT * FROM devices WHERE properties.reported.temp > -1e2 AND deviceId IN ['d2', 'd3']", "d2,d3");
    IDS("SELECT * FROM devices WHERE tags.missing = undefined", "");
    IDS("SELECT * FROM devices WHERE TRUE", "d1,d2,d3,d4,d5");
    IDS("SELECT * FROM devices WHERE NULL = null", "d1,d2,d3,d4,d5");
}
END_TEST

START_TEST(in_nin_functions_arithmetic)
{
    IDS("SELECT * FROM devices WHERE deviceId IN ['d1', 'd3', 'x']", "d1,d3");
    IDS("SELECT * FROM devices WHERE deviceId NIN ['d1', 'd3']", "d2,d4,d5");
    IDS("SELECT * FROM devices WHERE deviceId NOT IN ['d1', 'd3']", "d2,d4,d5");
    IDS("SELECT * FROM devices WHERE tags.floor IN [1, 2]", "d1,d2");
    IDS("SELECT * FROM devices WHERE tags.missing NIN [1]", ""); /* undefined stays undefined */
    IDS("SELECT * FROM devices WHERE deviceId IN []", "");
    IDS("SELECT * FROM devices WHERE is_defined(properties.desired.interval)", "d1,d2,d5");
    IDS("SELECT * FROM devices WHERE IS_DEFINED(properties.reported.temp)", "d1,d2,d3,d4,d5");
    IDS("SELECT * FROM devices WHERE IS_NULL(properties.reported.temp)", "d4");
    IDS("SELECT * FROM devices WHERE IS_STRING(tags.floor)", "d5");
    IDS("SELECT * FROM devices WHERE IS_NUMBER(tags.floor)", "d1,d2,d3");
    IDS("SELECT * FROM devices WHERE IS_OBJECT(tags.location) AND NOT IS_PRIMITIVE(tags.location)",
        "d1,d2,d3,d5");
    IDS("SELECT * FROM devices WHERE IS_ARRAY(properties.reported.list) AND IS_BOOL(true)", "d3");
    IDS("SELECT * FROM devices WHERE STARTSWITH(properties.reported.fw, '1.1')", "d2");
    IDS("SELECT * FROM devices WHERE ends_with(tags.location.plant, '43')", "d1");
    IDS("SELECT * FROM devices WHERE properties.desired.interval * 2 + 1 = 61", "d1,d5");
    IDS("SELECT * FROM devices WHERE properties.desired.interval / 4 = 15", "d2");
    IDS("SELECT * FROM devices WHERE tags.floor % 2 = 1 AND tags.floor - 1 > 0", "d3");
    IDS("SELECT * FROM devices WHERE properties.desired.interval / 0 = 1", ""); /* undefined */
    IDS("SELECT * FROM devices WHERE tags.floor + 'x' = 1", "");
}
END_TEST

START_TEST(count_and_group_by)
{
    ROWS("SELECT COUNT() AS n FROM devices", "[{\"n\":5}]");
    ROWS("SELECT COUNT() FROM devices WHERE status = 'nothing'", "[{\"$1\":0}]");
    ROWS("SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices FROM "
         "devices "
         "GROUP BY properties.reported.telemetryConfig.status",
         "[{\"status\":\"Success\",\"numberOfDevices\":2},{\"status\":\"Pending\",\"numberOfDevices\":1},"
         "{\"numberOfDevices\":1},{\"status\":\"Error\",\"numberOfDevices\":1}]");
    ROWS("SELECT tags.location.region, COUNT() AS n, SUM(properties.reported.temp) AS s, AVG(tags.floor) AS "
         "a, "
         "MIN(properties.reported.temp) AS lo, MAX(properties.reported.temp) AS hi FROM devices "
         "WHERE IS_DEFINED(tags.location) GROUP BY tags.location.region",
         "[{\"region\":\"US\",\"n\":3,\"s\":76.5,\"a\":2.0,\"lo\":21.5,\"hi\":30},"
         "{\"region\":\"EU\",\"n\":1,\"s\":19,\"a\":2.0,\"lo\":19,\"hi\":19}]");
    ROWS("SELECT status FROM devices GROUP BY status",
         "[{\"status\":\"enabled\"},{\"status\":\"disabled\"}]");
    ROWS("SELECT TOP 1 status, COUNT() AS n FROM devices GROUP BY status",
         "[{\"status\":\"enabled\",\"n\":4}]");
}
END_TEST

START_TEST(modules_and_jobs_collections)
{
    const char *docs_text =
        "[{\"deviceId\":\"d1\",\"moduleId\":\"m1\",\"properties\":{\"reported\":{\"status\":"
        "\"scanning\"}}},{\"deviceId\":\"d2\",\"moduleId\":\"m1\",\"properties\":{\"reported\":"
        "{\"status\":\"scanning\"}}},{\"deviceId\":\"d2\",\"moduleId\":\"m2\"}]";
    json_t *docs = json_loads(docs_text, 0, NULL);
    int more;
    emu_query *q = parse_ok("SELECT * FROM devices.modules");
    ck_assert_int_eq(emu_query_from(q), EMU_QUERY_MODULES);
    emu_query_free(q);
    char *out =
        rows_window("SELECT deviceId, moduleId FROM devices.modules WHERE properties.reported.status = "
                    "'scanning' AND deviceId IN ['d2', 'd3']",
                    docs, 0, 10, &more);
    ck_assert_str_eq(out, "[{\"deviceId\":\"d2\",\"moduleId\":\"m1\"}]");
    free(out);
    out = rows_window("SELECT * FROM devices.modules WHERE devices.modules.moduleId = 'm2'", docs, 0, 10,
                      &more);
    ck_assert_str_eq(out, "[{\"deviceId\":\"d2\",\"moduleId\":\"m2\"}]");
    free(out);
    json_decref(docs);
    q = parse_ok("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'");
    ck_assert_int_eq(emu_query_from(q), EMU_QUERY_JOBS);
    emu_query_free(q);
    refused("SELECT deviceId FROM devices.jobs", "devices.jobs take SELECT * only");
}
END_TEST

START_TEST(paging_windows)
{
    json_t *docs = fleet();
    int more;
    char *out = rows_window("SELECT deviceId FROM devices", docs, 0, 2, &more);
    ck_assert_str_eq(out, "[{\"deviceId\":\"d1\"},{\"deviceId\":\"d2\"}]");
    ck_assert_int_eq(more, 1);
    free(out);
    out = rows_window("SELECT deviceId FROM devices", docs, 4, 2, &more);
    ck_assert_str_eq(out, "[{\"deviceId\":\"d5\"}]");
    ck_assert_int_eq(more, 0);
    free(out);
    out = rows_window("SELECT deviceId FROM devices", docs, 3, 2, &more); /* exactly the last two */
    ck_assert_str_eq(out, "[{\"deviceId\":\"d4\"},{\"deviceId\":\"d5\"}]");
    ck_assert_int_eq(more, 0);
    free(out);
    out = rows_window("SELECT TOP 3 deviceId FROM devices", docs, 2, 2, &more); /* TOP ends the result */
    ck_assert_str_eq(out, "[{\"deviceId\":\"d3\"}]");
    ck_assert_int_eq(more, 0);
    free(out);
    out = rows_window("SELECT status, COUNT() AS n FROM devices GROUP BY status", docs, 0, 1, &more);
    ck_assert_str_eq(out, "[{\"status\":\"enabled\",\"n\":4}]");
    ck_assert_int_eq(more, 1);
    free(out);
    out = rows_window("SELECT status, COUNT() AS n FROM devices GROUP BY status", docs, 1, 1, &more);
    ck_assert_str_eq(out, "[{\"status\":\"disabled\",\"n\":1}]");
    ck_assert_int_eq(more, 0);
    free(out);
    json_decref(docs);
}
END_TEST

START_TEST(refusals)
{
    refused("", "a query starts with SELECT");
    refused("UPDATE devices", "a query starts with SELECT");
    refused("SELECT", "SELECT's list");
    refused("SELECT * FROM", "FROM takes devices");
    refused("SELECT * FROM devices.things", "FROM takes devices");
    refused("SELECT * FROM twins", "FROM takes devices");
    refused("SELECT * devices", "FROM is expected");
    refused("SELECT * FROM devices d", "unexpected text");
    refused("SELECT * FROM devices WHERE", "a value is expected");
    refused("SELECT * FROM devices WHERE deviceId =", "a value is expected");
    refused("SELECT * FROM devices WHERE deviceId = 'a", "a string is not closed");
    refused("SELECT * FROM devices WHERE deviceId = 'a\\x'", "an escape other than");
    refused("SELECT * FROM devices WHERE deviceId = '\\u12'", "four hexadecimal digits");
    refused("SELECT * FROM devices WHERE deviceId = '\\ud800'", "four hexadecimal digits");
    refused("SELECT * FROM devices WHERE deviceId = '\\udc00'", "not paired");
    refused("SELECT * FROM devices WHERE deviceId = '\xff'", "not UTF-8");
    refused("SELECT * FROM devices WHERE tags.x = 1.", "malformed");
    refused("SELECT * FROM devices WHERE tags.x = 12abc", "malformed");
    refused("SELECT * FROM devices WHERE tags.x = 0x", "malformed");
    refused("SELECT * FROM devices WHERE tags.x = 1e999", "out of range");
    refused("SELECT * FROM devices WHERE tags.x = 0xFFFFFFFFFFFFFFFFF", "out of range");
    refused("SELECT * FROM devices WHERE (deviceId = 'a'", "( is not closed");
    refused("SELECT * FROM devices WHERE deviceId = 'a' = 'b'", "do not chain");
    refused("SELECT * FROM devices WHERE deviceId IN 'a'", "array of constants");
    refused("SELECT * FROM devices WHERE deviceId IN ['a', tags.x]", "a constant is expected");
    refused("SELECT * FROM devices WHERE deviceId IN ['a'", "not closed by ]");
    refused("SELECT * FROM devices WHERE NOT IN ['a']", "NOT IN needs a value");
    refused("SELECT * FROM devices WHERE LOWER(deviceId) = 'a'", "function LOWER is not supported");
    refused("SELECT * FROM devices WHERE STARTSWITH(deviceId) = 'a'", "takes two arguments");
    refused("SELECT * FROM devices WHERE IS_DEFINED(a, b)", "takes one argument");
    refused("SELECT * FROM devices WHERE tags. = 1", "an attribute name is expected");
    refused("SELECT * FROM devices WHERE tags[x] = 1", "[ takes a string or a whole number");
    refused("SELECT * FROM devices WHERE tags[1.5] = 1", "[ takes a string or a whole number");
    refused("SELECT * FROM devices WHERE tags['a' = 1", "[ is not closed by ]");
    refused("SELECT * FROM devices WHERE AND = 1", "unexpected keyword AND");
    refused("SELECT * FROM devices ORDER BY deviceId", "ORDER BY is not part");
    refused("SELECT * FROM devices GROUP deviceId", "GROUP is followed by BY");
    refused("SELECT * FROM devices GROUP BY status", "not SELECT *");
    refused("SELECT status, tags.x FROM devices GROUP BY status", "x is neither aggregated");
    refused("SELECT deviceId, COUNT() FROM devices", "deviceId is neither aggregated");
    refused("SELECT COUNT() FROM devices GROUP BY status, tags.x", "one attribute");
    refused("SELECT COUNT(deviceId) FROM devices", "COUNT() takes no argument");
    refused("SELECT SUM() FROM devices", "an aggregate takes an attribute");
    refused("SELECT deviceId, DeviceId FROM devices", "two items of SELECT are named DeviceId");
    refused("SELECT deviceId AS FROM devices", "AS takes a name");
    refused("SELECT TOP -1 * FROM devices", "TOP takes a whole number");
    refused("SELECT TOP 1.5 * FROM devices", "TOP takes a whole number");
    refused("SELECT * FROM devices WHERE deviceId = 'a\0'", "a string is not closed"); /* C string ends */
    /* a NUL byte inside the text */
    const char nul[] = "SELECT * FROM devices WHERE deviceId = 'a'\0 OR true";
    ck_assert_ptr_nonnull(strstr(refusal(nul, sizeof nul - 1), "unexpected text"));
    /* a reason names where */
    ck_assert_ptr_nonnull(strstr(refusal("SELECT * FROM devices WHERE x = ", 32), "(at offset 32)"));
}
END_TEST

/* A query of exactly n characters (n >= 40), padded with blanks or a multibyte string. */
static char *query_of(size_t n, int multibyte)
{
    const char *head = "SELECT * FROM devices WHERE deviceId = '";
    size_t h = strlen(head);
    char *s = malloc(h + 4 * n + 2);
    strcpy(s, head);
    size_t len = h;
    for (size_t i = h; i < n - 1; i++) {
        if (multibyte) {
            memcpy(s + len, "\xe2\x82\xac", 3); /* one character, three bytes */
            len += 3;
        } else {
            s[len++] = 'a';
        }
    }
    s[len++] = '\'';
    s[len] = '\0';
    return s;
}

START_TEST(bounds_one_over)
{
    /* length: 8192 characters pass, 8193 do not; characters, not bytes */
    for (int multibyte = 0; multibyte <= 1; multibyte++) {
        char *s = query_of(EMU_QUERY_MAX_CHARS, multibyte);
        ck_assert_str_eq(refusal(s, strlen(s)), "");
        free(s);
        s = query_of(EMU_QUERY_MAX_CHARS + 1, multibyte);
        ck_assert_ptr_nonnull(strstr(refusal(s, strlen(s)), "longer than 8192 characters"));
        free(s);
    }
    /* depth: 32 nested parentheses pass, 33 do not; NOT, unary minus and arrays nest too */
    char buf[EMU_QUERY_MAX_CHARS + 1];
    for (int extra = 0; extra <= 1; extra++) {
        int d = EMU_QUERY_MAX_DEPTH + extra;
        int n = snprintf(buf, sizeof buf, "SELECT * FROM devices WHERE ");
        for (int i = 0; i < d; i++)
            buf[n++] = '(';
        n += snprintf(buf + n, sizeof buf - (size_t)n, "deviceId = 'd1'");
        for (int i = 0; i < d; i++)
            buf[n++] = ')';
        buf[n] = '\0';
        const char *why = refusal(buf, (size_t)n);
        if (extra)
            ck_assert_ptr_nonnull(strstr(why, "nests deeper than 32 levels"));
        else
            ck_assert_str_eq(why, "");
        n = snprintf(buf, sizeof buf, "SELECT * FROM devices WHERE ");
        for (int i = 0; i < d; i++)
            n += snprintf(buf + n, sizeof buf - (size_t)n, i < d / 2 + d % 2 ? "NOT " : "- ");
        n += snprintf(buf + n, sizeof buf - (size_t)n, "x");
        why = refusal(buf, (size_t)n);
        ck_assert_msg(extra ? strstr(why, "nests deeper") != NULL : !strcmp(why, ""), "%s", why);
        /* arrays nest */
        n = snprintf(buf, sizeof buf, "SELECT * FROM devices WHERE x IN ");
        for (int i = 0; i < d; i++)
            buf[n++] = '[';
        for (int i = 0; i < d; i++)
            buf[n++] = ']';
        buf[n] = '\0';
        why = refusal(buf, (size_t)n);
        ck_assert_msg(extra ? strstr(why, "nests deeper") != NULL : !strcmp(why, ""), "%s", why);
    }
    /* terms: x IN [c1 .. ck] is k + 2 terms (the attribute, IN, each constant) */
    for (int extra = 0; extra <= 1; extra++) {
        int n = snprintf(buf, sizeof buf, "SELECT * FROM devices WHERE deviceId IN [");
        for (int i = 0; i < EMU_QUERY_MAX_TERMS - 2 + extra; i++)
            n += snprintf(buf + n, sizeof buf - (size_t)n, "%s%d", i ? "," : "", i);
        n += snprintf(buf + n, sizeof buf - (size_t)n, "]");
        const char *why = refusal(buf, (size_t)n);
        ck_assert_msg(extra ? strstr(why, "more than 256 terms") != NULL : !strcmp(why, ""), "%s", why);
    }
    /* and OR chains, and SELECT lists, count the same way */
    int n = snprintf(buf, sizeof buf, "SELECT * FROM devices WHERE a=1");
    for (int i = 0; i < 64; i++) /* 3 + 64 * 4 terms */
        n += snprintf(buf + n, sizeof buf - (size_t)n, " OR a=1");
    ck_assert_ptr_nonnull(strstr(refusal(buf, (size_t)n), "more than 256 terms"));
    n = snprintf(buf, sizeof buf, "SELECT a0");
    for (int i = 1; i < EMU_QUERY_MAX_TERMS + 1; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, ", a%d", i);
    n += snprintf(buf + n, sizeof buf - (size_t)n, " FROM devices");
    ck_assert_ptr_nonnull(strstr(refusal(buf, (size_t)n), "more than 256 terms"));
    /* an attribute of 16 names passes, of 17 does not */
    for (int extra = 0; extra <= 1; extra++) {
        n = snprintf(buf, sizeof buf, "SELECT * FROM devices WHERE a");
        for (int i = 1; i < EMU_QUERY_MAX_PATH + extra; i++)
            n += snprintf(buf + n, sizeof buf - (size_t)n, i % 2 ? ".b" : "['c']");
        n += snprintf(buf + n, sizeof buf - (size_t)n, " = 1");
        const char *why = refusal(buf, (size_t)n);
        ck_assert_msg(extra ? strstr(why, "names") != NULL : !strcmp(why, ""), "%s", why);
    }
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("query");
    TCase *tc = tcase_create("query");
    tcase_add_test(tc, select_star_and_projections);
    tcase_add_test(tc, where_on_each_part_of_the_twin);
    tcase_add_test(tc, comparisons);
    tcase_add_test(tc, logic_and_parentheses);
    tcase_add_test(tc, literals);
    tcase_add_test(tc, in_nin_functions_arithmetic);
    tcase_add_test(tc, count_and_group_by);
    tcase_add_test(tc, modules_and_jobs_collections);
    tcase_add_test(tc, paging_windows);
    tcase_add_test(tc, refusals);
    tcase_add_test(tc, bounds_one_over);
    suite_add_tcase(s, tc);
    return s;
}
