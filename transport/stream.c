/* iotgw_stream: TCP (and TLS) byte streams on libwebsockets' raw sockets, and their
 * listener, which accepts by itself; and the byte streams a WSS listener hands over for
 * its stream subprotocol (MQTT over WebSocket), whose bytes travel in binary messages.
 *
 * Why not lws' listen role: when accept() fails with EMFILE it logs "accept: errno 24"
 * and returns with the listening socket still readable, so the level-triggered loop spins
 * (lib/roles/listen/ops-listen.c in 4.1.6: 100 % CPU, millions of lines). Here the
 * listening socket is ours, watched through lws as a raw file on either backend, and each
 * accepted socket is adopted on a vhost that holds the TLS settings and listens on nothing.
 *
 * At the limit:
 * - a descriptor that leaves fewer than iotgw_fd_reserve() free is refused at once (a
 *   plain-TCP peer reads opt.refusal first). The backlog keeps moving and the reserve
 *   stays for the process's own connections; a spare descriptor kept to accept-and-refuse
 *   with would be the same idea, one deep, and would leave the hub none;
 * - accept() finding no descriptor (the reserve used up elsewhere, the limit lowered)
 *   stops watching the socket; it tries again after 100 ms doubling to 1 s, and at once
 *   when one of its streams closes. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/fdlimit.h"
#include "transport/internal.h"
#include "transport/listen_socket.h"
#include "transport/log.h"
#include "transport/stream.h"

#define LWS_PROTOCOL_STREAM        "iotgw-stream"
#define LWS_PROTOCOL_STREAM_ACCEPT "iotgw-stream-accept"
#define DEFAULT_STREAM_MAX_OUTPUT  (1024 * 1024)
#define ACCEPT_BATCH               32 /* connections per wake-up: other sockets get their turn */
#define PAUSE_FIRST_MS             100
#define PAUSE_MAX_MS               1000
#define MAX_REFUSAL                256

struct iotgw_stream_listener {
    iotgw_loop *loop;
    struct lws_vhost *vhost; /* TLS settings and protocols; listens on nothing itself */
    struct lws *accept_wsi;  /* the listening socket, watched by lws as a raw file */
    int fd, port;
    long fd_limit; /* RLIMIT_NOFILE at the start, as lws sized its descriptor table */
    iotgw_stream_listener_options opt;
    char *address, *cert_file, *key_file, *ca_file;
    uint8_t *refusal;
    struct lws_protocols protocols[3];
    iotgw_stream *streams; /* accepted and open: one closing while paused frees a descriptor */
    lws_sorted_usec_list_t retry;
    int pause_ms; /* 0: accepting; else the wait before the next try */
    int64_t paused_at_ms;
    uint64_t failed_tries, refused;
    iotgw_log_limit log;
    char name[80]; /* "127.0.0.1:7000", for logs */
};

struct iotgw_stream {
    iotgw_loop *loop;
    struct lws *wsi;
    iotgw_stream_listener *listener; /* NULL once the listener is freed */
    iotgw_stream *lprev, *lnext;     /* the listener's streams */
    iotgw_stream_handler h;
    void *ctx;
    uint8_t *out; /* out[out_head .. out_len) waits for the socket */
    size_t out_head, out_len, out_cap, max_output;
    int close_after_flush, close_now, closed;
    char close_reason[120];
    char peer[64];
    char peer_cn[128]; /* verified client certificate's CN, or "" */
    int want_cn, rx_started;
    int ws; /* a WebSocket connection: writes are binary messages */
};

static void retry_accepting(lws_sorted_usec_list_t *sul);

static void unlink_stream(iotgw_stream *s)
{
    iotgw_stream_listener *l = s->listener;
    if (!l)
        return;
    if (s->lprev)
        s->lprev->lnext = s->lnext;
    else
        l->streams = s->lnext;
    if (s->lnext)
        s->lnext->lprev = s->lprev;
    s->listener = NULL;
    if (l->pause_ms) /* its descriptor is about to be free: try now */
        lws_sul_schedule(l->loop->ctx, 0, &l->retry, retry_accepting, 0);
}

