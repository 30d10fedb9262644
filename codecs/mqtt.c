#include "codecs/mqtt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A buffer grown past this for one large packet is released once that packet is handed
 * out, so that 10k idle connections do not each keep their largest packet's memory. */
#define MQTT_BUFFER_KEEP 4096

/* The packet types each role receives (bit n: type n); each role sends the other's. */
#define BIT(t) (1u << (t))
#define SERVER_RECEIVES                                                                                      \
    (BIT(IOTGW_MQTT_CONNECT) | BIT(IOTGW_MQTT_PUBLISH) | BIT(IOTGW_MQTT_PUBACK) | BIT(IOTGW_MQTT_PUBREC) |   \
     BIT(IOTGW_MQTT_PUBREL) | BIT(IOTGW_MQTT_PUBCOMP) | BIT(IOTGW_MQTT_SUBSCRIBE) |                          \
     BIT(IOTGW_MQTT_UNSUBSCRIBE) | BIT(IOTGW_MQTT_PINGREQ) | BIT(IOTGW_MQTT_DISCONNECT))
#define CLIENT_RECEIVES                                                                                      \
    (BIT(IOTGW_MQTT_CONNACK) | BIT(IOTGW_MQTT_PUBLISH) | BIT(IOTGW_MQTT_PUBACK) | BIT(IOTGW_MQTT_PUBREC) |   \
     BIT(IOTGW_MQTT_PUBREL) | BIT(IOTGW_MQTT_PUBCOMP) | BIT(IOTGW_MQTT_SUBACK) | BIT(IOTGW_MQTT_UNSUBACK) |  \
     BIT(IOTGW_MQTT_PINGRESP))

/* CONNECT flags (3.1.2.3). */
#define CF_RESERVED       0x01
#define CF_CLEAN_SESSION  0x02
#define CF_WILL           0x04
#define CF_WILL_QOS_SHIFT 3
#define CF_WILL_RETAIN    0x20
#define CF_PASSWORD       0x40
#define CF_USERNAME       0x80

static const char *const type_names[16] = {
    [IOTGW_MQTT_CONNECT] = "CONNECT",   [IOTGW_MQTT_CONNACK] = "CONNACK",
    [IOTGW_MQTT_PUBLISH] = "PUBLISH",   [IOTGW_MQTT_PUBACK] = "PUBACK",
    [IOTGW_MQTT_PUBREC] = "PUBREC",     [IOTGW_MQTT_PUBREL] = "PUBREL",
    [IOTGW_MQTT_PUBCOMP] = "PUBCOMP",   [IOTGW_MQTT_SUBSCRIBE] = "SUBSCRIBE",
    [IOTGW_MQTT_SUBACK] = "SUBACK",     [IOTGW_MQTT_UNSUBSCRIBE] = "UNSUBSCRIBE",
    [IOTGW_MQTT_UNSUBACK] = "UNSUBACK", [IOTGW_MQTT_PINGREQ] = "PINGREQ",
    [IOTGW_MQTT_PINGRESP] = "PINGRESP", [IOTGW_MQTT_DISCONNECT] = "DISCONNECT",
};

const char *iotgw_mqtt_type_name(int type)
{
    if (type < 0 || type > 15 || !type_names[type])
        return "reserved";
    return type_names[type];
}

static unsigned receives(iotgw_mqtt_role role)
{
    return role == IOTGW_MQTT_SERVER ? SERVER_RECEIVES : role == IOTGW_MQTT_CLIENT ? CLIENT_RECEIVES : 0;
}

static int valid_role(iotgw_mqtt_role role)
{
    return role == IOTGW_MQTT_SERVER || role == IOTGW_MQTT_CLIENT;
}

/* The flags (low nibble of the first byte) a type must carry; PUBLISH's are its own. */
static unsigned required_flags(unsigned type)
{
    return type == IOTGW_MQTT_PUBREL || type == IOTGW_MQTT_SUBSCRIBE || type == IOTGW_MQTT_UNSUBSCRIBE ? 0x2
                                                                                                       : 0;
}

