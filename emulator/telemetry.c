/* Device-to-cloud telemetry: single messages and the batches the C SDK always sends
 * (message-format 0x80013700: the body is a list of data sections, each an encoded
 * message; shared/docs/iothub-amqp-protocol.md 4.1). Accepted means stored. The 256 KB
 * limit applies to the whole transfer, a batch included. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <proton/codec.h>
#include <proton/delivery.h>

#include "emulator/hub_internal.h"
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

/* Decode every section of an encoded message into data, one top-level value each. */
static int decode_sections(pn_data_t *data, const uint8_t *buf, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t n = pn_data_decode(data, (const char *)buf + off, len - off);
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    pn_data_rewind(data);
    return 0;
}

/* With data before a top-level value: move to the next section; its code (0: not a
 * section), data then inside it on the section's value (pn_data_exit to go on). */
static int next_section(pn_data_t *data, uint64_t *code)
{
    if (!pn_data_next(data))
        return 0;
    *code = 0;
    if (pn_data_type(data) != PN_DESCRIBED)
        return 1;
    pn_data_enter(data);
    pn_data_next(data);
    if (pn_data_type(data) == PN_ULONG)
        *code = pn_data_get_ulong(data);
    pn_data_next(data);
    return 2;
}

/* Is this a batch? Proton-C 0.37 does not tell the transfer's message-format
 * (0x80013700 for batches), so a batch is known by its shape: no properties or
 * application properties of its own, and only data sections that each hold an encoded
 * message. Each inner message is then checked; *count is how many. With publish set,
 * the transfer was checked already, and each message goes to the telemetry stream. */
static const char *check_sections(emu_hub *hub, const uint8_t *buf, size_t len, int *count, const char **why,
                                  emu_identity *publish)
{
    pn_data_t *data = pn_data(16);
    const char *cond = NULL;
    int own = 0, datas = 0, messages = 0, entered;
    uint64_t code;
    *count = 1;
    if (!data || decode_sections(data, buf, len)) {
        pn_data_free(data);
        *why = "the message does not decode as AMQP";
        return "amqp:decode-error";
    }
    while ((entered = next_section(data, &code))) {
        own += code == 0x73 || code == 0x74;
        if (code == DATA_SECTION && pn_data_type(data) == PN_BINARY) {
            datas++;
            messages += looks_like_message(pn_data_get_binary(data));
        }
        if (entered == 2)
            pn_data_exit(data);
    }
    if (own || !datas || datas != messages) {
        pn_data_free(data);
        if (publish) {
            emu_events_publish(hub, publish, buf, len);
            return NULL;
        }
        return check_message(hub, buf, len, why);
    }
    *count = 0;
    pn_data_rewind(data);
    while (!cond && (entered = next_section(data, &code))) {
        if (code == DATA_SECTION && ++*count > MAX_BATCH_ITEMS) {
            *why = "the batch has too many messages";
            cond = "amqp:link:message-size-exceeded";
        } else if (code == DATA_SECTION) {
            pn_bytes_t inner = pn_data_get_binary(data);
            if (publish)
                emu_events_publish(hub, publish, (const uint8_t *)inner.start, inner.size);
            else
                cond = check_message(hub, (const uint8_t *)inner.start, inner.size, why);
        }
        if (entered == 2)
            pn_data_exit(data);
    }
    pn_data_free(data);
    return cond;
}

const char *emu_telemetry_accept(emu_hub *hub, emu_live *live, const uint8_t *buf, size_t len, size_t counted,
                                 const char **why, int *throttled)
{
    int count = 1;
    const char *cond = NULL;
    *throttled = 0;
    if ((counted ? counted : len) > EMU_MAX_MESSAGE_SIZE) {
        cond = "amqp:link:message-size-exceeded";
        *why = "the message is larger than IoT Hub's 256 KB limit";
    } else if (!counted) {
        cond = check_sections(hub, buf, len, &count, why, NULL);
    }
    /* --d2c-limit or the admin throttle, as a hub unit's D2C quota */
    if (!cond && emu_faults_d2c_over_limit(hub->faults, count, emu_wall_ms())) {
        cond = "com.microsoft:device-container-throttled";
        *why = "ThrottlingException: the hub's device-to-cloud message rate limit is exceeded";
        *throttled = 1;
    }
    if (cond) {
        hub->metrics.d2c_rejected[*throttled                           ? EMU_D2C_THROTTLED
                                  : !strcmp(cond, "amqp:decode-error") ? EMU_D2C_UNDECODABLE
                                                                       : EMU_D2C_TOO_LARGE]++;
        return cond;
    }
    if (counted) /* one message the hub built itself */
        emu_events_publish(hub, live->id, buf, len);
    else
        check_sections(hub, buf, len, &count, why, live->id);
    hub->metrics.d2c_messages += (uint64_t)count;
    live->telemetry_in += (uint64_t)count;
    live->last_activity_ms = emu_wall_ms();
    return NULL;
}

void emu_telemetry_on_delivery(emu_link *l, pn_delivery_t *d)
{
    emu_conn *c = l->conn;
    emu_live *live = l->session->live;
    uint8_t *buf;
    size_t len = 0;
    const char *why = NULL, *cond = NULL;
    int throttled = 0;
    if (iotgw_delivery_take(d, EMU_LINK_MAX_MESSAGE_SIZE, &buf, &len)) {
        cond = "amqp:link:message-size-exceeded";
        why = "the message is larger than the link's max-message-size";
        c->hub->metrics.d2c_rejected[EMU_D2C_TOO_LARGE]++;
    } else {
        cond = emu_telemetry_accept(c->hub, live, buf, len, 0, &why, &throttled);
        free(buf);
    }
    if (cond) {
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": %s: telemetry rejected: %s (%zu bytes)", c->serial,
                  live->id->id, why, len);
        iotgw_delivery_settle(d, PN_REJECTED, cond, why);
        return;
    }
    iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);
}
