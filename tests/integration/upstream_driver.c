/* Drives gateway/upstream against a hub (the emulator) for the integration tests and the
 * benchmark: adds devices, sends each one's telemetry at a steady rate, resends what
 * comes back RETRY (as the gateway's downstream does), answers direct methods, and
 * prints one JSON summary on stdout. Progress lines go to stderr.
 *
 *   upstream_driver --host NAME [--connect-host ADDR] --port N --ca FILE [--amqps] --devices FILE
 *                   [--messages M] [--rate R] [--duration S] [--timeout S]
 *                   [--token-lifetime S] [--per-connection N] [--auth-rate R]
 *                   [--backoff-base MS] [--backoff-cap MS] [--methods] [--window N]
 *                   [--twin] [--c2d] [--status-file FILE]
 *
 * --devices: one device per line, "id key" or "id key policy".
 * Each device sends M messages (message-id "{id}:{n}", application property "n"), R
 * per second each. The run ends when every message has an outcome of ACCEPTED or
 * REJECTED and --duration has passed, or at --timeout (exit 1). --status-file, when
 * given, is rewritten every second with the summary so far (tests poll it). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <proton/message.h>

#include "gateway/upstream.h"
#include "transport/log.h"
#include "transport/messaging.h"
#include "tests/common/clock_env.h"

typedef struct device {
    char id[128], key[128], policy[64];
    iotgw_upstream_device *up;
    uint32_t next_n;  /* next new message number */
    uint32_t *resend; /* numbers to send again */
    uint32_t nresend, resend_cap;
    uint64_t accepted, rejected, retried, throttled, methods, twin_answers, desired_updates, c2d;
    int64_t last_desired_version;
    uint8_t *seen; /* per n: accepted once already */
    uint64_t duplicates;
    int state;
} device;

static device *devs;
static int ndevs;
static uint32_t messages = 10;
static double rate = 10, duration_s = 0, timeout_s = 120;
static uint64_t total_outcomes;
static double start_s;
static int answer_methods, use_twin, use_c2d;
static const char *status_file;
static iotgw_upstream *up;

static void push_resend(device *d, uint32_t n)
{
    if (d->nresend == d->resend_cap) {
        d->resend_cap = d->resend_cap ? d->resend_cap * 2 : 16;
        d->resend = realloc(d->resend, d->resend_cap * sizeof *d->resend);
    }
    d->resend[d->nresend++] = n;
}

static void on_outcome(iotgw_upstream_device *ud, void *msg_ctx, iotgw_outcome outcome, const char *cond,
                       const char *description, void *ctx)
{
    (void)ctx;
    (void)description;
    device *d = iotgw_upstream_device_context(ud);
    uint32_t n = (uint32_t)(uintptr_t)msg_ctx;
    switch (outcome) {
    case IOTGW_OUTCOME_ACCEPTED:
        d->accepted++;
        total_outcomes++;
        if (d->seen[n])
            d->duplicates++;
        d->seen[n] = 1;
        break;
    case IOTGW_OUTCOME_REJECTED:
        if (cond && !strcmp(cond, "com.microsoft:device-container-throttled")) {
            d->throttled++; /* a device told "throttled" sends it again later */
            push_resend(d, n);
            break;
        }
        d->rejected++;
        total_outcomes++;
        fprintf(stderr, "driver: %s message %u rejected: %s\n", d->id, n, cond);
        break;
    case IOTGW_OUTCOME_RETRY:
        d->retried++;
        push_resend(d, n);
        break;
    }
}

static void on_state(iotgw_upstream_device *ud, iotgw_device_state state, void *ctx)
{
    (void)ctx;
    device *d = iotgw_upstream_device_context(ud);
    d->state = state;
    uint64_t id;
    if (use_twin && state == IOTGW_DEVICE_ONLINE &&
        iotgw_upstream_twin_request(ud, IOTGW_TWIN_GET, NULL, 0, &id))
        fprintf(stderr, "driver: %s: twin GET could not be sent\n", d->id);
}

/* GET answers are counted; each desired update is acknowledged by patching reported
 * property lastDesiredVersion, as a device following its twin does. */