/* ------------------------------------------------------------------ strings */

/* 0 if s[0..n) is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
 * past U+10FFFF) without U+0000; 1 if it is not UTF-8; 2 if it holds U+0000. */
static int utf8_check(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == 0)
            return 2;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t more;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
            cp = c & 0x1F;
            min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            cp = c & 0x0F;
            min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return 1; /* a continuation byte first, an overlong 2-byte lead, or past U+10FFFF */
        }
        if (n - i <= more)
            return 1;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 1;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 1;
        i += more + 1;
    }
    return 0;
}

static int has_wildcard(const uint8_t *s, size_t n)
{
    return memchr(s, '+', n) || memchr(s, '#', n);
}

/* '+' fills a whole level; '#' fills the last level (4.7.1). */
static int filter_wildcards_ok(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '+' && s[i] != '#')
            continue;
        if (i > 0 && s[i - 1] != '/')
            return 0;
        if (s[i] == '#' ? i + 1 != n : i + 1 < n && s[i + 1] != '/')
            return 0;
    }
    return 1;
}

/* What a string field must be. */
enum str_kind {
    STR_BINARY,     /* any bytes: password, will message, the protocol name (not judged) */
    STR_UTF8,       /* client identifier, user name */
    STR_TOPIC_NAME, /* non-empty UTF-8 without wildcards */
    STR_FILTER,     /* non-empty UTF-8 with wildcards in their place */
};

/* Why b cannot be a string of this kind, or NULL if it can. */
static const char *str_problem(enum str_kind kind, iotgw_mqtt_bytes b)
{
    if (kind == STR_BINARY)
        return NULL;
    switch (utf8_check(b.data, b.len)) {
    case 1: return "is not valid UTF-8";
    case 2: return "holds U+0000";
    }
    if (kind == STR_UTF8)
        return NULL;
    if (b.len == 0)
        return "is empty";
    if (kind == STR_TOPIC_NAME && has_wildcard(b.data, b.len))
        return "has a wildcard";
    if (kind == STR_FILTER && !filter_wildcards_ok(b.data, b.len))
        return "has a misplaced wildcard";
    return NULL;
}

/* ------------------------------------------------------------------ decoding */

/* A packet body being read, and what to call it in a diag. */
struct reader {
    const uint8_t *p;
    size_t len, pos;
    const char *type; /* "CONNECT", ... */
    iotgw_diag *diag;
};

static int past_end(struct reader *r, const char *field)
{
    return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "%s: %s runs past the packet", r->type, field);
}

static int read_u8(struct reader *r, const char *field, uint8_t *v)
{
    if (r->len - r->pos < 1)
        return past_end(r, field);
    *v = r->p[r->pos++];
    return IOTGW_OK;
}

static int read_u16(struct reader *r, const char *field, uint16_t *v)
{
    if (r->len - r->pos < 2)
        return past_end(r, field);
    *v = (uint16_t)(r->p[r->pos] << 8 | r->p[r->pos + 1]);
    r->pos += 2;
    return IOTGW_OK;
}

static int read_packet_id(struct reader *r, uint16_t *v)
{
    int rc = read_u16(r, "packet identifier", v);
    if (rc == IOTGW_OK && *v == 0)
        return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "%s: packet identifier is 0", r->type);
    return rc;
}

/* A two-byte length and that many bytes, which must be a string of this kind. */
static int read_str(struct reader *r, enum str_kind kind, const char *field, iotgw_mqtt_bytes *out)
{
    uint16_t n;
    if (r->len - r->pos < 2 ||
        (n = (uint16_t)(r->p[r->pos] << 8 | r->p[r->pos + 1]), r->len - r->pos - 2 < n))
        return past_end(r, field);
    out->data = r->p + r->pos + 2;
    out->len = n;
    r->pos += 2 + (size_t)n;
    const char *why = str_problem(kind, *out);
    if (why)
        return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "%s: %s %s", r->type, field, why);
    return IOTGW_OK;
}

