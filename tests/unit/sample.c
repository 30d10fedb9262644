#include "tests/unit/sample.h"

#include <stdlib.h>
#include <string.h>

#include "schemas/alarm_status.pb-c.h"

static Iotgw__Address *address(const char *name, const char *local_id)
{
    Iotgw__Address *a = malloc(sizeof *a);
    iotgw__address__init(a);
    a->name = strdup(name);
    a->local_id = strdup(local_id);
    a->domain_agent = strdup("site-agent");
    a->domain = strdup("plant-north");
    return a;
}

uint8_t *sample_pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len + 1);
    protobuf_c_message_pack(m, buf);
    return buf;
}

Iotgw__Parcel *sample_alarm_parcel(int active)
{
    Iotgw__AlarmStatus st;
    iotgw__alarm_status__init(&st);
    st.alarm_active = active;
    st.time_utc = "12:34:56";
    st.date_utc = "2026-11-22";

    Iotgw__Parcel *p = malloc(sizeof *p);
    iotgw__parcel__init(p);
    p->source = address("alarm-agent-1", "zone-3");
    p->destination = address("alarm-monitor-1", "panel-1");
    p->type = strdup("iotgw.AlarmStatus");
    p->content.data = sample_pack(&st.base, &p->content.len);
    return p;
}

Iotgw__Frame *sample_telemetry_frame(uint64_t seq)
{
    Iotgw__Telemetry *t = malloc(sizeof *t);
    iotgw__telemetry__init(t);
    t->seq = seq;
    t->payload_case = IOTGW__TELEMETRY__PAYLOAD_PARCEL;
    t->parcel = sample_alarm_parcel(seq % 2 == 0);
    Iotgw__Frame *f = malloc(sizeof *f);
    iotgw__frame__init(f);
    f->body_case = IOTGW__FRAME__BODY_TELEMETRY;
    f->telemetry = t;
    return f;
}
