/* The one owner of a device's upstream state (up_dev_state, upstream_internal.h). The
 * pool and the connection report events; set_state() is the only place the state
 * changes, and it does what entering and leaving each state means: the pool's lists,
 * the connection's count of online devices, the owner's on_state. What leaving the hub
 * means (links, token, renewal) is written once, in leave_hub(). */
#include <stdio.h>
#include <string.h>
#include <proton/condition.h>
#include <proton/delivery.h>

#include "gateway/upstream_internal.h"
#include "transport/log.h"

#define LINKS_LOST "the device's links to the hub were lost"

iotgw_device_state up_device_public_state(up_dev_state st)
{
    switch (st) {
    case UP_DEV_UNPLACED:
    case UP_DEV_WAITING:
    case UP_DEV_QUEUED:
    case UP_DEV_REMOVED: return IOTGW_DEVICE_WAITING;
    case UP_DEV_AUTHENTICATING:
    case UP_DEV_ATTACHING: return IOTGW_DEVICE_AUTHENTICATING;
    case UP_DEV_ONLINE: return IOTGW_DEVICE_ONLINE;
    case UP_DEV_FAILED: return IOTGW_DEVICE_FAILED;
    }
    return IOTGW_DEVICE_WAITING;
}

/* ------------------------------------------------------------------ membership */

static void join(iotgw_upstream_device *dev, up_conn *c)
{
    IOTGW_ASSERT(!dev->conn && !iotgw_list_linked(&dev->member_node));
    dev->conn = c;
    iotgw_list_push_back(&c->members, &dev->member_node);
    c->ndevices++;
    c->empty_since_ms = 0;
}

static void leave_conn(iotgw_upstream_device *dev)
{
    up_conn *c = dev->conn;
    if (!c)
        return;
    IOTGW_ASSERT(dev->st != UP_DEV_ONLINE && c->ndevices > 0);
    iotgw_list_remove(&dev->member_node);
    c->ndevices--;
    if (!c->ndevices)
        c->empty_since_ms = up_now_ms(c->up);
    up_conn_wake(c); /* the detaches leave on the next turn */
    dev->conn = NULL;
}

static int conn_open(const iotgw_upstream_device *dev)
{
    return dev->conn && dev->conn->state == IOTGW_CONNECTION_OPEN;
}

/* ------------------------------------------------------------------ states */

static void leave_state(iotgw_upstream_device *dev, up_dev_state old)
{
    switch (old) {
    case UP_DEV_UNPLACED:
    case UP_DEV_QUEUED: iotgw_list_remove(&dev->pool_node); break;
    case UP_DEV_ONLINE:
        IOTGW_ASSERT(dev->conn && dev->conn->nonline > 0);
        dev->conn->nonline--;
        up_ready_remove(dev);
        break;
    default: break;
    }
}

static void enter_state(iotgw_upstream_device *dev, up_dev_state st)
{
    iotgw_upstream *up = dev->up;
    switch (st) {
    case UP_DEV_UNPLACED:
        iotgw_list_push_back(&up->unplaced, &dev->pool_node);
        up_pool_schedule(up);
        break;
    case UP_DEV_QUEUED:
        iotgw_list_push_back(&up->auth_queue, &dev->pool_node);
        up_pool_schedule(up);
        break;
    case UP_DEV_ONLINE:
        dev->conn->nonline++;
        dev->reason[0] = '\0';
        dev->refused = 0;
        dev->identity_refusals = 0;
        iotgw_backoff_reset(&dev->backoff);
        if (dev->twin_out)
            up_twin_on_online(dev);
        up_ready_add(dev);
        up_conn_wake(dev->conn);
        break;
    default: break;
    }
}

static void set_state(iotgw_upstream_device *dev, up_dev_state st)
{
    if (dev->st == st)
        return;
    leave_state(dev, dev->st);
    dev->st = st;
    enter_state(dev, st);
    /* the pool's lists hold exactly the devices in their states */
    IOTGW_ASSERT(iotgw_list_linked(&dev->pool_node) == (st == UP_DEV_QUEUED || st == UP_DEV_UNPLACED));
    IOTGW_ASSERT(st == UP_DEV_UNPLACED || st == UP_DEV_REMOVED || dev->conn);
    IOTGW_ASSERT(!dev->conn || dev->conn->nonline <= dev->conn->ndevices);
    iotgw_device_state pub = up_device_public_state(st);
    if (st == UP_DEV_REMOVED || pub == dev->reported)
        return; /* a removed device's owner hears nothing more */
    dev->reported = pub;
    if (dev->up->opt.cb.on_state)
        dev->up->opt.cb.on_state(dev, pub, dev->up->opt.ctx);
}

