"""The official Azure IoT Node device SDK (azure-iot-device with azure-iot-device-amqp and
azure-iot-device-mqtt) against iothub-emulator, unchanged, over Amqp, AmqpWs, Mqtt and
MqttWs: it connects with a device connection string, sends telemetry with a message id,
content type and encoding and an application property (read back from the hub's event
stream), gets the twin, patches reported properties, answers a direct method, receives a
desired update, and receives and completes a C2D message (with positive feedback); and its
ModuleClient does the same as module mod1 of dev3 (without C2D, which modules do not
have), with the module's messages marked as its own in the telemetry stream.

Over MQTT also: reject and abandon, which the SDK's MQTT transport refuses with its own
NotImplementedError; mqtt.js has acknowledged the PUBLISH already (it PUBACKs a QoS 1
message on arrival, and azure-iot-mqtt-base hands it on to the SDK only on the next tick),
and PUBACK is how an MQTT device completes a C2D message, so the hub records the message
as completed (feedback Success), neither rejected nor abandoned. And the emulator killed
and started again under a connected MQTT client: the SDK reconnects by itself (its retry
policy), sends telemetry again, and answers a direct method again; its twin does not work
again (an expected failure: the emulator's persistent sessions do not outlive it, and the
SDK does not subscribe to the twin's topics again).

And the same device pointed at iotgw with GatewayHostName (the gateway's listeners for SDK
devices on 127.0.0.2: MQTT on 8883, AMQP on 5671, both over WebSocket on 443), over Mqtt,
MqttWs, Amqp and AmqpWs: it works unchanged, over the gateway's own AMQP
connection to the hub, where it is its own identity.

The service side is driven here through the emulator's REST API and AMQP. On a failure
the device's lines, the end of the SDK's debug output (DEBUG, azure*,mqttjs* unless set)
and of the emulator's log are shown; NODE_DEVICE_TRACE=DIR keeps them all, one file per
test.

usage: node_device_interop.py IOTHUB_EMULATOR IOTGW CERT_DIR NODE_DIR   (inside a network
namespace where 127.0.0.1:443, :5671 and :8883 and 127.0.0.2:443, :5671 and :8883 are free)"""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from iotgw_testlib import WRAPPER, LoggedProcess, readline_within, run_tests  # noqa: E402
from emulator_lib import (Emulator, Cbs, HOST, DEVICE_KEYS, MODULE_KEY, connect,  # noqa: E402
                          owner_token)

BINARY, IOTGW, CERTS, NODE_DIR = sys.argv[1:5]
del sys.argv[1:5]
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_device.js")
EMU = None
# what node_device.js sends as telemetry, as the hub's stream must show it
LEVEL = "high & hot/1=2"


def setUpModule():
    global EMU
    EMU = Emulator(BINARY, CERTS, listen="127.0.0.1:443", amqps="127.0.0.1:5671", mqtts="127.0.0.1:8883")


def tearDownModule():
    EMU.stop()
    EMU.log.close()


def stream_message(message_id, timeout=15):
    """The message with this message-id from the hub's event stream (every partition, from
    its start), as a proton Message with its annotations."""
    from proton import Timeout
    from proton.reactor import Selector
    conn = connect(EMU, sasl="PLAIN", user=f"iothubowner@sas.root.{HOST}", password=owner_token())
    try:
        receivers = [conn.create_receiver(f"messages/events/ConsumerGroups/$Default/Partitions/{n}", credit=100,
                                          options=Selector("amqp.annotation.x-opt-offset > '-1'"))
                     for n in range(4)]
        deadline = time.time() + timeout
        while time.time() < deadline:
            for r in receivers:
                try:
                    m = r.receive(timeout=0.2)
                except Timeout:
                    continue
                if m.id == message_id:
                    return m
        raise AssertionError(f"telemetry {message_id} is not in the hub's stream")
    finally:
        conn.close()


