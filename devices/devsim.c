/* iotgw-devsim: simulates a fleet of devices against iotgw with libiotgw-device, one
 * thread polling every session. Shows one live status line while it runs and prints a
 * JSON summary at the end (the benchmarks read it). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "codecs/fleet_file.h"
#include "codecs/hostport.h"
#include "codecs/identity.h"
#include "codecs/shard.h"
#include "devices/iotgw_device.h"
#include "schemas/alarm_status.pb-c.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

#define SEQ_SLOTS 4096 /* send times kept per device, by seq modulo this */

typedef struct sim_device {
    char id[IOTGW_IDENTITY_MAX_LEN + 1], key[176]; /* key "-": none (client certificate) */
    iotgw_device *d;
    uint64_t sent, acked, nacked;
    double next_send;          /* when the next message is due (rate mode) */
    double sent_at[SEQ_SLOTS]; /* by seq % SEQ_SLOTS */
    struct pending_method {
        uint64_t id;
        double due;
    } methods[64];
    int nmethods;
    int watching_out; /* epoll also waits for the socket to take more output */
    /* --reconnect: a lost connection is opened again after reopen_at, and what it had
     * in flight is sent again (resend) as new messages, as a real device would */
    double reopen_at, backoff;
    uint64_t resend, resent, reconnects;
    uint64_t lost; /* in flight when the connection went, never resent: their outcome is unknown */
} sim_device;

typedef struct sim {
    iotgw_device_options opt; /* every device's, but for its id and key */
    sim_device *devs;
    int n, cap, max, disabled_skipped, connected, errors;
    unsigned shard_index, shard_count; /* --shard I/N; count 0: every device */
    int other_shard_skipped;
    uint64_t methods_answered, twin_results, twin_failures;
    double *lat; /* ack latencies, ms */
    size_t nlat, caplat;
    int status_line;
} sim;

static volatile sig_atomic_t stop;
static void on_signal(int s)
{
    (void)s;
    stop = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double *v, size_t n, double p)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static void usage(FILE *f)
{
    fprintf(f, "usage: iotgw-devsim --gateway HOST:PORT --hub HUB_HOST --fleet FILE [options]\n"
               "       iotgw-devsim --generate N [--id-prefix P] --fleet FILE\n"
               "Simulates devices against iotgw, each sending alarm-status parcels. The fleet file\n"
               "has one device per line, \"ID KEY\" (its base64 key), the format of iotgw's\n"
               "fleet.devicesFile: \"ID -\" for a device with a client certificate; lines ending in\n"
               "\"disabled\" are skipped.\n"
               "\n"
               "  --generate N         write a new fleet file of N devices, P1..PN (prefix --id-prefix,\n"
               "                       default \"sim-\"), each with a fresh random key, and exit; give\n"
               "                       it to iotgw (fleet.devicesFile) and to the hub (iothub-service\n"
               "                       device import FILE), then simulate it with --fleet FILE\n"
               "  --devices N          simulate the first N devices of the file (default: all)\n"
               "  --shard I/N          only the file's devices whose home is shard I of N, as iotgw's\n"
               "                       fleet.shard decides it (FNV-1a of the id, modulo N): the devices\n"
               "                       of the gateway that serves shard I (N at most 1024)\n"
               "  --connect-rate N     new sessions per second (default 500)\n"
               "  --rate N             messages per second per device (default 1); 0: as fast as the\n"
               "                       window allows, refilling it in one write once half of it is\n"
               "                       acknowledged\n"
               "  --messages N         stop each device after N messages (default: until --duration)\n"
               "  --duration S         run for S seconds after every device is connected (default 10)\n"
               "  --twin               each device reads its twin and reports devsim.connectedAt\n"
               "  --methods            handle direct methods: answer each after --method-latency-ms\n"
               "                       (default 0) with --method-status (default 200)\n"
               "  --reconnect          a device whose connection is lost connects again (backoff 0.5 s\n"
               "                       doubling to 10 s) and sends again what was unacknowledged\n"
               "  --quiet              no live status line\n"
               "  --tls [--ca FILE] [--cert FILE --cert-key FILE]\n"
               "                       TLS to the gateway, trusting FILE; a client certificate;\n"
               "                       a fleet line \"ID -\" then authenticates by the certificate\n"
               "Prints a JSON summary on stdout at the end (\"unresolved\": messages sent whose outcome\n"
               "never came). Exit status: 0 when every device connected and every message sent got\n"
               "an ack or a nack; 1 otherwise (a device could not connect, or lost its connection\n"
               "without --reconnect, or messages are unresolved), or when the fleet file cannot be\n"
               "read or written; 2 for a usage error.\n");
}

