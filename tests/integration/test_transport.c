/* Transport over real sockets on loopback: WSS and AMQPS, client and server roles of
 * our own code talking to each other. Interop with other implementations is in
 * transport_interop.py. Certificates come from tests/certs/make-test-certs.sh. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/sasl.h>

#include "tests/common/amqp_peer.h"
#include "tests/unit/check_main.h"
#include "transport/transport.h"

static char certs[512];
static iotgw_loop *loop;

static const char *cert(const char *name)
{
    static char paths[8][600];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 600, "%s/%s", certs, name);
    return p;
}

typedef struct server {
    iotgw_listener *listener;
    amqp_peer peer;
    int accepted;
    char client_cn[128]; /* of the last accepted connection, once open */
} server;

/* File scope: connections still deliver events to these while the loop is freed. */
static server srv;
static amqp_peer client, good;
static const char *client_cert, *client_key; /* for the next start_client, if set */

static void setup(void)
{
    const char *dir = getenv("IOTGW_TEST_CERTS");
    ck_assert_msg(dir != NULL, "IOTGW_TEST_CERTS must name the test certificate folder");
    snprintf(certs, sizeof certs, "%s", dir);
    memset(&srv, 0, sizeof srv);
    memset(&client, 0, sizeof client);
    memset(&good, 0, sizeof good);
    client_cert = client_key = NULL;
    iotgw_diag d;
    loop = iotgw_loop_new(NULL, &d);
    ck_assert_ptr_nonnull(loop);
}

static void teardown(void)
{
    iotgw_loop_free(loop);
    loop = NULL;
}

static void server_event(iotgw_conn *c, pn_event_t *e, void *ctx)
{
    server *s = ctx;
    if (pn_event_type(e) == PN_CONNECTION_REMOTE_OPEN && iotgw_conn_peer_cn(c))
        snprintf(s->client_cn, sizeof s->client_cn, "%s", iotgw_conn_peer_cn(c));
    amqp_peer_on_event(&s->peer, e);
}

static void server_accept(iotgw_listener *l, iotgw_conn *c, void *ctx)
{
    (void)l;
    ((server *)ctx)->accepted++;
    iotgw_conn_set_handler(c, server_event, ctx);
}

static void client_event(iotgw_conn *c, pn_event_t *e, void *ctx)
{
    (void)c;
    amqp_peer_on_event(ctx, e);
}

static void start_server(server *s, iotgw_transport_kind kind, const char *cert_name, uint32_t split_seed)
{
    char key_name[64];
    snprintf(key_name, sizeof key_name, "%.*s.key", (int)(strlen(cert_name) - 4), cert_name);
    iotgw_listener_options lo = {
        .kind = kind,
        .address = "127.0.0.1",
        .port = 0,
        .tls = {.cert_file = cert(cert_name), .key_file = cert(key_name)},
        .on_accept = server_accept,
        .ctx = s,
        .split_seed = split_seed,
    };
    iotgw_diag d = {0};
    ck_assert_msg(iotgw_listener_new(loop, &lo, &s->listener, &d) == 0, "listener: %s", d.text);
    s->peer.is_server = 1;
}

/* Connect with co; the test fails at once if even starting to connect fails. */
static void connect_ok(const iotgw_client_options *co, iotgw_conn_event_fn fn, amqp_peer *p)
{
    iotgw_conn *c = NULL;
    iotgw_diag d = {0};
    ck_assert_msg(iotgw_conn_connect(loop, co, fn, p, &c, &d) == 0, "connect: %s", d.text);
}

static void start_client(amqp_peer *p, iotgw_transport_kind kind, int port, const char *ca, const char *path,
                         uint32_t split_seed)
{
    iotgw_client_options co = {
        .kind = kind,
        .host = "localhost",
        .port = port,
        .path = path,
        .tls = {.ca_file = cert(ca), .cert_file = client_cert, .key_file = client_key},
        .split_seed = split_seed,
    };
    connect_ok(&co, client_event, p);
}

static void run_until_closed(amqp_peer *p, int seconds)
{
    int64_t end = iotgw_loop_now_ms(loop) + seconds * 1000;
    while (!p->transport_closed && iotgw_loop_now_ms(loop) < end)
        iotgw_loop_run(loop, 100);
    ck_assert_msg(p->transport_closed, "client still open after %d s (sent %llu, received %llu)", seconds,
                  (unsigned long long)p->sent, (unsigned long long)p->received);
}

