/* iotgw: the gateway daemon's command line. */
#include <getopt.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/config.h"
#include "gateway/settings.h"
#include "gateway/store.h"
#include "gateway/gateway.h"
#include "transport/fdlimit.h"
#include "transport/log.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

#define DRAIN_MS 10000

static volatile sig_atomic_t stopping, reload_asked;

static void on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

static void on_hup(int sig)
{
    (void)sig;
    reload_asked = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: iotgw --config FILE [--log-level LEVEL] [--log-format FORMAT]\n"
               "       iotgw --check-config FILE\n"
               "An edge gateway for Azure IoT Hub: devices connect over TCP with protobuf frames\n"
               "(docs/downstream-protocol.md); each becomes its own identity on a pool of AMQP\n"
               "connections to the hub.\n"
               "\n"
               "  --config FILE        run with this configuration (docs/configuration.md)\n"
               "  --check-config FILE  read and check FILE, say what it sets up, exit 0 if it is\n"
               "                       good and 1 if not (the error names file, line and key)\n"
               "  --log-level LEVEL    error, warn, info (default) or debug\n"
               "  --log-format FORMAT  text (default) or json: one JSON object per line on stderr\n"
               "                       (time, level, event, device, message, fields); wins over\n"
               "                       log.format in the configuration\n"
               "  --version            print the version\n"
               "  -h, --help           this help\n"
               "\n"
               "SIGTERM or SIGINT: stop accepting devices, wait up to 10 s for the hub's answers to\n"
               "what is in flight, close every device with ERROR_SHUTTING_DOWN, exit 0.\n"
               "SIGHUP: read the configuration again: devices added can connect, removed or\n"
               "disabled ones are closed, ones whose key changed authenticate again; nobody else\n"
               "notices. A file with an error, or one that changes fleet.shard, changes nothing\n"
               "(it is logged). Hub and listener settings take effect at the next start.\n"
               "\n"
               "Environment: IOTGW_EVENT_LOOP=poll or libuv sets the event loop's backend\n"
               "(default libuv, which costs less per message at every fleet size measured:\n"
               "docs/event-loop.md).\n");
}

/* iotgw's choice of backend, unless IOTGW_EVENT_LOOP says otherwise: libuv (epoll),
 * which since acknowledgements leave in batches costs the gateway less per message than
 * poll() with 10, 100 and 1,000 devices, busy or not (docs/event-loop.md). */
static const iotgw_loop_options loop_options = {.default_backend = IOTGW_LOOP_LIBUV};

/* Descriptors the gateway holds besides device connections: in use from the start
 * (stdio, the event loop's own: 8 on libuv and 2 on poll, measured; one per listener),
 * and to come: a hub connection per devicesPerConnection devices of the fleet and one
 * more while one is replaced, and a margin for a reload's files and DNS. The listeners
 * keep the ones to come free (transport/fdlimit.h). */
#define FDS_AT_START 11
#define FDS_MARGIN   16

static long fds_to_come(const iotgw_config *c, long limit)
{
    long per = c->devices_per_connection ? c->devices_per_connection : 500; /* upstream.h's lower default */
    long fleet = (long)c->ndevices < limit ? (long)c->ndevices : limit;
    return (fleet + per - 1) / per + 1 + FDS_MARGIN;
}

/* The open-file limit the gateway runs with (apply: raise it now, and keep its own
 * share back from devices) and what it leaves room for, as one line in line. */
