/*
 * Inside the emulated hub: the structs and calls shared by the files that make it up,
 * hub.c (connections, link attach and routing, sessions), live.c (the per-identity live
 * table), cbs.c, telemetry.c, events.c, c2d.c, feedback.c, files.c, methods.c, twin.c, jobs.c and
 * mqtt.c (the MQTT device endpoint). Users
 * of the hub include emulator/hub.h instead. The reference is
 * shared/docs/iothub-amqp-protocol.md; the choices made where it says UNCONFIRMED are
 * listed in docs/emulator.md.
 *
 * Model: an emu_conn is one AMQP connection. A CBS put-token for a device (or module)
 * creates an emu_session, that identity's presence on the connection, with the token's
 * expiry; a hub-level token (a policy with DeviceConnect, sr = the hub) lets sessions be
 * created on first attach instead. An identity's links live in its session. At most one
 * session per identity is active (emu_live.active): the one that attached last, as IoT
 * Hub keeps one connection per identity; methods, C2D and desired updates go to it. An
 * MQTT connection (mqtt.c) is the identity's presence by itself (emu_live.mqtt), and the
 * newest connection wins across both protocols.
 *
 * Live state: what the hub knows of an identity while it runs (its sessions, its C2D
 * queue, its counters) is an emu_live in the hub's live table, keyed by the identity's id
 * (live.c), never in the registry's objects. An entry is made the first time the
 * identity needs one (a session, a queued message, a counted event) and lives until the
 * identity is deleted (emu_hub_identity_forget, before the registry frees the identity)
 * or the hub is freed; its id pointer is the registry's identity, valid all that time.
 *
 * Ownership: the hub owns connections, sessions, link records, live entries, C2D queues
 * and method calls. Threading: event-loop thread only. Errors: as each function says;
 * most have nothing to report but log what they refuse.
 */
#ifndef IOTGW_EMULATOR_HUB_INTERNAL_H
#define IOTGW_EMULATOR_HUB_INTERNAL_H

#include <stdint.h>
#include <proton/link.h>
#include <proton/message.h>

#include "codecs/assert.h"
#include "codecs/list.h"
#include "emulator/hub.h"
#include "transport/log.h"
#include "transport/messaging.h"
#include "transport/stream.h"
#include "transport/transport.h"

#define EMU_MAX_MESSAGE_SIZE      (256 * 1024)  /* IoT Hub's D2C limit */
#define EMU_LINK_MAX_MESSAGE_SIZE (1024 * 1024) /* advertised on attach (CBS links: observed) */
#define EMU_C2D_MAX_QUEUE         50
#define EMU_C2D_MAX_SIZE          (64 * 1024)

typedef struct emu_conn emu_conn;
typedef struct emu_session emu_session;
typedef struct emu_link emu_link;
typedef struct emu_live emu_live;
typedef struct emu_events emu_events;
typedef struct emu_c2d_queue emu_c2d_queue;
typedef struct emu_mqtt_client emu_mqtt_client;
typedef struct emu_files emu_files;

/* The hub's service-bound queues (feedback.c): records for service receivers. */
typedef enum emu_service_queue {
    EMU_SERVICE_FEEDBACK,           /* C2D delivery feedback, /messages/serviceBound/feedback */
    EMU_SERVICE_FILE_NOTIFICATIONS, /* file upload notifications, /messages/serviceBound/filenotifications */
    EMU_SERVICE_QUEUES
} emu_service_queue;

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
    EMU_LINK_EVENTS,        /* hub sends the telemetry stream of one partition */
    EMU_LINK_FEEDBACK,      /* hub sends C2D delivery feedback to the service */
    EMU_LINK_FILE_NOTIFICATIONS, /* hub sends file upload notifications to the service */
    EMU_LINK_MGMT_REQUESTS, /* client sender to the stream's $management node */
    EMU_LINK_MGMT_REPLIES,  /* client receiver from it */
    EMU_LINK_REFUSED,       /* attached only to be detached with an error */
} emu_link_kind;

