#include "emulator/hub_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <openssl/rand.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#include "hubside/amqp_address.h"
#include "hubside/mqtt_device.h"
#include "transport/messaging.h"

/* Credit the hub gives on links it receives on (the hub's own figures are not known;
 * the CBS value is observed). Refilled when half is used. */
#define CREDIT_CBS       100
#define CREDIT_TELEMETRY 1000
#define CREDIT_REQUESTS  100
/* Bytes a session may buffer from the peer. Proton turns it into the session's incoming
 * window in frames (capacity / max-frame-size); 5000 x 64 KiB announces a window of 5000
 * transfers, as IoT Hub does (observed). A smaller window (4 MiB gave 64) makes a
 * gateway multiplexing hundreds of devices on one session hold thousands of transfers
 * unsent, which Proton rescans on every turn. What is actually buffered stays bounded by
 * link credit and the 1 MiB max-message-size, and the emulator consumes it at once. */
#define SESSION_CAPACITY (5000u * IOTGW_MAX_FRAME_SIZE)

uint64_t emu_now_s(void)
{
    return (uint64_t)time(NULL);
}

int64_t emu_wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ------------------------------------------------------------------ sessions */

emu_session *emu_session_find(emu_conn *c, emu_identity *id)
{
    emu_live *live = emu_live_find(&c->hub->live, id);
    for (emu_session *s = live ? live->sessions : NULL; s; s = s->next_of_identity)
        if (s->conn == c)
            return s;
    return NULL;
}

emu_session *emu_session_get(emu_conn *c, emu_identity *id, uint64_t token_expiry)
{
    emu_session *s = emu_session_find(c, id);
    if (s) {
        if (token_expiry)
            s->token_expiry = token_expiry;
        return s;
    }
    emu_live *live = emu_live_get(&c->hub->live, id);
    s = live ? calloc(1, sizeof *s) : NULL;
    if (!s)
        return NULL;
    s->id = id;
    s->live = live;
    s->conn = c;
    s->token_expiry = token_expiry;
    s->next_in_conn = c->sessions;
    c->sessions = s;
    s->next_of_identity = live->sessions;
    live->sessions = s;
    return s;
}

static void link_forget_session(emu_link *l)
{
    emu_session *s = l->session;
    if (!s)
        return;
    if (s->telemetry == l)
        s->telemetry = NULL;
    if (s->c2d == l) {
        s->c2d = NULL;
        if (s->live->active == s)
            emu_c2d_requeue(s->live); /* its locks go with the link */
    }
    if (s->method_requests == l)
        s->method_requests = NULL;
    if (s->method_responses == l)
        s->method_responses = NULL;
    if (s->twin_requests == l)
        s->twin_requests = NULL;
    if (s->twin_responses == l) {
        s->twin_responses = NULL;
        s->desired_subscribed = 0;
    }
    l->session = NULL;
}

int emu_hub_drop_connections(emu_hub *hub, const char *cond_name, const char *description)
{
    int n = 0;
    emu_conn *c;
    IOTGW_LIST_FOREACH (c, &hub->conns, emu_conn, in_hub) {
        iotgw_conn_close(c->conn, cond_name, description);
        n++;
    }
    return n + emu_mqtt_drop_all(hub, description);
}

void emu_hub_identity_disconnect(emu_hub *hub, emu_identity *id, const char *cond_name,
                                 const char *description)
{
    emu_live *live = emu_live_find(&hub->live, id);
    while (live && live->sessions)
        emu_session_end(live->sessions, cond_name, description);
    if (live && live->mqtt)
        emu_mqtt_drop(live->mqtt, description);
}

void emu_hub_identity_forget(emu_hub *hub, emu_identity *id)
{
    emu_hub_identity_disconnect(hub, id, "amqp:not-found", "the device was deleted");
    emu_methods_identity_gone(hub, id);
    emu_live *live = emu_live_find(&hub->live, id);
    if (!live)
        return;
    IOTGW_ASSERT(!live->sessions && !live->active && !live->mqtt);
    emu_c2d_free(live);
    emu_live_remove(&hub->live, live);
}

emu_identity_activity emu_hub_identity_activity(const emu_hub *hub, const emu_identity *id)
{
    const emu_live *live = emu_live_find(&hub->live, id);
    if (!live)
        return (emu_identity_activity){0};
    return (emu_identity_activity){
        .connected = emu_live_connected(live),
        .last_activity_ms = live->last_activity_ms,
        .telemetry_in = live->telemetry_in,
    };
}

