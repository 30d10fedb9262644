"""iotgw against a hostile hub: a hub written here with Debian's python3-qpid-proton
(AMQPS, as IoT Hub speaks it) that authenticates the gateway's devices and then sends
what IoT Hub never should: method requests without a uuid correlation id or a method
name, bytes that are no AMQP message, oversize messages, twin answers without a status
or with a twin that is not JSON, desired updates that are not JSON, undecodable
cloud-to-device messages. Each must be refused to the hub with a specific condition (or
reach the device as a specific error), logged, and nothing else disturbed: the same
device's next valid request is served and another device's telemetry keeps being
acknowledged.

usage: hostile_hub.py IOTGW SCHEMAS_DESC CERT_DIR"""
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import ApplicationEvent, Container, EventInjector

from iotgw_testlib import WRAPPER, LoggedProcess, free_port, listening_ports, run_tests
from emulator_lib import random_key, sas_token, HOST
from device_lib import Device, T, load_schemas

IOTGW, SCHEMAS, CERTS = sys.argv[1:4]
del sys.argv[1:4]
load_schemas(SCHEMAS)

KEYS = {"victim": random_key(), "bystander": random_key()}
HUB = GW = VICTIM = BYSTANDER = None


class HostileHub(MessagingHandler):
    """Serves CBS and every device link like IoT Hub, accepts telemetry, answers twin
    requests from a script, and sends whatever the test hands to send(). What the gateway
    does with the hub's sends (its dispositions) and what it sends itself (method
    responses, twin requests) lands in queues for the test to take."""

    def __init__(self, port):
        super().__init__(prefetch=100, auto_accept=True, auto_settle=True)
        self.port = port
        self.senders = {}  # (device, "methods" | "twin" | "c2d") -> the hub's sender link
        self.cbs_reply = None
        self.outcomes = queue.Queue()  # (label, outcome, condition, description)
        self.method_responses = queue.Queue()
        self.twin_answers = queue.Queue()  # callables: request -> answers to send, in order
        self.telemetry = 0
        self.injector = EventInjector()
        self.ready = threading.Event()
        self.container = Container(self)
        self.container.selectable(self.injector)
        self.thread = threading.Thread(target=self.container.run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "the hostile hub did not start"

    # -- driven from the test thread
    def send(self, device, channel, what, label):
        """what: a proton Message, or bytes sent as a delivery's raw payload."""
        self.injector.trigger(ApplicationEvent("hostile_send", subject=(device, channel, what, label)))

    def outcome(self, timeout=10):
        return self.outcomes.get(timeout=timeout)

    def wait_links(self, device, channels, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            if all((device, c) in self.senders for c in channels):
                return
            time.sleep(0.05)
        raise AssertionError(f"the gateway never attached {channels} for {device}")

    def stop(self):
        self.injector.trigger(ApplicationEvent("hostile_stop"))
        self.thread.join(10)

    # -- the hub's side, on the container's thread
    def on_start(self, event):
        event.container.ssl.server.set_credentials(os.path.join(CERTS, "server.pem"),
                                                   os.path.join(CERTS, "server.key"), None)
        self.acceptor = event.container.listen(f"amqps://127.0.0.1:{self.port}")
        self.ready.set()

    def on_hostile_send(self, event):
        device, channel, what, label = event.subject
        snd = self.senders[(device, channel)]
        if isinstance(what, bytes):
            dlv = snd.delivery(str(uuid.uuid4()))
            snd.stream(what)
            snd.advance()
        else:
            dlv = snd.send(what)
        dlv.label = label

    def on_hostile_stop(self, event):
        self.acceptor.close()
        for c in list(self.senders.values()):
            c.connection.close()
        self.injector.close()

    def on_link_opening(self, event):  # IoT Hub's attach names the addresses asked for
        event.link.source.copy(event.link.remote_source)
        event.link.target.copy(event.link.remote_target)

    def on_link_opened(self, event):
        link = event.link
        if link.is_sender:
            address = link.remote_source.address or ""
            if address == "$cbs":
                self.cbs_reply = link
                return
            m = re.fullmatch(r"/devices/([^/]+)/(methods/devicebound|twin|messages/devicebound)", address)
            if m:
                channel = {"methods/devicebound": "methods", "twin": "twin", "messages/devicebound": "c2d"}
                self.senders[(m.group(1), channel[m.group(2)])] = link

    def on_message(self, event):
        address = event.link.remote_target.address or ""
        msg = event.message
        if address == "$cbs":
            self.cbs_reply.send(Message(correlation_id=msg.id,
                                        properties={"status-code": 200, "status-description": "OK"}))
        elif address.endswith("/messages/events"):
            self.telemetry += 1
        elif address.endswith("/methods/devicebound"):
            self.method_responses.put(msg)
        elif address.endswith("/twin"):
            device = address.split("/")[2]
            if msg.annotations.get("operation") == "PUT":  # the desired-properties subscription
                answers = [Message(correlation_id=msg.correlation_id, annotations={"status": 200})]
            else:
                answers = self.twin_answers.get_nowait()(msg)
            for a in answers:
                self.senders[(device, "twin")].send(a)

    def _outcome(self, event, outcome):
        label = getattr(event.delivery, "label", None)
        if label:
            cond = event.delivery.remote.condition
            self.outcomes.put((label, outcome, cond.name if cond else None, cond.description if cond else None))

    def on_accepted(self, event):
        self._outcome(event, "accepted")

    def on_rejected(self, event):
        self._outcome(event, "rejected")

    def on_released(self, event):
        self._outcome(event, "released")


class Gateway(LoggedProcess):
    name = "iotgw"

    def __init__(self, hub_port):
        self.dir = tempfile.mkdtemp(prefix="iotgw-hostile-")
        config = os.path.join(self.dir, "iotgw.yaml")
        with open(config, "w") as f:
            f.write(f"""gatewayId: hostile-test
hub:
  hostName: {HOST}
  transport: amqps
  port: {hub_port}
  caFile: {os.path.join(CERTS, "ca.pem")}
ops:
  listen: 127.0.0.1:0
devices:
  listen: 127.0.0.1:0
fleet:
  devices:
""" + "".join(f"    - id: {d}\n      key: {k}\n" for d, k in KEYS.items()))
        self.log = open(os.path.join(self.dir, "iotgw.log"), "w+")
        # every refusal's line is asserted below: lift the per-device budget of log lines
        env = dict(os.environ, IOTGW_LOG_BURST="1000")
        self.proc = subprocess.Popen(WRAPPER + [IOTGW, "--config", config], env=env, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        self.port = listening_ports(self.proc)[0]


def connect(device, **caps):
    d = Device(GW.port)
    d.hello(device, sas_token(f"{HOST}/devices/{device}", KEYS[device]), **caps)
    d.expect("welcome")
    return d


def setUpModule():
    global HUB, GW, VICTIM, BYSTANDER
    HUB = HostileHub(free_port())
    GW = Gateway(HUB.port)
    VICTIM = connect("victim", methods=True, twin=True, c2d=True)
    BYSTANDER = connect("bystander")
    HUB.wait_links("victim", ("methods", "twin", "c2d"))


def tearDownModule():
    for d in (VICTIM, BYSTANDER):
        d.close()
    GW.stop()
    GW.log.close()
    HUB.stop()


_seq = [0]


def bystander_still_served(test):
    """Another device on the same hub connection: its telemetry is still acknowledged."""
    _seq[0] += 1
    f = T("Frame")()
    f.telemetry.seq = _seq[0]
    f.telemetry.raw = b'{"still":"here"}'
    BYSTANDER.send(f)
    test.assertEqual(BYSTANDER.expect("ack").seq, _seq[0])
    test.assertIsNone(GW.proc.poll(), "the gateway exited")


def nothing_for(device, seconds=0.5):
    """No frame reaches the device (pings aside) for a while."""
    end = time.time() + seconds
    while time.time() < end:
        try:
            f = device.recv(timeout=max(0.05, end - time.time()))
        except AssertionError:
            return
        assert f is not None and f.WhichOneof("body") == "ping", f"the device was sent {f}"


def method_request(name="rebootDevice", corr=None, body=b'{"delay":1}', props=None):
    m = Message(correlation_id=corr if corr is not None else uuid.uuid4(),
                properties=props if props is not None else {"IoThub-methodname": name}, body=body)
    m.inferred = True  # the body as a data section, as IoT Hub sends it
    return m


def wait_log(pattern, timeout=5):
    end = time.time() + timeout
    while time.time() < end:
        if re.search(pattern, GW.log_text()):
            return
        time.sleep(0.05)
    raise AssertionError(f"the gateway never logged {pattern!r}:\n{GW.log_text()[-2000:]}")


class HostileHubTests(unittest.TestCase):
    def expect_refused(self, label, condition, description):
        got = HUB.outcome()
        self.assertEqual(got[:3], (label, "rejected", condition), got)
        self.assertIn(description, got[3] or "", got)

    def test_malformed_method_requests_refused_then_a_good_one_served(self):
        cases = [
            ("string correlation id", method_request(corr="not-a-uuid"), "correlation-id is not a uuid"),
            ("no method name", method_request(props={"other": "x"}), "IoThub-methodname is missing"),
            ("numeric method name", method_request(props={"IoThub-methodname": 5}), "IoThub-methodname"),
            ("method name of 200", method_request(name="m" * 200), "over 128 characters"),
            ("not AMQP", b"\x00\x53\x75\xa0\xff\xff\xff\xff", ""),
            ("300 KiB", method_request(body=b"x" * (300 * 1024)), ""),
        ]
        for label, what, description in cases:
            with self.subTest(label):
                HUB.send("victim", "methods", what, label)
                self.expect_refused(label, "amqp:decode-error", description)
        wait_log(r"device victim: method request refused: correlation-id is not a uuid")
        nothing_for(VICTIM)
        bystander_still_served(self)
        corr = uuid.uuid4()
        HUB.send("victim", "methods", method_request(corr=corr), "good")
        self.assertEqual(HUB.outcome()[:2], ("good", "accepted"))
        req = VICTIM.expect("method_request")
        self.assertEqual((req.name, json.loads(req.json)), ("rebootDevice", {"delay": 1}))
        f = T("Frame")()
        f.method_response.request_id = req.request_id
        f.method_response.status = 200
        f.method_response.json = b'{"rebooting":true}'
        VICTIM.send(f)
        answer = HUB.method_responses.get(timeout=10)
        self.assertEqual(answer.correlation_id, corr)
        self.assertEqual(answer.properties["IoThub-status"], 200)
        self.assertEqual(json.loads(bytes(answer.body)), {"rebooting": True})

    def twin_get(self, request_id):
        f = T("Frame")()
        f.twin_get.request_id = request_id
        VICTIM.send(f)
        r = VICTIM.expect("twin_result")
        self.assertEqual(r.request_id, request_id)
        return r

    def test_hostile_twin_answers_reach_the_device_as_errors(self):
        good_twin = b'{"desired":{"$version":3},"reported":{"$version":1}}'

        def answer(annotations, body):
            def make(request):
                m = Message(correlation_id=request.correlation_id, annotations=annotations, body=body)
                m.inferred = True
                return [m]
            return make

        HUB.twin_answers.put(answer({}, good_twin))  # no status
        r = self.twin_get(1)
        self.assertEqual((r.status, r.detail), (503, "the hub answered without a valid status"))
        HUB.twin_answers.put(answer({"status": 2 ** 40}, good_twin))  # no HTTP status
        self.assertEqual(self.twin_get(2).detail, "the hub answered without a valid status")
        HUB.twin_answers.put(answer({"status": 200}, b"<twin/>"))
        r = self.twin_get(3)
        self.assertEqual((r.status, r.detail), (503, "the hub's twin is not a JSON object"))
        wait_log(r"device victim: twin answer refused: the hub's twin is not a JSON object")

        def stray_then_good(request):  # an answer to no request first: ignored
            stray = Message(correlation_id="424242", annotations={"status": 200}, body=b"{}")
            good = Message(correlation_id=request.correlation_id, annotations={"status": 200}, body=good_twin)
            stray.inferred = good.inferred = True
            return [stray, good]

        HUB.twin_answers.put(stray_then_good)
        r = self.twin_get(4)
        self.assertEqual((r.status, json.loads(r.twin_json)["desired"]["$version"]), (200, 3))
        wait_log(r"device victim: a twin answer to no request of the gateway's ignored")
        bystander_still_served(self)

    def test_hostile_desired_updates_refused(self):
        for label, body in (("not JSON", b"desired!"), ("a JSON array", b"[1,2]")):
            m = Message(annotations={"version": 7}, body=body)
            m.inferred = True
            HUB.send("victim", "twin", m, label)
            self.expect_refused(label, "amqp:decode-error", "not a JSON object")
        HUB.send("victim", "twin", b"\x00\x53", "truncated")
        self.expect_refused("truncated", "amqp:decode-error", "")
        nothing_for(VICTIM)
        m = Message(annotations={"version": 8}, body=b'{"interval":5,"$version":8}')
        m.inferred = True
        HUB.send("victim", "twin", m, "good")
        self.assertEqual(HUB.outcome()[:2], ("good", "accepted"))
        u = VICTIM.expect("desired_update")
        self.assertEqual((u.version, json.loads(u.patch_json)["interval"]), (8, 5))
        bystander_still_served(self)

    def test_undecodable_cloud_to_device_refused(self):
        for label, what in (("not AMQP", b"\xff" * 16), ("300 KiB", Message(body=b"x" * (300 * 1024)))):
            HUB.send("victim", "c2d", what, label)
            self.expect_refused(label, "amqp:decode-error", "")
        wait_log(r"device victim: cloud-to-device message refused")
        nothing_for(VICTIM)
        HUB.send("victim", "c2d", Message(id="door-1", body=b"open the door"), "good")
        m = VICTIM.expect("c2d_message")
        self.assertEqual((m.body, m.message_id), (b"open the door", "door-1"))
        f = T("Frame")()
        f.c2d_settle.delivery_id = m.delivery_id
        f.c2d_settle.outcome = 0  # C2D_COMPLETE
        VICTIM.send(f)
        self.assertEqual(HUB.outcome()[:2], ("good", "accepted"))
        bystander_still_served(self)


if __name__ == "__main__":
    run_tests()
