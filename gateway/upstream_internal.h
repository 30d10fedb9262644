/*
 * Inside the upstream (gateway/upstream.h). The files, each calling only those below it:
 *
 *   upstream.c         the pool and the whole public API: devices, placement, paced
 *                      authentication, the housekeeping tick
 *   upstream_conn.c    one AMQP connection: its life, CBS put-tokens and their replies,
 *                      Proton event dispatch
 *   upstream_device.c  the one owner of a device's upstream state: a state machine fed
 *                      events by the pool and the connection
 *   upstream_twin.c, upstream_c2d.c   a device's twin and cloud-to-device links
 *   upstream_links.c   a device's telemetry and direct-method links, and the helpers that
 *                      open any of its links
 *
 * Nothing lower calls anything higher. What a lower file needs from a higher one is
 * asked for by data: a device that must be placed again, or whose turn to authenticate
 * has come, goes into a pool list, and up_pool_schedule() arms the pool's timer, which
 * serves the lists on the next turn of the loop.
 *
 * Model: an up_conn is one slot of the pool. It keeps its devices across losses of its
 * AMQP connection (iotgw_conn), which it reopens after a backoff. A device is a member
 * of exactly one up_conn from placement to removal, except when the hub says that
 * connection is full: then it leaves it and the pool places it on another.
 */
#ifndef IOTGW_GATEWAY_UPSTREAM_INTERNAL_H
#define IOTGW_GATEWAY_UPSTREAM_INTERNAL_H

#include <proton/link.h>
#include <proton/session.h>

#include "codecs/assert.h"
#include "codecs/identity.h"
#include "codecs/list.h"
#include "codecs/token_bucket.h"
#include "gateway/backoff.h"
#include "gateway/upstream.h"
#include "transport/log.h"

/* A telemetry message waiting (queue) or sent and not yet settled (in flight). */
typedef struct up_msg {
    iotgw_list node; /* in its device's queue or in_flight */
    void *ctx;
    pn_delivery_t *delivery; /* in flight: its delivery, whose context points back here */
    int64_t deadline_ms;     /* no outcome by then: RETRY with IOTGW_COND_DELIVERY_TIMEOUT */
    size_t len;
    uint8_t data[];
} up_msg;

