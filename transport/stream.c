/* iotgw_stream: plain TCP byte streams on libwebsockets' raw sockets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/internal.h"
#include "transport/stream.h"

#define LWS_PROTOCOL_STREAM       "iotgw-stream"
#define DEFAULT_STREAM_MAX_OUTPUT (1024 * 1024)

struct iotgw_stream_listener {
    iotgw_loop *loop;
    struct lws_vhost *vhost;
    iotgw_stream_listener_options opt;
    char *address, *cert_file, *key_file, *ca_file;
    struct lws_protocols protocols[2];
};

struct iotgw_stream {
    iotgw_loop *loop;
    struct lws *wsi;
    iotgw_stream_handler h;
    void *ctx;
    uint8_t *out; /* out[out_head .. out_len) waits for the socket */
    size_t out_head, out_len, out_cap, max_output;
    int close_after_flush, close_now, closed;
    char close_reason[120];
    char peer[64];
    char peer_cn[128]; /* verified client certificate's CN, or "" */
    int want_cn, cn_read;
};

static void finish(iotgw_stream *s, const char *reason)
{
    if (s->closed)
        return;
    s->closed = 1;
    if (s->wsi)
        lws_set_opaque_user_data(s->wsi, NULL);
    s->wsi = NULL;
    if (s->h.on_closed)
        s->h.on_closed(s, s->close_reason[0] ? s->close_reason : reason, s->ctx);
    free(s->out);
    free(s);
}

/* Close from outside a callback of this stream: libwebsockets kills it on its next turn. */
static void kill_async(iotgw_stream *s, const char *reason)
{
    if (!s->close_reason[0])
        snprintf(s->close_reason, sizeof s->close_reason, "%s", reason);
    s->close_now = 1;
    if (s->wsi)
        lws_set_timeout(s->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
}

static int on_writable(iotgw_stream *s)
{
    if (s->close_now)
        return -1;
    size_t n = s->out_len - s->out_head;
    if (n) {
        static uint8_t buf[LWS_PRE + WRITE_CHUNK];
        if (n > WRITE_CHUNK)
            n = WRITE_CHUNK;
        memcpy(buf + LWS_PRE, s->out + s->out_head, n);
        /* lws keeps what the kernel does not take and sends it before anything else */
        if (lws_write(s->wsi, buf + LWS_PRE, n, LWS_WRITE_RAW) < 0) {
            snprintf(s->close_reason, sizeof s->close_reason, "write to %s failed", s->peer);
            return -1;
        }
        s->out_head += n;
        if (s->out_head == s->out_len)
            s->out_head = s->out_len = 0;
    }
    if (s->out_len > s->out_head || lws_partial_buffered(s->wsi)) {
        lws_callback_on_writable(s->wsi);
        return 0;
    }
    return s->close_after_flush ? -1 : 0;
}

static int stream_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    iotgw_stream *s = wsi ? lws_get_opaque_user_data(wsi) : NULL;
    switch (reason) {
    case LWS_CALLBACK_RAW_ADOPT: {
        iotgw_stream_listener *l = lws_get_vhost_user(lws_get_vhost(wsi));
        if (!l)
            return -1;
        s = calloc(1, sizeof *s);
        if (!s)
            return -1;
        s->loop = l->loop;
        s->wsi = wsi;
        s->max_output = l->opt.max_output ? l->opt.max_output : DEFAULT_STREAM_MAX_OUTPUT;
        lws_get_peer_simple(wsi, s->peer, sizeof s->peer);
        s->want_cn = l->ca_file != NULL;
        lws_set_opaque_user_data(wsi, s);
        if (l->opt.on_accept)
            l->opt.on_accept(l, s, l->opt.ctx);
        return s->close_now ? -1 : 0;
    }
    case LWS_CALLBACK_RAW_RX:
        if (!s || s->close_now)
            return -1;
        if (s->want_cn && !s->cn_read) { /* the handshake is done once data arrives */
            tls_peer_verified_cn(wsi, s->peer_cn, sizeof s->peer_cn);
            s->cn_read = 1;
        }
        if (s->h.on_data && s->h.on_data(s, in, len, s->ctx) < 0)
            return -1;
        return s->close_now ? -1 : 0;
    case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION: return tls_peer_verify(wsi, user, (int)len);
    case LWS_CALLBACK_RAW_WRITEABLE: return s ? on_writable(s) : -1;
    case LWS_CALLBACK_RAW_CLOSE:
    case LWS_CALLBACK_WSI_DESTROY:
        if (s)
            finish(s, "connection closed by the peer");
        return 0;
    default: return 0;
    }
}

