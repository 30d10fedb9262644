/* libiotgw-device: one session with the gateway over a plain TCP socket. */
#include "devices/iotgw_device.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <openssl/crypto.h>

#include "codecs/frame.h"
#include "codecs/sas.h"
#include "devices/device_tls.h"

#define PROTOCOL_VERSION 1
#define READ_CHUNK       16384
#define MAX_OUTPUT       (4u * 1024 * 1024) /* unsent bytes before the session gives up */

struct iotgw_device {
    int fd;
    dev_tls *tls; /* NULL: plain TCP */
    int closed, closed_reported;
    iotgw_device_error why;
    iotgw_frame_decoder dec;
    uint8_t *out;
    size_t out_head, out_len, out_cap;
    Iotgw__Frame **queue; /* frames that make events, oldest at head */
    size_t q_head, q_len, q_cap;
    Iotgw__Frame *current; /* the frame behind the last event */
    uint64_t next_seq, next_request;
    unsigned in_flight;
    uint32_t max_in_flight, max_frame;
    int batching; /* between batch_begin and batch_end: frames wait in out for one write */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Why the session ended: what happened, and the detail if any ("what: detail"). */
static void mark_closed(iotgw_device *d, int gateway_code, const char *what, const char *detail)
{
    if (d->closed)
        return;
    d->closed = 1;
    d->why.gateway_code = gateway_code;
    size_t cap = sizeof d->why.message;
    size_t n = strlen(what) < cap - 1 ? strlen(what) : cap - 1;
    memcpy(d->why.message, what, n);
    d->why.message[n] = '\0';
    if (detail && *detail && n + 3 < cap) {
        memcpy(d->why.message + n, ": ", 3);
        strncat(d->why.message, detail, cap - strlen(d->why.message) - 1);
    }
}

/* ------------------------------------------------------------------ bytes */

static void flush(iotgw_device *d)
{
    while (!d->closed && d->out_len > d->out_head) {
        size_t want = d->out_len - d->out_head;
        ssize_t n = d->tls ? dev_tls_write(d->tls, d->out + d->out_head, want)
                           : send(d->fd, d->out + d->out_head, want, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n <= 0) {
            mark_closed(d, 0, "writing to the gateway failed", strerror(errno));
            return;
        }
        d->out_head += (size_t)n;
    }
    d->out_head = d->out_len = 0;
}

static int send_frame(iotgw_device *d, Iotgw__Frame *f)
{
    if (d->closed)
        return IOTGW_DEVICE_ERR_CLOSED;
    uint8_t *buf;
    size_t len;
    if (iotgw_frame_pack(&f->base, d->max_frame, &buf, &len))
        return IOTGW_DEVICE_ERR_INVALID; /* larger than the gateway accepts */
    size_t pending = d->out_len - d->out_head;
    if (pending + len > MAX_OUTPUT) {
        free(buf);
        mark_closed(d, 0, "the gateway does not read what the device sends", NULL);
        return IOTGW_DEVICE_ERR_CLOSED;
    }
    if (d->out_len + len > d->out_cap) {
        if (pending) /* slide what is unsent to the front (there is nothing to move at first) */
            memmove(d->out, d->out + d->out_head, pending);
        d->out_len = pending;
        d->out_head = 0;
        size_t cap = d->out_cap ? d->out_cap : 4096;
        while (cap < d->out_len + len)
            cap *= 2;
        uint8_t *out = realloc(d->out, cap);
        if (!out) {
            free(buf);
            return IOTGW_DEVICE_ERR_NOMEM;
        }
        d->out = out;
        d->out_cap = cap;
    }
    memcpy(d->out + d->out_len, buf, len);
    d->out_len += len;
    free(buf);
    if (!d->batching)
        flush(d);
    return d->closed ? IOTGW_DEVICE_ERR_CLOSED : IOTGW_DEVICE_OK;
}

static void enqueue(iotgw_device *d, Iotgw__Frame *f)
{
    if (d->q_len == d->q_cap) {
        size_t cap = d->q_cap ? d->q_cap * 2 : 16;
        Iotgw__Frame **q = malloc(cap * sizeof *q);
        if (!q) {
            iotgw__frame__free_unpacked(f, NULL);
            return;
        }
        for (size_t i = 0; i < d->q_len; i++)
            q[i] = d->queue[(d->q_head + i) % d->q_cap];
        free(d->queue);
        d->queue = q;
        d->q_cap = cap;
        d->q_head = 0;
    }
    d->queue[(d->q_head + d->q_len++) % d->q_cap] = f;
}

static void on_frame(iotgw_device *d, Iotgw__Frame *f)
{
    switch (f->body_case) {
    case IOTGW__FRAME__BODY_PING: {
        Iotgw__Pong p = IOTGW__PONG__INIT;
        p.nonce = f->ping->nonce;
        Iotgw__Frame out = IOTGW__FRAME__INIT;
        out.body_case = IOTGW__FRAME__BODY_PONG;
        out.pong = &p;
        send_frame(d, &out);
        iotgw__frame__free_unpacked(f, NULL);
        return;
    }
    case IOTGW__FRAME__BODY_ERROR:
        mark_closed(d, f->error->code, "the gateway closed the session", f->error->message);
        iotgw__frame__free_unpacked(f, NULL);
        return;
    case IOTGW__FRAME__BODY_ACK:
    case IOTGW__FRAME__BODY_NACK:
        if (d->in_flight)
            d->in_flight--;
        /* fall through */
    case IOTGW__FRAME__BODY_WELCOME:
    case IOTGW__FRAME__BODY_METHOD_REQUEST:
    case IOTGW__FRAME__BODY_TWIN_RESULT:
    case IOTGW__FRAME__BODY_DESIRED_UPDATE:
    case IOTGW__FRAME__BODY_C2D_MESSAGE: enqueue(d, f); return;
    default: iotgw__frame__free_unpacked(f, NULL); return; /* Pong, or kinds this version ignores */
    }
}

int iotgw_device_process(iotgw_device *d)
{
    flush(d);
    uint8_t buf[READ_CHUNK];
    while (!d->closed) {
        ssize_t n =
            d->tls ? dev_tls_read(d->tls, buf, sizeof buf) : recv(d->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            iotgw_diag diag = {0};
            if (n == 0 && iotgw_frame_decoder_finish(&d->dec, &diag))
                mark_closed(d, 0, "the gateway closed the connection in the middle of a frame", diag.text);
            else
                mark_closed(d, 0,
                            n == 0 ? "the gateway closed the connection" : "reading from the gateway failed",
                            n == 0 ? NULL : strerror(errno));
            break;
        }
        const uint8_t *in = buf;
        size_t len = (size_t)n;
        while (len && !d->closed) {
            size_t used;
            const uint8_t *body;
            size_t blen;
            iotgw_diag diag = {0};
            int rc = iotgw_frame_decoder_next(&d->dec, in, len, &used, &body, &blen, &diag);
            in += used;
            len -= used;
            if (rc == IOTGW_ERR_AGAIN)
                break;
            Iotgw__Frame *f = rc ? NULL : iotgw__frame__unpack(NULL, blen, body);
            if (!f) {
                mark_closed(d, 0, "the gateway sent a malformed frame", rc ? diag.text : NULL);
                break;
            }
            on_frame(d, f);
        }
        if (!d->tls && (size_t)n < sizeof buf)
            break; /* the socket is drained: spare the recv that would say EAGAIN */
    }
    return d->closed ? IOTGW_DEVICE_ERR_CLOSED : IOTGW_DEVICE_OK;
}

/* ------------------------------------------------------------------ events */

static void fill_event(Iotgw__Frame *f, iotgw_device_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->version = -1;
    switch (f->body_case) {
    case IOTGW__FRAME__BODY_ACK:
        ev->kind = IOTGW_DEVICE_EVENT_ACK;
        ev->id = f->ack->seq;
        break;
    case IOTGW__FRAME__BODY_NACK:
        ev->kind = IOTGW_DEVICE_EVENT_NACK;
        ev->id = f->nack->seq;
        ev->status = f->nack->reason;
        ev->text = f->nack->detail;
        ev->retry_after_ms = f->nack->retry_after_ms;
        break;
    case IOTGW__FRAME__BODY_METHOD_REQUEST: {
        Iotgw__MethodRequest *r = f->method_request;
        ev->kind = IOTGW_DEVICE_EVENT_METHOD;
        ev->id = r->request_id;
        ev->name = r->name;
        int pb = r->payload_case == IOTGW__METHOD_REQUEST__PAYLOAD_PROTOBUF;
        ev->data = pb ? r->protobuf.data : r->json.data;
        ev->len = pb ? r->protobuf.len : r->json.len;
        ev->type = pb ? r->payload_type : NULL;
        break;
    }
    case IOTGW__FRAME__BODY_TWIN_RESULT:
        ev->kind = IOTGW_DEVICE_EVENT_TWIN_RESULT;
        ev->id = f->twin_result->request_id;
        ev->status = f->twin_result->status;
        ev->data = f->twin_result->twin_json.data;
        ev->len = f->twin_result->twin_json.len;
        ev->version = f->twin_result->version;
        ev->text = f->twin_result->detail;
        break;
    case IOTGW__FRAME__BODY_DESIRED_UPDATE:
        ev->kind = IOTGW_DEVICE_EVENT_DESIRED;
        ev->data = f->desired_update->patch_json.data;
        ev->len = f->desired_update->patch_json.len;
        ev->version = f->desired_update->version;
        break;
    case IOTGW__FRAME__BODY_C2D_MESSAGE:
        ev->kind = IOTGW_DEVICE_EVENT_C2D;
        ev->id = f->c2d_message->delivery_id;
        ev->data = f->c2d_message->body.data;
        ev->len = f->c2d_message->body.len;
        ev->c2d = f->c2d_message;
        break;
    default: break;
    }
}

/* Wait for the socket up to deadline (-1: for ever); 0 when something may be ready. */
static int wait_io(iotgw_device *d, int64_t deadline)
{
    int64_t left = deadline < 0 ? -1 : deadline - now_ms();
    if (deadline >= 0 && left <= 0)
        return IOTGW_DEVICE_ERR_TIMEOUT;
    struct pollfd p = {.fd = d->fd, .events = POLLIN | (iotgw_device_wants_write(d) ? POLLOUT : 0)};
    int n = poll(&p, 1, left < 0 ? -1 : (int)(left > 60000 ? 60000 : left));
    if (n < 0 && errno != EINTR)
        return IOTGW_DEVICE_ERR_CLOSED;
    return n > 0 ? IOTGW_DEVICE_OK : IOTGW_DEVICE_ERR_TIMEOUT;
}

int iotgw_device_next_event(iotgw_device *d, iotgw_device_event *ev, int timeout_ms)
{
    if (d->current) {
        iotgw__frame__free_unpacked(d->current, NULL);
        d->current = NULL;
    }
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        if (!d->q_len) /* events already read go first: a read per event costs a system call */
            iotgw_device_process(d);
        while (d->q_len) {
            Iotgw__Frame *f = d->queue[d->q_head];
            d->q_head = (d->q_head + 1) % d->q_cap;
            d->q_len--;
            if (f->body_case == IOTGW__FRAME__BODY_WELCOME) {
                iotgw__frame__free_unpacked(f, NULL);
                continue;
            }
            d->current = f;
            fill_event(f, ev);
            return IOTGW_DEVICE_OK;
        }
        if (d->closed) {
            if (d->closed_reported)
                return IOTGW_DEVICE_ERR_CLOSED;
            d->closed_reported = 1;
            memset(ev, 0, sizeof *ev);
            ev->kind = IOTGW_DEVICE_EVENT_CLOSED;
            ev->status = d->why.gateway_code;
            ev->text = d->why.message;
            return IOTGW_DEVICE_OK;
        }
        if (timeout_ms == 0 || wait_io(d, deadline) == IOTGW_DEVICE_ERR_TIMEOUT)
            return IOTGW_DEVICE_ERR_TIMEOUT;
    }
}

