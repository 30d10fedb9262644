/* The gateway: listeners, the table of connected devices, and the upstream's callbacks
 * routed to the session of the device they concern. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gateway/gateway_internal.h"
#include "gateway/settings.h"
#include "transport/heap.h"
#include "transport/log.h"

/* An upstream device's context is its session, or with a store its gw_forward (whose
 * session, if connected, borrows it). */
static gw_session *session_of(iotgw_gateway *g, iotgw_upstream_device *dev)
{
    return g->store ? gw_forward_session(gw_forward_of(dev)) : iotgw_upstream_device_context(dev);
}

static void on_outcome(iotgw_upstream_device *dev, void *msg_ctx, iotgw_outcome outcome, const char *cond,
                       const char *description, void *ctx)
{
    iotgw_gateway *g = ctx;
    if (g->store)
        gw_forward_on_outcome(gw_forward_of(dev), (uint64_t)(uintptr_t)msg_ctx, outcome, cond, description);
    else
        gw_session_on_outcome(session_of(g, dev), (uint64_t)(uintptr_t)msg_ctx, outcome, cond, description);
}

/* Methods, twins and C2D come only for a connected device's features: a backlog's
 * identity has none. */
static void on_method(iotgw_upstream_device *dev, const iotgw_method_request *req, void *ctx)
{
    gw_session *s = session_of(ctx, dev);
    if (s)
        gw_session_on_method(s, req);
}

static void on_twin(iotgw_upstream_device *dev, const iotgw_twin_response *r, void *ctx)
{
    gw_session *s = session_of(ctx, dev);
    if (s)
        gw_session_on_twin(s, r);
}

static void on_c2d(iotgw_upstream_device *dev, const iotgw_c2d_message *m, void *ctx)
{
    gw_session *s = session_of(ctx, dev);
    if (s)
        gw_session_on_c2d(s, m);
}

/* The store made a message durable, or could not: the Ack (or Nack) of the session that
 * sent it, which is the oldest waiting (on_durable comes in append order). */
static void on_durable(void *ctx, uint64_t token, int rc, const char *why)
{
    (void)token;
    iotgw_gateway *g = ctx;
    IOTGW_ASSERT(g->durable_len > 0);
    gw_durable d = g->durable[g->durable_head];
    g->durable_head = (g->durable_head + 1) % g->durable_cap;
    g->durable_len--;
    if (d.session)
        gw_session_on_durable(d.session, d.seq, rc, why);
    if (rc == 0 && d.session && d.session->fwd)
        gw_forward_pump(d.session->fwd);
}

/* A device's state at the hub changed: one line for each change an operator follows:
 * online, failed (with the hub's reason), waiting (its connection was lost, it moved, or
 * it is tried again after a failure). Authenticating is a step on the way to online and
 * not logged, so a device coming online costs one line (10,000 lines for 10,000). */
static void on_state(iotgw_upstream_device *dev, iotgw_device_state state, void *ctx)
{
    iotgw_gateway *g = ctx;
    gw_session *s = session_of(g, dev);
    if (g->store && state == IOTGW_DEVICE_ONLINE && gw_forward_of(dev))
        gw_forward_pump(gw_forward_of(dev)); /* what waited goes now */
    if (s && (s->mqtt || s->amqp) && state == IOTGW_DEVICE_FAILED)
        gw_mqtt_on_hub_failed(s); /* an SDK device's connection ends, as the hub ends it */
    if (state == IOTGW_DEVICE_AUTHENTICATING || !s || !s->device_id || !iotgw_log_enabled(IOTGW_LOG_INFO))
        return;
    const char *id = s->device_id, *name = iotgw_device_state_name(state);
    if (state == IOTGW_DEVICE_ONLINE) {
        iotgw_log_evf(IOTGW_LOG_INFO, "device_hub_state", id,
                      IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("state", name)), "device %s at the hub: %s", id, name);
        return;
    }
    /* waiting and failed come again at each retry of a device the hub keeps refusing:
     * they share the device's budget of lines */
    if (state != IOTGW_DEVICE_FAILED) {
        iotgw_log_ev_limited(&s->log, IOTGW_LOG_INFO, "device_hub_state", id,
                             IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("state", name)), "device %s at the hub: %s", id,
                             name);
        return;
    }
    iotgw_device_info info;
    iotgw_upstream_device_info(dev, &info);
    int64_t retry = info.next_retry_ms - iotgw_loop_now_ms(g->loop);
    if (retry < 0)
        retry = 0;
    iotgw_log_ev_limited(
        &s->log, IOTGW_LOG_INFO, "device_hub_state", id,
        IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("state", name), IOTGW_FIELD_STR("reason", info.reason),
                         IOTGW_FIELD_BOOL("for_good", info.refused), IOTGW_FIELD_INT("retry_ms", retry)),
        "device %s at the hub: failed (%s)%s; retry in %lld ms", id, info.reason,
        info.refused ? ", for good" : "", (long long)retry);
}

