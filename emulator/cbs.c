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
#include "transport/amqp_map.h"
#include "emulator/hub_internal.h"
#include "hubside/amqp_device.h"
#include "transport/messaging.h"

#define MAX_TOKEN_LEN IOTGW_HUBAMQP_MAX_TOKEN

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
static int verify_keys(const iotgw_sas_token *t, const char *primary, const char *secondary, int event_hub,
                       iotgw_diag *diag)
{
    uint64_t now = emu_now_s();
    int (*check)(const iotgw_sas_token *, const char *, uint64_t, iotgw_diag *) =
        event_hub ? iotgw_sas_verify_key_text : iotgw_sas_verify;
    int rc = check(t, primary, now, diag);
    if (rc == IOTGW_ERR_SAS_SIGNATURE)
        rc = check(t, secondary, now, diag);
    return rc;
}

/* The resource of a token (or a CBS audience), percent-decoded and split: host, then
 * "devices"/d/"modules"/m; or "messages/events..." (the telemetry stream on IoT Hub's
 * host, as Azure's sample converting an IoT Hub connection string signs for); or the
 * Event Hub-compatible name and what Event Hubs clients put after it
 * ("sb://{host}/{event hub}[/$management | /ConsumerGroups/{g}/Partitions/{n} ...]"). */
typedef struct resource {
    char *decoded;
    const char *host, *device, *module, *event_hub;
    int hub_level; /* "{host}" or "{host}/devices" */
    int stream;    /* "{host}/messages/events[/...]" */
} resource;

#define MAX_RESOURCE_SEGMENTS 8

