/* transport/frame_guard: what it refuses, what it lets through, in any cut of the
 * stream; and that Proton, fed what it lets through, survives the input that trips its
 * assertion. Frames are encoded here byte by byte (AMQP 1.0 part 2 and 5). */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/session.h>
#include <proton/transport.h>

#include "tests/unit/check_main.h"
#include "transport/frame_guard.h"

typedef struct buf {
    uint8_t b[1 << 17];
    size_t n;
} buf;

static void put(buf *o, const void *p, size_t n)
{
    ck_assert_uint_le(o->n + n, sizeof o->b);
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put8(buf *o, uint8_t v)
{
    put(o, &v, 1);
}

static void put32(buf *o, uint32_t v)
{
    uint8_t b[4] = {v >> 24, v >> 16, v >> 8, v};
    put(o, b, 4);
}

static const uint8_t amqp_header[8] = {'A', 'M', 'Q', 'P', 0, 1, 0, 0};
static const uint8_t sasl_header[8] = {'A', 'M', 'Q', 'P', 3, 1, 0, 0};

/* A frame: performative code, its list's encoded fields (count of them), a payload. */
static void frame(buf *o, uint8_t type, uint16_t channel, uint8_t code, const uint8_t *fields, size_t flen,
                  unsigned count, const uint8_t *payload, size_t plen)
{
    size_t body = 3 + 1 + 4 + 4 + flen + plen; /* descriptor, list8/32 header, fields */
    put32(o, (uint32_t)(8 + body));
    put8(o, 2), put8(o, type), put8(o, channel >> 8), put8(o, channel & 0xff);
    put8(o, 0x00), put8(o, 0x53), put8(o, code);
    put8(o, 0xd0), put32(o, (uint32_t)(4 + flen)), put32(o, count);
    put(o, fields, flen);
    if (plen)
        put(o, payload, plen);
}

#define F(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

static void open_begin(buf *o)
{
    put(o, amqp_header, 8);
    frame(o, 0, 0, 0x10, F(0xa1, 1, 'c'), 1, NULL, 0);                      /* open(container-id) */
    frame(o, 0, 0, 0x11, F(0x40, 0x43, 0x70, 0, 0, 0x10, 0, 0x43), 4, NULL, 0); /* begin */
}

static void attach(buf *o, uint8_t handle)
{
    frame(o, 0, 0, 0x12, F(0xa1, 1, 'l', 0x52, handle, 0x42), 3, NULL, 0); /* name, handle, role */
}

static void detach(buf *o, uint8_t handle)
{
    frame(o, 0, 0, 0x16, F(0x52, handle, 0x41), 2, NULL, 0);
}

/* transfer(handle, delivery-id or -1, tag, format 0, settled false, more, ..., aborted) */
static void transfer(buf *o, uint8_t handle, int id, int more, int aborted)
{
    uint8_t f[32];
    size_t n = 0;
    f[n++] = 0x52, f[n++] = handle;
    if (id >= 0)
        f[n++] = 0x52, f[n++] = (uint8_t)id;
    else
        f[n++] = 0x40;
    f[n++] = 0xa0, f[n++] = 1, f[n++] = 't';
    f[n++] = 0x43;                /* message-format */
    f[n++] = 0x42;                /* settled */
    f[n++] = more ? 0x41 : 0x42;  /* more */
    f[n++] = 0x40, f[n++] = 0x40; /* rcv-settle-mode, state */
    f[n++] = 0x42;                /* resume */
    f[n++] = aborted ? 0x41 : 0x42;
    frame(o, 0, 0, 0x14, f, n, 10, (const uint8_t *)"payload", 7);
}

/* The guard over the whole stream, in pieces of `step` bytes: what passed, and the guard. */
static size_t scan(frame_guard *g, const buf *in, size_t step)
{
    memset(g, 0, sizeof *g);
    g->max_frame = 65536;
    size_t passed = 0;
    for (size_t at = 0; at < in->n; at += step) {
        size_t n = in->n - at < step ? in->n - at : step;
        size_t ok = frame_guard_scan(g, in->b + at, n);
        passed += ok;
        if (ok < n)
            break;
    }
    return passed;
}

/* In every cut the same: all passes (cond NULL), or the last frame, at refused_at, is
 * refused. */
static void expect(const buf *in, const char *cond, size_t refused_at, const char *why_has)
{
    static const size_t steps[] = {1, 2, 3, 7, 8, 13, 64, 4096, 1 << 20};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        frame_guard g;
        size_t passed = scan(&g, in, steps[i]);
        if (!cond) {
            ck_assert_msg(!g.cond, "step %zu: refused: %s: %s", steps[i], g.cond, g.why);
            ck_assert_uint_eq(passed, in->n);
        } else {
            ck_assert_msg(g.cond != NULL, "step %zu: not refused", steps[i]);
            ck_assert_str_eq(g.cond, cond);
            ck_assert_msg(strstr(g.why, why_has), "step %zu: %s", steps[i], g.why);
            /* all before the refused frame (the last here), never all of it */
            ck_assert_uint_ge(passed, refused_at);
            ck_assert_uint_lt(passed, in->n);
            ck_assert_uint_eq(frame_guard_scan(&g, (const uint8_t *)"more", 4), 0);
        }
        frame_guard_free(&g);
    }
}

