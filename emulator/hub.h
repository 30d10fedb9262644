/*
 * The emulated hub, device side: listeners (HTTPS + WSS, AMQPS), AMQP connections, CBS
 * authorization, and each identity's links (telemetry, cloud-to-device, methods, twin).
 * Files: hub.c (connections, link attach and routing), cbs.c, telemetry.c, c2d.c,
 * methods.c, twin.c. The reference is shared/docs/iothub-amqp-protocol.md; the
 * choices made where it says UNCONFIRMED are listed in docs/emulator.md.
 *
 * Model: an emu_conn is one AMQP connection. A CBS put-token for a device (or module)
 * creates an emu_session, that identity's presence on the connection, with the token's
 * expiry; a hub-level token (a policy with DeviceConnect, sr = the hub) lets sessions be
 * created on first attach instead. An identity's links live in its session. At most one
 * session per identity is active (identity->live.session): the one that attached last,
 * as IoT Hub keeps one connection per identity; methods, C2D and desired updates go to it.
 *
 * Ownership: the hub owns connections, sessions and link records; the registry and the
 * loop are the caller's and outlive the hub. Threading: event-loop thread only.
 */
#ifndef IOTGW_EMULATOR_HUB_H
#define IOTGW_EMULATOR_HUB_H

#include <stdint.h>
#include <proton/link.h>
#include <proton/message.h>

#include "emulator/registry.h"
#include "transport/log.h"
#include "transport/transport.h"

#define EMU_MAX_TOKENS_DEFAULT         1000
#define EMU_MAX_MESSAGE_SIZE           (256 * 1024)  /* IoT Hub's D2C limit */
#define EMU_LINK_MAX_MESSAGE_SIZE      (1024 * 1024) /* advertised on attach (CBS links: observed) */
#define EMU_C2D_MAX_QUEUE              50
#define EMU_C2D_MAX_SIZE               (64 * 1024)
#define EMU_C2D_LOCK_TIMEOUT_DEFAULT   60   /* seconds */
#define EMU_C2D_TTL_DEFAULT            3600 /* seconds */
#define EMU_C2D_TTL_MAX                (2 * 24 * 3600)
#define EMU_METHOD_MAX_PAYLOAD         (128 * 1024)
#define EMU_PARTITIONS_DEFAULT         4
#define EMU_RETENTION_MESSAGES_DEFAULT 100000             /* the stream keeps at most this many */
#define EMU_RETENTION_BYTES_DEFAULT    (64 * 1024 * 1024) /* and at most this many bytes */

typedef struct emu_hub_options {
    const char *hostname;    /* the hub's name; token sr hosts must match it */
    const char *listen_addr; /* HTTPS + WSS; NULL: no such listener */
    int listen_port;
    const char *amqps_addr; /* NULL: no AMQPS listener */
    int amqps_port;
    const char *cert_file, *key_file;
    int max_tokens;         /* per connection; 0: EMU_MAX_TOKENS_DEFAULT */
    int d2c_limit;          /* device-to-cloud messages per second; 0: no limit */
    int c2d_lock_timeout_s; /* 0: EMU_C2D_LOCK_TIMEOUT_DEFAULT */
    int c2d_ttl_s;          /* 0: EMU_C2D_TTL_DEFAULT */
    int admin;              /* serve the fault-injection API (loopback clients only) */
    int stream_redirect;    /* answer readers of messages/events with amqp:link:redirect, as IoT Hub does */
    int partitions;         /* of the telemetry stream; 0: EMU_PARTITIONS_DEFAULT */
    size_t retention_messages, retention_bytes; /* 0: the defaults above */
    uint32_t idle_timeout_ms;
    iotgw_http_fn on_http; /* the service REST API; its ctx is the hub */
} emu_hub_options;

typedef struct emu_hub emu_hub;
typedef struct emu_conn emu_conn;
typedef struct emu_session emu_session;
typedef struct emu_link emu_link;

typedef struct emu_method_call emu_method_call;
typedef struct emu_events emu_events;

