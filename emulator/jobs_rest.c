/* Jobs over REST (IoT Hub's jobs v2, as the service SDKs' JobClient sends them):
 * PUT /jobs/v2/{id} schedules a scheduleUpdateTwin or scheduleDeviceMethod job, GET
 * /jobs/v2/{id} shows it, POST /jobs/v2/{id}/cancel cancels it, GET
 * /jobs/v2/query[?jobType=..][&jobStatus=..] lists them, all in one page. The jobs, and
 * running them, are jobs.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codecs/identity.h"
#include "emulator/rest.h"

static const emu_rest_error E_JOB_NOT_FOUND = {404, 404002, "JobNotFound"};
/* the emulator's codes: IoT Hub's numbers for these are not documented */
static const emu_rest_error E_JOB_EXISTS = {409, 409000, "Conflict"};
static const emu_rest_error E_TOO_MANY_JOBS = {429, 429000, "ThrottlingMaxActiveJobCountExceeded"};

/* An ISO 8601 date and time (2024-05-01T12:00:00.000Z as Date.toISOString writes it; any
 * fraction, Z, an offset +hh:mm or none for UTC) as milliseconds since the epoch: 0, or
 * -1 if it is none. */
static int parse_time(const char *s, int64_t *ms)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (size_t i = 0; i < sizeof shape - 1; i++)
        if (shape[i] == 'd' ? s[i] < '0' || s[i] > '9' : s[i] != shape[i])
            return -1;
    struct tm tm = {0};
    tm.tm_year = atoi(s) - 1900;
    tm.tm_mon = atoi(s + 5) - 1;
    tm.tm_mday = atoi(s + 8);
    tm.tm_hour = atoi(s + 11);
    tm.tm_min = atoi(s + 14);
    tm.tm_sec = atoi(s + 17);
    if (tm.tm_mon > 11 || tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    const char *p = s + sizeof shape - 1;
    int frac = 0, digits = 0;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                frac = frac * 10 + (*p - '0');
        if (!digits)
            return -1;
        for (; digits < 3; digits++)
            frac *= 10;
    }
    int offset_min = 0;
    if ((*p == '+' || *p == '-') && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' && p[3] == ':' &&
        p[4] >= '0' && p[4] <= '9' && p[5] >= '0' && p[5] <= '9' && !p[6]) {
        offset_min = (atoi(p + 1) * 60 + atoi(p + 4)) * (*p == '-' ? -1 : 1);
        p += 6;
    } else if (*p == 'Z') {
        p++;
    }
    if (*p)
        return -1;
    *ms = ((int64_t)timegm(&tm) - (int64_t)offset_min * 60) * 1000 + frac;
    return 0;
}

/* The value of name in the request's query, copied into out; 0 if it is not there.
 * libwebsockets joins the query's parameters with ',' (its fragments), a client with '&'. */
static int query_param(iotgw_http_request *req, const char *name, char *out, size_t len)
{
    size_t n = strlen(name);
    for (const char *q = iotgw_http_query(req); *q; q += *q == '&' || *q == ',') {
        size_t seg = strcspn(q, "&,");
        if (seg > n && !strncmp(q, name, n) && q[n] == '=') {
            snprintf(out, len, "%.*s", (int)(seg - n - 1), q + n + 1);
            return 1;
        }
        q += seg;
    }
    return 0;
}

static void list_jobs(emu_hub *hub, iotgw_http_request *req)
{
    char type[64], status[64];
    int has_type = query_param(req, "jobType", type, sizeof type);
    int has_status = query_param(req, "jobStatus", status, sizeof status);
    json_t *list = emu_jobs_list(hub, has_type && *type ? type : NULL, has_status && *status ? status : NULL);
    if (list)
        emu_rest_json(hub, req, 200, list, "x-ms-item-type: jobResponse\r\n");
    else
        emu_rest_fail(hub, req, &E_SERVER, "out of memory");
}

