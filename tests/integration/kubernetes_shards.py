"""deploy/kubernetes, rendered and then run here. `kubectl kustomize deploy/kubernetes`
renders the manifests; the test parses them and checks what docs/deploying.md says of
them (security context, probes, disruption budget, grace period, volumes, the image's
entrypoint and ports). Then it runs the pods on this machine: for each replica, the
rendered container's command and arguments, its environment as the kubelet would set it
(POD_NAME from the downward API: iotgw-0, iotgw-1, iotgw-2), its volumes filled from the
rendered ConfigMap and Secret, and the configuration with only what a local run must
change rewritten (listen addresses 0.0.0.0 -> 127.0.0.{2,3,4} with the same ports, the
hub -> a local iothub-emulator, the mount paths -> a folder per pod). With the fleet of
the rendered Secret registered at the emulator: `iotgw-devsim --shard I/3` to each pod
gets every parcel acknowledged; a device sent to another pod is refused, naming both
shards, with a rate-limited log line and nobody else disturbed; /readyz and /metrics
show each pod's shard; a reload that changes the shard count is refused; SIGTERM to one
pod ends it with exit 0 within the manifest's terminationGracePeriodSeconds while the
others keep serving. Figures measured are printed ("figures: ...").

kubectl: KUBECTL, else kubectl on PATH, else /usr/bin/kubectl; without one the test is
skipped (exit 77) saying so. It installs nothing.

usage: kubernetes_shards.py SRCDIR IOTHUB_EMULATOR IOTGW IOTGW_DEVSIM SCHEMAS_DESC CERT_DIR"""
import base64
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

SRCDIR, EMULATOR, IOTGW, DEVSIM, SCHEMAS, CERTS = map(os.path.abspath, sys.argv[1:7])  # the pods run elsewhere
del sys.argv[1:7]

from iotgw_testlib import WRAPPER, LoggedProcess, readline_within, rss_kib, run_tests  # noqa: E402
from emulator_lib import Emulator, fleet_registry, sas_token, HOST  # noqa: E402
from device_lib import Device, T, load_schemas  # noqa: E402

load_schemas(SCHEMAS)

DEPLOY = os.path.join(SRCDIR, "deploy", "kubernetes")
DOCKERFILE = os.path.join(SRCDIR, "docker", "Dockerfile")
KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl") or "/usr/bin/kubectl"
DRAIN_S = 10 + 2  # gateway/main.c: DRAIN_MS, then at most 2 s more for the last answers
ERROR_UNKNOWN_DEVICE, ERROR_SHUTTING_DOWN = 4, 13
PER_DEVICE_KIB = 16  # docs/operations.md: 15.7 KiB per connected device at 10,000
SIZED_DEVICES = 5000  # statefulset.yaml's resources are sized for this many devices per pod
QUEUE_TOTAL_BYTES = 67108864  # devices.queueTotalBytes' default (docs/configuration.md)

if not os.access(KUBECTL, os.X_OK):
    print(f"kubernetes_shards: SKIP: no kubectl (looked for $KUBECTL, kubectl on PATH, {KUBECTL}); on Debian 12 "
          "it is the package kubernetes-client")
    sys.exit(77)

import yaml  # noqa: E402  (python3-yaml; after the skip, which needs nothing)

# Everything is bounded: a test that hangs is ended, and tearDownModule ends every process.
signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("kubernetes_shards: over 600 s")))
signal.alarm(600)


def fnv1a(text):
    """32-bit FNV-1a of the text's bytes: codecs/shard.h, written again independently."""
    h = 2166136261
    for b in text.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def home(device, count):
    return fnv1a(device) % count


# ---------------------------------------------------------------------- rendering


