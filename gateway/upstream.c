/* The upstream pool: devices, their placement on connections, paced authentication, the
 * housekeeping tick (retries, renewals, CBS deadlines, idle connections). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "codecs/percent.h"
#include "codecs/text.h"
#include "gateway/upstream_internal.h"
#include "transport/log.h"

#define TICK_MS            250
#define EMPTY_CLOSE_MS     10000 /* an empty connection lingers this long before it closes */
#define PACE_BURST_SECONDS 0.1   /* pacing allows bursts of this many seconds' worth */

/* ------------------------------------------------------------------ paced authentication */

/* Token bucket: auth_rate put-tokens per second for devices coming online (the hub
 * counts them against its new-connection allowance); renewals are not paced. */
static void auth_pump(iotgw_upstream *up)
{
    int paced = up->opt.auth_rate > 0;
    int64_t now = up_now_ms(up);
    iotgw_upstream_device *dev;
    IOTGW_LIST_FOREACH (dev, &up->auth_queue, iotgw_upstream_device, pool_node) {
        if (paced && !iotgw_token_bucket_take(&up->pace, 1, now))
            break;
        /* no CBS credit: it stays queued; the credit's arrival schedules the pool again */
        if (up_conn_put_token(dev->conn, dev) == -1 && paced)
            up->pace.tokens += 1; /* not spent */
    }
    if (paced && !iotgw_list_empty(&up->auth_queue) && !iotgw_timer_active(&up->work)) {
        int64_t wait = iotgw_token_bucket_wait_ms(&up->pace, 1);
        iotgw_timer_start(&up->work, wait < 1 ? 1 : wait, 0);
    }
}

/* ------------------------------------------------------------------ placement */

static up_conn *conn_with_room(iotgw_upstream *up)
{
    up_conn *best = NULL, *c;
    IOTGW_LIST_FOREACH (c, &up->conns, up_conn, pool_node) {
        if (c->ndevices >= c->capacity)
            continue;
        /* prefer an open connection, then the fullest: fewer connections overall */
        if (!best || (c->state == IOTGW_CONNECTION_OPEN && best->state != IOTGW_CONNECTION_OPEN) ||
            (c->state == best->state && c->ndevices > best->ndevices))
            best = c;
    }
    return best;
}

static void place(iotgw_upstream_device *dev)
{
    iotgw_upstream *up = dev->up;
    up_conn *c = conn_with_room(up);
    int fresh = !c;
    if (fresh && !(c = up_conn_new(up))) {
        up_device_event(dev, UP_EV_REFUSED,
                        &(up_event_args){.kind = UP_REFUSAL_PASSING,
                                         .cond = "iotgw:no-memory",
                                         .description = "no memory for another connection"});
        return;
    }
    up_device_event(dev, UP_EV_PLACED, &(up_event_args){.conn = c});
    if (fresh)
        up_conn_start(c); /* a connection that cannot start goes into backoff and retries */
}

/* The pool's deferred work (up_pool_schedule): devices to place, put-tokens to send. */
static void pool_work(iotgw_timer *t, void *ctx)
{
    (void)t;
    iotgw_upstream *up = ctx;
    iotgw_list *n;
    while ((n = iotgw_list_first(&up->unplaced))) {
        iotgw_upstream_device *dev = iotgw_list_entry(n, iotgw_upstream_device, pool_node);
        place(dev); /* it leaves the list, whatever happens */
        IOTGW_ASSERT(iotgw_list_first(&up->unplaced) != n);
    }
    auth_pump(up);
}

/* ------------------------------------------------------------------ housekeeping */

static void housekeeping(iotgw_upstream *up)
{
    int64_t now = up_now_ms(up);
    up_conn *c;
    IOTGW_LIST_FOREACH (c, &up->conns, up_conn, pool_node) {
        if (c->ndevices == 0) {
            int kept = up->opt.keep_connection && up->conns.next == &c->pool_node &&
                       up->conns.prev == &c->pool_node; /* the last one stays */
            if (!kept && c->empty_since_ms && now - c->empty_since_ms >= EMPTY_CLOSE_MS) {
                iotgw_log_evf(IOTGW_LOG_INFO, "hub_connection_closed", NULL,
                              IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("connection", c->id)),
                              "upstream: connection %d closes: no devices left", c->id);
                up_conn_free(c);
            }
            continue;
        }
        int open = c->state == IOTGW_CONNECTION_OPEN;
        unsigned online = 0;
        iotgw_upstream_device *dev;
        IOTGW_LIST_FOREACH (dev, &c->members, iotgw_upstream_device, member_node) {
            up_device_tick(dev, now);
            online += dev->st == UP_DEV_ONLINE;
            if (!open)
                continue;
            if (dev->cbs_request && now >= dev->cbs_deadline_ms) {
                char text[128];
                snprintf(text, sizeof text, "no answer to the put-token of device %s within %u ms", dev->id,
                         up->opt.cbs_timeout_ms);
                up_conn_reset(c, "iotgw:cbs-timeout", text);
                online = c->nonline; /* the walk stops here */
                break;
            }
            if (dev->authorized && !dev->cbs_request && dev->renew_at_ms && now >= dev->renew_at_ms)
                up_conn_put_token(c, dev); /* renewals are not paced */
        }
        IOTGW_ASSERT(online == c->nonline); /* the count of online members is kept right */
        if (open && !iotgw_list_empty(&c->ready))
            up_conn_wake(c);
    }
}

