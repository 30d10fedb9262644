/* alarm-agent: a device that watches an alarm and sends each change of its status as an
 * AlarmStatus parcel addressed to the monitor device (--peer), through the gateway.
 * It waits for each parcel's acknowledgement and says what it packed and what became of
 * it. Exits 0 when --count parcels were acknowledged, 1 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/examples/example_common.h"
#include "schemas/alarm_status.pb-c.h"

int main(int argc, char **argv)
{
    example_args a;
    example_parse(argc, argv,
                  "Sends --count (default 6) alarm status changes to device --peer (default\n"
                  "alarm-monitor-1), one per --interval-ms (default 1000).",
                  &a);
    const char *monitor = a.peer ? a.peer : "alarm-monitor-1";
    int count = a.count ? a.count : 6;
    iotgw_device *d = example_connect(&a, 30000);
    if (!d)
        return 1;
    int acked = 0;
    for (int i = 0; i < count; i++) {
        Iotgw__AlarmStatus st = IOTGW__ALARM_STATUS__INIT;
        char hms[9], ymd[11];
        example_utc(NULL, 0, hms, ymd);
        st.alarm_active = i % 2 == 0; /* raised, cleared, raised, ... */
        st.time_utc = hms;
        st.date_utc = ymd;
        uint8_t content[64];
        size_t clen = iotgw__alarm_status__pack(&st, content);
        Iotgw__Address src = IOTGW__ADDRESS__INIT, dst = IOTGW__ADDRESS__INIT;
        src.name = (char *)a.opt.device_id;
        dst.name = (char *)monitor;
        Iotgw__Parcel p = IOTGW__PARCEL__INIT;
        p.source = &src;
        p.destination = &dst;
        p.type = "iotgw.AlarmStatus";
        p.content = (ProtobufCBinaryData){.len = clen, .data = content};
        uint64_t seq;
        int rc = iotgw_device_send_parcel(d, &p, &seq);
        if (rc) {
            fprintf(stderr, "alarm-agent: send: %s\n", iotgw_device_strerror(rc));
            break;
        }
        printf(
            "alarm-agent: packed AlarmStatus{alarm_active=%s, time_utc=%s, date_utc=%s} for %s (seq %llu)\n",
            st.alarm_active ? "true" : "false", hms, ymd, monitor, (unsigned long long)seq);
        fflush(stdout);
        iotgw_device_event ev;
        int got = 0;
        while (!got && (rc = iotgw_device_next_event(d, &ev, 10000)) == IOTGW_DEVICE_OK) {
            if (ev.kind == IOTGW_DEVICE_EVENT_ACK && ev.id == seq) {
                printf("alarm-agent: seq %llu acknowledged: the hub has it\n", (unsigned long long)seq);
                acked++;
                got = 1;
            } else if (ev.kind == IOTGW_DEVICE_EVENT_NACK && ev.id == seq) {
                printf("alarm-agent: seq %llu not taken: reason %d: %s\n", (unsigned long long)seq, ev.status,
                       ev.text);
                got = 1;
            } else if (ev.kind == IOTGW_DEVICE_EVENT_CLOSED) {
                fprintf(stderr, "alarm-agent: the gateway closed the session: %s\n", ev.text);
                got = 1;
                i = count;
            }
        }
        fflush(stdout);
        if (rc == IOTGW_DEVICE_ERR_TIMEOUT)
            fprintf(stderr, "alarm-agent: no acknowledgement for seq %llu within 10 s\n",
                    (unsigned long long)seq);
        if (i + 1 < count)
            usleep((useconds_t)a.interval_ms * 1000);
    }
    iotgw_device_close(d);
    printf("alarm-agent: %d of %d alarm statuses acknowledged\n", acked, count);
    return acked == count ? 0 : 1;
}
