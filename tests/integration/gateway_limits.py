"""iotgw at its limits, with real processes on loopback and iothub-emulator as the hub: at
the open-file limit the gateway neither spins nor floods its log, tells the connections it
has no room for ERROR_OVERLOADED, and serves devices again as soon as descriptors free
up; it raises its soft limit at start and says how many devices fit; the memory bursts of
idle connections take is given back once they are gone. Each load is bounded in count and
time. The figures measured are printed ("figures: ...") to be quoted.

usage: gateway_limits.py IOTHUB_EMULATOR IOTGW SCHEMAS_DESC CERT_DIR"""
import os
import re
import resource
import selectors
import socket
import ssl
import subprocess
import time
import unittest

import gateway_e2e  # takes the four arguments above and loads the schemas
from gateway_e2e import CERTS, EMULATOR, IOTGW, KEYS, Gateway, token
from device_lib import Device, T
from emulator_lib import Emulator, fleet_registry
from iotgw_testlib import WRAPPER, cpu_seconds, readline_within, rss_kib, run_tests, with_fd_limit

LIMIT = 256  # RLIMIT_NOFILE for the gateway, soft = hard: raising cannot help
IDLE = 400  # connections that never send Hello
WINDOW_S = 5  # how long CPU and log lines are measured
MAX_CPU = 0.30  # of one core: a spin detector, not a benchmark
MAX_LOG_LINES = 50
ERROR_OVERLOADED = 14
EMU = None
os.environ.pop("IOTGW_LOG_BURST", None)  # the log budget measured is the default one


def setUpModule():
    global EMU
    EMU = Emulator(EMULATOR, CERTS, registry=fleet_registry({d: k for d, k in KEYS.items() if d != "spare1"}))


def tearDownModule():
    EMU.stop()
    EMU.log.close()


def start_gateway(soft=None, hard=None, tls=False):
    """gateway_e2e's Gateway, its process started with these open-file limits (None: the
    test's), and the fd limit line it printed at start. Idle connections are not timed out
    meanwhile."""
    saved = gateway_e2e.WRAPPER
    if soft:
        gateway_e2e.WRAPPER = with_fd_limit(soft, hard) + saved  # Gateway runs WRAPPER + [iotgw, ...]
    try:
        gw = Gateway(EMU, tls=tls, devices_yaml="  helloTimeoutMs: 120000\n")
    finally:
        gateway_e2e.WRAPPER = saved
    for _ in range(5):
        line = readline_within(gw.proc, 20)
        if line.startswith("fd limit"):
            return gw, line
    raise AssertionError("iotgw printed no fd limit line")


def room(line):
    m = re.search(r"room for about (\d+) device connections", line)
    assert m, line
    return int(m.group(1))


def log_lines(gw):
    return len(gw.log_text().splitlines())


class Measure:
    """The gateway's CPU (share of one core) and new log lines from here to done()."""

    def __init__(self, gw):
        self.gw, self.t, self.cpu, self.lines = gw, time.time(), cpu_seconds(gw.proc.pid), log_lines(gw)

    def done(self):
        cpu = (cpu_seconds(self.gw.proc.pid) - self.cpu) / (time.time() - self.t)
        return cpu, log_lines(self.gw) - self.lines


