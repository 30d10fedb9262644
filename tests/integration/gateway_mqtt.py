"""Devices written for IoT Hub's MQTT, unchanged, through iotgw (devices.mqtt,
docs/sdk-devices.md): Debian's python3-paho-mqtt and mosquitto_pub connect to the
gateway as they would to the hub (user name {hub}/{device}/?api-version=..., the
device's SAS token as password), and iothub-emulator, as the hub, sees each one as its
own identity on the gateway's one upstream connection: its telemetry in the stream
(python3-qpid-proton), direct methods and twins from the service REST API, C2D from the
service's AMQP sender. A test device speaking the gateway's protobuf protocol
(device_lib) shares the gateway. Every refusal is checked with its CONNACK code and
the gateway's log line, and a bystander device must keep being served.

usage: gateway_mqtt.py IOTHUB_EMULATOR IOTGW SCHEMAS_DESC CERT_DIR [Class.test ...]"""
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

import paho.mqtt.client as mqtt
from proton import Message

from iotgw_testlib import WRAPPER, LoggedProcess, readline_within, run_tests
from emulator_lib import Cbs, Emulator, HOST, StreamReader, connect, fleet_registry, owner_token, random_key, sas_token
from device_lib import Device, T, load_schemas
import mqtt_lib
from mqtt_lib import events_topic

EMULATOR, IOTGW, SCHEMAS, CERTS = sys.argv[1:5]
del sys.argv[1:5]
load_schemas(SCHEMAS)
CA = os.path.join(CERTS, "ca.pem")
DEVICES = ["sdk1", "sdk2", "sdk3", "both1", "busy1", "pb1", "hubdisabled1", "rekey1", "test-device"]
KEYS = {d: random_key() for d in DEVICES + ["notathub1"]}
MAX_IN_FLIGHT = 8
EMU = GW = STREAM = None


class Gateway(LoggedProcess):
    """iotgw with a protobuf listener and an MQTT listener, both TLS."""
    name = "iotgw"

    def __init__(self, hub_port=None, store=None, client_ca=False):
        """hub_port: where the hub is (default the emulator's); store: a store folder;
        client_ca: every device presents a certificate the test CA signed."""
        self.dir = tempfile.mkdtemp(prefix="iotgw-mqtt-test-")
        store_yaml = f"store:\n  path: {store}\n" if store else ""
        self.config = os.path.join(self.dir, "iotgw.yaml")
        fleet = "".join(f"    - id: {d}\n      key: {k}\n" for d, k in KEYS.items())
        with open(self.config, "w") as f:
            f.write(f"""gatewayId: mqtt-test-gw
ops:
  listen: 127.0.0.1:0
hub:
  hostName: {HOST}
  port: {hub_port or EMU.wss}
  caFile: {EMU.ca}
{store_yaml}devices:
  listen: 127.0.0.1:0
  maxInFlight: {MAX_IN_FLIGHT}
  queuePerDevice: {2 * MAX_IN_FLIGHT}
  tls:
    cert: {os.path.join(CERTS, "server.pem")}
    key: {os.path.join(CERTS, "server.key")}
{f"    clientCa: {CA}" if client_ca else ""}
  mqtt:
    listen: 127.0.0.1:0
    webSocketListen: 127.0.0.1:0
fleet:
  devices:
{fleet}""")
        self.log = open(os.path.join(self.dir, "iotgw.log"), "w+")
        self.proc = subprocess.Popen(WRAPPER + [IOTGW, "--config", self.config, "--log-format", "json"],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=dict(os.environ, IOTGW_LOG_BURST="100000"))
        lines = [readline_within(self.proc, 20) for _ in range(4)]
        m = [re.match(r"listening: (devices|mqtt|websocket|ops) \S+:(\d+)$", line) for line in lines]
        assert all(m), f"iotgw's listening lines: {lines}\n{self.log_text()[-3000:]}"
        ports = {x.group(1): int(x.group(2)) for x in m}
        self.port, self.mqtt, self.mqtt_ws, self.ops = ports["devices"], ports["mqtt"], ports["websocket"], ports["ops"]

    def wait_text(self, event, device=None, text=None, timeout=10):
        """A line of event (about device) whose message or fields hold text."""
        return self.wait_event(event, device, lambda e: text is None or text in e.get("message", "") +
                               json.dumps(e.get("fields", {})), timeout)