void emu_session_end(emu_session *s, const char *cond_name, const char *description)
{
    emu_conn *c = s->conn;
    emu_identity *id = s->id;
    emu_live *live = s->live;
    IOTGW_ASSERT(live->id == id);
    emu_link *l;
    IOTGW_LIST_FOREACH (l, &c->links, emu_link, in_conn) {
        if (l->session != s)
            continue;
        link_forget_session(l);
        l->kind = EMU_LINK_REFUSED;
        if (!(pn_link_state(l->link) & PN_LOCAL_CLOSED))
            iotgw_link_close_with(l->link, cond_name, description);
    }
    for (emu_session **p = &c->sessions; *p; p = &(*p)->next_in_conn)
        if (*p == s) {
            *p = s->next_in_conn;
            break;
        }
    for (emu_session **p = &live->sessions; *p; p = &(*p)->next_of_identity)
        if (*p == s) {
            *p = s->next_of_identity;
            break;
        }
    int was_active = live->active == s;
    if (was_active)
        live->active = NULL;
    free(s);
    if (was_active) {
        emu_c2d_requeue(live);
        emu_methods_session_changed(c->hub, id);
    }
    if (c->conn)
        iotgw_conn_wake(c->conn);
}

/* ------------------------------------------------------------------ token expiry */

static void expiry_fired(iotgw_timer *t, void *ctx)
{
    emu_conn *c = ctx;
    (void)t;
    uint64_t now = emu_now_s();
    if (c->device_grant && c->device_grant <= now) {
        iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": hub-level device token expired", c->serial);
        c->device_grant = 0;
    }
    if (c->service_grant && c->service_grant <= now) {
        iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": service token expired", c->serial);
        c->service_grant = 0;
        emu_link *l;
        IOTGW_LIST_FOREACH (l, &c->links, emu_link, in_conn) {
            if (l->kind == EMU_LINK_SERVICE_C2D) {
                l->kind = EMU_LINK_REFUSED;
                iotgw_link_close_with(l->link, "amqp:unauthorized-access", "the service token expired");
            }
        }
    }
    emu_session *s = c->sessions;
    while (s) {
        emu_session *next = s->next_in_conn;
        int expired = s->token_expiry ? s->token_expiry <= now : !c->device_grant;
        if (expired) {
            iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": %s: token expired, links detached", c->serial,
                      s->id->id);
            emu_session_end(s, "amqp:unauthorized-access",
                            "the identity's token expired and was not renewed");
        }
        s = next;
    }
    emu_conn_schedule_expiry(c);
    iotgw_conn_wake(c->conn);
}

void emu_conn_schedule_expiry(emu_conn *c)
{
    uint64_t next = 0;
    uint64_t grants[2] = {c->device_grant, c->service_grant};
    for (int i = 0; i < 2; i++)
        if (grants[i] && (!next || grants[i] < next))
            next = grants[i];
    for (emu_session *s = c->sessions; s; s = s->next_in_conn)
        if (s->token_expiry && (!next || s->token_expiry < next))
            next = s->token_expiry;
    iotgw_timer_stop(&c->expiry_timer);
    if (!next)
        return;
    uint64_t now = emu_now_s();
    /* se comes from a client's token and may be far away: wake at least daily and look again. */
    uint64_t wait_s = next > now ? next - now : 0;
    int64_t delay = (int64_t)(wait_s < 86400 ? wait_s : 86400) * 1000;
    iotgw_timer_start(&c->expiry_timer, delay, 0);
}

/* ------------------------------------------------------------------ links */

static emu_link *link_record(emu_conn *c, pn_link_t *link, emu_link_kind kind)
{
    emu_link *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->kind = kind;
    l->link = link;
    l->conn = c;
    iotgw_list_init(&l->stream);
    iotgw_list_init(&l->in_conn);
    iotgw_list_push_front(&c->links, &l->in_conn);
    pn_link_set_context(link, l);
    return l;
}

int emu_link_answer(emu_link *l, pn_message_t *msg)
{
    IOTGW_ASSERT(l->answers.count <= EMU_MAX_QUEUED);
    int rc = iotgw_link_answer(l->link, &l->answers, msg, EMU_MAX_QUEUED);
    if (rc && l->answers.count >= EMU_MAX_QUEUED)
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": link \"%s\": the client gives no credit; answer dropped",
                  l->conn->serial, pn_link_name(l->link));
    return rc;
}

pn_message_t *emu_take_request(emu_link *l, pn_delivery_t *d, const char *what)
{
    uint8_t *buf;
    size_t len;
    iotgw_diag diag = {0};
    pn_message_t *m = l->conn->hub->scratch;
    if (iotgw_delivery_take(d, EMU_LINK_MAX_MESSAGE_SIZE, &buf, &len)) {
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": %s of %zu bytes refused: too large", l->conn->serial,
                  what, len);
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:link:message-size-exceeded", "the message is too large");
        return NULL;
    }
    int rc = iotgw_message_decode(m, buf, len, &diag);
    free(buf);
    if (rc) {
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": %s refused: %s", l->conn->serial, what, diag.text);
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:decode-error", diag.text);
        return NULL;
    }
    return m;
}

