#!/usr/bin/python3
"""iothub-service: IoT Hub's service side from the command line, in the spirit of
`az iot hub`, for iothub-emulator or a real IoT Hub (given its service connection
string). Uses the Python standard library, and python3-qpid-proton for `c2d` and
`monitor`.

  iothub-service [--connection-string CS] [--ca FILE] [--rest-port 443] [--amqps-port 5671] COMMAND

  device create ID | device show ID | device list | device delete ID
  device import FLEET_FILE     (iotgw's fleet.devicesFile format: "ID KEY" per line)
  invoke ID METHOD [PAYLOAD_JSON] [--timeout S]
  twin show ID | twin patch ID DESIRED_JSON
  c2d ID TEXT [--property KEY=VALUE ...]
  monitor [--count N] [--timeout S] [--partitions N]
  eventhub-connection-string
  job update-twin JOB_ID CONDITION PATCH_JSON | job method JOB_ID CONDITION METHOD [PAYLOAD_JSON]
      [--start WHEN] [--max-seconds N] [--timeout S] [--wait S]
  job show JOB_ID [--wait S] | job cancel JOB_ID | job list [--type TYPE] [--status STATUS]

The connection string may also come from IOTHUB_CONNECTION_STRING. Results print as
JSON; `device create` prints the new device's connection string too. Exit status: 0
when the hub said yes, 1 when it said no (its answer is printed), 2 for a usage error.
`device import` creates each device of a fleet file with its key as both primary and
secondary key (hub-made keys for "ID -"), disabled where the line says so; devices that
exist already are left as they are and listed; exit 1 when any other creation failed.
`monitor` reads every partition: how many, the stream's $management node says (unless
--partitions is given). `eventhub-connection-string` prints the Event Hub-compatible
connection string of the policy, as `az iot hub connection-string show --default-eventhub`
does: the Event Hubs endpoint and name are where IoT Hub redirects messages/events/$management
(iothub-emulator with --stream-redirect does too; without it, it answers there itself).
`job` schedules IoT Hub jobs (v2) over the devices a query's WHERE clause selects
(CONDITION, e.g. "tags.site = 'north'"): a twin update (PATCH_JSON with tags and/or
properties.desired) or a direct method, at --start (ISO 8601, or +SECONDS from now;
default now); with --wait it polls the job until it has finished (at most S seconds) and
exits 1 unless it completed.
"""
import argparse
import base64
import json
import os
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
# hub_service.py: installed beside the other service apps, or in the source tree
for d in (os.path.join(HERE, "..", "share", "iotgw"), "@EXAMPLES_DIR@", os.path.join(HERE, "..", "devices", "examples")):
    if os.path.exists(os.path.join(d, "hub_service.py")):
        sys.path.insert(0, d)
        break
from hub_service import Hub, stream_reader  # noqa: E402


def out(obj):
    print(json.dumps(obj, indent=2, sort_keys=True))


def answer(status, body):
    out(body if body is not None else {"status": status})
    return 0 if 200 <= status < 300 else 1


def read_fleet_file(path):
    """(id, key or None, disabled) for each device line of a fleet file."""
    devices = []
    with open(path) as f:
        for no, line in enumerate(f, 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if len(words) not in (2, 3) or (len(words) == 3 and words[2] != "disabled"):
                raise ValueError(f'{path}:{no}: expected "ID KEY", optionally followed by "disabled"')
            devices.append((words[0], None if words[1] == "-" else words[1], len(words) == 3))
    return devices


def import_fleet(hub, path):
    result = {"created": 0, "existed": [], "failed": {}}
    devices = read_fleet_file(path)
    last = time.monotonic()
    live = sys.stderr.isatty()  # a terminal: one line rewritten in place; else a line every 2 s
    for done, (device, key, disabled) in enumerate(devices, 1):
        now = time.monotonic()
        if now - last >= (0.2 if live else 2) or done == len(devices):
            text = f"iothub-service: device import: {done} of {len(devices)}"
            print(("\r" + text) if live else text, end="\n" if not live or done == len(devices) else "",
                  file=sys.stderr, flush=True)
            last = now
        body = {"deviceId": device, "status": "disabled" if disabled else "enabled"}
        if key:
            body["authentication"] = {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}}
        status, answer_body = hub.rest("PUT", f"/devices/{urllib.parse.quote(device, safe='')}", body)
        if status == 200:
            result["created"] += 1
        elif status == 409:
            result["existed"].append(device)
        else:
            result["failed"][device] = {"status": status, "answer": answer_body}
    out(result)
    return 1 if result["failed"] else 0