static void tick_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    housekeeping(ctx);
}

/* ------------------------------------------------------------------ public API */

int iotgw_upstream_new(iotgw_loop *loop, const iotgw_upstream_options *opt, iotgw_upstream **out,
                       iotgw_diag *diag)
{
    if (!opt || !opt->hub.host_name || !*opt->hub.host_name)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "upstream: the hub's host name is required");
    iotgw_upstream *up = calloc(1, sizeof *up);
    if (!up)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "upstream: out of memory");
    up->loop = loop;
    iotgw_list_init(&up->conns);
    iotgw_list_init(&up->auth_queue);
    iotgw_list_init(&up->unplaced);
    iotgw_timer_init(loop, &up->tick, tick_fired, up);
    iotgw_timer_init(loop, &up->work, pool_work, up);
    up->opt = *opt;
    iotgw_hub_settings *h = &up->opt.hub;
    h->host_name = up->host_name = strdup(opt->hub.host_name);
    h->connect_host = up->connect_host = iotgw_strdup_or_null(opt->hub.connect_host);
    h->proxy = up->proxy = iotgw_strdup_or_null(opt->hub.proxy);
    h->tls.ca_file = up->ca_file = iotgw_strdup_or_null(opt->hub.tls.ca_file);
    h->tls.cert_file = up->cert_file = iotgw_strdup_or_null(opt->hub.tls.cert_file);
    h->tls.key_file = up->key_file = iotgw_strdup_or_null(opt->hub.tls.key_file);
    if (!h->kind)
        h->kind = IOTGW_TRANSPORT_WSS;
    iotgw_upstream_options *o = &up->opt;
    if (!o->devices_per_connection)
        o->devices_per_connection = h->kind == IOTGW_TRANSPORT_AMQPS ? 995 : 500;
    if (!o->token_lifetime_s)
        o->token_lifetime_s = IOTGW_UPSTREAM_DEFAULT_TOKEN_LIFETIME_S;
    if (!o->backoff_base_ms)
        o->backoff_base_ms = 1000;
    if (!o->backoff_cap_ms)
        o->backoff_cap_ms = 30000;
    if (!o->throttle_cap_ms)
        o->throttle_cap_ms = 5000;
    if (!o->delivery_timeout_ms)
        o->delivery_timeout_ms = IOTGW_UPSTREAM_DEFAULT_DELIVERY_TIMEOUT_MS;
    if (!h->idle_timeout_ms)
        h->idle_timeout_ms = 30000;
    if (o->auth_rate == 0)
        o->auth_rate = IOTGW_UPSTREAM_DEFAULT_AUTH_RATE;
    if (!o->device_window)
        o->device_window = IOTGW_UPSTREAM_DEFAULT_DEVICE_WINDOW;
    if (!o->device_queue)
        o->device_queue = IOTGW_UPSTREAM_DEFAULT_DEVICE_QUEUE;
    if (!o->queue_bytes)
        o->queue_bytes = IOTGW_UPSTREAM_DEFAULT_QUEUE_BYTES;
    if (o->device_window > o->device_queue) /* the queue bound holds whatever the window */
        o->device_window = o->device_queue;
    if (!o->connection_window)
        o->connection_window = 1000;
    if (!o->cbs_timeout_ms)
        o->cbs_timeout_ms = 30000;
    if (!o->c2d_credit)
        o->c2d_credit = 5;
    if (!o->twin_timeout_ms)
        o->twin_timeout_ms = 30000;
    up->scratch = pn_message();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    iotgw_backoff_init(&up->jitter, 1, 1,
                       (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid());
    double rate = o->auth_rate > 0 ? o->auth_rate : 0;
    iotgw_token_bucket_init(&up->pace, rate, rate * PACE_BURST_SECONDS < 1 ? 1 : rate * PACE_BURST_SECONDS, 1,
                            up_now_ms(up));
    if (!up->host_name || !up->scratch || (opt->hub.connect_host && !up->connect_host)) {
        iotgw_upstream_free(up);
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "upstream: out of memory");
    }
    iotgw_timer_start(&up->tick, TICK_MS, TICK_MS);
    if (o->keep_connection) {
        up_conn *c = up_conn_new(up);
        if (!c) {
            iotgw_upstream_free(up);
            return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "upstream: out of memory");
        }
        up_conn_start(c);
    }
    *out = up;
    return 0;
}

