/* One AMQP connection of the upstream pool: opening it, CBS put-tokens and their
 * replies, Proton event dispatch, and what happens to its devices when it is lost. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/transport.h>

#include "codecs/cbs.h"
#include "codecs/sas.h"
#include "gateway/upstream_internal.h"
#include "transport/amqp_map.h"
#include "transport/log.h"
#include "transport/messaging.h"

#define CBS_CREDIT    1000
#define CBS_REPLY_MAX 65536
/* The hub's answer when a connection holds as many tokens as it allows (status 500). */
#define TOKEN_LIMIT_TEXT "maximum number of tokens"

static void retry_fired(iotgw_timer *t, void *ctx);

up_conn *up_conn_new(iotgw_upstream *up)
{
    up_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->up = up;
    c->id = ++up->next_conn_id;
    c->capacity = up->opt.devices_per_connection;
    c->state = IOTGW_CONNECTION_CONNECTING;
    iotgw_list_init(&c->pool_node);
    iotgw_list_init(&c->members);
    iotgw_list_init(&c->ready);
    iotgw_timer_init(up->loop, &c->retry_timer, retry_fired, c);
    iotgw_backoff_init(&c->backoff, up->opt.backoff_base_ms, up->opt.backoff_cap_ms,
                       (uint64_t)iotgw_backoff_uniform(&up->jitter, 1, INT64_MAX));
    iotgw_list_push_back(&up->conns, &c->pool_node);
    return c;
}

void up_conn_free(up_conn *c)
{
    IOTGW_ASSERT(iotgw_list_empty(&c->members) && c->ndevices == 0);
    iotgw_list_remove(&c->pool_node);
    iotgw_timer_stop(&c->retry_timer);
    if (c->conn) {
        iotgw_conn_set_handler(c->conn, NULL, NULL);
        iotgw_conn_close(c->conn, NULL, NULL);
    }
    free(c);
}

/* ------------------------------------------------------------------ losing and reopening */

/* An attempt that took this long before failing hung: nothing refused it. */
#define HUNG_ATTEMPT_MS 4000

static void retry_fired(iotgw_timer *t, void *ctx)
{
    (void)t;
    up_conn *c = ctx;
    up_conn_start(c);
}

/* The AMQP connection is gone (or never came): devices wait, in-flight telemetry goes
 * back to their queues, and the connection is reopened after a backoff. */
static void conn_lost(up_conn *c, const char *cond, const char *description)
{
    iotgw_upstream *up = c->up;
    c->conn = NULL;
    c->ssn = NULL;
    c->cbs_out = c->cbs_in = NULL;
    c->in_flight = 0;
    c->state = IOTGW_CONNECTION_BACKOFF;
    c->reconnects++;
    up->reconnects++;
    snprintf(c->reason, sizeof c->reason, "%s: %s", cond && *cond ? cond : "iotgw:closed",
             description && *description ? description : "closed");
    iotgw_upstream_device *dev;
    IOTGW_LIST_FOREACH (dev, &c->members, iotgw_upstream_device, member_node)
        up_device_event(dev, UP_EV_CONN_LOST, NULL);
    IOTGW_ASSERT(c->nonline == 0 && iotgw_list_empty(&c->ready));
    const iotgw_hub_settings *h = &up->opt.hub;
    char where[300];
    snprintf(where, sizeof where, "%s:%d (%s%s%s)", h->connect_host ? h->connect_host : h->host_name,
             h->port                            ? h->port
             : h->kind == IOTGW_TRANSPORT_AMQPS ? 5671
                                                : 443,
             h->kind == IOTGW_TRANSPORT_AMQPS ? "amqps" : "wss", h->proxy ? " through proxy " : "",
             h->proxy ? h->proxy : "");
    snprintf(up->last_failure, sizeof up->last_failure, "connection %d to %.80s: %.100s", c->id, where,
             c->reason);
    int kept = up->opt.keep_connection && up->conns.next == &c->pool_node && up->conns.prev == &c->pool_node;
    if (!c->ndevices && !kept) {
        iotgw_log_evf(IOTGW_LOG_INFO, "hub_connection_closed", NULL,
                      IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("connection", c->id), IOTGW_FIELD_STR("hub", where),
                                       IOTGW_FIELD_STR("reason", c->reason)),
                      "upstream: connection %d to %s closed (%s)", c->id, where, c->reason);
        up_conn_free(c);
        return;
    }
    /* The backoff counts from the start of the attempt that failed. An attempt that hung
     * until a timeout (a frozen hub, a black hole: libwebsockets gives a TLS handshake
     * 5 s) cost the hub nothing, so the next follows within half the base: one attempt is
     * then nearly always pending, and served as soon as the hub answers again. One
     * refused at once (a hub that is down) waits the backoff out. */
    int64_t now = up_now_ms(up), tried = now - c->attempt_started_ms;
    int64_t wait = iotgw_backoff_next(&c->backoff) - tried;
    if (tried >= HUNG_ATTEMPT_MS)
        wait = iotgw_backoff_uniform(&up->jitter, 0, up->opt.backoff_base_ms / 2);
    if (wait < 0)
        wait = 0;
    c->next_retry_ms = now + wait;
    iotgw_timer_start(&c->retry_timer, wait, 0);
    iotgw_log_evf(IOTGW_LOG_WARN, "hub_connection_lost", NULL,
                  IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("connection", c->id), IOTGW_FIELD_STR("hub", where),
                                   IOTGW_FIELD_STR("reason", c->reason),
                                   IOTGW_FIELD_INT("devices", c->ndevices),
                                   IOTGW_FIELD_INT("retry_ms", wait)),
                  "upstream: connection %d to %s lost (%s); %u devices wait, reopening in %lld ms", c->id,
                  where, c->reason, c->ndevices, (long long)wait);
}