static int read_end(struct reader *r)
{
    if (r->pos != r->len)
        return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED,
                               "%s: %zu byte(s) left over after the last field", r->type, r->len - r->pos);
    return IOTGW_OK;
}

static int fixed_length(struct reader *r, size_t want)
{
    if (r->len != want)
        return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "%s: remaining length %zu, must be %zu",
                               r->type, r->len, want);
    return IOTGW_OK;
}

#define TRY(x)                                                                                               \
    do {                                                                                                     \
        int rc_ = (x);                                                                                       \
        if (rc_)                                                                                             \
            return rc_;                                                                                      \
    } while (0)

static int parse_connect(struct reader *r, iotgw_mqtt_connect *c)
{
    uint8_t flags = 0;
    TRY(read_str(r, STR_BINARY, "protocol name", &c->protocol_name));
    TRY(read_u8(r, "protocol level", &c->protocol_level));
    /* Another protocol level may lay out the rest differently (MQTT 5 has properties):
     * the server answers it with CONNACK 1 from the name and level alone. */
    if (c->protocol_level != IOTGW_MQTT_LEVEL_311)
        return IOTGW_OK;
    TRY(read_u8(r, "connect flags", &flags));
    if (flags & CF_RESERVED)
        return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "CONNECT: reserved connect flag is set");
    c->clean_session = !!(flags & CF_CLEAN_SESSION);
    c->has_will = !!(flags & CF_WILL);
    c->will_qos = (flags >> CF_WILL_QOS_SHIFT) & 3;
    c->will_retain = !!(flags & CF_WILL_RETAIN);
    c->has_password = !!(flags & CF_PASSWORD);
    c->has_username = !!(flags & CF_USERNAME);
    if (c->will_qos == 3)
        return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "CONNECT: will QoS 3");
    if (!c->has_will && (c->will_qos || c->will_retain))
        return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "CONNECT: will %s without a will",
                               c->will_qos ? "QoS" : "retain");
    if (c->has_password && !c->has_username)
        return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "CONNECT: password without a user name");
    TRY(read_u16(r, "keep alive", &c->keep_alive_s));
    TRY(read_str(r, STR_UTF8, "client identifier", &c->client_id));
    if (c->has_will) {
        TRY(read_str(r, STR_TOPIC_NAME, "will topic", &c->will_topic));
        TRY(read_str(r, STR_BINARY, "will message", &c->will_message));
    }
    if (c->has_username)
        TRY(read_str(r, STR_UTF8, "user name", &c->username));
    if (c->has_password)
        TRY(read_str(r, STR_BINARY, "password", &c->password));
    return read_end(r);
}

static int parse_publish(struct reader *r, uint8_t first, iotgw_mqtt_publish *p)
{
    p->dup = !!(first & 0x08);
    p->qos = (first >> 1) & 3;
    p->retain = first & 1;
    TRY(read_str(r, STR_TOPIC_NAME, "topic name", &p->topic));
    if (p->qos)
        TRY(read_packet_id(r, &p->packet_id));
    p->payload.data = r->p + r->pos;
    p->payload.len = r->len - r->pos;
    r->pos = r->len;
    return IOTGW_OK;
}

/* SUBSCRIBE and UNSUBSCRIBE: a packet identifier and 1..IOTGW_MQTT_MAX_FILTERS filters. */
static int parse_subscribe(struct reader *r, int with_qos, iotgw_mqtt_subscribe *s)
{
    TRY(read_packet_id(r, &s->packet_id));
    if (r->pos == r->len)
        return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "%s: no topic filters", r->type);
    while (r->pos < r->len) {
        if (s->count == IOTGW_MQTT_MAX_FILTERS)
            return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "%s: more than %d topic filters",
                                   r->type, IOTGW_MQTT_MAX_FILTERS);
        char field[48];
        snprintf(field, sizeof field, "topic filter %zu", s->count + 1);
        TRY(read_str(r, STR_FILTER, field, &s->filter[s->count]));
        if (with_qos) {
            uint8_t q = 0;
            snprintf(field, sizeof field, "requested QoS of topic filter %zu", s->count + 1);
            TRY(read_u8(r, field, &q));
            if (q > 2)
                return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "%s: %s is 0x%02x, must be 0..2",
                                       r->type, field, q);
            s->qos[s->count] = q;
        }
        s->count++;
    }
    return IOTGW_OK;
}

