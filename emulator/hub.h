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
/* The twin as the service API shows it (new reference). */
json_t *emu_twin_json(const emu_hub *hub, const emu_identity *id);

#endif