/* The request's jobId (absent, or the path's, as a string or a number) and type. */
static const char *job_type(json_t *j, const char *id, int *method)
{
    json_t *body_id = json_object_get(j, "jobId");
    const char *type = json_string_value(json_object_get(j, "type"));
    char number[32];
    if (json_is_integer(body_id))
        snprintf(number, sizeof number, "%" JSON_INTEGER_FORMAT, json_integer_value(body_id));
    if (body_id && !json_is_null(body_id) &&
        (json_is_integer(body_id) ? strcmp(number, id)
                                  : !json_is_string(body_id) || strcmp(json_string_value(body_id), id)))
        return "the body's jobId is not the path's";
    if (!type || (strcmp(type, "scheduleUpdateTwin") && strcmp(type, "scheduleDeviceMethod")))
        return "type must be scheduleUpdateTwin or scheduleDeviceMethod";
    *method = !strcmp(type, "scheduleDeviceMethod");
    return NULL;
}

/* The twin patch of a scheduleUpdateTwin job: tags and properties.desired, JSON objects. */
static const char *update_twin(json_t *patch)
{
    json_t *tags = json_object_get(patch, "tags");
    json_t *desired = json_object_get(json_object_get(patch, "properties"), "desired");
    if (!json_is_object(patch))
        return "updateTwin must be a JSON object (a twin patch)";
    if ((tags && !json_is_object(tags)) || (desired && !json_is_object(desired)))
        return "tags and properties.desired must be JSON objects";
    if (!tags && !desired)
        return "updateTwin changes nothing: it has neither tags nor properties.desired";
    return NULL;
}

/* A twin update job needs RegistryWrite, a method job ServiceConnect. */
static void schedule(emu_hub *hub, iotgw_http_request *req, const char *id)
{
    size_t len;
    const uint8_t *body = iotgw_http_body(req, &len);
    json_error_t jerr;
    json_t *j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *start = json_object_get(j, "startTime"), *max = json_object_get(j, "maxExecutionTimeInSeconds");
    const char *condition = json_string_value(json_object_get(j, "queryCondition"));
    const char *bad = NULL;
    const emu_rest_error *e = &E_BAD_ARGUMENT;
    char msg[480], why[400];
    int method = 0;
    emu_job_spec spec = {.id = id,
                         .condition = condition,
                         .start_ms = emu_wall_ms(),
                         .max_execution_s = EMU_JOB_MAX_EXECUTION_DEFAULT};
    char *payload = NULL;
    if (!json_is_object(j)) {
        snprintf(msg, sizeof msg, "the body is not a JSON object%s%s", j ? "" : ": ", j ? "" : jerr.text);
        bad = msg;
    } else if ((bad = job_type(j, id, &method))) {
    } else if (emu_rest_authorize(hub, req, method ? EMU_RIGHT_SERVICE_CONNECT : EMU_RIGHT_REGISTRY_WRITE,
                                  why, sizeof why)) {
        e = &E_UNAUTHORIZED;
        bad = why;
    } else if (!condition || !*condition) {
        bad = "queryCondition must be a query's WHERE clause, e.g. \"deviceId IN ['a', 'b']\"";
    } else if (start && !json_is_null(start) &&
               (!json_is_string(start) || parse_time(json_string_value(start), &spec.start_ms))) {
        bad = "startTime must be an ISO 8601 date and time, e.g. 2024-05-01T12:00:00.000Z";
    } else if (max && !json_is_null(max) &&
               (!json_is_integer(max) || json_integer_value(max) < 1 || json_integer_value(max) > 31536000)) {
        bad = "maxExecutionTimeInSeconds must be a whole number of seconds from 1 to 31536000";
    } else if (!method && (bad = update_twin(json_object_get(j, "updateTwin")))) {
    } else if (method && !json_is_object(json_object_get(j, "cloudToDeviceMethod"))) {
        bad = "cloudToDeviceMethod must be a JSON object with methodName";
    } else if (method && (e = emu_rest_method_request(json_object_get(j, "cloudToDeviceMethod"), &spec.method,
                                                      &payload, &spec.response_timeout_s,
                                                      &spec.connect_timeout_s, msg, sizeof msg))) {
        bad = msg;
    }
    if (bad) {
        emu_rest_fail(hub, req, e ? e : &E_BAD_ARGUMENT, bad);
        json_decref(j);
        return;
    }
    if (json_is_integer(max))
        spec.max_execution_s = json_integer_value(max);
    spec.payload = payload;
    spec.update_twin = method ? NULL : json_object_get(j, "updateTwin");
    emu_job *job = NULL;
    switch (emu_job_schedule(hub, &spec, &job, why, sizeof why)) {
    case 0: emu_rest_json(hub, req, 200, emu_job_json(job), NULL); break;
    case EMU_JOB_INVALID:
        snprintf(msg, sizeof msg, "queryCondition is not valid (as SELECT * FROM devices WHERE ...): %s",
                 why);
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, msg);
        break;
    case EMU_JOB_EXISTS:
        snprintf(msg, sizeof msg, "a job with id %s exists already", id);
        emu_rest_fail(hub, req, &E_JOB_EXISTS, msg);
        break;
    case EMU_JOB_FULL:
        snprintf(msg, sizeof msg, "the hub keeps %d jobs and none of them has finished", EMU_JOBS_MAX);
        emu_rest_fail(hub, req, &E_TOO_MANY_JOBS, msg);
        break;
    default: emu_rest_fail(hub, req, &E_SERVER, "out of memory"); break;
    }
    free(payload);
    json_decref(j);
}

