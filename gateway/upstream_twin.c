/* A device's twin links (shared/docs/iothub-amqp-protocol.md 4.5): requests out with
 * annotations operation/resource and a string correlation id, answers and
 * desired-property updates in. The subscription to desired updates is sent each time
 * the device comes online, so it survives reconnects without the owner's help. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <proton/connection.h>
#include <proton/delivery.h>

#include "gateway/upstream_internal.h"
#include "transport/amqp_map.h"
#include "transport/log.h"
#include "transport/messaging.h"

#define TWIN_CREDIT       16
#define TWIN_MESSAGE_MAX  (256 * 1024) /* twins are at most 32 KB desired + 32 KB reported */
#define SUBSCRIPTION_ID   0            /* our own subscription request: its answer is not the owner's */
#define DESIRED_RESOURCE  "/notifications/twin/properties/desired"
#define REPORTED_RESOURCE "/properties/reported"

void up_twin_attach(iotgw_upstream_device *dev)
{
    char address[UP_ADDRESS_MAX], channel[sizeof "twin:" + IOTGW_IDENTITY_MAX_LEN];
    up_device_address_checked(dev, "/twin", address, sizeof address);
    snprintf(channel, sizeof channel, "twin:%s", dev->id);
    dev->twin_out = up_open_link(dev, 1, "twin-requests", address, channel);
    pn_link_set_snd_settle_mode(dev->twin_out, PN_SND_SETTLED);
    pn_link_open(dev->twin_out);
    dev->twin_in = up_open_link(dev, 0, "twin-responses", address, channel);
    pn_link_set_rcv_settle_mode(dev->twin_in, PN_RCV_FIRST);
    pn_link_open(dev->twin_in);
    pn_link_flow(dev->twin_in, TWIN_CREDIT);
}

static void answer(iotgw_upstream_device *dev, uint64_t id, int status, int64_t version, const uint8_t *body,
                   size_t len, const char *error)
{
    iotgw_upstream *up = dev->up;
    if (!up->opt.cb.on_twin)
        return;
    iotgw_twin_response r = {.request_id = id,
                             .status = status,
                             .version = version,
                             .body = body ? body : (const uint8_t *)"",
                             .len = len,
                             .error = error};
    up->opt.cb.on_twin(dev, &r, up->opt.ctx);
}

static void pending_free(up_pending *p)
{
    free(p->body);
    free(p);
}

void up_twin_fail_pending(iotgw_upstream_device *dev, const char *why)
{
    while (dev->twin_requests) {
        up_pending *p = dev->twin_requests;
        dev->twin_requests = p->next;
        uint64_t id = p->id;
        pending_free(p);
        answer(dev, id, 0, -1, NULL, 0, why);
    }
}

void up_twin_drop_pending(iotgw_upstream_device *dev)
{
    while (dev->twin_requests) {
        up_pending *p = dev->twin_requests;
        dev->twin_requests = p->next;
        pending_free(p);
    }
}

void up_twin_expire(iotgw_upstream_device *dev, int64_t now)
{
    for (up_pending **pp = &dev->twin_requests; *pp;) {
        up_pending *p = *pp;
        if (now < p->deadline_ms) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        uint64_t id = p->id;
        int sent = p->sent;
        pending_free(p);
        answer(dev, id, 0, -1, NULL, 0,
               sent ? "the hub did not answer the twin request in time"
                    : "the device did not come online at the hub in time");
    }
}

static void put_annotation(pn_data_t *d, const char *key, const char *value)
{
    pn_data_put_symbol(d, pn_bytes(strlen(key), key));
    pn_data_put_string(d, pn_bytes(strlen(value), value));
}

