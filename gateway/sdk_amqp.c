/*
 * Devices written with the Azure IoT SDKs, unchanged, over IoT Hub's own AMQP
 * (devices.amqp, and AMQPWSB10 on devices.webSocketListen; docs/sdk-devices.md). The
 * messages are hubside/amqp_device.h's and the link addresses hubside/amqp_address.h's,
 * as the emulator serves them; here each identity a connection authorizes becomes a
 * session (session.c) like any other: its own hub identity on the upstream, the store
 * when there is one, one connection per device whatever its protocol (the newest wins).
 *
 * A connection authorizes a device with a CBS put-token (audience "{hub or gateway
 * name}/devices/{id}", the token signed with the device's fleet key, checked as a
 * Hello's is), renewed by the next put-token, or, over TLS with a client certificate
 * under devices.tls.clientCa, by attaching the links of the device its certificate
 * names. One connection may carry many devices (the C SDK multiplexes them); each
 * device's links are its own:
 *
 *   /devices/{id}/messages/events      telemetry: each delivery settled with the hub's
 *                                      (or the store's) outcome; credit is the window
 *   /devices/{id}/messages/devicebound C2D: the device's accepted, rejected, released or
 *                                      modified settles it at the hub
 *   /devices/{id}/methods/devicebound  direct methods, a link each way
 *   /devices/{id}/twin                 twin GET, reported PATCH, desired updates
 *
 * Ownership: the gateway owns the connections (g->amqp_conns); each owns its device
 * records and link records; a device record owns its session until the device leaves
 * (the links are dropped, the token expires, the connection closes). Threading: the
 * loop's thread only.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/link.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#include "codecs/percent.h"
#include "codecs/sas.h"
#include "gateway/gateway_internal.h"
#include "hubside/amqp_address.h"
#include "hubside/amqp_device.h"
#include "transport/amqp_map.h"
#include "transport/messaging.h"

#define MAX_DEVICES_PER_CONN 1000              /* put-tokens a connection may hold */
#define MAX_LINK_MESSAGE     (1024 * 1024)     /* advertised max-message-size, as IoT Hub's */
#define MAX_QUEUED_ANSWERS   1000              /* unsent replies on a link without credit */
#define SESSION_CAPACITY     (1024u * 1024 * 4) /* bytes an AMQP session may buffer from the device */
#define CREDIT_REQUESTS      100               /* CBS, method answers, twin requests */
#define MAX_CORRELATION      128               /* a twin request's correlation-id, as text */
#define MAX_OUTPUT           (8u * 1024 * 1024) /* bytes a device leaves unread before it is closed */

typedef struct gw_amqp_conn gw_amqp_conn;
typedef struct gw_amqp_device gw_amqp_device;

typedef enum link_kind {
    LINK_REFUSED = 0,
    LINK_CBS_REQUESTS,    /* the device sends put-tokens */
    LINK_CBS_REPLIES,     /* the gateway answers them */
    LINK_TELEMETRY,       /* the device sends */
    LINK_C2D,             /* the gateway sends */
    LINK_METHOD_REQUESTS, /* the gateway sends */
    LINK_METHOD_ANSWERS,  /* the device sends */
    LINK_TWIN_REQUESTS,   /* the device sends */
    LINK_TWIN_ANSWERS,    /* the gateway sends, and desired updates */
} link_kind;

typedef struct gw_amqp_link {
    link_kind kind;
    iotgw_answer_queue answers; /* waiting for the device's credit */
    pn_link_t *link;
    gw_amqp_conn *c;
    gw_amqp_device *dev; /* device links; NULL for CBS and refused ones, or once its device left */
    iotgw_list in_conn;
} gw_amqp_link;

/* A telemetry delivery waiting for its outcome. */
typedef struct inflight {
    uint64_t seq;
    pn_delivery_t *d; /* NULL once its link went */
} inflight;

struct gw_amqp_device {
    gw_amqp_conn *c;
    gw_session *s; /* NULL once forgotten (the gateway is going) */
    uint64_t token_expiry; /* seconds since the epoch; 0: a client certificate */
    int gone;              /* its links were dropped: the record goes on the next turn */
    gw_amqp_link *links[LINK_TWIN_ANSWERS + 1];
    int desired_subscribed;
    inflight *inflight; /* a ring, in arrival order */
    size_t head, len, cap;
    uint64_t next_seq;
    iotgw_list in_conn;
};

struct gw_amqp_conn {
    iotgw_gateway *g;
    iotgw_conn *conn; /* NULL once closed */
    uint64_t serial;
    int ws;
    char peer[80]; /* for lines, also after it closed */
    iotgw_list devices; /* gw_amqp_device.in_conn */
    iotgw_list links;   /* gw_amqp_link.in_conn */
    iotgw_list node;    /* in g->amqp_conns */
};

static uint64_t now_s(void)
{
    return (uint64_t)time(NULL);
}

static const char *conn_peer(const gw_amqp_conn *c)
{
    return c->peer;
}

const char *gw_amqp_peer(const gw_session *s)
{
    return conn_peer(s->amqp->c);
}

