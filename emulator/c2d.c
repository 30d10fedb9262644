/* Cloud-to-device messages (shared/docs/iothub-amqp-protocol.md 4.3 and 7.3): the
 * service sends to /messages/devicebound with `to` naming the device; each device has a
 * queue of at most 50; a message goes to the device's active C2D link with a 16-byte
 * delivery tag (its lock token) and stays queued until the device completes (accepted),
 * rejects (rejected: dead-lettered) or abandons it (released or modified: queued again,
 * dead-lettered after the tenth delivery). An MQTT device gets it as a QoS 1 PUBLISH
 * (mqtt.c) and completes it with PUBACK; MQTT has no reject or abandon.
 *
 * Time: a delivery's lock lasts c2d_lock_timeout_s (60 s, as IoT Hub); a device that has
 * not answered by then loses it: the hub settles that delivery and sends the message again
 * under a new lock (the count is not raised, as the hub does). A message expires at its
 * absolute-expiry-time, or c2d_ttl_s after it was queued (1 h), at most 2 days: it is
 * dropped, queued or locked, with an Expired feedback record if negative feedback was
 * asked for. One timer per queue waits for its earliest deadline. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>
#include <proton/delivery.h>

#include "hubside/amqp_address.h"
#include "transport/amqp_map.h"
#include "emulator/hub_internal.h"
#include "transport/messaging.h"

#define MAX_DELIVERY_COUNT 10

enum { ACK_POSITIVE = 1, ACK_NEGATIVE = 2 }; /* iothub-ack: positive, negative, full (both) */

typedef struct c2d_msg {
    uint8_t *buf; /* encoded, as the device gets it */
    size_t len;
    int ack;
    char *original_id;               /* its message-id, for feedback */
    int64_t enqueued_ms, expires_ms; /* wall clock */
    uint8_t lock[16];
    int locked;              /* delivered, not answered: the device holds it */
    pn_delivery_t *delivery; /* while locked over AMQP: the delivery carrying it */
    uint16_t mqtt_id;        /* over MQTT: the PUBLISH's packet identifier (kept for a redelivery) */
    uint64_t mqtt_conn;      /* and the connection it went on */
    int delivered;           /* sent at least once: an MQTT redelivery has DUP set */
    int64_t locked_until_ms;
    int delivery_count;
    struct c2d_msg *next;
} c2d_msg;

/* An identity's queue, held by its live entry (live->c2d) from its first message until
 * the identity is deleted or the hub is freed. */
struct emu_c2d_queue {
    c2d_msg *head, *tail;
    int count;
    emu_hub *hub;
    emu_live *live;
    iotgw_timer timer; /* the earliest lock or expiry deadline */
};

static void deadlines_fired(iotgw_timer *t, void *ctx);
static void settle_outcome(emu_c2d_queue *q, struct c2d_msg *m, uint64_t state);

/* The identity's queue, made when it has none; NULL: out of memory. */
static emu_c2d_queue *queue_for(emu_hub *hub, emu_live *live)
{
    if (!live->c2d) {
        emu_c2d_queue *q = calloc(1, sizeof *q);
        if (q) {
            q->hub = hub;
            q->live = live;
            iotgw_timer_init(hub->loop, &q->timer, deadlines_fired, q);
        }
        live->c2d = q;
    }
    return live->c2d;
}

/* End a delivery's lock from the hub's side: the device's later answer to it is ignored. */
static void unlock(c2d_msg *m)
{
    if (!m->locked)
        return;
    if (m->delivery)
        pn_delivery_settle(m->delivery);
    m->delivery = NULL;
    m->locked = 0;
    m->delivery_count--; /* the lock was lost, not abandoned: the count stays */
}

static void remove_msg(emu_c2d_queue *q, c2d_msg *m)
{
    c2d_msg **p = &q->head, *prev = NULL;
    while (*p && *p != m) {
        prev = *p;
        p = &(*p)->next;
    }
    IOTGW_ASSERT(*p == m); /* m is in q */
    *p = m->next;
    if (q->tail == m)
        q->tail = prev;
    q->count--;
    IOTGW_ASSERT(q->count >= 0);
    if (m->delivery) /* dead-lettered or expired while the device holds it */
        pn_delivery_settle(m->delivery);
    free(m->buf);
    free(m->original_id);
    free(m);
}

