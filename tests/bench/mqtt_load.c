/* MQTT devices for load (tests/bench/mqtt_load.h): the connections' state machine, their
 * output and input, and the pump that serves them all from one thread. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "codecs/mqtt.h"
#include "tests/bench/mqtt_load.h"
#include "tests/common/clock_env.h"

#define DEFAULT_PAYLOAD "{\"temperature\":21.5,\"humidity\":48.5,\"door\":\"open\",\"ts\":1764000000}"
#define OUT_CAP         (64 * 1024)
#define KEEP_ALIVE      300
#define LAT_BUCKETS     (6000000) /* 10 us each: 60 s */

typedef enum conn_state { TCP_CONNECTING, TLS_HANDSHAKE, AWAIT_CONNACK, ONLINE, FAILED } conn_state;

typedef struct mconn {
    int fd, dev;
    SSL *ssl;
    conn_state state;
    iotgw_mqtt_decoder dec;
    char topic[96];
    uint8_t *out;
    size_t out_off, out_len;
    int want_write;           /* the last TLS operation waits for the socket to take more */
    int kick;                 /* step it without a poll event */
    uint64_t to_send, share;  /* share: this phase's messages for it */
    int qos, inflight, fence; /* fence: 1 to send, 2 sent, 3 acknowledged */
    uint16_t next_id;
    double *sent_at; /* send times of the QoS 1 messages in flight, oldest first (a ring) */
    int sent_head, sent_len, sent_cap;
    struct mqtt_fleet *f;
} mconn;

struct mqtt_fleet {
    mqtt_fleet_options o;
    const char *payload;
    size_t payload_len;
    SSL_CTX *ctx;
    mconn *cs;
    struct pollfd *pfd;
    int started, connected, failed, closing, endless;
    uint64_t acked, assigned;
    char first_failure[768];
    mqtt_latency lat;
};

/* The connection is of no more use: count it, and keep the first reason. */
static void fail(mconn *c, const char *why, const char *detail)
{
    if (c->state == FAILED)
        return;
    c->state = FAILED;
    mqtt_fleet *f = c->f;
    if (f->closing) { /* after DISCONNECT the server closes: expected */
        ERR_clear_error();
        return;
    }
    f->failed++;
    char tls[160] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, tls, sizeof tls);
    if (!f->first_failure[0])
        snprintf(f->first_failure, sizeof f->first_failure, "%s: %s%s%s%s%s", f->o.ids[c->dev], why,
                 detail ? " " : "", detail ? detail : "", *tls ? ": " : "", tls);
    ERR_clear_error();
}

/* ------------------------------------------------------------------ output */

static int queue(mconn *c, const iotgw_mqtt_packet *p)
{
    size_t n = 0;
    if (iotgw_mqtt_encode(IOTGW_MQTT_CLIENT, p, c->out + c->out_len, OUT_CAP - c->out_len, &n))
        return -1;
    c->out_len += n;
    return 0;
}

static int queue_publish(mconn *c, int qos)
{
    iotgw_mqtt_packet p = {.type = IOTGW_MQTT_PUBLISH};
    p.u.publish.qos = (uint8_t)qos;
    p.u.publish.topic = (iotgw_mqtt_bytes){(const uint8_t *)c->topic, strlen(c->topic)};
    p.u.publish.payload = (iotgw_mqtt_bytes){(const uint8_t *)c->f->payload, c->f->payload_len};
    if (qos) {
        if (++c->next_id == 0)
            c->next_id = 1;
        p.u.publish.packet_id = c->next_id;
    }
    if (queue(c, &p))
        return -1;
    if (qos) {
        c->inflight++;
        if (c->sent_len < c->sent_cap) /* PUBACKs come in order: a FIFO of send times */
            c->sent_at[(c->sent_head + c->sent_len++) % c->sent_cap] = now_s();
    }
    return 0;
}

/* Write what is queued; 0 when all of it left, 1 when the socket is full, -1 failed. */
static int flush(mconn *c)
{
    while (c->out_off < c->out_len) {
        int n = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            c->want_write = e == SSL_ERROR_WANT_WRITE;
            return 1;
        }
        fail(c, "TLS write failed", e == SSL_ERROR_SYSCALL ? strerror(errno) : NULL);
        return -1;
    }
    c->out_off = c->out_len = 0;
    c->want_write = 0;
    return 0;
}