typedef enum emu_link_kind {
    EMU_LINK_CBS_REQUESTS = 1, /* client sender to $cbs */
    EMU_LINK_CBS_REPLIES,      /* client receiver from $cbs */
    EMU_LINK_TELEMETRY,
    EMU_LINK_C2D,
    EMU_LINK_METHOD_REQUESTS,  /* hub sends requests */
    EMU_LINK_METHOD_RESPONSES, /* hub receives answers */
    EMU_LINK_TWIN_REQUESTS,    /* hub receives GET/PATCH/PUT */
    EMU_LINK_TWIN_RESPONSES,   /* hub sends answers and desired updates */
    EMU_LINK_SERVICE_C2D,
    EMU_LINK_EVENTS,   /* hub sends the telemetry stream of one partition */
    EMU_LINK_FEEDBACK, /* hub sends C2D delivery feedback to the service */
    EMU_LINK_REFUSED,  /* attached only to be detached with an error */
} emu_link_kind;

struct emu_link {
    emu_link_kind kind;
    pn_link_t *link;
    emu_conn *conn;
    emu_session *session;                    /* device links */
    char *reply_address;                     /* CBS replies: the client's target address (C# routes by it) */
    struct emu_queued *queued, *queued_tail; /* answers waiting for the client's credit */
    int nqueued;
    int partition;                       /* EMU_LINK_EVENTS: which one */
    uint64_t cursor;                     /* EMU_LINK_EVENTS: next sequence number to send */
    emu_link *stream_prev, *stream_next; /* EMU_LINK_EVENTS: the hub's readers */
    emu_link *prev, *next;
};

struct emu_session {
    emu_identity *id;
    emu_conn *conn;
    uint64_t token_expiry; /* seconds since the epoch; 0: covered by a hub-level grant */
    int attached;          /* has attached a link: it may be the active session */
    emu_link *telemetry;   /* the most recent; several are allowed */
    emu_link *c2d, *method_requests, *method_responses, *twin_requests, *twin_responses;
    int desired_subscribed;
    emu_session *next_in_conn;
    emu_session *next_of_identity; /* the identity's sessions on every connection */
};

struct emu_conn {
    emu_hub *hub;
    iotgw_conn *conn;
    uint64_t serial; /* for logs: "conn 12" */
    emu_link *links;
    emu_session *sessions;
    uint64_t device_grant;   /* expiry of a hub-level DeviceConnect token; 0: none */
    uint64_t service_grant;  /* expiry of a ServiceConnect token; 0: none */
    unsigned service_rights; /* that policy's rights */
    iotgw_timer expiry_timer;
    int refused;  /* fault injection: closed at accept; nothing it sends is served */
    int listener; /* EMU_LISTENER_WSS or _AMQPS: where it came in (metrics) */
    emu_conn *prev, *next;
};

/* Faults set through the admin API (admin_rest.c); each is logged when set. */
typedef struct emu_faults {
    int64_t refuse_until_ms; /* wall clock: connections accepted before then are closed at once */
    int method_delay_ms;     /* devices' method answers reach REST callers this much later */
    int method_fail_status;  /* non-zero: REST callers get this HTTP error instead of the answer */
    int rest_limit;          /* service REST requests per second; 0: no limit (over it: 429) */
    double rest_tokens;
    int64_t rest_refilled_ms;
    char **reject_tokens; /* identities whose put-tokens are answered 401 */
    int nreject;
} emu_faults;

/* What the hub counts for GET /metrics (metrics_rest.c): plain counters, each raised
 * where the thing happens, rendered only when scraped. Per-identity counts live in the
 * identity's emu_live. */
enum { EMU_D2C_TOO_LARGE, EMU_D2C_UNDECODABLE, EMU_D2C_THROTTLED, EMU_D2C_REJECT_REASONS };
enum {
    EMU_C2D_SENT,      /* the service's message is queued */
    EMU_C2D_REFUSED,   /* the service's message is not (unknown device, too large, full queue) */
    EMU_C2D_DELIVERED, /* to a device, each delivery (redeliveries included) */
    EMU_C2D_COMPLETED,
    EMU_C2D_REJECTED,
    EMU_C2D_ABANDONED,
    EMU_C2D_EXPIRED,
    EMU_C2D_EVENTS
};
/* How a direct method call ended: the class of the device's status (0: not 1xx-5xx), or
 * the hub's error when the device's answer did not reach the caller. */
