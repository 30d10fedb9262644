/*
 * A scripted AMQP peer for transport tests and benchmarks, written against Proton's
 * engine API only, so the same peer runs over iotgw_conn (WSS, AMQPS) and over two
 * connection drivers pumped in memory.
 *
 * Client: opens the connection, n_sessions sessions, and in each links_per_session
 * sender and receiver links. Server: opens whatever the client opens. Every sender link
 * sends per_link messages of msg_size bytes (unsettled; the receiver accepts and
 * settles). Each payload carries its link's sequence number and a pattern, checked on
 * arrival. The client closes the connection once it has received everything it expects
 * and all its own messages are settled.
 */
#ifndef IOTGW_TESTS_AMQP_PEER_H
#define IOTGW_TESTS_AMQP_PEER_H

#include <stddef.h>
#include <stdint.h>
#include <proton/event.h>

typedef struct amqp_peer {
    /* set by the test */
    int is_server;
    int n_sessions, links_per_session; /* client side */
    uint64_t per_link;                 /* messages each sender link sends */
    size_t msg_size;
    uint64_t expect_received; /* client closes after this many (and all its sends settled) */
    int amqp_messages;        /* 1: payloads are encoded AMQP messages (data section), for
                                 peers that decode what they receive */
    /* observed */
    uint64_t sent, settled, received, bad_payloads, out_of_order;
    int remote_opened, transport_closed, links_opened;
    char cond_name[128], cond_desc[512]; /* the transport's condition at close */
} amqp_peer;

void amqp_peer_on_event(amqp_peer *p, pn_event_t *e);

#endif
