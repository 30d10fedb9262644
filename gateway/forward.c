/*
 * Store-and-forward (docs/store.md): with store.path set, a device's telemetry goes into
 * the durable store (gateway/store.h) and is acknowledged to the device once durable;
 * from there this file hands it to the upstream, in order per device, and marks it done
 * in the store when the hub accepted it (or refused it for good).
 *
 * Ownership: each device with a connection or a backlog has one gw_forward, which owns
 * its upstream device (the context of that upstream device is the gw_forward). While the
 * device is connected its session borrows the upstream device (with the session's
 * features: methods, twin, C2D). When it leaves with messages still stored, the identity
 * stays at the hub with telemetry only (a new upstream device without features: the hub
 * then answers methods DeviceNotOnline, as for an absent device) until the backlog is
 * empty, then lets go. Messages handed to an upstream device that goes away get no
 * outcome (gateway/upstream.h): they are given back to the store and sent again.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/gateway_internal.h"
#include "gateway/store.h"

/* Messages of one device handed to the upstream and without an outcome: as many as the
 * upstream's queue per device would take, at most this. */
#define FORWARD_OUT_MAX 256
/* Messages taken from the store at once. */
#define TAKE_BATCH 64

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct gw_forward {
    iotgw_gateway *g;
    char *device_id;
    size_t device_index; /* in g->cfg->devices; set again by reloads */
    iotgw_upstream_device *up;
    gw_session *session;           /* the device's connection, or NULL: draining its backlog alone */
    uint64_t out[FORWARD_OUT_MAX]; /* store ids handed to up, no outcome yet (unordered) */
    unsigned nout;
    int blocked;     /* the upstream said full or refused: wait for an outcome or the tick */
    iotgw_list node; /* in g->forwards */
    /* 0 ms: a forward done inside an upstream callback (on_outcome, on_state), which must
     * not remove its upstream device (gateway/upstream.h), lets go from the loop instead */
    iotgw_timer release;
};

static const iotgw_config_device *config_device(const gw_forward *f)
{
    const iotgw_config *cfg = f->g->cfg;
    return f->device_index < cfg->ndevices && !strcmp(cfg->devices[f->device_index].id, f->device_id)
               ? &cfg->devices[f->device_index]
               : iotgw_config_device_find(cfg, f->device_id);
}

/* Let go of the upstream device: what it held goes back to the store. */
static void drop_upstream(gw_forward *f)
{
    for (unsigned i = 0; i < f->nout; i++)
        iotgw_store_give_back(f->g->store, f->out[i]);
    f->nout = 0;
    if (f->up) {
        iotgw_upstream_device *up = f->up;
        f->up = NULL;
        iotgw_upstream_device_remove(up);
    }
}

static void forward_free(gw_forward *f)
{
    iotgw_timer_stop(&f->release);
    drop_upstream(f);
    iotgw_list_remove(&f->node);
    if (f->g->forward_by_device && f->device_index < f->g->cfg->ndevices &&
        f->g->forward_by_device[f->device_index] == f)
        f->g->forward_by_device[f->device_index] = NULL;
    free(f->device_id);
    free(f);
}

/* An upstream device for f with the credential dev has in cfg (NULL, NULL: the running
 * configuration's). */
static int add_upstream(gw_forward *f, const iotgw_config *cfg, const iotgw_config_device *dev,
                        unsigned features, iotgw_diag *diag)
{
    if (!cfg)
        cfg = f->g->cfg, dev = config_device(f);
    if (!dev)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "%s is no longer in the fleet", f->device_id);
    iotgw_device_credential cred = {.device_id = dev->id};
    iotgw_config_hub_credential(cfg, dev, &cred.key, &cred.policy_name);
    f->blocked = 0;
    return iotgw_upstream_device_add(f->g->up, &cred, features, f, &f->up, diag);
}

static void pump(gw_forward *f, int may_free);

static void release_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    pump(ctx, 1);
}

static gw_forward *forward_new(iotgw_gateway *g, const char *device_id, size_t index)
{
    gw_forward *f = calloc(1, sizeof *f);
    if (!f || !(f->device_id = strdup(device_id))) {
        free(f);
        return NULL;
    }
    f->g = g;
    f->device_index = index;
    iotgw_timer_init(g->loop, &f->release, release_fired, f);
    iotgw_list_init(&f->node);
    iotgw_list_push_front(&g->forwards, &f->node);
    g->forward_by_device[index] = f;
    return f;
}

/* may_free: f may be freed now (an event of the gateway's own); else, called inside an
 * upstream callback, a forward with nothing left lets go on the next turn of the loop. */
