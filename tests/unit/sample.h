/* A typical alarm parcel and telemetry frame, shared by the unit tests and benchmarks. */
#ifndef IOTGW_TESTS_SAMPLE_H
#define IOTGW_TESTS_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "schemas/gateway.pb-c.h"
#include "schemas/parcel.pb-c.h"

/* A new Parcel from alarm-agent-1 to alarm-monitor-1 holding an AlarmStatus. */
Iotgw__Parcel *sample_alarm_parcel(int active);
/* A new Frame carrying that parcel as telemetry with sequence number seq. */
Iotgw__Frame *sample_telemetry_frame(uint64_t seq);
/* Pack a message into a new buffer. */
uint8_t *sample_pack(const ProtobufCMessage *m, size_t *len);

#endif
