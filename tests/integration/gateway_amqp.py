"""Devices written for IoT Hub's AMQP, unchanged, through iotgw (devices.amqp,
docs/sdk-devices.md): Debian's python3-qpid-proton speaks to the gateway as a device SDK
speaks to the hub (a CBS put-token with the device's SAS token, then the device's links:
telemetry, C2D, direct methods, twin), and iothub-emulator, as the hub, sees each device
as its own identity on the gateway's one upstream connection: its telemetry in the stream,
direct methods and twins from the service REST API, C2D from the service's AMQP sender.
Several devices share one connection, as the C SDK multiplexes them. Every refusal is
checked with its status or AMQP condition while a bystander on the same connection keeps
being served; a client certificate from another CA is refused at TLS.

A protobuf device (device_lib) shares the gateway: the newest connection of an identity
wins across both protocols, on the gateway's one hub connection.

usage: gateway_amqp.py IOTHUB_EMULATOR IOTGW SCHEMAS_DESC CERT_DIR [Class.test ...]"""
import json
import os
import re
import ssl
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

from proton import Delivery, Endpoint, Message, SSLDomain, symbol
from proton.utils import BlockingConnection, LinkDetached

import urllib.request

from iotgw_testlib import WRAPPER, LoggedProcess, readline_within, run_tests
from device_lib import Device, T, load_schemas
from emulator_lib import (Cbs, Emulator, HOST, StreamReader, connect, fleet_registry, owner_token, pump,
                          random_key, raw_tls_exchange, sas_token, wait_detached)

EMULATOR, IOTGW, SCHEMAS, CERTS = sys.argv[1:5]
del sys.argv[1:5]
load_schemas(SCHEMAS)
CA = os.path.join(CERTS, "ca.pem")
DEVICES = ["amqp1", "amqp2", "amqp3", "multi1", "multi2", "multi3", "method1", "twin1", "c2d1", "expiry1",
           "newest1", "big1", "test-device", "both1", "slow1"]
KEYS = {d: random_key() for d in DEVICES}
MAX_IN_FLIGHT = 8
EMU = GW = STREAM = None


class Gateway(LoggedProcess):
    """iotgw with an AMQP listener (TLS; with client_ca, every device presents a client
    certificate the test CA signed)."""
    name = "iotgw"

    def __init__(self, client_ca=False, cert=None):
        self.dir = tempfile.mkdtemp(prefix="iotgw-amqp-test-")
        config = os.path.join(self.dir, "iotgw.yaml")
        fleet = "".join(f"    - id: {d}\n      key: {k}\n" for d, k in KEYS.items())
        with open(config, "w") as f:
            f.write(f"""gatewayId: amqp-test-gw
ops:
  listen: 127.0.0.1:0
hub:
  hostName: {HOST}
  port: {EMU.wss}
  caFile: {EMU.ca}
devices:
  listen: 127.0.0.1:0
  maxInFlight: {MAX_IN_FLIGHT}
  tls:
    cert: {cert or os.path.join(CERTS, "server.pem")}
    key: {cert[:-4] + ".key" if cert else os.path.join(CERTS, "server.key")}
{f"    clientCa: {CA}" if client_ca else ""}
  amqp:
    listen: 127.0.0.1:0
fleet:
  devices:
{fleet}""")
        self.log = open(os.path.join(self.dir, "iotgw.log"), "w+")
        self.proc = subprocess.Popen(WRAPPER + [IOTGW, "--config", config], stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=dict(os.environ, IOTGW_LOG_BURST="100000"))
        lines = [readline_within(self.proc, 20) for _ in range(3)]
        m = [re.match(r"listening: (devices|amqp|ops) \S+:(\d+)$", line) for line in lines]
        assert all(m), f"iotgw's listening lines: {lines}\n{self.log_text()[-3000:]}"
        ports = {x.group(1): int(x.group(2)) for x in m}
        self.port, self.protobuf, self.ops = ports["amqp"], ports["devices"], ports["ops"]