struct emu_link {
    emu_link_kind kind;
    pn_link_t *link;
    emu_conn *conn;
    emu_session *session;                    /* device links */
    char *reply_address;                     /* CBS and $management replies: the client's target address */
    iotgw_answer_queue answers; /* waiting for the client's credit */
    int partition;        /* EMU_LINK_EVENTS: which one */
    uint64_t cursor;      /* EMU_LINK_EVENTS: next sequence number to send */
    char *consumer_group; /* EMU_LINK_EVENTS: the reader's (compared without case) */
    int64_t epoch;        /* EMU_LINK_EVENTS: its com.microsoft:epoch, or -1 for none */
    iotgw_list stream;    /* EMU_LINK_EVENTS: in the hub's readers (emu_hub.streams) once attached */
    iotgw_list in_conn;   /* in conn->links */
};

struct emu_session {
    emu_identity *id;
    emu_live *live; /* the identity's live entry (live->id == id) */
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
    uint64_t serial;  /* for logs: "conn 12" */
    iotgw_list links; /* emu_link.in_conn */
    emu_session *sessions;
    uint64_t device_grant;   /* expiry of a hub-level DeviceConnect token; 0: none */
    uint64_t service_grant;  /* expiry of a ServiceConnect token; 0: none */
    unsigned service_rights; /* that policy's rights */
    iotgw_timer expiry_timer;
    int refused;       /* fault injection: closed at accept; nothing it sends is served */
    int listener;      /* EMU_LISTENER_WSS or _AMQPS: where it came in (metrics) */
    iotgw_list in_hub; /* in hub->conns */
};

/* What the hub knows about one identity while it runs (not saved). */
struct emu_live {
    emu_identity *id;            /* the registry's; this entry goes before it does */
    emu_session *active;         /* the session holding its links, or NULL: at most one per identity */
    emu_mqtt_client *mqtt;       /* or its MQTT connection (mqtt.c); never both */
    unsigned mqtt_subscriptions; /* kept for a client with clean session 0 (1 << filter kind) */
    int mqtt_session;            /* such a session exists */
    emu_session *sessions;       /* all its sessions, on any connection (next_of_identity) */
    emu_c2d_queue *c2d;          /* c2d.c's queue, or NULL until a message is queued */
    int64_t last_activity_ms;    /* wall clock */
    uint64_t telemetry_in, c2d_sent, c2d_completed, c2d_rejected, c2d_abandoned;
    uint64_t methods_invoked, twin_requests, auth_ok, auth_failed;
    uint32_t hash; /* of id->id, for the table */
    emu_live *hash_next;
};

/* The live table: a hash table of emu_live by identity id, grown as entries come. */
typedef struct emu_live_table {
    emu_live **buckets;
    size_t nbuckets, count;
} emu_live_table;

struct emu_hub {
    iotgw_loop *loop;
    emu_registry *registry;
    emu_hub_options opt; /* strings are owned copies; d2c_limit is only where the faults started */
    iotgw_listener *wss, *amqps;
    iotgw_stream_listener *mqtts;
    iotgw_list conns;        /* emu_conn.in_hub, the newest first */
    struct iotgw_hubmqtt_endpoint *mqtt; /* mqtt.c's: the MQTT front end of both listeners */
    iotgw_list mqtt_clients;             /* emu_mqtt_client, mqtt.c's */
    uint64_t next_serial;
    pn_message_t *scratch;      /* reused for decoding */
    pn_message_t *mqtt_scratch; /* mqtt.c's, reused for building and decoding */
    emu_live_table live;        /* per identity: sessions, C2D queue, counters */
    iotgw_list calls;           /* direct methods waiting for a device (methods.c) */
    uint64_t next_method_rid;
    emu_events *events; /* the telemetry stream */
    iotgw_list streams; /* its readers: emu_link.stream */
    emu_faults *faults;
    json_t *service_queues[EMU_SERVICE_QUEUES]; /* records waiting for a receiver (feedback.c) */
    emu_files *files;                            /* file upload (files.c); NULL: no storage configured */
    char event_hub[160]; /* the stream's Event Hub-compatible name, "iothub-ehub-{hub}-emulator" */
    iotgw_list jobs;     /* emu_job (jobs.c), oldest first */
    int njobs;
    emu_metrics metrics;
};