def setUpModule():
    global EMU, GW, STREAM
    EMU = Emulator(EMULATOR, CERTS, registry=fleet_registry({d: k for d, k in KEYS.items() if d != "notathub1"}))
    GW = Gateway()
    STREAM = StreamReader(EMU)


def tearDownModule():
    try:  # the emulator stops even when the gateway did not exit cleanly (its stop raises)
        STREAM.stop()
        GW.stop()
        GW.log.close()
    finally:
        EMU.stop()
        EMU.log.close()


def token(device, key=None, resource=None, ttl=3600):
    return sas_token(resource or f"{HOST}/devices/{device}", key or KEYS[device], ttl)


def new_id(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Paho(mqtt_lib.Paho):
    def __init__(self, client_id, user=None, password=None, **kw):
        port = GW.mqtt_ws if kw.get("transport") == "websockets" else GW.mqtt
        super().__init__(client_id, user, password, port=port, ca=CA, **kw)

    @classmethod
    def device(cls, device, **kw):
        p = cls(device, mqtt_lib.user_name(device, host=HOST), token(device), **kw)
        rc, _ = p.connack()
        assert rc == 0, f"{device}: CONNACK {rc}\n{GW.log_text()[-2000:]}"
        return p


def annotations(m):
    return {str(k): v for k, v in (m.annotations or {}).items()}


def assert_alive(test, bystander, device):
    test.assertFalse(bystander.closed.is_set(), "the bystander's connection was closed")
    mid = new_id("bystander")
    test.assertTrue(bystander.publish(events_topic(device, f"%24.mid={mid}"), b"still here"),
                    "the bystander's telemetry got no PUBACK")
    STREAM.get(mid)


def call_method(device, body, result):
    def run():
        result["r"] = EMU.rest("POST", f"/twins/{device}/methods", body)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class Telemetry(unittest.TestCase):
    def setUp(self):
        self.dev = Paho.device("sdk1")

    def tearDown(self):
        self.dev.stop()

    def test_qos1_with_properties_reaches_the_hub_as_the_device(self):
        devices = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{GW.ops}/devices", timeout=10).read())
        self.assertIn({"id": "sdk1", "protocol": "mqtt"},
                      [{"id": d["id"], "protocol": d["protocol"]} for d in devices])
        mid = new_id("t1")
        self.assertTrue(self.dev.publish(events_topic("sdk1", f"%24.mid={mid}&%24.ct=application%2Fjson&%24.ce=utf-8"
                                                                f"&alarm=high"), b'{"temp":21}'))
        m = STREAM.get(mid)
        a = annotations(m)
        self.assertEqual(a["iothub-connection-device-id"], "sdk1")
        self.assertEqual(bytes(m.body), b'{"temp":21}')
        self.assertEqual(m.content_type, "application/json")
        self.assertEqual(m.properties.get("alarm"), "high")

    def test_qos0_and_a_burst_past_the_window(self):
        m0 = new_id("q0")
        self.assertTrue(self.dev.publish(events_topic("sdk1", f"%24.mid={m0}"), b"zero", qos=0))
        STREAM.get(m0)
        # more than maxInFlight at once: the gateway stops reading, then goes on; all acknowledged
        infos = [self.dev.client.publish(events_topic("sdk1", f"%24.mid=burst-{i}-{m0}"), b"b%d" % i, qos=1)
                 for i in range(5 * MAX_IN_FLIGHT)]
        end = time.time() + 20
        while time.time() < end and not all(i.is_published() for i in infos):
            time.sleep(0.05)
        self.assertTrue(all(i.is_published() for i in infos), "not every PUBLISH of the burst got its PUBACK")
        for i in range(5 * MAX_IN_FLIGHT):
            STREAM.get(f"burst-{i}-{m0}")
        self.assertFalse(self.dev.closed.is_set())

    def test_over_websocket(self):
        ws = Paho.device("sdk2", transport="websockets")
        try:
            mid = new_id("ws")
            self.assertTrue(ws.publish(events_topic("sdk2", f"%24.mid={mid}"), b"over websocket"))
            self.assertEqual(annotations(STREAM.get(mid))["iothub-connection-device-id"], "sdk2")
            GW.wait_text("device_connected", "sdk2", "MQTT over WebSocket")
        finally:
            ws.stop()

    def test_amqp_over_the_websocket_port_is_served_too(self):
        """An SDK device on AmqpWs shares the port, as at IoT Hub: the WebSocket opens on
        subprotocol AMQPWSB10 and the gateway answers AMQP's header and open with its own
        (tests/interop's node_device_interop runs the SDK's whole AmqpWs scenario)."""
        raw = socket.create_connection(("127.0.0.1", GW.mqtt_ws), timeout=10)
        tls = ssl.create_default_context(cafile=CA).wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"GET /$iothub/websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Protocol: AMQPWSB10\r\nSec-WebSocket-Version: 13\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += tls.recv(4096)
        self.assertTrue(data.startswith(b"HTTP/1.1 101"), data)
        # AMQP's protocol header, then an empty open, in masked binary frames (a client's)
        tls.sendall(bytes([0x82, 0x88, 0, 0, 0, 0]) + b"AMQP\x00\x01\x00\x00")
        opn = bytes.fromhex("00000016020000000053" "10c00901a106646576696365")  # open(container-id "device")
        tls.sendall(bytes([0x82, 0x80 | len(opn), 0, 0, 0, 0]) + opn)
        data = b""
        end = time.time() + 10
        while time.time() < end and b"mqtt-test-gw" not in data:
            try:
                chunk = tls.recv(4096)
            except (ssl.SSLError, OSError):
                break
            if not chunk:
                break
            data += chunk
        tls.close()
        self.assertIn(b"AMQP\x00\x01\x00\x00", data)
        self.assertIn(b"mqtt-test-gw", data)  # the gateway's open: its container id, its gatewayId
        self.assertNotIn(b"amqp:not-implemented", data)

    def test_a_hundred_publishes_in_one_write(self):
        """More than the window in one TLS record: the gateway handles them a window at a
        time (the rest waits unread), so the device's queue bound is never reached; every
        PUBLISH gets its PUBACK, in order."""
        raw = socket.create_connection(("127.0.0.1", GW.mqtt), timeout=10)
        tls = ssl.create_default_context(cafile=CA).wrap_socket(raw, server_hostname="localhost")
        tls.sendall(mqtt_lib.connect_packet("sdk2", mqtt_lib.user_name("sdk2", host=HOST), token("sdk2")))
        self.assertEqual(tls.recv(4), b"\x20\x02\x00\x00")
        topic = mqtt_lib.mqtt_str(events_topic("sdk2"))
        burst = b"".join(mqtt_lib.packet(0x32, topic + i.to_bytes(2, "big") + b"x%d" % i) for i in range(1, 101))
        tls.sendall(burst)
        got = b""
        end = time.time() + 30
        while len(got) < 400 and time.time() < end:
            chunk = tls.recv(4096)
            if not chunk:
                break
            got += chunk
        tls.close()
        ids = [int.from_bytes(got[i + 2:i + 4], "big") for i in range(0, len(got), 4) if got[i] == 0x40]
        self.assertEqual(ids, list(range(1, 101)), got[:80])

    def test_log_lines_never_carry_a_forged_client_id(self):
        """A client id IoT Hub would refuse (here with a line break and a forged line after
        it) is refused, CONNACK 5, and named in no log line."""
        forged = "zz\n2099-01-01T00:00:00.000Z info  device sdk2 connected from 10.0.0.1"
        p = Paho(forged, mqtt_lib.user_name("zz", host=HOST), token("sdk2"))
        try:
            self.assertEqual(p.connack()[0], 5)
            GW.wait_text("device_mqtt_refused", text="the client id is not a device id")
        finally:
            p.stop()
        self.assertNotIn("2099-01-01", GW.log_text())

    def test_mosquitto_pub(self):
        mid = new_id("mosq")
        r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(GW.mqtt), "--cafile", CA, "-V", "mqttv311",
                            "-i", "sdk2", "-u", mqtt_lib.user_name("sdk2", host=HOST), "-P", token("sdk2"), "-q", "1",
                            "-t", events_topic("sdk2", f"%24.mid={mid}"), "-m", "from mosquitto"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = STREAM.get(mid)
        self.assertEqual(annotations(m)["iothub-connection-device-id"], "sdk2")
        self.assertEqual(bytes(m.body), b"from mosquitto")


class Methods(unittest.TestCase):
    def test_direct_method_round_trip(self):
        dev = Paho.device("sdk1")
        try:
            self.assertEqual(dev.subscribe("$iothub/methods/POST/#"), (1,))
            EMU.wait_online("sdk1")
            result = {}
            t = call_method("sdk1", {"methodName": "rebootDevice", "payload": {"delay": 2},
                                     "responseTimeoutInSeconds": 10}, result)
            req = dev.message()
            self.assertIsNotNone(req, "no method request reached the device")
            m = re.fullmatch(r"\$iothub/methods/POST/rebootDevice/\?\$rid=([0-9a-f]+)", req.topic)
            self.assertTrue(m, req.topic)
            self.assertEqual(json.loads(req.payload), {"delay": 2})
            self.assertTrue(dev.publish(f"$iothub/methods/res/200/?$rid={m.group(1)}", b'{"rebootTime":"soon"}'))
            t.join(15)
            status, _, body = result["r"]
            self.assertEqual(status, 200, body)
            self.assertEqual(body, {"status": 200, "payload": {"rebootTime": "soon"}})
            # an answer that is not JSON: the caller gets the gateway's 502, the device stays
            t = call_method("sdk1", {"methodName": "bad", "responseTimeoutInSeconds": 10}, result)
            req = dev.message()
            rid = re.search(r"\$rid=([0-9a-f]+)", req.topic).group(1)
            dev.publish(f"$iothub/methods/res/200/?$rid={rid}", b"not json")
            t.join(15)
            self.assertEqual(result["r"][0], 200, result["r"])
            self.assertEqual(result["r"][2]["status"], 502)
            # an answer to no request is dropped and logged
            dev.publish("$iothub/methods/res/200/?$rid=ffff", b"{}")
            GW.wait_text("method_answer_late", "sdk1")
            self.assertFalse(dev.closed.is_set())
        finally:
            dev.stop()


class Twin(unittest.TestCase):
    def test_get_patch_and_desired(self):
        dev = Paho.device("sdk3")
        try:
            dev.subscribe("$iothub/twin/res/#")
            dev.subscribe("$iothub/twin/PATCH/properties/desired/#")
            EMU.wait_online("sdk3")
            dev.publish("$iothub/twin/GET/?$rid=get-1", b"", qos=0)
            res = dev.message()
            self.assertIsNotNone(res, "no twin answer")
            self.assertEqual(res.topic, "$iothub/twin/res/200/?$rid=get-1")
            doc = json.loads(res.payload)
            self.assertIn("desired", doc)
            self.assertIn("reported", doc)
            dev.publish("$iothub/twin/PATCH/properties/reported/?$rid=p-1", b'{"rebootTime":"2026-12-02T14:00:00Z"}',
                        qos=0)
            res = dev.message()
            self.assertIsNotNone(res, "no answer to the reported patch")
            self.assertTrue(re.fullmatch(r"\$iothub/twin/res/204/\?\$rid=p-1&\$version=\d+", res.topic), res.topic)
            status, _, twin = EMU.rest("GET", "/twins/sdk3")
            self.assertEqual(twin["properties"]["reported"]["rebootTime"], "2026-12-02T14:00:00Z")
            status, _, _ = EMU.rest("PATCH", "/twins/sdk3", {"properties": {"desired": {"interval": 42}}},
                                    headers={"If-Match": "*"})
            self.assertEqual(status, 200)
            upd = dev.message()
            self.assertIsNotNone(upd, "no desired update")
            self.assertTrue(re.fullmatch(r"\$iothub/twin/PATCH/properties/desired/\?\$version=\d+", upd.topic),
                            upd.topic)
            self.assertEqual(json.loads(upd.payload)["interval"], 42)
            # a malformed patch: the hub's 400 reaches the device, which stays connected
            dev.publish("$iothub/twin/PATCH/properties/reported/?$rid=p-2", b"[1,2]", qos=0)
            res = dev.message()
            self.assertIsNotNone(res)
            self.assertTrue(res.topic.startswith("$iothub/twin/res/400/?$rid=p-2"), res.topic)
            self.assertFalse(dev.closed.is_set())
        finally:
            dev.stop()


class C2d(unittest.TestCase):
    def test_c2d_with_long_properties_and_while_unsubscribed(self):
        """A C2D message whose topic (its properties) is long reaches the device; one sent
        while the device is unsubscribed waits, locked, and comes once it subscribes again,
        instead of being given back to the hub until it is dead-lettered."""
        dev = Paho.device("sdk3")
        svc = connect(EMU)
        try:
            self.assertEqual(Cbs(svc).put(owner_token(), audience=HOST)[0], 200)
            sender = svc.create_sender("/messages/devicebound")
            feedback = svc.create_receiver("/messages/serviceBound/feedback", credit=10)
            dev.subscribe("devices/sdk3/messages/devicebound/#")
            long_mid = new_id("c2d-long")
            sender.send(Message(address="/devices/sdk3/messages/devicebound", id=long_mid, body=b"long",
                                properties={"iothub-ack": "full", "note": "n" * 600}))
            msg = dev.message(timeout=15)
            self.assertIsNotNone(msg, "the C2D message with a long property never came")
            self.assertEqual(urllib.parse.parse_qs(msg.topic.split("devicebound/", 1)[1])["note"], ["n" * 600])
            rc, _ = dev.client.unsubscribe("devices/sdk3/messages/devicebound/#")
            time.sleep(0.5)
            kept_mid = new_id("c2d-kept")
            sender.send(Message(address="/devices/sdk3/messages/devicebound", id=kept_mid, body=b"kept",
                                properties={"iothub-ack": "full"}))
            self.assertIsNone(dev.message(timeout=1.5), "a C2D message came while unsubscribed")
            dev.subscribe("devices/sdk3/messages/devicebound/#")
            msg = dev.message(timeout=15)
            self.assertIsNotNone(msg, "the kept C2D message never came")
            self.assertEqual(msg.payload, b"kept")
            records = {}
            end = time.time() + 15
            while time.time() < end and len(records) < 2:
                m = feedback.receive(timeout=max(0.1, end - time.time()))
                feedback.accept()
                records.update({r["originalMessageId"]: r["statusCode"] for r in json.loads(bytes(m.body))
                                if r["originalMessageId"] in (long_mid, kept_mid)})
            self.assertEqual(records, {long_mid: "Success", kept_mid: "Success"})
        finally:
            svc.close()
            dev.stop()

    def test_c2d_after_subscribing_completes_on_puback(self):
        dev = Paho.device("sdk2")
        svc = connect(EMU)
        try:
            self.assertEqual(Cbs(svc).put(owner_token(), audience=HOST)[0], 200)
            sender = svc.create_sender("/messages/devicebound")
            feedback = svc.create_receiver("/messages/serviceBound/feedback", credit=10)
            mid = new_id("c2d")
            # sent before the device subscribes: the hub keeps it until then
            sender.send(Message(address="/devices/sdk2/messages/devicebound", id=mid, body=b"hello device",
                                properties={"iothub-ack": "full", "color": "red"}))
            time.sleep(0.5)
            self.assertIsNone(dev.message(timeout=0.5), "a C2D message came before the device subscribed")
            dev.subscribe("devices/sdk2/messages/devicebound/#")
            msg = dev.message(timeout=15)
            self.assertIsNotNone(msg, "the C2D message never came")
            self.assertEqual(msg.payload, b"hello device")
            bag = urllib.parse.parse_qs(msg.topic.split("devicebound/", 1)[1])
            self.assertEqual(bag["$.mid"], [mid])
            self.assertEqual(bag["color"], ["red"])
            end = time.time() + 15
            record = None
            while time.time() < end and not record:
                m = feedback.receive(timeout=max(0.1, end - time.time()))
                feedback.accept()
                record = next((r for r in json.loads(bytes(m.body)) if r["originalMessageId"] == mid), None)
            self.assertEqual(record["statusCode"], "Success")
        finally:
            svc.close()
            dev.stop()


class Refusals(unittest.TestCase):
    def setUp(self):
        self.bystander = Paho.device("sdk3")

    def tearDown(self):
        assert_alive(self, self.bystander, "sdk3")
        self.bystander.stop()

    def refused(self, client_id, user, password, code, logged, **kw):
        p = Paho(client_id, user, password, **kw)
        try:
            rc, _ = p.connack()
            self.assertEqual(rc, code, f"{client_id}: CONNACK {rc}, expected {code}")
            p.wait_closed(5)
            GW.wait_text("device_mqtt_refused", text=logged)
        finally:
            p.stop()

    def test_each_refusal(self):
        user = mqtt_lib.user_name
        with self.subTest("a token signed with another key"):
            self.refused("sdk1", user("sdk1", host=HOST), token("sdk1", key=random_key()), 5,
                         "signature does not match")
        with self.subTest("a token for another device"):
            self.refused("sdk1", user("sdk1", host=HOST), token("sdk2"), 5, "the token's sr is not")
        with self.subTest("a device not in the fleet"):
            self.refused("stranger", user("stranger", host=HOST), token("stranger", key=random_key()), 5,
                         "not in this gateway's fleet")
        with self.subTest("an expired token"):
            self.refused("sdk1", user("sdk1", host=HOST), token("sdk1", ttl=-10), 5, "expired")
        with self.subTest("another hub's name"):
            self.refused("sdk1", user("sdk1", host="other.azure-devices.net"), token("sdk1"), 5,
                         "names another hub (other.azure-devices.net")
        with self.subTest("a module"):
            self.refused("sdk1/mod1", user("sdk1", "mod1", host=HOST), token("sdk1"), 5,
                         "modules are not served through the gateway")
        with self.subTest("no password, no certificate"):
            self.refused("sdk1", user("sdk1", host=HOST), None, 5, "no token, and no client certificate")
        with self.subTest("MQTT 5"):
            raw = socket.create_connection(("127.0.0.1", GW.mqtt), timeout=10)
            tls = ssl.create_default_context(cafile=CA).wrap_socket(raw, server_hostname="localhost")
            tls.sendall(mqtt_lib.connect_packet("sdk1", user("sdk1", host=HOST), token("sdk1"), level=5))
            self.assertEqual(tls.recv(4), b"\x20\x02\x00\x01")  # CONNACK 1, unacceptable protocol version
            self.assertEqual(tls.recv(1), b"")
            tls.close()
            GW.wait_text("device_mqtt_refused", text="IoT Hub speaks MQTT 3.1.1 only")

    def test_a_connect_larger_than_allowed_before_authentication(self):
        """Before CONNECT is accepted a packet may be 72 KiB (a will of 64 KiB fits): one
        announcing more is refused as it is announced, before the gateway buffers it."""
        raw = socket.create_connection(("127.0.0.1", GW.mqtt), timeout=10)
        tls = ssl.create_default_context(cafile=CA).wrap_socket(raw, server_hostname="localhost")
        n = 100 * 1024  # remaining length 102,400, varint-encoded, and only the start of it
        tls.sendall(bytes([0x10, 0x80 | (n & 0x7f), 0x80 | ((n >> 7) & 0x7f), n >> 14]) + b"\x00\x04MQTT")
        self.assertEqual(tls.recv(16), b"")  # closed, nothing said
        tls.close()
        GW.wait_text("device_mqtt_violation", text=f"over the limit of {72 * 1024}")

    def test_violation_closes_only_that_connection(self):
        p = Paho.device("sdk1")
        try:
            p.publish("devices/sdk3/messages/events/", b"not mine", qos=0)
            p.wait_closed(5)
            GW.wait_text("device_mqtt_violation", "sdk1", "another identity's topic")
        finally:
            p.stop()

    def test_a_token_for_the_gateway_name_is_taken(self):
        p = Paho("sdk1", mqtt_lib.user_name("sdk1", host=HOST), token("sdk1", resource="mqtt-test-gw/devices/sdk1"))
        try:
            self.assertEqual(p.connack()[0], 0)
        finally:
            p.stop()


class Reload(unittest.TestCase):
    def test_a_new_key_closes_the_mqtt_connection(self):
        """A reload that changes a connected MQTT device's key ends its connection (what it
        sent and was not acknowledged it sends again once connected with the new key)."""
        dev = Paho.device("rekey1")
        try:
            EMU.wait_online("rekey1")
            with open(GW.config) as f:
                text = f.read()
            old = KEYS["rekey1"]
            KEYS["rekey1"] = random_key()
            with open(GW.config, "w") as f:
                f.write(text.replace(old, KEYS["rekey1"]))
            GW.proc.send_signal(signal.SIGHUP)
            dev.wait_closed(15)
            GW.wait_text("device_mqtt_closed", "rekey1", "its key changed")
        finally:
            dev.stop()


class WithStore(unittest.TestCase):
    def test_acknowledged_once_durable_and_forwarded_after_the_outage(self):
        """The hub unreachable: an MQTT device's QoS 1 telemetry is PUBACKed once the
        gateway's store has it; the gateway restarted with the hub back sends it all,
        the device long gone."""
        store = tempfile.mkdtemp(prefix="iotgw-mqtt-store-")
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))  # a port where no hub listens
        down = Gateway(hub_port=dead.getsockname()[1], store=store)
        try:
            dev = mqtt_lib.Paho("sdk1", mqtt_lib.user_name("sdk1", host=HOST), token("sdk1"), port=down.mqtt, ca=CA)
            self.assertEqual(dev.connack()[0], 0)
            mids = [new_id("stored") for _ in range(20)]
            for mid in mids:
                self.assertTrue(dev.publish(events_topic("sdk1", f"%24.mid={mid}"), b"kept"),
                                "no PUBACK while the hub is down (the store should have acknowledged)")
            dev.stop()
        finally:
            down.stop()
            down.log.close()
            dead.close()
        up = Gateway(store=store)
        try:
            for mid in mids:
                self.assertEqual(annotations(STREAM.get(mid, timeout=30))["iothub-connection-device-id"], "sdk1")
        finally:
            up.stop()
            up.log.close()


