/* The IoT Hub query language (emulator/query.h): a recursive-descent parser into an
 * array of nodes, bounded in characters, terms and depth, and an evaluator over jansson
 * documents with IoT Hub's undefined-aware logic. */
#include "emulator/query.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_ITEMS EMU_QUERY_MAX_TERMS

enum node_kind { N_LIT, N_PATH, N_NOT, N_NEG, N_AND, N_OR, N_CMP, N_ARITH, N_IN, N_NIN, N_FUNC };
enum cmp_op { OP_EQ, OP_NE, OP_LT, OP_GT, OP_LE, OP_GE };
enum agg_kind { AGG_NONE, AGG_COUNT, AGG_SUM, AGG_AVG, AGG_MIN, AGG_MAX };
enum func_id {
    F_IS_DEFINED,
    F_IS_NULL,
    F_IS_BOOL,
    F_IS_NUMBER,
    F_IS_STRING,
    F_IS_OBJECT,
    F_IS_ARRAY,
    F_IS_PRIMITIVE,
    F_STARTSWITH,
    F_ENDSWITH,
};

static const struct {
    const char *name;
    int id, args;
} functions[] = {
    {"IS_DEFINED", F_IS_DEFINED, 1},  {"IS_NULL", F_IS_NULL, 1},           {"IS_BOOL", F_IS_BOOL, 1},
    {"IS_NUMBER", F_IS_NUMBER, 1},    {"IS_STRING", F_IS_STRING, 1},       {"IS_OBJECT", F_IS_OBJECT, 1},
    {"IS_ARRAY", F_IS_ARRAY, 1},      {"IS_PRIMITIVE", F_IS_PRIMITIVE, 1}, {"STARTSWITH", F_STARTSWITH, 2},
    {"STARTS_WITH", F_STARTSWITH, 2}, {"ENDSWITH", F_ENDSWITH, 2},         {"ENDS_WITH", F_ENDSWITH, 2},
};

static const char *const reserved[] = {"SELECT", "FROM", "WHERE", "GROUP", "BY",  "AS",   "AND",
                                       "OR",     "NOT",  "IN",    "NIN",   "TOP", "ORDER"};

typedef struct qnode {
    int kind, op, a, b;
    json_t *v; /* N_LIT: the constant (NULL: undefined); N_PATH: its segments (strings,
                  integers); N_IN, N_NIN: the array of constants */
} qnode;

typedef struct qitem {
    int agg;    /* AGG_* */
    int node;   /* the attribute (N_PATH), -1 for COUNT() */
    char *name; /* the alias, or NULL: the attribute's last name, or "$n" */
    int named;  /* an alias was given */
} qitem;

struct emu_query {
    qnode *nodes;
    int nnodes, cap, terms;
    int star, top; /* top -1: none */
    qitem items[MAX_ITEMS];
    int nitems;
    emu_query_source from;
    int where, group; /* node indexes, -1: none */
    int aggregate;    /* the rows are groups */
};

/* ------------------------------------------------------------------ parsing */

typedef struct parser {
    const char *s;
    size_t len, pos;
    emu_query *q;
    int depth, nomem;
    char *why;
    size_t why_len;
} parser;

static int fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(parser *p, const char *fmt, ...)
{
    if (p->why && p->why_len && !p->why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->why, p->why_len, fmt, ap);
        va_end(ap);
        size_t n = strlen(p->why);
        snprintf(p->why + n, p->why_len - n, " (at offset %zu)", p->pos);
    }
    return -1;
}

static int nomem(parser *p)
{
    p->nomem = 1;
    return fail(p, "out of memory");
}

static int is_id_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$';
}

static int is_id_char(int c)
{
    return is_id_start(c) || (c >= '0' && c <= '9');
}

static void ws(parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                               p->s[p->pos] == '\r' || p->s[p->pos] == '\f' || p->s[p->pos] == '\v'))
        p->pos++;
}

static int at_end(parser *p)
{
    ws(p);
    return p->pos >= p->len;
}

static int cur(parser *p)
{
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

/* The length of the identifier at pos (after blanks), 0 if none. */
static size_t word_len(parser *p)
{
    ws(p);
    size_t n = 0;
    if (p->pos < p->len && is_id_start((unsigned char)p->s[p->pos]))
        while (p->pos + n < p->len && is_id_char((unsigned char)p->s[p->pos + n]))
            n++;
    return n;
}

static int word_is(parser *p, size_t n, const char *k)
{
    return n == strlen(k) && !strncasecmp(p->s + p->pos, k, n);
}

static int peek_kw(parser *p, const char *k)
{
    return word_is(p, word_len(p), k);
}

static int kw(parser *p, const char *k)
{
    size_t n = word_len(p);
    if (!word_is(p, n, k))
        return 0;
    p->pos += n;
    return 1;
}

static int is_reserved(parser *p, size_t n)
{
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (word_is(p, n, reserved[i]))
            return 1;
    return 0;
}

static int sym(parser *p, const char *s)
{
    ws(p);
    size_t n = strlen(s);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, s, n))
        return 0;
    p->pos += n;
    return 1;
}

static int count_term(parser *p)
{
    if (++p->q->terms > EMU_QUERY_MAX_TERMS)
        return fail(p, "the query has more than %d terms", EMU_QUERY_MAX_TERMS);
    return 0;
}

static int deeper(parser *p)
{
    if (++p->depth > EMU_QUERY_MAX_DEPTH)
        return fail(p, "the query nests deeper than %d levels", EMU_QUERY_MAX_DEPTH);
    return 0;
}

