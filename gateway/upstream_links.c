/* A device's links on its connection: telemetry (queue, in-flight window, outcomes) and
 * direct methods (requests in, responses out). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <proton/condition.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/connection.h>

#include "gateway/upstream_internal.h"
#include "transport/amqp_map.h"
#include "transport/log.h"
#include "transport/messaging.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

#define CLIENT_VERSION     "iotgw/" PACKAGE_VERSION
#define METHOD_CREDIT      16
#define METHOD_REQUEST_MAX (256 * 1024) /* the hub's payload limit is 128 KB */

/* ------------------------------------------------------------------ message lists */

void up_msg_push_back(up_msg_list *l, up_msg *m)
{
    iotgw_list_push_back(&l->head, &m->node);
    l->count++;
}

void up_msg_push_front(up_msg_list *l, up_msg *m)
{
    iotgw_list_push_front(&l->head, &m->node);
    l->count++;
}

void up_msg_unlink(up_msg_list *l, up_msg *m)
{
    IOTGW_ASSERT(l->count > 0 && iotgw_list_linked(&m->node));
    iotgw_list_remove(&m->node);
    l->count--;
}

/* ------------------------------------------------------------------ attach and detach */

static void put_property(pn_data_t *p, const char *key, const char *value)
{
    pn_data_put_symbol(p, pn_bytes(strlen(key), key));
    pn_data_put_string(p, pn_bytes(strlen(value), value));
}

pn_link_t *up_open_link(iotgw_upstream_device *dev, int sender, const char *kind, const char *address,
                        const char *channel)
{
    char name[sizeof "methods-responses--4294967295" + IOTGW_IDENTITY_MAX_LEN];
    snprintf(name, sizeof name, "%s-%s-%u", kind, dev->id, ++dev->link_generation);
    pn_session_t *ssn = dev->conn->ssn;
    pn_link_t *l = sender ? pn_sender(ssn, name) : pn_receiver(ssn, name);
    pn_terminus_set_address(pn_link_target(l), sender ? address : dev->id);
    pn_terminus_set_address(pn_link_source(l), sender ? dev->id : address);
    pn_data_t *p = pn_link_properties(l);
    pn_data_put_map(p);
    pn_data_enter(p);
    put_property(p, "com.microsoft:client-version", CLIENT_VERSION);
    if (channel) {
        put_property(p, "com.microsoft:api-version", IOTGW_UPSTREAM_API_VERSION);
        put_property(p, "com.microsoft:channel-correlation-id", channel);
    }
    pn_data_exit(p);
    pn_link_set_context(l, dev);
    return l;
}

