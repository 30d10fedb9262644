"""The official Event Hubs JavaScript SDK (@azure/event-hubs: EventHubConsumerClient),
unchanged, against iothub-emulator's Event Hub-compatible endpoint, with the connection
string the emulator prints:

- getEventHubProperties / getPartitionIds / getPartitionProperties (and a partition that
  does not exist: ArgumentOutOfRangeError);
- subscribe across all partitions: each device message (devices over AMQP and MQTT, a
  module) read exactly once, with its properties, in its device's partition; a second
  consumer group reads them all again; the start positions the SDK writes (sequence
  number, offset, enqueued time);
- refused: another hub's event hub (MessagingEntityNotFoundError, as the SDK shows it);
  a wrong key and a token signed the IoT Hub way are refused below, over python-proton;
- the $management answers' AMQP types, read with python3-qpid-proton;
- iothub-service eventhub-connection-string, and monitor finding the partition count.

usage: node_eventhubs.py IOTHUB_EMULATOR CERT_DIR NODE_DIR IOTHUB_SERVICE   (inside a network
namespace where 127.0.0.1:443, :5671 and :8883 are free)"""
import base64
import hmac
import hashlib
import json
import os
import ssl
import subprocess
import sys
import time
import unittest
import urllib.parse
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from iotgw_testlib import readline_within, run_tests  # noqa: E402
from emulator_lib import (Emulator, Cbs, HOST, OWNER_KEY, connect, device_token, module_token, owner_token,  # noqa: E402
                          sas_token)

BINARY, CERTS, NODE_DIR, CLI = sys.argv[1:5]
del sys.argv[1:5]
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_eventhubs.js")
EVENT_HUB = "iothub-ehub-localhost-emulator"
IOTHUB_CS = f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={OWNER_KEY}"


def hub(*extra):
    """The emulator on the ports the SDKs use, and the Event Hub-compatible connection
    string it printed."""
    emu = Emulator(BINARY, CERTS, listen="127.0.0.1:443", amqps="127.0.0.1:5671", mqtts="127.0.0.1:8883",
                   extra=list(extra))
    while True:
        line = readline_within(emu.proc, 20)
        prefix = "event hub-compatible connection string: "
        if line.startswith(prefix):
            emu.eh_cs = line[len(prefix):].strip()
            return emu


def iothub_signed(resource, key, policy):
    """A SAS token signed with the key's decoded bytes (IoT Hub's way) for any resource."""
    se = int(time.time() + 3600)
    sr = urllib.parse.quote(resource, safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest())
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}&skn={policy}"


def fields(cs):
    return dict(p.split("=", 1) for p in cs.split(";") if p)


def partition_of(device, partitions=4):
    """The emulator's partition of a device: FNV-1a of its id."""
    h = 2166136261
    for b in device.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % partitions


