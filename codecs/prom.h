/*
 * prom: the Prometheus text exposition format (version 0.0.4), written into a growing
 * buffer: families with their HELP and TYPE, samples with labels, histograms with
 * cumulative buckets. Owners keep plain counters in their own structs and render them
 * when scraped, so counting costs nothing more than an increment.
 *
 * Ownership: the writer owns its buffer until iotgw_prom_take(). Threading: one writer
 * per thread. Errors: out of memory marks the writer failed; iotgw_prom_take() then
 * returns NULL. Label values are escaped as the format requires; names are the
 * caller's constants and are not checked.
 */
#ifndef IOTGW_CODECS_PROM_H
#define IOTGW_CODECS_PROM_H

#include <stddef.h>
#include <stdint.h>

/* The Content-Type of the text this writes. */
#define IOTGW_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct iotgw_prom {
    char *buf;
    size_t len, cap;
    int failed;
} iotgw_prom;

/* A label: name (a constant) and value (escaped when written). */
typedef struct iotgw_prom_label {
    const char *name, *value;
} iotgw_prom_label;

/* type: "counter", "gauge" or "histogram". */
void iotgw_prom_family(iotgw_prom *w, const char *name, const char *type, const char *help);
void iotgw_prom_sample(iotgw_prom *w, const char *name, const iotgw_prom_label *labels, size_t nlabels,
                       double value);
/* A family of one unlabelled sample: its HELP, TYPE and value. */
void iotgw_prom_counter(iotgw_prom *w, const char *name, const char *help, double value);
void iotgw_prom_gauge(iotgw_prom *w, const char *name, const char *help, double value);
/* A counter or gauge with at most one label, the common case. */
void iotgw_prom_value(iotgw_prom *w, const char *name, const char *label, const char *label_value,
                      double value);

/* A histogram with fixed upper bounds (ascending, without +Inf). Observe with
 * iotgw_histogram_observe; it renders as name_bucket{le=...}, name_sum, name_count. */
#define IOTGW_HISTOGRAM_MAX_BUCKETS 16
typedef struct iotgw_histogram {
    const double *bounds;                             /* the owner's constant array */
    size_t nbounds;                                   /* <= IOTGW_HISTOGRAM_MAX_BUCKETS */
    uint64_t counts[IOTGW_HISTOGRAM_MAX_BUCKETS + 1]; /* per bucket, the last for above every bound */
    double sum;
    uint64_t count;
} iotgw_histogram;

void iotgw_histogram_init(iotgw_histogram *h, const double *bounds, size_t nbounds);
void iotgw_histogram_observe(iotgw_histogram *h, double v);
void iotgw_prom_histogram(iotgw_prom *w, const char *name, const iotgw_prom_label *labels, size_t nlabels,
                          const iotgw_histogram *h);

/* The text written so far (NUL-terminated, *len without the NUL), now the caller's to
 * free; NULL if the writer failed. The writer is empty afterwards. */
char *iotgw_prom_take(iotgw_prom *w, size_t *len);
void iotgw_prom_clear(iotgw_prom *w);

#endif
