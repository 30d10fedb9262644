/* IoT Hub's jobs (v2, "Schedule jobs on multiple devices"): a twin update or a direct
 * method over the devices that "SELECT * FROM devices WHERE {condition}" selects, run on
 * the hub's loop at the job's start time. The devices are chosen when the job starts. A
 * twin update is applied to each of them at once, as the service's PATCH /twins/{id}
 * applies it; a method is invoked on at most EMU_JOB_METHODS_IN_FLIGHT of them at a time
 * (emu_method_invoke), a device counting as succeeded once it has answered, whatever its
 * status, and as failed when the hub ended its call (DeviceNotOnline, GatewayTimeout, ...).
 * A method job still running after maxExecutionTimeInSeconds fails: its waiting calls are
 * dropped and the devices not answered count as failed. The jobs live in memory. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "emulator/hub_internal.h"
#include "emulator/query.h"
#include "emulator/rest.h"

typedef enum job_status { QUEUED, SCHEDULED, RUNNING, COMPLETED, FAILED, CANCELLED } job_status;
static const char *const STATUS_NAMES[] = {"queued",    "scheduled", "running",
                                           "completed", "failed",    "cancelled"};

enum { DEV_PENDING, DEV_RUNNING, DEV_SUCCEEDED, DEV_FAILED };

typedef struct job_device {
    emu_job *job;
    char *id;
    int state;
    emu_method_call *call; /* DEV_RUNNING: the call waiting for the device */
} job_device;

struct emu_job {
    emu_hub *hub;
    char *id, *condition;
    emu_query *query;
    json_t *update_twin; /* a twin update job; else a method job: */
    char *method, *payload;
    int response_timeout_s, connect_timeout_s;
    int64_t created_ms, start_ms, end_ms, max_execution_s;
    job_status status;
    const char *failure; /* failureReason (static text), or NULL */
    job_device *devices;
    size_t ndevices, next, running, succeeded, failed;
    int pumping;
    iotgw_timer start_timer, deadline_timer; /* its start; a method job's maxExecutionTimeInSeconds */
    iotgw_list in_hub;                       /* hub->jobs */
};

static int finished(const emu_job *job)
{
    return job->status == COMPLETED || job->status == FAILED || job->status == CANCELLED;
}

static void finish(emu_job *job, job_status status, const char *failure)
{
    iotgw_timer_stop(&job->start_timer);
    iotgw_timer_stop(&job->deadline_timer);
    job->status = status;
    job->failure = failure;
    job->end_ms = emu_wall_ms();
    iotgw_log(IOTGW_LOG_INFO, "job %s %s: %zu devices, %zu succeeded, %zu failed%s%s", job->id,
              STATUS_NAMES[status], job->ndevices, job->succeeded, job->failed, failure ? ": " : "",
              failure ? failure : "");
}

/* Drop the calls still waiting for devices (their done is not called): those devices failed. */
static void drop_calls(emu_job *job)
{
    for (size_t i = 0; i < job->ndevices; i++) {
        job_device *d = &job->devices[i];
        if (d->state != DEV_RUNNING)
            continue;
        if (d->call)
            emu_method_cancel(d->call);
        d->call = NULL;
        d->state = DEV_FAILED;
        job->running--;
        job->failed++;
    }
}

static void pump(emu_job *job);

static void device_done(void *ctx, int status, const uint8_t *payload, size_t len, const char *code,
                        const char *message)
{
    job_device *d = ctx;
    emu_job *job = d->job;
    (void)payload;
    (void)len;
    d->call = NULL;
    d->state = code ? DEV_FAILED : DEV_SUCCEEDED;
    job->running--;
    if (code) {
        job->failed++;
        iotgw_log(IOTGW_LOG_INFO, "job %s: %s: method %s failed: %s: %s", job->id, d->id, job->method, code,
                  message ? message : "");
    } else {
        job->succeeded++;
        iotgw_log(IOTGW_LOG_INFO, "job %s: %s: method %s answered %d", job->id, d->id, job->method, status);
    }
    pump(job);
}

/* Invoke the method on the next devices while calls may be added; complete the job when
 * every device has been served. Re-entered from a done called inside emu_method_invoke
 * (out of memory): the outer loop goes on. */
static void pump(emu_job *job)
{
    if (job->pumping)
        return;
    job->pumping = 1;
    emu_registry *r = emu_hub_registry(job->hub);
    while (job->status == RUNNING && job->next < job->ndevices && job->running < EMU_JOB_METHODS_IN_FLIGHT) {
        job_device *d = &job->devices[job->next++];
        emu_identity *id = emu_registry_find(r, d->id, NULL);
        if (!id) { /* deleted since the job started */
            d->state = DEV_FAILED;
            job->failed++;
            continue;
        }
        d->state = DEV_RUNNING;
        job->running++;
        emu_method_call *call =
            emu_method_invoke(job->hub, id, job->method, (const uint8_t *)job->payload, strlen(job->payload),
                              job->response_timeout_s, job->connect_timeout_s, device_done, d);
        if (d->state == DEV_RUNNING)
            d->call = call;
    }
    job->pumping = 0;
    if (job->status == RUNNING && job->next == job->ndevices && job->running == 0)
        finish(job, COMPLETED, NULL);
}