def cmd_device(hub, a):
    if a.action == "list":
        return answer(*hub.rest("GET", "/devices"))
    if a.action == "import":
        if not a.id:
            raise SystemExit("iothub-service: device import needs a FLEET_FILE")
        return import_fleet(hub, a.id)
    if not a.id:
        raise SystemExit("iothub-service: device %s needs an ID" % a.action)
    path = f"/devices/{a.id}"
    if a.action == "create":
        status, body = hub.rest("PUT", path, {"deviceId": a.id})
        rc = answer(status, body)
        if rc == 0:
            key = body["authentication"]["symmetricKey"]["primaryKey"]
            print(f"HostName={hub.host};DeviceId={a.id};SharedAccessKey={key}")
        return rc
    if a.action == "show":
        return answer(*hub.rest("GET", path))
    status, body = hub.rest("DELETE", path, headers={"If-Match": "*"})
    return answer(status, body if body is not None else {"deleted": a.id})


def cmd_invoke(hub, a):
    payload = json.loads(a.payload) if a.payload else None
    return answer(*hub.invoke(a.id, a.method, payload, a.timeout))


def cmd_twin(hub, a):
    if a.action == "show":
        return answer(*hub.twin(a.id))
    if not a.patch:
        raise SystemExit("iothub-service: twin patch needs DESIRED_JSON")
    return answer(*hub.rest("PATCH", f"/twins/{a.id}", {"properties": {"desired": json.loads(a.patch)}},
                            headers={"If-Match": "*"}))


def cmd_c2d(hub, a):
    from proton import Message
    from proton.utils import BlockingConnection
    props = dict(p.split("=", 1) for p in a.property)
    conn = BlockingConnection(f"amqps://{hub.host}:{a.amqps_port}", ssl_domain=hub.ssl_domain(), sasl_enabled=True,
                              allowed_mechs="PLAIN", user=hub.sasl_user(), password=hub.token(),
                              virtual_host=hub.host, timeout=30)
    try:
        sender = conn.create_sender("/messages/devicebound")
        sender.send(Message(address=f"/devices/{a.id}/messages/devicebound", body=a.text.encode(),
                            properties=props or None))
    finally:
        conn.close()
    out({"sent": a.id, "body": a.text, "properties": props})
    return 0


def decode_body(body):
    raw = body if isinstance(body, (bytes, bytearray)) else (body.encode() if isinstance(body, str) else None)
    if raw is None:
        return body
    try:
        return json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return {"base64": base64.b64encode(bytes(raw)).decode()}


def event_hub_info(hub, amqps_port, timeout=30):
    """Where the hub's telemetry stream is served and what its $management node says of
    it: {"host", "port", "event_hub", "properties"} (properties: the READ answer for
    com.microsoft:eventhub, partition_ids a list). IoT Hub redirects a link to
    messages/events/$management to its Event Hubs namespace (amqp:link:redirect, the
    address amqps://{namespace}:{port}/{event hub}/$management); there the request goes
    after a CBS put-token for sb://{namespace}/{event hub}."""
    import uuid
    from proton import Message
    from proton.utils import BlockingConnection, LinkDetached

    def request(conn, address, name, token=None):
        reply_to = "mgmt-replies-" + uuid.uuid4().hex[:8]
        rcv = conn.create_receiver(address, credit=10, name=reply_to)
        snd = conn.create_sender(address)
        props = {"operation": "READ", "type": "com.microsoft:eventhub", "name": name}
        if token:
            props["security_token"] = token
        snd.send(Message(id=uuid.uuid4().hex, reply_to=reply_to, body=b"[]", properties=props))
        reply = rcv.receive(timeout=timeout)
        status = reply.properties.get("status-code")
        if status != 200:
            raise ValueError(f"$management READ of {name}: {status} {reply.properties.get('status-description')}")
        body = {str(k): v for k, v in dict(reply.body).items()}
        body["partition_ids"] = [str(p) for p in body.get("partition_ids", [])]
        return body

    conn = BlockingConnection(f"amqps://{hub.host}:{amqps_port}", ssl_domain=hub.ssl_domain(), sasl_enabled=True,
                              allowed_mechs="PLAIN", user=hub.sasl_user(),
                              password=hub.token(resource=f"{hub.host}/messages/events"), virtual_host=hub.host,
                              timeout=timeout)
    try:
        try:
            props = request(conn, "messages/events/$management", hub.host.split(".")[0])
            return {"host": hub.host, "port": amqps_port, "event_hub": props["name"], "properties": props}
        except LinkDetached as e:
            cond = e.link.remote_condition
            if not cond or cond.name != "amqp:link:redirect":
                raise ValueError(f"messages/events/$management: {cond.name if cond else 'detached'}: "
                                 f"{cond.description if cond else ''}")
            info = {str(k): v for k, v in (cond.info or {}).items()}
    finally:
        conn.close()
    address = urllib.parse.urlparse(str(info.get("address", "")))
    path = [urllib.parse.unquote(p) for p in address.path.split("/") if p]
    host = str(info.get("hostname") or address.hostname or "")
    if not host or len(path) != 2 or path[1] != "$management":
        raise ValueError(f"a redirect without a usable address: {info}")
    port, name = address.port or 5671, path[0]
    audience = f"sb://{host}/{name}"
    conn = BlockingConnection(f"amqps://{host}:{port}", ssl_domain=hub.ssl_domain(), sasl_enabled=True,
                              allowed_mechs="ANONYMOUS", virtual_host=host, timeout=timeout)
    try:
        cbs_out = conn.create_sender("$cbs")
        cbs_in = conn.create_receiver("$cbs", credit=10)
        token = hub.token(resource=audience)
        cbs_out.send(Message(id="put-token-1", reply_to="cbs", body=token, properties={
            "operation": "put-token", "name": audience, "type": "servicebus.windows.net:sastoken"}))
        reply = cbs_in.receive(timeout=timeout)
        if reply.properties.get("status-code") != 200:
            raise ValueError(f"put-token for {audience}: {reply.properties.get('status-code')} "
                             f"{reply.properties.get('status-description')}")
        props = request(conn, "$management", name, token)
    finally:
        conn.close()
    return {"host": host, "port": port, "event_hub": props["name"], "properties": props}


