/* The ops endpoint (ops.listen, docs/operations.md): plain HTTP on the gateway's loop.
 *
 *   GET /metrics       Prometheus text: what the gateway counts (gw_stats), the upstream
 *                      pool's totals, descriptors; rendered at each scrape, so counting
 *                      costs an increment where it happens and nothing else
 *   GET /healthz       200 while the loop turns (its 1 s tick ran lately)
 *   GET /readyz        200 once the listeners are up and a hub connection is open; 503
 *                      with the reason otherwise (draining, the hub's last failure);
 *                      with fleet.shard, the shard this gateway serves
 *   GET /devices       the connected devices as JSON; /devices/{id} one of them. They name
 *                      devices and addresses: with ops.token set, only with
 *                      "Authorization: Bearer {token}"; without, only to loopback clients.
 */
#include <dirent.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "gateway/gateway_internal.h"
#include "transport/log.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

#define HEALTH_LATE_MS 5000 /* the 1 s tick later than this: the loop is stuck */

struct gw_ops {
    iotgw_listener *listener;
};

static const double method_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,   0.5,   1,      2.5,   5,    10,    30};

void gw_stats_init(gw_stats *st)
{
    memset(st, 0, sizeof *st);
    size_t n = sizeof method_bounds / sizeof *method_bounds;
    iotgw_histogram_init(&st->method_seconds, method_bounds, n);
    iotgw_histogram_init(&st->method_device_seconds, method_bounds, n);
}

/* ------------------------------------------------------------------ /metrics */

static const char *enum_name(const ProtobufCEnumDescriptor *d, int value)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, value);
    return v ? v->name : "UNSPECIFIED";
}

static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own */
}

