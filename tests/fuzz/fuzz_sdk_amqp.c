/*
 * SDK-device fuzz target over AMQP: arbitrary bytes as what an Azure IoT SDK device sends
 * to iotgw's AMQP listener, fed to the gateway's back end for such devices
 * (gateway/sdk_amqp.c, session.c) in a real gateway whose hub is never reached.
 *
 * The connection is the real transport's (transport/conn.c: its frame guard, its Proton
 * connection driver, its SASL server layer, its event dispatch and wakes) without a socket: the
 * target plays the socket and the loop. It hands the input to conn_on_bytes in pieces
 * whose size the first byte chooses (bit 7: the connection came over WebSocket), serves
 * the connection's wakes after each piece as the loop's next turn would (never a timer
 * else, so the upstream never gets a socket), takes whatever the gateway writes, and at
 * the end loses the socket, as a device that goes away. Bit 6 of the first byte gives
 * the connection a verified client certificate naming device "fz2".
 *
 * The fleet has devices "fz" and "fz2" with a known key: seeds with a put-token for them
 * (the token expires in 2100) reach their links and telemetry deliveries. The hub holds
 * two messages per device (queuePerDevice), the device's window is four (maxInFlight):
 * the third unsettled delivery gets its outcome at once (a refusal), the fifth exceeds
 * the credit.
 *
 * Properties: the gateway never crashes or leaks; what it writes is a sequence of
 * protocol headers and whole AMQP or SASL frames, each a known performative; it neither
 * wakes itself nor writes forever; when the connection closes its handler sees
 * PN_TRANSPORT_CLOSED and lets go of every session and connection record.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <proton/codec.h>

#include "gateway/gateway_internal.h"
#include "transport/internal.h"
#include "transport/log.h"

#define MAX_CHECKED_OUTPUT (4u << 20) /* output kept for the check; past it, not checked */
#define MAX_WAKE_TURNS     1000       /* turns of wakes in a row before it counts as a livelock */
#define MAX_WRITES         1000       /* writes in a row, no input between, before it does too */

static iotgw_loop *loop;
static iotgw_gateway *gw;

