"""The gateway's upstream pool (gateway/upstream.h, driven by upstream-driver) against
iothub-emulator: many devices over several connections, token renewal, one device's
failure isolated, the hub lost and back, the hub's token limit. What the hub received
is read back from the emulator's telemetry stream with Debian's python3-qpid-proton.

usage: upstream_pool.py IOTHUB_EMULATOR UPSTREAM_DRIVER CERT_DIR"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from collections import Counter

from iotgw_testlib import WRAPPER, run_tests
from emulator_lib import Emulator, StreamReader, fleet_registry, random_key, HOST

EMULATOR, DRIVER, CERTS = sys.argv[1:4]
del sys.argv[1:4]


def fleet(n, prefix="dev"):
    return {f"{prefix}{i:04d}": random_key() for i in range(n)}


class Driver:
    """upstream-driver as a process; summary() waits for its JSON line."""

    def __init__(self, emu, devices, *args, extra_lines=(), amqps=False):
        self.dir = tempfile.mkdtemp(prefix="upstream-driver-")
        path = os.path.join(self.dir, "devices.txt")
        with open(path, "w") as f:
            f.writelines(f"{d} {k}\n" for d, k in devices.items())
            f.writelines(extra_lines)
        self.status = os.path.join(self.dir, "status.json")
        self.log = open(os.path.join(self.dir, "driver.log"), "w+")
        self.proc = subprocess.Popen(
            WRAPPER + [DRIVER, "--host", HOST, "--port", str(emu.amqps if amqps else emu.wss), "--ca", emu.ca,
                       "--devices", path, "--status-file", self.status, *(["--amqps"] if amqps else []),
                       *map(str, args)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)

    def status_now(self):
        try:
            with open(self.status) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def wait_status(self, pred, timeout):
        end = time.time() + timeout
        while time.time() < end:
            s = self.status_now()
            if s and pred(s):
                return s
            time.sleep(0.2)
        raise AssertionError("driver status never matched; last: %s" % json.dumps(self.status_now())[:800])

    def summary(self, timeout=180):
        out, _ = self.proc.communicate(timeout=timeout)
        self.log.flush()
        self.log.seek(0)
        log = self.log.read()
        self.log.close()
        assert self.proc.returncode == 0, "driver exited %d:\n%s" % (self.proc.returncode, log[-3000:])
        return json.loads(out.strip().splitlines()[-1]), log


def expected_ids(devices, messages):
    return {f"{d}:{n}" for d in devices for n in range(messages)}


class UpstreamPool(unittest.TestCase):
    def start_emulator(self, *extra, registry):
        emu = Emulator(EMULATOR, CERTS, extra=[str(x) for x in extra], registry=registry)
        self.addCleanup(emu.log.close)
        self.addCleanup(lambda: emu.proc.poll() is not None or emu.stop())
        return emu

    def test_1000_devices_over_two_connections_each_message_accounted_for(self):
        devices = fleet(1000)
        emu = self.start_emulator(registry=fleet_registry(devices))
        reader = StreamReader(emu)
        messages = 5
        summary, _ = Driver(emu, devices, "--messages", messages, "--rate", 5, "--auth-rate", -1).summary()
        self.assertEqual(summary["accepted"], 5000, summary)
        self.assertEqual(summary["rejected"], 0)
        self.assertEqual(summary["duplicates"], 0)
        conns = summary["connections"]
        self.assertEqual(sorted(c["devices"] for c in conns), [500, 500], conns)
        self.assertTrue(all(c["reconnects"] == 0 for c in conns), conns)
        deadline = time.time() + 30
        while len(reader.events) < 5000 and time.time() < deadline:
            time.sleep(0.1)
        reader.stop()
        seen = Counter(reader.ids())
        self.assertEqual(set(seen), expected_ids(devices, messages))
        self.assertEqual(max(seen.values()), 1, "the hub saw a message twice")
        # the stream carries the device's identity as IoT Hub stamps it
        dev, mid, ann, props = reader.events[0]
        self.assertEqual(mid.split(":")[0], dev)
        self.assertEqual(props["n"], mid.split(":")[1])
        for key in ("iothub-enqueuedtime", "x-opt-sequence-number", "x-opt-offset", "x-opt-enqueued-time"):
            self.assertIn(key, ann)
        emu.stop()

    def test_tokens_renewed_without_interrupting_traffic(self):
        devices = fleet(20)
        emu = self.start_emulator(registry=fleet_registry(devices))
        summary, _ = Driver(emu, devices, "--token-lifetime", 10, "--messages", 240, "--rate", 4, "--duration", 60,
                            "--auth-rate", -1).summary()
        self.assertEqual(summary["accepted"], 20 * 240, summary["connections"])
        self.assertEqual(summary["rejected"] + summary["retried"], 0)
        self.assertEqual(summary["connections"][0]["reconnects"], 0)
        for dev, info in summary["per_device"].items():
            # a put-token near every half-life: at 0 s, then about every 5 s over 60 s
            self.assertGreaterEqual(info["authentications"], 10, (dev, info))
            self.assertEqual(info["state"], "online", (dev, info))
        log = emu.log_text()
        self.assertNotIn("expired", log)
        emu.stop()

    def test_a_failing_device_fails_alone(self):
        devices = fleet(50)
        disabled = {"disabled1": random_key()}
        emu = self.start_emulator(registry=fleet_registry({**devices, **disabled, "badkey1": random_key()},
                                                          disabled=("disabled1",)))
        reader = StreamReader(emu)
        bad_key = {"badkey1": random_key()}  # registered with another key: the signature is wrong
        summary, log = Driver(emu, {**devices, **bad_key, **disabled}, "--messages", 30, "--rate", 10,
                              "--auth-rate", -1, "--backoff-base", 200, "--backoff-cap", 1000).summary()
        per = summary["per_device"]
        self.assertEqual(per["badkey1"]["state"], "failed")
        self.assertIn("unauthorized", per["badkey1"]["reason"])
        self.assertEqual(per["disabled1"]["state"], "failed")
        self.assertIn("unauthorized", per["disabled1"]["reason"])
        self.assertEqual(per["badkey1"]["accepted"] + per["disabled1"]["accepted"], 0)
        for d in devices:
            self.assertEqual(per[d]["accepted"], 30, (d, per[d]))
        self.assertEqual(summary["connections"][0]["reconnects"], 0, "a device's failure reset the connection")
        deadline = time.time() + 20
        while len(reader.events) < 50 * 30 and time.time() < deadline:
            time.sleep(0.1)
        reader.stop()
        self.assertEqual(set(reader.ids()), expected_ids(devices, 30))
        self.assertIn("is disabled", per["disabled1"]["reason"])
        self.assertIn("signature", per["badkey1"]["reason"])
        # retried alone with its own backoff (200 ms to 1 s over the 3 s run)
        self.assertGreaterEqual(len(re.findall(r"device badkey1 refused", log)), 2, log[-2000:])
        emu.stop()

    def test_hub_restarted_mid_stream_nothing_lost(self):
        devices = fleet(200)
        emu = self.start_emulator(registry=fleet_registry(devices))
        first = StreamReader(emu)
        drv = Driver(emu, devices, "--messages", 40, "--rate", 4, "--backoff-base", 300, "--backoff-cap", 2000,
                     "--auth-rate", 400)
        drv.wait_status(lambda s: s["accepted"] >= 2000, 60)
        # the hub hangs, so that messages are surely in flight, then dies. Frozen, it
        # accepts nothing more: once the driver's status (rewritten every second) has
        # caught up, what it counts accepted minus what the first reader got is what the
        # killed hub takes with it (the emulator does not persist its stream)
        emu.proc.send_signal(signal.SIGSTOP)
        time.sleep(1.5)
        accepted_by_killed_hub = drv.status_now()["accepted"]
        emu.kill()
        first.stop()
        unread_at_kill = accepted_by_killed_hub - len(set(first.ids()))
        emu.restart()
        second = StreamReader(emu)
        summary, log = drv.summary()
        # the second reader sees everything accepted after the restart, given the time
        expected = expected_ids(devices, 40)
        deadline = time.time() + 30
        while len(expected - set(first.ids()) - set(second.ids())) > unread_at_kill and time.time() < deadline:
            time.sleep(0.2)
        second.stop()
        self.assertEqual(summary["accepted"] - summary["duplicates"], 200 * 40, summary["connections"])
        self.assertEqual(summary["online"], 200)
        self.assertGreaterEqual(summary["connections"][0]["reconnects"], 1)
        self.assertIn("reopening in", log)
        # at least once: every message the gateway saw accepted reached a stream reader,
        # except those the killed hub had accepted and not yet sent to the first reader
        missing = expected - set(first.ids()) - set(second.ids())
        print(f"\nrestart: {summary['retried']} retried, {summary['duplicates']} accepted twice, {len(missing)} "
              f"accepted by the killed hub but not seen by its reader (it had {unread_at_kill} unread)",
              file=sys.stderr)
        self.assertLessEqual(len(missing), unread_at_kill, sorted(missing)[:20])
        # re-authentication paced at 400/s (bursts of 40): 200 devices take 0.4 s or more
        stamps = re.findall(r"T(\d\d):(\d\d):(\d\d\.\d+)Z info  conn \d+: dev\d+ authorized", emu.log_text())
        seconds = [int(h) * 3600 + int(m) * 60 + float(s) for h, m, s in stamps[-200:]]
        self.assertGreaterEqual(max(seconds) - min(seconds), 0.35, "re-authentication was not paced")
        emu.stop()

    def test_direct_methods_reach_the_device_and_its_answer_the_caller(self):
        devices = fleet(3)
        emu = self.start_emulator(registry=fleet_registry(devices))
        # reached through another name for the same host, as with GatewayHostName: tokens
        # still name the hub, TLS checks the name connected to
        drv = Driver(emu, devices, "--methods", "--messages", 1, "--duration", 6, "--auth-rate", -1,
                     "--connect-host", "127.0.0.1")
        drv.wait_status(lambda s: s["online"] == 3, 30)
        status, _, body = emu.rest("POST", "/twins/dev0001/methods", {
            "methodName": "rebootDevice", "payload": {"delay": 1}, "responseTimeoutInSeconds": 10})
        self.assertEqual(status, 200, body)
        self.assertEqual(body, {"status": 200, "payload": {
            "device": "dev0001", "method": "rebootDevice", "request": {"delay": 1}}})
        summary, _ = drv.summary()
        self.assertEqual(summary["methods"], 1)
        # once the device has left, the hub answers for it at once
        status, headers, body = emu.rest("POST", "/twins/dev0001/methods", {"methodName": "rebootDevice"})
        self.assertEqual(status, 404)
        self.assertIn("404103", body["Message"])
        emu.stop()

    def test_twin_and_cloud_to_device_reach_the_device(self):
        from proton import Message
        from emulator_lib import Cbs, connect, owner_token
        devices = fleet(4)
        emu = self.start_emulator(registry=fleet_registry(devices))
        drv = Driver(emu, devices, "--twin", "--c2d", "--messages", 1, "--duration", 8, "--auth-rate", -1)
        # each device reads its twin on coming online
        drv.wait_status(lambda s: s["online"] == 4 and s["twin_answers"] == 4, 30)
        # a desired change reaches the subscribed device, which reports it back
        status, _, twin = emu.rest("PATCH", "/twins/dev0002", {"properties": {"desired": {"interval": 30}}},
                                   headers={"If-Match": "*"})
        self.assertEqual(status, 200, twin)
        version = twin["properties"]["desired"]["$version"]
        deadline = time.time() + 20
        while time.time() < deadline:
            reported = emu.rest("GET", "/twins/dev0002")[2]["properties"]["reported"]
            if reported.get("lastDesiredVersion") == version:
                break
            time.sleep(0.2)
        self.assertEqual(reported.get("lastDesiredVersion"), version, reported)
        # cloud-to-device messages are delivered and completed
        svc = connect(emu)
        self.assertEqual(Cbs(svc).put(owner_token(), audience=HOST)[0], 200)
        sender = svc.create_sender("/messages/devicebound")
        for i in range(7):
            sender.send(Message(address="/devices/dev0003/messages/devicebound", id=f"c{i}", body=b"hello"))
        svc.close()
        status = drv.wait_status(lambda s: s["c2d"] == 7, 20)
        summary, _ = drv.summary()
        self.assertEqual(summary["desired_updates"], 1)
        self.assertEqual(summary["twin_answers"], 4 + 1)  # the GETs and the reported patch
        self.assertEqual(summary["c2d"], 7)  # with credit for 5: the first were completed to make room
        emu.stop()

    def test_throttled_devices_slow_down(self):
        # 10 devices offer 300 msgs/s to a hub that takes 100/s: a device the hub refuses
        # as throttled keeps the message, pauses, then probes, instead of hammering the hub
        devices = fleet(10)
        emu = self.start_emulator("--d2c-limit", 100, registry=fleet_registry(devices))
        summary, log = Driver(emu, devices, "--messages", 60, "--rate", 30, "--auth-rate", -1, "--backoff-base",
                              300, "--backoff-cap", 1500).summary()
        self.assertEqual(summary["accepted"], 600)
        self.assertGreater(summary["throttled"], 0)
        self.assertIn("throttled by the hub", log)
        # without the pause every refused message comes straight back (tens of thousands
        # of refusals over the ~6 s the hub needs); with it, a few hundred at most
        self.assertLess(summary["throttled"], 3 * 600, summary["throttled"])
        self.assertEqual(summary["connections"][0]["reconnects"], 0)
        print(f"\nthrottling: {summary['throttled']} refusals for 600 messages in {summary['elapsed_s']:.1f} s",
              file=sys.stderr)
        emu.stop()

    def test_amqps_and_policy_signed_tokens(self):
        # over AMQPS, with some devices' tokens signed by a DeviceConnect policy (skn)
        # instead of their own keys, as for fleets too large to list keys
        from emulator_lib import OWNER_KEY
        devices = fleet(6)
        emu = self.start_emulator(registry=fleet_registry(devices))
        reader = StreamReader(emu)
        by_policy = ["dev0004 " + OWNER_KEY + " iothubowner\n", "dev0005 " + OWNER_KEY + " iothubowner\n"]
        summary, _ = Driver(emu, {d: k for d, k in devices.items() if d < "dev0004"}, "--messages", 10,
                            "--auth-rate", -1, extra_lines=by_policy, amqps=True).summary()
        self.assertEqual(summary["accepted"], 60, summary["per_device"])
        deadline = time.time() + 10
        while len(reader.events) < 60 and time.time() < deadline:
            time.sleep(0.1)
        reader.stop()
        self.assertEqual(set(reader.ids()), expected_ids(devices, 10))
        self.assertIn("amqps", emu.log_text())
        emu.stop()

    def test_hub_token_limit_opens_another_connection(self):
        devices = fleet(30)
        emu = self.start_emulator("--max-tokens", 12, registry=fleet_registry(devices))
        summary, log = Driver(emu, devices, "--messages", 10, "--rate", 10, "--auth-rate", -1).summary()
        self.assertEqual(summary["accepted"], 300, summary["connections"])
        self.assertEqual(summary["failed"], 0)
        conns = summary["connections"]
        self.assertEqual(sorted(c["devices"] for c in conns), [6, 12, 12], conns)
        self.assertIn("is full at the hub", log)
        emu.stop()


if __name__ == "__main__":
    run_tests()
