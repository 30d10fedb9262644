"""Writes the seed inputs of fuzz_sdk_amqp: a first byte that sets the piece size (its
low 6 bits, plus one), with bit 6 gives the connection a client certificate naming "fz2"
and with bit 7 marks it as WebSocket, then the bytes
an Azure IoT SDK device sends over AMQP: a protocol header (SASL or bare AMQP), open,
begin, the $cbs links, a put-token for device "fz" (its key and gateway's names are
fixed in fuzz_sdk_amqp.c; the token is valid until 2100), the device's links and their
deliveries. Frames are encoded by hand with python3-qpid-proton's codec. Run with
/usr/bin/python3:
  make_amqp_seeds.py OUT_DIR"""
import base64
import hashlib
import hmac
import os
import struct
import sys
import urllib.parse
import uuid

from proton import Data, Described, Message, symbol, ubyte, uint, ulong

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
WRONG_KEY = base64.b64encode(bytes(32)).decode()
SE = 4102444800


def token(resource, key=KEY, se=SE):
    sr = urllib.parse.quote(resource, safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest())
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}"


AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"


def encode(value):
    d = Data()
    d.put_object(value)
    return d.encode()


def frame(code, fields, channel=0, payload=b"", ftype=0):
    body = encode(Described(ulong(code), fields)) + payload
    return struct.pack(">IBBH", 8 + len(body), 2, ftype, channel) + body


def sasl_init(mechanism="ANONYMOUS"):
    return frame(0x41, [symbol(mechanism), b"", "localhost"], ftype=1)


def open_(max_frame=65536, idle=None):
    return frame(0x10, ["fuzz-device", "localhost", uint(max_frame), 65535, None if idle is None else uint(idle)])


def begin(channel=0):
    return frame(0x11, [None, uint(0), uint(5000), uint(5000), uint(64)], channel)


def source(address):
    return Described(ulong(0x28), [address])


def target(address):
    return Described(ulong(0x29), [address])


def attach(name, handle, sender, address, channel=0, snd_settle=0):
    """sender: the device sends on the link (its role sender, false)."""
    if sender:
        fields = [name, uint(handle), False, ubyte(snd_settle), ubyte(0), source(name), target(address),
                  None, False, uint(0)]
    else:
        fields = [name, uint(handle), True, ubyte(snd_settle), ubyte(0), source(address), target(name)]
    return frame(0x12, fields, channel)


def flow(handle, credit, next_in=0, delivery_count=0, channel=0):
    return frame(0x13, [uint(next_in), uint(5000), uint(0), uint(5000), uint(handle), uint(delivery_count),
                        uint(credit)], channel)


def transfer(handle, delivery_id, payload, settled=False, more=False, channel=0, first=True):
    if first:
        fields = [uint(handle), uint(delivery_id), struct.pack(">Q", delivery_id), uint(0), settled, more]
    else:
        fields = [uint(handle), None, None, None, settled, more]
    return frame(0x14, fields, channel, payload)


def disposition(first, last=None, settled=True, receiver=True, state=0x24, channel=0):
    return frame(0x15, [receiver, uint(first), uint(last if last is not None else first), settled,
                        Described(ulong(state), [])], channel)


def detach(handle, closed=True, channel=0):
    return frame(0x16, [uint(handle), closed], channel)


def end(channel=0):
    return frame(0x17, [], channel)


def close():
    return frame(0x18, [])


def message(body=None, properties=None, annotations=None, mid=None, correlation=None, reply_to=None,
            content_type=None):
    m = Message()
    if body is not None:
        m.body = body
    if properties:
        m.properties = properties
    if annotations:
        m.annotations = annotations
    if mid is not None:
        m.id = mid
    if correlation is not None:
        m.correlation_id = correlation
    if reply_to:
        m.reply_to = reply_to
    if content_type:
        m.content_type = content_type
    return m.encode()


def put_token(audience, tok, mid="put-1"):
    return message(body=tok, mid=mid, reply_to="cbs",
                   properties={"operation": "put-token", "type": "azure-devices.net:sastoken",
                               "name": audience})


def telemetry(i):
    m = Message()
    m.inferred = True  # bytes as a data section, as the SDKs send them
    m.body = f'{{"temperature": {20 + i}}}'.encode()
    m.id = f"msg-{i}"
    m.content_type = "application/json"
    m.properties = {"level": "info"}
    m.annotations = {symbol("iothub-app-kind"): "x"}
    return m.encode()


