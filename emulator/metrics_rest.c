/* GET /metrics on the HTTPS listener: what the emulator received and did, as Prometheus
 * text (codecs/prom.h), so that a test or a dashboard can set the hub's side against a
 * client's (the gateway's own /metrics). IoT Hub has no such route; it is the emulator's.
 *
 * Who may read it: loopback clients without a token, as the admin API; any other client
 * with a service SAS token in Authorization (a policy with ServiceConnect or
 * RegistryRead), because the per-device series name the registry's devices, which the
 * registry API shows only with such a token. A scrape is never throttled by the admin
 * REST limit, and its answer is not counted in iothub_emulator_rest_requests_total, so
 * that reading the figures does not change them.
 *
 * The counters are the hub's (emu_metrics) and each identity's (emu_live), raised where
 * things happen; here they are only read. The per-device label set is the registry's
 * identities: a client cannot add a series by naming a device that does not exist. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/prom.h"
#include "emulator/rest.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

/* A family with one label over a fixed list of values. */
static void by(iotgw_prom *w, const char *name, const char *type, const char *help, const char *label,
               const char *const *values, const uint64_t *counts, int n)
{
    iotgw_prom_family(w, name, type, help);
    for (int i = 0; i < n; i++)
        iotgw_prom_value(w, name, label, values[i], (double)counts[i]);
}

static void render_d2c(emu_hub *hub, iotgw_prom *w)
{
    const emu_metrics *m = emu_hub_metrics(hub);
    iotgw_prom_counter(
        w, "iothub_emulator_d2c_messages_total",
        "device-to-cloud messages accepted (stored in the telemetry stream), each message of a batch",
        (double)m->d2c_messages);
    const char *name = "iothub_emulator_device_d2c_messages_total";
    iotgw_prom_family(w, name, "counter",
                      "device-to-cloud messages accepted, per registered device (and module)");
    emu_registry *r = emu_hub_registry(hub);
    for (int i = 0; i < emu_registry_count(r); i++) {
        const emu_identity *id = emu_registry_at(r, i);
        iotgw_prom_label l[2] = {{"device", id->device_id}, {"module", id->module_id}};
        iotgw_prom_sample(w, name, l, id->module_id ? 2 : 1,
                          (double)emu_hub_identity_activity(hub, id).telemetry_in);
    }
    static const char *const reasons[] = {"too_large", "undecodable", "throttled"};
    by(w, "iothub_emulator_d2c_rejected_total", "counter",
       "device-to-cloud transfers rejected, by reason (a batch is one transfer)", "reason", reasons,
       m->d2c_rejected, EMU_D2C_REJECT_REASONS);
    iotgw_prom_counter(w, "iothub_emulator_stream_messages_read_total",
                       "messages sent to readers of the telemetry stream (each reader counts its own)",
                       (double)m->stream_read);
    iotgw_prom_gauge(w, "iothub_emulator_stream_messages", "messages the telemetry stream retains",
                     (double)emu_hub_stream_retained(hub));
}

static void render_cloud(emu_hub *hub, iotgw_prom *w)
{
    const emu_metrics *m = emu_hub_metrics(hub);
    static const char *const c2d[] = {"sent",     "refused",   "delivered", "completed",
                                      "rejected", "abandoned", "expired"};
    by(w, "iothub_emulator_c2d_messages_total", "counter",
       "cloud-to-device messages: sent by the service (queued) or refused, delivered to devices "
       "(each delivery), then completed, rejected, abandoned or expired",
       "event", c2d, m->c2d, EMU_C2D_EVENTS);

    const char *name = "iothub_emulator_direct_methods_total";
    iotgw_prom_family(w, name, "counter",
                      "direct method calls ended: the class of the device's status, or the hub's error "
                      "when no answer of the device reached the caller");
    static const char *const outcomes[] = {"other",
                                           "1xx",
                                           "2xx",
                                           "3xx",
                                           "4xx",
                                           "5xx",
                                           "DeviceNotOnline",
                                           "GatewayTimeout",
                                           "DeviceNotFound",
                                           "MessageTooLarge",
                                           "InjectedFailure",
                                           "ServerError"};
    for (int i = 0; i < EMU_METHOD_RESULTS; i++)
        if (m->methods[i] || i == 2 || i == 4 || i == 5 || i >= EMU_METHOD_CLASSES) /* as the gateway's */
            iotgw_prom_value(w, name, "status", outcomes[i], (double)m->methods[i]);

    name = "iothub_emulator_twin_operations_total";
    iotgw_prom_family(w, name, "counter",
                      "twin operations: the device's over AMQP (get, patch_reported, subscribe_desired, "
                      "unsubscribe_desired) and the service's over REST (service_*), by result");
    static const char *const ops[] = {"get",     "patch_reported", "subscribe_desired", "unsubscribe_desired",
                                      "unknown", "service_get",    "service_patch",     "service_replace"};
    static const char *const results[] = {"ok", "failed"};
    for (int op = 0; op < EMU_TWIN_OPS; op++)
        for (int r = 0; r < 2; r++)
            if (op != EMU_TWIN_UNKNOWN || m->twin[op][r]) {
                iotgw_prom_label l[2] = {{"operation", ops[op]}, {"result", results[r]}};
                iotgw_prom_sample(w, name, l, 2, (double)m->twin[op][r]);
            }
    iotgw_prom_counter(w, "iothub_emulator_twin_desired_pushes_total",
                       "desired-property changes pushed to subscribed devices", (double)m->desired_pushes);
}