/* A refusal a device (or anyone) can cause: one budget per device, else one for all. */
static void refusal_line(gw_amqp_conn *c, gw_amqp_device *dev, const char *device, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refusal_line(gw_amqp_conn *c, gw_amqp_device *dev, const char *device, const char *fmt, ...)
{
    char text[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    iotgw_log_printable(text);
    iotgw_log_ev_limited(dev && dev->s ? &dev->s->log : &c->g->amqp_log, IOTGW_LOG_WARN, "device_amqp_refused",
                         device, IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", conn_peer(c))),
                         "AMQP conn %" PRIu64 " (%s): %s", c->serial, conn_peer(c), text);
}

/* ------------------------------------------------------------------ links */

static gw_amqp_link *link_record(gw_amqp_conn *c, pn_link_t *link, link_kind kind)
{
    gw_amqp_link *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->kind = kind;
    l->link = link;
    l->c = c;
    iotgw_list_init(&l->in_conn);
    iotgw_list_push_front(&c->links, &l->in_conn);
    pn_link_set_context(link, l);
    return l;
}

static void grant_credit(pn_link_t *link, int want)
{
    int have = pn_link_credit(link);
    if (want > have)
        pn_link_flow(link, want - have);
}

static void open_link(gw_amqp_link *l)
{
    iotgw_link_open_as_asked(l->link, MAX_LINK_MESSAGE);
}

static void refuse_link(gw_amqp_conn *c, pn_link_t *link, const char *device, const char *cond,
                        const char *why)
{
    refusal_line(c, NULL, device, "link \"%.100s\" refused: %s (%s)", pn_link_name(link), why, cond);
    if (!link_record(c, link, LINK_REFUSED)) {
        pn_link_close(link);
        return;
    }
    pn_link_open(link);
    iotgw_link_close_with(link, cond, why);
}

/* Send msg on a link the gateway answers on, or keep it until the device gives credit,
 * up to MAX_QUEUED_ANSWERS. 0 or -1. */
static int answer(gw_amqp_link *l, pn_message_t *msg)
{
    return l ? iotgw_link_answer(l->link, &l->answers, msg, MAX_QUEUED_ANSWERS) : -1;
}

/* The link leaves its device (closed by either side). */
static void link_forget_device(gw_amqp_link *l)
{
    gw_amqp_device *dev = l->dev;
    if (!dev)
        return;
    if (l->kind == LINK_TELEMETRY)
        for (size_t i = 0; i < dev->len; i++) /* their outcomes find no delivery */
            dev->inflight[(dev->head + i) % dev->cap].d = NULL;
    if (l->kind == LINK_C2D && dev->s && dev->s->up) {
        /* what the device held unsettled: the hub offers it again (to the next link) */
        for (pn_delivery_t *d = pn_unsettled_head(l->link); d; d = pn_unsettled_next(d)) {
            pn_delivery_tag_t tag = pn_delivery_tag(d);
            uint64_t id;
            if (tag.size == sizeof id) {
                memcpy(&id, tag.start, sizeof id);
                iotgw_upstream_c2d_settle(dev->s->up, id, IOTGW_OUTCOME_RETRY);
            }
        }
    }
    if (l->kind == LINK_TWIN_ANSWERS)
        dev->desired_subscribed = 0;
    if (dev->links[l->kind] == l)
        dev->links[l->kind] = NULL;
    l->dev = NULL;
}

static void link_record_free(gw_amqp_link *l)
{
    link_forget_device(l);
    iotgw_answer_queue_clear(&l->answers);
    iotgw_list_remove(&l->in_conn);
    pn_link_set_context(l->link, NULL);
    free(l);
}

/* ------------------------------------------------------------------ devices */

static gw_amqp_device *device_find(gw_amqp_conn *c, const char *id)
{
    gw_amqp_device *dev;
    IOTGW_LIST_FOREACH (dev, &c->devices, gw_amqp_device, in_conn)
        if (!dev->gone && dev->s && dev->s->device_id && !strcmp(dev->s->device_id, id))
            return dev;
    return NULL;
}

static int devices_held(gw_amqp_conn *c)
{
    int n = 0;
    gw_amqp_device *dev;
    IOTGW_LIST_FOREACH (dev, &c->devices, gw_amqp_device, in_conn)
        n += !dev->gone;
    return n;
}

/* Detach every link of the device with cond and why; the record goes on the next turn. */
static void device_drop(gw_amqp_device *dev, const char *cond, const char *why)
{
    if (dev->gone)
        return;
    dev->gone = 1;
    gw_amqp_link *l;
    IOTGW_LIST_FOREACH (l, &dev->c->links, gw_amqp_link, in_conn) {
        if (l->dev != dev)
            continue;
        link_forget_device(l);
        l->kind = LINK_REFUSED;
        if (!(pn_link_state(l->link) & PN_LOCAL_CLOSED))
            iotgw_link_close_with(l->link, cond, why);
    }
    if (dev->s)
        dev->s->closing = 1;
    if (dev->c->conn)
        iotgw_conn_wake(dev->c->conn);
}

static void device_free(gw_amqp_device *dev, const char *why)
{
    gw_amqp_link *l;
    IOTGW_LIST_FOREACH (l, &dev->c->links, gw_amqp_link, in_conn)
        if (l->dev == dev)
            link_forget_device(l);
    gw_session *s = dev->s;
    if (s) {
        if (s->device_id)
            iotgw_log_evf(IOTGW_LOG_INFO, "device_disconnected", s->device_id,
                          IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", conn_peer(dev->c)),
                                           IOTGW_FIELD_STR("reason", why)),
                          "device %s (%s) disconnected: %s", s->device_id, conn_peer(dev->c), why);
        s->amqp = NULL;
        s->closing = 1;
        gw_session_free(s);
    }
    iotgw_list_remove(&dev->in_conn);
    free(dev->inflight);
    free(dev);
}

/* Free the records of devices dropped (on the turn after: never inside the call that
 * dropped them, which may still use the session). */
static void free_gone(gw_amqp_conn *c)
{
    gw_amqp_device *dev;
    IOTGW_LIST_FOREACH (dev, &c->devices, gw_amqp_device, in_conn)
        if (dev->gone)
            device_free(dev, "its links were detached");
}

void gw_amqp_drop(gw_session *s, const char *why)
{
    if (s->amqp)
        device_drop(s->amqp, "amqp:link:detach-forced", why);
}

void gw_amqp_forget(gw_session *s)
{
    if (s->amqp)
        s->amqp->s = NULL;
    s->amqp = NULL;
}

void gw_amqp_tick(gw_session *s, int64_t now)
{
    (void)now;
    gw_amqp_device *dev = s->amqp;
    if (!dev || dev->gone || !dev->token_expiry || dev->token_expiry > now_s())
        return;
    iotgw_log_ev_limited(&s->log, IOTGW_LOG_INFO, "device_token_expired", s->device_id, NULL,
                         "device %s: its token expired and was not renewed: links detached", s->device_id);
    device_drop(dev, "amqp:unauthorized-access", "the device's token expired and was not renewed");
}

/* A device the connection authorized (put-token or client certificate): its session,
 * admitted to the upstream (the device it had elsewhere is replaced). NULL with status
 * and why. */
static gw_amqp_device *device_admit(gw_amqp_conn *c, const iotgw_config_device *cd, const char *token,
                                    const char *cn, int *status, char *why, size_t why_len)
{
    iotgw_gateway *g = c->g;
    if (devices_held(c) >= MAX_DEVICES_PER_CONN) {
        *status = 500;
        snprintf(why, why_len, "The maximum number of tokens per connection (%d) has been reached",
                 MAX_DEVICES_PER_CONN);
        return NULL;
    }
    gw_amqp_device *dev = calloc(1, sizeof *dev);
    gw_session *s = dev ? calloc(1, sizeof *s) : NULL;
    if (!s) {
        free(dev);
        *status = 500;
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    s->g = g;
    iotgw_list_init(&s->node);
    iotgw_list_push_front(&g->sessions, &s->node);
    s->last_rx_ms = iotgw_loop_now_ms(g->loop);
    g->stats.connections++;
    Iotgw__ErrorCode code;
    iotgw_diag diag = {0};
    if (gw_session_check_token(s, cd, token, cn, &code, &diag)) {
        *status = 401;
        snprintf(why, why_len, "device %s: %s", cd->id, diag.text);
        gw_session_free(s);
        free(dev);
        return NULL;
    }
    dev->c = c;
    dev->s = s;
    s->amqp = dev;
    iotgw_list_init(&dev->in_conn);
    iotgw_list_push_front(&c->devices, &dev->in_conn);
    /* twin and methods at once; cloud-to-device messages once its C2D link attaches, so
     * that the hub keeps them meanwhile, as it does for a device connected to it */
    if (gw_session_admit(s, cd, IOTGW_UPSTREAM_METHODS | IOTGW_UPSTREAM_TWIN, &diag)) {
        *status = 503;
        snprintf(why, why_len, "device %s: %s", cd->id, diag.text);
        device_free(dev, diag.text);
        return NULL;
    }
    s->ready = 1;
    g->stats.welcomed++;
    iotgw_log_evf(IOTGW_LOG_INFO, "device_connected", cd->id,
                  IOTGW_LOG_FIELDS(IOTGW_FIELD_STR("peer", conn_peer(c)), IOTGW_FIELD_STR("client", "AMQP")),
                  "device %s connected from %s (AMQP over %s%s)", cd->id, conn_peer(c),
                  c->ws ? "WebSocket" : "TLS", token ? "" : ", client certificate");
    return dev;
}

/* ------------------------------------------------------------------ CBS */

static uint64_t token_expiry(const char *token)
{
    iotgw_sas_token t;
    iotgw_diag diag = {0};
    if (iotgw_sas_parse(token, &t, &diag))
        return 0;
    uint64_t se = t.se;
    iotgw_sas_token_clear(&t);
    return se;
}

/* The device an audience names: "[sb://|amqps://]{hub or gateway}/devices/{id}", all of
 * it percent-encoded or not (the SDKs send their token's sr, which is). 0 with the id in
 * id, or -1. */
static int audience_device(const iotgw_config *cfg, const char *audience, char *id, size_t len)
{
    char *decoded;
    if (iotgw_percent_decode(audience, strlen(audience), &decoded, NULL))
        return -1;
    const char *p = decoded;
    static const char *const schemes[] = {"sb://", "amqps://", "amqp://"};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (!strncasecmp(p, schemes[i], strlen(schemes[i])))
            p += strlen(schemes[i]);
    const char *slash = strchr(p, '/');
    size_t host_len = slash ? (size_t)(slash - p) : 0;
    int ours = slash && ((strlen(cfg->hub_host) == host_len && !strncasecmp(p, cfg->hub_host, host_len)) ||
                         (cfg->gateway_id && strlen(cfg->gateway_id) == host_len &&
                          !strncasecmp(p, cfg->gateway_id, host_len)));
    const char *dev = ours && !strncasecmp(slash, "/devices/", 9) ? slash + 9 : NULL;
    size_t n = dev ? strlen(dev) : 0;
    int rc = -1;
    if (n && n < len && !strchr(dev, '/')) {
        memcpy(id, dev, n + 1);
        rc = 0;
    }
    free(decoded);
    return rc;
}

static void put_token(gw_amqp_conn *c, pn_message_t *m, int *status, char *why, size_t why_len)
{
    iotgw_gateway *g = c->g;
    iotgw_hubamqp_put_token req;
    const char *what;
    char id[160];
    if ((*status = iotgw_hubamqp_put_token_parse(m, &req, &what))) {
        snprintf(why, why_len, "%s", what);
        return;
    }
    *status = 401;
    if (g->draining) {
        *status = 503;
        snprintf(why, why_len, "the gateway is stopping");
        return;
    }
    if (audience_device(g->cfg, req.audience, id, sizeof id)) {
        snprintf(why, why_len,
                 "the audience (%.200s) must be {hub}/devices/{id} for the hub this gateway serves (%s)%s%s; "
                 "modules are not served through the gateway",
                 req.audience, g->cfg->hub_host, g->cfg->gateway_id ? " or its gatewayId " : "",
                 g->cfg->gateway_id ? g->cfg->gateway_id : "");
        return;
    }
    iotgw_diag diag = {0};
    Iotgw__ErrorCode code;
    int id_valid;
    const iotgw_config_device *cd = gw_session_find_device(g, id, &id_valid, &code, &diag);
    if (!cd) {
        *status = code == IOTGW__ERROR_CODE__ERROR_UNKNOWN_DEVICE ? 404 : 401;
        snprintf(why, why_len, "%s", diag.text);
        return;
    }
    char *token = strndup(req.token, req.token_len);
    if (!token) {
        *status = 500;
        snprintf(why, why_len, "out of memory");
        return;
    }
    gw_amqp_device *dev = device_find(c, cd->id);
    if (dev) { /* a renewal: the same checks, a new expiry */
        if (gw_session_check_token(dev->s, cd, token, NULL, &code, &diag)) {
            snprintf(why, why_len, "device %s: %s", cd->id, diag.text);
        } else {
            dev->token_expiry = token_expiry(token);
            *status = 200;
        }
    } else if ((dev = device_admit(c, cd, token, NULL, status, why, why_len))) {
        dev->token_expiry = token_expiry(token);
        *status = 200;
    }
    free(token);
    if (*status == 200)
        snprintf(why, why_len, "OK");
}

static void on_cbs_request(gw_amqp_link *l, pn_delivery_t *d, pn_message_t *m)
{
    gw_amqp_conn *c = l->c;
    iotgw_hubamqp_accept_first(c->conn, d);
    int status;
    char why[400];
    put_token(c, m, &status, why, sizeof why);
    if (status != 200)
        refusal_line(c, NULL, NULL, "put-token refused (%d): %s", status, why);
    pn_message_t *reply = pn_message();
    const char *reply_to = pn_message_get_reply_to(m);
    gw_amqp_link *out = NULL, *r;
    IOTGW_LIST_FOREACH (r, &c->links, gw_amqp_link, in_conn) {
        if (r->kind != LINK_CBS_REPLIES)
            continue;
        const char *target = pn_terminus_get_address(pn_link_remote_target(r->link));
        if (!out || (reply_to && target && !strcmp(reply_to, target)))
            out = r;
    }
    if (!reply || iotgw_hubamqp_cbs_reply(m, status, why, reply) || answer(out, reply))
        refusal_line(c, NULL, NULL, "CBS reply not sent: no $cbs receiver link with room");
    if (reply)
        pn_message_free(reply);
}

/* ------------------------------------------------------------------ link attach */

static link_kind device_link_kind(iotgw_hubaddr_kind a, int we_send)
{
    switch (a) {
    case IOTGW_HUBADDR_TELEMETRY: return we_send ? LINK_REFUSED : LINK_TELEMETRY;
    case IOTGW_HUBADDR_C2D: return we_send ? LINK_C2D : LINK_REFUSED;
    case IOTGW_HUBADDR_METHODS: return we_send ? LINK_METHOD_REQUESTS : LINK_METHOD_ANSWERS;
    case IOTGW_HUBADDR_TWIN: return we_send ? LINK_TWIN_ANSWERS : LINK_TWIN_REQUESTS;
    default: return LINK_REFUSED;
    }
}

static void telemetry_credit(gw_amqp_device *dev)
{
    gw_amqp_link *l = dev->links[LINK_TELEMETRY];
    unsigned window = dev->c->g->cfg->max_in_flight;
    if (l && !(pn_link_state(l->link) & PN_LOCAL_CLOSED))
        grant_credit(l->link, dev->len < window ? (int)(window - dev->len) : 0);
}

static void send_kept_c2d(gw_amqp_device *dev);

static void attach_device_link(gw_amqp_conn *c, pn_link_t *link, const iotgw_hubaddr *a)
{
    iotgw_gateway *g = c->g;
    int we_send = pn_link_is_sender(link);
    link_kind kind = device_link_kind(a->kind, we_send);
    if (a->module_id) {
        refuse_link(c, link, NULL, "amqp:not-implemented",
                    "modules are not served through the gateway: connect them to the hub");
        return;
    }
    gw_amqp_device *dev = device_find(c, a->device_id);
    if (dev && dev->token_expiry && dev->token_expiry <= now_s()) {
        refuse_link(c, link, dev->s->device_id, "amqp:unauthorized-access", "the device's token expired");
        return;
    }
    const char *cn = c->conn ? iotgw_conn_peer_cn(c->conn) : NULL;
    if (!dev && cn && !strcmp(cn, a->device_id)) { /* a client certificate naming it */
        iotgw_diag diag = {0};
        Iotgw__ErrorCode code;
        int id_valid, status;
        char why[400];
        const iotgw_config_device *cd = gw_session_find_device(g, a->device_id, &id_valid, &code, &diag);
        if (!cd) {
            refuse_link(c, link, id_valid ? a->device_id : NULL,
                        code == IOTGW__ERROR_CODE__ERROR_UNKNOWN_DEVICE ? "amqp:not-found"
                                                                        : "amqp:unauthorized-access",
                        diag.text);
            return;
        }
        if (g->draining) {
            refuse_link(c, link, cd->id, "amqp:resource-limit-exceeded", "the gateway is stopping");
            return;
        }
        if (!(dev = device_admit(c, cd, NULL, cn, &status, why, sizeof why))) {
            refuse_link(c, link, cd->id, "amqp:unauthorized-access", why);
            return;
        }
    }
    if (!dev) {
        char why[300];
        snprintf(why, sizeof why, "%.128s is not authorized on this connection (no valid CBS token)",
                 a->device_id);
        refuse_link(c, link, NULL, "amqp:unauthorized-access", why);
        return;
    }
    if (kind == LINK_REFUSED) {
        refuse_link(c, link, dev->s->device_id, "amqp:not-allowed", "wrong direction for this address");
        return;
    }
    gw_amqp_link *l = link_record(c, link, kind);
    if (!l) {
        pn_link_close(link);
        return;
    }
    gw_amqp_link *old = dev->links[kind];
    if (old) { /* a newer link of the same kind replaces it */
        link_forget_device(old);
        old->kind = LINK_REFUSED;
        iotgw_link_close_with(old->link, "amqp:link:stolen", "a newer link of the same kind replaced it");
    }
    dev->links[kind] = l;
    l->dev = dev;
    open_link(l);
    gw_session *s = dev->s;
    switch (kind) {
    case LINK_TELEMETRY: telemetry_credit(dev); break;
    case LINK_METHOD_ANSWERS:
    case LINK_TWIN_REQUESTS: grant_credit(link, CREDIT_REQUESTS); break;
    case LINK_C2D:
        if (s->up && !(s->capabilities & IOTGW_UPSTREAM_C2D)) {
            s->capabilities |= IOTGW_UPSTREAM_C2D;
            iotgw_upstream_device_enable(s->up, IOTGW_UPSTREAM_C2D);
        }
        send_kept_c2d(dev);
        break;
    default: break;
    }
}

static void on_link_open(gw_amqp_conn *c, pn_link_t *link)
{
    const char *addr = pn_terminus_get_address(pn_link_is_sender(link) ? pn_link_remote_source(link)
                                                                       : pn_link_remote_target(link));
    iotgw_hubaddr a;
    iotgw_diag diag = {0};
    if (iotgw_hubaddr_parse(addr, &a, &diag)) {
        refuse_link(c, link, NULL, "amqp:not-found", diag.text);
        return;
    }
    if (a.kind == IOTGW_HUBADDR_CBS) {
        gw_amqp_link *l = link_record(c, link, pn_link_is_sender(link) ? LINK_CBS_REPLIES : LINK_CBS_REQUESTS);
        if (!l) {
            pn_link_close(link);
        } else {
            open_link(l);
            if (pn_link_is_receiver(link))
                grant_credit(link, CREDIT_REQUESTS);
        }
    } else if (a.device_id) {
        attach_device_link(c, link, &a);
    } else {
        refuse_link(c, link, NULL, "amqp:not-found",
                    "the gateway serves devices only: service clients connect to the hub");
    }
    iotgw_hubaddr_clear(&a);
}

/* ------------------------------------------------------------------ telemetry */

static int inflight_push(gw_amqp_device *dev, uint64_t seq, pn_delivery_t *d)
{
    if (dev->len == dev->cap) { /* grows, kept in order */
        size_t cap = dev->cap ? dev->cap * 2 : 16;
        inflight *p = malloc(cap * sizeof *p);
        if (!p)
            return -1;
        for (size_t i = 0; i < dev->len; i++)
            p[i] = dev->inflight[(dev->head + i) % dev->cap];
        free(dev->inflight);
        dev->inflight = p;
        dev->cap = cap;
        dev->head = 0;
    }
    dev->inflight[(dev->head + dev->len++) % dev->cap] = (inflight){seq, d};
    return 0;
}

/* Take seq's delivery off the ring (outcomes come mostly in order: the head). */
static int inflight_take(gw_amqp_device *dev, uint64_t seq, pn_delivery_t **d)
{
    for (size_t i = 0; i < dev->len; i++) {
        size_t at = (dev->head + i) % dev->cap;
        if (dev->inflight[at].seq != seq)
            continue;
        *d = dev->inflight[at].d;
        for (size_t j = i; j > 0; j--) /* close the gap toward the head */
            dev->inflight[(dev->head + j) % dev->cap] = dev->inflight[(dev->head + j - 1) % dev->cap];
        dev->head = (dev->head + 1) % dev->cap;
        dev->len--;
        return 0;
    }
    return -1;
}

static void settle_telemetry(gw_session *s, uint64_t seq, uint64_t outcome, const char *cond, const char *why)
{
    gw_amqp_device *dev = s->amqp;
    pn_delivery_t *d = NULL;
    if (!dev || inflight_take(dev, seq, &d))
        return;
    if (d)
        iotgw_delivery_settle(d, outcome, cond, why);
    telemetry_credit(dev);
    if (dev->c->conn)
        iotgw_conn_wake(dev->c->conn);
}

void gw_amqp_acked(gw_session *s, uint64_t seq)
{
    settle_telemetry(s, seq, PN_ACCEPTED, NULL, NULL);
}

void gw_amqp_refused(gw_session *s, uint64_t seq, Iotgw__NackReason reason, const char *detail)
{
    const char *cond;
    switch (reason) {
    case IOTGW__NACK_REASON__NACK_TOO_LARGE: cond = "amqp:link:message-size-exceeded"; break;
    case IOTGW__NACK_REASON__NACK_UNAUTHORIZED: cond = "amqp:unauthorized-access"; break;
    case IOTGW__NACK_REASON__NACK_MALFORMED: cond = "amqp:decode-error"; break;
    case IOTGW__NACK_REASON__NACK_THROTTLED: cond = "com.microsoft:device-container-throttled"; break;
    case IOTGW__NACK_REASON__NACK_TIMEOUT: cond = "com.microsoft:timeout"; break;
    case IOTGW__NACK_REASON__NACK_RETRY_LATER:
    case IOTGW__NACK_REASON__NACK_WINDOW_FULL: cond = "amqp:resource-limit-exceeded"; break;
    default: cond = "amqp:internal-error"; break;
    }
    settle_telemetry(s, seq, PN_REJECTED, cond, detail ? detail : "not taken");
}

/* buf: the message as the device sent it (decoded already: it is one), which goes to the
 * hub as it is. */
static void on_telemetry(gw_amqp_link *l, pn_delivery_t *d, const uint8_t *buf, size_t len)
{
    gw_amqp_device *dev = l->dev;
    gw_session *s = dev->s;
    if (!s || s->closing) {
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:unauthorized-access", "the device is leaving");
        return;
    }
    s->g->stats.telemetry++;
    s->g->stats.telemetry_bytes += len;
    uint64_t seq = ++dev->next_seq;
    if (inflight_push(dev, seq, d)) {
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:internal-error", "out of memory");
        return;
    }
    gw_session_submit_encoded(s, seq, buf, len); /* its outcome: gw_amqp_acked or gw_amqp_refused,
                                                    maybe at once */
}

/* ------------------------------------------------------------------ methods */

void gw_amqp_method(gw_session *s, gw_method_call *call, const iotgw_method_request *req)
{
    gw_amqp_device *dev = s->amqp;
    gw_amqp_link *l = dev && !dev->gone ? dev->links[LINK_METHOD_REQUESTS] : NULL;
    pn_message_t *m = s->g->scratch;
    if (l && !iotgw_hubamqp_method_request(m, call->hub_id, req->name, req->payload, req->payload_len) &&
        !answer(l, m)) {
        iotgw_conn_wake(dev->c->conn);
        return;
    }
    gw_method_call *c = gw_session_take_call(s, call->id);
    if (!c)
        return;
    char body[200];
    gw_error_json(body, sizeof body, "the device has no direct method link attached");
    gw_session_answer_method(s, c, 404, body);
    gw_session_call_free(c);
}

static void on_method_answer(gw_amqp_link *l, pn_delivery_t *d, pn_message_t *m)
{
    gw_session *s = l->dev->s;
    uint8_t uuid[16];
    int status;
    const uint8_t *body;
    size_t len;
    if (iotgw_hubamqp_method_response(m, uuid, &status, &body, &len)) {
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:invalid-field",
                              "a method response needs a uuid correlation-id and an int IoThub-status");
        return;
    }
    iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);
    gw_method_call *call = NULL;
    for (gw_method_call *c = s ? s->calls : NULL; c && !call; c = c->next)
        if (!memcmp(c->hub_id, uuid, 16))
            call = c;
    if (call)
        call = gw_session_take_call(s, call->id);
    if (!call) {
        if (s)
            iotgw_log_ev_limited(&s->log, IOTGW_LOG_INFO, "method_answer_late", s->device_id, NULL,
                                 "device %s: answer to a method request that came too late or names none; "
                                 "dropped",
                                 s->device_id);
        return;
    }
    gw_session_answer_json(s, call, status, body, len);
}

