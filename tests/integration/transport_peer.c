/*
 * transport-peer: the transport's server or client role as a process, for interop
 * tests driven from Python and Node.
 *
 *   transport-peer serve CERTDIR MESSAGES [MAX_OUTPUT [SIZE]]
 *       WSS and AMQPS listeners on 127.0.0.1 (free ports), printed as
 *       "LISTENING wss=PORT amqps=PORT"; every connection gets the scripted server peer
 *       (tests/common/amqp_peer.h): it accepts whatever arrives and sends MESSAGES
 *       messages of 64 bytes (or SIZE) on each link the client opens to receive. Other HTTP paths
 *       on the WSS port answer {"method":..,"path":..,"query":..,"bodyLength":..}; paths
 *       starting /slow are answered 500 ms later ("GONE path" if the client is seen to
 *       leave first).
 *       Each closed connection prints "CLOSED received=N sent=N bad=N disorder=N condition=NAME".
 *       MAX_OUTPUT sets the listeners' max_output (bytes). Runs until stdin closes.
 *   transport-peer connect wss|amqps HOST PORT CAFILE MESSAGES [IDLE_MS [PROXY]]
 *       One client connection with the scripted client peer (one session, one link
 *       each way, MESSAGES each); prints "RESULT received=N settled=N condition=NAME
 *       description=TEXT" and exits 0 on a clean close, 1 otherwise. IDLE_MS 0 keeps the
 *       default; PROXY is an HTTPS proxy "host:port" (WSS only).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/common/amqp_peer.h"
#include "transport/transport.h"

#define MAX_CONNS 256

static amqp_peer server_peers[MAX_CONNS];
static int n_server_peers;
static uint64_t per_link;
static size_t msg_size = 64;

static void server_event(iotgw_conn *c, pn_event_t *e, void *ctx)
{
    (void)c;
    amqp_peer *p = ctx;
    amqp_peer_on_event(p, e);
    if (pn_event_type(e) == PN_TRANSPORT_CLOSED) {
        printf("CLOSED received=%llu sent=%llu bad=%llu disorder=%llu condition=%s\n",
               (unsigned long long)p->received, (unsigned long long)p->sent,
               (unsigned long long)p->bad_payloads, (unsigned long long)p->out_of_order,
               p->cond_name[0] ? p->cond_name : "none");
        fflush(stdout);
    }
}

static void on_accept(iotgw_listener *l, iotgw_conn *c, void *ctx)
{
    (void)l, (void)ctx;
    amqp_peer *p = &server_peers[n_server_peers++ % MAX_CONNS];
    memset(p, 0, sizeof *p);
    p->is_server = 1;
    p->per_link = per_link;
    p->amqp_messages = 1;
    p->msg_size = msg_size;
    iotgw_conn_set_handler(c, server_event, p);
}

static void answer(iotgw_http_request *req);

/* A request answered later, as a method call would be. */
typedef struct slow_request {
    iotgw_timer timer;
    iotgw_http_request *req;
} slow_request;

static void slow_gone(iotgw_http_request *req, void *ctx)
{
    slow_request *s = ctx;
    iotgw_timer_stop(&s->timer);
    free(s);
    printf("GONE %s\n", iotgw_http_path(req));
}

static void slow_answer(iotgw_timer *t, void *ctx)
{
    (void)t;
    slow_request *s = ctx;
    iotgw_http_request *req = s->req;
    free(s);
    iotgw_http_set_context(req, NULL, NULL);
    answer(req);
}

static void on_http(iotgw_http_request *req, void *ctx)
{
    iotgw_loop *loop = ctx;
    if (!strncmp(iotgw_http_path(req), "/slow", 5)) { /* answered later, as a method call would be */
        slow_request *s = calloc(1, sizeof *s);
        if (!s) {
            answer(req);
            return;
        }
        s->req = req;
        iotgw_timer_init(loop, &s->timer, slow_answer, s);
        iotgw_timer_start(&s->timer, 500, 0);
        iotgw_http_set_context(req, s, slow_gone);
        return;
    }
    answer(req);
}