def cmd_eventhub_connection_string(hub, a):
    info = event_hub_info(hub, a.amqps_port)
    print(f"Endpoint=sb://{info['host']}/;SharedAccessKeyName={hub.policy};SharedAccessKey={hub.key};"
          f"EntityPath={info['event_hub']}")
    return 0


def cmd_monitor(hub, a):
    from proton.reactor import Container

    partitions = a.partitions or len(event_hub_info(hub, a.amqps_port)["properties"]["partition_ids"])

    class Monitor(stream_reader(hub, a.amqps_port, partitions)):
        def __init__(self):
            super().__init__()
            self.seen = 0
            self.failed = False

        def on_start(self, event):
            self.open_stream(event.container)  # from now on
            if a.timeout:
                event.container.schedule(a.timeout, self)

        def on_stream_message(self, event):
            m = event.message
            ann = {str(k): v for k, v in (m.annotations or {}).items()}
            print(json.dumps({"device": ann.get("iothub-connection-device-id"), "messageId": str(m.id),
                              "contentType": m.content_type, "properties": m.properties or {},
                              "enqueuedTime": str(ann.get("iothub-enqueuedtime")), "body": decode_body(m.body)},
                             sort_keys=True, default=str), flush=True)
            self.seen += 1
            if a.count and self.seen >= a.count:
                event.container.stop()

        def on_stream_error(self, text):
            super().on_stream_error(text)
            self.failed = True

        def on_timer_task(self, event):
            event.container.stop()

    m = Monitor()
    Container(m).run()
    if a.count and m.seen < a.count:
        print(f"iothub-service: monitor: {m.seen} of {a.count} messages" + (f" within {a.timeout:g} s" if a.timeout else ""), file=sys.stderr)
        return 1
    return 1 if m.failed else 0


def rest_with(hub, method, path, query="", body=None, headers=None):
    """A REST request with query parameters ("&name=value...") and headers of its own:
    (status, the answer's body, the answer's continuation token or None)."""
    import http.client
    import ssl
    conn = http.client.HTTPSConnection(hub.host, hub.rest_port, timeout=60,
                                       context=ssl.create_default_context(cafile=hub.ca))
    h = {"Authorization": hub.token(), "Content-Type": "application/json; charset=utf-8"}
    h.update(headers or {})
    conn.request(method, f"{path}?api-version=2021-04-12{query}", body=json.dumps(body) if body is not None else None,
                 headers=h)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None, resp.getheader("x-ms-continuation")


def query_page(hub, sql, page_size=None, continuation=None):
    """One page of a twin query: (status, rows or the error body, continuation token or None)."""
    headers = {}
    if page_size:
        headers["x-ms-max-item-count"] = str(page_size)
    if continuation:
        headers["x-ms-continuation"] = continuation
    return rest_with(hub, "POST", "/devices/query", body={"query": sql}, headers=headers)