/* ------------------------------------------------------------------ twin */

/* A correlation-id as text and back: the twin call keeps it until the hub answers. */
static int correlation_text(pn_msgid_t id, char *out, size_t len)
{
    switch (id.type) {
    case PN_STRING:
        if (id.u.as_bytes.size + 2 > len)
            return -1;
        out[0] = 's';
        memcpy(out + 1, id.u.as_bytes.start, id.u.as_bytes.size);
        out[id.u.as_bytes.size + 1] = '\0';
        return strlen(out + 1) == id.u.as_bytes.size ? 0 : -1;
    case PN_UUID:
        out[0] = 'u';
        for (int i = 0; i < 16; i++)
            snprintf(out + 1 + 2 * i, 3, "%02x", (uint8_t)id.u.as_uuid.bytes[i]);
        return 0;
    case PN_ULONG: snprintf(out, len, "n%" PRIu64, id.u.as_ulong); return 0;
    case PN_NULL: snprintf(out, len, "-"); return 0;
    default: return -1;
    }
}

static pn_msgid_t correlation_of(const char *text)
{
    pn_msgid_t id = {.type = PN_NULL};
    if (text[0] == 's') {
        id.type = PN_STRING;
        id.u.as_bytes = pn_bytes(strlen(text + 1), text + 1);
    } else if (text[0] == 'u') {
        id.type = PN_UUID;
        for (int i = 0; i < 16; i++) {
            unsigned b = 0;
            sscanf(text + 1 + 2 * i, "%2x", &b);
            id.u.as_uuid.bytes[i] = (char)b;
        }
    } else if (text[0] == 'n') {
        id.type = PN_ULONG;
        id.u.as_ulong = strtoull(text + 1, NULL, 10);
    }
    return id;
}