static int parse_suback(struct reader *r, iotgw_mqtt_suback *s)
{
    TRY(read_packet_id(r, &s->packet_id));
    if (r->pos == r->len)
        return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "SUBACK: no return codes");
    if (r->len - r->pos > IOTGW_MQTT_MAX_FILTERS)
        return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED, "SUBACK: more than %d return codes",
                               IOTGW_MQTT_MAX_FILTERS);
    while (r->pos < r->len) {
        uint8_t c = r->p[r->pos++];
        if (c > 2 && c != IOTGW_MQTT_SUBACK_FAILURE)
            return iotgw_diag_fail(r->diag, IOTGW_ERR_MQTT_MALFORMED,
                                   "SUBACK: return code 0x%02x for topic filter %zu", c, s->count + 1);
        s->code[s->count++] = c;
    }
    return IOTGW_OK;
}

/* The body of a packet whose first byte check_first_byte() has accepted. */
static int parse_body(uint8_t first, const uint8_t *body, size_t len, iotgw_mqtt_packet *out,
                      iotgw_diag *diag)
{
    unsigned type = first >> 4;
    struct reader r = {body, len, 0, iotgw_mqtt_type_name((int)type), diag};
    memset(out, 0, sizeof *out);
    out->type = (iotgw_mqtt_type)type;
    switch (type) {
    case IOTGW_MQTT_CONNECT: return parse_connect(&r, &out->u.connect);
    case IOTGW_MQTT_CONNACK: {
        TRY(fixed_length(&r, 2));
        uint8_t ack = body[0];
        if (ack & 0xFE)
            return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_MALFORMED,
                                   "CONNACK: reserved acknowledge flags 0x%02x", ack);
        out->u.connack.session_present = ack & 1;
        out->u.connack.return_code = body[1];
        return IOTGW_OK;
    }
    case IOTGW_MQTT_PUBLISH: return parse_publish(&r, first, &out->u.publish);
    case IOTGW_MQTT_PUBACK:
    case IOTGW_MQTT_PUBREC:
    case IOTGW_MQTT_PUBREL:
    case IOTGW_MQTT_PUBCOMP:
    case IOTGW_MQTT_UNSUBACK: TRY(fixed_length(&r, 2)); return read_packet_id(&r, &out->u.packet_id);
    case IOTGW_MQTT_SUBSCRIBE: return parse_subscribe(&r, 1, &out->u.subscribe);
    case IOTGW_MQTT_UNSUBSCRIBE: return parse_subscribe(&r, 0, &out->u.subscribe);
    case IOTGW_MQTT_SUBACK: return parse_suback(&r, &out->u.suback);
    default: /* PINGREQ, PINGRESP, DISCONNECT */ return fixed_length(&r, 0);
    }
}

/* The first byte: a type the role receives, with the flags that type must carry. */
static int check_first_byte(iotgw_mqtt_role role, uint8_t b, iotgw_diag *diag)
{
    unsigned type = b >> 4, flags = b & 0x0F;
    const char *name = iotgw_mqtt_type_name((int)type);
    if (type == 0 || type == 15)
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_MALFORMED, "reserved packet type %u", type);
    if (!(receives(role) & BIT(type)))
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_MALFORMED, "a %s does not send %s",
                               role == IOTGW_MQTT_SERVER ? "client" : "server", name);
    if (type == IOTGW_MQTT_PUBLISH) {
        if ((flags >> 1 & 3) == 3)
            return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_MALFORMED, "PUBLISH: QoS 3");
        if ((flags & 0x08) && !(flags & 0x06))
            return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_MALFORMED, "PUBLISH: DUP set on a QoS 0 message");
        return IOTGW_OK;
    }
    if (flags != required_flags(type))
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_MALFORMED, "%s: reserved flags 0x%x, must be 0x%x", name,
                               flags, required_flags(type));
    return IOTGW_OK;
}

