/* Direct-method round trips through iotgw: this process is the hub (the emulator's
 * library, invoking methods directly, without REST), iotgw and iotgw-devsim run as
 * processes. BENCH_METHOD_DEVICES (100) devices answer at once; calls go at
 * BENCH_METHOD_RATE (1,000) per second for BENCH_METHOD_SECONDS (10). Prints p50/p99 of
 * the round trip hub -> gateway -> device -> gateway -> hub; the device's own handling
 * is the simulator answering in the same poll turn, so the figure is the gateway's path
 * plus the loopback hops and the hub's own work.
 *   bench_methods IOTGW DEVSIM   (make bench passes them) */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "emulator/hub.h"
#include "tests/common/clock_env.h"

extern char **environ;

static double *lat;
static int done_calls, failed_calls;

typedef struct call {
    double t0;
} call;

static void on_done(void *ctx, int status, const uint8_t *payload, size_t len, const char *code,
                    const char *message)
{
    (void)payload, (void)len, (void)message;
    call *c = ctx;
    if (code || status != 200)
        failed_calls++;
    else
        lat[done_calls++] = (now_s() - c->t0) * 1000.0;
    free(c);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static pid_t spawn(char *const argv[], const char *log)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    pid_t pid;
    if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ))
        pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

int main(int argc, char **argv)
{
    const char *certs = getenv("IOTGW_TEST_CERTS");
    if (argc < 3 || !certs) {
        fprintf(stderr, "usage: IOTGW_TEST_CERTS=DIR bench_methods IOTGW DEVSIM (make bench runs it)\n");
        return 2;
    }
    int ndev = env_int("BENCH_METHOD_DEVICES", 100), rate = env_int("BENCH_METHOD_RATE", 1000);
    int seconds = env_int("BENCH_METHOD_SECONDS", 10);
    char dir[] = "/tmp/bench-methods-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char cert[512], key[512], ca[512], cfg[512], fleet[512], gwlog[512], simlog[512];
    snprintf(cert, sizeof cert, "%s/server.pem", certs);
    snprintf(key, sizeof key, "%s/server.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    snprintf(cfg, sizeof cfg, "%s/iotgw.yaml", dir);
    snprintf(fleet, sizeof fleet, "%s/fleet.txt", dir);
    snprintf(gwlog, sizeof gwlog, "%s/iotgw.log", dir);
    snprintf(simlog, sizeof simlog, "%s/devsim.log", dir);

    iotgw_log_set_level(IOTGW_LOG_WARN);
    emu_registry *reg = emu_registry_new();
    for (int i = 0; i < ndev; i++) {
        char id[32];
        snprintf(id, sizeof id, "m%05d", i);
        emu_registry_add(reg, id, NULL, NULL, NULL, 1, NULL, NULL);
    }
    iotgw_diag diag = {0};
    iotgw_loop *loop = iotgw_loop_new(&(iotgw_loop_options){0}, &diag);
    emu_hub *hub;
    emu_hub_options ho = {
        .hostname = "localhost", .listen_addr = "127.0.0.1", .cert_file = cert, .key_file = key};
    if (!loop || emu_hub_new(loop, reg, &ho, &hub, &diag)) {
        fprintf(stderr, "bench_methods: %s\n", diag.text);
        return 1;
    }
    FILE *c = fopen(cfg, "w"), *f = fopen(fleet, "w");
    fprintf(c,
            "hub: {hostName: localhost, port: %d, caFile: %s, authRate: 100000}\n"
            "ops: {listen: off}\ndevices: {listen: 127.0.0.1:0, keepaliveSeconds: 600}\nfleet:\n  devices:\n",
            emu_hub_wss_port(hub), ca);
    for (int i = 0; i < ndev; i++) {
        emu_identity *id = emu_registry_at(reg, i);
        fprintf(c, "    - {id: %s, key: %s}\n", id->id, id->primary_key);
        fprintf(f, "%s %s\n", id->id, id->primary_key);
    }
    fclose(c);
    fclose(f);
    char *gw_argv[] = {argv[1], "--config", cfg, "--log-level", "warn", NULL};
    pid_t gw = spawn(gw_argv, gwlog);
    /* the gateway's device port: from its first line */
    int port = 0;
    for (int i = 0; i < 200 && !port; i++) {
        iotgw_loop_run(loop, 50);
        FILE *l = fopen(gwlog, "r");
        char line[256];
        while (l && fgets(line, sizeof line, l))
            sscanf(line, "listening: devices %*[^:]:%d", &port);
        if (l)
            fclose(l);
    }
    char gw_addr[64], dur[16];
    snprintf(gw_addr, sizeof gw_addr, "127.0.0.1:%d", port);
    snprintf(dur, sizeof dur, "%d", seconds + 30);
    char *sim_argv[] = {argv[2],     "--gateway", gw_addr, "--hub",      "localhost", "--fleet", fleet,
                        "--methods", "--rate",    "0.001", "--duration", dur,         "--quiet", NULL};
    pid_t sim = port ? spawn(sim_argv, simlog) : -1;
    /* until every device's method link is attached at the hub */
    int online = 0;
    for (double end = now_s() + 60; online < ndev && now_s() < end;) {
        iotgw_loop_run(loop, 50);
        online = 0;
        for (int i = 0; i < ndev; i++)
            online += emu_hub_identity_activity(hub, emu_registry_at(reg, i)).connected;
    }
    int total = rate * seconds;
    lat = calloc((size_t)total, sizeof *lat);
    double t0 = now_s();
    int issued = 0;
    if (online == ndev) {
        while (done_calls + failed_calls < total && now_s() < t0 + seconds + 30) {
            int due = (int)((now_s() - t0) * rate);
            for (; issued < due && issued < total; issued++) {
                call *cl = malloc(sizeof *cl);
                cl->t0 = now_s();
                emu_method_invoke(hub, emu_registry_at(reg, issued % ndev), "ping", (const uint8_t *)"{}", 2,
                                  30, 0, on_done, cl);
            }
            iotgw_loop_run(loop, 1);
        }
    }
    qsort(lat, (size_t)done_calls, sizeof *lat, cmp);
    double p50 = done_calls ? lat[done_calls / 2] : 0,
           p99 = done_calls ? lat[(size_t)(done_calls * 0.99)] : 0;
    printf("methods: %d of %d calls answered (%d devices online, %d failed) at %d calls/s through iotgw: "
           "round trip "
           "p50 %.3f ms, p99 %.3f ms (hub -> gateway -> device -> gateway -> hub; target for the gateway's "
           "part: "
           "p99 <= 1 ms)\n",
           done_calls, total, online, failed_calls, rate, p50, p99);
    if (sim > 0)
        kill(sim, SIGTERM);
    if (gw > 0)
        kill(gw, SIGTERM);
    for (int i = 0; i < 40; i++)
        iotgw_loop_run(loop, 50);
    if (sim > 0)
        waitpid(sim, NULL, 0);
    if (gw > 0)
        waitpid(gw, NULL, 0);
    emu_hub_free(hub);
    iotgw_loop_free(loop);
    emu_registry_free(reg);
    free(lat);
    return done_calls == total ? 0 : 1;
}