static void twin_send(gw_amqp_device *dev, const pn_msgid_t *corr, int status, int64_t version,
                      const char *body)
{
    gw_amqp_link *l = dev->links[LINK_TWIN_ANSWERS];
    /* not the scratch message: corr may point into the request, which is */
    pn_message_t *m = l ? pn_message() : NULL;
    if (!m || iotgw_hubamqp_twin_message(m, corr, status, version, (const uint8_t *)body,
                                         body ? strlen(body) : 0)) {
        if (m)
            pn_message_free(m);
        return;
    }
    int rc = answer(l, m);
    pn_message_free(m);
    if (rc && dev->s)
        iotgw_log_ev_limited(&dev->s->log, IOTGW_LOG_INFO, "device_amqp_twin_unanswered", dev->s->device_id,
                             NULL, "device %s: a twin answer not sent: its twin link gives no credit",
                             dev->s->device_id);
    else if (dev->c->conn)
        iotgw_conn_wake(dev->c->conn);
}

static void twin_refuse(gw_amqp_device *dev, const pn_msgid_t *corr, int status, const char *text)
{
    char body[300];
    gw_error_json(body, sizeof body, text);
    twin_send(dev, corr, status, -1, body);
}

static void on_twin_request(gw_amqp_link *l, pn_delivery_t *d, pn_message_t *m)
{
    gw_amqp_device *dev = l->dev;
    iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);
    char op[16], resource[64], corr_text[MAX_CORRELATION + 2];
    iotgw_hubamqp_twin_op top = iotgw_hubamqp_twin_op_of(m, op, resource);
    pn_msgid_t corr = pn_message_get_correlation_id(m);
    if (correlation_text(corr, corr_text, sizeof corr_text)) { /* no answer could name it */
        refusal_line(dev->c, dev, dev->s ? dev->s->device_id : NULL,
                     "a twin request dropped: its correlation-id must be a string of at most %d bytes, a uuid "
                     "or a ulong",
                     MAX_CORRELATION);
        return;
    }
    switch (top) {
    case IOTGW_HUBAMQP_TWIN_SUBSCRIBE_DESIRED:
    case IOTGW_HUBAMQP_TWIN_UNSUBSCRIBE_DESIRED:
        dev->desired_subscribed = top == IOTGW_HUBAMQP_TWIN_SUBSCRIBE_DESIRED;
        twin_send(dev, &corr, 200, -1, NULL);
        return;
    case IOTGW_HUBAMQP_TWIN_GET:
    case IOTGW_HUBAMQP_TWIN_PATCH_REPORTED: {
        size_t len = 0;
        const char *body = top == IOTGW_HUBAMQP_TWIN_PATCH_REPORTED ? iotgw_body_bytes(pn_message_body(m), &len)
                                                                    : NULL;
        iotgw_twin_op twop = top == IOTGW_HUBAMQP_TWIN_GET ? IOTGW_TWIN_GET : IOTGW_TWIN_PATCH_REPORTED;
        if (gw_session_twin_request(dev->s, 0, corr_text, twop, (const uint8_t *)body, body ? len : 0))
            twin_refuse(dev, &corr, 503, "the device is not online at the hub yet");
        return;
    }
    default: {
        char text[120];
        snprintf(text, sizeof text, "unknown twin operation or resource (%s %s)", op, resource);
        twin_refuse(dev, &corr, 400, text);
        return;
    }
    }
}

