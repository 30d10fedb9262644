/*
 * Frame decoder fuzz target: arbitrary bytes as a device's TCP stream, cut into pieces
 * at offsets chosen by the input itself; every complete frame is parsed as a Frame and
 * turned into JSON, as the gateway's logs and transcoding would.
 * Property: feeding the stream whole and in pieces yields the same frames and outcome.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/frame.h"
#include "codecs/json_pb.h"
#include "codecs/pb_scan.h"
#include "schemas/gateway.pb-c.h"

#define MAX_FRAME  4096
#define MAX_FRAMES 64

struct outcome {
    size_t n;
    size_t len[MAX_FRAMES];
    uint32_t sum[MAX_FRAMES];
    int rc;
};

static uint32_t checksum(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static void on_frame(struct outcome *o, const uint8_t *body, size_t len)
{
    if (o->n < MAX_FRAMES) {
        o->len[o->n] = len;
        o->sum[o->n] = checksum(body, len);
    }
    o->n++;
    ProtobufCMessage *m = NULL;
    /* the gateway scans every Hello for NULs before decoding it */
    int nul = iotgw_pb_nested_field_has_nul(body, len, 1, 2);
    if (iotgw_frame_unpack(&iotgw__frame__descriptor, body, len, &m, NULL) == IOTGW_OK) {
        /* what protobuf-c decodes, the scan can walk */
        if (nul < 0)
            __builtin_trap();
        char *text = NULL;
        if (iotgw_json_text_from_pb(m, 0, &text, NULL) == IOTGW_OK)
            free(text);
        protobuf_c_message_free_unpacked(m, NULL);
    }
}

static void feed(const uint8_t *data, size_t size, size_t step, struct outcome *o)
{
    iotgw_frame_decoder d;
    iotgw_frame_decoder_init(&d, MAX_FRAME);
    memset(o, 0, sizeof *o);
    int rc = IOTGW_OK;
    for (size_t off = 0; off < size && (rc == IOTGW_OK || rc == IOTGW_ERR_AGAIN);) {
        size_t piece = size - off < step ? size - off : step;
        const uint8_t *in = data + off;
        off += piece;
        while (piece) {
            const uint8_t *body;
            size_t len, used;
            rc = iotgw_frame_decoder_next(&d, in, piece, &used, &body, &len, NULL);
            if (used > piece)
                abort();
            in += used;
            piece -= used;
            if (rc != IOTGW_OK)
                break;
            on_frame(o, body, len);
        }
    }
    o->rc = (rc == IOTGW_OK || rc == IOTGW_ERR_AGAIN) ? iotgw_frame_decoder_finish(&d, NULL) : rc;
    iotgw_frame_decoder_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] % 17 + 1;
    static struct outcome whole, pieces;
    feed(data + 1, size - 1, size, &whole);
    feed(data + 1, size - 1, step, &pieces);
    if (whole.rc != pieces.rc || whole.n != pieces.n)
        abort();
    for (size_t i = 0; i < whole.n && i < MAX_FRAMES; i++)
        if (whole.len[i] != pieces.len[i] || whole.sum[i] != pieces.sum[i])
            abort();
    return 0;
}
