#include "codecs/json_pb.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codecs/base64.h"
#include "codecs/json_text.h"

/* The path of the field being converted, for error messages: "source.localId". */
typedef struct field_path {
    char text[200];
    size_t len;
} field_path;

static size_t path_push(field_path *p, const char *name, long index)
{
    size_t saved = p->len;
    int n;
    if (index >= 0)
        n = snprintf(p->text + p->len, sizeof p->text - p->len, "[%ld]", index);
    else
        n = snprintf(p->text + p->len, sizeof p->text - p->len, "%s%s", p->len ? "." : "", name);
    if (n > 0)
        p->len = p->len + (size_t)n < sizeof p->text ? p->len + (size_t)n : sizeof p->text - 1;
    return saved;
}

static void path_pop(field_path *p, size_t saved)
{
    p->len = saved;
    p->text[saved] = '\0';
}

static const char *path_name(const field_path *p)
{
    return p->len ? p->text : "(message)";
}

/* proto3 JSON name: drop each '_' and upper-case the letter after it. */
static void json_name(const char *proto_name, char *out, size_t cap)
{
    size_t o = 0;
    int upper = 0;
    for (const char *s = proto_name; *s && o + 1 < cap; s++) {
        if (*s == '_') {
            upper = 1;
            continue;
        }
        out[o++] = upper && *s >= 'a' && *s <= 'z' ? (char)(*s - 'a' + 'A') : *s;
        upper = 0;
    }
    out[o] = '\0';
}

static void *field_ptr(const void *msg, unsigned offset)
{
    return (char *)msg + offset;
}

/* ---------------------------------------------------------------- protobuf -> JSON */

static size_t field_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM: return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return 8;
    case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    }
    return 0;
}

static json_t *real_to_json(double v)
{
    if (isnan(v))
        return json_string("NaN");
    if (isinf(v))
        return json_string(v > 0 ? "Infinity" : "-Infinity");
    return json_real(v);
}

/* The double whose shortest text equals the float's shortest text: 0.1f -> 0.1. */
static double float_as_double(float f)
{
    char num[32];
    if (!isfinite(f))
        return f;
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(num, sizeof num, "%.*g", prec, (double)f);
        if ((float)strtod(num, NULL) == f)
            return strtod(num, NULL);
    }
    return f;
}

static int message_to_json(const ProtobufCMessage *msg, unsigned flags, int depth, field_path *path,
                           json_t **out, iotgw_diag *diag);

static int value_to_json(const ProtobufCFieldDescriptor *f, const void *v, unsigned flags, int depth,
                         field_path *path, json_t **out, iotgw_diag *diag)
{
    char num[32];
    json_t *j = NULL;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: j = json_integer(*(const int32_t *)v); break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: j = json_integer(*(const uint32_t *)v); break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(num, sizeof num, "%" PRId64, *(const int64_t *)v);
        j = json_string(num);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(num, sizeof num, "%" PRIu64, *(const uint64_t *)v);
        j = json_string(num);
        break;
    case PROTOBUF_C_TYPE_FLOAT: j = real_to_json(float_as_double(*(const float *)v)); break;
    case PROTOBUF_C_TYPE_DOUBLE: j = real_to_json(*(const double *)v); break;
    case PROTOBUF_C_TYPE_BOOL: j = json_boolean(*(const protobuf_c_boolean *)v); break;
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t e = *(const int32_t *)v;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, e);
        j = ev ? json_string(ev->name) : json_integer(e);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        j = json_stringn(s ? s : "", s ? strlen(s) : 0);
        if (!j)
            return iotgw_diag_fail(diag, IOTGW_ERR_JSON_UTF8, "field %s: string is not valid UTF-8",
                                   path_name(path));
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = v;
        char *b64 = malloc(iotgw_base64_encoded_len(bd->len) + 1);
        if (!b64)
            return IOTGW_ERR_NOMEM;
        iotgw_base64_encode(bd->data, bd->len, b64);
        j = json_string(b64);
        free(b64);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)v;
        if (!sub) {
            j = json_object();
            break;
        }
        return message_to_json(sub, flags, depth + 1, path, out, diag);
    }
    }
    if (!j)
        return IOTGW_ERR_NOMEM;
    *out = j;
    return IOTGW_OK;
}