def cmd_query(hub, a):
    """Every page of the query (or --max-pages of them) as one JSON array."""
    rows, continuation, pages = [], None, 0
    while True:
        status, body, continuation = query_page(hub, a.sql, a.page_size, continuation)
        if status != 200:
            return answer(status, body)
        rows.extend(body)
        pages += 1
        if not continuation or (a.max_pages and pages >= a.max_pages):
            break
    out(rows)
    if continuation:
        print(f"iothub-service: query: more rows follow the {pages} page(s) shown", file=sys.stderr)
    return 0


def cmd_module(hub, a):
    if not a.device:
        raise SystemExit("iothub-service: module %s needs a DEVICE" % a.action)
    device = urllib.parse.quote(a.device, safe="")
    if a.action == "list":
        return answer(*hub.rest("GET", f"/devices/{device}/modules"))
    if not a.module:
        raise SystemExit("iothub-service: module %s needs a DEVICE and a MODULE" % a.action)
    path = f"/devices/{device}/modules/{urllib.parse.quote(a.module, safe='')}"
    if a.action == "create":
        status, body = hub.rest("PUT", path, {"deviceId": a.device, "moduleId": a.module})
        rc = answer(status, body)
        if rc == 0:
            key = body["authentication"]["symmetricKey"]["primaryKey"]
            print(f"HostName={hub.host};DeviceId={a.device};ModuleId={a.module};SharedAccessKey={key}")
        return rc
    if a.action == "show":
        return answer(*hub.rest("GET", path))
    if a.action == "twin":
        return answer(*hub.rest("GET", f"/twins/{device}/modules/{urllib.parse.quote(a.module, safe='')}"))
    status, body = hub.rest("DELETE", path, headers={"If-Match": "*"})
    return answer(status, body if body is not None else {"deleted": f"{a.device}/{a.module}"})


JOB_DONE = ("completed", "failed", "cancelled")


def job_start_time(when):
    """--start: ISO 8601 as given, or +SECONDS from now."""
    if when and when.startswith("+"):
        t = time.gmtime(time.time() + float(when[1:]))
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)
    return when


def cmd_job(hub, a):
    if a.action == "list":
        query = "".join(f"&{name}={urllib.parse.quote(value, safe='')}"
                        for name, value in (("jobType", a.type), ("jobStatus", a.status)) if value)
        return answer(*rest_with(hub, "GET", "/jobs/v2/query", query)[:2])
    if not a.id:
        raise SystemExit(f"iothub-service: job {a.action} needs a JOB_ID")
    path = f"/jobs/v2/{urllib.parse.quote(a.id, safe='')}"
    if a.action == "cancel":
        return answer(*hub.rest("POST", path + "/cancel"))
    if a.action in ("update-twin", "method"):
        if not a.condition or not a.what:
            raise SystemExit(f"iothub-service: job {a.action} needs a JOB_ID, a CONDITION and "
                             + ("a PATCH_JSON" if a.action == "update-twin" else "a METHOD"))
        request = {"jobId": a.id, "queryCondition": a.condition, "startTime": job_start_time(a.start),
                   "maxExecutionTimeInSeconds": a.max_seconds}
        if a.action == "update-twin":
            request.update(type="scheduleUpdateTwin", updateTwin=json.loads(a.what))
        else:
            request.update(type="scheduleDeviceMethod", cloudToDeviceMethod={
                "methodName": a.what, "payload": json.loads(a.payload) if a.payload else None,
                "responseTimeoutInSeconds": a.timeout})
        status, body = hub.rest("PUT", path, {k: v for k, v in request.items() if v is not None})
    else:
        status, body = hub.rest("GET", path)
    deadline = time.monotonic() + a.wait
    while a.wait and status == 200 and body["status"] not in JOB_DONE and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = hub.rest("GET", path)
    rc = answer(status, body)
    if rc == 0 and a.wait and body["status"] != "completed":
        print(f"iothub-service: job {a.id} is {body['status']}" + (f" after {a.wait:g} s" if body["status"]
              not in JOB_DONE else ""), file=sys.stderr)
        return 1
    return rc


