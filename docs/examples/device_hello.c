/* device_hello: the smallest device program on libiotgw-device as installed
 * (docs/installing.md). It opens a session with the gateway, sends one AlarmStatus
 * parcel and waits for its outcome.
 *
 *   cc -o device_hello device_hello.c $(pkg-config --cflags --libs iotgw-device)
 *   IOTGW_DEVICE_KEY=KEY ./device_hello HOST PORT DEVICE_ID HUB_HOST
 *
 * Prints what became of the parcel; exits 0 when the gateway acknowledged it (the hub
 * has it), 1 when the session could not be opened or the parcel was not taken, 2 on bad
 * usage. */
#include <stdio.h>
#include <stdlib.h>

#include <iotgw_device.h>
#include <schemas/alarm_status.pb-c.h>

int main(int argc, char **argv)
{
    const char *key = getenv("IOTGW_DEVICE_KEY");
    if (argc != 5 || !key) {
        fprintf(stderr, "usage: IOTGW_DEVICE_KEY=KEY device_hello HOST PORT DEVICE_ID HUB_HOST\n");
        return 2;
    }
    iotgw_device_options opt = {
        .host = argv[1], .port = atoi(argv[2]), .device_id = argv[3], .hub_host = argv[4], .key = key};
    iotgw_device *d;
    iotgw_device_error err;
    int rc = iotgw_device_open(&opt, &d, &err);
    if (rc != IOTGW_DEVICE_OK) {
        fprintf(stderr, "device_hello: %s: %s\n", iotgw_device_strerror(rc), err.message);
        return 1;
    }

    Iotgw__AlarmStatus status = IOTGW__ALARM_STATUS__INIT;
    status.alarm_active = 1;
    status.time_utc = "12:00:00";
    status.date_utc = "2026-01-01";
    uint8_t content[64];
    Iotgw__Parcel parcel = IOTGW__PARCEL__INIT;
    parcel.type = "iotgw.AlarmStatus";
    parcel.content = (ProtobufCBinaryData){.len = iotgw__alarm_status__pack(&status, content), .data = content};
    uint64_t seq;
    rc = iotgw_device_send_parcel(d, &parcel, &seq);

    iotgw_device_event ev;
    int acked = 0, done = 0;
    while (rc == IOTGW_DEVICE_OK && !done && (rc = iotgw_device_next_event(d, &ev, 10000)) == IOTGW_DEVICE_OK) {
        if (ev.kind == IOTGW_DEVICE_EVENT_ACK && ev.id == seq) {
            printf("device_hello: parcel %llu acknowledged\n", (unsigned long long)seq);
            acked = done = 1;
        } else if (ev.kind == IOTGW_DEVICE_EVENT_NACK && ev.id == seq) {
            printf("device_hello: parcel %llu not taken (reason %d): %s\n", (unsigned long long)seq, ev.status,
                   ev.text ? ev.text : "");
            done = 1;
        } else if (ev.kind == IOTGW_DEVICE_EVENT_CLOSED) {
            printf("device_hello: the gateway closed the session: %s\n", ev.text ? ev.text : "");
            done = 1;
        }
    }
    if (!done)
        fprintf(stderr, "device_hello: no outcome for parcel %llu: %s\n", (unsigned long long)seq,
                iotgw_device_strerror(rc));
    iotgw_device_close(d);
    return acked ? 0 : 1;
}