/* Byte i (0-based) of the remaining length: adds it to *remaining; 1 when it was the
 * last, 0 when more follow, or the error for a fifth. */
static int length_byte(uint8_t first, unsigned i, uint8_t b, uint32_t *remaining, iotgw_diag *diag)
{
    *remaining |= (uint32_t)(b & 0x7F) << (7 * i);
    if (!(b & 0x80))
        return 1;
    if (i == 3)
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_MALFORMED, "%s: remaining length longer than 4 bytes",
                               iotgw_mqtt_type_name(first >> 4));
    return 0;
}

static int too_large(uint8_t first, uint64_t total, uint64_t max, iotgw_diag *diag)
{
    return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_TOO_LARGE, "%s: packet of %llu bytes over the limit of %llu",
                           iotgw_mqtt_type_name(first >> 4), (unsigned long long)total,
                           (unsigned long long)max);
}

void iotgw_mqtt_decoder_init(iotgw_mqtt_decoder *d, iotgw_mqtt_role role, uint32_t max_packet)
{
    memset(d, 0, sizeof *d);
    d->role = role;
    if (max_packet > IOTGW_MQTT_MAX_REMAINING + IOTGW_MQTT_MAX_FIXED_HEADER)
        max_packet = IOTGW_MQTT_MAX_REMAINING + IOTGW_MQTT_MAX_FIXED_HEADER;
    d->max_packet = max_packet;
}

void iotgw_mqtt_decoder_free(iotgw_mqtt_decoder *d)
{
    free(d->buf);
    d->buf = NULL;
    d->buf_cap = d->buf_fill = 0;
}

static void start_next_packet(iotgw_mqtt_decoder *d)
{
    d->header_len = 0;
    d->remaining = 0;
    d->have_header = 0;
    d->buf_fill = 0;
}

static int reserve(iotgw_mqtt_decoder *d, size_t need)
{
    if (need <= d->buf_cap)
        return IOTGW_OK;
    /* Grow by doubling as bytes actually arrive, never straight to the announced
     * length: a peer that announces a large packet and sends nothing costs nothing. */
    size_t cap = d->buf_cap ? d->buf_cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > d->remaining)
        cap = d->remaining;
    uint8_t *nb = realloc(d->buf, cap);
    if (!nb)
        return IOTGW_ERR_NOMEM;
    d->buf = nb;
    d->buf_cap = cap;
    return IOTGW_OK;
}

/* Reads the fixed header from in[*pos..len); sets d->have_header once it is complete. */
static int read_header(iotgw_mqtt_decoder *d, const uint8_t *in, size_t len, size_t *pos, iotgw_diag *diag)
{
    while (!d->have_header && *pos < len) {
        uint8_t b = in[(*pos)++];
        d->offset++;
        d->header[d->header_len++] = b;
        int rc = d->header_len == 1 ? check_first_byte(d->role, b, diag)
                                    : length_byte(d->header[0], d->header_len - 2, b, &d->remaining, diag);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            d->have_header = 1;
            uint64_t total = (uint64_t)d->header_len + d->remaining;
            if (total > d->max_packet)
                return too_large(d->header[0], total, d->max_packet, diag);
        }
    }
    return IOTGW_OK;
}

