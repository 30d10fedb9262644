"""iotgw when the hub misbehaves for a while: tokens that expire or are refused once,
devices deleted or disabled at the hub, throttling, a hub that stops answering (SIGSTOP),
and a gateway whose per-device queue is smaller than the device's window. What passes
must cost the device nothing but time; only a refusal for good is NACK_UNAUTHORIZED
(docs/downstream-protocol.md). iothub-emulator --admin injects the faults. Figures
measured are printed ("figures: ...") to be quoted.

usage: gateway_faults.py IOTHUB_EMULATOR IOTGW SCHEMAS_DESC CERT_DIR"""
import os
import signal
import socket
import time
import unittest

import gateway_e2e  # noqa: F401 (takes the four arguments above and loads the schemas)
from gateway_e2e import CERTS, EMULATOR, KEYS, Gateway, token
from device_lib import Device, T
from emulator_lib import Emulator, fleet_registry, random_key
from iotgw_testlib import run_tests

NACK_RETRY_LATER, NACK_UNAUTHORIZED, NACK_TIMEOUT = 5, 6, 8
EMU = GW = None
EXTRA = {"gone1": random_key(), "off2": random_key()}


def setUpModule():
    global EMU, GW
    keys = {**{d: k for d, k in KEYS.items() if d != "spare1"}, **EXTRA}
    EMU = Emulator(EMULATOR, CERTS, extra=["--admin"], registry=fleet_registry(keys))
    GW = Gateway(EMU, keys={**KEYS, **EXTRA})


def tearDownModule():
    GW.stop()
    GW.log.close()
    EMU.stop()
    EMU.log.close()


def admin(path, body=None, method="POST"):
    status, _, answer = EMU.rest(method, "/admin/" + path, body)
    assert status in (200, 204), (path, status, answer)
    return answer


def connect(device, gw=None):
    d = Device((gw or GW).port)
    d.hello(device, token(device, key=EXTRA.get(device)))
    d.expect("welcome")
    return d


def send(d, seq, payload=b"{}"):
    f = T("Frame")()
    f.telemetry.seq = seq
    f.telemetry.raw = payload
    d.send(f)


def pong(d, f):
    p = T("Frame")()
    p.pong.nonce = f.ping.nonce
    d.send(p)


def pump(d, seconds):
    """Read for that long, answering pings; no outcome may arrive meanwhile."""
    d.sock.settimeout(seconds)
    end = time.time() + seconds
    while time.time() < end:
        try:
            f = d.recv(timeout=max(0.01, end - time.time()))
        except AssertionError:  # nothing within the time
            return
        assert f is not None, "the gateway closed the connection"
        body = f.WhichOneof("body")
        assert body == "ping", f"unexpected {body} while idle: {f}"
        pong(d, f)


def outcomes(d, seqs, timeout=20):
    """{seq: Ack or Nack} for each of seqs, answering pings meanwhile."""
    got, end = {}, time.time() + timeout
    while set(seqs) - set(got):
        left = end - time.time()
        assert left > 0, f"no outcome for {sorted(set(seqs) - set(got))} within {timeout} s"
        f = d.recv(timeout=left)
        assert f is not None, "the gateway closed the connection"
        body = f.WhichOneof("body")
        if body == "ping":
            pong(d, f)
        elif body in ("ack", "nack"):
            got[getattr(f, body).seq] = getattr(f, body)
    return got


def wait_for_log(gw, text, timeout, *devices):
    """gw.wait_for_log, answering the devices' pings meanwhile (keepalive is 5 s)."""
    end = time.time() + timeout
    while text not in gw.log_text():
        assert time.time() < end, f"iotgw never logged {text!r}:\n{gw.log_text()[-3000:]}"
        for d in devices:
            pump(d, 0.05)


def nacks(got):
    return {s: (o.reason, o.detail) for s, o in got.items() if hasattr(o, "reason")}


