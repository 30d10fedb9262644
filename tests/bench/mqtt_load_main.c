/* mqtt-load: devices on IoT Hub's MQTT (tests/bench/mqtt_load.h) against any endpoint
 * that speaks it on 127.0.0.1: the emulator's --mqtts, or the gateway's devices.mqtt.
 * Each device of the fleet file ("ID KEY" lines, as iotgw-devsim and iotgw read them)
 * connects over TLS with a SAS token signed with its key, then sends QoS 1 telemetry
 * as fast as its window allows for the duration. The last line printed is JSON, as
 * iotgw-devsim's: {"connected", "failed", "acked", "acked_per_s", "ack_ms_p50",
 * "ack_ms_p99", "connect_s", "first_failure"}.
 *
 *   mqtt-load --port P --ca FILE --fleet FILE [--hub HOST] [--tls-name NAME]
 *             [--devices N] [--window W] [--duration S] [--payload-size B] */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "codecs/sas.h"
#include "tests/bench/mqtt_load.h"
#include "tests/common/clock_env.h"

static void usage(void)
{
    fprintf(stderr, "usage: mqtt-load --port P --ca FILE --fleet FILE [--hub HOST] [--tls-name NAME] "
                    "[--devices N] [--window W] [--duration S] [--payload-size B]\n");
    exit(2);
}

/* The fleet file's devices (up to max): ids and keys, malloc'd. */
static int read_fleet(const char *path, int max, char ***ids, char ***keys)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    int n = 0, cap = 0;
    char line[1024];
    while (fgets(line, sizeof line, f) && n < max) {
        char id[256], key[256];
        if (line[0] == '#' || sscanf(line, "%255s %255s", id, key) != 2 || !strcmp(key, "-"))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            *ids = realloc(*ids, (size_t)cap * sizeof **ids);
            *keys = realloc(*keys, (size_t)cap * sizeof **keys);
            if (!*ids || !*keys)
                return -1;
        }
        (*ids)[n] = strdup(id);
        (*keys)[n] = strdup(key);
        n++;
    }
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {{"port", 1, 0, 'p'},         {"ca", 1, 0, 'c'},
                                          {"fleet", 1, 0, 'f'},        {"hub", 1, 0, 'h'},
                                          {"tls-name", 1, 0, 't'},     {"devices", 1, 0, 'n'},
                                          {"window", 1, 0, 'w'},       {"duration", 1, 0, 'd'},
                                          {"payload-size", 1, 0, 's'}, {0, 0, 0, 0}};
    int port = 0, devices = 1000000, window = 64, payload_size = 0;
    double duration = 10;
    const char *ca = NULL, *fleet = NULL, *hub = "localhost", *tls_name = "localhost";
    for (int c; (c = getopt_long(argc, argv, "", longs, NULL)) != -1;) {
        switch (c) {
        case 'p': port = atoi(optarg); break;
        case 'c': ca = optarg; break;
        case 'f': fleet = optarg; break;
        case 'h': hub = optarg; break;
        case 't': tls_name = optarg; break;
        case 'n': devices = atoi(optarg); break;
        case 'w': window = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 's': payload_size = atoi(optarg); break;
        default: usage();
        }
    }
    if (port <= 0 || !ca || !fleet || devices <= 0 || duration <= 0 || payload_size < 0 ||
        payload_size > 256 * 1024)
        usage();
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl)) { /* a descriptor per device */
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char **ids = NULL, **keys = NULL;
    int n = read_fleet(fleet, devices, &ids, &keys);
    if (n <= 0) {
        fprintf(stderr, "mqtt-load: no devices with keys in %s\n", fleet);
        return 1;
    }
    char **tokens = calloc((size_t)n, sizeof *tokens);
    for (int i = 0; i < n; i++) {
        char res[512];
        snprintf(res, sizeof res, "%s/devices/%s", hub, ids[i]);
        iotgw_diag diag = {0};
        if (iotgw_sas_build(res, keys[i], (uint64_t)time(NULL) + 3600, NULL, &tokens[i], &diag)) {
            fprintf(stderr, "mqtt-load: %s: %s\n", ids[i], diag.text);
            return 1;
        }
    }
    char *payload = NULL;
    if (payload_size) {
        payload = malloc((size_t)payload_size + 1);
        memset(payload, 'x', (size_t)payload_size);
        payload[payload_size] = '\0';
    }
    mqtt_fleet_options o = {.port = port,
                            .tls_name = tls_name,
                            .ca_file = ca,
                            .hub_host = hub,
                            .devices = n,
                            .ids = ids,
                            .tokens = tokens,
                            .window = window,
                            .payload = payload};
    mqtt_fleet *f = mqtt_fleet_new(&o);
    if (!f)
        return 1;
    double t0 = now_s();
    mqtt_fleet_connect(f, t0 + 120);
    double connect_s = now_s() - t0, t1 = now_s();
    if (mqtt_fleet_connected(f))
        mqtt_fleet_send(f, 1, 0, t1 + duration);
    double wall = now_s() - t1;
    uint64_t acked = mqtt_fleet_acked(f);
    const mqtt_latency *lat = mqtt_fleet_latency(f);
    char failure[800];
    snprintf(failure, sizeof failure, "%s", mqtt_fleet_first_failure(f));
    for (char *p = failure; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            *p = ' ';
    printf("{\"connected\": %d, \"failed\": %d, \"acked\": %" PRIu64 ", \"acked_per_s\": %.1f, "
           "\"ack_ms_p50\": %.2f, \"ack_ms_p99\": %.2f, \"connect_s\": %.2f, \"payload_bytes\": %zu, "
           "\"first_failure\": \"%s\"}\n",
           mqtt_fleet_connected(f), mqtt_fleet_failed(f), acked, wall > 0 ? (double)acked / wall : 0,
           mqtt_latency_quantile_ms(lat, 0.5), mqtt_latency_quantile_ms(lat, 0.99), connect_s,
           mqtt_fleet_payload_len(f), failure);
    fflush(stdout);
    mqtt_fleet_disconnect(f, now_s() + 2);
    int rc = mqtt_fleet_connected(f) < n || !acked;
    mqtt_fleet_free(f);
    for (int i = 0; i < n; i++)
        free(ids[i]), free(keys[i]), free(tokens[i]);
    free(ids), free(keys), free(tokens), free(payload);
    return rc;
}
