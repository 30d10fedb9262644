/* Emulator benchmark: MQTT telemetry ingest over TLS. The hub runs on the main thread's
 * event loop (its MQTT-over-TLS listener on 127.0.0.1); a client thread opens one TLS
 * connection per device with OpenSSL (non-blocking sockets and poll), CONNECTs each with
 * its SAS token, then publishes telemetry pipelined, up to a window of unacknowledged
 * QoS 1 PUBLISHes per connection, and counts the PUBACKs. Then the same number of QoS 0
 * PUBLISHes, fenced by one QoS 1 PUBLISH per connection. It prints figures only.
 *
 * The emulator's CPU per message is its thread's alone (CLOCK_THREAD_CPUTIME_ID on the
 * main thread, read around each send phase); the client's thread is measured the same
 * way. The telemetry stream's retention is set to hold every message sent, so nothing is
 * evicted while it runs (BENCH_MQTT_RETENTION=default: the emulator's default, which
 * evicts the oldest past 100,000 messages, as bench_emulator runs it).
 *   BENCH_MQTT_DEVICES (100), BENCH_MQTT_WINDOW (100 per connection),
 *   BENCH_MESSAGES (200000 per phase), BENCH_SECONDS (120: then it prints what it has
 *   and exits 1) */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "codecs/mqtt.h"
#include "codecs/sas.h"
#include "emulator/hub.h"
#include "tests/common/clock_env.h"

#define PAYLOAD     "{\"temperature\":21.5,\"humidity\":48.5,\"door\":\"open\",\"ts\":1764000000}"
#define OUT_CAP     (64 * 1024)
#define KEEP_ALIVE  300
#define LOOP_TICKMS 2

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
} mconn;

typedef struct phase {
    int ran, complete;
    uint64_t sent, acked;
    double wall_s, client_cpu_s, hub_cpu_s;
    uint64_t hub_stored;
} phase;

static struct {
    int port, devices, window;
    uint64_t messages;
    double deadline;
    char ca[512];
    char **tokens;
    /* results, read by the main thread once the client thread has ended */
    int connected, failed;
    double connect_s;
    char first_failure[768];
    phase qos1, qos0;
    int timed_out, closing;
} b;

/* The client thread asks the hub's thread to read its clocks: marks 1..4 are the start
 * and end of the QoS 1 and the QoS 0 phase. */
static atomic_int mark_want, mark_done, client_done;
static double hub_cpu_at[5];
static uint64_t hub_stored_at[5];
static uint64_t acked_total;

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The connection is of no more use: count it, and keep the first reason. */
static void fail(mconn *c, const char *why, const char *detail)
{
    if (c->state == FAILED)
        return;
    c->state = FAILED;
    if (b.closing) { /* after DISCONNECT the emulator closes: expected */
        ERR_clear_error();
        return;
    }
    b.failed++;
    char tls[160] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, tls, sizeof tls);
    if (!b.first_failure[0])
        snprintf(b.first_failure, sizeof b.first_failure, "d%d: %s%s%s%s%s", c->dev, why, detail ? " " : "",
                 detail ? detail : "", *tls ? ": " : "", tls);
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
    p.u.publish.payload = (iotgw_mqtt_bytes){(const uint8_t *)PAYLOAD, sizeof PAYLOAD - 1};
    if (qos) {
        if (++c->next_id == 0)
            c->next_id = 1;
        p.u.publish.packet_id = c->next_id;
    }
    if (queue(c, &p))
        return -1;
    if (qos)
        c->inflight++;
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
            while (c->to_send && (c->qos == 0 || c->inflight < b.window) &&
                   OUT_CAP - c->out_len > sizeof c->topic + sizeof PAYLOAD + 16 && !queue_publish(c, c->qos))
                c->to_send--;
            if (!c->to_send && c->fence == 1 &&
                OUT_CAP - c->out_len > sizeof c->topic + sizeof PAYLOAD + 16 && !queue_publish(c, 1))
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
            b.connected++;
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
        acked_total++;
        return;
    }
    fail(c, "unexpected packet from the emulator:", iotgw_mqtt_type_name(p->type));
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
                 e == SSL_ERROR_ZERO_RETURN ? "the emulator closed the connection (TLS close_notify)"
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
                fail(c, "undecodable MQTT from the emulator:", diag.text);
                return;
            }
            on_packet(c, &p);
        }
        if (c->state == FAILED)
            return;
    }
}