/* A new node owning v (v is released on failure); its index, or -1. */
static int node(parser *p, int kind, int op, int a, int b, json_t *v)
{
    emu_query *q = p->q;
    if (count_term(p)) {
        json_decref(v);
        return -1;
    }
    if (q->nnodes == q->cap) {
        int cap = q->cap ? 2 * q->cap : 16;
        qnode *n = realloc(q->nodes, (size_t)cap * sizeof *n);
        if (!n) {
            json_decref(v);
            return nomem(p);
        }
        q->nodes = n;
        q->cap = cap;
    }
    q->nodes[q->nnodes] = (qnode){.kind = kind, .op = op, .a = a, .b = b, .v = v};
    return q->nnodes++;
}

/* Four hexadecimal digits at pos, as a \u escape has them; -1 if not. */
static long hex4(parser *p)
{
    long u = 0;
    for (int i = 0; i < 4; i++, p->pos++) {
        int h = cur(p);
        int d = h >= '0' && h <= '9'                     ? h - '0'
                : (h | 0x20) >= 'a' && (h | 0x20) <= 'f' ? (h | 0x20) - 'a' + 10
                                                         : -1;
        if (d < 0)
            return -1;
        u = u * 16 + d;
    }
    return u;
}

static size_t put_utf8(char *out, unsigned long cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string literal at pos (its quote), with JSON's escapes (IoT Hub documents \', \",
 * \\ and \uXXXX); a new JSON string or NULL (failed). */
static json_t *string_literal(parser *p)
{
    static const char escapes[] = "'\"\\/bfnrt", escaped[] = "'\"\\/\b\f\n\r\t";
    char quote = p->s[p->pos++];
    char *buf = malloc(p->len - p->pos + 1); /* no escape is shorter than what it stands for */
    const char *problem = NULL;
    size_t n = 0;
    if (!buf) {
        nomem(p);
        return NULL;
    }
    while (!problem) {
        int c = cur(p);
        p->pos++;
        if (c < 0 || (c == '\\' && p->pos >= p->len)) {
            problem = "a string is not closed";
        } else if (c == quote) {
            break;
        } else if (c != '\\') {
            buf[n++] = (char)c;
        } else if ((c = cur(p)) && strchr(escapes, c)) {
            buf[n++] = escaped[strchr(escapes, c) - escapes];
            p->pos++;
        } else if (c != 'u') {
            problem = "a string has an escape other than \\' \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX";
        } else {
            p->pos++;
            long u = hex4(p), low = -1;
            if (u >= 0xD800 && u <= 0xDBFF && p->len - p->pos >= 2 && p->s[p->pos] == '\\' &&
                p->s[p->pos + 1] == 'u') {
                p->pos += 2;
                low = hex4(p);
            }
            if (u < 0 || (u >= 0xD800 && u <= 0xDBFF && low < 0))
                problem = "\\u needs four hexadecimal digits, and a high surrogate its low one";
            else if ((u >= 0xDC00 && u <= 0xDFFF) || (low >= 0 && (low < 0xDC00 || low > 0xDFFF)))
                problem = "a \\u surrogate is not paired";
            else
                n += put_utf8(buf + n, low >= 0 ? 0x10000 + ((unsigned long)(u - 0xD800) << 10) +
                                                      (unsigned long)(low - 0xDC00)
                                                : (unsigned long)u);
        }
    }
    json_t *v = problem ? NULL : json_stringn(buf, n);
    free(buf);
    if (!v)
        fail(p, "%s", problem ? problem : "a string is not UTF-8");
    return v;
}

/* A number at pos (a digit); a new JSON integer or real, or NULL. */
static json_t *number_literal(parser *p, int negative)
{
    const char *s = p->s + p->pos;
    size_t left = p->len - p->pos, n = 0;
    if (left >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        uint64_t v = 0;
        n = 2;
        while (n < left && strchr("0123456789abcdefABCDEF", s[n]) && s[n]) {
            int d = s[n] <= '9' ? s[n] - '0' : (s[n] | 0x20) - 'a' + 10;
            if (v >= (UINT64_C(1) << 59)) {
                fail(p, "a number is out of range");
                return NULL;
            }
            v = v * 16 + (uint64_t)d;
            n++;
        }
        if (n == 2 || (n < left && is_id_char((unsigned char)s[n]))) {
            fail(p, "a hexadecimal number is malformed");
            return NULL;
        }
        p->pos += n;
        return json_integer(negative ? -(json_int_t)v : (json_int_t)v);
    }
    int real = 0;
    while (n < left && s[n] >= '0' && s[n] <= '9')
        n++;
    if (n < left && s[n] == '.') {
        real = 1;
        n++;
        size_t d = n;
        while (n < left && s[n] >= '0' && s[n] <= '9')
            n++;
        if (n == d) {
            fail(p, "a number is malformed");
            return NULL;
        }
    }
    if (n < left && (s[n] == 'e' || s[n] == 'E')) {
        real = 1;
        n++;
        if (n < left && (s[n] == '+' || s[n] == '-'))
            n++;
        size_t d = n;
        while (n < left && s[n] >= '0' && s[n] <= '9')
            n++;
        if (n == d) {
            fail(p, "a number's exponent is malformed");
            return NULL;
        }
    }
    if (n < left && is_id_char((unsigned char)s[n])) {
        fail(p, "a number is malformed");
        return NULL;
    }
    if (n > 64) {
        fail(p, "a number is longer than 64 characters");
        return NULL;
    }
    char text[68];
    snprintf(text, sizeof text, "%s%.*s", negative ? "-" : "", (int)n, s);
    p->pos += n;
    errno = 0;
    if (!real) {
        long long v = strtoll(text, NULL, 10);
        if (errno != ERANGE)
            return json_integer((json_int_t)v);
        errno = 0;
    }
    double d = strtod(text, NULL);
    if (errno == ERANGE || !isfinite(d)) {
        fail(p, "a number is out of range");
        return NULL;
    }
    return json_real(d);
}