/* Queue what the phase lets this connection send now, and write it. */
static void fill_and_flush(mconn *c)
{
    for (int round = 0; round < 8 && c->state == ONLINE; round++) {
        if (c->out_off == c->out_len) {
            c->out_off = c->out_len = 0;
            size_t room = sizeof c->topic + c->f->payload_len + 16;
            while (c->to_send && (c->qos == 0 || c->inflight < c->f->o.window) &&
                   OUT_CAP - c->out_len > room && !queue_publish(c, c->qos))
                c->to_send -= !c->f->endless;
            if (!c->to_send && c->fence == 1 && OUT_CAP - c->out_len > room && !queue_publish(c, 1))
                c->fence = 2;
        }
        if (c->out_len == 0 || flush(c))
            return;
    }
}

/* ------------------------------------------------------------------ input */

static void on_packet(mconn *c, const iotgw_mqtt_packet *p)
{
    if (c->state == AWAIT_CONNACK && p->type == IOTGW_MQTT_CONNACK) {
        if (p->u.connack.return_code == IOTGW_MQTT_CONNACK_ACCEPTED) {
            c->state = ONLINE;
            c->f->connected++;
        } else {
            char code[32];
            snprintf(code, sizeof code, "%u", p->u.connack.return_code);
            fail(c, "CONNACK refused with code", code);
        }
        return;
    }
    if (c->state == ONLINE && p->type == IOTGW_MQTT_PUBACK) {
        if (c->fence == 2 && !c->to_send && c->inflight == 1)
            c->fence = 3;
        c->inflight--;
        c->f->acked++;
        if (c->sent_len) {
            mqtt_latency *l = &c->f->lat;
            double us = (now_s() - c->sent_at[c->sent_head]) * 1e6;
            c->sent_head = (c->sent_head + 1) % c->sent_cap;
            c->sent_len--;
            size_t i = us < 0 ? 0 : (size_t)(us / 10);
            l->buckets[i < LAT_BUCKETS ? i : LAT_BUCKETS - 1]++;
            l->count++;
        }
        return;
    }
    fail(c, "unexpected packet from the server:", iotgw_mqtt_type_name(p->type));
}

static void read_all(mconn *c)
{
    uint8_t buf[16384];
    for (;;) {
        int n = SSL_read(c->ssl, buf, sizeof buf);
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            fail(c,
                 e == SSL_ERROR_ZERO_RETURN ? "the server closed the connection (TLS close_notify)"
                                            : "the connection was lost",
                 e == SSL_ERROR_SYSCALL ? (n == 0 ? "(EOF)" : strerror(errno)) : NULL);
            return;
        }
        const uint8_t *in = buf;
        size_t len = (size_t)n;
        while (len && c->state != FAILED) {
            iotgw_mqtt_packet p;
            size_t used = 0;
            iotgw_diag diag = {0};
            int rc = iotgw_mqtt_decoder_next(&c->dec, in, len, &used, &p, &diag);
            in += used, len -= used;
            if (rc == IOTGW_ERR_AGAIN)
                break;
            if (rc) {
                fail(c, "undecodable MQTT from the server:", diag.text);
                return;
            }
            on_packet(c, &p);
        }
        if (c->state == FAILED)
            return;
    }
}

/* ------------------------------------------------------------------ connections */

static int start_conn(mqtt_fleet *f, mconn *c, int dev)
{
    SSL_CTX *ctx = f->ctx;
    c->dev = dev;
    c->fd = -1;
    c->f = f;
    snprintf(c->topic, sizeof c->topic, "devices/%s/messages/events/%%24.ct=application%%2Fjson&k=v",
             f->o.ids[dev]);
    c->sent_cap = f->o.window + 1;
    c->sent_at = calloc((size_t)c->sent_cap, sizeof *c->sent_at);
    iotgw_mqtt_decoder_init(&c->dec, IOTGW_MQTT_CLIENT, 1 << 20);
    c->out = malloc(OUT_CAP);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (!c->out || !c->sent_at || c->fd < 0) {
        fail(c, "socket:", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->f->o.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) && errno != EINPROGRESS) {
        fail(c, "connect:", strerror(errno));
        return -1;
    }
    c->ssl = SSL_new(ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd) || !SSL_set_tlsext_host_name(c->ssl, f->o.tls_name) ||
        !SSL_set1_host(c->ssl, f->o.tls_name)) {
        fail(c, "SSL_new", NULL);
        return -1;
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_set_connect_state(c->ssl);
    c->state = TCP_CONNECTING;
    c->want_write = 1;
    return 0;
}