static void render_metrics(iotgw_gateway *g, iotgw_prom *w)
{
    const gw_stats *st = &g->stats;
    iotgw_prom_family(w, "iotgw_build_info", "gauge", "the gateway's version");
    iotgw_prom_value(w, "iotgw_build_info", "version", PACKAGE_VERSION, 1);
    /* fleet.shard: the part of the fleet this gateway serves */
    iotgw_prom_gauge(w, "iotgw_shard_index", "the fleet's shard this gateway serves (fleet.shard; 0 without)",
                     g->cfg->shard_index);
    iotgw_prom_gauge(w, "iotgw_shard_count", "the gateways the fleet is split over (fleet.shard; 1 without)",
                     g->cfg->shard_count);
    iotgw_prom_gauge(w, "iotgw_fleet_devices", "devices of the fleet this gateway serves (its shard's)",
                     (double)g->cfg->ndevices);

    /* downstream */
    unsigned open = 0, ready = 0;
    gw_session *s;
    IOTGW_LIST_FOREACH (s, &g->sessions, gw_session, node) {
        open++;
        ready += s->ready && !s->closing;
    }
    iotgw_prom_gauge(w, "iotgw_device_connections", "device connections open, Hello or not", open);
    iotgw_prom_gauge(w, "iotgw_devices_connected", "devices connected downstream (Welcome sent)", ready);
    iotgw_prom_counter(w, "iotgw_device_connections_total", "device connections accepted",
                       (double)st->connections);
    iotgw_prom_counter(w, "iotgw_device_welcomes_total", "Hellos answered with Welcome",
                       (double)st->welcomed);
    iotgw_prom_family(w, "iotgw_device_errors_total", "counter",
                      "Error frames the gateway sent to devices (each ends a connection), by code");
    for (int code = 0; code < GW_ERROR_CODES; code++)
        if (st->errors[code])
            iotgw_prom_value(w, "iotgw_device_errors_total", "code",
                             enum_name(&iotgw__error_code__descriptor, code), (double)st->errors[code]);
    if (g->mqtt) { /* devices.mqtt */
        static const char *const codes[] = {"0", "1", "2", "3", "4", "5"};
        uint64_t mopen[2], maccepted[2];
        iotgw_hubmqtt_endpoint_counts(g->mqtt, mopen, maccepted);
        iotgw_prom_gauge(w, "iotgw_mqtt_connections", "MQTT device connections open, CONNECTed or not",
                         (double)(mopen[0] + mopen[1]));
        iotgw_prom_family(w, "iotgw_mqtt_connacks_total", "counter",
                          "CONNACKs sent to MQTT devices, by return code (0 accepted, 5 not authorized)");
        for (int code = 0; code < IOTGW_HUBMQTT_CONNACK_CODES; code++)
            iotgw_prom_value(w, "iotgw_mqtt_connacks_total", "code", codes[code],
                             (double)st->mqtt_connack[code]);
    }
    uint64_t near_limit = 0, paused = 0;
    for (size_t i = 0; i < g->nlisteners; i++) {
        uint64_t a, b;
        iotgw_stream_listener_refusals(g->listeners[i], &a, &b);
        near_limit += a, paused += b;
    }
    iotgw_prom_family(w, "iotgw_connection_refusals_total", "counter",
                      "device connections refused before any frame, by cause");
    iotgw_prom_value(w, "iotgw_connection_refusals_total", "cause", "fd_reserve", (double)near_limit);
    iotgw_prom_value(w, "iotgw_connection_refusals_total", "cause", "fd_exhausted", (double)paused);
    iotgw_prom_value(w, "iotgw_connection_refusals_total", "cause", "tls_client_certificate",
                     (double)iotgw_tls_client_cert_refusals());

    /* telemetry */
    iotgw_prom_counter(w, "iotgw_telemetry_received_total", "Telemetry frames received from devices",
                       (double)st->telemetry);
    iotgw_prom_counter(w, "iotgw_telemetry_received_bytes_total", "bytes of the Telemetry frames received",
                       (double)st->telemetry_bytes);
    iotgw_prom_counter(w, "iotgw_telemetry_acknowledged_total",
                       "telemetry acknowledged to devices: the hub has it", (double)st->acked);
    iotgw_prom_family(w, "iotgw_telemetry_nacked_total", "counter", "telemetry nacked to devices, by reason");
    for (int r = 1; r < GW_NACK_REASONS; r++)
        iotgw_prom_value(w, "iotgw_telemetry_nacked_total", "reason",
                         enum_name(&iotgw__nack_reason__descriptor, r), (double)st->nacked[r]);
    iotgw_upstream_totals t;
    iotgw_upstream_totals_get(g->up, &t);
    iotgw_prom_family(w, "iotgw_telemetry_held_messages", "gauge",
                      "telemetry held for the hub: waiting, or sent and not yet settled");
    iotgw_prom_value(w, "iotgw_telemetry_held_messages", "where", "queued", (double)t.queued);
    iotgw_prom_value(w, "iotgw_telemetry_held_messages", "where", "in_flight", (double)t.in_flight);
    iotgw_prom_gauge(w, "iotgw_telemetry_held_bytes", "bytes of the telemetry held for the hub",
                     (double)t.queued_bytes);
    iotgw_prom_gauge(w, "iotgw_telemetry_oldest_held_seconds",
                     "age of the oldest telemetry held; 0 when none", (double)t.oldest_ms / 1000);
    iotgw_prom_counter(w, "iotgw_telemetry_throttled_total",
                       "messages the hub refused as throttled, kept and sent again", (double)t.throttled);
    if (g->store) { /* docs/store.md */
        iotgw_store_stats ss;
        iotgw_store_stats_get(g->store, &ss);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
        iotgw_prom_gauge(w, "iotgw_store_messages", "telemetry in the store, not yet accepted by the hub",
                         (double)ss.messages);
        iotgw_prom_gauge(w, "iotgw_store_bytes", "bytes of those messages", (double)ss.bytes);
        iotgw_prom_gauge(w, "iotgw_store_disk_bytes", "the store's segment files on disk",
                         (double)ss.disk_bytes);
        iotgw_prom_gauge(w, "iotgw_store_devices", "devices with messages in the store", ss.devices);
        iotgw_prom_gauge(w, "iotgw_store_oldest_seconds",
                         "age of the oldest message in the store; 0 when none",
                         ss.oldest_ms ? (double)(now_ms - ss.oldest_ms) / 1000 : 0);
        iotgw_prom_counter(w, "iotgw_store_forwarded_total", "stored messages the hub accepted",
                           (double)st->store_forwarded);
        iotgw_prom_family(w, "iotgw_store_dropped_total", "counter",
                          "stored messages not sent: past store.ttlSeconds, dropped for room "
                          "(store.onFull dropOldest), refused for good by the hub");
        iotgw_prom_value(w, "iotgw_store_dropped_total", "reason", "expired", (double)ss.expired);
        iotgw_prom_value(w, "iotgw_store_dropped_total", "reason", "full", (double)ss.dropped_full);
        iotgw_prom_value(w, "iotgw_store_dropped_total", "reason", "rejected", (double)st->store_rejected);
        iotgw_prom_counter(w, "iotgw_store_refused_total",
                           "telemetry nacked NACK_RETRY_LATER because the store was full or could not write",
                           (double)st->store_nacked);
        iotgw_prom_counter(w, "iotgw_store_damaged_records_total",
                           "records found corrupted (skipped) or torn (cut off) when the store was opened",
                           (double)(ss.corrupt_records + (ss.torn_bytes ? 1 : 0)));
    }

    /* the hub */
    static const char *const dev_states[] = {NULL, "waiting", "authenticating", "online", "failed"};
    iotgw_prom_family(w, "iotgw_hub_devices", "gauge", "devices on the hub side, by state");
    for (int i = 1; i <= 4; i++)
        iotgw_prom_value(w, "iotgw_hub_devices", "state", dev_states[i], t.devices_by_state[i]);
    static const char *const conn_states[] = {NULL, "connecting", "open", "backoff"};
    iotgw_prom_family(w, "iotgw_hub_connections", "gauge", "AMQP connections to the hub, by state");
    for (int i = 1; i <= 3; i++)
        iotgw_prom_value(w, "iotgw_hub_connections", "state", conn_states[i], t.connections_by_state[i]);
    iotgw_prom_counter(w, "iotgw_hub_reconnects_total", "hub connections lost (then reopened)",
                       (double)t.reconnects);
    iotgw_prom_counter(w, "iotgw_hub_tokens_accepted_total", "put-tokens the hub accepted, renewals included",
                       (double)t.tokens);
    iotgw_prom_family(
        w, "iotgw_hub_refusals_total", "counter",
        "devices the hub refused: passing (throttled, a link detached, a token expired), identity "
        "(401/403, for good when repeated), for_good (not registered)");
    static const char *const kinds[] = {"passing", "identity", "for_good"};
    for (int i = 0; i < 3; i++)
        iotgw_prom_value(w, "iotgw_hub_refusals_total", "kind", kinds[i], (double)t.refusals[i]);

    /* direct methods, twin, C2D */
    iotgw_prom_family(w, "iotgw_direct_methods_total", "counter",
                      "direct methods answered to the hub, by status class");
    static const char *const classes[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 0; i < 6; i++)
        if (st->methods[i] || i == 2 || i == 4 || i == 5)
            iotgw_prom_value(w, "iotgw_direct_methods_total", "status", classes[i], (double)st->methods[i]);
    iotgw_prom_family(
        w, "iotgw_direct_method_seconds", "histogram",
        "from the hub's request to the answer the gateway sent back (the device's share included)");
    iotgw_prom_histogram(w, "iotgw_direct_method_seconds", NULL, 0, &st->method_seconds);
    iotgw_prom_family(w, "iotgw_direct_method_device_seconds", "histogram",
                      "from the request to the device to its answer (the device's share)");
    iotgw_prom_histogram(w, "iotgw_direct_method_device_seconds", NULL, 0, &st->method_device_seconds);
    iotgw_prom_counter(w, "iotgw_twin_requests_total", "twin GETs and reported patches from devices",
                       (double)st->twin_requests);
    iotgw_prom_family(w, "iotgw_twin_results_total", "counter", "twin answers to devices, by result");
    iotgw_prom_value(w, "iotgw_twin_results_total", "result", "ok", (double)st->twin_ok);
    iotgw_prom_value(w, "iotgw_twin_results_total", "result", "failed", (double)st->twin_failed);
    iotgw_prom_counter(w, "iotgw_twin_desired_updates_total", "desired-property updates passed to devices",
                       (double)st->desired_updates);
    iotgw_prom_family(w, "iotgw_c2d_messages_total", "counter", "cloud-to-device messages, by what happened");
    iotgw_prom_value(w, "iotgw_c2d_messages_total", "event", "delivered", (double)st->c2d_delivered);
    iotgw_prom_value(w, "iotgw_c2d_messages_total", "event", "completed", (double)st->c2d_completed);
    iotgw_prom_value(w, "iotgw_c2d_messages_total", "event", "rejected", (double)st->c2d_rejected);
    iotgw_prom_value(w, "iotgw_c2d_messages_total", "event", "abandoned", (double)st->c2d_abandoned);

    /* the process */
    struct rlimit rl;
    iotgw_prom_gauge(w, "iotgw_open_fds", "file descriptors open", (double)open_fds());
    iotgw_prom_gauge(w, "iotgw_fd_limit", "the soft RLIMIT_NOFILE",
                     getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (double)rl.rlim_cur : -1);
}