static json_t *constant(parser *p);

/* '[' constant, ... ']' at pos; a new array or NULL. */
static json_t *array_constant(parser *p)
{
    if (deeper(p))
        return NULL;
    p->pos++;
    json_t *a = json_array();
    if (!a) {
        nomem(p);
        return NULL;
    }
    if (!sym(p, "]")) {
        do {
            json_t *v = constant(p);
            if (!v || count_term(p)) {
                json_decref(v);
                json_decref(a);
                return NULL;
            }
            if (json_array_append_new(a, v)) {
                json_decref(a);
                nomem(p);
                return NULL;
            }
        } while (sym(p, ","));
        if (!sym(p, "]")) {
            json_decref(a);
            fail(p, "an array is not closed by ]");
            return NULL;
        }
    }
    p->depth--;
    return a;
}

/* A constant (string, number, true, false, null, array) at pos; new, or NULL. Undefined
 * is no constant here (it has no JSON value). */
static json_t *constant(parser *p)
{
    ws(p);
    int c = cur(p), negative = 0;
    if (c == '-') {
        p->pos++;
        ws(p);
        c = cur(p);
        negative = 1;
        if (!(c >= '0' && c <= '9')) {
            fail(p, "a number is expected after -");
            return NULL;
        }
    }
    if (c >= '0' && c <= '9')
        return number_literal(p, negative);
    if (c == '\'' || c == '"')
        return string_literal(p);
    if (c == '[')
        return array_constant(p);
    if (kw(p, "true"))
        return json_true();
    if (kw(p, "false"))
        return json_false();
    if (kw(p, "null"))
        return json_null();
    fail(p, "a constant is expected");
    return NULL;
}

/* An attribute: name ('.' name | '[' string | integer ']')*, at pos (an identifier). */
static int path(parser *p)
{
    json_t *segs = json_array();
    if (!segs)
        return nomem(p);
    int first = 1;
    for (;;) {
        if (first || sym(p, ".")) {
            size_t n = word_len(p);
            if (!n) {
                json_decref(segs);
                return fail(p, "an attribute name is expected");
            }
            if (first && is_reserved(p, n)) {
                json_decref(segs);
                return fail(p, "unexpected keyword %.*s", (int)n, p->s + p->pos);
            }
            if (json_array_size(segs) >= EMU_QUERY_MAX_PATH) {
                json_decref(segs);
                return fail(p, "an attribute has more than %d names", EMU_QUERY_MAX_PATH);
            }
            if (json_array_append_new(segs, json_stringn(p->s + p->pos, n))) {
                json_decref(segs);
                return nomem(p);
            }
            p->pos += n;
            first = 0;
        } else if (sym(p, "[")) {
            ws(p);
            int c = cur(p);
            json_t *seg = NULL;
            if (c == '\'' || c == '"') {
                seg = string_literal(p);
            } else if (c >= '0' && c <= '9') {
                seg = number_literal(p, 0);
            } else {
                json_decref(segs);
                return fail(p, "[ takes a string or a whole number");
            }
            const char *problem = !seg                ? ""
                                  : json_is_real(seg) ? "[ takes a string or a whole number"
                                  : !sym(p, "]")      ? "[ is not closed by ]"
                                  : json_array_size(segs) >= EMU_QUERY_MAX_PATH
                                      ? "an attribute has too many names"
                                      : NULL;
            if (problem && *problem)
                fail(p, "%s", problem);
            if (problem || json_array_append_new(segs, seg)) {
                if (!problem)
                    nomem(p);
                json_decref(problem ? seg : NULL);
                json_decref(segs);
                return -1;
            }
        } else {
            break;
        }
    }
    return node(p, N_PATH, 0, -1, -1, segs);
}

static int expr_or(parser *p);

static int primary(parser *p)
{
    ws(p);
    int c = cur(p);
    if (c == '(') {
        if (deeper(p))
            return -1;
        p->pos++;
        int n = expr_or(p);
        if (n < 0)
            return -1;
        if (!sym(p, ")"))
            return fail(p, "( is not closed by )");
        p->depth--;
        return n;
    }
    if ((c >= '0' && c <= '9') || c == '\'' || c == '"' || c == '[') {
        json_t *v = constant(p);
        return v ? node(p, N_LIT, 0, -1, -1, v) : -1;
    }
    size_t n = word_len(p);
    if (!n)
        return fail(p, c < 0 ? "the query ends where a value is expected" : "a value is expected");
    if (word_is(p, n, "true") || word_is(p, n, "false") || word_is(p, n, "null")) {
        json_t *v = constant(p);
        return v ? node(p, N_LIT, 0, -1, -1, v) : -1;
    }
    if (word_is(p, n, "undefined")) {
        p->pos += n;
        return node(p, N_LIT, 0, -1, -1, NULL);
    }
    if (is_reserved(p, n))
        return fail(p, "unexpected keyword %.*s", (int)n, p->s + p->pos);
    size_t save = p->pos;
    p->pos += n;
    if (sym(p, "(")) {
        int f = -1, args = 0;
        for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++)
            if (n == strlen(functions[i].name) && !strncasecmp(p->s + save, functions[i].name, n)) {
                f = functions[i].id;
                args = functions[i].args;
            }
        if (f < 0) {
            p->pos = save;
            return fail(p, "function %.*s is not supported in twin queries", (int)(n > 64 ? 64 : n),
                        p->s + save);
        }
        if (deeper(p))
            return -1;
        int a = expr_or(p), b = -1;
        if (a < 0)
            return -1;
        if (args == 2) {
            if (!sym(p, ","))
                return fail(p, "%.*s takes two arguments", (int)n, p->s + save);
            if ((b = expr_or(p)) < 0)
                return -1;
        }
        if (!sym(p, ")"))
            return fail(p, "%.*s takes %s", (int)n, p->s + save,
                        args == 2 ? "two arguments" : "one argument");
        p->depth--;
        return node(p, N_FUNC, f, a, b, NULL);
    }
    p->pos = save;
    return path(p);
}

