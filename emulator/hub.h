/*
 * The emulated IoT Hub as its users see it: main.c, the service REST API (rest.h and its
 * files) and the benchmarks. The hub serves the device side (HTTPS + WSS, AMQPS and
 * MQTT-over-TLS listeners, AMQP and MQTT connections, CBS authorization, each identity's telemetry,
 * cloud-to-device, method and twin links) and the service's AMQP links; the calls below
 * are what the REST layer does to it. The files that make up the hub (hub.c, cbs.c,
 * telemetry.c, events.c, c2d.c, feedback.c, methods.c, twin.c, live.c) share
 * emulator/hub_internal.h, which is not for other users.
 *
 * Ownership: emu_hub_new's hub is the caller's, freed with emu_hub_free. The loop and
 * the registry are the caller's and outlive the hub. The hub keeps state of its own for
 * each identity that has been active (sessions, C2D queue, counters), which refers to
 * the registry's identity: an identity is removed from the registry only after
 * emu_hub_identity_forget. What the accessors return (registry, metrics, faults, names)
 * is the hub's and lives until emu_hub_free.
 *
 * Threading: event-loop thread only. Errors: emu_hub_new returns 0 or a negative
 * IOTGW_ERR_* code with the reason in the diag; a direct method call reports how it
 * ended through its done callback; the rest cannot fail.
 */
#ifndef IOTGW_EMULATOR_HUB_H
#define IOTGW_EMULATOR_HUB_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "emulator/faults.h"
#include "emulator/metrics.h"
#include "emulator/registry.h"
#include "transport/log.h" /* the hub logs with it; its users set its level and format */
#include "transport/transport.h"

#define EMU_MAX_TOKENS_DEFAULT         1000
#define EMU_C2D_LOCK_TIMEOUT_DEFAULT   60   /* seconds */
#define EMU_C2D_TTL_DEFAULT            3600 /* seconds */
#define EMU_C2D_TTL_MAX                (2 * 24 * 3600)
#define EMU_PARTITIONS_DEFAULT         4
#define EMU_RETENTION_MESSAGES_DEFAULT 100000             /* the stream keeps at most this many */
#define EMU_RETENTION_BYTES_DEFAULT    (64 * 1024 * 1024) /* and at most this many bytes */

typedef struct emu_hub_options {
    const char *hostname;    /* the hub's name; token sr hosts must match it */
    const char *listen_addr; /* HTTPS + WSS; NULL: no such listener */
    int listen_port;
    const char *amqps_addr; /* NULL: no AMQPS listener */
    int amqps_port;
    const char *mqtts_addr; /* NULL: no MQTT-over-TLS listener (MQTT over WebSocket is on listen_addr) */
    int mqtts_port;
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
    /* File upload's storage account (files.c), an Azure Storage blob endpoint such as
     * Azurite's: "https://host[:port][/path]", e.g. "https://127.0.0.1:10000/devstoreaccount1"
     * (path style, Azurite's) or "https://acct.blob.core.windows.net"; NULL: none, and
     * devices' file uploads are refused as by a hub without one. */
    const char *blob_endpoint;
    const char *blob_account, *blob_key; /* the account's name and key (base64) */
    const char *blob_container;          /* the container uploads go to; it must exist */
    const char *blob_ca_file;            /* CA the hub trusts for blob_endpoint; NULL: the system's */
} emu_hub_options;

typedef struct emu_hub emu_hub;

/* Listen as opt says (its strings are copied). */
int emu_hub_new(iotgw_loop *loop, emu_registry *registry, const emu_hub_options *opt, emu_hub **out,
                iotgw_diag *diag);
/* Close every connection and listener; waiting method calls end without their done. */
void emu_hub_free(emu_hub *hub);

/* ------------------------------------------------------------------ what it is */

/* The listeners' ports; 0: no such listener. */
int emu_hub_wss_port(const emu_hub *hub);
int emu_hub_amqps_port(const emu_hub *hub);
int emu_hub_mqtts_port(const emu_hub *hub);
const char *emu_hub_hostname(const emu_hub *hub);
/* Started with --admin: /admin is served. */
int emu_hub_admin_enabled(const emu_hub *hub);
/* The telemetry stream: its Event Hub-compatible name ("iothub-ehub-{hub}-emulator"),
 * its partitions, and the messages it retains now over all of them. */
const char *emu_hub_event_hub(const emu_hub *hub);
int emu_hub_partitions(const emu_hub *hub);
size_t emu_hub_stream_retained(const emu_hub *hub);
emu_registry *emu_hub_registry(emu_hub *hub);
/* The counters, for GET /metrics; the REST layer raises its own. */
emu_metrics *emu_hub_metrics(emu_hub *hub);
/* Fault injection, for /admin and the REST layer's limit. */
emu_faults *emu_hub_faults(emu_hub *hub);