def setUpModule():
    global EMU, GW, STREAM
    EMU = Emulator(EMULATOR, CERTS, registry=fleet_registry(KEYS))
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


def gateway_connection(cert=None, sasl=True, gw=None):
    """A device's AMQPS connection to the gateway (SASL ANONYMOUS, as the SDKs), with a
    client certificate (a name in CERTS) if cert."""
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    domain.set_trusted_ca_db(CA)
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
    if cert:
        domain.set_credentials(os.path.join(CERTS, cert + ".pem"), os.path.join(CERTS, cert + ".key"), None)
    kw = dict(allowed_mechs="ANONYMOUS") if sasl else dict(sasl_enabled=False)
    return BlockingConnection(f"amqps://localhost:{(gw or GW).port}", ssl_domain=domain, timeout=20,
                              virtual_host=HOST, **kw)


def annotations(m):
    return {str(k): v for k, v in (m.annotations or {}).items()}


def send(sender, msg):
    """Send and wait for the gateway's outcome: (state, condition name or None)."""
    d = sender.send(msg, error_states=[])
    cond = d.remote.condition
    return d.remote_state, cond.name if cond else None


class DeviceOn:
    """A device authorized on a (shared) connection, with its telemetry sender."""

    def __init__(self, conn, cbs, device, key=None):
        self.conn, self.device = conn, device
        status, why, _ = cbs.put(token(device, key), audience=f"{HOST}/devices/{device}")
        assert status == 200, (status, why)
        self.sender = conn.create_sender(f"/devices/{device}/messages/events")

    def telemetry(self, test, prefix="tm", **props):
        mid = new_id(prefix)
        state, cond = send(self.sender, Message(id=mid, body=b"{\"t\":1}", properties=props or None,
                                                content_type="application/json", content_encoding="utf-8"))
        test.assertEqual((state, cond), (Delivery.ACCEPTED, None), GW.log_text()[-2000:])
        return STREAM.get(mid)


class Telemetry(unittest.TestCase):
    def setUp(self):
        self.conn = gateway_connection()
        self.cbs = Cbs(self.conn)

    def tearDown(self):
        self.conn.close()

    def test_reaches_the_hub_as_the_device_with_its_properties(self):
        dev = DeviceOn(self.conn, self.cbs, "amqp1")
        m = dev.telemetry(self, level="high & hot", n="1")
        self.assertEqual(annotations(m)["iothub-connection-device-id"], "amqp1")
        self.assertEqual((m.properties or {}).get("level"), "high & hot")
        self.assertEqual(m.content_type, "application/json")
        self.assertRegex(GW.log_text(), r"device amqp1 connected from amqps \S+ \(AMQP over TLS\)")

    def test_credit_is_the_window(self):
        """The telemetry link's credit is devices.maxInFlight: what the gateway holds for
        the device is bounded by the device's own link."""
        dev = DeviceOn(self.conn, self.cbs, "amqp2")
        pump(self.conn, 0.5)
        self.assertEqual(dev.sender.link.credit, MAX_IN_FLIGHT)
        for i in range(3 * MAX_IN_FLIGHT):  # the credit comes back as outcomes do
            dev.telemetry(self, "window")

    def test_many_devices_on_one_connection(self):
        """As the C SDK multiplexes devices: each its own put-token, links and identity."""
        devs = [DeviceOn(self.conn, self.cbs, d) for d in ("multi1", "multi2", "multi3")]
        for d in devs:
            m = d.telemetry(self, "multi")
            self.assertEqual(annotations(m)["iothub-connection-device-id"], d.device)
        # the hub sees three identities, each connected
        for d in devs:
            status, _, t = EMU.rest("GET", f"/twins/{d.device}")
            self.assertEqual((status, t["connectionState"]), (200, "Connected"))

    def test_a_message_over_the_hubs_limit_is_refused_alone(self):
        dev = DeviceOn(self.conn, self.cbs, "big1")
        state, cond = send(dev.sender, Message(id=new_id("big"), body=b"x" * (256 * 1024 + 1)))
        self.assertEqual((state, cond), (Delivery.REJECTED, "amqp:link:message-size-exceeded"))
        dev.telemetry(self, "after-big")  # the same link goes on


