#include "codecs/json_text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct strbuf {
    char *s;
    size_t len, cap;
    int failed;
} strbuf;

static void put(strbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->failed = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void put_str(strbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20) {
            memcpy(u, "\\u00", 4);
            u[4] = hex[c >> 4];
            u[5] = hex[c & 15];
            u[6] = '\0';
            esc = u;
        }
        if (esc) {
            put(b, s + run, i - run);
            put(b, esc, strlen(esc));
            run = i + 1;
        }
    }
    put(b, s + run, n - run);
    put(b, "\"", 1);
}

static void put_real(strbuf *b, double v)
{
    char num[32];
    if (!isfinite(v)) {
        b->failed = 1;
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(num, sizeof num, "%.*g", prec, v);
        if (strtod(num, NULL) == v)
            break;
    }
    /* keep it a real when read back: "1" would become an integer */
    if (!strpbrk(num, ".eEn"))
        strcat(num, ".0");
    put(b, num, strlen(num));
}

static void put_value(strbuf *b, const json_t *j)
{
    char num[32];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *v;
        int first = 1;
        put(b, "{", 1);
        json_object_foreach((json_t *)j, key, v)
        {
            if (!first)
                put(b, ",", 1);
            first = 0;
            put_str(b, key, strlen(key));
            put(b, ":", 1);
            put_value(b, v);
        }
        put(b, "}", 1);
        break;
    }
    case JSON_ARRAY:
        put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i)
                put(b, ",", 1);
            put_value(b, json_array_get(j, i));
        }
        put(b, "]", 1);
        break;
    case JSON_STRING: put_str(b, json_string_value(j), json_string_length(j)); break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        put(b, num, strlen(num));
        break;
    case JSON_REAL: put_real(b, json_real_value(j)); break;
    case JSON_TRUE: put(b, "true", 4); break;
    case JSON_FALSE: put(b, "false", 5); break;
    case JSON_NULL: put(b, "null", 4); break;
    }
}

char *iotgw_json_text(const json_t *json)
{
    strbuf b = {0};
    if (!json)
        return NULL;
    put_value(&b, json);
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
