"""Helpers for tests against iothub-emulator: start it, make SAS tokens, and talk to it
with Debian's python3-qpid-proton (blocking API) and the standard library's HTTPS."""
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse

from iotgw_testlib import WRAPPER, LoggedProcess, readline_within

HOST = "localhost"
DEVICE_KEYS = {
    "dev1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "dev2": "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
    "dev3": "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=",
}
OWNER_KEY = "YGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8="
SERVICE_KEY = "gIGCg4SFhoeIiYqLjI2Oj5CRkpOUlZaXmJmam5ydnp8="
MODULE_KEY = "oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr8="  # module mod1 of dev3
DEVICE_POLICY_KEY = "wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t8="  # policy "device": DeviceConnect only


def sas_token(resource, key, ttl=3600, policy=None, expiry=None):
    """An IoT Hub SAS token, sr URL-encoded as the Node SDK writes it; for an Event Hub
    ("sb://..."), signed as Event Hubs signs: with the key's text, not its decoded bytes."""
    se = int(expiry if expiry is not None else time.time() + ttl)
    sr = urllib.parse.quote(resource, safe="")
    hmac_key = key.encode() if resource.startswith("sb://") else base64.b64decode(key)
    sig = base64.b64encode(hmac.new(hmac_key, f"{sr}\n{se}".encode(), hashlib.sha256).digest())
    token = f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}"
    return token + (f"&skn={policy}" if policy else "")


def device_token(device, ttl=3600, key=None, expiry=None):
    return sas_token(f"{HOST}/devices/{device}", key or DEVICE_KEYS[device], ttl, expiry=expiry)


def module_token(device, module, ttl=3600, key=MODULE_KEY):
    return sas_token(f"{HOST}/devices/{device}/modules/{module}", key, ttl)


def owner_token(ttl=3600):
    return sas_token(HOST, OWNER_KEY, ttl, policy="iothubowner")


REGISTRY = f"""
policies:
  - name: iothubowner
    primaryKey: {OWNER_KEY}
    secondaryKey: {SERVICE_KEY}
    rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect]
  - name: service
    primaryKey: {SERVICE_KEY}
    secondaryKey: {SERVICE_KEY}
    rights: [ServiceConnect]
  - name: registryRead
    primaryKey: {SERVICE_KEY}
    secondaryKey: {SERVICE_KEY}
    rights: [RegistryRead]
  - name: device
    primaryKey: {DEVICE_POLICY_KEY}
    secondaryKey: {DEVICE_POLICY_KEY}
    rights: [DeviceConnect]
devices:
""" + "".join(f"  - id: {d}\n    primaryKey: {k}\n    secondaryKey: {k}\n" for d, k in DEVICE_KEYS.items()) + \
    f"    modules:\n      - id: mod1\n        primaryKey: {MODULE_KEY}\n        secondaryKey: {MODULE_KEY}\n" + \
    "  - id: off\n    status: disabled\n"