class ClientCertificates(unittest.TestCase):
    def test_a_certificate_names_the_device_and_one_from_another_ca_is_refused(self):
        """With devices.tls.clientCa: a certificate the CA signed whose common name is the
        client id connects without a token; the same certificate for another client id
        without a token is refused (CONNACK 5); one another CA signed is refused at TLS."""
        gw = Gateway(client_ca=True)
        self.addCleanup(gw.log.close)
        self.addCleanup(gw.stop)
        client = os.path.join(CERTS, "client")
        p = mqtt_lib.Paho("test-device", mqtt_lib.user_name("test-device", host=HOST), None, port=gw.mqtt, ca=CA,
                          cert=client)
        self.assertEqual(p.connack()[0], 0, gw.log_text()[-2000:])
        mid = new_id("x509")
        self.assertTrue(p.publish(events_topic("test-device", f"%24.mid={mid}"), b"by certificate"))
        self.assertEqual(annotations(STREAM.get(mid))["iothub-connection-device-id"], "test-device")
        other = mqtt_lib.Paho("sdk1", mqtt_lib.user_name("sdk1", host=HOST), None, port=gw.mqtt, ca=CA, cert=client)
        self.assertEqual(other.connack()[0], 5)
        gw.wait_text("device_mqtt_refused", text="naming the device: it names test-device")
        other.stop()
        try:  # TLS 1.3: the refusal may come at the handshake or just after it
            forged = mqtt_lib.Paho("test-device", mqtt_lib.user_name("test-device", host=HOST), None, port=gw.mqtt,
                                   ca=CA, cert=os.path.join(CERTS, "forged-other-ca"))
        except (ssl.SSLError, OSError):
            forged = None
        if forged:  # then TLS fails at the first read: no MQTT is ever spoken over it
            with self.assertRaises(AssertionError):
                forged.connack(timeout=5)
            forged.stop()
        assert_alive(self, p, "test-device")
        p.stop()