static void answer(iotgw_http_request *req)
{
    size_t len;
    iotgw_http_body(req, &len);
    char body[1024];
    const char *ua = iotgw_http_header(req, "user-agent");
    snprintf(body, sizeof body,
             "{\"method\":\"%s\",\"path\":\"%s\",\"query\":\"%s\",\"bodyLength\":%zu,\"userAgent\":\"%s\"}",
             iotgw_http_method(req), iotgw_http_path(req), iotgw_http_query(req), len, ua ? ua : "");
    iotgw_http_respond(req, 200, "application/json", "X-Iotgw-Test: yes\r\n", body, strlen(body));
}

static int serve(const char *certs, size_t max_output)
{
    char cert[600], key[600];
    snprintf(cert, sizeof cert, "%s/server.pem", certs);
    snprintf(key, sizeof key, "%s/server.key", certs);
    iotgw_diag d = {0};
    iotgw_loop *loop = iotgw_loop_new(NULL, &d);
    iotgw_listener *wss = NULL, *amqps = NULL;
    iotgw_listener_options lo = {.kind = IOTGW_TRANSPORT_WSS,
                                 .address = "127.0.0.1",
                                 .tls = {.cert_file = cert, .key_file = key},
                                 .on_accept = on_accept,
                                 .on_http = on_http,
                                 .max_http_body = 4096,
                                 .max_output = max_output};
    lo.ctx = loop;
    if (!loop || iotgw_listener_new(loop, &lo, &wss, &d)) {
        fprintf(stderr, "transport-peer: %s\n", d.text);
        return 1;
    }
    lo.kind = IOTGW_TRANSPORT_AMQPS;
    if (iotgw_listener_new(loop, &lo, &amqps, &d)) {
        fprintf(stderr, "transport-peer: %s\n", d.text);
        return 1;
    }
    printf("LISTENING wss=%d amqps=%d\n", iotgw_listener_port(wss), iotgw_listener_port(amqps));
    fflush(stdout);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    for (;;) {
        iotgw_loop_run(loop, 50);
        char b;
        if (read(0, &b, 1) == 0)
            break; /* stdin closed: the test is done */
    }
    iotgw_loop_free(loop);
    return 0;
}

static void client_event(iotgw_conn *c, pn_event_t *e, void *ctx)
{
    (void)c;
    amqp_peer_on_event(ctx, e);
}

static int connect_once(int argc, char **argv)
{
    if (argc < 7)
        return 2;
    static amqp_peer p;
    uint64_t n = strtoull(argv[6], NULL, 10);
    p = (amqp_peer){.n_sessions = 1,
                    .links_per_session = 1,
                    .per_link = n,
                    .msg_size = 64,
                    .expect_received = n,
                    .amqp_messages = 1};
    iotgw_client_options co = {
        .kind = !strcmp(argv[2], "wss") ? IOTGW_TRANSPORT_WSS : IOTGW_TRANSPORT_AMQPS,
        .host = argv[3],
        .port = atoi(argv[4]),
        .tls = {.ca_file = argv[5]},
        .idle_timeout_ms = argc > 7 ? (uint32_t)atoi(argv[7]) : 0,
        .proxy = argc > 8 ? argv[8] : NULL,
    };
    iotgw_diag d = {0};
    iotgw_loop *loop = iotgw_loop_new(NULL, &d);
    iotgw_conn *c = NULL;
    if (!loop || iotgw_conn_connect(loop, &co, client_event, &p, &c, &d)) {
        printf("RESULT received=0 settled=0 condition=connect description=%s\n", d.text);
        return 1;
    }
    while (!p.transport_closed)
        iotgw_loop_run(loop, 100);
    printf("RESULT received=%llu settled=%llu condition=%s description=%s\n", (unsigned long long)p.received,
           (unsigned long long)p.settled, p.cond_name[0] ? p.cond_name : "none", p.cond_desc);
    iotgw_loop_free(loop);
    return p.cond_name[0] ? 1 : 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 4 && !strcmp(argv[1], "serve")) {
        per_link = strtoull(argv[3], NULL, 10);
        if (argc > 5)
            msg_size = strtoull(argv[5], NULL, 10);
        return serve(argv[2], argc > 4 ? strtoull(argv[4], NULL, 10) : 0);
    }
    if (argc >= 7 && !strcmp(argv[1], "connect"))
        return connect_once(argc, argv);
    fprintf(stderr, "usage: transport-peer serve CERTDIR MESSAGES [MAX_OUTPUT [SIZE]]\n"
                    "       transport-peer connect wss|amqps HOST PORT CAFILE MESSAGES [IDLE_MS [PROXY]]\n");
    return 2;
}
