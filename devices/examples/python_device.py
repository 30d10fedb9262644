#!/usr/bin/python3
"""A device in Python, speaking iotgw's downstream protocol with Debian's python3-protobuf
and nothing else: how little another language needs (docs/downstream-protocol.md).

It connects, authenticates with a token made from its key, sends --count AlarmStatus
parcels and waits for each acknowledgement, answering pings and direct methods (200)
meanwhile. The message classes come from the schemas' descriptor set, which the build
writes (tests/integration/schemas.desc; protoc --descriptor_set_out makes one too).

  python_device.py --gateway HOST:PORT --device ID --key KEY --hub HUB_HOST
                   --schemas schemas.desc [--count N]
"""
import argparse
import base64
import hashlib
import hmac
import socket
import sys
import time
import urllib.parse

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal.decoder import _DecodeVarint32
from google.protobuf.internal.encoder import _VarintBytes


def load(schemas):
    with open(schemas, "rb") as f:
        fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    factory = message_factory.MessageFactory(pool)
    return {n: factory.GetPrototype(pool.FindMessageTypeByName("iotgw." + n))
            for n in ("Frame", "Parcel", "AlarmStatus")}


def token(hub, device, key, ttl=3600):
    """A SAS token as IoT Hub's SDKs make it: HMAC-SHA256 of "sr\\nse" with the key."""
    se = int(time.time() + ttl)
    sr = urllib.parse.quote(f"{hub}/devices/{device}", safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest())
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}"


class Connection:
    def __init__(self, host, port, Frame):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = b""
        self.Frame = Frame

    def send(self, frame):
        data = frame.SerializeToString()
        self.sock.sendall(_VarintBytes(len(data)) + data)  # protobuf's delimited form

    def recv(self):
        while True:
            if self.buf:
                try:
                    n, pos = _DecodeVarint32(self.buf, 0)
                    if len(self.buf) >= pos + n:
                        frame = self.Frame.FromString(self.buf[pos:pos + n])
                        self.buf = self.buf[pos + n:]
                        return frame
                except IndexError:
                    pass  # the length itself is not complete yet
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the gateway closed the connection")
            self.buf += chunk


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gateway", required=True, help="HOST:PORT")
    ap.add_argument("--device", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--hub", required=True, help="the IoT Hub's host name")
    ap.add_argument("--schemas", required=True, help="the schemas' FileDescriptorSet")
    ap.add_argument("--count", type=int, default=3)
    args = ap.parse_args()
    T = load(args.schemas)
    host, port = args.gateway.rsplit(":", 1)
    conn = Connection(host, int(port), T["Frame"])

    hello = T["Frame"]()
    hello.hello.protocol_version = 1
    hello.hello.device_id = args.device
    hello.hello.token = token(args.hub, args.device, args.key)
    hello.hello.capabilities.methods = True
    hello.hello.client = "python_device.py"
    conn.send(hello)
    first = conn.recv()
    if first.WhichOneof("body") != "welcome":
        print(f"python-device: refused: {first.error.message}")
        return 1
    print(f"python-device: {args.device} connected; up to {first.welcome.max_in_flight} messages in flight")

    acked = 0
    for seq in range(1, args.count + 1):
        status = T["AlarmStatus"](alarm_active=seq % 2 == 1, time_utc=time.strftime("%H:%M:%S", time.gmtime()),
                                  date_utc=time.strftime("%Y-%m-%d", time.gmtime()))
        frame = T["Frame"]()
        frame.telemetry.seq = seq
        frame.telemetry.parcel.type = "iotgw.AlarmStatus"
        frame.telemetry.parcel.content = status.SerializeToString()
        frame.telemetry.parcel.source.name = args.device
        conn.send(frame)
        while True:
            f = conn.recv()
            kind = f.WhichOneof("body")
            if kind == "ping":
                pong = T["Frame"]()
                pong.pong.nonce = f.ping.nonce
                conn.send(pong)
            elif kind == "method_request":
                answer = T["Frame"]()
                answer.method_response.request_id = f.method_request.request_id
                answer.method_response.status = 200
                answer.method_response.json = b'{"from":"python"}'
                conn.send(answer)
            elif kind in ("ack", "nack") and getattr(f, kind).seq == seq:
                print(f"python-device: seq {seq}: {kind}")
                acked += kind == "ack"
                break
            elif kind == "error":
                print(f"python-device: the gateway closed the session: {f.error.message}")
                return 1
    print(f"python-device: {acked} of {args.count} acknowledged")
    return 0 if acked == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
