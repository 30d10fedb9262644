/* Cloud-to-device delivery feedback (shared/docs/iothub-amqp-protocol.md 7.3): when the
 * service asks for acknowledgement (application property iothub-ack: positive,
 * negative or full), the outcome of each such message becomes a record, and records
 * go to service receivers on /messages/serviceBound/feedback as a JSON array with
 * content-type application/vnd.microsoft.iothub.feedback.json. IoT Hub batches records
 * for up to 15 s or 64 records; the emulator sends what it has as soon as a receiver
 * has credit (at most 64 per message), so tests need not wait. At most 1000 records
 * wait for a receiver; older ones are dropped first. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>
#include <proton/connection.h>

#include "emulator/hub_internal.h"
#include "transport/messaging.h"

#define MAX_PENDING 1000
#define PER_MESSAGE 64

void emu_feedback_record(emu_hub *hub, emu_identity *id, const char *original_id, int64_t enqueued_ms,
                         const char *status)
{
    if (!hub->feedback)
        hub->feedback = json_array();
    if (!hub->feedback)
        return;
    if (json_array_size(hub->feedback) >= MAX_PENDING)
        json_array_remove(hub->feedback, 0);
    char when[40];
    time_t t = (time_t)(enqueued_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + strlen(when), sizeof when - strlen(when), ".%03dZ", (int)(enqueued_ms % 1000));
    json_array_append_new(hub->feedback, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "originalMessageId",
                                                   original_id ? original_id : "", "enqueuedTimeUtc", when,
                                                   "statusCode", status, "description", status, "deviceId",
                                                   id->device_id, "deviceGenerationId", id->generation_id));
    iotgw_log(IOTGW_LOG_INFO, "%s: C2D feedback %s for message %s", id->id, status,
              original_id ? original_id : "");
    emu_feedback_pump(hub);
}

/* A service receiver of feedback that has credit, or NULL. */
static emu_link *receiver_with_credit(emu_hub *hub)
{
    emu_conn *c;
    emu_link *l;
    IOTGW_LIST_FOREACH (c, &hub->conns, emu_conn, in_hub) {
        IOTGW_LIST_FOREACH (l, &c->links, emu_link, in_conn) {
            if (l->kind == EMU_LINK_FEEDBACK && !(pn_link_state(l->link) & PN_LOCAL_CLOSED) &&
                pn_link_credit(l->link) > 0)
                return l;
        }
    }
    return NULL;
}

void emu_feedback_pump(emu_hub *hub)
{
    while (hub->feedback && json_array_size(hub->feedback)) {
        emu_link *target = receiver_with_credit(hub);
        if (!target)
            return;
        json_t *batch = json_array();
        while (json_array_size(hub->feedback) && json_array_size(batch) < PER_MESSAGE) {
            json_array_append(batch, json_array_get(hub->feedback, 0));
            json_array_remove(hub->feedback, 0);
        }
        char *text = json_dumps(batch, JSON_COMPACT);
        json_decref(batch);
        pn_message_t *m = pn_message();
        uint8_t r[16];
        RAND_bytes(r, sizeof r);
        char id[40];
        snprintf(id, sizeof id, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
                 r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
                 r[15]);
        pn_message_set_id(m, (pn_atom_t){.type = PN_STRING, .u.as_bytes = pn_bytes(strlen(id), id)});
        pn_message_set_content_type(m, "application/vnd.microsoft.iothub.feedback.json");
        pn_message_set_user_id(m, pn_bytes(strlen(hub->opt.hostname), hub->opt.hostname));
        pn_data_put_binary(pn_message_body(m), pn_bytes(text ? strlen(text) : 2, text ? text : "[]"));
        pn_message_set_inferred(m, true); /* a data section, as IoT Hub sends (SDKs read Message.data) */
        iotgw_link_send_message(target->link, m);
        pn_message_free(m);
        free(text);
        iotgw_conn_wake(target->conn->conn);
    }
}
