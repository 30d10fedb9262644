/*
 * Codec throughput on a typical alarm parcel: frame decode + parse, frame encode,
 * JSON <-> protobuf, parcel -> hub message. Each figure runs for a bounded time
 * (BENCH_SECONDS, default 0.5 s per figure) and prints operations per second, so later
 * work can compare ratios measured in the same run on the same machine.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <proton/message.h>

#include "codecs/frame.h"
#include "codecs/hubmsg.h"
#include "codecs/json_pb.h"
#include "codecs/json_text.h"
#include "codecs/parcel_json.h"
#include "tests/unit/sample.h"
#include "tests/common/clock_env.h"

#define FRAMES_PER_BUFFER 1000
#define READ_SIZE         4096 /* bytes handed to the decoder at a time, as from a socket */

static double budget_s(void)
{
    const char *s = getenv("BENCH_SECONDS");
    double v = s ? atof(s) : 0.5;
    return v > 0 && v < 60 ? v : 0.5;
}

typedef size_t (*bench_fn)(void *ctx); /* one round; returns operations done */

static void run(const char *name, const char *unit, bench_fn fn, void *ctx, size_t bytes_per_op)
{
    fn(ctx); /* warm up */
    double budget = budget_s(), start = now_s(), elapsed;
    size_t ops = 0;
    do {
        ops += fn(ctx);
        elapsed = now_s() - start;
    } while (elapsed < budget);
    double rate = (double)ops / elapsed;
    printf("%-52s %12.0f %s/s", name, rate, unit);
    if (bytes_per_op)
        printf("  %8.1f MB/s", rate * (double)bytes_per_op / 1e6);
    printf("  (%.0f ns/op)\n", 1e9 / rate);
}

struct frames_ctx {
    uint8_t *buf;
    size_t len;
    size_t frame_len;
    int parse;
};

static size_t decode_round(void *arg)
{
    struct frames_ctx *c = arg;
    iotgw_frame_decoder d;
    iotgw_frame_decoder_init(&d, 65536);
    size_t frames = 0;
    for (size_t off = 0; off < c->len;) {
        size_t chunk = c->len - off < READ_SIZE ? c->len - off : READ_SIZE;
        const uint8_t *in = c->buf + off;
        off += chunk;
        while (chunk) {
            const uint8_t *body;
            size_t blen, used;
            int rc = iotgw_frame_decoder_next(&d, in, chunk, &used, &body, &blen, NULL);
            in += used;
            chunk -= used;
            if (rc == IOTGW_ERR_AGAIN)
                break;
            if (rc)
                abort();
            if (c->parse) {
                ProtobufCMessage *m = NULL;
                if (iotgw_frame_unpack(&iotgw__frame__descriptor, body, blen, &m, NULL))
                    abort();
                protobuf_c_message_free_unpacked(m, NULL);
            }
            frames++;
        }
    }
    iotgw_frame_decoder_free(&d);
    return frames;
}

static size_t encode_round(void *arg)
{
    Iotgw__Frame *f = arg;
    for (int i = 0; i < 1000; i++) {
        uint8_t *out;
        size_t len;
        if (iotgw_frame_pack(&f->base, 65536, &out, &len))
            abort();
        free(out);
    }
    return 1000;
}

static size_t parcel_to_json_round(void *arg)
{
    Iotgw__Parcel *p = arg;
    for (int i = 0; i < 100; i++) {
        json_t *j = NULL;
        if (iotgw_parcel_to_json(p, iotgw_types_builtin(), 0, &j, NULL))
            abort();
        free(iotgw_json_text(j));
        json_decref(j);
    }
    return 100;
}

static size_t parcel_from_json_round(void *arg)
{
    const char *text = arg;
    size_t len = strlen(text);
    for (int i = 0; i < 100; i++) {
        json_t *j = json_loadb(text, len, 0, NULL);
        Iotgw__Parcel *p = NULL;
        if (!j || iotgw_parcel_from_json(j, iotgw_types_builtin(), &p, NULL))
            abort();
        iotgw__parcel__free_unpacked(p, NULL);
        json_decref(j);
    }
    return 100;
}

struct hubmsg_ctx {
    Iotgw__Parcel *parcel;
    pn_message_t *msg;
    iotgw_hubmsg_encoding encoding;
};

static size_t hubmsg_round(void *arg)
{
    struct hubmsg_ctx *c = arg;
    char buf[4096];
    iotgw_hubmsg_options o = {.encoding = c->encoding,
                              .message_id = "alarm-agent-1:1",
                              .creation_time_ms = 1,
                              .types = iotgw_types_builtin()};
    for (int i = 0; i < 100; i++) {
        size_t len = sizeof buf;
        if (iotgw_hubmsg_from_parcel(c->parcel, &o, c->msg, NULL) || pn_message_encode(c->msg, buf, &len))
            abort();
    }
    return 100;
}

int main(void)
{
    Iotgw__Frame *frame = sample_telemetry_frame(1);
    size_t flen;
    uint8_t *one;
    if (iotgw_frame_pack(&frame->base, 65536, &one, &flen))
        return 1;
    struct frames_ctx fc = {
        .buf = malloc(flen * FRAMES_PER_BUFFER), .len = flen * FRAMES_PER_BUFFER, .frame_len = flen};
    for (int i = 0; i < FRAMES_PER_BUFFER; i++)
        memcpy(fc.buf + (size_t)i * flen, one, flen);
    free(one);

    printf("iotgw codec benchmark: alarm telemetry frame of %zu bytes on the wire, %.1f s per figure\n", flen,
           budget_s());
    fc.parse = 0;
    run("frame decode only (4 KiB reads)", "frames", decode_round, &fc, flen);
    fc.parse = 1;
    run("frame decode + parse Frame/Telemetry/Parcel", "frames", decode_round, &fc, flen);
    run("frame encode (pack + length prefix)", "frames", encode_round, frame, flen);

    Iotgw__Parcel *parcel = frame->telemetry->parcel;
    json_t *j = NULL;
    iotgw_parcel_to_json(parcel, iotgw_types_builtin(), 0, &j, NULL);
    char *text = iotgw_json_text(j);
    json_decref(j);
    run("json_pb: Parcel -> JSON text (typed content)", "parcels", parcel_to_json_round, parcel, 0);
    run("json_pb: JSON text -> Parcel (typed content)", "parcels", parcel_from_json_round, text, 0);

    struct hubmsg_ctx hc = {.parcel = parcel, .msg = pn_message(), .encoding = IOTGW_HUBMSG_PROTOBUF};
    run("hubmsg: Parcel -> AMQP message bytes, protobuf", "msgs", hubmsg_round, &hc, 0);
    hc.encoding = IOTGW_HUBMSG_JSON;
    run("hubmsg: Parcel -> AMQP message bytes, JSON", "msgs", hubmsg_round, &hc, 0);

    pn_message_free(hc.msg);
    free(text);
    free(fc.buf);
    iotgw__frame__free_unpacked(frame, NULL);
    return 0;
}