void gw_amqp_twin(gw_session *s, const iotgw_twin_response *r)
{
    gw_amqp_device *dev = s->amqp;
    if (!dev || dev->gone)
        return;
    char *body = r->len ? strndup((const char *)r->body, r->len) : NULL;
    if (!r->request_id) { /* a desired-properties update */
        if (dev->desired_subscribed)
            twin_send(dev, NULL, 0, r->version, body);
        free(body);
        return;
    }
    gw_twin_call *t = gw_session_take_twin_call(s, r->request_id);
    if (t && t->rid) {
        pn_msgid_t corr = correlation_of(t->rid);
        const pn_msgid_t *cp = corr.type == PN_NULL ? NULL : &corr;
        if (!r->status)
            twin_refuse(dev, cp, 503, r->error ? r->error : "no answer from the hub");
        else
            twin_send(dev, cp, r->status, r->version, body);
    }
    if (t)
        free(t->rid);
    free(t);
    free(body);
}

/* ------------------------------------------------------------------ C2D */

/* Send m on the device's C2D link, tagged with the upstream's id. 0 or -1. */
static int c2d_send(gw_amqp_device *dev, uint64_t id, pn_message_t *m)
{
    gw_amqp_link *l = dev->links[LINK_C2D];
    uint8_t *buf;
    size_t len;
    if (!l || (pn_link_state(l->link) & PN_LOCAL_CLOSED) || iotgw_message_encode(m, &buf, &len))
        return -1;
    pn_delivery_t *d = iotgw_link_send(l->link, &id, sizeof id, buf, len);
    free(buf);
    if (!d)
        return -1;
    dev->s->g->stats.c2d_delivered++;
    iotgw_conn_wake(dev->c->conn);
    return 0;
}

