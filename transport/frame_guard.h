/*
 * A check of every frame an AMQP peer sends to a listener, before Proton reads it.
 *
 * Proton-C 0.37 (Debian 12's, built with assertions) aborts the process on some input
 * from a peer that has not even authenticated, and leaks on other input:
 * - a transfer that starts a delivery with more=true and no delivery-id trips
 *   assert(id_present) in pn_do_transfer (a 113-byte connection aborts the server);
 * - each sasl-init after the first leaks the mechanism name kept from the one before.
 * The guard follows the byte stream (protocol headers, frames, their performatives) and
 * refuses, with an AMQP condition, what the spec forbids and Proton mishandles:
 * - a transfer without delivery-id that does not continue a delivery of its link
 *   (AMQP 1.0 2.7.5: required on the first transfer of a delivery), amqp:invalid-field;
 * - a transfer whose fields' encoding is malformed, amqp:decode-error;
 * - a second sasl-init (5.3.3.1: the client sends one), amqp:invalid-field, and a SASL
 *   frame after the AMQP header, amqp:connection:framing-error;
 * - a frame shorter than its header, with a data offset past its end, or larger than
 *   max_frame, amqp:connection:framing-error;
 * - more than FRAME_GUARD_MAX_OPEN deliveries in progress at once,
 *   amqp:resource-limit-exceeded.
 * Everything else passes untouched; Proton still checks it all.
 *
 * Which deliveries are in progress is kept per (channel, handle): set by a transfer with
 * more=true and not aborted, cleared by the last transfer of the delivery, by an attach
 * or detach of the handle, by a begin or end of the channel. Forgetting one only makes
 * the guard stricter (a continuation then needs its delivery-id), never lets the
 * assertion's input through.
 *
 * Cost: frames pass in place; a performative split across two reads is copied (only its
 * first bytes, up to the fields needed), and a transfer's first fields are decoded.
 *
 * Ownership: the guard is embedded in its connection; frame_guard_free releases what it
 * allocated. Single-threaded, as its connection.
 */
#ifndef IOTGW_TRANSPORT_FRAME_GUARD_H
#define IOTGW_TRANSPORT_FRAME_GUARD_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_GUARD_MAX_OPEN 1024 /* multi-frame deliveries in progress on one connection */

typedef struct frame_guard_open {
    uint16_t channel;
    uint32_t handle;
} frame_guard_open;

typedef struct frame_guard {
    uint32_t max_frame; /* set by the owner: a larger frame is refused (0: any size) */
    int state;         /* where in the stream the next byte is (frame_guard.c) */
    uint8_t head[8];   /* a protocol header or a frame header being read */
    size_t head_len;
    uint32_t body_left; /* bytes of the current frame still to come */
    uint32_t body_size;
    uint8_t doff_left;  /* extended header bytes still to skip */
    uint8_t frame_type; /* 0 AMQP, 1 SASL */
    uint16_t channel;
    uint8_t *perf; /* the start of a body split across reads */
    size_t perf_len, perf_cap;
    int sasl_layer; /* the last header announced SASL */
    int sasl_inits;
    frame_guard_open *open;
    size_t n_open, open_cap;
    const char *cond;  /* once refused: the AMQP condition, and why */
    char why[160];
} frame_guard;

/* How many of data's len bytes may go to Proton: len, or fewer when the guard refused
 * (g->cond and g->why say why; the refused frame's bytes in data are not counted, so
 * Proton never completes it). Once refused, 0 for anything after. */
size_t frame_guard_scan(frame_guard *g, const uint8_t *data, size_t len);
void frame_guard_free(frame_guard *g);

#endif
