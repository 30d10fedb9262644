/* transport/stream.h without sockets, for fuzzing the gateway's device sessions: what a
 * session writes is kept in memory for the target to check. */
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fake_stream.h"
#include "transport/internal.h"

struct iotgw_stream_listener {
    int unused;
};

int iotgw_stream_listener_new(iotgw_loop *loop, const iotgw_stream_listener_options *opt,
                              iotgw_stream_listener **out, iotgw_diag *diag)
{
    (void)loop, (void)opt, (void)diag;
    *out = calloc(1, sizeof **out);
    return *out ? 0 : IOTGW_ERR_NOMEM;
}

int iotgw_stream_listener_port(const iotgw_stream_listener *l)
{
    (void)l;
    return 0;
}

void iotgw_stream_listener_refusals(const iotgw_stream_listener *l, uint64_t *near_limit, uint64_t *paused)
{
    (void)l;
    *near_limit = *paused = 0;
}

void iotgw_stream_listener_free(iotgw_stream_listener *l)
{
    free(l);
}

void iotgw_stream_set_handler(iotgw_stream *s, const iotgw_stream_handler *h, void *ctx)
{
    s->h = *h;
    s->ctx = ctx;
}

void fake_stream_feed(struct iotgw_stream *s, const uint8_t *data, size_t size)
{
    size_t step = size ? (size_t)data[0] % 64 + 1 : 1;
    for (size_t off = 1; off < size && !s->closed;) {
        size_t n = size - off < step ? size - off : step;
        if (s->h.on_data && s->h.on_data(s, data + off, n, s->ctx) < 0)
            s->closed = 1;
        off += n;
    }
}

int iotgw_stream_write(iotgw_stream *s, const void *data, size_t len)
{
    if (s->closed)
        return IOTGW_ERR_INVALID_ARG;
    if (s->len + len > sizeof s->out) {
        s->closed = 1; /* as the real stream does at its output limit */
        return IOTGW_ERR_BUFFER_TOO_SMALL;
    }
    memcpy(s->out + s->len, data, len);
    s->len += len;
    return 0;
}

size_t iotgw_stream_pending_output(const iotgw_stream *s)
{
    return s->len;
}

void iotgw_stream_pause(iotgw_stream *s, int paused)
{
    (void)s, (void)paused;
}

void iotgw_stream_close(iotgw_stream *s, int flush)
{
    (void)flush;
    s->closed = 1;
}

const char *iotgw_stream_peer(const iotgw_stream *s)
{
    (void)s;
    return "fuzz";
}

const char *iotgw_stream_peer_cn(const iotgw_stream *s)
{
    (void)s;
    return NULL;
}

/* stream.c's other face, the WSS listener's WebSocket streams (MQTT over WebSocket):
 * none without sockets, so a listener that names a stream subprotocol refuses them. */
int ws_stream_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)wsi, (void)user, (void)in, (void)len;
    return reason == LWS_CALLBACK_ESTABLISHED ? -1 : 0;
}
