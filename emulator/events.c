/* The Event Hub-compatible telemetry stream (shared/docs/iothub-amqp-protocol.md 4.2,
 * 7.4). Every accepted device message is stored, with the annotations IoT Hub adds, in
 * one of the hub's partitions (chosen by a hash of the device id, so one device's
 * messages stay in order), and delivered to service receivers attached to
 *   [/]messages/events/ConsumerGroups/{group}/Partitions/{n}
 * or at the Event Hub-compatible name, {event hub}/ConsumerGroups/... (hub.c redirects
 * readers there with --stream-redirect, as IoT Hub does). Receivers need a ServiceConnect token. They
 * start where their selector filter says (x-opt-offset, x-opt-sequence-number or
 * x-opt-enqueued-time; offset "-1" is the start, "@latest" the end) or, without a
 * filter, at the end. Retention is bounded by count and bytes per partition; a reader
 * that falls behind it skips to the oldest retained event. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <proton/codec.h>
#include <proton/connection.h>
#include <proton/delivery.h>

#include "emulator/hub_internal.h"
#include "transport/messaging.h"

typedef struct emu_event {
    uint64_t seq, offset;
    int64_t time_ms;
    size_t len;
    uint8_t *data;
} emu_event;

typedef struct emu_partition {
    emu_event *ring;
    size_t cap, head, count, bytes; /* head: index of the oldest */
    uint64_t next_seq, next_offset;
} emu_partition;

struct emu_events {
    int partitions;
    size_t max_count, max_bytes; /* per partition */
    emu_partition *p;
};

int emu_events_new(int partitions, size_t max_messages, size_t max_bytes, emu_events **out)
{
    emu_events *ev = calloc(1, sizeof *ev);
    if (!ev)
        return IOTGW_ERR_NOMEM;
    ev->partitions = partitions > 0 ? partitions : EMU_PARTITIONS_DEFAULT;
    ev->max_count = (max_messages ? max_messages : EMU_RETENTION_MESSAGES_DEFAULT) / (size_t)ev->partitions;
    ev->max_bytes = (max_bytes ? max_bytes : EMU_RETENTION_BYTES_DEFAULT) / (size_t)ev->partitions;
    if (ev->max_count < 1)
        ev->max_count = 1;
    ev->p = calloc((size_t)ev->partitions, sizeof *ev->p);
    if (!ev->p) {
        free(ev);
        return IOTGW_ERR_NOMEM;
    }
    *out = ev;
    return 0;
}

void emu_events_free(emu_events *ev)
{
    if (!ev)
        return;
    for (int i = 0; i < ev->partitions; i++) {
        emu_partition *p = &ev->p[i];
        for (size_t k = 0; k < p->count; k++)
            free(p->ring[(p->head + k) % p->cap].data);
        free(p->ring);
    }
    free(ev->p);
    free(ev);
}

int emu_events_partitions(const emu_events *ev)
{
    return ev->partitions;
}

/* FNV-1a of the device id: stable across runs, as a partition key hash must be. */
static int partition_of(const emu_events *ev, const char *device_id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *s = (const unsigned char *)device_id; *s; s++)
        h = (h ^ *s) * 16777619u;
    return (int)(h % (uint32_t)ev->partitions);
}

static emu_event *event_at(emu_partition *p, uint64_t seq)
{
    uint64_t oldest = p->next_seq - p->count;
    if (seq < oldest || seq >= p->next_seq)
        return NULL;
    return &p->ring[(p->head + (size_t)(seq - oldest)) % p->cap];
}

static void drop_oldest(emu_partition *p)
{
    emu_event *e = &p->ring[p->head];
    p->bytes -= e->len;
    free(e->data);
    p->head = (p->head + 1) % p->cap;
    p->count--;
}

static int store(emu_events *ev, emu_partition *p, uint8_t *data, size_t len, int64_t time_ms)
{
    while (p->count && (p->count >= ev->max_count || p->bytes + len > ev->max_bytes))
        drop_oldest(p);
    if (p->count == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        if (cap > ev->max_count)
            cap = ev->max_count;
        emu_event *ring = malloc(cap * sizeof *ring);
        if (!ring)
            return -1;
        for (size_t k = 0; k < p->count; k++)
            ring[k] = p->ring[(p->head + k) % p->cap];
        free(p->ring);
        p->ring = ring;
        p->cap = cap;
        p->head = 0;
    }
    emu_event *e = &p->ring[(p->head + p->count) % p->cap];
    e->seq = p->next_seq++;
    e->offset = p->next_offset;
    p->next_offset += len;
    e->time_ms = time_ms;
    e->len = len;
    e->data = data;
    p->count++;
    p->bytes += len;
    return 0;
}

