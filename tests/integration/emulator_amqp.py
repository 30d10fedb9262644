"""iothub-emulator's device side seen by Debian's python3-qpid-proton as a raw AMQPS
client: CBS authorization and its refusals, links, telemetry, twin, methods, C2D, and
hostile input. After each refusal the emulator must keep serving everyone else.

usage: emulator_amqp.py IOTHUB_EMULATOR CERT_DIR"""
import base64
import json
import os
import re
import socket
import ssl
import subprocess
import tempfile
import sys
import threading
import time
import uuid

from proton import Message, symbol
from proton.utils import LinkDetached

from iotgw_testlib import readline_within, run_tests
from emulator_lib import (Emulator, Cbs, HOST, StreamReader, connect, device_token, module_token, owner_token,
                          pump, raw_tls_exchange, sas_token, wait_detached, DEVICE_KEYS, DEVICE_POLICY_KEY,
                          SERVICE_KEY)
import unittest

BINARY, CERTS = sys.argv[1:3]
del sys.argv[1:3]
EMU = None


def setUpModule():
    global EMU
    EMU = Emulator(BINARY, CERTS)


def tearDownModule():
    EMU.stop()
    EMU.log.close()


def events(device):
    return f"/devices/{device}/messages/events"


def detach_condition(fn):
    """Run fn, which must fail with LinkDetached; return the condition name and text."""
    try:
        fn()
    except LinkDetached as e:
        cond = e.link.remote_condition
        return cond.name, cond.description
    raise AssertionError("the link was not refused")