emu_link *emu_reply_link(emu_link *request, emu_link_kind kind, const char *reply_to)
{
    emu_link *same_session = NULL, *any = NULL, *l;
    IOTGW_LIST_FOREACH (l, &request->conn->links, emu_link, in_conn) {
        if (l->kind != kind || (pn_link_state(l->link) & PN_LOCAL_CLOSED))
            continue;
        if (reply_to && l->reply_address && !strcmp(reply_to, l->reply_address))
            return l;
        if (!same_session && pn_link_session(l->link) == pn_link_session(request->link))
            same_session = l;
        if (!any)
            any = l;
    }
    return same_session ? same_session : any;
}

static void link_record_free(emu_link *l)
{
    link_forget_session(l);
    emu_events_detach(l);
    iotgw_answer_queue_clear(&l->answers);
    iotgw_list_remove(&l->in_conn);
    pn_link_set_context(l->link, NULL);
    free(l->reply_address);
    free(l->consumer_group);
    free(l);
}

static void refuse(emu_conn *c, pn_link_t *link, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refuse(emu_conn *c, pn_link_t *link, const char *cond, const char *fmt, ...)
{
    char desc[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof desc, fmt, ap);
    va_end(ap);
    iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": link \"%s\" refused: %s (%s)", c->serial, pn_link_name(link),
              desc, cond);
    link_record(c, link, EMU_LINK_REFUSED);
    pn_link_open(link);
    iotgw_link_close_with(link, cond, desc);
}

static void grant_credit(pn_link_t *link, int credit)
{
    int have = pn_link_credit(link);
    if (have < credit / 2)
        pn_link_flow(link, credit - have);
}

static int credit_for(emu_link_kind kind)
{
    switch (kind) {
    case EMU_LINK_CBS_REQUESTS: return CREDIT_CBS;
    case EMU_LINK_TELEMETRY: return CREDIT_TELEMETRY;
    default: return CREDIT_REQUESTS;
    }
}

static void open_link(emu_link *l)
{
    pn_link_t *link = l->link;
    iotgw_link_open_as_asked(link, EMU_LINK_MAX_MESSAGE_SIZE);
    if (pn_link_is_receiver(link))
        grant_credit(link, credit_for(l->kind));
}

/* Which device link a client attach makes, from the address and who sends. */
static emu_link_kind device_link_kind(iotgw_hubaddr_kind a, int we_send)
{
    switch (a) {
    case IOTGW_HUBADDR_TELEMETRY: return we_send ? 0 : EMU_LINK_TELEMETRY;
    case IOTGW_HUBADDR_C2D: return we_send ? EMU_LINK_C2D : 0;
    case IOTGW_HUBADDR_METHODS: return we_send ? EMU_LINK_METHOD_REQUESTS : EMU_LINK_METHOD_RESPONSES;
    case IOTGW_HUBADDR_TWIN: return we_send ? EMU_LINK_TWIN_RESPONSES : EMU_LINK_TWIN_REQUESTS;
    default: return 0;
    }
}

static emu_link **session_slot(emu_session *s, emu_link_kind kind)
{
    switch (kind) {
    case EMU_LINK_TELEMETRY: return &s->telemetry;
    case EMU_LINK_C2D: return &s->c2d;
    case EMU_LINK_METHOD_REQUESTS: return &s->method_requests;
    case EMU_LINK_METHOD_RESPONSES: return &s->method_responses;
    case EMU_LINK_TWIN_REQUESTS: return &s->twin_requests;
    case EMU_LINK_TWIN_RESPONSES: return &s->twin_responses;
    default: return NULL;
    }
}

/* IoT Hub keeps one connection per identity: the session attaching now becomes the
 * active one and the previous one loses its links. */
static void take_over(emu_session *s)
{
    emu_live *live = s->live;
    emu_session *old = live->active;
    s->attached = 1;
    if (old == s)
        return;
    if (live->mqtt) {
        iotgw_log(IOTGW_LOG_INFO, "%s: links moved from MQTT to conn %" PRIu64, live->id->id,
                  s->conn->serial);
        emu_mqtt_drop(live->mqtt, "a newer connection for this identity took its links over");
    }
    live->active = s;
    if (old) {
        IOTGW_ASSERT(old->live == live && old->conn != s->conn); /* one session per identity and conn */
        iotgw_log(IOTGW_LOG_INFO, "%s: links moved from conn %" PRIu64 " to conn %" PRIu64, live->id->id,
                  old->conn->serial, s->conn->serial);
        emu_session_end(old, "com.microsoft:link-creation-conflict",
                        "a newer connection for this identity took its links over");
    }
    IOTGW_ASSERT(live->active == s); /* at most one session per identity is active */
}