/* 100,000 messages each way on one link pair, frames cut at random sizes both ways. */
static void bulk_both_ways(iotgw_transport_kind kind)
{
    server *s = &srv;
    start_server(s, kind, "server.pem", 7);
    s->peer.per_link = 100000;
    s->peer.msg_size = 256;
    client = (amqp_peer){.n_sessions = 1,
                         .links_per_session = 1,
                         .per_link = 100000,
                         .msg_size = 256,
                         .expect_received = 100000};
    start_client(&client, kind, iotgw_listener_port(s->listener), "ca.pem", NULL, 11);
    run_until_closed(&client, 120);
    ck_assert_str_eq(client.cond_name, ""); /* a clean close */
    ck_assert_uint_eq(client.received, 100000);
    ck_assert_uint_eq(client.settled, 100000);
    ck_assert_uint_eq(s->peer.received, 100000);
    ck_assert_uint_eq(client.bad_payloads + s->peer.bad_payloads, 0);
    ck_assert_uint_eq(client.out_of_order + s->peer.out_of_order, 0);
    ck_assert_int_eq(s->accepted, 1);
}

START_TEST(wss_100k_messages_each_way_with_random_frame_splits)
{
    bulk_both_ways(IOTGW_TRANSPORT_WSS);
}
END_TEST

START_TEST(amqps_100k_messages_each_way_with_random_splits)
{
    bulk_both_ways(IOTGW_TRANSPORT_AMQPS);
}
END_TEST

static void many_links(iotgw_transport_kind kind)
{
    server *s = &srv;
    start_server(s, kind, "server.pem", 0);
    s->peer.per_link = 20;
    s->peer.msg_size = 100;
    client = (amqp_peer){.n_sessions = 10,
                         .links_per_session = 10,
                         .per_link = 20,
                         .msg_size = 100,
                         .expect_received = 10 * 10 * 20};
    start_client(&client, kind, iotgw_listener_port(s->listener), "ca.pem", NULL, 0);
    run_until_closed(&client, 60);
    ck_assert_str_eq(client.cond_name, "");
    ck_assert_int_eq(s->peer.links_opened, 200);
    ck_assert_uint_eq(client.received, 2000);
    ck_assert_uint_eq(s->peer.received, 2000);
    ck_assert_uint_eq(client.out_of_order + s->peer.out_of_order + client.bad_payloads + s->peer.bad_payloads,
                      0);
}

START_TEST(wss_ten_sessions_of_ten_link_pairs)
{
    many_links(IOTGW_TRANSPORT_WSS);
}
END_TEST

START_TEST(amqps_ten_sessions_of_ten_link_pairs)
{
    many_links(IOTGW_TRANSPORT_AMQPS);
}
END_TEST

/* A client that must fail: returns its condition. */
static void expect_failure(iotgw_transport_kind kind, const char *server_cert, const char *ca,
                           const char *path, const char *cond, const char *desc_part)
{
    server *s = &srv;
    start_server(s, kind, server_cert, 0);
    client = (amqp_peer){.n_sessions = 1, .links_per_session = 1, .per_link = 1, .msg_size = 10};
    start_client(&client, kind, iotgw_listener_port(s->listener), ca, path, 0);
    run_until_closed(&client, 20);
    ck_assert_msg(!strcmp(client.cond_name, cond), "condition '%s' (%s), expected %s", client.cond_name,
                  client.cond_desc, cond);
    ck_assert_msg(strstr(client.cond_desc, desc_part) != NULL, "description '%s' lacks '%s'",
                  client.cond_desc, desc_part);
    ck_assert_int_eq(client.remote_opened, 0);

    /* and the listener still serves a good client */
    if (!strcmp(server_cert, "server.pem")) {
        good = (amqp_peer){
            .n_sessions = 1, .links_per_session = 1, .per_link = 5, .msg_size = 10, .expect_received = 5};
        s->peer.per_link = 5;
        s->peer.msg_size = 10;
        start_client(&good, kind, iotgw_listener_port(s->listener), "ca.pem", NULL, 0);
        run_until_closed(&good, 20);
        ck_assert_uint_eq(good.received, 5);
    }
}