def render():
    p = subprocess.run([KUBECTL, "kustomize", DEPLOY], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{KUBECTL} kustomize {DEPLOY} failed:\n{p.stderr}"
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def one(docs, kind, name=None, prefix=None):
    found = [d for d in docs if d["kind"] == kind and
             (name is None or d["metadata"]["name"] == name) and
             (prefix is None or d["metadata"]["name"].startswith(prefix))]
    assert len(found) == 1, f"{len(found)} {kind} named {name or prefix + '*'} in the rendering"
    return found[0]


def dockerfile_runtime():
    """The last stage of docker/Dockerfile: its ENTRYPOINT (JSON form), WORKDIR, USER and
    EXPOSEd ports."""
    with open(DOCKERFILE) as f:
        stage = f.read().split("\nFROM ")[-1]
    out = {"entrypoint": None, "workdir": None, "user": None, "expose": set()}
    for line in stage.splitlines():
        word, _, rest = line.partition(" ")
        if word == "ENTRYPOINT":
            out["entrypoint"] = json.loads(rest)
        elif word == "WORKDIR":
            out["workdir"] = rest.strip()
        elif word == "USER":
            out["user"] = rest.strip()
        elif word == "EXPOSE":
            out["expose"] |= {int(p) for p in rest.split()}
    return out


DOCS = render()
STS = one(DOCS, "StatefulSet", "iotgw")
POD = STS["spec"]["template"]["spec"]
CONTAINER = POD["containers"][0]
CONFIGMAP = one(DOCS, "ConfigMap", prefix="iotgw-config")
SECRET = one(DOCS, "Secret", prefix="iotgw-secrets")
CONFIG_TEXT = CONFIGMAP["data"]["iotgw.yaml"]
CONFIG = yaml.safe_load(CONFIG_TEXT)
SECRET_FILES = {k: base64.b64decode(v) for k, v in SECRET["data"].items()}
REPLICAS = STS["spec"]["replicas"]
COUNT = CONFIG["fleet"]["shard"]["count"]


def fleet_of(text):
    """{id: key} of a devices file (docs/configuration.md, "Devices file")."""
    out = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            out[fields[0]] = fields[1]
    return out


FLEET = fleet_of(SECRET_FILES["fleet.txt"].decode())
SHARDS = {i: sorted(d for d in FLEET if home(d, COUNT) == i) for i in range(COUNT)}


def port_number(port):
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in CONTAINER["ports"] if p["name"] == port)


def effective(key):
    """A security setting as the container runs with it: its own, else the pod's."""
    c = CONTAINER.get("securityContext", {})
    return c[key] if key in c else POD.get("securityContext", {}).get(key)