static void device_free(iotgw_upstream_device *dev)
{
    iotgw_log_limit_flush_device(&dev->log, IOTGW_LOG_WARN, dev->id);
    if (dev->key)
        OPENSSL_cleanse(dev->key, strlen(dev->key));
    free(dev->id);
    free(dev->id_encoded);
    free(dev->key);
    free(dev->policy);
    free(dev);
}

void iotgw_upstream_device_remove(iotgw_upstream_device *dev)
{
    if (!dev)
        return;
    up_device_event(dev, UP_EV_REMOVED, NULL);
    device_free(dev);
}

void iotgw_upstream_free(iotgw_upstream *up)
{
    if (!up)
        return;
    iotgw_list *n;
    while ((n = iotgw_list_first(&up->unplaced)))
        iotgw_upstream_device_remove(iotgw_list_entry(n, iotgw_upstream_device, pool_node));
    while ((n = iotgw_list_first(&up->conns))) {
        up_conn *c = iotgw_list_entry(n, up_conn, pool_node);
        iotgw_list *m;
        while ((m = iotgw_list_first(&c->members)))
            iotgw_upstream_device_remove(iotgw_list_entry(m, iotgw_upstream_device, member_node));
        up_conn_free(c);
    }
    iotgw_timer_stop(&up->tick);
    iotgw_timer_stop(&up->work);
    if (up->scratch)
        pn_message_free(up->scratch);
    free(up->host_name);
    free(up->connect_host);
    free(up->proxy);
    free(up->ca_file);
    free(up->cert_file);
    free(up->key_file);
    free(up);
}

int iotgw_upstream_device_add(iotgw_upstream *up, const iotgw_device_credential *cred, unsigned features,
                              void *ctx, iotgw_upstream_device **out, iotgw_diag *diag)
{
    if (!cred || !cred->device_id || !*cred->device_id || !cred->key || !*cred->key)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "upstream: a device needs an id and a key");
    int rc = iotgw_identity_check(cred->device_id, "upstream: device id", diag);
    if (rc)
        return rc; /* what the hub refuses; and its link addresses are sized for the longest legal id */
    iotgw_upstream_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "upstream: out of memory");
    dev->up = up;
    dev->id = strdup(cred->device_id);
    dev->id_encoded = iotgw_percent_encode(cred->device_id);
    dev->key = strdup(cred->key);
    dev->policy = iotgw_strdup_or_null(cred->policy_name);
    dev->features = features;
    dev->ctx = ctx;
    iotgw_list_init(&dev->member_node);
    iotgw_list_init(&dev->pool_node);
    iotgw_list_init(&dev->ready_node);
    iotgw_list_init(&dev->queue.head);
    iotgw_list_init(&dev->in_flight.head);
    iotgw_backoff_init(&dev->backoff, up->opt.backoff_base_ms, up->opt.backoff_cap_ms,
                       (uint64_t)iotgw_backoff_uniform(&up->jitter, 1, INT64_MAX));
    if (!dev->id || !dev->id_encoded || !dev->key || (cred->policy_name && !dev->policy)) {
        device_free(dev);
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "upstream: out of memory");
    }
    up_device_event(dev, UP_EV_ADDED, NULL); /* placed and authenticated from the next turn */
    *out = dev;
    return 0;
}

void *iotgw_upstream_device_context(const iotgw_upstream_device *dev)
{
    return dev->ctx;
}

void iotgw_upstream_device_info(const iotgw_upstream_device *dev, iotgw_device_info *info)
{
    memset(info, 0, sizeof *info);
    info->state = up_device_public_state(dev->st);
    info->connection = dev->conn ? dev->conn->id : 0;
    snprintf(info->reason, sizeof info->reason, "%s", dev->reason);
    info->next_retry_ms = dev->st == UP_DEV_FAILED ? dev->next_retry_ms : 0;
    info->refused = dev->refused;
    info->queued = dev->queue.count;
    info->in_flight = dev->in_flight.count;
    info->accepted = dev->accepted;
    info->rejected = dev->rejected;
    info->retried = dev->retried;
    info->throttled = dev->throttled;
    info->authentications = dev->authentications;
}