int iotgw_mqtt_decoder_next(iotgw_mqtt_decoder *d, const uint8_t *in, size_t len, size_t *consumed,
                            iotgw_mqtt_packet *out, iotgw_diag *diag)
{
    size_t pos = 0;
    *consumed = 0;
    if (d->error)
        return d->error;
    if ((!in && len) || !out || !valid_role(d->role))
        return IOTGW_ERR_INVALID_ARG;
    /* The last packet, which pointed into the buffer, is no longer the caller's. */
    if (d->header_len == 0 && d->buf_cap > MQTT_BUFFER_KEEP)
        iotgw_mqtt_decoder_free(d);

    int rc = read_header(d, in, len, &pos, diag);
    if (rc) {
        *consumed = pos;
        return d->error = rc;
    }
    if (!d->have_header) {
        *consumed = pos;
        return IOTGW_ERR_AGAIN;
    }

    size_t avail = len - pos;
    if (d->buf_fill == 0 && avail >= d->remaining) {
        /* The whole body is in the caller's buffer: decode it there, without copying. */
        static const uint8_t empty[1];
        const uint8_t *body = in ? in + pos : empty;
        uint8_t first = d->header[0];
        pos += d->remaining;
        d->offset += d->remaining;
        *consumed = pos;
        rc = parse_body(first, body, d->remaining, out, diag);
        start_next_packet(d);
        return rc ? (d->error = rc) : IOTGW_OK;
    }

    size_t take = d->remaining - d->buf_fill;
    if (take > avail)
        take = avail;
    if (take) {
        if (reserve(d, d->buf_fill + take)) {
            *consumed = pos;
            return d->error =
                       iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory buffering an MQTT packet");
        }
        memcpy(d->buf + d->buf_fill, in + pos, take);
        d->buf_fill += take;
        pos += take;
        d->offset += take;
    }
    *consumed = pos;
    if (d->buf_fill < d->remaining)
        return IOTGW_ERR_AGAIN;
    rc = parse_body(d->header[0], d->buf, d->remaining, out, diag);
    start_next_packet(d);
    return rc ? (d->error = rc) : IOTGW_OK;
}

int iotgw_mqtt_decoder_idle(const iotgw_mqtt_decoder *d)
{
    return !d->error && d->header_len == 0;
}

int iotgw_mqtt_decode(iotgw_mqtt_role role, const uint8_t *in, size_t len, iotgw_mqtt_packet *out,
                      iotgw_diag *diag)
{
    if ((!in && len) || !out || !valid_role(role))
        return IOTGW_ERR_INVALID_ARG;
    if (len == 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_MALFORMED, "empty packet");
    TRY(check_first_byte(role, in[0], diag));
    uint32_t remaining = 0;
    size_t pos = 1;
    for (int rc = 0; rc != 1; pos++) {
        if (pos == len)
            return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_MALFORMED, "%s: packet ends inside its fixed header",
                                   iotgw_mqtt_type_name(in[0] >> 4));
        rc = length_byte(in[0], (unsigned)pos - 1, in[pos], &remaining, diag);
        if (rc < 0)
            return rc;
    }
    uint64_t total = (uint64_t)pos + remaining;
    if (total != len)
        return iotgw_diag_fail(diag, IOTGW_ERR_MQTT_MALFORMED, "%s: packet of %llu bytes given %zu bytes",
                               iotgw_mqtt_type_name(in[0] >> 4), (unsigned long long)total, len);
    return parse_body(in[0], in + pos, remaining, out, diag);
}

/* ------------------------------------------------------------------ encoding */

/* Writes to out, or only counts when out is NULL. */
struct writer {
    uint8_t *out;
    size_t pos;
};

static void put_u8(struct writer *w, uint8_t b)
{
    if (w->out)
        w->out[w->pos] = b;
    w->pos++;
}

static void put_u16(struct writer *w, uint16_t v)
{
    put_u8(w, (uint8_t)(v >> 8));
    put_u8(w, (uint8_t)v);
}

static void put_raw(struct writer *w, iotgw_mqtt_bytes b)
{
    if (w->out && b.len)
        memcpy(w->out + w->pos, b.data, b.len);
    w->pos += b.len;
}

static void put_str(struct writer *w, iotgw_mqtt_bytes b)
{
    put_u16(w, (uint16_t)b.len);
    put_raw(w, b);
}

static size_t put_remaining(uint8_t *out, uint32_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7F;
        v >>= 7;
        out[n++] = (uint8_t)(v ? b | 0x80 : b);
    } while (v);
    return n;
}

static int bytes_ok(iotgw_mqtt_bytes b)
{
    return b.data || !b.len;
}