class Manifests(unittest.TestCase):
    def test_one_pod_per_shard_started_together_with_its_index_from_the_downward_api(self):
        self.assertEqual(REPLICAS, 3)
        self.assertEqual(REPLICAS, COUNT, "replicas and fleet.shard.count differ")
        self.assertEqual(STS["spec"]["podManagementPolicy"], "Parallel")
        self.assertEqual(CONFIG["fleet"]["shard"]["index"], {"podNameEnv": "POD_NAME"})
        env = {e["name"]: e for e in CONTAINER["env"]}
        self.assertEqual(env["POD_NAME"]["valueFrom"], {"fieldRef": {"fieldPath": "metadata.name"}})
        self.assertTrue(all(SHARDS.values()), f"a shard of the example fleet is empty: {SHARDS}")

    def test_the_command_is_the_images(self):
        image = dockerfile_runtime()
        self.assertEqual(image["entrypoint"], ["iotgw"])
        self.assertEqual(CONTAINER["command"], image["entrypoint"])
        args = CONTAINER["args"]
        self.assertEqual(args[0], "--config")
        config_mount = next(m for m in CONTAINER["volumeMounts"] if m["name"] == "config")
        self.assertEqual(os.path.dirname(args[1]), config_mount["mountPath"])
        self.assertIn(os.path.basename(args[1]), CONFIGMAP["data"])
        self.assertEqual({p["containerPort"] for p in CONTAINER["ports"]}, image["expose"])
        self.assertTrue(image["user"] and image["user"] != "root", image)
        self.assertTrue(CONTAINER["image"].split(":")[0].endswith("iotgw"), CONTAINER["image"])

    def test_security_context(self):
        self.assertIs(effective("runAsNonRoot"), True)
        self.assertNotEqual(effective("runAsUser"), 0)
        self.assertIs(effective("readOnlyRootFilesystem"), True)
        self.assertIs(effective("allowPrivilegeEscalation"), False)
        self.assertEqual(effective("capabilities"), {"drop": ["ALL"]})
        self.assertEqual(effective("seccompProfile"), {"type": "RuntimeDefault"})
        self.assertIsNot(effective("privileged"), True)
        self.assertIs(POD.get("automountServiceAccountToken"), False)
        self.assertFalse(POD.get("hostNetwork"))

    def test_probes_ask_the_ops_endpoint_that_listens_off_loopback(self):
        ops = CONFIG["ops"]
        self.assertEqual(ops["listen"], "0.0.0.0:9600")
        live, ready = CONTAINER["livenessProbe"], CONTAINER["readinessProbe"]
        self.assertEqual(live["httpGet"]["path"], "/healthz")
        self.assertEqual(ready["httpGet"]["path"], "/readyz")
        for p in (live, ready):
            self.assertEqual(port_number(p["httpGet"]["port"]), 9600)
            self.assertGreaterEqual(p.get("timeoutSeconds", 1), 2)  # a stuck loop does not answer at all
        # off loopback the device view needs ops.token: from the Secret, mounted
        token_file = ops["tokenFile"]
        secrets = next(m for m in CONTAINER["volumeMounts"] if m["name"] == "secrets")
        self.assertEqual(os.path.dirname(token_file), secrets["mountPath"])
        self.assertGreaterEqual(len(SECRET_FILES[os.path.basename(token_file)].strip()), 16)

    def test_grace_period_is_longer_than_the_drain(self):
        self.assertGreater(POD["terminationGracePeriodSeconds"], DRAIN_S)

    def test_disruption_budget(self):
        pdb = one(DOCS, "PodDisruptionBudget", "iotgw")
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)
        self.assertNotIn("minAvailable", pdb["spec"])
        labels = STS["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(pdb["spec"]["selector"]["matchLabels"].items() <= labels.items())

    def test_services_give_every_pod_an_address_of_its_own(self):
        labels = STS["spec"]["template"]["metadata"]["labels"]
        headless = one(DOCS, "Service", STS["spec"]["serviceName"])
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        self.assertTrue(headless["spec"]["selector"].items() <= labels.items())
        self.assertIn(7000, [port_number(p["targetPort"]) for p in headless["spec"]["ports"]])
        for i in range(REPLICAS):
            s = one(DOCS, "Service", f"iotgw-devices-{i}")
            self.assertEqual(s["spec"]["selector"]["statefulset.kubernetes.io/pod-name"], f"iotgw-{i}")
            self.assertEqual([port_number(p["targetPort"]) for p in s["spec"]["ports"]], [7000])
        self.assertEqual(len([d for d in DOCS if d["kind"] == "Service"]), REPLICAS + 1)

    def test_volumes_config_secrets_and_a_claim_for_the_state(self):
        volumes = {v["name"]: v for v in POD["volumes"]}
        self.assertEqual(volumes["config"]["configMap"]["name"], CONFIGMAP["metadata"]["name"])
        self.assertEqual(volumes["secrets"]["secret"]["secretName"], SECRET["metadata"]["name"])
        mounts = {m["name"]: m for m in CONTAINER["volumeMounts"]}
        self.assertTrue(mounts["config"]["readOnly"] and mounts["secrets"]["readOnly"])
        claim = STS["spec"]["volumeClaimTemplates"][0]
        self.assertEqual(claim["metadata"]["name"], "state")
        self.assertEqual(mounts["state"]["mountPath"], "/var/lib/iotgw/state")
        self.assertIn("storage", claim["spec"]["resources"]["requests"])
        devices_file = CONFIG["fleet"]["devicesFile"]
        self.assertEqual(os.path.dirname(devices_file), mounts["secrets"]["mountPath"])
        self.assertIn(os.path.basename(devices_file), SECRET_FILES)

    def test_the_example_secret_holds_placeholders_only(self):
        self.assertEqual(len(FLEET), 12)
        for device, key in FLEET.items():
            self.assertRegex(base64.b64decode(key).decode(), r"^EXAMPLE-ONLY not-a-real-key \d\d$", device)
        self.assertTrue(SECRET_FILES["ops-token"].startswith(b"EXAMPLE-ONLY"))

    def test_resources_are_requested_and_limited(self):
        r = CONTAINER["resources"]
        for k in ("cpu", "memory"):
            self.assertIn(k, r["requests"])
            self.assertIn(k, r["limits"])


def mebibytes(quantity):
    m = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert m, quantity
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)


# ---------------------------------------------------------------------- the pods, here