static void deadline(iotgw_timer *t, void *ctx)
{
    emu_job *job = ctx;
    (void)t;
    if (job->status != RUNNING)
        return;
    drop_calls(job);
    for (; job->next < job->ndevices; job->next++) {
        job->devices[job->next].state = DEV_FAILED;
        job->failed++;
    }
    finish(job, FAILED, "the job did not finish within its maxExecutionTimeInSeconds");
}

/* The devices the condition selects now, each as its twin document shows it to queries. */
static int select_devices(emu_job *job)
{
    emu_hub *hub = job->hub;
    emu_registry *r = emu_hub_registry(hub);
    size_t n = 0;
    job->devices = calloc((size_t)emu_registry_count(r) + 1, sizeof *job->devices);
    if (!job->devices)
        return -1;
    for (int i = 0; i < emu_registry_count(r); i++) {
        emu_identity *id = emu_registry_at(r, i);
        if (id->module_id)
            continue;
        json_t *doc = emu_rest_twin_document(hub, id);
        int match = doc && emu_query_matches(job->query, doc);
        json_decref(doc);
        if (!match)
            continue;
        job_device *d = &job->devices[n];
        if (!(d->id = strdup(id->device_id)))
            return -1;
        d->job = job;
        d->state = DEV_PENDING;
        job->ndevices = ++n;
    }
    return 0;
}

static void start(iotgw_timer *t, void *ctx)
{
    emu_job *job = ctx;
    (void)t;
    job->status = RUNNING;
    iotgw_log(IOTGW_LOG_INFO, "job %s started", job->id);
    if (select_devices(job)) {
        finish(job, FAILED, "out of memory");
        return;
    }
    if (!job->update_twin) {
        iotgw_timer_start(&job->deadline_timer, job->max_execution_s * 1000, 0);
        pump(job);
        return;
    }
    emu_registry *r = emu_hub_registry(job->hub);
    for (; job->next < job->ndevices; job->next++) {
        job_device *d = &job->devices[job->next];
        emu_identity *id = emu_registry_find(r, d->id, NULL);
        const char *error = "the device was deleted";
        int status = id ? emu_twin_service_update(job->hub, id, job->update_twin, 0, &error) : 404;
        d->state = status ? DEV_FAILED : DEV_SUCCEEDED;
        if (status) {
            job->failed++;
            iotgw_log(IOTGW_LOG_INFO, "job %s: %s: twin update failed: %s", job->id, d->id, error);
        } else {
            job->succeeded++;
        }
    }
    finish(job, COMPLETED, NULL);
}

static void job_free(emu_job *job)
{
    iotgw_timer_stop(&job->start_timer);
    iotgw_timer_stop(&job->deadline_timer);
    drop_calls(job);
    iotgw_list_remove(&job->in_hub);
    job->hub->njobs--;
    for (size_t i = 0; i < job->ndevices; i++)
        free(job->devices[i].id);
    free(job->devices);
    emu_query_free(job->query);
    json_decref(job->update_twin);
    free(job->id);
    free(job->condition);
    free(job->method);
    free(job->payload);
    free(job);
}

emu_job *emu_job_find(emu_hub *hub, const char *id)
{
    emu_job *job;
    IOTGW_LIST_FOREACH (job, &hub->jobs, emu_job, in_hub)
        if (!strcmp(job->id, id))
            return job;
    return NULL;
}

