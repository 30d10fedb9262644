#include "codecs/iothub_mqtt.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/percent.h"

/* The longest topic name MQTT can carry (a UTF-8 string with a 16-bit length). */
#define TOPIC_MAX 65535u
/* How much of an offending topic a diagnostic quotes. */
#define QUOTE_MAX 96

/* ------------------------------------------------------------------ helpers */

/* Copy s[0..n) into buf for quoting in a diagnostic: at most QUOTE_MAX bytes, bytes that
 * are not printable ASCII as '?', "..." when cut, so that the text stays one line. */
static const char *quote(char buf[QUOTE_MAX + 4], const uint8_t *s, size_t n)
{
    size_t k = n < QUOTE_MAX ? n : QUOTE_MAX;
    for (size_t i = 0; i < k; i++)
        buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
    if (k < n) {
        memcpy(buf + k, "...", 4);
    } else {
        buf[k] = '\0';
    }
    return buf;
}

/* Does s[0..n) start with the NUL-terminated prefix p? */
static int starts(const uint8_t *s, size_t n, const char *p)
{
    size_t k = strlen(p);
    return n >= k && memcmp(s, p, k) == 0;
}

static int equals(const uint8_t *s, size_t n, const char *p)
{
    return n == strlen(p) && memcmp(s, p, n) == 0;
}

/* The length of s[0..n) up to its first c (n when there is none). */
static size_t span_to(const uint8_t *s, size_t n, uint8_t c)
{
    const uint8_t *e = memchr(s, c, n);
    return e ? (size_t)(e - s) : n;
}

static iotgw_mqtt_bytes bytes(const uint8_t *s, size_t n)
{
    iotgw_mqtt_bytes b = {s, n};
    return b;
}

/* ------------------------------------------------------------------ user name */

/* The value of the first "name=value" item of an '&' list whose name is name (raw), or
 * len 0. */
static iotgw_mqtt_bytes query_field(iotgw_mqtt_bytes q, const char *name)
{
    size_t i = 0;
    while (i < q.len) {
        size_t n = span_to(q.data + i, q.len - i, '&');
        size_t k = span_to(q.data + i, n, '=');
        if (k < n && equals(q.data + i, k, name))
            return bytes(q.data + i + k + 1, n - k - 1);
        i += n + 1;
    }
    return bytes(NULL, 0);
}

int iotgw_iothub_username_parse(const uint8_t *name, size_t len, iotgw_iothub_username *out, iotgw_diag *diag)
{
    static const char form[] = "expected {host}/{device}/?api-version=...";
    memset(out, 0, sizeof *out);
    size_t h = span_to(name, len, '/');
    if (h == 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC,
                               "user name has no host name before its first '/' (%s)", form);
    if (h == len)
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC,
                               "user name has no device id after the host name (%s)", form);
    const uint8_t *p = name + h + 1;
    size_t n = len - h - 1;
    size_t d = span_to(p, n, '/');
    if (d == 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC,
                               "user name has no device id after the host name (%s)", form);
    iotgw_iothub_username u;
    memset(&u, 0, sizeof u);
    u.host = bytes(name, h);
    u.device = bytes(p, d);
    if (d < n) {
        /* r: what follows "{host}/{device}/": "?query", "query" (some clients leave out the
         * '?'), "{module}", "{module}/", "{module}/?query" or "{module}/query". A module id
         * cannot hold '/', and an '=' before the next '/' means a query. */
        const uint8_t *r = p + d + 1;
        size_t rn = n - d - 1;
        size_t s = span_to(r, rn, '/');
        int is_query = rn > 0 && (r[0] == '?' || memchr(r, '=', s) != NULL);
        if (rn == 0) {
            /* "{host}/{device}/" */
        } else if (is_query) {
            u.query = r[0] == '?' ? bytes(r + 1, rn - 1) : bytes(r, rn);
        } else {
            if (s == 0)
                return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC,
                                       "user name has an empty module id after the device id (%s)", form);
            u.module = bytes(r, s);
            if (s < rn) {
                const uint8_t *q = r + s + 1;
                size_t qn = rn - s - 1;
                u.query = qn > 0 && q[0] == '?' ? bytes(q + 1, qn - 1) : bytes(q, qn);
            }
        }
    }
    u.api_version = query_field(u.query, "api-version");
    u.model_id = query_field(u.query, "model-id");
    *out = u;
    return IOTGW_OK;
}

/* ------------------------------------------------------------------ property bags */

/* Decode one name or value into storage at *fill (NUL-terminated), through
 * iotgw_percent_decode (which allocates; its result is copied into the one block). */