static int unary(parser *p)
{
    ws(p);
    if (cur(p) == '-') {
        if (deeper(p))
            return -1;
        p->pos++;
        ws(p);
        int c = cur(p), n;
        if (c >= '0' && c <= '9') { /* a negative constant */
            json_t *v = number_literal(p, 1);
            n = v ? node(p, N_LIT, 0, -1, -1, v) : -1;
        } else {
            int a = unary(p);
            n = a < 0 ? -1 : node(p, N_NEG, 0, a, -1, NULL);
        }
        p->depth--;
        return n;
    }
    return primary(p);
}

static int product(parser *p)
{
    int l = unary(p);
    while (l >= 0) {
        int op = sym(p, "*") ? '*' : sym(p, "/") ? '/' : sym(p, "%") ? '%' : 0;
        if (!op)
            break;
        int r = unary(p);
        l = r < 0 ? -1 : node(p, N_ARITH, op, l, r, NULL);
    }
    return l;
}

static int sum(parser *p)
{
    int l = product(p);
    while (l >= 0) {
        int op = sym(p, "+") ? '+' : sym(p, "-") ? '-' : 0;
        if (!op)
            break;
        int r = product(p);
        l = r < 0 ? -1 : node(p, N_ARITH, op, l, r, NULL);
    }
    return l;
}

/* A comparison operator at pos: OP_*, or -1. */
static int cmp_op(parser *p)
{
    if (sym(p, "<="))
        return OP_LE;
    if (sym(p, ">="))
        return OP_GE;
    if (sym(p, "<>") || sym(p, "!="))
        return OP_NE;
    if (sym(p, "="))
        return OP_EQ;
    if (sym(p, "<"))
        return OP_LT;
    if (sym(p, ">"))
        return OP_GT;
    return -1;
}

static int comparison(parser *p)
{
    int l = sum(p);
    if (l < 0)
        return -1;
    int op = cmp_op(p), n;
    if (op >= 0) {
        int r = sum(p);
        n = r < 0 ? -1 : node(p, N_CMP, op, l, r, NULL);
    } else {
        size_t save = p->pos;
        int kind = kw(p, "IN") ? N_IN : kw(p, "NIN") ? N_NIN : (kw(p, "NOT") && kw(p, "IN")) ? N_NIN : -1;
        if (kind < 0) {
            p->pos = save;
            return l;
        }
        ws(p);
        if (cur(p) != '[')
            return fail(p, "IN and NIN take an array of constants, [...]");
        json_t *a = array_constant(p);
        n = a ? node(p, kind, 0, l, -1, a) : -1;
    }
    if (n >= 0) {
        size_t save = p->pos;
        if (cmp_op(p) >= 0 || kw(p, "IN") || kw(p, "NIN")) {
            p->pos = save;
            return fail(p, "comparisons do not chain: use AND, or parentheses");
        }
    }
    return n;
}

static int negation(parser *p)
{
    size_t save = p->pos;
    if (kw(p, "NOT")) {
        if (peek_kw(p, "IN")) { /* "NOT IN" with no left side */
            p->pos = save;
            return fail(p, "NOT IN needs a value on its left");
        }
        if (deeper(p))
            return -1;
        int a = negation(p);
        p->depth--;
        return a < 0 ? -1 : node(p, N_NOT, 0, a, -1, NULL);
    }
    return comparison(p);
}

static int conjunction(parser *p)
{
    int l = negation(p);
    while (l >= 0 && kw(p, "AND")) {
        int r = negation(p);
        l = r < 0 ? -1 : node(p, N_AND, 0, l, r, NULL);
    }
    return l;
}

static int expr_or(parser *p)
{
    int l = conjunction(p);
    while (l >= 0 && kw(p, "OR")) {
        int r = conjunction(p);
        l = r < 0 ? -1 : node(p, N_OR, 0, l, r, NULL);
    }
    return l;
}

static int select_item(parser *p)
{
    emu_query *q = p->q;
    if (q->nitems >= MAX_ITEMS)
        return fail(p, "the query has more than %d terms", EMU_QUERY_MAX_TERMS);
    qitem *it = &q->items[q->nitems];
    *it = (qitem){.agg = AGG_NONE, .node = -1};
    static const struct {
        const char *name;
        int agg;
    } aggs[] = {{"COUNT", AGG_COUNT}, {"SUM", AGG_SUM}, {"AVG", AGG_AVG}, {"MIN", AGG_MIN}, {"MAX", AGG_MAX}};
    size_t n = word_len(p), save = p->pos;
    for (size_t i = 0; i < sizeof aggs / sizeof aggs[0] && !it->agg; i++)
        if (word_is(p, n, aggs[i].name)) {
            p->pos += n;
            if (sym(p, "("))
                it->agg = aggs[i].agg;
            else
                p->pos = save;
        }
    if (it->agg) {
        if (it->agg == AGG_COUNT) {
            if (!sym(p, ")"))
                return fail(p, "COUNT() takes no argument");
            if (count_term(p))
                return -1;
        } else {
            if (!word_len(p))
                return fail(p, "an aggregate takes an attribute");
            if ((it->node = path(p)) < 0)
                return -1;
            if (!sym(p, ")"))
                return fail(p, "an aggregate takes one attribute");
        }
    } else {
        if (!n)
            return fail(p, at_end(p) ? "the query ends where SELECT's list is expected"
                                     : "SELECT takes *, attributes or aggregates");
        if ((it->node = path(p)) < 0)
            return -1;
    }
    q->nitems++; /* from here on freed with the query */
    if (kw(p, "AS")) {
        size_t a = word_len(p);
        if (!a || is_reserved(p, a))
            return fail(p, "AS takes a name");
        if (!(it->name = strndup(p->s + p->pos, a)))
            return nomem(p);
        it->named = 1;
        p->pos += a;
    } else if (it->node >= 0 && !it->agg) {
        json_t *segs = q->nodes[it->node].v;
        json_t *last = json_array_get(segs, json_array_size(segs) - 1);
        if (json_is_string(last) && !(it->name = strdup(json_string_value(last))))
            return nomem(p);
    }
    if (!it->name) { /* unnamed: $1, $2 ... by position, as Cosmos DB names them */
        char name[16];
        snprintf(name, sizeof name, "$%d", q->nitems);
        if (!(it->name = strdup(name)))
            return nomem(p);
    }
    return 0;
}