typedef struct up_msg_list {
    iotgw_list head;
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

/* A device's upstream state; only upstream_device.c writes it. */
typedef enum up_dev_state {
    UP_DEV_UNPLACED = 0,   /* on no connection: the pool places it on its next pass */
    UP_DEV_WAITING,        /* its connection is not open */
    UP_DEV_QUEUED,         /* its connection is open; waiting for its turn to authenticate */
    UP_DEV_AUTHENTICATING, /* its put-token sent, not answered yet */
    UP_DEV_ATTACHING,      /* its token accepted; its links attaching */
    UP_DEV_ONLINE,         /* its links attached (a renewal may be in flight: cbs_request) */
    UP_DEV_FAILED,         /* the hub refused it; retried alone at next_retry_ms */
    UP_DEV_REMOVED,        /* the owner removed it: about to be freed */
} up_dev_state;

struct iotgw_upstream_device {
    iotgw_upstream *up;
    up_conn *conn;          /* NULL when UNPLACED or REMOVED */
    iotgw_list member_node; /* in conn->members */
    iotgw_list pool_node;   /* in up->auth_queue (QUEUED) or up->unplaced (UNPLACED) */
    iotgw_list ready_node;  /* in conn->ready: has telemetry it can send now */

    char *id, *id_encoded, *key, *policy;
    unsigned features;
    void *ctx;

    up_dev_state st;
    iotgw_device_state reported; /* the state the owner was last told (on_state) */
    char reason[160];
    int64_t next_retry_ms;      /* FAILED */
    int refused;                /* FAILED: the hub refuses the identity for good (iotgw_device_info) */
    unsigned identity_refusals; /* put-tokens refused 401/403 in a row since the device was online */
    int authorized;             /* a token was accepted on the current AMQP connection */
    uint64_t cbs_request;       /* message-id of the put-token awaiting its reply; 0: none */
    int64_t cbs_deadline_ms;
    int64_t renew_at_ms; /* authorized: when to put a fresh token; 0: none due */
    iotgw_backoff backoff;
    iotgw_log_limit log; /* this device's warnings */

    /* telemetry flow (upstream_links.c) */
    int64_t paused_until_ms; /* throttled: no telemetry before */
    uint32_t throttle_ms;    /* the last throttle pause; 0: not throttled since the last acceptance */
    int probing;             /* after a throttle pause: one message in flight until it is accepted */

    pn_link_t *tel, *meth_in, *meth_out, *twin_out, *twin_in, *c2d;
    up_pending *twin_requests, *c2d_pending;
    uint64_t next_twin_id, next_c2d_id;
    unsigned link_generation;

    up_msg_list queue, in_flight;
    uint64_t accepted, rejected, retried, throttled, authentications;
};

struct up_conn {
    iotgw_upstream *up;
    iotgw_list pool_node; /* in up->conns */
    int id;
    iotgw_connection_state state;
    iotgw_conn *conn; /* NULL while in backoff */
    pn_session_t *ssn;
    pn_link_t *cbs_out, *cbs_in;
    uint64_t next_cbs_id;

    iotgw_list members;
    unsigned ndevices, nonline, capacity; /* nonline: members in UP_DEV_ONLINE */
    iotgw_list ready;
    unsigned in_flight;

    iotgw_backoff backoff;
    iotgw_timer retry_timer;
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

    iotgw_list conns;
    int next_conn_id;

    iotgw_list auth_queue; /* QUEUED devices, in the order they came */
    iotgw_list unplaced;   /* UNPLACED devices */
    iotgw_token_bucket pace;
    iotgw_timer work; /* serves auth_queue and unplaced (up_pool_schedule) */
    iotgw_timer tick;
    iotgw_backoff jitter; /* random draws for renewal points and seeds */
    pn_message_t *scratch;
    size_t pending_bytes;                   /* telemetry held, all devices: bounded by opt.queue_bytes */
    uint64_t refusals[3];                   /* by up_refusal kind, since start */
    uint64_t reconnects, tokens, throttled; /* since start: iotgw_upstream_totals */
    char last_failure[200];
};

static inline int64_t up_now_ms(iotgw_upstream *up)
{
    return iotgw_loop_now_ms(up->loop);
}

/* Ask the pool to serve its lists on the next turn of the loop (never inside the call). */
static inline void up_pool_schedule(iotgw_upstream *up)
{
    if (!iotgw_timer_active(&up->work) || up->work.due_ms > up_now_ms(up))
        iotgw_timer_start(&up->work, 0, 0);
}

/* Send what changed on the connection, on the next turn of the loop. */
static inline void up_conn_wake(up_conn *c)
{
    if (c && c->conn)
        iotgw_conn_wake(c->conn);
}

/* ------------------------------------------------------------------ upstream_conn.c */

up_conn *up_conn_new(iotgw_upstream *up);
void up_conn_free(up_conn *c);
int up_conn_start(up_conn *c);
/* Send dev's put-token and tell the device (UP_EV_TOKEN_SENT); 0, -1 when the CBS link
 * has no credit, -2 when no token can be made (the device is then FAILED). */
int up_conn_put_token(up_conn *c, iotgw_upstream_device *dev);
void up_conn_member_add(up_conn *c, iotgw_upstream_device *dev);
void up_conn_member_remove(up_conn *c, iotgw_upstream_device *dev);
/* Fail the AMQP connection (it will be reopened). */
void up_conn_reset(up_conn *c, const char *cond, const char *description);

/* ------------------------------------------------------------------ upstream_device.c */

/* What the hub refused, for up_refusal's kind. A passing refusal keeps the device's
 * telemetry for its retry; a refusal for good (dev->refused: the identity is not
 * registered, or a fresh token was refused again after a retry) answers it RETRY with
 * IOTGW_COND_REFUSED. */
typedef enum up_refusal {
    UP_REFUSAL_PASSING = 0,  /* throttled, a link detached, a token expired, a hub error */
    UP_REFUSAL_IDENTITY = 1, /* put-token 401/403: for good if it happens again after a retry */
    UP_REFUSAL_FOR_GOOD = 2, /* not registered (404), or no usable key */
} up_refusal;

typedef enum up_dev_event {
    UP_EV_ADDED,          /* the owner added it: it waits to be placed */
    UP_EV_PLACED,         /* the pool put it on a connection: args.conn */
    UP_EV_CONN_OPEN,      /* its connection opened */
    UP_EV_CONN_LOST,      /* its connection is gone, links and all */
    UP_EV_TOKEN_SENT,     /* a put-token (first or renewal) went out: args.request */
    UP_EV_TOKEN_ACCEPTED, /* the hub answered 200 */
    UP_EV_REFUSED,        /* the hub refused it: args.kind, .cond, .description */
    UP_EV_CONN_FULL,      /* the hub holds as many tokens on its connection as it allows */
    UP_EV_RETRY_DUE,      /* FAILED, and next_retry_ms has come */
    UP_EV_REMOVED,        /* the owner removed it: everything goes, no callback follows */
} up_dev_event;

typedef struct up_event_args {
    up_conn *conn; /* UP_EV_PLACED */
    uint64_t request;
    up_refusal kind;
    const char *cond, *description;
} up_event_args;

/* Features added to a device that may be online (iotgw_upstream_device_enable). */
void up_device_enable(iotgw_upstream_device *dev, unsigned added);
void up_device_event(iotgw_upstream_device *dev, up_dev_event ev, const up_event_args *args);
/* A Proton event of one of the device's links (connection's dispatch); dev is the link's
 * context, NULL for a link whose device left. */
void up_device_on_link_event(up_conn *c, iotgw_upstream_device *dev, pn_event_t *e);
/* What the owner is told of st. */
iotgw_device_state up_device_public_state(up_dev_state st);
/* The housekeeping tick's share for one device: deadlines of its twin requests and
 * messages, the end of a throttle pause. */
void up_device_tick(iotgw_upstream_device *dev, int64_t now);

/* ------------------------------------------------------------------ upstream_twin.c */

void up_twin_attach(iotgw_upstream_device *dev);
void up_twin_on_online(iotgw_upstream_device *dev);
void up_twin_on_delivery(iotgw_upstream_device *dev, pn_delivery_t *d);
/* Every pending request gets status 0 with why. */
void up_twin_fail_pending(iotgw_upstream_device *dev, const char *why);
/* Pending requests are dropped without an answer (the device was removed). */
void up_twin_drop_pending(iotgw_upstream_device *dev);
/* Twin requests past their deadline get status 0. */
void up_twin_expire(iotgw_upstream_device *dev, int64_t now);
int up_twin_request(iotgw_upstream_device *dev, iotgw_twin_op op, const uint8_t *body, size_t len,
                    uint64_t *request_id);

/* ------------------------------------------------------------------ upstream_c2d.c */

void up_c2d_attach(iotgw_upstream_device *dev);
void up_c2d_on_delivery(iotgw_upstream_device *dev, pn_delivery_t *d);
void up_c2d_forget(iotgw_upstream_device *dev);
int up_c2d_settle(iotgw_upstream_device *dev, uint64_t id, iotgw_outcome outcome);

/* ------------------------------------------------------------------ upstream_links.c */

/* Room for "/devices/{id}/{suffix}" with the longest legal id percent-encoded (128
 * characters, 3 bytes each) and the longest suffix. */
#define UP_ADDRESS_MAX (sizeof "/devices/" + 3 * IOTGW_IDENTITY_MAX_LEN + sizeof "/messages/devicebound" + 8)
/* The device's link address "/devices/{encoded id}{suffix}" into out; 0, or -1 (and
 * nothing usable in out) if it does not fit. */
int up_device_address(const iotgw_upstream_device *dev, const char *suffix, char *out, size_t size);
/* The same for an address that must fit (out is UP_ADDRESS_MAX, the id was checked). */
void up_device_address_checked(const iotgw_upstream_device *dev, const char *suffix, char *out, size_t size);
pn_link_t *up_open_link(iotgw_upstream_device *dev, int sender, const char *kind, const char *address,
                        const char *channel);
/* Open the telemetry and method links (twin and C2D are their own files'). */
void up_links_attach(iotgw_upstream_device *dev);
/* Every link the device opened is attached at the hub. */
int up_links_all_attached(const iotgw_upstream_device *dev);
/* Close the device's links (forget: their connection is gone); in-flight messages go
 * back to the head of its queue. */
void up_links_detach(iotgw_upstream_device *dev);
void up_links_forget(iotgw_upstream_device *dev);
/* A link event with no device (it left or failed): close, release, settle. */
void up_links_orphan_event(pn_event_t *e);
/* The context of a link the upstream freed (its queued events are ignored). */
extern void *const up_freed_link;

/* Telemetry. What a delivery's outcome asks of the device. */
typedef enum up_tel_result {
    UP_TEL_DONE = 0,
    UP_TEL_RENEW_TOKEN = 1, /* refused as unauthorized while authorized: the token may have lapsed */
} up_tel_result;
up_tel_result up_telemetry_on_delivery(up_conn *c, iotgw_upstream_device *dev, pn_delivery_t *d);
/* Put dev in its connection's ready list if it can send now. */
void up_ready_add(iotgw_upstream_device *dev);
void up_ready_remove(iotgw_upstream_device *dev);
/* Send what the connection's windows allow. */
void up_telemetry_pump(up_conn *c);
int up_telemetry_queue(iotgw_upstream_device *dev, const uint8_t *encoded, size_t len, void *msg_ctx);
/* Answer every pending message of dev with outcome RETRY. */
void up_telemetry_flush(iotgw_upstream_device *dev, const char *cond, const char *description);
/* Free every pending message without an outcome (the device was removed). */
void up_telemetry_drop(iotgw_upstream_device *dev);
/* Messages past their delivery deadline get RETRY with IOTGW_COND_DELIVERY_TIMEOUT. */
void up_telemetry_expire(iotgw_upstream_device *dev, int64_t now);
/* A throttle pause that has ended. */
void up_telemetry_unpause(iotgw_upstream_device *dev, int64_t now);

/* Direct methods. */
void up_method_on_request(iotgw_upstream_device *dev, pn_delivery_t *d);
int up_method_respond(iotgw_upstream_device *dev, const uint8_t request_id[16], int status,
                      const uint8_t *payload, size_t len);

void up_msg_push_back(up_msg_list *l, up_msg *m);
void up_msg_push_front(up_msg_list *l, up_msg *m);
void up_msg_unlink(up_msg_list *l, up_msg *m);
static inline up_msg *up_msg_first(const up_msg_list *l)
{
    iotgw_list *n = iotgw_list_first(&l->head);
    return n ? iotgw_list_entry(n, up_msg, node) : NULL;
}
static inline up_msg *up_msg_last(const up_msg_list *l)
{
    iotgw_list *n = iotgw_list_last(&l->head);
    return n ? iotgw_list_entry(n, up_msg, node) : NULL;
}

#endif