/* The texts of certificate refusals, the same on WSS and AMQPS (transport/tls_reason.c);
 * only AMQPS knows the host there to name it. */
#define UNTRUSTED_CA                                                                                         \
    "TLS handshake failed: the server's certificate is not signed by a trusted CA (OpenSSL: unable to get "  \
    "local issuer certificate)"
#define EXPIRED                                                                                              \
    "TLS handshake failed: the server's certificate has expired (OpenSSL: certificate has expired)"
#define SELF_SIGNED                                                                                          \
    "TLS handshake failed: the server's certificate is self-signed and not trusted (OpenSSL: self-signed "   \
    "certificate)"

START_TEST(wss_unknown_ca)
{
    expect_failure(IOTGW_TRANSPORT_WSS, "server.pem", "other-ca.pem", NULL, IOTGW_COND_TLS, UNTRUSTED_CA);
}
END_TEST

START_TEST(wss_wrong_hostname)
{
    expect_failure(IOTGW_TRANSPORT_WSS, "wrongname.pem", "ca.pem", NULL, IOTGW_COND_TLS,
                   "TLS handshake failed: the server's certificate is for another host (OpenSSL: hostname "
                   "mismatch)");
}
END_TEST

START_TEST(wss_expired_certificate)
{
    expect_failure(IOTGW_TRANSPORT_WSS, "expired.pem", "ca.pem", NULL, IOTGW_COND_TLS, EXPIRED);
}
END_TEST

/* other-ca.pem is a CA's own certificate: self-signed, and not the client's CA */
START_TEST(wss_self_signed_certificate)
{
    expect_failure(IOTGW_TRANSPORT_WSS, "other-ca.pem", "ca.pem", NULL, IOTGW_COND_TLS, SELF_SIGNED);
}
END_TEST

START_TEST(wss_wrong_path_is_http_404)
{
    expect_failure(IOTGW_TRANSPORT_WSS, "server.pem", "ca.pem", "/not/the/websocket", IOTGW_COND_WEBSOCKET,
                   "WebSocket upgrade refused with HTTP status 404");
}
END_TEST

/* Proton's TLS layer (AMQPS) itself says only "certificate verify failed". */
START_TEST(amqps_unknown_ca)
{
    expect_failure(IOTGW_TRANSPORT_AMQPS, "server.pem", "other-ca.pem", NULL, IOTGW_COND_TLS, UNTRUSTED_CA);
}
END_TEST

START_TEST(amqps_wrong_hostname)
{
    expect_failure(IOTGW_TRANSPORT_AMQPS, "wrongname.pem", "ca.pem", NULL, IOTGW_COND_TLS,
                   "TLS handshake failed: the server's certificate is not for localhost (OpenSSL: hostname "
                   "mismatch)");
}
END_TEST

START_TEST(amqps_expired_certificate)
{
    expect_failure(IOTGW_TRANSPORT_AMQPS, "expired.pem", "ca.pem", NULL, IOTGW_COND_TLS, EXPIRED);
}
END_TEST

START_TEST(amqps_self_signed_certificate)
{
    expect_failure(IOTGW_TRANSPORT_AMQPS, "other-ca.pem", "ca.pem", NULL, IOTGW_COND_TLS, SELF_SIGNED);
}
END_TEST

START_TEST(connection_refused_is_reported)
{
    client = (amqp_peer){.n_sessions = 1, .links_per_session = 1};
    /* port 1 on loopback: nothing listens there */
    iotgw_client_options co = {
        .kind = IOTGW_TRANSPORT_WSS, .host = "127.0.0.1", .port = 1, .tls = {.ca_file = cert("ca.pem")}};
    iotgw_conn *c = NULL;
    iotgw_diag d = {0};
    /* lws may refuse at once (an error return) or report it through the handler */
    if (iotgw_conn_connect(loop, &co, client_event, &client, &c, &d) != 0) {
        ck_assert_msg(strstr(d.text, "could not connect to 127.0.0.1:1") != NULL, "diag: %s", d.text);
        ck_assert_int_eq(client.transport_closed, 0); /* and then the handler hears nothing */
    } else {
        run_until_closed(&client, 20);
        ck_assert_str_eq(client.cond_name, IOTGW_COND_CONNECT);
        ck_assert_int_eq(client.remote_opened, 0);
    }
}
END_TEST

