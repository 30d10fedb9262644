/* Emulator benchmark: the time to authorize 10,000 devices over 20 WSS connections
 * (CBS put-token each), and telemetry ingest msgs/s from 1,000 devices multiplexed on 2
 * WSS connections. Client and emulator share one process and one event loop (one
 * core), so the figures are a floor for the emulator alone.
 *   BENCH_DEVICES (10000), BENCH_AUTH_CONNS (20), BENCH_TEL_DEVICES (1000),
 *   BENCH_TEL_CONNS (2), BENCH_MESSAGES (200000), BENCH_WINDOW (2000 per connection) */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/session.h>
#include <proton/transport.h>

#include "codecs/cbs.h"
#include "codecs/sas.h"
#include "transport/amqp_map.h"
#include "emulator/hub.h"
#include "transport/messaging.h"
#include "tests/common/clock_env.h"

typedef struct client {
    iotgw_conn *conn;
    pn_session_t *ssn;
    pn_link_t *cbs_out, *cbs_in;
    int first, count; /* devices [first, first + count) */
    int next_token, authorized, failed;
    int telemetry; /* attach a telemetry sender per authorized device */
    pn_link_t **senders;
    int nsenders, next_sender, inflight, window;
} client;

static char **tokens;
static uint64_t messages_left, accepted, rejected;
static uint8_t *telemetry_buf;
static size_t telemetry_len;
static int closed_conns;

static void send_tokens(client *c)
{
    pn_message_t *m = pn_message();
    while (c->next_token < c->count && pn_link_credit(c->cbs_out) > 0) {
        int dev = c->first + c->next_token++;
        char audience[64];
        snprintf(audience, sizeof audience, "localhost/devices/d%d", dev);
        iotgw_cbs_put_token_request(m, (uint64_t)dev, audience, tokens[dev]);
        iotgw_link_send_message(c->cbs_out, m);
    }
    pn_message_free(m);
}

static void send_telemetry(client *c)
{
    for (int tries = 0; messages_left && c->inflight < c->window && tries < c->nsenders; tries++) {
        pn_link_t *l = c->senders[c->next_sender];
        c->next_sender = (c->next_sender + 1) % c->nsenders;
        if (pn_link_credit(l) <= 0)
            continue;
        iotgw_link_send(l, NULL, 0, telemetry_buf, telemetry_len);
        messages_left--;
        c->inflight++;
        tries = -1;
    }
}

static void on_event(iotgw_conn *ic, pn_event_t *e, void *ctx)
{
    client *c = ctx;
    switch (pn_event_type(e)) {
    case PN_LINK_FLOW:
        if (pn_event_link(e) == c->cbs_out)
            send_tokens(c);
        else if (c->nsenders == c->count)
            send_telemetry(c);
        break;
    case PN_DELIVERY: {
        pn_delivery_t *d = pn_event_delivery(e);
        pn_link_t *l = pn_delivery_link(d);
        if (l == c->cbs_in) {
            uint8_t *buf;
            size_t len;
            iotgw_delivery_take(d, 1 << 20, &buf, &len);
            pn_message_t *m = pn_message();
            int64_t status = 0;
            if (!pn_message_decode(m, (const char *)buf, len))
                iotgw_map_int(pn_message_properties(m), "status-code", &status);
            uint64_t dev = pn_message_get_correlation_id(m).u.as_ulong;
            pn_message_free(m);
            free(buf);
            iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);
            if (status != 200) {
                c->failed++;
                break;
            }
            c->authorized++;
            if (c->telemetry) {
                char addr[64], name[32];
                snprintf(addr, sizeof addr, "/devices/d%" PRIu64 "/messages/events", dev);
                snprintf(name, sizeof name, "tel-%" PRIu64, dev);
                pn_link_t *s = pn_sender(c->ssn, name);
                pn_terminus_set_address(pn_link_target(s), addr);
                pn_link_open(s);
                c->senders[c->nsenders++] = s;
            }
            if (pn_link_credit(c->cbs_in) < 100)
                pn_link_flow(c->cbs_in, 1000);
        } else if (l == c->cbs_out) {
            if (pn_delivery_remote_state(d))
                pn_delivery_settle(d);
        } else if (pn_link_is_sender(l) && pn_delivery_remote_state(d)) {
            if (pn_delivery_remote_state(d) == PN_ACCEPTED)
                accepted++;
            else
                rejected++;
            pn_delivery_settle(d);
            c->inflight--;
            send_telemetry(c);
        }
        break;
    }
    case PN_TRANSPORT_CLOSED: {
        pn_condition_t *cond = pn_transport_condition(iotgw_conn_transport(ic));
        if (pn_condition_is_set(cond))
            fprintf(stderr, "bench: connection closed: %s: %s\n", pn_condition_get_name(cond),
                    pn_condition_get_description(cond));
        c->conn = NULL;
        closed_conns++;
        break;
    }
    default: break;
    }
}

