/* The frame guard: see frame_guard.h for what it refuses and why. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/frame_guard.h"

enum { ST_BOUNDARY = 0, ST_EXTENDED, ST_BODY, ST_SKIP, ST_REFUSED };

/* AMQP 1.0 performatives and SASL frames the guard reads (their descriptor codes) */
#define AMQP_BEGIN    0x11
#define AMQP_ATTACH   0x12
#define AMQP_TRANSFER 0x14
#define AMQP_DETACH   0x16
#define AMQP_END      0x17
#define SASL_INIT     0x41

/* How many fields of a transfer decide: handle .. aborted (field 9) */
#define TRANSFER_FIELDS 10

enum { DECIDED, NEED_MORE, REFUSED, MALFORMED };

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int refuse(frame_guard *g, const char *cond, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(frame_guard *g, const char *cond, const char *fmt, ...)
{
    g->state = ST_REFUSED;
    g->cond = cond;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->why, sizeof g->why, fmt, ap);
    va_end(ap);
    return REFUSED;
}

/* ------------------------------------------------------------------ AMQP values */

/* A cursor over an encoding; short: the bytes ran out (more may come). */
typedef struct cursor {
    const uint8_t *p, *end;
    int short_;
    int bad; /* malformed: an unknown constructor, sizes that do not fit */
} cursor;

static int take(cursor *c, size_t n, const uint8_t **out)
{
    if ((size_t)(c->end - c->p) < n) {
        c->short_ = 1;
        return -1;
    }
    *out = c->p;
    c->p += n;
    return 0;
}

/* Skip one value as Proton's decoder measures it. depth bounds nested descriptors. */
static int skip_value(cursor *c, int depth)
{
    const uint8_t *b;
    if (take(c, 1, &b))
        return -1;
    uint8_t code = b[0];
    if (code == 0x00) { /* described: descriptor, then the value */
        if (depth > 4) {
            c->bad = 1;
            return -1;
        }
        return skip_value(c, depth + 1) || skip_value(c, depth + 1) ? -1 : 0;
    }
    size_t n;
    switch (code >> 4) {
    case 0x4: n = 0; break;
    case 0x5: n = 1; break;
    case 0x6: n = 2; break;
    case 0x7: n = 4; break;
    case 0x8: n = 8; break;
    case 0x9: n = 16; break;
    case 0xa:
    case 0xc:
    case 0xe: /* one-byte size (lists, maps, arrays: count and items inside it) */
        if (take(c, 1, &b))
            return -1;
        n = b[0];
        break;
    case 0xb:
    case 0xd:
    case 0xf:
        if (take(c, 4, &b))
            return -1;
        n = be32(b);
        break;
    default: c->bad = 1; return -1;
    }
    return take(c, n, &b);
}

/* A list's items: a cursor over them (the given cursor moves past the list's header);
 * *cut: the list goes on past the bytes at hand. */
static int enter_list(cursor *c, uint32_t *count, cursor *items, int *cut)
{
    const uint8_t *b;
    if (take(c, 1, &b))
        return -1;
    uint32_t size;
    switch (b[0]) {
    case 0x45: size = 0, *count = 0; break;
    case 0xc0:
        if (take(c, 2, &b))
            return -1;
        size = b[0], *count = b[1];
        if (size < 1)
            return c->bad = 1, -1;
        size -= 1;
        break;
    case 0xd0:
        if (take(c, 8, &b))
            return -1;
        size = be32(b), *count = be32(b + 4);
        if (size < 4)
            return c->bad = 1, -1;
        size -= 4;
        break;
    default: return c->bad = 1, -1;
    }
    *cut = (size_t)(c->end - c->p) < size;
    *items = (cursor){c->p, *cut ? c->end : c->p + size, 0, 0};
    return 0;
}

/* Where fields 0..want-1 of a list start (those past its count are absent), each whole.
 * DECIDED; NEED_MORE when the bytes at hand end first; MALFORMED. */
typedef struct field {
    int present;
    const uint8_t *at;
} field;

static int list_fields(cursor *c, field *f, int want, const uint8_t **list_end, int complete)
{
    uint32_t count;
    cursor items;
    int cut = 0;
    if (enter_list(c, &count, &items, &cut))
        return c->short_ && !complete ? NEED_MORE : MALFORMED;
    for (int i = 0; i < want; i++) {
        f[i].present = (uint32_t)i < count;
        f[i].at = items.p;
        if (f[i].present && skip_value(&items, 0))
            return items.short_ && cut && !complete ? NEED_MORE : MALFORMED;
    }
    *list_end = items.end;
    return DECIDED;
}

/* A uint as Proton's consume_uint reads it: smalluint, uint, uint0; else absent. */
static int read_uint(const uint8_t *at, const uint8_t *end, uint32_t *v)
{
    if (at >= end)
        return 0;
    switch (at[0]) {
    case 0x43: *v = 0; return 1;
    case 0x52: return end - at >= 2 ? (*v = at[1], 1) : 0;
    case 0x70: return end - at >= 5 ? (*v = be32(at + 1), 1) : 0;
    default: return 0;
    }
}