void emu_rest_jobs(emu_hub *hub, iotgw_http_request *req, const char *method, char **seg, int n)
{
    int get = !strcmp(method, "GET"), put = !strcmp(method, "PUT"), post = !strcmp(method, "POST");
    int query = n == 3 && !strcmp(seg[2], "query"), cancel = n == 4 && !strcmp(seg[3], "cancel");
    char why[300];
    if (n < 3 || strcmp(seg[1], "v2") || (n == 4 && !cancel) || n > 4) {
        emu_rest_fail(hub, req, &E_ROUTE,
                      "no such resource (/jobs/v2/{id}, /jobs/v2/{id}/cancel, /jobs/v2/query)");
        return;
    }
    if ((query && !get) || (cancel && !post) || (!query && !cancel && !get && !put)) {
        emu_rest_fail(hub, req, &E_METHOD, "this resource does not take that HTTP method");
        return;
    }
    /* Reading needs a registry right or ServiceConnect; scheduling and cancelling
     * RegistryWrite or ServiceConnect (and scheduling the one the job's type needs). */
    if (emu_rest_authorize(hub, req,
                           get ? EMU_RIGHT_REGISTRY_READ | EMU_RIGHT_REGISTRY_WRITE |
                                     EMU_RIGHT_SERVICE_CONNECT
                               : EMU_RIGHT_REGISTRY_WRITE | EMU_RIGHT_SERVICE_CONNECT,
                           why, sizeof why)) {
        emu_rest_fail(hub, req, &E_UNAUTHORIZED, why);
        return;
    }
    if (query) {
        list_jobs(hub, req);
        return;
    }
    iotgw_diag diag = {0};
    if (iotgw_identity_check(seg[2], "the job id", &diag)) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, diag.text);
        return;
    }
    if (put) {
        schedule(hub, req, seg[2]);
        return;
    }
    emu_job *job = emu_job_find(hub, seg[2]);
    if (!job) {
        emu_rest_fail(hub, req, &E_JOB_NOT_FOUND, "no such job");
        return;
    }
    if (cancel)
        emu_job_cancel(job);
    emu_rest_json(hub, req, 200, emu_job_json(job), NULL);
}
