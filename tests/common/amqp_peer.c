#include "tests/common/amqp_peer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/codec.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#define CREDIT_WINDOW 500

/* Per-link counters live in the link's context. */
typedef struct link_state {
    uint64_t next_seq; /* sender: next to send; receiver: next expected */
} link_state;

static link_state *state_of(pn_link_t *l)
{
    link_state *s = pn_link_get_context(l);
    if (!s) {
        s = calloc(1, sizeof *s);
        pn_link_set_context(l, s);
    }
    return s;
}

static void fill(uint8_t *buf, size_t n, uint64_t seq)
{
    memcpy(buf, &seq, n < 8 ? n : 8);
    for (size_t i = 8; i < n; i++)
        buf[i] = (uint8_t)(seq + i);
}

static void send_what_credit_allows(amqp_peer *p, pn_link_t *l)
{
    if (!pn_link_is_sender(l) || !(pn_link_state(l) & PN_LOCAL_ACTIVE))
        return;
    link_state *s = state_of(l);
    uint8_t buf[65536], wire[66000];
    size_t n = p->msg_size < sizeof buf ? p->msg_size : sizeof buf;
    while (pn_link_credit(l) > 0 && s->next_seq < p->per_link) {
        char tag[16];
        int tn = snprintf(tag, sizeof tag, "%llu", (unsigned long long)s->next_seq);
        pn_delivery(l, pn_dtag(tag, (size_t)tn));
        fill(buf, n, s->next_seq);
        if (p->amqp_messages) {
            pn_message_t *m = pn_message();
            pn_message_set_inferred(m, true);
            pn_data_put_binary(pn_message_body(m), pn_bytes(n, (const char *)buf));
            size_t wn = sizeof wire;
            pn_message_encode(m, (char *)wire, &wn);
            pn_message_free(m);
            pn_link_send(l, (const char *)wire, wn);
        } else {
            pn_link_send(l, (const char *)buf, n);
        }
        pn_link_advance(l);
        s->next_seq++;
        p->sent++;
    }
}

static void open_client_links(pn_connection_t *c, amqp_peer *p)
{
    for (int i = 0; i < p->n_sessions; i++) {
        pn_session_t *ssn = pn_session(c);
        pn_session_open(ssn);
        for (int j = 0; j < p->links_per_session; j++) {
            char name[64];
            snprintf(name, sizeof name, "c2s-%d-%d", i, j);
            pn_link_t *snd = pn_sender(ssn, name);
            pn_terminus_set_address(pn_link_target(snd), name);
            pn_link_open(snd);
            snprintf(name, sizeof name, "s2c-%d-%d", i, j);
            pn_link_t *rcv = pn_receiver(ssn, name);
            pn_terminus_set_address(pn_link_source(rcv), name);
            pn_link_open(rcv);
            pn_link_flow(rcv, CREDIT_WINDOW);
        }
    }
}

static void maybe_finish(amqp_peer *p, pn_connection_t *c)
{
    if (!p->is_server && p->received >= p->expect_received && p->settled >= p->sent &&
        p->sent >= (uint64_t)p->n_sessions * (uint64_t)p->links_per_session * p->per_link &&
        !(pn_connection_state(c) & PN_LOCAL_CLOSED))
        pn_connection_close(c);
}

