/* Frame codec: varints, packing, and the incremental decoder under every input split. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/frame.h"
#include "codecs/pb_scan.h"
#include "schemas/gateway.pb-c.h"
#include "tests/unit/check_main.h"
#include "tests/unit/sample.h"

#define MAX_FRAME 65536

START_TEST(varint_sizes_and_bytes)
{
    static const struct {
        uint32_t v;
        size_t n;
        uint8_t bytes[5];
    } cases[] = {
        {0, 1, {0x00}},
        {127, 1, {0x7f}},
        {128, 2, {0x80, 0x01}},
        {300, 2, {0xac, 0x02}},
        {16383, 2, {0xff, 0x7f}},
        {16384, 3, {0x80, 0x80, 0x01}},
        {UINT32_MAX, 5, {0xff, 0xff, 0xff, 0xff, 0x0f}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t out[5];
        ck_assert_uint_eq(iotgw_varint_size(cases[i].v), cases[i].n);
        ck_assert_uint_eq(iotgw_varint_put(out, cases[i].v), cases[i].n);
        ck_assert(memcmp(out, cases[i].bytes, cases[i].n) == 0);
    }
}
END_TEST

/* Three frames: a telemetry frame, an empty Frame (zero-length body), and a frame
 * whose body is larger than 128 bytes so its prefix takes two bytes. */
static uint8_t *three_frames(size_t *total, size_t body_len[3], uint8_t *bodies[3])
{
    Iotgw__Frame *f1 = sample_telemetry_frame(1);
    Iotgw__Frame empty;
    iotgw__frame__init(&empty);
    Iotgw__Frame *f3 = sample_telemetry_frame(2);
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    f3->telemetry->message_id = strdup(big); /* replaces the shared empty default */

    const ProtobufCMessage *msgs[3] = {&f1->base, &empty.base, &f3->base};
    uint8_t *buf = NULL;
    *total = 0;
    for (int i = 0; i < 3; i++) {
        uint8_t *one;
        size_t len;
        ck_assert_int_eq(iotgw_frame_pack(msgs[i], MAX_FRAME, &one, &len), 0);
        body_len[i] = protobuf_c_message_get_packed_size(msgs[i]);
        bodies[i] = malloc(body_len[i] + 1);
        memcpy(bodies[i], one + (len - body_len[i]), body_len[i]);
        buf = realloc(buf, *total + len);
        memcpy(buf + *total, one, len);
        *total += len;
        free(one);
    }
    ck_assert_uint_gt(body_len[2], 128);
    ck_assert_uint_eq(body_len[1], 0);
    iotgw__frame__free_unpacked(f1, NULL);
    iotgw__frame__free_unpacked(f3, NULL);
    return buf;
}

/* Feed buf in the pieces given by cuts[] and check that exactly the three bodies come out. */
static void feed_in_pieces(const uint8_t *buf, size_t total, const size_t *cuts, size_t ncuts,
                           size_t body_len[3], uint8_t *bodies[3])
{
    iotgw_frame_decoder d;
    iotgw_frame_decoder_init(&d, MAX_FRAME);
    int got = 0;
    size_t start = 0;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t end = c < ncuts ? cuts[c] : total;
        const uint8_t *in = buf + start;
        size_t len = end - start;
        while (1) {
            size_t used = 0;
            const uint8_t *frame = NULL;
            size_t flen = 0;
            int rc = iotgw_frame_decoder_next(&d, in, len, &used, &frame, &flen, NULL);
            ck_assert_uint_le(used, len);
            in += used;
            len -= used;
            if (rc == IOTGW_ERR_AGAIN) {
                ck_assert_uint_eq(len, 0);
                break;
            }
            ck_assert_int_eq(rc, 0);
            ck_assert_int_lt(got, 3);
            ck_assert_uint_eq(flen, body_len[got]);
            ck_assert(flen == 0 || memcmp(frame, bodies[got], flen) == 0);
            got++;
        }
        start = end;
    }
    ck_assert_int_eq(got, 3);
    ck_assert_int_eq(iotgw_frame_decoder_finish(&d, NULL), 0);
    iotgw_frame_decoder_free(&d);
}

/* The three-frame stream every split test feeds, made once per test by the fixture. */
static size_t stream_len, stream_body_len[3];
static uint8_t *stream, *stream_bodies[3];

static void make_stream(void)
{
    stream = three_frames(&stream_len, stream_body_len, stream_bodies);
}