class Lifecycle(unittest.TestCase):
    def test_newest_wins_across_protocols_on_one_upstream(self):
        tls = ssl.create_default_context(cafile=CA)
        pb = first = Device(GW.port, tls=tls)
        pb.hello("both1", token("both1"))
        pb.expect("welcome")
        dev = Paho.device("both1")
        err = pb.expect("error")
        self.assertEqual(T("Frame").DESCRIPTOR.file.enum_types_by_name["ErrorCode"].values_by_number[err.code].name,
                         "ERROR_REPLACED")
        mid = new_id("both")
        self.assertTrue(dev.publish(events_topic("both1", f"%24.mid={mid}"), b"mqtt now"))
        self.assertEqual(annotations(STREAM.get(mid))["iothub-connection-device-id"], "both1")
        # a protobuf device and an MQTT device at once, on the gateway's one hub connection
        other = Device(GW.port, tls=tls)
        other.hello("pb1", token("pb1"))
        other.expect("welcome")
        f = T("Frame")()
        f.telemetry.seq = 1
        f.telemetry.parcel.type = "iotgw.AlarmStatus"
        other.send(f)
        other.expect("ack")
        # and back: the protobuf connection takes over, the MQTT one is closed
        pb = Device(GW.port, tls=tls)
        pb.hello("both1", token("both1"))
        pb.expect("welcome")
        dev.wait_closed(5)
        GW.wait_text("device_mqtt_closed", "both1", "a newer connection for both1 took over")
        devices = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{GW.ops}/devices", timeout=10).read())
        self.assertEqual({d["id"]: d["protocol"] for d in devices if d["id"] in ("both1", "pb1")},
                         {"both1": "protobuf", "pb1": "protobuf"})
        text = urllib.request.urlopen(f"http://127.0.0.1:{GW.ops}/metrics", timeout=10).read().decode()
        conns = re.search(r'^iotgw_hub_connections\{state="open"\} (\d+)', text, re.M)
        self.assertTrue(conns, text[:2000])
        self.assertEqual(int(conns.group(1)), 1)
        pb.close()
        other.close()
        dev.stop()
        first.close()

    def test_hub_disables_one_sdk_device_the_others_go_on(self):
        dev = Paho.device("hubdisabled1")
        by = Paho.device("busy1")
        try:
            EMU.wait_online("hubdisabled1")
            status, _, ident = EMU.rest("GET", "/devices/hubdisabled1")
            ident["status"] = "disabled"
            status, _, _ = EMU.rest("PUT", "/devices/hubdisabled1", ident, headers={"If-Match": "*"})
            self.assertEqual(status, 200)
            dev.wait_closed(30)  # as the hub ends a disabled device's connection, without waiting for telemetry
            GW.wait_text("device_mqtt_closed", "hubdisabled1", "the hub refuses device hubdisabled1")
            assert_alive(self, by, "busy1")
        finally:
            dev.stop()
            by.stop()


import urllib.request  # noqa: E402 (used by Lifecycle)

if __name__ == "__main__":
    run_tests()