int up_device_address(const iotgw_upstream_device *dev, const char *suffix, char *out, size_t size)
{
    int n = snprintf(out, size, "/devices/%s%s", dev->id_encoded, suffix);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

void up_device_address_checked(const iotgw_upstream_device *dev, const char *suffix, char *out, size_t size)
{
    int rc = up_device_address(dev, suffix, out, size);
    IOTGW_ASSERT(rc == 0); /* ids are checked when the device is added: UP_ADDRESS_MAX holds the longest */
}

void up_links_attach(iotgw_upstream_device *dev)
{
    if (!dev->conn || !dev->conn->ssn)
        return;
    char address[UP_ADDRESS_MAX], channel[sizeof "methods:" + IOTGW_IDENTITY_MAX_LEN];
    up_device_address_checked(dev, "/messages/events", address, sizeof address);
    dev->tel = up_open_link(dev, 1, "telemetry", address, NULL);
    pn_link_set_snd_settle_mode(dev->tel, PN_SND_UNSETTLED);
    pn_link_set_rcv_settle_mode(dev->tel, PN_RCV_FIRST);
    pn_link_open(dev->tel);
    if (dev->features & IOTGW_UPSTREAM_METHODS) {
        up_device_address_checked(dev, "/methods/devicebound", address, sizeof address);
        snprintf(channel, sizeof channel, "methods:%s", dev->id);
        dev->meth_in = up_open_link(dev, 0, "methods-requests", address, channel);
        pn_link_set_rcv_settle_mode(dev->meth_in, PN_RCV_FIRST);
        pn_link_open(dev->meth_in);
        pn_link_flow(dev->meth_in, METHOD_CREDIT);
        dev->meth_out = up_open_link(dev, 1, "methods-responses", address, channel);
        pn_link_set_snd_settle_mode(dev->meth_out, PN_SND_SETTLED);
        pn_link_open(dev->meth_out);
    }
}

/* In-flight messages go back to the head of the queue, in their order. */
static void requeue_in_flight(iotgw_upstream_device *dev, int settle)
{
    unsigned n = dev->in_flight.count;
    up_msg *m;
    while ((m = up_msg_last(&dev->in_flight))) {
        up_msg_unlink(&dev->in_flight, m);
        if (settle && m->delivery) {
            pn_delivery_set_context(m->delivery, NULL);
            pn_delivery_settle(m->delivery);
        }
        m->delivery = NULL;
        up_msg_push_front(&dev->queue, m);
    }
    if (dev->conn && dev->conn->in_flight >= n)
        dev->conn->in_flight -= n;
}

/* A freed link's context: events about it still queued (its peer's detach, say, when
 * the hub detached all of a device's links at once) find it and are ignored. Proton
 * keeps the link's memory while an event refers to it; a second pn_link_free would
 * abort. */
static char freed_link;
void *const up_freed_link = &freed_link;

static void free_link(pn_link_t *l)
{
    pn_link_set_context(l, up_freed_link);
    pn_link_free(l);
}

static void close_link(pn_link_t *l)
{
    if (!l)
        return;
    pn_link_set_context(l, NULL);
    pn_link_close(l);
    if (pn_link_state(l) & PN_REMOTE_CLOSED)
        free_link(l);
}

void up_links_detach(iotgw_upstream_device *dev)
{
    requeue_in_flight(dev, 1);
    pn_link_t **links[] = {&dev->tel,      &dev->meth_in, &dev->meth_out,
                           &dev->twin_out, &dev->twin_in, &dev->c2d};
    for (size_t i = 0; i < sizeof links / sizeof *links; i++) {
        close_link(*links[i]);
        *links[i] = NULL;
    }
}

void up_links_forget(iotgw_upstream_device *dev)
{
    requeue_in_flight(dev, 0);
    dev->tel = dev->meth_in = dev->meth_out = dev->twin_out = dev->twin_in = dev->c2d = NULL;
}

/* ------------------------------------------------------------------ telemetry */

static int can_send(const iotgw_upstream_device *dev)
{
    unsigned window = dev->probing ? 1 : dev->up->opt.device_window;
    return dev->st == UP_DEV_ONLINE && dev->tel && dev->queue.count && dev->in_flight.count < window &&
           !dev->paused_until_ms && pn_link_credit(dev->tel) > 0;
}

void up_ready_add(iotgw_upstream_device *dev)
{
    up_conn *c = dev->conn;
    if (!c || iotgw_list_linked(&dev->ready_node) || !can_send(dev))
        return;
    iotgw_list_push_back(&c->ready, &dev->ready_node);
}

void up_ready_remove(iotgw_upstream_device *dev)
{
    iotgw_list_remove(&dev->ready_node);
}

/* Messages a device sends in its turn. More than one, so that the hub's dispositions
 * for a device come back together and its acknowledgements leave in one write (one
 * each cost a system call per message, on both sides); few, so that no device waits
 * long behind another. */
#define TURN_MESSAGES 16

/* Round robin over the devices that can send, TURN_MESSAGES each turn, within the
 * connection's window. */
void up_telemetry_pump(up_conn *c)
{
    unsigned window = c->up->opt.connection_window;
    iotgw_list *n;
    while (c->in_flight < window && (n = iotgw_list_first(&c->ready))) {
        iotgw_upstream_device *dev = iotgw_list_entry(n, iotgw_upstream_device, ready_node);
        up_ready_remove(dev);
        for (int k = 0; k < TURN_MESSAGES && c->in_flight < window && can_send(dev); k++) {
            up_msg *m = up_msg_first(&dev->queue);
            pn_delivery_t *d = iotgw_link_send(dev->tel, NULL, 0, m->data, m->len);
            if (!d)
                break;
            up_msg_unlink(&dev->queue, m);
            up_msg_push_back(&dev->in_flight, m);
            m->delivery = d;
            pn_delivery_set_context(d, m);
            c->in_flight++;
        }
        up_ready_add(dev);
    }
}

static void answer(iotgw_upstream_device *dev, up_msg *m, iotgw_outcome outcome, const char *cond,
                   const char *description)
{
    switch (outcome) {
    case IOTGW_OUTCOME_ACCEPTED: dev->accepted++; break;
    case IOTGW_OUTCOME_REJECTED: dev->rejected++; break;
    case IOTGW_OUTCOME_RETRY: dev->retried++; break;
    }
    void *ctx = m->ctx;
    dev->up->pending_bytes -= m->len;
    free(m);
    if (dev->up->opt.cb.on_outcome)
        dev->up->opt.cb.on_outcome(dev, ctx, outcome, cond, description, dev->up->opt.ctx);
}

void up_telemetry_flush(iotgw_upstream_device *dev, const char *cond, const char *description)
{
    requeue_in_flight(dev, 1);
    up_msg *m;
    while ((m = up_msg_first(&dev->queue))) {
        up_msg_unlink(&dev->queue, m);
        answer(dev, m, IOTGW_OUTCOME_RETRY, cond, description);
    }
}

void up_telemetry_drop(iotgw_upstream_device *dev)
{
    requeue_in_flight(dev, 1);
    up_msg *m;
    while ((m = up_msg_first(&dev->queue))) {
        up_msg_unlink(&dev->queue, m);
        dev->up->pending_bytes -= m->len;
        free(m);
    }
}

/* Forget a message in flight: its delivery is settled here, so whatever the hub says of
 * it later is not heard (it may still have arrived). */
static void abandon_in_flight(iotgw_upstream_device *dev, up_msg *m)
{
    up_msg_unlink(&dev->in_flight, m);
    if (m->delivery) {
        pn_delivery_set_context(m->delivery, NULL);
        pn_delivery_settle(m->delivery);
        m->delivery = NULL;
    }
    if (dev->conn && dev->conn->in_flight)
        dev->conn->in_flight--;
}

void up_telemetry_expire(iotgw_upstream_device *dev, int64_t now)
{
    char text[120];
    snprintf(text, sizeof text, "no outcome from the hub within %u ms", dev->up->opt.delivery_timeout_ms);
    /* both lists are in sending order, oldest first */
    up_msg *m;
    while ((m = up_msg_first(&dev->in_flight)) && now >= m->deadline_ms) {
        abandon_in_flight(dev, m);
        answer(dev, m, IOTGW_OUTCOME_RETRY, IOTGW_COND_DELIVERY_TIMEOUT, text);
    }
    while ((m = up_msg_first(&dev->queue)) && now >= m->deadline_ms) {
        up_msg_unlink(&dev->queue, m);
        answer(dev, m, IOTGW_OUTCOME_RETRY, IOTGW_COND_DELIVERY_TIMEOUT, text);
    }
}

static int is_throttling(const char *cond)
{
    return cond && (!strcmp(cond, "com.microsoft:device-container-throttled") ||
                    !strcmp(cond, "amqp:resource-limit-exceeded"));
}

#define THROTTLE_FIRST_PAUSE_MS 250

/* The hub throttles the device: the message goes back to the head of its queue, and the
 * device pauses, then probes with one message at a time until one is accepted. Pauses
 * grow while the throttling lasts (up to throttle_cap_ms) and start short again once a
 * message is accepted, so a device runs at full rate as soon as the hub lets it. */
static void throttled(iotgw_upstream_device *dev, up_msg *m, const char *cond)
{
    iotgw_upstream *up = dev->up;
    dev->throttled++;
    up->throttled++;
    /* what was sent after it will be refused too: all of it goes back, in order */
    requeue_in_flight(dev, 1);
    up_msg_push_front(&dev->queue, m);
    uint32_t next = dev->throttle_ms ? dev->throttle_ms * 2 : THROTTLE_FIRST_PAUSE_MS;
    dev->throttle_ms = next > up->opt.throttle_cap_ms ? up->opt.throttle_cap_ms : next;
    int64_t pause = iotgw_backoff_uniform(&up->jitter, dev->throttle_ms * 3 / 4, dev->throttle_ms);
    dev->paused_until_ms = up_now_ms(up) + (pause < 1 ? 1 : pause);
    dev->probing = 1;
    up_ready_remove(dev);
    iotgw_log_ev_limited(
        &dev->log, IOTGW_LOG_WARN, "device_hub_throttled", dev->id,
        IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("condition", cond), IOTGW_FIELD_INT("pause_ms", pause)),
        "upstream: device %s throttled by the hub (%s); paused %lld ms", dev->id, cond, (long long)pause);
}