static void start_client(iotgw_loop *loop, int port, const char *ca, client *c)
{
    iotgw_client_options o = {
        .kind = IOTGW_TRANSPORT_WSS, .host = "localhost", .port = port, .tls = {.ca_file = ca}};
    iotgw_diag diag = {0};
    if (iotgw_conn_connect(loop, &o, on_event, c, &c->conn, &diag)) {
        fprintf(stderr, "bench: connect: %s\n", diag.text);
        exit(1);
    }
    pn_connection_t *pc = iotgw_conn_connection(c->conn);
    pn_connection_set_container(pc, "bench");
    pn_connection_open(pc);
    c->ssn = pn_session(pc);
    pn_session_open(c->ssn);
    c->cbs_out = pn_sender(c->ssn, "cbs-out");
    pn_terminus_set_address(pn_link_target(c->cbs_out), "$cbs");
    pn_link_open(c->cbs_out);
    c->cbs_in = pn_receiver(c->ssn, "cbs-in");
    pn_terminus_set_address(pn_link_source(c->cbs_in), "$cbs");
    pn_link_open(c->cbs_in);
    pn_link_flow(c->cbs_in, 1000);
    if (c->telemetry)
        c->senders = calloc((size_t)c->count, sizeof *c->senders);
}

static int run_until(iotgw_loop *loop, int (*done)(client *, int), client *cs, int n, double limit_s)
{
    double end = now_s() + limit_s;
    while (!done(cs, n)) {
        if (now_s() > end || closed_conns)
            return -1;
        iotgw_loop_run(loop, 100);
    }
    return 0;
}

static int all_authorized(client *cs, int n)
{
    for (int i = 0; i < n; i++)
        if (cs[i].authorized + cs[i].failed < cs[i].count)
            return 0;
    return 1;
}

static int all_attached(client *cs, int n)
{
    for (int i = 0; i < n; i++) {
        if (cs[i].nsenders < cs[i].count)
            return 0;
        for (int j = 0; j < cs[i].nsenders; j++)
            if (pn_link_state(cs[i].senders[j]) & PN_REMOTE_UNINIT)
                return 0;
    }
    return 1;
}

static int all_sent(client *cs, int n)
{
    (void)cs, (void)n;
    return !messages_left && accepted + rejected == (uint64_t)env_int("BENCH_MESSAGES", 200000);
}

static void close_all(iotgw_loop *loop, client *cs, int n)
{
    for (int i = 0; i < n; i++)
        if (cs[i].conn)
            iotgw_conn_close(cs[i].conn, NULL, NULL);
    for (int k = 0; k < 100 && closed_conns < n; k++)
        iotgw_loop_run(loop, 50);
    closed_conns = 0;
}