static int fd_budget(const iotgw_config *c, int apply, char *line, size_t size, iotgw_diag *diag)
{
    iotgw_fd_limit fl;
    if (iotgw_fd_limit_raise(apply, &fl, diag))
        return -1;
    long to_come = fds_to_come(c, fl.soft), own = FDS_AT_START + (long)c->nlisten + (long)c->nmqtt_listen +
                                                  (long)c->namqp_listen + (c->ws_listen.address != NULL) + to_come;
    long room = fl.soft > own ? fl.soft - own : 0;
    if (apply)
        iotgw_fd_reserve_set(to_come);
    char raised[48] = "";
    if (fl.soft != fl.before)
        snprintf(raised, sizeof raised, " (raised from %ld at start)", fl.before);
    size_t enabled = 0;
    for (size_t i = 0; i < c->ndevices; i++)
        enabled += !c->devices[i].disabled;
    int n =
        snprintf(line, size, "fd limit %ld%s: room for about %ld device connections", fl.soft, raised, room);
    if ((size_t)room < enabled && n > 0 && (size_t)n < size)
        snprintf(line + n, size - (size_t)n, "; fewer than the %zu devices of the fleet: %s", enabled,
                 fl.hard > fl.soft ? "set a higher soft limit (LimitNOFILE=, ulimit -n)"
                                   : "raise the hard limit (LimitNOFILE=, ulimit -Hn)");
    return 0;
}

/* What the configuration sets up; 0, or 1 when the gateway would not start with it. */
static int describe(const iotgw_config *c)
{
    const char *why;
    iotgw_loop_backend b;
    iotgw_diag diag = {0};
    if (iotgw_loop_backend_choose(&loop_options, &b, &why, &diag)) {
        fprintf(stderr, "iotgw: %s\n", diag.text);
        return 1;
    }
    size_t disabled = 0, keyless = 0;
    for (size_t i = 0; i < c->ndevices; i++) {
        disabled += c->devices[i].disabled != 0;
        keyless += c->devices[i].key == NULL;
    }
    printf("%s: OK\n", c->file);
    printf("hub: %s over %s%s%s\n", c->hub_host,
           c->hub_transport == IOTGW_TRANSPORT_AMQPS ? "amqps" : "amqp-ws",
           c->hub_connect_host ? ", connecting to " : "", c->hub_connect_host ? c->hub_connect_host : "");
    for (size_t i = 0; i < c->nlisten; i++)
        printf("devices: listen %s:%d\n", c->listen[i].address, c->listen[i].port);
    for (size_t i = 0; i < c->nmqtt_listen; i++)
        printf("devices: MQTT (IoT Hub's, for Azure IoT SDK devices) over TLS on %s:%d\n",
               c->mqtt_listen[i].address, c->mqtt_listen[i].port);
    for (size_t i = 0; i < c->namqp_listen; i++)
        printf("devices: AMQP (IoT Hub's, for Azure IoT SDK devices) over TLS on %s:%d\n",
               c->amqp_listen[i].address, c->amqp_listen[i].port);
    if (c->ws_listen.address)
        printf("devices: MQTT and AMQP over WebSocket on %s:%d%s\n", c->ws_listen.address, c->ws_listen.port,
               IOTGW_WS_DEFAULT_PATH);
    if (c->ops_listen.address)
        printf("ops: listen %s:%d (/metrics, /healthz, /readyz; /devices %s)\n", c->ops_listen.address,
               c->ops_listen.port, c->ops_token ? "with ops.token" : "to loopback clients");
    else
        printf("ops: off\n");
    if (c->log_json)
        printf("log: JSON lines\n");
    printf("fleet: %zu devices (%zu disabled", c->ndevices, disabled);
    if (keyless)
        printf(", %zu by client certificate only", keyless);
    printf(")\n");
    if (c->shard_given)
        printf("shard: %u of %u%s%s%s: serves %zu of the fleet's %zu devices\n", c->shard_index,
               c->shard_count, c->shard_from ? " (from " : "", c->shard_from ? c->shard_from : "",
               c->shard_from ? ")" : "", c->ndevices, c->fleet_size);
    if (c->policy_name)
        printf("hub tokens: signed with policy %s\n", c->policy_name);
    else
        printf("hub tokens: signed with each device's key\n");
    printf("telemetry: %s bodies\n", c->encoding == IOTGW_HUBMSG_JSON ? "JSON" : "protobuf");
    if (c->store_path)
        printf("store: %s, up to %" PRIu64 " MiB, messages kept %u s; a device's telemetry is acknowledged "
               "once %s; when full: %s\n",
               c->store_path, c->store_max_bytes >> 20, c->store_ttl_s,
               c->store_sync == IOTGW_STORE_SYNC_OS
                   ? "written (store.sync os: a power cut may lose the last ~30 s)"
                   : "on disk (fdatasync, in groups of store.commitIntervalMs)",
               c->store_on_full == IOTGW_STORE_DROP_OLDEST
                   ? "the oldest stored messages are dropped"
                   : "new telemetry is refused with NACK_RETRY_LATER");
    else
        printf("store: none (an acknowledgement means the hub has the message; store.path enables one)\n");
    for (size_t i = 0; i < c->nmethods; i++)
        printf("method %s: request %s, response %s\n", c->methods[i].name,
               c->methods[i].request_type ? c->methods[i].request_type : "JSON",
               c->methods[i].response_type ? c->methods[i].response_type : "JSON");
    /* the settings table's, as the file sets them; the rest are at their defaults */
    char line[1024] = "", value[300];
    size_t nset = 0;
    for (size_t i = 0; i < iotgw_settings_count; i++) {
        const iotgw_setting *st = &iotgw_settings[i];
        if (iotgw_setting_is_default(st, c) || !strcmp(st->name, "hub.hostName"))
            continue;
        iotgw_setting_format(st, c, value, sizeof value);
        snprintf(line + strlen(line), sizeof line - strlen(line), "%s%s %s%s", nset++ ? ", " : "", st->name,
                 value, st->reload ? "" : " (read at start)");
    }
    printf("settings not at their defaults: %s\n", nset ? line : "none");
    printf("event loop: %s (%s)\n", b == IOTGW_LOOP_LIBUV ? "libuv" : "poll", why);
    char fds[300];
    if (fd_budget(c, 0, fds, sizeof fds, &diag) == 0)
        printf("%s\n", fds);
    return 0;
}