/* A string field the decoder would accept as this kind. */
static int str_ok(enum str_kind kind, iotgw_mqtt_bytes b)
{
    return bytes_ok(b) && b.len <= 0xFFFF && str_problem(kind, b) == NULL;
}

static int publish_ok(const iotgw_mqtt_publish *p)
{
    return p->qos <= 2 && !(p->dup && p->qos == 0) && str_ok(STR_TOPIC_NAME, p->topic) &&
           (p->qos == 0 || p->packet_id);
}

static uint8_t publish_first_byte(const iotgw_mqtt_publish *p)
{
    return (uint8_t)(IOTGW_MQTT_PUBLISH << 4 | (p->dup ? 0x08 : 0) | p->qos << 1 | (p->retain ? 1 : 0));
}

static int connect_ok(const iotgw_mqtt_connect *c)
{
    if (!str_ok(STR_BINARY, c->protocol_name) || !str_ok(STR_UTF8, c->client_id) || c->will_qos > 2)
        return 0;
    if (c->has_will ? !str_ok(STR_TOPIC_NAME, c->will_topic) || !str_ok(STR_BINARY, c->will_message)
                    : c->will_qos || c->will_retain)
        return 0;
    if (c->has_username && !str_ok(STR_UTF8, c->username))
        return 0;
    if (c->has_password && (!c->has_username || !str_ok(STR_BINARY, c->password)))
        return 0;
    return 1;
}

static void put_connect(struct writer *w, const iotgw_mqtt_connect *c)
{
    put_str(w, c->protocol_name);
    put_u8(w, c->protocol_level);
    put_u8(w, (uint8_t)((c->clean_session ? CF_CLEAN_SESSION : 0) | (c->has_will ? CF_WILL : 0) |
                        (c->has_will ? c->will_qos << CF_WILL_QOS_SHIFT : 0) |
                        (c->has_will && c->will_retain ? CF_WILL_RETAIN : 0) |
                        (c->has_password ? CF_PASSWORD : 0) | (c->has_username ? CF_USERNAME : 0)));
    put_u16(w, c->keep_alive_s);
    put_str(w, c->client_id);
    if (c->has_will) {
        put_str(w, c->will_topic);
        put_str(w, c->will_message);
    }
    if (c->has_username)
        put_str(w, c->username);
    if (c->has_password)
        put_str(w, c->password);
}

static int subscribe_ok(const iotgw_mqtt_subscribe *s, int with_qos)
{
    if (!s->packet_id || s->count == 0 || s->count > IOTGW_MQTT_MAX_FILTERS)
        return 0;
    for (size_t i = 0; i < s->count; i++)
        if (!str_ok(STR_FILTER, s->filter[i]) || (with_qos && s->qos[i] > 2))
            return 0;
    return 1;
}

static int suback_ok(const iotgw_mqtt_suback *s)
{
    if (!s->packet_id || s->count == 0 || s->count > IOTGW_MQTT_MAX_FILTERS)
        return 0;
    for (size_t i = 0; i < s->count; i++)
        if (s->code[i] > 2 && s->code[i] != IOTGW_MQTT_SUBACK_FAILURE)
            return 0;
    return 1;
}