/* The device leaves the hub on its connection: its links close (or are forgotten, when
 * the connection is gone), its token and renewal lapse, what was in flight goes back to
 * the head of its queue. */
static void leave_hub(iotgw_upstream_device *dev, int connection_gone, int tell_owner)
{
    if (connection_gone)
        up_links_forget(dev);
    else
        up_links_detach(dev);
    up_c2d_forget(dev);
    if (tell_owner)
        up_twin_fail_pending(dev, LINKS_LOST);
    dev->authorized = 0;
    dev->cbs_request = 0;
    dev->renew_at_ms = 0;
}

static void fail(iotgw_upstream_device *dev, up_refusal kind, const char *cond, const char *description)
{
    iotgw_upstream *up = dev->up;
    leave_hub(dev, 0, 1);
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
    set_state(dev, UP_DEV_FAILED);
    if (dev->refused)
        up_telemetry_flush(dev, IOTGW_COND_REFUSED, dev->reason);
}

static void token_accepted(iotgw_upstream_device *dev)
{
    iotgw_upstream *up = dev->up;
    dev->cbs_request = 0;
    dev->authorized = 1;
    dev->authentications++;
    up->tokens++;
    /* renew at a jittered point near half-life: renewals of devices that came online
     * together spread out */
    int64_t life_ms = (int64_t)up->opt.token_lifetime_s * 1000;
    dev->renew_at_ms =
        up_now_ms(up) + iotgw_backoff_uniform(&up->jitter, life_ms * 45 / 100, life_ms * 55 / 100);
    if (dev->st != UP_DEV_AUTHENTICATING)
        return; /* a renewal */
    set_state(dev, UP_DEV_ATTACHING);
    up_links_attach(dev);
    if (dev->features & IOTGW_UPSTREAM_TWIN)
        up_twin_attach(dev);
    if (dev->features & IOTGW_UPSTREAM_C2D)
        up_c2d_attach(dev);
    up_conn_wake(dev->conn);
}

void up_device_enable(iotgw_upstream_device *dev, unsigned added)
{
    dev->features |= added;
    if (dev->st != UP_DEV_ATTACHING && dev->st != UP_DEV_ONLINE)
        return; /* they attach with the others when it comes online */
    if ((added & IOTGW_UPSTREAM_TWIN) && !dev->twin_out)
        up_twin_attach(dev);
    if ((added & IOTGW_UPSTREAM_C2D) && !dev->c2d)
        up_c2d_attach(dev);
    up_conn_wake(dev->conn);
}

void up_device_event(iotgw_upstream_device *dev, up_dev_event ev, const up_event_args *args)
{
    IOTGW_ASSERT(dev->st != UP_DEV_REMOVED);
    switch (ev) {
    case UP_EV_ADDED:
        IOTGW_ASSERT(dev->st == UP_DEV_UNPLACED && !iotgw_list_linked(&dev->pool_node));
        dev->reported = IOTGW_DEVICE_WAITING; /* the owner knows: no callback inside the add */
        enter_state(dev, UP_DEV_UNPLACED);
        break;
    case UP_EV_PLACED:
        IOTGW_ASSERT(dev->st == UP_DEV_UNPLACED && args);
        join(dev, args->conn);
        set_state(dev, conn_open(dev) ? UP_DEV_QUEUED : UP_DEV_WAITING);
        break;
    case UP_EV_CONN_OPEN:
        if (dev->st == UP_DEV_WAITING)
            set_state(dev, UP_DEV_QUEUED);
        break;
    case UP_EV_CONN_LOST:
        leave_hub(dev, 1, 1);
        if (dev->st != UP_DEV_FAILED)
            set_state(dev, UP_DEV_WAITING);
        break;
    case UP_EV_TOKEN_SENT:
        IOTGW_ASSERT(args && args->request);
        dev->cbs_request = args->request;
        dev->cbs_deadline_ms = up_now_ms(dev->up) + dev->up->opt.cbs_timeout_ms;
        if (dev->st == UP_DEV_QUEUED)
            set_state(dev, UP_DEV_AUTHENTICATING);
        break;
    case UP_EV_TOKEN_ACCEPTED: token_accepted(dev); break;
    case UP_EV_REFUSED:
        IOTGW_ASSERT(args);
        fail(dev, args->kind, args->cond, args->description);
        break;
    case UP_EV_CONN_FULL:
        leave_hub(dev, 0, 1);
        set_state(dev, UP_DEV_WAITING); /* out of ONLINE's accounting before leaving */
        leave_conn(dev);
        set_state(dev, UP_DEV_UNPLACED);
        break;
    case UP_EV_RETRY_DUE:
        if (dev->st == UP_DEV_FAILED)
            set_state(dev, conn_open(dev) ? UP_DEV_QUEUED : UP_DEV_WAITING);
        break;
    case UP_EV_REMOVED:
        leave_hub(dev, 0, 0); /* its links close, so that no later event finds it */
        up_telemetry_drop(dev);
        up_twin_drop_pending(dev);
        set_state(dev, UP_DEV_REMOVED);
        leave_conn(dev);
        break;
    }
}

