/*
 * The gateway's configuration file (YAML), read and checked whole: hub settings, the
 * device listener, limits, telemetry encoding, per-method transcoding, and the fleet.
 * docs/configuration.md is the reference; every error names the file, the line and the
 * key, e.g. "iotgw.yaml:14: fleet.devices[2].key: not base64".
 *
 * With store.path the gateway keeps what it acknowledged on disk until the hub has it
 * (docs/store.md).
 *
 * Keys may be written inline (key), read from a file (keyFile, relative to the config
 * file's directory) or from an environment variable (keyEnv). The fleet may also come
 * from a devices file ("ID KEY" per line, for thousands of devices), and a DeviceConnect
 * policy may sign every device's hub tokens instead of the devices' own keys. With
 * fleet.shard the fleet is split over several gateways and this one keeps only its
 * shard's devices (codecs/shard.h).
 *
 * Ownership: iotgw_config_load returns a config the caller frees with
 * iotgw_config_free; every string in it belongs to it.
 * Threading: reentrant. Errors: IOTGW_ERR_CONFIG or IOTGW_ERR_IO with the message in the
 * diag (which never contains a key).
 */
#ifndef IOTGW_GATEWAY_CONFIG_H
#define IOTGW_GATEWAY_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "codecs/error.h"
#include "codecs/hubmsg.h"
#include "transport/transport.h"

typedef struct iotgw_config_device {
    char *id;
    char *key; /* base64; NULL: the device authenticates by client certificate only */
    int disabled;
} iotgw_config_device;

/* A direct method whose JSON payloads the gateway turns into protobuf for the device
 * (and back). A NULL type leaves that direction JSON. */
typedef struct iotgw_config_method {
    char *name;
    char *request_type; /* e.g. "iotgw.Parcel" */
    char *response_type;
} iotgw_config_method;

typedef struct iotgw_config_listen {
    char *address;
    int port;
} iotgw_config_listen;

typedef struct iotgw_config {
    char *file;
    char *gateway_id;

    /* hub */
    char *hub_host, *hub_connect_host, *hub_ca_file, *hub_proxy;
    iotgw_transport_kind hub_transport;
    int hub_port; /* 0: the transport's default */
    unsigned token_lifetime_s, devices_per_connection;
    double auth_rate;
    int tls_insecure;

    /* devices */
    iotgw_config_listen *listen;
    size_t nlisten;
    unsigned hello_timeout_ms, max_frame_size, max_in_flight, keepalive_s, device_queue;
    uint64_t queue_total_bytes;  /* devices.queueTotalBytes: telemetry held for all devices together */
    unsigned delivery_timeout_s; /* devices.deliveryTimeoutSeconds: NACK_TIMEOUT for telemetry without an
                                    outcome by then */
    char *tls_cert, *tls_key, *tls_client_ca; /* devices.tls: TLS on the listeners; client certificates */
    iotgw_config_listen *mqtt_listen;         /* devices.mqtt.listen: IoT Hub's MQTT over TLS (SDK devices) */
    size_t nmqtt_listen;
    iotgw_config_listen *amqp_listen;         /* devices.amqp.listen: IoT Hub's AMQP over TLS (SDK devices) */
    size_t namqp_listen;
    /* devices.webSocketListen (or devices.mqtt.webSocketListen): MQTT and AMQP over WebSocket,
     * the subprotocol choosing, as IoT Hub serves them on 443; address NULL: off */
    iotgw_config_listen ws_listen;

    /* ops: the operations endpoint (metrics, health, readiness, the device view) */
    iotgw_config_listen ops_listen; /* address NULL: off ("ops.listen: off") */
    char *ops_token;                /* bearer token /devices needs; NULL: none (loopback only) */
    int log_json;                   /* log.format: json */

    /* store: durable store-and-forward (gateway/store.h); store_path NULL: none */
    char *store_path; /* made absolute against the file's folder */
    uint64_t store_max_bytes, store_segment_bytes;
    unsigned store_ttl_s, store_commit_ms;
    int store_on_full, store_sync; /* iotgw_store_on_full, iotgw_store_sync */

    iotgw_hubmsg_encoding encoding;
    iotgw_config_method *methods;
    size_t nmethods;
    iotgw_config_device *devices; /* fleet.devices and fleet.devicesFile, sorted by id */
    size_t ndevices;
    char *policy_name, *policy_key; /* fleet.deviceConnectPolicy; NULL: each device's own key */

    /* fleet.shard: the fleet is split over shard_count gateways and this one serves the
     * devices whose home (codecs/shard.h) is shard_index: devices holds only those. The
     * ids of the others stay (without their keys), so that one of them that connects
     * here is told where it belongs. Without fleet.shard: 1 and 0, every device. */
    unsigned shard_count, shard_index;
    int shard_given;   /* fleet.shard is in the file */
    char *shard_from;  /* "POD_NAME=iotgw-1" when the index came from a pod name; else NULL */
    size_t fleet_size; /* the whole fleet's devices, every shard's */
    char **elsewhere;  /* ids of the fleet's devices that other shards serve, sorted */
    size_t nelsewhere;
} iotgw_config;

int iotgw_config_load(const char *file, iotgw_config **out, iotgw_diag *diag);
void iotgw_config_free(iotgw_config *c);
const iotgw_config_device *iotgw_config_device_find(const iotgw_config *c, const char *id);
const iotgw_config_method *iotgw_config_method_find(const iotgw_config *c, const char *name);
/* The home shard of a device of the fleet that another gateway serves (fleet.shard), or
 * -1 when id is not one (it is this gateway's, or in no shard of the fleet). */
int iotgw_config_device_elsewhere(const iotgw_config *c, const char *id);
/* The key and policy name that sign a device's hub tokens: the fleet's DeviceConnect
 * policy when there is one, else the device's own key (policy name NULL). */
void iotgw_config_hub_credential(const iotgw_config *c, const iotgw_config_device *d, const char **key,
                                 const char **policy_name);

#endif