static int send_request(iotgw_upstream_device *dev, const char *op, const char *resource, const uint8_t *body,
                        size_t len, uint64_t id)
{
    pn_link_t *l = dev->twin_out;
    if (!l || !(pn_link_state(l) & PN_REMOTE_ACTIVE) || dev->st != UP_DEV_ONLINE)
        return IOTGW_ERR_UPSTREAM_NOT_ONLINE;
    pn_message_t *m = dev->up->scratch;
    pn_message_clear(m);
    char corr[48];
    snprintf(corr, sizeof corr, "%s%" PRIu64, id == SUBSCRIPTION_ID ? "subscribe-" : "", id);
    pn_message_set_correlation_id(m,
                                  (pn_atom_t){.type = PN_STRING, .u.as_bytes = pn_bytes(strlen(corr), corr)});
    pn_data_t *ann = pn_message_annotations(m);
    pn_data_put_map(ann);
    pn_data_enter(ann);
    put_annotation(ann, "operation", op);
    if (resource)
        put_annotation(ann, "resource", resource);
    pn_data_exit(ann);
    /* GET and PUT carry one space, as the C and Node SDKs send */
    if (!len)
        body = (const uint8_t *)" ", len = 1;
    pn_data_put_binary(pn_message_body(m), pn_bytes(len, (const char *)body));
    if (!iotgw_link_send_message(l, m))
        return IOTGW_ERR_UPSTREAM_FULL;
    return 0;
}

static int send_pending(iotgw_upstream_device *dev, up_pending *p)
{
    int rc = p->op == IOTGW_TWIN_GET ? send_request(dev, "GET", NULL, NULL, 0, p->id)
                                     : send_request(dev, "PATCH", REPORTED_RESOURCE, p->body, p->len, p->id);
    p->sent = rc == 0;
    return rc;
}

/* Subscribe to desired updates, then send what the owner asked before the device was
 * online (oldest first: the list is newest first, so walk it recursively). */
static void send_unsent(iotgw_upstream_device *dev, up_pending *p)
{
    if (!p)
        return;
    send_unsent(dev, p->next);
    if (!p->sent)
        send_pending(dev, p);
}

void up_twin_on_online(iotgw_upstream_device *dev)
{
    if (send_request(dev, "PUT", DESIRED_RESOURCE, NULL, 0, SUBSCRIPTION_ID))
        iotgw_log_ev(IOTGW_LOG_WARN, "twin_subscribe_failed", dev->id,
                     "upstream: device %s: could not subscribe to desired properties", dev->id);
    send_unsent(dev, dev->twin_requests);
}

int up_twin_request(iotgw_upstream_device *dev, iotgw_twin_op op, const uint8_t *body, size_t len,
                    uint64_t *request_id)
{
    if (!(dev->features & IOTGW_UPSTREAM_TWIN))
        return IOTGW_ERR_INVALID_ARG;
    if (op != IOTGW_TWIN_GET && op != IOTGW_TWIN_PATCH_REPORTED)
        return IOTGW_ERR_INVALID_ARG;
    if (dev->st == UP_DEV_FAILED)
        return IOTGW_ERR_UPSTREAM_NOT_ONLINE;
    up_pending *p = calloc(1, sizeof *p);
    if (!p)
        return IOTGW_ERR_NOMEM;
    p->id = ++dev->next_twin_id;
    p->op = op;
    if (len && !(p->body = malloc(len))) {
        free(p);
        return IOTGW_ERR_NOMEM;
    }
    if (len)
        memcpy(p->body, body, len);
    p->len = len;
    /* not online yet: sent when it is (or answered with status 0 at the deadline) */
    int rc = dev->st == UP_DEV_ONLINE ? send_pending(dev, p) : 0;
    if (rc) {
        pending_free(p);
        return rc;
    }
    p->deadline_ms = up_now_ms(dev->up) + dev->up->opt.twin_timeout_ms;
    p->next = dev->twin_requests;
    dev->twin_requests = p;
    *request_id = p->id;
    up_conn_wake(dev->conn);
    return 0;
}

/* The request id in a correlation id the gateway wrote: decimal digits only, no more
 * than a uint64_t holds. */
static int request_id_of(pn_bytes_t text, uint64_t *id)
{
    uint64_t v = 0;
    if (!text.start || text.size == 0 || text.size > 20)
        return -1;
    for (size_t i = 0; i < text.size; i++) {
        unsigned digit = (unsigned)(text.start[i] - '0');
        if (digit > 9 || v > (UINT64_MAX - digit) / 10)
            return -1;
        v = v * 10 + digit;
    }
    *id = v;
    return 0;
}