static int parse_resource(const char *sr, resource *r)
{
    memset(r, 0, sizeof *r);
    if (iotgw_percent_decode(sr, strlen(sr), &r->decoded, NULL))
        return -1;
    char *start = r->decoded;
    static const char *const schemes[] = {"sb://", "amqps://", "amqp://"};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (!strncasecmp(start, schemes[i], strlen(schemes[i])))
            start += strlen(schemes[i]);
    char *seg[MAX_RESOURCE_SEGMENTS] = {0}, *save = NULL;
    int n = 0;
    for (char *p = strtok_r(start, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
        if (n == MAX_RESOURCE_SEGMENTS)
            return -1;
        seg[n++] = p;
    }
    if (n == 0)
        return -1;
    r->host = seg[0];
    int devices = n >= 2 && !strcasecmp(seg[1], "devices");
    if (n == 1 || (n == 2 && devices))
        r->hub_level = 1;
    else if (n == 3 && devices)
        r->device = seg[2];
    else if (n == 5 && devices && !strcasecmp(seg[3], "modules"))
        r->device = seg[2], r->module = seg[4];
    else if (n >= 3 && !strcasecmp(seg[1], "messages") && !strcasecmp(seg[2], "events"))
        r->stream = 1;
    else if (n >= 2 && !devices && strcasecmp(seg[1], "messages") && seg[1][0] != '$')
        r->event_hub = seg[1];
    else
        return -1;
    return 0;
}

/* Tokens the connection holds, one per audience: each identity's own, and the hub's. */
static int tokens_held(const emu_conn *c)
{
    int n = c->device_grant || c->service_grant;
    for (const emu_session *s = c->sessions; s; s = s->next_in_conn)
        n += s->token_expiry != 0;
    return n;
}

/* SASL PLAIN names who it is: "{device}@sas.{hub}" or "{policy}@sas.root.{hub}"; the
 * token must be that device's or signed by that policy. */
static int plain_user_matches(const char *user, const iotgw_sas_token *t, const resource *r)
{
    const char *at = strstr(user, "@sas.");
    if (!at)
        return 0;
    size_t n = (size_t)(at - user);
    if (!strncmp(at + 5, "root.", 5))
        return t->skn && strlen(t->skn) == n && !strncmp(user, t->skn, n);
    return r->device && !r->module && strlen(r->device) == n && !strncmp(user, r->device, n);
}

/* A token for the identity failed to verify, or came while it is disabled. */
static void count_auth_failure(emu_hub *hub, emu_identity *id)
{
    emu_live *live = emu_live_get(&hub->live, id);
    if (live)
        live->auth_failed++;
}

int emu_auth_token(emu_hub *hub, const char *token, const char *plain_user, emu_auth *out)
{
    memset(out, 0, sizeof *out);
    grant_result res = {0};
    iotgw_sas_token t;
    iotgw_diag diag = {0};
    if (iotgw_sas_parse(token, &t, &diag)) {
        result(&res, 401, "malformed token: %s", diag.text);
        out->status = res.status;
        snprintf(out->description, sizeof out->description, "%s", res.description);
        return -1;
    }
    resource r;
    int rc, vrc;
    emu_identity *id = NULL;
    emu_policy *p = t.skn ? emu_registry_policy(hub->registry, t.skn) : NULL;
    if (parse_resource(t.sr, &r)) {
        rc = result(&res, 401, "the token's resource (sr) names no device, module, hub or event hub");
    } else if (strcasecmp(r.host, hub->opt.hostname)) {
        rc = result(&res, 401, "the token is for another hub (%s)", r.host);
    } else if (r.event_hub && strcasecmp(r.event_hub, hub->event_hub)) {
        rc = result(&res, 401, "the token is for another event hub (%s; this hub's stream is %s)",
                    r.event_hub, hub->event_hub);
    } else if (r.event_hub && !(p && (p->rights & EMU_RIGHT_SERVICE_CONNECT))) {
        rc = result(&res, 401, "a token for the event hub must be signed by a policy with ServiceConnect");
    } else if (r.stream && !(p && (p->rights & EMU_RIGHT_SERVICE_CONNECT))) {
        rc = result(&res, 401, "a token for messages/events must be signed by a policy with ServiceConnect");
    } else if (plain_user && !plain_user_matches(plain_user, &t, &r)) {
        rc = result(&res, 401, "the SASL user name does not match the token");
    } else if (r.device && !(id = emu_registry_find(hub->registry, r.device, r.module))) {
        rc = result(&res, 404, "%s%s%s is not registered on this hub", r.device, r.module ? "/" : "",
                    r.module ? r.module : "");
    } else if (id && emu_faults_rejects_tokens(hub->faults, id->id)) {
        rc = result(&res, 401, "token rejected (fault injection)");
    } else if (t.skn && !p) {
        rc = result(&res, 401, "no shared access policy named \"%s\"", t.skn);
    } else if (!t.skn && !id) {
        rc = result(&res, 401, "a token without skn must be for a device or module");
    } else if ((vrc = verify_keys(&t, p ? p->primary_key : id->primary_key,
                                  p ? p->secondary_key : id->secondary_key, r.event_hub != NULL, &diag))) {
        if (id)
            count_auth_failure(hub, id);
        if (r.event_hub) /* as Event Hubs words it (the SDKs show it), then the detail */
            rc =
                result(&res, 401, "%s (%s)",
                       vrc == IOTGW_ERR_SAS_EXPIRED ? "ExpiredToken: The token is expired."
                                                    : "InvalidSignature: The token has an invalid signature.",
                       diag.text);
        else
            rc = result(&res, 401, "%s", diag.text);
    } else if (p && (id ? !(p->rights & EMU_RIGHT_DEVICE_CONNECT) : !p->rights)) {
        rc = result(&res, 401, "policy \"%s\" does not have DeviceConnect", p->name);
    } else if (id && !id->enabled) {
        count_auth_failure(hub, id);
        rc = result(&res, 401, "%s is disabled", id->id);
    } else {
        out->id = id;
        out->policy = p;
        out->expiry = t.se;
        out->stream_only = r.event_hub || r.stream;
        rc = result(&res, 200, "OK");
    }
    out->status = res.status;
    snprintf(out->description, sizeof out->description, "%s", res.description);
    free(r.decoded);
    iotgw_sas_token_clear(&t);
    return rc;
}

/* Authorize what a token covers on connection c. plain_user: the SASL PLAIN user name,
 * or NULL for a CBS put-token. */
static int grant_token(emu_conn *c, const char *token, const char *plain_user, grant_result *res)
{
    emu_hub *hub = c->hub;
    emu_auth a;
    if (emu_auth_token(hub, token, plain_user, &a)) {
        res->status = a.status;
        snprintf(res->description, sizeof res->description, "%s", a.description);
        return -1;
    }
    emu_identity *id = a.id;
    emu_policy *p = a.policy;
    emu_session *s = id ? emu_session_find(c, id) : NULL;
    int renewal = id ? s && s->token_expiry : c->device_grant || c->service_grant;
    if (!renewal && tokens_held(c) >= hub->opt.max_tokens)
        return result(res, 500, "The maximum number of tokens per connection (%d) has been reached",
                      hub->opt.max_tokens);
    if (id && !(s = emu_session_get(c, id, a.expiry)))
        return result(res, 500, "out of memory");
    if (id) {
        s->live->auth_ok++;
        s->live->last_activity_ms = emu_wall_ms();
    } else {
        if ((p->rights & EMU_RIGHT_DEVICE_CONNECT) && !a.stream_only)
            c->device_grant = a.expiry;
        if (p->rights & ~EMU_RIGHT_DEVICE_CONNECT) {
            c->service_grant = a.expiry;
            c->service_rights = p->rights;
        }
    }
    iotgw_log(IOTGW_LOG_INFO, "conn %" PRIu64 ": %s%s authorized until %" PRIu64, c->serial,
              id ? "" : "policy ", id ? id->id : p->name, a.expiry);
    emu_conn_schedule_expiry(c);
    return result(res, 200, "OK");
}

/* An audience naming an event hub on this host other than the hub's own is answered 404
 * as Event Hubs answers a put-token for an entity it does not have (the SDKs show
 * MessagingEntityNotFoundError); whether the token covers the audience is not checked
 * further: the connection is authorized for what the token names. */
static int audience_not_found(emu_hub *hub, const char *audience, grant_result *res)
{
    resource r;
    int found = 1;
    if (!parse_resource(audience, &r) && r.event_hub && !strcasecmp(r.host, hub->opt.hostname) &&
        strcasecmp(r.event_hub, hub->event_hub)) {
        result(res, 404, "The messaging entity 'sb://%s/%s' could not be found. (this hub's event hub is %s)",
               hub->opt.hostname, r.event_hub, hub->event_hub);
        found = 0;
    }
    free(r.decoded);
    return !found;
}

void emu_cbs_on_request(emu_link *l, pn_delivery_t *d)
{
    emu_conn *c = l->conn;
    pn_message_t *m = emu_take_request(l, d, "CBS request");
    if (!m)
        return;
    iotgw_hubamqp_accept_first(c->conn, d);

    grant_result res = {0};
    iotgw_hubamqp_put_token req;
    const char *why;
    if ((res.status = iotgw_hubamqp_put_token_parse(m, &req, &why)))
        result(&res, res.status, "%s", why);
    else if (audience_not_found(c->hub, req.audience, &res))
        ;
    else {
        char *tok = strndup(req.token, req.token_len);
        if (!tok)
            result(&res, 500, "out of memory");
        else {
            grant_token(c, tok, NULL, &res);
            free(tok);
        }
    }
    if (res.status != 200)
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": put-token refused (%d): %s", c->serial, res.status,
                  res.description);
    c->hub->metrics.put_tokens[res.status == 200   ? EMU_CBS_200
                               : res.status == 400 ? EMU_CBS_400
                               : res.status == 401 ? EMU_CBS_401
                               : res.status == 404 ? EMU_CBS_404
                                                   : EMU_CBS_500]++;

    pn_message_t *reply = pn_message();
    if (!reply || iotgw_hubamqp_cbs_reply(m, res.status, res.description, reply)) {
        pn_message_free(reply);
        return;
    }
    emu_link *out = emu_reply_link(l, EMU_LINK_CBS_REPLIES, pn_message_get_reply_to(m));
    if (!out || emu_link_answer(out, reply))
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": CBS: no $cbs receiver link for the reply", c->serial);
    pn_message_free(reply);
}

/* SASL PLAIN: the password is a SAS token (user "{device}@sas.{hub}" or
 * "{policy}@sas.root.{hub}"); it is granted as a put-token would be. */
int emu_cbs_sasl_plain(iotgw_conn *ic, const char *user, const char *password, void *ctx)
{
    emu_conn *c = iotgw_conn_context(ic);
    (void)ctx;
    if (!c)
        return -1;
    grant_result res = {0};
    if (strlen(password) > MAX_TOKEN_LEN || grant_token(c, password, user, &res)) {
        iotgw_log(IOTGW_LOG_WARN, "conn %" PRIu64 ": SASL PLAIN refused for %.100s: %s", c ? c->serial : 0,
                  user, res.description);
        c->hub->metrics.sasl_plain[1]++;
        return -1;
    }
    c->hub->metrics.sasl_plain[0]++;
    return 0;
}