static int decode_part(const uint8_t *s, size_t n, char *storage, size_t *fill, const char **res)
{
    char *tmp = NULL;
    int rc = iotgw_percent_decode((const char *)s, n, &tmp, NULL);
    if (rc)
        return rc;
    size_t k = strlen(tmp); /* no encoded NUL: the decoder refuses %00 */
    memcpy(storage + *fill, tmp, k + 1);
    free(tmp);
    *res = storage + *fill;
    *fill += k + 1;
    return IOTGW_OK;
}

int iotgw_mqtt_props_parse(const uint8_t *bag, size_t len, iotgw_mqtt_props *out, iotgw_diag *diag)
{
    out->count = 0;
    out->storage = NULL;
    /* Each item "n=v" of k bytes decodes to at most k + 1 bytes with its two NULs, and a
     * bare "n" to k + 2: the bag's length plus two per item (at most one more item than
     * '&'s) is enough. */
    size_t items = 1;
    for (size_t i = 0; i < len; i++)
        items += bag[i] == '&';
    size_t cap = len + 2 * items;
    char *storage = malloc(cap);
    if (!storage)
        return IOTGW_ERR_NOMEM;
    size_t fill = 0, count = 0;
    size_t i = 0;
    while (i < len) {
        const uint8_t *it = bag + i;
        size_t n = span_to(it, len - i, '&');
        size_t at = i;
        i += n + 1;
        if (n == 0)
            continue; /* "&&" or a trailing '&' */
        size_t k = span_to(it, n, '=');
        if (k == 0) {
            free(storage);
            return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC,
                                   "property bag: the item at offset %zu has an empty name", at);
        }
        if (count == IOTGW_MQTT_MAX_PROPS) {
            free(storage);
            return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC, "property bag has more than %d properties",
                                   IOTGW_MQTT_MAX_PROPS);
        }
        iotgw_mqtt_prop *p = &out->item[count];
        int rc = decode_part(it, k, storage, &fill, &p->name);
        const char *part = "name";
        if (!rc) {
            part = "value";
            rc = k < n ? decode_part(it + k + 1, n - k - 1, storage, &fill, &p->value)
                       : decode_part(it, 0, storage, &fill, &p->value);
        }
        if (rc) {
            free(storage);
            if (rc == IOTGW_ERR_NOMEM)
                return rc;
            return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC,
                                   "property bag: the %s of the item at offset %zu has a bad percent-escape "
                                   "('%%' must be followed by two hex digits, and %%00 is not allowed)",
                                   part, at);
        }
        count++;
    }
    out->count = count;
    out->storage = storage;
    return IOTGW_OK;
}

void iotgw_mqtt_props_free(iotgw_mqtt_props *p)
{
    if (!p)
        return;
    free(p->storage);
    p->storage = NULL;
    p->count = 0;
}

const char *iotgw_mqtt_props_get(const iotgw_mqtt_props *p, const char *name)
{
    for (size_t i = 0; i < p->count; i++)
        if (strcmp(p->item[i].name, name) == 0)
            return p->item[i].value;
    return NULL;
}

typedef struct growbuf {
    char *data;
    size_t len, cap;
} growbuf;

/* Append s[0..k) to b, keeping it NUL-terminated. */
static int append(growbuf *b, const char *s, size_t k)
{
    if (b->len + k + 1 > b->cap) {
        size_t ncap = (b->len + k + 1) * 2;
        char *nd = realloc(b->data, ncap);
        if (!nd)
            return IOTGW_ERR_NOMEM;
        b->data = nd;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, s, k);
    b->len += k;
    b->data[b->len] = '\0';
    return IOTGW_OK;
}

/* Append s percent-encoded (iotgw_percent_encode, as encodeURIComponent). */
static int append_encoded(growbuf *b, const char *s)
{
    char *e = iotgw_percent_encode(s);
    if (!e)
        return IOTGW_ERR_NOMEM;
    int rc = append(b, e, strlen(e));
    free(e);
    return rc;
}

char *iotgw_mqtt_props_format(const iotgw_mqtt_prop *items, size_t n)
{
    growbuf b = {NULL, 0, 0};
    if (append(&b, "", 0))
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].name || !items[i].name[0])
            goto fail; /* "=v" would not parse back */
        if ((i > 0 && append(&b, "&", 1)) || append_encoded(&b, items[i].name) || append(&b, "=", 1) ||
            append_encoded(&b, items[i].value ? items[i].value : ""))
            goto fail;
        if (b.len > TOPIC_MAX)
            goto fail;
    }
    return b.data;
fail:
    free(b.data);
    return NULL;
}

/* ------------------------------------------------------------------ what a device publishes */

