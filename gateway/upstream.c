/* The upstream pool: devices, their placement on connections, paced authentication, the
 * housekeeping tick (retries, renewals, CBS deadlines, idle connections). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "codecs/percent.h"
#include "gateway/upstream_internal.h"
#include "transport/log.h"

#define TICK_MS            250
#define EMPTY_CLOSE_MS     10000 /* an empty connection lingers this long before it closes */
#define PACE_BURST_SECONDS 0.1   /* pacing allows bursts of this many seconds' worth */

int64_t up_now_ms(iotgw_upstream *up)
{
    return iotgw_loop_now_ms(up->loop);
}

static void notify_state(iotgw_upstream_device *dev)
{
    if (dev->up->opt.cb.on_state)
        dev->up->opt.cb.on_state(dev, dev->state, dev->up->opt.ctx);
}

void up_set_state(iotgw_upstream_device *dev, iotgw_device_state state)
{
    if (dev->state == state)
        return;
    if (dev->conn && dev->state == IOTGW_DEVICE_ONLINE)
        dev->conn->nonline--;
    if (dev->conn && state == IOTGW_DEVICE_ONLINE)
        dev->conn->nonline++;
    dev->state = state;
    if (state == IOTGW_DEVICE_ONLINE) {
        dev->reason[0] = '\0';
        dev->refused = 0;
        dev->identity_refusals = 0;
    }
    notify_state(dev);
}

/* ------------------------------------------------------------------ paced authentication */

void up_auth_enqueue(iotgw_upstream_device *dev)
{
    iotgw_upstream *up = dev->up;
    if (dev->in_auth_queue)
        return;
    dev->in_auth_queue = 1;
    dev->auth_next = NULL;
    dev->auth_prev = up->auth_tail;
    if (up->auth_tail)
        up->auth_tail->auth_next = dev;
    else
        up->auth_head = dev;
    up->auth_tail = dev;
}

void up_auth_dequeue(iotgw_upstream_device *dev)
{
    iotgw_upstream *up = dev->up;
    if (!dev->in_auth_queue)
        return;
    if (dev->auth_prev)
        dev->auth_prev->auth_next = dev->auth_next;
    else
        up->auth_head = dev->auth_next;
    if (dev->auth_next)
        dev->auth_next->auth_prev = dev->auth_prev;
    else
        up->auth_tail = dev->auth_prev;
    dev->auth_prev = dev->auth_next = NULL;
    dev->in_auth_queue = 0;
}

static void pace_timer_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    iotgw_upstream *up = ctx;
    up->pace_timer = NULL;
    up_auth_pump(up);
}

/* Token bucket: auth_rate put-tokens per second for devices coming online (the hub
 * counts them against its new-connection allowance); renewals are not paced. */
void up_auth_pump(iotgw_upstream *up)
{
    double rate = up->opt.auth_rate;
    int64_t now = up_now_ms(up);
    if (rate > 0) {
        double burst = rate * PACE_BURST_SECONDS < 1 ? 1 : rate * PACE_BURST_SECONDS;
        up->pace_tokens += (double)(now - up->pace_last_ms) * rate / 1000.0;
        if (up->pace_tokens > burst)
            up->pace_tokens = burst;
    }
    up->pace_last_ms = now;

    iotgw_upstream_device *dev = up->auth_head;
    while (dev && (rate < 0 || up->pace_tokens >= 1)) {
        iotgw_upstream_device *next = dev->auth_next;
        up_conn *c = dev->conn;
        if (c->state != IOTGW_CONNECTION_OPEN) {
            up_auth_dequeue(dev); /* queued again when its connection opens */
        } else if (up_conn_put_token(c, dev) == 0) {
            up_auth_dequeue(dev);
            up_set_state(dev, IOTGW_DEVICE_AUTHENTICATING);
            if (rate > 0)
                up->pace_tokens -= 1;
            up_conn_kick(c);
        }
        /* no CBS credit: it stays queued; the credit's arrival pumps again */
        dev = next;
    }
    if (up->auth_head && rate > 0 && !up->pace_timer) {
        int64_t wait = (int64_t)((1.0 - up->pace_tokens) * 1000.0 / rate) + 1;
        up->pace_timer = iotgw_timer_start(up->loop, wait < 1 ? 1 : wait, pace_timer_fired, up);
    }
}

/* ------------------------------------------------------------------ placement */

static up_conn *conn_with_room(iotgw_upstream *up)
{
    up_conn *best = NULL;
    for (up_conn *c = up->conns; c; c = c->next) {
        if (c->ndevices >= c->capacity)
            continue;
        /* prefer an open connection, then the fullest: fewer connections overall */
        if (!best || (c->state == IOTGW_CONNECTION_OPEN && best->state != IOTGW_CONNECTION_OPEN) ||
            (c->state == best->state && c->ndevices > best->ndevices))
            best = c;
    }
    return best;
}