def answered(socks, timeout=2, count=None):
    """The sockets the gateway has written to (or closed) within timeout: once count of
    them, or once it has been quiet for 0.2 s after the first."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    found, end = set(), time.time() + timeout
    while time.time() < end and len(found) != count:
        events = sel.select(0.2)
        if not events and found and count is None:
            break
        for key, _ in events:
            found.add(key.fileobj)
            sel.unregister(key.fileobj)
    sel.close()
    return found


def welcome_time(port, device="agent1"):
    """Seconds from connecting to Welcome for a real device."""
    start = time.time()
    d = Device(port)
    d.hello(device, token(device))
    d.expect("welcome", timeout=10)
    elapsed = time.time() - start
    d.close()
    return elapsed


def close_all(devices):
    for d in devices:
        d.close()


class AtTheFdLimit(unittest.TestCase):
    def test_check_config_and_start_say_how_many_devices_fit(self):
        gw, line = start_gateway(512, 1024)  # the soft limit is raised to the hard one at start
        try:
            self.assertRegex(line, r"^fd limit 1024 \(raised from 512 at start\): room for about \d+ device "
                                   r"connections$")
            with open(f"/proc/{gw.proc.pid}/limits") as f:
                self.assertRegex(f.read(), r"Max open files\s+1024\s+1024")
            for soft, hard, expect in ((LIMIT, LIMIT, rf"fd limit {LIMIT}: room for about (\d+) device connections"),
                                       (512, 1024, r"fd limit 1024 \(raised from 512 at start\): room for about "
                                                   r"(\d+) device connections")):
                p = subprocess.run(with_fd_limit(soft, hard) + WRAPPER + [IOTGW, "--check-config", gw.config],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                m = re.search(expect, p.stdout)
                self.assertTrue(m, p.stdout)
                # the gateway keeps some for itself (stdio, the loop, the hub, a margin), not too many
                self.assertTrue(hard - 60 < int(m.group(1)) < hard - 20, p.stdout)
                print(f"figures: --check-config with RLIMIT_NOFILE {soft}/{hard}: {m.group(0)}", flush=True)
        finally:
            gw.stop()
            gw.log.close()

    def test_idle_connections_past_the_limit_are_refused_without_spinning(self):
        """400 connections that never send Hello against a gateway limited to 256
        descriptors: those it has room for wait for their Hello, the others are told
        ERROR_OVERLOADED at once; the gateway stays idle and quiet, and once they are
        gone a real device is welcome at once."""
        gw, line = start_gateway(LIMIT)
        idle = []
        try:
            fit = room(line)
            m = Measure(gw)
            idle = [Device(gw.port) for _ in range(IDLE)]
            time.sleep(WINDOW_S)
            cpu, lines = m.done()
            readable = answered([d.sock for d in idle])
            refused = [d for d in idle if d.sock in readable]
            for d in refused:
                f = d.recv(timeout=2)
                self.assertEqual((f.WhichOneof("body"), f.error.code), ("error", ERROR_OVERLOADED), f)
                self.assertIsNone(d.recv(timeout=2), "a refused connection is closed")
            # the ones it took wait for their Hello, about as many as it said would fit (the
            # poll backend has fewer descriptors of its own than libuv); the reserve stays free
            self.assertLess(abs(len(refused) - (IDLE - fit)), 10, (len(refused), fit))
            # a device that comes now is refused the same way, not left hanging
            late = Device(gw.port)
            late.hello("agent1", token("agent1"))
            self.assertEqual(late.expect("error", timeout=5).code, ERROR_OVERLOADED)
            late.close()
            close_all(idle)
            idle = []
            wait = welcome_time(gw.port)
            print(f"figures: {IDLE} idle connections, RLIMIT_NOFILE {LIMIT} ({line}): {len(refused)} refused "
                  f"with ERROR_OVERLOADED; gateway CPU {cpu:.1%} of a core, {lines} log lines in {WINDOW_S} s; "
                  f"Welcome {wait * 1000:.0f} ms after the idle ones closed", flush=True)
            self.assertLess(cpu, MAX_CPU)
            self.assertLess(lines, MAX_LOG_LINES, gw.log_text()[-3000:])
            self.assertIn("refused: too near the open-file limit", gw.log_text())
            self.assertLess(wait, 1.0)
        finally:
            close_all(idle)
            gw.stop()
            gw.log.close()

    def test_accepting_pauses_while_no_descriptor_is_left(self):
        """The limit lowered under a running gateway (its reserve no help then): accept()
        fails with EMFILE; the gateway stops accepting instead of spinning on the readable
        listening socket (libwebsockets' own listener logged millions of "accept: errno
        24" lines at 100 % CPU), and accepts again as soon as connections close."""
        gw, line = start_gateway(LIMIT)
        idle = []
        try:
            lowered = 128
            resource.prlimit(gw.proc.pid, resource.RLIMIT_NOFILE, (lowered, LIMIT))
            m = Measure(gw)
            idle = [Device(gw.port) for _ in range(200)]  # about 100 accepted, the rest wait in the backlog
            time.sleep(WINDOW_S)
            cpu, lines = m.done()
            self.assertEqual(answered([d.sock for d in idle], timeout=1), set(),
                             "nothing is refused: there is no descriptor to do it")
            close_all(idle)
            idle = []
            wait = welcome_time(gw.port)
            log = gw.log_text()
            print(f"figures: 200 idle connections, RLIMIT_NOFILE lowered to {lowered} at run time: gateway CPU "
                  f"{cpu:.1%} of a core, {lines} log lines in {WINDOW_S} s; Welcome {wait * 1000:.0f} ms after "
                  f"the idle ones closed", flush=True)
            self.assertLess(cpu, MAX_CPU)
            self.assertLess(lines, MAX_LOG_LINES, log[-3000:])
            self.assertIn("cannot accept: Too many open files", log)
            self.assertRegex(log, r"accepting again after \d+\.\d s")
            self.assertLess(wait, 1.0)
        finally:
            close_all(idle)
            gw.stop()
            gw.log.close()


class Timeouts(unittest.TestCase):
    def test_a_tls_device_outlives_the_handshake_deadline(self):
        """libwebsockets gives a TLS connection 5 s once its handshake is done and never
        lifts that for a raw socket: every TLS device was cut after 5 s. One that talks now
        and then stays."""
        gw, _ = start_gateway(tls=True)
        try:
            certs = os.path.abspath(CERTS)
            ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
            ctx.load_cert_chain(os.path.join(certs, "client.pem"), os.path.join(certs, "client.key"))
            d = Device(gw.port, tls=ctx)
            d.hello("agent1", token("agent1"))
            d.expect("welcome")
            start = time.time()
            for nonce in range(4):
                time.sleep(2)
                f = T("Frame")()
                f.ping.nonce = nonce
                d.send(f)
                self.assertEqual(d.expect("pong", skip=()).nonce, nonce, f"after {time.time() - start:.1f} s")
            # read before this device closes: its own close is logged as a disconnection too
            self.assertNotIn("disconnected", gw.log_text())
            d.close()
        finally:
            gw.stop()
            gw.log.close()


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def client_hello():
    """The first flight of a TLS client, to send and then say nothing more."""
    ctx = ssl.create_default_context(cafile=os.path.join(os.path.abspath(CERTS), "ca.pem"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class IdleBursts(unittest.TestCase):
    """Rounds of connections that come, say nothing (or only a TLS ClientHello) and go:
    each round takes memory (libwebsockets', OpenSSL's, the session's), and the gateway
    gives it back once they are gone instead of keeping it (glibc would: +8.6 MB after
    5,000 idle TCP connections, 8.6 -> 39.5 MB after rounds of 600 half-open TLS ones)."""
    ROUNDS = 3
    MAX_GROWTH_KIB = 4096  # after every round, over the gateway's resident memory at start

    @classmethod
    def setUpClass(cls):
        with open(IOTGW, "rb") as f:
            if WRAPPER or b"__asan_init" in f.read():  # their own allocators keep what is freed
                raise unittest.SkipTest("resident memory means nothing under valgrind or AddressSanitizer")
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds the connections

    def bursts(self, gw, count, first_flight=b""):
        pid = gw.proc.pid
        time.sleep(2)  # settled after start
        start, rounds = rss_kib(pid), []
        for _ in range(self.ROUNDS):
            conns = [socket.create_connection(("127.0.0.1", gw.port), timeout=10) for _ in range(count)]
            for c in conns:
                if first_flight:
                    c.sendall(first_flight)
            end = time.time() + 30
            while open_fds(pid) < count and time.time() < end:  # the gateway has them all
                time.sleep(0.1)
            if first_flight:  # and has answered each ClientHello
                self.assertEqual(len(answered(conns, 30, count)), count)
            peak = rss_kib(pid)
            for c in conns:
                c.close()
            end = time.time() + 10
            while (open_fds(pid) > 30 or rss_kib(pid) > start + self.MAX_GROWTH_KIB) and time.time() < end:
                time.sleep(0.25)
            rounds.append((peak, rss_kib(pid)))
        return start, rounds

    def report(self, what, start, rounds):
        print(f"figures: {self.ROUNDS} rounds of {what}: gateway RSS {start / 1024:.1f} MB at start, "
              f"{max(p for p, _ in rounds) / 1024:.1f} MB with them, after each round "
              f"{', '.join(f'{a / 1024:.1f}' for _, a in rounds)} MB", flush=True)
        for _, after in rounds:
            self.assertLess(after - start, self.MAX_GROWTH_KIB, rounds)

    def test_idle_tcp_connections(self):
        gw, _ = start_gateway()
        try:
            count = min(5000, resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 200)
            start, rounds = self.bursts(gw, count)
            self.report(f"{count} idle TCP connections", start, rounds)
        finally:
            gw.stop()
            gw.log.close()

    def test_half_open_tls_connections(self):
        gw, _ = start_gateway(tls=True)
        try:
            start, rounds = self.bursts(gw, 600, client_hello())
            self.report("600 TLS connections stopped after their ClientHello", start, rounds)
        finally:
            gw.stop()
            gw.log.close()


if __name__ == "__main__":
    run_tests()