/* The hub's clocks: seconds and milliseconds since the epoch. */
uint64_t emu_now_s(void);
int64_t emu_wall_ms(void);

/* ------------------------------------------------------------------ identities */

/* What the hub knows of an identity while it runs (nothing of it is saved). */
typedef struct emu_identity_activity {
    int connected;            /* it has links attached (IoT Hub's connectionState Connected) */
    int64_t last_activity_ms; /* wall clock; 0: nothing since the hub started */
    uint64_t telemetry_in;    /* device-to-cloud messages accepted, each of a batch */
} emu_identity_activity;

emu_identity_activity emu_hub_identity_activity(const emu_hub *hub, const emu_identity *id);
/* End the identity's sessions on every connection: its links detach with the condition,
 * and it needs a new token. */
void emu_hub_identity_disconnect(emu_hub *hub, emu_identity *id, const char *cond_name,
                                 const char *description);
/* The identity is about to be removed from the registry: its sessions end
 * (amqp:not-found), its waiting method calls end with DeviceNotFound, its C2D queue is
 * dropped, and the hub forgets it. Call it before emu_registry_remove. */
void emu_hub_identity_forget(emu_hub *hub, emu_identity *id);
/* Close every AMQP connection now; returns how many. */
int emu_hub_drop_connections(emu_hub *hub, const char *cond_name, const char *description);

/* ------------------------------------------------------------------ direct methods */

#define EMU_METHOD_MAX_PAYLOAD (128 * 1024)

typedef struct emu_method_call emu_method_call;
typedef void (*emu_method_done_fn)(void *ctx, int status, const uint8_t *payload, size_t len,
                                   const char *error_code, const char *message);
/* Invoke a direct method. done is called exactly once, from a later turn of the loop,
 * with the device's status and payload, or with error_code DeviceNotOnline,
 * GatewayTimeout, DeviceNotFound (the identity was deleted), MessageTooLarge,
 * InjectedFailure or ServerError. Returns a handle for cancel; NULL only when there was
 * no memory for the call, and then done was called already, with ServerError. */
emu_method_call *emu_method_invoke(emu_hub *hub, emu_identity *id, const char *name, const uint8_t *payload,
                                   size_t len, int response_timeout_s, int connect_timeout_s,
                                   emu_method_done_fn done, void *ctx);
/* The caller is gone: done will not be called. */
void emu_method_cancel(emu_method_call *call);

/* ------------------------------------------------------------------ twins */

#define EMU_TWIN_MAX_PROPERTIES (32 * 1024) /* desired and reported, each */
#define EMU_TWIN_MAX_TAGS       (8 * 1024)
/* Apply a JSON merge patch (RFC 7396; $version and $metadata ignored) to *props, from
 * empty when replace, within max_bytes and IoT Hub's depth of 10. 0, or an HTTP-like
 * status (400, 413, 500) with *error saying why; *props is unchanged then. */
int emu_twin_apply(json_t **props, json_t *patch, int replace, size_t max_bytes, const char **error);
/* Desired properties changed: push the patch to a subscribed device. */
void emu_twin_notify_desired(emu_hub *hub, emu_identity *id, json_t *patch);
/* The service's update of a twin, as PATCH (PUT when replace) of /twins/{id} makes it:
 * body's tags and properties.desired (each optional, JSON objects) merged into the
 * identity's (replacing them when replace), both checked before either is applied, and a
 * desired change pushed to the device. 0, or 400, 413, 500 with *error saying why. */
int emu_twin_service_update(emu_hub *hub, emu_identity *id, json_t *body, int replace, const char **error);
/* The twin as the service API shows it (new reference). */
json_t *emu_twin_json(const emu_hub *hub, const emu_identity *id);

/* ------------------------------------------------------------------ jobs (jobs.c) */

/* IoT Hub's jobs (v2): a twin update or a direct method over the devices whose twins a
 * query condition selects, run by the hub at the job's start time. At most EMU_JOBS_MAX
 * are kept; a new one takes the place of the oldest finished one. */
#define EMU_JOBS_MAX               100
#define EMU_JOB_METHODS_IN_FLIGHT  100  /* a method job's calls waiting for devices at once */
#define EMU_JOB_MAX_EXECUTION_DEFAULT 3600 /* seconds, when the request gives none */

typedef struct emu_job emu_job;

