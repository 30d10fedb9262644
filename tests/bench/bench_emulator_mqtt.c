/* Emulator benchmark: MQTT telemetry ingest over TLS. The hub runs on the main thread's
 * event loop (its MQTT-over-TLS listener on 127.0.0.1); a client thread runs the devices
 * (tests/bench/mqtt_load.h: one TLS connection each, CONNECT with its SAS token, then
 * telemetry pipelined, up to a window of unacknowledged QoS 1 PUBLISHes per connection,
 * the PUBACKs counted). Then the same number of QoS 0
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
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

#include "codecs/sas.h"
#include "emulator/hub.h"
#include "tests/bench/mqtt_load.h"
#include "tests/common/clock_env.h"

#define LOOP_TICKMS 2

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
    char **ids, **tokens;
    size_t payload_len;
    /* results, read by the main thread once the client thread has ended */
    int connected, failed;
    double connect_s;
    char first_failure[768];
    phase qos1, qos0;
    int timed_out;
} b;

/* The client thread asks the hub's thread to read its clocks: marks 1..4 are the start
 * and end of the QoS 1 and the QoS 0 phase. */
static atomic_int mark_want, mark_done, client_done;
static double hub_cpu_at[5];
static uint64_t hub_stored_at[5];

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

static void run_phase(mqtt_fleet *f, int qos, phase *ph)
{
    uint64_t acked0 = mqtt_fleet_acked(f);
    int failed0 = mqtt_fleet_failed(f);
    if (mark(b.deadline))
        return;
    ph->ran = 1;
    double t0 = now_s(), cpu0 = thread_cpu_s();
    int rc = mqtt_fleet_send(f, qos, b.messages, b.deadline);
    ph->wall_s = now_s() - t0;
    ph->client_cpu_s = thread_cpu_s() - cpu0;
    ph->sent = mqtt_fleet_assigned(f);
    ph->acked = mqtt_fleet_acked(f) - acked0;
    ph->complete = !rc && mqtt_fleet_failed(f) == failed0 && ph->acked == ph->sent;
    mark(b.deadline + 2); /* its clocks, even past the deadline */
}

static void *client_main(void *arg)
{
    (void)arg;
    mqtt_fleet_options o = {.port = b.port,
                            .ca_file = b.ca,
                            .devices = b.devices,
                            .ids = b.ids,
                            .tokens = b.tokens,
                            .window = b.window};
    mqtt_fleet *f = mqtt_fleet_new(&o);
    if (!f) {
        b.failed = b.devices;
        atomic_store(&client_done, 1);
        return NULL;
    }
    double t0 = now_s();
    int rc = mqtt_fleet_connect(f, b.deadline);
    b.connect_s = now_s() - t0;
    if (rc)
        b.timed_out = 1;
    if (!rc && mqtt_fleet_connected(f)) {
        run_phase(f, 1, &b.qos1);
        if (!b.qos1.complete && now_s() > b.deadline)
            b.timed_out = 1;
    }
    if (!b.timed_out && mqtt_fleet_connected(f)) {
        run_phase(f, 0, &b.qos0);
        if (!b.qos0.complete && now_s() > b.deadline)
            b.timed_out = 1;
    }
    /* end each session as a device does: DISCONNECT, close_notify, close */
    double grace = now_s() + 2;
    mqtt_fleet_disconnect(f, grace < b.deadline + 2 ? grace : b.deadline + 2);
    b.connected = mqtt_fleet_connected(f);
    b.failed = mqtt_fleet_failed(f);
    b.payload_len = mqtt_fleet_payload_len(f);
    snprintf(b.first_failure, sizeof b.first_failure, "%s", mqtt_fleet_first_failure(f));
    mqtt_fleet_free(f);
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
           name, ph->acked, ph->sent, b.payload_len, b.connected, b.connected);
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
    b.ids = calloc((size_t)b.devices, sizeof *b.ids);
    for (int i = 0; i < b.devices; i++) {
        char id[32], res[64];
        emu_identity *d;
        snprintf(id, sizeof id, "d%d", i);
        snprintf(res, sizeof res, "localhost/devices/%s", id);
        if (!(b.ids[i] = strdup(id)) || emu_registry_add(reg, id, NULL, NULL, NULL, 1, &d, NULL) ||
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
        free(b.tokens[i]), free(b.ids[i]);
    free(b.tokens);
    free(b.ids);
    alarm(0);
    return rc ? 1 : 0;
}