/* Are two attributes the same (names compared without case)? */
static int same_path(json_t *a, json_t *b)
{
    if (json_array_size(a) != json_array_size(b))
        return 0;
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *x = json_array_get(a, i), *y = json_array_get(b, i);
        if (json_is_string(x) != json_is_string(y))
            return 0;
        if (json_is_string(x) ? strcasecmp(json_string_value(x), json_string_value(y))
                              : json_integer_value(x) != json_integer_value(y))
            return 0;
    }
    return 1;
}

/* "devices.x" or "devices.modules.x" name the collection's documents' x, as IoT Hub's
 * job queries write them. */
static void strip_collection(emu_query *q)
{
    for (int i = 0; i < q->nnodes; i++) {
        json_t *segs = q->nodes[i].v;
        if (q->nodes[i].kind != N_PATH || json_array_size(segs) < 2)
            continue;
        const char *s0 = json_string_value(json_array_get(segs, 0));
        const char *s1 = json_string_value(json_array_get(segs, 1));
        if (!s0 || strcasecmp(s0, "devices"))
            continue;
        if (q->from != EMU_QUERY_DEVICES && s1 &&
            !strcasecmp(s1, q->from == EMU_QUERY_MODULES ? "modules" : "jobs") && json_array_size(segs) > 2) {
            json_array_remove(segs, 0);
            json_array_remove(segs, 0);
        } else if (q->from == EMU_QUERY_DEVICES) {
            json_array_remove(segs, 0);
        }
    }
}

static int parse(parser *p)
{
    emu_query *q = p->q;
    if (!kw(p, "SELECT"))
        return fail(p, "a query starts with SELECT");
    if (kw(p, "TOP")) {
        ws(p);
        int c = cur(p);
        json_t *v = c >= '0' && c <= '9' ? number_literal(p, 0) : NULL;
        if (!json_is_integer(v) || json_integer_value(v) > 1000000000) {
            json_decref(v);
            return fail(p, "TOP takes a whole number up to 1000000000");
        }
        q->top = (int)json_integer_value(v);
        json_decref(v);
    }
    if (sym(p, "*")) {
        q->star = 1;
    } else {
        do {
            if (select_item(p))
                return -1;
        } while (sym(p, ","));
    }
    if (!kw(p, "FROM"))
        return fail(p, at_end(p) ? "the query has no FROM" : "FROM is expected");
    if (!kw(p, "devices"))
        return fail(p, "FROM takes devices, devices.modules or devices.jobs");
    q->from = EMU_QUERY_DEVICES;
    if (sym(p, ".")) {
        if (kw(p, "modules"))
            q->from = EMU_QUERY_MODULES;
        else if (kw(p, "jobs"))
            q->from = EMU_QUERY_JOBS;
        else
            return fail(p, "FROM takes devices, devices.modules or devices.jobs");
    }
    if (kw(p, "WHERE") && (q->where = expr_or(p)) < 0)
        return -1;
    if (kw(p, "GROUP")) {
        if (!kw(p, "BY"))
            return fail(p, "GROUP is followed by BY");
        if (!word_len(p))
            return fail(p, "GROUP BY takes an attribute");
        if ((q->group = path(p)) < 0)
            return -1;
        if (sym(p, ","))
            return fail(p, "GROUP BY takes one attribute here");
    }
    if (peek_kw(p, "ORDER"))
        return fail(p, "ORDER BY is not part of IoT Hub's query language");
    if (!at_end(p))
        return fail(p, "unexpected text");
    /* what the clauses mean together */
    int aggs = 0;
    for (int i = 0; i < q->nitems; i++)
        aggs += q->items[i].agg != AGG_NONE;
    q->aggregate = aggs || q->group >= 0;
    strip_collection(q);
    p->pos = 0; /* the errors below are the query's as a whole */
    if (q->star && q->group >= 0)
        return fail(p, "GROUP BY needs a list of attributes and aggregates, not SELECT *");
    if (q->from == EMU_QUERY_JOBS && (!q->star || q->group >= 0))
        return fail(p, "queries of devices.jobs take SELECT * only");
    for (int i = 0; i < q->nitems; i++) {
        qitem *it = &q->items[i];
        if (q->aggregate && !it->agg &&
            (q->group < 0 || !same_path(q->nodes[it->node].v, q->nodes[q->group].v)))
            return fail(p, "%s is neither aggregated nor the GROUP BY attribute", it->name);
        for (int j = 0; j < i; j++)
            if (!strcasecmp(q->items[j].name, it->name))
                return fail(p, "two items of SELECT are named %s", it->name);
    }
    return 0;
}

static emu_query *query_alloc(void)
{
    emu_query *q = calloc(1, sizeof *q);
    if (q) {
        q->top = -1;
        q->where = -1;
        q->group = -1;
    }
    return q;
}

