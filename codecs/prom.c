/* The Prometheus text exposition format (codecs/prom.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/prom.h"

static void put(iotgw_prom *w, const char *s, size_t n)
{
    if (w->failed)
        return;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n + 1)
            cap *= 2;
        char *b = realloc(w->buf, cap);
        if (!b) {
            w->failed = 1;
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void puts_(iotgw_prom *w, const char *s)
{
    put(w, s, strlen(s));
}

static void printf_(iotgw_prom *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void printf_(iotgw_prom *w, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        w->failed = 1;
    else
        put(w, tmp, (size_t)n);
}

/* HELP text escapes backslash and newline; label values also the double quote. */
static void escaped(iotgw_prom *w, const char *s, int quotes)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            puts_(w, "\\\\");
        else if (*p == '\n')
            puts_(w, "\\n");
        else if (quotes && *p == '"')
            puts_(w, "\\\"");
        else
            put(w, p, 1);
    }
}

static void number(iotgw_prom *w, double v)
{
    if (isnan(v))
        puts_(w, "NaN");
    else if (isinf(v))
        puts_(w, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(int64_t)v && fabs(v) < 9e15)
        printf_(w, "%lld", (long long)v);
    else
        printf_(w, "%.17g", v);
}

void iotgw_prom_family(iotgw_prom *w, const char *name, const char *type, const char *help)
{
    printf_(w, "# HELP %s ", name);
    escaped(w, help, 0);
    printf_(w, "\n# TYPE %s %s\n", name, type);
}

static void labels_(iotgw_prom *w, const iotgw_prom_label *l, size_t n, const char *extra,
                    const char *extra_value)
{
    if (!n && !extra)
        return;
    puts_(w, "{");
    for (size_t i = 0; i < n; i++) {
        printf_(w, "%s%s=\"", i ? "," : "", l[i].name);
        escaped(w, l[i].value ? l[i].value : "", 1);
        puts_(w, "\"");
    }
    if (extra) {
        printf_(w, "%s%s=\"", n ? "," : "", extra);
        puts_(w, extra_value);
        puts_(w, "\"");
    }
    puts_(w, "}");
}

void iotgw_prom_sample(iotgw_prom *w, const char *name, const iotgw_prom_label *labels, size_t nlabels,
                       double value)
{
    puts_(w, name);
    labels_(w, labels, nlabels, NULL, NULL);
    puts_(w, " ");
    number(w, value);
    puts_(w, "\n");
}

void iotgw_prom_value(iotgw_prom *w, const char *name, const char *label, const char *label_value,
                      double value)
{
    iotgw_prom_label l = {label, label_value};
    iotgw_prom_sample(w, name, &l, label ? 1 : 0, value);
}

void iotgw_prom_counter(iotgw_prom *w, const char *name, const char *help, double value)
{
    iotgw_prom_family(w, name, "counter", help);
    iotgw_prom_value(w, name, NULL, NULL, value);
}

void iotgw_prom_gauge(iotgw_prom *w, const char *name, const char *help, double value)
{
    iotgw_prom_family(w, name, "gauge", help);
    iotgw_prom_value(w, name, NULL, NULL, value);
}

void iotgw_histogram_init(iotgw_histogram *h, const double *bounds, size_t nbounds)
{
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->nbounds = nbounds > IOTGW_HISTOGRAM_MAX_BUCKETS ? IOTGW_HISTOGRAM_MAX_BUCKETS : nbounds;
}

void iotgw_histogram_observe(iotgw_histogram *h, double v)
{
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

void iotgw_prom_histogram(iotgw_prom *w, const char *name, const iotgw_prom_label *labels, size_t nlabels,
                          const iotgw_histogram *h)
{
    char bucket[160], le[40];
    snprintf(bucket, sizeof bucket, "%s_bucket", name);
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= h->nbounds; i++) {
        cumulative += h->counts[i];
        if (i < h->nbounds)
            snprintf(le, sizeof le, "%g", h->bounds[i]);
        else
            snprintf(le, sizeof le, "+Inf");
        puts_(w, bucket);
        labels_(w, labels, nlabels, "le", le);
        printf_(w, " %llu\n", (unsigned long long)cumulative);
    }
    printf_(w, "%s_sum", name);
    labels_(w, labels, nlabels, NULL, NULL);
    puts_(w, " ");
    number(w, h->sum);
    printf_(w, "\n%s_count", name);
    labels_(w, labels, nlabels, NULL, NULL);
    printf_(w, " %llu\n", (unsigned long long)h->count);
}

char *iotgw_prom_take(iotgw_prom *w, size_t *len)
{
    char *b = w->failed ? NULL : w->buf;
    if (!b && !w->failed) { /* nothing written: an empty text */
        b = calloc(1, 1);
        if (len)
            *len = 0;
        return b;
    }
    if (len)
        *len = w->len;
    if (!b)
        free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
    w->failed = 0;
    return b;
}

void iotgw_prom_clear(iotgw_prom *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}