class Refusals(unittest.TestCase):
    """Each refusal with its status or condition, on the connection of a bystander device
    that keeps sending."""

    def setUp(self):
        self.conn = gateway_connection()
        self.cbs = Cbs(self.conn)
        self.bystander = DeviceOn(self.conn, self.cbs, "amqp3")

    def tearDown(self):
        self.bystander.telemetry(self, "bystander")
        self.conn.close()

    def put(self, tok, audience):
        status, why, _ = self.cbs.put(tok, audience=audience)
        return status, why

    def test_put_tokens_refused(self):
        aud = f"{HOST}/devices/amqp1"
        cases = [
            (token("amqp1", key=random_key()), aud, 401, "signature"),                 # a wrong key
            (token("amqp2"), aud, 401, "sr"),                                        # another device's token
            (token("ghost1", key=random_key()), f"{HOST}/devices/ghost1", 404, "not in this gateway's fleet"),
            (token("amqp1", resource="otherhub.example/devices/amqp1"), "otherhub.example/devices/amqp1", 401,
             "audience"),
            (token("amqp1", ttl=-10), aud, 401, "expired"),
            (sas_token(HOST, KEYS["amqp1"], policy="iothubowner"), HOST, 401, "audience"),  # the whole hub
        ]
        for tok, audience, status, words in cases:
            got, why = self.put(tok, audience)
            self.assertEqual(got, status, (audience, why))
            self.assertIn(words, why)
        self.bystander.telemetry(self, "between")
        GW.wait_for_log("put-token refused (404)")

    def test_frames_that_would_abort_proton_are_refused_alone(self):
        """conn.c's frame guard, over TLS: a transfer that starts a delivery with more=true
        and no delivery-id (Debian's Proton asserts on it: the gateway would abort) gets
        the AMQP close amqp:invalid-field; a second sasl-init (Proton leaks) ends that
        connection; the bystander on its own connection goes on (tearDown)."""
        from proton import Data, Described, ulong, uint

        def frame(code, fields, ftype=0):
            d = Data()
            d.put_object(Described(ulong(code), fields))
            body = d.encode()
            return struct.pack(">IBBH", 8 + len(body), 2, ftype, 0) + body

        sasl = b"AMQP\x03\x01\x00\x00" + frame(0x41, [symbol("ANONYMOUS"), b"", "localhost"], ftype=1)
        start = sasl + b"AMQP\x00\x01\x00\x00" + frame(0x10, ["dev", HOST]) + \
            frame(0x11, [None, uint(0), uint(100), uint(100)]) + \
            frame(0x12, ["cbs", uint(0), False, None, None, None, None, "$cbs"])
        cases = [(start + frame(0x14, [uint(0), None, b"t", uint(0), False, True]),
                  b"starts a delivery without a delivery-id", "amqp:invalid-field"),
                 (sasl + frame(0x41, [symbol("PLAIN"), b"\0a\0b", "localhost"], ftype=1), None,
                  "a second sasl-init")]
        for data, answer, logged in cases:
            got = raw_tls_exchange(GW.port, CA, data)
            if answer:  # the close frame, with the guard's condition and words
                self.assertIn(b"amqp:invalid-field", got, GW.log_text()[-3000:])
                self.assertIn(answer, got)
            GW.wait_for_log(logged)
        self.assertRegex(GW.log_text(), r"AMQP peer amqps 127\.0\.0\.1\S* refused: amqp:invalid-field: a transfer "
                                        r"on channel 0 handle 0 starts a delivery without a delivery-id")

    def test_not_a_put_token(self):
        self.cbs.sender.send(Message(id=99, body="x", properties={"operation": "delete-token",
                                                                  "type": "servicebus.windows.net:sastoken",
                                                                  "name": "x"}))
        reply = self.cbs.receiver.receive(timeout=20)
        self.cbs.receiver.accept()
        self.assertEqual(reply.properties["status-code"], 400)
        self.assertEqual(reply.correlation_id, 99)

    def refused_link(self, make):
        link = make()
        return wait_detached(self.conn, link)

    def test_links_refused(self):
        """Links of a device the connection did not authorize, of a module, of the
        service; a telemetry link the wrong way round."""
        cases = [
            (lambda: self.conn.create_sender("/devices/amqp1/messages/events"), "amqp:unauthorized-access"),
            (lambda: self.conn.create_sender("/devices/amqp3/modules/m1/messages/events"),
             "amqp:not-implemented"),
            (lambda: self.conn.create_sender("/messages/devicebound"), "amqp:not-found"),
            (lambda: self.conn.create_receiver("/messages/events/ConsumerGroups/$Default/Partitions/0"),
             "amqp:not-found"),
            (lambda: self.conn.create_receiver("/devices/amqp3/messages/events"), "amqp:not-allowed"),
            (lambda: self.conn.create_sender("/devices/a%0Ab/messages/events"), "amqp:not-found"),
        ]
        for make, cond in cases:
            try:
                self.assertEqual(self.refused_link(make), cond)
            except LinkDetached as e:  # the blocking API raises it on attach
                self.assertIn(cond, str(e))
        self.assertNotIn("a\nb", GW.log_text())  # the control character never reaches a line