class GatewayFaults(unittest.TestCase):
    def tearDown(self):
        admin("faults", method="DELETE")

    def test_expired_and_once_refused_tokens_cost_the_device_nothing(self):
        d = connect("agent1")
        for seq in range(1, 11):
            send(d, seq)
        self.assertEqual(nacks(outcomes(d, range(1, 11))), {})
        # the hub ends the device's links (its token expired): what is sent meanwhile waits
        admin("tokens", {"device": "agent1", "action": "expire"})
        for seq in range(11, 31):
            send(d, seq)
        got = outcomes(d, range(11, 31))
        self.assertEqual(nacks(got), {}, "an expired token must cost the device nothing")
        # the next put-token is refused once (401), then accepted: still nothing lost
        admin("tokens", {"device": "agent1", "action": "reject"})
        admin("tokens", {"device": "agent1", "action": "expire"})
        for seq in range(31, 51):
            send(d, seq)
        GW.wait_for_log("device agent1 refused by the hub (amqp:unauthorized-access: put-token answered 401")
        admin("tokens", {"device": "agent1", "action": "accept"})
        got = outcomes(d, range(31, 51), timeout=40)
        self.assertEqual(nacks(got), {}, "a token refused once must cost the device nothing")
        self.assertNotIn("agent1 refused by the hub (amqp:unauthorized-access: put-token answered 401: token "
                         "rejected (fault injection)), for good", GW.log_text())
        d.close()

    def test_deleted_and_disabled_devices_are_refused_for_good(self):
        bystander = connect("agent1")
        gone = connect("gone1")
        send(gone, 1)
        self.assertEqual(nacks(outcomes(gone, [1])), {})
        status, _, _ = EMU.rest("DELETE", "/devices/gone1", headers={"If-Match": "*"})
        self.assertEqual(status, 204)
        wait_for_log(GW, "device gone1 refused by the hub (amqp:not-found", 20, bystander, gone)
        send(gone, 2)
        n = nacks(outcomes(gone, [2]))
        self.assertEqual(n[2][0], NACK_UNAUTHORIZED, n)
        self.assertIn("404", n[2][1])
        # disabled: its fresh token is refused (401) on the retry too, then it is for good
        off = connect("off2")
        status, _, dev = EMU.rest("GET", "/devices/off2")
        dev["status"] = "disabled"
        status, _, _ = EMU.rest("PUT", "/devices/off2", dev, headers={"If-Match": "*"})
        self.assertEqual(status, 200)
        wait_for_log(GW, "device off2 refused by the hub (amqp:unauthorized-access: put-token answered 401: "
                     "off2 is disabled), for good", 30, bystander, gone, off)
        send(off, 1)
        n = nacks(outcomes(off, [1]))
        self.assertEqual(n[1][0], NACK_UNAUTHORIZED, n)
        for seq in range(1, 6):  # undisturbed
            send(bystander, seq)
        self.assertEqual(nacks(outcomes(bystander, range(1, 6))), {})
        for c in (bystander, gone, off):
            c.close()

    def test_throttling_ends_when_the_hub_stops_throttling(self):
        """The hub takes 20 msgs/s for 4 s while the device offers 200/s; once it stops,
        the device's backlog is delivered within the gateway's longest pause (5 s) and the
        device never sees a nack."""
        d = connect("monitor1")
        admin("throttle", {"d2cPerSecond": 20})
        total, window, seq, got = 1600, 32, 0, {}
        start = time.time()
        cleared = None
        sent_at = {}
        acked_at = {}
        while len(got) < total and time.time() - start < 60:
            if cleared is None and time.time() - start >= 4:
                admin("faults", method="DELETE")
                cleared = time.time()
            while seq < total and seq - len(got) < window and seq < (time.time() - start) * 200:
                seq += 1
                send(d, seq)
                sent_at[seq] = time.time()
            try:
                f = d.recv(timeout=0.02)
            except AssertionError:
                continue
            body = f.WhichOneof("body") if f else None
            if body in ("ack", "nack"):
                o = getattr(f, body)
                got[o.seq] = o
                acked_at[o.seq] = time.time()
            elif body == "ping":
                pong(d, f)
        self.assertEqual(len(got), total)
        self.assertEqual(nacks(got), {}, "throttling must cost the device nothing but time")
        drained = max(acked_at.values()) - cleared
        after = [s for s in sent_at if sent_at[s] >= cleared + 1]
        latency = sorted(acked_at[s] - sent_at[s] for s in after)
        print(f"\nfigures: throttled 4 s at 20 msgs/s: backlog drained {drained:.1f} s after the throttle ended; "
              f"messages sent 1 s after it: ack p50 {latency[len(latency) // 2] * 1000:.0f} ms, max "
              f"{latency[-1] * 1000:.0f} ms", flush=True)
        self.assertLess(drained, 8, "the backlog must drain once throttling ends")
        self.assertLess(latency[-1], 2, "a message sent after the throttle ended must not wait long")
        d.close()

    def test_queue_per_device_holds_whatever_max_in_flight(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
        s.close()  # nothing listens: the hub is unreachable, everything waits
        gw = Gateway(EMU, keys={"agent1": KEYS["agent1"]}, hub_port=closed_port,
                     devices_yaml="  maxInFlight: 2000\n  queuePerDevice: 50\n")
        try:
            d = connect("agent1", gw)
            for seq in range(1, 201):
                send(d, seq)
            n = nacks(outcomes(d, range(51, 201)))
            self.assertEqual(sorted(n), list(range(51, 201)), "the first 50 wait, the rest are refused")
            self.assertTrue(all(r == NACK_RETRY_LATER for r, _ in n.values()), n)
            d.close()
        finally:
            gw.stop()
            gw.log.close()

    def test_per_device_log_lines_are_bounded(self):
        """A device's 20,000 answers to requests that do not exist cost a few log lines."""
        d = connect("twin1")
        batch = b""
        for i in range(20000):
            f = T("Frame")()
            if i % 2:
                f.method_response.request_id = 10 ** 6 + i
                f.method_response.status = 200
            else:
                f.c2d_settle.delivery_id = 10 ** 6 + i
            data = f.SerializeToString()
            batch += bytes([len(data)]) + data
        before = len(GW.log_text().splitlines())
        d.send_raw(batch)
        f = T("Frame")()
        f.ping.nonce = 9
        d.send(f)
        self.assertEqual(d.expect("pong", skip=()).nonce, 9)
        lines = len(GW.log_text().splitlines()) - before
        d.close()
        GW.wait_for_log("more lines like the last one not logged")
        print(f"\nfigures: 20,000 stray answers ({len(batch)} bytes) -> {lines} log lines", flush=True)
        self.assertLess(lines, 20)

    def test_devsim_reconnects_through_a_gateway_restart(self):
        """iotgw-devsim --reconnect through a gateway killed (SIGKILL) and started again on the
        same port: every message gets an outcome (what was in flight is sent again); without
        --reconnect the same run exits 1, saying how many were never resolved."""
        import json
        import subprocess
        from iotgw_testlib import free_port
        devsim = os.path.join(os.path.dirname(os.path.dirname(gateway_e2e.IOTGW)), "devices", "iotgw-devsim")
        port = free_port()
        keys = {"agent1": KEYS["agent1"], "monitor1": KEYS["monitor1"]}
        fleet = os.path.join(GW.dir, "restart-fleet.txt")
        with open(fleet, "w") as f:
            f.writelines(f"{d} {k}\n" for d, k in keys.items())
        for reconnect in (True, False):
            gw = Gateway(EMU, keys=keys, listen=(f"127.0.0.1:{port}",))
            p = subprocess.Popen([devsim, "--gateway", f"127.0.0.1:{port}", "--hub", "localhost", "--fleet", fleet,
                                  "--rate", "1000", "--duration", "6", "--quiet"] + (["--reconnect"] if reconnect else []),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(2)
            gw.proc.kill()  # gone at once: what it had not answered stays unanswered
            gw.proc.wait(timeout=30)
            gw.proc.stdout.close()
            gw.log.close()
            time.sleep(1)
            gw = Gateway(EMU, keys=keys, listen=(f"127.0.0.1:{port}",))
            try:
                out, err = p.communicate(timeout=60)
            finally:
                gw.stop()
                gw.log.close()
            r = json.loads(out.strip().splitlines()[-1])
            if reconnect:
                self.assertEqual(p.returncode, 0, err)
                self.assertEqual(r["unresolved"], 0, r)
                self.assertGreaterEqual(r["reconnects"], 2, r)
                # each message resolved once: itself, or (lost in the kill) the copy sent again
                self.assertEqual(r["acked"] + r["nacked"], r["sent"], r)  # (often nothing is in flight)
                print(f"\nfigures: devsim through a gateway restart: {r['sent']} sent, {r['resent']} sent again, "
                      f"{r['acked']} acked, {r['reconnects']} reconnects, 0 unresolved", flush=True)
            else:
                self.assertEqual(p.returncode, 1, (r, err))
                self.assertEqual(r["reconnects"], 0, r)
                if r["unresolved"]:
                    self.assertIn(f"{r['unresolved']} messages sent never got an ack or a nack", err)

    def test_frozen_hub_is_noticed_and_served_at_once_on_its_return(self):
        """The hub stops (SIGSTOP) for 90 s: messages sent meanwhile get NACK_TIMEOUT at the
        delivery deadline (60 s), the lost connection is noticed within the idle timeout
        (30 s), and once the hub runs again a new message is acknowledged within 5 s."""
        emu = Emulator(EMULATOR, CERTS, registry=fleet_registry({"agent1": KEYS["agent1"]}))
        gw = Gateway(emu, keys={"agent1": KEYS["agent1"]})
        try:
            d = connect("agent1", gw)
            send(d, 1)
            self.assertEqual(nacks(outcomes(d, [1])), {})
            os.kill(emu.proc.pid, signal.SIGSTOP)
            frozen = time.time()
            for seq in range(2, 7):
                send(d, seq)
            got = outcomes(d, range(2, 7), timeout=75)
            timed_out = time.time() - frozen
            self.assertEqual({s: r for s, (r, _) in nacks(got).items()}, {s: NACK_TIMEOUT for s in range(2, 7)})
            self.assertIn("no outcome from the hub within 60000 ms", got[2].detail)
            lost = [line for line in gw.log_text().splitlines() if "connection 1 to " in line and " lost (" in line]
            self.assertTrue(lost, "the frozen hub went unnoticed")
            while time.time() - frozen < 90:
                pump(d, 1)
            os.kill(emu.proc.pid, signal.SIGCONT)
            back = time.time()
            send(d, 7)
            got = outcomes(d, [7], timeout=30)
            first_ack = time.time() - back
            detected = self.seconds_after(frozen, lost[0])
            print(f"\nfigures: hub frozen 90 s: loss noticed after {detected:.1f} s, NACK_TIMEOUT after "
                  f"{timed_out:.1f} s, first ack {first_ack:.2f} s after the hub's return", flush=True)
            if first_ack > 1:  # say what took the time
                print("\n".join(l for l in gw.log_text().splitlines() if "upstream" in l), flush=True)
            self.assertEqual(nacks(got), {})
            self.assertLess(detected, 60)
            self.assertLess(first_ack, 5)
            d.close()
        finally:
            gw.stop()
            gw.log.close()
            emu.stop()
            emu.log.close()

    @staticmethod
    def seconds_after(start, line):
        """Seconds between start (time.time()) and a log line's UTC timestamp."""
        import calendar
        stamp = line.split()[0]  # 2026-12-02T02:22:47.703Z
        whole, frac = stamp.rstrip("Z").split(".")
        t = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 1000
        return t - start


if __name__ == "__main__":
    run_tests()