/* Kept while no C2D link is attached: the message stays locked at the hub, as IoT Hub
 * keeps it for a device without one; at most the upstream link's credit. */
static int keep_c2d(gw_session *s, const iotgw_c2d_message *m)
{
    gw_c2d_id id = {.upstream = m->id};
    if (iotgw_message_encode(m->message, &id.buf, &id.len))
        return -1;
    gw_c2d_id *ids = realloc(s->c2d_ids, (s->nc2d_ids + 1) * sizeof *ids);
    if (!ids) {
        free(id.buf);
        return -1;
    }
    s->c2d_ids = ids;
    ids[s->nc2d_ids++] = id;
    return 0;
}

static void send_kept_c2d(gw_amqp_device *dev)
{
    gw_session *s = dev->s;
    pn_message_t *m = s->g->scratch;
    size_t i = 0;
    for (; i < s->nc2d_ids; i++) {
        gw_c2d_id *k = &s->c2d_ids[i];
        if (iotgw_message_decode(m, k->buf, k->len, NULL) || c2d_send(dev, k->upstream, m))
            break;
        free(k->buf);
    }
    if (!i)
        return;
    memmove(s->c2d_ids, s->c2d_ids + i, (s->nc2d_ids - i) * sizeof *s->c2d_ids);
    s->nc2d_ids -= i;
}