#define TICK_MS 1000

static void tick_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    iotgw_gateway *g = ctx;
    int64_t now = iotgw_loop_now_ms(g->loop);
    g->last_tick_ms = now;
    gw_session *s;
    IOTGW_LIST_FOREACH (s, &g->sessions, gw_session, node)
        gw_session_tick(s, now); /* sessions close later, from the loop */
    if (g->store)
        gw_forward_tick(g, now);
    /* what a burst of connections, now gone, left behind */
    size_t released = iotgw_heap_release();
    if (released)
        iotgw_log_evf(IOTGW_LOG_DEBUG, "memory_released", NULL,
                      IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("kib", released / 1024)),
                      "%zu KiB of freed memory given back to the system", released / 1024);
}

static void on_accept(iotgw_stream_listener *l, iotgw_stream *s, void *ctx)
{
    (void)l;
    gw_session_accept(ctx, s);
}

/* What a device refused at the open-file limit reads before the connection closes
 * (transport/stream.h); NULL if it cannot be packed: then it is closed unanswered. */
static uint8_t *overloaded_frame(size_t *len)
{
    Iotgw__Error e = IOTGW__ERROR__INIT;
    e.code = IOTGW__ERROR_CODE__ERROR_OVERLOADED;
    e.message = "the gateway has no room for another connection; retry later";
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_ERROR;
    f.error = &e;
    uint8_t *buf = NULL;
    return iotgw_frame_pack(&f.base, UINT32_MAX, &buf, len) ? NULL : buf;
}

