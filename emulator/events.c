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
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <proton/codec.h>
#include <proton/connection.h>
#include <proton/delivery.h>

#include "emulator/hub_internal.h"
#include "transport/amqp_map.h"
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
    uint64_t last_offset; /* of the newest event (next_seq > 0), retained or not */
    int64_t last_time_ms;
} emu_partition;

struct emu_events {
    int partitions;
    size_t max_count, max_bytes; /* per partition */
    int64_t created_ms;          /* the event hub's created_at: when the hub started */
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
    ev->created_ms = emu_wall_ms();
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
    p->last_offset = e->offset;
    p->last_time_ms = time_ms;
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
    /* a reader that drains (the Event Hubs SDKs do, when a batch's wait is over) learns
     * that nothing more is there now: its credit is used up, as Event Hubs answers */
    if (l->cursor >= p->next_seq && pn_link_get_drain(l->link) && pn_link_credit(l->link) > 0)
        pn_link_drained(l->link);
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

/* The reader's com.microsoft:epoch link property (Event Hubs' owner level), or -1. */
static int64_t link_epoch(pn_link_t *link)
{
    int64_t v;
    if (iotgw_map_int(pn_link_remote_properties(link), "com.microsoft:epoch", &v) || v < 0)
        return -1;
    return v;
}

/* Its com.microsoft:receiver-name, or "nil" as Event Hubs writes a reader without one. */
static const char *receiver_name(emu_link *l, char *buf, size_t len)
{
    const char *n =
        iotgw_map_text(pn_link_remote_properties(l->link), "com.microsoft:receiver-name", buf, len);
    return n ? n : "nil";
}

static char reader_why[600]; /* the event loop's only: *why points here until the next attach */

static const char *reader_refused(const char *cond, const char **why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *reader_refused(const char *cond, const char **why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reader_why, sizeof reader_why, fmt, ap);
    va_end(ap);
    *why = reader_why;
    return cond;
}

#define READERS_PER_GROUP 5 /* Event Hubs' limit per partition and consumer group, without epoch */

/* Event Hubs' epoch rules, in its words: a reader with epoch e detaches those of the same
 * partition and consumer group with an epoch <= e or none; a lower epoch than one
 * attached, or none while one with an epoch is attached, is refused. */
static const char *admit_reader(emu_hub *hub, emu_link *l, const char **why)
{
    char mine[128], theirs[128];
    int plain = 0;
    emu_link *o;
    IOTGW_LIST_FOREACH (o, &hub->streams, emu_link, stream) {
        if (o->partition != l->partition || strcasecmp(o->consumer_group, l->consumer_group))
            continue;
        if (l->epoch < 0 && o->epoch >= 0)
            return reader_refused(
                "amqp:link:stolen", why,
                "At least one receiver for the endpoint is created with epoch of '%" PRId64
                "', and so non-epoch receiver is not allowed. Either reconnect with a higher "
                "epoch, or make sure all epoch receivers are closed or disconnected.",
                o->epoch);
        if (l->epoch >= 0 && o->epoch > l->epoch)
            return reader_refused(
                "amqp:link:stolen", why,
                "Receiver '%s' with a higher epoch '%" PRId64 "' already exists. A new receiver "
                "with epoch '%" PRId64 "' cannot be created. Make sure you are creating receiver "
                "with increasing epoch value to ensure connectivity, or ensure all old epoch "
                "receivers are closed or disconnected.",
                receiver_name(o, theirs, sizeof theirs), o->epoch, l->epoch);
        plain += o->epoch < 0;
    }
    if (l->epoch < 0 && plain >= READERS_PER_GROUP)
        return reader_refused(
            "amqp:resource-limit-exceeded", why,
            "Exceeded the maximum number of allowed receivers per partition in a consumer group "
            "which is %d. (partition %d, consumer group %s)",
            READERS_PER_GROUP, l->partition, l->consumer_group);
    if (l->epoch < 0)
        return NULL;
    IOTGW_LIST_FOREACH (o, &hub->streams, emu_link, stream) {
        if (o->partition != l->partition || strcasecmp(o->consumer_group, l->consumer_group))
            continue;
        char text[600], epoch[24] = "nil";
        if (o->epoch >= 0)
            snprintf(epoch, sizeof epoch, "%" PRId64, o->epoch);
        snprintf(text, sizeof text,
                 "New receiver '%s' with higher epoch of '%" PRId64
                 "' is created hence current receiver '%s' with "
                 "epoch '%s' is getting disconnected. If you are recreating the receiver, make sure a higher "
                 "epoch "
                 "is used.",
                 receiver_name(l, mine, sizeof mine), l->epoch, receiver_name(o, theirs, sizeof theirs),
                 epoch);
        iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": reader \"%s\" of partition %d detached: %s",
                  o->conn->serial, pn_link_name(o->link), o->partition, text);
        emu_events_detach(o);
        o->kind = EMU_LINK_REFUSED;
        iotgw_link_close_with(o->link, "amqp:link:stolen", text);
        if (o->conn->conn)
            iotgw_conn_wake(o->conn->conn);
    }
    return NULL;
}

