#include "transport/messaging.h"

#include <stdlib.h>
#include <string.h>
#include <proton/codec.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/session.h>
#include <proton/terminus.h>

#define RECV_CHUNK 16384

int iotgw_delivery_take(pn_delivery_t *d, size_t max, uint8_t **buf, size_t *len)
{
    pn_link_t *link = pn_delivery_link(d);
    size_t total = pn_delivery_pending(d);
    *buf = NULL;
    *len = total;
    if (total > max) {
        char sink[RECV_CHUNK];
        while (pn_link_recv(link, sink, sizeof sink) > 0) {
        }
        pn_link_advance(link);
        return IOTGW_ERR_HUBMSG_TOO_LARGE;
    }
    uint8_t *b = malloc(total ? total : 1);
    if (!b)
        return IOTGW_ERR_NOMEM;
    size_t got = 0;
    ssize_t n;
    while (got < total && (n = pn_link_recv(link, (char *)b + got, total - got)) > 0)
        got += (size_t)n;
    pn_link_advance(link);
    *buf = b;
    *len = got;
    return 0;
}

/* pn_message_decode (Proton 0.37) accepts truncated or malformed input and makes up
 * values from it; pn_data_decode does not. So every section is decoded strictly first:
 * each must be a described value whose descriptor is a message section (0x70 header ..
 * 0x78 footer), and together they must use every byte. */
static int sections_valid(const uint8_t *buf, size_t len)
{
    pn_data_t *data = pn_data(8);
    int ok = data != NULL && len > 0;
    for (size_t off = 0; ok && off < len;) {
        pn_data_clear(data);
        ssize_t n = pn_data_decode(data, (const char *)buf + off, len - off);
        ok = n > 0;
        if (!ok)
            break;
        off += (size_t)n;
        pn_data_rewind(data);
        ok = pn_data_next(data) && pn_data_type(data) == PN_DESCRIBED;
        if (ok) {
            pn_data_enter(data);
            ok = pn_data_next(data) && pn_data_type(data) == PN_ULONG && pn_data_get_ulong(data) >= 0x70 &&
                 pn_data_get_ulong(data) <= 0x78;
        }
    }
    pn_data_free(data);
    return ok;
}

int iotgw_message_decode(pn_message_t *msg, const uint8_t *buf, size_t len, iotgw_diag *diag)
{
    pn_message_clear(msg);
    if (!sections_valid(buf, len))
        return iotgw_diag_fail(diag, IOTGW_ERR_HUBMSG_BODY,
                               "not an AMQP message: its sections do not decode");
    int rc = pn_message_decode(msg, (const char *)buf, len);
    if (rc)
        return iotgw_diag_fail(diag, IOTGW_ERR_HUBMSG_BODY, "not an AMQP message: %s",
                               pn_error_text(pn_message_error(msg)));
    return 0;
}

int iotgw_message_encode(pn_message_t *msg, uint8_t **buf, size_t *len)
{
    size_t cap = 1024;
    for (;;) {
        char *b = malloc(cap);
        if (!b)
            return IOTGW_ERR_NOMEM;
        size_t n = cap;
        int rc = pn_message_encode(msg, b, &n);
        if (rc == 0) {
            /* callers keep these (C2D queues, the emulator's stream): not the spare room */
            char *fit = n < cap / 2 ? realloc(b, n ? n : 1) : NULL;
            *buf = (uint8_t *)(fit ? fit : b);
            *len = n;
            return 0;
        }
        free(b);
        if (rc != PN_OVERFLOW || cap >= (64u << 20))
            return IOTGW_ERR_INTERNAL;
        cap *= 4;
    }
}

pn_delivery_t *iotgw_link_send(pn_link_t *link, const void *tag, size_t tag_len, const uint8_t *buf,
                               size_t len)
{
    if (pn_link_credit(link) <= 0 || (pn_link_state(link) & PN_LOCAL_CLOSED))
        return NULL;
    uint64_t counter;
    if (!tag) {
        /* Tags need only be unique among a link's unsettled deliveries; one counter for
         * every link (event-loop thread only) does that. */
        static uint64_t next_tag;
        counter = ++next_tag;
        tag = &counter;
        tag_len = sizeof counter;
    }
    pn_delivery_t *d = pn_delivery(link, pn_dtag(tag, tag_len));
    pn_link_send(link, (const char *)buf, len);
    pn_link_advance(link);
    if (pn_link_snd_settle_mode(link) == PN_SND_SETTLED)
        pn_delivery_settle(d);
    return d;
}