static int is_default(const ProtobufCFieldDescriptor *f, const void *v)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        return !s || !*s;
    }
    case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)v)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE: return *(ProtobufCMessage *const *)v == NULL;
    case PROTOBUF_C_TYPE_FLOAT: return *(const float *)v == 0 && !signbit(*(const float *)v);
    case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)v == 0 && !signbit(*(const double *)v);
    default: {
        static const uint8_t zero[8];
        return memcmp(v, zero, field_size(f->type)) == 0;
    }
    }
}

/* Is the field present, in protobuf's sense, and should it be written? */
static int field_present(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, unsigned flags)
{
    const void *v = field_ptr(msg, f->offset);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)field_ptr(msg, f->quantifier_offset) == f->id;
    switch (f->label) {
    case PROTOBUF_C_LABEL_REQUIRED: return 1;
    case PROTOBUF_C_LABEL_REPEATED:
        return *(const size_t *)field_ptr(msg, f->quantifier_offset) > 0 ||
               (flags & IOTGW_JSON_EMIT_DEFAULTS);
    case PROTOBUF_C_LABEL_OPTIONAL: /* proto2 optional, proto3 `optional` */
        if (f->type == PROTOBUF_C_TYPE_MESSAGE)
            return *(void *const *)v != NULL;
        if (f->type == PROTOBUF_C_TYPE_STRING) /* no has_ flag: present when not the default */
            return *(void *const *)v != NULL &&
                   (*(void *const *)v != f->default_value || (flags & IOTGW_JSON_EMIT_DEFAULTS));
        return *(const protobuf_c_boolean *)field_ptr(msg, f->quantifier_offset) ||
               (flags & IOTGW_JSON_EMIT_DEFAULTS);
    case PROTOBUF_C_LABEL_NONE:
    default:
        if (f->type == PROTOBUF_C_TYPE_MESSAGE)
            return *(void *const *)v != NULL;
        return !is_default(f, v) || (flags & IOTGW_JSON_EMIT_DEFAULTS);
    }
}

static int field_to_json(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, unsigned flags,
                         int depth, field_path *path, json_t **out, iotgw_diag *diag)
{
    const void *v = field_ptr(msg, f->offset);
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return value_to_json(f, v, flags, depth, path, out, diag);

    size_t n = *(const size_t *)field_ptr(msg, f->quantifier_offset);
    const char *elems = *(char *const *)v;
    size_t esz = field_size(f->type);
    json_t *arr = json_array();
    if (!arr)
        return IOTGW_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t saved = path_push(path, NULL, (long)i);
        json_t *e = NULL;
        int rc = value_to_json(f, elems + i * esz, flags, depth, path, &e, diag);
        path_pop(path, saved);
        if (rc || json_array_append_new(arr, e)) {
            json_decref(arr);
            return rc ? rc : IOTGW_ERR_NOMEM;
        }
    }
    *out = arr;
    return IOTGW_OK;
}

static int message_to_json(const ProtobufCMessage *msg, unsigned flags, int depth, field_path *path,
                           json_t **out, iotgw_diag *diag)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    if (depth > IOTGW_JSON_MAX_DEPTH)
        return iotgw_diag_fail(diag, IOTGW_ERR_JSON_DEPTH, "field %s: nested deeper than %d", path_name(path),
                               IOTGW_JSON_MAX_DEPTH);
    json_t *obj = json_object();
    if (!obj)
        return IOTGW_ERR_NOMEM;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (!field_present(msg, f, flags))
            continue;
        char name[128];
        if (flags & IOTGW_JSON_PROTO_NAMES)
            snprintf(name, sizeof name, "%s", f->name);
        else
            json_name(f->name, name, sizeof name);
        size_t saved = path_push(path, name, -1);
        json_t *val = NULL;
        int rc = field_to_json(msg, f, flags, depth, path, &val, diag);
        path_pop(path, saved);
        if (rc || json_object_set_new(obj, name, val)) {
            json_decref(obj);
            return rc ? rc : IOTGW_ERR_NOMEM;
        }
    }
    *out = obj;
    return IOTGW_OK;
}