class Harness(unittest.TestCase):
    """A Node SDK device process and what the service sees of it."""
    gateway = None  # a gateway between the device and the hub: its GatewayHostName

    def start(self, transport, device, module=None, key=None):
        env = dict(os.environ, NODE_PATH=os.path.join(os.path.abspath(NODE_DIR), "node_modules"),
                   DEBUG=os.environ.get("DEBUG", "azure*,mqttjs*"))
        cs = (f"HostName={HOST};DeviceId={device};ModuleId={module};SharedAccessKey={MODULE_KEY}" if module
              else f"HostName={HOST};DeviceId={device};SharedAccessKey={key or DEVICE_KEYS[device]}")
        if self.gateway:
            cs += f";GatewayHostName={self.gateway.host}"
        # the SDK's own debug output (DEBUG=azure*,mqttjs*) goes to a file, shown on failure
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(["node", SCRIPT, cs, transport, EMU.ca], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        self.seen = []

    def detail(self):
        full = bool(os.environ.get("NODE_DEVICE_TRACE"))
        self.stderr.seek(0)
        return ("\n--- device:\n" + "\n".join(self.seen) + "\n--- SDK debug (end):\n" +
                self.stderr.read()[-(1 << 22 if full else 4000):] +
                "\n--- emulator log (end):\n" + EMU.log_text()[-(1 << 22 if full else 3000):] +
                ("\n--- gateway log (end):\n" + self.gateway.log_text()[-3000:] if self.gateway else ""))

    def expect(self, prefix, timeout=30):
        while True:
            try:
                line = readline_within(self.proc, timeout)
            except AssertionError:
                self.fail(f"no {prefix!r} from the device within {timeout} s" + self.detail())
            self.seen.append(line)
            self.assertFalse(line.startswith("ERROR") or line.startswith("DISCONNECTED"), self.detail())
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self):
        self.proc.stdin.close()
        self.expect("CLOSED")
        self.assertEqual(self.proc.wait(timeout=30), 0)

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if os.environ.get("NODE_DEVICE_TRACE"):  # a directory: keep what the device said and its SDK's debug
            with open(os.path.join(os.environ["NODE_DEVICE_TRACE"], self.id().split(".")[-1] + ".log"), "w") as f:
                f.write(self.detail())
        self.proc.stdout.close()
        self.stderr.close()

    def check_telemetry(self, message_id, device, module=None):
        m = stream_message(message_id)
        ann = {str(k): v for k, v in (m.annotations or {}).items()}
        self.assertEqual(ann.get("iothub-connection-device-id"), device)
        self.assertEqual(ann.get("iothub-connection-module-id"), module)
        self.assertEqual((m.content_type, m.content_encoding), ("application/json", "utf-8"))
        self.assertEqual((m.properties or {}).get("level"), LEVEL)
        self.assertEqual(json.loads(bytes(m.body) if not isinstance(m.body, str) else m.body),
                         {"temperature": 21.5, "id": message_id})

    def invoke(self, twin_path, delay, connect_timeout=0):
        status, _, body = EMU.rest("POST", twin_path + "/methods",
                                   {"methodName": "rebootDevice", "payload": {"delay": delay},
                                    "responseTimeoutInSeconds": 30, "connectTimeoutInSeconds": connect_timeout})
        self.assertEqual((status, body), (200, {"status": 200, "payload": {"rebooting": True, "delay": delay}}),
                         self.detail())
        self.assertEqual(json.loads(self.expect("METHOD rebootDevice")), {"delay": delay})

    def connect_and_work(self, transport, device, module=None):
        """The device's first steps, up to READY, and the service's view of them."""
        twin_path = f"/twins/{device}" + (f"/modules/{module}" if module else "")
        self.start(transport, device, module)
        self.expect("OPEN")
        first = self.expect("TELEMETRY accepted")
        twin = json.loads(self.expect("TWIN"))
        self.assertIn("$version", twin["desired"])
        self.expect("REPORTED updated")
        self.expect("READY")
        if self.gateway:  # through the gateway, which the hub sees as the device's AMQP connection
            over = "WebSocket" if transport.endswith("Ws") else "TLS"
            protocol = "MQTT" if transport.startswith("Mqtt") else "AMQP"
            self.assertRegex(self.gateway.log_text(),
                             f"device {device} connected from [^ ]+( [0-9.]+)? \\({protocol} over {over}\\)")
            self.assertIn(f'{device}: telemetry link "telemetry-{device}-', EMU.log_text())  # the gateway's link
        elif transport.startswith("Mqtt"):  # it is the MQTT endpoint's, over TLS or WebSocket as asked
            who = device + (f"/{module}" if module else "")
            self.assertIn(f"MQTT {who}: connected ({'WebSocket' if transport.endswith('Ws') else 'TLS'},",
                          EMU.log_text())
        self.check_telemetry(first, device, module)

        status, _, t = EMU.rest("GET", twin_path)
        self.assertEqual(status, 200)
        self.assertEqual(t["properties"]["reported"]["firmware"], "1.2.3")
        self.assertEqual(t["connectionState"], "Connected")
        return twin_path

    def scenario(self, transport, device, module=None, settle=("complete",)):
        try:
            twin_path = self.connect_and_work(transport, device, module)
            self.invoke(twin_path, 3)

            status, _, _ = EMU.rest("PATCH", twin_path, {"properties": {"desired": {"interval": 42}}})
            self.assertEqual(status, 200)
            while True:
                delta = json.loads(self.expect("DESIRED"))
                if "interval" in delta:
                    break
            self.assertEqual(delta["interval"], 42)
            if not module:
                self.c2d(transport, device, settle)
            self.finish()
        finally:
            self.cleanup()

    def c2d(self, transport, device, settle):
        """C2D messages settled each as settle says, all with iothub-ack full; the device's
        lines for them, and the feedback the hub sends: {message id: status}."""
        from proton import Message, Timeout
        svc = connect(EMU)
        self.assertEqual(Cbs(svc).put(owner_token(), audience=HOST)[0], 200)
        feedback = svc.create_receiver("/messages/serviceBound/feedback", credit=10)
        sender = svc.create_sender("/messages/devicebound")
        ids = {op: f"c2d-{transport}-{op}" for op in settle}
        for op in settle:
            sender.send(Message(address=f"/devices/{device}/messages/devicebound", id=ids[op],
                                body=f"hello-{op}".encode(), properties={"k": "v", "settle": op,
                                                                         "iothub-ack": "full"}))
        answers = {}
        for op in settle:
            line = self.expect("C2D hello-" + op)
            props = {p["key"]: p["value"] for p in json.loads(line)}
            self.assertEqual((props.get("k"), props.get("settle")), ("v", op))
            if op == "complete":
                self.expect("C2D completed")
            else:
                answers[op] = sorted(self.expect(f"C2D-SETTLE {op} ") for _ in range(2))
        records = {}
        deadline = time.time() + 20
        while set(ids.values()) - set(records) and time.time() < deadline:
            try:
                m = feedback.receive(timeout=1)
            except Timeout:
                continue
            feedback.accept()
            records.update({r["originalMessageId"]: r["statusCode"] for r in json.loads(bytes(m.body))
                            if r["deviceId"] == device})
        svc.close()
        self.c2d_answers, self.c2d_feedback = answers, records
        self.assertEqual(records.get(ids["complete"]), "Success", self.detail())
        return ids