void up_conn_reset(up_conn *c, const char *cond, const char *description)
{
    if (!c->conn)
        return;
    snprintf(c->reason, sizeof c->reason, "%s: %s", cond, description);
    iotgw_conn_close(c->conn, cond, description);
}

static void on_event(iotgw_conn *ic, pn_event_t *e, void *ctx);

int up_conn_start(up_conn *c)
{
    iotgw_upstream *up = c->up;
    const iotgw_hub_settings *h = &up->opt.hub;
    iotgw_client_options o = {
        .kind = h->kind,
        .host = h->connect_host ? h->connect_host : h->host_name,
        .port = h->port,
        .proxy = h->proxy,
        .tls = h->tls,
        .idle_timeout_ms = h->idle_timeout_ms,
    };
    iotgw_diag diag = {0};
    c->state = IOTGW_CONNECTION_CONNECTING;
    c->reason[0] = '\0';
    c->attempt_started_ms = up_now_ms(up);
    if (iotgw_conn_connect(up->loop, &o, on_event, c, &c->conn, &diag)) {
        c->conn = NULL;
        conn_lost(c, IOTGW_COND_CONNECT, diag.text);
        return -1;
    }
    pn_connection_t *pc = iotgw_conn_connection(c->conn);
    char container[48];
    snprintf(container, sizeof container, "iotgw-%016" PRIx64,
             (uint64_t)iotgw_backoff_uniform(&up->jitter, 1, INT64_MAX));
    pn_connection_set_container(pc, container);
    pn_connection_set_hostname(pc, h->host_name);
    pn_connection_open(pc);
    c->ssn = pn_session(pc);
    pn_session_open(c->ssn);
    c->cbs_out = pn_sender(c->ssn, "$cbs-sender");
    pn_terminus_set_address(pn_link_target(c->cbs_out), "$cbs");
    pn_terminus_set_address(pn_link_source(c->cbs_out), "$cbs");
    pn_link_open(c->cbs_out);
    c->cbs_in = pn_receiver(c->ssn, "$cbs-receiver");
    pn_terminus_set_address(pn_link_source(c->cbs_in), "$cbs");
    pn_terminus_set_address(pn_link_target(c->cbs_in), "$cbs");
    pn_link_open(c->cbs_in);
    pn_link_flow(c->cbs_in, CBS_CREDIT);
    return 0;
}

/* ------------------------------------------------------------------ CBS */

