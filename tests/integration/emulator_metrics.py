"""iothub-emulator's GET /metrics set against what its clients did: device messages sent
over AMQPS with CBS (Debian's python3-qpid-proton) and read back from the telemetry
stream, direct methods, cloud-to-device messages, twin operations, throttling and REST
calls. The text is parsed by python3-prometheus-client and every count compared exactly,
as the difference between a scrape before and one after. Then docker/grafana-dashboard.json
against gateway/ops.c: every series and label it queries is one the gateway exports.

A client that is not loopback (IOTGW_TEST_OTHER_ADDR, an address of this network
namespace's loopback interface that is not 127/8: emulator_metrics.sh sets it up when
run as root) needs a service token, and Debian's prometheus scrapes with one as
docs/emulator.md says; without such an address those cases are skipped.

usage: emulator_metrics.py IOTHUB_EMULATOR CERT_DIR SRCDIR"""
import collections
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

from proton import Message, symbol
from proton.utils import SendException

from iotgw_testlib import run_tests
from emulator_lib import (DEVICE_POLICY_KEY, DEVICE_KEYS, HOST, SERVICE_KEY, Cbs, Emulator, StreamReader, connect,
                          device_token, get_metrics, metric_samples, module_token, owner_token, pump, sas_token)

BINARY, CERTS, SRCDIR = sys.argv[1:4]
del sys.argv[1:4]
OTHER_ADDR = os.environ.get("IOTGW_TEST_OTHER_ADDR")
EMU = None
REST = collections.Counter()  # the status class of every REST answer this test was given


def setUpModule():
    global EMU
    EMU = Emulator(BINARY, CERTS, extra=["--admin"])


def tearDownModule():
    EMU.stop()
    EMU.log.close()


def rest(method, path, body=None, token=None, headers=None):
    status, h, b = EMU.rest(method, path, body, token, headers)
    REST[f"{status // 100}xx"] += 1
    return status, h, b


def scrape():
    status, headers, text = get_metrics(EMU)
    assert status == 200, (status, text)
    return metric_samples(text)


def value(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels} in /metrics"
    return samples[key]


def wait_for(what, predicate, timeout=15):
    """Scrape until predicate(samples) holds; the samples."""
    end = time.time() + timeout
    while True:
        samples = scrape()
        if predicate(samples):
            return samples
        if time.time() > end:
            raise AssertionError(f"/metrics never showed {what}")
        time.sleep(0.05)


def quiet(samples):
    """None of this test's connections is left open."""
    return (value(samples, "iothub_emulator_amqp_connections", listener="amqps") == 0 and
            value(samples, "iothub_emulator_identities_connected") == 0)


def events(device, module=None):
    return f"/devices/{device}/modules/{module}/messages/events" if module else f"/devices/{device}/messages/events"