/* A boolean as Proton's consume_bool reads it; anything else reads as false. */
static int read_bool(const uint8_t *at, const uint8_t *end)
{
    if (at >= end)
        return 0;
    return at[0] == 0x41 || (at[0] == 0x56 && end - at >= 2 && at[1]);
}

/* The descriptor code of a performative, and a cursor after it. */
static int descriptor(cursor *c, uint64_t *code)
{
    const uint8_t *b;
    if (take(c, 1, &b))
        return -1;
    if (b[0] != 0x00) {
        c->bad = 1;
        return -1;
    }
    if (take(c, 1, &b))
        return -1;
    switch (b[0]) {
    case 0x44: *code = 0; return 0;
    case 0x53: return take(c, 1, &b) ? -1 : (*code = b[0], 0);
    case 0x80:
        if (take(c, 8, &b))
            return -1;
        *code = (uint64_t)be32(b) << 32 | be32(b + 4);
        return 0;
    default: c->bad = 1; return -1;
    }
}

/* ------------------------------------------------------------------ deliveries in progress */

static ptrdiff_t find_open(const frame_guard *g, uint16_t channel, uint32_t handle)
{
    for (size_t i = 0; i < g->n_open; i++)
        if (g->open[i].channel == channel && g->open[i].handle == handle)
            return (ptrdiff_t)i;
    return -1;
}

static void forget_open(frame_guard *g, size_t i)
{
    g->open[i] = g->open[--g->n_open];
}

static void forget_handle(frame_guard *g, uint16_t channel, uint32_t handle)
{
    ptrdiff_t i = find_open(g, channel, handle);
    if (i >= 0)
        forget_open(g, (size_t)i);
}

static void forget_channel(frame_guard *g, uint16_t channel)
{
    for (size_t i = g->n_open; i-- > 0;)
        if (g->open[i].channel == channel)
            forget_open(g, i);
}

static int remember_open(frame_guard *g, uint16_t channel, uint32_t handle)
{
    if (g->n_open == FRAME_GUARD_MAX_OPEN)
        return -1;
    if (g->n_open == g->open_cap) {
        size_t cap = g->open_cap ? g->open_cap * 2 : 8;
        frame_guard_open *n = realloc(g->open, cap * sizeof *n);
        if (!n)
            return -1;
        g->open = n, g->open_cap = cap;
    }
    g->open[g->n_open++] = (frame_guard_open){channel, handle};
    return 0;
}

/* ------------------------------------------------------------------ performatives */

static int on_transfer(frame_guard *g, cursor *c, int complete)
{
    field f[TRANSFER_FIELDS];
    const uint8_t *end;
    int r = list_fields(c, f, TRANSFER_FIELDS, &end, complete);
    if (r == MALFORMED)
        return refuse(g, "amqp:decode-error", "a malformed transfer on channel %u", g->channel);
    if (r != DECIDED)
        return r;
    uint32_t handle = 0, id;
    /* as Proton reads them: a field of another type reads as absent, 0 or false */
    if (f[0].present)
        read_uint(f[0].at, end, &handle);
    int id_present = f[1].present && read_uint(f[1].at, end, &id);
    int more = f[5].present && read_bool(f[5].at, end);
    int aborted = f[9].present && read_bool(f[9].at, end);
    ptrdiff_t open = find_open(g, g->channel, handle);
    if (open < 0 && !id_present)
        return refuse(g, "amqp:invalid-field",
                      "a transfer on channel %u handle %u starts a delivery without a delivery-id", g->channel,
                      handle);
    if (more && !aborted) {
        if (open < 0 && remember_open(g, g->channel, handle))
            return refuse(g, "amqp:resource-limit-exceeded", "more than %d deliveries in progress at once",
                          FRAME_GUARD_MAX_OPEN);
    } else if (open >= 0) {
        forget_open(g, (size_t)open);
    }
    return DECIDED;
}

/* attach (name, handle) and detach (handle): the handle's delivery, if any, is over; when
 * the handle cannot be read, every delivery of the channel (stricter, never looser).
 * Anything malformed here is left to Proton. */
static int on_link_end(frame_guard *g, cursor *c, int handle_field, int complete)
{
    field f[2];
    const uint8_t *end;
    int r = list_fields(c, f, handle_field + 1, &end, complete);
    if (r == NEED_MORE)
        return r;
    uint32_t handle;
    if (r == DECIDED && f[handle_field].present && read_uint(f[handle_field].at, end, &handle))
        forget_handle(g, g->channel, handle);
    else
        forget_channel(g, g->channel);
    return DECIDED;
}