/* The identity has a connection holding its links (AMQP or MQTT). */
static inline int emu_live_connected(const emu_live *live)
{
    return live && (live->active || live->mqtt);
}

/* ------------------------------------------------------------------ live.c */

/* The identity's entry, or NULL when it has none yet. */
emu_live *emu_live_find(const emu_live_table *t, const emu_identity *id);
/* The identity's entry, made when it has none; NULL: out of memory. */
emu_live *emu_live_get(emu_live_table *t, emu_identity *id);
/* Take the entry out of the table and free it; it holds no session or queue any more. */
void emu_live_remove(emu_live_table *t, emu_live *live);
/* Free every entry, after each one's before_free (which may not touch the table). */
void emu_live_table_free(emu_live_table *t, void (*before_free)(emu_live *live));

/* ------------------------------------------------------------------ hub.c */

/* The session of id on conn, or NULL. */
emu_session *emu_session_find(emu_conn *c, emu_identity *id);
/* That session, made when there is none (with the identity's live entry); a non-zero
 * token_expiry renews it. NULL: out of memory. */
emu_session *emu_session_get(emu_conn *c, emu_identity *id, uint64_t token_expiry);
/* Detach every link of a session with a condition and forget it. */
void emu_session_end(emu_session *s, const char *cond_name, const char *description);
/* Send msg on a link the hub sends answers on, or keep it until the client gives
 * credit (at most EMU_MAX_QUEUED; then it is dropped with a log line). 0 or -1. */
#define EMU_MAX_QUEUED 1000
int emu_link_answer(emu_link *l, pn_message_t *msg);
/* Take and decode a complete incoming request into the hub's scratch message; on a
 * too-large or undecodable one, settle it rejected, log, and return NULL. */
pn_message_t *emu_take_request(emu_link *l, pn_delivery_t *d, const char *what);
/* The link of kind (CBS or $management replies) on request's connection to answer on:
 * the one whose target address is reply_to, else one on the same session, else any;
 * NULL when there is none. */
emu_link *emu_reply_link(emu_link *request, emu_link_kind kind, const char *reply_to);
/* Re-arm the connection's token-expiry timer after a grant changed. */
void emu_conn_schedule_expiry(emu_conn *c);

/* ------------------------------------------------------------------ cbs.c */

/* What a SAS token lets in, checked as IoT Hub checks it: hub, resource, policy and
 * rights, signature, expiry, the identity registered and enabled. */
typedef struct emu_auth {
    int status; /* 200, or 400, 401, 404, 500 */
    char description[300];
    emu_identity *id;   /* a device or module token (or a policy's for one identity) */
    emu_policy *policy; /* the signing policy, or NULL */
    uint64_t expiry;    /* seconds since the epoch */
    int stream_only;    /* sr names the event hub or messages/events: service rights only */
} emu_auth;
/* plain_user: a SASL PLAIN user name the token must match, or NULL. 0 when status is 200. */
int emu_auth_token(emu_hub *hub, const char *token, const char *plain_user, emu_auth *out);

void emu_cbs_on_request(emu_link *l, pn_delivery_t *d);
/* SASL PLAIN with a SAS token as the password (listener callback). */
int emu_cbs_sasl_plain(iotgw_conn *ic, const char *user, const char *password, void *ctx);

/* ------------------------------------------------------------------ events.c */

/* The Event Hub-compatible stream. 0 or IOTGW_ERR_NOMEM. */
int emu_events_new(int partitions, size_t max_messages, size_t max_bytes, emu_events **out);
void emu_events_free(emu_events *ev);
int emu_events_partitions(const emu_events *ev);
/* Store an accepted device message (encoded) and deliver it to the partition's readers. */
void emu_events_publish(emu_hub *hub, emu_identity *id, const uint8_t *buf, size_t len);
/* Make l a reader of partition for consumer_group from its filter's start, with its
 * com.microsoft:epoch link property if it has one (readers of lower epochs, or none,
 * are detached; at most 5 readers without one per partition and group). NULL, or the
 * condition to refuse with and *why. */