def cbs(aud, tok, channel=0, first_handle=0, delivery=0):
    """The C SDK's CBS: a sender and a receiver on $cbs, credit for replies, a put-token."""
    return (attach("cbs-sender", first_handle, True, "$cbs", channel) +
            attach("cbs-receiver", first_handle + 1, False, "$cbs", channel) +
            flow(first_handle + 1, 100, channel=channel) +
            transfer(first_handle, delivery, put_token(aud, tok), channel=channel))


def start(sasl=True, max_frame=65536, mechanism="ANONYMOUS"):
    pre = SASL_HEADER + sasl_init(mechanism) if sasl else b""
    return pre + AMQP_HEADER + open_(max_frame) + begin()


AUD = "localhost/devices/fz"
TOK = token(AUD)
EVENTS = "/devices/fz/messages/events"
seeds = {}

# Telemetry: SASL ANONYMOUS, CBS, the events link, deliveries the gateway holds.
seeds["telemetry_sasl"] = (bytes([0x3f]) + start() + cbs(AUD, TOK) + attach("events", 2, True, EVENTS) +
                           b"".join(transfer(2, 1 + i, telemetry(i)) for i in range(3)) +
                           detach(2) + detach(0) + detach(1) + end() + close())

# Bare AMQP header, audience percent-encoded with a scheme, over WebSocket, small pieces.
aud2 = urllib.parse.quote("sb://localhost/devices/fz", safe="")
seeds["telemetry_bare_ws"] = (bytes([0x80 | 0x07]) + start(sasl=False, mechanism=None) + cbs(aud2, TOK) +
                              attach("events", 2, True, "amqps://localhost/devices/fz/messages/events") +
                              b"".join(transfer(2, 1 + i, telemetry(i)) for i in range(2)) + close())

# More deliveries than the window (devices.maxInFlight: 4), one settled by the device.
seeds["window"] = (bytes([0x3f]) + start(mechanism="MSSBCBS") + cbs(AUD, TOK) + attach("events", 2, True, EVENTS) +
                   b"".join(transfer(2, 1 + i, telemetry(i), settled=(i == 5)) for i in range(7)))

# A message across frames (max-frame-size 512), then an oversized announcement.
big = message(body=b"x" * 1500, mid="big")
parts = [big[i:i + 400] for i in range(0, len(big), 400)]
seeds["multiframe"] = (bytes([0x3f]) + start(max_frame=512) + cbs(AUD, TOK) + attach("events", 2, True, EVENTS) +
                       b"".join(transfer(2, 1, p, more=(i < len(parts) - 1), first=(i == 0))
                                for i, p in enumerate(parts)))

# Twin: both links, GET, PATCH reported, subscribe to desired; then the device leaves.
tw = "/devices/fz/twin"
seeds["twin"] = (bytes([0x3f]) + start() + cbs(AUD, TOK) + attach("twin-out", 2, True, tw) +
                 attach("twin-in", 3, False, tw) + flow(3, 10) +
                 transfer(2, 1, message(annotations={symbol("operation"): "GET"}, correlation="c1")) +
                 transfer(2, 2, message(body=b'{"a":1}', annotations={symbol("operation"): "PATCH",
                                                                     symbol("resource"): "/properties/reported"},
                                        correlation=uuid.UUID(int=7))) +
                 transfer(2, 3, message(annotations={symbol("operation"): "PUT",
                                                     symbol("resource"): "/notifications/twin/properties/desired"},
                                        correlation=ulong(9))) +
                 transfer(2, 4, message(annotations={symbol("operation"): "DELETE", symbol("resource"): "/x"},
                                        correlation="c4")) +
                 detach(3) + detach(2))

# Methods and C2D: the links a device keeps open, a late method answer, a disposition.
md = "/devices/fz/methods/devicebound"
seeds["methods_c2d"] = (bytes([0x3f]) + start() + cbs(AUD, TOK) + attach("methods-in", 2, False, md) +
                        flow(2, 10) + attach("methods-out", 3, True, md) +
                        transfer(3, 1, message(body=b'{"ok":true}', correlation=uuid.UUID(int=1),
                                               properties={"IoThub-status": 200})) +
                        transfer(3, 2, message(body=b"{}", correlation="not-a-uuid")) +
                        attach("c2d", 4, False, "/devices/fz/messages/devicebound") + flow(4, 10) +
                        disposition(0, receiver=True) + detach(4) + detach(2))

# Two devices on one connection (the C SDK multiplexes), on two sessions; a renewal.
AUD_GW = "gw1/devices/fz2"
seeds["multiplex"] = (bytes([0x1f]) + start() + begin(1) + cbs(AUD, TOK) +
                      cbs(AUD_GW, token(AUD_GW), channel=1) +
                      transfer(0, 1, put_token(AUD, TOK, mid="renew")) +
                      attach("events", 2, True, EVENTS) + attach("events2", 2, True, "/devices/fz2/messages/events", 1) +
                      transfer(2, 2, telemetry(1)) + transfer(2, 1, telemetry(2), channel=1) +
                      end(1) + close())