static int place(iotgw_upstream_device *dev)
{
    iotgw_upstream *up = dev->up;
    up_conn *c = conn_with_room(up);
    if (!c) {
        c = up_conn_new(up);
        if (!c)
            return IOTGW_ERR_NOMEM;
        up_conn_member_add(c, dev);
        dev->state = IOTGW_DEVICE_WAITING;
        up_conn_start(c); /* a connection that cannot start goes into backoff and retries */
        return 0;
    }
    up_conn_member_add(c, dev);
    dev->state = IOTGW_DEVICE_WAITING;
    if (c->state == IOTGW_CONNECTION_OPEN) {
        up_auth_enqueue(dev);
        up_auth_pump(up);
    }
    return 0;
}

void up_device_move(iotgw_upstream_device *dev)
{
    up_links_detach(dev);
    up_auth_dequeue(dev);
    up_ready_remove(dev);
    up_conn_member_remove(dev->conn, dev);
    dev->authorized = 0;
    dev->cbs_request = 0;
    dev->renew_at_ms = 0;
    if (place(dev) != 0)
        up_device_fail(dev, UP_REFUSAL_PASSING, "iotgw:no-memory", "no memory for another connection");
    else
        notify_state(dev);
}

void up_device_fail(iotgw_upstream_device *dev, up_refusal kind, const char *cond, const char *description)
{
    iotgw_upstream *up = dev->up;
    up_links_detach(dev); /* what was in flight goes back to the head of the queue */
    up_auth_dequeue(dev);
    up_ready_remove(dev);
    dev->authorized = 0;
    dev->cbs_request = 0;
    dev->renew_at_ms = 0;
    snprintf(dev->reason, sizeof dev->reason, "%s: %s", cond ? cond : "iotgw:failed",
             description && *description ? description : "no description");
    /* A token the hub refuses once may be a passing fault (its clock, a key being
     * rolled over); refused again after a retry with a fresh one, the identity is
     * refused for good. Not registered, or no usable key: for good at once. */
    up->refusals[kind]++;
    if (kind == UP_REFUSAL_PASSING)
        dev->identity_refusals = 0;
    else
        dev->identity_refusals++;
    dev->refused = kind == UP_REFUSAL_FOR_GOOD || dev->identity_refusals >= 2;
    int64_t wait = iotgw_backoff_next(&dev->backoff);
    dev->next_retry_ms = up_now_ms(up) + wait;
    iotgw_log_ev_limited(&dev->log, IOTGW_LOG_WARN, "device_hub_refused", dev->id,
                         IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("reason", dev->reason),
                                          IOTGW_FIELD_BOOL("for_good", dev->refused),
                                          IOTGW_FIELD_INT("retry_ms", wait)),
                         "upstream: device %s refused by the hub (%s)%s; retry in %lld ms", dev->id,
                         dev->reason, dev->refused ? ", for good" : "", (long long)wait);
    up_set_state(dev, IOTGW_DEVICE_FAILED);
    if (dev->refused)
        up_telemetry_flush(dev, IOTGW_COND_REFUSED, dev->reason);
}

/* ------------------------------------------------------------------ housekeeping */

static void housekeeping(iotgw_upstream *up)
{
    int64_t now = up_now_ms(up);
    int want_pump = 0;
    for (up_conn *c = up->conns, *next; c; c = next) {
        next = c->next;
        if (c->ndevices == 0) {
            int kept = up->opt.keep_connection && up->conns == c && !c->next; /* the last one stays */
            if (!kept && c->empty_since_ms && now - c->empty_since_ms >= EMPTY_CLOSE_MS) {
                iotgw_log_evf(IOTGW_LOG_INFO, "hub_connection_closed", NULL,
                              IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("connection", c->id)),
                              "upstream: connection %d closes: no devices left", c->id);
                up_conn_free(c);
            }
            continue;
        }
        int open = c->state == IOTGW_CONNECTION_OPEN;
        int renewed = 0;
        for (iotgw_upstream_device *dev = c->members; dev; dev = dev->member_next) {
            if (dev->state == IOTGW_DEVICE_FAILED && now >= dev->next_retry_ms) {
                dev->state = IOTGW_DEVICE_WAITING;
                notify_state(dev);
                if (open) {
                    up_auth_enqueue(dev);
                    want_pump = 1;
                }
            }
            if (dev->twin_requests)
                up_twin_expire(dev, now);
            up_telemetry_expire(dev, now);
            if (!open)
                continue;
            if (dev->cbs_request && now >= dev->cbs_deadline_ms) {
                char text[128];
                snprintf(text, sizeof text, "no answer to the put-token of device %s within %u ms", dev->id,
                         up->opt.cbs_timeout_ms);
                up_conn_reset(c, "iotgw:cbs-timeout", text);
                break;
            }
            if (dev->authorized && !dev->cbs_request && dev->renew_at_ms && now >= dev->renew_at_ms &&
                up_conn_put_token(c, dev) == 0)
                renewed = 1;
            if (dev->paused_until_ms && now >= dev->paused_until_ms) {
                dev->paused_until_ms = 0;
                up_ready_add(dev);
            }
        }
        if (c->conn && c->state == IOTGW_CONNECTION_OPEN && (renewed || c->ready_head))
            up_conn_kick(c);
    }
    if (want_pump)
        up_auth_pump(up);
}