/* ------------------------------------------------------------------ link events */

void up_device_on_link_event(up_conn *c, iotgw_upstream_device *dev, pn_event_t *e)
{
    if (!dev || dev == up_freed_link) { /* a link of a device that left or failed */
        up_links_orphan_event(e);
        return;
    }
    pn_link_t *l = pn_event_link(e);
    switch (pn_event_type(e)) {
    case PN_LINK_REMOTE_OPEN:
        if (dev->st == UP_DEV_ATTACHING && up_links_all_attached(dev))
            set_state(dev, UP_DEV_ONLINE);
        break;
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH: {
        pn_condition_t *cond = pn_link_remote_condition(l);
        const char *name = pn_condition_is_set(cond) ? pn_condition_get_name(cond) : NULL;
        const char *desc = name ? pn_condition_get_description(cond) : NULL;
        char text[300];
        snprintf(text, sizeof text, "link %s detached: %s", pn_link_name(l), desc ? desc : "no description");
        fail(dev, UP_REFUSAL_PASSING, name ? name : "amqp:link:detach-forced", text);
        break;
    }
    case PN_LINK_FLOW:
        if (l == dev->tel && dev->st == UP_DEV_ONLINE) {
            up_ready_add(dev);
            up_conn_wake(c);
        }
        break;
    case PN_DELIVERY: {
        pn_delivery_t *d = pn_event_delivery(e);
        if (l == dev->tel) {
            if (up_telemetry_on_delivery(c, dev, d) == UP_TEL_RENEW_TOKEN && dev->authorized &&
                !dev->cbs_request)
                dev->renew_at_ms = up_now_ms(dev->up); /* a fresh token on the next tick */
            if (dev->st == UP_DEV_ONLINE)
                up_ready_add(dev);
            /* Refill the window once this batch of dispositions is read, not after each:
             * one slot at a time would send one message per device per turn. */
            up_conn_wake(c);
        } else if (l == dev->meth_in || l == dev->twin_in || l == dev->c2d) {
            if (pn_delivery_partial(d) || !pn_delivery_readable(d))
                break;
            if (l == dev->meth_in)
                up_method_on_request(dev, d);
            else if (l == dev->twin_in)
                up_twin_on_delivery(dev, d);
            else
                up_c2d_on_delivery(dev, d);
        } else if (pn_delivery_remote_state(d)) {
            pn_delivery_settle(d);
        }
        break;
    }
    default: break;
    }
}

void up_device_tick(iotgw_upstream_device *dev, int64_t now)
{
    if (dev->st == UP_DEV_FAILED && now >= dev->next_retry_ms)
        up_device_event(dev, UP_EV_RETRY_DUE, NULL);
    if (dev->twin_requests)
        up_twin_expire(dev, now);
    up_telemetry_expire(dev, now);
    if (dev->paused_until_ms && now >= dev->paused_until_ms && dev->st == UP_DEV_ONLINE)
        up_telemetry_unpause(dev, now);
}