up_tel_result up_telemetry_on_delivery(up_conn *c, iotgw_upstream_device *dev, pn_delivery_t *d)
{
    uint64_t state = pn_delivery_remote_state(d);
    up_msg *m = pn_delivery_get_context(d);
    if (!state)
        return UP_TEL_DONE;
    if (!m) {
        pn_delivery_settle(d);
        return UP_TEL_DONE;
    }
    up_msg_unlink(&dev->in_flight, m);
    if (c->in_flight)
        c->in_flight--;
    pn_condition_t *cond = pn_disposition_condition(pn_delivery_remote(d));
    const char *name = pn_condition_is_set(cond) ? pn_condition_get_name(cond) : NULL;
    char namebuf[128], descbuf[256];
    snprintf(namebuf, sizeof namebuf, "%s", name ? name : "");
    snprintf(descbuf, sizeof descbuf, "%s",
             name && pn_condition_get_description(cond) ? pn_condition_get_description(cond) : "");
    pn_delivery_set_context(d, NULL);
    pn_delivery_settle(d);
    m->delivery = NULL;
    up_tel_result result = UP_TEL_DONE;
    switch (state) {
    case PN_ACCEPTED:
        dev->throttle_ms = 0;
        dev->probing = 0;
        answer(dev, m, IOTGW_OUTCOME_ACCEPTED, NULL, NULL);
        break;
    case PN_REJECTED:
        if (is_throttling(namebuf)) {
            throttled(dev, m, namebuf);
            break;
        }
        if (!strcmp(namebuf, "amqp:unauthorized-access"))
            result = UP_TEL_RENEW_TOKEN; /* the token may have lapsed */
        answer(dev, m, IOTGW_OUTCOME_REJECTED, *namebuf ? namebuf : "amqp:rejected",
               *descbuf ? descbuf : "the hub rejected the message");
        break;
    default:
        answer(dev, m, IOTGW_OUTCOME_RETRY, *namebuf ? namebuf : "amqp:released",
               *descbuf ? descbuf : "the hub released the message");
        break;
    }
    return result;
}

