/*
 * upstream: the gateway's side of IoT Hub. Many device identities share a pool of AMQP
 * connections (over secure WebSocket by default, or AMQPS); each device authenticates
 * with its own CBS put-token on the shared connection and has its own links.
 *
 * The owner adds a device when it comes online downstream and removes it when it
 * leaves. The upstream places the device on a connection with room (opening one when
 * needed, closing one that empties), authenticates it at a bounded pace, attaches its
 * links, renews its token near half-life without interrupting traffic, and, when the
 * hub refuses it (bad key, disabled, deleted, throttled, link refused), retries that
 * device alone with its own backoff. A connection that fails is reopened after a
 * decorrelated-jitter backoff; its devices then authenticate again, paced, and what
 * waited is sent at once. When the hub answers a put-token with its "maximum number of
 * tokens per connection" error, the connection is taken as full and the device moves
 * to another one.
 *
 * Telemetry: iotgw_upstream_send() queues an encoded message on the device. Its outcome
 * reaches on_outcome exactly once: ACCEPTED, REJECTED (with the hub's condition), or
 * RETRY with a condition saying why: IOTGW_COND_DELIVERY_TIMEOUT (no outcome within
 * delivery_timeout_ms), IOTGW_COND_REFUSED (the hub refuses the device's identity for
 * good, see iotgw_device_info.refused), or the hub's own (it released the message); a
 * device that is removed gets none (see iotgw_upstream_device_remove). A message in
 * flight when its connection is lost, or while the hub briefly refuses the device (a
 * token expired, put-token 401 once, 429, 503, a link detached) or throttles it, is
 * kept and sent again once the device is back (at least once: the hub may see it
 * twice, with the same message-id).
 *
 * Ownership: the upstream copies the options' strings and the credentials. Device
 * handles belong to the upstream; the owner keeps one from add to remove. Pointers
 * passed to callbacks are valid during the call only.
 *
 * Threading: everything runs on the thread of the iotgw_loop given at creation;
 * callbacks come from that loop, never from inside a call of this API (as libuv's rule):
 * iotgw_upstream_device_add() returns before the device is placed or tells its first
 * state, and a removed device, or a freed upstream, makes no callback at all (its
 * pending messages and twin requests are dropped unanswered: the owner is leaving).
 * Inside a callback the owner may call iotgw_upstream_send(), _method_respond(),
 * _twin_request(), _c2d_settle() and the _info functions, but must not remove a device
 * or free the upstream: it does that from its own events.
 *
 * Errors: functions return 0 or a negative IOTGW_ERR_* code with a message in the diag.
 * What the hub says about a device is in its state (iotgw_upstream_device_info).
 */
#ifndef IOTGW_GATEWAY_UPSTREAM_H
#define IOTGW_GATEWAY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <proton/message.h>

#include "codecs/error.h"
#include "transport/transport.h"

typedef struct iotgw_upstream iotgw_upstream;
typedef struct iotgw_upstream_device iotgw_upstream_device;

#define IOTGW_UPSTREAM_API_VERSION "2020-09-30" /* com.microsoft:api-version on method links */

typedef struct iotgw_hub_settings {
    const char *host_name;     /* the hub, e.g. "myhub.azure-devices.net": token audience */
    const char *connect_host;  /* where to connect, if not host_name (a GatewayHostName-style override) */
    iotgw_transport_kind kind; /* 0: IOTGW_TRANSPORT_WSS */
    int port;                  /* 0: 443 for WSS, 5671 for AMQPS */
    const char *proxy;         /* WSS through an HTTPS proxy: "host:port"; NULL: direct */
    iotgw_tls_options tls;
    uint32_t idle_timeout_ms; /* a hub silent this long is taken as lost; 0: 30000 (the hub is asked
                                 for heartbeats well within it) */
} iotgw_hub_settings;

/* Conditions of RETRY outcomes the upstream makes itself. */
#define IOTGW_COND_DELIVERY_TIMEOUT "iotgw:delivery-timeout"
#define IOTGW_COND_REFUSED          "amqp:unauthorized-access"

