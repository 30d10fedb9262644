#include "devices/examples/example_common.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codecs/hostport.h"

static void usage(const char *prog, const char *what)
{
    fprintf(stderr,
            "usage: %s --gateway HOST:PORT --device ID --hub HUB_HOST [--key KEY] [--count N]\n"
            "          [--interval-ms N] [--delay-ms N] [--peer ID]\n"
            "%s\n"
            "The key may come from the environment variable IOTGW_DEVICE_KEY instead of --key.\n",
            prog, what);
}

void example_parse(int argc, char **argv, const char *what, example_args *a)
{
    static const struct option opts[] = {{"gateway", 1, 0, 'g'},  {"device", 1, 0, 'd'},
                                         {"key", 1, 0, 'k'},      {"hub", 1, 0, 'H'},
                                         {"count", 1, 0, 'n'},    {"interval-ms", 1, 0, 'i'},
                                         {"delay-ms", 1, 0, 'D'}, {"peer", 1, 0, 'p'},
                                         {"help", 0, 0, 'h'},     {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->interval_ms = 1000;
    a->opt.key = getenv("IOTGW_DEVICE_KEY");
    static char host[256];
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'g':
            if (iotgw_hostport_parse(optarg, host, sizeof host, &a->opt.port) || !a->opt.port) {
                fprintf(stderr, "%s: --gateway wants HOST:PORT, not \"%s\"\n", argv[0], optarg);
                exit(2);
            }
            a->opt.host = host;
            break;
        case 'd': a->opt.device_id = optarg; break;
        case 'k': a->opt.key = optarg; break;
        case 'H': a->opt.hub_host = optarg; break;
        case 'n': a->count = atoi(optarg); break;
        case 'i': a->interval_ms = atoi(optarg); break;
        case 'D': a->delay_ms = atoi(optarg); break;
        case 'p': a->peer = optarg; break;
        case 'h': usage(argv[0], what); exit(0);
        default: usage(argv[0], what); exit(2);
        }
    }
    if (!a->opt.host || !a->opt.device_id || !a->opt.hub_host || !a->opt.key) {
        usage(argv[0], what);
        exit(2);
    }
    a->opt.client = argv[0];
}

iotgw_device *example_connect(const example_args *a, int give_up_ms)
{
    int wait_ms = 500, waited = 0;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (;;) {
        iotgw_device *d;
        iotgw_device_error err;
        int rc = iotgw_device_open(&a->opt, &d, &err);
        if (rc == IOTGW_DEVICE_OK)
            return d;
        fprintf(stderr, "%s: %s: %s\n", a->opt.device_id, iotgw_device_strerror(rc), err.message);
        if (waited >= give_up_ms)
            return NULL;
        int jittered = wait_ms / 2 + rand() % (wait_ms / 2 + 1);
        usleep((useconds_t)jittered * 1000);
        waited += jittered;
        wait_ms = wait_ms * 2 > 30000 ? 30000 : wait_ms * 2;
    }
}

void example_utc(char *iso, size_t n, char *time_hms, char *date_ymd)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (iso)
        strftime(iso, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (time_hms)
        strftime(time_hms, 9, "%H:%M:%S", &tm);
    if (date_ymd)
        strftime(date_ymd, 11, "%Y-%m-%d", &tm);
}
