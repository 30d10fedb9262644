#include "hubside/amqp_device.h"

#include <string.h>
#include <proton/codec.h>

#include "transport/amqp_map.h"
#include "transport/messaging.h"

static void put_key(pn_data_t *d, const char *key)
{
    pn_data_put_string(d, pn_bytes(strlen(key), key));
}

static void put_symbol(pn_data_t *d, const char *key)
{
    pn_data_put_symbol(d, pn_bytes(strlen(key), key));
}

/* The body as a data section (what IoT Hub sends), not an amqp-value. */
static void set_data_body(pn_message_t *m, const uint8_t *body, size_t len)
{
    pn_data_put_binary(pn_message_body(m), pn_bytes(len, (const char *)body));
    pn_message_set_inferred(m, true);
}

/* ------------------------------------------------------------------ CBS */

int iotgw_hubamqp_put_token_parse(pn_message_t *request, iotgw_hubamqp_put_token *out, const char **why)
{
    char op[32], type[64];
    pn_data_t *props = pn_message_properties(request);
    memset(out, 0, sizeof *out);
    out->token = iotgw_body_bytes(pn_message_body(request), &out->token_len);
    if (!iotgw_map_text(props, "operation", op, sizeof op) || strcmp(op, "put-token"))
        *why = "unsupported operation; only put-token is";
    else if (!iotgw_map_text(props, "type", type, sizeof type) ||
             (strcmp(type, IOTGW_HUBAMQP_TOKEN_TYPE_SB) && strcmp(type, IOTGW_HUBAMQP_TOKEN_TYPE_IOT)))
        *why = "token type must be " IOTGW_HUBAMQP_TOKEN_TYPE_SB " or " IOTGW_HUBAMQP_TOKEN_TYPE_IOT;
    else if (!iotgw_map_text(props, "name", out->audience, sizeof out->audience))
        *why = "the audience (name) is missing";
    else if (!out->token || out->token_len == 0 || out->token_len > IOTGW_HUBAMQP_MAX_TOKEN)
        *why = "the body must be the token as a string";
    else
        return 0;
    return 400;
}

int iotgw_hubamqp_cbs_reply(pn_message_t *request, int status, const char *description, pn_message_t *reply)
{
    pn_message_clear(reply);
    if (pn_message_set_correlation_id(reply, pn_message_get_id(request)))
        return -1;
    pn_data_t *ap = pn_message_properties(reply);
    pn_data_put_map(ap);
    pn_data_enter(ap);
    put_key(ap, "status-code");
    pn_data_put_int(ap, status);
    put_key(ap, "status-description");
    put_key(ap, description ? description : "");
    pn_data_exit(ap);
    return pn_data_errno(ap) ? -1 : 0;
}

void iotgw_hubamqp_accept_first(iotgw_conn *c, pn_delivery_t *d)
{
    iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);
    if (c)
        iotgw_conn_encode_pending(c);
}

/* ------------------------------------------------------------------ twin */

iotgw_hubamqp_twin_op iotgw_hubamqp_twin_op_of(pn_message_t *request, char op[16], char resource[64])
{
    pn_data_t *ann = pn_message_annotations(request);
    op[0] = resource[0] = '\0';
    iotgw_map_text(ann, "operation", op, 16);
    iotgw_map_text(ann, "resource", resource, 64);
    if (!strcmp(op, "GET"))
        return IOTGW_HUBAMQP_TWIN_GET;
    if (!strcmp(op, "PATCH") && !strcmp(resource, "/properties/reported"))
        return IOTGW_HUBAMQP_TWIN_PATCH_REPORTED;
    if (!strcmp(resource, "/notifications/twin/properties/desired")) {
        if (!strcmp(op, "PUT"))
            return IOTGW_HUBAMQP_TWIN_SUBSCRIBE_DESIRED;
        if (!strcmp(op, "DELETE"))
            return IOTGW_HUBAMQP_TWIN_UNSUBSCRIBE_DESIRED;
    }
    return IOTGW_HUBAMQP_TWIN_UNKNOWN;
}

int iotgw_hubamqp_twin_message(pn_message_t *m, const pn_msgid_t *correlation, int status, int64_t version,
                               const uint8_t *body, size_t len)
{
    pn_message_clear(m);
    if (correlation && pn_message_set_correlation_id(m, *correlation))
        return -1;
    pn_data_t *ann = pn_message_annotations(m);
    pn_data_put_map(ann);
    pn_data_enter(ann);
    if (status) {
        put_symbol(ann, "status");
        pn_data_put_int(ann, status);
    }
    if (version >= 0) {
        put_symbol(ann, "version");
        pn_data_put_long(ann, version);
    }
    if (!correlation) {
        put_symbol(ann, "resource");
        put_key(ann, "/properties/desired");
    }
    pn_data_exit(ann);
    if (body)
        set_data_body(m, body, len);
    return pn_data_errno(ann) ? -1 : 0;
}

/* ------------------------------------------------------------------ direct methods */

int iotgw_hubamqp_method_request(pn_message_t *m, const uint8_t uuid[16], const char *name,
                                 const uint8_t *payload, size_t len)
{
    pn_message_clear(m);
    pn_atom_t corr = {.type = PN_UUID};
    memcpy(corr.u.as_uuid.bytes, uuid, 16);
    if (pn_message_set_correlation_id(m, corr))
        return -1;
    pn_data_t *ap = pn_message_properties(m);
    pn_data_put_map(ap);
    pn_data_enter(ap);
    put_key(ap, "IoThub-methodname");
    put_key(ap, name);
    pn_data_exit(ap);
    set_data_body(m, payload ? payload : (const uint8_t *)"", payload ? len : 0);
    return pn_data_errno(ap) ? -1 : 0;
}

int iotgw_hubamqp_method_response(pn_message_t *m, uint8_t uuid[16], int *status, const uint8_t **body,
                                  size_t *len)
{
    pn_msgid_t corr = pn_message_get_correlation_id(m);
    int64_t st;
    if (corr.type != PN_UUID || iotgw_map_int(pn_message_properties(m), "IoThub-status", &st) ||
        st < INT32_MIN || st > INT32_MAX)
        return -1;
    memcpy(uuid, corr.u.as_uuid.bytes, 16);
    *status = (int)st;
    *len = 0;
    *body = (const uint8_t *)iotgw_body_bytes(pn_message_body(m), len);
    if (!*body)
        *len = 0;
    return 0;
}