int iotgw_json_from_pb(const ProtobufCMessage *msg, unsigned flags, json_t **out, iotgw_diag *diag)
{
    if (!msg || !out)
        return IOTGW_ERR_INVALID_ARG;
    field_path path = {.len = 0};
    path.text[0] = '\0';
    return message_to_json(msg, flags, 0, &path, out, diag);
}

int iotgw_pb_has_unknown_fields(const ProtobufCMessage *msg)
{
    if (msg->n_unknown_fields)
        return 1;
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)field_ptr(msg, f->quantifier_offset) != f->id)
            continue;
        size_t n = 1;
        ProtobufCMessage *const *subs = field_ptr(msg, f->offset);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)field_ptr(msg, f->quantifier_offset);
            subs = *(ProtobufCMessage * *const *)subs;
        }
        for (size_t k = 0; k < n; k++)
            if (subs[k] && iotgw_pb_has_unknown_fields(subs[k]))
                return 1;
    }
    return 0;
}

int iotgw_json_text_from_pb(const ProtobufCMessage *msg, unsigned flags, char **text, iotgw_diag *diag)
{
    json_t *j = NULL;
    int rc = iotgw_json_from_pb(msg, flags, &j, diag);
    if (rc)
        return rc;
    *text = iotgw_json_text(j);
    json_decref(j);
    return *text ? IOTGW_OK : IOTGW_ERR_NOMEM;
}

/* ---------------------------------------------------------------- JSON -> protobuf */

static int type_error(iotgw_diag *diag, const field_path *path, const char *want)
{
    return iotgw_diag_fail(diag, IOTGW_ERR_JSON_TYPE, "field %s: expected %s", path_name(path), want);
}

static int range_error(iotgw_diag *diag, const field_path *path, const char *type)
{
    return iotgw_diag_fail(diag, IOTGW_ERR_JSON_RANGE, "field %s: value out of range for %s", path_name(path),
                           type);
}

/* An integer from a JSON integer, an integral real, or a string of digits. */
static int json_to_int(const json_t *j, int is_unsigned, int64_t *s, uint64_t *u, const field_path *path,
                       const char *type, iotgw_diag *diag)
{
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (is_unsigned && v < 0)
            return range_error(diag, path, type);
        *s = v;
        *u = (uint64_t)v;
        return IOTGW_OK;
    }
    if (json_is_real(j)) {
        double v = json_real_value(j);
        if (v != floor(v))
            return type_error(diag, path, "an integer");
        if (is_unsigned ? (v < 0 || v >= 18446744073709551616.0)
                        : (v < -9223372036854775808.0 || v >= 9223372036854775808.0))
            return range_error(diag, path, type);
        *s = is_unsigned ? 0 : (int64_t)v;
        *u = is_unsigned ? (uint64_t)v : (uint64_t)*s;
        return IOTGW_OK;
    }
    if (json_is_string(j)) {
        const char *t = json_string_value(j);
        size_t n = json_string_length(j);
        char *end = NULL;
        if (n == 0 || n > 24 || strlen(t) != n || !(t[0] == '-' || (t[0] >= '0' && t[0] <= '9')))
            return type_error(diag, path, "an integer");
        errno = 0;
        if (is_unsigned) {
            if (t[0] == '-')
                return range_error(diag, path, type);
            *u = strtoull(t, &end, 10);
            *s = (int64_t)*u;
        } else {
            *s = strtoll(t, &end, 10);
            *u = (uint64_t)*s;
        }
        if (*end)
            return type_error(diag, path, "an integer");
        if (errno == ERANGE)
            return range_error(diag, path, type);
        return IOTGW_OK;
    }
    return type_error(diag, path, "an integer");
}