static void render_connections(emu_hub *hub, iotgw_prom *w)
{
    const emu_metrics *m = emu_hub_metrics(hub);
    unsigned connected = 0;
    emu_registry *r = emu_hub_registry(hub);
    for (int i = 0; i < emu_registry_count(r); i++)
        connected += (unsigned)emu_hub_identity_activity(hub, emu_registry_at(r, i)).connected;
    iotgw_prom_gauge(w, "iothub_emulator_identities_connected",
                     "devices and modules with links attached (IoT Hub's Connected)", connected);
    static const char *const listeners[] = {"wss", "amqps"};
    by(w, "iothub_emulator_amqp_connections", "gauge", "AMQP connections open, by listener", "listener",
       listeners, m->conns_open, EMU_LISTENERS);
    by(w, "iothub_emulator_amqp_connections_accepted_total", "counter",
       "AMQP connections accepted, by listener", "listener", listeners, m->conns_accepted, EMU_LISTENERS);
    iotgw_prom_counter(w, "iothub_emulator_amqp_connections_refused_total",
                       "connections closed at once while refuse-connections (fault injection) was set",
                       (double)m->conns_refused);
    static const char *const statuses[] = {"200", "400", "401", "404", "500"};
    by(w, "iothub_emulator_cbs_put_tokens_total", "counter",
       "CBS put-token requests by the status answered (200: accepted)", "status", statuses, m->put_tokens,
       EMU_CBS_STATUSES);
    static const char *const results[] = {"accepted", "refused"};
    by(w, "iothub_emulator_sasl_plain_total", "counter", "SASL PLAIN logins with a SAS token, by result",
       "result", results, m->sasl_plain, 2);
    static const char *const mqtt_listeners[] = {"mqtts", "wss"};
    by(w, "iothub_emulator_mqtt_connections", "gauge", "MQTT connections open, by listener", "listener",
       mqtt_listeners, m->mqtt_conns_open, EMU_MQTT_LISTENERS);
    by(w, "iothub_emulator_mqtt_connections_accepted_total", "counter",
       "MQTT connections accepted, by listener", "listener", mqtt_listeners, m->mqtt_conns_accepted,
       EMU_MQTT_LISTENERS);
    static const char *const codes[] = {"0", "1", "2", "3", "4", "5"};
    by(w, "iothub_emulator_mqtt_connacks_total", "counter",
       "MQTT CONNACKs sent, by return code (0: accepted, 5: not authorized, 3: unavailable)", "code", codes,
       m->mqtt_connack, EMU_MQTT_CONNACK_CODES);
}

static void render_rest(emu_hub *hub, iotgw_prom *w)
{
    const emu_metrics *m = emu_hub_metrics(hub);
    const char *name = "iothub_emulator_rest_requests_total";
    iotgw_prom_family(
        w, name, "counter",
        "REST requests answered (service API, registry, admin; not these scrapes), by status class");
    static const char *const classes[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 0; i < 6; i++)
        if (m->rest[i] || i == 2 || i == 4 || i == 5)
            iotgw_prom_value(w, name, "status", classes[i], (double)m->rest[i]);
    name = "iothub_emulator_throttled_total";
    iotgw_prom_family(w, name, "counter",
                      "refusals for a rate limit (--d2c-limit, admin throttle): telemetry transfers "
                      "rejected as throttled, REST requests answered 429");
    iotgw_prom_value(w, name, "kind", "d2c", (double)m->d2c_rejected[EMU_D2C_THROTTLED]);
    iotgw_prom_value(w, name, "kind", "rest", (double)m->throttled_rest);
}

void emu_rest_metrics(emu_hub *hub, iotgw_http_request *req, const char *method)
{
    char why[300];
    if (strcmp(method, "GET")) {
        emu_rest_fail(hub, req, &E_METHOD, "/metrics takes GET");
        return;
    }
    if (!emu_rest_loopback(iotgw_http_peer(req)) &&
        emu_rest_authorize(hub, req, EMU_RIGHT_SERVICE_CONNECT | EMU_RIGHT_REGISTRY_READ, why, sizeof why)) {
        char text[400];
        snprintf(text, sizeof text, "/metrics needs a service token from a non-loopback client: %s", why);
        emu_rest_fail(hub, req, &E_UNAUTHORIZED, text);
        return;
    }
    iotgw_prom w = {0};
    iotgw_prom_family(&w, "iothub_emulator_build_info", "gauge", "the emulator's version");
    iotgw_prom_value(&w, "iothub_emulator_build_info", "version", PACKAGE_VERSION, 1);
    render_d2c(hub, &w);
    render_cloud(hub, &w);
    render_connections(hub, &w);
    render_rest(hub, &w);
    size_t len = 0;
    char *text = iotgw_prom_take(&w, &len);
    if (text)
        iotgw_http_respond(req, 200, IOTGW_PROM_CONTENT_TYPE, NULL, text, len);
    else
        emu_rest_fail(hub, req, &E_SERVER, "out of memory");
    free(text);
}