static const char telemetry_hint[] = "telemetry goes to devices/{id}/messages/events/";
static const char iothub_hint[] = "a device publishes to $iothub/methods/res/{status}/?$rid={rid}, "
                                  "$iothub/twin/GET/?$rid={rid} or "
                                  "$iothub/twin/PATCH/properties/reported/?$rid={rid}";

static int not_served(iotgw_diag *diag, const uint8_t *topic, size_t len, const char *hint)
{
    char q[QUOTE_MAX + 4];
    return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC, "topic '%s' is not one IoT Hub serves (%s)",
                           quote(q, topic, len), hint);
}

/* Telemetry: t[0..n) is what follows "devices/". */
static int parse_telemetry(const uint8_t *topic, size_t len, const uint8_t *t, size_t n,
                           iotgw_iothub_publish_topic *out, iotgw_diag *diag)
{
    char q[QUOTE_MAX + 4];
    size_t d = span_to(t, n, '/');
    if (d == 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC, "topic '%s' has an empty device id (%s)",
                               quote(q, topic, len), telemetry_hint);
    if (d == n)
        return not_served(diag, topic, len, telemetry_hint);
    out->device = bytes(t, d);
    const uint8_t *r = t + d + 1;
    size_t rn = n - d - 1;
    if (starts(r, rn, "modules/")) {
        r += 8;
        rn -= 8;
        size_t m = span_to(r, rn, '/');
        if (m == 0)
            return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC, "topic '%s' has an empty module id (%s)",
                                   quote(q, topic, len),
                                   "module telemetry goes to devices/{id}/modules/{module}/messages/events/");
        if (m == rn)
            return not_served(diag, topic, len, telemetry_hint);
        out->module = bytes(r, m);
        r += m + 1;
        rn -= m + 1;
    }
    static const char events[] = "messages/events";
    if (!starts(r, rn, events))
        return not_served(diag, topic, len, telemetry_hint);
    r += sizeof events - 1;
    rn -= sizeof events - 1;
    if (rn > 0) {
        if (r[0] != '/')
            return not_served(diag, topic, len, telemetry_hint);
        r++;
        rn--;
        if (rn > 0 && r[rn - 1] == '/')
            rn--; /* "events/{bag}/" as some SDKs write it */
        if (rn > 0)
            out->bag = bytes(r, rn);
    }
    out->kind = IOTGW_IOTHUB_TELEMETRY;
    return IOTGW_OK;
}

/* "?$rid={rid}" at r[0..n): the rid, never empty. */
static int parse_rid(const uint8_t *topic, size_t len, const uint8_t *r, size_t n, iotgw_mqtt_bytes *rid,
                     iotgw_diag *diag)
{
    char q[QUOTE_MAX + 4];
    if (!starts(r, n, "?$rid="))
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC, "topic '%s' has no ?$rid= (%s)",
                               quote(q, topic, len), iothub_hint);
    if (n == 6)
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC, "topic '%s' has an empty $rid",
                               quote(q, topic, len));
    *rid = bytes(r + 6, n - 6);
    return IOTGW_OK;
}

int iotgw_iothub_publish_topic_parse(const uint8_t *topic, size_t len, iotgw_iothub_publish_topic *out,
                                     iotgw_diag *diag)
{
    static const char res[] = "$iothub/methods/res/";
    static const char get[] = "$iothub/twin/GET/";
    static const char reported[] = "$iothub/twin/PATCH/properties/reported/";
    char q[QUOTE_MAX + 4];
    iotgw_iothub_publish_topic t;
    memset(&t, 0, sizeof t);
    memset(out, 0, sizeof *out);
    int rc;
    if (starts(topic, len, "devices/")) {
        if ((rc = parse_telemetry(topic, len, topic + 8, len - 8, &t, diag)))
            return rc;
    } else if (starts(topic, len, res)) {
        const uint8_t *s = topic + sizeof res - 1;
        size_t n = len - (sizeof res - 1);
        size_t k = span_to(s, n, '/');
        int ok =
            k == 3 && s[0] >= '1' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9';
        if (!ok)
            return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC,
                                   "topic '%s': a method response's status must be a number from 100 to 999",
                                   quote(q, topic, len));
        if (k == n)
            return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC, "topic '%s' has no ?$rid= (%s)",
                                   quote(q, topic, len), iothub_hint);
        t.status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
        if ((rc = parse_rid(topic, len, s + 4, n - 4, &t.rid, diag)))
            return rc;
        t.kind = IOTGW_IOTHUB_METHOD_RESPONSE;
    } else if (starts(topic, len, get)) {
        if ((rc = parse_rid(topic, len, topic + sizeof get - 1, len - (sizeof get - 1), &t.rid, diag)))
            return rc;
        t.kind = IOTGW_IOTHUB_TWIN_GET;
    } else if (starts(topic, len, reported)) {
        if ((rc = parse_rid(topic, len, topic + sizeof reported - 1, len - (sizeof reported - 1), &t.rid,
                            diag)))
            return rc;
        /* An optional "&$version={n}" at the end is not part of the rid. */
        static const char ver[] = "&$version=";
        const size_t vk = sizeof ver - 1;
        for (size_t i = t.rid.len; i-- > 0;) {
            if (i + vk > t.rid.len || memcmp(t.rid.data + i, ver, vk) != 0)
                continue;
            size_t digits = t.rid.len - i - vk;
            int ok = digits > 0 && digits <= 19;
            for (size_t j = 0; ok && j < digits; j++)
                ok = t.rid.data[i + vk + j] >= '0' && t.rid.data[i + vk + j] <= '9';
            if (!ok || i == 0)
                return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC,
                                       "topic '%s': $version must be a number after a non-empty $rid",
                                       quote(q, topic, len));
            t.rid.len = i;
            break;
        }
        t.kind = IOTGW_IOTHUB_TWIN_REPORTED;
    } else if (starts(topic, len, "$iothub/")) {
        return not_served(diag, topic, len, iothub_hint);
    } else {
        return not_served(diag, topic, len, telemetry_hint);
    }
    *out = t;
    return IOTGW_OK;
}

