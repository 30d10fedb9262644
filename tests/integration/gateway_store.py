"""iotgw's store-and-forward (docs/store.md) with real processes on loopback: test devices
(device_lib, python3-protobuf) send telemetry with their own message ids
("DEVICE-00042"), iothub-emulator is the hub, and what the hub received is read back
from its telemetry stream (emulator_lib.StreamReader: the device id annotation and the
message-id). The hub goes away and comes back, the gateway is SIGKILLed and started
again on the same store, the store's disk fills up (a tmpfs of 2 MiB in a mount
namespace of the test's own), messages expire, the store fills (onFull rejectNew and
dropOldest), a record of a segment file is damaged, a second gateway tries the same
folder, and a device leaves with a backlog. An acknowledged message must reach the hub,
in order per device, at least once (the same message-id); duplicates are allowed and
counted. Figures measured are printed ("figures: ...") to be quoted.

The hub is down in two ways: the emulator killed and started again on its ports
(Emulator.kill/restart: its telemetry stream starts empty), or, where a test must read
every message the hub ever accepted across its outages, a TCP relay in front of it
(HubProxy) that cuts every connection with a reset and refuses new ones, as a crashed
hub does, while the emulator and its stream stay: a killed emulator may have accepted a
message and died before its stream reader got it, which would look lost.

usage: gateway_store.py IOTHUB_EMULATOR IOTGW SCHEMAS_DESC CERT_DIR [Class.test ...]"""
import collections
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

from iotgw_testlib import WRAPPER, LoggedProcess, free_port, listening_ports, readline_within, run_tests
from emulator_lib import Emulator, StreamReader, fleet_registry, random_key, sas_token, HOST
from device_lib import Device, T, load_schemas

EMULATOR, IOTGW, SCHEMAS, CERTS = sys.argv[1:5]
del sys.argv[1:5]
load_schemas(SCHEMAS)

NACK_RETRY_LATER = 5
FULL_DETAIL = "the gateway's store is full (store.maxBytes)"
ENOSPC_DETAIL = "No space left on device"

OUTAGE_DEVICES = [f"out-{i:02d}" for i in range(50)]
KILL_DEVICES = [f"kill-{i:02d}" for i in range(10)]
OTHER_DEVICES = ["nospc-1", "ttl-1", "full-1", "full-by", "drop-1", "crc-1", "held-1", "leave-1"]
KEYS = {d: random_key() for d in OUTAGE_DEVICES + KILL_DEVICES + OTHER_DEVICES}
EMU = None


def setUpModule():
    global EMU
    # the stream keeps everything the tests send (the default keeps 100,000 messages)
    EMU = Emulator(EMULATOR, CERTS, registry=fleet_registry(KEYS),
                   extra=["--retention-messages", "2000000", "--retention-bytes", str(1 << 30)])


def tearDownModule():
    EMU.stop()
    EMU.log.close()


def token(device):
    return sas_token(f"{HOST}/devices/{device}", KEYS[device], 3600)


def mid(device, index):
    return f"{device}-{index:05d}"


def payload(index, size=100):
    head = b'{"i":%d,"pad":"' % index
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


# ---------------------------------------------------------------- the gateway


def config_text(hub_port, store_path, store=None, listen_port=0):
    store_lines = "".join(f"  {k}: {v}\n" for k, v in (store or {}).items())
    fleet = "".join(f"    - id: {d}\n      key: {k}\n" for d, k in KEYS.items())
    return f"""gatewayId: store-test
ops:
  listen: 127.0.0.1:0
hub:
  hostName: {HOST}
  port: {hub_port}
  caFile: {EMU.ca}
devices:
  listen: ["127.0.0.1:{listen_port}"]
store:
  path: {store_path}
{store_lines}fleet:
  devices:
{fleet}"""


