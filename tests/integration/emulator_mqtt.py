"""iothub-emulator's MQTT device endpoint (MQTT 3.1.1 over TLS on --mqtts, and over
WebSocket at /$iothub/websocket on the HTTPS port) seen by real clients: Debian's
python3-paho-mqtt and mosquitto's mosquitto_pub/mosquitto_sub, and, where no real client
can misbehave on purpose (a PUBACK held back, a will without DISCONNECT, a silent
keep-alive, QoS 2 acknowledgements out of nowhere), a small MQTT client written here over
Python's ssl module. The service side is python3-qpid-proton (telemetry stream, C2D,
feedback) and the REST API (methods, twins). Wherever the hub refuses something, a
bystander device connected at the same time must keep being served.

usage: emulator_mqtt.py IOTHUB_EMULATOR CERT_DIR"""
import json
import os
import queue
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse
import uuid

import paho.mqtt.client as mqtt
from proton import Message

from iotgw_testlib import run_tests
import mqtt_lib
from emulator_lib import (Emulator, Cbs, HOST, StreamReader, connect, device_token, module_token, owner_token,
                          sas_token, wait_detached, DEVICE_KEYS, SERVICE_KEY)

BINARY, CERTS = sys.argv[1:3]
del sys.argv[1:3]
EMU = None
STREAM = None
CA = os.path.join(CERTS, "ca.pem")
MAX_MESSAGE = 256 * 1024  # IoT Hub's device-to-cloud limit


def setUpModule():
    global EMU, STREAM
    EMU = Emulator(BINARY, CERTS)
    STREAM = StreamReader(EMU)


def tearDownModule():
    STREAM.stop()
    EMU.stop()
    EMU.log.close()


def user_name(device, module=None, host=HOST):
    return mqtt_lib.user_name(device, module, host)


events_topic = mqtt_lib.events_topic


