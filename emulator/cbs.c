/* Claims-based security: put-token requests on $cbs, and SASL PLAIN with a SAS token.
 * A token for a device or module authorizes that identity on the connection until its
 * expiry; a policy token for the whole hub grants the policy's rights (DeviceConnect:
 * any device, ServiceConnect: the service links). shared/docs/iothub-amqp-protocol.md 2. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/session.h>

#include "codecs/percent.h"
#include "codecs/sas.h"
#include "emulator/amqp_props.h"
#include "emulator/hub.h"
#include "transport/messaging.h"

#define TOKEN_TYPE_SB  "servicebus.windows.net:sastoken"
#define TOKEN_TYPE_IOT "azure-devices.net:sastoken"
#define MAX_TOKEN_LEN  4096

typedef struct grant_result {
    int status; /* 200, 400, 401, 404, 500 */
    char description[300];
} grant_result;

static int result(grant_result *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int result(grant_result *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    r->status = status;
    vsnprintf(r->description, sizeof r->description, fmt, ap);
    va_end(ap);
    return status == 200 ? 0 : -1;
}

/* Verify against the primary key, then the secondary one. */
static int verify_keys(const iotgw_sas_token *t, const char *primary, const char *secondary, iotgw_diag *diag)
{
    uint64_t now = emu_now_s();
    int rc = iotgw_sas_verify(t, primary, now, diag);
    if (rc == IOTGW_ERR_SAS_SIGNATURE)
        rc = iotgw_sas_verify(t, secondary, now, diag);
    return rc;
}

/* The resource of a token, percent-decoded and split: host, then "devices"/d/"modules"/m. */
typedef struct resource {
    char *decoded;
    const char *host, *device, *module;
    int hub_level; /* "{host}" or "{host}/devices" */
} resource;

static int parse_resource(const char *sr, resource *r)
{
    memset(r, 0, sizeof *r);
    if (iotgw_percent_decode(sr, strlen(sr), &r->decoded, NULL))
        return -1;
    char *seg[6] = {0}, *save = NULL;
    int n = 0;
    for (char *p = strtok_r(r->decoded, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
        if (n == 6)
            return -1;
        seg[n++] = p;
    }
    if (n == 0)
        return -1;
    r->host = seg[0];
    if (n == 1 || (n == 2 && !strcasecmp(seg[1], "devices")))
        r->hub_level = 1;
    else if (n == 3 && !strcasecmp(seg[1], "devices"))
        r->device = seg[2];
    else if (n == 5 && !strcasecmp(seg[1], "devices") && !strcasecmp(seg[3], "modules"))
        r->device = seg[2], r->module = seg[4];
    else
        return -1;
    return 0;
}

static int grant_token(emu_conn *c, const char *token, grant_result *res)
{
    emu_hub *hub = c->hub;
    iotgw_sas_token t;
    iotgw_diag diag = {0};
    if (iotgw_sas_parse(token, &t, &diag))
        return result(res, 401, "malformed token: %s", diag.text);
    resource r;
    int rc;
    if (parse_resource(t.sr, &r)) {
        rc = result(res, 401, "the token's resource (sr) names no device, module or hub");
        goto out;
    }
    if (strcasecmp(r.host, hub->opt.hostname)) {
        rc = result(res, 401, "the token is for another hub (%s)", r.host);
        goto out;
    }
    int new_audience = 1;
    emu_identity *id = NULL;
    if (r.device) {
        id = emu_registry_find(hub->registry, r.device, r.module);
        if (!id) {
            rc = result(res, 404, "%s%s%s is not registered on this hub", r.device, r.module ? "/" : "",
                        r.module ? r.module : "");
            goto out;
        }
        emu_session *s = emu_session_find(c, id);
        new_audience = !(s && s->token_expiry);
    } else {
        new_audience =
            t.skn && !((c->device_grant || c->service_grant) && emu_registry_policy(hub->registry, t.skn));
    }
    if (new_audience && c->tokens >= hub->opt.max_tokens) {
        char n[32];
        snprintf(n, sizeof n, "%d", hub->opt.max_tokens);
        rc = result(res, 500, "The maximum number of tokens per connection (%s) has been reached", n);
        goto out;
    }
    if (t.skn) {
        emu_policy *p = emu_registry_policy(hub->registry, t.skn);
        if (!p) {
            rc = result(res, 401, "no shared access policy named \"%s\"", t.skn);
            goto out;
        }
        if ((rc = verify_keys(&t, p->primary_key, p->secondary_key, &diag))) {
            rc = result(res, 401, "%s", diag.text);
            goto out;
        }
        if (id || (r.hub_level && !(p->rights & (EMU_RIGHT_DEVICE_CONNECT | EMU_RIGHT_SERVICE_CONNECT)))) {
            if (!(p->rights & EMU_RIGHT_DEVICE_CONNECT)) {
                rc = result(res, 401, "policy \"%s\" does not have DeviceConnect", p->name);
                goto out;
            }
        }
        if (r.hub_level) {
            if (p->rights & EMU_RIGHT_DEVICE_CONNECT) {
                if (!c->device_grant)
                    c->tokens++;
                c->device_grant = t.se;
            }
            if (p->rights &
                (EMU_RIGHT_SERVICE_CONNECT | EMU_RIGHT_REGISTRY_READ | EMU_RIGHT_REGISTRY_WRITE)) {
                if (!c->service_grant)
                    c->tokens++;
                c->service_grant = t.se;
                c->service_rights = p->rights;
            }
            emu_log("info", "conn %" PRIu64 ": policy %s authorized for the hub until %" PRIu64, c->serial,
                    p->name, t.se);
            emu_conn_schedule_expiry(c);
            rc = result(res, 200, "OK");
            goto out;
        }
    } else {
        if (!id) {
            rc = result(res, 401, "a token without skn must be for a device or module");
            goto out;
        }
        if ((rc = verify_keys(&t, id->primary_key, id->secondary_key, &diag))) {
            id->live.auth_failed++;
            rc = result(res, 401, "%s", diag.text);
            goto out;
        }
    }
    if (!id->enabled) {
        id->live.auth_failed++;
        rc = result(res, 401, "%s is disabled", id->id);
        goto out;
    }
    if (!emu_session_get(c, id, t.se)) {
        rc = result(res, 500, "out of memory");
        goto out;
    }
    id->live.auth_ok++;
    id->live.last_activity_ms = emu_wall_ms();
    emu_log("info", "conn %" PRIu64 ": %s authorized until %" PRIu64, c->serial, id->id, t.se);
    emu_conn_schedule_expiry(c);
    rc = result(res, 200, "OK");
out:
    free(r.decoded);
    iotgw_sas_token_clear(&t);
    return rc;
}

static emu_link *reply_link(emu_link *request, const char *reply_to)
{
    emu_link *same_session = NULL, *any = NULL;
    for (emu_link *l = request->conn->links; l; l = l->next) {
        if (l->kind != EMU_LINK_CBS_REPLIES || (pn_link_state(l->link) & PN_LOCAL_CLOSED))
            continue;
        if (reply_to && l->reply_address && !strcmp(reply_to, l->reply_address))
            return l;
        if (!same_session && pn_link_session(l->link) == pn_link_session(request->link))
            same_session = l;
        if (!any)
            any = l;
    }
    return same_session ? same_session : any;
}

void emu_cbs_on_request(emu_link *l, pn_delivery_t *d)
{
    emu_conn *c = l->conn;
    pn_message_t *m = emu_take_request(l, d, "CBS request");
    if (!m)
        return;
    iotgw_delivery_settle(d, PN_ACCEPTED, NULL, NULL);

    grant_result res = {0};
    char op[32], type[64], name[300];
    pn_data_t *props = pn_message_properties(m);
    size_t tlen = 0;
    const char *token = emu_body_bytes(pn_message_body(m), &tlen);
    if (!emu_map_text(props, "operation", op, sizeof op) || strcmp(op, "put-token"))
        result(&res, 400, "unsupported operation; only put-token is");
    else if (!emu_map_text(props, "type", type, sizeof type) ||
             (strcmp(type, TOKEN_TYPE_SB) && strcmp(type, TOKEN_TYPE_IOT)))
        result(&res, 400, "token type must be " TOKEN_TYPE_SB " or " TOKEN_TYPE_IOT);
    else if (!emu_map_text(props, "name", name, sizeof name))
        result(&res, 400, "the audience (name) is missing");
    else if (!token || tlen == 0 || tlen > MAX_TOKEN_LEN)
        result(&res, 400, "the body must be the token as a string");
    else {
        char *tok = strndup(token, tlen);
        if (!tok)
            result(&res, 500, "out of memory");
        else {
            grant_token(c, tok, &res);
            free(tok);
        }
    }
    if (res.status != 200)
        emu_log("warn", "conn %" PRIu64 ": put-token refused (%d): %s", c->serial, res.status,
                res.description);

    pn_message_t *reply = pn_message();
    if (!reply)
        return;
    pn_message_set_correlation_id(reply, pn_message_get_id(m));
    pn_data_t *ap = pn_message_properties(reply);
    pn_data_put_map(ap);
    pn_data_enter(ap);
    pn_data_put_string(ap, pn_bytes(strlen("status-code"), "status-code"));
    pn_data_put_int(ap, res.status);
    pn_data_put_string(ap, pn_bytes(strlen("status-description"), "status-description"));
    pn_data_put_string(ap, pn_bytes(strlen(res.description), res.description));
    pn_data_exit(ap);
    emu_link *out = reply_link(l, pn_message_get_reply_to(m));
    if (!out || emu_link_answer(out, reply))
        emu_log("warn", "conn %" PRIu64 ": CBS: no $cbs receiver link for the reply", c->serial);
    pn_message_free(reply);
}

/* SASL PLAIN: the password is a SAS token (user "{device}@sas.{hub}" or
 * "{policy}@sas.root.{hub}"); it is granted as a put-token would be. */
int emu_cbs_sasl_plain(iotgw_conn *ic, const char *user, const char *password, void *ctx)
{
    emu_conn *c = iotgw_conn_context(ic);
    (void)ctx;
    if (!c || !strstr(user, "@sas."))
        return -1;
    grant_result res = {0};
    if (strlen(password) > MAX_TOKEN_LEN || grant_token(c, password, &res)) {
        emu_log("warn", "conn %" PRIu64 ": SASL PLAIN refused for %.100s: %s", c ? c->serial : 0, user,
                res.description);
        return -1;
    }
    return 0;
}