class StoreGateway(LoggedProcess):
    """iotgw with a store, its log as JSON lines; start() again after kill() or stop() runs
    it anew on the same configuration and store (each run logs to a file of its own).
    prefix: a command before iotgw (nsenter into the test's mount namespace)."""
    name = "iotgw"

    def __init__(self, hub_port, store=None, listen_port=0, prefix=(), store_path=None):
        self.dir = tempfile.mkdtemp(prefix="iotgw-store-test-")
        self.store_path = store_path or os.path.join(self.dir, "store")
        self.prefix = list(prefix)
        self.config = os.path.join(self.dir, "iotgw.yaml")
        with open(self.config, "w") as f:
            f.write(config_text(hub_port, self.store_path, store, listen_port))
        self.runs = 0
        self.opened = []  # store_opened's fields, one per run
        self.proc = None
        self.start()

    def start(self):
        self.runs += 1
        self.log = open(os.path.join(self.dir, f"iotgw-{self.runs}.log"), "w+")
        # absolute: entering a mount namespace (nsenter -m) starts in its root folder
        self.proc = subprocess.Popen(self.prefix + WRAPPER + [os.path.abspath(IOTGW), "--config", self.config,
                                                             "--log-format", "json"],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        try:
            self.port = listening_ports(self.proc, 1)[0]
            line = readline_within(self.proc, 20)
        except AssertionError as e:
            self.proc.kill()
            self.proc.wait(30)
            text = self.log_text()
            self.proc.stdout.close()
            self.log.close()
            raise AssertionError(f"iotgw (run {self.runs}) did not start: {e}; exit status {self.proc.returncode}:\n"
                                 f"{text[-3000:]}") from None
        assert line.startswith("listening: ops "), line
        self.ops_port = int(line.rsplit(":", 1)[1])
        opened = self.events("store_opened")
        assert opened, f"no store_opened line at start:\n{self.log_text()[-3000:]}"
        self.opened.append(opened[0]["fields"])
        return self

    def kill(self):
        """SIGKILL: gone at once, whatever it was doing."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.log.close()
        self.proc = None

    def stop(self):
        super().stop()
        self.log.close()
        self.proc = None

    def close(self):
        if self.proc:
            self.kill()

    def metrics(self):
        from prometheus_client.parser import text_string_to_metric_families
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ops_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric(self, name, **labels):
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def wait_metric(self, name, pred, timeout=20, **labels):
        end, v = time.time() + timeout, None
        while time.time() < end:
            v = self.metric(name, **labels)
            if v is not None and pred(v):
                return v
            time.sleep(0.1)
        raise AssertionError(f"{name}{labels or ''} is {v} after {timeout} s")


# ---------------------------------------------------------------- the hub's way in


class HubProxy:
    """A TCP relay to the emulator's WebSocket port. down(): every connection through it is
    reset (SO_LINGER 0) and new ones are refused, as when the hub crashed; up(): it takes
    connections again on the same port. The emulator behind it, and its stream, stay."""

    def __init__(self, target_port, up=True):
        self.target = target_port
        self.port = free_port()
        self.lock = threading.Lock()
        self.listener = None
        self.pairs = []
        self.connections = 0
        if up:
            self.up()

    def up(self):
        with self.lock:
            if self.listener:
                return
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.port))
            s.listen(128)
            self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self):
        with self.lock:
            s, self.listener = self.listener, None
            pairs, self.pairs = self.pairs, []
        if s:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for pair in pairs:
            for c in pair:
                _reset(c)

    def _accept(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                u.settimeout(None)
            except OSError:
                _reset(c)
                continue
            with self.lock:
                if self.listener is not s:
                    _reset(c)
                    _reset(u)
                    return
                self.pairs.append((c, u))
                self.connections += 1
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def _reset(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)  # wakes the relay's thread blocked in recv
    except OSError:
        pass
    sock.close()


# ---------------------------------------------------------------- devices

TIMEOUT, CLOSED = "timeout", "closed"


class Client:
    """One device connection sending telemetry with our message ids. seq increases on the
    connection; .inflight maps it to the message's index."""

    def __init__(self, port, device, timeout=10, **caps):
        self.device = device
        self.d = Device(port)
        try:
            self.d.hello(device, token(device), **caps)
            self.welcome = self.d.expect("welcome", timeout=timeout)
        except BaseException:
            self.d.close()
            raise
        self.seq = 0
        self.inflight = {}
        self.error = None

    def send(self, index, data=None):
        self.seq += 1
        f = T("Frame")()
        f.telemetry.seq = self.seq
        f.telemetry.raw = payload(index) if data is None else data
        f.telemetry.content_type = "application/json"
        f.telemetry.message_id = mid(self.device, index)
        self.inflight[self.seq] = index
        self.d.send(f)

    def next_outcome(self, timeout):
        """(index, "ack" or "nack", the Ack or Nack), answering pings on the way; TIMEOUT;
        or CLOSED when the connection ended."""
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                return TIMEOUT
            try:
                f = self.d.recv(timeout=left)
            except AssertionError:
                return TIMEOUT
            except OSError:
                return CLOSED
            if f is None:
                return CLOSED
            body = f.WhichOneof("body")
            if body == "ping":
                p = T("Frame")()
                p.pong.nonce = f.ping.nonce
                try:
                    self.d.send(p)
                except OSError:
                    return CLOSED
            elif body in ("ack", "nack"):
                o = getattr(f, body)
                return self.inflight.pop(o.seq, None), body, o
            elif body == "error":
                self.error = f.error
                return CLOSED

    def ping(self, nonce=7):
        f = T("Frame")()
        f.ping.nonce = nonce
        self.d.send(f)
        return self.d.expect("pong", skip=()).nonce == nonce

    def close(self):
        self.d.close()


def send_all(port, device, indexes, window=32, size=100, timeout=60):
    """Connect, send the messages (at most window unanswered), gather every outcome, leave.
    Returns (indexes acked, [(index, Nack)])."""
    c = Client(port, device)
    todo, acked, nacked = list(indexes), [], []
    end = time.time() + timeout
    try:
        while todo or c.inflight:
            while todo and len(c.inflight) < window:
                i = todo.pop(0)
                c.send(i, payload(i, size))
            o = c.next_outcome(end - time.time())
            assert o not in (TIMEOUT, CLOSED), \
                f"{device}: {o} with {len(c.inflight)} unanswered and {len(todo)} to send ({c.error})"
            i, kind, frame = o
            (acked.append(i) if kind == "ack" else nacked.append((i, frame)))
    finally:
        c.close()
    return acked, nacked


def send_all_parallel(port, plan, **kw):
    """send_all for {device: indexes} at once, one thread each: {device: (acked, nacked)}."""
    results, errors = {}, {}

    def one(dev, idx):
        try:
            results[dev] = send_all(port, dev, idx, **kw)
        except BaseException as e:  # noqa: B902 (reported below)
            errors[dev] = e

    threads = [threading.Thread(target=one, args=item, daemon=True) for item in plan.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == len(plan), f"devices unfinished: {sorted(set(plan) - set(results))}"
    return results


# ---------------------------------------------------------------- what the hub got


def arrivals(reader, devices):
    """{device: [index, ...]} of our messages in the stream, in stream order (a device's
    messages are in one partition, so this is the order the hub took them)."""
    out = {d: [] for d in devices}
    for dev, msg_id, _, _ in list(reader.events):
        if dev in out and isinstance(msg_id, str) and msg_id.startswith(dev + "-"):
            out[dev].append(int(msg_id.rsplit("-", 1)[1]))
    return out


def first_order(seq):
    """The indexes in the order of their first arrival."""
    seen, out = set(), []
    for i in seq:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def judge(arr, expected):
    """(lost {device: [indexes]}, duplicates, out of order {device: [...]}) against
    expected {device: indexes that must have arrived}. In order: each device's messages
    arrived first in the order of their indexes (copies sent again may come later)."""
    lost, dups, disorder = {}, 0, {}
    for d, want in expected.items():
        got = arr.get(d, [])
        missing = sorted(set(want) - set(got))
        if missing:
            lost[d] = missing
        dups += len(got) - len(set(got))
        fo = [i for i in first_order(got) if i in set(want)]
        if fo != sorted(fo):
            bad = [(a, b) for a, b in zip(fo, fo[1:]) if b < a]
            disorder[d] = bad[:5]
    return lost, dups, disorder


def wait_arrivals(reader, expected, timeout, also=lambda: True):
    """Until every expected message is in the stream (and also() holds); the arrivals and
    when the first and the last of them came (time.time())."""
    end, first, arr = time.time() + timeout, None, {}
    want = {d: set(v) for d, v in expected.items()}
    while time.time() < end:
        arr = arrivals(reader, expected)
        if first is None and any(arr.values()):
            first = time.time()
        if all(want[d] <= set(arr[d]) for d in want) and also():
            return arr, first, time.time()
        assert reader.error is None, f"the stream reader failed: {reader.error}"
        time.sleep(0.1)
    return arr, first, None


def summary(lost):
    return {d: (len(v), v[:10]) for d, v in lost.items()}


class GatewayStore(unittest.TestCase):
    def setUp(self):
        self.started = time.time()

    def tearDown(self):
        print(f"  ({time.time() - self.started:.1f} s)", flush=True)

    def gateway(self, hub_port, **kw):
        gw = StoreGateway(hub_port, **kw)
        self.addCleanup(gw.close)
        return gw

    def proxy(self, up=True):
        p = HubProxy(EMU.wss, up=up)
        self.addCleanup(p.down)
        return p

    def reader(self, **kw):
        r = StreamReader(EMU, **kw)
        self.addCleanup(r.stop)
        return r

    def assertNoCorruption(self, gw):
        for n, o in enumerate(gw.opened, 1):
            self.assertEqual(o["corrupt_records"], 0, f"run {n} of the gateway found corrupted records: {o}")

    # ------------------------------------------------------------ 1

    def test_1_outage_kill_restart(self):
        """The hub dies after the gateway started; 50 devices send 200 messages each, all
        acknowledged from the store, and leave; the gateway is SIGKILLed and started again
        (store_opened: 10000 messages of 50 devices); the hub comes back: all 10,000 reach
        it, in order per device, though no device ever connects again."""
        gw = self.gateway(EMU.wss)
        gw.wait_event("hub_connection_open")
        EMU.kill()
        try:
            t0 = time.time()
            results = send_all_parallel(gw.port, {d: range(200) for d in OUTAGE_DEVICES}, window=32)
            took = time.time() - t0
            nacked = {d: [(i, n.reason, n.detail) for i, n in r[1]][:3] for d, r in results.items() if r[1]}
            self.assertEqual(nacked, {}, "with the hub down every message must be acknowledged from the store")
            self.assertEqual(sum(len(r[0]) for r in results.values()), 10000)
            m = gw.metrics()
            self.assertEqual(m[("iotgw_store_messages", ())], 10000)
            self.assertEqual(m[("iotgw_store_devices", ())], 50)
            gw.kill()
            gw.start()
            opened = gw.opened[-1]
            self.assertEqual((opened["messages"], opened["devices"]), (10000, 50), opened)
            self.assertEqual(gw.metric("iotgw_store_messages"), 10000)
        finally:
            EMU.restart()
        hub_up = time.time()
        reader = self.reader()
        expected = {d: range(200) for d in OUTAGE_DEVICES}
        arr, first, last = wait_arrivals(reader, expected, 60)
        lost, dups, disorder = judge(arr, expected)
        self.assertEqual(summary(lost), {}, "acknowledged messages never reached the hub")
        self.assertEqual(disorder, {}, "a device's messages reached the hub out of order")
        self.assertIsNotNone(last)
        gw.wait_metric("iotgw_store_messages", lambda v: v == 0, timeout=20)
        end = time.time() + 20
        while len({e["device"] for e in gw.events("store_device_drained")}) < 50 and time.time() < end:
            time.sleep(0.1)
        self.assertEqual({e["device"] for e in gw.events("store_device_drained")}, set(OUTAGE_DEVICES))
        self.assertEqual(gw.events("store_drain_failed"), [])
        forwarded = gw.metric("iotgw_store_forwarded_total")
        self.assertGreaterEqual(forwarded, 10000)
        self.assertNoCorruption(gw)
        print(f"\nfigures: outage: 10000 messages of 50 devices stored and acked in {took:.2f} s "
              f"({10000 / took:.0f} msgs/s); after SIGKILL and restart store_opened {opened['messages']} messages of "
              f"{opened['devices']} devices (torn_bytes {opened['torn_bytes']}); hub restarted: first message "
              f"{first - hub_up:.2f} s later, all 10000 in {last - first:.2f} s ({10000 / max(last - first, 1e-3):.0f} "
              f"msgs/s); lost 0, duplicates {dups}, forwarded_total {forwarded:.0f}", flush=True)
        gw.stop()

    # ------------------------------------------------------------ 2

    def test_2_random_sigkills(self):
        """20 SIGKILLs of the gateway at random moments of a ~55 s run while the hub flaps
        (every connection to it reset, new ones refused, for 0.5-2.5 s every 1-4 s) and 10
        devices keep sending (reconnecting after each kill, sending again what had no
        outcome). Then, with the hub up: every acknowledged message reached the hub."""
        seed = int(os.environ.get("IOTGW_STORE_SEED", random.randrange(1 << 30)))
        rng, flap_rng = random.Random(seed), random.Random(seed + 1)
        print(f"\n  seed {seed} (IOTGW_STORE_SEED to repeat)", flush=True)
        proxy = self.proxy()
        reader = self.reader(selector=None)
        gw = self.gateway(proxy.port, listen_port=free_port())
        stop = threading.Event()
        devices = [Flapper(gw.port, d, rate=80, window=16, stop=stop) for d in KILL_DEVICES]
        for d in devices:
            d.start()
        flaps = [0]
        stop_flapping = threading.Event()

        def flap():
            while not stop_flapping.wait(flap_rng.uniform(1, 4)):
                proxy.down()
                flaps[0] += 1
                stop_flapping.wait(flap_rng.uniform(0.5, 2.5))
                proxy.up()

        flapper = threading.Thread(target=flap, daemon=True)
        flapper.start()
        t0 = time.time()
        try:
            for _ in range(20):
                time.sleep(rng.uniform(1.5, 4.0))
                gw.kill()
                if rng.random() < 0.3:
                    time.sleep(rng.uniform(0, 0.5))
                gw.start()
        finally:
            stop_flapping.set()
            flapper.join(10)
            proxy.up()
            run = time.time() - t0
            stop.set()
            for d in devices:
                d.join(30)
        self.assertEqual([d.error for d in devices if d.error], [])
        expected = {d.device: sorted(d.acked) for d in devices}
        sent = sum(d.next_new for d in devices)
        acked = sum(len(v) for v in expected.values())
        self.assertGreater(acked, 1000, "the devices hardly sent anything")
        drain_from = time.time()
        arr, first, last = wait_arrivals(reader, expected, 60,
                                         also=lambda: gw.metric("iotgw_store_messages") == 0)
        lost, dups, disorder = judge(arr, expected)
        sent_ids = {d.device: set(range(d.next_new)) for d in devices}
        arrived_unacked = sum(len(set(arr[d]) & (sent_ids[d] - set(expected[d]))) for d in sent_ids)
        opened = gw.opened
        torn = sum(o["torn_bytes"] for o in opened)
        print(f"\nfigures: random SIGKILLs: {gw.runs - 1} SIGKILLs and {flaps[0]} hub flaps in {run:.1f} s; "
              f"{sent} messages sent ({sum(d.resent for d in devices)} sent again), {acked} acked, "
              f"acked-then-lost {sum(len(v) for v in lost.values())}, duplicates at the hub {dups}, "
              f"unacked that arrived {arrived_unacked}; {sum(d.connections for d in devices)} device connections; "
              f"nacks {dict(sum((d.nacks for d in devices), collections.Counter()))}; torn bytes cut at the "
              f"{len(opened)} opens {torn}; final drain {(last or time.time()) - drain_from:.1f} s; store at the "
              f"opens: {[o['messages'] for o in opened]}", flush=True)
        self.assertEqual(summary(lost), {}, "acknowledged messages never reached the hub")
        self.assertEqual(disorder, {}, "a device's messages reached the hub out of order")
        self.assertIsNotNone(last, "the store did not drain: iotgw_store_messages "
                             f"{gw.metric('iotgw_store_messages')}")
        self.assertNoCorruption(gw)
        gw.stop()

    # ------------------------------------------------------------ 3

    def test_3_enospc(self):
        """The store's folder is a 2 MiB tmpfs (store.maxBytes 16 MiB, so the disk fills
        first) in a mount namespace of the test's own; with the hub down a device sends
        until NACK_RETRY_LATER "... write: No space left on device"; the hub comes back:
        the store drains, its segments go, and the refused messages sent again are
        acknowledged; everything acknowledged reaches the hub; opened again, the store has
        no corrupted record."""
        if os.geteuid() != 0:
            print("\nSKIP: test_3_enospc needs root (mount -t tmpfs in a mount namespace)", flush=True)
            self.skipTest("not root")
        top = tempfile.mkdtemp(prefix="iotgw-store-enospc-")
        folder = os.path.join(top, "store")
        os.mkdir(folder)
        holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                   f'mount -t tmpfs -o size=2m tmpfs "{folder}" && echo mounted && exec sleep 600'],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = readline_within(holder, 10)
        except AssertionError:
            line = ""
        if line != "mounted":
            holder.kill()
            _, err = holder.communicate(timeout=10)
            print(f"\nSKIP: test_3_enospc: unshare -m / mount -t tmpfs failed: {err.strip()}", flush=True)
            self.skipTest("no mount namespace")

        def end_holder():
            holder.kill()
            holder.wait(10)
            holder.stdout.close()
            holder.stderr.close()
        self.addCleanup(end_holder)
        inside = f"/proc/{holder.pid}/root{folder}"  # the folder as the namespace sees it

        def segments():
            return sorted(n for n in os.listdir(inside) if n.endswith(".seg"))

        def free():
            st = os.statvfs(inside)
            return st.f_bavail * st.f_frsize

        proxy = self.proxy(up=False)
        reader = self.reader(selector=None)
        gw = self.gateway(proxy.port, store_path=folder, prefix=["nsenter", "-t", str(holder.pid), "-m", "--"],
                          store={"maxBytes": 16 << 20, "segmentBytes": 1048576})
        free_at_start = free()
        c = Client(gw.port, "nospc-1")
        acked, nacked, other, index = [], [], [], 0
        while not nacked and index < 5000:
            while len(c.inflight) < 32:
                c.send(index, payload(index, 2000))
                index += 1
            o = c.next_outcome(10)
            self.assertNotIn(o, (TIMEOUT, CLOSED))
            i, kind, frame = o
            if kind == "ack":
                acked.append(i)
            elif frame.reason == NACK_RETRY_LATER and ENOSPC_DETAIL in frame.detail:
                nacked.append((i, frame))
            else:
                other.append((i, frame.reason, frame.detail))
        while c.inflight:
            o = c.next_outcome(10)
            self.assertNotIn(o, (TIMEOUT, CLOSED))
            i, kind, frame = o
            if kind == "ack":
                acked.append(i)
            elif frame.reason == NACK_RETRY_LATER and ENOSPC_DETAIL in frame.detail:
                nacked.append((i, frame))
            else:
                other.append((i, frame.reason, frame.detail))
        self.assertEqual(other, [], "other nacks than the full disk's")
        self.assertTrue(nacked, f"{index} messages of 2000 bytes were all stored on a 2 MiB tmpfs")
        print(f"\n  first nack after {len(acked)} acks: {nacked[0][1].detail!r} "
              f"(retry_after_ms {nacked[0][1].retry_after_ms})", flush=True)
        self.assertIn("the gateway's store could not write it: write: No space left on device", nacked[0][1].detail)
        segs_full, free_full = segments(), free()
        refused = gw.metric("iotgw_store_refused_total")
        self.assertGreaterEqual(refused, len(nacked))
        # the hub comes back: the store drains and frees its segments
        proxy.up()
        t_up = time.time()
        arr, first, last = wait_arrivals(reader, {"nospc-1": acked}, 40,
                                         also=lambda: gw.metric("iotgw_store_messages") == 0)
        lost, dups, disorder = judge(arr, {"nospc-1": acked})
        self.assertEqual(summary(lost), {}, "acknowledged messages never reached the hub")
        self.assertEqual(disorder, {})
        self.assertIsNotNone(last, f"the store did not drain: {gw.metric('iotgw_store_messages')} messages left")
        never = sorted(set(i for i, _ in nacked) & set(arr["nospc-1"]))
        self.assertEqual(never, [], "messages refused with NACK_RETRY_LATER reached the hub (nothing of them "
                                    "should have been kept)")
        end = time.time() + 10
        while time.time() < end and not (set(segs_full) - set(segments())):
            time.sleep(0.1)
        segs_drained, free_drained = segments(), free()
        self.assertTrue(set(segs_full) - set(segs_drained),
                        f"no segment was deleted after the drain: {segs_full} then {segs_drained}")
        # what was refused is taken again, and more
        again = [i for i, _ in nacked] + list(range(index, index + 50))
        c2_acked, c2_nacked = send_all(gw.port, "nospc-1", again, size=2000)
        c.close()
        self.assertEqual([(i, n.detail) for i, n in c2_nacked], [], "refused again after space returned")
        everything = acked + c2_acked
        arr, _, last2 = wait_arrivals(reader, {"nospc-1": everything}, 30,
                                      also=lambda: gw.metric("iotgw_store_messages") == 0)
        lost, dups2, _ = judge(arr, {"nospc-1": everything})
        self.assertEqual(summary(lost), {}, "acknowledged messages never reached the hub")
        twice = sorted(i for i, k in collections.Counter(arr["nospc-1"]).items() if k > 1)
        # the store, opened again, has nothing damaged
        gw.stop()
        gw.start()
        self.assertEqual(gw.opened[-1]["corrupt_records"], 0, gw.opened[-1])
        self.assertNoCorruption(gw)
        print(f"figures: ENOSPC: tmpfs 2 MiB ({free_at_start} bytes free at start): {len(acked)} messages of 2000 "
              f"bytes acked, then {len(nacked)} NACK_RETRY_LATER; segments at the full disk {segs_full} "
              f"({free_full} bytes free); drained in {last - t_up:.2f} s after the hub returned: segments "
              f"{segs_drained} ({free_drained} bytes free); {len(again)} sent again / new, all acked; duplicates "
              f"{dups2} {twice[:8]}; reopened: {gw.opened[-1]}", flush=True)
        gw.stop()

    # ------------------------------------------------------------ 4

    def test_4_ttl(self):
        """store.ttlSeconds 2, the hub down: 10 messages, acknowledged, wait 3 s, the hub
        comes back: none of them reach it (a message sent after them does);
        iotgw_store_dropped_total{reason="expired"} is 10."""
        proxy = self.proxy(up=False)
        reader = self.reader(selector=None)
        gw = self.gateway(proxy.port, store={"ttlSeconds": 2})
        c = Client(gw.port, "ttl-1")
        self.addCleanup(c.close)
        for i in range(10):
            c.send(i)
        got = [c.next_outcome(10) for _ in range(10)]
        self.assertEqual(sorted((o[0], o[1]) for o in got), [(i, "ack") for i in range(10)])
        time.sleep(3)
        expired_before = gw.metric("iotgw_store_dropped_total", reason="expired")
        proxy.up()
        gw.wait_event("hub_connection_open", timeout=40)
        c.send(10)  # after them: once it arrived, they would have
        o = c.next_outcome(10)
        self.assertEqual((o[0], o[1]), (10, "ack"))
        arr, _, last = wait_arrivals(reader, {"ttl-1": [10]}, 30)
        self.assertIsNotNone(last, "the message sent after the hub returned never arrived")
        time.sleep(0.5)
        arr = arrivals(reader, ["ttl-1"])
        expired = gw.metric("iotgw_store_dropped_total", reason="expired")
        print(f"\nfigures: ttl 2 s: after 3 s iotgw_store_dropped_total{{reason=\"expired\"}} {expired_before}; "
              f"after the hub returned {expired}; at the hub: {arr['ttl-1']}", flush=True)
        self.assertEqual(sorted(set(arr["ttl-1"]) - {10}), [], "messages past store.ttlSeconds reached the hub")
        self.assertEqual(expired, 10)
        self.assertEqual(gw.metric("iotgw_store_messages"), 0)
        gw.stop()

    # ------------------------------------------------------------ 5

    def test_5_on_full_reject_new_then_drop_oldest(self):
        """store.maxBytes 1 MiB (segments of 128 KiB), the hub down. rejectNew: the device
        sends until NACK_RETRY_LATER "the gateway's store is full"; a bystander connected
        meanwhile gets the same nack for its telemetry (the store is shared) and is
        otherwise undisturbed (its connection stays, its method answers once the hub is
        back); what was acknowledged reaches the hub. dropOldest: every message is
        acknowledged, the oldest are dropped (counted) and what reaches the hub is the
        newest, in order."""
        proxy = self.proxy(up=False)
        reader = self.reader(selector=None)
        gw = self.gateway(proxy.port, store={"maxBytes": 1048576, "segmentBytes": 1048576, "onFull": "rejectNew"})
        bystander = Client(gw.port, "full-by", methods=True)
        c = Client(gw.port, "full-1")
        acked, full, other, index = [], [], [], 0
        while not full and index < 20000:
            while len(c.inflight) < 32:
                c.send(index, payload(index, 500))
                index += 1
            o = c.next_outcome(10)
            self.assertNotIn(o, (TIMEOUT, CLOSED))
            i, kind, frame = o
            if kind == "ack":
                acked.append(i)
            elif frame.reason == NACK_RETRY_LATER and frame.detail == FULL_DETAIL:
                full.append(i)
            else:
                other.append((i, frame.reason, frame.detail))
        while c.inflight:
            o = c.next_outcome(10)
            self.assertNotIn(o, (TIMEOUT, CLOSED))
            i, kind, frame = o
            if kind == "ack":
                acked.append(i)
            elif frame.reason == NACK_RETRY_LATER and frame.detail == FULL_DETAIL:
                full.append(i)
            else:
                other.append((i, frame.reason, frame.detail))
        self.assertEqual(other, [])
        self.assertTrue(full, f"{index} messages of 500 bytes all fitted in 1 MiB")
        disk = gw.metric("iotgw_store_disk_bytes")
        self.assertLessEqual(disk, 1048576, "the store took more disk than store.maxBytes")
        # the bystander: the same nack (the store is shared by all devices), nothing else
        bystander.send(0)
        o = bystander.next_outcome(10)
        self.assertNotIn(o, (TIMEOUT, CLOSED))
        self.assertEqual((o[0], o[1], o[2].reason, o[2].detail), (0, "nack", NACK_RETRY_LATER, FULL_DETAIL))
        self.assertTrue(bystander.ping(), "the bystander's connection must stay")
        refused = gw.metric("iotgw_store_refused_total")
        self.assertGreaterEqual(refused, len(full) + 1)
        proxy.up()
        arr, _, last = wait_arrivals(reader, {"full-1": acked}, 40,
                                     also=lambda: gw.metric("iotgw_store_messages") == 0)
        lost, dups, disorder = judge(arr, {"full-1": acked})
        self.assertEqual(summary(lost), {}, "acknowledged messages never reached the hub")
        self.assertEqual(disorder, {})
        self.assertEqual(sorted(set(full) & set(arr["full-1"])), [], "refused messages reached the hub")
        # the bystander's method, once the hub is back
        EMU.wait_online("full-by")
        result = {}
        t = threading.Thread(target=lambda: result.update(r=EMU.rest("POST", "/twins/full-by/methods", {
            "methodName": "ping", "payload": {}, "responseTimeoutInSeconds": 10})), daemon=True)
        t.start()
        req = bystander.d.expect("method_request")
        f = T("Frame")()
        f.method_response.request_id = req.request_id
        f.method_response.status = 200
        f.method_response.json = b'{"ok":true}'
        bystander.d.send(f)
        t.join(20)
        self.assertEqual(result["r"][2], {"status": 200, "payload": {"ok": True}}, result)
        # room again: the refused messages are taken
        again_acked, again_nacked = send_all(gw.port, "full-1", full[:50], size=500)
        self.assertEqual([(i, n.detail) for i, n in again_nacked], [])
        bystander.close()
        c.close()
        self.assertNoCorruption(gw)
        gw.stop()
        print(f"\nfigures: rejectNew at 1 MiB: {len(acked)} messages of 500 bytes acked, then {len(full)} "
              f"\"store is full\" nacks (disk {disk:.0f} bytes, refused_total {refused:.0f}); the bystander's "
              f"telemetry nacked the same, its connection and method fine; duplicates {dups}", flush=True)

        # dropOldest
        proxy.down()
        gw = self.gateway(proxy.port, store={"maxBytes": 1048576, "segmentBytes": 1048576, "onFull": "dropOldest"})
        n = 6000
        acked, nacked = send_all(gw.port, "drop-1", range(n), size=500)
        self.assertEqual([(i, x.reason, x.detail) for i, x in nacked][:5], [], "dropOldest must take every message")
        self.assertEqual(len(acked), n)
        m = gw.metrics()
        dropped = m[("iotgw_store_dropped_total", (("reason", "full"),))]
        stored = m[("iotgw_store_messages", ())]
        disk = m[("iotgw_store_disk_bytes", ())]
        self.assertGreater(dropped, 0)
        self.assertLessEqual(disk, 1048576, "the store took more disk than store.maxBytes")
        proxy.up()
        arr, _, last = wait_arrivals(reader, {"drop-1": [n - 1]}, 40,
                                     also=lambda: gw.metric("iotgw_store_messages") == 0)
        self.assertIsNotNone(last, "the newest message never arrived, or the store did not drain")
        time.sleep(0.5)
        got = first_order(arrivals(reader, ["drop-1"])["drop-1"])
        dropped_end = gw.metric("iotgw_store_dropped_total", reason="full")
        gaps = [(a, b) for a, b in zip(got, got[1:]) if b != a + 1]
        print(f"figures: dropOldest at 1 MiB: {n} messages acked; dropped for room {dropped:.0f} "
              f"(at the end {dropped_end:.0f}), {stored:.0f} stored, disk {disk:.0f} bytes; the hub got "
              f"{len(got)} distinct: {got[:1]}..{got[-1:]}, breaks in the sequence {gaps[:5]}", flush=True)
        self.assertEqual(gaps, [], "what reached the hub is not one run of the newest messages")
        self.assertGreater(got[0], 0, "nothing old was dropped")
        self.assertEqual(got[-1], n - 1)
        self.assertEqual(dropped_end, n - len(got), "messages neither sent nor counted as dropped")
        self.assertNoCorruption(gw)
        gw.stop()

    # ------------------------------------------------------------ 6

    def test_6_corrupted_record(self):
        """A backlog of 100, the gateway SIGKILLed, one byte flipped in the middle of what
        its segment file holds; started again: store_opened reports the damaged record and
        every other message reaches the hub."""
        proxy = self.proxy(up=False)
        reader = self.reader(selector=None)
        gw = self.gateway(proxy.port, store={"segmentBytes": 1048576})
        acked, nacked = send_all(gw.port, "crc-1", range(100), size=300)
        self.assertEqual((len(acked), nacked), (100, []))
        gw.kill()
        segs = sorted(n for n in os.listdir(gw.store_path) if n.endswith(".seg"))
        self.assertTrue(segs, f"no *.seg file in {gw.store_path}: {os.listdir(gw.store_path)}")
        path = os.path.join(gw.store_path, segs[0])
        with open(path, "r+b") as f:
            data = f.read()
            used = len(data.rstrip(b"\0"))  # a segment may be made at its full size
            at = used // 2
            f.seek(at)
            f.write(bytes([data[at] ^ 0xFF]))
        print(f"\n  flipped byte {at} of {segs[0]} ({len(data)} bytes, {used} used; segments {segs})", flush=True)
        gw.start()
        opened = gw.opened[-1]
        self.assertGreaterEqual(opened["corrupt_records"], 1, opened)
        self.assertGreaterEqual(gw.metric("iotgw_store_damaged_records_total"), 1)
        proxy.up()
        arr, _, last = wait_arrivals(reader, {"crc-1": [99]}, 40,
                                     also=lambda: gw.metric("iotgw_store_messages") == 0)
        self.assertIsNotNone(last, "the store did not drain")
        time.sleep(0.5)
        got = arrivals(reader, ["crc-1"])["crc-1"]
        missing = sorted(set(range(100)) - set(got))
        print(f"figures: corrupted record: store_opened {opened}; {len(set(got))} of 100 reached the hub, "
              f"missing {missing}", flush=True)
        self.assertEqual(opened["messages"], 100 - len(missing), "store_opened's count is not what was sent")
        self.assertGreaterEqual(len(missing), 1, "the damaged record's message reached the hub")
        self.assertLessEqual(len(missing), opened["corrupt_records"], "more messages lost than records damaged")
        self.assertEqual(len(missing), 1, "one flipped byte lost more than one message")
        self.assertEqual(first_order(got), sorted(set(got)))
        gw.stop()

    # ------------------------------------------------------------ 7

    def test_7_held_by_another_process(self):
        """A second iotgw on the same store.path (other ports) exits non-zero, naming the
        first's pid; the first is undisturbed."""
        reader = self.reader(selector=None)
        gw = self.gateway(EMU.wss)
        second = os.path.join(gw.dir, "second.yaml")
        with open(second, "w") as f:
            f.write(config_text(EMU.wss, gw.store_path))
        p = subprocess.run(WRAPPER + [IOTGW, "--config", second], capture_output=True, text=True, timeout=30)
        print(f"\n  second gateway: exit {p.returncode}: {p.stderr.strip()[-300:]}", flush=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertNotEqual(p.returncode, 99, "a sanitizer or valgrind found a memory error")
        self.assertIn(f"held by another process (pid {gw.proc.pid})", p.stderr)
        self.assertNotIn("listening: devices", p.stdout)
        acked, nacked = send_all(gw.port, "held-1", range(5))
        self.assertEqual((sorted(acked), nacked), (list(range(5)), []))
        arr, _, last = wait_arrivals(reader, {"held-1": range(5)}, 20)
        self.assertIsNotNone(last, arr)
        gw.stop()

    # ------------------------------------------------------------ 8

    def test_8_device_leaves_identity_stays(self):
        """The hub down, a device sends 100 (acknowledged) and leaves; the hub comes back:
        all 100 arrive though the device never connects again, then store_device_drained."""
        proxy = self.proxy(up=False)
        reader = self.reader(selector=None)
        gw = self.gateway(proxy.port)
        acked, nacked = send_all(gw.port, "leave-1", range(100))
        self.assertEqual((len(acked), nacked), (100, []))
        time.sleep(0.5)
        self.assertEqual(gw.events("store_device_drained", "leave-1"), [])
        proxy.up()
        t_up = time.time()
        arr, first, last = wait_arrivals(reader, {"leave-1": range(100)}, 40)
        lost, dups, disorder = judge(arr, {"leave-1": range(100)})
        self.assertEqual(summary(lost), {}, "the absent device's stored messages never reached the hub")
        self.assertEqual(disorder, {})
        drained = gw.wait_event("store_device_drained", "leave-1", timeout=10)
        self.assertEqual(gw.metric("iotgw_store_messages"), 0)
        print(f"\nfigures: device gone: 100 stored messages reached the hub {first - t_up:.2f}-{last - t_up:.2f} s "
              f"after it returned; duplicates {dups}; {drained['message']!r}", flush=True)
        gw.stop()


class Flapper(threading.Thread):
    """A device that keeps sending at rate msgs/s (at most window unanswered) until stop,
    through gateway restarts: when its connection ends it connects again and first sends
    again what had no outcome (a nack's message too). .acked: the indexes acknowledged."""

    def __init__(self, port, device, rate, window, stop):
        super().__init__(daemon=True)
        self.port, self.device, self.rate, self.window, self.stop = port, device, rate, window, stop
        self.pending = []  # indexes to send again, oldest first
        self.next_new = 0
        self.acked = set()
        self.connections = self.resent = 0
        self.nacks = collections.Counter()
        self.error = None

    def run(self):
        try:
            self.t0 = time.time()
            while not self.stop.is_set():
                try:
                    c = Client(self.port, self.device, timeout=5)
                except (OSError, AssertionError):
                    time.sleep(0.05)
                    continue
                self.connections += 1
                try:
                    self.serve(c)
                except OSError:
                    pass
                finally:
                    self.pending = sorted(set(self.pending) | set(c.inflight.values()))
                    c.close()
        except BaseException as e:  # noqa: B902 (the test reports it)
            self.error = repr(e)

    def handle(self, o):
        i, kind, frame = o
        if i is None:
            return
        if kind == "ack":
            self.acked.add(i)
        else:
            self.nacks[frame.reason] += 1
            self.pending = sorted(set(self.pending) | {i})

    def serve(self, c):
        while not self.stop.is_set():
            due = int((time.time() - self.t0) * self.rate) - self.next_new
            while len(c.inflight) < self.window:
                if self.pending:
                    i = self.pending.pop(0)
                    self.resent += 1
                elif due > 0:
                    i = self.next_new
                    self.next_new += 1
                    due -= 1
                else:
                    break
                c.send(i)
            o = c.next_outcome(0.02)
            if o == CLOSED:
                return
            if o != TIMEOUT:
                self.handle(o)
        end = time.time() + 5  # stopping: the outcomes of what is out
        while c.inflight and time.time() < end:
            o = c.next_outcome(end - time.time())
            if o == CLOSED:
                return
            if o != TIMEOUT:
                self.handle(o)


if __name__ == "__main__":
    run_tests()