def main():
    ap = argparse.ArgumentParser(prog="iothub-service", description=__doc__.split("\n\n")[0])
    ap.add_argument("--connection-string", default=os.environ.get("IOTHUB_CONNECTION_STRING"))
    ap.add_argument("--ca", help="PEM CAs to trust (the emulator's ca.pem); default: the system's")
    ap.add_argument("--rest-port", type=int, default=443)
    ap.add_argument("--amqps-port", type=int, default=5671)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("device", help="create, show, list, delete or import devices")
    p.add_argument("action", choices=["create", "show", "list", "delete", "import"])
    p.add_argument("id", nargs="?", help="the device's id (import: a fleet file)")
    p.set_defaults(fn=cmd_device)
    p = sub.add_parser("invoke", help="invoke a direct method")
    p.add_argument("id")
    p.add_argument("method")
    p.add_argument("payload", nargs="?", help="JSON")
    p.add_argument("--timeout", type=int, default=30)
    p.set_defaults(fn=cmd_invoke)
    p = sub.add_parser("twin", help="show a twin or patch its desired properties")
    p.add_argument("action", choices=["show", "patch"])
    p.add_argument("id")
    p.add_argument("patch", nargs="?", help="JSON of desired properties")
    p.set_defaults(fn=cmd_twin)
    p = sub.add_parser("c2d", help="send a cloud-to-device message")
    p.add_argument("id")
    p.add_argument("text")
    p.add_argument("--property", action="append", default=[], help="KEY=VALUE")
    p.set_defaults(fn=cmd_c2d)
    p = sub.add_parser("monitor", help="print telemetry as JSON lines, from now on")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--timeout", type=float, default=0)
    p.add_argument("--partitions", type=int, default=0, help="default: as many as the hub's $management says")
    p.set_defaults(fn=cmd_monitor)
    p = sub.add_parser("eventhub-connection-string",
                       help="print the Event Hub-compatible connection string (Endpoint=sb://...;EntityPath=...)")
    p.set_defaults(fn=cmd_eventhub_connection_string)
    p = sub.add_parser("query", help="run an IoT Hub query over device or module twins (every page)")
    p.add_argument("sql", help="e.g. \"SELECT * FROM devices WHERE tags.site = 'north'\"")
    p.add_argument("--page-size", type=int, default=0, help="rows per request (x-ms-max-item-count)")
    p.add_argument("--max-pages", type=int, default=0, help="stop after this many pages (0: all)")
    p.set_defaults(fn=cmd_query)
    p = sub.add_parser("module", help="create, show, list or delete a device's modules, or show a module's twin")
    p.add_argument("action", choices=["create", "show", "list", "delete", "twin"])
    p.add_argument("device")
    p.add_argument("module", nargs="?")
    p.set_defaults(fn=cmd_module)
    p = sub.add_parser("job", help="schedule a twin update or a direct method over the devices of a query, "
                       "show, cancel or list jobs")
    p.add_argument("action", choices=["update-twin", "method", "show", "cancel", "list"])
    p.add_argument("id", nargs="?", help="the job's id")
    p.add_argument("condition", nargs="?", help="update-twin, method: the devices, as a query's WHERE clause")
    p.add_argument("what", nargs="?", help="update-twin: the twin patch (JSON: tags, properties.desired); "
                   "method: the method's name")
    p.add_argument("payload", nargs="?", help="method: its payload (JSON)")
    p.add_argument("--start", help="when it runs: ISO 8601 (2030-01-01T00:00:00Z) or +SECONDS from now; default now")
    p.add_argument("--max-seconds", type=int, help="maxExecutionTimeInSeconds")
    p.add_argument("--timeout", type=int, default=30, help="method: the devices' response timeout in seconds")
    p.add_argument("--wait", type=float, default=0,
                   help="update-twin, method, show: poll until the job has finished, at most this many seconds; "
                   "exit 1 unless it completed")
    p.add_argument("--type", help="list: scheduleUpdateTwin or scheduleDeviceMethod")
    p.add_argument("--status", help="list: queued, scheduled, running, completed, failed or cancelled")
    p.set_defaults(fn=cmd_job)
    a = ap.parse_args()
    if not a.connection_string:
        ap.error("--connection-string (or IOTHUB_CONNECTION_STRING) is required")
    hub = Hub(a.connection_string, a.ca, a.rest_port)
    a.amqps_port = a.amqps_port
    try:
        return a.fn(hub, a)
    except OSError as e:  # say where: 'Connection refused' alone names no host or port
        where = f"{hub.host}:{a.amqps_port if a.command in ('c2d', 'monitor', 'eventhub-connection-string') else a.rest_port}"
        print(f"iothub-service: {where}: {e.strerror or e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"iothub-service: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