/* The test server listening on kind with the test CA: clients must present a certificate it signed. */
static server *listen_with_client_ca(iotgw_transport_kind kind)
{
    server *s = &srv;
    iotgw_listener_options lo = {
        .kind = kind,
        .address = "127.0.0.1",
        .tls = {.cert_file = cert("server.pem"), .key_file = cert("server.key"), .ca_file = cert("ca.pem")},
        .on_accept = server_accept,
        .ctx = s,
    };
    iotgw_diag d = {0};
    ck_assert_msg(iotgw_listener_new(loop, &lo, &s->listener, &d) == 0, "listener: %s", d.text);
    s->peer.is_server = 1;
    return s;
}

/* A listener with a CA requires client certificates and tells the owner whose it is. */
static void client_certificate(iotgw_transport_kind kind)
{
    server *s = listen_with_client_ca(kind);
    s->peer.per_link = 3;
    s->peer.msg_size = 16;

    client = (amqp_peer){
        .n_sessions = 1, .links_per_session = 1, .per_link = 3, .msg_size = 16, .expect_received = 3};
    client_cert = cert("client.pem");
    client_key = cert("client.key");
    start_client(&client, kind, iotgw_listener_port(s->listener), "ca.pem", NULL, 0);
    run_until_closed(&client, 20);
    ck_assert_str_eq(client.cond_name, "");
    ck_assert_uint_eq(client.received, 3);
    ck_assert_str_eq(s->client_cn, "test-device");

    good = (amqp_peer){.n_sessions = 1, .links_per_session = 1, .per_link = 1, .msg_size = 16};
    client_cert = client_key = NULL; /* no certificate: refused */
    start_client(&good, kind, iotgw_listener_port(s->listener), "ca.pem", NULL, 0);
    run_until_closed(&good, 20);
    ck_assert_msg(good.cond_name[0] != '\0', "a client without a certificate got in");
    ck_assert_int_eq(good.remote_opened, 0);

    /* certificates naming the same device that the CA did not sign, or signed for
     * another purpose or expired: refused at the handshake, no name reaches the owner */
    static const char *forged[] = {"forged-self", "forged-other-ca", "client-expired", "client-server-only"};
    for (size_t i = 0; i < sizeof forged / sizeof *forged; i++) {
        char pem[64], key[64];
        snprintf(pem, sizeof pem, "%s.pem", forged[i]);
        snprintf(key, sizeof key, "%s.key", forged[i]);
        s->client_cn[0] = '\0';
        amqp_peer forger = {.n_sessions = 1, .links_per_session = 1, .per_link = 1, .msg_size = 16};
        client_cert = cert(pem);
        client_key = cert(key);
        start_client(&forger, kind, iotgw_listener_port(s->listener), "ca.pem", NULL, 0);
        run_until_closed(&forger, 20);
        ck_assert_msg(forger.cond_name[0] != '\0', "%s: a forged certificate got in", forged[i]);
        ck_assert_int_eq(forger.remote_opened, 0);
        ck_assert_str_eq(s->client_cn, "");
    }
    client_cert = client_key = NULL;
}

START_TEST(wss_listener_requires_client_certificate)
{
    client_certificate(IOTGW_TRANSPORT_WSS);
}
END_TEST

START_TEST(amqps_listener_requires_client_certificate)
{
    client_certificate(IOTGW_TRANSPORT_AMQPS);
}
END_TEST

/* An AMQPS listener that refuses a client's certificate tells its owner why (the
 * emulator logs it with the connection's close). */
