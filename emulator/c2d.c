/* Cloud-to-device messages (shared/docs/iothub-amqp-protocol.md 4.3 and 7.3): the
 * service sends to /messages/devicebound with `to` naming the device; each device has a
 * queue of at most 50; a message goes to the device's active C2D link with a 16-byte
 * delivery tag (its lock token) and stays queued until the device completes (accepted),
 * rejects (rejected: dead-lettered) or abandons it (released or modified: queued again,
 * dead-lettered after the tenth delivery). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>
#include <proton/delivery.h>

#include "emulator/address.h"
#include "transport/amqp_map.h"
#include "emulator/hub.h"
#include "transport/messaging.h"

#define MAX_DELIVERY_COUNT 10

enum { ACK_POSITIVE = 1, ACK_NEGATIVE = 2 }; /* iothub-ack: positive, negative, full (both) */

typedef struct c2d_msg {
    uint8_t *buf; /* encoded, as the device gets it */
    size_t len;
    int ack;
    char *original_id; /* its message-id, for feedback */
    int64_t enqueued_ms;
    uint8_t lock[16];
    int inflight;
    int delivery_count;
    struct c2d_msg *next;
} c2d_msg;

typedef struct c2d_queue {
    c2d_msg *head, *tail;
    int count;
} c2d_queue;

static c2d_queue *queue_of(emu_identity *id, int create)
{
    if (!id->c2d && create)
        id->c2d = calloc(1, sizeof(c2d_queue));
    return id->c2d;
}

static void remove_msg(c2d_queue *q, c2d_msg *m)
{
    c2d_msg **p = &q->head, *prev = NULL;
    while (*p && *p != m) {
        prev = *p;
        p = &(*p)->next;
    }
    if (!*p)
        return;
    *p = m->next;
    if (q->tail == m)
        q->tail = prev;
    q->count--;
    free(m->buf);
    free(m->original_id);
    free(m);
}

void emu_c2d_free(emu_identity *id)
{
    c2d_queue *q = id->c2d;
    if (!q)
        return;
    while (q->head)
        remove_msg(q, q->head);
    free(q);
    id->c2d = NULL;
}

int emu_c2d_enqueue(emu_hub *hub, emu_identity *id, pn_message_t *msg, iotgw_diag *diag)
{
    c2d_queue *q = queue_of(id, 1);
    if (!q)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
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
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    q->count++;
    id->live.c2d_sent++;
    if (id->live.session)
        emu_c2d_pump(id->live.session);
    (void)hub;
    return 0;
}

void emu_c2d_pump(emu_session *s)
{
    emu_identity *id = s->id;
    c2d_queue *q = queue_of(id, 0);
    if (!q || id->live.session != s || !s->c2d)
        return;
    pn_link_t *link = s->c2d->link;
    int sent = 0;
    for (c2d_msg *m = q->head; m && pn_link_credit(link) > 0; m = m->next) {
        if (m->inflight)
            continue;
        if (!iotgw_link_send(link, m->lock, sizeof m->lock, m->buf, m->len))
            break;
        m->inflight = 1;
        m->delivery_count++;
        sent++;
    }
    if (sent && s->conn->conn)
        iotgw_conn_wake(s->conn->conn);
}

void emu_c2d_requeue(emu_identity *id)
{
    c2d_queue *q = queue_of(id, 0);
    if (!q)
        return;
    for (c2d_msg *m = q->head; m; m = m->next)
        if (m->inflight) {
            m->inflight = 0;
            m->delivery_count--; /* the lock was lost, not abandoned: the count stays */
        }
}

void emu_c2d_on_disposition(emu_link *l, pn_delivery_t *d)
{
    uint64_t state = pn_delivery_remote_state(d);
    if (!state || state == PN_RECEIVED)
        return;
    emu_session *s = l->session;
    pn_delivery_tag_t tag = pn_delivery_tag(d);
    if (!pn_delivery_settled(d))
        pn_delivery_settle(d);
    c2d_queue *q = s ? queue_of(s->id, 0) : NULL;
    if (!q || tag.size != 16)
        return;
    c2d_msg *m = q->head;
    while (m && memcmp(m->lock, tag.start, 16))
        m = m->next;
    if (!m || !m->inflight)
        return;
    emu_identity *id = s->id;
    emu_hub *hub = l->conn->hub;
    switch (state) {
    case PN_ACCEPTED:
        id->live.c2d_completed++;
        if (m->ack & ACK_POSITIVE)
            emu_feedback_record(hub, id, m->original_id, m->enqueued_ms, "Success");
        remove_msg(q, m);
        break;
    case PN_REJECTED:
        id->live.c2d_rejected++;
        iotgw_log(IOTGW_LOG_INFO, "%s: C2D message rejected by the device (dead-lettered)", id->id);
        if (m->ack & ACK_NEGATIVE)
            emu_feedback_record(hub, id, m->original_id, m->enqueued_ms, "Rejected");
        remove_msg(q, m);
        break;
    default: /* released or modified: abandoned */
        id->live.c2d_abandoned++;
        m->inflight = 0;
        if (m->delivery_count >= MAX_DELIVERY_COUNT) {
            iotgw_log(IOTGW_LOG_INFO, "%s: C2D message abandoned %d times (dead-lettered)", id->id,
                      m->delivery_count);
            if (m->ack & ACK_NEGATIVE)
                emu_feedback_record(hub, id, m->original_id, m->enqueued_ms, "DeliveryCountExceeded");
            remove_msg(q, m);
        }
        break;
    }
    id->live.last_activity_ms = emu_wall_ms();
    emu_c2d_pump(s);
}

/* Refuse a service's message, with a log line naming the device. */
static void refuse(emu_link *l, pn_delivery_t *d, const char *who, const char *cond, const char *why)
{
    iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": C2D for %s refused: %s: %s", l->conn->serial, who, cond,
              why);
    iotgw_delivery_settle(d, PN_REJECTED, cond, why);
}

void emu_service_c2d_on_delivery(emu_link *l, pn_delivery_t *d)
{
    emu_hub *hub = l->conn->hub;
    pn_message_t *m = emu_take_request(l, d, "C2D send");
    if (!m)
        return;
    iotgw_diag diag = {0};
    const char *who = "?";
    int rc;
    emu_address a;
    const char *to = pn_message_get_address(m);
    int bad = !to || emu_address_parse(to, &a, &diag);
    if (!bad && a.kind != EMU_ADDR_C2D) {
        emu_address_clear(&a);
        bad = 1;
    }
    if (bad) {
        refuse(l, d, who, "amqp:invalid-field", "`to` must be /devices/{id}/messages/devicebound");
        return;
    }
    emu_identity *id = emu_registry_find(hub->registry, a.device_id, a.module_id);
    emu_address_clear(&a);
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
