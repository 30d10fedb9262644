/*
 * The service REST API on the HTTPS listener (shared/docs/iothub-amqp-protocol.md 7.2):
 * direct method invocation, twins, the identity registry (devices, modules, bulk, queries,
 * statistics), jobs. Requests carry a service SAS token in
 * Authorization; errors have IoT Hub's shape: status, header iothub-errorcode and a JSON
 * body whose Message holds {"errorCode": n, ...} as text. Also the emulator's own routes,
 * which IoT Hub does not have: /metrics (metrics_rest.c) and /admin (admin_rest.c).
 *
 * Threading: event-loop thread only.
 */
#ifndef IOTGW_EMULATOR_REST_H
#define IOTGW_EMULATOR_REST_H

#include "emulator/hub.h"

/* The listener's on_http callback; ctx is the emu_hub. */
void emu_rest_on_request(iotgw_http_request *req, void *ctx);

/* Shared by rest.c (methods, twins, routing) and registry_rest.c (devices). */
typedef struct emu_rest_error {
    int http;
    int code;
    const char *name;
} emu_rest_error;

extern const emu_rest_error E_UNAUTHORIZED, E_NOT_FOUND, E_ROUTE, E_BAD_ARGUMENT, E_PRECONDITION,
    E_NOT_ONLINE, E_TIMEOUT, E_TOO_LARGE, E_SERVER, E_METHOD, E_CONFLICT, E_MEDIA_TYPE, E_THROTTLED;

/* Answer, counted in the hub's metrics by status class: every answer of the REST API
 * goes through here (the metrics route's own 200s do not, so a scrape does not count
 * itself). */
void emu_rest_answer(emu_hub *hub, iotgw_http_request *req, int status, const char *content_type,
                     const char *extra, const void *body, size_t len);
/* Answer with a JSON body (the reference is taken) and optional extra header lines. */
void emu_rest_json(emu_hub *hub, iotgw_http_request *req, int status, json_t *body, const char *extra);
/* Answer with IoT Hub's error shape, and log it. */
void emu_rest_fail(emu_hub *hub, iotgw_http_request *req, const emu_rest_error *e, const char *message);
/* A service token for this hub with one of the rights in need; 0, or -1 with why. */
int emu_rest_authorize(emu_hub *hub, iotgw_http_request *req, unsigned need, char *why, size_t len);
/* Device and module (NULL: none) ids from a path are IoT Hub's; else answered 400
 * ArgumentInvalid and 0. */
int emu_rest_ids_valid(emu_hub *hub, iotgw_http_request *req, const char *device, const char *module);
/* Does If-Match (absent or "*" matches anything) match etag? */
int emu_rest_etag_matches(iotgw_http_request *req, const char *etag);
/* Is the client's address a loopback one (the emulator's own routes trust those)? */
int emu_rest_loopback(const char *peer);
/* A direct method's request (IoT Hub's CloudToDeviceMethod: methodName, payload,
 * responseTimeoutInSeconds, connectTimeoutInSeconds, in the JSON object j) checked as
 * POST /twins/{id}/methods checks it: NULL with *name (j's), *payload the payload as JSON
 * text (malloc'd, the caller's) and the timeouts (defaults 30 and 0), or the error to
 * answer with and why in msg (*payload NULL). */
const emu_rest_error *emu_rest_method_request(json_t *j, const char **name, char **payload,
                                              int *response_timeout, int *connect_timeout, char *msg,
                                              size_t len);

/* admin_rest.c: fault injection under /admin (with --admin, loopback clients only) */
void emu_rest_admin(emu_hub *hub, iotgw_http_request *req, const char *method, char **seg, int n);

/* metrics_rest.c: GET /metrics, Prometheus text (loopback clients, or a service token) */
void emu_rest_metrics(emu_hub *hub, iotgw_http_request *req, const char *method);

/* registry_rest.c: PUT/GET/DELETE /devices/{id} and /devices/{id}/modules/{mid}, GET
 * /devices and /devices/{id}/modules, POST /devices (bulk); POST /devices/query goes to
 * emu_rest_query. */
void emu_rest_devices(emu_hub *hub, iotgw_http_request *req, const char *method, char **seg, int n);
/* registry_rest.c: GET /statistics/devices and /statistics/service */
void emu_rest_statistics(emu_hub *hub, iotgw_http_request *req, const char *method, char **seg, int n);
/* registry_rest.c: the twin of a device or module as IoT Hub's queries show it: the
 * service API's twin with the identity's own fields (deviceEtag, lastActivityTime,
 * authenticationType, ...); a new reference. */
json_t *emu_rest_twin_document(emu_hub *hub, const emu_identity *id);

/* query_rest.c: POST /devices/query, authorized by the caller (RegistryRead) */
void emu_rest_query(emu_hub *hub, iotgw_http_request *req);

/* files_rest.c: the device side's file upload, POST /devices/{id}/files and
 * /devices/{id}/files/notifications[/{correlationId}], authorized by a device's token
 * (seg[2] "files"; or "modules", refused: modules do not upload files) */
void emu_rest_files(emu_hub *hub, iotgw_http_request *req, const char *method, char **seg, int n);

/* jobs_rest.c: PUT/GET /jobs/v2/{id}, POST /jobs/v2/{id}/cancel, GET /jobs/v2/query */
void emu_rest_jobs(emu_hub *hub, iotgw_http_request *req, const char *method, char **seg, int n);

#endif