static void free_stream(void)
{
    for (int i = 0; i < 3; i++)
        free(stream_bodies[i]);
    free(stream);
}

START_TEST(decoder_handles_every_single_split)
{
    for (size_t cut = 0; cut <= stream_len; cut++)
        feed_in_pieces(stream, stream_len, &cut, 1, stream_body_len, stream_bodies);
}
END_TEST

START_TEST(decoder_handles_every_pair_of_splits)
{
    for (size_t a = 0; a <= stream_len; a++)
        for (size_t b = a; b <= stream_len; b++) {
            size_t cuts[2] = {a, b};
            feed_in_pieces(stream, stream_len, cuts, 2, stream_body_len, stream_bodies);
        }
}
END_TEST

START_TEST(decoder_handles_one_byte_at_a_time)
{
    size_t *cuts = malloc(stream_len * sizeof *cuts);
    for (size_t i = 0; i < stream_len; i++)
        cuts[i] = i + 1;
    feed_in_pieces(stream, stream_len, cuts, stream_len - 1, stream_body_len, stream_bodies);
    free(cuts);
}
END_TEST

START_TEST(decoder_returns_whole_frames_without_copying)
{
    uint8_t buf[8] = {3, 0x08, 0x01, 0x10};
    iotgw_frame_decoder d;
    iotgw_frame_decoder_init(&d, 16);
    size_t used;
    const uint8_t *frame;
    size_t flen;
    ck_assert_int_eq(iotgw_frame_decoder_next(&d, buf, 4, &used, &frame, &flen, NULL), 0);
    ck_assert_ptr_eq(frame, buf + 1);
    ck_assert_uint_eq(flen, 3);
    ck_assert_uint_eq(used, 4);
    ck_assert(iotgw_frame_decoder_idle(&d));
    ck_assert_ptr_null(d.buf);
    iotgw_frame_decoder_free(&d);
}
END_TEST

START_TEST(decoder_refuses_oversize_frame_before_its_body_arrives)
{
    iotgw_frame_decoder d;
    iotgw_frame_decoder_init(&d, 100);
    uint8_t prefix[5];
    size_t n = iotgw_varint_put(prefix, 101), used;
    const uint8_t *frame;
    size_t flen;
    iotgw_diag diag;
    ck_assert_int_eq(iotgw_frame_decoder_next(&d, prefix, n, &used, &frame, &flen, &diag),
                     IOTGW_ERR_FRAME_TOO_LARGE);
    ck_assert_str_eq(diag.text, "frame at stream offset 0 announces 101 bytes, maximum is 100");
    ck_assert_ptr_null(d.buf); /* nothing was allocated for it */
    /* the error is sticky */
    ck_assert_int_eq(iotgw_frame_decoder_next(&d, (const uint8_t *)"\x01x", 2, &used, &frame, &flen, NULL),
                     IOTGW_ERR_FRAME_TOO_LARGE);
    ck_assert_int_eq(iotgw_frame_decoder_finish(&d, NULL), IOTGW_ERR_FRAME_TOO_LARGE);
    iotgw_frame_decoder_free(&d);

    /* exactly the maximum is fine */
    iotgw_frame_decoder_init(&d, 100);
    uint8_t whole[102] = {100};
    ck_assert_int_eq(iotgw_frame_decoder_next(&d, whole, 101, &used, &frame, &flen, NULL), 0);
    ck_assert_uint_eq(flen, 100);
    iotgw_frame_decoder_free(&d);
}
END_TEST