pn_delivery_t *iotgw_link_send_message(pn_link_t *link, pn_message_t *msg)
{
    uint8_t *buf;
    size_t len;
    if (pn_link_credit(link) <= 0 || iotgw_message_encode(msg, &buf, &len))
        return NULL;
    pn_delivery_t *d = iotgw_link_send(link, NULL, 0, buf, len);
    free(buf);
    return d;
}

void iotgw_delivery_settle(pn_delivery_t *d, uint64_t outcome, const char *cond_name, const char *description)
{
    if (cond_name && outcome == PN_REJECTED) {
        pn_condition_t *c = pn_disposition_condition(pn_delivery_local(d));
        pn_condition_set_name(c, cond_name);
        if (description)
            pn_condition_set_description(c, description);
    }
    pn_delivery_update(d, outcome);
    pn_delivery_settle(d);
}

void iotgw_link_close_with(pn_link_t *link, const char *cond_name, const char *description)
{
    if (cond_name) {
        pn_condition_t *c = pn_link_condition(link);
        pn_condition_set_name(c, cond_name);
        if (description)
            pn_condition_set_description(c, description);
    }
    pn_link_close(link);
}

/* ------------------------------------------------------------------ serving peers */

void iotgw_link_open_as_asked(pn_link_t *link, uint64_t max_message_size)
{
    pn_terminus_copy(pn_link_source(link), pn_link_remote_source(link));
    pn_terminus_copy(pn_link_target(link), pn_link_remote_target(link));
    pn_link_set_snd_settle_mode(link, pn_link_remote_snd_settle_mode(link));
    pn_link_set_rcv_settle_mode(link, pn_link_remote_rcv_settle_mode(link));
    pn_link_set_max_message_size(link, max_message_size);
    pn_link_open(link);
}

int iotgw_serve_endpoint_event(pn_event_t *e, size_t incoming_capacity)
{
    switch (pn_event_type(e)) {
    case PN_SESSION_REMOTE_OPEN: {
        pn_session_t *s = pn_event_session(e);
        if (pn_session_state(s) & PN_LOCAL_UNINIT) {
            pn_session_set_incoming_capacity(s, incoming_capacity);
            pn_session_open(s);
        }
        return 1;
    }
    case PN_SESSION_REMOTE_CLOSE: pn_session_close(pn_event_session(e)); return 1;
    case PN_CONNECTION_REMOTE_CLOSE: pn_connection_close(pn_event_connection(e)); return 1;
    default: return 0;
    }
}

typedef struct iotgw_queued_answer {
    struct iotgw_queued_answer *next;
    uint8_t *buf;
    size_t len;
} iotgw_queued_answer;

void iotgw_answer_queue_flush(pn_link_t *link, iotgw_answer_queue *q)
{
    while (q->head && pn_link_credit(link) > 0) {
        iotgw_queued_answer *a = q->head;
        iotgw_link_send(link, NULL, 0, a->buf, a->len);
        if (!(q->head = a->next))
            q->tail = NULL;
        q->count--;
        free(a->buf);
        free(a);
    }
}

int iotgw_link_answer(pn_link_t *link, iotgw_answer_queue *q, pn_message_t *msg, size_t max)
{
    if (pn_link_state(link) & PN_LOCAL_CLOSED)
        return -1;
    if (!q->head && pn_link_credit(link) > 0)
        return iotgw_link_send_message(link, msg) ? 0 : -1;
    if (q->count >= max)
        return -1;
    iotgw_queued_answer *a = calloc(1, sizeof *a);
    if (!a || iotgw_message_encode(msg, &a->buf, &a->len)) {
        free(a);
        return -1;
    }
    if (q->tail)
        q->tail->next = a;
    else
        q->head = a;
    q->tail = a;
    q->count++;
    return 0;
}

void iotgw_answer_queue_clear(iotgw_answer_queue *q)
{
    while (q->head) {
        iotgw_queued_answer *a = q->head;
        q->head = a->next;
        free(a->buf);
        free(a);
    }
    q->tail = NULL;
    q->count = 0;
}
