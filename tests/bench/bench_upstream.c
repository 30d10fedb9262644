/* Gateway upstream benchmark against an in-process iothub-emulator (one loop, one
 * core: the figures are a floor for the upstream alone):
 *   1. time to bring BENCH_DEVICES (10,000) devices online, pacing disabled, 500 per
 *      WSS connection (CBS put-token and telemetry link each);
 *   2. telemetry msgs/s through one connection (500 devices) and through the pool
 *      (BENCH_POOL_DEVICES, 2,000 over 4 connections), BENCH_MESSAGES (200,000) each.
 * Compare with bench_transport's in-memory Proton ceiling printed in the same
 * `make bench` run. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <proton/message.h>

#include "emulator/hub.h"
#include "gateway/upstream.h"
#include "transport/messaging.h"
#include "tests/common/clock_env.h"

static int online, failed;
static uint64_t accepted, other_outcomes;

static void on_state(iotgw_upstream_device *dev, iotgw_device_state state, void *ctx)
{
    (void)dev, (void)ctx;
    online += state == IOTGW_DEVICE_ONLINE;
    failed += state == IOTGW_DEVICE_FAILED;
}

static void on_outcome(iotgw_upstream_device *dev, void *msg_ctx, iotgw_outcome outcome, const char *cond,
                       const char *description, void *ctx)
{
    (void)dev, (void)msg_ctx, (void)cond, (void)description, (void)ctx;
    if (outcome == IOTGW_OUTCOME_ACCEPTED)
        accepted++;
    else
        other_outcomes++;
}

typedef struct run {
    iotgw_loop *loop;
    emu_registry *reg;
    int port;
    const char *ca;
} run;

static iotgw_upstream *start_pool(run *r, int first, int count, iotgw_upstream_device **devs)
{
    iotgw_upstream_options o = {
        .hub = {.host_name = "localhost", .port = r->port, .tls = {.ca_file = r->ca}},
        .auth_rate = -1,
        .device_window = 50,
        .device_queue = 1000,
        .connection_window = 5000,
        .cb = {.on_outcome = on_outcome, .on_state = on_state},
    };
    iotgw_upstream *up;
    iotgw_diag diag = {0};
    if (iotgw_upstream_new(r->loop, &o, &up, &diag)) {
        fprintf(stderr, "bench_upstream: %s\n", diag.text);
        exit(1);
    }
    online = failed = 0;
    for (int i = 0; i < count; i++) {
        emu_identity *id = emu_registry_at(r->reg, first + i);
        iotgw_device_credential cred = {.device_id = id->id, .key = id->primary_key};
        if (iotgw_upstream_device_add(up, &cred, 0, NULL, &devs[i], &diag)) {
            fprintf(stderr, "bench_upstream: %s\n", diag.text);
            exit(1);
        }
    }
    return up;
}

static int wait_online(run *r, int count, double limit_s)
{
    double end = now_s() + limit_s;
    while (online + failed < count && now_s() < end)
        iotgw_loop_run(r->loop, 50);
    return online == count ? 0 : -1;
}

static void stop_pool(run *r, iotgw_upstream *up)
{
    iotgw_upstream_free(up);
    for (int k = 0; k < 20; k++)
        iotgw_loop_run(r->loop, 10);
}

/* Keep every device's queue topped up until total messages were accepted. */
static double telemetry(run *r, iotgw_upstream_device **devs, int count, int total, const uint8_t *msg,
                        size_t len)
{
    accepted = other_outcomes = 0;
    uint64_t sent = 0;
    double t0 = now_s(), end = t0 + 300;
    while (accepted + other_outcomes < (uint64_t)total && now_s() < end) {
        for (int i = 0; i < count && sent < (uint64_t)total; i++) {
            iotgw_device_info info;
            iotgw_upstream_device_info(devs[i], &info);
            for (unsigned k = info.queued + info.in_flight; k < 100 && sent < (uint64_t)total; k++) {
                if (iotgw_upstream_send(devs[i], msg, len, NULL))
                    break;
                sent++;
            }
        }
        iotgw_loop_run(r->loop, 1);
    }
    return now_s() - t0;
}