void gw_amqp_c2d(gw_session *s, const iotgw_c2d_message *m)
{
    gw_amqp_device *dev = s->amqp;
    if (dev && !dev->gone && !s->closing && !c2d_send(dev, m->id, m->message))
        return;
    if (dev && !dev->gone && !s->closing && !keep_c2d(s, m))
        return;
    iotgw_upstream_c2d_settle(s->up, m->id, IOTGW_OUTCOME_RETRY); /* the hub offers it again */
}

static void on_c2d_disposition(gw_amqp_link *l, pn_delivery_t *d)
{
    uint64_t state = pn_delivery_remote_state(d);
    if (!state || state == PN_RECEIVED) /* settled here at once: no second event */
        return;
    gw_amqp_device *dev = l->dev;
    pn_delivery_tag_t tag = pn_delivery_tag(d);
    uint64_t id;
    if (dev && dev->s && dev->s->up && tag.size == sizeof id) {
        memcpy(&id, tag.start, sizeof id);
        gw_stats *st = &dev->s->g->stats;
        iotgw_outcome outcome = IOTGW_OUTCOME_RETRY;
        if (state == PN_ACCEPTED) {
            outcome = IOTGW_OUTCOME_ACCEPTED;
            st->c2d_completed++;
        } else if (state == PN_REJECTED) {
            outcome = IOTGW_OUTCOME_REJECTED;
            st->c2d_rejected++;
        } else {
            st->c2d_abandoned++;
        }
        iotgw_upstream_c2d_settle(dev->s->up, id, outcome);
    }
    pn_delivery_settle(d);
}

/* ------------------------------------------------------------------ deliveries */

static void on_delivery(gw_amqp_conn *c, pn_delivery_t *d)
{
    pn_link_t *link = pn_delivery_link(d);
    gw_amqp_link *l = pn_link_get_context(link);
    if (pn_link_is_sender(link)) {
        if (l && l->kind == LINK_C2D)
            on_c2d_disposition(l, d);
        else if (pn_delivery_remote_state(d) || pn_delivery_settled(d))
            pn_delivery_settle(d);
        return;
    }
    if (!pn_delivery_readable(d))
        return;
    if (pn_delivery_partial(d)) {
        if (pn_delivery_pending(d) > MAX_LINK_MESSAGE) {
            refusal_line(c, l ? l->dev : NULL, NULL, "link \"%.100s\": a message over %d bytes",
                         pn_link_name(link), MAX_LINK_MESSAGE);
            iotgw_link_close_with(link, "amqp:link:message-size-exceeded",
                                  "the message is larger than the link's max-message-size");
        }
        return;
    }
    uint8_t *buf;
    size_t len;
    link_kind kind = l ? l->kind : LINK_REFUSED;
    if (kind != LINK_CBS_REQUESTS && (!l->dev || l->dev->gone))
        kind = LINK_REFUSED;
    if (iotgw_delivery_take(d, MAX_LINK_MESSAGE, &buf, &len)) {
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:link:message-size-exceeded", "the message is too large");
        return;
    }
    if (kind == LINK_REFUSED) {
        free(buf);
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:unauthorized-access", "this link is no longer authorized");
        return;
    }
    iotgw_diag diag = {0};
    pn_message_t *m = c->g->scratch;
    int rc = iotgw_message_decode(m, buf, len, &diag);
    if (!rc && kind == LINK_TELEMETRY) {
        if (l->dev->s)
            l->dev->s->last_rx_ms = iotgw_loop_now_ms(c->g->loop);
        on_telemetry(l, d, buf, len); /* its credit follows the window */
        free(buf);
        return;
    }
    free(buf);
    if (rc) {
        refusal_line(c, l->dev, NULL, "link \"%.100s\": an undecodable message: %s", pn_link_name(link),
                     diag.text);
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:decode-error", diag.text);
        return;
    }
    if (l->dev && l->dev->s)
        l->dev->s->last_rx_ms = iotgw_loop_now_ms(c->g->loop);
    switch (kind) {
    case LINK_CBS_REQUESTS: on_cbs_request(l, d, m); break;
    case LINK_METHOD_ANSWERS: on_method_answer(l, d, m); break;
    case LINK_TWIN_REQUESTS: on_twin_request(l, d, m); break;
    default: iotgw_delivery_settle(d, PN_REJECTED, "amqp:not-allowed", "nothing is received on this link");
    }
    if (!(pn_link_state(link) & PN_LOCAL_CLOSED))
        grant_credit(link, CREDIT_REQUESTS);
}