typedef enum iotgw_outcome {
    IOTGW_OUTCOME_ACCEPTED = 1, /* the hub has it */
    IOTGW_OUTCOME_REJECTED = 2, /* the hub refused it for good: see the condition */
    IOTGW_OUTCOME_RETRY = 3,    /* not taken: send it again later */
} iotgw_outcome;

typedef enum iotgw_device_state {
    IOTGW_DEVICE_WAITING = 1,        /* for its connection to open or its turn to authenticate */
    IOTGW_DEVICE_AUTHENTICATING = 2, /* put-token sent or links attaching */
    IOTGW_DEVICE_ONLINE = 3,
    IOTGW_DEVICE_FAILED = 4, /* the hub refused it; retried alone at next_retry */
} iotgw_device_state;

typedef enum iotgw_connection_state {
    IOTGW_CONNECTION_CONNECTING = 1,
    IOTGW_CONNECTION_OPEN = 2,
    IOTGW_CONNECTION_BACKOFF = 3, /* lost; reopened at next_retry */
} iotgw_connection_state;

/* What a device needs besides telemetry. */
enum {
    IOTGW_UPSTREAM_METHODS = 1, /* receive direct methods */
    IOTGW_UPSTREAM_TWIN = 2,    /* twin requests, and desired-property updates (subscribed at once) */
    IOTGW_UPSTREAM_C2D = 4,     /* receive cloud-to-device messages */
};

typedef struct iotgw_device_credential {
    const char *device_id;
    const char *key;         /* base64 symmetric key: the device's own, or the policy's */
    const char *policy_name; /* NULL: key is the device's; else a policy with DeviceConnect */
} iotgw_device_credential;

/* A direct method request. The owner answers with iotgw_upstream_method_respond(),
 * giving back the request id. */
typedef struct iotgw_method_request {
    uint8_t request_id[16]; /* the hub's correlation id (a uuid) */
    const char *name;
    const uint8_t *payload; /* JSON text */
    size_t payload_len;
} iotgw_method_request;

typedef enum iotgw_twin_op {
    IOTGW_TWIN_GET = 1,            /* the whole twin: {"desired": {...}, "reported": {...}} */
    IOTGW_TWIN_PATCH_REPORTED = 2, /* body: a JSON merge patch of reported properties */
} iotgw_twin_op;

/* The hub's answer to a twin request, or a desired-property update (request_id 0). */
typedef struct iotgw_twin_response {
    uint64_t request_id;
    int status;          /* the hub's status (200, 204, 4xx...); 0: no usable answer, see error */
    int64_t version;     /* GET and updates: desired version; PATCH: new reported version; -1: none */
    const uint8_t *body; /* JSON text, possibly empty; a JSON object for a 2xx GET and an update */
    size_t len;
    const char *error; /* status 0: why (link lost, timeout, device removed, the hub's answer had
                          no valid status or its twin was not a JSON object) */
} iotgw_twin_response;

/* A cloud-to-device message, valid during the callback. The owner settles it later with
 * iotgw_upstream_c2d_settle() and its id; until then the hub keeps it locked. */
typedef struct iotgw_c2d_message {
    uint64_t id;
    pn_message_t *message; /* decoded; properties, application properties, body */
} iotgw_c2d_message;

typedef struct iotgw_upstream_callbacks {
    /* A message's outcome; cond and description are set for REJECTED and RETRY. */
    void (*on_outcome)(iotgw_upstream_device *dev, void *msg_ctx, iotgw_outcome outcome, const char *cond,
                       const char *description, void *ctx);
    /* The device changed state (see iotgw_upstream_device_info). */
    void (*on_state)(iotgw_upstream_device *dev, iotgw_device_state state, void *ctx);
    /* A direct method for a device added with IOTGW_UPSTREAM_METHODS. */
    void (*on_method)(iotgw_upstream_device *dev, const iotgw_method_request *req, void *ctx);
    /* A twin answer or desired update for a device added with IOTGW_UPSTREAM_TWIN; every
     * request gets exactly one. */
    void (*on_twin)(iotgw_upstream_device *dev, const iotgw_twin_response *resp, void *ctx);
    /* A cloud-to-device message for a device added with IOTGW_UPSTREAM_C2D. */
    void (*on_c2d)(iotgw_upstream_device *dev, const iotgw_c2d_message *msg, void *ctx);
} iotgw_upstream_callbacks;