const char *emu_events_attach(emu_link *l, int partition, const char *consumer_group, const char **why);
/* l reads no more (nothing when it was no reader). */
void emu_events_detach(emu_link *l);
void emu_events_pump(emu_link *l);
/* Messages the stream holds now, over all partitions. */
size_t emu_events_retained(const emu_events *ev);
/* A link address naming the stream's $management node: EMU_MGMT_EVENT_HUB for
 * "$management" or "{event hub}/$management" (its name copied into event_hub, "" for
 * none), EMU_MGMT_IOTHUB for IoT Hub's "messages/events/$management"; each optionally
 * after "amqps://host[:port]/" or "/". EMU_MGMT_NONE for any other address. */
enum { EMU_MGMT_NONE, EMU_MGMT_EVENT_HUB, EMU_MGMT_IOTHUB };
int emu_events_management_address(const char *address, char *event_hub, size_t len);
/* A request on a $management link: READ of com.microsoft:eventhub or
 * com.microsoft:partition, answered as Event Hubs does on the reply link. */
void emu_events_on_management(emu_link *l, pn_delivery_t *d);

/* ------------------------------------------------------------------ feedback.c */

/* A record (the reference is taken) for the service receivers of queue q, sent as soon as
 * one has credit; at most 1000 wait, the oldest dropped first. */
void emu_service_queue_push(emu_hub *hub, emu_service_queue q, json_t *record);
/* Send what waits in every queue to receivers with credit. */
void emu_service_queues_pump(emu_hub *hub);
/* C2D delivery feedback to service receivers. A record for a message whose sender asked
 * for acknowledgement; status is IoT Hub's (Success, Rejected, DeliveryCountExceeded,
 * Expired, Purged). */
void emu_feedback_record(emu_hub *hub, emu_identity *id, const char *original_id, int64_t enqueued_ms,
                         const char *status);

/* ------------------------------------------------------------------ files.c */

/* File upload's storage account from opt's blob settings (copied), *out NULL when
 * opt->blob_endpoint is NULL. 0, or IOTGW_ERR_INVALID_ARG / IOTGW_ERR_NOMEM with why. */
int emu_files_new(emu_hub *hub, const emu_hub_options *opt, emu_files **out, iotgw_diag *diag);
/* Forget the uploads; waits for blob reads in flight (each bounded by a timeout), whose
 * requests end unanswered. */
void emu_files_free(emu_files *f);

/* ------------------------------------------------------------------ telemetry.c */

void emu_telemetry_on_delivery(emu_link *l, pn_delivery_t *d);
/* Check an encoded message (or batch) from live's identity and store it in the stream:
 * NULL, or the AMQP condition it is refused with, *why in words and *throttled set when
 * it is the rate limit. Counts it either way. counted: 0 for what a device sent as AMQP;
 * for one message the hub built itself (from an MQTT PUBLISH), its size as IoT Hub counts
 * it (body, property names and values), and it is not checked again. */
const char *emu_telemetry_accept(emu_hub *hub, emu_live *live, const uint8_t *buf, size_t len, size_t counted,
                                 const char **why, int *throttled);

/* ------------------------------------------------------------------ c2d.c */

void emu_service_c2d_on_delivery(emu_link *l, pn_delivery_t *d);
/* Queue an encoded message for id; returns 0, or IOTGW_ERR_AGAIN when the queue is full
 * (IOTGW_ERR_NOMEM when out of memory). */
int emu_c2d_enqueue(emu_hub *hub, emu_identity *id, pn_message_t *msg, iotgw_diag *diag);
/* Send what can be sent on the identity's active session. */
void emu_c2d_pump(emu_session *s);
/* Send what can be sent to the identity's MQTT connection (live->mqtt). */
void emu_c2d_pump_mqtt(emu_live *live);
void emu_c2d_on_disposition(emu_link *l, pn_delivery_t *d);
/* The MQTT client acknowledged the C2D PUBLISH packet_id: completed. 0, or -1 when no
 * message is locked under it. */