EMU = None
PODS = []


def mounts_in(root):
    """{mount path: local folder} for the container's volume mounts, under root."""
    return {m["mountPath"]: os.path.join(root, m["mountPath"].lstrip("/")) for m in CONTAINER["volumeMounts"]}


def local_path(path, mounts):
    for mount, local in mounts.items():
        if path == mount or path.startswith(mount + "/"):
            return local + path[len(mount):]
    raise AssertionError(f"{path} is in no volume mount of the container")


def pod_config(i, mounts):
    """The rendered iotgw.yaml with what a local run must change, and only that: the
    listen addresses (0.0.0.0 -> 127.0.0.{2+i}, ports kept), the hub (the emulator), and
    paths into the volumes (their local folders). Returns (config, what was changed)."""
    c = copy.deepcopy(CONFIG)
    address = f"127.0.0.{2 + i}"
    changed = []
    for section in ("devices", "ops"):
        old = c[section]["listen"]
        assert old.startswith("0.0.0.0:"), old
        c[section]["listen"] = address + old[len("0.0.0.0"):]
        changed.append(f"{section}.listen")
    amqps = c["hub"].get("transport") == "amqps"
    c["hub"].update(hostName=HOST, port=EMU.amqps if amqps else EMU.wss, caFile=EMU.ca)  # the rest kept
    changed += ["hub.hostName", "hub.port", "hub.caFile"]
    for section, key in (("fleet", "devicesFile"), ("ops", "tokenFile")):
        c[section][key] = local_path(c[section][key], mounts)
        changed.append(f"{section}.{key}")
    return c, changed