/* ------------------------------------------------------------------ /readyz, /devices */

/* NULL when ready, else why not. */
static const char *not_ready(iotgw_gateway *g, char *why, size_t size)
{
    if (g->draining)
        return "draining: the gateway is stopping";
    if (g->nlisteners < g->cfg->nlisten)
        return "the device listeners are not all up";
    iotgw_upstream_totals t;
    iotgw_upstream_totals_get(g->up, &t);
    if (t.connections_by_state[IOTGW_CONNECTION_OPEN])
        return NULL;
    snprintf(why, size, "the hub is not reachable%s%s", t.last_failure[0] ? ": " : " yet",
             t.last_failure[0] ? t.last_failure : "");
    return why;
}

static json_t *device_json(gw_session *s)
{
    json_t *j = json_pack("{s:s,s:s,s:s,s:b,s:I}", "id", s->device_id, "address", gw_session_peer(s), "protocol",
                          s->mqtt ? "mqtt" : s->amqp ? "amqp" : "protobuf", "closing", s->closing, "inFlight",
                          (json_int_t)s->in_flight);
    if (s->up && j) {
        iotgw_device_info info;
        iotgw_upstream_device_info(s->up, &info);
        json_t *hub =
            json_pack("{s:s,s:i,s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "state",
                      iotgw_device_state_name(info.state), "connection", info.connection, "lastError",
                      info.reason, "refusedForGood", info.refused, "queued", (json_int_t)info.queued,
                      "inFlight", (json_int_t)info.in_flight, "accepted", (json_int_t)info.accepted,
                      "rejected", (json_int_t)info.rejected, "retried", (json_int_t)info.retried, "throttled",
                      (json_int_t)info.throttled, "tokensAccepted", (json_int_t)info.authentications);
        json_object_set_new(j, "hub", hub ? hub : json_null());
    }
    return j;
}

