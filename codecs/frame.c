#include "codecs/frame.h"

#include <stdlib.h>
#include <string.h>

/* A buffer grown past this for one large frame is released once that frame is handed
 * out, so that 10k idle connections do not each keep their largest frame's memory. */
#define FRAME_BUFFER_KEEP 4096

size_t iotgw_varint_size(uint32_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t iotgw_varint_put(uint8_t *out, uint32_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

int iotgw_frame_pack(const ProtobufCMessage *msg, uint32_t max_frame_size, uint8_t **out, size_t *out_len)
{
    if (!msg || !out || !out_len)
        return IOTGW_ERR_INVALID_ARG;
    size_t body = protobuf_c_message_get_packed_size(msg);
    if (body > max_frame_size || body > UINT32_MAX)
        return IOTGW_ERR_FRAME_TOO_LARGE;
    size_t prefix = iotgw_varint_size((uint32_t)body);
    uint8_t *buf = malloc(prefix + body + 1); /* +1: never malloc(0) */
    if (!buf)
        return IOTGW_ERR_NOMEM;
    iotgw_varint_put(buf, (uint32_t)body);
    protobuf_c_message_pack(msg, buf + prefix);
    *out = buf;
    *out_len = prefix + body;
    return IOTGW_OK;
}

int iotgw_frame_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *body, size_t len,
                       ProtobufCMessage **out, iotgw_diag *diag)
{
    if (!desc || (!body && len) || !out)
        return IOTGW_ERR_INVALID_ARG;
    static const uint8_t empty[1];
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, body ? body : empty);
    if (!m)
        return iotgw_diag_fail(diag, IOTGW_ERR_FRAME_MALFORMED,
                               "frame of %zu bytes is not a valid %s message", len, desc->name);
    *out = m;
    return IOTGW_OK;
}

void iotgw_frame_decoder_init(iotgw_frame_decoder *d, uint32_t max_frame_size)
{
    memset(d, 0, sizeof *d);
    d->max_frame_size = max_frame_size;
}

void iotgw_frame_decoder_free(iotgw_frame_decoder *d)
{
    free(d->buf);
    d->buf = NULL;
    d->buf_cap = d->buf_fill = 0;
}

static void start_next_frame(iotgw_frame_decoder *d)
{
    d->body_len = 0;
    d->varint_bytes = 0;
    d->have_len = 0;
    d->buf_fill = 0;
    d->frame_start = d->stream_offset;
}

static int reserve(iotgw_frame_decoder *d, size_t need)
{
    if (need <= d->buf_cap)
        return IOTGW_OK;
    /* Grow by doubling as bytes actually arrive, never straight to the announced
     * length: a peer that announces a large frame and sends nothing costs nothing. */
    size_t cap = d->buf_cap ? d->buf_cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > d->body_len)
        cap = d->body_len;
    uint8_t *nb = realloc(d->buf, cap);
    if (!nb)
        return IOTGW_ERR_NOMEM;
    d->buf = nb;
    d->buf_cap = cap;
    return IOTGW_OK;
}

static int read_prefix(iotgw_frame_decoder *d, const uint8_t *in, size_t len, size_t *pos, iotgw_diag *diag)
{
    while (!d->have_len && *pos < len) {
        uint8_t b = in[(*pos)++];
        d->stream_offset++;
        /* The 5th byte carries bits 28..31 only; anything more is not a uint32 length. */
        if (d->varint_bytes == IOTGW_VARINT32_MAX_BYTES - 1 && (b & 0xF0))
            return d->error = iotgw_diag_fail(diag, IOTGW_ERR_FRAME_BAD_VARINT,
                                              "frame length prefix at stream offset %llu exceeds 32 bits",
                                              (unsigned long long)d->frame_start);
        d->body_len |= (uint32_t)(b & 0x7F) << (7 * d->varint_bytes);
        d->varint_bytes++;
        if (!(b & 0x80)) {
            d->have_len = 1;
            if (d->body_len > d->max_frame_size)
                return d->error = iotgw_diag_fail(
                           diag, IOTGW_ERR_FRAME_TOO_LARGE,
                           "frame at stream offset %llu announces %u bytes, maximum is %u",
                           (unsigned long long)d->frame_start, d->body_len, d->max_frame_size);
        }
    }
    return IOTGW_OK;
}

int iotgw_frame_decoder_next(iotgw_frame_decoder *d, const uint8_t *in, size_t len, size_t *consumed,
                             const uint8_t **frame, size_t *frame_len, iotgw_diag *diag)
{
    size_t pos = 0;
    *consumed = 0;
    if (d->error)
        return d->error;
    if (!in && len)
        return IOTGW_ERR_INVALID_ARG;
    if (d->buf_fill == 0 && !d->have_len && d->varint_bytes == 0 && d->buf_cap > FRAME_BUFFER_KEEP) {
        iotgw_frame_decoder_free(d);
    }

    int rc = read_prefix(d, in, len, &pos, diag);
    if (rc)
        return rc;
    if (!d->have_len) {
        *consumed = pos;
        return IOTGW_ERR_AGAIN;
    }

    size_t avail = len - pos;
    if (d->buf_fill == 0 && avail >= d->body_len) {
        /* Whole body already in the caller's buffer: hand it out without copying. */
        *frame = in + pos;
        *frame_len = d->body_len;
        pos += d->body_len;
        d->stream_offset += d->body_len;
        *consumed = pos;
        start_next_frame(d);
        return IOTGW_OK;
    }

    size_t take = d->body_len - d->buf_fill;
    if (take > avail)
        take = avail;
    if (take) {
        if (reserve(d, d->buf_fill + take))
            return d->error = iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory buffering a frame");
        memcpy(d->buf + d->buf_fill, in + pos, take);
        d->buf_fill += take;
        pos += take;
        d->stream_offset += take;
    }
    *consumed = pos;
    if (d->buf_fill < d->body_len)
        return IOTGW_ERR_AGAIN;
    *frame = d->buf;
    *frame_len = d->body_len;
    start_next_frame(d);
    return IOTGW_OK;
}

int iotgw_frame_decoder_idle(const iotgw_frame_decoder *d)
{
    return !d->error && !d->have_len && d->varint_bytes == 0;
}

int iotgw_frame_decoder_finish(const iotgw_frame_decoder *d, iotgw_diag *diag)
{
    if (d->error)
        return d->error;
    if (!d->have_len && d->varint_bytes > 0)
        return iotgw_diag_fail(
            diag, IOTGW_ERR_FRAME_TRUNCATED_VARINT,
            "stream ended after %u byte(s) of the length prefix of the frame at offset %llu", d->varint_bytes,
            (unsigned long long)d->frame_start);
    if (d->have_len)
        return iotgw_diag_fail(diag, IOTGW_ERR_FRAME_TRUNCATED,
                               "stream ended after %zu of %u bytes of the frame at offset %llu", d->buf_fill,
                               d->body_len, (unsigned long long)d->frame_start);
    return IOTGW_OK;
}