class NodeDevice(Harness):
    def test_amqps(self):
        self.scenario("Amqp", "dev1")

    def test_amqp_over_websocket(self):
        self.scenario("AmqpWs", "dev2")

    def test_module_client_amqps(self):
        self.scenario("Amqp", "dev3", module="mod1")

    def test_mqtts(self):
        self.scenario("Mqtt", "dev1", settle=("complete", "reject", "abandon"))
        self.mqtt_cannot_reject_or_abandon("Mqtt")

    def test_mqtt_over_websocket(self):
        self.scenario("MqttWs", "dev2", settle=("complete", "reject", "abandon"))
        self.mqtt_cannot_reject_or_abandon("MqttWs")

    def mqtt_cannot_reject_or_abandon(self, transport):
        """The SDK's MQTT transport throws NotImplementedError from reject and abandon: to
        the caller when called with a callback (which is never called), as the rejection of
        the promise otherwise. The hub has the messages as completed all the same: mqtt.js
        acknowledged their PUBLISH (PUBACK: completed) before the application saw them."""
        rejecting = "NotImplementedError: the MQTT transport does not support rejecting messages."
        abandoning = "NotImplementedError: The MQTT transport does not support abandoning messages."
        self.assertEqual(self.c2d_answers, {"reject": ["promise-rejected " + rejecting, "threw " + rejecting],
                                            "abandon": ["promise-rejected " + abandoning, "threw " + abandoning]})
        self.assertEqual(self.c2d_feedback, {f"c2d-{transport}-{op}": "Success"
                                             for op in ("complete", "reject", "abandon")})

    def test_module_client_mqtts(self):
        self.scenario("Mqtt", "dev3", module="mod1")

    def restart_hub(self):
        """The emulator killed (as a crash: no DISCONNECT, no close) and started again on
        the same ports, and the device's SDK connected again by itself."""
        EMU.kill()
        time.sleep(1)
        EMU.restart()
        self.expect("CONNECTED", timeout=60)

    def test_mqtt_reconnects_after_the_hub_restarts(self):
        """The emulator killed under a connected MQTT client and started again on the same
        ports: the SDK reconnects by itself, its telemetry flows again, and a direct method
        reaches it again. The emulator keeps no state over a restart (persistent MQTT
        sessions included), so the method works only if the SDK subscribes again."""
        try:
            twin_path = self.connect_and_work("Mqtt", "dev1")
            self.invoke(twin_path, 1)
            self.restart_hub()
            self.command("send tm-after-restart")
            self.expect("TELEMETRY accepted tm-after-restart", timeout=60)
            self.check_telemetry("tm-after-restart", "dev1")
            # the SDK subscribes to methods again after its retry policy's back-off: the
            # call waits for that (a device not subscribed is not online for methods)
            self.invoke(twin_path, 2, connect_timeout=30)
            self.finish()
        finally:
            if EMU.proc.poll() is not None:
                EMU.restart()
            self.cleanup()


