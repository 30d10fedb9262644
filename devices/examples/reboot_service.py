#!/usr/bin/python3
"""reboot service: invokes direct method rebootDevice on a device and polls its twin until
the device reports a new rebootTime, as in IoT Hub's device management tutorial.
Standard library only.

  reboot_service.py --connection-string "HostName=...;SharedAccessKeyName=...;SharedAccessKey=..."
                    --device ID [--ca FILE] [--rest-port 443] [--timeout S]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hub_service import Hub  # noqa: E402


def reported_reboot_time(hub, device):
    status, twin = hub.twin(device)
    if status != 200:
        raise SystemExit(f"reboot-service: reading the twin of {device} failed: {status} {twin}")
    return twin.get("properties", {}).get("reported", {}).get("rebootTime")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connection-string", default=os.environ.get("IOTHUB_CONNECTION_STRING"))
    ap.add_argument("--device", required=True)
    ap.add_argument("--ca")
    ap.add_argument("--rest-port", type=int, default=443)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()
    if not args.connection_string:
        ap.error("--connection-string (or IOTHUB_CONNECTION_STRING) is required")
    hub = Hub(args.connection_string, args.ca, args.rest_port)
    before = reported_reboot_time(hub, args.device)
    print(f"reboot-service: {args.device} last rebooted at {before or 'never'}; invoking rebootDevice", flush=True)
    deadline = time.time() + args.timeout
    while True:
        status, answer = hub.invoke(args.device, "rebootDevice", {})
        if status == 200:
            break
        if time.time() > deadline:
            print(f"reboot-service: rebootDevice failed: {status} {answer}", flush=True)
            return 1
        time.sleep(1)  # not connected yet
    print(f"reboot-service: rebootDevice answered {answer['status']}: {answer.get('payload')}", flush=True)
    while time.time() < deadline:
        now = reported_reboot_time(hub, args.device)
        if now and now != before:
            print(f"reboot-service: {args.device} reports rebootTime {now}", flush=True)
            return 0
        time.sleep(0.5)
    print("reboot-service: no new rebootTime in time", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