static void on_delivery(amqp_peer *p, pn_event_t *e)
{
    pn_delivery_t *d = pn_event_delivery(e);
    pn_link_t *l = pn_delivery_link(d);
    if (pn_link_is_sender(l)) {
        if (pn_delivery_remote_state(d) || pn_delivery_settled(d)) {
            pn_delivery_settle(d);
            p->settled++;
        }
        return;
    }
    if (!pn_delivery_readable(d) || pn_delivery_partial(d))
        return;
    uint8_t raw[66000], buf[65536];
    ssize_t n = pn_link_recv(l, (char *)raw, sizeof raw);
    const uint8_t *payload = raw;
    if (p->amqp_messages) { /* the payload is the message body's data section */
        ssize_t got = n;
        n = -1;
        pn_message_t *m = pn_message();
        if (got > 0 && pn_message_decode(m, (const char *)raw, (size_t)got) == 0) {
            pn_data_t *body = pn_message_body(m);
            pn_data_rewind(body);
            if (pn_data_next(body) && pn_data_type(body) == PN_BINARY) {
                pn_bytes_t b = pn_data_get_binary(body);
                if (b.size <= sizeof buf) {
                    memcpy(buf, b.start, b.size);
                    n = (ssize_t)b.size;
                }
            }
        }
        pn_message_free(m);
        payload = buf;
    }
    link_state *s = state_of(l);
    uint64_t seq = 0;
    if (n >= 8)
        memcpy(&seq, payload, 8);
    if (n != (ssize_t)p->msg_size)
        p->bad_payloads++;
    else
        for (ssize_t i = 8; i < n; i++)
            if (payload[i] != (uint8_t)(seq + (uint64_t)i)) {
                p->bad_payloads++;
                break;
            }
    if (seq != s->next_seq)
        p->out_of_order++;
    s->next_seq = seq + 1;
    pn_link_advance(l);
    pn_delivery_update(d, PN_ACCEPTED);
    pn_delivery_settle(d);
    p->received++;
    if (pn_link_credit(l) < CREDIT_WINDOW / 2)
        pn_link_flow(l, CREDIT_WINDOW - pn_link_credit(l));
}

void amqp_peer_on_event(amqp_peer *p, pn_event_t *e)
{
    pn_connection_t *c = pn_event_connection(e);
    switch (pn_event_type(e)) {
    case PN_CONNECTION_INIT:
        if (!p->is_server) {
            pn_connection_set_container(c, "amqp-peer-client");
            pn_connection_open(c);
            open_client_links(c, p);
        }
        break;
    case PN_CONNECTION_REMOTE_OPEN:
        p->remote_opened = 1;
        if (p->is_server) {
            pn_connection_set_container(c, "amqp-peer-server");
            pn_connection_open(c);
        }
        break;
    case PN_SESSION_REMOTE_OPEN:
        if (!(pn_session_state(pn_event_session(e)) & PN_LOCAL_ACTIVE))
            pn_session_open(pn_event_session(e));
        break;
    case PN_LINK_REMOTE_OPEN: {
        pn_link_t *l = pn_event_link(e);
        p->links_opened++;
        if (!(pn_link_state(l) & PN_LOCAL_ACTIVE)) {
            pn_terminus_copy(pn_link_source(l), pn_link_remote_source(l));
            pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
            pn_link_open(l);
            if (pn_link_is_receiver(l))
                pn_link_flow(l, CREDIT_WINDOW);
        }
        send_what_credit_allows(p, l);
        break;
    }
    case PN_LINK_FLOW: send_what_credit_allows(p, pn_event_link(e)); break;
    case PN_DELIVERY:
        on_delivery(p, e);
        maybe_finish(p, c);
        break;
    case PN_CONNECTION_REMOTE_CLOSE:
        if (!(pn_connection_state(c) & PN_LOCAL_CLOSED))
            pn_connection_close(c);
        break;
    case PN_LINK_FINAL:
        free(pn_link_get_context(pn_event_link(e)));
        pn_link_set_context(pn_event_link(e), NULL);
        break;
    case PN_TRANSPORT_CLOSED: {
        p->transport_closed = 1;
        /* the last event: links go with the connection, without PN_LINK_FINAL */
        for (pn_link_t *l = pn_link_head(c, 0); l; l = pn_link_next(l, 0)) {
            free(pn_link_get_context(l));
            pn_link_set_context(l, NULL);
        }
        pn_condition_t *cond = pn_transport_condition(pn_event_transport(e));
        if (pn_condition_is_set(cond)) {
            snprintf(p->cond_name, sizeof p->cond_name, "%s", pn_condition_get_name(cond));
            snprintf(p->cond_desc, sizeof p->cond_desc, "%s",
                     pn_condition_get_description(cond) ? pn_condition_get_description(cond) : "");
        }
        break;
    }
    default: break;
    }
}
