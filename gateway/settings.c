/* The table of iotgw.yaml's scalar settings (gateway/settings.h). */
#include "gateway/settings.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/store.h"
#include "gateway/upstream.h"

#define AT(field) offsetof(iotgw_config, field)

static const char *const transports[] = {"amqp-ws", "amqps", NULL};
static const int transport_values[] = {IOTGW_TRANSPORT_WSS, IOTGW_TRANSPORT_AMQPS};
static const char *const encodings[] = {"protobuf", "json", NULL};
static const int encoding_values[] = {IOTGW_HUBMSG_PROTOBUF, IOTGW_HUBMSG_JSON};
static const char *const log_formats[] = {"text", "json", NULL};
static const char *const on_full_words[] = {"rejectNew", "dropOldest", NULL};
static const int on_full_values[] = {IOTGW_STORE_REJECT_NEW, IOTGW_STORE_DROP_OLDEST};
static const char *const sync_words[] = {"fsync", "os", NULL};
static const int sync_values[] = {IOTGW_STORE_SYNC_FSYNC, IOTGW_STORE_SYNC_OS};
static const int log_format_values[] = {0, 1};

/* Hub settings are read at start: the upstream and its connections are made with them.
 * So are the telemetry bounds the upstream enforces. */
const iotgw_setting iotgw_settings[] = {
    {"gatewayId", IOTGW_SETTING_TEXT, AT(gateway_id), 0, 0, 0, NULL, NULL, 1},
    {"hub.hostName", IOTGW_SETTING_TEXT, AT(hub_host), 0, 0, 0, NULL, NULL, 0},
    {"hub.connectHost", IOTGW_SETTING_TEXT, AT(hub_connect_host), 0, 0, 0, NULL, NULL, 0},
    {"hub.transport", IOTGW_SETTING_CHOICE, AT(hub_transport), 0, 0, IOTGW_TRANSPORT_WSS, transports,
     transport_values, 0},
    {"hub.port", IOTGW_SETTING_INT, AT(hub_port), 1, 65535, 0, NULL, NULL, 0}, /* 0: the transport's */
    {"hub.caFile", IOTGW_SETTING_PATH, AT(hub_ca_file), 0, 0, 0, NULL, NULL, 0},
    {"hub.insecureSkipVerify", IOTGW_SETTING_BOOL, AT(tls_insecure), 0, 1, 0, NULL, NULL, 0},
    {"hub.proxy", IOTGW_SETTING_TEXT, AT(hub_proxy), 0, 0, 0, NULL, NULL, 0},
    {"hub.tokenLifetimeSeconds", IOTGW_SETTING_UINT, AT(token_lifetime_s), 60, 86400 * 365,
     IOTGW_UPSTREAM_DEFAULT_TOKEN_LIFETIME_S, NULL, NULL, 0},
    {"hub.devicesPerConnection", IOTGW_SETTING_UINT, AT(devices_per_connection), 1, 1000, 0, NULL, NULL,
     0}, /* 0: the transport's (the upstream's) */
    {"hub.authRate", IOTGW_SETTING_RATE, AT(auth_rate), 1, 100000, IOTGW_UPSTREAM_DEFAULT_AUTH_RATE, NULL,
     NULL, 0},
    {"devices.helloTimeoutMs", IOTGW_SETTING_UINT, AT(hello_timeout_ms), 100, 600000, 10000, NULL, NULL, 1},
    {"devices.maxFrameSize", IOTGW_SETTING_UINT, AT(max_frame_size), 1024, 16 * 1024 * 1024, 65536, NULL,
     NULL, 1},
    {"devices.maxInFlight", IOTGW_SETTING_UINT, AT(max_in_flight), 1, 10000, 32, NULL, NULL, 1},
    {"devices.keepaliveSeconds", IOTGW_SETTING_UINT, AT(keepalive_s), 1, 3600, 30, NULL, NULL, 1},
    {"devices.queuePerDevice", IOTGW_SETTING_UINT, AT(device_queue), 1, 100000,
     IOTGW_UPSTREAM_DEFAULT_DEVICE_QUEUE, NULL, NULL, 0},
    {"devices.queueTotalBytes", IOTGW_SETTING_UINT64, AT(queue_total_bytes), 4096, INT64_C(1) << 40,
     IOTGW_UPSTREAM_DEFAULT_QUEUE_BYTES, NULL, NULL, 0},
    {"devices.deliveryTimeoutSeconds", IOTGW_SETTING_UINT, AT(delivery_timeout_s), 1, 86400,
     IOTGW_UPSTREAM_DEFAULT_DELIVERY_TIMEOUT_MS / 1000, NULL, NULL, 0},
    {"telemetry.encoding", IOTGW_SETTING_CHOICE, AT(encoding), 0, 0, IOTGW_HUBMSG_PROTOBUF, encodings,
     encoding_values, 1},
    {"log.format", IOTGW_SETTING_CHOICE, AT(log_json), 0, 0, 0, log_formats, log_format_values, 1},
    /* the store is opened at start: docs/store.md */
    {"store.path", IOTGW_SETTING_TEXT, AT(store_path), 0, 0, 0, NULL, NULL, 0},
    {"store.maxBytes", IOTGW_SETTING_UINT64, AT(store_max_bytes), INT64_C(1) << 20, INT64_C(1) << 50,
     (int64_t)IOTGW_STORE_DEFAULT_MAX_BYTES, NULL, NULL, 0},
    {"store.ttlSeconds", IOTGW_SETTING_UINT, AT(store_ttl_s), 1, 30 * 86400, IOTGW_STORE_DEFAULT_TTL_S, NULL,
     NULL, 0},
    {"store.onFull", IOTGW_SETTING_CHOICE, AT(store_on_full), 0, 0, IOTGW_STORE_REJECT_NEW, on_full_words,
     on_full_values, 0},
    {"store.sync", IOTGW_SETTING_CHOICE, AT(store_sync), 0, 0, IOTGW_STORE_SYNC_FSYNC, sync_words,
     sync_values, 0},
    {"store.commitIntervalMs", IOTGW_SETTING_UINT, AT(store_commit_ms), 1, 1000,
     IOTGW_STORE_DEFAULT_COMMIT_MS, NULL, NULL, 0},
    {"store.segmentBytes", IOTGW_SETTING_UINT64, AT(store_segment_bytes), INT64_C(1) << 20, INT64_C(1) << 32,
     (int64_t)IOTGW_STORE_DEFAULT_SEGMENT_BYTES, NULL, NULL, 0},
};
const size_t iotgw_settings_count = sizeof iotgw_settings / sizeof iotgw_settings[0];

