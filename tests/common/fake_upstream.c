/* gateway/upstream.h without a hub (tests/common/fake_upstream.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/fake_upstream.h"

int iotgw_upstream_new(iotgw_loop *loop, const iotgw_upstream_options *opt, iotgw_upstream **out,
                       iotgw_diag *diag)
{
    (void)loop, (void)diag;
    iotgw_upstream *up = calloc(1, sizeof *up);
    if (!up)
        return IOTGW_ERR_NOMEM;
    up->opt = *opt;
    *out = up;
    return 0;
}

void iotgw_upstream_free(iotgw_upstream *up)
{
    if (!up)
        return;
    for (int i = 0; i < up->ndevices; i++)
        free(up->devices[i]);
    free(up);
}

int iotgw_upstream_device_add(iotgw_upstream *up, const iotgw_device_credential *cred, unsigned features,
                              void *ctx, iotgw_upstream_device **out, iotgw_diag *diag)
{
    if (up->ndevices >= FAKE_UPSTREAM_MAX)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "fake upstream: too many devices");
    iotgw_upstream_device *d = calloc(1, sizeof *d);
    if (!d)
        return IOTGW_ERR_NOMEM;
    d->up = up;
    snprintf(d->id, sizeof d->id, "%s", cred->device_id);
    snprintf(d->key, sizeof d->key, "%s", cred->key);
    d->features = features;
    d->ctx = ctx;
    d->state = IOTGW_DEVICE_WAITING;
    up->devices[up->ndevices++] = d;
    up->adds++;
    *out = d;
    return 0;
}

void iotgw_upstream_device_remove(iotgw_upstream_device *d)
{
    if (!d)
        return;
    if (d->removed)
        abort(); /* removed twice: the handle was used after it became invalid */
    d->removed = 1;
    d->up->removes++;
}

void *iotgw_upstream_device_context(const iotgw_upstream_device *d)
{
    return d->ctx;
}

int iotgw_upstream_send(iotgw_upstream_device *d, const uint8_t *encoded, size_t len, void *msg_ctx)
{
    (void)encoded, (void)len;
    if (d->removed)
        abort();
    if (d->nsent >= FAKE_UPSTREAM_MAX)
        return IOTGW_ERR_UPSTREAM_FULL;
    d->sent_ctx[d->nsent++] = msg_ctx;
    return 0;
}

int iotgw_upstream_method_respond(iotgw_upstream_device *d, const uint8_t request_id[16], int status,
                                  const uint8_t *payload, size_t len)
{
    (void)request_id, (void)payload, (void)len;
    if (d->removed)
        abort();
    if (d->nmethod_answers < FAKE_UPSTREAM_MAX)
        d->method_status[d->nmethod_answers++] = status;
    return 0;
}

int iotgw_upstream_twin_request(iotgw_upstream_device *d, iotgw_twin_op op, const uint8_t *body, size_t len,
                                uint64_t *request_id)
{
    (void)d, (void)op, (void)body, (void)len, (void)request_id;
    return IOTGW_ERR_UPSTREAM_NOT_ONLINE;
}

int iotgw_upstream_c2d_settle(iotgw_upstream_device *d, uint64_t id, iotgw_outcome outcome)
{
    (void)d, (void)id, (void)outcome;
    return IOTGW_ERR_UPSTREAM_NOT_ONLINE;
}

int iotgw_upstream_device_enable(iotgw_upstream_device *d, unsigned features)
{
    (void)d, (void)features;
    return 0;
}

void iotgw_upstream_device_info(const iotgw_upstream_device *d, iotgw_device_info *info)
{
    memset(info, 0, sizeof *info);
    info->state = d->state;
}

int iotgw_upstream_connections(const iotgw_upstream *up, iotgw_connection_info *out, int max)
{
    (void)up, (void)out, (void)max;
    return 0;
}

void iotgw_upstream_totals_get(const iotgw_upstream *up, iotgw_upstream_totals *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < up->ndevices; i++)
        if (!up->devices[i]->removed)
            t->devices_by_state[up->devices[i]->state]++;
}

const char *iotgw_device_state_name(iotgw_device_state s)
{
    static const char *const names[] = {"?", "waiting", "authenticating", "online", "failed"};
    return (unsigned)s < 5 ? names[s] : "?";
}

const char *iotgw_connection_state_name(iotgw_connection_state s)
{
    static const char *const names[] = {"?", "connecting", "open", "backoff"};
    return (unsigned)s < 4 ? names[s] : "?";
}

iotgw_upstream_device *fake_upstream_find(iotgw_upstream *up, const char *id)
{
    for (int i = up->ndevices - 1; i >= 0; i--)
        if (!strcmp(up->devices[i]->id, id))
            return up->devices[i];
    return NULL;
}

void fake_upstream_outcome(iotgw_upstream_device *d, int index, iotgw_outcome outcome, const char *cond,
                           const char *description)
{
    d->up->opt.cb.on_outcome(d, d->sent_ctx[index], outcome, cond, description, d->up->opt.ctx);
}

void fake_upstream_state(iotgw_upstream_device *d, iotgw_device_state state)
{
    d->state = state;
    if (d->up->opt.cb.on_state)
        d->up->opt.cb.on_state(d, state, d->up->opt.ctx);
}

void fake_upstream_method(iotgw_upstream_device *d, const char *name, const char *json)
{
    iotgw_method_request r = {.name = name, .payload = (const uint8_t *)json, .payload_len = strlen(json)};
    memset(r.request_id, 7, sizeof r.request_id);
    d->up->opt.cb.on_method(d, &r, d->up->opt.ctx);
}
