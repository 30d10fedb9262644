"""Wire-format interop with another protobuf runtime (Debian's python3-protobuf).

Checks, against the real iotgw-parcel binary:
  * delimited frames written by Python's runtime decode with our frame decoder, and our
    JSON of each equals Python's json_format (the proto3 JSON mapping) of the same message;
  * JSON written by Python's json_format encodes with our JSON reader into frames that
    Python parses back to the original messages;
  * a truncated stream and a garbage length prefix are refused with specific errors.

Run with /usr/bin/python3 (Debian's protobuf is only visible there):
  wire_interop.py IOTGW_PARCEL DESCRIPTOR_SET
"""
import json
import os
import subprocess
import sys
import unittest

from google.protobuf import json_format
from google.protobuf.internal.decoder import _DecodeVarint32
from google.protobuf.internal.encoder import _VarintBytes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from iotgw_testlib import WRAPPER, run_tests  # noqa: E402
from device_lib import load_schemas  # noqa: E402

TOOL, DESCRIPTORS = sys.argv[1], sys.argv[2]
del sys.argv[1:3]
_types = load_schemas(DESCRIPTORS)
Frame, Parcel, AlarmStatus = _types["Frame"], _types["Parcel"], _types["AlarmStatus"]
pool = Frame.DESCRIPTOR.file.pool


def sample_frames():
    status = AlarmStatus(alarm_active=True, time_utc="12:34:56", date_utc="2026-11-22")
    parcel = Parcel(type="iotgw.AlarmStatus", content=status.SerializeToString())
    parcel.source.name = "alarm-agent-1"
    parcel.source.local_id = "zone-3"
    parcel.destination.name = "alarm-monitor-1"
    frames = []
    f = Frame()
    f.hello.protocol_version = 1
    f.hello.device_id = "alarm-agent-1"
    f.hello.token = "SharedAccessSignature sr=h%2Fdevices%2Falarm-agent-1&sig=abc%3D&se=1700000000"
    f.hello.capabilities.methods = True
    frames.append(f)
    f = Frame()
    f.telemetry.seq = 2**64 - 1
    f.telemetry.parcel.CopyFrom(parcel)
    p = f.telemetry.properties.add()
    p.key, p.value = "severity", "high"
    p = f.telemetry.properties.add()
    p.key, p.value = "zone", "caf\u00e9 \"3\""
    frames.append(f)
    f = Frame()
    f.telemetry.seq = 3
    f.telemetry.raw = bytes(range(256))
    f.telemetry.content_type = "application/octet-stream"
    frames.append(f)
    f = Frame()
    f.nack.seq = 4
    f.nack.reason = pool.FindEnumTypeByName("iotgw.NackReason").values_by_name["NACK_THROTTLED"].number
    f.nack.retry_after_ms = 1500
    frames.append(f)
    f = Frame()
    f.method_request.request_id = 7
    f.method_request.name = "ProcessMessage"
    f.method_request.protobuf = parcel.SerializeToString()
    f.method_request.payload_type = "iotgw.Parcel"
    f.method_request.timeout_ms = 30000
    frames.append(f)
    f = Frame()
    f.method_response.request_id = 7
    f.method_response.status = -1
    f.method_response.json = b'{"ok":true}'
    frames.append(f)
    f = Frame()
    f.desired_update.version = -(2**63)
    f.desired_update.patch_json = b'{"rebootTime":"now"}'
    frames.append(f)
    f = Frame()
    f.c2d_settle.delivery_id = 9
    f.c2d_settle.outcome = 2
    frames.append(f)
    frames.append(Frame())  # an empty frame: zero-length body
    f = Frame()
    f.error.code = 5
    f.error.message = "bad token"
    frames.append(f)
    return frames


def delimited(messages):
    return b"".join(_VarintBytes(m.ByteSize()) + m.SerializeToString() for m in messages)


def read_delimited(data, cls):
    out, pos = [], 0
    while pos < len(data):
        size, pos = _DecodeVarint32(data, pos)
        m = cls()
        m.ParseFromString(data[pos:pos + size])
        out.append(m)
        pos += size
    return out


def run(args, data):
    r = subprocess.run(WRAPPER + [TOOL] + args, input=data, capture_output=True, timeout=300)
    if r.returncode == 99:  # sanitizers and valgrind are set to exit 99
        raise AssertionError("memory error:\n%s" % r.stderr.decode())
    return r


class WireInterop(unittest.TestCase):
    def test_python_frames_decode_to_proto3_json(self):
        frames = sample_frames()
        r = run(["decode"], delimited(frames))
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        lines = r.stdout.decode().splitlines()
        self.assertEqual(len(lines), len(frames))
        for line, frame in zip(lines, frames):
            self.assertEqual(json.loads(line), json_format.MessageToDict(frame))

    def test_python_json_encodes_to_identical_messages(self):
        frames = sample_frames()
        text = "".join(json_format.MessageToJson(f, indent=None) + "\n" for f in frames)
        r = run(["encode"], text.encode())
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(read_delimited(r.stdout, Frame), frames)

    def test_original_field_names_are_read_too(self):
        frames = sample_frames()
        text = "".join(json.dumps(json_format.MessageToDict(f, preserving_proto_field_name=True)) + "\n"
                       for f in frames)
        r = run(["encode"], text.encode())
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(read_delimited(r.stdout, Frame), frames)

    def test_parcel_content_is_transcoded_by_type(self):
        parcel = sample_frames()[1].telemetry.parcel
        r = run(["decode", "--type", "iotgw.Parcel"], delimited([parcel]))
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        got = json.loads(r.stdout)
        self.assertEqual(got["content"], {"alarmActive": True, "timeUtc": "12:34:56", "dateUtc": "2026-11-22"})
        r = run(["encode", "--type", "iotgw.Parcel"], r.stdout)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(read_delimited(r.stdout, Parcel), [parcel])

    def test_truncated_stream_is_refused(self):
        data = delimited(sample_frames()[:2])
        r = run(["decode"], data[:-5])
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stdout.decode().splitlines()), 1)  # the first frame still came out
        self.assertIn("frame 2: stream ended after", r.stderr.decode())

    def test_bad_length_prefix_is_refused(self):
        r = run(["decode"], b"\xff\xff\xff\xff\xff\x01")
        self.assertEqual(r.returncode, 1)
        self.assertIn("exceeds 32 bits", r.stderr.decode())
        r = run(["decode", "--max-frame", "10"], delimited(sample_frames()[1:2]))
        self.assertEqual(r.returncode, 1)
        self.assertIn("maximum is 10", r.stderr.decode())

    def test_overlong_json_line_is_refused(self):
        line = b'{"hello":{"deviceId":"' + b"x" * (4 * 1024 * 1024) + b'"}}\n'
        r = run(["encode"], b'{"ping":{}}\n' + line)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.decode().strip(), "iotgw-parcel: line 2: longer than 4194304 bytes")
        self.assertEqual(len(read_delimited(r.stdout, Frame)), 1)  # the good line before it went out

    def test_bad_json_names_line_and_field(self):
        r = run(["encode"], b'{"hello":{"deviceId":"a"}}\n{"telemetry":{"seq":"x"}}\n')
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.decode().strip(), "iotgw-parcel: line 2: field telemetry.seq: expected an integer")


if __name__ == "__main__":
    run_tests()
