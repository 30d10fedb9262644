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

The connection string may also come from IOTHUB_CONNECTION_STRING. Results print as
JSON; `device create` prints the new device's connection string too. Exit status: 0
when the hub said yes, 1 when it said no (its answer is printed), 2 for a usage error.
`device import` creates each device of a fleet file with its key as both primary and
secondary key (hub-made keys for "ID -"), disabled where the line says so; devices that
exist already are left as they are and listed; exit 1 when any other creation failed.
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


def cmd_monitor(hub, a):
    from proton.reactor import Container

    class Monitor(stream_reader(hub, a.amqps_port, a.partitions)):
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
    p.add_argument("--partitions", type=int, default=4)
    p.set_defaults(fn=cmd_monitor)
    a = ap.parse_args()
    if not a.connection_string:
        ap.error("--connection-string (or IOTHUB_CONNECTION_STRING) is required")
    hub = Hub(a.connection_string, a.ca, a.rest_port)
    a.amqps_port = a.amqps_port
    try:
        return a.fn(hub, a)
    except OSError as e:  # say where: 'Connection refused' alone names no host or port
        where = f"{hub.host}:{a.amqps_port if a.command in ('c2d', 'monitor') else a.rest_port}"
        print(f"iothub-service: {where}: {e.strerror or e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"iothub-service: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