START_TEST(decoder_reports_bad_varint)
{
    static const uint8_t too_long[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    static const uint8_t over_32_bits[] = {0xff, 0xff, 0xff, 0xff, 0x10};
    iotgw_frame_decoder d;
    size_t used;
    const uint8_t *frame;
    size_t flen;
    iotgw_diag diag;

    iotgw_frame_decoder_init(&d, UINT32_MAX);
    ck_assert_int_eq(iotgw_frame_decoder_next(&d, too_long, sizeof too_long, &used, &frame, &flen, &diag),
                     IOTGW_ERR_FRAME_BAD_VARINT);
    ck_assert_uint_eq(used, 0);
    ck_assert_uint_eq(d.stream_offset, 5); /* stopped at the fifth byte, read no further */
    iotgw_frame_decoder_free(&d);

    iotgw_frame_decoder_init(&d, UINT32_MAX);
    ck_assert_int_eq(
        iotgw_frame_decoder_next(&d, over_32_bits, sizeof over_32_bits, &used, &frame, &flen, &diag),
        IOTGW_ERR_FRAME_BAD_VARINT);
    ck_assert_ptr_nonnull(strstr(diag.text, "exceeds 32 bits"));
    iotgw_frame_decoder_free(&d);
}
END_TEST

START_TEST(decoder_reports_truncation_distinctly)
{
    iotgw_frame_decoder d;
    size_t used;
    const uint8_t *frame;
    size_t flen;
    iotgw_diag diag;

    iotgw_frame_decoder_init(&d, 1000);
    ck_assert_int_eq(iotgw_frame_decoder_next(&d, (const uint8_t *)"\x80", 1, &used, &frame, &flen, NULL),
                     IOTGW_ERR_AGAIN);
    ck_assert_int_eq(iotgw_frame_decoder_finish(&d, &diag), IOTGW_ERR_FRAME_TRUNCATED_VARINT);
    iotgw_frame_decoder_free(&d);

    iotgw_frame_decoder_init(&d, 1000);
    ck_assert_int_eq(iotgw_frame_decoder_next(&d,
                                              (const uint8_t *)"\x05"
                                                               "ab",
                                              3, &used, &frame, &flen, NULL),
                     IOTGW_ERR_AGAIN);
    ck_assert_int_eq(iotgw_frame_decoder_finish(&d, &diag), IOTGW_ERR_FRAME_TRUNCATED);
    ck_assert_str_eq(diag.text, "stream ended after 2 of 5 bytes of the frame at offset 0");
    iotgw_frame_decoder_free(&d);
}
END_TEST

START_TEST(unpack_reports_malformed_protobuf)
{
    /* field 1 (hello), wire type 2, length 10, but only 2 bytes follow */
    static const uint8_t bad[] = {0x0a, 0x0a, 0x01, 0x02};
    ProtobufCMessage *m = NULL;
    iotgw_diag diag;
    ck_assert_int_eq(iotgw_frame_unpack(&iotgw__frame__descriptor, bad, sizeof bad, &m, &diag),
                     IOTGW_ERR_FRAME_MALFORMED);
    ck_assert_str_eq(diag.text, "frame of 4 bytes is not a valid iotgw.Frame message");
    ck_assert_ptr_null(m);
}
END_TEST

START_TEST(pack_and_unpack_round_trip)
{
    Iotgw__Frame *f = sample_telemetry_frame(42);
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(iotgw_frame_pack(&f->base, 10, &buf, &len), IOTGW_ERR_FRAME_TOO_LARGE);
    ck_assert_int_eq(iotgw_frame_pack(&f->base, MAX_FRAME, &buf, &len), 0);
    size_t body = protobuf_c_message_get_packed_size(&f->base);
    size_t prefix = iotgw_varint_size((uint32_t)body);
    ck_assert_uint_eq(len, prefix + body);
    ck_assert_uint_eq(buf[0], (body & 0x7f) | 0x80); /* 128..16383 bytes: two-byte prefix */
    ck_assert_uint_eq(buf[1], body >> 7);
    ProtobufCMessage *m = NULL;
    ck_assert_int_eq(iotgw_frame_unpack(&iotgw__frame__descriptor, buf + prefix, body, &m, NULL), 0);
    Iotgw__Frame *g = (Iotgw__Frame *)m;
    ck_assert_int_eq(g->body_case, IOTGW__FRAME__BODY_TELEMETRY);
    ck_assert_uint_eq(g->telemetry->seq, 42);
    ck_assert_str_eq(g->telemetry->parcel->source->name, "alarm-agent-1");
    ck_assert_str_eq(g->telemetry->parcel->type, "iotgw.AlarmStatus");
    iotgw__frame__free_unpacked(g, NULL);
    iotgw__frame__free_unpacked(f, NULL);
    free(buf);
}
END_TEST

START_TEST(large_buffer_is_released_after_its_frame)
{
    iotgw_frame_decoder d;
    iotgw_frame_decoder_init(&d, 1 << 20);
    size_t body = 100000, used, flen;
    uint8_t *buf = calloc(1, body + 5);
    size_t p = iotgw_varint_put(buf, (uint32_t)body);
    const uint8_t *frame;
    /* arrive in two pieces so that the decoder must buffer */
    ck_assert_int_eq(iotgw_frame_decoder_next(&d, buf, p + 10, &used, &frame, &flen, NULL), IOTGW_ERR_AGAIN);
    ck_assert_int_eq(iotgw_frame_decoder_next(&d, buf + p + 10, body - 10, &used, &frame, &flen, NULL), 0);
    ck_assert_uint_eq(flen, body);
    ck_assert_uint_le(d.buf_cap, body); /* grew no further than the frame */
    ck_assert_int_eq(iotgw_frame_decoder_next(&d, NULL, 0, &used, &frame, &flen, NULL), IOTGW_ERR_AGAIN);
    ck_assert_ptr_null(d.buf);
    iotgw_frame_decoder_free(&d);
    free(buf);
}
END_TEST

/* A Hello whose device_id is "dev-1\0dev-2" decodes as "dev-1"; the scan sees the NUL. */
START_TEST(nul_inside_a_nested_string_is_seen)
{
    Iotgw__Hello h = IOTGW__HELLO__INIT;
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_HELLO;
    f.hello = &h;
    h.device_id = "dev-1";
    h.token = "tok";
    uint8_t buf[128];
    size_t n = iotgw__frame__pack(&f, buf);
    ck_assert_int_eq(iotgw_pb_nested_field_has_nul(buf, n, 1, 2), 0);
    ck_assert_int_eq(iotgw_pb_nested_field_has_nul(buf, n, 1, 3), 0);
    /* the same bytes with device_id "dev-1\0dev-2": Frame{1: Hello{2: 11 bytes, 3: "tok"}} */
    const uint8_t nul[] = {0x0a, 18,  0x12, 11,  'd', 'e',  'v', '-', '1', 0,
                           'd',  'e', 'v',  '-', '2', 0x1a, 3,   't', 'o', 'k'};
    ck_assert_int_eq(iotgw_pb_nested_field_has_nul(nul, sizeof nul, 1, 2), 1);
    ck_assert_int_eq(iotgw_pb_nested_field_has_nul(nul, sizeof nul, 1, 3), 0);
    Iotgw__Frame *d = iotgw__frame__unpack(NULL, sizeof nul, nul);
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(d->hello->device_id, "dev-1"); /* why the scan exists */
    iotgw__frame__free_unpacked(d, NULL);
    /* a second Hello field, merged by the decoder, is scanned too */
    uint8_t two[sizeof nul + 8];
    const uint8_t first[] = {0x0a, 5, 0x12, 3, 'a', 'b', 'c'};
    memcpy(two, first, sizeof first);
    memcpy(two + sizeof first, nul, sizeof nul);
    ck_assert_int_eq(iotgw_pb_nested_field_has_nul(two, sizeof first + sizeof nul, 1, 2), 1);
    /* truncated or lying lengths are not well formed */
    ck_assert_int_eq(iotgw_pb_nested_field_has_nul(nul, sizeof nul - 1, 1, 2), -1);
    const uint8_t lying[] = {0x0a, 0x7f, 0x12};
    ck_assert_int_eq(iotgw_pb_nested_field_has_nul(lying, sizeof lying, 1, 2), -1);
    const uint8_t group[] = {0x0b};
    ck_assert_int_eq(iotgw_pb_nested_field_has_nul(group, sizeof group, 1, 2), -1);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("frame");
    TCase *splits = tcase_create("splits");
    tcase_set_timeout(splits, 120);
    tcase_add_checked_fixture(splits, make_stream, free_stream);
    tcase_add_test(splits, decoder_handles_every_single_split);
    tcase_add_test(splits, decoder_handles_every_pair_of_splits);
    tcase_add_test(splits, decoder_handles_one_byte_at_a_time);
    suite_add_tcase(s, splits);
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, varint_sizes_and_bytes);
    tcase_add_test(tc, nul_inside_a_nested_string_is_seen);
    tcase_add_test(tc, decoder_returns_whole_frames_without_copying);
    tcase_add_test(tc, decoder_refuses_oversize_frame_before_its_body_arrives);
    tcase_add_test(tc, decoder_reports_bad_varint);
    tcase_add_test(tc, decoder_reports_truncation_distinctly);
    tcase_add_test(tc, unpack_reports_malformed_protobuf);
    tcase_add_test(tc, pack_and_unpack_round_trip);
    tcase_add_test(tc, large_buffer_is_released_after_its_frame);
    suite_add_tcase(s, tc);
    return s;
}