static int json_to_real(const json_t *j, double *out, const field_path *path, iotgw_diag *diag)
{
    if (json_is_number(j)) {
        *out = json_number_value(j);
        return IOTGW_OK;
    }
    if (json_is_string(j)) {
        const char *t = json_string_value(j);
        if (!strcmp(t, "NaN"))
            *out = NAN;
        else if (!strcmp(t, "Infinity"))
            *out = INFINITY;
        else if (!strcmp(t, "-Infinity"))
            *out = -INFINITY;
        else {
            char *end = NULL;
            if (!*t || strlen(t) > 64)
                return type_error(diag, path, "a number");
            *out = strtod(t, &end);
            if (*end || !isfinite(*out))
                return type_error(diag, path, "a number");
        }
        return IOTGW_OK;
    }
    return type_error(diag, path, "a number");
}

static int json_to_message(const ProtobufCMessageDescriptor *d, const json_t *j, int depth, field_path *path,
                           ProtobufCMessage **out, iotgw_diag *diag);

/* Convert j into the single value slot v of field f. v's old content is the default. */
static int json_to_value(const ProtobufCFieldDescriptor *f, const json_t *j, void *v, int depth,
                         field_path *path, iotgw_diag *diag)
{
    int64_t s = 0;
    uint64_t u = 0;
    int rc;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if ((rc = json_to_int(j, 0, &s, &u, path, "int32", diag)))
            return rc;
        if (s < INT32_MIN || s > INT32_MAX)
            return range_error(diag, path, "int32");
        *(int32_t *)v = (int32_t)s;
        return IOTGW_OK;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if ((rc = json_to_int(j, 1, &s, &u, path, "uint32", diag)))
            return rc;
        if (u > UINT32_MAX)
            return range_error(diag, path, "uint32");
        *(uint32_t *)v = (uint32_t)u;
        return IOTGW_OK;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if ((rc = json_to_int(j, 0, &s, &u, path, "int64", diag)))
            return rc;
        *(int64_t *)v = s;
        return IOTGW_OK;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if ((rc = json_to_int(j, 1, &s, &u, path, "uint64", diag)))
            return rc;
        *(uint64_t *)v = u;
        return IOTGW_OK;
    case PROTOBUF_C_TYPE_FLOAT: {
        double d;
        if ((rc = json_to_real(j, &d, path, diag)))
            return rc;
        /* Out of range means it rounds to infinity: FLT_MAX's shortest text, read as a
         * double, is slightly above FLT_MAX and must still be accepted. */
        if (isfinite(d) && isinf((float)d))
            return range_error(diag, path, "float");
        *(float *)v = (float)d;
        return IOTGW_OK;
    }
    case PROTOBUF_C_TYPE_DOUBLE: return json_to_real(j, (double *)v, path, diag);
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(j))
            return type_error(diag, path, "true or false");
        *(protobuf_c_boolean *)v = json_is_true(j);
        return IOTGW_OK;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        if (json_is_string(j)) {
            const ProtobufCEnumValue *ev = NULL;
            for (unsigned i = 0; i < ed->n_values && !ev; i++)
                if (!strcmp(ed->values[i].name, json_string_value(j)))
                    ev = &ed->values[i];
            if (!ev)
                return iotgw_diag_fail(diag, IOTGW_ERR_JSON_ENUM, "field %s: '%.64s' is not a value of %s",
                                       path_name(path), json_string_value(j), ed->name);
            *(int32_t *)v = ev->value;
            return IOTGW_OK;
        }
        if (!json_is_integer(j))
            return type_error(diag, path, "an enum name or number");
        json_int_t e = json_integer_value(j);
        if (e < INT32_MIN || e > INT32_MAX)
            return range_error(diag, path, "enum");
        *(int32_t *)v = (int32_t)e;
        return IOTGW_OK;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(j))
            return type_error(diag, path, "a string");
        size_t n = json_string_length(j);
        if (memchr(json_string_value(j), '\0', n))
            return iotgw_diag_fail(diag, IOTGW_ERR_JSON_TYPE, "field %s: string contains a NUL character",
                                   path_name(path));
        char *copy = strndup(json_string_value(j), n);
        if (!copy)
            return IOTGW_ERR_NOMEM;
        *(char **)v = copy;
        return IOTGW_OK;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_is_string(j))
            return type_error(diag, path, "a base64 string");
        size_t n = json_string_length(j), len = 0;
        uint8_t *data = malloc(iotgw_base64_decoded_max(n) + 1);
        if (!data)
            return IOTGW_ERR_NOMEM;
        if (iotgw_base64_decode(json_string_value(j), n, data, &len, IOTGW_BASE64_LENIENT, NULL)) {
            free(data);
            return type_error(diag, path, "a base64 string");
        }
        ProtobufCBinaryData *bd = v;
        bd->data = data;
        bd->len = len;
        return IOTGW_OK;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return json_to_message(f->descriptor, j, depth + 1, path, (ProtobufCMessage **)v, diag);
    }
    return IOTGW_ERR_INTERNAL;
}