int iotgw_stream_listener_new(iotgw_loop *loop, const iotgw_stream_listener_options *opt,
                              iotgw_stream_listener **out, iotgw_diag *diag)
{
    if (!loop || !opt || !opt->on_accept)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "a stream listener needs an accept callback");
    iotgw_stream_listener *l = calloc(1, sizeof *l);
    if (!l)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    l->loop = loop;
    l->opt = *opt;
    l->address = str_dup_or_null(opt->address);
    l->opt.address = l->address;
    l->cert_file = str_dup_or_null(opt->tls.cert_file);
    l->key_file = str_dup_or_null(opt->tls.key_file);
    l->ca_file = str_dup_or_null(opt->tls.ca_file);
    l->opt.tls =
        (iotgw_tls_options){.cert_file = l->cert_file, .key_file = l->key_file, .ca_file = l->ca_file};
    l->protocols[0] = (struct lws_protocols){LWS_PROTOCOL_STREAM, stream_callback, 0, RX_CHUNK, 0, NULL, 0};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.vhost_name = "stream";
    info.port = opt->port;
    info.iface = l->address;
    info.user = l;
    info.protocols = l->protocols;
    info.options = LWS_SERVER_OPTION_ADOPT_APPLY_LISTEN_ACCEPT_CONFIG;
    info.listen_accept_role = "raw-skt";
    info.listen_accept_protocol = LWS_PROTOCOL_STREAM;
    if (l->address && strchr(l->address, '.') && !strchr(l->address, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6; /* else lws listens on every interface */
    if (l->cert_file) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = l->cert_file;
        info.ssl_private_key_filepath = l->key_file ? l->key_file : l->cert_file;
        info.ssl_options_set = SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1; /* TLS 1.2+ */
        if (l->ca_file) { /* clients must present a certificate this CA signed */
            info.ssl_ca_filepath = l->ca_file;
            info.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
        }
    }
    int rc = listen_check(l->address, opt->port, l->cert_file, l->key_file, diag);
    l->vhost = rc ? NULL : lws_create_vhost(loop->ctx, &info);
    if (!l->vhost) {
        if (!rc)
            rc =
                iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "cannot listen on %s:%d (libwebsockets refused)",
                                l->address ? l->address : "*", opt->port);
        free(l->address);
        free(l->cert_file), free(l->key_file), free(l->ca_file);
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

int iotgw_stream_listener_port(const iotgw_stream_listener *l)
{
    return lws_get_vhost_listen_port(l->vhost);
}

void iotgw_stream_listener_free(iotgw_stream_listener *l)
{
    if (!l)
        return;
    /* Accepted streams keep working: their sockets are not the listener's. Their vhost
     * goes with the context, which lws keeps until the streams are closed. */
    lws_vhost_destroy(l->vhost);
    free(l->address);
    free(l->cert_file), free(l->key_file), free(l->ca_file);
    free(l);
}

void iotgw_stream_set_handler(iotgw_stream *s, const iotgw_stream_handler *h, void *ctx)
{
    s->h = *h;
    s->ctx = ctx;
}

int iotgw_stream_write(iotgw_stream *s, const void *data, size_t len)
{
    if (s->closed || s->close_now)
        return IOTGW_ERR_INVALID_ARG;
    size_t pending = s->out_len - s->out_head;
    if (pending + len > s->max_output) {
        kill_async(s, "the peer does not read: output limit reached");
        return IOTGW_ERR_BUFFER_TOO_SMALL;
    }
    if (s->out_len + len > s->out_cap) {
        if (s->out_head) { /* slide the unsent part down first */
            memmove(s->out, s->out + s->out_head, pending);
            s->out_len = pending;
            s->out_head = 0;
        }
        if (s->out_len + len > s->out_cap) {
            size_t cap = s->out_cap ? s->out_cap : 4096;
            while (cap < s->out_len + len)
                cap *= 2;
            uint8_t *out = realloc(s->out, cap);
            if (!out) {
                kill_async(s, "out of memory");
                return IOTGW_ERR_NOMEM;
            }
            s->out = out;
            s->out_cap = cap;
        }
    }
    memcpy(s->out + s->out_len, data, len);
    s->out_len += len;
    if (s->wsi)
        lws_callback_on_writable(s->wsi);
    return 0;
}

size_t iotgw_stream_pending_output(const iotgw_stream *s)
{
    return s->out_len - s->out_head;
}

void iotgw_stream_pause(iotgw_stream *s, int paused)
{
    if (s->wsi)
        lws_rx_flow_control(s->wsi, paused ? 0 : 1);
}

void iotgw_stream_close(iotgw_stream *s, int flush)
{
    if (s->closed)
        return;
    if (!s->close_reason[0])
        snprintf(s->close_reason, sizeof s->close_reason, "closed by the gateway");
    if (!flush) {
        kill_async(s, "closed by the gateway"); /* the reason set above stays */
        return;
    }
    s->close_after_flush = 1;
    if (s->wsi)
        lws_callback_on_writable(s->wsi);
}

const char *iotgw_stream_peer(const iotgw_stream *s)
{
    return s->peer;
}

const char *iotgw_stream_peer_cn(const iotgw_stream *s)
{
    return s->peer_cn[0] ? s->peer_cn : NULL;
}