def node(mode, *args, timeout=120):
    """Run node_eventhubs.js; (exit status, [(tag, value)], output for failure messages)."""
    env = dict(os.environ, NODE_PATH=os.path.join(os.path.abspath(NODE_DIR), "node_modules"),
               NODE_EXTRA_CA_CERTS=os.path.join(CERTS, "ca.pem"))
    p = subprocess.run(["node", SCRIPT, mode, *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=timeout)
    return p.returncode, parse(p.stdout), p.stdout + p.stderr[-3000:]


def parse(text):
    out = []
    for line in text.splitlines():
        tag, _, value = line.partition(" ")
        try:
            out.append((tag, json.loads(value) if value else None))
        except ValueError:
            out.append((tag, value))
    return out


def tagged(lines, tag):
    return [v for t, v in lines if t == tag]


def send_amqp(emu, device, messages, module=None):
    """Telemetry over AMQP as the device SDKs send it: (message id, JSON body, properties)."""
    from proton import Message
    conn = connect(emu)
    try:
        token = module_token(device, module) if module else device_token(device)
        status, desc, _ = Cbs(conn).put(token)
        assert status == 200, desc
        path = f"/devices/{device}/modules/{module}/messages/events" if module else f"/devices/{device}/messages/events"
        snd = conn.create_sender(path)
        for mid, body, props in messages:
            snd.send(Message(id=mid, body=json.dumps(body).encode(), properties=props,
                             content_type="application/json", inferred=True))
    finally:
        conn.close()


def send_mqtt(emu, device, messages):
    """Telemetry over MQTT: the property bag in the topic ($.mid: the message id)."""
    import paho.mqtt.client as mqtt
    c = mqtt.Client(client_id=device, clean_session=True, protocol=mqtt.MQTTv311)
    c.tls_set_context(ssl.create_default_context(cafile=emu.ca))
    c.username_pw_set(f"{HOST}/{device}/?api-version=2021-04-12", device_token(device))
    c.connect("127.0.0.1", emu.mqtts, 60)
    c.loop_start()
    try:
        for mid, body, props in messages:
            bag = urllib.parse.urlencode({**props, "$.mid": mid, "$.ct": "application/json"})
            info = c.publish(f"devices/{device}/messages/events/{bag}", json.dumps(body).encode(), qos=1)
            info.wait_for_publish(10)
            assert info.is_published(), f"{device}: no PUBACK for {mid}"
    finally:
        c.disconnect()
        c.loop_stop()


def batch(tag, n):
    return [(f"{tag}-{i}", {"n": i, "tag": tag}, {"kind": tag, "i": str(i)}) for i in range(n)]


class EventHubsSdk(unittest.TestCase):
    def setUp(self):
        self.emu = None

    def tearDown(self):
        if self.emu:
            self.emu.stop()
            self.emu.log.close()

    def node(self, mode, *args, expect_ok=True, **kw):
        rc, lines, text = node(mode, *args, **kw)
        detail = text + (self.emu.log_text()[-4000:] if self.emu else "")
        if expect_ok:
            self.assertEqual(rc, 0, detail)
            self.assertEqual(tagged(lines, "ERROR"), [], detail)
        return lines, detail

    def test_printed_connection_string(self):
        self.emu = hub()
        self.assertEqual(fields(self.emu.eh_cs), {"Endpoint": f"sb://{HOST}/", "SharedAccessKeyName": "iothubowner",
                                                  "SharedAccessKey": OWNER_KEY, "EntityPath": EVENT_HUB})

    def test_properties(self):
        self.emu = hub()
        send_amqp(self.emu, "dev1", batch("props", 3))
        lines, detail = self.node("properties", self.emu.eh_cs)
        (h,) = tagged(lines, "HUB")
        self.assertEqual(h["name"], EVENT_HUB)
        self.assertEqual(h["partitionIds"], ["0", "1", "2", "3"])
        self.assertLess(abs(time.time() - time.mktime(time.strptime(h["createdOn"][:19], "%Y-%m-%dT%H:%M:%S"))
                            + time.timezone), 600, h)  # when the emulator started
        self.assertEqual(tagged(lines, "PARTITION_IDS"), [["0", "1", "2", "3"]])
        parts = {p["partitionId"]: p for p in tagged(lines, "PARTITION")}
        self.assertEqual(sorted(parts), ["0", "1", "2", "3"], detail)
        mine = str(partition_of("dev1"))
        for pid, p in parts.items():
            self.assertEqual(p["eventHubName"], EVENT_HUB)
            self.assertEqual(p["beginningSequenceNumber"], 0)
            if pid == mine:
                self.assertEqual((p["lastEnqueuedSequenceNumber"], p["isEmpty"]), (2, False), p)
                self.assertRegex(p["lastEnqueuedOffset"], r"^\d+$")
                self.assertLess(abs(p["lastEnqueuedOnUtc"] / 1000 - time.time()), 60)
            else:
                self.assertEqual((p["lastEnqueuedSequenceNumber"], p["lastEnqueuedOffset"], p["isEmpty"]),
                                 (-1, "-1", True), p)
        (bad,) = tagged(lines, "BAD_PARTITION")
        self.assertEqual((bad["name"], bad["code"]), ("MessagingError", "ArgumentOutOfRangeError"), bad)
        self.assertIn("between 0 and 3", bad["message"])

    def test_subscribe_reads_each_message_once(self):
        self.emu = hub()
        sent = {}
        for device, via in (("dev1", "amqp"), ("dev2", "amqp"), ("dev3", "mqtt")):
            msgs = batch(device, 5)
            (send_amqp if via == "amqp" else send_mqtt)(self.emu, device, msgs)
            sent.update({m[0]: (device, None, m) for m in msgs})
        msgs = batch("mod1", 2)
        send_amqp(self.emu, "dev3", msgs, module="mod1")
        sent.update({m[0]: ("dev3", "mod1", m) for m in msgs})
        for group in ("$Default", "second-group"):
            with self.subTest(group):
                lines, detail = self.node("subscribe", self.emu.eh_cs, len(sent), 60, "earliest", group)
                events = tagged(lines, "EVENT")
                ids = [e["messageId"] for e in events]
                self.assertEqual(sorted(ids), sorted(sent), detail)  # each once, none twice
                by_partition = {}
                for e in events:
                    device, module, (mid, body, props) = sent[e["messageId"]]
                    self.assertEqual(e["consumerGroup"], group)
                    self.assertEqual(e["deviceId"], device)
                    self.assertEqual(e.get("moduleId"), module)  # JSON leaves an undefined one out
                    self.assertEqual(e["body"], body)
                    self.assertEqual(e["properties"], props)
                    self.assertEqual(e["contentType"], "application/json")
                    self.assertEqual(e["messageSource"], "Telemetry")
                    self.assertEqual(e["partitionId"], str(partition_of(device)))
                    by_partition.setdefault(e["partitionId"], []).append(e["sequenceNumber"])
                for pid, seqs in by_partition.items():  # in order, from 0, no gaps
                    self.assertEqual(seqs, list(range(len(seqs))), pid)
                self.assertEqual(tagged(lines, "DONE"), [len(sent)])

    def test_start_positions(self):
        self.emu = hub()
        send_amqp(self.emu, "dev1", batch("early", 4))
        time.sleep(0.05)
        cut = int(time.time() * 1000)
        time.sleep(0.05)
        send_amqp(self.emu, "dev1", batch("late", 3))
        p = str(partition_of("dev1"))
        lines, _ = self.node("subscribe", self.emu.eh_cs, 7, 30, "earliest")
        offsets = {e["messageId"]: e["offset"] for e in tagged(lines, "EVENT")}
        cases = {
            "sequence number 3, inclusive": ({p: {"sequenceNumber": 3, "isInclusive": True}}, ["early-3", "late-0",
                                                                                               "late-1", "late-2"]),
            "sequence number 3": ({"sequenceNumber": 3}, ["late-0", "late-1", "late-2"]),
            "offset of late-0": ({"offset": offsets["late-0"]}, ["late-1", "late-2"]),
            "offset of late-0, inclusive": ({"offset": offsets["late-0"], "isInclusive": True},
                                            ["late-0", "late-1", "late-2"]),
            "enqueued time": ({"enqueuedOn": cut}, ["late-0", "late-1", "late-2"]),
        }
        for name, (position, expect) in cases.items():
            with self.subTest(name):
                lines, detail = self.node("subscribe", self.emu.eh_cs, len(expect), 20, json.dumps(position))
                self.assertEqual([e["messageId"] for e in tagged(lines, "EVENT")], expect, detail)

    def test_latest_position(self):
        """latestEventPosition: only what is enqueued once the SDK reads every partition
        (READY comes once each partition's first, empty, batch is over: the hub answers
        the SDK's drain)."""
        self.emu = hub()
        send_amqp(self.emu, "dev1", batch("before-latest", 3))
        env = dict(os.environ, NODE_PATH=os.path.join(os.path.abspath(NODE_DIR), "node_modules"),
                   NODE_EXTRA_CA_CERTS=os.path.join(CERTS, "ca.pem"))
        p = subprocess.Popen(["node", SCRIPT, "subscribe", self.emu.eh_cs, "2", "30", "latest"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            out = []
            for line in iter(p.stdout.readline, ""):  # up to READY: every partition is being read
                out.append(line)
                if line.startswith("READY"):
                    break
            self.assertTrue(out and out[-1].startswith("READY"), "".join(out))
            t_ready = time.time()
            send_amqp(self.emu, "dev1", batch("after-latest", 2))
            rest, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        lines = parse("".join(out) + rest)
        self.assertEqual([e["messageId"] for e in tagged(lines, "EVENT")], ["after-latest-0", "after-latest-1"],
                         rest + err[-2000:] + self.emu.log_text()[-3000:])
        self.assertLess(time.time() - t_ready, 25, "the SDK waited for its timeout")

    def test_refused(self):
        """Another hub's event hub, and a wrong key, as the SDK shows them; the devices' stream
        stays readable."""
        self.emu = hub()
        other_hub = dict(fields(self.emu.eh_cs), EntityPath="iothub-ehub-otherhub-emulator")
        lines, detail = self.node("refused", ";".join(f"{k}={v}" for k, v in other_hub.items()), expect_ok=False)
        text = f"The messaging entity 'sb://{HOST}/iothub-ehub-otherhub-emulator' could not be found."
        for tag in ("REFUSED", "SUBSCRIBE_REFUSED"):
            (refused,) = tagged(lines, tag)
            self.assertEqual((refused["name"], refused.get("code")), ("MessagingError", "MessagingEntityNotFoundError"),
                             detail)
            self.assertIn(text, refused["message"])
        # a wrong key: the SDK tries twice and reports both attempts in an AggregateError, each
        # the hub's 401 as its UnauthorizedError with Event Hubs' InvalidSignature words
        wrong = dict(fields(self.emu.eh_cs), SharedAccessKey=base64.b64encode(b"k" * 32).decode())
        lines, detail = self.node("refused", ";".join(f"{k}={v}" for k, v in wrong.items()), expect_ok=False)
        for tag in ("REFUSED", "SUBSCRIBE_REFUSED"):
            (refused,) = tagged(lines, tag)
            self.assertEqual(refused["name"], "AggregateError", detail)
            self.assertTrue(refused["errors"], detail)
            for e in refused["errors"]:
                self.assertEqual((e["name"], e["code"]), ("MessagingError", "UnauthorizedError"), detail)
                self.assertIn("InvalidSignature: The token has an invalid signature.", e["message"])
        send_amqp(self.emu, "dev1", batch("after-refusal", 1))  # a bystander reader is unaffected
        lines, detail = self.node("subscribe", self.emu.eh_cs, 1, 30, "earliest")
        self.assertEqual([e["messageId"] for e in tagged(lines, "EVENT")], ["after-refusal-0"], detail)


class ManagementTypes(unittest.TestCase):
    """The $management answers read with python3-qpid-proton, type by type, as Event Hubs
    writes them (the Event Hubs SDKs read partition_ids as an array of strings, created_at
    and last_enqueued_time_utc as timestamps, the sequence numbers as longs)."""

    @classmethod
    def setUpClass(cls):
        cls.emu = hub("--partitions", "6")
        send_amqp(cls.emu, "dev1", batch("types", 2))

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()
        cls.emu.log.close()

    def request(self, props, token=None, cbs=True):
        from proton import Message
        conn = connect(self.emu, sasl="ANONYMOUS")
        try:
            if cbs:
                audience = f"sb://{HOST}/{EVENT_HUB}/$management"
                status, desc, _ = Cbs(conn).put(sas_token(audience, OWNER_KEY, policy="iothubowner"), audience)
                self.assertEqual(status, 200, desc)
            reply_to = "replies-" + uuid.uuid4().hex[:6]
            rcv = conn.create_receiver("$management", credit=10, name=reply_to)
            snd = conn.create_sender("$management")
            if token:
                props = dict(props, security_token=token)
            snd.send(Message(id="req-1", reply_to=reply_to, body=b"[]", properties=props))
            reply = rcv.receive(timeout=10)
            return reply
        finally:
            conn.close()

    def test_event_hub(self):
        from proton import Array, int32, timestamp, Data
        r = self.request({"operation": "READ", "type": "com.microsoft:eventhub", "name": EVENT_HUB})
        self.assertEqual(r.correlation_id, "req-1")
        self.assertIs(type(r.properties["status-code"]), int32)
        self.assertEqual(r.properties["status-code"], 200)
        body = r.body
        self.assertEqual(sorted(body), ["created_at", "name", "partition_count", "partition_ids", "type"])
        self.assertTrue(all(type(k) is str for k in body))  # string keys, not symbols
        self.assertEqual((type(body["name"]), body["name"]), (str, EVENT_HUB))
        self.assertEqual((type(body["type"]), body["type"]), (str, "com.microsoft:eventhub"))
        self.assertIs(type(body["created_at"]), timestamp)
        self.assertLess(abs(body["created_at"] / 1000 - time.time()), 600)
        self.assertEqual((type(body["partition_count"]), body["partition_count"]), (int32, 6))
        ids = body["partition_ids"]
        self.assertIs(type(ids), Array)
        self.assertEqual(ids.type, Data.STRING)
        self.assertEqual(list(ids.elements), ["0", "1", "2", "3", "4", "5"])

    def test_partition(self):
        from proton import timestamp
        mine = partition_of("dev1", 6)
        for n in range(6):
            r = self.request({"operation": "READ", "type": "com.microsoft:partition", "name": EVENT_HUB,
                              "partition": str(n)})
            self.assertEqual(r.properties["status-code"], 200, r.properties)
            body = r.body
            self.assertEqual(sorted(body), sorted([
                "name", "type", "partition", "begin_sequence_number", "last_enqueued_sequence_number",
                "last_enqueued_sequence_number_epoch", "last_enqueued_offset", "last_enqueued_time_utc",
                "is_partition_empty"]))
            self.assertEqual((body["name"], body["type"], body["partition"]),
                             (EVENT_HUB, "com.microsoft:partition", str(n)))
            for key in ("begin_sequence_number", "last_enqueued_sequence_number",
                        "last_enqueued_sequence_number_epoch"):
                self.assertIs(type(body[key]), int, key)  # proton: a long is a plain int (an int an int32)
            self.assertIs(type(body["last_enqueued_offset"]), str)
            self.assertIs(type(body["last_enqueued_time_utc"]), timestamp)
            self.assertIs(type(body["is_partition_empty"]), bool)
            if n == mine:
                self.assertEqual((body["last_enqueued_sequence_number"], body["is_partition_empty"]), (1, False))
            else:
                self.assertEqual((body["last_enqueued_sequence_number"], body["last_enqueued_offset"],
                                  body["last_enqueued_time_utc"], body["is_partition_empty"]), (-1, "-1", 0, True))

    def test_security_token_alone_and_refusals(self):
        audience = f"sb://{HOST}/{EVENT_HUB}"
        read = {"operation": "READ", "type": "com.microsoft:eventhub", "name": EVENT_HUB}
        good = sas_token(audience, OWNER_KEY, policy="iothubowner")
        r = self.request(read, token=good, cbs=False)  # no put-token: the request's own token
        self.assertEqual(r.properties["status-code"], 200, r.properties)
        cases = [
            (read, None, 401, "amqp:unauthorized-access", "ServiceConnect"),
            (read, sas_token(audience, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", policy="iothubowner"), 401,
             "amqp:unauthorized-access", "InvalidSignature"),
            # the right key, but signed as IoT Hub signs (its decoded bytes): Event Hubs refuses it
            (read, iothub_signed(audience, OWNER_KEY, "iothubowner"), 401, "amqp:unauthorized-access",
             "InvalidSignature"),
            (dict(read, name="other"), good, 404, "amqp:not-found", "could not be found"),
            (dict(read, type="com.microsoft:partition", partition="6"), good, 400,
             "com.microsoft:argument-out-of-range", "between 0 and 5"),
            (dict(read, operation="DELETE"), good, 400, "amqp:not-implemented", "only READ"),
        ]
        for props, token, status, condition, text in cases:
            with self.subTest(props=props, status=status):
                r = self.request(props, token=token, cbs=False)
                self.assertEqual(r.properties["status-code"], status, r.properties)
                self.assertEqual(r.properties["error-condition"], condition)
                self.assertIn(text, r.properties["status-description"])
                self.assertIsNone(r.body)

    def test_iothub_node_without_redirect(self):
        """Without --stream-redirect IoT Hub's own messages/events/$management is served
        here, for a policy's connection; "name" may be the hub's name."""
        from proton import Message
        conn = connect(self.emu, sasl="PLAIN", user=f"iothubowner@sas.root.{HOST}", password=owner_token())
        try:
            rcv = conn.create_receiver("messages/events/$management", credit=10, name="r")
            snd = conn.create_sender("messages/events/$management")
            snd.send(Message(id=7, reply_to="r", body=b"[]", properties={
                "operation": "READ", "type": "com.microsoft:eventhub", "name": "localhost"}))
            reply = rcv.receive(timeout=10)
        finally:
            conn.close()
        self.assertEqual(reply.correlation_id, 7)
        self.assertEqual(reply.body["name"], EVENT_HUB)


class ServiceCli(unittest.TestCase):
    def test_connection_string_and_monitor_partitions(self):
        for extra in ((), ("--stream-redirect",)):
            with self.subTest(extra=extra):
                emu = hub("--partitions", "6", *extra)
                try:
                    self.cli_flow(emu)
                finally:
                    emu.stop()
                    emu.log.close()

    def cli_flow(self, emu):
        def cli(*args, **kw):
            return subprocess.run(["/usr/bin/python3", CLI, "--connection-string", IOTHUB_CS, "--ca", emu.ca, *args],
                                  capture_output=True, text=True, timeout=60, **kw)
        p = cli("eventhub-connection-string")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(fields(p.stdout.strip()), fields(emu.eh_cs))
        # one device in each of the 6 partitions, made over REST
        devices = {}
        n = 0
        while len(devices) < 6:
            d = f"eh-{n}"
            devices.setdefault(partition_of(d, 6), d)
            n += 1
        keys = {}
        for d in devices.values():
            status, _, body = emu.rest("PUT", f"/devices/{d}", {"deviceId": d})
            self.assertEqual(status, 200, body)
            keys[d] = body["authentication"]["symmetricKey"]["primaryKey"]
        mon = subprocess.Popen(["/usr/bin/python3", CLI, "--connection-string", IOTHUB_CS, "--ca", emu.ca, "monitor",
                                "--count", "6", "--timeout", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        try:
            end = time.time() + 30
            while emu.log_text().count("(consumer group $Default) attached") < 6 and time.time() < end:
                time.sleep(0.1)  # its readers, on every partition: 6, not the 4 it used to assume
            self.assertIn("reader of partition 5 (consumer group $Default) attached", emu.log_text())
            from proton import Message
            for d, key in keys.items():
                conn = connect(emu)
                self.assertEqual(Cbs(conn).put(device_token(d, key=key))[0], 200)
                conn.create_sender(f"/devices/{d}/messages/events").send(Message(id=f"m-{d}", body=b"{}"))
                conn.close()
            out, err = mon.communicate(timeout=60)
        finally:
            if mon.poll() is None:
                mon.kill()
                mon.communicate()
        self.assertEqual(mon.returncode, 0, out + err)
        got = sorted(json.loads(line)["device"] for line in out.splitlines())
        self.assertEqual(got, sorted(keys))


if __name__ == "__main__":
    run_tests()
