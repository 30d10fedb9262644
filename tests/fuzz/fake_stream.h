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

#endif
