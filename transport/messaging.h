/*
 * Whole messages on Proton links: receive a delivery's bytes, send an encoded message,
 * settle with an outcome and an error condition. Both the gateway and the emulator use
 * these on their connections' links.
 *
 * Ownership: received buffers are malloc'd and belong to the caller; messages passed in
 * stay the caller's. Threading: the connection's event-loop thread.
 * Errors: 0 or a negative IOTGW_ERR_* code.
 */
#ifndef IOTGW_TRANSPORT_MESSAGING_H
#define IOTGW_TRANSPORT_MESSAGING_H

#include <stddef.h>
#include <stdint.h>
#include <proton/delivery.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/message.h>

#include "codecs/error.h"

/* Take a complete incoming delivery's bytes and advance the link. When it holds more
 * than max bytes, nothing is kept and IOTGW_ERR_HUBMSG_TOO_LARGE is returned (the bytes
 * are drained all the same); *len then holds the size. */
int iotgw_delivery_take(pn_delivery_t *d, size_t max, uint8_t **buf, size_t *len);

/* Decode bytes into msg (cleared first). Stricter than pn_message_decode, which makes
 * values up from truncated or malformed input. */
int iotgw_message_decode(pn_message_t *msg, const uint8_t *buf, size_t len, iotgw_diag *diag);
/* Encode msg into a malloc'd buffer. */
int iotgw_message_encode(pn_message_t *msg, uint8_t **buf, size_t *len);

/* Send an encoded message as a new delivery with the given tag (tag NULL: a counter
 * kept per link is used) and advance; settled at once when the link's sender settle
 * mode is "settled". Returns the delivery, or NULL when the link has no credit or is
 * closed. */
pn_delivery_t *iotgw_link_send(pn_link_t *link, const void *tag, size_t tag_len, const uint8_t *buf,
                               size_t len);
/* Encode and send. */
pn_delivery_t *iotgw_link_send_message(pn_link_t *link, pn_message_t *msg);

/* Settle an incoming delivery with an outcome (PN_ACCEPTED, PN_REJECTED, PN_RELEASED,
 * PN_MODIFIED); a rejection may carry an error condition (name NULL: none). */
void iotgw_delivery_settle(pn_delivery_t *d, uint64_t outcome, const char *cond_name,
                           const char *description);

/* Close a link with an error condition. */
void iotgw_link_close_with(pn_link_t *link, const char *cond_name, const char *description);

/* ------------------------------------------------------------------ serving peers */

/* Answer a peer's attach with the same source, target and settle modes, advertising
 * max_message_size. */
void iotgw_link_open_as_asked(pn_link_t *link, uint64_t max_message_size);
/* What a server does with the endpoint events that need no decision: a peer's session is
 * opened with incoming_capacity bytes it may buffer; its session and connection closes
 * are answered. 1 when e was one of those. */
int iotgw_serve_endpoint_event(pn_event_t *e, size_t incoming_capacity);

/* Messages a server sends on a link as answers (replies, requests to a device), kept
 * while the peer gives no credit: requests often come before the flow of the link they
 * are answered on. At most max wait; an entry owns its encoded bytes. */
typedef struct iotgw_answer_queue {
    struct iotgw_queued_answer *head, *tail;
    size_t count;
} iotgw_answer_queue;

/* Send msg now when the link has credit and nothing waits, else keep it. 0, or -1 (the
 * link is closed, max wait already, out of memory). */
int iotgw_link_answer(pn_link_t *link, iotgw_answer_queue *q, pn_message_t *msg, size_t max);
/* Send what waits, as far as the link's credit goes (on its flow). */
void iotgw_answer_queue_flush(pn_link_t *link, iotgw_answer_queue *q);
void iotgw_answer_queue_clear(iotgw_answer_queue *q);

#endif