/* ------------------------------------------------------------------ connections */

static void conn_free(gw_amqp_conn *c)
{
    gw_amqp_device *dev;
    IOTGW_LIST_FOREACH (dev, &c->devices, gw_amqp_device, in_conn)
        device_free(dev, "its AMQP connection closed");
    gw_amqp_link *l;
    IOTGW_LIST_FOREACH (l, &c->links, gw_amqp_link, in_conn)
        link_record_free(l);
    iotgw_list_remove(&c->node);
    free(c);
}

static void on_link_closed(gw_amqp_conn *c, pn_link_t *link)
{
    gw_amqp_link *l = pn_link_get_context(link);
    (void)c;
    if (l)
        link_forget_device(l);
    if (!(pn_link_state(link) & PN_LOCAL_CLOSED))
        pn_link_close(link);
}

static void on_flow(gw_amqp_conn *c, pn_link_t *link)
{
    gw_amqp_link *l = pn_link_get_context(link);
    (void)c;
    if (l && pn_link_is_sender(link))
        iotgw_answer_queue_flush(link, &l->answers);
    if (l && l->kind == LINK_C2D && l->dev && l->dev->s && l->dev->s->nc2d_ids)
        send_kept_c2d(l->dev);
}

static void conn_event(iotgw_conn *ic, pn_event_t *e, void *ctx)
{
    gw_amqp_conn *c = ctx;
    switch (pn_event_type(e)) {
    case PN_CONNECTION_REMOTE_OPEN: {
        pn_connection_t *pc = pn_event_connection(e);
        pn_connection_set_container(pc, c->g->cfg->gateway_id ? c->g->cfg->gateway_id : "iotgw");
        pn_connection_open(pc);
        break;
    }
    case PN_CONNECTION_WAKE: free_gone(c); break;
    case PN_LINK_REMOTE_OPEN: on_link_open(c, pn_event_link(e)); break;
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH: on_link_closed(c, pn_event_link(e)); break;
    case PN_LINK_FLOW: on_flow(c, pn_event_link(e)); break;
    case PN_DELIVERY: on_delivery(c, pn_event_delivery(e)); break;
    case PN_LINK_FINAL: {
        gw_amqp_link *l = pn_link_get_context(pn_event_link(e));
        if (l)
            link_record_free(l);
        break;
    }
    case PN_TRANSPORT_CLOSED: {
        pn_condition_t *cond = pn_transport_condition(iotgw_conn_transport(ic));
        if (pn_condition_is_set(cond)) /* a peer that stopped reading, a TLS or framing error */
            refusal_line(c, NULL, NULL, "closed: %s: %.200s", pn_condition_get_name(cond),
                         pn_condition_get_description(cond) ? pn_condition_get_description(cond) : "");
        c->conn = NULL;
        conn_free(c);
        break;
    }
    default: iotgw_serve_endpoint_event(e, SESSION_CAPACITY); break;
    }
}

void gw_amqp_accept(iotgw_gateway *g, iotgw_conn *ic, int ws)
{
    gw_amqp_conn *c = calloc(1, sizeof *c);
    if (!c) {
        iotgw_conn_close(ic, "amqp:internal-error", "out of memory");
        return;
    }
    c->g = g;
    c->conn = ic;
    c->ws = ws;
    c->serial = ++g->amqp_serial;
    snprintf(c->peer, sizeof c->peer, "%s", iotgw_conn_peer(ic));
    iotgw_list_init(&c->devices);
    iotgw_list_init(&c->links);
    iotgw_list_init(&c->node);
    iotgw_list_push_front(&g->amqp_conns, &c->node);
    iotgw_conn_set_handler(ic, conn_event, c);
    if (g->draining)
        iotgw_conn_close(ic, "amqp:connection:forced", "the gateway is stopping");
}

static void on_accept(iotgw_listener *l, iotgw_conn *c, void *ctx)
{
    (void)l;
    gw_amqp_accept(ctx, c, 0);
}

int gw_amqp_port(const iotgw_gateway *g, size_t i)
{
    return i < g->namqp_listeners ? iotgw_listener_port(g->amqp_listeners[i]) : 0;
}

int gw_amqp_start(iotgw_gateway *g, iotgw_diag *diag)
{
    const iotgw_config *cfg = g->cfg;
    if (!cfg->namqp_listen)
        return 0;
    if (!(g->amqp_listeners = calloc(cfg->namqp_listen, sizeof *g->amqp_listeners)))
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < cfg->namqp_listen; i++) {
        iotgw_listener_options o = {
            .kind = IOTGW_TRANSPORT_AMQPS,
            .address = cfg->amqp_listen[i].address,
            .port = cfg->amqp_listen[i].port,
            .tls = {.cert_file = cfg->tls_cert, .key_file = cfg->tls_key, .ca_file = cfg->tls_client_ca},
            .on_accept = on_accept,
            .ctx = g,
            .max_output = MAX_OUTPUT, /* as an MQTT device's: one that stops reading is closed */
        };
        int rc = iotgw_listener_new(g->loop, &o, &g->amqp_listeners[i], diag);
        if (rc)
            return rc;
        g->namqp_listeners++;
    }
    return 0;
}

void gw_amqp_stop(iotgw_gateway *g)
{
    for (size_t i = 0; i < g->namqp_listeners; i++)
        iotgw_listener_free(g->amqp_listeners[i]);
    free(g->amqp_listeners);
    g->amqp_listeners = NULL;
    g->namqp_listeners = 0;
    iotgw_list *n;
    while ((n = iotgw_list_first(&g->amqp_conns))) {
        gw_amqp_conn *c = iotgw_list_entry(n, gw_amqp_conn, node);
        iotgw_conn *ic = c->conn;
        conn_free(c); /* its devices' sessions went already */
        if (ic) {
            iotgw_conn_set_handler(ic, NULL, NULL);
            iotgw_conn_close(ic, "amqp:connection:forced", "the gateway is stopping");
        }
    }
}