/* ------------------------------------------------------------------ what a device subscribes to */

int iotgw_iothub_filter_parse(const uint8_t *filter, size_t len, iotgw_iothub_filter_kind *kind,
                              iotgw_mqtt_bytes *device, iotgw_diag *diag)
{
    static const char hint[] = "a device subscribes to devices/{id}/messages/devicebound/#, "
                               "$iothub/methods/POST/#, $iothub/twin/res/# or "
                               "$iothub/twin/PATCH/properties/desired/#";
    static const struct {
        const char *filter;
        iotgw_iothub_filter_kind kind;
    } fixed[] = {
        {"$iothub/methods/POST/#", IOTGW_IOTHUB_SUB_METHODS},
        {"$iothub/twin/res/#", IOTGW_IOTHUB_SUB_TWIN_RESPONSES},
        {"$iothub/twin/PATCH/properties/desired/#", IOTGW_IOTHUB_SUB_TWIN_DESIRED},
    };
    char q[QUOTE_MAX + 4];
    *device = bytes(NULL, 0);
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (equals(filter, len, fixed[i].filter)) {
            *kind = fixed[i].kind;
            return IOTGW_OK;
        }
    }
    if (starts(filter, len, "devices/")) {
        const uint8_t *t = filter + 8;
        size_t n = len - 8;
        size_t d = span_to(t, n, '/');
        if (d < n && (equals(t + d, n - d, "/messages/devicebound/#") ||
                      equals(t + d, n - d, "/messages/devicebound/"))) {
            if (d == 0 || memchr(t, '+', d) || memchr(t, '#', d))
                return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC,
                                       "topic filter '%s' names no single device (a device subscribes to its "
                                       "own devices/{id}/messages/devicebound/#)",
                                       quote(q, filter, len));
            *kind = IOTGW_IOTHUB_SUB_C2D;
            *device = bytes(t, d);
            return IOTGW_OK;
        }
    }
    return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOPIC, "topic filter '%s' is not one IoT Hub serves (%s)",
                           quote(q, filter, len), hint);
}

/* ------------------------------------------------------------------ what the hub publishes */

/* printf into a malloc'd string; NULL when out of memory, or when the result is no
 * topic name MQTT can carry (longer than 65,535 bytes, or holding a wildcard). */
static char *topic_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *topic_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n > TOPIC_MAX)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    if (strpbrk(s, "+#")) {
        free(s);
        return NULL;
    }
    return s;
}

char *iotgw_iothub_c2d_topic(const char *device, const char *bag)
{
    if (!device || !device[0])
        return NULL;
    return topic_printf("devices/%s/messages/devicebound/%s", device, bag ? bag : "");
}

char *iotgw_iothub_method_topic(const char *name, const char *rid)
{
    if (!name || !name[0] || !rid || !rid[0])
        return NULL;
    return topic_printf("$iothub/methods/POST/%s/?$rid=%s", name, rid);
}

char *iotgw_iothub_twin_response_topic(int status, const char *rid, int64_t version)
{
    if (!rid || !rid[0])
        return NULL;
    if (version >= 0)
        return topic_printf("$iothub/twin/res/%d/?$rid=%s&$version=%" PRId64, status, rid, version);
    return topic_printf("$iothub/twin/res/%d/?$rid=%s", status, rid);
}

char *iotgw_iothub_desired_topic(int64_t version)
{
    return topic_printf("$iothub/twin/PATCH/properties/desired/?$version=%" PRId64, version);
}