/* ------------------------------------------------------------------ connections */

static int start_conn(SSL_CTX *ctx, mconn *c, int dev)
{
    c->dev = dev;
    c->fd = -1;
    snprintf(c->topic, sizeof c->topic, "devices/d%d/messages/events/%%24.ct=application%%2Fjson&k=v", dev);
    iotgw_mqtt_decoder_init(&c->dec, IOTGW_MQTT_CLIENT, 1 << 20);
    c->out = malloc(OUT_CAP);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (!c->out || c->fd < 0) {
        fail(c, "socket:", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)b.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) && errno != EINPROGRESS) {
        fail(c, "connect:", strerror(errno));
        return -1;
    }
    c->ssl = SSL_new(ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd) || !SSL_set_tlsext_host_name(c->ssl, "localhost") ||
        !SSL_set1_host(c->ssl, "localhost")) {
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
    char user[96];
    const char *token = b.tokens[c->dev];
    snprintf(user, sizeof user, "localhost/d%d/?api-version=2021-04-12", c->dev);
    iotgw_mqtt_packet p = {.type = IOTGW_MQTT_CONNECT};
    iotgw_mqtt_connect *k = &p.u.connect;
    char id[32];
    snprintf(id, sizeof id, "d%d", c->dev);
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

/* Ask the hub's thread to read its clocks, and wait until it has. */
static int mark(double until)
{
    int want = atomic_fetch_add(&mark_want, 1) + 1;
    while (atomic_load(&mark_done) < want) {
        if (now_s() > until)
            return -1;
        nanosleep(&(struct timespec){0, 50000}, NULL);
    }
    return 0;
}

static void run_phase(mconn *cs, struct pollfd *pfd, int n, int qos, phase *ph)
{
    uint64_t acked0 = acked_total;
    int failed0 = b.failed;
    for (int i = 0; i < n; i++) {
        mconn *c = &cs[i];
        c->to_send = c->share = b.messages / (uint64_t)n + ((uint64_t)i < b.messages % (uint64_t)n);
        c->qos = qos;
        c->fence = qos ? 0 : 1;
        c->kick = 1;
        if (c->state == ONLINE)
            ph->sent += c->to_send;
    }
    if (mark(b.deadline))
        return;
    ph->ran = 1;
    double t0 = now_s(), cpu0 = thread_cpu_s();
    int rc = pump(cs, pfd, n, all_acked, b.deadline);
    ph->wall_s = now_s() - t0;
    ph->client_cpu_s = thread_cpu_s() - cpu0;
    ph->acked = acked_total - acked0;
    if (!qos) { /* a connection's QoS 0 messages count once its fence is acknowledged */
        ph->acked = 0;
        for (int i = 0; i < n; i++)
            ph->acked += cs[i].fence == 3 ? cs[i].share : 0;
    }
    ph->complete = !rc && b.failed == failed0 && ph->acked == ph->sent;
    mark(b.deadline + 2); /* its clocks, even past the deadline */
}

static void *client_main(void *arg)
{
    (void)arg;
    int n = b.devices, started = 0;
    mconn *cs = calloc((size_t)n, sizeof *cs);
    struct pollfd *pfd = calloc((size_t)n, sizeof *pfd);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!cs || !pfd || !ctx || !SSL_CTX_load_verify_locations(ctx, b.ca, NULL) ||
        !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        snprintf(b.first_failure, sizeof b.first_failure, "client setup failed (CA %s)", b.ca);
        b.failed = n;
        goto out;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

    double t0 = now_s();
    for (; started < n; started++)
        start_conn(ctx, &cs[started], started);
    int rc = pump(cs, pfd, n, all_connected, b.deadline);
    b.connect_s = now_s() - t0;
    if (rc)
        b.timed_out = 1;
    if (!rc && b.connected) {
        run_phase(cs, pfd, n, 1, &b.qos1);
        if (!b.qos1.complete && now_s() > b.deadline)
            b.timed_out = 1;
    }
    if (!b.timed_out && b.connected) {
        run_phase(cs, pfd, n, 0, &b.qos0);
        if (!b.qos0.complete && now_s() > b.deadline)
            b.timed_out = 1;
    }

    /* end each session as a device does: DISCONNECT, close_notify, close */
    b.closing = 1;
    for (int i = 0; i < n; i++)
        if (cs[i].state == ONLINE) {
            iotgw_mqtt_packet p = {.type = IOTGW_MQTT_DISCONNECT};
            cs[i].to_send = 0, cs[i].fence = 0;
            if (!queue(&cs[i], &p))
                cs[i].kick = 1;
        }
    double grace = now_s() + 2;
    pump(cs, pfd, n, all_flushed, grace < b.deadline + 2 ? grace : b.deadline + 2);
out:
    for (int i = 0; i < started; i++) {
        if (cs[i].ssl) {
            if (cs[i].state == ONLINE)
                SSL_shutdown(cs[i].ssl);
            SSL_free(cs[i].ssl);
        }
        if (cs[i].fd >= 0)
            close(cs[i].fd);
        iotgw_mqtt_decoder_free(&cs[i].dec);
        free(cs[i].out);
    }
    free(cs);
    free(pfd);
    SSL_CTX_free(ctx);
    atomic_store(&client_done, 1);
    return NULL;
}

/* ------------------------------------------------------------------ the hub's thread */

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "bench_emulator_mqtt: still running well past BENCH_SECONDS: giving up\n";
    if (write(2, msg, sizeof msg - 1) < 0)
        _exit(3);
    _exit(3);
}