static int add_device(const iotgw_fleet_entry *e, void *ctx, char *why, size_t whylen)
{
    sim *s = ctx;
    if (e->disabled) {
        s->disabled_skipped++;
        return 0;
    }
    if (s->shard_count && iotgw_shard_of(e->id, s->shard_count) != s->shard_index) {
        s->other_shard_skipped++;
        return 0;
    }
    if (s->max > 0 && s->n >= s->max)
        return 0;
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 256;
        sim_device *d = realloc(s->devs, (size_t)cap * sizeof *d);
        if (!d) {
            snprintf(why, whylen, "out of memory");
            return IOTGW_ERR_NOMEM;
        }
        s->devs = d;
        s->cap = cap;
    }
    sim_device *d = &s->devs[s->n++];
    memset(d, 0, sizeof *d);
    snprintf(d->id, sizeof d->id, "%s", e->id);
    snprintf(d->key, sizeof d->key, "%s", e->key ? e->key : "-");
    return 0;
}

/* A number option in [min, max]; -1 (after saying why) when it is not one. */
static int number(const char *opt, const char *text, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || v < min || v > max) {
        fprintf(stderr, "iotgw-devsim: --%s wants a number from %g to %g, not \"%s\"\n", opt, min, max, text);
        return -1;
    }
    *out = v;
    return 0;
}

/* --shard I/N: two whole numbers, N from 1 to IOTGW_SHARD_MAX and I below it; -1 (after
 * saying why) otherwise. */
static int shard_option(const char *text, unsigned *index, unsigned *count)
{
    unsigned long v[2] = {0, 0};
    const char *p = text;
    for (int k = 0; k < 2; k++) {
        const char *start = p;
        while (*p >= '0' && *p <= '9' && p - start < 5)
            v[k] = v[k] * 10 + (unsigned long)(*p++ - '0');
        if (p == start || (k == 0 ? *p != '/' : *p != '\0'))
            goto bad;
        p++;
    }
    if (v[1] < 1 || v[1] > IOTGW_SHARD_MAX || v[0] >= v[1])
        goto bad;
    *index = (unsigned)v[0];
    *count = (unsigned)v[1];
    return 0;
bad:
    fprintf(stderr,
            "iotgw-devsim: --shard wants I/N, shard I of N (N from 1 to %d, I from 0 to N-1), not \"%s\"\n",
            IOTGW_SHARD_MAX, text);
    return -1;
}

static void add_latency(sim *s, double ms)
{
    if (s->nlat == s->caplat) {
        size_t cap = s->caplat ? s->caplat * 2 : 65536;
        double *l = realloc(s->lat, cap * sizeof *l);
        if (!l)
            return;
        s->lat = l;
        s->caplat = cap;
    }
    s->lat[s->nlat++] = ms;
}

/* Open device i's session, as at start or again after a loss; 0 or the library's error. */
static int open_device(sim *s, int i, int twin)
{
    sim_device *d = &s->devs[i];
    iotgw_device_options opt = s->opt;
    opt.device_id = d->id;
    opt.key = strcmp(d->key, "-") ? d->key : NULL;
    iotgw_device_error err;
    int rc = iotgw_device_open(&opt, &d->d, &err);
    if (rc) {
        s->errors++;
        if (s->errors <= 5)
            fprintf(stderr, "iotgw-devsim: %s: %s: %s\n", d->id, iotgw_device_strerror(rc), err.message);
        return rc;
    }
    s->connected++;
    if (twin) { /* read the twin and report when the simulation started */
        char patch[96];
        snprintf(patch, sizeof patch, "{\"devsim\":{\"connectedAt\":%.3f}}", now_s());
        iotgw_device_twin_get(d->d, NULL);
        iotgw_device_report(d->d, patch, NULL);
    }
    return 0;
}