static void attach_device_link(emu_conn *c, pn_link_t *link, iotgw_hubaddr *a)
{
    int we_send = pn_link_is_sender(link);
    emu_link_kind kind = device_link_kind(a->kind, we_send);
    emu_identity *id = emu_registry_find(c->hub->registry, a->device_id, a->module_id);
    const char *who = a->device_id;
    char both[300];
    if (a->module_id) {
        snprintf(both, sizeof both, "%s/%s", a->device_id, a->module_id);
        who = both;
    }
    emu_session *s = id ? emu_session_find(c, id) : NULL;
    uint64_t now = emu_now_s();
    if (s && s->token_expiry && s->token_expiry <= now)
        s = NULL;
    if (!s && c->device_grant > now) {
        if (!id) {
            refuse(c, link, "amqp:not-found", "%s is not registered on this hub", who);
            return;
        }
        s = emu_session_get(c, id, 0);
    }
    if (!s) {
        refuse(c, link, "amqp:unauthorized-access",
               "%s is not authorized on this connection (no valid CBS token)", who);
        return;
    }
    if (!id->enabled) {
        refuse(c, link, "amqp:unauthorized-access", "%s is disabled", who);
        return;
    }
    if (!kind) {
        refuse(c, link, "amqp:not-allowed", "wrong direction for %s link of %s",
               iotgw_hubaddr_kind_name(a->kind), who);
        return;
    }
    take_over(s);
    emu_link *l = link_record(c, link, kind);
    if (!l) {
        pn_link_close(link);
        return;
    }
    emu_link **slot = session_slot(s, kind);
    if (*slot && *slot != l && kind != EMU_LINK_TELEMETRY) {
        emu_link *old = *slot;
        link_forget_session(old);
        old->kind = EMU_LINK_REFUSED;
        iotgw_link_close_with(old->link, "amqp:link:stolen", "a newer link of the same kind replaced it");
    }
    *slot = l;
    l->session = s;
    open_link(l);
    s->live->last_activity_ms = emu_wall_ms();
    iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": %s: %s link \"%s\" attached", c->serial, id->id,
              iotgw_hubaddr_kind_name(a->kind), pn_link_name(link));
    if (kind == EMU_LINK_C2D)
        emu_c2d_pump(s);
    if (kind == EMU_LINK_METHOD_REQUESTS)
        emu_methods_session_changed(c->hub, id);
}

static void put_symbol_string(pn_data_t *d, const char *key, const char *value)
{
    pn_data_put_symbol(d, pn_bytes(strlen(key), key));
    pn_data_put_string(d, pn_bytes(strlen(value), value));
}

/* IoT Hub sends readers of messages/events (and its $management node) to its Event Hubs
 * namespace: the link is detached with amqp:link:redirect and where to go in the
 * error's info. Here that is the emulator itself, under the Event Hub-compatible name,
 * on its AMQPS port: "amqps://{host}:{port}/{event hub}/ConsumerGroups/{g}/Partitions/{n}",
 * or ".../{event hub}/$management" (consumer_group NULL), the form Azure's sample reads
 * the event hub's name from (/:\d+\/(.*)\/\$management/). */
static void redirect(emu_conn *c, pn_link_t *link, const char *consumer_group, int partition)
{
    emu_hub *hub = c->hub;
    int port = emu_hub_amqps_port(hub);
    char address[600];
    int n = consumer_group
                ? snprintf(address, sizeof address, "amqps://%s:%d/%s/ConsumerGroups/%s/Partitions/%d",
                           hub->opt.hostname, port, hub->event_hub, consumer_group, partition)
                : snprintf(address, sizeof address, "amqps://%s:%d/%s/$management", hub->opt.hostname, port,
                           hub->event_hub);
    link_record(c, link, EMU_LINK_REFUSED);
    pn_link_open(link);
    pn_condition_t *cond = pn_link_condition(link);
    if (n < 0 || (size_t)n >= sizeof address) { /* a consumer group name longer than any Event Hub allows */
        pn_condition_set_name(cond, "amqp:invalid-field");
        pn_condition_set_description(cond, "the consumer group's name is too long");
        pn_link_close(link);
        return;
    }
    pn_condition_set_name(cond, "amqp:link:redirect");
    pn_condition_set_description(cond, "the telemetry stream is read from the Event Hub-compatible endpoint");
    pn_data_t *info = pn_condition_info(cond);
    pn_data_put_map(info);
    pn_data_enter(info);
    put_symbol_string(info, "hostname", hub->opt.hostname);
    put_symbol_string(info, "network-host", hub->opt.hostname);
    pn_data_put_symbol(info, pn_bytes(4, "port"));
    pn_data_put_int(info, port);
    put_symbol_string(info, "address", address);
    pn_data_exit(info);
    pn_link_close(link);
    iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": link \"%s\" redirected to %s", c->serial, pn_link_name(link),
              address);
}

static int may_read_stream(const emu_conn *c)
{
    return c->service_grant > emu_now_s() && (c->service_rights & EMU_RIGHT_SERVICE_CONNECT);
}

/* The stream's $management node (kind: EMU_MGMT_*). Its links need no token to attach:
 * each request is authorized by itself (events.c), as Event Hubs does. */
