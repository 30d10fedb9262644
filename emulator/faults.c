/* Fault injection and the hub's rate limits: state, setters and the checks the hub
 * makes (emulator/faults.h). */
#include "emulator/faults.h"

#include <stdlib.h>
#include <string.h>

#include "codecs/token_bucket.h"
#include "transport/log.h"

struct emu_faults {
    int64_t refuse_until_ms; /* connections accepted before then are closed at once */
    char **rejected;         /* identities whose put-tokens are answered 401 */
    int nrejected;
    int d2c_limit, rest_limit; /* per second; 0: none */
    iotgw_token_bucket d2c, rest;
    int method_delay_ms;
    int method_fail_status;
};

/* A limit of n per second, with a second's worth of burst, full now. */
static void limit_to(iotgw_token_bucket *b, int n, int64_t now_ms)
{
    iotgw_token_bucket_init(b, n, n, n, now_ms);
}

int emu_faults_new(int d2c_per_second, int64_t now_ms, emu_faults **out)
{
    emu_faults *f = calloc(1, sizeof *f);
    if (!f)
        return IOTGW_ERR_NOMEM;
    f->d2c_limit = d2c_per_second > 0 ? d2c_per_second : 0;
    limit_to(&f->d2c, f->d2c_limit, now_ms);
    limit_to(&f->rest, 0, now_ms);
    *out = f;
    return 0;
}

static void forget_rejected(emu_faults *f)
{
    for (int i = 0; i < f->nrejected; i++)
        free(f->rejected[i]);
    free(f->rejected);
    f->rejected = NULL;
    f->nrejected = 0;
}

void emu_faults_free(emu_faults *f)
{
    if (!f)
        return;
    forget_rejected(f);
    free(f);
}

void emu_faults_refuse_connections(emu_faults *f, int seconds, int64_t now_ms)
{
    f->refuse_until_ms = seconds ? now_ms + (int64_t)seconds * 1000 : 0;
    iotgw_log(IOTGW_LOG_WARN, "fault injection: new connections refused for %d s", seconds);
}

int emu_faults_reject_tokens(emu_faults *f, const char *identity)
{
    if (!emu_faults_rejects_tokens(f, identity)) {
        char **list = realloc(f->rejected, (size_t)(f->nrejected + 1) * sizeof *list);
        if (!list)
            return IOTGW_ERR_NOMEM;
        f->rejected = list;
        if (!(list[f->nrejected] = strdup(identity)))
            return IOTGW_ERR_NOMEM;
        f->nrejected++;
    }
    iotgw_log(IOTGW_LOG_WARN, "fault injection: put-tokens for %s are answered 401", identity);
    return 0;
}

void emu_faults_accept_tokens(emu_faults *f, const char *identity)
{
    for (int i = 0; i < f->nrejected; i++)
        if (!strcmp(f->rejected[i], identity)) {
            free(f->rejected[i]);
            f->rejected[i] = f->rejected[--f->nrejected];
            break;
        }
    iotgw_log(IOTGW_LOG_WARN, "fault injection: put-tokens for %s are accepted again", identity);
}

void emu_faults_throttle(emu_faults *f, int d2c_per_second, int rest_per_second, int64_t now_ms)
{
    f->d2c_limit = d2c_per_second;
    f->rest_limit = rest_per_second;
    limit_to(&f->d2c, d2c_per_second, now_ms);
    limit_to(&f->rest, rest_per_second, now_ms);
    iotgw_log(IOTGW_LOG_WARN,
              "fault injection: device-to-cloud limited to %d messages/s, REST to %d requests/s (0: none)",
              d2c_per_second, rest_per_second);
}

void emu_faults_set_methods(emu_faults *f, int delay_ms, int fail_status)
{
    f->method_delay_ms = delay_ms;
    f->method_fail_status = fail_status;
    iotgw_log(IOTGW_LOG_WARN, "fault injection: method answers delayed %d ms, failed with %d (0: not)",
              delay_ms, fail_status);
}

void emu_faults_reset(emu_faults *f)
{
    forget_rejected(f);
    f->refuse_until_ms = 0;
    f->d2c_limit = f->rest_limit = 0;
    limit_to(&f->d2c, 0, 0); /* no limit: the bucket never looks at the time */
    limit_to(&f->rest, 0, 0);
    f->method_delay_ms = f->method_fail_status = 0;
    iotgw_log(IOTGW_LOG_WARN, "fault injection: every fault cleared");
}

void emu_faults_query(const emu_faults *f, int64_t now_ms, emu_faults_state *out)
{
    int64_t left = f->refuse_until_ms - now_ms;
    *out = (emu_faults_state){
        .refuse_for_ms = left > 0 ? left : 0,
        .rejected = (const char *const *)f->rejected,
        .nrejected = f->nrejected,
        .d2c_per_second = f->d2c_limit,
        .rest_per_second = f->rest_limit,
        .method_delay_ms = f->method_delay_ms,
        .method_fail_status = f->method_fail_status,
    };
}

int emu_faults_refusing_connections(const emu_faults *f, int64_t now_ms)
{
    return now_ms < f->refuse_until_ms;
}

int emu_faults_rejects_tokens(const emu_faults *f, const char *identity)
{
    for (int i = 0; i < f->nrejected; i++)
        if (!strcmp(f->rejected[i], identity))
            return 1;
    return 0;
}

int emu_faults_d2c_over_limit(emu_faults *f, int messages, int64_t now_ms)
{
    return !iotgw_token_bucket_take(&f->d2c, messages, now_ms);
}

int emu_faults_rest_over_limit(emu_faults *f, int64_t now_ms)
{
    return !iotgw_token_bucket_take(&f->rest, 1, now_ms);
}

int emu_faults_method_fail_status(const emu_faults *f)
{
    return f->method_fail_status;
}

int emu_faults_method_delay_ms(const emu_faults *f)
{
    return f->method_delay_ms;
}
