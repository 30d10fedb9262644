"""What the example service apps share: a service connection string, SAS tokens for it,
the hub's REST API (direct methods, twins) over HTTPS with the Python standard library,
and a reader of the hub's telemetry stream (python3-qpid-proton) that follows IoT Hub's
redirect to its Event Hub-compatible endpoint."""
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

    def token(self, ttl=3600, resource=None):
        """A SAS token of the policy for the hub, or for another resource (an Event Hub's
        "sb://{namespace}/{name}"). Event Hubs signs with the key's text, IoT Hub with its
        base64-decoded bytes."""
        se = int(time.time() + ttl)
        sr = urllib.parse.quote(resource or self.host, safe="")
        key = self.key.encode() if (resource or "").startswith("sb://") else base64.b64decode(self.key)
        sig = base64.b64encode(hmac.new(key, f"{sr}\n{se}".encode(), hashlib.sha256).digest())
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
        """Proton's TLS settings for AMQPS to the hub or its Event Hubs endpoint."""
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


def stream_reader(hub, amqps_port=5671, partitions=4, selector="amqp.annotation.x-opt-offset > '@latest'"):
    """A python3-qpid-proton handler base class reading every partition of the hub's
    telemetry stream, as the Event Hubs clients do: attach to the hub's
    messages/events/ConsumerGroups/$Default/Partitions/N; when the hub detaches them with
    amqp:link:redirect (IoT Hub always does; iothub-emulator with --stream-redirect),
    connect to the endpoint its info names and authenticate there by CBS put-token with
    the same policy (token audience "sb://{host}/{event hub}"). Subclasses implement
    on_stream_message(event); on_stream_error(text) says what went wrong (on stderr) and
    the reading stops."""
    import sys
    from proton import Endpoint, Message
    from proton.handlers import MessagingHandler
    from proton.reactor import Selector

    class StreamReader(MessagingHandler):
        def __init__(self):
            super().__init__()
            self.stream_endpoint = None  # (host, port, event hub) after a redirect
            self.token_sent = False
            self.attached = 0

        def open_stream(self, container):
            conn = container.connect(f"amqps://{hub.host}:{amqps_port}", ssl_domain=hub.ssl_domain(),
                                     sasl_enabled=True, allowed_mechs="PLAIN", user=hub.sasl_user(),
                                     password=hub.token(), virtual_host=hub.host, reconnect=False)
            self._attach(container, conn, "messages/events")

        def _attach(self, container, conn, prefix):
            for n in range(partitions):
                container.create_receiver(conn, f"{prefix}/ConsumerGroups/$Default/Partitions/{n}",
                                          options=Selector(selector))

        def on_link_opened(self, event):
            link = event.link
            if link.is_receiver and link.name != "cbs-replies" and not (link.state & Endpoint.REMOTE_CLOSED):
                self.attached += 1  # (a redirected link is closed as soon as it is opened)
                if self.attached == partitions:
                    self.on_stream_ready()

        def on_stream_ready(self):
            pass

        def on_link_error(self, event):
            cond = event.link.remote_condition
            if cond and cond.name == "amqp:link:redirect":
                if self.stream_endpoint is None:
                    self._follow(event, dict(cond.info or {}))
                return
            self.on_stream_error(f"link {event.link.name}: {cond.name if cond else '?'}: "
                                 f"{cond.description if cond else ''}")
            event.container.stop()

        def _follow(self, event, info):
            address = urllib.parse.urlparse(str(info.get("address", "")))
            path = [urllib.parse.unquote(p) for p in address.path.split("/") if p]
            host = str(info.get("hostname") or address.hostname or "")
            if not host or not path:
                self.on_stream_error(f"a redirect without a usable address: {info}")
                event.container.stop()
                return
            self.stream_endpoint = (host, address.port or 5671, path[0])
            event.connection.close()
            conn = event.container.connect(f"amqps://{host}:{self.stream_endpoint[1]}",
                                           ssl_domain=hub.ssl_domain(), sasl_enabled=True,
                                           allowed_mechs="ANONYMOUS", virtual_host=host, reconnect=False)
            # (links are told apart by name: proton may hand out new wrappers for the same link)
            event.container.create_sender(conn, "$cbs", name="cbs-requests")
            event.container.create_receiver(conn, "$cbs", name="cbs-replies")
            print(f"stream: {hub.host} redirected the stream to {host}:{self.stream_endpoint[1]}, "
                  f"event hub {path[0]}", file=sys.stderr, flush=True)

        def on_sendable(self, event):
            if event.sender.name == "cbs-requests" and not self.token_sent:
                host, _, name = self.stream_endpoint
                audience = f"sb://{host}/{name}"
                event.sender.send(Message(id="put-token-1", reply_to="cbs-replies", body=hub.token(resource=audience),
                                          properties={"operation": "put-token", "name": audience,
                                                      "type": "servicebus.windows.net:sastoken"}))
                self.token_sent = True

        def on_message(self, event):
            if event.receiver.name == "cbs-replies":
                props = event.message.properties or {}
                status = props.get("status-code")
                if status in (200, 202):
                    self._attach(event.container, event.connection, self.stream_endpoint[2])
                else:
                    self.on_stream_error(f"the event hub refused the token: {status} "
                                         f"{props.get('status-description')}")
                    event.container.stop()
                return
            self.on_stream_message(event)

        def on_stream_error(self, text):
            print(f"stream: {text}", file=sys.stderr, flush=True)

    return StreamReader