class Counts(unittest.TestCase):
    """Each test scrapes before, acts as clients do, scrapes after, and compares."""

    def setUp(self):
        self.before = wait_for("no connection open", quiet)
        self.rest_before = REST.copy()

    def connect(self):
        """An AMQPS connection, closed when the test ends however it ends (a test that
        fails must not leave the next one a connection it does not expect)."""
        conn = connect(EMU)
        self.addCleanup(conn.close)  # again after close(): nothing
        return conn

    def after(self, samples=None):
        """The scrape after (taken now unless given); REST answers must be counted as
        this test was given them, by status class."""
        after = samples or scrape()
        for cls in ("2xx", "4xx", "5xx"):
            self.assertEqual(self.delta(after, "iothub_emulator_rest_requests_total", status=cls),
                             REST[cls] - self.rest_before[cls], f"REST answers {cls}")
        return after

    def delta(self, after, name, **labels):
        return value(after, name, **labels) - value(self.before, name, **labels)

    def test_device_messages_per_device_and_read_back_from_the_stream(self):
        reader = StreamReader(EMU, selector=None)  # from the end: only what this test sends
        self.addCleanup(lambda: reader.stopping or reader.stop())
        # dev1 and dev2 on one connection, as a gateway multiplexes them; a module on its own
        conn = self.connect()
        cbs = Cbs(conn)
        for d in ("dev1", "dev2"):
            self.assertEqual(cbs.put(device_token(d))[0], 200)
        one, two = conn.create_sender(events("dev1")), conn.create_sender(events("dev2"))
        for i in range(7):
            one.send(Message(id=f"one-{i}", body=b"t"))
        for i in range(3):
            two.send(Message(id=f"two-{i}", body=b"t"))
        mconn = self.connect()
        self.assertEqual(Cbs(mconn).put(module_token("dev3", "mod1"))[0], 200)
        mod = mconn.create_sender(events("dev3", "mod1"))
        for i in range(2):
            mod.send(Message(id=f"mod-{i}", body=b"t"))
        # a device that is not registered gets 404, and no series of its own
        nconn = self.connect()
        self.assertEqual(Cbs(nconn).put(device_token("nobody", key=DEVICE_KEYS["dev1"]))[0], 404)
        nconn.close()

        end = time.time() + 20
        while len(reader.events) < 12 and time.time() < end:
            time.sleep(0.02)
        read = collections.Counter(e[0] for e in reader.events)
        self.assertEqual(read, {"dev1": 7, "dev2": 3, "dev3": 2})
        after = self.after(wait_for("the connection to nobody closed",
                                    lambda s: value(s, "iothub_emulator_amqp_connections", listener="amqps") == 3))
        reader.stop()
        conn.close()
        mconn.close()

        self.assertEqual(self.delta(after, "iothub_emulator_d2c_messages_total"), 12)
        per_device = {("dev1",): 7, ("dev2",): 3, ("dev3", "mod1"): 2,
                      ("dev3",): 0, ("off",): 0}  # bystanders: present, and untouched
        for identity, sent in per_device.items():
            labels = dict(zip(("device", "module"), identity))
            self.assertEqual(self.delta(after, "iothub_emulator_device_d2c_messages_total", **labels), sent, identity)
        # both sides: what the stream's reader got per device is what the hub counted
        # (a module's messages carry its device's id)
        hub_side = collections.Counter()
        for (name, labels), v in after.items():
            if name == "iothub_emulator_device_d2c_messages_total":
                hub_side[dict(labels)["device"]] += v - self.before[(name, labels)]
        self.assertEqual(+hub_side, read)
        # the label set is the registry's identities
        self.assertEqual({dict(l)["device"] for n, l in after if n == "iothub_emulator_device_d2c_messages_total"},
                         {"dev1", "dev2", "dev3", "off"})
        self.assertEqual(self.delta(after, "iothub_emulator_stream_messages_read_total"), 12)
        self.assertEqual(self.delta(after, "iothub_emulator_stream_messages"), 12)
        self.assertEqual(self.delta(after, "iothub_emulator_cbs_put_tokens_total", status="200"), 3)
        self.assertEqual(self.delta(after, "iothub_emulator_cbs_put_tokens_total", status="404"), 1)
        self.assertEqual(self.delta(after, "iothub_emulator_cbs_put_tokens_total", status="401"), 0)
        self.assertEqual(self.delta(after, "iothub_emulator_sasl_plain_total", result="accepted"), 1)  # the reader
        self.assertEqual(self.delta(after, "iothub_emulator_amqp_connections_accepted_total", listener="amqps"), 4)
        self.assertEqual(self.delta(after, "iothub_emulator_amqp_connections_accepted_total", listener="wss"), 0)
        self.assertEqual(value(after, "iothub_emulator_identities_connected"), 3)
        for reason in ("too_large", "undecodable", "throttled"):
            self.assertEqual(self.delta(after, "iothub_emulator_d2c_rejected_total", reason=reason), 0)
        wait_for("every connection closed", quiet)

    def test_direct_methods_by_status(self):
        conn = self.connect()
        self.assertEqual(Cbs(conn).put(device_token("dev1"))[0], 200)
        requests = conn.create_receiver("/devices/dev1/methods/devicebound", credit=5)
        answers = conn.create_sender("/devices/dev1/methods/devicebound")
        for device_status in (200, 404):
            result = {}
            t = threading.Thread(target=lambda: result.update(r=rest(
                "POST", "/twins/dev1/methods", {"methodName": "ping", "responseTimeoutInSeconds": 10})))
            t.start()
            req = requests.receive(timeout=20)
            requests.accept()
            answers.send(Message(correlation_id=req.correlation_id, properties={"IoThub-status": device_status},
                                 body=b"{}"))
            t.join(30)
            self.assertEqual((result["r"][0], result["r"][2]["status"]), (200, device_status))
        status, headers, _ = rest("POST", "/twins/dev2/methods", {"methodName": "ping"})
        self.assertEqual((status, headers.get("iothub-errorcode")), (404, "DeviceNotOnline"))
        conn.close()
        after = self.after()
        expected = {"2xx": 1, "4xx": 1, "5xx": 0, "DeviceNotOnline": 1, "GatewayTimeout": 0, "DeviceNotFound": 0,
                    "InjectedFailure": 0}
        for status, n in expected.items():
            self.assertEqual(self.delta(after, "iothub_emulator_direct_methods_total", status=status), n, status)

    def test_cloud_to_device_sent_delivered_and_settled(self):
        dev = self.connect()
        self.assertEqual(Cbs(dev).put(device_token("dev2"))[0], 200)
        rcv = dev.create_receiver("/devices/dev2/messages/devicebound", credit=10)
        svc = self.connect()
        self.assertEqual(Cbs(svc).put(owner_token(), audience=HOST)[0], 200)
        snd = svc.create_sender("/messages/devicebound")
        for i in range(3):
            snd.send(Message(address="/devices/dev2/messages/devicebound", id=f"c2d-{i}", body=b"c%d" % i))
        with self.assertRaises(SendException):
            snd.send(Message(address="/devices/nobody/messages/devicebound", body=b"x"))
        bodies = []
        for settle in (rcv.accept, rcv.reject, rcv.release):  # complete, dead-letter, abandon
            bodies.append(bytes(rcv.receive(timeout=20).body))
            settle()
        again = rcv.receive(timeout=20)  # the abandoned one comes back
        rcv.accept()
        self.assertEqual((bodies, bytes(again.body)), ([b"c0", b"c1", b"c2"], b"c2"))
        pump(dev)
        after = self.after(wait_for("both completions", lambda s: value(
            s, "iothub_emulator_c2d_messages_total", event="completed") - value(
            self.before, "iothub_emulator_c2d_messages_total", event="completed") >= 2))
        dev.close()
        svc.close()
        expected = {"sent": 3, "refused": 1, "delivered": 4, "completed": 2, "rejected": 1, "abandoned": 1,
                    "expired": 0}
        for event, n in expected.items():
            self.assertEqual(self.delta(after, "iothub_emulator_c2d_messages_total", event=event), n, event)

    def test_twin_operations_device_and_service_side(self):
        conn = self.connect()
        self.assertEqual(Cbs(conn).put(device_token("dev3"))[0], 200)
        snd = conn.create_sender("/devices/dev3/twin")
        rcv = conn.create_receiver("/devices/dev3/twin", credit=10)

        def call(op, resource=None, body=b" "):
            ann = {symbol("operation"): op}
            if resource:
                ann[symbol("resource")] = resource
            cid = str(uuid.uuid4())
            snd.send(Message(correlation_id=cid, annotations=ann, body=body, inferred=True))
            r = rcv.receive(timeout=20)
            rcv.accept()
            self.assertEqual(r.correlation_id, cid)
            return r.annotations["status"]

        self.assertEqual(call("GET"), 200)
        self.assertEqual(call("PATCH", "/properties/reported", b'{"fw": "1.2"}'), 204)
        self.assertEqual(call("PATCH", "/properties/reported", b"not json"), 400)
        self.assertEqual(call("PUT", "/notifications/twin/properties/desired"), 200)
        self.assertEqual(rest("PATCH", "/twins/dev3", {"properties": {"desired": {"interval": 5}}})[0], 200)
        push = rcv.receive(timeout=20)
        rcv.accept()
        self.assertEqual(json.loads(bytes(push.body))["interval"], 5)
        self.assertEqual(rest("GET", "/twins/dev3")[0], 200)
        self.assertEqual(rest("PATCH", "/twins/dev3", {"tags": {"a": 1}}, headers={"If-Match": '"AAAA"'})[0], 412)
        self.assertEqual(rest("PUT", "/twins/dev3", {"tags": {"site": "b"}})[0], 200)
        self.assertEqual(call("DELETE", "/notifications/twin/properties/desired"), 200)
        conn.close()
        after = self.after()
        expected = {("get", "ok"): 1, ("get", "failed"): 0, ("patch_reported", "ok"): 1,
                    ("patch_reported", "failed"): 1, ("subscribe_desired", "ok"): 1,
                    ("unsubscribe_desired", "ok"): 1, ("service_get", "ok"): 1, ("service_patch", "ok"): 1,
                    ("service_patch", "failed"): 1, ("service_replace", "ok"): 1, ("service_replace", "failed"): 0}
        for (op, result), n in expected.items():
            self.assertEqual(self.delta(after, "iothub_emulator_twin_operations_total", operation=op, result=result),
                             n, (op, result))
        self.assertEqual(self.delta(after, "iothub_emulator_twin_desired_pushes_total"), 1)

    def test_throttled_refusals_are_the_ones_clients_saw(self):
        self.assertEqual(rest("POST", "/admin/throttle", {"d2cPerSecond": 2, "restPerSecond": 2})[0], 200)
        try:
            conn = self.connect()
            self.assertEqual(Cbs(conn).put(device_token("dev1"))[0], 200)
            sender = conn.create_sender(events("dev1"))
            refused = 0
            for i in range(10):
                try:
                    sender.send(Message(body=b"%d" % i))
                except SendException:
                    refused += 1
            conn.close()
            codes = [rest("GET", "/twins/dev1")[0] for _ in range(8)]
            scraped_while_throttled = scrape()  # the emulator's own route is never throttled
        finally:
            self.assertEqual(rest("DELETE", "/admin/faults")[0], 200)
        self.assertGreater(refused, 0)
        self.assertIn(429, codes)
        after = self.after()
        self.assertEqual(value(scraped_while_throttled, "iothub_emulator_throttled_total", kind="rest"),
                         value(after, "iothub_emulator_throttled_total", kind="rest"))
        self.assertEqual(self.delta(after, "iothub_emulator_throttled_total", kind="d2c"), refused)
        self.assertEqual(self.delta(after, "iothub_emulator_d2c_rejected_total", reason="throttled"), refused)
        self.assertEqual(self.delta(after, "iothub_emulator_d2c_messages_total"), 10 - refused)
        self.assertEqual(self.delta(after, "iothub_emulator_device_d2c_messages_total", device="dev1"), 10 - refused)
        self.assertEqual(self.delta(after, "iothub_emulator_throttled_total", kind="rest"), codes.count(429))

    def test_rest_answers_by_status_class_and_scrapes_not_counted(self):
        self.assertEqual(rest("GET", "/twins/dev1")[0], 200)
        self.assertEqual(rest("GET", "/twins/nobody")[0], 404)
        self.assertEqual(rest("GET", "/twins/dev1", token="SharedAccessSignature sr=x&sig=y&se=1")[0], 401)
        self.assertEqual(rest("GET", "/nowhere")[0], 404)
        self.assertEqual(rest("GET", "/devices?top=0")[0], 400)
        self.assertEqual(rest("GET", "/admin/faults")[0], 200)
        status, headers, _ = rest("POST", "/metrics", {})
        self.assertEqual((status, headers.get("iothub-errorcode")), (405, "MethodNotAllowed"))
        first = scrape()
        for _ in range(3):
            scrape()
        after = self.after()
        for cls in ("2xx", "4xx", "5xx"):
            self.assertEqual(value(first, "iothub_emulator_rest_requests_total", status=cls),
                             value(after, "iothub_emulator_rest_requests_total", status=cls), cls)
        self.assertEqual(self.delta(after, "iothub_emulator_rest_requests_total", status="2xx"), 2)
        self.assertEqual(self.delta(after, "iothub_emulator_rest_requests_total", status="4xx"), 5)

    def test_text_format(self):
        status, headers, text = get_metrics(EMU)
        self.assertEqual((status, headers.get("content-type")), (200, "text/plain; version=0.0.4; charset=utf-8"))
        from prometheus_client.parser import text_string_to_metric_families
        families = list(text_string_to_metric_families(text))
        self.assertGreaterEqual(len(families), 15)
        for f in families:
            self.assertTrue(f.name.startswith("iothub_emulator_"), f.name)
            self.assertTrue(f.documentation, f.name)
            self.assertIn(f.type, ("counter", "gauge"), f.name)
            for s in f.samples:
                if f.type == "counter":
                    self.assertTrue(s.name.endswith("_total"), s.name)
                self.assertGreaterEqual(s.value, 0, s.name)
        self.assertEqual(len({f.name for f in families}), len(families))
        self.assertEqual([s.value for f in families if f.name == "iothub_emulator_build_info" for s in f.samples], [1])

    @unittest.skipUnless(OTHER_ADDR, "needs an address that is not loopback (emulator_metrics.sh sets one up as root)")
    def test_a_client_off_loopback_needs_a_service_token(self):
        src = (OTHER_ADDR, 0)
        status, headers, text = get_metrics(EMU, source_address=src)
        self.assertEqual((status, headers.get("iothub-errorcode")), (401, "IotHubUnauthorizedAccess"))
        self.assertIn("needs a service token", text)
        device_only = sas_token(HOST, DEVICE_POLICY_KEY, policy="device")
        self.assertEqual(get_metrics(EMU, token=device_only, source_address=src)[0], 401)
        expired = sas_token(HOST, SERVICE_KEY, policy="service", expiry=time.time() - 60)
        self.assertEqual(get_metrics(EMU, token=expired, source_address=src)[0], 401)
        REST["4xx"] += 3
        for policy in ("service", "registryRead"):  # ServiceConnect, RegistryRead
            status, _, text = get_metrics(EMU, token=sas_token(HOST, SERVICE_KEY, policy=policy), source_address=src)
            self.assertEqual(status, 200, text)
            version = subprocess.run([BINARY, "--version"], capture_output=True, text=True).stdout.split()[-1]
            self.assertIn(("iothub_emulator_build_info", (("version", version),)), metric_samples(text))
        # the admin API's rule is the same without the token
        ctx = ssl.create_default_context(cafile=EMU.ca)
        c = http.client.HTTPSConnection("127.0.0.1", EMU.wss, context=ctx, timeout=30, source_address=src)
        c.request("GET", "/admin/faults")
        self.assertEqual(c.getresponse().status, 403)
        c.close()
        REST["4xx"] += 1
        self.after()


