#include "transport/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static iotgw_log_level max_level = IOTGW_LOG_INFO;
static iotgw_log_format format = IOTGW_LOG_FORMAT_TEXT;
static FILE *stream;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void iotgw_log_set_level(iotgw_log_level level)
{
    max_level = level;
}

int iotgw_log_enabled(iotgw_log_level level)
{
    return level <= max_level;
}

void iotgw_log_set_format(iotgw_log_format f)
{
    format = f;
}

iotgw_log_format iotgw_log_get_format(void)
{
    return format;
}

int iotgw_log_format_parse(const char *name, iotgw_log_format *out)
{
    if (name && !strcmp(name, "text"))
        *out = IOTGW_LOG_FORMAT_TEXT;
    else if (name && !strcmp(name, "json"))
        *out = IOTGW_LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

void iotgw_log_set_stream(FILE *f)
{
    stream = f;
}

static FILE *out_stream(void)
{
    return stream ? stream : stderr;
}

/* "2026-11-22T19:02:18.123Z" */
static void timestamp(char *out, size_t size)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%s.%03dZ", when, (int)(tv.tv_usec / 1000));
}

/* ------------------------------------------------------------------ JSON lines */

/* A line being built: on the stack while it fits, then on the heap. */
typedef struct line_buf {
    char *p;
    size_t len, cap;
    int heap, failed;
    char stack[1024];
} line_buf;

static void buf_init(line_buf *b)
{
    b->p = b->stack;
    b->len = 0;
    b->cap = sizeof b->stack;
    b->heap = b->failed = 0;
}

static int buf_room(line_buf *b, size_t more)
{
    if (b->failed)
        return 0;
    if (b->len + more <= b->cap)
        return 1;
    size_t cap = b->cap * 2;
    while (cap < b->len + more)
        cap *= 2;
    char *p = b->heap ? realloc(b->p, cap) : malloc(cap);
    if (!p) {
        b->failed = 1;
        return 0;
    }
    if (!b->heap)
        memcpy(p, b->p, b->len);
    b->p = p;
    b->cap = cap;
    b->heap = 1;
    return 1;
}