# Refusals: a wrong key, a disabled and an unknown device, another hub, a module, links
# without a token, the wrong direction, a service address, a bad CBS request.
refusals = [put_token(AUD, token(AUD, WRONG_KEY), "p1"),
            put_token("localhost/devices/off", token("localhost/devices/off"), "p2"),
            put_token("localhost/devices/nobody", token("localhost/devices/nobody"), "p3"),
            put_token("otherhub/devices/fz", token("otherhub/devices/fz"), "p4"),
            put_token("localhost/devices/fz/modules/m", token("localhost/devices/fz/modules/m"), "p5"),
            message(body="x", properties={"operation": "delete-token"}, mid=ulong(6)),
            message(body=b"not a string", properties={"operation": "put-token", "type": "azure-devices.net:sastoken",
                                                      "name": AUD}, mid=uuid.UUID(int=3))]
seeds["refusals"] = (bytes([0x3f]) + start() + attach("early-events", 9, True, EVENTS) +
                     attach("cbs-sender", 0, True, "$cbs") + attach("cbs-receiver", 1, False, "$cbs") + flow(1, 100) +
                     b"".join(transfer(0, i, m) for i, m in enumerate(refusals)) +
                     transfer(0, len(refusals), put_token(AUD, TOK)) +
                     attach("wrong-way", 2, False, EVENTS) +
                     attach("module", 3, True, "/devices/fz/modules/m/messages/events") +
                     attach("service", 4, True, "/messages/devicebound") +
                     attach("nowhere", 5, True, "/what/ever") +
                     attach("events", 6, True, EVENTS) + attach("events-again", 7, True, EVENTS) +
                     transfer(6, 20, telemetry(0)) + transfer(7, 21, telemetry(1)) +
                     transfer(9, 22, telemetry(2)))

# A client certificate naming fz2: its links attach without CBS; fz's do not.
seeds["client_cert"] = (bytes([0x40 | 0x3f]) + start() +
                        attach("events", 0, True, "/devices/fz2/messages/events") +
                        transfer(0, 0, telemetry(0)) +
                        attach("c2d", 1, False, "/devices/fz2/messages/devicebound") + flow(1, 5) +
                        attach("twin-out", 2, True, "/devices/fz2/twin") + attach("twin-in", 3, False, "/devices/fz2/twin") +
                        flow(3, 5) + transfer(2, 1, message(annotations={symbol("operation"): "GET"}, correlation="g")) +
                        attach("not-mine", 4, True, EVENTS) + transfer(0, 2, telemetry(1)) + detach(0) + close())

# A framing error after a valid start, and a protocol header the gateway does not speak.
seeds["garbage"] = bytes([0x3f]) + start() + cbs(AUD, TOK) + b"\x00\x00\x00\x09\x02\x00\x00\x00\xff"
seeds["bad_header"] = bytes([0x00]) + b"AMQP\x02\x01\x00\x00" + open_()

# What conn.c's frame guard refuses before Proton reads it: a transfer starting a delivery
# with more=true and no delivery-id (Proton 0.37 asserts), one after an aborted delivery,
# a continuation after the handle's detach, a second sasl-init (Proton leaks the first).
cbs_link = attach("cbs-sender", 0, True, "$cbs")
seeds["transfer_more_without_id"] = (bytes([0x3f]) + start() + cbs_link +
                                     frame(0x14, [uint(0), None, b"t", uint(0), False, True]))
seeds["continuation_after_abort"] = (bytes([0x05]) + start() + cbs(AUD, TOK) + attach("events", 2, True, EVENTS) +
                                     frame(0x14, [uint(2), uint(1), b"a", uint(0), False, True,
                                                  None, None, False, True], payload=b"x") +
                                     transfer(2, None, b"y", more=True, first=False))
seeds["continuation_after_detach"] = (bytes([0x3f]) + start() + cbs(AUD, TOK) + attach("events", 2, True, EVENTS) +
                                      transfer(2, 1, b"x", more=True) + detach(2) +
                                      attach("events", 2, True, EVENTS) +
                                      transfer(2, None, b"y", more=True, first=False))
seeds["second_sasl_init"] = (bytes([0x3f]) + SASL_HEADER + sasl_init() + sasl_init("PLAIN") + sasl_init() +
                             AMQP_HEADER + open_())

for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {out}")