static int json_to_repeated(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const json_t *j,
                            int depth, field_path *path, iotgw_diag *diag)
{
    if (!json_is_array(j))
        return type_error(diag, path, "an array");
    size_t n = json_array_size(j), esz = field_size(f->type);
    size_t *count = field_ptr(m, f->quantifier_offset);
    void **arr = field_ptr(m, f->offset);
    if (n == 0)
        return IOTGW_OK;
    *arr = calloc(n, esz);
    if (!*arr)
        return IOTGW_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(j, i);
        size_t saved = path_push(path, NULL, (long)i);
        if (json_is_null(e)) {
            int rc = type_error(diag, path, "a value (null is not allowed in an array)");
            path_pop(path, saved);
            return rc;
        }
        void *slot = (char *)*arr + i * esz;
        int rc = json_to_value(f, e, slot, depth, path, diag);
        path_pop(path, saved);
        /* Count the element if it holds memory, so that free_unpacked releases it: a
         * failed scalar, string or bytes value holds none, a failed message may. */
        if (rc == IOTGW_OK || (f->type == PROTOBUF_C_TYPE_MESSAGE && *(void **)slot))
            *count = i + 1;
        if (rc)
            return rc;
    }
    return IOTGW_OK;
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d, const char *key)
{
    char name[128];
    for (unsigned i = 0; i < d->n_fields; i++) {
        json_name(d->fields[i].name, name, sizeof name);
        if (!strcmp(name, key) || !strcmp(d->fields[i].name, key))
            return &d->fields[i];
    }
    return NULL;
}

static int json_to_field(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const json_t *val, int depth,
                         field_path *path, iotgw_diag *diag)
{
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return json_to_repeated(m, f, val, depth, path, diag);

    void *slot = field_ptr(m, f->offset);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *oneof_case = field_ptr(m, f->quantifier_offset);
        if (*oneof_case != 0)
            return iotgw_diag_fail(diag, IOTGW_ERR_JSON_ONEOF,
                                   "field %s: another member of its oneof is already set", path_name(path));
        /* Members of a oneof share storage: start from an empty value, not the default. */
        memset(slot, 0, field_size(f->type));
        int rc = json_to_value(f, val, slot, depth, path, diag);
        if (rc == IOTGW_OK || (f->type == PROTOBUF_C_TYPE_MESSAGE && *(void **)slot) ||
            (f->type == PROTOBUF_C_TYPE_STRING && *(void **)slot) ||
            (f->type == PROTOBUF_C_TYPE_BYTES && ((ProtobufCBinaryData *)slot)->data))
            *oneof_case = f->id; /* so that free_unpacked releases what was made */
        return rc;
    }
    if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) {
        /* The slot holds the shared default (not ours to free) until replaced. */
        void *old = *(void **)slot;
        *(void **)slot = NULL;
        int rc = json_to_value(f, val, slot, depth, path, diag);
        if (!*(void **)slot)
            *(void **)slot = old;
        return rc;
    }
    if (f->type == PROTOBUF_C_TYPE_BYTES) {
        ProtobufCBinaryData old = *(ProtobufCBinaryData *)slot;
        int rc = json_to_value(f, val, slot, depth, path, diag);
        if (!((ProtobufCBinaryData *)slot)->data)
            *(ProtobufCBinaryData *)slot = old;
        else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset)
            *(protobuf_c_boolean *)field_ptr(m, f->quantifier_offset) = 1;
        return rc;
    }
    int rc = json_to_value(f, val, slot, depth, path, diag);
    if (rc == IOTGW_OK && f->label == PROTOBUF_C_LABEL_OPTIONAL)
        *(protobuf_c_boolean *)field_ptr(m, f->quantifier_offset) = 1;
    return rc;
}