/* Wait for output room only while the session holds unsent bytes. */
static void watch(int epfd, sim_device *d, int index)
{
    int want = iotgw_device_wants_write(d->d);
    if (want == d->watching_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = (uint32_t)index};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, iotgw_device_fd(d->d), &ev) == 0)
        d->watching_out = want;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"gateway", 1, 0, 'g'},       {"hub", 1, 0, 'H'},
                                         {"fleet", 1, 0, 'f'},         {"devices", 1, 0, 'n'},
                                         {"shard", 1, 0, 's'},         {"connect-rate", 1, 0, 'c'},
                                         {"rate", 1, 0, 'r'},          {"messages", 1, 0, 'm'},
                                         {"duration", 1, 0, 'D'},      {"methods", 0, 0, 'M'},
                                         {"twin", 0, 0, 'T'},          {"method-latency-ms", 1, 0, 'L'},
                                         {"method-status", 1, 0, 'S'}, {"quiet", 0, 0, 'q'},
                                         {"tls", 0, 0, 'X'},           {"ca", 1, 0, 'C'},
                                         {"cert", 1, 0, 'E'},          {"cert-key", 1, 0, 'K'},
                                         {"generate", 1, 0, 'G'},      {"id-prefix", 1, 0, 'P'},
                                         {"reconnect", 0, 0, 'R'},     {"version", 0, 0, 'V'},
                                         {"help", 0, 0, 'h'},          {0, 0, 0, 0}};
    char host[256] = "";
    int port = 0, methods = 0, quiet = 0, twin = 0, tls = 0, reconnect = 0;
    double connect_rate = 500, rate = 1, duration = 10, method_latency = 0, max_devices = 0, status = 200,
           max_messages = 0, generate = 0;
    const char *hub = NULL, *fleet = NULL, *ca = NULL, *cert = NULL, *cert_key = NULL, *prefix = "sim-";
    unsigned shard_index = 0, shard_count = 0;
    int o, bad = 0;
    while (!bad && (o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'g':
            if (iotgw_hostport_parse(optarg, host, sizeof host, &port) || !port) {
                fprintf(stderr, "iotgw-devsim: --gateway wants HOST:PORT, not \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'H': hub = optarg; break;
        case 'f': fleet = optarg; break;
        case 'n': bad = number("devices", optarg, 1, 1e7, &max_devices); break;
        case 's': bad = shard_option(optarg, &shard_index, &shard_count); break;
        case 'c': bad = number("connect-rate", optarg, 0.001, 1e6, &connect_rate); break;
        case 'r': bad = number("rate", optarg, 0, 1e6, &rate); break;
        case 'm': bad = number("messages", optarg, 1, 1e15, &max_messages); break;
        case 'D': bad = number("duration", optarg, 0, 1e7, &duration); break;
        case 'M': methods = 1; break;
        case 'T': twin = 1; break;
        case 'L': bad = number("method-latency-ms", optarg, 0, 1e7, &method_latency); break;
        case 'S': bad = number("method-status", optarg, 100, 999, &status); break;
        case 'q': quiet = 1; break;
        case 'X': tls = 1; break;
        case 'C': ca = optarg; break;
        case 'E': cert = optarg; break;
        case 'K': cert_key = optarg; break;
        case 'G': bad = number("generate", optarg, 1, 1e7, &generate); break;
        case 'P': prefix = optarg; break;
        case 'R': reconnect = 1; break;
        case 'V': printf("iotgw-devsim %s\n", PACKAGE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (bad)
        return 2;
    if (optind < argc) {
        fprintf(stderr, "iotgw-devsim: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    iotgw_diag diag = {0};
    if (generate) {
        if (!fleet) {
            fprintf(stderr, "iotgw-devsim: --generate needs --fleet FILE to write\n");
            return 2;
        }
        unsigned n = (unsigned)generate;
        if (iotgw_fleet_file_generate(fleet, prefix, n, &diag)) {
            fprintf(stderr, "iotgw-devsim: %s\n", diag.text);
            return 1;
        }
        fprintf(stderr,
                "iotgw-devsim: wrote %u devices (%s%0*u to %s%u) to %s. Next: give it to iotgw as "
                "fleet.devicesFile, create them in the hub (iothub-service device import %s), then run "
                "iotgw-devsim --fleet %s --gateway HOST:PORT --hub HUB_HOST\n",
                n, prefix, snprintf(NULL, 0, "%u", n), 1u, prefix, n, fleet, fleet, fleet);
        return 0;
    }
    const int method_status = (int)status;
    const uint64_t messages = (uint64_t)max_messages;
    sim s = {.max = (int)max_devices, .shard_index = shard_index, .shard_count = shard_count};
    if (!host[0] || !hub || !fleet) {
        usage(stderr);
        return 2;
    }
    if (iotgw_fleet_file_read(fleet, add_device, &s, &diag)) {
        fprintf(stderr, "iotgw-devsim: %s\n", diag.text);
        return 1;
    }
    if (!s.n) {
        if (shard_count)
            fprintf(stderr,
                    "iotgw-devsim: no devices of shard %u of %u to simulate in %s (%d in other shards, %d "
                    "disabled)\n",
                    shard_index, shard_count, fleet, s.other_shard_skipped, s.disabled_skipped);
        else
            fprintf(stderr, "iotgw-devsim: no devices to simulate in %s%s\n", fleet,
                    s.disabled_skipped ? " (all are disabled)" : "");
        return 1;
    }
    if (shard_count && !quiet)
        fprintf(stderr, "iotgw-devsim: shard %u of %u: %d devices (%d of the file's are other shards')\n",
                shard_index, shard_count, s.n, s.other_shard_skipped);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    /* the payload: one alarm status parcel, packed once */
    Iotgw__AlarmStatus st = IOTGW__ALARM_STATUS__INIT;
    st.alarm_active = 1;
    st.time_utc = "12:00:00";
    st.date_utc = "2026-11-22";
    uint8_t content[64];
    Iotgw__Parcel parcel = IOTGW__PARCEL__INIT;
    Iotgw__Address src = IOTGW__ADDRESS__INIT, dst = IOTGW__ADDRESS__INIT;
    dst.name = "alarm-monitor-1";
    parcel.source = &src;
    parcel.destination = &dst;
    parcel.type = "iotgw.AlarmStatus";
    parcel.content = (ProtobufCBinaryData){.len = iotgw__alarm_status__pack(&st, content), .data = content};

    s.opt = (iotgw_device_options){.host = host,
                                   .port = port,
                                   .hub_host = hub,
                                   .methods = methods,
                                   .twin = twin,
                                   .client = "iotgw-devsim",
                                   .tls = tls,
                                   .ca_file = ca,
                                   .cert_file = cert,
                                   .key_file = cert_key};
    double t0 = now_s();
    int never_connected = 0;
    for (int i = 0; i < s.n && !stop; i++) {
        double due = t0 + (double)i / connect_rate;
        while (now_s() < due)
            usleep(200);
        if (open_device(&s, i, twin))
            never_connected++;
    }
    double t_connected = now_s();
    if (!quiet)
        fprintf(stderr, "iotgw-devsim: %d of %d devices connected in %.2f s\n", s.connected, s.n,
                t_connected - t0);

    /* epoll, not poll: scanning a thousand sockets on every turn cost the simulator more
     * than everything else it does */
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        fprintf(stderr, "iotgw-devsim: epoll_create1: %s\n", strerror(errno));
        return 1;
    }
    for (int i = 0; i < s.n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (s.devs[i].d && epoll_ctl(epfd, EPOLL_CTL_ADD, iotgw_device_fd(s.devs[i].d), &ev)) {
            fprintf(stderr, "iotgw-devsim: epoll_ctl: %s\n", strerror(errno));
            return 1;
        }
    }
    struct epoll_event ready[256];
    double end = t_connected + duration, last_status = t_connected, window_start = t_connected;
    uint64_t acked_at_window = 0, total_acked = 0;
    double t_last_ack = t_connected;
    for (int i = 0; i < s.n; i++)
        /* phases spread over one period: a fleet at --rate N offers a steady load, not
         * one burst of every device at once each 1/N s */
        s.devs[i].next_send = t_connected + (rate > 0 ? (double)i / s.n / rate : 0);
    while (!stop) {
        double now = now_s();
        int done = 1;
        for (int i = 0; i < s.n; i++) {
            sim_device *d = &s.devs[i];
            if (!d->d && d->reopen_at && now >= d->reopen_at && now < end) {
                d->reopen_at = 0;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
                if (open_device(&s, i, twin) == 0 &&
                    epoll_ctl(epfd, EPOLL_CTL_ADD, iotgw_device_fd(d->d), &ev) == 0) {
                    d->reconnects++;
                    d->backoff = 0;
                    d->watching_out = 0;
                } else {
                    if (d->d) {
                        iotgw_device_close(d->d);
                        d->d = NULL;
                        s.connected--;
                    }
                    d->backoff = d->backoff ? (d->backoff * 2 > 10 ? 10 : d->backoff * 2) : 0.5;
                    d->reopen_at = now + d->backoff * (0.75 + 0.5 * (double)rand() / RAND_MAX);
                }
            }
            if (!d->d) {
                if (d->reopen_at || d->resend)
                    done = 0;
                continue;
            }
            if (d->resend && now < end) { /* what the lost connection had in flight, first */
                while (d->resend && iotgw_device_send_parcel(d->d, &parcel, NULL) == IOTGW_DEVICE_OK) {
                    d->resend--;
                    d->resent++;
                }
            }
            if (!messages || d->sent < messages)
                done = 0;
            if (now >= end)
                continue;
            /* Flat out, a device refills its window in bursts once half of it is
             * acknowledged, rather than one message per acknowledgement. */
            unsigned window = iotgw_device_max_in_flight(d->d);
            int refill = rate > 0 || window < 2 || iotgw_device_in_flight(d->d) <= window / 2;
            iotgw_device_batch_begin(d->d); /* what is due now goes out in one write */
            while (refill && (!messages || d->sent < messages) && (rate <= 0 || now >= d->next_send)) {
                uint64_t seq;
                if (iotgw_device_send_parcel(d->d, &parcel, &seq) != IOTGW_DEVICE_OK)
                    break;
                d->sent_at[seq % SEQ_SLOTS] = now;
                d->sent++;
                if (rate > 0)
                    d->next_send += 1.0 / rate;
            }
            iotgw_device_batch_end(d->d);
            for (int k = 0; k < d->nmethods;) {
                if (now >= d->methods[k].due) {
                    char body[sizeof d->id + 16];
                    snprintf(body, sizeof body, "{\"device\":\"%s\"}", d->id);
                    iotgw_device_method_respond(d->d, d->methods[k].id, method_status, body);
                    s.methods_answered++;
                    d->methods[k] = d->methods[--d->nmethods];
                } else {
                    k++;
                }
            }
            watch(epfd, d, i);
        }
        int idle = 1; /* nothing waits for an acknowledgement, or a reconnection */
        for (int i = 0; i < s.n && idle; i++)
            idle = (!s.devs[i].d || !iotgw_device_in_flight(s.devs[i].d)) &&
                   !(s.devs[i].reopen_at && now < end) && !(s.devs[i].resend && now < end);
        if ((idle && ((messages && done) || now >= end)) || now >= end + 5)
            break;
        int waiting = 0;
        for (int i = 0; i < s.n && !waiting; i++)
            waiting = s.devs[i].reopen_at != 0;
        if (!s.connected && !waiting)
            break;
        int nready = epoll_wait(epfd, ready, (int)(sizeof ready / sizeof *ready), rate > 0 ? 2 : 1);
        now = now_s();
        for (int k = 0; k < nready; k++) {
            sim_device *d = &s.devs[ready[k].data.u32];
            if (!d->d)
                continue;
            iotgw_device_process(d->d);
            iotgw_device_event ev;
            while (iotgw_device_next_event(d->d, &ev, 0) == IOTGW_DEVICE_OK) {
                if (ev.kind == IOTGW_DEVICE_EVENT_ACK) {
                    d->acked++;
                    total_acked++;
                    t_last_ack = now;
                    add_latency(&s, (now - d->sent_at[ev.id % SEQ_SLOTS]) * 1000);
                } else if (ev.kind == IOTGW_DEVICE_EVENT_NACK) {
                    d->nacked++;
                } else if (ev.kind == IOTGW_DEVICE_EVENT_TWIN_RESULT) {
                    if (ev.status >= 200 && ev.status < 300)
                        s.twin_results++;
                    else
                        s.twin_failures++;
                } else if (ev.kind == IOTGW_DEVICE_EVENT_METHOD && d->nmethods < 64) {
                    d->methods[d->nmethods].id = ev.id;
                    d->methods[d->nmethods++].due = now + method_latency / 1000;
                } else if (ev.kind == IOTGW_DEVICE_EVENT_CLOSED) {
                    unsigned in_flight = iotgw_device_in_flight(d->d);
                    if (!reconnect || d->reconnects < 3 || quiet == 0)
                        fprintf(stderr, "\niotgw-devsim: %s: %s%s\n", d->id, ev.text,
                                reconnect ? "; connecting again" : "");
                    iotgw_device_close(d->d); /* closing its socket takes it out of epoll */
                    d->d = NULL;
                    s.connected--;
                    if (reconnect) {
                        d->resend += in_flight;
                        d->backoff = 0.5;
                        d->reopen_at = now + d->backoff;
                    } else {
                        s.errors++;
                        d->lost += in_flight;
                    }
                    break;
                }
            }
            if (d->d)
                watch(epfd, d, (int)ready[k].data.u32);
        }
        if (!quiet && now - last_status >= 1) {
            uint64_t sent = 0, nacked = 0;
            for (int i = 0; i < s.n; i++)
                sent += s.devs[i].sent, nacked += s.devs[i].nacked;
            double rate_now = (double)(total_acked - acked_at_window) / (now - window_start);
            fprintf(stderr,
                    "\rconnected %d  sent %" PRIu64 "  acked %" PRIu64 "  nacked %" PRIu64
                    "  methods %" PRIu64 "  errors %d  %.0f msgs/s   ",
                    s.connected, sent, total_acked, nacked, s.methods_answered, s.errors, rate_now);
            last_status = window_start = now;
            acked_at_window = total_acked;
        }
    }
    double t_end = now_s();
    uint64_t sent = 0, nacked = 0, resent = 0, reconnects = 0, unresolved = 0;
    for (int i = 0; i < s.n; i++) {
        sim_device *d = &s.devs[i];
        sent += d->sent;
        nacked += d->nacked;
        resent += d->resent;
        reconnects += d->reconnects;
        unresolved += d->lost + d->resend + (d->d ? iotgw_device_in_flight(d->d) : 0);
        iotgw_device_close(d->d);
    }
    double run = t_end - t_connected, busy = t_last_ack - t_connected;
    double p50 = percentile(s.lat, s.nlat, 0.5), p99 = percentile(s.lat, s.nlat, 0.99);
    if (!quiet)
        fputc('\n', stderr);
    printf("{\"devices\":%d,\"connected\":%d,\"connect_s\":%.3f,\"sent\":%" PRIu64 ",\"acked\":%" PRIu64
           ",\"nacked\":%" PRIu64 ",\"methods\":%" PRIu64 ",\"twin_ok\":%" PRIu64 ",\"twin_failed\":%" PRIu64
           ",\"errors\":%d,\"run_s\":%.3f,\"acked_per_s\":%.0f,"
           "\"ack_ms_p50\":%.3f,\"ack_ms_p99\":%.3f,\"reconnects\":%" PRIu64 ",\"resent\":%" PRIu64
           ",\"unresolved\":%" PRIu64 "}\n",
           s.n, s.connected, t_connected - t0, sent, total_acked, nacked, s.methods_answered, s.twin_results,
           s.twin_failures, s.errors, run, busy > 0 ? (double)total_acked / busy : 0, p50, p99, reconnects,
           resent, unresolved);
    close(epfd);
    free(s.lat);
    free(s.devs);
    if (unresolved)
        fprintf(stderr, "iotgw-devsim: %" PRIu64 " messages sent never got an ack or a nack\n", unresolved);
    return (s.errors && !reconnect) || never_connected || unresolved ? 1 : 0;
}
