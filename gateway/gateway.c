/* The gateway: listeners, the table of connected devices, and the upstream's callbacks
 * routed to the session of the device they concern. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gateway/gateway_internal.h"
#include "transport/log.h"

static gw_session *session_of(iotgw_upstream_device *dev)
{
    return iotgw_upstream_device_context(dev);
}

static void on_outcome(iotgw_upstream_device *dev, void *msg_ctx, iotgw_outcome outcome, const char *cond,
                       const char *description, void *ctx)
{
    (void)ctx;
    gw_session_on_outcome(session_of(dev), (uint64_t)(uintptr_t)msg_ctx, outcome, cond, description);
}

static void on_method(iotgw_upstream_device *dev, const iotgw_method_request *req, void *ctx)
{
    (void)ctx;
    gw_session_on_method(session_of(dev), req);
}

static void on_twin(iotgw_upstream_device *dev, const iotgw_twin_response *r, void *ctx)
{
    (void)ctx;
    gw_session_on_twin(session_of(dev), r);
}

static void on_c2d(iotgw_upstream_device *dev, const iotgw_c2d_message *m, void *ctx)
{
    (void)ctx;
    gw_session_on_c2d(session_of(dev), m);
}

static void on_accept(iotgw_stream_listener *l, iotgw_stream *s, void *ctx)
{
    (void)l;
    gw_session_accept(ctx, s);
}

int iotgw_gateway_new(iotgw_loop *loop, iotgw_config *cfg, iotgw_gateway **out, iotgw_diag *diag)
{
    iotgw_gateway *g = calloc(1, sizeof *g);
    if (!g)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    g->loop = loop;
    g->cfg = cfg;
    g->scratch = pn_message();
    g->by_device = calloc(cfg->ndevices + 1, sizeof *g->by_device);
    g->listeners = calloc(cfg->nlisten, sizeof *g->listeners);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g->boot_id = ((uint64_t)ts.tv_sec << 24) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 40);
    if (!g->scratch || !g->by_device || !g->listeners) {
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
        .cb = {.on_outcome = on_outcome, .on_method = on_method, .on_twin = on_twin, .on_c2d = on_c2d},
        .ctx = g,
    };
    int rc = iotgw_upstream_new(loop, &uo, &g->up, diag);
    for (size_t i = 0; !rc && i < cfg->nlisten; i++) {
        iotgw_stream_listener_options lo = {
            .address = cfg->listen[i].address, .port = cfg->listen[i].port, .on_accept = on_accept, .ctx = g};
        rc = iotgw_stream_listener_new(loop, &lo, &g->listeners[i], diag);
        if (!rc)
            g->nlisteners++;
    }
    if (rc) {
        g->cfg = NULL; /* still the caller's */
        iotgw_gateway_free(g);
        return rc;
    }
    *out = g;
    return 0;
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
        iotgw_log(IOTGW_LOG_INFO, "draining: no new devices; waiting for the hub's answers");
    }
    int64_t now = iotgw_loop_now_ms(g->loop);
    for (gw_session *s = g->sessions; s; s = s->next)
        if (!s->closing && ((!s->in_flight && !s->calls && !s->twin_calls) || now >= deadline_ms))
            gw_session_fail(s, IOTGW__ERROR_CODE__ERROR_SHUTTING_DOWN, "the gateway is stopping");
    return g->sessions == NULL;
}

void iotgw_gateway_free(iotgw_gateway *g)
{
    if (!g)
        return;
    close_listeners(g);
    while (g->sessions)
        gw_session_destroy(g->sessions);
    iotgw_upstream_free(g->up);
    if (g->scratch)
        pn_message_free(g->scratch);
    free(g->by_device);
    free(g->listeners);
    iotgw_config_free(g->cfg);
    free(g);
}
