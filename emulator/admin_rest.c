/* Fault injection (iothub-emulator --admin) over REST: a hub that misbehaves on purpose,
 * so that clients' reliability can be tested. Served under /admin on the HTTPS listener,
 * to loopback clients only, without a token. The faults themselves, and their checks,
 * are emulator/faults.c, which logs each one when it is set; this file reads requests
 * and answers with what is set.
 *
 *   POST   /admin/drop-connections            close every AMQP connection now
 *   POST   /admin/refuse-connections {"seconds": N}   close new connections at once for N s
 *   POST   /admin/tokens {"device": ID, "action": "reject" | "expire" | "accept"}
 *   POST   /admin/throttle {"d2cPerSecond": N, "restPerSecond": M}   D2C rejected as throttled,
 *                                             service REST answered 429, over the rates (0: none)
 *   POST   /admin/methods {"delayMs": N, "failStatus": S}   hold or fail devices' answers
 *   GET    /admin/faults                      what is set
 *   DELETE /admin/faults                      clear everything */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "emulator/faults.h"
#include "emulator/rest.h"
#include "transport/log.h"

static json_t *faults_json(emu_hub *hub)
{
    emu_faults_state st;
    emu_faults_query(emu_hub_faults(hub), emu_wall_ms(), &st);
    json_t *rejected = json_array();
    for (int i = 0; i < st.nrejected; i++)
        json_array_append_new(rejected, json_string(st.rejected[i]));
    return json_pack("{s:I,s:o,s:i,s:i,s:i,s:i}", "refuseConnectionsForMs", (json_int_t)st.refuse_for_ms,
                     "rejectedTokens", rejected, "d2cPerSecond", st.d2c_per_second, "restPerSecond",
                     st.rest_per_second, "methodDelayMs", st.method_delay_ms, "methodFailStatus",
                     st.method_fail_status);
}

/* An integer field from 0 to max; -1 when absent or out of range. */
static int number(json_t *j, const char *key, int max)
{
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return -1;
    return (int)json_integer_value(v);
}

static const char *tokens(emu_hub *hub, json_t *j)
{
    const char *device = json_string_value(json_object_get(j, "device"));
    const char *action = json_string_value(json_object_get(j, "action"));
    if (!device || !action)
        return "give device and action (reject, expire or accept)";
    emu_identity *id = emu_registry_find(emu_hub_registry(hub), device, NULL);
    if (!id)
        return "no such device";
    if (!strcmp(action, "reject")) {
        if (emu_faults_reject_tokens(emu_hub_faults(hub), id->id))
            return "out of memory";
    } else if (!strcmp(action, "accept")) {
        emu_faults_accept_tokens(emu_hub_faults(hub), id->id);
    } else if (!strcmp(action, "expire")) {
        iotgw_log(IOTGW_LOG_WARN, "fault injection: the tokens of %s expire now", id->id);
        emu_hub_identity_disconnect(hub, id, "amqp:unauthorized-access",
                                    "the device's token expired (fault injection)");
    } else {
        return "action must be reject, expire or accept";
    }
    return NULL;
}

void emu_rest_admin(emu_hub *hub, iotgw_http_request *req, const char *method, char **seg, int n)
{
    if (!emu_rest_loopback(iotgw_http_peer(req))) {
        emu_rest_error forbidden = {403, 403000, "Forbidden"};
        emu_rest_fail(hub, req, &forbidden, "the admin API answers loopback clients only");
        return;
    }
    const char *what = n == 2 ? seg[1] : "";
    size_t len = 0;
    const uint8_t *body = iotgw_http_body(req, &len);
    json_t *j = len ? json_loadb((const char *)body, len, 0, NULL) : json_object();
    const char *problem = NULL;
    if (!j) {
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, "the body is not JSON");
        return;
    }
    if (!strcmp(what, "faults") && !strcmp(method, "GET")) {
        emu_rest_json(hub, req, 200, faults_json(hub), NULL);
        json_decref(j);
        return;
    }
    emu_faults *faults = emu_hub_faults(hub);
    if (!strcmp(what, "faults") && !strcmp(method, "DELETE")) {
        emu_faults_reset(faults);
    } else if (strcmp(method, "POST")) {
        emu_rest_fail(hub, req, &E_METHOD, "fault injection takes POST (and GET or DELETE on /admin/faults)");
        json_decref(j);
        return;
    } else if (!strcmp(what, "drop-connections")) {
        int dropped = emu_hub_drop_connections(hub, "amqp:connection:forced", "dropped by fault injection");
        iotgw_log(IOTGW_LOG_WARN, "fault injection: %d connections dropped", dropped);
    } else if (!strcmp(what, "refuse-connections")) {
        int s = number(j, "seconds", 86400);
        if (s < 0)
            problem = "seconds must be 0 to 86400";
        else
            emu_faults_refuse_connections(faults, s, emu_wall_ms());
    } else if (!strcmp(what, "tokens")) {
        problem = tokens(hub, j);
    } else if (!strcmp(what, "throttle")) {
        emu_faults_state current; /* what a field left out keeps */
        emu_faults_query(faults, emu_wall_ms(), &current);
        int rate =
            json_object_get(j, "d2cPerSecond") ? number(j, "d2cPerSecond", 1000000) : current.d2c_per_second;
        int rest = json_object_get(j, "restPerSecond") ? number(j, "restPerSecond", 100000)
                                                       : current.rest_per_second;
        if (rate < 0 || rest < 0)
            problem = "d2cPerSecond and restPerSecond must be 0 (no limit) or more";
        else
            emu_faults_throttle(faults, rate, rest, emu_wall_ms());
    } else if (!strcmp(what, "methods")) {
        int delay = json_object_get(j, "delayMs") ? number(j, "delayMs", 300000) : 0;
        int fail = json_object_get(j, "failStatus") ? number(j, "failStatus", 599) : 0;
        if (delay < 0 || fail < 0 || (fail && fail < 400))
            problem = "delayMs must be 0 to 300000 and failStatus 0 or 400 to 599";
        else
            emu_faults_set_methods(faults, delay, fail);
    } else {
        emu_rest_fail(hub, req, &E_ROUTE, "no such fault");
        json_decref(j);
        return;
    }
    json_decref(j);
    if (problem)
        emu_rest_fail(hub, req, &E_BAD_ARGUMENT, problem);
    else
        emu_rest_json(hub, req, 200, faults_json(hub), NULL);
}