class Emulator(LoggedProcess):
    """iothub-emulator on 127.0.0.1 (ports chosen by the system unless given)."""
    name = "iothub-emulator"

    def __init__(self, binary, certs, listen="127.0.0.1:0", amqps="127.0.0.1:0", extra=(), registry=REGISTRY,
                 mqtts="127.0.0.1:0"):
        self.dir = tempfile.mkdtemp(prefix="iothub-emulator-test-")
        self.registry = os.path.join(self.dir, "registry.yaml")
        with open(self.registry, "w") as f:
            f.write(registry)
        self.binary, self.certs, self.extra = binary, certs, extra
        self.ca = os.path.join(certs, "ca.pem")
        self.log = open(os.path.join(self.dir, "emulator.log"), "w+")
        self._start(listen, amqps, mqtts)

    def restart(self):
        """Start again on the same ports with the same registry (after kill())."""
        self._start(f"127.0.0.1:{self.wss}", f"127.0.0.1:{self.amqps}",
                    f"127.0.0.1:{self.mqtts}" if self.mqtts else "off")

    def kill(self):
        """Gone at once, as after a crash."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()

    def _start(self, listen, amqps, mqtts):
        certs = self.certs
        self.proc = subprocess.Popen(
            WRAPPER + [self.binary, "--cert", os.path.join(certs, "server.pem"), "--key",
                       os.path.join(certs, "server.key"), "--registry", self.registry, "--listen", listen,
                       "--amqps", amqps, "--mqtts", mqtts, *self.extra],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, text=True)
        self.wss = self.amqps = self.mqtts = None
        # the lines come in this order; "hub:" follows them all
        while True:
            line = readline_within(self.proc, 30)
            m = re.match(r"listening: (https\+wss|amqps|mqtts) \S+:(\d+)", line)
            if m and m.group(1) == "amqps":
                self.amqps = int(m.group(2))
            elif m and m.group(1) == "mqtts":
                self.mqtts = int(m.group(2))
            elif m:
                self.wss = int(m.group(2))
            elif line.startswith("hub:"):
                break

    # ---------------------------------------------------------------- REST

    def wait_online(self, device, timeout=20):
        """Until the hub shows the device connected (its twin says so)."""
        end = time.time() + timeout
        while time.time() < end:
            status, _, twin = self.rest("GET", f"/twins/{device}")
            if status == 200 and twin.get("connectionState") == "Connected":
                return
            time.sleep(0.1)
        raise AssertionError(f"{device} never came online at the hub")

    def rest(self, method, path, body=None, token=None, headers=None):
        ctx = ssl.create_default_context(cafile=self.ca)
        conn = http.client.HTTPSConnection("localhost", self.wss, context=ctx, timeout=60)
        h = {"Authorization": token or owner_token(), "Content-Type": "application/json; charset=utf-8"}
        h.update(headers or {})
        sep = "&" if "?" in path else "?"
        conn.request(method, path + sep + "api-version=2021-04-12", body=json.dumps(body) if body is not None else None,
                     headers=h)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, dict(resp.getheaders()), (json.loads(data) if data else None)


def raw_tls_exchange(port, ca, data, limit=1 << 20):
    """Send data over TLS to 127.0.0.1:port (as a peer that ignores the protocol would)
    and return what comes back until the server closes, limit bytes or 10 s."""
    ctx = ssl.create_default_context(cafile=ca)
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(data)
            try:
                while len(out) < limit:
                    chunk = t.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            except (socket.timeout, ConnectionError, ssl.SSLError):
                pass
    return out


def proton_ssl(ca):
    from proton import SSLDomain
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    domain.set_trusted_ca_db(ca)
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
    return domain


def connect(emu, sasl=None, user=None, password=None, timeout=20):
    """A blocking AMQPS connection: sasl None = bare AMQP header, else the mechanism list."""
    from proton.utils import BlockingConnection
    kwargs = dict(ssl_domain=proton_ssl(emu.ca), timeout=timeout, virtual_host=HOST)
    if sasl is None:
        kwargs["sasl_enabled"] = False
    else:
        kwargs["allowed_mechs"] = sasl
    if user:
        kwargs["user"] = user
        kwargs["password"] = password
    return BlockingConnection(f"amqps://localhost:{emu.amqps}", **kwargs)


class Cbs:
    """$cbs links on a blocking connection; put() returns (status-code, description)."""

    def __init__(self, conn):
        self.conn = conn
        self.sender = conn.create_sender("$cbs")
        self.receiver = conn.create_receiver("$cbs", credit=10)
        self.n = 0

    def put(self, token, audience="x", type_="servicebus.windows.net:sastoken", msg_id=None):
        from proton import Message
        self.n += 1
        mid = msg_id if msg_id is not None else self.n
        self.sender.send(Message(id=mid, body=token, properties={
            "operation": "put-token", "type": type_, "name": audience}))
        reply = self.receiver.receive(timeout=20)
        self.receiver.accept()
        return reply.properties["status-code"], reply.properties.get("status-description"), reply


def wait_detached(conn, link, seconds=15):
    """Pump conn until link is detached by the emulator; return the condition name."""
    from proton import Endpoint
    from proton.utils import LinkDetached
    deadline = time.time() + seconds
    while time.time() < deadline and not (link.link.state & Endpoint.REMOTE_CLOSED):
        try:
            conn.container.process()
        except LinkDetached:
            pass
        time.sleep(0.02)
    assert link.link.state & Endpoint.REMOTE_CLOSED, "the link was not detached"
    return link.link.remote_condition.name


def pump(conn, seconds=0.3):
    """Let a BlockingConnection send what it holds (dispositions are written only while
    it is pumped) for a short while; a bare container.process() can wait its full timeout."""
    saved, end = conn.container.timeout, time.time() + seconds
    try:
        while time.time() < end:
            conn.container.timeout = 0.02
            conn.container.process()
    finally:
        conn.container.timeout = saved


def fleet_registry(devices, disabled=()):
    """A registry text with the usual policies and the given {id: key} devices."""
    head = REGISTRY.split("devices:")[0] + "devices:\n"
    return head + "".join(f"  - id: {d}\n    primaryKey: {k}\n    secondaryKey: {k}\n" +
                          ("    status: disabled\n" if d in disabled else "") for d, k in devices.items())


def random_key():
    return base64.b64encode(os.urandom(32)).decode()


class StreamReader:
    """Reads every partition of the emulator's telemetry stream from its start, in a
    background thread, authenticated by SASL PLAIN with the owner policy. .events holds
    (device id, message id, annotations, application properties) for each message, and
    .messages the whole messages (content-type, correlation-id, body...)."""

    def __init__(self, emu, partitions=4, selector="amqp.annotation.x-opt-offset > '-1'"):
        import threading
        from proton.handlers import MessagingHandler
        from proton.reactor import Container, Selector

        reader = self
        self.events = []
        self.messages = []
        self.attached = threading.Event()
        self.stopping = False
        self.error = None

        class Handler(MessagingHandler):
            def __init__(self):
                super().__init__(auto_accept=True)
                self.opened = 0

            def on_start(self, event):
                self.conn = event.container.connect(
                    f"amqps://localhost:{emu.amqps}", ssl_domain=proton_ssl(emu.ca), sasl_enabled=True,
                    allowed_mechs="PLAIN", user=f"iothubowner@sas.root.{HOST}", password=owner_token(),
                    virtual_host=HOST, reconnect=False)
                for n in range(partitions):
                    event.container.create_receiver(
                        self.conn, f"messages/events/ConsumerGroups/$Default/Partitions/{n}",
                        options=Selector(selector) if selector else None)
                event.container.schedule(0.1, self)

            def on_link_opened(self, event):
                self.opened += 1
                if self.opened == partitions:
                    reader.attached.set()

            def on_message(self, event):
                m = event.message
                ann = {str(k): v for k, v in (m.annotations or {}).items()}
                reader.events.append((ann.get("iothub-connection-device-id"), m.id, ann, m.properties or {}))
                reader.messages.append(m)

            def on_timer_task(self, event):
                if reader.stopping:
                    self.conn.close()
                else:
                    event.container.schedule(0.1, self)

            def on_transport_error(self, event):
                cond = event.transport.condition
                reader.error = cond.name if cond else "transport error"

            def on_link_error(self, event):
                reader.error = event.link.remote_condition.name

        self.thread = threading.Thread(target=lambda: Container(Handler()).run(), daemon=True)
        self.thread.start()
        assert self.attached.wait(20), "stream receivers did not attach: %s" % self.error

    def ids(self):
        return [e[1] for e in self.events]

    def find(self, pred, timeout=10):
        """The first message pred accepts, waiting up to timeout seconds; None if none."""
        end = time.time() + timeout
        while True:
            for m in list(self.messages):
                if pred(m):
                    return m
            if time.time() > end:
                return None
            time.sleep(0.05)

    def get(self, mid, timeout=10):
        """The message whose message-id is mid (AssertionError if none comes in time)."""
        m = self.find(lambda m: m.id == mid, timeout)
        assert m is not None, f"message {mid} never reached the telemetry stream"
        return m

    def absent(self, mid, wait=1.0):
        return self.find(lambda m: m.id == mid, wait) is None

    def stop(self):
        self.stopping = True
        self.thread.join(20)


def get_metrics(emu, token=None, source_address=None, method="GET"):
    """The emulator's /metrics (its own route, so no api-version): (status, headers with
    lower-case names, text). source_address: the client's (address, port), for a client
    that is not loopback."""
    ctx = ssl.create_default_context(cafile=emu.ca)
    conn = http.client.HTTPSConnection("127.0.0.1", emu.wss, context=ctx, timeout=60, source_address=source_address)
    conn.request(method, "/metrics", headers={"Authorization": token} if token else {})
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, text


def metric_samples(text):
    """Prometheus text as python3-prometheus-client parses it:
    {(sample name, ((label, value), ...) sorted): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