/* ------------------------------------------------------------------ session */

static int connect_to(const char *host, int port, int timeout_ms, iotgw_device_error *err)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc) {
        snprintf(err->message, sizeof err->message, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) && errno != EINPROGRESS) {
            snprintf(err->message, sizeof err->message, "cannot connect to %s:%d: %s", host, port,
                     strerror(errno));
            close(fd);
            fd = -1;
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (poll(&p, 1, timeout_ms) <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr) {
            snprintf(err->message, sizeof err->message, "cannot connect to %s:%d: %s", host, port,
                     soerr ? strerror(soerr) : "timed out");
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

int iotgw_device_open(const iotgw_device_options *o, iotgw_device **out, iotgw_device_error *err)
{
    iotgw_device_error scratch;
    if (!err)
        err = &scratch;
    memset(err, 0, sizeof *err);
    *out = NULL;
    int by_certificate = o && o->tls && o->cert_file && !o->key && !o->token;
    if (!o || !o->host || !o->device_id || (!by_certificate && !o->token && (!o->key || !o->hub_host))) {
        snprintf(err->message, sizeof err->message,
                 "host, device_id and a token (or key and hub_host, or a TLS client certificate) are needed");
        return IOTGW_DEVICE_ERR_INVALID;
    }
    char *token = NULL;
    if (!o->token && !by_certificate) {
        char resource[512];
        snprintf(resource, sizeof resource, "%s/devices/%s", o->hub_host, o->device_id);
        iotgw_diag diag = {0};
        uint64_t expiry = (uint64_t)time(NULL) + (o->token_ttl_s ? o->token_ttl_s : 3600);
        if (iotgw_sas_build(resource, o->key, expiry, NULL, &token, &diag)) {
            snprintf(err->message, sizeof err->message, "%s", diag.text);
            return IOTGW_DEVICE_ERR_TOKEN;
        }
    }
    int timeout = o->timeout_ms > 0 ? o->timeout_ms : 10000;
    int64_t deadline = now_ms() + timeout;
    int fd = connect_to(o->host, o->port, timeout, err);
    iotgw_device *d = fd < 0 ? NULL : calloc(1, sizeof *d);
    if (!d) {
        if (token)
            OPENSSL_cleanse(token, strlen(token));
        free(token);
        if (fd >= 0)
            close(fd);
        return fd < 0 ? IOTGW_DEVICE_ERR_CONNECT : IOTGW_DEVICE_ERR_NOMEM;
    }
    d->fd = fd;
    d->max_frame = 8192; /* until Welcome says more */
    if (o->tls && !(d->tls = dev_tls_start(fd, o->host, o->ca_file, o->cert_file, o->key_file, timeout,
                                           err->message, sizeof err->message))) {
        if (token)
            OPENSSL_cleanse(token, strlen(token));
        free(token);
        iotgw_device_close(d);
        return IOTGW_DEVICE_ERR_TLS;
    }
    iotgw_frame_decoder_init(&d->dec, 16 * 1024 * 1024);
    Iotgw__Capabilities caps = IOTGW__CAPABILITIES__INIT;
    caps.methods = o->methods != 0;
    caps.twin = o->twin != 0;
    caps.c2d = o->c2d != 0;
    Iotgw__Hello h = IOTGW__HELLO__INIT;
    h.protocol_version = PROTOCOL_VERSION;
    h.device_id = (char *)o->device_id;
    h.token = token ? token : (char *)(o->token ? o->token : "");
    h.capabilities = &caps;
    h.client = (char *)(o->client ? o->client : "libiotgw-device");
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_HELLO;
    f.hello = &h;
    int rc = send_frame(d, &f);
    if (token)
        OPENSSL_cleanse(token, strlen(token));
    free(token);
    while (rc == IOTGW_DEVICE_OK) {
        iotgw_device_process(d);
        if (d->q_len) {
            Iotgw__Frame *w = d->queue[d->q_head];
            if (w->body_case != IOTGW__FRAME__BODY_WELCOME) {
                rc = IOTGW_DEVICE_ERR_PROTOCOL;
                snprintf(err->message, sizeof err->message, "the gateway's first frame was not Welcome");
                break;
            }
            d->max_in_flight = w->welcome->max_in_flight;
            d->max_frame = w->welcome->max_frame_size ? w->welcome->max_frame_size : 65536;
            *out = d;
            return IOTGW_DEVICE_OK;
        }
        if (d->closed) {
            *err = d->why;
            rc = d->why.gateway_code ? IOTGW_DEVICE_ERR_REFUSED : IOTGW_DEVICE_ERR_CLOSED;
            break;
        }
        if (wait_io(d, deadline) == IOTGW_DEVICE_ERR_TIMEOUT) {
            rc = IOTGW_DEVICE_ERR_TIMEOUT;
            snprintf(err->message, sizeof err->message, "no Welcome from the gateway within %d ms", timeout);
        }
    }
    if (rc == IOTGW_DEVICE_ERR_CLOSED && !err->message[0])
        snprintf(err->message, sizeof err->message, "%s", d->why.message);
    iotgw_device_close(d);
    return rc;
}

void iotgw_device_close(iotgw_device *d)
{
    if (!d)
        return;
    dev_tls_free(d->tls);
    if (d->fd >= 0)
        close(d->fd);
    iotgw_frame_decoder_free(&d->dec);
    if (d->current)
        iotgw__frame__free_unpacked(d->current, NULL);
    for (size_t i = 0; i < d->q_len; i++)
        iotgw__frame__free_unpacked(d->queue[(d->q_head + i) % d->q_cap], NULL);
    free(d->queue);
    free(d->out);
    free(d);
}

/* ------------------------------------------------------------------ requests */

static int send_telemetry(iotgw_device *d, Iotgw__Telemetry *t, uint64_t *seq)
{
    if (d->closed)
        return IOTGW_DEVICE_ERR_CLOSED;
    if (d->max_in_flight && d->in_flight >= d->max_in_flight)
        return IOTGW_DEVICE_ERR_WINDOW;
    t->seq = ++d->next_seq;
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_TELEMETRY;
    f.telemetry = t;
    int rc = send_frame(d, &f);
    if (rc == IOTGW_DEVICE_OK) {
        d->in_flight++;
        if (seq)
            *seq = t->seq;
    }
    return rc;
}

int iotgw_device_send_parcel(iotgw_device *d, const Iotgw__Parcel *parcel, uint64_t *seq)
{
    Iotgw__Telemetry t = IOTGW__TELEMETRY__INIT;
    t.payload_case = IOTGW__TELEMETRY__PAYLOAD_PARCEL;
    t.parcel = (Iotgw__Parcel *)parcel;
    return send_telemetry(d, &t, seq);
}

int iotgw_device_send_raw(iotgw_device *d, const void *data, size_t len, const char *content_type,
                          uint64_t *seq)
{
    Iotgw__Telemetry t = IOTGW__TELEMETRY__INIT;
    t.payload_case = IOTGW__TELEMETRY__PAYLOAD_RAW;
    t.raw = (ProtobufCBinaryData){.len = len, .data = (uint8_t *)data};
    t.content_type = (char *)(content_type ? content_type : "");
    return send_telemetry(d, &t, seq);
}

int iotgw_device_batch_begin(iotgw_device *d)
{
    if (d->closed)
        return IOTGW_DEVICE_ERR_CLOSED;
    d->batching = 1;
    return IOTGW_DEVICE_OK;
}

int iotgw_device_batch_end(iotgw_device *d)
{
    d->batching = 0;
    flush(d);
    return d->closed ? IOTGW_DEVICE_ERR_CLOSED : IOTGW_DEVICE_OK;
}

unsigned iotgw_device_in_flight(const iotgw_device *d)
{
    return d->in_flight;
}

int iotgw_device_method_respond(iotgw_device *d, uint64_t request_id, int status, const char *json)
{
    Iotgw__MethodResponse r = IOTGW__METHOD_RESPONSE__INIT;
    r.request_id = request_id;
    r.status = status;
    if (json) {
        r.payload_case = IOTGW__METHOD_RESPONSE__PAYLOAD_JSON;
        r.json = (ProtobufCBinaryData){.len = strlen(json), .data = (uint8_t *)json};
    }
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_METHOD_RESPONSE;
    f.method_response = &r;
    return send_frame(d, &f);
}

int iotgw_device_method_respond_protobuf(iotgw_device *d, uint64_t request_id, int status,
                                         const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return IOTGW_DEVICE_ERR_NOMEM;
    protobuf_c_message_pack(msg, buf);
    Iotgw__MethodResponse r = IOTGW__METHOD_RESPONSE__INIT;
    r.request_id = request_id;
    r.status = status;
    r.payload_case = IOTGW__METHOD_RESPONSE__PAYLOAD_PROTOBUF;
    r.protobuf = (ProtobufCBinaryData){.len = len, .data = buf};
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_METHOD_RESPONSE;
    f.method_response = &r;
    int rc = send_frame(d, &f);
    free(buf);
    return rc;
}

int iotgw_device_twin_get(iotgw_device *d, uint64_t *request_id)
{
    Iotgw__TwinGet g = IOTGW__TWIN_GET__INIT;
    g.request_id = ++d->next_request;
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_TWIN_GET;
    f.twin_get = &g;
    if (request_id)
        *request_id = g.request_id;
    return send_frame(d, &f);
}

int iotgw_device_report(iotgw_device *d, const char *patch_json, uint64_t *request_id)
{
    if (!patch_json)
        return IOTGW_DEVICE_ERR_INVALID;
    Iotgw__ReportedPatch p = IOTGW__REPORTED_PATCH__INIT;
    p.request_id = ++d->next_request;
    p.patch_json = (ProtobufCBinaryData){.len = strlen(patch_json), .data = (uint8_t *)patch_json};
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_REPORTED_PATCH;
    f.reported_patch = &p;
    if (request_id)
        *request_id = p.request_id;
    return send_frame(d, &f);
}

int iotgw_device_c2d_settle(iotgw_device *d, uint64_t delivery_id, Iotgw__C2dOutcome outcome)
{
    Iotgw__C2dSettle s = IOTGW__C2D_SETTLE__INIT;
    s.delivery_id = delivery_id;
    s.outcome = outcome;
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_C2D_SETTLE;
    f.c2d_settle = &s;
    return send_frame(d, &f);
}

int iotgw_device_fd(const iotgw_device *d)
{
    return d->fd;
}

int iotgw_device_wants_write(const iotgw_device *d)
{
    return !d->closed && d->out_len > d->out_head;
}

uint32_t iotgw_device_max_in_flight(const iotgw_device *d)
{
    return d->max_in_flight;
}

const char *iotgw_device_strerror(int code)
{
    switch (code) {
    case IOTGW_DEVICE_OK: return "ok";
    case IOTGW_DEVICE_ERR_TIMEOUT: return "timed out";
    case IOTGW_DEVICE_ERR_CONNECT: return "cannot connect to the gateway";
    case IOTGW_DEVICE_ERR_REFUSED: return "the gateway refused the device";
    case IOTGW_DEVICE_ERR_CLOSED: return "the connection to the gateway is closed";
    case IOTGW_DEVICE_ERR_PROTOCOL: return "the gateway sent something unreadable";
    case IOTGW_DEVICE_ERR_WINDOW: return "too many messages waiting for acknowledgement";
    case IOTGW_DEVICE_ERR_INVALID: return "invalid argument";
    case IOTGW_DEVICE_ERR_NOMEM: return "out of memory";
    case IOTGW_DEVICE_ERR_TOKEN: return "cannot make a token from the key";
    case IOTGW_DEVICE_ERR_TLS: return "the TLS handshake with the gateway failed";
    default: return "unknown error";
    }
}
