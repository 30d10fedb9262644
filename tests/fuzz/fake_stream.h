/* The fake stream's insides, for fuzz targets (see fake_stream.c). */
#ifndef IOTGW_TESTS_FAKE_STREAM_H
#define IOTGW_TESTS_FAKE_STREAM_H

#include "transport/stream.h"

struct iotgw_stream {
    iotgw_stream_handler h;
    void *ctx;
    int closed;
    size_t len;
    uint8_t out[256 * 1024];
};

/* Hand data to the stream's handler as a peer's bytes, in pieces whose size the first
 * byte chooses (1 to 64), until the handler closes the stream. */
void fake_stream_feed(struct iotgw_stream *s, const uint8_t *data, size_t size);

#endif