static void print_phase(const char *name, const phase *ph, int qos)
{
    if (!ph->ran) {
        printf("%s: not run\n", name);
        return;
    }
    printf("%s: %" PRIu64 " of %" PRIu64
           " messages (%zu-byte payload) from %d devices on %d MQTT/TLS connections",
           name, ph->acked, ph->sent, sizeof PAYLOAD - 1, b.connected, b.connected);
    if (qos)
        printf(", window %d: %.2f s, %.0f msgs/s PUBACKed", b.window, ph->wall_s,
               ph->wall_s > 0 ? (double)ph->acked / ph->wall_s : 0);
    else
        printf(", then one QoS 1 fence per connection: %.2f s, %.0f msgs/s (all sent, fences PUBACKed)",
               ph->wall_s, ph->wall_s > 0 ? (double)ph->acked / ph->wall_s : 0);
    printf("; emulator stored %" PRIu64 "%s\n", ph->hub_stored, ph->complete ? "" : " (INCOMPLETE)");
    double per = ph->acked ? 1e6 / (double)ph->acked : 0;
    printf("  CPU: emulator's thread alone %.2f us/msg (%.2f s), client thread %.2f us/msg (%.2f s)\n",
           ph->hub_cpu_s * per, ph->hub_cpu_s, ph->client_cpu_s * per, ph->client_cpu_s);
}

