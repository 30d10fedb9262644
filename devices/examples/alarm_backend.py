#!/usr/bin/python3
"""alarm backend: reads the hub's telemetry stream and forwards every parcel addressed to
a device (application property parcelDestination, which the gateway promotes) to that
device as direct method ProcessMessage, with the parcel as its JSON payload. The gateway
sends telemetry with JSON bodies (telemetry.encoding: json), so the body is forwarded as
it came; the gateway turns it back into a protobuf Parcel for the monitor device.

Uses Debian's python3-qpid-proton and the standard library: run it with /usr/bin/python3.

  alarm_backend.py --connection-string "HostName=...;SharedAccessKeyName=...;SharedAccessKey=..."
                   [--ca FILE] [--amqps-port 5671] [--rest-port 443] [--partitions 4]
                   [--count N] [--timeout S]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hub_service import Hub, stream_reader  # noqa: E402

from proton.reactor import Container  # noqa: E402


def backend_class(hub, args):
    class Backend(stream_reader(hub, args.amqps_port, args.partitions)):
        def __init__(self):
            super().__init__()
            self.forwarded = self.failed = 0

        def on_start(self, event):
            self.open_stream(event.container)  # from now on
            event.container.schedule(args.timeout, self)

        def on_stream_ready(self):
            print(f"backend: reading the telemetry stream of {hub.host}", flush=True)

        def on_stream_message(self, event):
            m = event.message
            props = m.properties or {}
            dest = props.get("parcelDestination")
            if not dest:
                return
            try:
                parcel = json.loads(m.body if isinstance(m.body, str) else bytes(m.body).decode())
            except ValueError:
                print(f"backend: message {m.id} for {dest} is not JSON; is telemetry.encoding json?", flush=True)
                return
            status, answer = hub.invoke(dest, "ProcessMessage", parcel)
            source = (m.annotations or {}).get("iothub-connection-device-id", "?")
            code = answer.get("status") if status == 200 and answer else status
            print(f"backend: {parcel.get('type')} from {source} -> {dest} ProcessMessage: {code}", flush=True)
            if code == 200:
                self.forwarded += 1
            else:
                self.failed += 1
            if args.count and self.forwarded + self.failed >= args.count:
                event.container.stop()

        def on_timer_task(self, event):
            print("backend: timed out", flush=True)
            event.container.stop()

        def on_transport_error(self, event):
            print(f"backend: connection failed: {event.transport.condition}", flush=True)

    return Backend


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connection-string", default=os.environ.get("IOTHUB_CONNECTION_STRING"), required=False)
    ap.add_argument("--ca")
    ap.add_argument("--amqps-port", type=int, default=5671)
    ap.add_argument("--rest-port", type=int, default=443)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--count", type=int, default=0, help="stop after forwarding this many parcels")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    if not args.connection_string:
        ap.error("--connection-string (or IOTHUB_CONNECTION_STRING) is required")
    b = backend_class(Hub(args.connection_string, args.ca, args.rest_port), args)()
    Container(b).run()
    print(f"backend: {b.forwarded} parcels forwarded, {b.failed} failed", flush=True)
    return 0 if b.forwarded and not b.failed and (not args.count or b.forwarded == args.count) else 1


if __name__ == "__main__":
    sys.exit(main())