void emu_query_free(emu_query *q)
{
    if (!q)
        return;
    for (int i = 0; i < q->nnodes; i++)
        json_decref(q->nodes[i].v);
    for (int i = 0; i < q->nitems; i++)
        free(q->items[i].name);
    free(q->nodes);
    free(q);
}

int emu_query_parse(const char *text, size_t len, emu_query **out, char *why, size_t why_len)
{
    *out = NULL;
    if (why && why_len)
        why[0] = '\0';
    size_t chars = 0; /* UTF-8 characters: bytes other than continuation bytes */
    for (size_t i = 0; i < len; i++)
        chars += ((unsigned char)text[i] & 0xC0) != 0x80;
    parser p = {.s = text, .len = len, .why = why, .why_len = why_len};
    if (chars > EMU_QUERY_MAX_CHARS) {
        fail(&p, "the query is longer than %d characters", EMU_QUERY_MAX_CHARS);
        return -1;
    }
    if (!(p.q = query_alloc())) {
        if (why && why_len)
            snprintf(why, why_len, "out of memory");
        return -2;
    }
    if (parse(&p)) {
        emu_query_free(p.q);
        return p.nomem ? -2 : -1;
    }
    *out = p.q;
    return 0;
}

emu_query_source emu_query_from(const emu_query *q)
{
    return q->from;
}

int emu_query_selects_documents(const emu_query *q)
{
    return q->star && !q->aggregate;
}

/* ------------------------------------------------------------------ evaluation */

/* A member by name: exactly, else ignoring case. *key: the name as the document has it. */
static json_t *member(json_t *obj, const char *name, const char **key)
{
    json_t *v = json_object_get(obj, name);
    if (v) {
        *key = name;
        return v;
    }
    const char *k;
    json_object_foreach(obj, k, v)
    {
        if (!strcasecmp(k, name)) {
            *key = k;
            return v;
        }
    }
    return NULL;
}

/* The attribute's value in doc (borrowed), or NULL: undefined. */
static json_t *resolve(json_t *segs, json_t *doc, const char **last_key)
{
    json_t *v = doc;
    *last_key = NULL;
    for (size_t i = 0; v && i < json_array_size(segs); i++) {
        json_t *s = json_array_get(segs, i);
        if (json_is_string(s)) {
            v = json_is_object(v) ? member(v, json_string_value(s), last_key) : NULL;
        } else {
            json_int_t at = json_integer_value(s);
            v = json_is_array(v) && at >= 0 ? json_array_get(v, (size_t)at) : NULL;
            *last_key = NULL;
        }
    }
    return v;
}

static int is_primitive(json_t *v)
{
    return v && !json_is_object(v) && !json_is_array(v);
}

/* Equal as IoT Hub compares primitives: 1, 0, or -1 (undefined: other types). */
static int equal(json_t *l, json_t *r)
{
    if (!is_primitive(l) || !is_primitive(r))
        return -1;
    if (json_is_number(l) && json_is_number(r)) {
        if (json_is_integer(l) && json_is_integer(r))
            return json_integer_value(l) == json_integer_value(r);
        return json_number_value(l) == json_number_value(r);
    }
    if (json_typeof(l) != json_typeof(r) && !(json_is_boolean(l) && json_is_boolean(r)))
        return -1;
    return json_equal(l, r) ? 1 : 0;
}

/* l op r: 1 true, 0 false, -1 undefined. */
static int compare(json_t *l, json_t *r, int op)
{
    if (op == OP_EQ || op == OP_NE) {
        int e = equal(l, r);
        return e < 0 ? -1 : op == OP_EQ ? e : !e;
    }
    int c;
    if (json_is_number(l) && json_is_number(r)) {
        if (json_is_integer(l) && json_is_integer(r))
            c = json_integer_value(l) < json_integer_value(r) ? -1
                                                              : json_integer_value(l) > json_integer_value(r);
        else
            c = json_number_value(l) < json_number_value(r) ? -1
                                                            : json_number_value(l) > json_number_value(r);
    } else if (json_is_string(l) && json_is_string(r)) {
        size_t a = json_string_length(l), b = json_string_length(r);
        c = memcmp(json_string_value(l), json_string_value(r), a < b ? a : b);
        if (!c)
            c = a < b ? -1 : a > b;
    } else {
        return -1;
    }
    switch (op) {
    case OP_LT: return c < 0;
    case OP_GT: return c > 0;
    case OP_LE: return c <= 0;
    default: return c >= 0;
    }
}

static json_t *truth(int t)
{
    return t < 0 ? NULL : t ? json_true() : json_false();
}

static json_t *arith(json_t *l, json_t *r, int op)
{
    if (!json_is_number(l) || !json_is_number(r))
        return NULL;
    if (json_is_integer(l) && json_is_integer(r) && op != '/') {
        json_int_t a = json_integer_value(l), b = json_integer_value(r), v = 0;
        int overflow = op == '+'   ? __builtin_add_overflow(a, b, &v)
                       : op == '-' ? __builtin_sub_overflow(a, b, &v)
                       : op == '*' ? __builtin_mul_overflow(a, b, &v)
                                   : (b == 0 || (b == -1 && a == INT64_MIN));
        if (op == '%' && !overflow)
            v = a % b;
        if (!overflow)
            return json_integer(v);
        if (op == '%')
            return NULL;
    }
    double a = json_number_value(l), b = json_number_value(r), v;
    if ((op == '/' || op == '%') && b == 0)
        return NULL;
    v = op == '+' ? a + b : op == '-' ? a - b : op == '*' ? a * b : op == '/' ? a / b : fmod(a, b);
    return isfinite(v) ? json_real(v) : NULL;
}

