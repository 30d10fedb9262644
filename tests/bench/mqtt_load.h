/*
 * MQTT devices for load: one TLS connection per device (OpenSSL, non-blocking sockets,
 * poll), CONNECT with the device's SAS token as IoT Hub's MQTT wants it, then telemetry
 * PUBLISHes pipelined up to a window of unacknowledged QoS 1 messages per connection,
 * PUBACKs counted and timed. One thread drives every connection (mqtt_fleet_pump).
 * Shared by bench_emulator_mqtt (the emulator in-process) and mqtt-load (any endpoint
 * speaking IoT Hub's MQTT: the emulator's, the gateway's devices.mqtt).
 *
 * Ownership: the fleet copies nothing but what it says; ids and tokens stay the caller's
 * until mqtt_fleet_free. Threading: one thread per fleet. Errors: counted per connection
 * (failed, first_failure); functions return 0 or -1 (the deadline passed).
 */
#ifndef IOTGW_TESTS_BENCH_MQTT_LOAD_H
#define IOTGW_TESTS_BENCH_MQTT_LOAD_H

#include <stddef.h>
#include <stdint.h>

typedef struct mqtt_fleet_options {
    int port;             /* on 127.0.0.1 */
    const char *tls_name; /* the name the server's certificate must have; NULL: "localhost" */
    const char *ca_file;  /* PEM */
    const char *hub_host; /* in each user name; NULL: "localhost" */
    int devices;
    char *const *ids;    /* devices of them */
    char *const *tokens; /* their SAS tokens */
    int window;          /* QoS 1 PUBLISHes unacknowledged per connection, at most 65535 */
    const char *payload; /* NULL: a 66-byte JSON reading */
} mqtt_fleet_options;

typedef struct mqtt_fleet mqtt_fleet;

/* Latencies of acknowledged QoS 1 messages, PUBLISH written to PUBACK read. */
typedef struct mqtt_latency {
    uint64_t count;
    uint32_t *buckets; /* 10 us each, up to 60 s (the last one holds the rest) */
} mqtt_latency;

mqtt_fleet *mqtt_fleet_new(const mqtt_fleet_options *o);
/* Open every connection and wait for its CONNACK; 0, or -1 at the deadline (now_s()). */
int mqtt_fleet_connect(mqtt_fleet *f, double until);
/* Give the connections total messages at qos, shared evenly (QoS 0 ends with one QoS 1
 * fence per connection), and send until all are acknowledged; 0, or -1 at the deadline.
 * total 0: send without end until the deadline (then 0). */
int mqtt_fleet_send(mqtt_fleet *f, int qos, uint64_t total, double until);
/* DISCONNECT each, wait (until the deadline) for it to leave. */
void mqtt_fleet_disconnect(mqtt_fleet *f, double until);
void mqtt_fleet_free(mqtt_fleet *f);

int mqtt_fleet_connected(const mqtt_fleet *f);
int mqtt_fleet_failed(const mqtt_fleet *f);
/* The first failure's words ("" if none). */
const char *mqtt_fleet_first_failure(const mqtt_fleet *f);
/* Messages acknowledged in all (QoS 1 PUBACKs; QoS 0 messages once their fence is). */
uint64_t mqtt_fleet_acked(const mqtt_fleet *f);
/* Messages given to connections that were online when the last send began. */
uint64_t mqtt_fleet_assigned(const mqtt_fleet *f);
const mqtt_latency *mqtt_fleet_latency(const mqtt_fleet *f);
/* The latency below which a fraction q (0..1) of the acknowledged messages fell, in ms. */
double mqtt_latency_quantile_ms(const mqtt_latency *l, double q);
size_t mqtt_fleet_payload_len(const mqtt_fleet *f);

#endif