static int parse_level(const char *s, iotgw_log_level *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i])) {
            *out = (iotgw_log_level)i;
            return 0;
        }
    return -1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},
        {"check-config", required_argument, 0, 'C'},
        {"log-level", required_argument, 0, 'l'},
        {"log-format", required_argument, 0, 'F'},
        {"version", no_argument, 0, 'V'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *config = NULL, *check = NULL;
    int o, format_given = 0; /* --log-format wins over log.format */
    iotgw_log_format format = IOTGW_LOG_FORMAT_TEXT;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'c': config = optarg; break;
        case 'C': check = optarg; break;
        case 'l': {
            iotgw_log_level level;
            if (parse_level(optarg, &level)) {
                fprintf(stderr, "iotgw: --log-level must be error, warn, info or debug\n");
                return 2;
            }
            iotgw_log_set_level(level);
            break;
        }
        case 'F':
            if (iotgw_log_format_parse(optarg, &format)) {
                fprintf(stderr, "iotgw: --log-format must be text or json\n");
                return 2;
            }
            format_given = 1;
            break;
        case 'V': printf("iotgw %s\n", PACKAGE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || (!config == !check)) {
        fprintf(stderr,
                optind < argc ? "iotgw: unexpected argument \"%s\" (see --help)\n"
                              : "iotgw: give --config FILE or --check-config FILE (see --help)\n",
                optind < argc ? argv[optind] : "");
        return 2;
    }
    iotgw_config *cfg = NULL;
    iotgw_diag diag = {0};
    if (iotgw_config_load(check ? check : config, &cfg, &diag)) {
        fprintf(stderr, "iotgw: %s\n", diag.text);
        return 1;
    }
    if (check) {
        int rc = describe(cfg);
        iotgw_config_free(cfg);
        return rc;
    }
    iotgw_log_set_format(format_given    ? format
                         : cfg->log_json ? IOTGW_LOG_FORMAT_JSON
                                         : IOTGW_LOG_FORMAT_TEXT);
    /* before the loop: libwebsockets sizes its descriptor table from the limit */
    char fds[300];
    if (fd_budget(cfg, 1, fds, sizeof fds, &diag)) {
        iotgw_log(IOTGW_LOG_WARN, "%s", diag.text);
        snprintf(fds, sizeof fds, "fd limit %ld (not raised)", iotgw_fd_limit_now());
    }
    const char *why;
    iotgw_loop_backend backend;
    iotgw_loop *loop = iotgw_loop_backend_choose(&loop_options, &backend, &why, &diag)
                           ? NULL
                           : iotgw_loop_new(&loop_options, &diag);
    iotgw_gateway *g = NULL;
    if (!loop || iotgw_gateway_new(loop, cfg, &g, &diag)) {
        if (iotgw_log_get_format() == IOTGW_LOG_FORMAT_JSON)
            iotgw_log_ev(IOTGW_LOG_ERROR, "start_failed", NULL, "cannot start: %s", diag.text);
        else
            fprintf(stderr, "iotgw: cannot start: %s\n", diag.text);
        iotgw_config_free(cfg);
        iotgw_loop_free(loop);
        return 1;
    }
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    signal(SIGHUP, on_hup);
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < cfg->nlisten; i++)
        printf("listening: devices %s:%d\n", cfg->listen[i].address, iotgw_gateway_port(g, i));
    for (size_t i = 0; i < cfg->nmqtt_listen; i++)
        printf("listening: mqtt %s:%d\n", cfg->mqtt_listen[i].address,
               iotgw_gateway_port(g, cfg->nlisten + i));
    for (size_t i = 0; i < cfg->namqp_listen; i++)
        printf("listening: amqp %s:%d\n", cfg->amqp_listen[i].address, iotgw_gateway_amqp_port(g, i));
    if (cfg->ws_listen.address) /* MQTT and AMQP over WebSocket */
        printf("listening: websocket %s:%d\n", cfg->ws_listen.address, iotgw_gateway_ws_port(g));
    if (iotgw_gateway_ops_port(g))
        printf("listening: ops %s:%d\n", cfg->ops_listen.address, iotgw_gateway_ops_port(g));
    printf("hub: %s over %s, %zu devices in the fleet\n", cfg->hub_host,
           cfg->hub_transport == IOTGW_TRANSPORT_AMQPS ? "amqps" : "amqp-ws", cfg->ndevices);
    if (cfg->shard_given)
        printf("shard: %u of %u%s%s%s: serves %zu of the fleet's %zu devices\n", cfg->shard_index,
               cfg->shard_count, cfg->shard_from ? " (from " : "", cfg->shard_from ? cfg->shard_from : "",
               cfg->shard_from ? ")" : "", cfg->ndevices, cfg->fleet_size);
    printf("event loop: %s (%s)\n", iotgw_loop_backend_name(loop), why);
    printf("%s\n", fds);
    fflush(stdout);
    while (!stopping) {
        if (iotgw_loop_run(loop, 1000) < 0)
            break;
        if (reload_asked) {
            reload_asked = 0;
            iotgw_config *next = NULL;
            if (iotgw_config_load(config, &next, &diag)) {
                iotgw_log_ev(IOTGW_LOG_ERROR, "reload_failed", NULL,
                             "reload failed, the running configuration stays: %s", diag.text);
            } else {
                if (!format_given) /* log.format applies from the next line */
                    iotgw_log_set_format(next->log_json ? IOTGW_LOG_FORMAT_JSON : IOTGW_LOG_FORMAT_TEXT);
                iotgw_gateway_reload(g, next);
            }
        }
    }
    int64_t deadline = iotgw_loop_now_ms(loop) + DRAIN_MS;
    while (!iotgw_gateway_drain(g, deadline) && iotgw_loop_now_ms(loop) < deadline + 2000)
        iotgw_loop_run(loop, 100);
    iotgw_log_ev(IOTGW_LOG_INFO, "stopped", NULL, "stopped");
    iotgw_gateway_free(g);
    for (int i = 0; i < 10; i++) /* let the hub connections' close frames leave */
        iotgw_loop_run(loop, 20);
    iotgw_loop_free(loop);
    return 0;
}