/* ------------------------------------------------------------------ publishing */

static void put_symbol_key(pn_data_t *d, const char *key)
{
    pn_data_put_symbol(d, pn_bytes(strlen(key), key));
}

static void put_string(pn_data_t *d, const char *key, const char *value)
{
    put_symbol_key(d, key);
    pn_data_put_string(d, pn_bytes(strlen(value), value));
}

/* Add IoT Hub's annotations to msg's message-annotations map. */
static void annotate(pn_message_t *msg, emu_identity *id, uint64_t seq, uint64_t offset, int64_t now_ms)
{
    pn_data_t *ann = pn_message_annotations(msg);
    pn_data_rewind(ann);
    if (pn_data_next(ann) && pn_data_type(ann) == PN_MAP) {
        pn_data_enter(ann);
        while (pn_data_next(ann))
            ;
    } else {
        pn_data_clear(ann);
        pn_data_put_map(ann);
        pn_data_enter(ann);
    }
    char text[64];
    put_string(ann, "iothub-connection-device-id", id->device_id); /* a module's device */
    if (id->module_id)
        put_string(ann, "iothub-connection-module-id", id->module_id);
    put_string(
        ann, "iothub-connection-auth-method",
        id->module_id
            ? "{\"scope\":\"module\",\"type\":\"sas\",\"issuer\":\"iothub\",\"acceptingIpFilterRule\":null}"
            : "{\"scope\":\"device\",\"type\":\"sas\",\"issuer\":\"iothub\",\"acceptingIpFilterRule\":null}");
    put_symbol_key(ann, "iothub-enqueuedtime");
    pn_data_put_timestamp(ann, now_ms);
    put_string(ann, "iothub-message-source", "Telemetry");
    put_symbol_key(ann, "x-opt-sequence-number");
    pn_data_put_long(ann, (int64_t)seq);
    snprintf(text, sizeof text, "%" PRIu64, offset);
    put_string(ann, "x-opt-offset", text);
    put_symbol_key(ann, "x-opt-enqueued-time");
    pn_data_put_timestamp(ann, now_ms);
    pn_data_exit(ann);
}

static void pump_partition(emu_hub *hub, int partition)
{
    emu_link *l;
    IOTGW_LIST_FOREACH (l, &hub->streams, emu_link, stream) {
        if (l->partition == partition) {
            emu_events_pump(l);
            iotgw_conn_wake(l->conn->conn);
        }
    }
}

void emu_events_publish(emu_hub *hub, emu_identity *id, const uint8_t *buf, size_t len)
{
    emu_events *ev = hub->events;
    int partition = partition_of(ev, id->device_id); /* a device and its modules share one */
    emu_partition *p = &ev->p[partition];
    pn_message_t *msg = hub->scratch;
    if (iotgw_message_decode(msg, buf, len, NULL))
        return; /* checked before it was accepted */
    int64_t now = emu_wall_ms();
    annotate(msg, id, p->next_seq, p->next_offset, now);
    uint8_t *data;
    size_t dlen;
    if (iotgw_message_encode(msg, &data, &dlen))
        return;
    if (store(ev, p, data, dlen, now)) {
        free(data);
        return;
    }
    pump_partition(hub, partition);
}

/* ------------------------------------------------------------------ receivers */

void emu_events_pump(emu_link *l)
{
    if (pn_link_state(l->link) & (PN_LOCAL_CLOSED | PN_REMOTE_CLOSED))
        return;
    emu_partition *p = &l->conn->hub->events->p[l->partition];
    uint64_t oldest = p->next_seq - p->count;
    if (l->cursor < oldest)
        l->cursor = oldest;
    while (l->cursor < p->next_seq && pn_link_credit(l->link) > 0) {
        emu_event *e = event_at(p, l->cursor++);
        IOTGW_ASSERT(e); /* the cursor is within what the partition retains */
        pn_delivery_t *d = iotgw_link_send(l->link, NULL, 0, e->data, e->len);
        if (d && !pn_delivery_settled(d))
            pn_delivery_settle(d); /* the stream is read, not acknowledged */
        l->conn->hub->metrics.stream_read += d != NULL;
    }
}

size_t emu_events_retained(const emu_events *ev)
{
    size_t n = 0;
    for (int i = 0; i < ev->partitions; i++)
        n += ev->p[i].count;
    return n;
}