void emu_c2d_free(emu_live *live)
{
    emu_c2d_queue *q = live->c2d;
    if (!q)
        return;
    iotgw_timer_stop(&q->timer);
    while (q->head)
        remove_msg(q, q->head);
    free(q);
    live->c2d = NULL;
}

static void schedule(emu_c2d_queue *q)
{
    int64_t next = INT64_MAX;
    for (c2d_msg *m = q->head; m; m = m->next) {
        if (m->expires_ms < next)
            next = m->expires_ms;
        if (m->locked && m->locked_until_ms < next)
            next = m->locked_until_ms;
    }
    iotgw_timer_stop(&q->timer);
    if (next != INT64_MAX) {
        int64_t delay = next - emu_wall_ms();
        iotgw_timer_start(&q->timer, delay > 0 ? delay : 0, 0);
    }
}

static void deadlines_fired(iotgw_timer *t, void *ctx)
{
    emu_c2d_queue *q = ctx;
    (void)t;
    emu_identity *id = q->live->id;
    int64_t now = emu_wall_ms();
    int woke = 0;
    for (c2d_msg *m = q->head, *next; m; m = next) {
        next = m->next;
        if (m->expires_ms <= now) {
            iotgw_log(IOTGW_LOG_INFO, "%s: C2D message %s expired %s", id->id,
                      m->original_id ? m->original_id : "(no id)",
                      m->locked ? "while the device held it" : "before delivery");
            if (m->ack & ACK_NEGATIVE)
                emu_feedback_record(q->hub, id, m->original_id, m->enqueued_ms, "Expired");
            q->hub->metrics.c2d[EMU_C2D_EXPIRED]++;
            woke |= m->locked;
            remove_msg(q, m);
        } else if (m->locked && m->locked_until_ms <= now) {
            iotgw_log(IOTGW_LOG_INFO,
                      "%s: C2D message %s: lock expired after %d s without an answer; sent again", id->id,
                      m->original_id ? m->original_id : "(no id)", q->hub->opt.c2d_lock_timeout_s);
            unlock(m);
            woke = 1;
        }
    }
    emu_session *s = q->live->active;
    if (s)
        emu_c2d_pump(s); /* reschedules */
    else if (q->live->mqtt)
        emu_c2d_pump_mqtt(q->live);
    else
        schedule(q);
    if (woke && s && s->conn->conn)
        iotgw_conn_wake(s->conn->conn);
}

int emu_c2d_enqueue(emu_hub *hub, emu_identity *id, pn_message_t *msg, iotgw_diag *diag)
{
    emu_live *live = emu_live_get(&hub->live, id);
    emu_c2d_queue *q = live ? queue_for(hub, live) : NULL;
    if (!q)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    IOTGW_ASSERT(q->count <= EMU_C2D_MAX_QUEUE);
    if (q->count >= EMU_C2D_MAX_QUEUE)
        return iotgw_diag_fail(diag, IOTGW_ERR_AGAIN, "%s has %d messages waiting, the most IoT Hub keeps",
                               id->id, EMU_C2D_MAX_QUEUE);
    c2d_msg *m = calloc(1, sizeof *m);
    if (!m || iotgw_message_encode(msg, &m->buf, &m->len)) {
        free(m);
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    }
    RAND_bytes(m->lock, sizeof m->lock);
    char ack[16];
    if (iotgw_map_text(pn_message_properties(msg), "iothub-ack", ack, sizeof ack))
        m->ack = !strcmp(ack, "full")       ? ACK_POSITIVE | ACK_NEGATIVE
                 : !strcmp(ack, "positive") ? ACK_POSITIVE
                 : !strcmp(ack, "negative") ? ACK_NEGATIVE
                                            : 0;
    m->original_id = iotgw_atom_text(pn_message_get_id(msg)); /* feedback names it */
    m->enqueued_ms = emu_wall_ms();
    /* the sender's absolute-expiry-time (ms since the epoch), within IoT Hub's 2 days */
    int64_t latest = m->enqueued_ms + (int64_t)EMU_C2D_TTL_MAX * 1000;
    m->expires_ms = pn_message_get_expiry_time(msg);
    if (m->expires_ms <= 0 || m->expires_ms > latest)
        m->expires_ms = m->enqueued_ms + (int64_t)hub->opt.c2d_ttl_s * 1000;
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    q->count++;
    live->c2d_sent++;
    hub->metrics.c2d[EMU_C2D_SENT]++;
    if (live->active)
        emu_c2d_pump(live->active);
    else if (live->mqtt)
        emu_c2d_pump_mqtt(live);
    else
        schedule(q);
    return 0;
}

