#include "codecs/cbs.h"

#include <string.h>

static void put_pair(pn_data_t *d, const char *key, const char *value)
{
    pn_data_put_string(d, pn_bytes(strlen(key), key));
    pn_data_put_string(d, pn_bytes(strlen(value), value));
}

void iotgw_cbs_put_token_request(pn_message_t *msg, uint64_t id, const char *audience, const char *token)
{
    pn_message_clear(msg);
    pn_message_set_id(msg, (pn_atom_t){.type = PN_ULONG, .u.as_ulong = id});
    pn_message_set_address(msg, IOTGW_CBS_NODE);
    pn_message_set_reply_to(msg, "cbs");
    pn_data_t *p = pn_message_properties(msg);
    pn_data_put_map(p);
    pn_data_enter(p);
    put_pair(p, "operation", "put-token");
    put_pair(p, "type", IOTGW_CBS_TOKEN_TYPE);
    put_pair(p, "name", audience);
    pn_data_exit(p);
    pn_data_put_string(pn_message_body(msg), pn_bytes(strlen(token), token));
}