def new_id(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------- the telemetry stream

def annotations(m):
    return {str(k): v for k, v in (m.annotations or {}).items()}


# ---------------------------------------------------------------------- paho

class Paho(mqtt_lib.Paho):
    """mqtt_lib's client, on the emulator's MQTT endpoints by default."""

    def __init__(self, client_id, user=None, password=None, port=None, **kw):
        if port is None:
            port = EMU.wss if kw.get("transport") == "websockets" else EMU.mqtts
        super().__init__(client_id, user, password, port=port, ca=CA, **kw)

    @classmethod
    def device(cls, device, module=None, token=None, emu=None, **kw):
        """Connected as the device (or module) with its own SAS token; CONNACK 0 checked."""
        emu = emu or EMU
        if token is None:
            token = module_token(device, module) if module else device_token(device)
        client_id = f"{device}/{module}" if module else device
        if "port" not in kw:
            kw["port"] = emu.wss if kw.get("transport") == "websockets" else emu.mqtts
        p = cls(client_id, user_name(device, module), token, **kw)
        rc, _ = p.connack()
        assert rc == 0, f"{client_id}: CONNACK {rc}"
        return p


def assert_alive(test, bystander, device="dev2"):
    """The bystander is still connected and its telemetry is still acknowledged."""
    test.assertFalse(bystander.closed.is_set(), "the bystander's connection was closed")
    mid = new_id("bystander")
    test.assertTrue(bystander.publish(events_topic(device, f"%24.mid={mid}"), b"still here"),
                    "the bystander's telemetry got no PUBACK")
    STREAM.get(mid)


# ---------------------------------------------------------------------- a hand-made client

mqtt_str, packet, connect_packet = mqtt_lib.mqtt_str, mqtt_lib.packet, mqtt_lib.connect_packet


def subscribe_packet(packet_id, *filters, qos=1):
    return packet(0x82, packet_id.to_bytes(2, "big") + b"".join(mqtt_str(f) + bytes([qos]) for f in filters))


def publish_packet(topic, payload=b"", qos=0, packet_id=1):
    return packet(0x30 | qos << 1, mqtt_str(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload)


def puback_packet(packet_id):
    return packet(0x40, packet_id.to_bytes(2, "big"))


PINGREQ, DISCONNECT = b"\xc0\x00", b"\xe0\x00"


class Raw:
    """MQTT 3.1.1 bytes over TLS, written and read by hand."""

    def __init__(self, port=None, emu=None):
        ctx = ssl.create_default_context(cafile=CA)
        s = socket.create_connection(("127.0.0.1", port or (emu or EMU).mqtts), timeout=10)
        self.sock = ctx.wrap_socket(s, server_hostname="localhost")
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _take(self):
        if len(self.buf) < 2:
            return None
        n, shift, i = 0, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            n |= (self.buf[i] & 0x7f) << shift
            shift += 7
            i += 1
            if not self.buf[i - 1] & 0x80:
                break
        if len(self.buf) < i + n:
            return None
        first, body, self.buf = self.buf[0], self.buf[i:i + n], self.buf[i + n:]
        return first, body

    def packet(self, timeout=5):
        """The next packet as (first byte, body); None when the hub closed the connection;
        AssertionError when nothing came within timeout seconds."""
        end = time.time() + timeout
        while True:
            p = self._take()
            if p:
                return p
            left = end - time.time()
            if left <= 0:
                raise AssertionError("nothing from the hub within %.1f s" % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionError, ssl.SSLError):
                return None
            if not chunk:
                return None
            self.buf += chunk

    def connect(self, client_id, user=None, password=None, **kw):
        """Send CONNECT; (return code, session present) of the CONNACK."""
        self.send(connect_packet(client_id, user, password, **kw))
        p = self.packet()
        assert p and p[0] == 0x20 and len(p[1]) == 2, f"expected a CONNACK, got {p!r}"
        return p[1][1], p[1][0] & 1

    def connect_as(self, device, **kw):
        rc, sp = self.connect(device, user_name(device), device_token(device), **kw)
        assert rc == 0, f"CONNACK {rc}"
        return sp

    def closed_silently(self, timeout=5):
        """Did the hub close the connection within timeout, sending nothing first?"""
        try:
            p = self.packet(timeout)
        except AssertionError:
            return False
        assert p is None, f"the hub answered {p!r} before closing"
        return True

    def close(self):
        self.sock.close()


def parse_publish(first, body):
    assert first >> 4 == 3, f"not a PUBLISH: {first:#x}"
    qos, n = (first >> 1) & 3, int.from_bytes(body[:2], "big")
    topic, rest = body[2:2 + n].decode(), body[2 + n:]
    packet_id = None
    if qos:
        packet_id, rest = int.from_bytes(rest[:2], "big"), rest[2:]
    return {"topic": topic, "qos": qos, "dup": bool(first & 8), "retain": bool(first & 1), "id": packet_id,
            "payload": rest}


def bag(topic, prefix):
    """The property bag after prefix, decoded: {name: value}."""
    assert topic.startswith(prefix), topic
    out = {}
    for item in topic[len(prefix):].split("&"):
        if item:
            k, _, v = item.partition("=")
            out[urllib.parse.unquote(k)] = urllib.parse.unquote(v)
    return out


def call_method(emu, device, body, result):
    """A REST method call in a thread; result gets ((status, headers, body), seconds)."""
    def run():
        t0 = time.time()
        result["r"] = (emu.rest("POST", f"/twins/{device}/methods", body), time.time() - t0)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def c2d_service(emu):
    """A service connection with a C2D sender and a feedback receiver."""
    svc = connect(emu)
    assert Cbs(svc).put(owner_token(), audience=HOST)[0] == 200
    return svc, svc.create_sender("/messages/devicebound"), svc.create_receiver("/messages/serviceBound/feedback",
                                                                                credit=10)


def feedback_for(feedback, mid, timeout=10):
    """The feedback record of message mid (others are skipped)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            m = feedback.receive(timeout=max(0.1, end - time.time()))
        except Exception:
            break
        feedback.accept()
        for r in json.loads(bytes(m.body)):
            if r["originalMessageId"] == mid:
                return r
    raise AssertionError(f"no feedback record for {mid}")


# ====================================================================== tests

class Telemetry(unittest.TestCase):
    def setUp(self):
        self.dev = Paho.device("dev1")

    def tearDown(self):
        self.dev.stop()

    def test_qos0_and_qos1_with_property_bag(self):
        m0, m1 = new_id("qos0"), new_id("qos1")
        self.assertTrue(self.dev.publish(events_topic("dev1", f"%24.mid={m0}&%24.ct=text%2Fplain&k=0"), b"zero",
                                         qos=0))
        # every system property, as the SDKs write them ($ as %24), and app properties
        # with escapes; one trailing '/' as the C# SDK adds it
        bag_text = (f"%24.mid={m1}&%24.cid=corr-7&%24.uid=someone&%24.to=%2Fsomewhere&"
                    "%24.ct=application%2Fjson%3Bcharset%3Dutf-8&%24.ce=utf-8&%24.ctime=2026-01-02T03%3A04%3A05Z&"
                    "%24.exp=2030-01-01T00%3A00%3A00Z&%24.ifid=urn%3Ax&color=blue&with%20space=a%2Fb%26c/")
        self.assertTrue(self.dev.publish(events_topic("dev1", bag_text), b'{"t":21.5}', qos=1),
                        "no PUBACK for QoS 1 telemetry")
        first = STREAM.get(m0)
        self.assertEqual((bytes(first.body), first.content_type, first.properties), (b"zero", "text/plain",
                                                                                      {"k": "0"}))
        m = STREAM.get(m1)
        self.assertEqual(bytes(m.body), b'{"t":21.5}')
        self.assertEqual(m.correlation_id, "corr-7")
        self.assertEqual(bytes(m.user_id), b"someone")
        self.assertEqual(m.address, "/somewhere")
        self.assertEqual(m.content_type, "application/json;charset=utf-8")
        self.assertEqual(m.content_encoding, "utf-8")
        # $.ctime becomes an application property; $.exp and $.ifid are not carried
        self.assertEqual(m.properties, {"iothub-creation-time-utc": "2026-01-02T03:04:05Z", "color": "blue",
                                        "with space": "a/b&c"})
        ann = annotations(m)
        self.assertEqual(ann["iothub-connection-device-id"], "dev1")
        self.assertNotIn("iothub-connection-module-id", ann)
        self.assertIn("iothub-enqueuedtime", ann)
        self.assertIn('"scope":"device"', ann["iothub-connection-auth-method"])

    def test_module_telemetry(self):
        mod = Paho.device("dev3", module="mod1")
        try:
            mid = new_id("mod")
            self.assertTrue(mod.publish(events_topic("dev3", f"%24.mid={mid}&role=filter", module="mod1"), b"m"))
            ann = annotations(STREAM.get(mid))
            self.assertEqual((ann["iothub-connection-device-id"], ann["iothub-connection-module-id"]),
                             ("dev3", "mod1"))
            self.assertEqual(STREAM.get(mid).properties, {"role": "filter"})
        finally:
            mod.stop()

    def test_retain_becomes_mqtt_retain(self):
        kept, plain = new_id("retain"), new_id("noretain")
        self.assertTrue(self.dev.publish(events_topic("dev1", f"%24.mid={kept}&a=1"), b"r", retain=True))
        self.assertTrue(self.dev.publish(events_topic("dev1", f"%24.mid={plain}&a=1"), b"r"))
        self.assertEqual(STREAM.get(kept).properties, {"a": "1", "mqtt-retain": "true"})
        self.assertEqual(STREAM.get(plain).properties, {"a": "1"})

    def test_256kb_accepted_one_byte_more_closes_the_connection(self):
        bystander = Paho.device("dev2")
        try:
            # no property bag: the payload alone is the message's size
            tag = uuid.uuid4().hex.encode()
            body = tag + b"x" * (MAX_MESSAGE - len(tag))
            self.assertTrue(self.dev.publish(events_topic("dev1"), body, timeout=20),
                            "a 256 KB message got no PUBACK:\n" + EMU.log_text()[-1500:])
            m = STREAM.find(lambda m: m.body is not None and bytes(m.body[:32]) == tag, 10)
            self.assertIsNotNone(m, "the 256 KB message is not in the stream")
            self.assertEqual(len(m.body), MAX_MESSAGE)
            tag2 = uuid.uuid4().hex.encode()
            self.assertFalse(self.dev.publish(events_topic("dev1"), tag2 + b"y" * (MAX_MESSAGE + 1 - len(tag2))),
                             "a message over 256 KB was acknowledged")
            self.assertNotEqual(self.dev.wait_closed(), 0)
            self.assertIsNone(STREAM.find(lambda m: m.body is not None and bytes(m.body[:32]) == tag2, 0.5))
            assert_alive(self, bystander)
        finally:
            bystander.stop()


class Connect(unittest.TestCase):
    """Every CONNECT IoT Hub refuses, with its return code; a device connected meanwhile
    goes on being served."""

    def setUp(self):
        self.bystander = Paho.device("dev2")

    def tearDown(self):
        assert_alive(self, self.bystander)
        self.bystander.stop()

    def refused(self, client_id, user, password, protocol=mqtt.MQTTv311):
        p = Paho(client_id, user, password, clean=True, protocol=protocol)
        try:
            rc, sp = p.connack()
            self.assertEqual(sp, 0)
            if rc:
                p.wait_closed(5)  # the hub closes after the refusal
            return rc
        finally:
            p.stop()

    def test_refusals_return_codes(self):
        off = sas_token(f"{HOST}/devices/off", SERVICE_KEY, policy="iothubowner")
        cases = [
            ("wrong key", "dev1", user_name("dev1"), device_token("dev1", key=DEVICE_KEYS["dev2"]), 5),
            ("dev2's token used as dev1", "dev1", user_name("dev1"), device_token("dev2"), 5),
            ("expired token", "dev1", user_name("dev1"), device_token("dev1", expiry=time.time() - 10), 5),
            ("disabled device", "off", user_name("off"), off, 5),
            ("unknown device", "nobody", user_name("nobody"), device_token("nobody", key=DEVICE_KEYS["dev1"]), 5),
            ("module token used for the device", "dev3", user_name("dev3"), module_token("dev3", "mod1"), 5),
            ("device token used for its module", "dev3/mod1", user_name("dev3", "mod1"), device_token("dev3"), 5),
            ("another hub in the user name", "dev1", user_name("dev1", host="other.azure-devices.net"),
             device_token("dev1"), 5),
            ("user name without a device", "dev1", "localhost", device_token("dev1"), 5),
            ("no user name", "dev1", None, None, 5),
            ("user name of another device", "dev1", user_name("dev2"), device_token("dev1"), 5),
            ("client id of another device", "dev2", user_name("dev1"), device_token("dev1"), 5),
            ("empty client id", "", user_name("dev1"), device_token("dev1"), 5),
            ("no password", "dev1", user_name("dev1"), None, 5),
            ("password not a token", "dev1", user_name("dev1"), "hunter2", 5),
            ("MQTT 3.1 (MQIsdp, level 3)", "dev1", user_name("dev1"), device_token("dev1"), 1),
        ]
        for name, client_id, user, password, code in cases:
            with self.subTest(name):
                protocol = mqtt.MQTTv31 if code == 1 else mqtt.MQTTv311
                self.assertEqual(self.refused(client_id, user, password, protocol), code)
        self.assertIn("refused (CONNACK 5): the user name names another hub (other.azure-devices.net",
                      EMU.log_text())
        self.assertIn("refused (CONNACK 1)", EMU.log_text())
        # the same identity connects fine
        Paho.device("dev1").stop()

    def test_mqtt5_connect_gets_connack_1(self):
        raw = Raw()
        try:
            rc, sp = raw.connect("dev1", user_name("dev1"), device_token("dev1"), level=5)
            self.assertEqual((rc, sp), (1, 0))
            self.assertTrue(raw.closed_silently())
        finally:
            raw.close()

    def test_mosquitto_pub_refused_and_accepted(self):
        mid = new_id("mosq")
        base = ["mosquitto_pub", "-h", "localhost", "-p", str(EMU.mqtts), "--cafile", CA, "-V", "mqttv311",
                "-i", "dev1", "-u", user_name("dev1"), "-q", "1",
                "-t", events_topic("dev1", f"%24.mid={mid}&by=mosquitto"), "-m", "hello from mosquitto"]
        r = subprocess.run(base + ["-P", device_token("dev1", key=DEVICE_KEYS["dev3"])], capture_output=True,
                           text=True, timeout=20)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not authorised", (r.stderr + r.stdout).lower())
        r = subprocess.run(base + ["-P", device_token("dev1")], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = STREAM.get(mid)
        self.assertEqual((bytes(m.body), m.properties), (b"hello from mosquitto", {"by": "mosquitto"}))


class Violations(unittest.TestCase):
    """What IoT Hub does not serve ends that connection, with no answer; the bystander
    goes on."""

    def setUp(self):
        self.bystander = Paho.device("dev2")

    def tearDown(self):
        assert_alive(self, self.bystander)
        self.bystander.stop()

    def closes(self, action, device="dev1", module=None, logged=None):
        p = Paho.device(device, module=module)
        try:
            result = action(p)
            self.assertNotEqual(p.wait_closed(5), 0)
            if logged:
                EMU.wait_for_log(logged, 5)
            return result
        finally:
            p.stop()

    def test_paho_violations(self):
        with self.subTest("PUBLISH QoS 2"):
            self.assertFalse(self.closes(lambda p: p.publish(events_topic("dev1"), b"q2", qos=2, timeout=3),
                                         logged="PUBLISH with QoS 2"))
        with self.subTest("PUBLISH to an unknown topic"):
            self.assertFalse(self.closes(lambda p: p.publish("sensors/temperature", b"x", timeout=3),
                                         logged="topic 'sensors/temperature' is not one IoT Hub serves"))
        with self.subTest("PUBLISH to another device's topic"):
            mid = new_id("other")
            self.assertFalse(self.closes(lambda p: p.publish(events_topic("dev2", f"%24.mid={mid}"), b"x", timeout=3),
                                         logged="PUBLISH to another identity's topic devices/dev2/"))
            self.assertTrue(STREAM.absent(mid, 0.3))
        with self.subTest("PUBLISH to an unknown $iothub topic"):
            self.assertFalse(self.closes(lambda p: p.publish("$iothub/twin/DELETE/?$rid=1", b"", timeout=3)))
        for name, device, module, topic in [
                ("SUBSCRIBE to an unknown filter", "dev1", None, "devices/dev1/messages/events/#"),
                ("SUBSCRIBE to everything", "dev1", None, "#"),
                ("SUBSCRIBE to another device's C2D", "dev1", None, "devices/dev2/messages/devicebound/#"),
                ("a module SUBSCRIBEs to C2D", "dev3", "mod1", "devices/dev3/messages/devicebound/#")]:
            with self.subTest(name):
                def sub(p):
                    with self.assertRaises(AssertionError):
                        p.subscribe(topic, timeout=3)
                self.closes(sub, device, module, logged=f"SUBSCRIBE {topic}")

    def test_raw_violations(self):
        cases = [("PUBREC", packet(0x50, b"\x00\x01")), ("PUBREL", packet(0x62, b"\x00\x01")),
                 ("PUBCOMP", packet(0x70, b"\x00\x01")),
                 ("second CONNECT", connect_packet("dev1", user_name("dev1"), device_token("dev1")))]
        for name, data in cases:
            with self.subTest(name):
                raw = Raw()
                try:
                    raw.connect_as("dev1")
                    raw.send(data)
                    self.assertTrue(raw.closed_silently(), f"{name}: the connection stayed open")
                finally:
                    raw.close()
        for name, data in [("PINGREQ before CONNECT", PINGREQ),
                           ("SUBSCRIBE before CONNECT", subscribe_packet(1, "$iothub/methods/POST/#")),
                           ("PUBLISH before CONNECT", publish_packet(events_topic("dev1"), b"x"))]:
            with self.subTest(name):
                raw = Raw()
                try:
                    raw.send(data)
                    self.assertTrue(raw.closed_silently(), f"{name}: the connection stayed open")
                finally:
                    raw.close()
        self.assertIn("a second CONNECT: closing the connection", EMU.log_text())
        self.assertIn("PINGREQ before CONNECT", EMU.log_text())


class Methods(unittest.TestCase):
    def test_round_trip(self):
        dev = Paho.device("dev1")
        try:
            self.assertEqual(dev.subscribe("$iothub/methods/POST/#", qos=0), (0,))
            result = {}
            t = call_method(EMU, "dev1", {"methodName": "reboot", "payload": {"delay": 5},
                                          "responseTimeoutInSeconds": 10}, result)
            req = dev.message(15)
            self.assertIsNotNone(req, "no method request")
            m = re.fullmatch(r"\$iothub/methods/POST/reboot/\?\$rid=([0-9a-f]+)", req.topic)
            self.assertIsNotNone(m, req.topic)
            self.assertEqual(json.loads(req.payload), {"delay": 5})
            self.assertTrue(dev.publish(f"$iothub/methods/res/201/?$rid={m.group(1)}", b'{"rebooting":true}',
                                        qos=1))
            t.join(20)
            (status, _, body), _ = result["r"]
            self.assertEqual((status, body), (200, {"status": 201, "payload": {"rebooting": True}}))
        finally:
            dev.stop()

    def test_unanswered_times_out_and_unsubscribed_is_not_online(self):
        quiet, unsubscribed = Paho.device("dev1"), Paho.device("dev2")
        try:
            quiet.subscribe("$iothub/methods/POST/#")
            slow, absent = {}, {}
            t1 = call_method(EMU, "dev1", {"methodName": "slow", "responseTimeoutInSeconds": 5}, slow)
            t2 = call_method(EMU, "dev2", {"methodName": "x", "responseTimeoutInSeconds": 5,
                                           "connectTimeoutInSeconds": 2}, absent)
            self.assertIsNotNone(quiet.message(10), "the method request never came")
            t1.join(20)
            t2.join(20)
            (status, headers, _), took = slow["r"]
            self.assertEqual((status, headers.get("iothub-errorcode")), (504, "GatewayTimeout"))
            self.assertGreater(took, 4.5)
            # connected but not subscribed to methods: waited for it to come online
            (status, headers, _), took = absent["r"]
            self.assertEqual((status, headers.get("iothub-errorcode")), (404, "DeviceNotOnline"))
            self.assertGreater(took, 1.8)
            self.assertIsNone(unsubscribed.message(0.1))
            self.assertFalse(quiet.closed.is_set() or unsubscribed.closed.is_set())
        finally:
            quiet.stop()
            unsubscribed.stop()


class Twin(unittest.TestCase):
    def setUp(self):
        self.dev = Paho.device("dev1")

    def tearDown(self):
        self.dev.stop()

    def answer(self, rid, timeout=10):
        m = self.dev.message(timeout)
        self.assertIsNotNone(m, f"no twin response for $rid={rid}")
        mm = re.fullmatch(r"\$iothub/twin/res/(\d+)/\?\$rid=([^&]+)(?:&\$version=(\d+))?", m.topic)
        self.assertIsNotNone(mm, m.topic)
        self.assertEqual(mm.group(2), rid)
        return int(mm.group(1)), (int(mm.group(3)) if mm.group(3) else None), m.payload

    def test_get_patch_reported_and_bad_json(self):
        self.dev.subscribe("$iothub/twin/res/#", qos=0)
        self.dev.publish("$iothub/twin/GET/?$rid=get-1", b" ", qos=0)
        status, version, body = self.answer("get-1")
        self.assertEqual((status, version), (200, None))
        doc = json.loads(body)
        self.assertEqual(set(doc), {"desired", "reported"})
        self.assertIsInstance(doc["desired"]["$version"], int)
        reported_version = doc["reported"]["$version"]
        value = uuid.uuid4().hex
        self.assertTrue(self.dev.publish("$iothub/twin/PATCH/properties/reported/?$rid=patch-2",
                                         json.dumps({"fw": value}).encode(), qos=1))
        status, version, body = self.answer("patch-2")
        self.assertEqual((status, version, body), (204, reported_version + 1, b""))
        status, _, twin = EMU.rest("GET", "/twins/dev1")
        self.assertEqual(twin["properties"]["reported"]["fw"], value)
        self.assertEqual(twin["properties"]["reported"]["$version"], reported_version + 1)
        self.dev.publish("$iothub/twin/PATCH/properties/reported/?$rid=bad-3", b"{not json", qos=0)
        status, version, body = self.answer("bad-3")
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(body)["errorCode"], 400004)
        self.assertFalse(self.dev.closed.is_set())
        self.assertEqual(EMU.rest("GET", "/twins/dev1")[2]["properties"]["reported"]["$version"],
                         reported_version + 1)

    def test_no_response_without_the_subscription(self):
        other = Paho.device("dev2")
        try:
            value = uuid.uuid4().hex
            other.publish("$iothub/twin/GET/?$rid=1", b"", qos=0)
            self.assertTrue(other.publish("$iothub/twin/PATCH/properties/reported/?$rid=2",
                                          json.dumps({"quiet": value}).encode(), qos=1))
            self.assertIsNone(other.message(1.0), "the hub answered a device not subscribed to $iothub/twin/res/#")
            # the patch was applied all the same
            self.assertEqual(EMU.rest("GET", "/twins/dev2")[2]["properties"]["reported"]["quiet"], value)
            other.subscribe("$iothub/twin/res/#", qos=0)
            other.publish("$iothub/twin/GET/?$rid=3", b"", qos=0)
            m = other.message(10)
            self.assertIsNotNone(m)
            self.assertEqual(m.topic, "$iothub/twin/res/200/?$rid=3")
        finally:
            other.stop()

    def test_desired_pushed_after_rest_patch(self):
        self.dev.subscribe("$iothub/twin/PATCH/properties/desired/#", qos=0)
        status, _, twin = EMU.rest("PATCH", "/twins/dev1", {"properties": {"desired": {"interval": 30}}})
        self.assertEqual(status, 200)
        v = twin["properties"]["desired"]["$version"]
        m = self.dev.message(10)
        self.assertIsNotNone(m, "no desired push")
        self.assertEqual(m.topic, f"$iothub/twin/PATCH/properties/desired/?$version={v}")
        self.assertEqual(json.loads(m.payload), {"interval": 30, "$version": v})


class C2d(unittest.TestCase):
    C2D = "devices/dev1/messages/devicebound/"

    def test_properties_in_the_topic_and_puback_completes(self):
        svc, sender, feedback = c2d_service(EMU)
        dev = Paho.device("dev1")
        try:
            self.assertEqual(dev.subscribe(self.C2D + "#", qos=1), (1,))
            mid = new_id("c2d")
            sender.send(Message(address="/devices/dev1/messages/devicebound", id=mid, correlation_id="corr-9",
                                content_type="text/plain", content_encoding="utf-8", body=b"hello device",
                                properties={"iothub-ack": "full", "color": "red", "path": "a/b c"}))
            m = dev.message(10)
            self.assertIsNotNone(m, "no C2D message")
            self.assertEqual((m.qos, m.payload), (1, b"hello device"))
            raw_bag = m.topic[len(self.C2D):]
            self.assertTrue(raw_bag.startswith("%24.mid="), m.topic)  # $ sent as %24, as IoT Hub
            self.assertIn("%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound", raw_bag)  # '/' escaped
            self.assertEqual(bag(m.topic, self.C2D), {
                "$.mid": mid, "$.cid": "corr-9", "$.to": "/devices/dev1/messages/devicebound", "$.ct": "text/plain",
                "$.ce": "utf-8", "iothub-ack": "full", "color": "red", "path": "a/b c"})
            # paho acknowledged it at once: completed, so positive feedback, and no second delivery
            self.assertEqual(feedback_for(feedback, mid)["statusCode"], "Success")
            self.assertIsNone(dev.message(0.5))
        finally:
            dev.stop()
            svc.close()

    def test_without_iothub_ack_the_topic_says_none(self):
        """IoT Hub always names the acknowledgement asked for: iothub-ack=none when the
        service asked for none."""
        svc, sender, _ = c2d_service(EMU)
        dev = Paho.device("dev1")
        try:
            self.assertEqual(dev.subscribe(self.C2D + "#", qos=2), (1,))  # IoT Hub grants QoS 1 at most
            mid = new_id("noack")
            sender.send(Message(address="/devices/dev1/messages/devicebound", id=mid, body=b"x"))
            m = dev.message(10)
            self.assertIsNotNone(m)
            self.assertEqual(bag(m.topic, self.C2D), {"$.mid": mid, "$.to": "/devices/dev1/messages/devicebound",
                                                      "iothub-ack": "none"})
        finally:
            dev.stop()
            svc.close()

    def test_mosquitto_sub_gets_a_queued_message(self):
        svc, sender, _ = c2d_service(EMU)
        try:
            mid = new_id("queued")
            sender.send(Message(address="/devices/dev3/messages/devicebound", id=mid, body=b"for mosquitto",
                                properties={"k": "v"}))
            r = subprocess.run(["mosquitto_sub", "-h", "localhost", "-p", str(EMU.mqtts), "--cafile", CA,
                                "-V", "mqttv311", "-i", "dev3", "-u", user_name("dev3"), "-P", device_token("dev3"),
                                "-t", "devices/dev3/messages/devicebound/#", "-q", "1", "-C", "1", "-v", "-W", "10"],
                               capture_output=True, text=True, timeout=20)
            self.assertEqual(r.returncode, 0, r.stderr)
            topic, _, payload = r.stdout.strip().partition(" ")
            self.assertEqual(payload, "for mosquitto")
            self.assertEqual(bag(topic, "devices/dev3/messages/devicebound/")["$.mid"], mid)
            self.assertEqual(bag(topic, "devices/dev3/messages/devicebound/")["k"], "v")
        finally:
            svc.close()


class C2dLock(unittest.TestCase):
    """--c2d-lock-timeout 1: a PUBLISH the device does not acknowledge comes again, DUP set."""

    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator(BINARY, CERTS, extra=["--c2d-lock-timeout", "1"])

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()
        cls.emu.log.close()

    def test_redelivered_with_dup_until_acknowledged(self):
        svc, sender, feedback = c2d_service(self.emu)
        raw = Raw(emu=self.emu)
        try:
            raw.connect_as("dev1")
            raw.send(subscribe_packet(1, "devices/dev1/messages/devicebound/#"))
            self.assertEqual(raw.packet(), (0x90, b"\x00\x01\x01"))  # SUBACK, QoS 1 granted
            mid = new_id("held")
            sender.send(Message(address="/devices/dev1/messages/devicebound", id=mid, body=b"held",
                                properties={"iothub-ack": "full"}))
            first = parse_publish(*raw.packet(10))
            t0 = time.time()
            self.assertEqual((first["qos"], first["dup"], first["payload"]), (1, False, b"held"))
            again = parse_publish(*raw.packet(5))  # no PUBACK sent: after the 1 s lock it comes again
            self.assertGreater(time.time() - t0, 0.8)
            self.assertEqual((again["qos"], again["dup"], again["payload"], again["topic"]),
                             (1, True, b"held", first["topic"]))
            raw.send(puback_packet(again["id"]))
            self.assertEqual(feedback_for(feedback, mid)["statusCode"], "Success")
            with self.assertRaises(AssertionError):
                raw.packet(2)  # completed: not sent a third time
        finally:
            raw.close()
            svc.close()

    def test_unacknowledged_comes_again_on_the_next_connection(self):
        svc, sender, _ = c2d_service(self.emu)
        try:
            raw = Raw(emu=self.emu)
            raw.connect_as("dev2")
            raw.send(subscribe_packet(1, "devices/dev2/messages/devicebound/#"))
            raw.packet()
            mid = new_id("lost")
            sender.send(Message(address="/devices/dev2/messages/devicebound", id=mid, body=b"again"))
            self.assertFalse(parse_publish(*raw.packet(10))["dup"])
            raw.send(DISCONNECT)
            raw.close()
            dev = Paho.device("dev2", emu=self.emu)
            try:
                dev.subscribe("devices/dev2/messages/devicebound/#")
                m = dev.message(10)
                self.assertIsNotNone(m)
                self.assertEqual((m.payload, m.dup, bag(m.topic, "devices/dev2/messages/devicebound/")["$.mid"]),
                                 (b"again", 1, mid))
            finally:
                dev.stop()
        finally:
            svc.close()


class Will(unittest.TestCase):
    def test_will_on_abrupt_close_not_after_disconnect(self):
        lost, ended = new_id("will"), new_id("nowill")
        raw = Raw()
        raw.connect_as("dev1", will=(events_topic("dev1", f"%24.mid={lost}&reason=gone"), b"device lost"))
        raw.close()  # no DISCONNECT
        m = STREAM.get(lost)
        self.assertEqual(bytes(m.body), b"device lost")
        self.assertEqual(m.properties, {"reason": "gone", "iothub-MessageType": "Will"})
        self.assertEqual(annotations(m)["iothub-connection-device-id"], "dev1")
        raw = Raw()
        raw.connect_as("dev1", will=(events_topic("dev1", f"%24.mid={ended}"), b"should not go"))
        raw.send(DISCONNECT)
        self.assertTrue(raw.closed_silently())
        raw.close()
        self.assertTrue(STREAM.absent(ended, 1.0), "a will was sent after DISCONNECT")

    def test_paho_will_on_lost_connection(self):
        """paho's will_set, as a user writes it: the will goes when the hub loses the
        connection (here: paho's socket shut down under it)."""
        mid = new_id("pahowill")
        dev = Paho.device("dev3", will=(events_topic("dev3", f"%24.mid={mid}"), b"paho gone", 0))
        try:
            dev.client.socket().shutdown(socket.SHUT_RDWR)
            self.assertEqual(bytes(STREAM.get(mid).body), b"paho gone")
            self.assertEqual(STREAM.get(mid).properties["iothub-MessageType"], "Will")
        finally:
            dev.stop()


class KeepAlive(unittest.TestCase):
    def test_silent_client_closed_after_one_and_a_half_keep_alives(self):
        mid = new_id("kawill")
        raw = Raw()
        try:
            raw.connect_as("dev1", keepalive=1, will=(events_topic("dev1", f"%24.mid={mid}"), b"timed out"))
            t0 = time.time()
            self.assertTrue(raw.closed_silently(5), "a silent client with keep-alive 1 s stayed connected")
            took = time.time() - t0
            self.assertGreater(took, 1.4)
            self.assertLess(took, 3.5)
        finally:
            raw.close()
        self.assertIn("keep-alive expired", EMU.log_text())
        self.assertEqual(STREAM.get(mid).properties, {"iothub-MessageType": "Will"})  # the connection was lost

    def test_pings_keep_it_open(self):
        raw = Raw()
        try:
            raw.connect_as("dev1", keepalive=1)
            end = time.time() + 3
            while time.time() < end:
                raw.send(PINGREQ)
                self.assertEqual(raw.packet(), (0xd0, b""))  # PINGRESP
                time.sleep(0.5)
        finally:
            raw.close()


class Sessions(unittest.TestCase):
    def test_persistent_session_keeps_subscriptions(self):
        Paho.device("dev3").stop()  # clean session: whatever was kept is gone
        dev = Paho("dev3", user_name("dev3"), device_token("dev3"), clean=False)
        self.assertEqual(dev.connack(), (0, 0))
        dev.subscribe("$iothub/methods/POST/#")
        dev.stop()
        dev = Paho("dev3", user_name("dev3"), device_token("dev3"), clean=False)
        try:
            self.assertEqual(dev.connack(), (0, 1))  # session present
            result = {}
            t = call_method(EMU, "dev3", {"methodName": "kept", "responseTimeoutInSeconds": 10}, result)
            req = dev.message(10)
            self.assertIsNotNone(req, "the kept subscription delivered no method")
            rid = req.topic.split("$rid=")[1]
            dev.publish(f"$iothub/methods/res/200/?$rid={rid}", b'"ok"', qos=0)
            t.join(20)
            self.assertEqual(result["r"][0][2], {"status": 200, "payload": "ok"})
        finally:
            dev.stop()
        dev = Paho("dev3", user_name("dev3"), device_token("dev3"), clean=True)
        try:
            self.assertEqual(dev.connack(), (0, 0))
            status, headers, _ = EMU.rest("POST", "/twins/dev3/methods", {"methodName": "gone"})
            self.assertEqual((status, headers.get("iothub-errorcode")), (404, "DeviceNotOnline"))
        finally:
            dev.stop()


class NewestWins(unittest.TestCase):
    def test_second_mqtt_connection_closes_the_first(self):
        first = Paho.device("dev1")
        second = Paho.device("dev1")
        try:
            self.assertNotEqual(first.wait_closed(5), 0)
            mid = new_id("second")
            self.assertTrue(second.publish(events_topic("dev1", f"%24.mid={mid}")))
            STREAM.get(mid)
            self.assertIn("replaces conn", EMU.log_text())
        finally:
            first.stop()
            second.stop()

    def test_amqp_takes_over_from_mqtt_and_back(self):
        dev = Paho.device("dev1")
        conn = connect(EMU)
        try:
            self.assertEqual(Cbs(conn).put(device_token("dev1"))[0], 200)
            sender = conn.create_sender("/devices/dev1/messages/events")
            self.assertNotEqual(dev.wait_closed(5), 0)
            sender.send(Message(id="amqp-after-mqtt", body=b"a"))
            back = Paho.device("dev1")
            try:
                self.assertEqual(wait_detached(conn, sender), "com.microsoft:link-creation-conflict")
                mid = new_id("mqtt-back")
                self.assertTrue(back.publish(events_topic("dev1", f"%24.mid={mid}")))
                STREAM.get(mid)
            finally:
                back.stop()
        finally:
            dev.stop()
            conn.close()


class WebSocket(unittest.TestCase):
    def test_telemetry_and_method_over_websocket(self):
        dev = Paho.device("dev1", transport="websockets")
        try:
            mid = new_id("ws")
            self.assertTrue(dev.publish(events_topic("dev1", f"%24.mid={mid}&via=ws"), b"over websocket"))
            m = STREAM.get(mid)
            self.assertEqual((bytes(m.body), m.properties), (b"over websocket", {"via": "ws"}))
            dev.subscribe("$iothub/methods/POST/#")
            result = {}
            t = call_method(EMU, "dev1", {"methodName": "wsping", "payload": [1, 2],
                                          "responseTimeoutInSeconds": 10}, result)
            req = dev.message(10)
            self.assertIsNotNone(req)
            self.assertEqual(json.loads(req.payload), [1, 2])
            rid = req.topic.split("$rid=")[1]
            dev.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"pong":true}')
            t.join(20)
            self.assertEqual(result["r"][0][2], {"status": 200, "payload": {"pong": True}})
            self.assertIn("MQTT dev1: connected (WebSocket", EMU.log_text())
        finally:
            dev.stop()


class Faults(unittest.TestCase):
    """iothub-emulator --admin: refused connections get CONNACK 3; dropped ones close."""

    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator(BINARY, CERTS, extra=["--admin"])

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()
        cls.emu.log.close()

    def admin(self, path, body=None, method="POST"):
        status, _, answer = self.emu.rest(method, "/admin/" + path, body)
        self.assertEqual(status, 200, answer)

    def tearDown(self):
        self.admin("faults", method="DELETE")

    def test_refuse_connections_connack_3(self):
        bystander = Paho.device("dev2", emu=self.emu)
        try:
            self.admin("refuse-connections", {"seconds": 2})
            t0 = time.time()
            p = Paho("dev1", user_name("dev1"), device_token("dev1"), port=self.emu.mqtts)
            try:
                self.assertEqual(p.connack(), (3, 0))
                p.wait_closed(5)
            finally:
                p.stop()
            self.assertFalse(bystander.closed.is_set())
            self.assertTrue(bystander.publish(events_topic("dev2"), b"during"))
            time.sleep(max(0, 2.2 - (time.time() - t0)))
            Paho.device("dev1", emu=self.emu).stop()
        finally:
            bystander.stop()

    def test_drop_connections(self):
        devs = [Paho.device("dev1", emu=self.emu), Paho.device("dev2", emu=self.emu, transport="websockets")]
        try:
            self.admin("drop-connections")
            for d in devs:
                self.assertNotEqual(d.wait_closed(5), 0)
            self.assertIn("dropped by fault injection", self.emu.log_text())
            Paho.device("dev1", emu=self.emu).stop()  # and new ones are served
        finally:
            for d in devs:
                d.stop()

    def test_token_faults(self):
        bystander = Paho.device("dev2", emu=self.emu)
        try:
            self.admin("tokens", {"device": "dev1", "action": "reject"})
            p = Paho("dev1", user_name("dev1"), device_token("dev1"), port=self.emu.mqtts)
            self.assertEqual(p.connack()[0], 5)
            p.stop()
            self.admin("tokens", {"device": "dev1", "action": "accept"})
            dev = Paho.device("dev1", emu=self.emu)
            try:
                self.admin("tokens", {"device": "dev1", "action": "expire"})
                self.assertNotEqual(dev.wait_closed(5), 0)
            finally:
                dev.stop()
            self.assertFalse(bystander.closed.is_set())
            self.assertTrue(bystander.publish(events_topic("dev2"), b"unaffected"))
        finally:
            bystander.stop()


if __name__ == "__main__":
    run_tests()
