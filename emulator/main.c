/* iothub-emulator: a local IoT Hub for development and tests. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/hostport.h"
#include "codecs/yaml_doc.h"
#include "emulator/hub.h"
#include "emulator/registry.h"
#include "emulator/rest.h"
#include "transport/log.h"
#include "transport/transport.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

/* Numeric settings: option, YAML key, range. */
static const struct {
    const char *option, *key;
    int64_t min, max;
} number_options[] = {
    {"max-tokens", "maxTokensPerConnection", 1, 100000},
    {"partitions", "partitions", 1, 32},
    {"retention-messages", "retentionMessages", 1, 100000000},
    {"retention-bytes", "retentionBytes", 1024, INT64_C(64) * 1024 * 1024 * 1024},
    {"d2c-limit", "d2cLimit", 1, 1000000},
    {"c2d-lock-timeout", "c2dLockTimeout", 1, 3600},
    {"c2d-ttl", "c2dDefaultTtl", 1, 2 * 24 * 3600}, /* IoT Hub's maximum: 2 days */
};
enum { MAX_TOKENS, PARTITIONS, RETENTION_MESSAGES, RETENTION_BYTES, D2C_LIMIT, C2D_LOCK, C2D_TTL, NUMBERS };
#define NUMBER_OPTION 1000 /* getopt code of number_options[i]: NUMBER_OPTION + i */
#define STRINGS       12   /* the string settings, in the order of settings and of their config keys */
#define BLOB_OPTION   2000 /* getopt code of --blob-*: BLOB_OPTION + its index among the strings */

typedef struct settings {
    char *hostname, *listen, *amqps, *mqtts, *cert, *key, *registry;
    /* file upload's storage */
    char *blob_endpoint, *blob_account, *blob_key, *blob_container, *blob_ca;
    int stream_redirect;      /* command line only */
    int64_t numbers[NUMBERS]; /* see number_options; 0: not set */
} settings;

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: iothub-emulator [options]\n"
               "A local Azure IoT Hub: the device protocols (AMQP over WebSocket and AMQPS with CBS,\n"
               "MQTT over TLS and WebSocket; telemetry, cloud-to-device, direct methods, twins) and\n"
               "the service side (REST for methods, twins and the registry; cloud-to-device and\n"
               "feedback; the telemetry stream); file upload to an Azure Storage endpoint.\n"
               "\n"
               "  --hostname NAME      the hub's host name; tokens must name it (default localhost)\n"
               "  --listen ADDR:PORT   HTTPS, AMQP and MQTT over WebSocket (default 127.0.0.1:443; \"off\")\n"
               "  --amqps ADDR:PORT    AMQPS (default 127.0.0.1:5671; \"off\")\n"
               "  --mqtts ADDR:PORT    MQTT over TLS (default 127.0.0.1:8883; \"off\"); MQTT over\n"
               "                       WebSocket is on the --listen port (subprotocol mqtt)\n"
               "  --cert FILE          server certificate (PEM), required\n"
               "  --key FILE           its private key (PEM), required\n"
               "  --registry FILE      policies and devices (YAML); created with fresh keys when\n"
               "                       missing and rewritten when they change; without it the\n"
               "                       registry lives in memory\n"
               "  --max-tokens N       CBS tokens per connection (default 1000)\n"
               "  --partitions N       partitions of the telemetry stream (default 4)\n"
               "  --retention-messages N  messages the stream keeps, oldest dropped first\n"
               "                       (default 100000)\n"
               "  --retention-bytes N  bytes the stream keeps (default 67108864)\n"
               "  --d2c-limit N        device-to-cloud messages per second the hub accepts; beyond\n"
               "                       it telemetry is rejected as throttled (default: no limit)\n"
               "  --c2d-lock-timeout S a cloud-to-device message a device neither completes,\n"
               "                       rejects nor abandons within S seconds is delivered again\n"
               "                       (default 60, as IoT Hub)\n"
               "  --c2d-ttl S          cloud-to-device messages without absolute-expiry-time expire\n"
               "                       after S seconds (default 3600, as IoT Hub; at most 172800)\n"
               "  --admin              serve the fault-injection API under /admin to loopback\n"
               "                       clients (docs/emulator.md)\n"
               "  --stream-redirect    as IoT Hub: readers of messages/events are redirected\n"
               "                       (amqp:link:redirect) to the Event Hub-compatible endpoint,\n"
               "                       iothub-ehub-{hub}-emulator on the AMQPS port; without it\n"
               "                       they are served there directly (both names always work)\n"
               "  --blob-endpoint URL  file upload: the Azure Storage blob endpoint devices upload\n"
               "                       to, over HTTPS (Azurite's: https://127.0.0.1:10000/ACCOUNT);\n"
               "                       without it uploads are refused as by a hub without storage\n"
               "  --blob-account NAME, --blob-key KEY, --blob-container NAME\n"
               "                       the endpoint's account, its key (base64) and the container\n"
               "                       uploads go to (it must exist): needed with --blob-endpoint\n"
               "  --blob-ca FILE       the CA the hub trusts for the endpoint, when it reads an\n"
               "                       uploaded blob's size (default: the system's)\n"
               "  --config FILE        the settings above from YAML (keys: hostname, listen, amqps,\n"
               "                       mqtts, cert, key, registry, blobEndpoint, blobAccount, blobKey,\n"
               "                       blobContainer, blobCa, maxTokensPerConnection, partitions,\n"
               "                       retentionMessages, retentionBytes, d2cLimit,\n"
               "                       c2dLockTimeout, c2dDefaultTtl); options given\n"
               "                       on the command line win\n"
               "  --log-format FORMAT  text (default) or json: one JSON object per line on stderr\n"
               "                       (time, level, event, message), as iotgw's\n"
               "  --version            print the version\n"
               "  -h, --help           this help\n"
               "\n"
               "On start it prints on stdout where it listens and, when the registry has an\n"
               "iothubowner policy, that policy's service connection string; logs go to stderr.\n"
               "SIGINT or SIGTERM stops it.\n"
               "Throw-away certificates: iothub-emulator-certs DIR. Registry format and behaviour:\n"
               "docs/emulator.md.\n");
}