static void finish(iotgw_stream *s, const char *reason)
{
    if (s->closed)
        return;
    s->closed = 1;
    unlink_stream(s);
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
        if (lws_write(s->wsi, buf + LWS_PRE, n, s->ws ? LWS_WRITE_BINARY : LWS_WRITE_RAW) < 0) {
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
    if (!s->close_after_flush)
        return 0;
    if (!s->ws)
        tls_close_notify(s->wsi, 0);
    return -1;
}

static int accept_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len);

static int stream_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    /* lws tells protocol 0 of every wsi's end (WSI_DESTROY), the listening socket's too */
    const struct lws_protocols *p = wsi ? lws_get_protocol(wsi) : NULL;
    if (p && p->callback == accept_callback)
        return accept_callback(wsi, reason, user, in, len);
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
        s->listener = l;
        s->lnext = l->streams;
        if (l->streams)
            l->streams->lprev = s;
        l->streams = s;
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
        if (!s->rx_started) { /* the TLS handshake, if any, is done once data arrives */
            /* lws 4.1.6 gives a server connection 5 s once its handshake is done
             * (PENDING_TIMEOUT_ESTABLISH_WITH_SERVER) and its raw-skt role never ends that:
             * every TLS stream was cut after 5 s */
            lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
            if (s->want_cn)
                tls_peer_verified_cn(wsi, s->peer_cn, sizeof s->peer_cn);
            s->rx_started = 1;
        }
        if (s->h.on_data && s->h.on_data(s, in, len, s->ctx) < 0)
            return -1;
        return s->close_now ? -1 : 0;
    case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION: return tls_peer_verify(wsi, user, (int)len, NULL, 0);
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
        /* lws's SNI callback would hand a connection whose ServerName matches no vhost to
         * the first vhost on the same "port", and every stream listener's vhost listens on
         * none: another listener's TLS context (its client-certificate rule included) and,
         * seen at 1,000 connections, its accept callback. A stream keeps its listener's. */
        SSL_CTX_set_tlsext_servername_callback((SSL_CTX *)user, NULL);
        return 0;
    case LWS_CALLBACK_RAW_WRITEABLE: return s ? on_writable(s) : -1;
    case LWS_CALLBACK_RAW_CLOSE:
        if (s)
            tls_close_notify(wsi, 1);
        /* fall through */
    case LWS_CALLBACK_WSI_DESTROY:
        if (s)
            finish(s, "connection closed by the peer");
        return 0;
    default: return 0;
    }
}

/* ------------------------------------------------------------------ WebSocket streams */

int ws_stream_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)user;
    iotgw_stream *s = wsi ? lws_get_opaque_user_data(wsi) : NULL;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED: { /* the upgrade is done (http.c checked path and subprotocol) */
        iotgw_listener *l = lws_get_vhost_user(lws_get_vhost(wsi));
        if (!l || !l->opt.on_ws_stream || !(s = calloc(1, sizeof *s)))
            return -1;
        s->loop = l->loop;
        s->wsi = wsi;
        s->ws = 1;
        s->max_output = l->opt.ws_stream_max_output ? l->opt.ws_stream_max_output : DEFAULT_STREAM_MAX_OUTPUT;
        lws_get_peer_simple(wsi, s->peer, sizeof s->peer);
        if (l->ca_file)
            tls_peer_verified_cn(wsi, s->peer_cn, sizeof s->peer_cn);
        s->rx_started = 1;
        lws_set_opaque_user_data(wsi, s);
        l->opt.on_ws_stream(l, s, l->opt.ctx);
        return s->close_now ? -1 : 0;
    }
    case LWS_CALLBACK_RECEIVE:
        if (!s || s->close_now)
            return -1;
        if (s->h.on_data && s->h.on_data(s, in, len, s->ctx) < 0)
            return -1;
        return s->close_now ? -1 : 0;
    case LWS_CALLBACK_SERVER_WRITEABLE: return s ? on_writable(s) : -1;
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        if (s)
            finish(s, "connection closed by the peer");
        return 0;
    default: return 0;
    }
}

/* ------------------------------------------------------------------ accepting */