static int in_section(const iotgw_setting *s, const char *section)
{
    const char *dot = strchr(s->name, '.');
    if (!*section)
        return !dot;
    size_t n = strlen(section);
    return dot && (size_t)(dot - s->name) == n && !strncmp(s->name, section, n);
}

const iotgw_setting *iotgw_settings_next(const char *section, size_t *i)
{
    while (*i < iotgw_settings_count) {
        const iotgw_setting *s = &iotgw_settings[(*i)++];
        if (in_section(s, section))
            return s;
    }
    return NULL;
}

const char *iotgw_setting_key(const iotgw_setting *s)
{
    const char *dot = strchr(s->name, '.');
    return dot ? dot + 1 : s->name;
}

static void *field(const iotgw_setting *s, const iotgw_config *c)
{
    return (char *)c + s->offset;
}

/* A number, a bool or a choice's value as one integer. */
static int64_t number(const iotgw_setting *s, const iotgw_config *c)
{
    void *p = field(s, c);
    switch (s->type) {
    case IOTGW_SETTING_UINT: return *(unsigned *)p;
    case IOTGW_SETTING_INT:
    case IOTGW_SETTING_BOOL:
    case IOTGW_SETTING_CHOICE: return *(int *)p;
    case IOTGW_SETTING_UINT64: return (int64_t) * (uint64_t *)p;
    case IOTGW_SETTING_RATE: return (int64_t) * (double *)p;
    default: return 0;
    }
}

static void set_number(const iotgw_setting *s, iotgw_config *c, int64_t v)
{
    void *p = field(s, c);
    switch (s->type) {
    case IOTGW_SETTING_UINT: *(unsigned *)p = (unsigned)v; break;
    case IOTGW_SETTING_INT:
    case IOTGW_SETTING_BOOL:
    case IOTGW_SETTING_CHOICE: *(int *)p = (int)v; break;
    case IOTGW_SETTING_UINT64: *(uint64_t *)p = (uint64_t)v; break;
    case IOTGW_SETTING_RATE: *(double *)p = (double)v; break;
    default: break;
    }
}

static int is_text(const iotgw_setting *s)
{
    return s->type == IOTGW_SETTING_TEXT || s->type == IOTGW_SETTING_PATH;
}

void iotgw_settings_defaults(iotgw_config *c)
{
    for (size_t i = 0; i < iotgw_settings_count; i++)
        if (!is_text(&iotgw_settings[i]))
            set_number(&iotgw_settings[i], c, iotgw_settings[i].def);
}

void iotgw_setting_format(const iotgw_setting *s, const iotgw_config *c, char *out, size_t size)
{
    if (is_text(s)) {
        const char *t = *(char **)field(s, c);
        snprintf(out, size, "%s", t ? t : "");
        return;
    }
    int64_t v = number(s, c);
    if (s->type == IOTGW_SETTING_BOOL) {
        snprintf(out, size, "%s", v ? "true" : "false");
    } else if (s->type == IOTGW_SETTING_CHOICE) {
        snprintf(out, size, "%" PRId64, v);
        for (size_t k = 0; s->words[k]; k++)
            if (s->values[k] == v)
                snprintf(out, size, "%s", s->words[k]);
    } else {
        snprintf(out, size, "%" PRId64, v);
    }
}

int iotgw_setting_is_default(const iotgw_setting *s, const iotgw_config *c)
{
    return is_text(s) ? *(char **)field(s, c) == NULL : number(s, c) == s->def;
}

int iotgw_setting_equal(const iotgw_setting *s, const iotgw_config *a, const iotgw_config *b)
{
    if (!is_text(s))
        return number(s, a) == number(s, b);
    const char *x = *(char **)field(s, a), *y = *(char **)field(s, b);
    return (!x && !y) || (x && y && !strcmp(x, y));
}

void iotgw_settings_keep_running(iotgw_config *next, iotgw_config *running,
                                 void (*changed)(const iotgw_setting *s, void *ctx), void *ctx)
{
    for (size_t i = 0; i < iotgw_settings_count; i++) {
        const iotgw_setting *s = &iotgw_settings[i];
        if (s->reload)
            continue;
        if (!iotgw_setting_equal(s, next, running) && changed)
            changed(s, ctx);
        if (is_text(s)) { /* swap: each configuration still frees its own */
            char **a = field(s, next), **b = field(s, running), *t = *a;
            *a = *b;
            *b = t;
        } else {
            set_number(s, next, number(s, running));
        }
    }
}