static void send_connect(mconn *c)
{
    char user[512];
    const char *token = c->f->o.tokens[c->dev];
    snprintf(user, sizeof user, "%s/%s/?api-version=2021-04-12", c->f->o.hub_host, c->f->o.ids[c->dev]);
    iotgw_mqtt_packet p = {.type = IOTGW_MQTT_CONNECT};
    iotgw_mqtt_connect *k = &p.u.connect;
    const char *id = c->f->o.ids[c->dev];
    k->protocol_name = (iotgw_mqtt_bytes){(const uint8_t *)"MQTT", 4};
    k->protocol_level = IOTGW_MQTT_LEVEL_311;
    k->clean_session = 1;
    k->keep_alive_s = KEEP_ALIVE;
    k->client_id = (iotgw_mqtt_bytes){(const uint8_t *)id, strlen(id)};
    k->has_username = k->has_password = 1;
    k->username = (iotgw_mqtt_bytes){(const uint8_t *)user, strlen(user)};
    k->password = (iotgw_mqtt_bytes){(const uint8_t *)token, strlen(token)};
    if (queue(c, &p)) {
        fail(c, "CONNECT does not encode", NULL);
        return;
    }
    c->state = AWAIT_CONNACK;
    flush(c);
}

static void step(mconn *c, short revents)
{
    c->kick = 0;
    if (c->state == FAILED)
        return;
    if (revents & (POLLERR | POLLHUP | POLLNVAL) && c->state == TCP_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        fail(c, "TCP connect failed:", strerror(err));
        return;
    }
    if (c->state == TCP_CONNECTING) {
        if (!(revents & POLLOUT))
            return;
        c->state = TLS_HANDSHAKE;
    }
    if (c->state == TLS_HANDSHAKE) {
        int r = SSL_do_handshake(c->ssl);
        if (r == 1) {
            send_connect(c);
        } else {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                c->want_write = e == SSL_ERROR_WANT_WRITE;
            else
                fail(c, "TLS handshake failed", e == SSL_ERROR_SYSCALL ? strerror(errno) : NULL);
            return;
        }
    }
    if (c->state == FAILED)
        return;
    if (c->out_off < c->out_len && flush(c) < 0)
        return;
    read_all(c);
    if (c->state == ONLINE)
        fill_and_flush(c);
}

/* Serve the connections until done() or the deadline; 0, or -1 at the deadline. */
static int pump(mconn *cs, struct pollfd *pfd, int n, int (*done)(mconn *, int), double until)
{
    while (!done(cs, n)) {
        if (now_s() > until)
            return -1;
        for (int i = 0; i < n; i++) {
            pfd[i].fd = cs[i].state == FAILED ? -1 : cs[i].fd;
            pfd[i].events = (short)(POLLIN | (cs[i].want_write ? POLLOUT : 0));
            pfd[i].revents = 0;
        }
        int kicked = 0;
        for (int i = 0; i < n; i++)
            kicked |= cs[i].kick;
        if (poll(pfd, (nfds_t)n, kicked ? 0 : 50) < 0 && errno != EINTR)
            return -1;
        for (int i = 0; i < n; i++)
            if (pfd[i].revents || cs[i].kick)
                step(&cs[i], pfd[i].revents);
    }
    return 0;
}

static int all_connected(mconn *cs, int n)
{
    for (int i = 0; i < n; i++)
        if (cs[i].state != ONLINE && cs[i].state != FAILED)
            return 0;
    return 1;
}

static int all_acked(mconn *cs, int n)
{
    for (int i = 0; i < n; i++)
        if (cs[i].state == ONLINE &&
            (cs[i].to_send || cs[i].inflight || cs[i].fence == 1 || cs[i].fence == 2))
            return 0;
    return 1;
}