class Auth(unittest.TestCase):
    def authorized(self, sasl=None, device="dev1"):
        conn = connect(EMU, sasl=sasl)
        cbs = Cbs(conn)
        status, desc, reply = cbs.put(device_token(device), audience=f"{HOST}/devices/{device}")
        return conn, cbs, status, desc, reply

    def test_put_token_bare_header_replies_200_with_same_id(self):
        conn, cbs, status, desc, reply = self.authorized()
        self.assertEqual(status, 200, desc)
        self.assertEqual(reply.correlation_id, 1)
        mid = uuid.uuid4()
        status, _, reply = cbs.put(device_token("dev1"), msg_id=mid)
        self.assertEqual((status, reply.correlation_id), (200, mid))
        status, _, reply = cbs.put(device_token("dev1"), msg_id="request7", type_="azure-devices.net:sastoken")
        self.assertEqual((status, reply.correlation_id), (200, "request7"))
        conn.close()

    def test_sasl_anonymous_as_the_java_sdk(self):
        conn, _, status, desc, _ = self.authorized(sasl="ANONYMOUS")
        self.assertEqual(status, 200, desc)
        conn.close()

    def test_sasl_mssbcbs_as_the_c_sdk(self):
        """Python's Proton cannot speak MSSBCBS, so this writes the SASL frames itself."""
        from proton import Data, symbol as sym
        ctx = ssl.create_default_context(cafile=EMU.ca)
        with socket.create_connection(("127.0.0.1", EMU.amqps), timeout=10) as s, \
                ctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(b"AMQP\x03\x01\x00\x00")
            d = Data()
            d.put_described()
            d.enter()
            d.put_ulong(0x41)  # sasl-init
            d.put_list()
            d.enter()
            d.put_symbol(sym("MSSBCBS"))
            d.put_binary(b"")
            d.exit()
            d.exit()
            body = d.encode()
            t.sendall((8 + len(body)).to_bytes(4, "big") + b"\x02\x01\x00\x00" + body)
            out = b""
            while len(out) < 8 or not self._has_outcome(out[8:]):
                chunk = t.recv(4096)
                if not chunk:
                    break
                out += chunk
        self.assertEqual(out[:8], b"AMQP\x03\x01\x00\x00")
        frames = self._frames(out[8:])
        offered = frames[0][1][0]
        offered = list(offered.elements) if hasattr(offered, "elements") else [offered]
        self.assertEqual(offered, [sym("MSSBCBS"), sym("ANONYMOUS"), sym("PLAIN")])
        self.assertEqual(frames[1][0], 0x44)  # sasl-outcome
        self.assertEqual(frames[1][1][0], 0)  # code ok

    @staticmethod
    def _frames(buf):
        from proton import Data
        frames = []
        while len(buf) >= 8 and len(buf) >= int.from_bytes(buf[:4], "big"):
            size = int.from_bytes(buf[:4], "big")
            d = Data()
            d.decode(buf[4 * buf[4]:size])
            desc = d.get_py_described() if hasattr(d, "get_py_described") else d.get_object()
            frames.append((int(desc.descriptor), list(desc.value)))
            buf = buf[size:]
        return frames

    def _has_outcome(self, buf):
        try:
            return any(code == 0x44 for code, _ in self._frames(buf))
        except Exception:
            return False

    def test_sasl_plain_with_a_device_token(self):
        conn = connect(EMU, sasl="PLAIN", user=f"dev2@sas.{HOST}", password=device_token("dev2"))
        snd = conn.create_sender(events("dev2"))
        snd.send(Message(body=b"plain"))
        conn.close()

    def test_sasl_plain_refusals_fail_sasl(self):
        from proton import ConnectionException
        cases = [("wrong key", f"dev2@sas.{HOST}", device_token("dev2", key=DEVICE_KEYS["dev1"]),
                  "signature does not match"),
                 ("user names another device", f"dev1@sas.{HOST}", device_token("dev2"),
                  "user name does not match")]
        for name, user, token, logged in cases:
            with self.subTest(name):
                with self.assertRaises(ConnectionException) as e:
                    c = connect(EMU, sasl="PLAIN", user=user, password=token, timeout=10)
                    c.create_sender(events("dev2"))
                self.assertIn("Authentication failed", str(e.exception))
                self.assertIn(f"SASL PLAIN refused for {user}: ", EMU.log_text())
                self.assertIn(logged, EMU.log_text())

    def test_cbs_disposition_before_reply(self):
        """IoT Hub settles a put-token before it sends the reply, and the Azure IoT C SDK
        (uAMQP) fails a put-token whose reply comes first. Read off Proton's frame trace
        of a client that pipelines 1,000 put-tokens on one connection, giving the reply link
        only 10 credits at a time: no reply may arrive before its request's disposition."""
        script = r"""
import re, sys
from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container
from emulator_lib import HOST, device_token, proton_ssl
N = 1000
class PutTokens(MessagingHandler):
    def __init__(self):
        super().__init__(prefetch=10)
        self.sent = self.replies = self.ok = 0
    def on_start(self, event):
        conn = event.container.connect(f"amqps://localhost:{sys.argv[2]}", ssl_domain=proton_ssl(sys.argv[1]),
                                       sasl_enabled=False, virtual_host=HOST)
        self.sender = event.container.create_sender(conn, "$cbs")
        event.container.create_receiver(conn, "$cbs")
        self.token = device_token("dev1")
    def on_sendable(self, event):
        while self.sender.credit and self.sent < N:
            self.sent += 1
            self.sender.send(Message(id=self.sent, body=self.token, properties={
                "operation": "put-token", "type": "servicebus.windows.net:sastoken",
                "name": f"{HOST}/devices/dev1"}))
    def on_message(self, event):
        self.replies += 1
        self.ok += event.message.properties["status-code"] == 200
        if self.replies == N:
            event.connection.close()
h = PutTokens()
Container(h).run()
print(h.ok)
"""
        env = dict(os.environ, PN_TRACE_FRM="1", PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(["/usr/bin/python3", "-c", script, EMU.ca, str(EMU.amqps)], env=env,
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        self.assertEqual(out.stdout.strip(), "1000")
        settled = replies = 0
        for line in (out.stderr + out.stdout).splitlines():
            if "<- @disposition" in line and "role=true" in line:
                first = int(re.search(r"first=(\d+)", line).group(1))
                last = re.search(r"last=(\d+)", line)
                settled += (int(last.group(1)) if last else first) - first + 1
            elif "<- @transfer" in line:
                replies += 1
                self.assertLessEqual(replies, settled, "a put-token's reply came before its disposition")
        self.assertEqual(replies, 1000)

    def test_refusals(self):
        conn = connect(EMU)
        cbs = Cbs(conn)
        cases = [
            ("wrong key", device_token("dev1", key=DEVICE_KEYS["dev2"]), 401, "signature"),
            ("expired", device_token("dev1", expiry=time.time() - 10), 401, "expired"),
            ("another hub", sas_token("otherhub.example/devices/dev1", DEVICE_KEYS["dev1"]), 401, "another hub"),
            ("unknown device", device_token("nobody", key=DEVICE_KEYS["dev1"]), 404, "not registered"),
            ("disabled", sas_token(f"{HOST}/devices/off", SERVICE_KEY, policy="iothubowner"), 401, "disabled"),
            ("policy without DeviceConnect", sas_token(f"{HOST}/devices/dev1", SERVICE_KEY, policy="service"), 401,
             "DeviceConnect"),
            ("garbage", "not a token", 401, "malformed"),
        ]
        for name, token, code, words in cases:
            with self.subTest(name):
                status, desc, _ = cbs.put(token)
                self.assertEqual(status, code, desc)
                self.assertIn(words, desc)
        # none of that authorized dev1 on this connection
        name, desc = detach_condition(lambda: conn.create_sender(events("dev1")))
        self.assertEqual(name, "amqp:unauthorized-access")
        conn.close()

    def test_token_for_another_device_does_not_open_its_links(self):
        conn, cbs, status, _, _ = self.authorized(device="dev2")
        self.assertEqual(status, 200)
        name, _ = detach_condition(lambda: conn.create_sender(events("dev1")))
        self.assertEqual(name, "amqp:unauthorized-access")
        snd = conn.create_sender(events("dev2"))  # its own links still work
        snd.send(Message(body=b"ok"))
        conn.close()

    def test_hub_level_policy_token_covers_every_device(self):
        conn = connect(EMU)
        status, desc, _ = Cbs(conn).put(owner_token(), audience=HOST)
        self.assertEqual(status, 200, desc)
        for d in ("dev1", "dev2", "dev3"):
            conn.create_sender(events(d)).send(Message(body=d.encode()))
        name, _ = detach_condition(lambda: conn.create_sender(events("nobody")))
        self.assertEqual(name, "amqp:not-found")
        conn.close()

    def test_token_limit_per_connection(self):
        emu = Emulator(BINARY, CERTS, extra=["--max-tokens", "2"])
        try:
            conn = connect(emu)
            cbs = Cbs(conn)
            self.assertEqual(cbs.put(device_token("dev1"))[0], 200)
            self.assertEqual(cbs.put(device_token("dev2"))[0], 200)
            self.assertEqual(cbs.put(device_token("dev1"))[0], 200)  # a renewal is no new token
            status, desc, _ = cbs.put(device_token("dev3"))
            self.assertEqual(status, 500)
            self.assertIn("maximum number of tokens per connection (2)", desc)
            conn.close()
        finally:
            emu.stop()

    def test_expiry_detaches_that_device_only(self):
        conn = connect(EMU)
        cbs = Cbs(conn)
        self.assertEqual(cbs.put(device_token("dev1", ttl=2))[0], 200)
        self.assertEqual(cbs.put(device_token("dev2"))[0], 200)
        short = conn.create_sender(events("dev1"))
        long_ = conn.create_sender(events("dev2"))
        self.assertEqual(wait_detached(conn, short), "amqp:unauthorized-access")
        long_.send(Message(body=b"still here"))
        conn.close()


class DeviceLinks(unittest.TestCase):
    def setUp(self):
        self.conn = connect(EMU)
        self.cbs = Cbs(self.conn)
        self.assertEqual(self.cbs.put(device_token("dev3"))[0], 200)

    def tearDown(self):
        self.conn.close()

    def test_addresses_match_as_each_sdk_writes_them(self):
        for address in (events("dev3"), f"amqps://{HOST}/devices/dev3/messages/events",
                        f"amqps://{HOST}:5671/devices/dev3/Messages/Events", "/devices/dev%33/messages/events"):
            with self.subTest(address):
                self.conn.create_sender(address).send(Message(body=b"x"))
        name, _ = detach_condition(lambda: self.conn.create_sender("/devices/dev3/nowhere"))
        self.assertEqual(name, "amqp:not-found")

    def test_attach_reply_carries_max_message_size(self):
        snd = self.conn.create_sender(events("dev3"))
        self.assertGreater(snd.link.remote_max_message_size, 1024)

    def test_oversize_telemetry_rejected_and_link_keeps_working(self):
        snd = self.conn.create_sender(events("dev3"))
        from proton.utils import SendException
        with self.assertRaises(SendException) as e:
            snd.send(Message(body=b"x" * (300 * 1024)))
        snd.send(Message(body=b"small"))

    def test_batched_telemetry_is_accepted(self):
        inner = [Message(body=f"m{i}".encode(), properties={"k": str(i)}).encode() for i in range(3)]
        snd = self.conn.create_sender(events("dev3"))

        def send_batch(tag, encoded):
            # A batch body: data sections (descriptor 0x75) each holding an encoded message.
            dlv = snd.link.delivery(tag)
            snd.link.send(b"".join(b"\x00\x53\x75\xb0" + len(m).to_bytes(4, "big") + m for m in encoded))
            snd.link.advance()
            deadline = time.time() + 10
            while not dlv.remote_state and time.time() < deadline:
                self.conn.container.process()
                time.sleep(0.01)
            return dlv

        dlv = send_batch("batch1", inner)
        self.assertEqual(dlv.remote_state, dlv.ACCEPTED)
        # One broken inner message fails the batch: it was unpacked, not taken as one body.
        dlv = send_batch("batch2", [inner[1], inner[0][:-3]])
        self.assertEqual(dlv.remote_state, dlv.REJECTED)
        self.assertEqual(dlv.remote.condition.name, "amqp:decode-error")

    def test_twin_get_patch_and_versions(self):
        snd = self.conn.create_sender("/devices/dev3/twin")
        rcv = self.conn.create_receiver("/devices/dev3/twin", credit=10)

        def call(op, resource=None, body=b" "):
            ann = {symbol("operation"): op}
            if resource:
                ann[symbol("resource")] = resource
            cid = str(uuid.uuid4())
            snd.send(Message(correlation_id=cid, annotations=ann, body=body, inferred=True))
            r = rcv.receive(timeout=20)
            rcv.accept()
            self.assertEqual(r.correlation_id, cid)
            return r

        r = call("GET")
        self.assertEqual(r.annotations["status"], 200)
        import json
        doc = json.loads(bytes(r.body))
        v0 = doc["reported"]["$version"]
        r = call("PATCH", "/properties/reported", b'{"rebootTime":"2026-11-22T10:00:00Z"}')
        self.assertEqual(r.annotations["status"], 204)
        self.assertEqual(r.annotations["version"], v0 + 1)
        r = call("GET")
        self.assertEqual(json.loads(bytes(r.body))["reported"]["rebootTime"], "2026-11-22T10:00:00Z")
        r = call("PATCH", "/properties/reported", b"not json")
        self.assertEqual(r.annotations["status"], 400)
        r = call("PUT", "/notifications/twin/properties/desired")
        self.assertEqual(r.annotations["status"], 200)
        # a desired change from the service reaches the subscribed device
        status, _, twin = EMU.rest("PATCH", "/twins/dev3", {"properties": {"desired": {"interval": 30}}})
        self.assertEqual(status, 200)
        push = rcv.receive(timeout=20)
        rcv.accept()
        self.assertIsNone(push.correlation_id)
        body = json.loads(bytes(push.body))
        self.assertEqual(body["interval"], 30)
        self.assertEqual(body["$version"], twin["properties"]["desired"]["$version"])

    def test_direct_method_round_trip_and_errors(self):
        req_rcv = self.conn.create_receiver("/devices/dev3/methods/devicebound", credit=10)
        rsp_snd = self.conn.create_sender("/devices/dev3/methods/devicebound")
        result = {}

        def invoke():
            result["r"] = EMU.rest("POST", "/twins/dev3/methods",
                                   {"methodName": "rebootDevice", "payload": {"delay": 5},
                                    "responseTimeoutInSeconds": 10})
        t = threading.Thread(target=invoke)
        t.start()
        req = req_rcv.receive(timeout=20)
        req_rcv.accept()
        self.assertIsInstance(req.correlation_id, uuid.UUID)
        self.assertEqual(req.properties["IoThub-methodname"], "rebootDevice")
        self.assertEqual(bytes(req.body), b'{"delay":5}')
        rsp_snd.send(Message(correlation_id=req.correlation_id, properties={"IoThub-status": 201},
                             body=b'{"rebooting":true}', inferred=True))
        t.join(30)
        status, headers, body = result["r"]
        self.assertEqual((status, body), (200, {"status": 201, "payload": {"rebooting": True}}))
        # a device that is not connected
        status, headers, body = EMU.rest("POST", "/twins/dev2/methods", {"methodName": "x"})
        self.assertEqual((status, headers.get("iothub-errorcode")), (404, "DeviceNotOnline"))
        self.assertIn("404103", body["Message"])
        # a device that does not answer in time
        status, headers, _ = EMU.rest("POST", "/twins/dev3/methods",
                                      {"methodName": "slow", "responseTimeoutInSeconds": 5})
        self.assertEqual((status, headers.get("iothub-errorcode")), (504, "GatewayTimeout"))
        req_rcv.receive(timeout=5)
        req_rcv.accept()

    def test_c2d_complete_reject_abandon(self):
        svc = connect(EMU)
        self.assertEqual(Cbs(svc).put(owner_token(), audience=HOST)[0], 200)
        sender = svc.create_sender("/messages/devicebound")
        for i in range(3):
            sender.send(Message(address="/devices/dev3/messages/devicebound", id=f"m{i}", body=f"c2d {i}".encode(),
                                properties={"n": str(i)}))
        rcv = self.conn.create_receiver("/devices/dev3/messages/devicebound", credit=10)
        got = []
        for _ in range(3):
            got.append(rcv.receive(timeout=20))
            rcv.accept()  # the oldest unsettled delivery
        self.assertEqual([bytes(m.body) for m in got], [b"c2d 0", b"c2d 1", b"c2d 2"])
        self.assertEqual(got[0].properties, {"n": "0"})
        self.assertEqual(got[0].address, "/devices/dev3/messages/devicebound")
        # abandon comes back, reject does not
        sender.send(Message(address="/devices/dev3/messages/devicebound", id="again", body=b"again"))
        m = rcv.receive(timeout=20)
        rcv.release()
        m2 = rcv.receive(timeout=20)
        self.assertEqual(bytes(m2.body), b"again")
        rcv.reject()
        with self.assertRaises(Exception):
            rcv.receive(timeout=2)
        # an unknown device, a body over 64 KB and a full queue are refused
        from proton.utils import SendException
        with self.assertRaises(SendException):
            sender.send(Message(address="/devices/nobody/messages/devicebound", body=b"x"))
        with self.assertRaises(SendException):
            sender.send(Message(address="/devices/dev3/messages/devicebound", body=b"x" * (65 * 1024)))
        for i in range(50):
            sender.send(Message(address="/devices/dev2/messages/devicebound", body=b"q%d" % i))
        with self.assertRaises(SendException) as e:
            sender.send(Message(address="/devices/dev2/messages/devicebound", body=b"one too many"))
        from proton import Delivery
        self.assertEqual(e.exception.state, Delivery.REJECTED)
        self.assertIn("C2D for dev2 refused: amqp:resource-limit-exceeded: DeviceMaximumQueueDepthExceeded",
                      EMU.log_text())
        svc.close()

    def test_second_connection_takes_the_device_over(self):
        old = self.conn.create_receiver("/devices/dev3/messages/devicebound", credit=1)
        other = connect(EMU)
        self.assertEqual(Cbs(other).put(device_token("dev3"))[0], 200)
        other.create_receiver("/devices/dev3/messages/devicebound", credit=1)
        self.assertEqual(wait_detached(self.conn, old), "com.microsoft:link-creation-conflict")
        other.close()


class Modules(unittest.TestCase):
    """A module (mod1 of dev3) is an identity of its own: its token, its links, its twin,
    its methods, and its messages in the stream marked with its module id."""

    def test_module_links_twin_methods_and_telemetry(self):
        reader = StreamReader(EMU)
        conn = connect(EMU)
        try:
            cbs = Cbs(conn)
            base = "/devices/dev3/modules/mod1"
            # dev3's own token does not cover its module
            self.assertEqual(cbs.put(device_token("dev3"))[0], 200)
            name, _ = detach_condition(lambda: conn.create_sender(base + "/messages/events"))
            self.assertEqual(name, "amqp:unauthorized-access")
            # a token signed with another key is refused
            self.assertEqual(cbs.put(module_token("dev3", "mod1", key=DEVICE_KEYS["dev3"]))[0], 401)
            self.assertEqual(cbs.put(module_token("dev3", "mod1"))[0], 200)
            conn.create_sender(base + "/messages/events").send(Message(id="from-mod1", body=b"m"))
            conn.create_sender("/devices/dev3/messages/events").send(Message(id="from-dev3", body=b"d"))
            # its twin is not the device's
            tw_snd = conn.create_sender(base + "/twin")
            tw_rcv = conn.create_receiver(base + "/twin", credit=10)
            tw_snd.send(Message(correlation_id="t1", annotations={"operation": "PATCH",
                                                                 "resource": "/properties/reported"},
                                body=b'{"role":"filter"}'))
            self.assertEqual(tw_rcv.receive(timeout=20).annotations["status"], 204)
            tw_rcv.accept()
            status, _, twin = EMU.rest("GET", "/twins/dev3/modules/mod1")
            self.assertEqual((status, twin["properties"]["reported"]["role"]), (200, "filter"))
            status, _, twin = EMU.rest("GET", "/twins/dev3")
            self.assertNotIn("role", twin["properties"]["reported"])
            # a method called on the module reaches the module's link only
            req_rcv = conn.create_receiver(base + "/methods/devicebound", credit=10)
            rsp_snd = conn.create_sender(base + "/methods/devicebound")
            result = {}
            t = threading.Thread(target=lambda: result.setdefault("r", EMU.rest(
                "POST", "/twins/dev3/modules/mod1/methods", {"methodName": "ping", "responseTimeoutInSeconds": 10})))
            t.start()
            req = req_rcv.receive(timeout=20)
            req_rcv.accept()
            self.assertEqual(req.properties["IoThub-methodname"], "ping")
            rsp_snd.send(Message(correlation_id=req.correlation_id, properties={"IoThub-status": 200},
                                 body=b'"pong"', inferred=True))
            t.join(30)
            self.assertEqual((result["r"][0], result["r"][2]), (200, {"status": 200, "payload": "pong"}))
            status, headers, _ = EMU.rest("POST", "/twins/dev3/methods", {"methodName": "ping"})
            self.assertEqual((status, headers.get("iothub-errorcode")), (404, "DeviceNotOnline"))
            # the stream tells the module's messages from the device's
            deadline = time.time() + 10
            while time.time() < deadline and {"from-mod1", "from-dev3"} - {e[1] for e in reader.events}:
                time.sleep(0.05)
            seen = {e[1]: e[2] for e in reader.events if e[1] in ("from-mod1", "from-dev3")}
            self.assertEqual(seen["from-mod1"].get("iothub-connection-module-id"), "mod1")
            self.assertEqual(seen["from-mod1"].get("iothub-connection-device-id"), "dev3")
            self.assertNotIn("iothub-connection-module-id", seen["from-dev3"])
        finally:
            conn.close()
            reader.stop()


class RestTwin(unittest.TestCase):
    def test_etag_merge_and_limits(self):
        status, _, t0 = EMU.rest("GET", "/twins/dev1")
        self.assertEqual(status, 200)
        status, headers, _ = EMU.rest("PATCH", "/twins/dev1", {"tags": {"site": "a"}}, headers={"If-Match": '"AAAAAAAAAAA="'})
        self.assertEqual((status, headers.get("iothub-errorcode")), (412, "PreconditionFailed"))
        status, _, t1 = EMU.rest("PATCH", "/twins/dev1", {"tags": {"site": "a", "floor": 2},
                                                          "properties": {"desired": {"a": 1, "b": {"c": 2}}}},
                                 headers={"If-Match": '"%s"' % t0["etag"]})
        self.assertEqual(status, 200)
        self.assertNotEqual(t1["etag"], t0["etag"])
        self.assertEqual(t1["version"], t0["version"] + 2)  # tags and desired each changed
        status, _, t2 = EMU.rest("PATCH", "/twins/dev1", {"tags": {"floor": None},
                                                          "properties": {"desired": {"b": {"c": None, "d": 3}}}})
        self.assertEqual(t2["tags"], {"site": "a"})
        self.assertEqual({k: v for k, v in t2["properties"]["desired"].items() if not k.startswith("$")},
                         {"a": 1, "b": {"d": 3}})
        status, headers, _ = EMU.rest("PATCH", "/twins/dev1", {"properties": {"desired": {"big": "x" * 40000}}})
        self.assertEqual((status, headers.get("iothub-errorcode")), (413, "MessageTooLarge"))
        deep = {}
        for _ in range(11):
            deep = {"d": deep or 1}
        status, _, _ = EMU.rest("PATCH", "/twins/dev1", {"properties": {"desired": deep}})
        self.assertEqual(status, 400)
        status, _, t3 = EMU.rest("GET", "/twins/dev1")
        self.assertEqual(t3["etag"], t2["etag"])  # refused patches changed nothing
        status, headers, _ = EMU.rest("GET", "/twins/dev1", token="SharedAccessSignature sr=x&sig=y&se=1&skn=nobody")
        self.assertEqual((status, headers.get("iothub-errorcode")), (401, "IotHubUnauthorizedAccess"))


class RestRegistry(unittest.TestCase):
    def test_create_read_list_update_delete(self):
        status, _, dev = EMU.rest("PUT", "/devices/new-1", {"deviceId": "new-1"})
        self.assertEqual(status, 200, dev)
        self.assertEqual((dev["deviceId"], dev["status"], dev["connectionState"]), ("new-1", "enabled", "Disconnected"))
        key = dev["authentication"]["symmetricKey"]["primaryKey"]
        self.assertEqual(len(base64.b64decode(key)), 32)  # made up for it
        status, headers, body = EMU.rest("PUT", "/devices/new-1", {"deviceId": "new-1"})
        self.assertEqual((status, headers.get("iothub-errorcode")), (409, "DeviceAlreadyExists"))
        self.assertEqual(EMU.rest("GET", "/devices/new-1")[2]["authentication"], dev["authentication"])
        self.assertIn("new-1", [d["deviceId"] for d in EMU.rest("GET", "/devices")[2]])
        with open(EMU.registry) as f:
            self.assertIn("new-1", f.read())  # saved
        # it can connect with the key it was given
        conn = connect(EMU)
        self.assertEqual(Cbs(conn).put(sas_token(f"{HOST}/devices/new-1", key))[0], 200)
        sender = conn.create_sender(events("new-1"))
        sender.send(Message(body=b"hello"))
        # a stale etag is refused; disabling with the right one detaches its links at once
        status, _, _ = EMU.rest("PUT", "/devices/new-1", {"deviceId": "new-1", "status": "disabled"},
                                headers={"If-Match": '"bm90LWl0"'})
        self.assertEqual(status, 412)
        status, _, upd = EMU.rest("PUT", "/devices/new-1", {"deviceId": "new-1", "status": "disabled"},
                                  headers={"If-Match": f'"{dev["etag"]}"'})
        self.assertEqual((status, upd["status"]), (200, "disabled"), upd)
        self.assertNotEqual(upd["etag"], dev["etag"])
        self.assertEqual(wait_detached(conn, sender), "amqp:unauthorized-access")
        conn.close()
        # a method call waiting for the device to connect when it is deleted: DeviceNotFound
        waiting = {}
        t = threading.Thread(target=lambda: waiting.setdefault("r", EMU.rest(
            "POST", "/twins/new-1/methods", {"methodName": "x", "connectTimeoutInSeconds": 20})))
        t.start()
        time.sleep(0.5)  # the call waits at the hub
        # delete needs If-Match; then it is gone, from the file too
        self.assertEqual(EMU.rest("DELETE", "/devices/new-1")[0], 400)
        self.assertEqual(EMU.rest("DELETE", "/devices/new-1", headers={"If-Match": "*"})[0], 204)
        t.join(10)
        status, headers, _ = waiting["r"]
        self.assertEqual((status, headers.get("iothub-errorcode")), (404, "DeviceNotFound"))
        status, headers, _ = EMU.rest("GET", "/devices/new-1")
        self.assertEqual((status, headers.get("iothub-errorcode")), (404, "DeviceNotFound"))
        with open(EMU.registry) as f:
            self.assertNotIn("new-1", f.read())

    def test_refusals(self):
        bad = [
            ({"deviceId": "other"}, 400, "differs"),
            ({"deviceId": "r1", "status": "sleeping"}, 400, "status"),
            ({"deviceId": "r1", "authentication": {"type": "selfSigned"}}, 400, "sas"),
            ({"deviceId": "r1", "authentication": {"symmetricKey": {"primaryKey": "short"}}}, 400, "base64"),
        ]
        for body, status, text in bad:
            s, _, b = EMU.rest("PUT", "/devices/r1", body)
            self.assertEqual(s, status, b)
            self.assertIn(text, json.loads(b["Message"])["message"])
        # read-only policy cannot write; a body that is not JSON by its type is refused
        read_only = sas_token(HOST, SERVICE_KEY, policy="registryRead")
        self.assertEqual(EMU.rest("PUT", "/devices/r1", {"deviceId": "r1"}, token=read_only)[0], 401)
        self.assertEqual(EMU.rest("GET", "/devices/dev1", token=read_only)[0], 200)
        s, headers, _ = EMU.rest("PUT", "/devices/r1", {"deviceId": "r1"}, headers={"Content-Type": "text/plain"})
        self.assertEqual((s, headers.get("iothub-errorcode")), (415, "UnsupportedMediaType"))
        self.assertEqual(EMU.rest("POST", "/devices/r1", {})[0], 405)


def c2d_with_feedback(emu, device):
    """A service connection with a feedback receiver and a C2D sender, and the device's
    connection with its C2D receiver: (svc, feedback, sender, dev, c2d)."""
    svc = connect(emu)
    assert Cbs(svc).put(owner_token(), audience=HOST)[0] == 200
    feedback = svc.create_receiver("/messages/serviceBound/feedback", credit=10)
    sender = svc.create_sender("/messages/devicebound")
    dev = connect(emu)
    assert Cbs(dev).put(device_token(device))[0] == 200
    return svc, feedback, sender, dev, dev.create_receiver(f"/devices/{device}/messages/devicebound", credit=10)


class Feedback(unittest.TestCase):
    def test_feedback_for_messages_that_ask_for_it(self):
        svc, feedback, sender, dev, c2d = c2d_with_feedback(EMU, "dev1")
        # a uuid message-id (the Node service SDK sends one for an id that looks like it)
        # comes back as its text
        uid = uuid.UUID("3f0a9c1e-7b2d-4e5f-8a6b-0c1d2e3f4a5b")
        for mid, ack in (("fb-ok", "full"), (uid, "negative"), ("fb-quiet", "positive")):
            sender.send(Message(address="/devices/dev1/messages/devicebound", id=mid, body=str(mid).encode(),
                                properties={"iothub-ack": ack}))
        c2d.receive(timeout=20)
        c2d.accept()  # fb-ok completed: Success (full asks for both)
        c2d.receive(timeout=20)
        c2d.reject()  # fb-no rejected: Rejected
        c2d.receive(timeout=20)
        c2d.reject()  # fb-quiet rejected, but only positive feedback was asked for
        pump(dev)
        records = []
        while len(records) < 2:
            m = feedback.receive(timeout=10)
            feedback.accept()
            self.assertEqual(m.content_type, "application/vnd.microsoft.iothub.feedback.json")
            self.assertEqual(bytes(m.user_id), HOST.encode())
            self.assertTrue(m.inferred, "the records must be a data section (the Node SDK reads Message.data)")
            records += json.loads(bytes(m.body))
        self.assertEqual(sorted((r["originalMessageId"], r["statusCode"], r["deviceId"]) for r in records),
                         [(str(uid), "Rejected", "dev1"), ("fb-ok", "Success", "dev1")])
        self.assertTrue(all(r["enqueuedTimeUtc"].endswith("Z") and r["deviceGenerationId"] for r in records))
        with self.assertRaises(Exception):
            feedback.receive(timeout=1)  # nothing for fb-quiet
        dev.close()
        svc.close()


class C2dDeadlines(unittest.TestCase):
    """Locks a device does not answer, and messages that outlive their time to live."""

    def test_lock_expires_and_messages_expire(self):
        emu = Emulator(BINARY, CERTS, extra=["--c2d-lock-timeout", "1", "--c2d-ttl", "3"])
        try:
            svc, feedback, sender, dev, c2d = c2d_with_feedback(emu, "dev1")
            sender.send(Message(address="/devices/dev1/messages/devicebound", id="held", body=b"held",
                                properties={"iothub-ack": "full"}))
            first = c2d.receive(timeout=20)
            held_since = time.time()
            # not answered: after the 1 s lock the hub settles that delivery and sends the
            # message again under a new lock token
            again = c2d.receive(timeout=10)
            self.assertGreater(time.time() - held_since, 0.8)
            self.assertEqual((bytes(first.body), bytes(again.body)), (b"held", b"held"))
            lost, current = c2d.fetcher.unsettled
            self.assertTrue(lost.settled)  # settled by the hub
            self.assertNotEqual(lost.tag, current.tag)
            self.assertIn("dev1: C2D message held: lock expired after 1 s without an answer; sent again",
                          emu.log_text())
            c2d.accept()  # the lost lock: ignored
            c2d.accept()  # the current one completes the message
            pump(dev)
            # dev2 is offline: one message with its own absolute-expiry-time, one with the
            # hub's time to live (2 s); both expire, and negative feedback says so
            sender.send(Message(address="/devices/dev2/messages/devicebound", id="own-expiry", body=b"x",
                                expiry_time=time.time() + 1, properties={"iothub-ack": "negative"}))
            sender.send(Message(address="/devices/dev2/messages/devicebound", id="hub-ttl", body=b"y",
                                properties={"iothub-ack": "full"}))
            records, deadline = [], time.time() + 15
            while len(records) < 3 and time.time() < deadline:
                try:
                    m = feedback.receive(timeout=1)
                except Exception:
                    pump(dev)
                    continue
                feedback.accept()
                records += json.loads(bytes(m.body))
            self.assertEqual(sorted((r["originalMessageId"], r["statusCode"], r["deviceId"]) for r in records),
                             [("held", "Success", "dev1"), ("hub-ttl", "Expired", "dev2"),
                              ("own-expiry", "Expired", "dev2")])
            dev2 = connect(emu)
            self.assertEqual(Cbs(dev2).put(device_token("dev2"))[0], 200)
            with self.assertRaises(Exception):
                dev2.create_receiver("/devices/dev2/messages/devicebound", credit=10).receive(timeout=2)
            self.assertIn("dev2: C2D message own-expiry expired before delivery", emu.log_text())
            for c in (dev2, dev, svc):
                c.close()
        finally:
            emu.stop()
            emu.log.close()


class Startup(unittest.TestCase):
    """Settings from --config with the command line winning, and start-up failures that
    say what is wrong and exit non-zero."""

    def run_emulator(self, *args, timeout=20):
        cert, key = os.path.join(CERTS, "server.pem"), os.path.join(CERTS, "server.key")
        if "--mqtts" not in args:  # not the default 8883, which another test may hold
            args = (*args, "--mqtts", "off")
        return subprocess.run([BINARY, "--cert", cert, "--key", key, *args], capture_output=True, text=True,
                              timeout=timeout)

    def test_config_file_and_command_line(self):
        with tempfile.TemporaryDirectory() as d:
            config = os.path.join(d, "emulator.yaml")
            with open(config, "w") as f:
                f.write("hostname: hub.example\nlisten: 127.0.0.1:0\namqps: 127.0.0.1:0\nmqtts: 127.0.0.1:0\n"
                        "partitions: 2\nc2dLockTimeout: 30\n")
            emu = subprocess.Popen([BINARY, "--config", config, "--partitions", "3", "--cert",
                                    os.path.join(CERTS, "server.pem"), "--key", os.path.join(CERTS, "server.key")],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                lines = [readline_within(emu, 20) for _ in range(7)]
            finally:
                emu.terminate()
                emu.wait(30)
                emu.stdout.close()
            text = "\n".join(lines)
            self.assertIn("hub: hub.example", text)
            self.assertIn("Partitions/0..2", text)  # --partitions 3 won over the file's 2
            self.assertRegex(text, r"listening: amqps 127\.0\.0\.1:\d+")
            self.assertRegex(text, r"listening: mqtts 127\.0\.0\.1:\d+")
            with open(config, "w") as f:
                f.write("hostname: hub.example\nlisten: 127.0.0.1:0\nc2dLockTimout: 30\n")
            r = self.run_emulator("--config", config)
            self.assertEqual(r.returncode, 1)
            self.assertIn(f"{config}:3: unknown key \"c2dLockTimout\"", r.stderr)

    def test_failures_name_their_cause(self):
        r = self.run_emulator("--listen", "127.0.0.1:0", "--amqps", f"127.0.0.1:{EMU.amqps}")
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"cannot listen on 127.0.0.1:{EMU.amqps}: Address already in use", r.stderr)
        r = self.run_emulator("--listen", "127.0.0.1:0", "--amqps", "off", "--key", os.path.join(CERTS, "ca.pem"))
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"TLS key '{os.path.join(CERTS, 'ca.pem')}'", r.stderr)
        r = self.run_emulator("--listen", "off", "--amqps", "127.0.0.1:0", "--cert", "/nonexistent.pem")
        self.assertEqual(r.returncode, 1)
        self.assertIn("TLS certificate '/nonexistent.pem': No such file or directory", r.stderr)
        r = self.run_emulator("--c2d-ttl", "0")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--c2d-ttl must be 1..172800", r.stderr)


class StreamRedirect(unittest.TestCase):
    """--stream-redirect: readers of messages/events are sent to the Event Hub-compatible
    endpoint with amqp:link:redirect, as IoT Hub does, and authenticate there by CBS."""
    EVENT_HUB = "iothub-ehub-localhost-emulator"

    def test_redirect_then_event_hub_reading(self):
        emu = Emulator(BINARY, CERTS, extra=["--stream-redirect"])
        try:
            svc = connect(emu, sasl="PLAIN", user="iothubowner@sas.root.localhost", password=owner_token())
            try:
                svc.create_receiver("messages/events/ConsumerGroups/$Default/Partitions/2")
                raise AssertionError("the hub did not redirect")
            except LinkDetached as e:
                cond = e.link.remote_condition
            # a consumer group whose redirect address would not fit is refused, not cut
            name, text = detach_condition(lambda: svc.create_receiver(
                "messages/events/ConsumerGroups/" + "g" * 600 + "/Partitions/2"))
            self.assertEqual((name, text), ("amqp:invalid-field", "the consumer group's name is too long"))
            svc.close()
            self.assertEqual(cond.name, "amqp:link:redirect")
            info = {str(k): v for k, v in cond.info.items()}
            self.assertEqual(info["hostname"], "localhost")
            self.assertEqual(info["port"], emu.amqps)
            self.assertEqual(info["address"],
                             f"amqps://localhost:{emu.amqps}/{self.EVENT_HUB}/ConsumerGroups/$Default/Partitions/2")
            # the Event Hubs way in: SASL ANONYMOUS, then a put-token for sb://{host}/{event hub}
            eh = connect(emu, sasl="ANONYMOUS")
            cbs = Cbs(eh)
            audience = f"sb://localhost/{self.EVENT_HUB}"
            refusals = [
                (sas_token(audience, SERVICE_KEY), "signed by a policy"),  # no skn: not a policy's
                (sas_token("sb://localhost/other-hub", SERVICE_KEY, policy="service"), "another event hub"),
                (sas_token(audience, DEVICE_POLICY_KEY, policy="device"), "ServiceConnect"),
                (sas_token(audience, DEVICE_POLICY_KEY, policy="service"), "signature"),
            ]
            for token, expect in refusals:
                status, text, _ = cbs.put(token, audience)
                self.assertEqual(status, 401, (expect, text))
                self.assertIn(expect.lower(), text.lower())
            name, _ = detach_condition(lambda: eh.create_receiver(f"{self.EVENT_HUB}/ConsumerGroups/$Default/"
                                                                  "Partitions/0"))
            self.assertEqual(name, "amqp:unauthorized-access")  # nothing granted yet
            eh.close()
            eh = connect(emu, sasl="ANONYMOUS")
            self.assertEqual(Cbs(eh).put(sas_token(audience, SERVICE_KEY, policy="service"), audience)[0], 200)
            name, text = detach_condition(lambda: eh.create_receiver("other-hub/ConsumerGroups/$Default/Partitions/0"))
            self.assertEqual(name, "amqp:not-found")
            self.assertIn(self.EVENT_HUB, text)
            # a device's message, read at the address the redirect named
            dev = connect(emu)
            self.assertEqual(Cbs(dev).put(device_token("dev1"))[0], 200)
            dev.create_sender(events("dev1")).send(Message(id="via-event-hub", body=b"x"))
            dev.close()
            from proton.reactor import Selector
            receivers = [eh.create_receiver(f"amqps://localhost:{emu.amqps}/{self.EVENT_HUB}/ConsumerGroups/"
                                            f"$Default/Partitions/{n}", credit=10,
                                            options=Selector("amqp.annotation.x-opt-offset > '-1'"))
                         for n in range(4)]
            pump(eh, 1.0)
            got = []
            for rcv in receivers:
                while rcv.fetcher.incoming:
                    m = rcv.receive(timeout=1)  # (sent settled: nothing to accept)
                    got.append((m.id, m.annotations["iothub-connection-device-id"]))
            eh.close()
            self.assertEqual(got, [("via-event-hub", "dev1")])
        finally:
            emu.stop()
            emu.log.close()


class HostileInput(unittest.TestCase):
    def raw(self, data):
        return raw_tls_exchange(EMU.amqps, EMU.ca, data, limit=4096)

    def test_garbage_after_header_closes_that_connection_only(self):
        keep = connect(EMU)
        self.assertEqual(Cbs(keep).put(device_token("dev1"))[0], 200)
        snd = keep.create_sender(events("dev1"))
        for garbage in (b"AMQP\x00\x01\x00\x00" + b"\xff" * 64, b"HELLO THERE\r\n\r\n"):
            t0 = time.time()
            self.raw(garbage)
            self.assertLess(time.time() - t0, 5, "the emulator did not close a connection sending %r" % garbage[:12])
        self.assertIn("amqp:connection:framing-error", EMU.log_text())
        snd.send(Message(body=b"still served"))
        keep.close()

    def test_bad_cbs_request_gets_an_error_reply(self):
        conn = connect(EMU)
        cbs = Cbs(conn)
        cbs.sender.send(Message(id=9, body="x", properties={"operation": "delete-token"}))
        r = cbs.receiver.receive(timeout=20)
        cbs.receiver.accept()
        self.assertEqual(r.properties["status-code"], 400)
        conn.close()


run_tests()
