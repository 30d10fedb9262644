"""Writes the seed inputs of fuzz_session: a first byte that sets the piece size, then
what a device could send, starting with a valid Hello for device "fz" (its key and a
token valid until 2100 are fixed in fuzz_session.c). Run with /usr/bin/python3:
  make_session_seeds.py SCHEMAS_DESC OUT_DIR"""
import base64
import hashlib
import hmac
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from device_lib import T, load_schemas  # noqa: E402
from google.protobuf.internal.encoder import _VarintBytes  # noqa: E402

load_schemas(sys.argv[1])
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
sr = urllib.parse.quote("localhost/devices/fz", safe="")
se = 4102444800
sig = base64.b64encode(hmac.new(base64.b64decode(KEY), f"{sr}\n{se}".encode(), hashlib.sha256).digest())
TOKEN = f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}"


def frame(**kw):
    f = T("Frame")()
    for k, v in kw.items():
        getattr(f, k).CopyFrom(v) if not isinstance(v, dict) else None
    return f


def delimited(f):
    data = f.SerializeToString()
    return _VarintBytes(len(data)) + data


def hello(device="fz", token=TOKEN):
    f = T("Frame")()
    f.hello.protocol_version = 1
    f.hello.device_id = device
    f.hello.token = token
    f.hello.capabilities.methods = f.hello.capabilities.twin = f.hello.capabilities.c2d = True
    return f


def telemetry():
    f = T("Frame")()
    f.telemetry.seq = 1
    f.telemetry.parcel.type = "iotgw.AlarmStatus"
    f.telemetry.parcel.content = T("AlarmStatus")(alarm_active=True).SerializeToString()
    p = f.telemetry.properties.add()
    p.key, p.value = "k", "v"
    return f


def others():
    frames = []
    f = T("Frame")()
    f.telemetry.seq = 2
    f.telemetry.raw = b'{"x":1}'
    f.telemetry.content_type = "application/json"
    frames.append(f)
    f = T("Frame")()
    f.method_response.request_id = 1
    f.method_response.status = 200
    f.method_response.json = b'{"ok":true}'
    frames.append(f)
    f = T("Frame")()
    f.twin_get.request_id = 3
    frames.append(f)
    f = T("Frame")()
    f.reported_patch.request_id = 4
    f.reported_patch.patch_json = b'{"a":1}'
    frames.append(f)
    f = T("Frame")()
    f.c2d_settle.delivery_id = 5
    frames.append(f)
    f = T("Frame")()
    f.ping.nonce = 6
    frames.append(f)
    f = T("Frame")()
    f.error.code = 13
    f.error.message = "bye"
    frames.append(f)
    return frames


seeds = {
    "hello": [hello()],
    "hello-telemetry": [hello(), telemetry()] + [telemetry()] * 5,
    "hello-everything": [hello(), telemetry()] + others(),
    "no-hello": [telemetry()],
    "bad-token": [hello(token=TOKEN.replace("se=", "se=1"))],
    "disabled": [hello(device="off")],
    "second-hello": [hello(), hello()],
}
for name, frames in seeds.items():
    for step in (1, 7, 63):
        with open(os.path.join(out, f"{name}-{step}"), "wb") as f:
            f.write(bytes([step - 1]) + b"".join(delimited(x) for x in frames))
with open(os.path.join(out, "garbage"), "wb") as f:
    f.write(b"\x05\xff\xff\xff\xff\xff\xff\x00")