START_TEST(a_multi_frame_delivery_and_its_continuations_pass)
{
    buf in = {.n = 0};
    put(&in, sasl_header, 8);
    frame(&in, 1, 0, 0x41, F(0xa3, 9, 'A', 'N', 'O', 'N', 'Y', 'M', 'O', 'U', 'S'), 1, NULL, 0);
    open_begin(&in);
    attach(&in, 0), attach(&in, 1);
    transfer(&in, 0, 0, 1, 0);  /* first frame, with id */
    transfer(&in, 1, 1, 1, 0);  /* another link's, interleaved */
    transfer(&in, 0, -1, 1, 0); /* continuations without id */
    transfer(&in, 1, -1, 0, 0);
    transfer(&in, 0, -1, 0, 0);
    transfer(&in, 0, 2, 0, 0);  /* a single-frame delivery */
    put32(&in, 8), put8(&in, 2), put8(&in, 0), put8(&in, 0), put8(&in, 0); /* heartbeat */
    expect(&in, NULL, 0, NULL);
}
END_TEST

START_TEST(a_delivery_started_without_id_is_refused_at_its_frame)
{
    buf in = {.n = 0};
    open_begin(&in);
    attach(&in, 0);
    size_t at = in.n;
    transfer(&in, 0, -1, 1, 0); /* the 113-byte reproducer's frame */
    expect(&in, "amqp:invalid-field", at, "starts a delivery without a delivery-id");

    in.n = 0; /* more=false too: the spec needs the id on a delivery's first transfer */
    open_begin(&in);
    attach(&in, 0);
    at = in.n;
    transfer(&in, 0, -1, 0, 0);
    expect(&in, "amqp:invalid-field", at, "channel 0 handle 0");
}
END_TEST

START_TEST(an_aborted_or_finished_delivery_or_a_detach_ends_the_continuation)
{
    for (int how = 0; how < 3; how++) {
        buf in = {.n = 0};
        open_begin(&in);
        attach(&in, 3);
        transfer(&in, 3, 0, 1, how == 0); /* how 0: more and aborted */
        if (how == 1)
            transfer(&in, 3, -1, 0, 0); /* the last frame */
        if (how == 2)
            detach(&in, 3), attach(&in, 3);
        size_t at = in.n;
        transfer(&in, 3, -1, 1, 0);
        expect(&in, "amqp:invalid-field", at, "handle 3");
    }
}
END_TEST

START_TEST(sasl_init_once_and_only_in_the_sasl_layer)
{
    buf in = {.n = 0};
    put(&in, sasl_header, 8);
    frame(&in, 1, 0, 0x41, F(0xa3, 5, 'P', 'L', 'A', 'I', 'N'), 1, NULL, 0);
    size_t at = in.n;
    frame(&in, 1, 0, 0x41, F(0xa3, 5, 'P', 'L', 'A', 'I', 'N'), 1, NULL, 0);
    expect(&in, "amqp:invalid-field", at, "second sasl-init");

    in.n = 0;
    open_begin(&in);
    at = in.n;
    frame(&in, 1, 0, 0x41, F(0xa3, 5, 'P', 'L', 'A', 'I', 'N'), 1, NULL, 0);
    expect(&in, "amqp:connection:framing-error", at, "SASL frame after the AMQP header");
}
END_TEST

START_TEST(framing_and_encoding_errors_are_refused)
{
    buf in = {.n = 0};
    open_begin(&in);
    size_t at = in.n;
    put32(&in, 7), put8(&in, 2), put8(&in, 0), put8(&in, 0), put8(&in, 0); /* shorter than a header */
    expect(&in, "amqp:connection:framing-error", at, "a frame of 7 bytes");

    in.n = 0;
    open_begin(&in);
    at = in.n;
    put32(&in, 65537), put8(&in, 2), put8(&in, 0), put8(&in, 0), put8(&in, 0); /* one over the bound */
    expect(&in, "amqp:connection:framing-error", at, "more than the 65536 allowed");

    in.n = 0;
    open_begin(&in);
    at = in.n;
    put32(&in, 16), put8(&in, 5), put8(&in, 0), put8(&in, 0), put8(&in, 0); /* data offset past the end */
    put32(&in, 0), put32(&in, 0);
    expect(&in, "amqp:connection:framing-error", at, "data offset of 5 words");

    in.n = 0; /* a transfer whose list says 10 fields but holds 2 */
    open_begin(&in);
    attach(&in, 0);
    at = in.n;
    frame(&in, 0, 0, 0x14, F(0x52, 0, 0x52, 0), 10, NULL, 0);
    expect(&in, "amqp:decode-error", at, "malformed transfer");

    in.n = 0; /* an unknown constructor among the fields */
    open_begin(&in);
    attach(&in, 0);
    at = in.n;
    frame(&in, 0, 0, 0x14, F(0x52, 0, 0x52, 0, 0x3f), 3, NULL, 0);
    expect(&in, "amqp:decode-error", at, "malformed transfer");
}
END_TEST