int main(void)
{
    const char *certs = getenv("IOTGW_TEST_CERTS");
    if (!certs) {
        fprintf(stderr, "bench_emulator: set IOTGW_TEST_CERTS (make bench does)\n");
        return 1;
    }
    int devices = env_int("BENCH_DEVICES", 10000), auth_conns = env_int("BENCH_AUTH_CONNS", 20);
    int tel_devices = env_int("BENCH_TEL_DEVICES", 1000), tel_conns = env_int("BENCH_TEL_CONNS", 2);
    int max_dev = devices > tel_devices ? devices : tel_devices;
    char cert[512], key[512], ca[512];
    snprintf(cert, sizeof cert, "%s/server.pem", certs);
    snprintf(key, sizeof key, "%s/server.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);

    emu_registry *reg = emu_registry_new();
    tokens = calloc((size_t)max_dev, sizeof *tokens);
    for (int i = 0; i < max_dev; i++) {
        char id[32], res[64];
        emu_identity *d;
        snprintf(id, sizeof id, "d%d", i);
        snprintf(res, sizeof res, "localhost/devices/%s", id);
        if (emu_registry_add(reg, id, NULL, NULL, NULL, 1, &d, NULL) ||
            iotgw_sas_build(res, d->primary_key, (uint64_t)time(NULL) + 3600, NULL, &tokens[i], NULL))
            return 1;
    }
    iotgw_log_set_level(IOTGW_LOG_WARN); /* one line per device would drown the figures */
    iotgw_diag diag = {0};
    iotgw_loop *loop = iotgw_loop_new(&(iotgw_loop_options){0}, &diag);
    emu_hub *hub;
    emu_hub_options ho = {.hostname = "localhost",
                          .listen_addr = "127.0.0.1",
                          .cert_file = cert,
                          .key_file = key,
                          .max_tokens = 100000};
    if (!loop || emu_hub_new(loop, reg, &ho, &hub, &diag)) {
        fprintf(stderr, "bench_emulator: %s\n", diag.text);
        return 1;
    }
    int port = emu_hub_wss_port(hub);

    /* 1. authorization */
    client *cs = calloc((size_t)auth_conns, sizeof *cs);
    double t0 = now_s();
    for (int i = 0; i < auth_conns; i++) {
        cs[i].first = i * devices / auth_conns;
        cs[i].count = (i + 1) * devices / auth_conns - cs[i].first;
        start_client(loop, port, ca, &cs[i]);
    }
    int rc = run_until(loop, all_authorized, cs, auth_conns, 300);
    double t1 = now_s();
    int ok = 0, bad = 0;
    for (int i = 0; i < auth_conns; i++)
        ok += cs[i].authorized, bad += cs[i].failed;
    printf("authorize: %d devices over %d WSS connections (TLS, upgrade, AMQP open, CBS put-token each): "
           "%.2f s, "
           "%.0f devices/s, %d refused%s\n",
           ok, auth_conns, t1 - t0, ok / (t1 - t0), bad, rc ? " (INCOMPLETE)" : "");
    close_all(loop, cs, auth_conns);
    free(cs);

    /* 2. telemetry ingest */
    int total = env_int("BENCH_MESSAGES", 200000), window = env_int("BENCH_WINDOW", 2000);
    messages_left = (uint64_t)total;
    pn_message_t *m = pn_message();
    const char *body = "{\"alarm\":\"door-open\",\"zone\":3,\"severity\":2,\"ts\":\"2026-11-22T10:00:00Z\"}";
    pn_data_put_binary(pn_message_body(m), pn_bytes(strlen(body), body));
    pn_message_set_inferred(m, true);
    iotgw_message_encode(m, &telemetry_buf, &telemetry_len);
    pn_message_free(m);
    cs = calloc((size_t)tel_conns, sizeof *cs);
    for (int i = 0; i < tel_conns; i++) {
        cs[i].first = i * tel_devices / tel_conns;
        cs[i].count = (i + 1) * tel_devices / tel_conns - cs[i].first;
        cs[i].telemetry = 1;
        cs[i].window = window;
        start_client(loop, port, ca, &cs[i]);
    }
    rc = run_until(loop, all_attached, cs, tel_conns, 300);
    if (rc) {
        fprintf(stderr, "bench_emulator: telemetry links did not attach\n");
        return 1;
    }
    t0 = now_s();
    for (int i = 0; i < tel_conns; i++) {
        send_telemetry(&cs[i]);
        iotgw_conn_wake(cs[i].conn);
    }
    rc = run_until(loop, all_sent, cs, tel_conns, 300);
    t1 = now_s();
    printf("telemetry: %" PRIu64 " messages (%zu bytes each) from %d devices on %d WSS connections: %.2f s, "
           "%.0f msgs/s accepted, %" PRIu64 " rejected%s\n",
           accepted, telemetry_len, tel_devices, tel_conns, t1 - t0, accepted / (t1 - t0), rejected,
           rc ? " (INCOMPLETE)" : "");
    close_all(loop, cs, tel_conns);
    for (int i = 0; i < tel_conns; i++)
        free(cs[i].senders);
    free(cs);
    emu_hub_free(hub);
    iotgw_loop_free(loop);
    emu_registry_free(reg);
    for (int i = 0; i < max_dev; i++)
        free(tokens[i]);
    free(tokens);
    free(telemetry_buf);
    return rc ? 1 : 0;
}