int iotgw_gateway_new(iotgw_loop *loop, iotgw_config *cfg, iotgw_gateway **out, iotgw_diag *diag)
{
    iotgw_gateway *g = calloc(1, sizeof *g);
    if (!g)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    g->loop = loop;
    iotgw_list_init(&g->sessions);
    iotgw_list_init(&g->amqp_conns);
    iotgw_list_init(&g->forwards);
    iotgw_timer_init(loop, &g->tick, tick_fired, g);
    g->cfg = cfg;
    gw_stats_init(&g->stats);
    g->last_tick_ms = iotgw_loop_now_ms(loop);
    g->scratch = pn_message();
    g->by_device = calloc(cfg->ndevices + 1, sizeof *g->by_device);
    g->listeners = calloc(cfg->nlisten + cfg->nmqtt_listen + 1, sizeof *g->listeners);
    g->forward_by_device = calloc(cfg->ndevices + 1, sizeof *g->forward_by_device);
    /* 64 random bits per start: generated message ids never repeat across restarts */
    if (getrandom(&g->boot_id, sizeof g->boot_id, 0) != (ssize_t)sizeof g->boot_id) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        g->boot_id = ((uint64_t)ts.tv_sec << 24) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 40);
    }
    if (!g->scratch || !g->by_device || !g->listeners || !g->forward_by_device) {
        g->cfg = NULL;
        iotgw_gateway_free(g);
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    }
    iotgw_upstream_options uo = {
        .hub = {.host_name = cfg->hub_host,
                .connect_host = cfg->hub_connect_host,
                .kind = cfg->hub_transport,
                .port = cfg->hub_port,
                .proxy = cfg->hub_proxy,
                .tls = {.ca_file = cfg->hub_ca_file, .insecure = cfg->tls_insecure}},
        .devices_per_connection = cfg->devices_per_connection,
        .token_lifetime_s = cfg->token_lifetime_s,
        .auth_rate = cfg->auth_rate,
        .device_window = cfg->max_in_flight,
        .device_queue = cfg->device_queue,
        .queue_bytes = (size_t)cfg->queue_total_bytes,
        .delivery_timeout_ms = cfg->delivery_timeout_s * 1000,
        .keep_connection = 1, /* a wrong hub setting shows at start, and /readyz can tell */
        .cb = {.on_outcome = on_outcome,
               .on_state = on_state,
               .on_method = on_method,
               .on_twin = on_twin,
               .on_c2d = on_c2d},
        .ctx = g,
    };
    int rc = iotgw_upstream_new(loop, &uo, &g->up, diag);
    if (!rc && cfg->store_path) {
        /* segments of at most an eighth of the store: whole ones are what gets freed */
        uint64_t segment = cfg->store_max_bytes / 8 < cfg->store_segment_bytes ? cfg->store_max_bytes / 8
                                                                               : cfg->store_segment_bytes;
        iotgw_store_options so = {.path = cfg->store_path,
                                  .max_bytes = cfg->store_max_bytes,
                                  .ttl_s = cfg->store_ttl_s,
                                  .on_full = (iotgw_store_on_full)cfg->store_on_full,
                                  .sync = (iotgw_store_sync)cfg->store_sync,
                                  .commit_ms = cfg->store_commit_ms,
                                  .segment_bytes = segment < 65536 ? 65536 : segment,
                                  .on_durable = on_durable,
                                  .ctx = g};
        rc = iotgw_store_open(loop, &so, &g->store, diag);
        if (!rc) {
            iotgw_store_stats st;
            iotgw_store_stats_get(g->store, &st);
            iotgw_log_evf(IOTGW_LOG_INFO, "store_opened", NULL,
                          IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("path", cfg->store_path),
                                           IOTGW_FIELD_UINT("messages", st.recovered),
                                           IOTGW_FIELD_UINT("devices", st.devices),
                                           IOTGW_FIELD_UINT("corrupt_records", st.corrupt_records),
                                           IOTGW_FIELD_UINT("torn_bytes", st.torn_bytes)),
                          "store %s: %" PRIu64 " messages of %u devices to send%s", cfg->store_path,
                          st.recovered, st.devices,
                          st.corrupt_records || st.torn_bytes ? " (damaged records skipped: see above)" : "");
            gw_forward_start(g);
        }
    }
    size_t refusal_len = 0;
    uint8_t *refusal = overloaded_frame(&refusal_len);
    for (size_t i = 0; !rc && i < cfg->nlisten; i++) {
        iotgw_stream_listener_options lo = {
            .address = cfg->listen[i].address,
            .port = cfg->listen[i].port,
            .on_accept = on_accept,
            .ctx = g,
            .tls = {.cert_file = cfg->tls_cert, .key_file = cfg->tls_key, .ca_file = cfg->tls_client_ca},
            .refusal = refusal,
            .refusal_len = refusal ? refusal_len : 0};
        rc = iotgw_stream_listener_new(loop, &lo, &g->listeners[i], diag);
        if (!rc)
            g->nlisteners++;
    }
    free(refusal);
    if (!rc)
        rc = gw_amqp_start(g, diag);
    if (!rc)
        rc = gw_mqtt_start(g, diag);
    if (!rc)
        rc = gw_ops_start(g, diag);
    if (rc) {
        g->cfg = NULL; /* still the caller's */
        iotgw_gateway_free(g);
        return rc;
    }
    iotgw_timer_start(&g->tick, TICK_MS, TICK_MS);
    *out = g;
    return 0;
}

int iotgw_gateway_amqp_port(const iotgw_gateway *g, size_t i)
{
    return gw_amqp_port(g, i);
}

int iotgw_gateway_ws_port(const iotgw_gateway *g)
{
    return gw_mqtt_ws_port(g);
}

int iotgw_gateway_ops_port(const iotgw_gateway *g)
{
    return gw_ops_port(g);
}

int iotgw_gateway_port(const iotgw_gateway *g, size_t i)
{
    return i < g->nlisteners && g->listeners[i] ? iotgw_stream_listener_port(g->listeners[i]) : 0;
}

static void close_listeners(iotgw_gateway *g)
{
    for (size_t i = 0; i < g->nlisteners; i++) {
        iotgw_stream_listener_free(g->listeners[i]);
        g->listeners[i] = NULL;
    }
    g->nlisteners = 0;
}

int iotgw_gateway_drain(iotgw_gateway *g, int64_t deadline_ms)
{
    if (!g->draining) {
        g->draining = 1;
        close_listeners(g);
        iotgw_log_ev(IOTGW_LOG_INFO, "draining", NULL,
                     "draining: no new devices; waiting for the hub's answers");
    }
    int64_t now = iotgw_loop_now_ms(g->loop);
    gw_session *s;
    IOTGW_LIST_FOREACH (s, &g->sessions, gw_session, node)
        if (!s->closing && ((!s->in_flight && !s->calls && !s->twin_calls) || now >= deadline_ms))
            gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_SHUTTING_DOWN, "the gateway is stopping");
    return iotgw_list_empty(&g->sessions);
}

/* A setting a reload does not apply changed: say so, once per setting. */
static void needs_restart(const iotgw_setting *st, void *ctx)
{
    const iotgw_config *cfg = ctx;
    iotgw_log_evf(IOTGW_LOG_WARN, "reload_needs_restart", NULL,
                  IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("setting", st->name)),
                  "reload: %s changed in %s: it takes effect at the next start", st->name, cfg->file);
}