static json_t *eval(const emu_query *q, int n, json_t *doc);

static json_t *function(const emu_query *q, const qnode *nd, json_t *doc)
{
    json_t *a = eval(q, nd->a, doc), *b = nd->b >= 0 ? eval(q, nd->b, doc) : NULL, *out;
    switch (nd->op) {
    case F_IS_DEFINED: out = truth(a != NULL); break;
    case F_IS_NULL: out = truth(json_is_null(a)); break;
    case F_IS_BOOL: out = truth(json_is_boolean(a)); break;
    case F_IS_NUMBER: out = truth(json_is_number(a)); break;
    case F_IS_STRING: out = truth(json_is_string(a)); break;
    case F_IS_OBJECT: out = truth(json_is_object(a)); break;
    case F_IS_ARRAY: out = truth(json_is_array(a)); break;
    case F_IS_PRIMITIVE: out = truth(is_primitive(a)); break;
    default: { /* STARTSWITH, ENDSWITH */
        if (!json_is_string(a) || !json_is_string(b)) {
            out = NULL;
            break;
        }
        size_t la = json_string_length(a), lb = json_string_length(b);
        const char *sa = json_string_value(a), *sb = json_string_value(b);
        out = truth(lb <= la && !memcmp(nd->op == F_STARTSWITH ? sa : sa + la - lb, sb, lb));
    }
    }
    json_decref(a);
    json_decref(b);
    return out;
}

/* The value of node n for doc: a new reference, or NULL (undefined). */
static json_t *eval(const emu_query *q, int n, json_t *doc)
{
    const qnode *nd = &q->nodes[n];
    const char *key;
    json_t *l, *r, *out = NULL;
    switch (nd->kind) {
    case N_LIT: return json_incref(nd->v);
    case N_PATH: return json_incref(resolve(nd->v, doc, &key));
    case N_NOT:
        l = eval(q, nd->a, doc);
        out = json_is_boolean(l) ? truth(!json_is_true(l)) : NULL;
        json_decref(l);
        return out;
    case N_NEG:
        l = eval(q, nd->a, doc);
        if (json_is_integer(l) && json_integer_value(l) != INT64_MIN)
            out = json_integer(-json_integer_value(l));
        else if (json_is_number(l))
            out = json_real(-json_number_value(l));
        json_decref(l);
        return out;
    case N_AND:
    case N_OR: {
        /* false AND x is false, true OR x is true; otherwise undefined unless both are Boolean */
        int dominant = nd->kind == N_OR;
        l = eval(q, nd->a, doc);
        if (json_is_boolean(l) && json_is_true(l) == dominant)
            return l;
        r = eval(q, nd->b, doc);
        if (json_is_boolean(r) && json_is_true(r) == dominant)
            out = json_incref(r);
        else if (json_is_boolean(l) && json_is_boolean(r))
            out = truth(!dominant);
        json_decref(l);
        json_decref(r);
        return out;
    }
    case N_CMP:
        l = eval(q, nd->a, doc);
        r = eval(q, nd->b, doc);
        out = truth(l && r ? compare(l, r, nd->op) : -1);
        json_decref(l);
        json_decref(r);
        return out;
    case N_ARITH:
        l = eval(q, nd->a, doc);
        r = eval(q, nd->b, doc);
        out = arith(l, r, nd->op);
        json_decref(l);
        json_decref(r);
        return out;
    case N_IN:
    case N_NIN: {
        l = eval(q, nd->a, doc);
        int found = is_primitive(l) ? 0 : -1;
        for (size_t i = 0; found == 0 && i < json_array_size(nd->v); i++)
            found = equal(l, json_array_get(nd->v, i)) == 1;
        json_decref(l);
        return truth(found < 0 ? -1 : nd->kind == N_IN ? found : !found);
    }
    default: return function(q, nd, doc);
    }
}

int emu_query_matches(const emu_query *q, json_t *doc)
{
    if (q->where < 0)
        return 1;
    json_t *v = eval(q, q->where, doc);
    int yes = json_is_true(v);
    json_decref(v);
    return yes;
}

/* ------------------------------------------------------------------ runs */

typedef struct qacc {
    double sum;
    json_int_t isum;
    int ints_only, overflow;
    size_t numbers;
    json_t *min, *max; /* the extreme values themselves */
} qacc;

typedef struct qgroup {
    json_t *key;     /* NULL: the attribute is undefined */
    char *key_name;  /* the attribute's name as the first document had it */
    json_int_t rows; /* COUNT() */
    qacc *acc;       /* one per SELECT item */
} qgroup;

struct emu_query_run {
    const emu_query *q;
    size_t skip, max, seen;
    json_t *rows;
    int more, failed;
    qgroup *groups;
    size_t ngroups, cap;
    json_t *index; /* serialized group key -> its index */
};

static qgroup *new_group(emu_query_run *r, json_t *key, const char *key_name)
{
    if (r->ngroups == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 8;
        qgroup *g = realloc(r->groups, cap * sizeof *g);
        if (!g)
            return NULL;
        r->groups = g;
        r->cap = cap;
    }
    qgroup *g = &r->groups[r->ngroups];
    *g = (qgroup){.key = json_incref(key)};
    g->acc = calloc((size_t)(r->q->nitems ? r->q->nitems : 1), sizeof *g->acc);
    if (key_name)
        g->key_name = strdup(key_name);
    if (!g->acc || (key_name && !g->key_name)) {
        json_decref(g->key);
        free(g->acc);
        free(g->key_name);
        return NULL;
    }
    for (int i = 0; i < r->q->nitems; i++)
        g->acc[i].ints_only = 1;
    r->ngroups++;
    return g;
}