int up_conn_put_token(up_conn *c, iotgw_upstream_device *dev)
{
    iotgw_upstream *up = c->up;
    if (!c->cbs_out || pn_link_credit(c->cbs_out) <= 0)
        return -1;
    char resource[512];
    if (snprintf(resource, sizeof resource, "%s/devices/%s", up->opt.hub.host_name, dev->id) >=
        (int)sizeof resource) {
        up_device_event(dev, UP_EV_REFUSED,
                        &(up_event_args){.kind = UP_REFUSAL_FOR_GOOD,
                                         .cond = "iotgw:invalid-device",
                                         .description = "device id too long for a token"});
        return -2;
    }
    char *token = NULL;
    iotgw_diag diag = {0};
    uint64_t expiry = (uint64_t)time(NULL) + up->opt.token_lifetime_s;
    if (iotgw_sas_build(resource, dev->key, expiry, dev->policy, &token, &diag)) {
        up_device_event(
            dev, UP_EV_REFUSED,
            &(up_event_args){.kind = UP_REFUSAL_FOR_GOOD, .cond = "iotgw:bad-key", .description = diag.text});
        return -2;
    }
    pn_message_t *m = up->scratch;
    uint64_t id = ++c->next_cbs_id;
    iotgw_cbs_put_token_request(m, id, resource, token);
    pn_delivery_t *d = iotgw_link_send_message(c->cbs_out, m);
    OPENSSL_cleanse(token, strlen(token));
    free(token);
    pn_data_clear(pn_message_body(m)); /* the token must not linger in the scratch message */
    if (!d)
        return -1;
    up_device_event(dev, UP_EV_TOKEN_SENT, &(up_event_args){.request = id});
    up_conn_wake(c);
    return 0;
}

static const char *condition_for_status(int64_t status)
{
    switch (status) {
    case 401:
    case 403: return "amqp:unauthorized-access";
    case 404: return "amqp:not-found";
    case 429:
    case 503: return "com.microsoft:device-container-throttled";
    default: return status >= 400 && status < 500 ? "amqp:invalid-field" : "amqp:internal-error";
    }
}

static void on_cbs_reply(up_conn *c, pn_delivery_t *d)
{
    iotgw_upstream *up = c->up;
    uint8_t *buf = NULL;
    size_t len = 0;
    iotgw_diag diag = {0};
    pn_message_t *m = up->scratch;
    int rc = iotgw_delivery_take(d, CBS_REPLY_MAX, &buf, &len);
    if (rc == 0)
        rc = iotgw_message_decode(m, buf, len, &diag);
    free(buf);
    iotgw_delivery_settle(d, rc ? PN_REJECTED : PN_ACCEPTED, rc ? "amqp:decode-error" : NULL,
                          rc ? "undecodable put-token reply" : NULL);
    if (pn_link_credit(c->cbs_in) < CBS_CREDIT / 2)
        pn_link_flow(c->cbs_in, CBS_CREDIT - pn_link_credit(c->cbs_in));
    if (rc) {
        iotgw_log_evf(IOTGW_LOG_WARN, "hub_cbs_reply_undecodable", NULL,
                      IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("connection", c->id)),
                      "upstream: connection %d: undecodable CBS reply ignored", c->id);
        return;
    }
    pn_atom_t corr = pn_message_get_correlation_id(m);
    if (corr.type != PN_ULONG)
        return;
    iotgw_upstream_device *dev = NULL, *o;
    IOTGW_LIST_FOREACH (o, &c->members, iotgw_upstream_device, member_node)
        if (o->cbs_request == corr.u.as_ulong) {
            dev = o;
            break;
        }
    if (!dev)
        return; /* its device left or moved meanwhile */
    int64_t status = 0;
    char desc[512] = "";
    pn_data_t *props = pn_message_properties(m);
    iotgw_map_int(props, "status-code", &status);
    iotgw_map_text(props, "status-description", desc, sizeof desc);
    if (status == 200) {
        up_device_event(dev, UP_EV_TOKEN_ACCEPTED, NULL);
        return;
    }
    if (status == 500 && strstr(desc, TOKEN_LIMIT_TEXT)) {
        unsigned held = 0;
        IOTGW_LIST_FOREACH (o, &c->members, iotgw_upstream_device, member_node)
            held += (unsigned)o->authorized;
        c->capacity = held ? held : 1;
        iotgw_log_evf(IOTGW_LOG_INFO, "hub_connection_full", dev->id,
                      IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("connection", c->id), IOTGW_FIELD_INT("tokens", held)),
                      "upstream: connection %d is full at the hub (%u tokens); device %s moves to another",
                      c->id, held, dev->id);
        up_device_event(dev, UP_EV_CONN_FULL, NULL);
        return;
    }
    char text[300];
    snprintf(text, sizeof text, "put-token answered %" PRId64 "%s%s", status, *desc ? ": " : "", desc);
    up_refusal kind = status == 404                    ? UP_REFUSAL_FOR_GOOD
                      : status == 401 || status == 403 ? UP_REFUSAL_IDENTITY
                                                       : UP_REFUSAL_PASSING;
    up_device_event(
        dev, UP_EV_REFUSED,
        &(up_event_args){.kind = kind, .cond = condition_for_status(status), .description = text});
}

