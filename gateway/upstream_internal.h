/*
 * Inside the upstream (gateway/upstream.h). Files: upstream.c (the pool: devices,
 * placement, pacing, the housekeeping tick, the public API), upstream_conn.c (one AMQP
 * connection: its life, CBS put-tokens and replies, event dispatch), upstream_links.c
 * (a device's links: telemetry in and out of flight, direct methods), upstream_twin.c,
 * upstream_c2d.c.
 *
 * Model: an up_conn is one slot of the pool. It keeps its devices across losses of its
 * AMQP connection (iotgw_conn), which it reopens after a backoff. A device is a member
 * of exactly one up_conn from add to remove, except when the hub says that connection
 * is full: then it moves to another.
 */
#ifndef IOTGW_GATEWAY_UPSTREAM_INTERNAL_H
#define IOTGW_GATEWAY_UPSTREAM_INTERNAL_H

#include <proton/link.h>
#include <proton/session.h>

#include "codecs/identity.h"
#include "gateway/backoff.h"
#include "gateway/upstream.h"
#include "transport/log.h"

/* A telemetry message waiting (queue) or sent and not yet settled (in flight). */
typedef struct up_msg {
    struct up_msg *prev, *next;
    void *ctx;
    pn_delivery_t *delivery; /* in flight: its delivery, whose context points back here */
    int64_t deadline_ms;     /* no outcome by then: RETRY with IOTGW_COND_DELIVERY_TIMEOUT */
    size_t len;
    uint8_t data[];
} up_msg;

typedef struct up_msg_list {
    up_msg *head, *tail;
    unsigned count;
} up_msg_list;

typedef struct up_conn up_conn;

/* A twin request waiting for its answer, or a C2D delivery waiting for the owner. */
typedef struct up_pending {
    struct up_pending *next;
    uint64_t id;
    int64_t deadline_ms; /* twin requests */
    int op, sent;        /* twin requests made before the device was online wait unsent */
    uint8_t *body;
    size_t len;
    pn_delivery_t *delivery; /* C2D */
} up_pending;

struct iotgw_upstream_device {
    iotgw_upstream *up;
    up_conn *conn;
    iotgw_upstream_device *member_prev, *member_next; /* conn's members */
    iotgw_upstream_device *auth_prev, *auth_next;     /* the pool's authentication queue */
    iotgw_upstream_device *ready_prev, *ready_next;   /* conn's devices with something to send */
    int in_auth_queue, in_ready;

    char *id, *id_encoded, *key, *policy;
    unsigned features;
    void *ctx;

    iotgw_device_state state;
    char reason[160];
    int64_t next_retry_ms;      /* FAILED */
    int64_t renew_at_ms;        /* authorized: when to put a fresh token; 0: none due */
    int64_t paused_until_ms;    /* throttled: no telemetry before */
    uint32_t throttle_ms;       /* the last throttle pause; 0: not throttled since the last acceptance */
    int probing;                /* after a throttle pause: one message in flight until it is accepted */
    int refused;                /* FAILED: the hub refuses the identity for good (iotgw_device_info) */
    unsigned identity_refusals; /* put-tokens refused 401/403/404 in a row since the device was online */
    uint64_t cbs_request;       /* message-id of the put-token awaiting its reply; 0: none */
    int64_t cbs_deadline_ms;
    int authorized; /* a token was accepted on the current AMQP connection */
    iotgw_backoff backoff;
    iotgw_log_limit log; /* this device's warnings */

    pn_link_t *tel, *meth_in, *meth_out, *twin_out, *twin_in, *c2d;
    up_pending *twin_requests, *c2d_pending;
    uint64_t next_twin_id, next_c2d_id;
    unsigned link_generation;

    up_msg_list queue, in_flight;
    uint64_t accepted, rejected, retried, throttled, authentications;
};

struct up_conn {
    iotgw_upstream *up;
    up_conn *next; /* the pool's list */
    int id;
    iotgw_connection_state state;
    iotgw_conn *conn; /* NULL while in backoff */
    pn_session_t *ssn;
    pn_link_t *cbs_out, *cbs_in;
    uint64_t next_cbs_id;

    iotgw_upstream_device *members;
    unsigned ndevices, nonline, capacity;
    iotgw_upstream_device *ready_head, *ready_tail;
    unsigned in_flight;

    iotgw_backoff backoff;
    iotgw_timer *retry_timer;
    iotgw_timer *kick_timer; /* pending work to send, from outside the connection's events */
    int64_t next_retry_ms;
    int64_t attempt_started_ms; /* the reconnect backoff counts from here */
    int64_t empty_since_ms;     /* closed when it stays empty */
    unsigned reconnects;
    char reason[160];
};

struct iotgw_upstream {
    iotgw_loop *loop;
    iotgw_upstream_options opt; /* strings point at the copies below */
    char *host_name, *connect_host, *proxy, *ca_file, *cert_file, *key_file;

    up_conn *conns;
    int next_conn_id;

