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

    def rest(self, method, path, body=None):
        ctx = ssl.create_default_context(cafile=self.ca)
        conn = http.client.HTTPSConnection(self.host, self.rest_port, context=ctx, timeout=60)
        conn.request(method, path + "?api-version=2021-04-12",
                     body=json.dumps(body) if body is not None else None,
                     headers={"Authorization": self.token(), "Content-Type": "application/json; charset=utf-8"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, json.loads(data) if data else None

    def invoke(self, device, method, payload, timeout_s=30):
        return self.rest("POST", f"/twins/{urllib.parse.quote(device, safe='')}/methods",
                         {"methodName": method, "payload": payload, "responseTimeoutInSeconds": timeout_s})

    def twin(self, device):
        return self.rest("GET", f"/twins/{urllib.parse.quote(device, safe='')}")