static void put(line_buf *b, const char *s, size_t n)
{
    if (buf_room(b, n)) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

static void puts_(line_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* The length of the valid UTF-8 sequence at s (n bytes left), or 0: overlong forms,
 * surrogates and code points past U+10FFFF are not valid. *cp gets the code point. */
static size_t utf8_sequence(const unsigned char *s, size_t n, unsigned *cp)
{
    unsigned c = s[0], min;
    size_t len;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, min = 0x80, c &= 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, min = 0x800, c &= 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, min = 0x10000, c &= 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

void iotgw_log_printable(char *text)
{
    for (unsigned char *p = (unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
}

/* s as a JSON string, quotes included, whatever its bytes. */
static void put_json_string(line_buf *b, const char *text)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)(text ? text : "");
    size_t n = strlen((const char *)s);
    put(b, "\"", 1);
    while (n) {
        /* the run that needs no escaping goes in one piece */
        size_t run = 0;
        while (run < n && s[run] >= 0x20 && s[run] < 0x7f && s[run] != '"' && s[run] != '\\')
            run++;
        if (run) {
            put(b, (const char *)s, run);
            s += run;
            n -= run;
            continue;
        }
        unsigned cp;
        size_t len = utf8_sequence(s, n, &cp);
        if (len == 0) {
            puts_(b, "\\ufffd"); /* one byte that is not UTF-8 */
            s++, n--;
        } else if (cp == '"' || cp == '\\') {
            char e[2] = {'\\', (char)cp};
            put(b, e, 2);
            s++, n--;
        } else if (cp < 0x20 || cp == 0x7f || cp == 0x2028 || cp == 0x2029) {
            char e[6] = {'\\',         'u', hex[cp >> 12 & 0xf], hex[cp >> 8 & 0xf], hex[cp >> 4 & 0xf],
                         hex[cp & 0xf]};
            put(b, e, sizeof e);
            s += len, n -= len;
        } else {
            put(b, (const char *)s, len);
            s += len, n -= len;
        }
    }
    put(b, "\"", 1);
}

static void put_member(line_buf *b, const char *key, const char *value)
{
    put(b, ",", 1);
    put_json_string(b, key);
    put(b, ":", 1);
    put_json_string(b, value);
}

static void put_field(line_buf *b, const iotgw_log_field *f, int first)
{
    if (!first)
        put(b, ",", 1);
    put_json_string(b, f->key);
    put(b, ":", 1);
    if (f->type == IOTGW_FIELD_NUMBER) {
        char n[24];
        snprintf(n, sizeof n, "%lld", (long long)f->number);
        puts_(b, n);
    } else if (f->type == IOTGW_FIELD_UNSIGNED) {
        char n[24];
        snprintf(n, sizeof n, "%llu", (unsigned long long)(uint64_t)f->number);
        puts_(b, n);
    } else if (f->type == IOTGW_FIELD_BOOLEAN) {
        puts_(b, f->number ? "true" : "false");
    } else if (f->text) {
        put_json_string(b, f->text);
    } else {
        puts_(b, "null");
    }
}

static void write_json(iotgw_log_level level, const char *event, const char *device,
                       const iotgw_log_field *fields, const iotgw_log_field *extra, const char *message)
{
    char when[40];
    timestamp(when, sizeof when);
    line_buf b;
    buf_init(&b);
    puts_(&b, "{\"time\":\"");
    puts_(&b, when);
    puts_(&b, "\",\"level\":\"");
    puts_(&b, level_names[level]);
    put(&b, "\"", 1);
    put_member(&b, "event", event && *event ? event : "log");
    if (device)
        put_member(&b, "device", device);
    put_member(&b, "message", message);
    int first = 1;
    for (const iotgw_log_field *f = fields; f && f->key; f++) {
        if (first)
            puts_(&b, ",\"fields\":{");
        put_field(&b, f, first);
        first = 0;
    }
    if (extra && extra->key) {
        if (first)
            puts_(&b, ",\"fields\":{");
        put_field(&b, extra, first);
        first = 0;
    }
    if (!first)
        put(&b, "}", 1);
    put(&b, "}\n", 2);
    if (!b.failed) {
        FILE *f = out_stream();
        flockfile(f);
        fwrite(b.p, 1, b.len, f);
        fflush(f);
        funlockfile(f);
    }
    if (b.heap)
        free(b.p);
}

/* The message of fmt into buf (size bytes); a longer one into a malloc'ed copy that
 * *heap points at (NULL if none was needed or memory ran out: then buf has it cut). */
static const char *format_message(char *buf, size_t size, char **heap, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(buf, size, fmt, ap);
    *heap = NULL;
    if (n >= 0 && (size_t)n >= size && (*heap = malloc((size_t)n + 1)))
        vsnprintf(*heap, (size_t)n + 1, fmt, again);
    va_end(again);
    if (n < 0)
        buf[0] = '\0';
    return *heap ? *heap : buf;
}

static void vlog(iotgw_log_level level, const char *event, const char *device, const iotgw_log_field *fields,
                 const iotgw_log_field *extra, const char *fmt, va_list ap)
{
    if (level > max_level)
        return;
    if (format == IOTGW_LOG_FORMAT_JSON) {
        char text[1024], *heap;
        const char *message = format_message(text, sizeof text, &heap, fmt, ap);
        write_json(level, event, device, fields, extra, message);
        free(heap);
        return;
    }
    char when[40];
    timestamp(when, sizeof when);
    FILE *f = out_stream();
    flockfile(f);
    fprintf(f, "%s %-5s ", when, level_names[level]);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    funlockfile(f);
}

void iotgw_log(iotgw_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, NULL, NULL, NULL, fmt, ap);
    va_end(ap);
}

void iotgw_log_ev(iotgw_log_level level, const char *event, const char *device, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, event, device, NULL, NULL, fmt, ap);
    va_end(ap);
}

void iotgw_log_evf(iotgw_log_level level, const char *event, const char *device,
                   const iotgw_log_field *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, event, device, fields, NULL, fmt, ap);
    va_end(ap);
}

