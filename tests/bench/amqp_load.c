/* amqp-load: devices on IoT Hub's AMQP against any endpoint that serves it on 127.0.0.1:
 * the gateway's devices.amqp (or the emulator's --amqps). The client is the gateway's own
 * upstream (gateway/upstream.h), which speaks to an AMQP endpoint exactly as a device SDK
 * multiplexing devices does: a CBS put-token per device with a SAS token signed by its key,
 * its telemetry link, messages pipelined up to a window. Each device of the fleet file ("ID
 * KEY" lines, as iotgw-devsim and iotgw read them) sends telemetry as fast as its window
 * allows for the duration, --devices-per-connection of them on each connection (1: one
 * connection per device, as the Node and Python SDKs). The last line printed is JSON, as
 * mqtt-load's: {"connected", "failed", "acked", "nacked", "acked_per_s", "ack_ms_p50",
 * "ack_ms_p99", "connect_s", "payload_bytes"}.
 *
 *   amqp-load --port P --ca FILE --fleet FILE [--hub HOST] [--devices N] [--window W]
 *             [--devices-per-connection K] [--duration S] [--payload-size B] */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <proton/message.h>

#include "gateway/upstream.h"
#include "transport/fdlimit.h"
#include "tests/common/clock_env.h"
#include "transport/log.h"
#include "transport/messaging.h"

#define MAX_SAMPLES (4u << 20)

typedef struct load {
    iotgw_loop *loop;
    uint8_t *msg;
    size_t len;
    unsigned window;
    int sending;
    int connected, failed;
    uint64_t acked, nacked, in_flight;
    double *samples; /* ack latencies, ms */
    size_t nsamples;
} load;

static int64_t now_us(void)
{
    return (int64_t)(now_s() * 1e6);
}

static void send_one(load *l, iotgw_upstream_device *dev)
{
    if (!iotgw_upstream_send(dev, l->msg, l->len, (void *)(uintptr_t)now_us()))
        l->in_flight++;
}

static void on_state(iotgw_upstream_device *dev, iotgw_device_state state, void *ctx)
{
    load *l = ctx;
    int *seen = iotgw_upstream_device_context(dev);
    if (state == IOTGW_DEVICE_ONLINE && !*seen) {
        *seen = 1;
        l->connected++;
        for (unsigned i = 0; i < l->window && l->sending; i++)
            send_one(l, dev);
    } else if (state == IOTGW_DEVICE_FAILED && !*seen) {
        *seen = -1;
        l->failed++;
    }
}