static int loopback(const char *peer)
{
    return !strncmp(peer, "127.", 4) || !strcmp(peer, "::1") || !strncmp(peer, "::ffff:127.", 11);
}

/* May this request see the device view? */
static int may_see_devices(iotgw_gateway *g, iotgw_http_request *req)
{
    const char *token = g->cfg->ops_token;
    if (!token)
        return loopback(iotgw_http_peer(req));
    const char *auth = iotgw_http_header(req, "authorization");
    size_t n = strlen(token);
    return auth && !strncmp(auth, "Bearer ", 7) && strlen(auth + 7) == n &&
           CRYPTO_memcmp(auth + 7, token, n) == 0;
}

static void answer_text(iotgw_http_request *req, int status, const char *text)
{
    iotgw_http_respond(req, status, "text/plain; charset=utf-8", NULL, text, strlen(text));
}

static void answer_json(iotgw_http_request *req, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        answer_text(req, 500, "out of memory\n");
        return;
    }
    iotgw_http_respond(req, status, "application/json", NULL, text, strlen(text));
    free(text);
}

static void on_http(iotgw_http_request *req, void *ctx)
{
    iotgw_gateway *g = ctx;
    const char *why = NULL, *path = iotgw_http_path(req);
    iotgw_http_refusal refusal = iotgw_http_refused(req, &why);
    if (refusal) {
        char text[200];
        snprintf(text, sizeof text, "%s\n", why);
        answer_text(req, (int)refusal, text);
        return;
    }
    if (strcmp(iotgw_http_method(req), "GET")) {
        answer_text(req, 405, "the ops endpoint answers GET only\n");
        return;
    }
    if (!strcmp(path, "/metrics")) {
        iotgw_prom w = {0};
        render_metrics(g, &w);
        size_t len = 0;
        char *text = iotgw_prom_take(&w, &len);
        if (text)
            iotgw_http_respond(req, 200, IOTGW_PROM_CONTENT_TYPE, NULL, text, len);
        else
            answer_text(req, 500, "out of memory\n");
        free(text);
    } else if (!strcmp(path, "/healthz")) {
        int64_t late = iotgw_loop_now_ms(g->loop) - g->last_tick_ms;
        char text[100];
        snprintf(text, sizeof text, late > HEALTH_LATE_MS ? "the gateway's tick is %lld ms late\n" : "ok\n",
                 (long long)late);
        answer_text(req, late > HEALTH_LATE_MS ? 503 : 200, text);
    } else if (!strcmp(path, "/readyz")) {
        char buf[300], text[360], shard[64] = "";
        const char *no = not_ready(g, buf, sizeof buf);
        if (g->cfg->shard_given)
            snprintf(shard, sizeof shard, " (shard %u of %u)", g->cfg->shard_index, g->cfg->shard_count);
        snprintf(text, sizeof text, "%s%s%s%s\n", no ? "not ready" : "ready", shard, no ? ": " : "",
                 no ? no : "");
        answer_text(req, no ? 503 : 200, text);
    } else if (!strcmp(path, "/devices") || !strncmp(path, "/devices/", 9)) {
        if (!may_see_devices(g, req)) {
            answer_text(req, g->cfg->ops_token ? 401 : 403,
                        g->cfg->ops_token
                            ? "the device view needs Authorization: Bearer {ops.token}\n"
                            : "the device view answers loopback clients only (or set ops.token)\n");
            return;
        }
        if (!path[8]) {
            json_t *list = json_array();
            gw_session *s;
            IOTGW_LIST_FOREACH (s, &g->sessions, gw_session, node)
                if (list && s->device_id && s->ready)
                    json_array_append_new(list, device_json(s));
            answer_json(req, 200, list);
            return;
        }
        const iotgw_config_device *d = iotgw_config_device_find(g->cfg, path + 9);
        gw_session *s = d ? g->by_device[d - g->cfg->devices] : NULL;
        if (!s)
            answer_json(req, 404, json_pack("{s:s}", "error", d ? "not connected" : "not in the fleet"));
        else
            answer_json(req, 200, device_json(s));
    } else {
        answer_text(req, 404, "no such page: /metrics, /healthz, /readyz, /devices, /devices/{id}\n");
    }
}