/* The selector filter's text, e.g. "amqp.annotation.x-opt-offset > '1234'", or NULL. */
static const char *selector_text(pn_link_t *link, char *buf, size_t len)
{
    pn_data_t *f = pn_terminus_filter(pn_link_remote_source(link));
    pn_data_rewind(f);
    if (!pn_data_next(f) || pn_data_type(f) != PN_MAP)
        return NULL;
    pn_data_enter(f);
    while (pn_data_next(f)) { /* key */
        if (!pn_data_next(f)) /* value: described(descriptor, string) */
            break;
        if (pn_data_type(f) != PN_DESCRIBED)
            continue;
        pn_data_enter(f);
        pn_data_next(f);
        pn_data_next(f);
        if (pn_data_type(f) == PN_STRING) {
            pn_bytes_t s = pn_data_get_string(f);
            snprintf(buf, len, "%.*s", (int)s.size, s.start);
            pn_data_exit(f);
            return buf;
        }
        pn_data_exit(f);
    }
    return NULL;
}

/* Where a receiver starts: from its selector, or the end. -1 with *why on a filter we
 * do not understand. */
static int start_position(emu_partition *p, const char *sel, uint64_t *cursor, const char **why)
{
    *cursor = p->next_seq;
    if (!sel)
        return 0;
    const char *prefix = "amqp.annotation.";
    if (strncmp(sel, prefix, strlen(prefix))) {
        *why = "the selector must name amqp.annotation.x-opt-offset, x-opt-sequence-number or "
               "x-opt-enqueued-time";
        return -1;
    }
    char field[64], op[3], value[64];
    if (sscanf(sel + strlen(prefix), "%63[a-z-] %2[>=] %63s", field, op, value) != 3) {
        *why = "the selector is not of the form \"amqp.annotation.FIELD > VALUE\"";
        return -1;
    }
    int inclusive = !strcmp(op, ">=");
    if (strcmp(op, ">") && !inclusive) {
        *why = "the selector's operator must be > or >=";
        return -1;
    }
    char *v = value;
    size_t vl = strlen(v);
    if (vl >= 2 && v[0] == '\'' && v[vl - 1] == '\'') {
        v[vl - 1] = '\0';
        v++;
    }
    uint64_t oldest = p->next_seq - p->count;
    if (!strcmp(field, "x-opt-offset")) {
        if (!strcmp(v, "@latest"))
            return 0;
        if (!strcmp(v, "-1")) {
            *cursor = oldest;
            return 0;
        }
        char *end;
        unsigned long long off = strtoull(v, &end, 10);
        if (*end || end == v) {
            *why = "x-opt-offset must be a number, -1 or @latest";
            return -1;
        }
        for (uint64_t s = oldest; s < p->next_seq; s++) {
            emu_event *e = event_at(p, s);
            if (inclusive ? e->offset >= off : e->offset > off) {
                *cursor = s;
                return 0;
            }
        }
        return 0;
    }
    char *end;
    long long n = strtoll(v, &end, 10);
    if (*end || end == v) {
        *why = "the selector's value must be a number";
        return -1;
    }
    if (!strcmp(field, "x-opt-sequence-number")) {
        int64_t first = inclusive ? n : n + 1;
        *cursor = first < 0 ? 0 : (uint64_t)first;
        if (*cursor > p->next_seq)
            *cursor = p->next_seq;
        return 0;
    }
    if (!strcmp(field, "x-opt-enqueued-time")) {
        for (uint64_t s = oldest; s < p->next_seq; s++) {
            emu_event *e = event_at(p, s);
            if (inclusive ? e->time_ms >= n : e->time_ms > n) {
                *cursor = s;
                return 0;
            }
        }
        return 0;
    }
    *why = "the selector must name x-opt-offset, x-opt-sequence-number or x-opt-enqueued-time";
    return -1;
}

const char *emu_events_attach(emu_link *l, int partition, const char **why)
{
    emu_hub *hub = l->conn->hub;
    if (partition < 0 || partition >= hub->events->partitions) {
        *why = "no such partition";
        return "amqp:not-found";
    }
    char buf[256];
    const char *sel = selector_text(l->link, buf, sizeof buf);
    if (start_position(&hub->events->p[partition], sel, &l->cursor, why))
        return "amqp:invalid-field";
    l->partition = partition;
    iotgw_list_push_front(&hub->streams, &l->stream);
    return NULL;
}

void emu_events_detach(emu_link *l)
{
    iotgw_list_remove(&l->stream);
}