static void attach_management(emu_conn *c, pn_link_t *link, int kind, const char *event_hub)
{
    emu_hub *hub = c->hub;
    int we_send = pn_link_is_sender(link);
    emu_link *l;
    if (*event_hub && strcasecmp(event_hub, hub->event_hub))
        refuse(c, link, "amqp:not-found",
               "The messaging entity 'sb://%s/%.100s' could not be found. (this hub's "
               "event hub is %s)",
               hub->opt.hostname, event_hub, hub->event_hub);
    else if (kind == EMU_MGMT_IOTHUB && hub->opt.stream_redirect && emu_hub_amqps_port(hub)) {
        if (!may_read_stream(c))
            refuse(c, link, "amqp:unauthorized-access",
                   "reading the telemetry stream needs a ServiceConnect token");
        else
            redirect(c, link, NULL, 0);
    } else if ((l = link_record(c, link, we_send ? EMU_LINK_MGMT_REPLIES : EMU_LINK_MGMT_REQUESTS))) {
        if (we_send) {
            const char *reply = pn_terminus_get_address(pn_link_remote_target(link));
            l->reply_address = reply ? strdup(reply) : NULL;
        }
        open_link(l);
        iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": $management %s link \"%s\" attached", c->serial,
                  we_send ? "reply" : "request", pn_link_name(link));
    }
}

static void attach_events(emu_conn *c, pn_link_t *link, const iotgw_hubaddr *a)
{
    const char *why = NULL, *cond;
    emu_link *l;
    emu_hub *hub = c->hub;
    if (!pn_link_is_sender(link))
        refuse(c, link, "amqp:not-allowed", "the telemetry stream is read, not written");
    else if (!may_read_stream(c))
        refuse(c, link, "amqp:unauthorized-access",
               "reading the telemetry stream needs a ServiceConnect token");
    else if (a->event_hub && strcasecmp(a->event_hub, hub->event_hub))
        refuse(c, link, "amqp:not-found", "no event hub \"%.100s\" here (this hub's stream is %s)",
               a->event_hub, hub->event_hub);
    else if (!a->event_hub && hub->opt.stream_redirect && emu_hub_amqps_port(hub))
        redirect(c, link, a->consumer_group, a->partition);
    else if (!(l = link_record(c, link, EMU_LINK_EVENTS)))
        pn_link_close(link);
    else if ((cond = emu_events_attach(l, a->partition, a->consumer_group, &why))) {
        l->kind = EMU_LINK_REFUSED;
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": stream link \"%s\" refused: %s", c->serial,
                  pn_link_name(link), why);
        pn_link_open(link);
        iotgw_link_close_with(link, cond, why);
    } else {
        open_link(l);
        iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": reader of partition %d (consumer group %s) attached",
                  c->serial, a->partition, a->consumer_group);
        emu_events_pump(l);
    }
}

static void on_link_open(emu_conn *c, pn_link_t *link)
{
    if (!(pn_link_state(link) & PN_LOCAL_UNINIT))
        return; /* we opened it */
    int we_send = pn_link_is_sender(link);
    pn_terminus_t *remote = we_send ? pn_link_remote_source(link) : pn_link_remote_target(link);
    const char *address = pn_terminus_get_address(remote);
    char event_hub[200];
    int mgmt = emu_events_management_address(address, event_hub, sizeof event_hub);
    if (mgmt) {
        attach_management(c, link, mgmt, event_hub);
        return;
    }
    iotgw_hubaddr a;
    iotgw_diag diag = {0};
    if (iotgw_hubaddr_parse(address, &a, &diag)) {
        refuse(c, link, "amqp:not-found", "%s", diag.text);
        return;
    }
    emu_link *l;
    switch (a.kind) {
    case IOTGW_HUBADDR_CBS:
        l = link_record(c, link, we_send ? EMU_LINK_CBS_REPLIES : EMU_LINK_CBS_REQUESTS);
        if (!l)
            break;
        if (we_send) {
            const char *reply = pn_terminus_get_address(pn_link_remote_target(link));
            l->reply_address = reply ? strdup(reply) : NULL;
        }
        open_link(l);
        break;
    case IOTGW_HUBADDR_SERVICE_C2D:
        if (we_send)
            refuse(c, link, "amqp:not-allowed", "/messages/devicebound takes messages from the service");
        else if (!(c->service_grant > emu_now_s() && (c->service_rights & EMU_RIGHT_SERVICE_CONNECT)))
            refuse(c, link, "amqp:unauthorized-access", "sending to devices needs a ServiceConnect token");
        else if ((l = link_record(c, link, EMU_LINK_SERVICE_C2D)))
            open_link(l);
        break;
    case IOTGW_HUBADDR_SERVICE_FEEDBACK:
    case IOTGW_HUBADDR_SERVICE_FILE_NOTIFICATIONS: {
        int files = a.kind == IOTGW_HUBADDR_SERVICE_FILE_NOTIFICATIONS;
        const char *what = files ? "file notifications" : "feedback";
        if (!we_send)
            refuse(c, link, "amqp:not-allowed", "%s is read, not written", what);
        else if (!(c->service_grant > emu_now_s() && (c->service_rights & EMU_RIGHT_SERVICE_CONNECT)))
            refuse(c, link, "amqp:unauthorized-access", "reading %s needs a ServiceConnect token", what);
        else if ((l = link_record(c, link, files ? EMU_LINK_FILE_NOTIFICATIONS : EMU_LINK_FEEDBACK))) {
            open_link(l);
            emu_service_queues_pump(c->hub);
        }
        break;
    }
    case IOTGW_HUBADDR_EVENTS: attach_events(c, link, &a); break;
    default: attach_device_link(c, link, &a); break;
    }
    iotgw_hubaddr_clear(&a);
}