void emu_c2d_pump(emu_session *s)
{
    emu_c2d_queue *q = s->live->c2d;
    if (!q || s->live->active != s)
        return;
    int sent = 0;
    int64_t now = emu_wall_ms();
    for (c2d_msg *m = q->head; s->c2d && m && pn_link_credit(s->c2d->link) > 0; m = m->next) {
        if (m->locked)
            continue;
        RAND_bytes(m->lock, sizeof m->lock); /* a new lock token for every delivery */
        m->delivery = iotgw_link_send(s->c2d->link, m->lock, sizeof m->lock, m->buf, m->len);
        if (!m->delivery)
            break;
        m->locked = 1;
        m->delivered = 1;
        m->locked_until_ms = now + (int64_t)q->hub->opt.c2d_lock_timeout_s * 1000;
        m->delivery_count++;
        sent++;
    }
    q->hub->metrics.c2d[EMU_C2D_DELIVERED] += (uint64_t)sent;
    schedule(q);
    if (sent && s->conn->conn)
        iotgw_conn_wake(s->conn->conn);
}

void emu_c2d_pump_mqtt(emu_live *live)
{
    emu_c2d_queue *q = live->c2d;
    if (!q || !live->mqtt)
        return;
    int sent = 0;
    int64_t now = emu_wall_ms();
    for (c2d_msg *m = q->head, *next; m; m = next) {
        next = m->next;
        if (m->locked)
            continue;
        uint64_t conn = emu_mqtt_serial(live->mqtt);
        if (m->mqtt_conn != conn)
            m->mqtt_id = 0; /* another connection: a new packet identifier */
        if (emu_mqtt_send_c2d(live->mqtt, m->buf, m->len, m->delivered, &m->mqtt_id))
            break;
        m->mqtt_conn = conn;
        m->delivered = 1;
        m->locked = 1;
        m->locked_until_ms = now + (int64_t)q->hub->opt.c2d_lock_timeout_s * 1000;
        m->delivery_count++;
        sent++;
        if (!m->mqtt_id) { /* QoS 0: delivered at most once, no acknowledgement to wait for */
            m->locked = 0;
            settle_outcome(q, m, PN_ACCEPTED);
        }
    }
    q->hub->metrics.c2d[EMU_C2D_DELIVERED] += (uint64_t)sent;
    schedule(q);
}

void emu_c2d_requeue(emu_live *live)
{
    emu_c2d_queue *q = live->c2d;
    if (!q)
        return;
    for (c2d_msg *m = q->head; m; m = m->next)
        unlock(m);
    schedule(q);
}

/* The device answered a delivery of m (no longer locked): completed (accepted), rejected
 * (dead-lettered), or abandoned (queued again, dead-lettered after the tenth time). */
static void settle_outcome(emu_c2d_queue *q, c2d_msg *m, uint64_t state)
{
    emu_live *live = q->live;
    emu_identity *id = live->id;
    emu_hub *hub = q->hub;
    switch (state) {
    case PN_ACCEPTED:
        live->c2d_completed++;
        hub->metrics.c2d[EMU_C2D_COMPLETED]++;
        if (m->ack & ACK_POSITIVE)
            emu_feedback_record(hub, id, m->original_id, m->enqueued_ms, "Success");
        remove_msg(q, m);
        break;
    case PN_REJECTED:
        live->c2d_rejected++;
        hub->metrics.c2d[EMU_C2D_REJECTED]++;
        iotgw_log(IOTGW_LOG_INFO, "%s: C2D message rejected by the device (dead-lettered)", id->id);
        if (m->ack & ACK_NEGATIVE)
            emu_feedback_record(hub, id, m->original_id, m->enqueued_ms, "Rejected");
        remove_msg(q, m);
        break;
    default: /* released or modified: abandoned */
        live->c2d_abandoned++;
        hub->metrics.c2d[EMU_C2D_ABANDONED]++;
        if (m->delivery_count >= MAX_DELIVERY_COUNT) {
            iotgw_log(IOTGW_LOG_INFO, "%s: C2D message abandoned %d times (dead-lettered)", id->id,
                      m->delivery_count);
            if (m->ack & ACK_NEGATIVE)
                emu_feedback_record(hub, id, m->original_id, m->enqueued_ms, "DeliveryCountExceeded");
            remove_msg(q, m);
        }
        break;
    }
    live->last_activity_ms = emu_wall_ms();
}

