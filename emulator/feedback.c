/* The hub's service-bound queues (shared/docs/iothub-amqp-protocol.md 7.3): records kept
 * for service receivers until one has credit, at most 1000 per queue (older ones are
 * dropped first), each sent as a data section with user-id the hub's name.
 *
 * - Cloud-to-device delivery feedback: when the service asks for acknowledgement
 *   (application property iothub-ack: positive, negative or full), the outcome of each
 *   such message becomes a record, and records go to receivers on
 *   /messages/serviceBound/feedback as a JSON array with content-type
 *   application/vnd.microsoft.iothub.feedback.json. IoT Hub batches records for up to 15 s
 *   or 64 records; the emulator sends what it has as soon as a receiver has credit (at
 *   most 64 per message), so tests need not wait.
 * - File upload notifications (files.c): one JSON object per message on
 *   /messages/serviceBound/filenotifications, content-type
 *   application/vnd.microsoft.iothub.filenotification.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>
#include <proton/connection.h>

#include "emulator/hub_internal.h"
#include "transport/messaging.h"

#define MAX_PENDING 1000

static const struct {
    emu_link_kind kind; /* its receivers' links */
    const char *content_type;
    size_t per_message; /* records in one message, as a JSON array; 0: one record, as itself */
} queues[EMU_SERVICE_QUEUES] = {
    [EMU_SERVICE_FEEDBACK] = {EMU_LINK_FEEDBACK, "application/vnd.microsoft.iothub.feedback.json", 64},
    [EMU_SERVICE_FILE_NOTIFICATIONS] = {EMU_LINK_FILE_NOTIFICATIONS,
                                        "application/vnd.microsoft.iothub.filenotification.json", 0},
};

void emu_service_queue_push(emu_hub *hub, emu_service_queue q, json_t *record)
{
    if (!hub->service_queues[q])
        hub->service_queues[q] = json_array();
    if (!hub->service_queues[q] || !record) {
        json_decref(record);
        return;
    }
    if (json_array_size(hub->service_queues[q]) >= MAX_PENDING)
        json_array_remove(hub->service_queues[q], 0);
    json_array_append_new(hub->service_queues[q], record);
    emu_service_queues_pump(hub);
}

void emu_feedback_record(emu_hub *hub, emu_identity *id, const char *original_id, int64_t enqueued_ms,
                         const char *status)
{
    char when[40];
    time_t t = (time_t)(enqueued_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + strlen(when), sizeof when - strlen(when), ".%03dZ", (int)(enqueued_ms % 1000));
    iotgw_log(IOTGW_LOG_INFO, "%s: C2D feedback %s for message %s", id->id, status,
              original_id ? original_id : "");
    emu_service_queue_push(hub, EMU_SERVICE_FEEDBACK,
                           json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "originalMessageId",
                                     original_id ? original_id : "", "enqueuedTimeUtc", when, "statusCode",
                                     status, "description", status, "deviceId", id->device_id,
                                     "deviceGenerationId", id->generation_id));
}

/* A service receiver of kind that has credit, or NULL. */
static emu_link *receiver_with_credit(emu_hub *hub, emu_link_kind kind)
{
    emu_conn *c;
    emu_link *l;
    IOTGW_LIST_FOREACH (c, &hub->conns, emu_conn, in_hub) {
        IOTGW_LIST_FOREACH (l, &c->links, emu_link, in_conn) {
            if (l->kind == kind && !(pn_link_state(l->link) & PN_LOCAL_CLOSED) && pn_link_credit(l->link) > 0)
                return l;
        }
    }
    return NULL;
}

static void pump(emu_hub *hub, emu_service_queue q)
{
    json_t *waiting = hub->service_queues[q];
    while (waiting && json_array_size(waiting)) {
        emu_link *target = receiver_with_credit(hub, queues[q].kind);
        if (!target)
            return;
        json_t *body = queues[q].per_message ? json_array() : json_incref(json_array_get(waiting, 0));
        if (queues[q].per_message) {
            while (json_array_size(waiting) && json_array_size(body) < queues[q].per_message) {
                json_array_append(body, json_array_get(waiting, 0));
                json_array_remove(waiting, 0);
            }
        } else {
            json_array_remove(waiting, 0);
        }
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        pn_message_t *m = pn_message();
        uint8_t r[16];
        RAND_bytes(r, sizeof r);
        char id[40];
        snprintf(id, sizeof id, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
                 r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
                 r[15]);
        pn_message_set_id(m, (pn_atom_t){.type = PN_STRING, .u.as_bytes = pn_bytes(strlen(id), id)});
        pn_message_set_content_type(m, queues[q].content_type);
        pn_message_set_user_id(m, pn_bytes(strlen(hub->opt.hostname), hub->opt.hostname));
        const char *none = queues[q].per_message ? "[]" : "{}";
        pn_data_put_binary(pn_message_body(m), pn_bytes(strlen(text ? text : none), text ? text : none));
        pn_message_set_inferred(m, true); /* a data section, as IoT Hub sends (SDKs read Message.data) */
        iotgw_link_send_message(target->link, m);
        pn_message_free(m);
        free(text);
        iotgw_conn_wake(target->conn->conn);
    }
}

void emu_service_queues_pump(emu_hub *hub)
{
    for (int q = 0; q < EMU_SERVICE_QUEUES; q++)
        pump(hub, (emu_service_queue)q);
}