void up_telemetry_unpause(iotgw_upstream_device *dev, int64_t now)
{
    if (!dev->paused_until_ms || now < dev->paused_until_ms)
        return;
    dev->paused_until_ms = 0;
    up_ready_add(dev);
}

/* ------------------------------------------------------------------ direct methods */

void up_method_on_request(iotgw_upstream_device *dev, pn_delivery_t *d)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    iotgw_diag diag = {0};
    pn_message_t *m = pn_message();
    int rc = iotgw_delivery_take(d, METHOD_REQUEST_MAX, &buf, &len);
    if (rc == 0)
        rc = iotgw_message_decode(m, buf, len, &diag);
    free(buf);
    pn_atom_t corr = pn_message_get_correlation_id(m);
    char name[129];
    const char *payload = NULL;
    size_t payload_len = 0;
    if (rc == 0 && corr.type != PN_UUID) {
        rc = IOTGW_ERR_INVALID_ARG;
        snprintf(diag.text, sizeof diag.text, "correlation-id is not a uuid");
    }
    if (rc == 0 && !iotgw_map_text(pn_message_properties(m), "IoThub-methodname", name, sizeof name)) {
        rc = IOTGW_ERR_INVALID_ARG;
        snprintf(diag.text, sizeof diag.text,
                 "IoThub-methodname is missing, not a string or over 128 characters");
    }
    if (rc == 0)
        payload = iotgw_body_bytes(pn_message_body(m), &payload_len);
    if (rc) {
        iotgw_log_ev_limited(&dev->log, IOTGW_LOG_WARN, "method_request_refused", dev->id, NULL,
                             "upstream: device %s: method request refused: %s", dev->id, diag.text);
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:decode-error", diag.text);
    } else {
        iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);
    }
    if (dev->meth_in && pn_link_credit(dev->meth_in) < METHOD_CREDIT / 2)
        pn_link_flow(dev->meth_in, METHOD_CREDIT - pn_link_credit(dev->meth_in));
    if (rc == 0 && dev->up->opt.cb.on_method) {
        iotgw_method_request req = {
            .name = name, .payload = (const uint8_t *)(payload ? payload : ""), .payload_len = payload_len};
        memcpy(req.request_id, corr.u.as_uuid.bytes, 16);
        dev->up->opt.cb.on_method(dev, &req, dev->up->opt.ctx);
    }
    pn_message_free(m);
}