void iotgw_log_library(iotgw_log_level level, const char *library, const char *line)
{
    if (level > max_level)
        return;
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (format == IOTGW_LOG_FORMAT_JSON) {
        iotgw_log_evf(level, "library_log", NULL, IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("library", library)),
                      "%.*s", (int)n, line);
        return;
    }
    FILE *f = out_stream();
    flockfile(f);
    fprintf(f, "%s: %.*s\n", library, (int)n, line);
    funlockfile(f);
}

/* ------------------------------------------------------------------ budgets */

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 1234567 as "1,234,567". */
static void with_commas(uint64_t n, char *out, size_t size)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < size; i++) {
        if (i && (len - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

static unsigned burst(void)
{
    static unsigned lines;
    if (!lines) {
        const char *env = getenv("IOTGW_LOG_BURST");
        long n = env ? strtol(env, NULL, 10) : 0;
        lines = n > 0 && n < 1000000 ? (unsigned)n : IOTGW_LOG_LIMIT_BURST;
    }
    return lines;
}

static void log_extra(iotgw_log_level level, const char *event, const char *device,
                      const iotgw_log_field *fields, const iotgw_log_field *extra, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void log_extra(iotgw_log_level level, const char *event, const char *device,
                      const iotgw_log_field *fields, const iotgw_log_field *extra, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, event, device, fields, extra, fmt, ap);
    va_end(ap);
}

/* Whether lim lets one more line through now; counts the ones it does not. */
static int within_budget(iotgw_log_limit *lim)
{
    int64_t now = monotonic_ms();
    if (!lim->window_start_ms || now - lim->window_start_ms >= IOTGW_LOG_LIMIT_WINDOW_MS) {
        lim->window_start_ms = now;
        lim->used = 0;
    }
    if (lim->used >= burst()) {
        lim->suppressed++;
        return 0;
    }
    lim->used++;
    return 1;
}

static void vlog_limited(iotgw_log_limit *lim, iotgw_log_level level, const char *event, const char *device,
                         const iotgw_log_field *fields, const char *fmt, va_list ap)
{
    if (level > max_level || !within_budget(lim))
        return;
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    if (lim->suppressed) {
        char n[40];
        with_commas(lim->suppressed, n, sizeof n);
        iotgw_log_field extra = IOTGW_FIELD_UINT("suppressed", lim->suppressed);
        lim->suppressed = 0;
        log_extra(level, event, device, fields, &extra, "%s (%s more like this not logged)", text, n);
    } else {
        log_extra(level, event, device, fields, NULL, "%s", text);
    }
}

void iotgw_log_limited(iotgw_log_limit *lim, iotgw_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_limited(lim, level, NULL, NULL, NULL, fmt, ap);
    va_end(ap);
}

void iotgw_log_ev_limited(iotgw_log_limit *lim, iotgw_log_level level, const char *event, const char *device,
                          const iotgw_log_field *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_limited(lim, level, event, device, fields, fmt, ap);
    va_end(ap);
}

static void flush(iotgw_log_limit *lim, iotgw_log_level level, const char *who, const char *device)
{
    if (!lim->suppressed)
        return;
    char n[40];
    with_commas(lim->suppressed, n, sizeof n);
    iotgw_log_field extra = IOTGW_FIELD_UINT("suppressed", lim->suppressed);
    lim->suppressed = 0;
    log_extra(level, "log_suppressed", device, NULL, &extra, "%s: %s more lines like the last one not logged",
              who, n);
}

void iotgw_log_limit_flush(iotgw_log_limit *lim, iotgw_log_level level, const char *who)
{
    flush(lim, level, who, NULL);
}

void iotgw_log_limit_flush_device(iotgw_log_limit *lim, iotgw_log_level level, const char *device)
{
    flush(lim, level, device, device);
}