@unittest.skipUnless(OTHER_ADDR and shutil.which("prometheus"),
                     "needs Debian's prometheus and an address that is not loopback")
class RealPrometheus(unittest.TestCase):
    def test_scrapes_with_a_sas_token_as_documented(self):
        """docs/emulator.md's scrape configuration, off loopback: with the token the target
        is up and its series arrive; without, it is down."""
        from iotgw_testlib import free_port
        emu = Emulator(BINARY, CERTS, listen=f"{OTHER_ADDR}:0")
        self.addCleanup(lambda: (emu.stop(), emu.log.close()))
        token = sas_token(HOST, SERVICE_KEY, ttl=86400, policy="service").split(" ", 1)[1]
        tls = {"ca_file": emu.ca, "server_name": "localhost"}
        target = {"targets": [f"{OTHER_ADDR}:{emu.wss}"]}
        config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [
            {"job_name": "token", "scheme": "https", "tls_config": tls, "static_configs": [target],
             "authorization": {"type": "SharedAccessSignature", "credentials": token}},
            {"job_name": "none", "scheme": "https", "tls_config": tls, "static_configs": [target]}]}
        path = os.path.join(emu.dir, "prometheus.yml")
        with open(path, "w") as f:
            json.dump(config, f)  # JSON is YAML
        port = free_port()
        log = open(os.path.join(emu.dir, "prometheus.log"), "w")
        prom = subprocess.Popen(["prometheus", f"--config.file={path}", f"--storage.tsdb.path={emu.dir}/tsdb",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
        self.addCleanup(lambda: (prom.terminate(), prom.wait(30), log.close()))

        def query(q):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/api/v1/query?query=" + q)
            result = json.loads(c.getresponse().read())["data"]["result"]
            c.close()
            return [(r["metric"], r["value"][1]) for r in result]

        end, up = time.time() + 60, {}
        while time.time() < end and set(up) != {"token", "none"}:
            time.sleep(0.5)
            try:
                up = {m["job"]: v for m, v in query("up")}
            except (OSError, ValueError, KeyError):
                pass  # not listening yet
        self.assertEqual(up, {"token": "1", "none": "0"})
        series = query("iothub_emulator_device_d2c_messages_total")
        self.assertEqual({(m["job"], m["device"], m.get("module")) for m, _ in series},
                         {("token", d, None) for d in ("dev1", "dev2", "dev3", "off")} | {("token", "dev3", "mod1")})


# ---------------------------------------------------------------------- the dashboard

DASHBOARD = os.path.join(SRCDIR, "docker", "grafana-dashboard.json")
OPS_C = os.path.join(SRCDIR, "gateway", "ops.c")
TARGET_LABELS = {"instance", "job"}  # Prometheus adds them to every series it scrapes
# The series the dashboard is for: each must be shown.
MAIN_SERIES = ["iotgw_devices_connected", "iotgw_hub_devices", "iotgw_telemetry_received_total",
               "iotgw_telemetry_acknowledged_total", "iotgw_telemetry_nacked_total", "iotgw_telemetry_held_messages",
               "iotgw_telemetry_oldest_held_seconds", "iotgw_hub_connections", "iotgw_hub_reconnects_total",
               "iotgw_hub_refusals_total", "iotgw_direct_method_seconds_bucket", "iotgw_open_fds", "iotgw_fd_limit"]


def gateway_series():
    """What gateway/ops.c exports: {family: (type, label names)}, and every string in it
    (label values are among them)."""
    with open(OPS_C) as f:
        src = f.read()
    families = {}
    for name, type_ in re.findall(r'iotgw_prom_family\(\s*w,\s*"(iotgw_\w+)",\s*"(\w+)"', src):
        families[name] = (type_, set())
    for type_, name in re.findall(r'\biotgw_prom_(counter|gauge)\(\s*w,\s*"(iotgw_\w+)"', src):
        families[name] = (type_, set())
    for name, label in re.findall(r'iotgw_prom_value\(\s*w,\s*"(iotgw_\w+)",\s*"(\w+)"', src):
        families[name][1].add(label)
    return families, set(re.findall(r'"([^"\\]*)"', src))


def labels_of(series, families):
    """The labels a series has, or None if the gateway has no such series."""
    if series in families:
        return families[series][1] | TARGET_LABELS
    for suffix in ("_bucket", "_sum", "_count"):
        base = series[:-len(suffix)]
        if series.endswith(suffix) and families.get(base, ("",))[0] == "histogram":
            return TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
    return None


def query_problems(expr, legend, families, strings):
    """Why a query does not fit what the gateway exports (empty: it does)."""
    problems, known = [], set()
    names = re.findall(r"\b(iotgw_[a-z0-9_]+)", expr)
    if not names:
        problems.append(f"{expr}: queries no iotgw_ series")
    for n in names:
        labels = labels_of(n, families)
        if labels is None:
            problems.append(f"{n}: not a series of gateway/ops.c")
        else:
            known |= labels
    for n, matchers in re.findall(r"\b(iotgw_[a-z0-9_]+)\{([^}]*)\}", expr):
        for label, op, v in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers):
            if label not in (labels_of(n, families) or set()):
                problems.append(f"{n} has no label {label}")
            elif op in ("=", "!=") and v not in strings:
                problems.append(f"{n}{{{label}{op}\"{v}\"}}: ops.c never writes that value")
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        for label in filter(None, (l.strip() for l in group.split(","))):
            if label not in known:
                problems.append(f"{expr}: groups by {label}, which its series do not have")
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend or ""):
        if label not in known:
            problems.append(f"legend {legend!r}: {label} is not a label of {expr}")
    return problems