static void on_link_closed(emu_conn *c, pn_link_t *link)
{
    emu_link *l = pn_link_get_context(link);
    if (l && l->session) {
        emu_identity *id = l->session->id;
        int method = l->kind == EMU_LINK_METHOD_REQUESTS;
        iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": %s: link \"%s\" detached by the client", c->serial,
                  id->id, pn_link_name(link));
        link_forget_session(l);
        if (method)
            emu_methods_session_changed(c->hub, id);
    }
    if (!(pn_link_state(link) & PN_LOCAL_CLOSED))
        pn_link_close(link);
}

static void on_delivery(emu_conn *c, pn_delivery_t *d)
{
    pn_link_t *link = pn_delivery_link(d);
    emu_link *l = pn_link_get_context(link);
    if (pn_link_is_sender(link)) {
        if (l && l->kind == EMU_LINK_C2D)
            emu_c2d_on_disposition(l, d);
        else if (pn_delivery_remote_state(d) && pn_delivery_remote_state(d) != PN_RECEIVED &&
                 !pn_delivery_settled(d))
            pn_delivery_settle(d);
        return;
    }
    if (!pn_delivery_readable(d))
        return;
    if (pn_delivery_partial(d)) {
        if (pn_delivery_pending(d) > EMU_LINK_MAX_MESSAGE_SIZE) {
            iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": link \"%s\": message over %d bytes", c->serial,
                      pn_link_name(link), EMU_LINK_MAX_MESSAGE_SIZE);
            iotgw_link_close_with(link, "amqp:link:message-size-exceeded",
                                  "the message is larger than the link's max-message-size");
        }
        return;
    }
    switch (l ? l->kind : EMU_LINK_REFUSED) {
    case EMU_LINK_CBS_REQUESTS: emu_cbs_on_request(l, d); break;
    case EMU_LINK_TELEMETRY: emu_telemetry_on_delivery(l, d); break;
    case EMU_LINK_METHOD_RESPONSES: emu_methods_on_response(l, d); break;
    case EMU_LINK_TWIN_REQUESTS: emu_twin_on_request(l, d); break;
    case EMU_LINK_SERVICE_C2D: emu_service_c2d_on_delivery(l, d); break;
    case EMU_LINK_MGMT_REQUESTS: emu_events_on_management(l, d); break;
    default: {
        uint8_t *buf;
        size_t len;
        iotgw_delivery_take(d, 0, &buf, &len);
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:unauthorized-access",
                              "this link is no longer authorized");
        return;
    }
    }
    if (!(pn_link_state(link) & PN_LOCAL_CLOSED))
        grant_credit(link, credit_for(l->kind));
}

static void on_flow(emu_conn *c, pn_link_t *link)
{
    emu_link *l = pn_link_get_context(link);
    (void)c;
    if (!l || !pn_link_is_sender(link))
        return;
    iotgw_answer_queue_flush(l->link, &l->answers);
    if (l->kind == EMU_LINK_EVENTS)
        emu_events_pump(l);
    if (l->kind == EMU_LINK_FEEDBACK || l->kind == EMU_LINK_FILE_NOTIFICATIONS)
        emu_service_queues_pump(l->conn->hub);
    if (!l->session)
        return;
    if (l->kind == EMU_LINK_C2D)
        emu_c2d_pump(l->session);
    else if (l->kind == EMU_LINK_METHOD_REQUESTS)
        emu_methods_session_changed(l->conn->hub, l->session->id);
}

/* ------------------------------------------------------------------ connections */

static void conn_free(emu_conn *c)
{
    emu_hub *hub = c->hub;
    while (c->sessions)
        emu_session_end(c->sessions, NULL, NULL);
    emu_link *l;
    IOTGW_LIST_FOREACH (l, &c->links, emu_link, in_conn)
        link_record_free(l);
    iotgw_timer_stop(&c->expiry_timer);
    iotgw_list_remove(&c->in_hub);
    hub->metrics.conns_open[c->listener]--;
    free(c);
}