int iotgw_upstream_connections(const iotgw_upstream *up, iotgw_connection_info *out, int max)
{
    int n = 0;
    const up_conn *c;
    IOTGW_LIST_FOREACH (c, &up->conns, up_conn, pool_node) {
        if (n++ >= max)
            continue;
        iotgw_connection_info *i = &out[n - 1];
        memset(i, 0, sizeof *i);
        i->id = c->id;
        i->state = c->state;
        i->devices = c->ndevices;
        i->online = c->nonline;
        i->in_flight = c->in_flight;
        i->capacity = c->capacity;
        i->reconnects = c->reconnects;
        snprintf(i->reason, sizeof i->reason, "%s", c->reason);
        i->next_retry_ms = c->state == IOTGW_CONNECTION_BACKOFF ? c->next_retry_ms : 0;
    }
    return n;
}

void iotgw_upstream_totals_get(const iotgw_upstream *up, iotgw_upstream_totals *t)
{
    memset(t, 0, sizeof *t);
    int64_t now = iotgw_loop_now_ms(up->loop), oldest_deadline = 0;
    const up_conn *c;
    const iotgw_upstream_device *d;
    IOTGW_LIST_FOREACH (d, &up->unplaced, iotgw_upstream_device, pool_node)
        t->devices_by_state[IOTGW_DEVICE_WAITING]++;
    IOTGW_LIST_FOREACH (c, &up->conns, up_conn, pool_node) {
        t->connections_by_state[c->state]++;
        IOTGW_LIST_FOREACH (d, &c->members, iotgw_upstream_device, member_node) {
            t->devices_by_state[up_device_public_state(d->st)]++;
            t->queued += d->queue.count;
            t->in_flight += d->in_flight.count;
            /* the oldest of a device's messages heads its in-flight list, else its queue */
            const up_msg *m = d->in_flight.count ? up_msg_first(&d->in_flight) : up_msg_first(&d->queue);
            if (m && (!oldest_deadline || m->deadline_ms < oldest_deadline))
                oldest_deadline = m->deadline_ms;
        }
    }
    t->queued_bytes = up->pending_bytes;
    if (oldest_deadline)
        t->oldest_ms = now - (oldest_deadline - (int64_t)up->opt.delivery_timeout_ms);
    memcpy(t->refusals, up->refusals, sizeof t->refusals);
    t->reconnects = up->reconnects;
    t->tokens = up->tokens;
    t->throttled = up->throttled;
    snprintf(t->last_failure, sizeof t->last_failure, "%s", up->last_failure);
}

int iotgw_upstream_send(iotgw_upstream_device *dev, const uint8_t *encoded, size_t len, void *msg_ctx)
{
    return up_telemetry_queue(dev, encoded, len, msg_ctx);
}

int iotgw_upstream_method_respond(iotgw_upstream_device *dev, const uint8_t request_id[16], int status,
                                  const uint8_t *payload, size_t len)
{
    return up_method_respond(dev, request_id, status, payload, len);
}

int iotgw_upstream_twin_request(iotgw_upstream_device *dev, iotgw_twin_op op, const uint8_t *body, size_t len,
                                uint64_t *request_id)
{
    return up_twin_request(dev, op, body, len, request_id);
}

int iotgw_upstream_device_enable(iotgw_upstream_device *dev, unsigned features)
{
    if (features & ~(unsigned)(IOTGW_UPSTREAM_TWIN | IOTGW_UPSTREAM_C2D) & ~dev->features)
        return IOTGW_ERR_INVALID_ARG;
    up_device_enable(dev, features & ~dev->features);
    return 0;
}

int iotgw_upstream_c2d_settle(iotgw_upstream_device *dev, uint64_t id, iotgw_outcome outcome)
{
    return up_c2d_settle(dev, id, outcome);
}

const char *iotgw_device_state_name(iotgw_device_state s)
{
    switch (s) {
    case IOTGW_DEVICE_WAITING: return "waiting";
    case IOTGW_DEVICE_AUTHENTICATING: return "authenticating";
    case IOTGW_DEVICE_ONLINE: return "online";
    case IOTGW_DEVICE_FAILED: return "failed";
    }
    return "unknown";
}

const char *iotgw_connection_state_name(iotgw_connection_state s)
{
    switch (s) {
    case IOTGW_CONNECTION_CONNECTING: return "connecting";
    case IOTGW_CONNECTION_OPEN: return "open";
    case IOTGW_CONNECTION_BACKOFF: return "backoff";
    }
    return "unknown";
}