/* What the body (or its first n bytes) says: DECIDED, NEED_MORE or REFUSED. */
static int decide(frame_guard *g, const uint8_t *body, size_t n, int complete)
{
    cursor c = {body, body + n, 0, 0};
    uint64_t code;
    if (descriptor(&c, &code))
        return c.short_ && !complete ? NEED_MORE : DECIDED; /* not a performative: Proton refuses it */
    if (g->frame_type == 1) {
        if (!g->sasl_layer) /* Proton would still act on it */
            return refuse(g, "amqp:connection:framing-error", "a SASL frame after the AMQP header");
        if (code == SASL_INIT && ++g->sasl_inits > 1)
            return refuse(g, "amqp:invalid-field", "a second sasl-init: the client sends one");
        return DECIDED;
    }
    if (g->frame_type != 0)
        return DECIDED;
    switch (code) {
    case AMQP_TRANSFER: return on_transfer(g, &c, complete);
    case AMQP_ATTACH: return on_link_end(g, &c, 1, complete);
    case AMQP_DETACH: return on_link_end(g, &c, 0, complete);
    case AMQP_BEGIN:
    case AMQP_END: forget_channel(g, g->channel); return DECIDED;
    default: return DECIDED;
    }
}

/* ------------------------------------------------------------------ the stream */

/* A protocol header or a frame header is in g->head. */
static int on_head(frame_guard *g)
{
    if (!memcmp(g->head, "AMQP", 4)) { /* a protocol header: SASL (3), AMQP (0), TLS (2) */
        g->sasl_layer = g->head[4] == 3;
        return 0;
    }
    uint32_t size = be32(g->head);
    unsigned doff = g->head[4];
    if (size < 8 || doff < 2 || (uint64_t)doff * 4 > size) {
        refuse(g, "amqp:connection:framing-error", "a frame of %u bytes with a data offset of %u words", size,
               doff);
        return -1;
    }
    if (g->max_frame && size > g->max_frame) {
        refuse(g, "amqp:connection:framing-error", "a frame of %u bytes: more than the %u allowed", size,
               g->max_frame);
        return -1;
    }
    g->frame_type = g->head[5];
    g->channel = (uint16_t)(g->head[6] << 8 | g->head[7]);
    g->doff_left = (uint8_t)(doff * 4 - 8);
    g->body_size = g->body_left = size - doff * 4;
    g->perf_len = 0;
    g->state = g->doff_left ? ST_EXTENDED : g->body_left ? ST_BODY : ST_BOUNDARY;
    return 0;
}

size_t frame_guard_scan(frame_guard *g, const uint8_t *data, size_t len)
{
    size_t i = 0;
    size_t frame_start = 0; /* where the current frame's bytes in data begin */
    while (i < len) {
        switch (g->state) {
        case ST_REFUSED: return 0;
        case ST_BOUNDARY: {
            if (g->head_len == 0)
                frame_start = i;
            size_t n = len - i < 8 - g->head_len ? len - i : 8 - g->head_len;
            memcpy(g->head + g->head_len, data + i, n);
            g->head_len += n, i += n;
            if (g->head_len < 8)
                break;
            g->head_len = 0;
            if (on_head(g))
                return frame_start;
            break;
        }
        case ST_EXTENDED: {
            size_t n = len - i < g->doff_left ? len - i : g->doff_left;
            g->doff_left = (uint8_t)(g->doff_left - n), i += n;
            if (!g->doff_left)
                g->state = g->body_left ? ST_BODY : ST_BOUNDARY;
            break;
        }
        case ST_BODY: {
            size_t avail = len - i < g->body_left ? len - i : g->body_left;
            int r;
            if (!g->perf_len && avail == g->body_size) { /* whole here: read in place */
                r = decide(g, data + i, avail, 1);
            } else {
                if (g->perf_len + avail > g->perf_cap) {
                    size_t cap = g->perf_len + avail;
                    uint8_t *p = realloc(g->perf, cap);
                    if (!p) {
                        refuse(g, "amqp:resource-limit-exceeded", "out of memory for a frame of %u bytes",
                               g->body_size);
                        return frame_start;
                    }
                    g->perf = p, g->perf_cap = cap;
                }
                memcpy(g->perf + g->perf_len, data + i, avail);
                g->perf_len += avail;
                r = decide(g, g->perf, g->perf_len, g->perf_len == g->body_size);
            }
            if (r == REFUSED)
                return frame_start;
            i += avail;
            g->body_left -= (uint32_t)avail;
            if (r == DECIDED || !g->body_left) {
                g->perf_len = 0;
                if (g->perf_cap > 4096) { /* a large one: give it back */
                    free(g->perf);
                    g->perf = NULL, g->perf_cap = 0;
                }
                g->state = g->body_left ? ST_SKIP : ST_BOUNDARY;
            }
            break;
        }
        case ST_SKIP: {
            size_t n = len - i < g->body_left ? len - i : g->body_left;
            g->body_left -= (uint32_t)n, i += n;
            if (!g->body_left)
                g->state = ST_BOUNDARY;
            break;
        }
        }
    }
    return len;
}

void frame_guard_free(frame_guard *g)
{
    free(g->perf);
    free(g->open);
    g->perf = NULL;
    g->open = NULL;
    g->perf_cap = g->open_cap = g->n_open = 0;
}