class Pod(LoggedProcess):
    """One replica, as the kubelet would run it, on 127.0.0.{2+i}."""

    def __init__(self, i):
        self.i, self.name = i, f"iotgw-{i}"
        self.address = f"127.0.0.{2 + i}"
        self.root = tempfile.mkdtemp(prefix=f"kubernetes-shards-{self.name}-")
        self.mounts = mounts_in(self.root)
        for local in self.mounts.values():
            os.makedirs(local)
        volumes = {v["name"]: v for v in POD["volumes"]}
        for m in CONTAINER["volumeMounts"]:
            v, local = volumes.get(m["name"], {}), self.mounts[m["mountPath"]]
            if "configMap" in v:
                assert "items" not in v["configMap"] and "subPath" not in m, m
            elif "secret" in v:
                assert "items" not in v["secret"] and "subPath" not in m, m
                for k, data in SECRET_FILES.items():
                    with open(os.path.join(local, k), "wb") as f:
                        f.write(data)
            else:  # the claim: an empty folder
                assert m["name"] in [t["metadata"]["name"] for t in STS["spec"]["volumeClaimTemplates"]], m
        config, self.changed = pod_config(i, self.mounts)
        config_dir = self.mounts[next(m["mountPath"] for m in CONTAINER["volumeMounts"] if m["name"] == "config")]
        self.config = os.path.join(config_dir, "iotgw.yaml")
        with open(self.config, "w") as f:
            yaml.safe_dump(config, f)
        self.env = self.pod_env()
        self.argv = self.pod_argv()
        self.cwd = os.path.join(self.root, dockerfile_runtime()["workdir"].lstrip("/"))
        os.makedirs(self.cwd, exist_ok=True)
        self.log = open(os.path.join(self.root, "iotgw.log"), "w+")
        self.proc = subprocess.Popen(WRAPPER + self.argv, env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
                                     stderr=self.log, stdin=subprocess.DEVNULL, text=True)
        PODS.append(self)  # ended by tearDownModule whatever happens next
        self.start_lines = [readline_within(self.proc, 20) for _ in range(4)]
        assert self.start_lines[0] == f"listening: devices {self.address}:7000", self.start_lines
        assert self.start_lines[1] == f"listening: ops {self.address}:9600", self.start_lines

    def pod_env(self):
        """The container's env as the kubelet sets it: values, and the downward API's
        metadata.name; anything else would need the test to learn it."""
        env = {k: os.environ[k] for k in ("PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS") if k in os.environ}
        for e in CONTAINER.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif e.get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.name"}}:
                env[e["name"]] = self.name
            else:
                raise AssertionError(f"env {e['name']}: the test does not know how the kubelet sets {e}")
        return env

    def pod_argv(self):
        command = CONTAINER["command"]
        assert command[0] == "iotgw", command
        return [IOTGW] + [local_path(a, self.mounts) if a.startswith("/") else a
                          for a in command[1:] + CONTAINER.get("args", [])]

    def get(self, path, headers=None):
        req = urllib.request.Request(f"http://{self.address}:9600{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self):
        from prometheus_client.parser import text_string_to_metric_families
        status, text = self.get("/metrics")
        assert status == 200, (status, text)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def wait_ready(self, timeout=30):
        end = time.time() + timeout
        while True:
            status, body = self.get("/readyz")
            if status == 200:
                return body
            assert time.time() < end, f"{self.name}: /readyz {status} {body}\n{self.log_text()[-2000:]}"
            time.sleep(0.2)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def setUpModule():
    global EMU
    for i in range(REPLICAS):  # the pods' addresses, each with its ports
        for port in (7000, 9600):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((f"127.0.0.{2 + i}", port))
                except OSError as e:
                    raise AssertionError(f"127.0.0.{2 + i}:{port} is taken ({e}): the pods need it") from None
    EMU = Emulator(EMULATOR, CERTS, registry=fleet_registry(FLEET))
    try:
        for i in range(REPLICAS):
            Pod(i)
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    """Every process ended by its PID: the pods by SIGTERM (each must exit 0: a sanitizer
    or valgrind finding exits 99), killed after 30 s; then the emulator."""
    failed = []
    for p in PODS:
        if p.proc.poll() is None:
            p.proc.terminate()
            try:
                rc = p.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = "killed after 30 s"
            if rc != 0:
                failed.append(f"{p.name} exited {rc}:\n{p.log_text()[-2000:]}")
        p.proc.stdout.close()
        p.log.close()
    if EMU:
        EMU.stop()
        EMU.log.close()
    assert not failed, "\n".join(failed)


def devsim(pod, shard, messages=20, check=True):
    fleet = local_path(CONFIG["fleet"]["devicesFile"], pod.mounts)  # the Secret's file, as the pod reads it
    p = subprocess.run([DEVSIM, "--gateway", f"{pod.address}:7000", "--hub", HOST, "--fleet", fleet, "--shard", shard,
                        "--messages", str(messages), "--rate", "50", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, f"devsim --shard {shard} to {pod.name}: {p.returncode}\n{p.stdout}{p.stderr}"
    return p, json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else None


def connect(pod, device, **caps):
    d = Device(7000, host=pod.address)
    d.hello(device, sas_token(f"{HOST}/devices/{device}", FLEET[device]), **caps)
    return d


def acked(d, seq):
    f = T("Frame")()
    f.telemetry.seq = seq
    f.telemetry.raw = b'{"ok": true}'
    d.send(f)
    return d.expect("ack").seq == seq


class Pods(unittest.TestCase):
    """In order (test_1.. first): the last one stops a pod."""

    def test_1_only_the_addresses_the_hub_and_the_mount_paths_are_rewritten(self):
        for p in PODS:
            self.assertEqual(p.changed, ["devices.listen", "ops.listen", "hub.hostName", "hub.port", "hub.caFile",
                                         "fleet.devicesFile", "ops.tokenFile"])
            with open(p.config) as f:
                written = yaml.safe_load(f)
            rendered = copy.deepcopy(CONFIG)
            for key in p.changed:  # without what was rewritten, the pod's file is the ConfigMap's
                section, name = key.split(".")
                written[section].pop(name)
                rendered[section].pop(name, None)
            self.assertEqual(written, rendered)
            self.assertEqual(p.env.get("POD_NAME"), p.name)

    def test_2_each_pod_says_its_shard(self):
        for p in PODS:
            n = len(SHARDS[p.i])
            self.assertEqual(p.start_lines[3], f"shard: {p.i} of {COUNT} (from POD_NAME={p.name}): serves {n} of "
                                               f"the fleet's {len(FLEET)} devices")
            self.assertEqual(p.wait_ready(), f"ready (shard {p.i} of {COUNT})\n")
            m = p.metrics()
            self.assertEqual(m[("iotgw_shard_index", ())], p.i)
            self.assertEqual(m[("iotgw_shard_count", ())], COUNT)
            self.assertEqual(m[("iotgw_fleet_devices", ())], n)
            check = subprocess.run(WRAPPER + [IOTGW, "--check-config", p.config], env=p.env, capture_output=True,
                                   text=True, timeout=30)
            self.assertEqual(check.returncode, 0, check.stderr)
            self.assertIn(f"shard: {p.i} of {COUNT} (from POD_NAME={p.name}): serves {n} of the fleet's "
                          f"{len(FLEET)} devices\n", check.stdout)
            # the device view answers off loopback with the Secret's token: and only with it
            token = (SECRET_FILES["ops-token"]).decode().strip()
            self.assertEqual(p.get("/devices")[0], 401)
            self.assertEqual(p.get("/devices", {"Authorization": f"Bearer {token}"})[0], 200)
        self.assertEqual(sum(len(s) for s in SHARDS.values()), len(FLEET))

    def test_3_devsim_per_shard_every_parcel_acknowledged(self):
        for p in PODS:
            before = p.metrics()[("iotgw_telemetry_acknowledged_total", ())]
            _, r = devsim(p, f"{p.i}/{COUNT}")
            n = len(SHARDS[p.i])
            self.assertEqual((r["devices"], r["connected"], r["acked"], r["nacked"], r["unresolved"]),
                             (n, n, 20 * n, 0, 0), r)
            self.assertEqual(p.metrics()[("iotgw_telemetry_acknowledged_total", ())] - before, 20 * n)
            self.assertEqual(p.metrics().get(("iotgw_device_errors_total", (("code", "ERROR_UNKNOWN_DEVICE"),))),
                             None, "a device of its own shard was refused")
        if WRAPPER:  # the RSS would be valgrind's
            print(f"\nfigures: no memory figure under {WRAPPER[0]}", flush=True)
            return
        # the sizing in statefulset.yaml against what a pod costs here
        base = max(rss_kib(p.proc.pid) for p in PODS)
        need = base / 1024 + SIZED_DEVICES * PER_DEVICE_KIB / 1024 + QUEUE_TOTAL_BYTES / 2**20
        limit = mebibytes(CONTAINER["resources"]["limits"]["memory"])
        print(f"\nfigures: a pod with {max(len(s) for s in SHARDS.values())} devices: {base} KiB RSS; "
              f"{SIZED_DEVICES} devices need about {need:.0f} MiB; the limit is {limit} MiB", flush=True)
        self.assertGreaterEqual(limit, need)
        self.assertGreaterEqual(mebibytes(CONTAINER["resources"]["requests"]["memory"]), need)

    def test_4_a_device_at_the_wrong_pod_is_told_its_shard_and_nobody_else_notices(self):
        pod0 = PODS[0]
        mine, theirs = SHARDS[0][0], SHARDS[1][0]
        bystander = connect(pod0, mine)
        bystander.expect("welcome")
        self.assertTrue(acked(bystander, 1))
        before = pod0.metrics().get(("iotgw_device_errors_total", (("code", "ERROR_UNKNOWN_DEVICE"),)), 0)
        d = connect(pod0, theirs)
        e = d.expect("error")
        self.assertEqual(e.code, ERROR_UNKNOWN_DEVICE)
        self.assertEqual(e.message, f"device {theirs} belongs to shard 1 of {COUNT}; this gateway serves shard 0")
        self.assertIsNone(d.recv(), "the connection stays open after the refusal")
        d.close()
        # a device in no shard of the fleet is refused as before
        d = Device(7000, host=pod0.address)
        d.hello("not-in-the-fleet", sas_token(f"{HOST}/devices/not-in-the-fleet", FLEET[mine]))
        e = d.expect("error")
        self.assertEqual((e.code, e.message),
                         (ERROR_UNKNOWN_DEVICE, 'device "not-in-the-fleet" is not in this gateway\'s fleet'))
        d.close()
        # iotgw-devsim sent to the wrong pod: every device is refused, saying where it belongs
        p, r = devsim(pod0, f"1/{COUNT}", messages=1, check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(r["connected"], 0, r)
        self.assertIn(f"belongs to shard 1 of {COUNT}; this gateway serves shard 0", p.stderr)
        # a burst of them: each told, the log rate-limited
        burst = 30
        for _ in range(burst):
            d = connect(pod0, theirs)
            self.assertEqual(d.expect("error").code, ERROR_UNKNOWN_DEVICE)
            d.close()
        after = pod0.metrics()[("iotgw_device_errors_total", (("code", "ERROR_UNKNOWN_DEVICE"),))]
        refused = 1 + 1 + len(SHARDS[1]) + burst
        self.assertEqual(after - before, refused)
        lines = [line for line in pod0.log_text().splitlines() if "belongs to shard 1" in line]
        print(f"\nfigures: {refused - 1} wrong-shard refusals at {pod0.name}, {len(lines)} log lines", flush=True)
        self.assertGreaterEqual(len(lines), 1)
        self.assertLess(len(lines), burst)
        # the bystander never noticed
        self.assertTrue(acked(bystander, 2))
        bystander.close()

    def test_5_a_reload_that_changes_the_shard_count_is_refused(self):
        pod = PODS[1]
        with open(pod.config) as f:
            good = f.read()
        bad = yaml.safe_load(good)
        bad["fleet"]["shard"]["count"] = COUNT + 1
        try:
            with open(pod.config, "w") as f:
                yaml.safe_dump(bad, f)
            pod.proc.send_signal(signal.SIGHUP)
            pod.wait_for_log(f"reload refused: fleet.shard changed in {pod.config} (shard 1 of {COUNT}, now 1 of "
                             f"{COUNT + 1})")
        finally:
            with open(pod.config, "w") as f:
                f.write(good)
        self.assertEqual(pod.metrics()[("iotgw_shard_count", ())], COUNT)
        d = connect(pod, SHARDS[1][0])
        d.expect("welcome")
        self.assertTrue(acked(d, 1))
        d.close()
        pod.proc.send_signal(signal.SIGHUP)  # the same shard: reloaded
        pod.wait_for_log(f"configuration reloaded: {len(SHARDS[1])} devices in the fleet")

    def test_6_sigterm_ends_one_pod_within_the_grace_period_and_the_others_serve(self):
        grace = POD["terminationGracePeriodSeconds"]
        pod = PODS[2]
        device = SHARDS[2][0]
        d = connect(pod, device, methods=True)
        d.expect("welcome")
        EMU.wait_online(device)
        # a direct method the device never answers: the drain waits for it as long as it
        # waits for anything (gateway/main.c's deadline), the worst case for the grace period
        result = {}
        call = threading.Thread(target=lambda: result.update(r=EMU.rest("POST", f"/twins/{device}/methods", {
            "methodName": "neverAnswered", "payload": {}, "responseTimeoutInSeconds": 60})))
        call.start()
        d.expect("method_request")
        t0 = time.time()
        pod.proc.send_signal(signal.SIGTERM)
        end = time.time() + 5
        while pod.get("/readyz")[0] != 503 and time.time() < end:
            time.sleep(0.05)
        self.assertEqual(pod.get("/readyz"), (503, "not ready (shard 2 of 3): draining: the gateway is stopping\n"))
        for p in PODS[:2]:  # while it drains, the other pods serve their shards
            self.assertEqual(p.get("/readyz")[0], 200)
            _, r = devsim(p, f"{p.i}/{COUNT}", messages=5)
            self.assertEqual(r["acked"], 5 * len(SHARDS[p.i]), r)
        served = time.time() - t0
        e = d.expect("error", timeout=grace)
        self.assertEqual(e.code, ERROR_SHUTTING_DOWN)
        rc = pod.proc.wait(timeout=grace)
        took = time.time() - t0
        print(f"\nfigures: {pod.name} exited {rc} {took:.2f} s after SIGTERM with a method call pending (grace "
              f"period {grace} s); the other pods served their shards meanwhile, for {served:.1f} s", flush=True)
        self.assertEqual(rc, 0, pod.log_text()[-2000:])
        self.assertLess(served, took, "the other pods were not seen serving while this one drained")
        self.assertGreaterEqual(took, DRAIN_S - 2 - 0.5)  # it did wait for the call, up to its deadline
        self.assertLess(took, grace)
        call.join(30)
        status, _, answer = result["r"]  # the cloud is told the method failed
        self.assertEqual((status, answer["status"]), (200, 503), result)
        d.close()

if __name__ == "__main__":
    run_tests()