static int same_listen(const iotgw_config *a, const iotgw_config *b)
{
    if (a->nlisten != b->nlisten)
        return 0;
    for (size_t i = 0; i < a->nlisten; i++)
        if (strcmp(a->listen[i].address, b->listen[i].address) || a->listen[i].port != b->listen[i].port)
            return 0;
    return 1;
}

#define SWAP(a, b)                                                                                           \
    do {                                                                                                     \
        __typeof__(a) t_ = (a);                                                                              \
        (a) = (b);                                                                                           \
        (b) = t_;                                                                                            \
    } while (0)

void iotgw_gateway_reload(iotgw_gateway *g, iotgw_config *cfg)
{
    iotgw_config *old = g->cfg;
    if (old->shard_count != cfg->shard_count || old->shard_index != cfg->shard_index) {
        iotgw_log_ev(IOTGW_LOG_ERROR, "reload_failed", NULL,
                     "reload refused: fleet.shard changed in %s (shard %u of %u, now %u of %u): that moves "
                     "devices between gateways and needs a restart of every one; the running "
                     "configuration stays",
                     cfg->file, old->shard_index, old->shard_count, cfg->shard_index, cfg->shard_count);
        iotgw_config_free(cfg);
        return;
    }
    if (!same_listen(old, cfg))
        iotgw_log_evf(IOTGW_LOG_WARN, "reload_needs_restart", NULL,
                      IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("setting", "devices.listen")),
                      "reload: devices.listen changed in %s: it takes effect at the next start", cfg->file);
    gw_session **by_device = calloc(cfg->ndevices + 1, sizeof *by_device);
    gw_forward **forward_by_device = calloc(cfg->ndevices + 1, sizeof *forward_by_device);
    if (!by_device || !forward_by_device) {
        free(by_device);
        free(forward_by_device);
        iotgw_log_ev(IOTGW_LOG_ERROR, "reload_failed", NULL,
                     "reload: out of memory; the running configuration stays");
        iotgw_config_free(cfg);
        return;
    }
    size_t kept = 0, closed = 0;
    gw_session *s;
    IOTGW_LIST_FOREACH (s, &g->sessions, gw_session, node) {
        if (!s->device_id || s->closing)
            continue;
        const iotgw_config_device *nd = iotgw_config_device_find(cfg, s->device_id);
        size_t index = nd ? (size_t)(nd - cfg->devices) : 0;
        gw_session_reconfigure(s, cfg, nd, index);
        if (s->device_id) {
            by_device[index] = s;
            kept++;
        } else {
            closed++;
        }
    }
    /* what a reload does not apply stays what the gateway runs with (gateway/settings.c),
     * and so do the listeners */
    iotgw_settings_keep_running(cfg, old, needs_restart, cfg);
    SWAP(cfg->listen, old->listen);
    SWAP(cfg->nlisten, old->nlisten);
    free(g->by_device);
    g->by_device = by_device;
    gw_forward_reindex(g, forward_by_device, cfg);
    free(g->forward_by_device);
    g->forward_by_device = forward_by_device;
    g->cfg = cfg;
    iotgw_config_free(old);
    iotgw_log_evf(IOTGW_LOG_INFO, "config_reloaded", NULL,
                  IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("devices", cfg->ndevices), IOTGW_FIELD_INT("kept", kept),
                                   IOTGW_FIELD_INT("closed", closed)),
                  "configuration reloaded: %zu devices in the fleet; %zu connected kept, %zu closed",
                  cfg->ndevices, kept, closed);
}

void iotgw_gateway_free(iotgw_gateway *g)
{
    if (!g)
        return;
    gw_ops_stop(g);
    close_listeners(g);
    iotgw_timer_stop(&g->tick);
    gw_forward_free_all(g); /* what is stored stays for the next start */
    iotgw_list *n;
    while ((n = iotgw_list_first(&g->sessions)))
        gw_session_destroy(iotgw_list_entry(n, gw_session, node));
    gw_mqtt_stop(g); /* the MQTT connections, whose sessions went just now */
    gw_amqp_stop(g); /* and the AMQP ones */
    iotgw_upstream_free(g->up);
    iotgw_store_close(g->store); /* its last on_durable calls find no session */
    free(g->durable);
    free(g->forward_by_device);
    if (g->scratch)
        pn_message_free(g->scratch);
    free(g->by_device);
    free(g->listeners);
    iotgw_config_free(g->cfg);
    free(g);
}