/* Checks p and writes its body with w (or counts it); 0 or IOTGW_ERR_INVALID_ARG. */
static int put_body(struct writer *w, const iotgw_mqtt_packet *p, uint8_t *first)
{
    *first = (uint8_t)(p->type << 4 | required_flags(p->type));
    switch (p->type) {
    case IOTGW_MQTT_CONNECT:
        if (!connect_ok(&p->u.connect))
            return IOTGW_ERR_INVALID_ARG;
        put_connect(w, &p->u.connect);
        return IOTGW_OK;
    case IOTGW_MQTT_CONNACK:
        put_u8(w, p->u.connack.session_present ? 1 : 0);
        put_u8(w, p->u.connack.return_code);
        return IOTGW_OK;
    case IOTGW_MQTT_PUBLISH: {
        const iotgw_mqtt_publish *pub = &p->u.publish;
        if (!publish_ok(pub) || !bytes_ok(pub->payload) || pub->payload.len > IOTGW_MQTT_MAX_REMAINING)
            return IOTGW_ERR_INVALID_ARG;
        *first = publish_first_byte(pub);
        put_str(w, pub->topic);
        if (pub->qos)
            put_u16(w, pub->packet_id);
        put_raw(w, pub->payload);
        return IOTGW_OK;
    }
    case IOTGW_MQTT_PUBACK:
    case IOTGW_MQTT_PUBREC:
    case IOTGW_MQTT_PUBREL:
    case IOTGW_MQTT_PUBCOMP:
    case IOTGW_MQTT_UNSUBACK:
        if (!p->u.packet_id)
            return IOTGW_ERR_INVALID_ARG;
        put_u16(w, p->u.packet_id);
        return IOTGW_OK;
    case IOTGW_MQTT_SUBSCRIBE:
    case IOTGW_MQTT_UNSUBSCRIBE: {
        int with_qos = p->type == IOTGW_MQTT_SUBSCRIBE;
        if (!subscribe_ok(&p->u.subscribe, with_qos))
            return IOTGW_ERR_INVALID_ARG;
        put_u16(w, p->u.subscribe.packet_id);
        for (size_t i = 0; i < p->u.subscribe.count; i++) {
            put_str(w, p->u.subscribe.filter[i]);
            if (with_qos)
                put_u8(w, p->u.subscribe.qos[i]);
        }
        return IOTGW_OK;
    }
    case IOTGW_MQTT_SUBACK:
        if (!suback_ok(&p->u.suback))
            return IOTGW_ERR_INVALID_ARG;
        put_u16(w, p->u.suback.packet_id);
        for (size_t i = 0; i < p->u.suback.count; i++)
            put_u8(w, p->u.suback.code[i]);
        return IOTGW_OK;
    case IOTGW_MQTT_PINGREQ:
    case IOTGW_MQTT_PINGRESP:
    case IOTGW_MQTT_DISCONNECT: return IOTGW_OK;
    }
    return IOTGW_ERR_INVALID_ARG;
}

int iotgw_mqtt_encode(iotgw_mqtt_role role, const iotgw_mqtt_packet *p, uint8_t *out, size_t cap, size_t *len)
{
    if (!p || !len || !valid_role(role) || (unsigned)p->type > 15)
        return IOTGW_ERR_INVALID_ARG;
    /* A role sends what the other receives. */
    if (!(receives(role == IOTGW_MQTT_SERVER ? IOTGW_MQTT_CLIENT : IOTGW_MQTT_SERVER) & BIT(p->type)))
        return IOTGW_ERR_INVALID_ARG;
    struct writer count = {NULL, 0};
    uint8_t first;
    TRY(put_body(&count, p, &first));
    if (count.pos > IOTGW_MQTT_MAX_REMAINING)
        return IOTGW_ERR_INVALID_ARG;
    uint8_t header[IOTGW_MQTT_MAX_FIXED_HEADER];
    header[0] = first;
    size_t hlen = 1 + put_remaining(header + 1, (uint32_t)count.pos);
    *len = hlen + count.pos;
    if (!out || cap < *len)
        return IOTGW_ERR_BUFFER_TOO_SMALL;
    memcpy(out, header, hlen);
    struct writer w = {out + hlen, 0};
    put_body(&w, p, &first);
    return IOTGW_OK;
}

size_t iotgw_mqtt_publish_header(uint8_t *out, const iotgw_mqtt_publish *p, size_t payload_len)
{
    if (!out || !p || !publish_ok(p))
        return 0;
    size_t body = 2 + p->topic.len + (p->qos ? 2 : 0);
    if (payload_len > IOTGW_MQTT_MAX_REMAINING - body)
        return 0;
    out[0] = publish_first_byte(p);
    size_t n = 1 + put_remaining(out + 1, (uint32_t)(body + payload_len));
    struct writer w = {out + n, 0};
    put_str(&w, p->topic);
    if (p->qos)
        put_u16(&w, p->packet_id);
    return n + w.pos;
}