def call_method(device, body, result):
    def run():
        result["r"] = EMU.rest("POST", f"/twins/{device}/methods", body)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class Operations(unittest.TestCase):
    def setUp(self):
        self.conn = gateway_connection()
        self.cbs = Cbs(self.conn)

    def tearDown(self):
        self.conn.close()

    def test_direct_method_round_trip(self):
        DeviceOn(self.conn, self.cbs, "method1")
        addr = "/devices/method1/methods/devicebound"
        props = {symbol("com.microsoft:channel-correlation-id"): "methods:x"}
        requests = self.conn.create_receiver(addr, credit=10)
        answers = self.conn.create_sender(addr)
        requests.link.properties = props
        result = {}
        t = call_method("method1", {"methodName": "rebootDevice", "payload": {"delay": 2},
                                    "responseTimeoutInSeconds": 20}, result)
        req = requests.receive(timeout=20)
        requests.accept()
        self.assertEqual(req.properties["IoThub-methodname"], "rebootDevice")
        self.assertEqual(json.loads(bytes(req.body)), {"delay": 2})
        answers.send(Message(correlation_id=req.correlation_id, properties={"IoThub-status": 201},
                             body=b'{"rebooting": true}', inferred=True))
        t.join(25)
        self.assertEqual(result["r"][0], 200)
        self.assertEqual(result["r"][2], {"status": 201, "payload": {"rebooting": True}})

    def test_twin_get_patch_and_desired(self):
        DeviceOn(self.conn, self.cbs, "twin1")
        answers = self.conn.create_receiver("/devices/twin1/twin", credit=10)
        requests = self.conn.create_sender("/devices/twin1/twin")

        def ask(corr, op, resource=None, body=None):
            ann = {symbol("operation"): op}
            if resource:
                ann[symbol("resource")] = resource
            requests.send(Message(correlation_id=corr, annotations=ann, body=body, inferred=body is not None))
            while True:
                a = answers.receive(timeout=20)
                answers.accept()
                if a.correlation_id == corr:
                    return annotations(a), a.body

        ann, body = ask("get-1", "GET")
        self.assertEqual(ann["status"], 200)
        self.assertIn("desired", json.loads(bytes(body)))
        ann, _ = ask(uuid.uuid4(), "PATCH", "/properties/reported", b'{"rebootTime": "now"}')
        self.assertEqual(ann["status"], 204)
        self.assertGreaterEqual(ann["version"], 1)
        status, _, t = EMU.rest("GET", "/twins/twin1")
        self.assertEqual(t["properties"]["reported"]["rebootTime"], "now")
        ann, _ = ask("sub-1", "PUT", "/notifications/twin/properties/desired")
        self.assertEqual(ann["status"], 200)
        ann, _ = ask("bad-1", "POST", "/nothing")
        self.assertEqual(ann["status"], 400)
        status, _, _ = EMU.rest("PATCH", "/twins/twin1", {"properties": {"desired": {"interval": 7}}})
        self.assertEqual(status, 200)
        while True:
            u = answers.receive(timeout=20)
            answers.accept()
            if u.correlation_id is None:
                break
        self.assertEqual(json.loads(bytes(u.body))["interval"], 7)
        self.assertEqual(annotations(u)["resource"], "/properties/desired")

    def test_c2d_complete_and_reject_reach_the_hub(self):
        DeviceOn(self.conn, self.cbs, "c2d1")
        c2d = self.conn.create_receiver("/devices/c2d1/messages/devicebound", credit=10)
        svc = connect(EMU)
        self.assertEqual(Cbs(svc).put(owner_token(), audience=HOST)[0], 200)
        feedback = svc.create_receiver("/messages/serviceBound/feedback", credit=10)
        sender = svc.create_sender("/messages/devicebound")
        ids = {op: new_id("c2d-" + op) for op in ("complete", "reject")}
        for op, mid in ids.items():
            sender.send(Message(address="/devices/c2d1/messages/devicebound", id=mid, body=op.encode(),
                                properties={"k": "v", "iothub-ack": "full"}))
        for _ in ids:
            m = c2d.receive(timeout=20)
            self.assertEqual(m.properties["k"], "v")
            if m.id == ids["complete"]:
                c2d.accept()
            else:
                c2d.reject()
        pump(self.conn, 0.5)  # the dispositions go out while the connection is pumped
        records = {}
        end = time.time() + 30
        while len(records) < 2 and time.time() < end:
            f = feedback.receive(timeout=30)
            feedback.accept()
            for r in json.loads(bytes(f.body) if isinstance(f.body, (bytes, memoryview)) else f.body):
                records[r["originalMessageId"]] = r["description"]
        svc.close()
        self.assertEqual(records, {ids["complete"]: "Success", ids["reject"]: "Rejected"})