static void tick_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    iotgw_upstream *up = ctx;
    up->tick = iotgw_timer_start(up->loop, TICK_MS, tick_fired, up);
    housekeeping(up);
}

/* ------------------------------------------------------------------ public API */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int iotgw_upstream_new(iotgw_loop *loop, const iotgw_upstream_options *opt, iotgw_upstream **out,
                       iotgw_diag *diag)
{
    if (!opt || !opt->hub.host_name || !*opt->hub.host_name)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "upstream: the hub's host name is required");
    iotgw_upstream *up = calloc(1, sizeof *up);
    if (!up)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "upstream: out of memory");
    up->loop = loop;
    up->opt = *opt;
    iotgw_hub_settings *h = &up->opt.hub;
    h->host_name = up->host_name = strdup(opt->hub.host_name);
    h->connect_host = up->connect_host = dup_or_null(opt->hub.connect_host);
    h->proxy = up->proxy = dup_or_null(opt->hub.proxy);
    h->tls.ca_file = up->ca_file = dup_or_null(opt->hub.tls.ca_file);
    h->tls.cert_file = up->cert_file = dup_or_null(opt->hub.tls.cert_file);
    h->tls.key_file = up->key_file = dup_or_null(opt->hub.tls.key_file);
    if (!h->kind)
        h->kind = IOTGW_TRANSPORT_WSS;
    iotgw_upstream_options *o = &up->opt;
    if (!o->devices_per_connection)
        o->devices_per_connection = h->kind == IOTGW_TRANSPORT_AMQPS ? 995 : 500;
    if (!o->token_lifetime_s)
        o->token_lifetime_s = 3600;
    if (!o->backoff_base_ms)
        o->backoff_base_ms = 1000;
    if (!o->backoff_cap_ms)
        o->backoff_cap_ms = 30000;
    if (!o->throttle_cap_ms)
        o->throttle_cap_ms = 5000;
    if (!o->delivery_timeout_ms)
        o->delivery_timeout_ms = 60000;
    if (!h->idle_timeout_ms)
        h->idle_timeout_ms = 30000;
    if (o->auth_rate == 0)
        o->auth_rate = 100;
    if (!o->device_window)
        o->device_window = 100;
    if (!o->device_queue)
        o->device_queue = 1000;
    if (!o->queue_bytes)
        o->queue_bytes = 64u * 1024 * 1024;
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
    up->pace_last_ms = up_now_ms(up);
    up->pace_tokens = 1;
    if (!up->host_name || !up->scratch || (opt->hub.connect_host && !up->connect_host)) {
        iotgw_upstream_free(up);
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "upstream: out of memory");
    }
    up->tick = iotgw_timer_start(loop, TICK_MS, tick_fired, up);
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
    up_links_detach(dev);
    up_auth_dequeue(dev);
    up_ready_remove(dev);
    up_telemetry_flush(dev, IOTGW_COND_DEVICE_REMOVED, "the device left the gateway");
    up_conn *c = dev->conn;
    up_conn_member_remove(c, dev);
    up_conn_kick(c);
    device_free(dev);
}

void iotgw_upstream_free(iotgw_upstream *up)
{
    if (!up)
        return;
    while (up->conns) {
        up_conn *c = up->conns;
        while (c->members)
            iotgw_upstream_device_remove(c->members);
        up_conn_free(c);
    }
    if (up->tick)
        iotgw_timer_cancel(up->tick);
    if (up->pace_timer)
        iotgw_timer_cancel(up->pace_timer);
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
    dev->policy = dup_or_null(cred->policy_name);
    dev->features = features;
    dev->ctx = ctx;
    iotgw_backoff_init(&dev->backoff, up->opt.backoff_base_ms, up->opt.backoff_cap_ms,
                       (uint64_t)iotgw_backoff_uniform(&up->jitter, 1, INT64_MAX));
    if (!dev->id || !dev->id_encoded || !dev->key || (cred->policy_name && !dev->policy) || place(dev)) {
        device_free(dev);
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "upstream: out of memory");
    }
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
    info->state = dev->state;
    info->connection = dev->conn ? dev->conn->id : 0;
    snprintf(info->reason, sizeof info->reason, "%s", dev->reason);
    info->next_retry_ms = dev->state == IOTGW_DEVICE_FAILED ? dev->next_retry_ms : 0;
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
    for (const up_conn *c = up->conns; c; c = c->next, n++) {
        if (n >= max)
            continue;
        iotgw_connection_info *i = &out[n];
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
    for (const up_conn *c = up->conns; c; c = c->next) {
        t->connections_by_state[c->state]++;
        for (const iotgw_upstream_device *d = c->members; d; d = d->member_next) {
            t->devices_by_state[d->state]++;
            t->queued += d->queue.count;
            t->in_flight += d->in_flight.count;
            /* the oldest of a device's messages heads its in-flight list, else its queue */
            const up_msg *m = d->in_flight.head ? d->in_flight.head : d->queue.head;
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
