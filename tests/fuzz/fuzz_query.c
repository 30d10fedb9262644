/*
 * The emulator's IoT Hub query parser and evaluator (emulator/query.c) fuzz target: the
 * input is a query's text.
 * Properties: a refusal always says why, in text fit for a JSON error body; a query
 * that parses runs over a small fleet, and its rows read in pages of two are the rows
 * read at once (paging neither loses nor repeats a row); nothing leaks (ASan).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "emulator/query.h"

static const char *const FLEET =
    "[{\"deviceId\":\"d1\",\"status\":\"enabled\",\"tags\":{\"location\":{\"region\":\"US\"},\"floor\":1},"
    "\"properties\":{\"desired\":{\"interval\":30,\"$version\":2},\"reported\":{\"temp\":21.5,\"fw\":\"1.2\","
    "\"list\":[1,\"a\",null,{\"x\":true}],\"$version\":3}}},"
    "{\"deviceId\":\"d2\",\"status\":\"disabled\",\"tags\":{\"location\":{\"region\":\"EU\"},\"floor\":\"2\"}"
    ","
    "\"properties\":{\"desired\":{\"$version\":1},\"reported\":{\"temp\":null,\"$version\":1}}},"
    "{\"deviceId\":\"d3\",\"moduleId\":\"m1\",\"status\":\"enabled\",\"tags\":{},"
    "\"properties\":{\"desired\":{\"interval\":9223372036854775807,\"$version\":1},"
    "\"reported\":{\"temp\":-1e300,\"$version\":1}}},"
    "{\"deviceId\":\"d4\",\"status\":\"enabled\",\"tags\":{\"floor\":-9223372036854775807},"
    "\"properties\":{\"desired\":{\"$version\":1},\"reported\":{\"temp\":0,\"$version\":1}}}]";

static json_t *docs;

static json_t *rows(const emu_query *q, size_t skip, size_t max, int *more)
{
    emu_query_run *r = emu_query_run_new(q, skip, max);
    if (!r)
        abort();
    for (size_t i = 0; i < json_array_size(docs); i++) {
        int rc = emu_query_run_add(r, json_array_get(docs, i));
        if (rc < 0)
            abort();
        if (rc == 1)
            break;
    }
    json_t *out = emu_query_run_finish(r, more);
    if (!out)
        abort();
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!docs && !(docs = json_loads(FLEET, 0, NULL)))
        abort();
    char why[300];
    emu_query *q;
    int rc = emu_query_parse((const char *)data, size, &q, why, sizeof why);
    if (rc) {
        json_t *text = json_string(why); /* UTF-8, as the error body needs */
        if (rc != -1 || q || !why[0] || !text)
            abort();
        json_decref(text);
        return 0;
    }
    int more;
    json_t *all = rows(q, 0, 1000, &more);
    if (more)
        abort();
    json_t *paged = json_array();
    for (size_t skip = 0;; skip += 2) {
        json_t *page = rows(q, skip, 2, &more);
        if (json_array_size(page) > 2 || (more && json_array_size(page) != 2))
            abort();
        json_array_extend(paged, page);
        json_decref(page);
        if (!more)
            break;
    }
    if (!json_equal(all, paged))
        abort();
    for (size_t i = 0; i < json_array_size(docs); i++)
        emu_query_matches(q, json_array_get(docs, i));
    (void)emu_query_from(q);
    (void)emu_query_selects_documents(q);
    json_decref(all);
    json_decref(paged);
    emu_query_free(q);
    return 0;
}
