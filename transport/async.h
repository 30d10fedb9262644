/*
 * iotgw_async: another thread asks the event loop to run a callback, as libuv's
 * uv_async_t. iotgw_async_send() may be called from any thread, any number of times; the
 * loop runs fn at least once after each call, on its own thread, and calls made before
 * fn starts are coalesced into one run. The gateway's store hands its fsync results back
 * this way (gateway/store.c).
 *
 * Implementation: an eventfd, watched by libwebsockets as a raw file on a vhost of its own
 * (either backend).
 *
 * Ownership: the loop's thread creates and frees it, after every other thread has stopped
 * sending; free it before the loop. Errors:
 * iotgw_async_new returns NULL with the reason in diag.
 */
#ifndef IOTGW_TRANSPORT_ASYNC_H
#define IOTGW_TRANSPORT_ASYNC_H

#include "transport/transport.h"

typedef struct iotgw_async iotgw_async;
typedef void (*iotgw_async_fn)(iotgw_async *a, void *ctx);

iotgw_async *iotgw_async_new(iotgw_loop *loop, iotgw_async_fn fn, void *ctx, iotgw_diag *diag);
/* Any thread. Never runs fn itself. */
void iotgw_async_send(iotgw_async *a);
/* The loop's thread; fn does not run afterwards. */
void iotgw_async_free(iotgw_async *a);

#endif