static void on_twin(iotgw_upstream_device *ud, const iotgw_twin_response *r, void *ctx)
{
    (void)ctx;
    device *d = iotgw_upstream_device_context(ud);
    if (r->request_id) {
        d->twin_answers++;
        if (r->status < 200 || r->status >= 300)
            fprintf(stderr, "driver: %s: twin request %" PRIu64 " answered %d %s\n", d->id, r->request_id,
                    r->status, r->error ? r->error : "");
        return;
    }
    d->desired_updates++;
    d->last_desired_version = r->version;
    char patch[96];
    int n = snprintf(patch, sizeof patch, "{\"lastDesiredVersion\":%" PRId64 "}", r->version);
    uint64_t id;
    iotgw_upstream_twin_request(ud, IOTGW_TWIN_PATCH_REPORTED, (const uint8_t *)patch, (size_t)n, &id);
}

static void on_c2d(iotgw_upstream_device *ud, const iotgw_c2d_message *m, void *ctx)
{
    (void)ctx;
    device *d = iotgw_upstream_device_context(ud);
    d->c2d++;
    iotgw_upstream_c2d_settle(ud, m->id, IOTGW_OUTCOME_ACCEPTED);
}

static void on_method(iotgw_upstream_device *ud, const iotgw_method_request *req, void *ctx)
{
    (void)ctx;
    device *d = iotgw_upstream_device_context(ud);
    d->methods++;
    char body[512];
    int len = snprintf(body, sizeof body, "{\"device\":\"%s\",\"method\":\"%s\",\"request\":%.*s}", d->id,
                       req->name, (int)(req->payload_len < 300 ? req->payload_len : 0), req->payload);
    iotgw_upstream_method_respond(ud, req->request_id, 200, (const uint8_t *)body, (size_t)len);
}

static int send_one(device *d, uint32_t n, pn_message_t *m)
{
    char id[160], num[16];
    snprintf(id, sizeof id, "%s:%u", d->id, n);
    snprintf(num, sizeof num, "%u", n);
    pn_message_clear(m);
    pn_message_set_id(m, (pn_atom_t){.type = PN_STRING, .u.as_bytes = pn_bytes(strlen(id), id)});
    pn_message_set_content_type(m, "application/json");
    pn_data_t *p = pn_message_properties(m);
    pn_data_put_map(p);
    pn_data_enter(p);
    pn_data_put_string(p, pn_bytes(1, "n"));
    pn_data_put_string(p, pn_bytes(strlen(num), num));
    pn_data_exit(p);
    char body[64];
    int blen = snprintf(body, sizeof body, "{\"n\":%u}", n);
    pn_data_put_binary(pn_message_body(m), pn_bytes((size_t)blen, body));
    uint8_t *buf;
    size_t len;
    if (iotgw_message_encode(m, &buf, &len))
        return -1;
    int rc = iotgw_upstream_send(d->up, buf, len, (void *)(uintptr_t)n);
    free(buf);
    return rc;
}

static void send_due(pn_message_t *m)
{
    double elapsed = now_s() - start_s;
    uint32_t due = (uint32_t)(elapsed * rate) + 1;
    if (due > messages)
        due = messages;
    for (int i = 0; i < ndevs; i++) {
        device *d = &devs[i];
        while (d->nresend && send_one(d, d->resend[d->nresend - 1], m) == 0)
            d->nresend--;
        while (d->next_n < due && send_one(d, d->next_n, m) == 0)
            d->next_n++;
    }
}

/* Every device has an outcome for each message, or is failed at the hub (its messages
 * cannot be delivered: that is the test's point). */
static int all_done(void)
{
    for (int i = 0; i < ndevs; i++)
        if (devs[i].accepted - devs[i].duplicates + devs[i].rejected < messages &&
            devs[i].state != IOTGW_DEVICE_FAILED)
            return 0;
    return 1;
}

