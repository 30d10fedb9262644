/* alarm-monitor: a device that receives alarm statuses through the cloud-invoked direct
 * method ProcessMessage. The hub carries JSON only; the gateway turns the payload into a
 * protobuf Parcel for it (methods.ProcessMessage.request: iotgw.Parcel), so this device
 * never parses JSON. Answers 200 for an alarm status, 400 for a parcel it cannot use, 404
 * for any other method, and logs each status. Exits after --count statuses (0: never). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/examples/example_common.h"
#include "schemas/alarm_status.pb-c.h"

static int handle(iotgw_device *d, const iotgw_device_event *ev)
{
    if (strcmp(ev->name, "ProcessMessage")) {
        printf("alarm-monitor: unknown method %s: 404\n", ev->name);
        iotgw_device_method_respond(d, ev->id, 404, "{\"error\":\"unknown method\"}");
        return 0;
    }
    Iotgw__Parcel *p =
        ev->type && !strcmp(ev->type, "iotgw.Parcel") ? iotgw__parcel__unpack(NULL, ev->len, ev->data) : NULL;
    Iotgw__AlarmStatus *st = p && !strcmp(p->type, "iotgw.AlarmStatus")
                                 ? iotgw__alarm_status__unpack(NULL, p->content.len, p->content.data)
                                 : NULL;
    int ok = st != NULL;
    if (ok) {
        printf("alarm-monitor: alarm %s at %s %s (from %s): 200\n", st->alarm_active ? "RAISED" : "cleared",
               st->date_utc, st->time_utc, p->source ? p->source->name : "?");
        iotgw_device_method_respond(d, ev->id, 200, "{\"result\":\"alarm status received\"}");
    } else {
        printf("alarm-monitor: ProcessMessage without an alarm status: 400\n");
        iotgw_device_method_respond(d, ev->id, 400,
                                    "{\"error\":\"expected a Parcel holding an iotgw.AlarmStatus\"}");
    }
    fflush(stdout);
    if (st)
        iotgw__alarm_status__free_unpacked(st, NULL);
    if (p)
        iotgw__parcel__free_unpacked(p, NULL);
    return ok;
}

int main(int argc, char **argv)
{
    example_args a;
    example_parse(argc, argv, "Receives alarm statuses as direct method ProcessMessage; exits after --count.",
                  &a);
    a.opt.methods = 1;
    iotgw_device *d = example_connect(&a, 30000);
    if (!d)
        return 1;
    printf("alarm-monitor: %s ready for ProcessMessage\n", a.opt.device_id);
    fflush(stdout);
    int statuses = 0, rc = 0;
    iotgw_device_event ev;
    while ((!a.count || statuses < a.count) &&
           (rc = iotgw_device_next_event(d, &ev, -1)) == IOTGW_DEVICE_OK) {
        if (ev.kind == IOTGW_DEVICE_EVENT_METHOD)
            statuses += handle(d, &ev);
        else if (ev.kind == IOTGW_DEVICE_EVENT_CLOSED) {
            fprintf(stderr, "alarm-monitor: the gateway closed the session: %s\n", ev.text);
            rc = 1;
            break;
        }
    }
    /* let the last answer leave before closing */
    iotgw_device_next_event(d, &ev, 200);
    iotgw_device_close(d);
    return rc ? 1 : 0;
}