static void pause_accepting(iotgw_stream_listener *l, int err)
{
    if (!l->pause_ms) {
        l->pause_ms = PAUSE_FIRST_MS;
        l->paused_at_ms = iotgw_loop_now_ms(l->loop);
        l->failed_tries = 0;
        iotgw_log_limited(&l->log, IOTGW_LOG_WARN,
                          "listener %s: cannot accept: %s (open-file limit %ld): not accepting until "
                          "descriptors free up",
                          l->name, strerror(err), iotgw_fd_limit_now());
        if (l->accept_wsi)
            lws_rx_flow_control(l->accept_wsi, 0);
    } else if (l->pause_ms < PAUSE_MAX_MS) {
        l->pause_ms = l->pause_ms * 2 < PAUSE_MAX_MS ? l->pause_ms * 2 : PAUSE_MAX_MS;
    }
    l->failed_tries++;
    lws_sul_schedule(l->loop->ctx, 0, &l->retry, retry_accepting, (lws_usec_t)l->pause_ms * 1000);
}

/* Accepted past the reserve: say so to a plain-TCP peer, close. */
static void refuse(iotgw_stream_listener *l, int fd)
{
    if (l->refusal && !l->cert_file) /* best effort: a few bytes fit any socket buffer */
        (void)!send(fd, l->refusal, l->opt.refusal_len, MSG_DONTWAIT | MSG_NOSIGNAL);
    char peer[64] = "?";
    lws_get_peer_simple_fd(fd, peer, sizeof peer);
    close(fd);
    l->refused++;
    iotgw_log_limited(&l->log, IOTGW_LOG_WARN,
                      "listener %s: connection from %s refused: too near the open-file limit (%ld, the "
                      "last %ld kept free); %llu refused so far",
                      l->name, peer, l->fd_limit, iotgw_fd_reserve(), (unsigned long long)l->refused);
}

/* lws takes the connection (RAW_ADOPT follows), or closes it: a TLS handshake that failed
 * at once, or no memory. It would also refuse a descriptor past its table, which the
 * reserve check keeps from coming here: such a peer is told ERROR_OVERLOADED instead. */
static void hand_to_lws(iotgw_stream_listener *l, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as lws' listener did */
    lws_sock_file_fd_type d = {.sockfd = fd};
    lws_adopt_descriptor_vhost(l->vhost, LWS_ADOPT_SOCKET | (l->cert_file ? LWS_ADOPT_ALLOW_SSL : 0), d,
                               LWS_PROTOCOL_STREAM, NULL);
}

/* Up to ACCEPT_BATCH connections; 0, or -1 when accept() lacked resources (paused). */
static int accept_some(iotgw_stream_listener *l)
{
    for (int i = 0; i < ACCEPT_BATCH && l->fd >= 0; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return 0;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM || err == EBADF ||
                err == EINVAL) {
                pause_accepting(l, err);
                return -1;
            }
            continue; /* EINTR, ECONNABORTED, or a network error the new socket had (accept(2)) */
        }
        if ((long)fd >= l->fd_limit - iotgw_fd_reserve())
            refuse(l, fd);
        else
            hand_to_lws(l, fd);
    }
    return 0;
}

static void retry_accepting(lws_sorted_usec_list_t *sul)
{
    iotgw_stream_listener *l = lws_container_of(sul, iotgw_stream_listener, retry);
    if (!l->pause_ms || l->fd < 0 || accept_some(l))
        return;
    iotgw_log_limited(
        &l->log, IOTGW_LOG_WARN, "listener %s: accepting again after %.1f s (%llu tries failed)", l->name,
        (double)(iotgw_loop_now_ms(l->loop) - l->paused_at_ms) / 1000, (unsigned long long)l->failed_tries);
    l->pause_ms = 0;
    if (l->accept_wsi)
        lws_rx_flow_control(l->accept_wsi, 1);
}

static int accept_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    (void)user, (void)in, (void)len;
    iotgw_stream_listener *l = wsi ? lws_get_opaque_user_data(wsi) : NULL;
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (l && !l->pause_ms)
            accept_some(l);
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
    case LWS_CALLBACK_WSI_DESTROY: /* lws closes the descriptor */
        if (l) {
            l->accept_wsi = NULL;
            l->fd = -1;
            lws_set_opaque_user_data(wsi, NULL);
        }
        return 0;
    default: return 0;
    }
}

/* ------------------------------------------------------------------ listeners */