emu_query_run *emu_query_run_new(const emu_query *q, size_t skip, size_t max)
{
    emu_query_run *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    *r = (emu_query_run){.q = q, .skip = skip, .max = max, .rows = json_array(), .index = json_object()};
    /* without GROUP BY an aggregate has one row, also over no documents */
    if (!r->rows || !r->index || (q->aggregate && q->group < 0 && !new_group(r, NULL, NULL))) {
        json_decref(r->rows);
        json_decref(r->index);
        free(r->groups);
        free(r);
        return NULL;
    }
    return r;
}

static json_t *project(const emu_query *q, json_t *doc)
{
    if (q->star)
        return json_incref(doc);
    json_t *row = json_object();
    for (int i = 0; row && i < q->nitems; i++) {
        const qitem *it = &q->items[i];
        const char *key;
        json_t *v = resolve(q->nodes[it->node].v, doc, &key);
        if (v && json_object_set(row, it->named || !key ? it->name : key, v)) {
            json_decref(row);
            return NULL;
        }
    }
    return row;
}

static void accumulate(qacc *a, json_t *v, int agg)
{
    if (!json_is_number(v))
        return;
    double d = json_number_value(v);
    if (!a->min || d < json_number_value(a->min)) {
        json_decref(a->min);
        a->min = json_incref(v);
    }
    if (!a->max || d > json_number_value(a->max)) {
        json_decref(a->max);
        a->max = json_incref(v);
    }
    a->numbers++;
    a->sum += d;
    if (agg == AGG_SUM && a->ints_only && json_is_integer(v) && !a->overflow)
        a->overflow = __builtin_add_overflow(a->isum, json_integer_value(v), &a->isum);
    if (!json_is_integer(v))
        a->ints_only = 0;
}

static int group_add(emu_query_run *r, json_t *doc)
{
    const emu_query *q = r->q;
    qgroup *g = r->ngroups && q->group < 0 ? &r->groups[0] : NULL;
    if (!g) {
        const char *key_name;
        json_t *key = resolve(q->nodes[q->group].v, doc, &key_name);
        char *text =
            key ? json_dumps(key, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII)
                : strdup("");
        if (!text)
            return -1;
        json_t *at = json_object_get(r->index, text);
        if (at) {
            g = &r->groups[json_integer_value(at)];
        } else if (!(g = new_group(r, key, key_name)) ||
                   json_object_set_new(r->index, text, json_integer((json_int_t)(r->ngroups - 1)))) {
            free(text);
            return -1;
        }
        free(text);
    }
    g->rows++;
    for (int i = 0; i < q->nitems; i++) {
        const qitem *it = &q->items[i];
        const char *key;
        if (it->agg != AGG_NONE && it->agg != AGG_COUNT)
            accumulate(&g->acc[i], resolve(q->nodes[it->node].v, doc, &key), it->agg);
    }
    return 0;
}

int emu_query_run_add(emu_query_run *r, json_t *doc)
{
    const emu_query *q = r->q;
    if (r->failed)
        return -1;
    if (!emu_query_matches(q, doc))
        return 0;
    if (q->aggregate) {
        if (group_add(r, doc)) {
            r->failed = 1;
            return -1;
        }
        return 0;
    }
    if (q->top >= 0 && r->seen >= (size_t)q->top)
        return 1;
    size_t at = r->seen++;
    if (at < r->skip)
        return 0;
    if (json_array_size(r->rows) >= r->max) {
        r->more = 1;
        return 1;
    }
    json_t *row = project(q, doc);
    if (!row || json_array_append_new(r->rows, row)) {
        r->failed = 1;
        return -1;
    }
    return 0;
}

static json_t *group_row(const emu_query *q, const qgroup *g)
{
    json_t *row = json_object();
    for (int i = 0; row && i < q->nitems; i++) {
        const qitem *it = &q->items[i];
        const qacc *a = &g->acc[i];
        json_t *v = NULL;
        const char *name = it->name;
        switch (it->agg) {
        case AGG_NONE:
            v = json_incref(g->key);
            if (!it->named && g->key_name)
                name = g->key_name;
            break;
        case AGG_COUNT: v = json_integer(g->rows); break;
        case AGG_SUM: v = a->ints_only && !a->overflow ? json_integer(a->isum) : json_real(a->sum); break;
        case AGG_AVG: v = a->numbers ? json_real(a->sum / (double)a->numbers) : NULL; break;
        case AGG_MIN: v = json_incref(a->min); break;
        case AGG_MAX: v = json_incref(a->max); break;
        }
        if (v && json_object_set_new(row, name, v)) {
            json_decref(row);
            return NULL;
        }
    }
    return row;
}

json_t *emu_query_run_finish(emu_query_run *r, int *more)
{
    const emu_query *q = r->q;
    json_t *rows = r->failed ? NULL : json_incref(r->rows);
    *more = r->more;
    if (rows && q->aggregate) {
        size_t total = r->ngroups;
        if (q->top >= 0 && total > (size_t)q->top)
            total = (size_t)q->top;
        for (size_t i = r->skip; i < total && i < r->skip + r->max; i++) {
            json_t *row = group_row(q, &r->groups[i]);
            if (!row || json_array_append_new(rows, row)) {
                json_decref(rows);
                rows = NULL;
                break;
            }
        }
        *more = total > r->skip + r->max;
    }
    for (size_t i = 0; i < r->ngroups; i++) {
        json_decref(r->groups[i].key);
        free(r->groups[i].key_name);
        for (int j = 0; j < q->nitems; j++) {
            json_decref(r->groups[i].acc[j].min);
            json_decref(r->groups[i].acc[j].max);
        }
        free(r->groups[i].acc);
    }
    free(r->groups);
    json_decref(r->index);
    json_decref(r->rows);
    free(r);
    return rows;
}
