"""Helpers for tests against iothub-emulator: start it, make SAS tokens, and talk to it
with Debian's python3-qpid-proton (blocking API) and the standard library's HTTPS."""
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import ssl
import subprocess
import tempfile
import time
import urllib.parse

from iotgw_testlib import WRAPPER, readline_within

HOST = "localhost"
DEVICE_KEYS = {
    "dev1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "dev2": "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
    "dev3": "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=",
}
OWNER_KEY = "YGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8="
SERVICE_KEY = "gIGCg4SFhoeIiYqLjI2Oj5CRkpOUlZaXmJmam5ydnp8="


def sas_token(resource, key, ttl=3600, policy=None, expiry=None):
    """An IoT Hub SAS token, sr URL-encoded as the Node SDK writes it."""
    se = int(expiry if expiry is not None else time.time() + ttl)
    sr = urllib.parse.quote(resource, safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest())
    token = f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}"
    return token + (f"&skn={policy}" if policy else "")


def device_token(device, ttl=3600, key=None, expiry=None):
    return sas_token(f"{HOST}/devices/{device}", key or DEVICE_KEYS[device], ttl, expiry=expiry)


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
devices:
""" + "".join(f"  - id: {d}\n    primaryKey: {k}\n    secondaryKey: {k}\n" for d, k in DEVICE_KEYS.items()) + \
    "  - id: off\n    status: disabled\n"


class Emulator:
    """iothub-emulator on 127.0.0.1 (ports chosen by the system unless given)."""

    def __init__(self, binary, certs, listen="127.0.0.1:0", amqps="127.0.0.1:0", extra=()):
        self.dir = tempfile.mkdtemp(prefix="iothub-emulator-test-")
        self.registry = os.path.join(self.dir, "registry.yaml")
        with open(self.registry, "w") as f:
            f.write(REGISTRY)
        self.ca = os.path.join(certs, "ca.pem")
        self.log = open(os.path.join(self.dir, "emulator.log"), "w+")
        self.proc = subprocess.Popen(
            WRAPPER + [binary, "--cert", os.path.join(certs, "server.pem"), "--key", os.path.join(certs, "server.key"),
                       "--registry", self.registry, "--listen", listen, "--amqps", amqps, *extra],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, text=True)
        self.wss = self.amqps = None
        while self.amqps is None or self.wss is None:
            line = readline_within(self.proc, 30)
            m = re.match(r"listening: (https\+wss|amqps) \S+:(\d+)", line)
            if m and m.group(1) == "amqps":
                self.amqps = int(m.group(2))
            elif m:
                self.wss = int(m.group(2))

    def log_text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(timeout=60)
        self.proc.stdout.close()
        assert rc == 0, "iothub-emulator exited %d:\n%s" % (rc, self.log_text()[-3000:])

    # ---------------------------------------------------------------- REST

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