/* ------------------------------------------------------------------ life */

int gw_ops_start(iotgw_gateway *g, iotgw_diag *diag)
{
    const iotgw_config_listen *at = &g->cfg->ops_listen;
    if (!at->address)
        return 0;
    g->ops = calloc(1, sizeof *g->ops);
    if (!g->ops)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    iotgw_listener_options lo = {
        .kind = IOTGW_TRANSPORT_HTTP,
        .address = at->address,
        .port = at->port,
        .on_http = on_http,
        .ctx = g,
        .max_http_body = 1, /* GET only */
    };
    iotgw_diag d = {0};
    int rc = iotgw_listener_new(g->loop, &lo, &g->ops->listener, &d);
    if (rc) {
        free(g->ops);
        g->ops = NULL;
        return iotgw_diag_fail(diag, rc, "ops.listen %s:%d: %s", at->address, at->port, d.text);
    }
    if (!loopback(at->address) && !g->cfg->ops_token)
        iotgw_log(IOTGW_LOG_WARN,
                  "ops: listening on %s without ops.token: /devices answers loopback clients only",
                  at->address);
    return 0;
}

int gw_ops_port(const iotgw_gateway *g)
{
    return g->ops ? iotgw_listener_port(g->ops->listener) : 0;
}

void gw_ops_stop(iotgw_gateway *g)
{
    if (!g->ops)
        return;
    iotgw_listener_free(g->ops->listener);
    free(g->ops);
    g->ops = NULL;
}