/* Defaults of the options below, which iotgw.yaml's settings table (gateway/settings.c)
 * also uses for the settings that set them. */
#define IOTGW_UPSTREAM_DEFAULT_TOKEN_LIFETIME_S    3600
#define IOTGW_UPSTREAM_DEFAULT_AUTH_RATE           100
#define IOTGW_UPSTREAM_DEFAULT_DEVICE_WINDOW       100
#define IOTGW_UPSTREAM_DEFAULT_DEVICE_QUEUE        1000
#define IOTGW_UPSTREAM_DEFAULT_QUEUE_BYTES         (64 * 1024 * 1024)
#define IOTGW_UPSTREAM_DEFAULT_DELIVERY_TIMEOUT_MS 60000

typedef struct iotgw_upstream_options {
    iotgw_hub_settings hub;
    unsigned devices_per_connection; /* 0: 500 over WSS, 995 over AMQPS (the hub's limits) */
    unsigned token_lifetime_s;       /* 0: 3600 */
    unsigned backoff_base_ms;        /* reconnect and device retry backoff; 0: 1000 */
    unsigned backoff_cap_ms;         /* 0: 30000; a reconnect counts from the start of the last attempt */
    unsigned throttle_cap_ms;        /* longest pause of a throttled device before a probe; 0: 5000 */
    unsigned delivery_timeout_ms;    /* a message without an outcome by then gets RETRY with
                                        IOTGW_COND_DELIVERY_TIMEOUT; 0: 60000 */
    double auth_rate;           /* put-tokens per second for devices coming online; 0: 100; <0: unpaced */
    unsigned device_window;     /* telemetry in flight per device; 0: 100 */
    unsigned device_queue;      /* telemetry waiting or in flight per device; 0: 1000 */
    size_t queue_bytes;         /* telemetry bytes waiting or in flight, all devices together; 0: 64 MiB */
    unsigned connection_window; /* telemetry in flight per connection; 0: 1000 */
    unsigned cbs_timeout_ms;    /* a put-token unanswered by then fails the connection; 0: 30000 */
    unsigned c2d_credit;        /* cloud-to-device messages delivered and not yet settled, per device; 0: 5 */
    unsigned twin_timeout_ms;   /* a twin request unanswered by then gets status 0; 0: 30000 */
    int keep_connection;        /* hold one hub connection open even without devices, so that a wrong
                                   host, port, CA or proxy shows at once */
    iotgw_upstream_callbacks cb;
    void *ctx;
} iotgw_upstream_options;

int iotgw_upstream_new(iotgw_loop *loop, const iotgw_upstream_options *opt, iotgw_upstream **out,
                       iotgw_diag *diag);
/* Remove every device (as iotgw_upstream_device_remove: no callbacks) and close every
 * connection. */
void iotgw_upstream_free(iotgw_upstream *up);

/* Bring a device online at the hub. features: IOTGW_UPSTREAM_* flags. ctx is the
 * owner's, returned by iotgw_upstream_device_context(). */
int iotgw_upstream_device_add(iotgw_upstream *up, const iotgw_device_credential *cred, unsigned features,
                              void *ctx, iotgw_upstream_device **out, iotgw_diag *diag);
/* Take the device offline: its links are detached; its pending messages and twin
 * requests are dropped without a callback. The handle is invalid afterwards. */
void iotgw_upstream_device_remove(iotgw_upstream_device *dev);
void *iotgw_upstream_device_context(const iotgw_upstream_device *dev);

/* Queue an encoded AMQP message (pn_message_encode / iotgw_message_encode) for the
 * device. msg_ctx comes back with its outcome. IOTGW_ERR_UPSTREAM_FULL when the device
 * has device_queue messages pending, or all devices together queue_bytes;
 * IOTGW_ERR_UPSTREAM_NOT_ONLINE when the hub refuses the device for good (.refused);
 * then no outcome will follow. A device that is waiting, authenticating or briefly
 * refused queues the message. */