/* ------------------------------------------------------------------ events */

static void remote_condition(pn_condition_t *cond, const char **name, const char **desc)
{
    *name = pn_condition_is_set(cond) ? pn_condition_get_name(cond) : NULL;
    *desc = pn_condition_is_set(cond) ? pn_condition_get_description(cond) : NULL;
}

static void on_open(up_conn *c)
{
    iotgw_upstream *up = c->up;
    c->state = IOTGW_CONNECTION_OPEN;
    iotgw_backoff_reset(&c->backoff);
    const char *host = up->opt.hub.connect_host ? up->opt.hub.connect_host : up->opt.hub.host_name;
    iotgw_log_evf(IOTGW_LOG_INFO, "hub_connection_open", NULL,
                  IOTGW_LOG_FIELDS(IOTGW_FIELD_INT("connection", c->id), IOTGW_FIELD_STR("hub", host),
                                   IOTGW_FIELD_STR("peer", iotgw_conn_peer(c->conn)),
                                   IOTGW_FIELD_INT("devices", c->ndevices)),
                  "upstream: connection %d open to %s (%s), %u devices", c->id, host,
                  iotgw_conn_peer(c->conn), c->ndevices);
    iotgw_upstream_device *dev;
    IOTGW_LIST_FOREACH (dev, &c->members, iotgw_upstream_device, member_node)
        up_device_event(dev, UP_EV_CONN_OPEN, NULL);
}

static void on_event(iotgw_conn *ic, pn_event_t *e, void *ctx)
{
    (void)ic;
    up_conn *c = ctx;
    const char *name, *desc;
    switch (pn_event_type(e)) {
    case PN_CONNECTION_WAKE:
        if (c->state == IOTGW_CONNECTION_OPEN)
            up_telemetry_pump(c);
        break;
    case PN_CONNECTION_REMOTE_OPEN: on_open(c); break;
    case PN_CONNECTION_REMOTE_CLOSE:
        remote_condition(pn_connection_remote_condition(pn_event_connection(e)), &name, &desc);
        up_conn_reset(c, name ? name : "amqp:connection:forced",
                      desc ? desc : "the hub closed the connection");
        break;
    case PN_SESSION_REMOTE_CLOSE:
        remote_condition(pn_session_remote_condition(pn_event_session(e)), &name, &desc);
        up_conn_reset(c, name ? name : "amqp:session:ended", desc ? desc : "the hub ended the session");
        break;
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH: {
        pn_link_t *l = pn_event_link(e);
        if (l == c->cbs_out || l == c->cbs_in) {
            remote_condition(pn_link_remote_condition(l), &name, &desc);
            up_conn_reset(c, name ? name : "amqp:link:detach-forced", desc ? desc : "the hub detached CBS");
        } else {
            up_device_on_link_event(c, pn_link_get_context(l), e);
        }
        break;
    }
    case PN_LINK_FLOW:
        if (pn_event_link(e) == c->cbs_out)
            up_pool_schedule(c->up); /* credit for the put-tokens that wait */
        else if (pn_event_link(e) != c->cbs_in)
            up_device_on_link_event(c, pn_link_get_context(pn_event_link(e)), e);
        break;
    case PN_LINK_REMOTE_OPEN:
        if (pn_event_link(e) != c->cbs_out && pn_event_link(e) != c->cbs_in)
            up_device_on_link_event(c, pn_link_get_context(pn_event_link(e)), e);
        break;
    case PN_DELIVERY: {
        pn_delivery_t *d = pn_event_delivery(e);
        pn_link_t *l = pn_delivery_link(d);
        if (l == c->cbs_in) {
            if (!pn_delivery_partial(d) && pn_delivery_readable(d))
                on_cbs_reply(c, d);
        } else if (l == c->cbs_out) {
            if (pn_delivery_remote_state(d))
                pn_delivery_settle(d);
        } else {
            up_device_on_link_event(c, pn_link_get_context(l), e);
        }
        break;
    }
    case PN_TRANSPORT_CLOSED: {
        pn_condition_t *cond = pn_transport_condition(iotgw_conn_transport(ic));
        remote_condition(cond, &name, &desc);
        if (!name && c->reason[0]) {
            char reason[sizeof c->reason];
            snprintf(reason, sizeof reason, "%s", c->reason);
            conn_lost(c, NULL, reason);
        } else {
            conn_lost(c, name ? name : IOTGW_COND_IO, desc ? desc : "connection closed");
        }
        break;
    }
    default: break;
    }
}