int emu_c2d_mqtt_complete(emu_live *live, uint16_t packet_id);
/* The active session went away: what it held goes back to the queue. */
void emu_c2d_requeue(emu_live *live);
/* Drop the identity's queue, without feedback. */
void emu_c2d_free(emu_live *live);

/* ------------------------------------------------------------------ methods.c */

void emu_methods_on_response(emu_link *l, pn_delivery_t *d);
/* An MQTT device's answer on $iothub/methods/res/{status}/?$rid={rid}. */
void emu_methods_on_mqtt_response(emu_hub *hub, emu_identity *id, const uint8_t *rid, size_t rid_len,
                                  int status, const uint8_t *body, size_t len);
/* The identity is being deleted: its waiting calls end with DeviceNotFound. */
void emu_methods_identity_gone(emu_hub *hub, emu_identity *id);
/* A session gained a method request link (pending calls may go) or lost it. */
void emu_methods_session_changed(emu_hub *hub, emu_identity *id);
/* The hub is being freed: every call ends without its done. */
void emu_methods_cancel_all(emu_hub *hub);

/* ------------------------------------------------------------------ twin.c */

void emu_twin_on_request(emu_link *l, pn_delivery_t *d);
/* The device's GET: its desired and reported properties with their versions (JSON text,
 * malloc'd; NULL: out of memory). */
char *emu_twin_document_text(const emu_identity *id);
/* The device's PATCH of its reported properties: 204 with *version the new one, or 400,
 * 413, 500 with *error. Counted as kind EMU_TWIN_PATCH_REPORTED. */
int emu_twin_patch_reported(emu_hub *hub, emu_identity *id, const uint8_t *body, size_t len, int64_t *version,
                            const char **error);

/* ------------------------------------------------------------------ jobs.c */

/* The hub is being freed: every job goes, its waiting method calls without their done. */
void emu_jobs_free_all(emu_hub *hub);

/* ------------------------------------------------------------------ mqtt.c */

/* The MQTT endpoints: --mqtts, and the WSS listener's "mqtt" subprotocol. 0 or an error. */
int emu_mqtt_listen(emu_hub *hub, const char *address, int port, const char *cert_file, const char *key_file,
                    iotgw_diag *diag);
/* A WSS listener's WebSocket connection on subprotocol mqtt. */
void emu_mqtt_on_ws_stream(iotgw_listener *l, iotgw_stream *s, void *ctx);
/* Close the client: its identity lets go of it at once (C2D back to the queue); the
 * socket closes on a later turn. */
void emu_mqtt_drop(emu_mqtt_client *m, const char *why);
/* Close every MQTT connection, as emu_mqtt_drop; returns how many. */
int emu_mqtt_drop_all(emu_hub *hub, const char *why);
/* Close every MQTT connection (the hub is being freed: at once, no callbacks). */
void emu_mqtt_free_all(emu_hub *hub);
/* Hub to device, when the client subscribed to it: 0 sent, -1 not (not subscribed, its
 * output full). */
int emu_mqtt_send_method(emu_mqtt_client *m, const char *name, const char *rid, const uint8_t *payload,
                         size_t len);
int emu_mqtt_send_desired(emu_mqtt_client *m, int64_t version, const char *patch);
/* A C2D message (encoded AMQP, as queued) as a QoS 1 PUBLISH: 0 with *packet_id, -1 when
 * it cannot go now (not subscribed, in-flight window or output full). */
int emu_mqtt_send_c2d(emu_mqtt_client *m, const uint8_t *buf, size_t len, int dup, uint16_t *packet_id);
/* The client's connection number: a redelivery on the same connection keeps its packet
 * identifier (MQTT 3.1.1 4.4). */
uint64_t emu_mqtt_serial(const emu_mqtt_client *m);

#endif
