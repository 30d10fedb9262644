/*
 * The IoT Hub query language over twin documents (docs/emulator.md, "Service side"):
 *
 *   SELECT [TOP n] * | item [AS alias] [, ...]
 *   FROM devices | devices.modules | devices.jobs
 *   [WHERE condition]
 *   [GROUP BY attribute]
 *
 * where an item is an attribute (tags.location.region, properties.reported.x, deviceId;
 * also x['key'] and x[0]) or an aggregate (COUNT(), SUM(a), AVG(a), MIN(a), MAX(a)), and a
 * condition combines attributes and constants (strings in ' or ", numbers, decimal or
 * 0x hexadecimal, true, false, null, undefined, [arrays]) with =, !=, <>, <, >, <=, >=,
 * IN, NIN, NOT IN, AND, OR, NOT, + - * / %, parentheses and IS_DEFINED, IS_NULL,
 * IS_BOOL, IS_NUMBER, IS_STRING, IS_OBJECT, IS_ARRAY, IS_PRIMITIVE, STARTSWITH,
 * ENDSWITH. Keywords, functions and attribute names are case-insensitive (an exact
 * match of a name wins). As in IoT Hub, a comparison of values of different types, or of
 * an undefined attribute, is undefined, and a document is selected only when its
 * condition is true.
 *
 * The parser is bounded for hostile input: at most EMU_QUERY_MAX_CHARS characters, terms
 * (operands, operators, constants, SELECT items) and nesting (parentheses, NOT, unary
 * minus, function arguments, arrays); whatever it does not support is refused with a
 * reason naming the offset.
 *
 * Ownership: a parsed query is the caller's (emu_query_free); a run copies nothing of
 * the documents it is fed (it keeps references) and is freed by emu_query_run_finish.
 * Threading: none; a query may be run by several runs at once on one thread.
 */
#ifndef IOTGW_EMULATOR_QUERY_H
#define IOTGW_EMULATOR_QUERY_H

#include <stddef.h>
#include <jansson.h>

#define EMU_QUERY_MAX_CHARS 8192 /* IoT Hub's limit on a query's length */
#define EMU_QUERY_MAX_TERMS 256
#define EMU_QUERY_MAX_DEPTH 32
#define EMU_QUERY_MAX_PATH  16 /* segments of one attribute */

typedef enum emu_query_source {
    EMU_QUERY_DEVICES, /* device twins */
    EMU_QUERY_MODULES, /* module twins */
    EMU_QUERY_JOBS,    /* per-device job records: parsed, answered by whoever serves jobs */
} emu_query_source;

typedef struct emu_query emu_query;
typedef struct emu_query_run emu_query_run;

/* Parse len bytes of text. 0 and *out, or -1 with why (it names the offset) and *out
 * NULL; -2 when out of memory. */
int emu_query_parse(const char *text, size_t len, emu_query **out, char *why, size_t why_len);
void emu_query_free(emu_query *q);

emu_query_source emu_query_from(const emu_query *q);
/* SELECT * without aggregation: the rows are the documents themselves (IoT Hub's item
 * type "twin"); else they are projections (item type "raw"). */
int emu_query_selects_documents(const emu_query *q);
/* Does the document satisfy the WHERE condition (1; always, without one) or not (0)? */
int emu_query_matches(const emu_query *q, json_t *doc);

/* A run over documents that keeps rows skip .. skip + max - 1 of the result (after TOP),
 * for paging. */
emu_query_run *emu_query_run_new(const emu_query *q, size_t skip, size_t max);
/* Feed one document (borrowed; a reference is kept when it becomes a row). 0: feed
 * more; 1: the run needs no more documents; -1: out of memory. */
int emu_query_run_add(emu_query_run *r, json_t *doc);
/* The rows kept (a new JSON array, NULL when out of memory), and whether more rows
 * follow them; frees the run. */
json_t *emu_query_run_finish(emu_query_run *r, int *more);

#endif