static int json_to_message(const ProtobufCMessageDescriptor *d, const json_t *j, int depth, field_path *path,
                           ProtobufCMessage **out, iotgw_diag *diag)
{
    if (depth > IOTGW_JSON_MAX_DEPTH)
        return iotgw_diag_fail(diag, IOTGW_ERR_JSON_DEPTH, "field %s: nested deeper than %d", path_name(path),
                               IOTGW_JSON_MAX_DEPTH);
    if (!json_is_object(j))
        return type_error(diag, path, "an object");
    ProtobufCMessage *m = malloc(d->sizeof_message);
    if (!m)
        return IOTGW_ERR_NOMEM;
    d->message_init(m);
    *out = m; /* the caller frees it, complete or not */
    /* a field may come under its JSON name or its proto name, not both: the second
     * value would silently replace the first */
    unsigned char *seen = calloc(d->n_fields ? d->n_fields : 1, 1);
    if (!seen)
        return IOTGW_ERR_NOMEM;

    const char *key;
    json_t *val;
    int rc = IOTGW_OK;
    json_object_foreach((json_t *)j, key, val)
    {
        size_t saved = path_push(path, key, -1);
        const ProtobufCFieldDescriptor *f = find_field(d, key);
        if (!f)
            rc = iotgw_diag_fail(diag, IOTGW_ERR_JSON_UNKNOWN_FIELD, "field %s: %s has no such field",
                                 path_name(path), d->name);
        else if (seen[f - d->fields]++)
            rc = iotgw_diag_fail(diag, IOTGW_ERR_JSON_DUPLICATE,
                                 "field %s: given twice (as %s and as its other name)", path_name(path), key);
        else if (!json_is_null(val))
            rc = json_to_field(m, f, val, depth, path, diag);
        path_pop(path, saved);
        if (rc)
            break;
    }
    free(seen);
    return rc;
}

int iotgw_pb_from_json(const ProtobufCMessageDescriptor *desc, const json_t *json, ProtobufCMessage **out,
                       iotgw_diag *diag)
{
    if (!desc || !json || !out)
        return IOTGW_ERR_INVALID_ARG;
    field_path path = {.len = 0};
    path.text[0] = '\0';
    ProtobufCMessage *m = NULL;
    int rc = json_to_message(desc, json, 0, &path, &m, diag);
    if (rc) {
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    *out = m;
    return IOTGW_OK;
}

int iotgw_pb_from_json_text(const ProtobufCMessageDescriptor *desc, const char *text, size_t len,
                            ProtobufCMessage **out, iotgw_diag *diag)
{
    json_error_t err;
    /* JSON_REJECT_DUPLICATES: a repeated key would silently override; refuse it. */
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!j)
        return iotgw_diag_fail(diag, IOTGW_ERR_JSON_SYNTAX, "JSON syntax error at line %d column %d: %s",
                               err.line, err.column, err.text);
    int rc = iotgw_pb_from_json(desc, j, out, diag);
    json_decref(j);
    return rc;
}