class Lifecycle(unittest.TestCase):
    def test_token_expiry_detaches_and_a_renewal_keeps_the_links(self):
        conn = gateway_connection()
        cbs = Cbs(conn)
        status, _, _ = cbs.put(token("expiry1", ttl=4), audience=f"{HOST}/devices/expiry1")
        self.assertEqual(status, 200)
        sender = conn.create_sender("/devices/expiry1/messages/events")
        self.assertEqual(cbs.put(token("expiry1", ttl=6), audience=f"{HOST}/devices/expiry1")[0], 200)
        time.sleep(4.5)  # the first token's expiry has passed: the renewal holds
        self.assertEqual(send(sender, Message(id=new_id("renewed"), body=b"x")), (Delivery.ACCEPTED, None))
        self.assertEqual(wait_detached(conn, sender, 10), "amqp:unauthorized-access")  # not renewed again
        GW.wait_for_log("its token expired")
        conn.close()

    def test_the_newest_connection_wins(self):
        first = gateway_connection()
        old = DeviceOn(first, Cbs(first), "newest1")
        second = gateway_connection()
        new = DeviceOn(second, Cbs(second), "newest1")
        self.assertEqual(wait_detached(first, old.sender), "amqp:link:detach-forced")
        new.telemetry(self, "newest")
        second.close()
        first.close()

    def test_newest_wins_across_protocols_on_one_upstream(self):
        """A protobuf connection of both1 is replaced by its AMQP put-token, and that by a
        protobuf connection again (its links detached); the hub sees one identity on the
        gateway's one connection throughout."""
        tls = ssl.create_default_context(cafile=CA)
        pb = Device(GW.protobuf, tls=tls)
        pb.hello("both1", token("both1"))
        pb.expect("welcome")
        conn = gateway_connection()
        dev = DeviceOn(conn, Cbs(conn), "both1")
        err = pb.expect("error")
        self.assertEqual(T("Frame").DESCRIPTOR.file.enum_types_by_name["ErrorCode"].values_by_number[err.code].name,
                         "ERROR_REPLACED")
        dev.telemetry(self, "amqp-now")
        devices = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{GW.ops}/devices", timeout=10).read())
        self.assertEqual([d["protocol"] for d in devices if d["id"] == "both1"], ["amqp"])
        again = Device(GW.protobuf, tls=tls)
        again.hello("both1", token("both1"))
        again.expect("welcome")
        self.assertEqual(wait_detached(conn, dev.sender), "amqp:link:detach-forced")
        f = T("Frame")()
        f.telemetry.seq = 1
        f.telemetry.parcel.type = "iotgw.AlarmStatus"
        again.send(f)
        again.expect("ack")
        text = urllib.request.urlopen(f"http://127.0.0.1:{GW.ops}/metrics", timeout=10).read().decode()
        conns = re.search(r'^iotgw_hub_connections\{state="open"\} (\d+)', text, re.M)
        self.assertTrue(conns, text[:2000])
        self.assertEqual(int(conns.group(1)), 1)
        again.close()
        pb.close()
        conn.close()

    def test_a_device_that_stops_reading_is_closed_alone(self):
        """It subscribed to desired updates and gave credit for thousands, then reads
        nothing: what waits for it is bounded (8 MiB, then the gateway closes it, saying
        why); a device on another connection goes on."""
        slow = gateway_connection()
        DeviceOn(slow, Cbs(slow), "slow1")
        answers = slow.create_receiver("/devices/slow1/twin", credit=5000)
        requests = slow.create_sender("/devices/slow1/twin")
        requests.send(Message(correlation_id="sub", annotations={symbol("operation"): "PUT",
                                                                  symbol("resource"): "/notifications/twin/properties/desired"}))
        self.assertEqual(annotations(answers.receive(timeout=20))["status"], 200)
        pump(slow, 0.3)
        # from here on the device reads nothing; the hub pushes about 20 MiB of updates
        for i in range(700):
            status, _, _ = EMU.rest("PATCH", "/twins/slow1", {"properties": {"desired": {"blob": f"{i:05d}" + "x" * 30000}}})
            self.assertEqual(status, 200)
            if "iotgw:output-limit" in GW.log_text():
                break
        GW.wait_for_log("iotgw:output-limit", timeout=20)
        self.assertRegex(GW.log_text(), r"closed: iotgw:output-limit: more than 8388608 bytes of output waiting")
        other = gateway_connection()
        DeviceOn(other, Cbs(other), "amqp1").telemetry(self, "not-slow")
        other.close()
        try:
            slow.close()
        except Exception:  # it was closed under it
            pass

    def test_a_certificate_renewed_in_place_is_served_to_new_connections(self):
        """The TLS settings are made once and shared by connections; when the certificate
        file changes, new connections get the new one (here one for another name, which
        the device then refuses), connections already open keep theirs."""
        import shutil
        d = tempfile.mkdtemp(prefix="iotgw-amqp-cert-")
        cert = os.path.join(d, "gw.pem")
        shutil.copy(os.path.join(CERTS, "server.pem"), cert)
        shutil.copy(os.path.join(CERTS, "server.key"), cert[:-4] + ".key")
        gw = Gateway(cert=cert)
        self.addCleanup(gw.log.close)
        self.addCleanup(gw.stop)
        before = gateway_connection(gw=gw)
        cbs = Cbs(before)
        DeviceOn(before, cbs, "amqp2")
        time.sleep(0.05)  # a modification time of its own
        shutil.copy(os.path.join(CERTS, "wrongname.pem"), cert)
        shutil.copy(os.path.join(CERTS, "wrongname.key"), cert[:-4] + ".key")
        with self.assertRaises(Exception) as e:
            gateway_connection(gw=gw)
        self.assertIn("certificate", str(e.exception).lower() + gw.log_text().lower())
        self.assertEqual(cbs.put(token("amqp2"), audience=f"{HOST}/devices/amqp2")[0], 200)  # still served
        before.close()

    def test_a_client_certificate_names_the_device(self):
        """TLS with a certificate under devices.tls.clientCa: the device it names attaches
        its links without a put-token; one from another CA is refused at TLS."""
        gw = Gateway(client_ca=True)
        self.addCleanup(gw.log.close)
        self.addCleanup(gw.stop)
        conn = gateway_connection(cert="client", gw=gw)
        sender = conn.create_sender("/devices/test-device/messages/events")
        mid = new_id("x509")
        self.assertEqual(send(sender, Message(id=mid, body=b"x")), (Delivery.ACCEPTED, None))
        self.assertEqual(annotations(STREAM.get(mid))["iothub-connection-device-id"], "test-device")
        try:  # the certificate names another device
            refused = conn.create_sender("/devices/amqp1/messages/events")
            self.assertEqual(wait_detached(conn, refused), "amqp:unauthorized-access")
        except LinkDetached as e:
            self.assertIn("amqp:unauthorized-access", str(e))
        conn.close()
        ctx = ssl.create_default_context(cafile=CA)
        ctx.load_cert_chain(os.path.join(CERTS, "forged-other-ca.pem"), os.path.join(CERTS, "forged-other-ca.key"))
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        with self.assertRaises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            tls = ctx.wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"AMQP\x03\x01\x00\x00")
            if not tls.recv(8):
                raise ssl.SSLError("closed")