    iotgw_upstream_device *auth_head, *auth_tail;
    double pace_tokens;
    int64_t pace_last_ms;
    iotgw_timer *pace_timer;
    iotgw_timer *tick;
    iotgw_backoff jitter; /* random draws for renewal points and seeds */
    pn_message_t *scratch;
    size_t pending_bytes; /* telemetry held, all devices: bounded by opt.queue_bytes */
    uint64_t refusals[3]; /* by up_refusal kind, since start */
    uint64_t reconnects, tokens, throttled; /* since start: iotgw_upstream_totals */
    char last_failure[200];
};

/* upstream.c */
int64_t up_now_ms(iotgw_upstream *up);
void up_set_state(iotgw_upstream_device *dev, iotgw_device_state state);
void up_auth_enqueue(iotgw_upstream_device *dev);
void up_auth_dequeue(iotgw_upstream_device *dev);
void up_auth_pump(iotgw_upstream *up);
/* Take dev out of its connection and place it on another (the hub said full). */
void up_device_move(iotgw_upstream_device *dev);
/* The hub refused the device: links closed, retried after its backoff. A passing
 * refusal keeps its telemetry for then; a refusal for good (dev->refused: the identity
 * is not registered, or a fresh token was refused again after a retry) answers it RETRY
 * with IOTGW_COND_REFUSED. */
typedef enum up_refusal {
    UP_REFUSAL_PASSING = 0,  /* throttled, a link detached, a token expired, a hub error */
    UP_REFUSAL_IDENTITY = 1, /* put-token 401/403: for good if it happens again after a retry */
    UP_REFUSAL_FOR_GOOD = 2, /* not registered (404), or no usable key */
} up_refusal;
void up_device_fail(iotgw_upstream_device *dev, up_refusal kind, const char *cond, const char *description);
/* Messages past their delivery deadline get RETRY with IOTGW_COND_DELIVERY_TIMEOUT. */
void up_telemetry_expire(iotgw_upstream_device *dev, int64_t now);

/* upstream_conn.c */
up_conn *up_conn_new(iotgw_upstream *up);
void up_conn_free(up_conn *c);
int up_conn_start(up_conn *c);
/* Send dev's put-token now; 0, or -1 when the CBS link has no credit. */
int up_conn_put_token(up_conn *c, iotgw_upstream_device *dev);
void up_conn_member_add(up_conn *c, iotgw_upstream_device *dev);
void up_conn_member_remove(up_conn *c, iotgw_upstream_device *dev);
/* Send what changed outside the connection's own events (a send() call, a timer) on the
 * next turn of the loop: one pass for many changes, instead of one per change. */
void up_conn_kick(up_conn *c);
/* Fail the AMQP connection (it will be reopened). */
void up_conn_reset(up_conn *c, const char *cond, const char *description);

/* upstream_links.c */
/* Room for "/devices/{id}/{suffix}" with the longest legal id percent-encoded (128
 * characters, 3 bytes each) and the longest suffix. */
#define UP_ADDRESS_MAX (sizeof "/devices/" + 3 * IOTGW_IDENTITY_MAX_LEN + sizeof "/messages/devicebound" + 8)
/* The device's link address "/devices/{encoded id}{suffix}" into out; 0, or -1 (and
 * nothing usable in out) if it does not fit. */
int up_device_address(const iotgw_upstream_device *dev, const char *suffix, char *out, size_t size);
pn_link_t *up_open_link(iotgw_upstream_device *dev, int sender, const char *kind, const char *address,
                        const char *channel);
void up_links_attach(iotgw_upstream_device *dev);
/* Close the device's links; its in-flight messages go back to the head of its queue. */
void up_links_detach(iotgw_upstream_device *dev);
/* Forget the links (their connection is gone), as above for messages. */
void up_links_forget(iotgw_upstream_device *dev);
void up_links_on_event(up_conn *c, iotgw_upstream_device *dev, pn_event_t *e);
void up_ready_add(iotgw_upstream_device *dev);
void up_ready_remove(iotgw_upstream_device *dev);
/* upstream_twin.c */
void up_twin_attach(iotgw_upstream_device *dev);
void up_twin_on_online(iotgw_upstream_device *dev);
void up_twin_on_delivery(iotgw_upstream_device *dev, pn_delivery_t *d);
/* Every pending request gets status 0 with why. */
void up_twin_fail_pending(iotgw_upstream_device *dev, const char *why);
/* Twin requests past their deadline get status 0. */
void up_twin_expire(iotgw_upstream_device *dev, int64_t now);

/* upstream_c2d.c */
void up_c2d_attach(iotgw_upstream_device *dev);
void up_c2d_on_delivery(iotgw_upstream_device *dev, pn_delivery_t *d);
void up_c2d_forget(iotgw_upstream_device *dev);

/* Send what the connection's windows allow. */
void up_telemetry_pump(up_conn *c);
/* Answer every pending message of dev with outcome RETRY. */
void up_telemetry_flush(iotgw_upstream_device *dev, const char *cond, const char *description);

void up_msg_push_back(up_msg_list *l, up_msg *m);
void up_msg_push_front(up_msg_list *l, up_msg *m);
void up_msg_unlink(up_msg_list *l, up_msg *m);

#endif