static void amqps_client_certificate_refused(const char *name, const char *why)
{
    server *s = listen_with_client_ca(IOTGW_TRANSPORT_AMQPS);
    char key[64] = "";
    if (name)
        snprintf(key, sizeof key, "%.*s.key", (int)(strlen(name) - 4), name);
    client = (amqp_peer){.n_sessions = 1, .links_per_session = 1, .per_link = 1, .msg_size = 16};
    client_cert = name ? cert(name) : NULL;
    client_key = name ? cert(key) : NULL;
    start_client(&client, IOTGW_TRANSPORT_AMQPS, iotgw_listener_port(s->listener), "ca.pem", NULL, 0);
    run_until_closed(&client, 20);
    run_until_closed(&s->peer, 20);
    ck_assert_int_eq(s->accepted, 1);
    ck_assert_str_eq(s->peer.cond_name, IOTGW_COND_TLS);
    ck_assert_str_eq(s->peer.cond_desc, why);
    /* the client hears the alert ("tlsv1 alert unknown ca" and so on), or, when the
     * socket's end reaches it first (seen on the libuv backend), only the close */
    ck_assert_msg(!strcmp(client.cond_name, IOTGW_COND_TLS) || !strcmp(client.cond_name, IOTGW_COND_IO),
                  "a refused client: %s", client.cond_name);
    ck_assert_int_eq(client.remote_opened, 0);
}

START_TEST(amqps_listener_says_why_a_client_certificate_was_refused)
{
    amqps_client_certificate_refused("expired.pem",
                                     "TLS handshake failed: the client's certificate has expired "
                                     "(OpenSSL: certificate has expired)");
    iotgw_listener_free(srv.listener);
    memset(&srv, 0, sizeof srv);
    amqps_client_certificate_refused("other-ca.pem",
                                     "TLS handshake failed: the client's certificate is "
                                     "self-signed and not trusted (OpenSSL: self-signed certificate)");
    iotgw_listener_free(srv.listener);
    memset(&srv, 0, sizeof srv);
    amqps_client_certificate_refused(NULL, "TLS handshake failed: the client sent no certificate");
}
END_TEST

/* iotgw_loop_run(loop, t) must return within about t even with nothing to do: lws could
 * otherwise wait for its next timer, up to 30 s. The bound is loose on purpose. */
START_TEST(idle_loop_returns_in_time)
{
    int64_t end = iotgw_loop_now_ms(loop) + 1500, longest = 0;
    while (iotgw_loop_now_ms(loop) < end) {
        int64_t t = iotgw_loop_now_ms(loop);
        iotgw_loop_run(loop, 50);
        t = iotgw_loop_now_ms(loop) - t;
        longest = t > longest ? t : longest;
    }
    ck_assert_msg(longest < 2000, "one iotgw_loop_run(loop, 50) took %lld ms", (long long)longest);
}
END_TEST

/* The options' backend wins, then IOTGW_EVENT_LOOP, then the program's default (poll
 * when it names none); an unknown name is refused with a message that says what is
 * allowed. */
START_TEST(loop_backend_is_chosen_by_option_then_environment)
{
    const char *env = getenv("IOTGW_EVENT_LOOP");
    ck_assert_str_eq(iotgw_loop_backend_name(loop), env && !strcmp(env, "libuv") ? "libuv" : "poll");
    iotgw_loop *other = iotgw_loop_new(&(iotgw_loop_options){.backend = IOTGW_LOOP_POLL}, NULL);
    ck_assert_str_eq(iotgw_loop_backend_name(other), "poll");
    iotgw_loop_free(other);
    other = iotgw_loop_new(&(iotgw_loop_options){.backend = IOTGW_LOOP_LIBUV}, NULL);
    ck_assert_str_eq(iotgw_loop_backend_name(other), "libuv");
    iotgw_loop_free(other);
    iotgw_loop_backend b;
    const char *why;
    iotgw_loop_options prefers_libuv = {.default_backend = IOTGW_LOOP_LIBUV};
    ck_assert_int_eq(iotgw_loop_backend_choose(&prefers_libuv, &b, &why, NULL), 0);
    ck_assert_int_eq(b, env && !strcmp(env, "poll") ? IOTGW_LOOP_POLL : IOTGW_LOOP_LIBUV);
    ck_assert_str_eq(why, env && *env ? "IOTGW_EVENT_LOOP" : "the default");
    iotgw_loop_options forced = {.backend = IOTGW_LOOP_POLL, .default_backend = IOTGW_LOOP_LIBUV};
    ck_assert_int_eq(iotgw_loop_backend_choose(&forced, &b, &why, NULL), 0);
    ck_assert_int_eq(b, IOTGW_LOOP_POLL);
    ck_assert_str_eq(why, "the options");
    char *saved = env ? strdup(env) : NULL;
    setenv("IOTGW_EVENT_LOOP", "epoll", 1);
    iotgw_diag d = {0};
    ck_assert_ptr_null(iotgw_loop_new(NULL, &d));
    ck_assert_str_eq(d.text, "IOTGW_EVENT_LOOP must be libuv or poll, not \"epoll\"");
    if (saved)
        setenv("IOTGW_EVENT_LOOP", saved, 1);
    else
        unsetenv("IOTGW_EVENT_LOOP");
    free(saved);
}
END_TEST