int main(void)
{
    const char *certs = getenv("IOTGW_TEST_CERTS");
    if (!certs) {
        fprintf(stderr, "bench_upstream: set IOTGW_TEST_CERTS (make bench does)\n");
        return 1;
    }
    int devices = env_int("BENCH_DEVICES", 10000), pool_devices = env_int("BENCH_POOL_DEVICES", 2000);
    int total = env_int("BENCH_MESSAGES", 200000);
    int max_dev = devices > pool_devices ? devices : pool_devices;
    char cert[512], key[512], ca[512];
    snprintf(cert, sizeof cert, "%s/server.pem", certs);
    snprintf(key, sizeof key, "%s/server.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    run r = {.ca = ca, .reg = emu_registry_new()};
    for (int i = 0; i < max_dev; i++) {
        char id[32];
        snprintf(id, sizeof id, "d%05d", i);
        if (emu_registry_add(r.reg, id, NULL, NULL, NULL, 1, NULL, NULL))
            return 1;
    }
    iotgw_diag diag = {0};
    r.loop = iotgw_loop_new(&(iotgw_loop_options){0}, &diag);
    emu_hub *hub;
    emu_hub_options ho = {.hostname = "localhost",
                          .listen_addr = "127.0.0.1",
                          .cert_file = cert,
                          .key_file = key,
                          .retention_messages = 10000};
    iotgw_log_set_level(IOTGW_LOG_WARN);
    if (!r.loop || emu_hub_new(r.loop, r.reg, &ho, &hub, &diag)) {
        fprintf(stderr, "bench_upstream: %s\n", diag.text);
        return 1;
    }
    r.port = emu_hub_wss_port(hub);
    iotgw_upstream_device **devs = calloc((size_t)max_dev, sizeof *devs);

    /* 1. onboarding */
    double t0 = now_s();
    iotgw_upstream *up = start_pool(&r, 0, devices, devs);
    int rc = wait_online(&r, devices, 300);
    double t1 = now_s();
    iotgw_connection_info ci[64];
    int nconn = iotgw_upstream_connections(up, ci, 64);
    printf("online: %d devices over %d WSS connections, pacing off: %.2f s (%.0f devices/s), %d failed%s\n",
           online, nconn, t1 - t0, online / (t1 - t0), failed, rc ? " (INCOMPLETE)" : "");
    stop_pool(&r, up);

    pn_message_t *m = pn_message();
    const char *body = "{\"alarm\":\"door-open\",\"zone\":3,\"severity\":2,\"ts\":\"2026-11-22T10:00:00Z\"}";
    pn_data_put_binary(pn_message_body(m), pn_bytes(strlen(body), body));
    uint8_t *buf;
    size_t len;
    iotgw_message_encode(m, &buf, &len);
    pn_message_free(m);

    /* 2. telemetry: one connection, then the pool */
    int shapes[2][2] = {{500, 1}, {pool_devices, (pool_devices + 499) / 500}};
    for (int s = 0; s < 2 && !rc; s++) {
        int count = shapes[s][0];
        up = start_pool(&r, 0, count, devs);
        rc = wait_online(&r, count, 300);
        double secs = telemetry(&r, devs, count, total, buf, len);
        printf("telemetry: %" PRIu64 " messages (%zu bytes) from %d devices on %d WSS connection%s: %.2f s, "
               "%.0f msgs/s accepted, %" PRIu64 " not accepted%s\n",
               accepted, len, count, shapes[s][1], shapes[s][1] > 1 ? "s" : "", secs, accepted / secs,
               other_outcomes, accepted < (uint64_t)total ? " (INCOMPLETE)" : "");
        rc |= accepted < (uint64_t)total;
        stop_pool(&r, up);
    }
    free(buf);
    free(devs);
    emu_hub_free(hub);
    iotgw_loop_free(r.loop);
    emu_registry_free(r.reg);
    return rc ? 1 : 0;
}
