/*
 * Transport throughput: 256-byte messages, client to server on one link, unsettled with
 * accepted dispositions, over
 *   - two Proton connection drivers pumped in memory (no sockets, no TLS): Proton's own
 *     ceiling on this machine;
 *   - loopback WSS through the transport (TLS, WebSocket framing, lws event loop);
 *   - loopback AMQPS through the transport (Proton's TLS over a raw socket).
 * The ratio WSS / in-memory tells how close the bridge gets to Proton's ceiling.
 * BENCH_MESSAGES (default 200000) sets the count; IOTGW_TEST_CERTS the certificates;
 * BENCH_ONLY=wss|amqps runs one socket case (for profiling).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <proton/connection_driver.h>
#include <proton/transport.h>

#include "tests/common/amqp_peer.h"
#include "transport/transport.h"
#include "tests/common/clock_env.h"

#define MSG_SIZE 256

static void peers(amqp_peer *client, amqp_peer *server, uint64_t n)
{
    memset(client, 0, sizeof *client);
    memset(server, 0, sizeof *server);
    client->n_sessions = 1, client->links_per_session = 1, client->per_link = n, client->msg_size = MSG_SIZE;
    server->is_server = 1, server->msg_size = MSG_SIZE;
}

static void dispatch(pn_connection_driver_t *d, amqp_peer *p)
{
    pn_event_t *e;
    while ((e = pn_connection_driver_next_event(d)))
        amqp_peer_on_event(p, e);
}

static size_t move_bytes(pn_connection_driver_t *from, pn_connection_driver_t *to)
{
    pn_bytes_t wb = pn_connection_driver_write_buffer(from);
    pn_rwbytes_t rb = pn_connection_driver_read_buffer(to);
    size_t n = wb.size < rb.size ? wb.size : rb.size;
    if (n) {
        memcpy(rb.start, wb.start, n);
        pn_connection_driver_read_done(to, n);
        pn_connection_driver_write_done(from, n);
    }
    return n;
}

static double in_memory(uint64_t n, amqp_peer *client, amqp_peer *server)
{
    peers(client, server, n);
    pn_connection_driver_t a, b;
    pn_connection_driver_init(&a, NULL, NULL);
    pn_connection_driver_init(&b, NULL, NULL);
    pn_transport_set_server(b.transport);
    double start = now_s();
    while (!(pn_connection_driver_finished(&a) && pn_connection_driver_finished(&b))) {
        dispatch(&a, client);
        dispatch(&b, server);
        size_t moved = move_bytes(&a, &b) + move_bytes(&b, &a);
        if (!moved && !pn_connection_driver_has_event(&a) && !pn_connection_driver_has_event(&b)) {
            if (client->transport_closed && server->transport_closed)
                break;
            if (pn_connection_driver_write_closed(&a) && !pn_connection_driver_read_closed(&b))
                pn_connection_driver_read_close(&b);
            if (pn_connection_driver_write_closed(&b) && !pn_connection_driver_read_closed(&a))
                pn_connection_driver_read_close(&a);
        }
    }
    double t = now_s() - start;
    dispatch(&a, client);
    dispatch(&b, server);
    pn_connection_driver_destroy(&a);
    pn_connection_driver_destroy(&b);
    return t;
}

static amqp_peer srv;

static void server_event(iotgw_conn *c, pn_event_t *e, void *ctx)
{
    (void)c;
    amqp_peer_on_event(ctx, e);
}

static void on_accept(iotgw_listener *l, iotgw_conn *c, void *ctx)
{
    (void)l;
    iotgw_conn_set_handler(c, server_event, ctx);
}

static double over_socket(iotgw_transport_kind kind, const char *certs, uint64_t n, amqp_peer *client)
{
    char cert[600], key[600], ca[600];
    snprintf(cert, sizeof cert, "%s/server.pem", certs);
    snprintf(key, sizeof key, "%s/server.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    peers(client, &srv, n);
    iotgw_diag d = {0};
    iotgw_loop *loop = iotgw_loop_new(NULL, &d);
    iotgw_listener *l = NULL;
    iotgw_listener_options lo = {.kind = kind,
                                 .address = "127.0.0.1",
                                 .tls = {.cert_file = cert, .key_file = key},
                                 .on_accept = on_accept,
                                 .ctx = &srv};
    if (!loop || iotgw_listener_new(loop, &lo, &l, &d)) {
        fprintf(stderr, "bench_transport: %s\n", d.text);
        exit(1);
    }
    iotgw_client_options co = {
        .kind = kind, .host = "localhost", .port = iotgw_listener_port(l), .tls = {.ca_file = ca}};
    iotgw_conn *c = NULL;
    double start = now_s();
    if (iotgw_conn_connect(loop, &co, server_event, client, &c, &d)) {
        fprintf(stderr, "bench_transport: %s\n", d.text);
        exit(1);
    }
    while (!client->transport_closed && now_s() - start < 300)
        iotgw_loop_run(loop, 100);
    double t = now_s() - start;
    if (client->cond_name[0])
        fprintf(stderr, "bench_transport: %s: %s\n", client->cond_name, client->cond_desc);
    iotgw_loop_free(loop);
    return t;
}

static void report(const char *name, uint64_t n, double t, const amqp_peer *server, double ceiling)
{
    double rate = (double)n / t;
    printf("%-44s %10.0f msgs/s  %7.1f MB/s  (%llu received in %.2f s)", name, rate, rate * MSG_SIZE / 1e6,
           (unsigned long long)server->received, t);
    if (ceiling > 0)
        printf("  %5.1f%% of in-memory", 100.0 * rate / ceiling);
    printf("\n");
}

int main(void)
{
    const char *certs = getenv("IOTGW_TEST_CERTS");
    uint64_t n = getenv("BENCH_MESSAGES") ? strtoull(getenv("BENCH_MESSAGES"), NULL, 10) : 200000;
    if (!certs) {
        fprintf(stderr, "bench_transport: set IOTGW_TEST_CERTS (make bench does)\n");
        return 1;
    }
    amqp_peer client, server;
    printf("iotgw transport benchmark: %llu messages of %d bytes, client to server, unsettled + accepted\n",
           (unsigned long long)n, MSG_SIZE);
    double t_mem = in_memory(n, &client, &server);
    double ceiling = (double)n / t_mem;
    report("Proton drivers pumped in memory (ceiling)", n, t_mem, &server, 0);
    const char *only = getenv("BENCH_ONLY"); /* "wss" or "amqps", for profiling */
    if (!only || !strcmp(only, "wss")) {
        double t_wss = over_socket(IOTGW_TRANSPORT_WSS, certs, n, &client);
        report("loopback WSS (TLS + WebSocket + lws loop)", n, t_wss, &srv, ceiling);
    }
    if (!only || !strcmp(only, "amqps")) {
        double t_amqps = over_socket(IOTGW_TRANSPORT_AMQPS, certs, n, &client);
        report("loopback AMQPS (Proton TLS + lws loop)", n, t_amqps, &srv, ceiling);
    }
    return srv.received == n ? 0 : 1;
}