/* tls.insecure connects to a server whose certificate names another host, and says so
 * loudly: the warning must be on stderr. */
static void insecure_connects(iotgw_transport_kind kind)
{
    server *s = &srv;
    start_server(s, kind, "wrongname.pem", 0);
    s->peer.per_link = 2;
    s->peer.msg_size = 16;
    client = (amqp_peer){
        .n_sessions = 1, .links_per_session = 1, .per_link = 2, .msg_size = 16, .expect_received = 2};
    iotgw_client_options co = {
        .kind = kind, .host = "localhost", .port = iotgw_listener_port(s->listener), .tls = {.insecure = 1}};
    FILE *log = tmpfile();
    ck_assert_ptr_nonnull(log);
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(log), 2);
    connect_ok(&co, client_event, &client);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char text[1024] = "";
    rewind(log);
    size_t n = fread(text, 1, sizeof text - 1, log);
    text[n] = '\0';
    fclose(log);
    ck_assert_msg(strstr(text, "WARNING: TLS verification is OFF for") != NULL, "stderr had: %s", text);
    run_until_closed(&client, 20);
    ck_assert_str_eq(client.cond_name, "");
    ck_assert_uint_eq(client.received, 2);
}

START_TEST(wss_insecure_option_skips_verification)
{
    insecure_connects(IOTGW_TRANSPORT_WSS);
}
END_TEST

START_TEST(amqps_insecure_option_skips_verification)
{
    insecure_connects(IOTGW_TRANSPORT_AMQPS);
}
END_TEST

/* A server that accepts TCP (the kernel does, from the backlog) and never answers:
 * the client gives up at its connect deadline with a clear reason. */
static void silent_server(iotgw_transport_kind kind)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    getsockname(fd, (struct sockaddr *)&a, &alen);
    client = (amqp_peer){.n_sessions = 1, .links_per_session = 1, .per_link = 1, .msg_size = 16};
    iotgw_client_options co = {.kind = kind,
                               .host = "localhost",
                               .port = ntohs(a.sin_port),
                               .tls = {.ca_file = cert("ca.pem")},
                               .connect_timeout_ms = 700};
    int64_t start = iotgw_loop_now_ms(loop);
    connect_ok(&co, client_event, &client);
    run_until_closed(&client, 20);
    ck_assert_str_eq(client.cond_name, IOTGW_COND_CONNECT);
    ck_assert_msg(strstr(client.cond_desc, "within 700 ms") != NULL, "description: %s", client.cond_desc);
    ck_assert_int_lt(iotgw_loop_now_ms(loop) - start, 10000);
    close(fd);
}

START_TEST(wss_silent_server_hits_connect_deadline)
{
    silent_server(IOTGW_TRANSPORT_WSS);
}
END_TEST

START_TEST(amqps_silent_server_hits_connect_deadline)
{
    silent_server(IOTGW_TRANSPORT_AMQPS);
}
END_TEST

/* Without a CA file the client trusts the system store, which does not hold the test CA. */
static void system_store_refuses_test_ca(iotgw_transport_kind kind, const char *why)
{
    server *s = &srv;
    start_server(s, kind, "server.pem", 0);
    client = (amqp_peer){.n_sessions = 1, .links_per_session = 1, .per_link = 1, .msg_size = 16};
    iotgw_client_options co = {.kind = kind, .host = "localhost", .port = iotgw_listener_port(s->listener)};
    connect_ok(&co, client_event, &client);
    run_until_closed(&client, 20);
    ck_assert_str_eq(client.cond_name, IOTGW_COND_TLS);
    ck_assert_msg(strstr(client.cond_desc, why) != NULL, "description: %s", client.cond_desc);
}