class Config(unittest.TestCase):
    def test_check_config_names_the_listeners_and_refuses_what_cannot_work(self):
        def check(devices):
            path = os.path.join(GW.dir, "check.yaml")
            with open(path, "w") as f:
                f.write(f"hub:\n  hostName: {HOST}\ndevices:\n{devices}fleet:\n  devices:\n"
                        f"    - {{id: a1, key: {KEYS['amqp1']}}}\n")
            p = subprocess.run(WRAPPER + [IOTGW, "--check-config", path], capture_output=True, text=True)
            return p.returncode, p.stdout + p.stderr
        tls = f"  tls:\n    cert: {CERTS}/server.pem\n    key: {CERTS}/server.key\n"
        rc, out = check(tls + "  amqp:\n    listen: 0.0.0.0:5671\n  webSocketListen: 0.0.0.0:443\n")
        self.assertEqual(rc, 0, out)
        self.assertIn("devices: AMQP (IoT Hub's, for Azure IoT SDK devices) over TLS on 0.0.0.0:5671", out)
        self.assertIn("devices: MQTT and AMQP over WebSocket on 0.0.0.0:443", out)
        for devices, words in [
            ("  amqp:\n    listen: 0.0.0.0:5671\n", "devices.amqp: AMQP devices connect over TLS"),
            (tls + "  amqp: {}\n", "devices.amqp: listen (ADDRESS:PORT"),
            (tls + "  amqp:\n    listen: 0.0.0.0\n", "devices.amqp.listen: expected ADDRESS:PORT"),
            (tls + "  amqp:\n    listen: 0.0.0.0:5671\n    port: 1\n", "unknown key \"port\""),
            (tls + "  mqtt:\n    webSocketListen: 0.0.0.0:443\n  webSocketListen: 0.0.0.0:443\n",
             "devices.webSocketListen: set devices.webSocketListen or devices.mqtt.webSocketListen"),
            ("  webSocketListen: 0.0.0.0:443\n", "WebSocket devices connect over TLS"),
        ]:
            rc, out = check(devices)
            self.assertEqual(rc, 1, out)
            self.assertIn(words, out)


run_tests()