int emu_job_schedule(emu_hub *hub, const emu_job_spec *spec, emu_job **out, char *why, size_t len)
{
    static const char select[] = "SELECT * FROM devices WHERE ";
    if (emu_job_find(hub, spec->id))
        return EMU_JOB_EXISTS;
    size_t clen = strlen(spec->condition);
    char *text = malloc(sizeof select + clen);
    if (!text)
        return EMU_JOB_NOMEM;
    memcpy(text, select, sizeof select - 1);
    memcpy(text + sizeof select - 1, spec->condition, clen + 1);
    emu_query *q = NULL;
    int rc = emu_query_parse(text, sizeof select - 1 + clen, &q, why, len);
    free(text);
    if (rc)
        return rc == -2 ? EMU_JOB_NOMEM : EMU_JOB_INVALID;
    if (hub->njobs >= EMU_JOBS_MAX) { /* the oldest finished job makes way */
        emu_job *old, *evict = NULL;
        IOTGW_LIST_FOREACH (old, &hub->jobs, emu_job, in_hub)
            if (!evict && finished(old))
                evict = old;
        if (!evict) {
            emu_query_free(q);
            return EMU_JOB_FULL;
        }
        job_free(evict);
    }
    emu_job *job = calloc(1, sizeof *job);
    if (!job || !(job->id = strdup(spec->id)) || !(job->condition = strdup(spec->condition)) ||
        (spec->method &&
         (!(job->method = strdup(spec->method)) || !(job->payload = strdup(spec->payload))))) {
        if (job) {
            free(job->id);
            free(job->condition);
            free(job->method);
        }
        free(job);
        emu_query_free(q);
        return EMU_JOB_NOMEM;
    }
    job->hub = hub;
    job->query = q;
    job->update_twin = spec->method ? NULL : json_incref(spec->update_twin);
    job->response_timeout_s = spec->response_timeout_s;
    job->connect_timeout_s = spec->connect_timeout_s;
    job->created_ms = emu_wall_ms();
    job->start_ms = spec->start_ms;
    job->max_execution_s = spec->max_execution_s;
    job->status = spec->start_ms > job->created_ms ? SCHEDULED : QUEUED;
    iotgw_list_init(&job->in_hub);
    iotgw_list_push_back(&hub->jobs, &job->in_hub);
    hub->njobs++;
    iotgw_timer_init(hub->loop, &job->start_timer, start, job);
    iotgw_timer_init(hub->loop, &job->deadline_timer, deadline, job);
    iotgw_timer_start(&job->start_timer, job->status == SCHEDULED ? spec->start_ms - job->created_ms : 0, 0);
    iotgw_log(IOTGW_LOG_INFO, "job %s %s: %s over devices WHERE %.200s", job->id, STATUS_NAMES[job->status],
              job->method ? "a direct method" : "a twin update", job->condition);
    *out = job;
    return 0;
}

void emu_job_cancel(emu_job *job)
{
    if (finished(job))
        return;
    drop_calls(job);
    finish(job, CANCELLED, NULL);
}

/* ISO 8601 in UTC with milliseconds, as IoT Hub writes its times. */
static json_t *time_json(int64_t ms)
{
    char text[48], frac[8];
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(text, sizeof text - sizeof frac, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(frac, sizeof frac, ".%03dZ", (int)(ms % 1000));
    strcat(text, frac);
    return json_string(text);
}

json_t *emu_job_json(const emu_job *job)
{
    json_t *j = json_object();
    json_object_set_new(j, "jobId", json_string(job->id));
    json_object_set_new(j, "type", json_string(job->method ? "scheduleDeviceMethod" : "scheduleUpdateTwin"));
    json_object_set_new(j, "status", json_string(STATUS_NAMES[job->status]));
    json_object_set_new(j, "queryCondition", json_string(job->condition));
    json_object_set_new(j, "createdTime", time_json(job->created_ms));
    json_object_set_new(j, "startTime", time_json(job->start_ms));
    if (finished(job))
        json_object_set_new(j, "endTime", time_json(job->end_ms));
    json_object_set_new(j, "maxExecutionTimeInSeconds", json_integer(job->max_execution_s));
    if (job->method) {
        json_t *payload = json_loads(job->payload, JSON_DECODE_ANY, NULL);
        json_object_set_new(j, "cloudToDeviceMethod",
                            json_pack("{s:s,s:o,s:i,s:i}", "methodName", job->method, "payload",
                                      payload ? payload : json_null(), "responseTimeoutInSeconds",
                                      job->response_timeout_s, "connectTimeoutInSeconds",
                                      job->connect_timeout_s));
    } else {
        json_object_set(j, "updateTwin", job->update_twin);
    }
    if (job->failure)
        json_object_set_new(j, "failureReason", json_string(job->failure));
    size_t pending = job->ndevices - job->succeeded - job->failed - job->running;
    json_object_set_new(j, "deviceJobStatistics",
                        json_pack("{s:I,s:I,s:I,s:I,s:I}", "deviceCount", (json_int_t)job->ndevices,
                                  "failedCount", (json_int_t)job->failed, "succeededCount",
                                  (json_int_t)job->succeeded, "runningCount", (json_int_t)job->running,
                                  "pendingCount", (json_int_t)pending));
    return j;
}

json_t *emu_jobs_list(emu_hub *hub, const char *type, const char *status)
{
    json_t *list = json_array();
    emu_job *job;
    IOTGW_LIST_FOREACH (job, &hub->jobs, emu_job, in_hub) {
        json_t *j = emu_job_json(job);
        if ((!type || !strcmp(type, json_string_value(json_object_get(j, "type")))) &&
            (!status || !strcmp(status, STATUS_NAMES[job->status])))
            json_array_append(list, j);
        json_decref(j);
    }
    return list;
}

void emu_jobs_free_all(emu_hub *hub)
{
    emu_job *job;
    IOTGW_LIST_FOREACH (job, &hub->jobs, emu_job, in_hub)
        job_free(job);
}