static void conn_event(iotgw_conn *ic, pn_event_t *e, void *ctx)
{
    emu_conn *c = ctx;
    pn_event_type_t type = pn_event_type(e);
    if (c->refused && type != PN_TRANSPORT_CLOSED)
        return;
    switch (type) {
    case PN_CONNECTION_REMOTE_OPEN: {
        pn_connection_t *pc = pn_event_connection(e);
        uint8_t r[16];
        char container[64] = "DeviceGateway_";
        RAND_bytes(r, sizeof r);
        for (int i = 0; i < 16; i++)
            snprintf(container + 14 + 2 * i, 3, "%02x", r[i]);
        pn_connection_set_container(pc, container);
        pn_connection_open(pc);
        const char *rc = pn_connection_remote_container(pc);
        iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": AMQP open from %s (container \"%.80s\", SASL %s)",
                  c->serial, iotgw_conn_peer(ic), rc ? rc : "",
                  pn_transport_is_authenticated(iotgw_conn_transport(ic)) ? "yes" : "no");
        break;
    }
    case PN_LINK_REMOTE_OPEN: on_link_open(c, pn_event_link(e)); break;
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH: on_link_closed(c, pn_event_link(e)); break;
    case PN_LINK_FLOW: on_flow(c, pn_event_link(e)); break;
    case PN_DELIVERY: on_delivery(c, pn_event_delivery(e)); break;
    case PN_LINK_FINAL: {
        emu_link *l = pn_link_get_context(pn_event_link(e));
        if (l)
            link_record_free(l);
        break;
    }
    case PN_TRANSPORT_CLOSED: {
        pn_condition_t *cond = pn_transport_condition(iotgw_conn_transport(ic));
        if (pn_condition_is_set(cond))
            iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": closed: %s: %s", c->serial,
                      pn_condition_get_name(cond),
                      pn_condition_get_description(cond) ? pn_condition_get_description(cond) : "");
        else
            iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": closed", c->serial);
        c->conn = NULL;
        conn_free(c);
        break;
    }
    default: iotgw_serve_endpoint_event(e, SESSION_CAPACITY); break;
    }
}

static void on_accept(iotgw_listener *li, iotgw_conn *ic, void *ctx)
{
    emu_hub *hub = ctx;
    emu_conn *c = calloc(1, sizeof *c);
    if (!c) {
        iotgw_conn_close(ic, "amqp:internal-error", "out of memory");
        return;
    }
    c->hub = hub;
    iotgw_list_init(&c->links);
    iotgw_list_init(&c->in_hub);
    iotgw_timer_init(hub->loop, &c->expiry_timer, expiry_fired, c);
    c->conn = ic;
    c->serial = ++hub->next_serial;
    c->listener = li == hub->amqps ? EMU_LISTENER_AMQPS : EMU_LISTENER_WSS;
    hub->metrics.conns_accepted[c->listener]++;
    hub->metrics.conns_open[c->listener]++;
    iotgw_list_push_front(&hub->conns, &c->in_hub);
    iotgw_conn_set_handler(ic, conn_event, c);
    iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": accepted %s", c->serial, iotgw_conn_peer(ic));
    if (emu_faults_refusing_connections(hub->faults, emu_wall_ms())) {
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": refused (fault injection)", c->serial);
        c->refused = 1;
        hub->metrics.conns_refused++;
        iotgw_conn_close(ic, "amqp:connection:forced",
                         "the hub refuses connections for now (fault injection)");
    }
}