int iotgw_upstream_send(iotgw_upstream_device *dev, const uint8_t *encoded, size_t len, void *msg_ctx);

/* Answer a direct method request. IOTGW_ERR_UPSTREAM_NOT_ONLINE when the device's
 * method link is gone (the hub has then answered the caller itself). */
int iotgw_upstream_method_respond(iotgw_upstream_device *dev, const uint8_t request_id[16], int status,
                                  const uint8_t *payload, size_t len);

/* Send a twin request; its answer reaches on_twin with *request_id.
 * IOTGW_ERR_UPSTREAM_NOT_ONLINE when the device's twin links are not attached. */
int iotgw_upstream_twin_request(iotgw_upstream_device *dev, iotgw_twin_op op, const uint8_t *body, size_t len,
                                uint64_t *request_id);

/* Add features to a device (IOTGW_UPSTREAM_TWIN, _C2D; methods only come with
 * iotgw_upstream_device_add): its links for them attach now if it is online, else when
 * it comes online. IOTGW_ERR_INVALID_ARG for IOTGW_UPSTREAM_METHODS. */
int iotgw_upstream_device_enable(iotgw_upstream_device *dev, unsigned features);

/* Settle a cloud-to-device message: ACCEPTED completes it, REJECTED dead-letters it,
 * RETRY abandons it (the hub delivers it again). IOTGW_ERR_UPSTREAM_NOT_ONLINE when the
 * link it came on is gone (the hub has then unlocked it already). */
int iotgw_upstream_c2d_settle(iotgw_upstream_device *dev, uint64_t id, iotgw_outcome outcome);

typedef struct iotgw_device_info {
    iotgw_device_state state;
    int connection;             /* id of the connection it is on, 0 when none */
    char reason[160];           /* last failure: condition and description; "" when none */
    int refused;                /* FAILED: the hub refuses the identity for good (not registered,
                                   or its fresh token refused again after a retry); else passing */
    int64_t next_retry_ms;      /* FAILED: when (loop clock) it is retried */
    unsigned queued, in_flight; /* telemetry */
    uint64_t accepted, rejected, retried;
    uint64_t throttled;       /* messages the hub refused as throttled, kept and sent again */
    uint64_t authentications; /* put-tokens answered 200, renewals included */
} iotgw_device_info;

void iotgw_upstream_device_info(const iotgw_upstream_device *dev, iotgw_device_info *info);

typedef struct iotgw_connection_info {
    int id;
    iotgw_connection_state state;
    unsigned devices, online, in_flight;
    unsigned capacity;   /* devices it may hold (lower than configured when the hub said it was full) */
    unsigned reconnects; /* times it was lost */
    char reason[160];    /* why it was last lost */
    int64_t next_retry_ms;
} iotgw_connection_info;

/* Fill up to max entries; returns how many connections there are. */
int iotgw_upstream_connections(const iotgw_upstream *up, iotgw_connection_info *out, int max);

/* The pool as a whole, for metrics and readiness. */
typedef struct iotgw_upstream_totals {
    unsigned devices_by_state[5]; /* indexed by iotgw_device_state */
    unsigned connections_by_state[4]; /* indexed by iotgw_connection_state */
    uint64_t queued, in_flight;       /* telemetry messages held now */
    size_t queued_bytes;              /* bytes held (waiting and in flight) */
    int64_t oldest_ms;                /* age of the oldest message held; 0: none */
    /* since start */
    uint64_t reconnects;   /* hub connections lost */
    uint64_t tokens;       /* put-tokens answered 200, renewals included */
    uint64_t throttled;    /* messages the hub refused as throttled (kept and sent again) */
    uint64_t refusals[3];  /* devices refused by the hub: passing, identity, for good (up_refusal) */
    char last_failure[200];           /* why the last connection attempt or connection failed; "" */
} iotgw_upstream_totals;

void iotgw_upstream_totals_get(const iotgw_upstream *up, iotgw_upstream_totals *t);

const char *iotgw_device_state_name(iotgw_device_state s);
const char *iotgw_connection_state_name(iotgw_connection_state s);

#endif
