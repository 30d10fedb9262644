/* File upload's device-facing REST (IoT Hub's "Create File Upload Sas Uri" and "Update File
 * Upload Status"), on the HTTPS listener beside the service API, authorized as IoT Hub
 * authorizes a device: its SAS token in Authorization (files.c has the rest).
 *
 *   POST /devices/{id}/files                          {blobName} -> 200 {correlationId,
 *                                                     hostName, containerName, blobName, sasToken}
 *   POST /devices/{id}/files/notifications            {correlationId, isSuccess, statusCode,
 *                                                     statusDescription} -> 204
 *   POST /devices/{id}/files/notifications/{cid}      the same without correlationId (the Node
 *                                                     device SDK's form)
 *
 * A module has no files resource: /devices/{id}/modules/{mid}/files is answered 404. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emulator/rest.h"
#include "transport/log.h"

static const emu_rest_error E_NO_STORAGE = {400, 400014, "DefaultStorageEndpointNotConfigured"};
static const emu_rest_error E_BAD_CORRELATION = {400, 400015, "InvalidFileUploadCorrelationId"};
static const emu_rest_error E_EXPIRED_CORRELATION = {400, 400016, "ExpiredFileUploadCorrelationId"};
static const emu_rest_error E_BAD_COMPLETION = {400, 400019, "InvalidFileUploadCompletionStatus"};
static const emu_rest_error E_BLOB_REFUSED = {400, 400020, "InvalidStorageEndpointOrBlob"};
static const emu_rest_error E_TOO_MANY_UPLOADS = {403, 403006, "DeviceMaximumActiveFileUploadLimitExceeded"};

static void fail_status(emu_hub *hub, iotgw_http_request *req, emu_files_status status, const char *detail)
{
    switch (status) {
    case EMU_FILES_NO_STORAGE:
        emu_rest_fail(hub, req, &E_NO_STORAGE,
                      "The default storage endpoint is not configured (the emulator was started without "
                      "--blob-endpoint)");
        break;
    case EMU_FILES_BAD_NAME:
        emu_rest_fail(
            hub, req, &E_BAD_ARGUMENT,
            "blobName must be 1 to 1024 characters with the device id and '/', no control characters");
        break;
    case EMU_FILES_TOO_MANY:
        emu_rest_fail(hub, req, &E_TOO_MANY_UPLOADS,
                      "Number of active file upload requests cannot exceed 10");
        break;
    case EMU_FILES_UNKNOWN_CORRELATION:
        emu_rest_fail(hub, req, &E_BAD_CORRELATION,
                      "The file upload correlation id is not valid for this device");
        break;
    case EMU_FILES_EXPIRED:
        emu_rest_fail(hub, req, &E_EXPIRED_CORRELATION, "The file upload correlation id has expired");
        break;
    case EMU_FILES_BLOB_REFUSED: emu_rest_fail(hub, req, &E_BLOB_REFUSED, detail); break;
    default: emu_rest_fail(hub, req, &E_SERVER, detail && *detail ? detail : "out of memory"); break;
    }
}

static void begin(emu_hub *hub, iotgw_http_request *req, const emu_identity *device, json_t *body)
{
    const char *name = json_string_value(json_object_get(body, "blobName"));
    emu_files_status status;
    json_t *answer = name ? emu_files_begin(hub, device, name, &status) : NULL;
    if (!name)
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "the body must be a JSON object with blobName, a string");
    else if (!answer)
        fail_status(hub, req, status, NULL);
    else
        emu_rest_json(hub, req, 200, answer, NULL);
}

/* A notification waiting for the hub's read of the blob. */
typedef struct rest_completion {
    emu_hub *hub;
    iotgw_http_request *req;
    emu_files_completion *pending;
} rest_completion;

static void completion_done(void *ctx, emu_files_status status, const char *detail)
{
    rest_completion *rc = ctx;
    if (status == EMU_FILES_OK)
        emu_rest_answer(rc->hub, rc->req, 204, NULL, NULL, NULL, 0);
    else
        fail_status(rc->hub, rc->req, status, detail);
    free(rc);
}

static void completion_gone(iotgw_http_request *req, void *ctx)
{
    rest_completion *rc = ctx;
    (void)req;
    emu_files_cancel(rc->pending);
    free(rc);
}

static void complete(emu_hub *hub, iotgw_http_request *req, const emu_identity *device, json_t *body,
                     const char *path_correlation_id)
{
    json_t *success = json_object_get(body, "isSuccess"), *code = json_object_get(body, "statusCode");
    json_t *description = json_object_get(body, "statusDescription");
    const char *cid =
        path_correlation_id ? path_correlation_id : json_string_value(json_object_get(body, "correlationId"));
    if (!cid || !*cid) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "correlationId must be the string the hub gave");
        return;
    }
    if (!json_is_boolean(success) || (code && !json_is_integer(code)) ||
        (description && !json_is_string(description) && !json_is_null(description))) {
        emu_rest_fail(hub, req, &E_BAD_COMPLETION,
                      "isSuccess must be a boolean, statusCode a number and statusDescription a string");
        return;
    }
    rest_completion *rc = malloc(sizeof *rc);
    if (!rc) {
        emu_rest_fail(hub, req, &E_SERVER, "out of memory");
        return;
    }
    *rc = (rest_completion){.hub = hub, .req = req};
    emu_files_status status =
        emu_files_complete(hub, device, cid, json_is_true(success), code ? (int)json_integer_value(code) : 0,
                           json_string_value(description), completion_done, rc, &rc->pending);
    if (status == EMU_FILES_PENDING) {
        iotgw_http_set_context(req, rc, completion_gone);
        return;
    }
    free(rc);
    if (status == EMU_FILES_OK)
        emu_rest_answer(hub, req, 204, NULL, NULL, NULL, 0);
    else
        fail_status(hub, req, status, NULL);
}

void emu_rest_files(emu_hub *hub, iotgw_http_request *req, const char *method, char **seg, int n)
{
    int create = n == 3, notify = (n == 4 || n == 5) && !strcmp(seg[3], "notifications");
    if (!strcmp(seg[2], "modules")) {
        emu_rest_fail(hub, req, &E_ROUTE, "no such resource: modules cannot upload files, only devices");
        return;
    }
    if (!create && !notify) {
        emu_rest_fail(hub, req, &E_ROUTE, "no such resource");
        return;
    }
    if (strcmp(method, "POST")) {
        emu_rest_fail(hub, req, &E_METHOD, "this resource does not take that HTTP method");
        return;
    }
    if (!emu_rest_ids_valid(hub, req, seg[1], NULL))
        return;
    char why[400];
    const emu_identity *device =
        emu_hub_authorize_device(hub, iotgw_http_header(req, "authorization"), seg[1], why, sizeof why);
    if (!device) { /* IoT Hub's words on the wire; the reason in the log only */
        iotgw_log(IOTGW_LOG_INFO, "REST POST file upload of %s refused: %s", seg[1], why);
        emu_rest_fail(hub, req, &E_UNAUTHORIZED, "Unauthorized");
        return;
    }
    size_t len;
    const uint8_t *text = iotgw_http_body(req, &len);
    json_t *body = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(body))
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "the body must be a JSON object");
    else if (create)
        begin(hub, req, device, body);
    else
        complete(hub, req, device, body, n == 5 ? seg[4] : NULL);
    json_decref(body);
}