static void pump(gw_forward *f, int may_free)
{
    iotgw_store *st = f->g->store;
    if (!f->up || f->blocked)
        return;
    /* only to a device online at the hub: what waits for it stays in the store, where the
     * ttl and onFull still apply (on_state pumps when it comes online) */
    iotgw_device_info info;
    iotgw_upstream_device_info(f->up, &info);
    if (info.state != IOTGW_DEVICE_ONLINE && f->session)
        return;
    if (info.state != IOTGW_DEVICE_ONLINE) {
        if (!f->nout && !iotgw_store_backlog(st, f->device_id)) {
            if (may_free)
                forward_free(f);
            else
                iotgw_timer_start(&f->release, 0, 0);
        }
        return;
    }
    while (f->nout < FORWARD_OUT_MAX) {
        iotgw_store_msg m[TAKE_BATCH];
        size_t want = FORWARD_OUT_MAX - f->nout < TAKE_BATCH ? FORWARD_OUT_MAX - f->nout : TAKE_BATCH;
        size_t n = iotgw_store_take(st, f->device_id, m, want);
        for (size_t i = 0; i < n; i++) {
            if (f->blocked) {
                iotgw_store_give_back(st, m[i].id);
                continue;
            }
            int rc = iotgw_upstream_send(f->up, m[i].data, m[i].len, (void *)(uintptr_t)m[i].id);
            if (rc) { /* full (it drains first) or refused for good (it is retried alone) */
                f->blocked = 1;
                iotgw_store_give_back(st, m[i].id);
                continue;
            }
            f->out[f->nout++] = m[i].id;
        }
        if (n < want || f->blocked)
            break;
    }
    /* alone with nothing left to send: the identity lets go */
    if (!f->session && !f->nout && !iotgw_store_backlog(st, f->device_id)) {
        if (!may_free) {
            iotgw_timer_start(&f->release, 0, 0);
            return;
        }
        iotgw_log_ev(IOTGW_LOG_INFO, "store_device_drained", f->device_id,
                     "device %s: its stored messages all reached the hub; its hub identity lets go",
                     f->device_id);
        forward_free(f);
    }
}

/* From the upstream's callbacks (on_outcome, on_state) and the store's (on_durable). */
void gw_forward_pump(gw_forward *f)
{
    pump(f, 0);
}

void gw_forward_on_outcome(gw_forward *f, uint64_t id, iotgw_outcome outcome, const char *cond,
                           const char *description)
{
    iotgw_gateway *g = f->g;
    for (unsigned i = 0; i < f->nout; i++)
        if (f->out[i] == id) {
            f->out[i] = f->out[--f->nout];
            break;
        }
    switch (outcome) {
    case IOTGW_OUTCOME_ACCEPTED:
        iotgw_store_done(g->store, id);
        g->stats.store_forwarded++;
        break;
    case IOTGW_OUTCOME_REJECTED:
        iotgw_store_done(g->store, id);
        g->stats.store_rejected++;
        iotgw_log_ev_limited(&g->store_log, IOTGW_LOG_WARN, "store_message_rejected", f->device_id,
                             IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("condition", cond ? cond : "")),
                             "device %s: the hub refused a stored message for good (%s: %s): dropped",
                             f->device_id, cond ? cond : "", description ? description : "");
        break;
    default: /* RETRY: sent again, before what came after it */ iotgw_store_give_back(g->store, id); break;
    }
    f->blocked = 0;
    pump(f, 0); /* inside on_outcome: f must not remove its upstream device now */
}

gw_forward *gw_forward_of(iotgw_upstream_device *dev)
{
    return iotgw_upstream_device_context(dev);
}

gw_session *gw_forward_session(const gw_forward *f)
{
    return f->session;
}

int gw_forward_attach(gw_session *s, iotgw_diag *diag)
{
    iotgw_gateway *g = s->g;
    gw_forward *f = g->forward_by_device[s->device_index];
    if (!f && !(f = forward_new(g, s->device_id, s->device_index)))
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    if (f->session && f->session != s)
        f->session->fwd = NULL; /* cannot happen: the older session let go first */
    /* the upstream device of the backlog has no features, or another session's: anew */
    drop_upstream(f);
    f->session = s;
    s->fwd = f;
    int rc = add_upstream(f, NULL, NULL, s->capabilities, diag);
    if (rc) {
        f->session = NULL;
        s->fwd = NULL;
        forward_free(f);
        return rc;
    }
    s->up = f->up;
    pump(f, 1);
    return 0;
}

int gw_forward_reattach(gw_session *s, const iotgw_config *cfg, const iotgw_config_device *dev,
                        iotgw_diag *diag)
{
    gw_forward *f = s->fwd;
    if (!f)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "no upstream identity to renew");
    drop_upstream(f);
    s->up = NULL;
    int rc = add_upstream(f, cfg, dev, s->capabilities, diag);
    if (rc)
        return rc;
    s->up = f->up;
    pump(f, 1);
    return 0;
}