const char *emu_events_attach(emu_link *l, int partition, const char *consumer_group, const char **why)
{
    emu_hub *hub = l->conn->hub;
    if (partition < 0 || partition >= hub->events->partitions)
        return reader_refused(
            "com.microsoft:argument-out-of-range", why,
            "The specified partition is invalid for an EventHub partition sender or receiver. It "
            "should be between 0 and %d.",
            hub->events->partitions - 1);
    char buf[256];
    const char *sel = selector_text(l->link, buf, sizeof buf);
    if (start_position(&hub->events->p[partition], sel, &l->cursor, why))
        return "amqp:invalid-field";
    l->partition = partition;
    l->epoch = link_epoch(l->link);
    free(l->consumer_group);
    if (!(l->consumer_group = strdup(consumer_group ? consumer_group : "$Default")))
        return reader_refused("amqp:internal-error", why, "out of memory");
    const char *cond = admit_reader(hub, l, why);
    if (cond)
        return cond;
    iotgw_list_push_front(&hub->streams, &l->stream);
    return NULL;
}

void emu_events_detach(emu_link *l)
{
    iotgw_list_remove(&l->stream);
}

/* ------------------------------------------------------------------ $management */

int emu_events_management_address(const char *address, char *event_hub, size_t len)
{
    if (len)
        event_hub[0] = '\0';
    if (!address)
        return EMU_MGMT_NONE;
    const char *p = address;
    static const char *const schemes[] = {"amqps://", "amqp://", "sb://"};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (!strncasecmp(p, schemes[i], strlen(schemes[i]))) {
            p = strchr(p + strlen(schemes[i]), '/');
            if (!p)
                return EMU_MGMT_NONE;
            break;
        }
    if (*p == '/')
        p++;
    if (!strcmp(p, "$management"))
        return EMU_MGMT_EVENT_HUB;
    if (!strcasecmp(p, "messages/events/$management"))
        return EMU_MGMT_IOTHUB;
    const char *slash = strchr(p, '/');
    if (slash && slash > p && !strcmp(slash + 1, "$management") && (size_t)(slash - p) < len) {
        memcpy(event_hub, p, (size_t)(slash - p));
        event_hub[slash - p] = '\0';
        return EMU_MGMT_EVENT_HUB;
    }
    return EMU_MGMT_NONE;
}

typedef struct mgmt_status {
    int code;
    const char *condition; /* error-condition, or NULL */
    char description[600];
} mgmt_status;