int emu_hub_new(iotgw_loop *loop, emu_registry *registry, const emu_hub_options *opt, emu_hub **out,
                iotgw_diag *diag)
{
    emu_hub *hub = calloc(1, sizeof *hub);
    if (!hub)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    iotgw_list_init(&hub->conns);
    iotgw_list_init(&hub->calls);
    iotgw_list_init(&hub->mqtt_clients);
    iotgw_list_init(&hub->streams);
    iotgw_list_init(&hub->jobs);
    hub->loop = loop;
    hub->registry = registry;
    hub->opt = *opt;
    hub->opt.hostname = strdup(opt->hostname ? opt->hostname : "localhost");
    hub->opt.listen_addr = NULL;
    hub->opt.amqps_addr = NULL;
    hub->opt.mqtts_addr = NULL;
    hub->opt.cert_file = hub->opt.key_file = NULL;
    hub->opt.blob_endpoint = hub->opt.blob_account = hub->opt.blob_key = NULL; /* files.c copies them */
    hub->opt.blob_container = hub->opt.blob_ca_file = NULL;
    if (!hub->opt.max_tokens)
        hub->opt.max_tokens = EMU_MAX_TOKENS_DEFAULT;
    if (hub->opt.c2d_lock_timeout_s <= 0)
        hub->opt.c2d_lock_timeout_s = EMU_C2D_LOCK_TIMEOUT_DEFAULT;
    if (hub->opt.c2d_ttl_s <= 0 || hub->opt.c2d_ttl_s > EMU_C2D_TTL_MAX)
        hub->opt.c2d_ttl_s = EMU_C2D_TTL_DEFAULT;
    hub->scratch = pn_message();
    if (hub->opt.hostname) /* IoT Hub names it after the hub's name, the host's first label */
        snprintf(hub->event_hub, sizeof hub->event_hub, "iothub-ehub-%.*s-emulator",
                 (int)strcspn(hub->opt.hostname, "."), hub->opt.hostname);
    if (!hub->opt.hostname || !hub->scratch ||
        emu_events_new(opt->partitions, opt->retention_messages, opt->retention_bytes, &hub->events) ||
        emu_faults_new(opt->d2c_limit, emu_wall_ms(), &hub->faults)) {
        emu_hub_free(hub);
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    }
    int rc = emu_files_new(hub, opt, &hub->files, diag);
    if (rc) {
        emu_hub_free(hub);
        return rc;
    }
    iotgw_listener_options lo = {
        .tls = {.cert_file = opt->cert_file, .key_file = opt->key_file},
        .on_accept = on_accept,
        .on_http = opt->on_http,
        .on_sasl_plain = emu_cbs_sasl_plain,
        .ws_stream_subprotocol = "mqtt", /* MQTT over WebSocket, on the same path */
        .on_ws_stream = emu_mqtt_on_ws_stream,
        .ctx = hub,
        .idle_timeout_ms = opt->idle_timeout_ms,
    };
    if (opt->listen_addr) {
        lo.kind = IOTGW_TRANSPORT_WSS;
        lo.address = opt->listen_addr;
        lo.port = opt->listen_port;
        rc = iotgw_listener_new(loop, &lo, &hub->wss, diag);
    }
    if (!rc && opt->amqps_addr) {
        lo.kind = IOTGW_TRANSPORT_AMQPS;
        lo.address = opt->amqps_addr;
        lo.port = opt->amqps_port;
        lo.on_http = NULL;
        rc = iotgw_listener_new(loop, &lo, &hub->amqps, diag);
    }
    if (!rc && opt->mqtts_addr)
        rc = emu_mqtt_listen(hub, opt->mqtts_addr, opt->mqtts_port, opt->cert_file, opt->key_file, diag);
    if (rc) {
        emu_hub_free(hub);
        return rc;
    }
    *out = hub;
    return 0;
}

void emu_hub_free(emu_hub *hub)
{
    if (!hub)
        return;
    if (hub->wss)
        iotgw_listener_free(hub->wss);
    if (hub->amqps)
        iotgw_listener_free(hub->amqps);
    if (hub->mqtts)
        iotgw_stream_listener_free(hub->mqtts);
    emu_files_free(hub->files); /* after the listeners: the uploads' waiting requests end here */
    emu_mqtt_free_all(hub);
    emu_conn *c;
    IOTGW_LIST_FOREACH (c, &hub->conns, emu_conn, in_hub) {
        iotgw_conn_set_handler(c->conn, NULL, NULL);
        conn_free(c);
    }
    emu_jobs_free_all(hub); /* before the calls: it cancels its own */
    emu_methods_cancel_all(hub);
    emu_live_table_free(&hub->live, emu_c2d_free);
    if (hub->scratch)
        pn_message_free(hub->scratch);
    if (hub->mqtt_scratch)
        pn_message_free(hub->mqtt_scratch);
    emu_events_free(hub->events);
    for (int q = 0; q < EMU_SERVICE_QUEUES; q++)
        json_decref(hub->service_queues[q]);
    emu_faults_free(hub->faults);
    free((char *)hub->opt.hostname);
    free(hub);
}

int emu_hub_wss_port(const emu_hub *hub)
{
    return hub->wss ? iotgw_listener_port(hub->wss) : 0;
}

int emu_hub_mqtts_port(const emu_hub *hub)
{
    return hub->mqtts ? iotgw_stream_listener_port(hub->mqtts) : 0;
}

int emu_hub_amqps_port(const emu_hub *hub)
{
    return hub->amqps ? iotgw_listener_port(hub->amqps) : 0;
}

const char *emu_hub_hostname(const emu_hub *hub)
{
    return hub->opt.hostname;
}

int emu_hub_admin_enabled(const emu_hub *hub)
{
    return hub->opt.admin;
}

const char *emu_hub_event_hub(const emu_hub *hub)
{
    return hub->event_hub;
}

int emu_hub_partitions(const emu_hub *hub)
{
    return emu_events_partitions(hub->events);
}

size_t emu_hub_stream_retained(const emu_hub *hub)
{
    return emu_events_retained(hub->events);
}

emu_registry *emu_hub_registry(emu_hub *hub)
{
    return hub->registry;
}

emu_metrics *emu_hub_metrics(emu_hub *hub)
{
    if (hub->mqtt) /* the MQTT front end counts its connections */
        iotgw_hubmqtt_endpoint_counts(hub->mqtt, hub->metrics.mqtt_conns_open,
                                      hub->metrics.mqtt_conns_accepted);
    return &hub->metrics;
}

emu_faults *emu_hub_faults(emu_hub *hub)
{
    return hub->faults;
}
