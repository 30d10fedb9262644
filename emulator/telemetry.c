/* Device-to-cloud telemetry: single messages and the batches the C SDK always sends
 * (message-format 0x80013700: the body is a list of data sections, each an encoded
 * message; shared/docs/iothub-amqp-protocol.md 4.1). Accepted means stored. The 256 KB
 * limit applies to the whole transfer, a batch included. */
#include <inttypes.h>
#include <stdlib.h>
#include <proton/codec.h>
#include <proton/delivery.h>

#include "emulator/hub.h"
#include "transport/messaging.h"

#define DATA_SECTION    0x75u
#define MAX_BATCH_ITEMS 500

/* Check one message of the telemetry stream; 0, or an AMQP condition to reject with. */
static const char *check_message(emu_hub *hub, const uint8_t *buf, size_t len, const char **why)
{
    if (len > EMU_MAX_MESSAGE_SIZE) {
        *why = "the message is larger than IoT Hub's 256 KB limit";
        return "amqp:link:message-size-exceeded";
    }
    if (iotgw_message_decode(hub->scratch, buf, len, NULL)) {
        *why = "the message does not decode as AMQP";
        return "amqp:decode-error";
    }
    return NULL;
}

static int looks_like_message(pn_bytes_t b)
{
    /* descriptor 0x00, smallulong 0x53, a section code 0x70 (header) .. 0x77 (amqp-value) */
    const uint8_t *p = (const uint8_t *)b.start;
    return b.size >= 3 && p[0] == 0x00 && p[1] == 0x53 && p[2] >= 0x70 && p[2] <= 0x77;
}

/* Is this a batch? Proton-C 0.37 does not tell the transfer's message-format
 * (0x80013700 for batches), so a batch is known by its shape: no properties or
 * application properties of its own, and one or more data sections that each hold an
 * encoded message. Each inner message is then checked; *count is how many. */
static const char *check_sections(emu_hub *hub, const uint8_t *buf, size_t len, int *count, const char **why,
                                  int *is_batch)
{
    pn_data_t *data = pn_data(16);
    const char *cond = NULL;
    size_t off = 0;
    int sections_of_own = 0, datas = 0, datas_like_messages = 0;
    *count = 0;
    *is_batch = 0;
    /* first pass: shape */
    while (off < len) {
        pn_data_clear(data);
        ssize_t n = pn_data_decode(data, (const char *)buf + off, len - off);
        if (n <= 0) {
            pn_data_free(data);
            *why = "the message does not decode as AMQP";
            return "amqp:decode-error";
        }
        off += (size_t)n;
        pn_data_rewind(data);
        if (!pn_data_next(data) || pn_data_type(data) != PN_DESCRIBED)
            continue;
        pn_data_enter(data);
        pn_data_next(data);
        uint64_t desc = pn_data_type(data) == PN_ULONG ? pn_data_get_ulong(data) : 0;
        pn_data_next(data);
        if (desc == 0x73 || desc == 0x74)
            sections_of_own++;
        if (desc == DATA_SECTION && pn_data_type(data) == PN_BINARY) {
            datas++;
            datas_like_messages += looks_like_message(pn_data_get_binary(data));
        }
    }
    if (sections_of_own || !datas || datas != datas_like_messages) {
        pn_data_free(data);
        *count = 1;
        return check_message(hub, buf, len, why);
    }
    *is_batch = 1;
    off = 0;
    while (!cond && off < len) {
        pn_data_clear(data);
        ssize_t n = pn_data_decode(data, (const char *)buf + off, len - off);
        off += (size_t)n;
        pn_data_rewind(data);
        if (!pn_data_next(data) || pn_data_type(data) != PN_DESCRIBED)
            continue;
        pn_data_enter(data);
        pn_data_next(data);
        uint64_t desc = pn_data_type(data) == PN_ULONG ? pn_data_get_ulong(data) : 0;
        pn_data_next(data);
        if (desc != DATA_SECTION)
            continue;
        if (++*count > MAX_BATCH_ITEMS) {
            *why = "the batch has too many messages";
            cond = "amqp:link:message-size-exceeded";
            break;
        }
        pn_bytes_t inner = pn_data_get_binary(data);
        cond = check_message(hub, (const uint8_t *)inner.start, inner.size, why);
    }
    pn_data_free(data);
    return cond;
}

void emu_telemetry_on_delivery(emu_link *l, pn_delivery_t *d)
{
    emu_conn *c = l->conn;
    emu_identity *id = l->session->id;
    uint8_t *buf;
    size_t len;
    const char *why = NULL, *cond = NULL;
    int count = 1, batch = 0;
    if (iotgw_delivery_take(d, EMU_LINK_MAX_MESSAGE_SIZE, &buf, &len)) {
        cond = "amqp:link:message-size-exceeded";
        why = "the message is larger than the link's max-message-size";
    } else {
        if (len > EMU_MAX_MESSAGE_SIZE) {
            cond = "amqp:link:message-size-exceeded";
            why = "the message is larger than IoT Hub's 256 KB limit";
        } else {
            cond = check_sections(c->hub, buf, len, &count, &why, &batch);
        }
        free(buf);
    }
    if (cond) {
        emu_log("warn", "conn %" PRIu64 ": %s: telemetry rejected: %s (%zu bytes)", c->serial, id->id, why,
                len);
        iotgw_delivery_settle(d, PN_REJECTED, cond, why);
        return;
    }
    (void)batch;
    id->live.telemetry_in += (uint64_t)count;
    id->live.last_activity_ms = emu_wall_ms();
    iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);
}