START_TEST(wss_default_trust_is_the_system_store)
{
    system_store_refuses_test_ca(IOTGW_TRANSPORT_WSS, UNTRUSTED_CA);
}
END_TEST

START_TEST(amqps_default_trust_is_the_system_store)
{
    system_store_refuses_test_ca(IOTGW_TRANSPORT_AMQPS, UNTRUSTED_CA);
}
END_TEST

/* The server closes with an AMQP condition; the client's owner sees that condition on
 * the connection and a clean transport close. */
static char remote_cond[128], remote_desc[256];

static void refusing_server_event(iotgw_conn *c, pn_event_t *e, void *ctx)
{
    (void)ctx;
    if (pn_event_type(e) == PN_CONNECTION_REMOTE_OPEN) {
        pn_connection_open(iotgw_conn_connection(c));
        iotgw_conn_close(c, "amqp:unauthorized-access", "token for another device");
    }
}

static void refusing_accept(iotgw_listener *l, iotgw_conn *c, void *ctx)
{
    (void)l;
    iotgw_conn_set_handler(c, refusing_server_event, ctx);
}

static void watching_client_event(iotgw_conn *c, pn_event_t *e, void *ctx)
{
    if (pn_event_type(e) == PN_CONNECTION_REMOTE_CLOSE) {
        pn_condition_t *cond = pn_connection_remote_condition(iotgw_conn_connection(c));
        snprintf(remote_cond, sizeof remote_cond, "%s", pn_condition_get_name(cond));
        snprintf(remote_desc, sizeof remote_desc, "%s", pn_condition_get_description(cond));
    }
    amqp_peer_on_event(ctx, e);
}

static void close_with_condition(iotgw_transport_kind kind)
{
    iotgw_listener *l = NULL;
    iotgw_listener_options lo = {.kind = kind,
                                 .address = "127.0.0.1",
                                 .tls = {.cert_file = cert("server.pem"), .key_file = cert("server.key")},
                                 .on_accept = refusing_accept};
    iotgw_diag d = {0};
    ck_assert_msg(iotgw_listener_new(loop, &lo, &l, &d) == 0, "listener: %s", d.text);
    remote_cond[0] = remote_desc[0] = '\0';
    client = (amqp_peer){.n_sessions = 1, .links_per_session = 1, .per_link = 1, .msg_size = 16};
    iotgw_client_options co = {.kind = kind,
                               .host = "localhost",
                               .port = iotgw_listener_port(l),
                               .tls = {.ca_file = cert("ca.pem")}};
    connect_ok(&co, watching_client_event, &client);
    run_until_closed(&client, 20);
    ck_assert_str_eq(remote_cond, "amqp:unauthorized-access");
    ck_assert_str_eq(remote_desc, "token for another device");
    ck_assert_str_eq(client.cond_name, ""); /* the transport itself closed cleanly */
}

START_TEST(wss_close_condition_reaches_the_peer)
{
    close_with_condition(IOTGW_TRANSPORT_WSS);
}
END_TEST

START_TEST(amqps_close_condition_reaches_the_peer)
{
    close_with_condition(IOTGW_TRANSPORT_AMQPS);
}
END_TEST

/* A client with a SASL layer (as the Java SDK) reaches a listener, which negotiates
 * ANONYMOUS; without the option the same listener sees no SASL at all. */
static char server_mech[32];

static void sasl_watching_server_event(iotgw_conn *c, pn_event_t *e, void *ctx)
{
    if (pn_event_type(e) == PN_CONNECTION_REMOTE_OPEN) {
        pn_sasl_t *sasl = pn_sasl(iotgw_conn_transport(c));
        const char *mech = pn_sasl_get_mech(sasl);
        snprintf(server_mech, sizeof server_mech, "%s", mech ? mech : "none");
    }
    server_event(c, e, ctx);
}

static void sasl_watching_accept(iotgw_listener *l, iotgw_conn *c, void *ctx)
{
    (void)l;
    iotgw_conn_set_handler(c, sasl_watching_server_event, ctx);
}