class Gateway(LoggedProcess):
    """iotgw between the devices and the emulator: its MQTT listener on 127.0.0.2:8883 and
    AMQP one on 127.0.0.2:5671 (the SDK's ports), MQTT and AMQP over WebSocket on
    127.0.0.2:443, with a certificate for 127.0.0.2; the emulator's devices as its fleet."""
    name = "iotgw"
    host = "127.0.0.2"

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="iotgw-node-test-")
        config = os.path.join(self.dir, "iotgw.yaml")
        fleet = "".join(f"    - id: {d}\n      key: {k}\n" for d, k in DEVICE_KEYS.items())
        with open(config, "w") as f:
            f.write(f"""ops:
  listen: off
hub:
  hostName: {HOST}
  connectHost: 127.0.0.1
  caFile: {EMU.ca}
devices:
  tls:
    cert: {os.path.join(CERTS, "gateway.pem")}
    key: {os.path.join(CERTS, "gateway.key")}
  mqtt:
    listen: {self.host}:8883
  amqp:
    listen: {self.host}:5671
  webSocketListen: {self.host}:443
fleet:
  devices:
{fleet}""")
        self.log = open(os.path.join(self.dir, "iotgw.log"), "w+")
        self.proc = subprocess.Popen(WRAPPER + [IOTGW, "--config", config], stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        line = readline_within(self.proc, 20)
        assert line.startswith("listening: mqtt "), line + self.log_text()


class ThroughGateway(Harness):
    @classmethod
    def setUpClass(cls):
        cls.gateway = Gateway()

    @classmethod
    def tearDownClass(cls):
        cls.gateway.stop()
        cls.gateway.log.close()

    def test_mqtts_through_the_gateway(self):
        """Telemetry, twin, reported properties, a direct method, a desired update and C2D,
        through the gateway as through the hub."""
        self.scenario("Mqtt", "dev2")

    def test_mqtt_over_websocket_through_the_gateway(self):
        self.scenario("MqttWs", "dev1")

    def test_amqps_through_the_gateway(self):
        """The same over AMQP (5671): the device's CBS put-token checked by the gateway,
        its links the gateway's, its identity its own on the gateway's hub connection."""
        self.scenario("Amqp", "dev2")

    def test_amqp_over_websocket_through_the_gateway(self):
        self.scenario("AmqpWs", "dev1")

    def test_a_wrong_key_and_an_unknown_device_are_refused(self):
        """The SDK's open fails (over AMQP, MQTT and both over WebSocket) for a key the fleet
        does not have for the device, and for a device not in the fleet; the gateway says
        which check failed."""
        wrong = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
        for transport in ("Amqp", "AmqpWs", "Mqtt", "MqttWs"):
            for device in ("dev2", "ghost9"):
                try:
                    self.start(transport, device, key=wrong)
                    line = readline_within(self.proc, 60)
                    self.assertTrue(line.startswith("ERROR"), f"{transport} {device}: {line}" + self.detail())
                finally:
                    self.cleanup()
        log = self.gateway.log_text()
        self.assertIn("put-token refused (401): device dev2: SAS token signature does not match", log)
        self.assertIn("(wss 127.0.0.1): put-token refused (404): device \"ghost9\" is not in this gateway's fleet", log)
        self.assertIn("refused (CONNACK 5): device dev2: SAS token signature does not match", log)
        self.assertIn("refused (CONNACK 5): device \"ghost9\" is not in this gateway's fleet", log)


run_tests()