int main(void)
{
    const char *certs = getenv("IOTGW_TEST_CERTS");
    if (!certs) {
        fprintf(stderr, "bench_emulator_mqtt: set IOTGW_TEST_CERTS (make bench does)\n");
        return 1;
    }
    b.devices = env_int("BENCH_MQTT_DEVICES", 100);
    b.window = env_int("BENCH_MQTT_WINDOW", 100);
    if (b.window > 65535)
        b.window = 65535; /* distinct packet identifiers in flight */
    b.messages = (uint64_t)env_int("BENCH_MESSAGES", 200000);
    int seconds = env_int("BENCH_SECONDS", 120);
    double start = now_s();
    b.deadline = start + seconds;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)seconds + 30);

    char cert[512], key[512];
    snprintf(cert, sizeof cert, "%s/server.pem", certs);
    snprintf(key, sizeof key, "%s/server.key", certs);
    snprintf(b.ca, sizeof b.ca, "%s/ca.pem", certs);

    emu_registry *reg = emu_registry_new();
    b.tokens = calloc((size_t)b.devices, sizeof *b.tokens);
    for (int i = 0; i < b.devices; i++) {
        char id[32], res[64];
        emu_identity *d;
        snprintf(id, sizeof id, "d%d", i);
        snprintf(res, sizeof res, "localhost/devices/%s", id);
        if (emu_registry_add(reg, id, NULL, NULL, NULL, 1, &d, NULL) ||
            iotgw_sas_build(res, d->primary_key, (uint64_t)time(NULL) + 3600, NULL, &b.tokens[i], NULL))
            return 1;
    }
    iotgw_log_set_level(IOTGW_LOG_WARN); /* one line per connection would drown the figures */
    iotgw_diag diag = {0};
    iotgw_loop *loop = iotgw_loop_new(&(iotgw_loop_options){0}, &diag);
    emu_hub *hub;
    /* retention: every message of both phases and the fences, so none is evicted; the
     * limits are per partition (the total over the partitions), and the devices need not
     * spread evenly over them, so each may hold all */
    const char *rv = getenv("BENCH_MQTT_RETENTION");
    int keep_all = !rv || strcmp(rv, "default");
    size_t retain = keep_all ? (size_t)b.messages * 2 + (size_t)b.devices * 2 + 1000 : 0;
    emu_hub_options ho = {.hostname = "localhost",
                          .mqtts_addr = "127.0.0.1",
                          .cert_file = cert,
                          .key_file = key,
                          .retention_messages = retain * EMU_PARTITIONS_DEFAULT,
                          .retention_bytes = retain * EMU_PARTITIONS_DEFAULT * 4096};
    if (!loop || emu_hub_new(loop, reg, &ho, &hub, &diag)) {
        fprintf(stderr, "bench_emulator_mqtt: %s\n", diag.text);
        return 1;
    }
    b.port = emu_hub_mqtts_port(hub);
    emu_metrics *metrics = emu_hub_metrics(hub);

    pthread_t client;
    if (pthread_create(&client, NULL, client_main, NULL)) {
        fprintf(stderr, "bench_emulator_mqtt: pthread_create failed\n");
        return 1;
    }
    int done = 0;
    while (!atomic_load(&client_done)) {
        iotgw_loop_run(loop, LOOP_TICKMS);
        int want = atomic_load(&mark_want);
        while (done < want && done < 4) {
            done++;
            hub_cpu_at[done] = thread_cpu_s();
            hub_stored_at[done] = metrics->d2c_messages;
        }
        atomic_store(&mark_done, done);
    }
    /* let the hub see every connection close */
    for (double until = now_s() + 3; metrics->mqtt_conns_open[EMU_MQTT_TLS] && now_s() < until;)
        iotgw_loop_run(loop, 20);
    pthread_join(client, NULL);

    if (done >= 2) {
        b.qos1.hub_cpu_s = hub_cpu_at[2] - hub_cpu_at[1];
        b.qos1.hub_stored = hub_stored_at[2] - hub_stored_at[1];
    }
    if (done >= 4) {
        b.qos0.hub_cpu_s = hub_cpu_at[4] - hub_cpu_at[3];
        b.qos0.hub_stored = hub_stored_at[4] - hub_stored_at[3];
    }
    printf("connect: %d of %d devices connected (TCP, TLS, MQTT CONNECT with a SAS token, CONNACK 0), "
           "%d connections at once: %.2f s%s\n",
           b.connected, b.devices, b.devices, b.connect_s, b.connected < b.devices ? " (INCOMPLETE)" : "");
    print_phase("telemetry QoS 1", &b.qos1, 1);
    print_phase("telemetry QoS 0", &b.qos0, 0);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    size_t retained = emu_hub_stream_retained(hub);
    printf("  (hub on the main thread's event loop (%s), client on its own thread; the stream retains %zu of "
           "the %" PRIu64 " messages stored, %" PRIu64 " evicted (retention %s); peak RSS %ld MB; %" PRIu64
           " MQTT connections still open)\n",
           iotgw_loop_backend_name(loop), retained, metrics->d2c_messages, metrics->d2c_messages - retained,
           keep_all ? "set to hold them all" : "the emulator's default", ru.ru_maxrss / 1024,
           metrics->mqtt_conns_open[EMU_MQTT_TLS]);
    if (b.first_failure[0])
        printf("failures: %d connections failed; the first: %s\n", b.failed, b.first_failure);
    if (b.timed_out)
        printf("bench_emulator_mqtt: BENCH_SECONDS (%d s) passed: the figures above are what it had\n",
               seconds);
    int rc = b.timed_out || b.failed || b.connected < b.devices || !b.qos1.complete || !b.qos0.complete;

    emu_hub_free(hub);
    iotgw_loop_free(loop);
    emu_registry_free(reg);
    for (int i = 0; i < b.devices; i++)
        free(b.tokens[i]);
    free(b.tokens);
    alarm(0);
    return rc ? 1 : 0;
}