enum {
    EMU_METHOD_CLASSES = 6, /* other, 1xx .. 5xx */
    EMU_METHOD_NOT_ONLINE = EMU_METHOD_CLASSES,
    EMU_METHOD_TIMEOUT,
    EMU_METHOD_NOT_FOUND,
    EMU_METHOD_TOO_LARGE,
    EMU_METHOD_INJECTED,
    EMU_METHOD_SERVER_ERROR,
    EMU_METHOD_RESULTS
};
enum {
    EMU_TWIN_GET, /* device side, over AMQP */
    EMU_TWIN_PATCH_REPORTED,
    EMU_TWIN_SUBSCRIBE,
    EMU_TWIN_UNSUBSCRIBE,
    EMU_TWIN_UNKNOWN,
    EMU_TWIN_SERVICE_GET, /* service side, REST */
    EMU_TWIN_SERVICE_PATCH,
    EMU_TWIN_SERVICE_REPLACE,
    EMU_TWIN_OPS
};
enum { EMU_LISTENER_WSS, EMU_LISTENER_AMQPS, EMU_LISTENERS };
enum { EMU_CBS_200, EMU_CBS_400, EMU_CBS_401, EMU_CBS_404, EMU_CBS_500, EMU_CBS_STATUSES };

typedef struct emu_metrics {
    uint64_t d2c_messages; /* accepted: stored in the telemetry stream, each of a batch */
    uint64_t d2c_rejected[EMU_D2C_REJECT_REASONS]; /* transfers */
    uint64_t stream_read;                          /* messages sent to readers of the telemetry stream */
    uint64_t c2d[EMU_C2D_EVENTS];
    uint64_t methods[EMU_METHOD_RESULTS];
    uint64_t twin[EMU_TWIN_OPS][2]; /* [op][0: answered, 1: failed] */
    uint64_t desired_pushes;
    uint64_t conns_accepted[EMU_LISTENERS], conns_open[EMU_LISTENERS], conns_refused;
    uint64_t put_tokens[EMU_CBS_STATUSES];
    uint64_t sasl_plain[2]; /* [0: accepted, 1: refused] */
    uint64_t rest[6];       /* answers by status class: other, 1xx .. 5xx */
    uint64_t throttled_rest;
} emu_metrics;

struct emu_hub {
    iotgw_loop *loop;
    emu_registry *registry;
    emu_hub_options opt; /* strings are owned copies */
    iotgw_listener *wss, *amqps;
    emu_conn *conns;
    uint64_t next_serial;
    pn_message_t *scratch;  /* reused for decoding */
    emu_method_call *calls; /* direct methods waiting for a device */
    emu_events *events;     /* the telemetry stream */
    emu_link *streams;      /* its readers */
    emu_faults faults;
    json_t *feedback;  /* C2D feedback records waiting for a receiver */
    double d2c_tokens; /* d2c_limit's bucket */
    int64_t d2c_refilled_ms;
    char event_hub[160]; /* the stream's Event Hub-compatible name, "iothub-ehub-{hub}-emulator" */
    emu_metrics metrics;
};

int emu_hub_new(iotgw_loop *loop, emu_registry *registry, const emu_hub_options *opt, emu_hub **out,
                iotgw_diag *diag);
void emu_hub_free(emu_hub *hub);
int emu_hub_wss_port(const emu_hub *hub);
int emu_hub_amqps_port(const emu_hub *hub);

/* hub.c, used by the other files */
uint64_t emu_now_s(void);
int64_t emu_wall_ms(void);
/* The session of id on conn, or NULL. */
emu_session *emu_session_find(emu_conn *c, emu_identity *id);
emu_session *emu_session_get(emu_conn *c, emu_identity *id, uint64_t token_expiry);
/* Detach every link of a session with a condition and forget it. */
void emu_session_end(emu_session *s, const char *cond_name, const char *description);
/* Close every AMQP connection now; returns how many. */
int emu_hub_drop_connections(emu_hub *hub, const char *cond_name, const char *description);
/* Is the identity's put-token to be refused (admin fault)? */
int emu_faults_rejects(const emu_hub *hub, const char *identity);
/* End every session of the identity (its links detach with the condition). */
void emu_identity_disconnect(emu_identity *id, const char *cond_name, const char *description);
/* Send msg on a link the hub sends answers on, or keep it until the client gives
 * credit (at most EMU_MAX_QUEUED; then it is dropped with a log line). 0 or -1. */
#define EMU_MAX_QUEUED 1000
int emu_link_answer(emu_link *l, pn_message_t *msg);
/* Take and decode a complete incoming request into the hub's scratch message; on a
 * too-large or undecodable one, settle it rejected, log, and return NULL. */
