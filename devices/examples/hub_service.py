"""What the example service apps share: a service connection string, SAS tokens for it,
and the hub's REST API (direct methods, twins) over HTTPS, with the Python standard
library only."""
import base64
import hashlib
import hmac
import http.client
import json
import ssl
import time
import urllib.parse


class Hub:
    def __init__(self, connection_string, ca=None, rest_port=443):
        fields = dict(p.split("=", 1) for p in connection_string.split(";") if p)
        self.host = fields["HostName"]
        self.policy = fields["SharedAccessKeyName"]
        self.key = fields["SharedAccessKey"]
        self.ca = ca
        self.rest_port = rest_port

    def token(self, ttl=3600):
        se = int(time.time() + ttl)
        sr = urllib.parse.quote(self.host, safe="")
        sig = base64.b64encode(hmac.new(base64.b64decode(self.key), f"{sr}\n{se}".encode(), hashlib.sha256).digest())
        return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}&skn={self.policy}"

    def rest(self, method, path, body=None, headers=None):
        ctx = ssl.create_default_context(cafile=self.ca)
        conn = http.client.HTTPSConnection(self.host, self.rest_port, context=ctx, timeout=60)
        h = {"Authorization": self.token(), "Content-Type": "application/json; charset=utf-8"}
        h.update(headers or {})
        conn.request(method, path + "?api-version=2021-04-12",
                     body=json.dumps(body) if body is not None else None, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, json.loads(data) if data else None

    def sasl_user(self):
        """SASL PLAIN user for a hub-level policy token: {policy}@sas.root.{hub name}."""
        return f"{self.policy}@sas.root.{self.host.split('.')[0]}"

    def ssl_domain(self):
        """Proton's TLS settings for AMQPS to the hub (python3-qpid-proton)."""
        from proton import SSLDomain
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        if self.ca:
            domain.set_trusted_ca_db(self.ca)
        domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
        return domain

    def invoke(self, device, method, payload, timeout_s=30):
        return self.rest("POST", f"/twins/{urllib.parse.quote(device, safe='')}/methods",
                         {"methodName": method, "payload": payload, "responseTimeoutInSeconds": timeout_s})

    def twin(self, device):
        return self.rest("GET", f"/twins/{urllib.parse.quote(device, safe='')}")