static int split_addr(const char *text, char **addr, int *port)
{
    char host[256];
    if (iotgw_hostport_parse(text, host, sizeof host, port))
        return -1;
    *addr = strdup(host);
    return *addr ? 0 : -1;
}

/* An option given again replaces the earlier value. */
static void replace(char **slot, const char *value)
{
    free(*slot);
    *slot = strdup(value);
}

static void set(char **slot, const char *value)
{
    if (!*slot)
        *slot = strdup(value);
}

static int load_config(const char *file, settings *s)
{
    iotgw_yaml y;
    iotgw_diag diag = {0};
    static const char *const keys[] = {"hostname",
                                       "listen",
                                       "amqps",
                                       "mqtts",
                                       "cert",
                                       "key",
                                       "registry",
                                       "blobEndpoint",
                                       "blobAccount",
                                       "blobKey",
                                       "blobContainer",
                                       "blobCa",
                                       "maxTokensPerConnection",
                                       "partitions",
                                       "retentionMessages",
                                       "retentionBytes",
                                       "d2cLimit",
                                       "c2dLockTimeout",
                                       "c2dDefaultTtl",
                                       NULL};
    int rc = iotgw_yaml_load(&y, file, NULL, &diag);
    yaml_node_t *root = rc ? NULL : iotgw_yaml_root(&y);
    if (!rc && root && !(root->type == YAML_SCALAR_NODE && !root->data.scalar.length))
        rc = iotgw_yaml_check_keys(&y, root, "", keys, &diag);
    char **slots[STRINGS] = {&s->hostname,     &s->listen,   &s->amqps,          &s->mqtts,
                             &s->cert,         &s->key,      &s->registry,       &s->blob_endpoint,
                             &s->blob_account, &s->blob_key, &s->blob_container, &s->blob_ca};
    for (int i = 0; !rc && i < STRINGS; i++) {
        yaml_node_t *n = iotgw_yaml_get(&y, root, keys[i]);
        const char *v = n ? iotgw_yaml_text(&y, n, keys[i], &diag) : NULL;
        if (n && !v)
            rc = IOTGW_ERR_CONFIG;
        else if (v)
            set(slots[i], v);
    }
    for (int i = 0; !rc && i < NUMBERS; i++) {
        yaml_node_t *n = iotgw_yaml_get(&y, root, number_options[i].key);
        if (n && !s->numbers[i])
            rc = iotgw_yaml_int(&y, n, number_options[i].key, number_options[i].min, number_options[i].max,
                                &s->numbers[i], &diag);
    }
    if (rc)
        fprintf(stderr, "iothub-emulator: %s\n", diag.text);
    iotgw_yaml_free(&y); /* also after a failed load, which leaves it empty */
    return rc;
}