void emu_c2d_on_disposition(emu_link *l, pn_delivery_t *d)
{
    uint64_t state = pn_delivery_remote_state(d);
    if (!state || state == PN_RECEIVED)
        return;
    emu_session *s = l->session;
    emu_c2d_queue *q = s ? s->live->c2d : NULL;
    c2d_msg *m = q ? q->head : NULL;
    while (m && m->delivery != d)
        m = m->next;
    if (m) {
        m->delivery = NULL; /* settled here, so not by remove_msg or unlock */
        m->locked = 0;
    }
    if (!pn_delivery_settled(d))
        pn_delivery_settle(d);
    if (!m) {
        if (s)
            iotgw_log(IOTGW_LOG_INFO, "%s: answer to a C2D delivery whose lock was lost: ignored", s->id->id);
        return;
    }
    settle_outcome(q, m, state);
    emu_c2d_pump(s);
}

int emu_c2d_mqtt_complete(emu_live *live, uint16_t packet_id)
{
    emu_c2d_queue *q = live->c2d;
    c2d_msg *m = q ? q->head : NULL;
    uint64_t conn = live->mqtt ? emu_mqtt_serial(live->mqtt) : 0;
    while (m && !(m->locked && !m->delivery && m->mqtt_id == packet_id && m->mqtt_conn == conn))
        m = m->next;
    if (!m)
        return -1;
    m->locked = 0;
    m->mqtt_id = 0;
    settle_outcome(q, m, PN_ACCEPTED);
    emu_c2d_pump_mqtt(live);
    return 0;
}

/* Refuse a service's message, with a log line naming the device. */
static void refuse(emu_link *l, pn_delivery_t *d, const char *who, const char *cond, const char *why)
{
    iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": C2D for %s refused: %s: %s", l->conn->serial, who, cond,
              why);
    iotgw_delivery_settle(d, PN_REJECTED, cond, why);
    l->conn->hub->metrics.c2d[EMU_C2D_REFUSED]++;
}

void emu_service_c2d_on_delivery(emu_link *l, pn_delivery_t *d)
{
    emu_hub *hub = l->conn->hub;
    pn_message_t *m = emu_take_request(l, d, "C2D send");
    if (!m) {
        hub->metrics.c2d[EMU_C2D_REFUSED]++;
        return;
    }
    iotgw_diag diag = {0};
    const char *who = "?";
    int rc;
    iotgw_hubaddr a;
    const char *to = pn_message_get_address(m);
    int bad = !to || iotgw_hubaddr_parse(to, &a, &diag);
    if (!bad && a.kind != IOTGW_HUBADDR_C2D) {
        iotgw_hubaddr_clear(&a);
        bad = 1;
    }
    if (bad) {
        refuse(l, d, who, "amqp:invalid-field", "`to` must be /devices/{id}/messages/devicebound");
        return;
    }
    emu_identity *id = emu_registry_find(hub->registry, a.device_id, a.module_id);
    iotgw_hubaddr_clear(&a);
    if (!id) {
        refuse(l, d, to, "amqp:not-found", "DeviceNotFound: no such device");
        return;
    }
    who = id->id;
    /* Devices get exactly one data section (the C SDK refuses anything else). */
    size_t blen = 0;
    const char *body = iotgw_body_bytes(pn_message_body(m), &blen);
    if (body && blen > EMU_C2D_MAX_SIZE) {
        refuse(l, d, who, "amqp:link:message-size-exceeded", "cloud-to-device messages are limited to 64 KB");
        return;
    }
    char *copy = body ? malloc(blen ? blen : 1) : NULL;
    if (body && copy)
        memcpy(copy, body, blen);
    pn_data_clear(pn_message_body(m));
    pn_data_put_binary(pn_message_body(m), pn_bytes(copy ? blen : 0, copy ? copy : ""));
    pn_message_set_inferred(m, true);
    free(copy);
    char canonical[300];
    snprintf(canonical, sizeof canonical, "/devices/%s/messages/devicebound", id->id);
    pn_message_set_address(m, canonical);
    if ((rc = emu_c2d_enqueue(hub, id, m, &diag))) {
        refuse(l, d, who, "amqp:resource-limit-exceeded",
               rc == IOTGW_ERR_AGAIN ? "DeviceMaximumQueueDepthExceeded: the device's queue is full"
                                     : diag.text);
        return;
    }
    iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);
}
