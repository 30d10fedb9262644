/* Fault injection (iothub-emulator --admin): a hub that misbehaves on purpose, so that
 * clients' reliability can be tested. Served under /admin on the HTTPS listener, to
 * loopback clients only, without a token. Every fault is logged when set.
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

#include "emulator/rest.h"

static json_t *faults_json(emu_hub *hub)
{
    int64_t left = hub->faults.refuse_until_ms - emu_wall_ms();
    json_t *rejected = json_array();
    for (int i = 0; i < hub->faults.nreject; i++)
        json_array_append_new(rejected, json_string(hub->faults.reject_tokens[i]));
    return json_pack("{s:I,s:o,s:i,s:i,s:i,s:i}", "refuseConnectionsForMs", (json_int_t)(left > 0 ? left : 0),
                     "rejectedTokens", rejected, "d2cPerSecond", hub->opt.d2c_limit, "restPerSecond",
                     hub->faults.rest_limit, "methodDelayMs", hub->faults.method_delay_ms, "methodFailStatus",
                     hub->faults.method_fail_status);
}

static void clear(emu_hub *hub)
{
    for (int i = 0; i < hub->faults.nreject; i++)
        free(hub->faults.reject_tokens[i]);
    free(hub->faults.reject_tokens);
    memset(&hub->faults, 0, sizeof hub->faults);
    hub->opt.d2c_limit = 0;
    iotgw_log(IOTGW_LOG_WARN, "fault injection: every fault cleared");
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
    emu_identity *id = emu_registry_find(hub->registry, device, NULL);
    if (!id)
        return "no such device";
    int rejected = emu_faults_rejects(hub, id->id);
    if (!strcmp(action, "reject")) {
        if (!rejected) {
            char **list =
                realloc(hub->faults.reject_tokens, (size_t)(hub->faults.nreject + 1) * sizeof *list);
            if (!list || !(list[hub->faults.nreject] = strdup(id->id)))
                return "out of memory";
            hub->faults.reject_tokens = list;
            hub->faults.nreject++;
        }
        iotgw_log(IOTGW_LOG_WARN, "fault injection: put-tokens for %s are answered 401", id->id);
    } else if (!strcmp(action, "accept")) {
        for (int i = 0; i < hub->faults.nreject; i++)
            if (!strcmp(hub->faults.reject_tokens[i], id->id)) {
                free(hub->faults.reject_tokens[i]);
                hub->faults.reject_tokens[i] = hub->faults.reject_tokens[--hub->faults.nreject];
                break;
            }
        iotgw_log(IOTGW_LOG_WARN, "fault injection: put-tokens for %s are accepted again", id->id);
    } else if (!strcmp(action, "expire")) {
        iotgw_log(IOTGW_LOG_WARN, "fault injection: the tokens of %s expire now", id->id);
        emu_identity_disconnect(id, "amqp:unauthorized-access",
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
    if (!strcmp(what, "faults") && !strcmp(method, "DELETE")) {
        clear(hub);
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
        else {
            hub->faults.refuse_until_ms = s ? emu_wall_ms() + (int64_t)s * 1000 : 0;
            iotgw_log(IOTGW_LOG_WARN, "fault injection: new connections refused for %d s", s);
        }
    } else if (!strcmp(what, "tokens")) {
        problem = tokens(hub, j);
    } else if (!strcmp(what, "throttle")) {
        int rate =
            json_object_get(j, "d2cPerSecond") ? number(j, "d2cPerSecond", 1000000) : hub->opt.d2c_limit;
        int rest =
            json_object_get(j, "restPerSecond") ? number(j, "restPerSecond", 100000) : hub->faults.rest_limit;
        if (rate < 0 || rest < 0)
            problem = "d2cPerSecond and restPerSecond must be 0 (no limit) or more";
        else {
            hub->opt.d2c_limit = rate;
            hub->d2c_tokens = rate;
            hub->faults.rest_limit = rest;
            hub->faults.rest_tokens = rest;
            hub->faults.rest_refilled_ms = emu_wall_ms();
            iotgw_log(
                IOTGW_LOG_WARN,
                "fault injection: device-to-cloud limited to %d messages/s, REST to %d requests/s (0: none)",
                rate, rest);
        }
    } else if (!strcmp(what, "methods")) {
        int delay = json_object_get(j, "delayMs") ? number(j, "delayMs", 300000) : 0;
        int fail = json_object_get(j, "failStatus") ? number(j, "failStatus", 599) : 0;
        if (delay < 0 || fail < 0 || (fail && fail < 400))
            problem = "delayMs must be 0 to 300000 and failStatus 0 or 400 to 599";
        else {
            hub->faults.method_delay_ms = delay;
            hub->faults.method_fail_status = fail;
            iotgw_log(IOTGW_LOG_WARN,
                      "fault injection: method answers delayed %d ms, failed with %d (0: not)", delay, fail);
        }
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
