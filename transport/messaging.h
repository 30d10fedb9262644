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

#endif