static void temp_file(char *path, const char *text)
{
    int fd = mkstemps(path, 4);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        abort();
    close(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char cert[] = "/tmp/fuzz-sdk-amqp-XXXXXX.pem", path[] = "/tmp/fuzz-sdk-amqp-XXXXXX.yml";
    temp_file(cert, "not read: the fake stream listener does no TLS\n");
    char config[1024];
    /* The AMQP connection is made by the target, not by a listener (which would need a
     * socket and a certificate): the fake MQTT listener only gives the gateway one. */
    snprintf(config, sizeof config,
             "gatewayId: gw1\n"
             "hub: {hostName: localhost, connectHost: 127.0.0.1, port: 1}\n"
             "ops: {listen: off}\n"
             "devices:\n"
             "  maxInFlight: 4\n"
             "  queuePerDevice: 2\n"
             "  tls: {cert: %s, key: %s}\n"
             "  mqtt: {listen: 127.0.0.1:0}\n"
             "fleet:\n"
             "  devices:\n"
             "    - {id: fz, key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=}\n"
             "    - {id: fz2, key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=}\n"
             "    - {id: off, key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=, disabled: true}\n",
             cert, cert);
    temp_file(path, config);
    iotgw_config *cfg;
    iotgw_diag diag = {0};
    iotgw_log_set_level(IOTGW_LOG_ERROR);
    loop = iotgw_loop_new(&(iotgw_loop_options){.backend = IOTGW_LOOP_POLL}, &diag);
    if (!loop || iotgw_config_load(path, &cfg, &diag) || iotgw_gateway_new(loop, cfg, &gw, &diag)) {
        fprintf(stderr, "fuzz_sdk_amqp: %s\n", diag.text);
        abort();
    }
    unlink(path);
    unlink(cert);
    if (getenv("FUZZ_SDK_AMQP_LOG")) /* to see what a seed reaches */
        iotgw_log_set_level(IOTGW_LOG_DEBUG);
    return 0;
}

/* ------------------------------------------------------------------ the gateway's output */

static struct {
    uint8_t *buf;
    size_t len, cap;
    int overflow;
} out;

static void keep_output(const char *p, size_t n)
{
    if (out.overflow || !n)
        return;
    if (out.len + n > MAX_CHECKED_OUTPUT) {
        out.overflow = 1;
        return;
    }
    if (out.len + n > out.cap) {
        size_t cap = out.cap ? out.cap : 4096;
        while (cap < out.len + n)
            cap *= 2;
        uint8_t *b = realloc(out.buf, cap);
        if (!b)
            abort();
        out.buf = b, out.cap = cap;
    }
    memcpy(out.buf + out.len, p, n);
    out.len += n;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Protocol headers and whole frames, each (but an empty AMQP frame, a heartbeat) with a
 * performative of its layer: 0x10..0x18 for AMQP, 0x40..0x44 for SASL. */
static void check_output(void)
{
    static const uint8_t amqp[8] = "AMQP\x00\x01\x00\x00", sasl[8] = "AMQP\x03\x01\x00\x00";
    pn_data_t *d = pn_data(4);
    size_t off = 0;
    while (!out.overflow && off < out.len) {
        const uint8_t *p = out.buf + off;
        size_t left = out.len - off;
        if (left >= 4 && !memcmp(p, "AMQP", 4)) {
            if (left < 8 || (memcmp(p, amqp, 8) && memcmp(p, sasl, 8)))
                abort(); /* a cut or unknown protocol header */
            off += 8;
            continue;
        }
        if (left < 8)
            abort(); /* a cut frame header */
        uint32_t size = be32(p);
        unsigned doff = p[4], type = p[5];
        if (size < 8 || size > left || doff < 2 || doff * 4u > size || type > 1)
            abort(); /* not a frame, or a cut one */
        size_t body = size - doff * 4u;
        if (body || type == 1) {
            pn_data_clear(d);
            ssize_t used = pn_data_decode(d, (const char *)p + doff * 4u, body);
            pn_data_rewind(d);
            if (used <= 0 || !pn_data_next(d) || pn_data_type(d) != PN_DESCRIBED || !pn_data_enter(d) ||
                !pn_data_next(d) || pn_data_type(d) != PN_ULONG)
                abort(); /* a frame body that is not a performative */
            uint64_t code = pn_data_get_ulong(d);
            if (type == 0 ? code < 0x10 || code > 0x18 : code < 0x40 || code > 0x44)
                abort(); /* not a performative of its layer */
            if (pn_data_next(d) && pn_data_type(d) != PN_LIST)
                abort(); /* its fields are a list */
        }
        off += size;
    }
    pn_data_free(d);
}

/* ------------------------------------------------------------------ the socket and the loop */

/* The gateway's handler, watched: the connection is freed when a handler call with
 * PN_TRANSPORT_CLOSED returns (there is no socket to wait for). */
static struct {
    iotgw_conn_event_fn fn;
    void *ctx;
    int closed;
} watch;

static void watched(iotgw_conn *c, pn_event_t *e, void *ctx)
{
    (void)ctx;
    if (watch.closed)
        abort(); /* an event after PN_TRANSPORT_CLOSED */
    if (pn_event_type(e) == PN_TRANSPORT_CLOSED)
        watch.closed = 1;
    if (watch.fn)
        watch.fn(c, e, watch.ctx);
}

/* What the socket would write: everything Proton has for the peer. */
static void drain(iotgw_conn *c)
{
    if (watch.closed)
        return;
    pn_bytes_t wb;
    for (int writes = 0; (wb = pn_connection_driver_write_buffer(&c->driver)).size; writes++) {
        if (writes == MAX_WRITES)
            abort(); /* each write brings more output: the connection writes forever */
        keep_output(wb.start, wb.size);
        pn_connection_driver_write_done(&c->driver, wb.size);
        conn_process(c); /* as after a write; may free c */
        if (watch.closed)
            return;
    }
}

/* The loop's next turns, with no socket and no timer but the wakes'. */
static void serve_wakes(iotgw_conn *c)
{
    for (int turns = 0; !iotgw_list_empty(&loop->wakes); turns++) {
        if (turns == MAX_WAKE_TURNS)
            abort(); /* the gateway keeps waking its connection: a busy loop */
        iotgw_timer_stop(&loop->wake_timer);
        loop_serve_wakes(&loop->wake_timer, loop);
        drain(c);
    }
}

static size_t conns_alive(void)
{
    size_t n = 0;
    for (iotgw_list *i = loop->conns.next; i != &loop->conns; i = i->next)
        n++;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t before = conns_alive(); /* the upstream's, which never gets a socket */
    size_t step = size ? (size_t)(data[0] & 63) + 1 : 1;
    int ws = size && (data[0] & 128);
    iotgw_conn *c = conn_new(loop, ws ? IOTGW_TRANSPORT_WSS : IOTGW_TRANSPORT_AMQPS, 1, 0, 0);
    if (!c)
        abort();
    snprintf(c->peer, sizeof c->peer, "%s fuzz", ws ? "wss" : "amqps");
    if (size && (data[0] & 64)) /* as tls_peer.c notes a verified certificate's CN */
        snprintf(c->peer_cn, sizeof c->peer_cn, "fz2");
    memset(&watch, 0, sizeof watch);
    out.len = 0, out.overflow = 0;

    gw_amqp_accept(gw, c, ws);
    watch.fn = c->fn, watch.ctx = c->ctx; /* the handler gw_amqp_accept set, watched */
    iotgw_conn_set_handler(c, watched, watch.ctx);
    conn_process(c);
    drain(c);
    serve_wakes(c);

    for (size_t off = 1; off < size && !watch.closed;) {
        size_t n = size - off < step ? size - off : step;
        /* As much as Proton takes: a socket would stop being read when it takes nothing
         * (which it should not do while it reads at all). */
        size_t room = pn_connection_driver_read_buffer(&c->driver).size;
        if (!room && !pn_connection_driver_read_closed(&c->driver))
            abort(); /* Proton stopped taking input without closing: the transport would stall */
        if (!room)
            break; /* Proton reads no more (it failed or closed): the rest is dropped */
        n = n < room ? n : room;
        if (conn_on_bytes(c, data + off, n) < 0)
            abort(); /* only parking input returns -1, and nothing is parked */
        off += n;
        drain(c);
        serve_wakes(c);
    }
    if (!watch.closed) /* the device goes: its links, its sessions, the connection freed */
        conn_on_socket_gone(c, NULL, IOTGW_COND_IO, "the fuzz input ended");
    if (!watch.closed)
        abort(); /* the connection outlived its socket */
    serve_wakes(NULL);
    check_output();

    if (!iotgw_list_empty(&gw->sessions))
        abort(); /* a session outlived its connection */
    if (!iotgw_list_empty(&gw->amqp_conns))
        abort(); /* a connection record outlived its connection */
    if (conns_alive() != before)
        abort(); /* the transport kept the connection */
    return 0;
}