static void on_outcome(iotgw_upstream_device *dev, void *msg_ctx, iotgw_outcome outcome, const char *cond,
                       const char *description, void *ctx)
{
    load *l = ctx;
    (void)cond, (void)description;
    l->in_flight--;
    if (outcome == IOTGW_OUTCOME_ACCEPTED) {
        l->acked++;
        if (l->nsamples < MAX_SAMPLES)
            l->samples[l->nsamples++] = (double)(now_us() - (int64_t)(uintptr_t)msg_ctx) / 1000.0;
    } else {
        l->nacked++;
    }
    if (l->sending)
        send_one(l, dev);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fprintf(stderr, "usage: amqp-load --port P --ca FILE --fleet FILE [--hub HOST] [--devices N] [--window W] "
                    "[--devices-per-connection K] [--duration S] [--payload-size B]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {{"port", 1, 0, 'p'},         {"ca", 1, 0, 'c'},
                                          {"fleet", 1, 0, 'f'},        {"hub", 1, 0, 'h'},
                                          {"devices", 1, 0, 'n'},      {"window", 1, 0, 'w'},
                                          {"duration", 1, 0, 'd'},     {"payload-size", 1, 0, 's'},
                                          {"devices-per-connection", 1, 0, 'k'}, {0, 0, 0, 0}};
    int port = 0, devices = 1000000, window = 64, payload_size = 66, per_conn = 1;
    double duration = 10;
    const char *ca = NULL, *fleet = NULL, *hub = "localhost";
    for (int c; (c = getopt_long(argc, argv, "", longs, NULL)) != -1;) {
        switch (c) {
        case 'p': port = atoi(optarg); break;
        case 'c': ca = optarg; break;
        case 'f': fleet = optarg; break;
        case 'h': hub = optarg; break;
        case 'n': devices = atoi(optarg); break;
        case 'w': window = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 's': payload_size = atoi(optarg); break;
        case 'k': per_conn = atoi(optarg); break;
        default: usage();
        }
    }
    if (!port || !ca || !fleet || window < 1 || per_conn < 1 || payload_size < 1 || payload_size > 65536)
        usage();
    FILE *f = fopen(fleet, "r");
    if (!f) {
        perror(fleet);
        return 1;
    }
    iotgw_log_set_level(getenv("AMQP_LOAD_VERBOSE") ? IOTGW_LOG_INFO : IOTGW_LOG_ERROR);
    iotgw_diag diag = {0};
    iotgw_fd_limit fl; /* a socket per connection: as many as the hard limit allows */
    if (iotgw_fd_limit_raise(1, &fl, &diag))
        fprintf(stderr, "amqp-load: %s\n", diag.text);
    load l = {.window = (unsigned)window, .sending = 1, .samples = malloc(MAX_SAMPLES * sizeof(double))};
    l.loop = iotgw_loop_new(&(iotgw_loop_options){.default_backend = IOTGW_LOOP_LIBUV}, &diag); /* many sockets */
    iotgw_upstream_options o = {
        .hub = {.host_name = hub,
                .kind = IOTGW_TRANSPORT_AMQPS,
                .port = port,
                .tls = {.ca_file = ca}},
        .devices_per_connection = (unsigned)per_conn,
        .auth_rate = -1,
        .device_window = (unsigned)window,
        .device_queue = (unsigned)window,
        .connection_window = (unsigned)(window * per_conn),
        .cb = {.on_outcome = on_outcome, .on_state = on_state},
        .ctx = &l,
    };
    iotgw_upstream *up;
    if (!l.loop || !l.samples || iotgw_upstream_new(l.loop, &o, &up, &diag)) {
        fprintf(stderr, "amqp-load: %s\n", diag.text[0] ? diag.text : "out of memory");
        return 1;
    }
    pn_message_t *m = pn_message();
    char *body = malloc((size_t)payload_size);
    memset(body, 'x', (size_t)payload_size);
    pn_data_put_binary(pn_message_body(m), pn_bytes((size_t)payload_size, body));
    pn_message_set_inferred(m, true);
    iotgw_message_encode(m, &l.msg, &l.len);
    pn_message_free(m);
    free(body);

    int n = 0, *seen = calloc((size_t)devices + 1, sizeof *seen);
    char line[1024];
    double t0 = now_s();
    while (n < devices && fgets(line, sizeof line, f)) {
        char id[256], key[256];
        if (line[0] == '#' || sscanf(line, "%255s %255s", id, key) != 2 || !strcmp(key, "-"))
            continue;
        iotgw_device_credential cred = {.device_id = id, .key = key};
        iotgw_upstream_device *dev;
        if (iotgw_upstream_device_add(up, &cred, 0, &seen[n], &dev, &diag)) {
            fprintf(stderr, "amqp-load: %s\n", diag.text);
            return 1;
        }
        n++;
    }
    fclose(f);
    while (l.connected + l.failed < n && now_s() - t0 < 120)
        iotgw_loop_run(l.loop, 20);
    double connect_s = now_s() - t0;
    uint64_t acked0 = l.acked;
    l.nsamples = 0;
    double start = now_s();
    while (now_s() - start < duration)
        iotgw_loop_run(l.loop, 20);
    l.sending = 0;
    uint64_t acked = l.acked - acked0;
    double secs = now_s() - start;
    for (double end = now_s() + 10; l.in_flight && now_s() < end;) /* outcomes of what is in flight */
        iotgw_loop_run(l.loop, 20);
    qsort(l.samples, l.nsamples, sizeof *l.samples, cmp_double);
    double p50 = l.nsamples ? l.samples[l.nsamples / 2] : 0, p99 = l.nsamples ? l.samples[l.nsamples * 99 / 100] : 0;
    printf("{\"connected\": %d, \"failed\": %d, \"acked\": %" PRIu64 ", \"nacked\": %" PRIu64
           ", \"acked_per_s\": %.1f, \"ack_ms_p50\": %.3f, \"ack_ms_p99\": %.3f, \"connect_s\": %.2f, "
           "\"payload_bytes\": %d}\n",
           l.connected, l.failed, acked, l.nacked, acked / secs, p50, p99, connect_s, payload_size);
    iotgw_upstream_free(up);
    for (int k = 0; k < 20; k++)
        iotgw_loop_run(l.loop, 10);
    iotgw_loop_free(l.loop);
    free(l.msg);
    free(l.samples);
    free(seen);
    return l.connected == n ? 0 : 1;
}