START_TEST(deliveries_in_progress_are_bounded)
{
    static buf in;
    in.n = 0;
    open_begin(&in);
    for (unsigned h = 0; h < 256; h++)
        attach(&in, (uint8_t)h);
    /* 1,024 open at once (handles on four channels), then one more */
    for (unsigned ch = 0; ch < 4; ch++)
        for (unsigned h = 0; h < 256; h++) {
            buf one = {.n = 0};
            transfer(&one, (uint8_t)h, (int)(h & 0x7f), 1, 0);
            one.b[6] = 0, one.b[7] = (uint8_t)ch; /* its channel */
            put(&in, one.b, one.n);
        }
    size_t at = in.n;
    buf one = {.n = 0};
    transfer(&one, 0, 1, 1, 0);
    one.b[7] = 4;
    put(&in, one.b, one.n);
    expect(&in, "amqp:resource-limit-exceeded", at, "more than 1024 deliveries");
}
END_TEST

/* Proton 0.37 is built with assertions: without the guard, feeding it this stream aborts
 * the test process. With it, Proton reads what came before and stays up. */
START_TEST(proton_fed_through_the_guard_survives_the_assertion_input)
{
    buf in = {.n = 0};
    open_begin(&in);
    attach(&in, 0);
    transfer(&in, 0, -1, 1, 0);
    pn_connection_driver_t d;
    ck_assert_int_eq(pn_connection_driver_init(&d, NULL, NULL), 0);
    pn_transport_set_server(d.transport);
    frame_guard g = {.max_frame = 65536};
    size_t ok = frame_guard_scan(&g, in.b, in.n);
    ck_assert_ptr_nonnull(g.cond);
    for (size_t at = 0; at < ok; at++) { /* a byte at a time, answering as a server does */
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&d);
        ck_assert_uint_gt(rb.size, 0);
        memcpy(rb.start, in.b + at, 1);
        pn_connection_driver_read_done(&d, 1);
        pn_event_t *e;
        while ((e = pn_connection_driver_next_event(&d))) {
            switch (pn_event_type(e)) {
            case PN_CONNECTION_REMOTE_OPEN: pn_connection_open(pn_event_connection(e)); break;
            case PN_SESSION_REMOTE_OPEN: pn_session_open(pn_event_session(e)); break;
            case PN_LINK_REMOTE_OPEN:
                pn_link_open(pn_event_link(e));
                pn_link_flow(pn_event_link(e), 10);
                break;
            default: break;
            }
        }
        pn_bytes_t out = pn_connection_driver_write_buffer(&d); /* the answers go out */
        pn_connection_driver_write_done(&d, out.size);
    }
    /* it read all before the transfer: the link is open, nothing failed */
    pn_link_t *link = pn_link_head(d.connection, 0);
    ck_assert_ptr_nonnull(link);
    ck_assert(pn_link_state(link) & PN_REMOTE_ACTIVE);
    ck_assert(pn_connection_state(d.connection) & PN_REMOTE_ACTIVE);
    ck_assert(!pn_condition_is_set(pn_transport_condition(d.transport)));
    pn_connection_driver_destroy(&d);
    frame_guard_free(&g);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("frame_guard");
    TCase *tc = tcase_create("frame_guard");
    tcase_add_test(tc, a_multi_frame_delivery_and_its_continuations_pass);
    tcase_add_test(tc, a_delivery_started_without_id_is_refused_at_its_frame);
    tcase_add_test(tc, an_aborted_or_finished_delivery_or_a_detach_ends_the_continuation);
    tcase_add_test(tc, sasl_init_once_and_only_in_the_sasl_layer);
    tcase_add_test(tc, framing_and_encoding_errors_are_refused);
    tcase_add_test(tc, deliveries_in_progress_are_bounded);
    tcase_add_test(tc, proton_fed_through_the_guard_survives_the_assertion_input);
    suite_add_tcase(s, tc);
    return s;
}
