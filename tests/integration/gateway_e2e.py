"""iotgw end to end: iothub-emulator as the hub, iotgw in between, and test devices
speaking the downstream protocol with Debian's python3-protobuf. What the hub received
is read back from the emulator's telemetry stream and REST API.

usage: gateway_e2e.py IOTHUB_EMULATOR IOTGW SCHEMAS_DESC CERT_DIR"""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

from iotgw_testlib import WRAPPER, LoggedProcess, listening_ports, readline_within, run_tests
from emulator_lib import (Emulator, StreamReader, fleet_registry, random_key, sas_token, DEVICE_POLICY_KEY,
                          OWNER_KEY, HOST)
from device_lib import Device, T, load_schemas

EMULATOR, IOTGW, SCHEMAS, CERTS = sys.argv[1:5]
del sys.argv[1:5]
load_schemas(SCHEMAS)

KEYS = {d: random_key() for d in ("agent1", "monitor1", "twin1", "c2d1", "spare1", "off1")}
EMU = GW = None


def token(device, key=None, ttl=3600):
    return sas_token(f"{HOST}/devices/{device}", key or KEYS[device], ttl)


class Gateway(LoggedProcess):
    name = "iotgw"

    def __init__(self, emu, keys=None, tls=False, hub_port=None, devices_yaml="", fleet_yaml=None,
                 listen=("127.0.0.1:0",), ops_yaml="", ca=None, host=None):
        self.tls = tls
        self.ops_yaml, self.ca, self.host = ops_yaml, ca, host
        self.listen = listen
        self.fleet_yaml = fleet_yaml
        self.hub_port = hub_port or emu.wss
        self.devices_yaml = devices_yaml
        self.dir = tempfile.mkdtemp(prefix="iotgw-test-")
        self.config = os.path.join(self.dir, "iotgw.yaml")
        self.emu = emu
        self.write_config(keys or KEYS)
        self.log = open(os.path.join(self.dir, "iotgw.log"), "w+")
        self.proc = subprocess.Popen(WRAPPER + [IOTGW, "--config", self.config], stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        self.ports = listening_ports(self.proc, len(listen))
        self.port = self.ports[0]
        line = readline_within(self.proc, 20)  # then the ops endpoint's
        assert line.startswith("listening: ops "), line
        self.ops_port = int(line.rsplit(":", 1)[1])

    def write_config(self, keys):
        emu = self.emu
        fleet = "  devices:\n" + "".join(f"    - id: {d}\n      key: {k}\n" +
                                          ("      disabled: true\n" if d == "off1" else "") for d, k in keys.items())
        if self.fleet_yaml is not None:
            fleet = self.fleet_yaml
        certs = os.path.abspath(CERTS)
        tls_yaml = (f"  tls:\n    cert: {certs}/server.pem\n    key: {certs}/server.key\n"
                    f"    clientCa: {certs}/ca.pem\n") if self.tls else ""
        with open(self.config, "w") as f:
            f.write(f"""gatewayId: test-gateway
ops:
  listen: 127.0.0.1:0
{self.ops_yaml}hub:
  hostName: {self.host or HOST}
  port: {self.hub_port}
  caFile: {self.ca or emu.ca}
devices:
  listen: [{", ".join(f'"{a}"' for a in self.listen)}]
  keepaliveSeconds: 5
{tls_yaml}{self.devices_yaml}
methods:
  ProcessMessage:
    request: iotgw.Parcel
fleet:
{fleet}""")


def setUpModule():
    global EMU, GW
    EMU = Emulator(EMULATOR, CERTS, registry=fleet_registry({d: k for d, k in KEYS.items() if d != "spare1"}))
    GW = Gateway(EMU)


def tearDownModule():
    GW.stop()
    GW.log.close()
    EMU.stop()
    EMU.log.close()


def connect(device, **caps):
    d = Device(GW.port)
    d.hello(device, token(device), **caps)
    w = d.expect("welcome")
    assert w.protocol_version == 1 and w.gateway_id == "test-gateway", w
    return d


def alarm_parcel(active=True):
    status = T("AlarmStatus")(alarm_active=active, time_utc="12:34:56", date_utc="2026-11-22")
    p = T("Parcel")(type="iotgw.AlarmStatus", content=status.SerializeToString())
    p.source.name = "agent1"
    p.destination.name = "monitor1"
    return p


class GatewayEndToEnd(unittest.TestCase):
    def test_parcel_telemetry_reaches_the_hub_and_is_acknowledged(self):
        reader = StreamReader(EMU, selector=None)  # from now on
        d = connect("agent1")
        for seq in (1, 2):
            f = T("Frame")()
            f.telemetry.seq = seq
            f.telemetry.parcel.CopyFrom(alarm_parcel())
            f.telemetry.message_id = f"agent1-{seq}"
            p = f.telemetry.properties.add()
            p.key, p.value = "site", "north"
            d.send(f)
        acked = {d.expect("ack").seq, d.expect("ack").seq}
        self.assertEqual(acked, {1, 2})
        end = time.time() + 10
        while len(reader.events) < 2 and time.time() < end:
            time.sleep(0.05)
        reader.stop()
        dev, mid, ann, props = sorted(reader.events, key=lambda e: e[1])[0]
        self.assertEqual((dev, mid), ("agent1", "agent1-1"))
        self.assertEqual(props["parcelType"], "iotgw.AlarmStatus")
        self.assertEqual(props["parcelDestination"], "monitor1")
        self.assertEqual(props["site"], "north")
        d.close()

    def test_raw_telemetry_with_its_content_type(self):
        reader = StreamReader(EMU, selector=None)
        d = connect("agent1")
        f = T("Frame")()
        f.telemetry.seq = 6
        f.telemetry.raw = b"{}"
        f.telemetry.message_id = "m" * 129  # over IoT Hub's 128
        d.send(f)
        nack = d.expect("nack")
        self.assertEqual((nack.seq, nack.reason), (6, 3))  # NACK_MALFORMED
        self.assertIn("message_id", nack.detail)
        f = T("Frame")()
        f.telemetry.seq = 7
        f.telemetry.raw = b'{"temperature": 21.5}'
        f.telemetry.content_type = "application/json"
        f.telemetry.message_id = "raw-7"
        d.send(f)
        self.assertEqual(d.expect("ack").seq, 7)
        end = time.time() + 10
        while not reader.events and time.time() < end:
            time.sleep(0.05)
        reader.stop()
        self.assertEqual([e[1] for e in reader.events], ["raw-7"])
        d.close()

    def test_generated_message_ids_are_unique_across_devices_reconnects_and_restarts(self):
        """Telemetry without a message_id gets one from the gateway: two devices, each
        connecting three times, on two gateway runs, never share one (a consumer that
        de-duplicates by message id would drop new messages)."""
        reader = StreamReader(EMU, selector=None)
        sent = 0
        for run in range(2):
            gw = Gateway(EMU) if run else GW
            try:
                for connection in range(3):
                    for device in ("agent1", "monitor1"):
                        d = Device(gw.port)
                        d.hello(device, token(device))
                        d.expect("welcome")
                        for seq in range(1, 6):
                            f = T("Frame")()
                            f.telemetry.seq = seq
                            f.telemetry.raw = b"{}"
                            d.send(f)
                        self.assertEqual(sorted(d.expect("ack").seq for _ in range(5)), [1, 2, 3, 4, 5])
                        sent += 5
                        d.close()
            finally:
                if run:
                    gw.stop()
                    gw.log.close()
        end = time.time() + 10
        while len(reader.events) < sent and time.time() < end:
            time.sleep(0.05)
        reader.stop()
        ids = [e[1] for e in reader.events if e[0] in ("agent1", "monitor1")]
        self.assertEqual(len(ids), sent)
        self.assertEqual(len(set(ids)), sent, f"generated ids repeat: {sorted(ids)}")

    def test_longest_legal_device_id_works_end_to_end(self):
        """128 '+' characters percent-encode to 384 in link addresses: the longest legal id
        must reach the hub like any other (it overflowed a 400-byte address buffer)."""
        long_id, key = "+" * 128, random_key()
        status, _, _ = EMU.rest("PUT", "/devices/" + "%2B" * 128, {"deviceId": long_id, "authentication": {
            "type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}}})
        self.assertEqual(status, 200)
        reader = StreamReader(EMU, selector=None)
        gw = Gateway(EMU, keys={long_id: key})
        try:
            d = Device(gw.port)
            d.hello(long_id, token(long_id, key=key), methods=True, twin=True, c2d=True)
            d.expect("welcome")
            f = T("Frame")()
            f.telemetry.seq = 1
            f.telemetry.raw = b"{}"
            f.telemetry.message_id = "longest-1"
            d.send(f)
            self.assertEqual(d.expect("ack").seq, 1)
            end = time.time() + 10
            while not reader.events and time.time() < end:
                time.sleep(0.05)
            self.assertEqual([(e[0], e[1]) for e in reader.events], [(long_id, "longest-1")])
            d.close()
        finally:
            reader.stop()
            gw.stop()
            gw.log.close()

    def test_unknown_device_bad_token_disabled_and_hello_required(self):
        cases = [
            ("stranger", token("agent1"), "ERROR_UNKNOWN_DEVICE"),
            ("agent1", token("agent1", key=random_key()), "ERROR_BAD_TOKEN"),
            ("agent1", token("monitor1"), "ERROR_BAD_TOKEN"),  # sr names another device
            ("agent1", sas_token(f"{HOST}/devices/agent1", KEYS["agent1"], expiry=time.time() - 10),
             "ERROR_TOKEN_EXPIRED"),
            ("off1", token("off1"), "ERROR_DEVICE_DISABLED"),
            # an id that protobuf-c would cut at its NUL to a fleet device's, with a valid token
            ("agent1\0monitor1", token("agent1"), "ERROR_UNKNOWN_DEVICE", "device_id has a NUL character"),
            ("agent1", token("agent1") + "\0junk", "ERROR_BAD_TOKEN", "the token has a NUL character"),
            # control characters never reach a lookup or a log line
            ("agent1\nforged log line", token("agent1"), "ERROR_UNKNOWN_DEVICE", "character IoT Hub does not allow"),
            ("a" * 129, token("agent1"), "ERROR_UNKNOWN_DEVICE", "129 characters long, maximum is 128"),
            # a token signed with the device's key for the whole hub names no device
            ("agent1", sas_token(HOST, KEYS["agent1"], 3600), "ERROR_BAD_TOKEN",
             f"the token's sr is not {HOST}/devices/agent1"),
            ("agent1", sas_token(f"{HOST}/devices", KEYS["agent1"], 3600), "ERROR_BAD_TOKEN", "sr is not"),
        ]
        for device, tok, code, *detail in cases:
            d = Device(GW.port)
            d.hello(device, tok)
            e = d.expect("error")
            self.assertEqual(T("Frame").DESCRIPTOR.fields_by_name["error"].message_type.fields_by_name["code"]
                             .enum_type.values_by_number[e.code].name, code, (device, e.message))
            if detail:
                self.assertIn(detail[0], e.message)
            self.assertIsNone(d.recv(), "the connection must close after the error")
            d.close()
        self.assertNotIn("\nforged log line", GW.log_text())
        connect("agent1").close()  # the real device is undisturbed
        d = Device(GW.port)
        f = T("Frame")()
        f.ping.nonce = 1
        d.send(f)
        self.assertEqual(d.expect("error", skip=()).code, 2)  # ERROR_HELLO_REQUIRED
        d.close()

    def test_malformed_input_ends_only_that_connection(self):
        good = connect("twin1")
        bad = Device(GW.port)
        bad.send_raw(b"\xff\xff\xff\xff\xff\xff")  # a length prefix longer than 5 bytes
        self.assertEqual(bad.expect("error").code, 10)  # ERROR_MALFORMED_FRAME
        big = Device(GW.port)
        big.send_raw(b"\x80\x80\x04")  # 65536 bytes announced before the handshake
        self.assertEqual(big.expect("error").code, 9)  # ERROR_FRAME_TOO_LARGE
        f = T("Frame")()
        f.ping.nonce = 42
        good.send(f)
        self.assertEqual(good.expect("pong", skip=()).nonce, 42)
        for d in (good, bad, big):
            d.close()

    def test_process_message_transcoded_to_protobuf_and_answered(self):
        d = connect("monitor1", methods=True)
        EMU.wait_online("monitor1")
        import threading
        result = {}
        payload = {"source": {"name": "agent1"}, "destination": {"name": "monitor1"}, "type": "iotgw.AlarmStatus",
                   "content": {"alarmActive": True, "timeUtc": "12:34:56"}}
        t = threading.Thread(target=lambda: result.update(r=EMU.rest("POST", "/twins/monitor1/methods", {
            "methodName": "ProcessMessage", "payload": payload, "responseTimeoutInSeconds": 10})))
        t.start()
        req = d.expect("method_request")
        self.assertEqual(req.name, "ProcessMessage")
        self.assertEqual(req.WhichOneof("payload"), "protobuf")
        self.assertEqual(req.payload_type, "iotgw.Parcel")
        parcel = T("Parcel")()
        parcel.ParseFromString(req.protobuf)
        status = T("AlarmStatus")()
        status.ParseFromString(parcel.content)
        self.assertTrue(status.alarm_active)
        self.assertEqual(status.time_utc, "12:34:56")
        f = T("Frame")()
        f.method_response.request_id = req.request_id
        f.method_response.status = 200
        f.method_response.json = b'{"received":"alarm"}'
        d.send(f)
        t.join(20)
        self.assertEqual(result["r"][0], 200, result)
        self.assertEqual(result["r"][2], {"status": 200, "payload": {"received": "alarm"}})
        # a payload that is not a Parcel is refused by the gateway, not sent to the device
        status, _, body = EMU.rest("POST", "/twins/monitor1/methods", {
            "methodName": "ProcessMessage", "payload": {"bogus": 1}, "responseTimeoutInSeconds": 10})
        self.assertEqual(body["status"], 400, body)
        self.assertIn("iotgw.Parcel", body["payload"]["error"])
        # a method without transcoding arrives as JSON
        t = threading.Thread(target=lambda: result.update(r=EMU.rest("POST", "/twins/monitor1/methods", {
            "methodName": "rebootDevice", "payload": {"delay": 2}, "responseTimeoutInSeconds": 10})))
        t.start()
        req = d.expect("method_request")
        self.assertEqual((req.name, json.loads(req.json)), ("rebootDevice", {"delay": 2}))
        f = T("Frame")()
        f.method_response.request_id = req.request_id
        f.method_response.status = 404
        d.send(f)
        t.join(20)
        self.assertEqual(result["r"][2]["status"], 404)
        d.close()

    def test_method_to_a_device_that_leaves_is_answered_at_once(self):
        """The device receives the call and disconnects without answering: the caller
        gets a failure status at once, not after the hub's timeout."""
        import threading
        d = connect("monitor1", methods=True)
        EMU.wait_online("monitor1")
        result = {}
        started = time.time()
        t = threading.Thread(target=lambda: result.update(r=EMU.rest("POST", "/twins/monitor1/methods", {
            "methodName": "rebootDevice", "payload": {}, "responseTimeoutInSeconds": 60})))
        t.start()
        self.assertEqual(d.expect("method_request").name, "rebootDevice")
        d.close()
        t.join(30)
        elapsed = time.time() - started
        status, _, body = result["r"]
        self.assertEqual(body["status"], 503, body)
        self.assertIn("disconnected", body["payload"]["error"])
        self.assertLess(elapsed, 10, "the caller waited for the hub's timeout")

    def test_twin_get_patch_and_desired_update(self):
        d = connect("twin1", twin=True)
        EMU.wait_online("twin1")
        f = T("Frame")()
        f.twin_get.request_id = 5
        d.send(f)
        r = d.expect("twin_result")
        self.assertEqual((r.request_id, r.status), (5, 200), r)
        self.assertIn("desired", json.loads(r.twin_json))
        f = T("Frame")()
        f.reported_patch.request_id = 6
        f.reported_patch.patch_json = b'{"rebootTime":"2026-11-22T10:00:00Z"}'
        d.send(f)
        r = d.expect("twin_result")
        self.assertEqual(r.request_id, 6)
        self.assertTrue(200 <= r.status < 300, r)
        reported = EMU.rest("GET", "/twins/twin1")[2]["properties"]["reported"]
        self.assertEqual(reported["rebootTime"], "2026-11-22T10:00:00Z")
        EMU.rest("PATCH", "/twins/twin1", {"properties": {"desired": {"interval": 9}}}, headers={"If-Match": "*"})
        u = d.expect("desired_update")
        self.assertEqual(json.loads(u.patch_json)["interval"], 9)
        d.close()

    def test_cloud_to_device_delivered_and_settled(self):
        from proton import Message
        from emulator_lib import Cbs, connect as amqp_connect, owner_token
        d = connect("c2d1", c2d=True)
        EMU.wait_online("c2d1")
        svc = amqp_connect(EMU)
        self.assertEqual(Cbs(svc).put(owner_token(), audience=HOST)[0], 200)
        sender = svc.create_sender("/messages/devicebound")
        # every property arrives whole, however many and however long
        props = {"priority": "high", "note": "n" * 300, **{f"p{i}": str(i) for i in range(40)}}
        sender.send(Message(address="/devices/c2d1/messages/devicebound", id="m1", body=b"open the door",
                            properties=props))
        m = d.expect("c2d_message")
        self.assertEqual((m.body, m.message_id), (b"open the door", "m1"))
        self.assertEqual({p.key: p.value for p in m.properties}, props)
        f = T("Frame")()
        f.c2d_settle.delivery_id = m.delivery_id
        f.c2d_settle.outcome = 2  # C2D_ABANDON: delivered again
        d.send(f)
        m2 = d.expect("c2d_message")
        self.assertEqual(m2.body, b"open the door")
        f.c2d_settle.delivery_id = m2.delivery_id
        f.c2d_settle.outcome = 0  # C2D_COMPLETE
        d.send(f)
        svc.close()
        d.close()

    def test_check_config_explains_good_and_bad_files(self):
        def check(text, env=None):
            path = os.path.join(GW.dir, "check.yaml")
            with open(path, "w") as f:
                f.write(text)
            p = subprocess.run(WRAPPER + [IOTGW, "--check-config", path], capture_output=True, text=True,
                               env={**os.environ, **(env or {})})
            return p.returncode, p.stdout + p.stderr
        with open(os.path.join(GW.dir, "agent.key"), "w") as f:
            f.write(KEYS["agent1"] + "\n")
        good = f"""hub:
  hostName: myhub.azure-devices.net
devices:
  listen: ["0.0.0.0:7000", "[::]:7000"]
telemetry:
  encoding: json
methods:
  ProcessMessage: {{request: iotgw.Parcel}}
fleet:
  devices:
    - {{id: a1, keyFile: agent.key}}
    - {{id: a2, keyEnv: TEST_A2_KEY}}
    - {{id: a3, key: {KEYS['monitor1']}, disabled: true}}
"""
        rc, out = check(good, {"TEST_A2_KEY": KEYS["twin1"]})
        self.assertEqual(rc, 0, out)
        self.assertIn("fleet: 3 devices (1 disabled)", out)
        self.assertIn("method ProcessMessage: request iotgw.Parcel, response JSON", out)
        self.assertIn("devices: listen :::7000", out)
        self.assertNotIn(KEYS["agent1"], out)
        # the event loop's backend: libuv unless IOTGW_EVENT_LOOP says otherwise
        env = {"TEST_A2_KEY": KEYS["twin1"], "IOTGW_EVENT_LOOP": ""}
        self.assertIn("event loop: libuv (the default)", check(good, env)[1])
        env["IOTGW_EVENT_LOOP"] = "poll"
        self.assertIn("event loop: poll (IOTGW_EVENT_LOOP)", check(good, env)[1])
        env["IOTGW_EVENT_LOOP"] = "epoll"  # the gateway would not start: neither does the check pass
        rc, out = check(good, env)
        self.assertEqual(rc, 1, out)
        self.assertIn('IOTGW_EVENT_LOOP must be libuv or poll, not "epoll"', out)
        self.assertNotIn(": OK", out)
        bad = [
            (good.replace("hostName", "hostname"), "check.yaml:2: hub: unknown key \"hostname\""),
            (good.replace("encoding: json", "encoding: xml"), "check.yaml:6: telemetry.encoding"),
            (good.replace("iotgw.Parcel", "iotgw.Nothing"), "methods.ProcessMessage.request: unknown message type"),
            (good.replace("0.0.0.0:7000", "0.0.0.0"), "devices.listen[0]: expected ADDRESS:PORT"),
            (good.replace("keyEnv: TEST_A2_KEY", "keyEnv: NOT_SET_ANYWHERE"), "fleet.devices[1].keyEnv"),
            (good.replace("id: a2", "id: a1"), "device \"a1\" is listed twice"),
            (good.replace(f"key: {KEYS['monitor1']}", "key: not*base64"), "fleet.devices[2].key: not a base64 key"),
            ("hub: [", "did not find expected node content"),
        ]
        # a fleet too large for YAML: a devices file (10,000 devices, errors by file and line)
        fleet_file = os.path.join(GW.dir, "fleet.txt")
        lines = [f"d{i} {KEYS['monitor1']}\n" for i in range(10000)]
        with open(fleet_file, "w") as f:
            f.writelines(["# the test fleet\n"] + lines + ["a9 -\n", f"a8 {KEYS['twin1']} disabled\n"])
        policy = f"  deviceConnectPolicy:\n    name: device\n    key: {KEYS['spare1']}\n"
        tls = (f"  tls:\n    cert: {os.path.abspath(CERTS)}/server.pem\n    key: {os.path.abspath(CERTS)}/server.key\n"
               f"    clientCa: {os.path.abspath(CERTS)}/ca.pem\n")
        with_file = good.replace("telemetry:", tls + "telemetry:").replace("fleet:\n", f"fleet:\n{policy}"
                                                                            f"  devicesFile: fleet.txt\n")
        rc, out = check(with_file, {"TEST_A2_KEY": KEYS["twin1"]})
        self.assertEqual(rc, 0, out)
        self.assertIn("fleet: 10005 devices (2 disabled, 1 by client certificate only)", out)
        self.assertIn("hub tokens: signed with policy device", out)
        self.assertIn("hub tokens: signed with each device's key", check(good, {"TEST_A2_KEY": KEYS["twin1"]})[1])
        file_bad = [
            (lines[:3] + ["a9\n"], "fleet.txt:4: expected \"ID KEY\""),
            (lines[:1] + ["a9 not*base64\n"], "fleet.txt:2: device a9: the key is not base64"),
            (["a9 " + KEYS["twin1"] + " off\n"], "fleet.txt:1: expected \"ID KEY\", optionally followed by"),
            (["a/9 " + KEYS["twin1"] + "\n"], "fleet.txt:1: device id"),
            (["a1 " + KEYS["twin1"] + "\n"], "device \"a1\" is listed twice"),
            (["x" * 2000 + "\n"], "fleet.txt:1: line too long"),
        ]
        for content, expect in file_bad:
            with open(fleet_file, "w") as f:
                f.writelines(content)
            rc, out = check(with_file, {"TEST_A2_KEY": KEYS["twin1"]})
            self.assertEqual(rc, 1, (expect, out))
            self.assertIn(expect, out)
            self.assertNotIn(KEYS["twin1"], out)
        with open(fleet_file, "w") as f:
            f.write("a9 -\n")
        for text, expect in ((with_file.replace(policy, ""), "fleet.txt:1: device a9 has no key: a device without"),
                             (with_file.replace(tls, ""), "needs devices.tls.clientCa and fleet.deviceConnectPolicy"),
                             (with_file.replace("    - {id: a2, keyEnv: TEST_A2_KEY}\n", "    - {id: a2}\n"),
                              None),
                             (good.replace("    - {id: a2, keyEnv: TEST_A2_KEY}\n", "    - {id: a2}\n"),
                              "fleet.devices[1]: no key (key, keyFile or keyEnv)"),
                             (with_file.replace("name: device", "nam: device"),
                              "fleet.deviceConnectPolicy: unknown key \"nam\""),
                             (with_file.replace(f"    key: {KEYS['spare1']}\n", ""),
                              "fleet.deviceConnectPolicy: give exactly one of key, keyFile, keyEnv"),
                             (with_file.replace("devicesFile: fleet.txt", "devicesFile: none.txt"),
                              "fleet.devicesFile: cannot read")):
            rc, out = check(text, {"TEST_A2_KEY": KEYS["twin1"]})
            if expect is None:
                self.assertEqual(rc, 0, out)  # a keyless device in YAML, with a policy and client certificates
                self.assertIn("2 by client certificate only", out)
                continue
            self.assertEqual(rc, 1, (expect, out))
            self.assertIn(expect, out)
            self.assertNotIn(KEYS["spare1"], out)
        for text, expect in bad:
            rc, out = check(text, {"TEST_A2_KEY": KEYS["twin1"]})
            self.assertEqual(rc, 1, (expect, out))
            self.assertIn(expect, out)
            self.assertNotIn(KEYS["agent1"], out)

    def test_silent_device_is_pinged_then_dropped(self):
        d = connect("spare1")
        start = time.time()
        f = d.recv(12)
        self.assertEqual(f.WhichOneof("body"), "ping")  # after keepaliveSeconds (5) of silence
        self.assertGreaterEqual(time.time() - start, 4)
        f = d.recv(12)  # not answered: twice keepaliveSeconds ends it
        self.assertEqual((f.WhichOneof("body"), f.error.code), ("error", 12))  # ERROR_KEEPALIVE_TIMEOUT
        self.assertIsNone(d.recv())
        d.close()

    def test_sigterm_answers_in_flight_telemetry_then_closes_devices(self):
        gw = Gateway(EMU)
        try:
            d = Device(gw.port)
            d.hello("agent1", token("agent1"))
            d.expect("welcome")
            f = T("Frame")()
            f.telemetry.seq = 11
            f.telemetry.raw = b"last words"
            d.send(f)
            time.sleep(0.3)  # read by the gateway; the hub's answer may still be on its way
            gw.proc.terminate()
            self.assertEqual(d.expect("ack").seq, 11)
            self.assertEqual(d.expect("error").code, 13)  # ERROR_SHUTTING_DOWN
            d.close()
        finally:
            gw.stop()  # exit status 0
        self.assertIn("draining", gw.log_text())
        gw.log.close()

    def test_reload_adds_and_removes_devices_while_others_keep_sending(self):
        import signal
        gw = Gateway(EMU, keys={"agent1": KEYS["agent1"], "spare1": KEYS["spare1"]})
        try:
            stay, leave = Device(gw.port), Device(gw.port)
            stay.hello("agent1", token("agent1"))
            stay.expect("welcome")
            leave.hello("spare1", token("spare1"))
            leave.expect("welcome")
            refused = Device(gw.port)
            refused.hello("twin1", token("twin1"))
            self.assertEqual(refused.expect("error").code, 4)  # not in the fleet yet
            running_port = gw.hub_port
            gw.hub_port = 1  # a hub setting: read at start, so the running one stays
            gw.write_config({"agent1": KEYS["agent1"], "twin1": KEYS["twin1"]})
            gw.hub_port = running_port
            gw.proc.send_signal(signal.SIGHUP)
            e = leave.expect("error")
            self.assertEqual(e.code, 4)  # ERROR_UNKNOWN_DEVICE: removed from the fleet
            self.assertIn("reload", e.message)
            added = Device(gw.port)
            added.hello("twin1", token("twin1"))
            added.expect("welcome")
            # the device that stayed never noticed: its telemetry is acknowledged as before
            for seq in (1, 2, 3):
                f = T("Frame")()
                f.telemetry.seq = seq
                f.telemetry.raw = b"still here"
                stay.send(f)
                self.assertEqual(stay.expect("ack").seq, seq)
            # the device the reload added reaches the hub on the running hub.port, not port 1
            f = T("Frame")()
            f.telemetry.seq = 9
            f.telemetry.raw = b"new here"
            added.send(f)
            self.assertEqual(added.expect("ack").seq, 9)
            # a broken file changes nothing
            with open(gw.config, "w") as f:
                f.write("hub: [")
            gw.proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            f = T("Frame")()
            f.telemetry.seq = 4
            f.telemetry.raw = b"after a bad reload"
            stay.send(f)
            self.assertEqual(stay.expect("ack").seq, 4)
            for d in (stay, leave, refused, added):
                d.close()
        finally:
            gw.stop()
        log = gw.log_text()
        gw.log.close()
        self.assertIn("configuration reloaded: 2 devices in the fleet; 1 connected kept, 1 closed", log)
        self.assertIn("reload: hub.port changed in %s: it takes effect at the next start" % gw.config, log)
        self.assertIn("reload failed, the running configuration stays", log)

    def test_devsim_drives_a_small_fleet(self):
        devsim = os.path.join(os.path.dirname(os.path.dirname(IOTGW)), "devices", "iotgw-devsim")
        fleet = os.path.join(GW.dir, "devsim-fleet.txt")
        with open(fleet, "w") as f:
            f.writelines(f"{d} {KEYS[d]}\n" for d in ("agent1", "monitor1", "twin1", "c2d1"))
        p = subprocess.run(WRAPPER + [devsim, "--gateway", f"127.0.0.1:{GW.port}", "--hub", HOST, "--fleet", fleet,
                                      "--messages", "20", "--rate", "50", "--twin", "--quiet"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual((r["connected"], r["acked"], r["nacked"], r["errors"]), (4, 80, 0, 0), r)
        self.assertEqual((r["twin_ok"], r["twin_failed"]), (8, 0), r)  # a get and a report each
        self.assertGreater(r["ack_ms_p99"], 0)
        # flat out: each device refills its window in one write (a batch) when half is acked
        p = subprocess.run(WRAPPER + [devsim, "--gateway", f"127.0.0.1:{GW.port}", "--hub", HOST, "--fleet", fleet,
                                      "--messages", "300", "--rate", "0", "--quiet"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual((r["connected"], r["sent"], r["acked"], r["nacked"], r["errors"]), (4, 1200, 1200, 0, 0), r)

    def test_generated_fleet_imported_and_simulated(self):
        """A new user's path to a simulated fleet: iotgw-devsim writes one, iothub-service
        creates it in the hub, iotgw reads it as its devices file, iotgw-devsim runs it."""
        build = os.path.dirname(os.path.dirname(IOTGW))
        devsim = os.path.join(build, "devices", "iotgw-devsim")
        service = os.path.join(build, "emulator", "iothub-service")
        d = tempfile.mkdtemp(prefix="iotgw-generated-")
        fleet = os.path.join(d, "fleet.txt")
        p = subprocess.run(WRAPPER + [devsim, "--generate", "40", "--id-prefix", "gen-", "--fleet", fleet],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("wrote 40 devices (gen-01 to gen-40)", p.stderr)
        self.assertEqual(os.stat(fleet).st_mode & 0o777, 0o600)  # keys: the owner's only
        with open(fleet) as f:
            before = f.read()
        p = subprocess.run([devsim, "--generate", "5", "--fleet", fleet], capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("never overwritten", p.stderr)
        with open(fleet) as f:
            self.assertEqual(f.read(), before)
        cs = f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={OWNER_KEY}"
        imp = [service, "--connection-string", cs, "--ca", EMU.ca, "--rest-port", str(EMU.wss), "device", "import",
               fleet]
        p = subprocess.run(imp, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(json.loads(p.stdout)["created"], 40)
        bad = os.path.join(d, "bad.txt")
        with open(bad, "w") as f:
            f.write(f"gen-x {KEYS['agent1']} maybe\n")
        p = subprocess.run(imp[:-1] + [bad], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("bad.txt:1: expected", p.stderr)
        self.assertNotIn(KEYS["agent1"], p.stdout + p.stderr)
        p = subprocess.run(imp, capture_output=True, text=True, timeout=120)  # again: all there already
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual((json.loads(p.stdout)["created"], len(json.loads(p.stdout)["existed"])), (0, 40))
        # without a policy the hub must know each device's key: the import gave it
        gw = Gateway(EMU, fleet_yaml=f"  devicesFile: {fleet}\n")
        try:
            p = subprocess.run(WRAPPER + [devsim, "--gateway", f"127.0.0.1:{gw.port}", "--hub", HOST, "--fleet",
                                          fleet, "--messages", "5", "--rate", "50", "--quiet"],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            self.assertEqual((r["connected"], r["acked"], r["nacked"], r["errors"]), (40, 200, 0, 0), r)
        finally:
            gw.stop()
            gw.log.close()

    def test_python_device_example(self):
        example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "devices", "examples",
                               "python_device.py")
        p = subprocess.run(["/usr/bin/python3", example, "--gateway", f"127.0.0.1:{GW.port}", "--device", "agent1",
                            "--key", KEYS["agent1"], "--hub", HOST, "--schemas", SCHEMAS, "--count", "3"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("3 of 3 acknowledged", p.stdout)

    def test_tls_listener_with_client_certificates(self):
        import ssl
        certs = os.path.abspath(CERTS)
        cert_device_key = random_key()  # the gateway signs test-device's hub tokens with it
        EMU.rest("PUT", "/devices/test-device", {"deviceId": "test-device", "authentication": {
            "type": "sas", "symmetricKey": {"primaryKey": cert_device_key, "secondaryKey": cert_device_key}}},
            headers={"If-Match": "*"})
        gw = Gateway(EMU, keys={"test-device": cert_device_key, "agent1": KEYS["agent1"]}, tls=True)
        try:
            ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
            ctx.load_cert_chain(os.path.join(certs, "client.pem"), os.path.join(certs, "client.key"))
            # the certificate (CN=test-device) is the device's credential: no token needed
            d = Device(gw.port, tls=ctx)
            d.hello("test-device", "")
            d.expect("welcome")
            f = T("Frame")()
            f.ping.nonce = 5
            d.send(f)
            self.assertEqual(d.expect("pong", skip=()).nonce, 5)
            d.close()
            # the certificate names another device: a token is needed, and is enough
            d = Device(gw.port, tls=ctx)
            d.hello("agent1", "")
            e = d.expect("error")
            self.assertEqual(e.code, 5)  # ERROR_BAD_TOKEN
            self.assertIn("names test-device", e.message)
            d.close()
            d = Device(gw.port, tls=ctx)
            d.hello("agent1", token("agent1"))
            d.expect("welcome")
            d.close()
            # libiotgw-device over TLS (through devsim): by certificate, and by token
            devsim = os.path.join(os.path.dirname(os.path.dirname(IOTGW)), "devices", "iotgw-devsim")
            fleet = os.path.join(gw.dir, "tls-fleet.txt")
            with open(fleet, "w") as f:
                f.write(f"test-device -\nagent1 {KEYS['agent1']}\n")
            p = subprocess.run(WRAPPER + [devsim, "--gateway", f"localhost:{gw.port}", "--hub", HOST, "--fleet", fleet,
                                          "--messages", "5", "--rate", "20", "--quiet", "--tls", "--ca",
                                          os.path.join(certs, "ca.pem"), "--cert", os.path.join(certs, "client.pem"),
                                          "--cert-key", os.path.join(certs, "client.key")],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            self.assertEqual((r["connected"], r["acked"]), (2, 10), r)
            # a gateway certificate from another CA is refused by the library
            p = subprocess.run([devsim, "--gateway", f"localhost:{gw.port}", "--hub", HOST, "--fleet", fleet,
                                "--messages", "1", "--quiet", "--tls", "--ca", os.path.join(certs, "other-ca.pem"),
                                "--cert", os.path.join(certs, "client.pem"), "--cert-key",
                                os.path.join(certs, "client.key")], capture_output=True, text=True, timeout=60)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("TLS", p.stderr)
            # without a client certificate the TLS handshake itself fails: the gateway
            # answers no frame and closes (TLS 1.3 clients may see it only on reading)
            bare = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
            try:
                d = Device(gw.port, tls=bare)
                d.hello("test-device", "")
                frame = d.recv(timeout=5)
            except (ssl.SSLError, ConnectionError):
                frame = None
            self.assertIsNone(frame, "no frame may reach a client without a certificate")
        finally:
            gw.stop()
            gw.log.close()

    def test_forged_client_certificates_are_refused_at_the_handshake(self):
        """A certificate naming a fleet device opens nothing unless the clientCa signed it,
        it is valid now and it is meant for clients: a self-signed one, one from another CA,
        an expired one and a server-only one from the right CA are each refused during the
        TLS handshake with the reason in the log; the genuine device is undisturbed."""
        import ssl
        certs = os.path.abspath(CERTS)
        cert_device_key = random_key()
        EMU.rest("PUT", "/devices/test-device", {"deviceId": "test-device", "authentication": {
            "type": "sas", "symmetricKey": {"primaryKey": cert_device_key, "secondaryKey": cert_device_key}}},
            headers={"If-Match": "*"})
        gw = Gateway(EMU, keys={"test-device": cert_device_key, "agent1": KEYS["agent1"]}, tls=True)

        def context(name):
            ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
            ctx.load_cert_chain(os.path.join(certs, f"{name}.pem"), os.path.join(certs, f"{name}.key"))
            return ctx

        try:
            genuine = Device(gw.port, tls=context("client"))
            genuine.hello("test-device", "")
            genuine.expect("welcome")
            reasons = {"forged-self": "self-signed certificate",
                       "forged-other-ca": "unable to get local issuer certificate",
                       "client-expired": "certificate has expired",
                       "client-server-only": "unsuitable certificate purpose"}
            for name, reason in reasons.items():
                with self.subTest(certificate=name):
                    try:
                        d = Device(gw.port, tls=context(name))
                        d.hello("test-device", "")  # no token: the certificate would be the credential
                        frame = d.recv(timeout=5)
                        d.close()
                    except (ssl.SSLError, ConnectionError):
                        frame = None  # TLS 1.2 clients see the alert at the handshake
                    self.assertIsNone(frame, f"{name}: the gateway must answer no frame, got {frame}")
                    gw.wait_for_log(f"client certificate from 127.0.0.1 refused: the client's certificate",
                                    timeout=5)
                    gw.wait_for_log(f"(OpenSSL: {reason}); subject /CN=test-device", timeout=5)
            # a forged certificate is no use with the device's own token either: refused before Hello
            try:
                d = Device(gw.port, tls=context("forged-other-ca"))
                d.hello("agent1", token("agent1"))
                frame = d.recv(timeout=5)
            except (ssl.SSLError, ConnectionError):
                frame = None
            self.assertIsNone(frame)
            # the genuine device, connected all along, still works, and so does a new one
            f = T("Frame")()
            f.ping.nonce = 7
            genuine.send(f)
            self.assertEqual(genuine.expect("pong", skip=()).nonce, 7)
            genuine.close()
            again = Device(gw.port, tls=context("client"))
            again.hello("test-device", "")
            again.expect("welcome")
            again.close()
            self.assertEqual(gw.log_text().count("connected from"), 2, gw.log_text())
        finally:
            gw.stop()
            gw.log.close()

    def test_devices_file_and_device_connect_policy(self):
        """The fleet from a devices file, hub tokens signed by the hub's DeviceConnect
        policy: the devices' keys are the gateway's own business (agent1's differs from
        the hub's), and a device listed without a key comes in by its certificate."""
        import ssl
        certs = os.path.abspath(CERTS)
        EMU.rest("PUT", "/devices/test-device", {"deviceId": "test-device", "authentication": {
            "type": "sas", "symmetricKey": {"primaryKey": random_key(), "secondaryKey": random_key()}}},
            headers={"If-Match": "*"})
        local_key = random_key()
        d = tempfile.mkdtemp(prefix="iotgw-fleet-")
        with open(os.path.join(d, "fleet.txt"), "w") as f:
            f.write(f"# id key\nagent1 {local_key}\n\ntest-device -\n  monitor1 {local_key} disabled\n")
        fleet = (f"  devicesFile: {d}/fleet.txt\n"
                 f"  deviceConnectPolicy: {{name: device, key: {DEVICE_POLICY_KEY}}}\n")
        gw = Gateway(EMU, tls=True, fleet_yaml=fleet)
        try:
            ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
            ctx.load_cert_chain(os.path.join(certs, "client.pem"), os.path.join(certs, "client.key"))
            reader = StreamReader(EMU, selector=None)
            devices = []
            for device, tok in (("agent1", token("agent1", local_key)), ("test-device", "")):
                dev = Device(gw.port, tls=ctx)
                dev.hello(device, tok)
                dev.expect("welcome")
                f = T("Frame")()
                f.telemetry.seq = 1
                f.telemetry.parcel.CopyFrom(alarm_parcel())
                f.telemetry.message_id = f"{device}-policy"
                dev.send(f)
                self.assertEqual(dev.expect("ack").seq, 1)  # the hub accepted the policy's token
                devices.append(dev)
            end = time.time() + 10
            while len({e[1] for e in reader.events} & {"agent1-policy", "test-device-policy"}) < 2 and \
                    time.time() < end:
                time.sleep(0.05)
            reader.stop()
            self.assertEqual({(e[0], e[1]) for e in reader.events if e[1].endswith("-policy")},
                             {("agent1", "agent1-policy"), ("test-device", "test-device-policy")})
            # agent1's key at the hub does not open the gateway; a token for the keyless device is refused
            for device, tok, code in (("agent1", token("agent1"), 5), ("test-device", token("agent1", local_key), 5),
                                      ("monitor1", token("monitor1", local_key), 7)):
                dev = Device(gw.port, tls=ctx)
                dev.hello(device, tok)
                e = dev.expect("error")
                self.assertEqual(e.code, code, e)
                dev.close()
            for dev in devices:
                dev.close()
            log = gw.log_text()
            self.assertIn("client certificate only", log)
            self.assertNotIn(DEVICE_POLICY_KEY, log)
            self.assertNotIn(local_key, log)
        finally:
            gw.stop()
            gw.log.close()

    def test_buffering_is_bounded_when_the_hub_is_unreachable(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
        s.close()  # nothing listens there: the hub is unreachable
        gw = Gateway(EMU, keys={"agent1": KEYS["agent1"]}, hub_port=closed_port,
                     devices_yaml="  queueTotalBytes: 4096\n")
        try:
            d = Device(gw.port)
            d.hello("agent1", token("agent1"))
            d.expect("welcome")
            for seq in range(1, 31):
                f = T("Frame")()
                f.telemetry.seq = seq
                f.telemetry.raw = b"x" * 200
                d.send(f)
            nacks = [d.expect("nack") for _ in range(10)]
            self.assertTrue(all(n.reason == 5 and n.retry_after_ms > 0 for n in nacks), nacks)  # NACK_RETRY_LATER
            self.assertTrue(all(n.seq > 10 for n in nacks), [n.seq for n in nacks])  # the first ones wait, held
            d.close()
        finally:
            gw.stop()
            gw.log.close()

    def test_ipv4_and_ipv6_listeners(self):
        gw = Gateway(EMU, listen=("127.0.0.1:0", "[::1]:0"))
        try:
            for seq, (host, port) in enumerate((("127.0.0.1", gw.ports[0]), ("::1", gw.ports[1])), 1):
                d = Device(port, host=host)
                d.hello("agent1", token("agent1"))
                d.expect("welcome")
                self.assertEqual(d.sock.family.name, "AF_INET6" if ":" in host else "AF_INET")
                f = T("Frame")()
                f.telemetry.seq = seq
                f.telemetry.parcel.CopyFrom(alarm_parcel())
                d.send(f)
                self.assertEqual(d.expect("ack").seq, seq)
                d.close()
        finally:
            gw.stop()
            gw.log.close()

    def test_second_connection_replaces_the_first(self):
        first = connect("spare1")
        second = connect("spare1")
        e = first.expect("error")
        self.assertEqual(e.code, 8)  # ERROR_REPLACED
        f = T("Frame")()
        f.ping.nonce = 3
        second.send(f)
        self.assertEqual(second.expect("pong", skip=()).nonce, 3)
        first.close()
        second.close()


if __name__ == "__main__":
    run_tests()