int up_method_respond(iotgw_upstream_device *dev, const uint8_t request_id[16], int status,
                      const uint8_t *payload, size_t len)
{
    pn_link_t *l = dev->meth_out;
    if (!l || !(pn_link_state(l) & PN_REMOTE_ACTIVE) || dev->st != UP_DEV_ONLINE)
        return IOTGW_ERR_UPSTREAM_NOT_ONLINE;
    pn_message_t *m = dev->up->scratch;
    pn_message_clear(m);
    pn_atom_t corr = {.type = PN_UUID};
    memcpy(corr.u.as_uuid.bytes, request_id, 16);
    pn_message_set_correlation_id(m, corr);
    pn_data_t *p = pn_message_properties(m);
    pn_data_put_map(p);
    pn_data_enter(p);
    pn_data_put_string(p, pn_bytes(strlen("IoThub-status"), "IoThub-status"));
    pn_data_put_int(p, status);
    pn_data_exit(p);
    pn_data_put_binary(pn_message_body(m), pn_bytes(len, (const char *)payload));
    if (!iotgw_link_send_message(l, m))
        return IOTGW_ERR_UPSTREAM_FULL;
    up_conn_wake(dev->conn);
    return 0;
}

/* ------------------------------------------------------------------ events */

static int remote_attached(pn_link_t *l)
{
    if (!l)
        return 1;
    if (!(pn_link_state(l) & PN_REMOTE_ACTIVE))
        return 0;
    /* a refusal arrives as an attach without the terminus, then a detach */
    pn_terminus_t *t = pn_link_is_sender(l) ? pn_link_remote_target(l) : pn_link_remote_source(l);
    return pn_terminus_get_address(t) != NULL;
}

int up_links_all_attached(const iotgw_upstream_device *dev)
{
    return remote_attached(dev->tel) && remote_attached(dev->meth_in) && remote_attached(dev->meth_out) &&
           remote_attached(dev->twin_out) && remote_attached(dev->twin_in) && remote_attached(dev->c2d);
}

void up_links_orphan_event(pn_event_t *e)
{
    pn_link_t *l = pn_event_link(e);
    pn_event_type_t t = pn_event_type(e);
    if (pn_link_get_context(l) == up_freed_link)
        return;
    if (t == PN_LINK_REMOTE_CLOSE || t == PN_LINK_REMOTE_DETACH) {
        pn_link_close(l);
        free_link(l);
    } else if (t == PN_DELIVERY) {
        pn_delivery_t *d = pn_event_delivery(e);
        if (pn_link_is_receiver(l) && !pn_delivery_partial(d))
            iotgw_delivery_settle(d, PN_RELEASED, NULL, NULL);
        else if (pn_delivery_remote_state(d))
            pn_delivery_settle(d);
    }
}

/* ------------------------------------------------------------------ sending */

int up_telemetry_queue(iotgw_upstream_device *dev, const uint8_t *encoded, size_t len, void *msg_ctx)
{
    iotgw_upstream *up = dev->up;
    if (dev->refused)
        return IOTGW_ERR_UPSTREAM_NOT_ONLINE;
    if (dev->queue.count + dev->in_flight.count >= up->opt.device_queue ||
        up->pending_bytes + len > up->opt.queue_bytes)
        return IOTGW_ERR_UPSTREAM_FULL;
    up_msg *m = malloc(sizeof *m + len);
    if (!m)
        return IOTGW_ERR_NOMEM;
    iotgw_list_init(&m->node);
    m->ctx = msg_ctx;
    m->delivery = NULL;
    m->deadline_ms = up_now_ms(up) + up->opt.delivery_timeout_ms;
    m->len = len;
    memcpy(m->data, encoded, len);
    up->pending_bytes += len;
    up_msg_push_back(&dev->queue, m);
    if (dev->st == UP_DEV_ONLINE) {
        up_ready_add(dev);
        up_conn_wake(dev->conn);
    }
    return 0;
}
