"""iotgw's ops endpoint (ops.listen) with real peers: a Prometheus server (Debian's
prometheus) scraping /metrics while iotgw-devsim sends, the exposition parsed with
prometheus_client, /readyz with the hub down and back, the counters across a hub
reconnect, /devices and who may read it, and start-up lines naming a wrong CA, port or
host. Figures measured are printed ("figures: ...").

usage: gateway_ops.py IOTHUB_EMULATOR IOTGW SCHEMAS_DESC CERT_DIR"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import gateway_e2e  # noqa: F401 (takes the four arguments above and loads the schemas)
from gateway_e2e import CERTS, EMULATOR, IOTGW, KEYS, Gateway, token
from device_lib import Device, T
from emulator_lib import Emulator, fleet_registry, get_metrics, metric_samples
from iotgw_testlib import LoggedProcess, free_port, run_tests

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DEVSIM = os.path.join(os.path.dirname(os.path.dirname(IOTGW)), "devices", "iotgw-devsim")
EMU = None


def setUpModule():
    global EMU
    EMU = Emulator(EMULATOR, CERTS, extra=["--admin"], registry=fleet_registry(KEYS))


def tearDownModule():
    EMU.stop()
    EMU.log.close()


def ops_port(gw):
    return gw.ops_port


def get(port, path, headers=None):
    """(status, body text) of GET http://127.0.0.1:port/path."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metrics(port):
    """{(name, frozenset(labels)): value} from /metrics, parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families
    status, text = get(port, "/metrics")
    assert status == 200, (status, text)
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m, name, **labels):
    return m.get((name, frozenset(labels.items())))


def devsim(gw, fleet, *args):
    p = subprocess.run([DEVSIM, "--gateway", f"127.0.0.1:{gw.port}", "--hub", "localhost", "--fleet", fleet,
                        "--quiet", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


class Prometheus(LoggedProcess):
    """Debian's prometheus on loopback, scraping one target every second."""
    name = "prometheus"

    def __init__(self, target_port):
        self.dir = tempfile.mkdtemp(prefix="iotgw-prometheus-")
        self.port = free_port()
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                    "scrape_configs:\n"
                    f"  - job_name: iotgw\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w+")
        self.proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}",
                                      f"--storage.tsdb.path={self.dir}/data",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)

    def query(self, q):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/query?query="
                                    + urllib.parse.quote(q), timeout=10) as r:
            answer = json.loads(r.read())
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def wait_value(self, q, want, timeout=30):
        end, got = time.time() + timeout, None
        while time.time() < end:
            try:
                result = self.query(q)
                got = float(result[0]["value"][1]) if result else None
                if got == want:
                    return got
            except (urllib.error.URLError, ConnectionError, OSError):
                pass  # not up yet
            time.sleep(0.5)
        raise AssertionError(f"prometheus: {q} = {got}, expected {want}\n{self.log_text()[-2000:]}")


