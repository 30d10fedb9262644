/*
 * Frame codec: protobuf's "delimited" form, i.e. each message preceded by its length
 * as a base-128 varint. This is what every protobuf runtime writes with its
 * writeDelimited / SerializeDelimitedToOstream helpers.
 *
 * The decoder is incremental: feed it whatever bytes arrived, split anywhere, and it
 * returns one complete frame body at a time. It never reads past the input it is
 * given, refuses a frame larger than its maximum as soon as the length prefix is
 * known (before buffering any of it), and reports a malformed length prefix, a stream
 * that ends mid-frame, an oversize frame and an undecodable body as distinct errors.
 *
 * Ownership: a decoder owns its internal buffer; frame pointers it returns are valid
 * until the next call on that decoder. iotgw_frame_pack() returns a malloc'd buffer
 * the caller frees; iotgw_frame_unpack() returns a message the caller frees with
 * protobuf_c_message_free_unpacked(msg, NULL).
 *
 * Threading: no shared state; a decoder must be used by one thread at a time.
 * Errors: 0 or a negative IOTGW_ERR_* code (codecs/error.h), details in the diag.
 */
#ifndef IOTGW_CODECS_FRAME_H
#define IOTGW_CODECS_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "codecs/error.h"

/* A frame length prefix takes at most this many bytes. */
#define IOTGW_VARINT32_MAX_BYTES 5

/* Bytes needed to write v as a varint (1..5). */
size_t iotgw_varint_size(uint32_t v);
/* Write v as a varint at out (which has room for IOTGW_VARINT32_MAX_BYTES); returns bytes written. */
size_t iotgw_varint_put(uint8_t *out, uint32_t v);

/* Serialise msg as one delimited frame into a new buffer of *out_len bytes.
 * Fails with IOTGW_ERR_FRAME_TOO_LARGE when the body exceeds max_frame_size. */
int iotgw_frame_pack(const ProtobufCMessage *msg, uint32_t max_frame_size, uint8_t **out, size_t *out_len);

/* Parse a frame body as a message of type desc. IOTGW_ERR_FRAME_MALFORMED if it is not one. */
int iotgw_frame_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *body, size_t len,
                       ProtobufCMessage **out, iotgw_diag *diag);

typedef struct iotgw_frame_decoder {
    uint32_t max_frame_size;
    uint32_t body_len;     /* length of the frame being read, once known */
    unsigned varint_bytes; /* bytes of the length prefix read so far */
    int have_len;
    int error;    /* sticky: a failed stream stays failed */
    uint8_t *buf; /* holds a body that arrived in pieces */
    size_t buf_cap;
    size_t buf_fill;
    uint64_t stream_offset; /* bytes consumed since init, for diagnostics */
    uint64_t frame_start;   /* stream offset of the current frame's prefix */
} iotgw_frame_decoder;

void iotgw_frame_decoder_init(iotgw_frame_decoder *d, uint32_t max_frame_size);
void iotgw_frame_decoder_free(iotgw_frame_decoder *d);

/* Consume bytes from in[0..len) until one frame is complete.
 *   IOTGW_OK:        *frame and *frame_len hold the body; *consumed bytes were used, the
 *                    rest of the input is still to be fed.
 *   IOTGW_ERR_AGAIN: all input consumed, no complete frame yet.
 *   otherwise:       IOTGW_ERR_FRAME_BAD_VARINT or IOTGW_ERR_FRAME_TOO_LARGE; the
 *                    decoder stays failed. */
int iotgw_frame_decoder_next(iotgw_frame_decoder *d, const uint8_t *in, size_t len, size_t *consumed,
                             const uint8_t **frame, size_t *frame_len, iotgw_diag *diag);

/* The stream ended: IOTGW_OK if it ended between frames, else
 * IOTGW_ERR_FRAME_TRUNCATED_VARINT or IOTGW_ERR_FRAME_TRUNCATED (or the sticky error). */
int iotgw_frame_decoder_finish(const iotgw_frame_decoder *d, iotgw_diag *diag);

/* True when no partial frame is buffered. */
int iotgw_frame_decoder_idle(const iotgw_frame_decoder *d);

#endif