static void summary(FILE *f, int done)
{
    uint64_t acc = 0, rej = 0, ret = 0, thr = 0, dup = 0, meth = 0, complete = 0, twin = 0, desired = 0,
             c2d = 0;
    int online = 0, failed = 0;
    for (int i = 0; i < ndevs; i++) {
        acc += devs[i].accepted;
        rej += devs[i].rejected;
        ret += devs[i].retried;
        dup += devs[i].duplicates;
        meth += devs[i].methods;
        thr += devs[i].throttled; /* told "throttled" (the upstream keeps such messages itself) */
        iotgw_device_info ti;
        iotgw_upstream_device_info(devs[i].up, &ti);
        thr += ti.throttled;
        twin += devs[i].twin_answers;
        desired += devs[i].desired_updates;
        c2d += devs[i].c2d;
        online += devs[i].state == IOTGW_DEVICE_ONLINE;
        failed += devs[i].state == IOTGW_DEVICE_FAILED;
        complete += devs[i].accepted - devs[i].duplicates == messages;
    }
    fprintf(f,
            "{\"done\":%d,\"elapsed_s\":%.3f,\"devices\":%d,\"online\":%d,\"failed\":%d,\"accepted\":%" PRIu64
            ",\"rejected\":%" PRIu64 ",\"retried\":%" PRIu64 ",\"throttled\":%" PRIu64
            ",\"duplicates\":%" PRIu64 ",\"methods\":%" PRIu64 ",\"devices_complete\":%" PRIu64
            ",\"twin_answers\":%" PRIu64 ",\"desired_updates\":%" PRIu64 ",\"c2d\":%" PRIu64
            ",\"connections\":[",
            done, now_s() - start_s, ndevs, online, failed, acc, rej, ret, thr, dup, meth, complete, twin,
            desired, c2d);
    iotgw_connection_info ci[256];
    int nc = iotgw_upstream_connections(up, ci, 256);
    for (int i = 0; i < nc && i < 256; i++)
        fprintf(
            f,
            "%s{\"id\":%d,\"state\":\"%s\",\"devices\":%u,\"online\":%u,\"capacity\":%u,\"reconnects\":%u}",
            i ? "," : "", ci[i].id, iotgw_connection_state_name(ci[i].state), ci[i].devices, ci[i].online,
            ci[i].capacity, ci[i].reconnects);
    fprintf(f, "],\"per_device\":{");
    for (int i = 0; i < ndevs; i++) {
        iotgw_device_info info;
        iotgw_upstream_device_info(devs[i].up, &info);
        fprintf(f,
                "%s\"%s\":{\"state\":\"%s\",\"accepted\":%" PRIu64 ",\"rejected\":%" PRIu64
                ",\"retried\":%" PRIu64 ",\"authentications\":%" PRIu64 ",\"connection\":%d,\"reason\":\"",
                i ? "," : "", devs[i].id, iotgw_device_state_name(info.state), devs[i].accepted,
                devs[i].rejected, devs[i].retried, info.authentications, info.connection);
        for (const char *p = info.reason; *p; p++)
            fprintf(f, *p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
        fprintf(f, "\"}");
    }
    fprintf(f, "}}\n");
}

static void write_status(void)
{
    if (!status_file)
        return;
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", status_file);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    summary(f, 0);
    fclose(f);
    rename(tmp, status_file);
}

static int load_devices(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512];
    int cap = 0;
    while (fgets(line, sizeof line, f)) {
        device d = {0};
        int k = sscanf(line, "%127s %127s %63s", d.id, d.key, d.policy);
        if (k < 2)
            continue;
        if (ndevs == cap) {
            cap = cap ? cap * 2 : 64;
            devs = realloc(devs, (size_t)cap * sizeof *devs);
        }
        devs[ndevs++] = d;
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"host", 1, 0, 'h'},
                                         {"port", 1, 0, 'p'},
                                         {"ca", 1, 0, 'c'},
                                         {"amqps", 0, 0, 'a'},
                                         {"devices", 1, 0, 'd'},
                                         {"messages", 1, 0, 'm'},
                                         {"rate", 1, 0, 'r'},
                                         {"duration", 1, 0, 'D'},
                                         {"timeout", 1, 0, 'T'},
                                         {"token-lifetime", 1, 0, 'L'},
                                         {"per-connection", 1, 0, 'P'},
                                         {"auth-rate", 1, 0, 'A'},
                                         {"backoff-base", 1, 0, 'b'},
                                         {"backoff-cap", 1, 0, 'B'},
                                         {"methods", 0, 0, 'M'},
                                         {"window", 1, 0, 'w'},
                                         {"status-file", 1, 0, 's'},
                                         {"twin", 0, 0, 't'},
                                         {"c2d", 0, 0, 'C'},
                                         {"connect-host", 1, 0, 'g'},
                                         {0, 0, 0, 0}};
    iotgw_upstream_options o = {0};
    const char *devices_file = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'h': o.hub.host_name = optarg; break;
        case 'g': o.hub.connect_host = optarg; break;
        case 'p': o.hub.port = atoi(optarg); break;
        case 'c': o.hub.tls.ca_file = optarg; break;
        case 'a': o.hub.kind = IOTGW_TRANSPORT_AMQPS; break;
        case 'd': devices_file = optarg; break;
        case 'm': messages = (uint32_t)atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'D': duration_s = atof(optarg); break;
        case 'T': timeout_s = atof(optarg); break;
        case 'L': o.token_lifetime_s = (unsigned)atoi(optarg); break;
        case 'P': o.devices_per_connection = (unsigned)atoi(optarg); break;
        case 'A': o.auth_rate = atof(optarg); break;
        case 'b': o.backoff_base_ms = (unsigned)atoi(optarg); break;
        case 'B': o.backoff_cap_ms = (unsigned)atoi(optarg); break;
        case 'M': answer_methods = 1; break;
        case 't': use_twin = 1; break;
        case 'C': use_c2d = 1; break;
        case 'w': o.device_window = (unsigned)atoi(optarg); break;
        case 's': status_file = optarg; break;
        default: fprintf(stderr, "upstream_driver: bad option (see the top of its source)\n"); return 2;
        }
    }
    if (!o.hub.host_name || !devices_file || load_devices(devices_file) || !ndevs) {
        fprintf(stderr, "upstream_driver: --host and a non-empty --devices file are required\n");
        return 2;
    }
    iotgw_diag diag = {0};
    iotgw_loop *loop = iotgw_loop_new(&(iotgw_loop_options){0}, &diag);
    o.cb.on_outcome = on_outcome;
    o.cb.on_state = on_state;
    o.cb.on_method = on_method;
    o.cb.on_twin = on_twin;
    o.cb.on_c2d = on_c2d;
    if (!loop || iotgw_upstream_new(loop, &o, &up, &diag)) {
        fprintf(stderr, "upstream_driver: %s\n", diag.text);
        return 1;
    }
    start_s = now_s();
    for (int i = 0; i < ndevs; i++) {
        device *d = &devs[i];
        d->seen = calloc(messages ? messages : 1, 1);
        iotgw_device_credential cred = {
            .device_id = d->id, .key = d->key, .policy_name = d->policy[0] ? d->policy : NULL};
        unsigned features = (answer_methods ? IOTGW_UPSTREAM_METHODS : 0) |
                            (use_twin ? IOTGW_UPSTREAM_TWIN : 0) | (use_c2d ? IOTGW_UPSTREAM_C2D : 0);
        if (iotgw_upstream_device_add(up, &cred, features, d, &d->up, &diag)) {
            fprintf(stderr, "upstream_driver: %s: %s\n", d->id, diag.text);
            return 1;
        }
    }
    pn_message_t *m = pn_message();
    uint64_t expected = (uint64_t)ndevs * messages;
    double last_status = 0;
    int rc = 0;
    for (;;) {
        iotgw_loop_run(loop, 20);
        send_due(m);
        double t = now_s();
        if (t - last_status >= 1) {
            last_status = t;
            write_status();
        }
        if (all_done() && t - start_s >= duration_s)
            break;
        if (t - start_s > timeout_s) {
            fprintf(stderr, "upstream_driver: timeout: %" PRIu64 " of %" PRIu64 " outcomes\n", total_outcomes,
                    expected);
            rc = 1;
            break;
        }
    }
    summary(stdout, 1);
    fflush(stdout);
    write_status();
    pn_message_free(m);
    iotgw_upstream_free(up);
    iotgw_loop_free(loop);
    for (int i = 0; i < ndevs; i++) {
        free(devs[i].seen);
        free(devs[i].resend);
    }
    free(devs);
    return rc;
}
