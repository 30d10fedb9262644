/* A device's Telemetry frame as the IoT Hub message the gateway sends for it: a Parcel
 * through codecs/hubmsg (protobuf or JSON body, promoted properties), or a raw payload
 * as is; the device's properties become application properties. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "codecs/hubmsg.h"
#include "codecs/types.h"
#include "gateway/gateway_internal.h"

/* Append key/value strings to the message's application properties. */
static void add_properties(pn_message_t *msg, Iotgw__Property **props, size_t n)
{
    if (!n)
        return;
    pn_data_t *p = pn_message_properties(msg);
    pn_data_rewind(p);
    if (pn_data_next(p) && pn_data_type(p) == PN_MAP) {
        pn_data_enter(p);
        while (pn_data_next(p))
            ;
    } else {
        pn_data_clear(p);
        pn_data_put_map(p);
        pn_data_enter(p);
    }
    for (size_t i = 0; i < n; i++) {
        pn_data_put_string(p, pn_bytes(strlen(props[i]->key), props[i]->key));
        pn_data_put_string(p, pn_bytes(strlen(props[i]->value), props[i]->value));
    }
    pn_data_exit(p);
}

int gw_wrap_telemetry(iotgw_gateway *g, const Iotgw__Telemetry *t, pn_message_t *msg, iotgw_diag *diag)
{
    char id[IOTGW_HUBMSG_MAX_ID_LEN + 1];
    if (t->message_id && *t->message_id) {
        if (strlen(t->message_id) > IOTGW_HUBMSG_MAX_ID_LEN)
            return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "message_id is longer than %d characters",
                                   IOTGW_HUBMSG_MAX_ID_LEN);
        snprintf(id, sizeof id, "%s", t->message_id);
    } else
        snprintf(id, sizeof id, "%016" PRIx64 "-%" PRIu64, g->boot_id, ++g->next_message);
    int64_t created = t->created_unix_ms ? (int64_t)t->created_unix_ms : 0;
    for (size_t i = 0; i < t->n_properties; i++)
        if (!t->properties[i]->key || !*t->properties[i]->key)
            return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "properties[%zu] has no key", i);
    if (t->payload_case == IOTGW__TELEMETRY__PAYLOAD_PARCEL) {
        iotgw_hubmsg_options o = {.encoding = g->cfg->encoding,
                                  .message_id = id,
                                  .creation_time_ms = created,
                                  .types = iotgw_types_builtin()};
        int rc = iotgw_hubmsg_from_parcel(t->parcel, &o, msg, diag);
        if (rc)
            return rc;
    } else if (t->payload_case == IOTGW__TELEMETRY__PAYLOAD_RAW) {
        pn_message_clear(msg);
        pn_message_set_id(msg, (pn_atom_t){.type = PN_STRING, .u.as_bytes = pn_bytes(strlen(id), id)});
        if (t->content_type && *t->content_type)
            pn_message_set_content_type(msg, t->content_type);
        if (t->content_encoding && *t->content_encoding)
            pn_message_set_content_encoding(msg, t->content_encoding);
        if (created)
            pn_message_set_creation_time(msg, created);
        pn_data_put_binary(pn_message_body(msg), pn_bytes(t->raw.len, (const char *)t->raw.data));
    } else {
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "telemetry without a payload (parcel or raw)");
    }
    add_properties(msg, t->properties, t->n_properties);
    return 0;
}