static void sasl_anonymous(iotgw_transport_kind kind, int with_sasl, const char *expect_mech)
{
    server *s = &srv;
    iotgw_listener_options lo = {.kind = kind,
                                 .address = "127.0.0.1",
                                 .tls = {.cert_file = cert("server.pem"), .key_file = cert("server.key")},
                                 .on_accept = sasl_watching_accept,
                                 .ctx = s};
    iotgw_diag d = {0};
    ck_assert_msg(iotgw_listener_new(loop, &lo, &s->listener, &d) == 0, "listener: %s", d.text);
    s->peer = (amqp_peer){.is_server = 1, .per_link = 2, .msg_size = 16};
    client = (amqp_peer){
        .n_sessions = 1, .links_per_session = 1, .per_link = 2, .msg_size = 16, .expect_received = 2};
    server_mech[0] = '\0';
    iotgw_client_options co = {.kind = kind,
                               .host = "localhost",
                               .port = iotgw_listener_port(s->listener),
                               .tls = {.ca_file = cert("ca.pem")},
                               .sasl_anonymous = with_sasl};
    connect_ok(&co, client_event, &client);
    run_until_closed(&client, 20);
    ck_assert_str_eq(client.cond_name, "");
    ck_assert_uint_eq(client.received, 2);
    ck_assert_str_eq(server_mech, expect_mech);
}

START_TEST(wss_client_sasl_anonymous)
{
    sasl_anonymous(IOTGW_TRANSPORT_WSS, 1, "ANONYMOUS");
}
END_TEST

START_TEST(amqps_client_sasl_anonymous)
{
    sasl_anonymous(IOTGW_TRANSPORT_AMQPS, 1, "ANONYMOUS");
}
END_TEST

START_TEST(amqps_client_bare_header)
{
    sasl_anonymous(IOTGW_TRANSPORT_AMQPS, 0, "none");
}
END_TEST

/* Each case gets a fresh loop (the fixture) and a generous timeout. */
static TCase *add_case(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    suite_add_tcase(s, tc);
    return tc;
}

Suite *suite_under_test(void)
{
    Suite *s = suite_create("transport");
    TCase *tc = add_case(s, "loopback");
    tcase_add_test(tc, idle_loop_returns_in_time);
    tcase_add_test(tc, loop_backend_is_chosen_by_option_then_environment);
    tcase_add_test(tc, wss_100k_messages_each_way_with_random_frame_splits);
    tcase_add_test(tc, amqps_100k_messages_each_way_with_random_splits);
    tcase_add_test(tc, wss_ten_sessions_of_ten_link_pairs);
    tcase_add_test(tc, amqps_ten_sessions_of_ten_link_pairs);
    tcase_add_test(tc, wss_close_condition_reaches_the_peer);
    tcase_add_test(tc, wss_client_sasl_anonymous);
    tcase_add_test(tc, amqps_client_sasl_anonymous);
    tcase_add_test(tc, amqps_client_bare_header);
    tcase_add_test(tc, amqps_close_condition_reaches_the_peer);

    TCase *wf = add_case(s, "wss-failures");
    tcase_add_test(wf, wss_unknown_ca);
    tcase_add_test(wf, wss_wrong_hostname);
    tcase_add_test(wf, wss_expired_certificate);
    tcase_add_test(wf, wss_self_signed_certificate);
    tcase_add_test(wf, wss_wrong_path_is_http_404);
    tcase_add_test(wf, connection_refused_is_reported);
    tcase_add_test(wf, wss_silent_server_hits_connect_deadline);
    tcase_add_test(wf, wss_default_trust_is_the_system_store);

    TCase *af = add_case(s, "amqps-failures");
    tcase_add_test(af, amqps_unknown_ca);
    tcase_add_test(af, amqps_wrong_hostname);
    tcase_add_test(af, amqps_expired_certificate);
    tcase_add_test(af, amqps_self_signed_certificate);
    tcase_add_test(af, amqps_silent_server_hits_connect_deadline);
    tcase_add_test(af, amqps_default_trust_is_the_system_store);

    TCase *cc = add_case(s, "client-certificates");
    tcase_add_test(cc, wss_listener_requires_client_certificate);
    tcase_add_test(cc, amqps_listener_requires_client_certificate);
    tcase_add_test(cc, amqps_listener_says_why_a_client_certificate_was_refused);
    tcase_add_test(cc, wss_insecure_option_skips_verification);
    tcase_add_test(cc, amqps_insecure_option_skips_verification);
    return s;
}