typedef struct emu_job_spec {
    const char *id;        /* checked by the caller (IoT Hub's characters, at most 128) */
    const char *condition; /* the WHERE clause over device twins */
    int64_t start_ms;      /* wall clock; a start in the past runs at once */
    int64_t max_execution_s;
    json_t *update_twin; /* a twin update job: the patch (tags, properties.desired); else NULL */
    const char *method;  /* a method job: its name, payload (JSON text) and timeouts */
    const char *payload;
    int response_timeout_s, connect_timeout_s;
} emu_job_spec;

enum { EMU_JOB_INVALID = -1, EMU_JOB_EXISTS = -2, EMU_JOB_FULL = -3, EMU_JOB_NOMEM = -4 };
/* Schedule a job (spec's strings are copied, update_twin's reference taken): 0 and *out,
 * or EMU_JOB_INVALID (the condition does not parse, why says where), EMU_JOB_EXISTS,
 * EMU_JOB_FULL (EMU_JOBS_MAX jobs kept, none finished) or EMU_JOB_NOMEM. */
int emu_job_schedule(emu_hub *hub, const emu_job_spec *spec, emu_job **out, char *why, size_t len);
emu_job *emu_job_find(emu_hub *hub, const char *id);
/* Stop a job that has not finished: cancelled (a finished job stays as it is). */
void emu_job_cancel(emu_job *job);
/* The job as IoT Hub's JobResponse (new reference). */
json_t *emu_job_json(const emu_job *job);
/* The jobs of type and status (NULL: any), oldest first, as JobResponses (new array). */
json_t *emu_jobs_list(emu_hub *hub, const char *type, const char *status);

/* ------------------------------------------------------------------ file upload (files.c) */

#define EMU_FILES_MAX_ACTIVE 10   /* uploads a device has begun and not yet notified, as IoT Hub */
#define EMU_FILES_SAS_TTL    3600 /* seconds: IoT Hub's default for the SAS of an upload */

/* Does the SAS token in authorization (the header's value) let device_id in as a device,
 * as IoT Hub's device-facing HTTPS endpoints check it: the device's own key (not one of its
 * modules'), or a policy with DeviceConnect? The device, or NULL with why. */
emu_identity *emu_hub_authorize_device(emu_hub *hub, const char *authorization, const char *device_id, char *why,
                                       size_t len);

typedef enum emu_files_status {
    EMU_FILES_OK = 0,
    EMU_FILES_PENDING,             /* emu_files_complete: the answer comes through done */
    EMU_FILES_NO_STORAGE,          /* no storage account configured */
    EMU_FILES_BAD_NAME,            /* a blob name that is empty, too long or holds control bytes */
    EMU_FILES_TOO_MANY,            /* EMU_FILES_MAX_ACTIVE uploads of the device not yet notified */
    EMU_FILES_UNKNOWN_CORRELATION, /* no upload of this device has that correlationId (or no more) */
    EMU_FILES_EXPIRED,             /* the upload's SAS expired before the notification */
    EMU_FILES_BLOB_REFUSED,        /* the storage answered the hub's read of the blob with an error */
    EMU_FILES_STORAGE_UNREACHABLE, /* the storage could not be reached to read it */
    EMU_FILES_SERVER_ERROR,        /* out of memory, or the hub is stopping */
} emu_files_status;

/* Begin an upload of blob_name (the device's name for it) for device: IoT Hub's answer,
 * {correlationId, hostName, containerName, blobName: "{device}/{blob_name}", sasToken}
 * (a new reference), or NULL with *status. */
json_t *emu_files_begin(emu_hub *hub, const emu_identity *device, const char *blob_name, emu_files_status *status);

typedef struct emu_files_completion emu_files_completion;
/* How a completion ended: EMU_FILES_OK (the notification is queued for the service),
 * EMU_FILES_BLOB_REFUSED, EMU_FILES_STORAGE_UNREACHABLE or EMU_FILES_SERVER_ERROR, with
 * detail in words. */
typedef void (*emu_files_done_fn)(void *ctx, emu_files_status status, const char *detail);
/* The device's notification of the upload correlation_id: success as it says (its status
 * code and description only logged). A failed upload, or an unknown or expired
 * correlationId, is answered at once (EMU_FILES_OK, ..._UNKNOWN_CORRELATION, ..._EXPIRED);
 * a successful one needs the blob's size and time from the storage: EMU_FILES_PENDING,
 * *pending set, and done called exactly once from a later turn of the loop unless
 * emu_files_cancel is called first. Any notification ends the upload: its correlationId is
 * unknown afterwards. */
emu_files_status emu_files_complete(emu_hub *hub, const emu_identity *device, const char *correlation_id,
                                    int success, int status_code, const char *description,
                                    emu_files_done_fn done, void *ctx, emu_files_completion **pending);
/* The caller is gone: done will not be called (the notification still goes when the
 * blob is read). */
void emu_files_cancel(emu_files_completion *c);

#endif