static void listener_free(iotgw_stream_listener *l)
{
    lws_sul_cancel(&l->retry);
    if (l->accept_wsi) {
        lws_set_opaque_user_data(l->accept_wsi, NULL);
        lws_set_timeout(l->accept_wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_SYNC);
    } else if (l->fd >= 0) {
        close(l->fd);
    }
    for (iotgw_stream *s = l->streams; s; s = s->lnext)
        s->listener = NULL;
    if (l->vhost) /* its streams keep it until they close (lws frees it with the context) */
        lws_vhost_destroy(l->vhost);
    char who[96];
    snprintf(who, sizeof who, "listener %s", l->name);
    iotgw_log_limit_flush(&l->log, IOTGW_LOG_WARN, who);
    free(l->address);
    free(l->cert_file), free(l->key_file), free(l->ca_file);
    free(l->refusal);
    free(l);
}

int iotgw_stream_listener_new(iotgw_loop *loop, const iotgw_stream_listener_options *opt,
                              iotgw_stream_listener **out, iotgw_diag *diag)
{
    if (!loop || !opt || !opt->on_accept)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "a stream listener needs an accept callback");
    if (opt->refusal_len > MAX_REFUSAL)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "a stream listener's refusal is at most %d bytes",
                               MAX_REFUSAL);
    iotgw_stream_listener *l = calloc(1, sizeof *l);
    if (!l)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    l->loop = loop;
    l->fd = -1;
    l->fd_limit = iotgw_fd_limit_now();
    l->opt = *opt;
    l->address = iotgw_strdup_or_null(opt->address);
    l->opt.address = l->address;
    l->cert_file = iotgw_strdup_or_null(opt->tls.cert_file);
    l->key_file = iotgw_strdup_or_null(opt->tls.key_file);
    l->ca_file = iotgw_strdup_or_null(opt->tls.ca_file);
    l->opt.tls =
        (iotgw_tls_options){.cert_file = l->cert_file, .key_file = l->key_file, .ca_file = l->ca_file};
    if (opt->refusal && opt->refusal_len && (l->refusal = malloc(opt->refusal_len)))
        memcpy(l->refusal, opt->refusal, opt->refusal_len);
    l->opt.refusal = l->refusal;
    /* protocol 0 answers lws' per-connection callbacks, the client certificate check included */
    l->protocols[0] = (struct lws_protocols){LWS_PROTOCOL_STREAM, stream_callback, 0, RX_CHUNK, 0, NULL, 0};
    l->protocols[1] = (struct lws_protocols){LWS_PROTOCOL_STREAM_ACCEPT, accept_callback, 0, 0, 0, NULL, 0};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.vhost_name = "stream";
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER; /* a server's TLS, no listening socket */
    info.user = l;
    info.protocols = l->protocols;
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
    if (!rc && (l->fd = listen_socket_open(l->address, opt->port, &l->port, diag)) < 0)
        rc = IOTGW_ERR_INVALID_ARG;
    if (!rc) {
        int v6 = l->address && strchr(l->address, ':');
        snprintf(l->name, sizeof l->name, "%s%s%s:%d", v6 ? "[" : "", l->address ? l->address : "*",
                 v6 ? "]" : "", l->port);
        l->vhost = lws_create_vhost(loop->ctx, &info);
    }
    if (!rc && l->vhost) {
        lws_adopt_desc_t ad = {.vh = l->vhost,
                               .type = LWS_ADOPT_RAW_FILE_DESC,
                               .fd = {.filefd = l->fd},
                               .vh_prot_name = LWS_PROTOCOL_STREAM_ACCEPT,
                               .opaque = l};
        l->accept_wsi = lws_adopt_descriptor_vhost_via_info(&ad);
    }
    if (!rc && !l->accept_wsi)
        rc = iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "cannot listen on %s (libwebsockets refused)",
                             l->name);
    if (rc) {
        listener_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

void iotgw_stream_listener_refusals(const iotgw_stream_listener *l, uint64_t *near_limit, uint64_t *paused)
{
    *near_limit = l->refused;
    *paused = l->failed_tries;
}

int iotgw_stream_listener_port(const iotgw_stream_listener *l)
{
    return l->port;
}

void iotgw_stream_listener_free(iotgw_stream_listener *l)
{
    if (l)
        listener_free(l); /* accepted streams keep working: their sockets are not the listener's */
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