void gw_forward_detach(gw_session *s)
{
    gw_forward *f = s->fwd;
    s->fwd = NULL;
    s->up = NULL;
    if (!f)
        return;
    f->session = NULL;
    drop_upstream(f);
    if (!iotgw_store_backlog(f->g->store, f->device_id) || !config_device(f)) {
        forward_free(f);
        return;
    }
    iotgw_diag diag = {0};
    if (add_upstream(f, NULL, NULL, 0, &diag)) {
        iotgw_log_ev(IOTGW_LOG_ERROR, "store_drain_failed", f->device_id,
                     "device %s: cannot keep its identity at the hub to send its stored messages: %s",
                     f->device_id, diag.text);
        forward_free(f);
        return;
    }
    pump(f, 1);
}

/* A device of the fleet with messages stored and no connection: its identity comes to
 * the hub to send them. */
static void drain_alone(iotgw_gateway *g, const char *device_id)
{
    const iotgw_config_device *dev = iotgw_config_device_find(g->cfg, device_id);
    if (!dev) /* not (or no longer) this gateway's: they wait for their ttl */
        return;
    size_t index = (size_t)(dev - g->cfg->devices);
    if (g->forward_by_device[index])
        return;
    gw_forward *f = forward_new(g, dev->id, index);
    iotgw_diag diag = {0};
    if (!f || add_upstream(f, NULL, NULL, 0, &diag)) {
        if (f)
            forward_free(f);
        iotgw_log_ev(IOTGW_LOG_ERROR, "store_drain_failed", device_id,
                     "device %s: cannot bring its identity to the hub for its stored messages: %s", device_id,
                     f ? diag.text : "out of memory");
        return;
    }
    pump(f, 1);
}

void gw_forward_start(iotgw_gateway *g)
{
    const char *id;
    for (size_t i = 0; (id = iotgw_store_device_at(g->store, i)); i++)
        drain_alone(g, id);
}

/* Every second: what was blocked is tried again, expired messages go, and the drain is
 * reported every 10 s while there is a backlog. */
void gw_forward_tick(iotgw_gateway *g, int64_t now_ms)
{
    iotgw_store_expire(g->store);
    gw_forward *f;
    IOTGW_LIST_FOREACH (f, &g->forwards, gw_forward, node) {
        f->blocked = 0;
        pump(f, 1); /* may free f: the loop's macro allows it */
    }
    iotgw_store_stats st;
    iotgw_store_stats_get(g->store, &st);
    if (now_ms - g->store_report_ms < 10000)
        return;
    uint64_t sent = g->stats.store_forwarded - g->store_report_forwarded;
    double secs = g->store_report_ms ? (double)(now_ms - g->store_report_ms) / 1000 : 0;
    if (st.messages || sent)
        iotgw_log_evf(IOTGW_LOG_INFO, "store_backlog", NULL,
                      IOTGW_LOG_FIELDS(
                          IOTGW_FIELD_UINT("messages", st.messages), IOTGW_FIELD_UINT("bytes", st.bytes),
                          IOTGW_FIELD_UINT("devices", st.devices),
                          IOTGW_FIELD_INT("oldest_s", st.oldest_ms ? (wall_ms() - st.oldest_ms) / 1000 : 0),
                          IOTGW_FIELD_INT("forwarded_per_s", secs > 0 ? (int64_t)(sent / secs) : 0)),
                      "store: %" PRIu64 " messages of %u devices waiting (%" PRIu64 " bytes, oldest %lld s); "
                      "%.0f msgs/s reached the hub",
                      st.messages, st.devices, st.bytes,
                      (long long)(st.oldest_ms ? (wall_ms() - st.oldest_ms) / 1000 : 0),
                      secs > 0 ? (double)sent / secs : 0);
    g->store_report_ms = now_ms;
    g->store_report_forwarded = g->stats.store_forwarded;
}

void gw_forward_reindex(iotgw_gateway *g, gw_forward **by_device, const iotgw_config *cfg)
{
    gw_forward *f;
    IOTGW_LIST_FOREACH (f, &g->forwards, gw_forward, node) {
        const iotgw_config_device *d = iotgw_config_device_find(cfg, f->device_id);
        if (d) {
            f->device_index = (size_t)(d - cfg->devices);
            by_device[f->device_index] = f;
        } else if (!f->session) { /* removed from the fleet: its backlog waits for its ttl */
            f->device_index = SIZE_MAX;
            iotgw_timer_stop(&f->release);
            drop_upstream(f);
            iotgw_list_remove(&f->node);
            free(f->device_id);
            free(f);
        } else {
            f->device_index = SIZE_MAX; /* its session closes; detach frees it */
        }
    }
}

void gw_forward_free_all(iotgw_gateway *g)
{
    iotgw_list *n;
    while ((n = iotgw_list_first(&g->forwards))) {
        gw_forward *f = iotgw_list_entry(n, gw_forward, node);
        if (f->session)
            f->session->fwd = NULL, f->session->up = NULL;
        forward_free(f);
    }
}