class GatewayOps(unittest.TestCase):
    def test_prometheus_scrapes_what_devsim_sent(self):
        if not os.path.exists(PROMETHEUS):
            self.skipTest("Debian's prometheus is not installed (./quickstart deps installs it)")
        gw = Gateway(EMU)
        port = ops_port(gw)
        prom = Prometheus(port)
        fleet = os.path.join(gw.dir, "fleet.txt")
        with open(fleet, "w") as f:
            f.write("".join(f"{d} {KEYS[d]}\n" for d in ("agent1", "monitor1", "twin1")))
        try:
            r = devsim(gw, fleet, "--messages", "200", "--rate", "200")
            self.assertEqual((r["connected"], r["acked"]), (3, 600), r)
            prom.wait_value("iotgw_telemetry_acknowledged_total", 600)
            prom.wait_value("iotgw_telemetry_received_total", 600)
            prom.wait_value('iotgw_device_welcomes_total', 3)
            up = prom.query('up{job="iotgw"}')
            self.assertEqual(up[0]["value"][1], "1")
            m = metrics(port)
            self.assertEqual(value(m, "iotgw_telemetry_acknowledged_total"), 600)
            self.assertEqual(value(m, "iotgw_telemetry_nacked_total", reason="NACK_RETRY_LATER"), 0)
            self.assertEqual(value(m, "iotgw_hub_connections", state="open"), 1)
            self.assertEqual(value(m, "iotgw_build_info", version=value_of_version(m)), 1)
            self.assertGreater(value(m, "iotgw_open_fds"), 0)
        finally:
            prom.stop()
            prom.log.close()
            gw.stop()
            gw.log.close()

    def test_readyz_follows_the_hub_and_counters_survive_a_reconnect(self):
        hub_port = free_port()  # nothing there yet: the hub is down
        emu = None
        gw = Gateway(EMU, keys={"agent1": KEYS["agent1"]}, hub_port=hub_port)
        port = ops_port(gw)
        try:
            deadline = time.time() + 10
            while True:
                status, body = get(port, "/readyz")
                if "connection 1 to localhost:" in body or time.time() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(status, 503, body)
            self.assertIn(f"not ready: the hub is not reachable: connection 1 to localhost:{hub_port} (wss)", body)
            self.assertEqual(get(port, "/healthz"), (200, "ok\n"))
            emu = Emulator(EMULATOR, CERTS, listen=f"127.0.0.1:{hub_port}", extra=["--admin"],
                           registry=fleet_registry({"agent1": KEYS["agent1"]}))
            deadline = time.time() + 40
            while get(port, "/readyz")[0] != 200:
                self.assertLess(time.time(), deadline, get(port, "/readyz"))
                time.sleep(0.2)
            print(f"\nfigures: /readyz 200 {40 - (deadline - time.time()):.1f} s after the hub came up", flush=True)
            d = Device(gw.port)
            d.hello("agent1", token("agent1"))
            d.expect("welcome")
            for seq in range(1, 11):
                f = T("Frame")()
                f.telemetry.seq = seq
                f.telemetry.raw = b"{}"
                d.send(f)
                if seq == 5:  # the hub drops every connection halfway
                    status, _, _ = emu.rest("POST", "/admin/drop-connections")
                    self.assertEqual(status, 200)
            acks = {d.expect("ack", timeout=30).seq for _ in range(10)}
            self.assertEqual(acks, set(range(1, 11)))
            m = metrics(port)
            self.assertEqual(value(m, "iotgw_telemetry_received_total"), 10)
            self.assertEqual(value(m, "iotgw_telemetry_acknowledged_total"), 10)
            self.assertGreaterEqual(value(m, "iotgw_hub_reconnects_total"), 1)
            self.assertGreaterEqual(value(m, "iotgw_hub_tokens_accepted_total"), 2)
            # the hub's side of the same story: what it received from agent1 (at least once:
            # a message in flight at the drop may have arrived twice)
            status, _, text = get_metrics(emu)
            self.assertEqual(status, 200, text)
            hub_got = metric_samples(text)[("iothub_emulator_device_d2c_messages_total", (("device", "agent1"),))]
            self.assertGreaterEqual(hub_got, 10)
            self.assertLessEqual(hub_got, 10 + value(m, "iotgw_hub_reconnects_total") * 64)
            print(f"\nfigures: across a dropped hub connection: iotgw acknowledged 10, the hub received "
                  f"{hub_got:.0f}", flush=True)
            d.close()
        finally:
            gw.stop()
            gw.log.close()
            if emu:
                emu.stop()
                emu.log.close()

    def test_device_view_and_who_may_read_it(self):
        gw = Gateway(EMU, keys={"agent1": KEYS["agent1"]})
        port = ops_port(gw)
        try:
            d = Device(gw.port)
            d.hello("agent1", token("agent1"))
            d.expect("welcome")
            status, body = get(port, "/devices")
            self.assertEqual(status, 200, body)
            [dev] = json.loads(body)
            self.assertEqual(dev["id"], "agent1")
            self.assertIn(dev["hub"]["state"], ("waiting", "authenticating", "online"))
            self.assertEqual(get(port, "/devices/agent1")[0], 200)
            self.assertEqual(get(port, "/devices/stranger"), (404, '{"error":"not in the fleet"}'))
            self.assertEqual(get(port, "/devices/monitor1")[0], 404)
            self.assertEqual(get(port, "/nope")[0], 404)
            # a token: without it, or with another, no device view; the rest stays open
            d.close()
        finally:
            gw.stop()
            gw.log.close()
        token_value = "0123456789abcdef-ops"
        gw = Gateway(EMU, keys={"agent1": KEYS["agent1"]}, ops_yaml=f"  token: {token_value}\n")
        port = ops_port(gw)
        try:
            self.assertEqual(get(port, "/devices")[0], 401)
            self.assertEqual(get(port, "/devices", {"Authorization": "Bearer wrong-token-0123456789"})[0], 401)
            self.assertEqual(get(port, "/devices", {"Authorization": f"Bearer {token_value}x"})[0], 401)
            self.assertEqual(get(port, "/devices", {"Authorization": f"Bearer {token_value}"}), (200, "[]"))
            self.assertEqual(get(port, "/metrics")[0], 200)
            self.assertNotIn(token_value, gw.log_text())
            # a method other than GET
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                self.assertIn(b" 405 ", s.recv(1000))
        finally:
            gw.stop()
            gw.log.close()

    def test_wrong_ca_port_and_host_are_named_at_start(self):
        cases = {
            "ca": ({"ca": os.path.join(os.path.abspath(CERTS), "other-ca.pem")},
                   "the server's certificate is not signed by a trusted CA"),
            "port": ({"hub_port": free_port()}, "connection refused"),
            "host": ({"host": "no-such-hub.invalid"}, "cannot resolve no-such-hub.invalid"),
        }
        for what, (kw, reason) in cases.items():
            with self.subTest(wrong=what):
                gw = Gateway(EMU, keys={"agent1": KEYS["agent1"]}, **kw)
                try:
                    deadline = time.time() + 20
                    lines = []
                    while not lines and time.time() < deadline:
                        lines = [ln for ln in gw.log_text().splitlines() if "upstream: connection 1 to " in ln
                                 and " lost (" in ln]
                        time.sleep(0.2)
                    self.assertTrue(lines, gw.log_text())
                    self.assertIn(reason, lines[0].lower() if what == "port" else lines[0])
                    if what != "host":
                        self.assertIn("connection 1 to localhost:", lines[0])
                    self.assertIn("(wss)", lines[0])
                    print(f"\nfigures: wrong {what}: {lines[0].split(' warn  ', 1)[-1]}", flush=True)
                finally:
                    gw.stop()
                    gw.log.close()


def value_of_version(m):
    for name, labels in m:
        if name == "iotgw_build_info":
            return dict(labels)["version"]
    raise AssertionError("no iotgw_build_info")


if __name__ == "__main__":
    run_tests()