/* The command line into s; -1 to go on, else the exit status (help, version, errors). */
static int parse_options(int argc, char **argv, settings *s, const char **config, int *admin)
{
    static const struct option opts[] = {
        {"hostname", required_argument, 0, 'H'},
        {"listen", required_argument, 0, 'l'},
        {"amqps", required_argument, 0, 'a'},
        {"mqtts", required_argument, 0, 'm'},
        {"cert", required_argument, 0, 'c'},
        {"key", required_argument, 0, 'k'},
        {"registry", required_argument, 0, 'r'},
        {"blob-endpoint", required_argument, 0, BLOB_OPTION + 7},
        {"blob-account", required_argument, 0, BLOB_OPTION + 8},
        {"blob-key", required_argument, 0, BLOB_OPTION + 9},
        {"blob-container", required_argument, 0, BLOB_OPTION + 10},
        {"blob-ca", required_argument, 0, BLOB_OPTION + 11},
        {"max-tokens", required_argument, 0, NUMBER_OPTION + MAX_TOKENS},
        {"partitions", required_argument, 0, NUMBER_OPTION + PARTITIONS},
        {"retention-messages", required_argument, 0, NUMBER_OPTION + RETENTION_MESSAGES},
        {"retention-bytes", required_argument, 0, NUMBER_OPTION + RETENTION_BYTES},
        {"d2c-limit", required_argument, 0, NUMBER_OPTION + D2C_LIMIT},
        {"c2d-lock-timeout", required_argument, 0, NUMBER_OPTION + C2D_LOCK},
        {"c2d-ttl", required_argument, 0, NUMBER_OPTION + C2D_TTL},
        {"config", required_argument, 0, 'f'},
        {"admin", no_argument, 0, 'A'},
        {"stream-redirect", no_argument, 0, 'R'},
        {"log-format", required_argument, 0, 'L'},
        {"version", no_argument, 0, 'V'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'H': replace(&s->hostname, optarg); break;
        case 'l': replace(&s->listen, optarg); break;
        case 'a': replace(&s->amqps, optarg); break;
        case 'm': replace(&s->mqtts, optarg); break;
        case 'c': replace(&s->cert, optarg); break;
        case 'k': replace(&s->key, optarg); break;
        case 'r': replace(&s->registry, optarg); break;
        case BLOB_OPTION + 7: replace(&s->blob_endpoint, optarg); break;
        case BLOB_OPTION + 8: replace(&s->blob_account, optarg); break;
        case BLOB_OPTION + 9: replace(&s->blob_key, optarg); break;
        case BLOB_OPTION + 10: replace(&s->blob_container, optarg); break;
        case BLOB_OPTION + 11: replace(&s->blob_ca, optarg); break;
        case 'f': *config = optarg; break;
        case 'A': *admin = 1; break;
        case 'R': s->stream_redirect = 1; break;
        case 'L': {
            iotgw_log_format format;
            if (iotgw_log_format_parse(optarg, &format)) {
                fprintf(stderr, "iothub-emulator: --log-format must be text or json\n");
                return 2;
            }
            iotgw_log_set_format(format);
            break;
        }
        case 'V': printf("iothub-emulator %s\n", PACKAGE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: {
            int i = o - NUMBER_OPTION;
            if (i < 0 || i >= NUMBERS) {
                usage(stderr);
                return 2;
            }
            char *end;
            errno = 0;
            s->numbers[i] = strtoll(optarg, &end, 10);
            if (errno || *end || end == optarg || s->numbers[i] < number_options[i].min ||
                s->numbers[i] > number_options[i].max) {
                fprintf(stderr, "iothub-emulator: --%s must be %" PRId64 "..%" PRId64 "\n",
                        number_options[i].option, number_options[i].min, number_options[i].max);
                return 2;
            }
            break;
        }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "iothub-emulator: unexpected argument \"%s\" (see --help)\n", argv[optind]);
        return 2;
    }
    return -1;
}

/* Run the hub with the settings until SIGINT or SIGTERM; the exit status. */
static int run(settings *sp, int admin)
{
    set(&sp->hostname, "localhost");
    set(&sp->listen, "127.0.0.1:443");
    set(&sp->amqps, "127.0.0.1:5671");
    set(&sp->mqtts, "127.0.0.1:8883");
    const settings s = *sp; /* main frees the strings */
    if (!s.cert || !s.key) {
        fprintf(stderr, "iothub-emulator: --cert and --key are required (make throw-away ones with "
                        "iothub-emulator-certs DIR)\n");
        return 2;
    }
    int blob_settings = !!s.blob_endpoint + !!s.blob_account + !!s.blob_key + !!s.blob_container;
    if ((blob_settings && blob_settings < 4) || (s.blob_ca && !s.blob_endpoint)) {
        fprintf(stderr, "iothub-emulator: file upload needs --blob-endpoint, --blob-account, --blob-key and "
                        "--blob-container together (--blob-ca with them)\n");
        return 2;
    }
    emu_hub_options ho = {.hostname = s.hostname,
                          .cert_file = s.cert,
                          .key_file = s.key,
                          .max_tokens = (int)s.numbers[MAX_TOKENS],
                          .partitions = (int)s.numbers[PARTITIONS],
                          .retention_messages = (size_t)s.numbers[RETENTION_MESSAGES],
                          .retention_bytes = (size_t)s.numbers[RETENTION_BYTES],
                          .d2c_limit = (int)s.numbers[D2C_LIMIT],
                          .c2d_lock_timeout_s = (int)s.numbers[C2D_LOCK],
                          .c2d_ttl_s = (int)s.numbers[C2D_TTL],
                          .admin = admin,
                          .stream_redirect = s.stream_redirect,
                          .blob_endpoint = s.blob_endpoint,
                          .blob_account = s.blob_account,
                          .blob_key = s.blob_key,
                          .blob_container = s.blob_container,
                          .blob_ca_file = s.blob_ca,
                          .on_http = emu_rest_on_request};
    char *listen_addr = NULL, *amqps_addr = NULL, *mqtts_addr = NULL;
    emu_registry *reg = NULL;
    iotgw_loop *loop = NULL;
    emu_hub *hub = NULL;
    int rc = 1;
    if (strcmp(s.listen, "off") && split_addr(s.listen, &listen_addr, &ho.listen_port)) {
        fprintf(stderr, "iothub-emulator: --listen wants ADDR:PORT, e.g. 127.0.0.1:443, not \"%s\"\n",
                s.listen);
        rc = 2;
        goto out;
    }
    if (strcmp(s.amqps, "off") && split_addr(s.amqps, &amqps_addr, &ho.amqps_port)) {
        fprintf(stderr, "iothub-emulator: --amqps wants ADDR:PORT, e.g. 127.0.0.1:5671, not \"%s\"\n",
                s.amqps);
        rc = 2;
        goto out;
    }
    if (strcmp(s.mqtts, "off") && split_addr(s.mqtts, &mqtts_addr, &ho.mqtts_port)) {
        fprintf(stderr, "iothub-emulator: --mqtts wants ADDR:PORT, e.g. 127.0.0.1:8883, not \"%s\"\n",
                s.mqtts);
        rc = 2;
        goto out;
    }
    ho.listen_addr = listen_addr;
    ho.amqps_addr = amqps_addr;
    ho.mqtts_addr = mqtts_addr;

    iotgw_diag diag = {0};
    if (s.registry ? emu_registry_load(s.registry, &reg, &diag) : !(reg = emu_registry_new())) {
        fprintf(stderr, "iothub-emulator: registry: %s\n", s.registry ? diag.text : "out of memory");
        goto out;
    }
    loop = iotgw_loop_new(&(iotgw_loop_options){0}, &diag);
    if (!loop) {
        fprintf(stderr, "iothub-emulator: %s\n", diag.text);
        goto out;
    }
    if (emu_hub_new(loop, reg, &ho, &hub, &diag)) {
        fprintf(stderr, "iothub-emulator: cannot start: %s\n", diag.text);
        hub = NULL;
        goto out;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    emu_policy *owner = emu_registry_policy(reg, "iothubowner");
    int wss_port = emu_hub_wss_port(hub), amqps_port = emu_hub_amqps_port(hub);
    if (wss_port)
        printf("listening: https+wss %s:%d (AMQP over WebSocket at " IOTGW_WS_DEFAULT_PATH ")\n", listen_addr,
               wss_port);
    if (amqps_port)
        printf("listening: amqps %s:%d\n", amqps_addr, amqps_port);
    if (emu_hub_mqtts_port(hub))
        printf("listening: mqtts %s:%d\n", mqtts_addr, emu_hub_mqtts_port(hub));
    if (wss_port)
        printf("listening: mqtt over wss %s:%d at " IOTGW_WS_DEFAULT_PATH "\n", listen_addr, wss_port);
    printf("hub: %s, %d devices and modules%s%s\n", s.hostname, emu_registry_count(reg),
           s.registry ? ", registry " : "", s.registry ? s.registry : " (in memory)");
    printf("telemetry stream: messages/events/ConsumerGroups/$Default/Partitions/0..%d, %s event hub %s\n",
           emu_hub_partitions(hub) - 1,
           s.stream_redirect && amqps_port ? "redirected (amqp:link:redirect) to" : "also as",
           emu_hub_event_hub(hub));
    if (s.blob_endpoint)
        printf("file upload: container %s of account %s at %s\n", s.blob_container, s.blob_account,
               s.blob_endpoint);
    if (owner)
        printf("service connection string: HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s\n",
               s.hostname, owner->name, owner->primary_key);
    if (owner && amqps_port) /* as `az iot hub connection-string show --default-eventhub` gives it */
        printf("event hub-compatible connection string: Endpoint=sb://%s/;SharedAccessKeyName=%s;"
               "SharedAccessKey=%s;EntityPath=%s\n",
               s.hostname, owner->name, owner->primary_key, emu_hub_event_hub(hub));
    fflush(stdout);
    while (!stopping)
        if (iotgw_loop_run(loop, 1000) < 0)
            break;
    iotgw_log(IOTGW_LOG_INFO, "stopping");
    rc = 0;
out:
    if (hub)
        emu_hub_free(hub);
    iotgw_loop_free(loop);
    if (reg)
        emu_registry_free(reg);
    free(listen_addr);
    free(amqps_addr);
    free(mqtts_addr);
    return rc;
}

int main(int argc, char **argv)
{
    settings s = {0};
    const char *config = NULL;
    int admin = 0;
    int rc = parse_options(argc, argv, &s, &config, &admin);
    if (rc < 0)
        rc = config && load_config(config, &s) ? 1 : run(&s, admin);
    char **all[STRINGS] = {&s.hostname,     &s.listen,   &s.amqps,          &s.mqtts,
                           &s.cert,         &s.key,      &s.registry,       &s.blob_endpoint,
                           &s.blob_account, &s.blob_key, &s.blob_container, &s.blob_ca};
    for (int i = 0; i < STRINGS; i++)
        free(*all[i]);
    return rc;
}
