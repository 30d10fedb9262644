/* reboot-device: implements the direct method rebootDevice. It answers at once, then
 * "reboots" (closes its session, waits --delay-ms), comes back and reports the time of
 * the reboot as reported property rebootTime, as in IoT Hub's device management
 * tutorial. Exits after --count reboots (0: never). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/examples/example_common.h"

static int report(iotgw_device *d, const char *when)
{
    char patch[96];
    snprintf(patch, sizeof patch, "{\"rebootTime\":\"%s\"}", when);
    uint64_t id;
    int rc = iotgw_device_report(d, patch, &id);
    iotgw_device_event ev;
    while (rc == IOTGW_DEVICE_OK && (rc = iotgw_device_next_event(d, &ev, 10000)) == IOTGW_DEVICE_OK)
        if (ev.kind == IOTGW_DEVICE_EVENT_TWIN_RESULT && ev.id == id) {
            printf("reboot-device: reported rebootTime %s: status %d\n", when, ev.status);
            fflush(stdout);
            return ev.status >= 200 && ev.status < 300 ? 0 : -1;
        }
    fprintf(stderr, "reboot-device: reporting rebootTime failed: %s\n", iotgw_device_strerror(rc));
    return -1;
}

int main(int argc, char **argv)
{
    example_args a;
    example_parse(argc, argv, "Implements rebootDevice and reports rebootTime; exits after --count reboots.",
                  &a);
    a.opt.methods = 1;
    a.opt.twin = 1;
    int reboots = 0;
    for (;;) {
        iotgw_device *d = example_connect(&a, 60000);
        if (!d)
            return 1;
        printf("reboot-device: %s up, waiting for rebootDevice\n", a.opt.device_id);
        fflush(stdout);
        iotgw_device_event ev;
        int rc, reboot = 0;
        while (!reboot && (rc = iotgw_device_next_event(d, &ev, -1)) == IOTGW_DEVICE_OK) {
            if (ev.kind == IOTGW_DEVICE_EVENT_CLOSED) {
                fprintf(stderr, "reboot-device: session closed: %s\n", ev.text);
                break;
            }
            if (ev.kind != IOTGW_DEVICE_EVENT_METHOD)
                continue;
            if (strcmp(ev.name, "rebootDevice")) {
                iotgw_device_method_respond(d, ev.id, 404, "{\"error\":\"unknown method\"}");
                continue;
            }
            iotgw_device_method_respond(d, ev.id, 200, "{\"result\":\"rebooting\"}");
            iotgw_device_next_event(d, &ev, 200); /* the answer leaves before the "reboot" */
            reboot = 1;
        }
        char when[32];
        example_utc(when, sizeof when, NULL, NULL);
        iotgw_device_close(d);
        if (!reboot)
            continue; /* lost the session: connect again */
        printf("reboot-device: rebooting at %s\n", when);
        fflush(stdout);
        usleep((useconds_t)(a.delay_ms ? a.delay_ms : 2000) * 1000);
        d = example_connect(&a, 60000);
        if (!d || report(d, when))
            return 1;
        iotgw_device_close(d);
        if (a.count && ++reboots >= a.count)
            return 0;
    }
}