static int all_flushed(mconn *cs, int n)
{
    for (int i = 0; i < n; i++)
        if (cs[i].state == ONLINE && cs[i].out_off < cs[i].out_len)
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ the fleet */

mqtt_fleet *mqtt_fleet_new(const mqtt_fleet_options *o)
{
    mqtt_fleet *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->o = *o;
    if (!f->o.tls_name)
        f->o.tls_name = "localhost";
    if (!f->o.hub_host)
        f->o.hub_host = "localhost";
    if (f->o.window < 1)
        f->o.window = 1;
    if (f->o.window > 65535)
        f->o.window = 65535; /* distinct packet identifiers in flight */
    f->payload = o->payload ? o->payload : DEFAULT_PAYLOAD;
    f->payload_len = strlen(f->payload);
    f->cs = calloc((size_t)o->devices, sizeof *f->cs);
    f->pfd = calloc((size_t)o->devices, sizeof *f->pfd);
    f->lat.buckets = calloc(LAT_BUCKETS, sizeof *f->lat.buckets);
    f->ctx = SSL_CTX_new(TLS_client_method());
    if (!f->cs || !f->pfd || !f->lat.buckets || !f->ctx ||
        !SSL_CTX_load_verify_locations(f->ctx, o->ca_file, NULL) ||
        !SSL_CTX_set_min_proto_version(f->ctx, TLS1_2_VERSION)) {
        snprintf(f->first_failure, sizeof f->first_failure, "client setup failed (CA %s)", o->ca_file);
        f->failed = o->devices;
        return f;
    }
    SSL_CTX_set_verify(f->ctx, SSL_VERIFY_PEER, NULL);
    return f;
}

int mqtt_fleet_connect(mqtt_fleet *f, double until)
{
    if (f->failed)
        return 0;
    for (; f->started < f->o.devices; f->started++)
        start_conn(f, &f->cs[f->started], f->started);
    return pump(f->cs, f->pfd, f->started, all_connected, until);
}

int mqtt_fleet_send(mqtt_fleet *f, int qos, uint64_t total, double until)
{
    int n = f->started;
    f->endless = total == 0;
    f->assigned = 0;
    for (int i = 0; i < n; i++) {
        mconn *c = &f->cs[i];
        c->to_send = c->share = f->endless ? 1 : total / (uint64_t)n + ((uint64_t)i < total % (uint64_t)n);
        c->qos = qos;
        c->fence = qos ? 0 : 1;
        c->kick = 1;
        if (c->state == ONLINE)
            f->assigned += c->share;
    }
    uint64_t acked0 = f->acked;
    int rc = pump(f->cs, f->pfd, n, all_acked, until);
    if (!qos) { /* a connection's QoS 0 messages count once its fence is acknowledged */
        f->acked = acked0;
        for (int i = 0; i < n; i++)
            f->acked += f->cs[i].fence == 3 ? f->cs[i].share : 0;
    }
    if (f->endless) { /* the deadline ends it: what was acknowledged is the count */
        f->endless = 0;
        for (int i = 0; i < n; i++)
            f->cs[i].to_send = 0;
        return 0;
    }
    return rc;
}

void mqtt_fleet_disconnect(mqtt_fleet *f, double until)
{
    f->closing = 1;
    for (int i = 0; i < f->started; i++)
        if (f->cs[i].state == ONLINE) {
            iotgw_mqtt_packet p = {.type = IOTGW_MQTT_DISCONNECT};
            f->cs[i].to_send = 0, f->cs[i].fence = 0;
            if (!queue(&f->cs[i], &p))
                f->cs[i].kick = 1;
        }
    pump(f->cs, f->pfd, f->started, all_flushed, until);
}

void mqtt_fleet_free(mqtt_fleet *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->started; i++) {
        mconn *c = &f->cs[i];
        if (c->ssl) {
            if (c->state == ONLINE)
                SSL_shutdown(c->ssl);
            SSL_free(c->ssl);
        }
        if (c->fd >= 0)
            close(c->fd);
        iotgw_mqtt_decoder_free(&c->dec);
        free(c->out);
        free(c->sent_at);
    }
    free(f->cs);
    free(f->pfd);
    free(f->lat.buckets);
    SSL_CTX_free(f->ctx);
    free(f);
}

int mqtt_fleet_connected(const mqtt_fleet *f)
{
    return f->connected;
}

int mqtt_fleet_failed(const mqtt_fleet *f)
{
    return f->failed;
}

const char *mqtt_fleet_first_failure(const mqtt_fleet *f)
{
    return f->first_failure;
}

uint64_t mqtt_fleet_acked(const mqtt_fleet *f)
{
    return f->acked;
}

uint64_t mqtt_fleet_assigned(const mqtt_fleet *f)
{
    return f->assigned;
}

size_t mqtt_fleet_payload_len(const mqtt_fleet *f)
{
    return f->payload_len;
}

const mqtt_latency *mqtt_fleet_latency(const mqtt_fleet *f)
{
    return &f->lat;
}

double mqtt_latency_quantile_ms(const mqtt_latency *l, double q)
{
    if (!l->count)
        return 0;
    uint64_t want = (uint64_t)(q * (double)l->count), seen = 0;
    for (size_t i = 0; i < LAT_BUCKETS; i++) {
        seen += l->buckets[i];
        if (seen > want)
            return (double)(i + 1) * 0.01;
    }
    return LAT_BUCKETS * 0.01;
}
