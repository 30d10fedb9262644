#include "codecs/hubmsg.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <proton/codec.h>

#include "codecs/json_text.h"
#include "codecs/parcel_json.h"

static int put_property(pn_data_t *props, const char *key, const char *value)
{
    if (!value || !*value)
        return 0;
    pn_data_put_string(props, pn_bytes(strlen(key), key));
    return pn_data_put_string(props, pn_bytes(strlen(value), value));
}

static int encode_body(const Iotgw__Parcel *p, const iotgw_hubmsg_options *opt, char **body, size_t *len,
                       iotgw_diag *diag)
{
    if (opt->encoding == IOTGW_HUBMSG_JSON) {
        json_t *j = NULL;
        int rc = iotgw_parcel_to_json(p, opt->types, 0, &j, diag);
        if (rc)
            return rc;
        *body = iotgw_json_text(j);
        json_decref(j);
        if (!*body)
            return IOTGW_ERR_NOMEM;
        *len = strlen(*body);
        return IOTGW_OK;
    }
    *len = iotgw__parcel__get_packed_size(p);
    *body = malloc(*len + 1);
    if (!*body)
        return IOTGW_ERR_NOMEM;
    iotgw__parcel__pack(p, (uint8_t *)*body);
    return IOTGW_OK;
}

int iotgw_hubmsg_from_parcel(const Iotgw__Parcel *p, const iotgw_hubmsg_options *opt, pn_message_t *msg,
                             iotgw_diag *diag)
{
    static const iotgw_hubmsg_options defaults = {0};
    if (!p || !msg)
        return IOTGW_ERR_INVALID_ARG;
    if (!opt)
        opt = &defaults;
    char *body = NULL;
    size_t len = 0;
    int rc = encode_body(p, opt, &body, &len, diag);
    if (rc)
        return rc;
    if (len > IOTGW_HUBMSG_MAX_BODY) {
        free(body);
        return iotgw_diag_fail(diag, IOTGW_ERR_HUBMSG_TOO_LARGE,
                               "message body is %zu bytes, IoT Hub accepts %d", len, IOTGW_HUBMSG_MAX_BODY);
    }

    pn_message_clear(msg);
    /* inferred: a binary body goes out as a data section, as IoT Hub expects */
    pn_message_set_inferred(msg, true);
    pn_data_t *b = pn_message_body(msg);
    pn_data_put_binary(b, pn_bytes(len, body));
    free(body);

    if (opt->encoding == IOTGW_HUBMSG_JSON) {
        pn_message_set_content_type(msg, IOTGW_CONTENT_TYPE_JSON);
        pn_message_set_content_encoding(msg, "utf-8");
    } else {
        pn_message_set_content_type(msg, IOTGW_CONTENT_TYPE_PROTOBUF);
    }
    if (opt->message_id) {
        pn_atom_t id = {.type = PN_STRING};
        id.u.as_bytes = pn_bytes(strlen(opt->message_id), opt->message_id);
        pn_message_set_id(msg, id);
    }
    if (opt->creation_time_ms)
        pn_message_set_creation_time(msg, opt->creation_time_ms);

    pn_data_t *props = pn_message_properties(msg);
    pn_data_put_map(props);
    pn_data_enter(props);
    put_property(props, IOTGW_PROP_PARCEL_TYPE, p->type);
    put_property(props, IOTGW_PROP_PARCEL_SOURCE, p->source ? p->source->name : NULL);
    put_property(props, IOTGW_PROP_PARCEL_DESTINATION, p->destination ? p->destination->name : NULL);
    pn_data_exit(props);
    return IOTGW_OK;
}

/* "application/json; charset=utf-8" is application/json. */
static int media_type_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    return !strncasecmp(ct, want, n) && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

int iotgw_hubmsg_to_parcel(pn_message_t *msg, const iotgw_type_registry *types, Iotgw__Parcel **out,
                           iotgw_diag *diag)
{
    if (!msg || !out)
        return IOTGW_ERR_INVALID_ARG;
    pn_data_t *b = pn_message_body(msg);
    pn_data_rewind(b);
    if (!pn_data_next(b) || (pn_data_type(b) != PN_BINARY && pn_data_type(b) != PN_STRING))
        return iotgw_diag_fail(diag, IOTGW_ERR_HUBMSG_BODY, "hub message body is not binary data");
    pn_bytes_t body = pn_data_type(b) == PN_BINARY ? pn_data_get_binary(b) : pn_data_get_string(b);
    if (body.size > IOTGW_HUBMSG_MAX_BODY)
        return iotgw_diag_fail(diag, IOTGW_ERR_HUBMSG_TOO_LARGE, "hub message body is %zu bytes, limit is %d",
                               body.size, IOTGW_HUBMSG_MAX_BODY);

    const char *ct = pn_message_get_content_type(msg);
    if (!ct || !*ct || media_type_is(ct, IOTGW_CONTENT_TYPE_PROTOBUF) ||
        media_type_is(ct, "application/protobuf")) {
        static const uint8_t empty[1];
        Iotgw__Parcel *p =
            iotgw__parcel__unpack(NULL, body.size, body.size ? (const uint8_t *)body.start : empty);
        if (!p)
            return iotgw_diag_fail(diag, IOTGW_ERR_HUBMSG_PAYLOAD,
                                   "hub message body (%zu bytes) is not a valid Parcel", body.size);
        *out = p;
        return IOTGW_OK;
    }
    if (media_type_is(ct, IOTGW_CONTENT_TYPE_JSON)) {
        json_error_t err;
        json_t *j = json_loadb(body.start, body.size, JSON_REJECT_DUPLICATES, &err);
        if (!j)
            return iotgw_diag_fail(diag, IOTGW_ERR_JSON_SYNTAX,
                                   "hub message body: JSON syntax error at line %d column %d: %s", err.line,
                                   err.column, err.text);
        int rc = iotgw_parcel_from_json(j, types, out, diag);
        json_decref(j);
        return rc;
    }
    return iotgw_diag_fail(diag, IOTGW_ERR_HUBMSG_CONTENT_TYPE,
                           "hub message content-type '%.64s' is neither %s nor %s", ct,
                           IOTGW_CONTENT_TYPE_PROTOBUF, IOTGW_CONTENT_TYPE_JSON);
}