/* Twins and desired patches are JSON objects; anything else from the hub is not passed
 * on to a device as one. */
static int is_json_object(const char *body, size_t len)
{
    json_t *j = body ? json_loadb(body, len, 0, NULL) : NULL;
    int ok = json_is_object(j);
    json_decref(j);
    return ok;
}

void up_twin_on_delivery(iotgw_upstream_device *dev, pn_delivery_t *d)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    iotgw_diag diag = {0};
    pn_message_t *m = pn_message();
    int rc = iotgw_delivery_take(d, TWIN_MESSAGE_MAX, &buf, &len);
    if (rc == 0)
        rc = iotgw_message_decode(m, buf, len, &diag);
    free(buf);
    size_t blen = 0;
    const char *body = rc ? NULL : iotgw_body_bytes(pn_message_body(m), &blen);
    pn_atom_t corr = pn_message_get_correlation_id(m);
    if (rc == 0 && corr.type == PN_NULL && !is_json_object(body, blen)) {
        rc = IOTGW_ERR_INVALID_ARG;
        snprintf(diag.text, sizeof diag.text, "a desired-property update that is not a JSON object");
    }
    iotgw_delivery_settle(d, rc ? PN_REJECTED : PN_ACCEPTED, rc ? "amqp:decode-error" : NULL,
                          rc ? diag.text : NULL);
    if (dev->twin_in && pn_link_credit(dev->twin_in) < TWIN_CREDIT / 2)
        pn_link_flow(dev->twin_in, TWIN_CREDIT - pn_link_credit(dev->twin_in));
    if (rc) {
        iotgw_log_ev_limited(&dev->log, IOTGW_LOG_WARN, "twin_message_refused", dev->id, NULL,
                             "upstream: device %s: undecodable twin message refused: %s", dev->id, diag.text);
        pn_message_free(m);
        return;
    }
    pn_data_t *ann = pn_message_annotations(m);
    int64_t status = 0, version = -1;
    /* an HTTP status, or the device is told the answer had none (not a cut-down int) */
    if (iotgw_map_int(ann, "status", &status) || status < 100 || status > 599)
        status = 0;
    iotgw_map_int(ann, "version", &version);
    if (corr.type == PN_NULL) { /* a desired-property update */
        answer(dev, 0, 200, version, (const uint8_t *)body, body ? blen : 0, NULL);
    } else if (corr.type == PN_STRING && corr.u.as_bytes.size >= 10 &&
               !memcmp(corr.u.as_bytes.start, "subscribe-", 10)) {
        if (status < 200 || status >= 300)
            iotgw_log_evf(IOTGW_LOG_WARN, "twin_subscribe_failed", dev->id,
                          IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("status", status)),
                          "upstream: device %s: desired-property subscription answered %" PRId64, dev->id,
                          status);
    } else {
        uint64_t id = 0;
        up_pending **pp = &dev->twin_requests;
        if (corr.type == PN_STRING && request_id_of(corr.u.as_bytes, &id) == 0)
            while (*pp && (*pp)->id != id)
                pp = &(*pp)->next;
        if (id && *pp) {
            up_pending *p = *pp;
            *pp = p->next;
            const char *bad = !status ? "the hub answered without a valid status"
                              : p->op == IOTGW_TWIN_GET && status < 300 && !is_json_object(body, blen)
                                  ? "the hub's twin is not a JSON object"
                                  : NULL;
            pending_free(p);
            if (bad) {
                iotgw_log_ev_limited(&dev->log, IOTGW_LOG_WARN, "twin_answer_refused", dev->id, NULL,
                                     "upstream: device %s: twin answer refused: %s", dev->id, bad);
                answer(dev, id, 0, -1, NULL, 0, bad);
            } else {
                answer(dev, id, (int)status, version, (const uint8_t *)body, body ? blen : 0, NULL);
            }
        } else {
            iotgw_log_ev_limited(&dev->log, IOTGW_LOG_WARN, "twin_answer_unmatched", dev->id, NULL,
                                 "upstream: device %s: a twin answer to no request of the gateway's ignored",
                                 dev->id);
        }
    }
    pn_message_free(m);
}