def panels_of(dash):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def queries_of(dash):
    """(expr, legend) of every panel target, and the template variables' queries."""
    for p in panels_of(dash):
        for t in p.get("targets", []):
            yield t.get("expr", ""), t.get("legendFormat")
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            yield v["definition"], None


class Dashboard(unittest.TestCase):
    def setUp(self):
        with open(DASHBOARD) as f:
            self.dash = json.load(f)
        self.families, self.strings = gateway_series()

    def test_the_gateway_source_is_read(self):
        # if ops.c were written differently, the checks below would check nothing
        self.assertGreaterEqual(len(self.families), 25)
        self.assertEqual(self.families["iotgw_direct_method_seconds"][0], "histogram")
        self.assertEqual(self.families["iotgw_telemetry_nacked_total"][1], {"reason"})

    def test_json_model(self):
        d = self.dash
        self.assertTrue(36 <= d["schemaVersion"] <= 39, d["schemaVersion"])
        self.assertTrue(d["uid"] and d["title"])
        variables = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual((variables["DS_PROMETHEUS"]["type"], variables["DS_PROMETHEUS"]["query"]),
                         ("datasource", "prometheus"))
        ids = [p["id"] for p in panels_of(d)]
        self.assertEqual(len(ids), len(set(ids)))
        for p in panels_of(d):
            self.assertTrue(p["title"] and p["gridPos"]["w"] <= 24, p)
            if p["type"] == "row":
                continue
            self.assertEqual(p["datasource"], {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"])
            self.assertTrue(p["targets"], p["title"])
            refs = [t["refId"] for t in p["targets"]]
            self.assertEqual(len(refs), len(set(refs)), p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${DS_PROMETHEUS}", p["title"])
                self.assertTrue(t["expr"], p["title"])

    def test_every_series_it_queries_is_the_gateways(self):
        problems = [p for expr, legend in queries_of(self.dash)
                    for p in query_problems(expr, legend, self.families, self.strings)]
        self.assertEqual(problems, [])
        queried = {n for expr, _ in queries_of(self.dash) for n in re.findall(r"\b(iotgw_[a-z0-9_]+)", expr)}
        self.assertEqual([s for s in MAIN_SERIES if s not in queried], [])
        self.assertTrue(any("histogram_quantile(0.99" in e for e, _ in queries_of(self.dash)))

    def test_the_check_sees_drift(self):
        f, s = self.families, self.strings
        self.assertEqual(query_problems('sum(rate(iotgw_telemetry_received_total[5m]))', None, f, s), [])
        self.assertTrue(query_problems("rate(iotgw_telemetry_recieved_total[5m])", None, f, s))  # renamed series
        self.assertTrue(query_problems('sum by (cause) (iotgw_hub_devices)', None, f, s))  # a label it lacks
        self.assertTrue(query_problems('iotgw_hub_devices{state="connected"}', None, f, s))  # a value it never has
        self.assertTrue(query_problems("iotgw_direct_methods_seconds_bucket", None, f, s))
        self.assertTrue(query_problems("iotgw_telemetry_received_total", "{{reason}}", f, s))

    @unittest.skipUnless(shutil.which("promtool"), "promtool (Debian's prometheus) is not installed")
    def test_promtool_parses_every_query(self):
        exprs = [e.replace("$__rate_interval", "5m").replace("$instance", ".*")
                 for p in panels_of(self.dash) for t in p.get("targets", []) for e in [t["expr"]]]
        self.assertEqual([e for e in exprs if "$" in e], [])
        rules = {"groups": [{"name": "dashboard",
                             "rules": [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            json.dump(rules, f)  # JSON is YAML
            f.flush()
            r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    run_tests()