pn_message_t *emu_take_request(emu_link *l, pn_delivery_t *d, const char *what);
/* Re-arm the connection's token-expiry timer after a grant changed. */
void emu_conn_schedule_expiry(emu_conn *c);

/* cbs.c */
void emu_cbs_on_request(emu_link *l, pn_delivery_t *d);
/* SASL PLAIN with a SAS token as the password (listener callback). */
int emu_cbs_sasl_plain(iotgw_conn *ic, const char *user, const char *password, void *ctx);

/* events.c: the Event Hub-compatible stream */
int emu_events_new(int partitions, size_t max_messages, size_t max_bytes, emu_events **out);
void emu_events_free(emu_events *ev);
int emu_events_partitions(const emu_events *ev);
/* Store an accepted device message (encoded) and deliver it to the partition's readers. */
void emu_events_publish(emu_hub *hub, emu_identity *id, const uint8_t *buf, size_t len);
/* Make l a reader of partition from its filter's start; NULL, or the condition to refuse
 * with and *why. */
const char *emu_events_attach(emu_link *l, int partition, const char **why);
void emu_events_detach(emu_link *l);
void emu_events_pump(emu_link *l);
/* Messages the stream holds now, over all partitions. */
size_t emu_events_retained(const emu_events *ev);

/* feedback.c: C2D delivery feedback to service receivers */
/* A record for a message whose sender asked for acknowledgement; status is IoT Hub's
 * (Success, Rejected, DeliveryCountExceeded, Expired, Purged). */
void emu_feedback_record(emu_hub *hub, emu_identity *id, const char *original_id, int64_t enqueued_ms,
                         const char *status);
void emu_feedback_pump(emu_hub *hub);

/* telemetry.c */
void emu_telemetry_on_delivery(emu_link *l, pn_delivery_t *d);

/* c2d.c: the per-identity queue */
void emu_service_c2d_on_delivery(emu_link *l, pn_delivery_t *d);
/* Queue an encoded message for id; returns 0, or IOTGW_ERR_AGAIN when the queue is full. */
int emu_c2d_enqueue(emu_hub *hub, emu_identity *id, pn_message_t *msg, iotgw_diag *diag);
/* Send what can be sent on the identity's active session. */
void emu_c2d_pump(emu_session *s);
void emu_c2d_on_disposition(emu_link *l, pn_delivery_t *d);
/* The active session went away: what it held goes back to the queue. */
void emu_c2d_requeue(emu_identity *id);
void emu_c2d_free(emu_identity *id);

/* methods.c */
typedef void (*emu_method_done_fn)(void *ctx, int status, const uint8_t *payload, size_t len,
                                   const char *error_code, const char *message);
/* Invoke a direct method. done is called exactly once, possibly before this returns
 * (device not online and connect_timeout_s 0). Returns a handle for cancel. */
emu_method_call *emu_method_invoke(emu_hub *hub, emu_identity *id, const char *name, const uint8_t *payload,
                                   size_t len, int response_timeout_s, int connect_timeout_s,
                                   emu_method_done_fn done, void *ctx);
/* The caller is gone: done will not be called. */
void emu_method_cancel(emu_method_call *call);
void emu_methods_on_response(emu_link *l, pn_delivery_t *d);
/* The identity is being deleted: its waiting calls end with DeviceNotFound. */
void emu_methods_identity_gone(emu_hub *hub, emu_identity *id);
/* A session gained a method request link (pending calls may go) or lost it. */
void emu_methods_session_changed(emu_hub *hub, emu_identity *id);

/* twin.c */
void emu_twin_on_request(emu_link *l, pn_delivery_t *d);
#define EMU_TWIN_MAX_PROPERTIES (32 * 1024) /* desired and reported, each */
#define EMU_TWIN_MAX_TAGS       (8 * 1024)
/* Apply a JSON merge patch (RFC 7396; $version and $metadata ignored) to *props, from
 * empty when replace, within max_bytes and IoT Hub's depth of 10. 0, or an HTTP-like
 * status (400, 413, 500) with *error saying why; *props is unchanged then. */
int emu_twin_apply(json_t **props, json_t *patch, int replace, size_t max_bytes, const char **error);
/* Desired properties changed: push the patch to a subscribed device. */
void emu_twin_notify_desired(emu_hub *hub, emu_identity *id, json_t *patch);
/* The twin as the service API shows it (new reference). */
json_t *emu_twin_json(emu_hub *hub, emu_identity *id);

#endif