static int mgmt_fail(mgmt_status *st, int code, const char *condition, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int mgmt_fail(mgmt_status *st, int code, const char *condition, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    st->code = code;
    st->condition = condition;
    vsnprintf(st->description, sizeof st->description, fmt, ap);
    va_end(ap);
    return -1;
}

#define MGMT_TOKEN_MAX 4096

/* A request is authorized by its security_token (the Event Hubs clients send one, for
 * "sb://{host}/{event hub}") or, without one, by a ServiceConnect grant on the
 * connection (CBS put-token or SASL PLAIN). */
static int mgmt_authorize(emu_conn *c, pn_data_t *props, mgmt_status *st)
{
    emu_hub *hub = c->hub;
    char *tok = malloc(MGMT_TOKEN_MAX + 1);
    if (!tok)
        return mgmt_fail(st, 500, "amqp:internal-error", "out of memory");
    int rc = 0;
    if (iotgw_map_text(props, "security_token", tok, MGMT_TOKEN_MAX + 1)) {
        emu_auth a;
        if (emu_auth_token(hub, tok, NULL, &a))
            rc = mgmt_fail(st, a.status, a.status == 404 ? "amqp:not-found" : "amqp:unauthorized-access", "%s",
                           a.description);
        else if (!a.policy || !(a.policy->rights & EMU_RIGHT_SERVICE_CONNECT))
            rc = mgmt_fail(st, 401, "amqp:unauthorized-access",
                           "Unauthorized access. The security_token must be signed by a policy with ServiceConnect.");
    } else if (iotgw_map_find(props, "security_token") == 0) {
        rc = mgmt_fail(st, 401, "amqp:unauthorized-access", "the security_token is not a string, or too long");
    } else if (!(c->service_grant > emu_now_s() && (c->service_rights & EMU_RIGHT_SERVICE_CONNECT))) {
        rc = mgmt_fail(st, 401, "amqp:unauthorized-access",
                       "Unauthorized access. A $management request needs a ServiceConnect token: a CBS put-token "
                       "on the connection or the request's security_token.");
    }
    free(tok);
    return rc;
}

static void put_key(pn_data_t *d, const char *key)
{
    pn_data_put_string(d, pn_bytes(strlen(key), key));
}

static void put_text(pn_data_t *d, const char *key, const char *value)
{
    put_key(d, key);
    pn_data_put_string(d, pn_bytes(strlen(value), value));
}

/* READ com.microsoft:eventhub: name, type, created_at (timestamp), partition_count (int),
 * partition_ids (an array of strings). */
static void read_event_hub(emu_hub *hub, pn_data_t *body)
{
    emu_events *ev = hub->events;
    char id[16];
    pn_data_put_map(body);
    pn_data_enter(body);
    put_text(body, "name", hub->event_hub);
    put_text(body, "type", "com.microsoft:eventhub");
    put_key(body, "created_at");
    pn_data_put_timestamp(body, ev->created_ms);
    put_key(body, "partition_count");
    pn_data_put_int(body, ev->partitions);
    put_key(body, "partition_ids");
    pn_data_put_array(body, false, PN_STRING);
    pn_data_enter(body);
    for (int i = 0; i < ev->partitions; i++) {
        snprintf(id, sizeof id, "%d", i);
        pn_data_put_string(body, pn_bytes(strlen(id), id));
    }
    pn_data_exit(body);
    pn_data_exit(body);
}

/* READ com.microsoft:partition: name, type, partition (string), begin_sequence_number,
 * last_enqueued_sequence_number and last_enqueued_sequence_number_epoch (longs),
 * last_enqueued_offset (string), last_enqueued_time_utc (timestamp), is_partition_empty
 * (boolean). A partition that never had an event: -1, "-1" and the epoch of time. */
static void read_partition(emu_hub *hub, int n, pn_data_t *body)
{
    emu_partition *p = &hub->events->p[n];
    char text[32];
    int any = p->next_seq > 0;
    pn_data_put_map(body);
    pn_data_enter(body);
    put_text(body, "name", hub->event_hub);
    put_text(body, "type", "com.microsoft:partition");
    snprintf(text, sizeof text, "%d", n);
    put_text(body, "partition", text);
    put_key(body, "begin_sequence_number");
    pn_data_put_long(body, (int64_t)(p->next_seq - p->count));
    put_key(body, "last_enqueued_sequence_number");
    pn_data_put_long(body, (int64_t)p->next_seq - 1);
    put_key(body, "last_enqueued_sequence_number_epoch");
    pn_data_put_long(body, 0);
    if (any)
        snprintf(text, sizeof text, "%" PRIu64, p->last_offset);
    else
        snprintf(text, sizeof text, "-1");
    put_text(body, "last_enqueued_offset", text);
    put_key(body, "last_enqueued_time_utc");
    pn_data_put_timestamp(body, any ? p->last_time_ms : 0);
    put_key(body, "is_partition_empty");
    pn_data_put_bool(body, p->count == 0);
    pn_data_exit(body);
}

/* The hub's name: the host name's first label (what "name" may also say on IoT Hub's own
 * messages/events/$management node). */
static int names_the_hub(const emu_hub *hub, const char *name)
{
    size_t n = strcspn(hub->opt.hostname, ".");
    return strlen(name) == n && !strncasecmp(name, hub->opt.hostname, n);
}

static void mgmt_answer(emu_conn *c, pn_message_t *m, pn_data_t *body, mgmt_status *st)
{
    emu_hub *hub = c->hub;
    pn_data_t *props = pn_message_properties(m);
    char op[32], type[64], name[300], part[16];
    if (mgmt_authorize(c, props, st))
        return;
    if (!iotgw_map_text(props, "operation", op, sizeof op) || strcmp(op, "READ")) {
        mgmt_fail(st, 400, "amqp:not-implemented", "The operation '%s' is not supported; only READ is.",
                  iotgw_map_text(props, "operation", op, sizeof op) ? op : "");
        return;
    }
    if (!iotgw_map_text(props, "name", name, sizeof name)) {
        mgmt_fail(st, 400, "com.microsoft:argument-error", "The request has no entity name (name).");
        return;
    }
    if (strcasecmp(name, hub->event_hub) && !names_the_hub(hub, name)) {
        mgmt_fail(st, 404, "amqp:not-found", "The messaging entity 'sb://%s/%s' could not be found. (this hub's event "
                  "hub is %s)", hub->opt.hostname, name, hub->event_hub);
        return;
    }
    if (!iotgw_map_text(props, "type", type, sizeof type))
        type[0] = '\0';
    if (!strcmp(type, "com.microsoft:eventhub")) {
        read_event_hub(hub, body);
    } else if (!strcmp(type, "com.microsoft:partition")) {
        char *end = NULL;
        long n = iotgw_map_text(props, "partition", part, sizeof part) ? strtol(part, &end, 10) : -1;
        if (!end || end == part || *end || n < 0 || n >= hub->events->partitions) {
            mgmt_fail(st, 400, "com.microsoft:argument-out-of-range",
                      "The specified partition is invalid for an EventHub partition sender or receiver. It should "
                      "be between 0 and %d.",
                      hub->events->partitions - 1);
            return;
        }
        read_partition(hub, (int)n, body);
    } else {
        mgmt_fail(st, 400, "com.microsoft:argument-error",
                  "The entity type '%s' is not supported: com.microsoft:eventhub or com.microsoft:partition.", type);
        return;
    }
    st->code = 200;
    snprintf(st->description, sizeof st->description, "OK");
}

void emu_events_on_management(emu_link *l, pn_delivery_t *d)
{
    emu_conn *c = l->conn;
    pn_message_t *m = emu_take_request(l, d, "$management request");
    if (!m)
        return;
    iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);
    if (c->conn) /* the disposition before the answer, as for CBS */
        iotgw_conn_encode_pending(c->conn);
    pn_message_t *reply = pn_message();
    if (!reply)
        return;
    mgmt_status st = {0};
    mgmt_answer(c, m, pn_message_body(reply), &st);
    if (st.code != 200) {
        pn_data_clear(pn_message_body(reply));
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": $management request refused (%d): %s", c->serial, st.code,
                  st.description);
    }
    pn_message_set_correlation_id(reply, pn_message_get_id(m));
    pn_data_t *ap = pn_message_properties(reply);
    pn_data_put_map(ap);
    pn_data_enter(ap);
    put_key(ap, "status-code");
    pn_data_put_int(ap, st.code);
    put_text(ap, "status-description", st.description);
    if (st.condition) {
        put_key(ap, "error-condition");
        pn_data_put_symbol(ap, pn_bytes(strlen(st.condition), st.condition));
    }
    pn_data_exit(ap);
    emu_link *out = emu_reply_link(l, EMU_LINK_MGMT_REPLIES, pn_message_get_reply_to(m));
    if (!out || emu_link_answer(out, reply))
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": $management: no receiver link for the answer", c->serial);
    pn_message_free(reply);
}
