/*
 * IoT Hub's MQTT device protocol above the packets (codecs/mqtt.h): the CONNECT user
 * name, the topics a device publishes to and subscribes to, the topics the hub publishes
 * on, and the property bags (URL-encoded "name=value&..." lists) in telemetry and C2D
 * topics. Shared by every side that serves or speaks it (the emulator, the gateway's
 * SDK-device listener, load tools). The reference is IoT Hub's "Communicate with an IoT
 * hub using the MQTT protocol".
 *
 * Parsing is strict where IoT Hub is (a topic it does not serve is IOTGW_ERR_MQTT_TOPIC
 * with words saying which), and takes what the official SDKs send: a user name with or
 * without "?" before its query, a telemetry topic with or without a property bag or its
 * trailing '/', request ids of any printable text.
 *
 * Ownership: parsed views point into the caller's bytes; a property bag is decoded into
 * storage the caller frees with iotgw_mqtt_props_free(). Formatting returns malloc'd,
 * NUL-terminated strings (NULL: out of memory or a value MQTT cannot carry).
 * Threading: pure and reentrant.
 */
#ifndef IOTGW_CODECS_IOTHUB_MQTT_H
#define IOTGW_CODECS_IOTHUB_MQTT_H

#include <stddef.h>
#include <stdint.h>

#include "codecs/error.h"
#include "codecs/mqtt.h"

/* Properties in one bag: more is IOTGW_ERR_MQTT_TOPIC (IoT Hub allows 81 application
 * properties on a message; with system properties, 100 covers it). */
#define IOTGW_MQTT_MAX_PROPS 100

/* ------------------------------------------------------------------ user name */

/* "{host}/{device}/?api-version=2021-04-12&DeviceClientType=..." or, for a module,
 * "{host}/{device}/{module}/?...". The query may be empty or absent; "/?" may be "/"
 * (then a segment with an '=' in it is the query, not a module id). */
typedef struct iotgw_iothub_username {
    iotgw_mqtt_bytes host, device, module; /* module.len 0: a device */
    iotgw_mqtt_bytes api_version;          /* the api-version value, or len 0 */
    iotgw_mqtt_bytes model_id;             /* the model-id value (PnP), or len 0 */
    iotgw_mqtt_bytes query;                /* all of the query, raw */
} iotgw_iothub_username;

/* IOTGW_ERR_MQTT_TOPIC when it has no host and device part ("which part is missing"). */
int iotgw_iothub_username_parse(const uint8_t *name, size_t len, iotgw_iothub_username *out,
                                iotgw_diag *diag);

/* ------------------------------------------------------------------ property bags */

typedef struct iotgw_mqtt_prop {
    const char *name;  /* decoded, NUL-terminated */
    const char *value; /* decoded; "" for "name=" and for a bare "name" */
} iotgw_mqtt_prop;

typedef struct iotgw_mqtt_props {
    size_t count;
    iotgw_mqtt_prop item[IOTGW_MQTT_MAX_PROPS];
    char *storage; /* what the items point into */
} iotgw_mqtt_props;

/* Decode "a=1&%24.ct=application%2Fjson" (the bag without the topic before it). An
 * empty bag gives count 0. Errors: IOTGW_ERR_MQTT_TOPIC (a bad %XX, an encoded NUL, an
 * empty name, too many); IOTGW_ERR_NOMEM. On error *out holds nothing to free. */
int iotgw_mqtt_props_parse(const uint8_t *bag, size_t len, iotgw_mqtt_props *out, iotgw_diag *diag);
void iotgw_mqtt_props_free(iotgw_mqtt_props *p);
/* The value of name, or NULL. */
const char *iotgw_mqtt_props_get(const iotgw_mqtt_props *p, const char *name);
/* Encode items as a bag, "name=value" joined with '&', names and values percent-encoded as
 * encodeURIComponent does (a NULL value as ""). NULL: out of memory, an item with an empty
 * or NULL name (it would not parse back), or a bag longer than a topic can be. */
char *iotgw_mqtt_props_format(const iotgw_mqtt_prop *items, size_t n);

/* ------------------------------------------------------------------ what a device publishes */

typedef enum iotgw_iothub_publish_kind {
    IOTGW_IOTHUB_TELEMETRY = 1,   /* devices/{d}[/modules/{m}]/messages/events[/{bag}][/] */
    IOTGW_IOTHUB_METHOD_RESPONSE, /* $iothub/methods/res/{status}/?$rid={rid} */
    IOTGW_IOTHUB_TWIN_GET,        /* $iothub/twin/GET/?$rid={rid} */
    IOTGW_IOTHUB_TWIN_REPORTED,   /* $iothub/twin/PATCH/properties/reported/?$rid={rid}[&$version={v}] */
} iotgw_iothub_publish_kind;

typedef struct iotgw_iothub_publish_topic {
    iotgw_iothub_publish_kind kind;
    iotgw_mqtt_bytes device, module; /* telemetry: as the topic names them (module.len 0: none) */
    iotgw_mqtt_bytes bag;            /* telemetry: the property bag, raw (len 0: none) */
    int status;                      /* method response: 100..999 */
    iotgw_mqtt_bytes rid;            /* method response, twin: the request id, raw (never empty);
                                      * a reported patch's trailing &$version={n} is checked (digits)
                                      * and left out of it */
} iotgw_iothub_publish_topic;

/* IOTGW_ERR_MQTT_TOPIC for any other topic, with words naming what is wrong. The caller
 * checks that device and module are the connection's own. */
int iotgw_iothub_publish_topic_parse(const uint8_t *topic, size_t len, iotgw_iothub_publish_topic *out,
                                     iotgw_diag *diag);

/* ------------------------------------------------------------------ what a device subscribes to */

typedef enum iotgw_iothub_filter_kind {
    IOTGW_IOTHUB_SUB_C2D = 1,        /* devices/{d}/messages/devicebound/# (or .../devicebound/) */
    IOTGW_IOTHUB_SUB_METHODS,        /* $iothub/methods/POST/# (only; as every SDK sends it) */
    IOTGW_IOTHUB_SUB_TWIN_RESPONSES, /* $iothub/twin/res/# */
    IOTGW_IOTHUB_SUB_TWIN_DESIRED,   /* $iothub/twin/PATCH/properties/desired/# */
} iotgw_iothub_filter_kind;

/* device: the {d} of a C2D filter (else len 0); IOTGW_ERR_MQTT_TOPIC for another filter. */
int iotgw_iothub_filter_parse(const uint8_t *filter, size_t len, iotgw_iothub_filter_kind *kind,
                              iotgw_mqtt_bytes *device, iotgw_diag *diag);

/* ------------------------------------------------------------------ what the hub publishes */

/* The ids, names and rids below are placed raw. Each returns NULL for an empty device, name
 * or rid, a topic with '+' or '#' (IoT Hub allows them in ids; a topic name cannot hold
 * them) or one over 65,535 bytes. */

/* devices/{device}/messages/devicebound/{bag} (bag may be NULL or ""). */
char *iotgw_iothub_c2d_topic(const char *device, const char *bag);
/* $iothub/methods/POST/{name}/?$rid={rid} */
char *iotgw_iothub_method_topic(const char *name, const char *rid);
/* $iothub/twin/res/{status}/?$rid={rid}, with &$version={version} when version >= 0 */
char *iotgw_iothub_twin_response_topic(int status, const char *rid, int64_t version);
/* $iothub/twin/PATCH/properties/desired/?$version={version} */
char *iotgw_iothub_desired_topic(int64_t version);

#endif
