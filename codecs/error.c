#include "codecs/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct err_entry {
    int code;
    const char *name;
    const char *text;
};

#define E(code, text)                                                                                        \
    {                                                                                                        \
        code, #code, text                                                                                    \
    }
static const struct err_entry err_table[] = {
    E(IOTGW_OK, "success"),
    E(IOTGW_ERR_NOMEM, "out of memory"),
    E(IOTGW_ERR_INVALID_ARG, "invalid argument"),
    E(IOTGW_ERR_AGAIN, "more input needed"),
    E(IOTGW_ERR_BUFFER_TOO_SMALL, "output buffer too small"),
    E(IOTGW_ERR_INTERNAL, "internal error"),
    E(IOTGW_ERR_FRAME_BAD_VARINT, "frame length prefix is not a valid 32-bit varint"),
    E(IOTGW_ERR_FRAME_TRUNCATED_VARINT, "stream ended inside a frame length prefix"),
    E(IOTGW_ERR_FRAME_TRUNCATED, "stream ended inside a frame"),
    E(IOTGW_ERR_FRAME_TOO_LARGE, "frame larger than the maximum frame size"),
    E(IOTGW_ERR_FRAME_MALFORMED, "frame is not a valid protobuf message"),
    E(IOTGW_ERR_BASE64, "invalid base64"),
    E(IOTGW_ERR_PERCENT_ENCODING, "invalid percent-encoding"),
    E(IOTGW_ERR_SAS_MALFORMED, "malformed SAS token"),
    E(IOTGW_ERR_SAS_BAD_KEY, "shared access key is not valid base64"),
    E(IOTGW_ERR_SAS_SIGNATURE, "SAS token signature does not match"),
    E(IOTGW_ERR_SAS_EXPIRED, "SAS token expired"),
    E(IOTGW_ERR_SAS_RESOURCE, "SAS token does not grant access to this resource"),
    E(IOTGW_ERR_CONNSTR_SYNTAX, "connection string syntax error"),
    E(IOTGW_ERR_CONNSTR_UNKNOWN_FIELD, "unknown connection string field"),
    E(IOTGW_ERR_CONNSTR_DUPLICATE_FIELD, "connection string field given twice"),
    E(IOTGW_ERR_CONNSTR_MISSING_FIELD, "connection string field missing"),
    E(IOTGW_ERR_CONNSTR_BAD_VALUE, "connection string field has an invalid value"),
    E(IOTGW_ERR_CONNSTR_CONFLICT, "connection string fields conflict"),
    E(IOTGW_ERR_JSON_SYNTAX, "JSON syntax error"),
    E(IOTGW_ERR_JSON_UNKNOWN_FIELD, "unknown field in JSON"),
    E(IOTGW_ERR_JSON_TYPE, "JSON value has the wrong type for the field"),
    E(IOTGW_ERR_JSON_RANGE, "JSON number out of range for the field"),
    E(IOTGW_ERR_JSON_ENUM, "unknown enum value in JSON"),
    E(IOTGW_ERR_JSON_ONEOF, "more than one member of a oneof in JSON"),
    E(IOTGW_ERR_JSON_DEPTH, "JSON nested too deeply"),
    E(IOTGW_ERR_JSON_UTF8, "protobuf string is not valid UTF-8"),
    E(IOTGW_ERR_JSON_DUPLICATE, "JSON gives a field twice"),
    E(IOTGW_ERR_HUBMSG_CONTENT_TYPE, "hub message content-type not supported"),
    E(IOTGW_ERR_HUBMSG_BODY, "hub message body missing or not binary data"),
    E(IOTGW_ERR_HUBMSG_PAYLOAD, "parcel content does not match its type"),
    E(IOTGW_ERR_HUBMSG_TOO_LARGE, "hub message too large"),
    E(IOTGW_ERR_CONFIG, "invalid configuration"),
    E(IOTGW_ERR_IO, "file input/output failed"),
    E(IOTGW_ERR_UPSTREAM_FULL, "too many messages waiting for the hub"),
    E(IOTGW_ERR_UPSTREAM_NOT_ONLINE, "device is not online at the hub"),
    E(IOTGW_ERR_STORE_FULL, "the store is full"),
    E(IOTGW_ERR_MQTT_MALFORMED, "malformed MQTT packet"),
    E(IOTGW_ERR_MQTT_TOO_LARGE, "MQTT packet too large"),
    E(IOTGW_ERR_MQTT_TOPIC, "topic not served"),
};
#undef E

static const struct err_entry *err_find(int code)
{
    for (size_t i = 0; i < sizeof err_table / sizeof err_table[0]; i++)
        if (err_table[i].code == code)
            return &err_table[i];
    return NULL;
}

const char *iotgw_errname(int code)
{
    const struct err_entry *e = err_find(code);
    return e ? e->name : "IOTGW_ERR_UNKNOWN";
}

const char *iotgw_strerror(int code)
{
    const struct err_entry *e = err_find(code);
    return e ? e->text : "unknown error";
}

int iotgw_diag_fail(iotgw_diag *d, int code, const char *fmt, ...)
{
    if (d) {
        va_list ap;
        d->code = code;
        va_start(ap, fmt);
        vsnprintf(d->text, sizeof d->text, fmt, ap);
        va_end(ap);
    }
    return code;
}

void iotgw_diag_clear(iotgw_diag *d)
{
    if (d) {
        d->code = IOTGW_OK;
        d->text[0] = '\0';
    }
}
