"""The two user scenarios, end to end, with the shipped programs only: iothub-emulator,
iotgw, the example devices (C, libiotgw-device) and the example service apps (Python).

  Alarm: alarm-agent sends AlarmStatus parcels addressed to alarm-monitor-1; the alarm
  backend reads the hub's telemetry stream and invokes ProcessMessage on the monitor
  with each parcel as JSON; the gateway transcodes it to a protobuf Parcel; the monitor
  logs each status (in order) and answers 200, 400 for a parcel that is not an alarm
  status, 404 for an unknown method.
  Reboot: reboot_service invokes rebootDevice and polls the twin until reboot-device
  reports a new rebootTime.

usage: scenarios.py BUILDDIR SRCDIR CERT_DIR"""
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

from iotgw_testlib import WRAPPER, listening_ports, output_of, readline_within, run_tests
from emulator_lib import Emulator, fleet_registry, random_key, HOST, OWNER_KEY

BUILD, SRC, CERTS = sys.argv[1:4]
del sys.argv[1:4]
KEYS = {d: random_key() for d in ("alarm-agent-1", "alarm-monitor-1", "reboot-device-1")}
SERVICE = f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={OWNER_KEY}"
EMU = GW = None
GW_PORT = None
LOGS = []


def start(args, name):
    log = open(os.path.join(tempfile.gettempdir(), f"scenario-{name}-{os.getpid()}.log"), "w+")
    LOGS.append(log)
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True), log


def setUpModule():
    global EMU, GW, GW_PORT
    # as IoT Hub, the emulator sends stream readers to its Event Hub-compatible endpoint
    EMU = Emulator(os.path.join(BUILD, "emulator/iothub-emulator"), CERTS, registry=fleet_registry(KEYS),
                   extra=["--stream-redirect"])
    d = tempfile.mkdtemp(prefix="iotgw-scenarios-")
    config = os.path.join(d, "iotgw.yaml")
    with open(config, "w") as f:
        f.write(f"""hub:
  hostName: {HOST}
  port: {EMU.wss}
  caFile: {EMU.ca}
ops:
  listen: 127.0.0.1:0
devices:
  listen: 127.0.0.1:0
telemetry:
  encoding: json
methods:
  ProcessMessage:
    request: iotgw.Parcel
fleet:
  devices:
""" + "".join(f"    - {{id: {dev}, key: {k}}}\n" for dev, k in KEYS.items()))
    GW, _ = start(WRAPPER + [os.path.join(BUILD, "gateway/iotgw"), "--config", config], "iotgw")
    GW_PORT = listening_ports(GW)[0]


def tearDownModule():
    GW.terminate()
    assert GW.wait(60) == 0
    GW.stdout.close()
    EMU.stop()
    EMU.log.close()
    for log in LOGS:
        log.close()


def device(program, dev, *args):
    return start(WRAPPER + [os.path.join(BUILD, "devices", program), "--gateway", f"127.0.0.1:{GW_PORT}",
                            "--device", dev, "--hub", HOST, "--key", KEYS[dev], *map(str, args)], dev)


def service_app(script, *args):
    return [sys.executable if os.path.basename(sys.executable) == "python3" else "/usr/bin/python3",
            os.path.join(SRC, "devices/examples", script), "--connection-string", SERVICE, "--ca", EMU.ca,
            "--rest-port", str(EMU.wss), *map(str, args)]


class Scenarios(unittest.TestCase):
    def test_alarm_statuses_reach_the_monitor_in_order(self):
        monitor, mlog = device("alarm-monitor", "alarm-monitor-1", "--count", 6)
        self.assertIn("ready for ProcessMessage", readline_within(monitor, 30))
        EMU.wait_online("alarm-monitor-1", 30)
        # what the monitor does with a parcel that is not an alarm status, and with another method
        other = {"type": "iotgw.Parcel", "content": "", "source": {"name": "test"}}
        status, _, body = EMU.rest("POST", "/twins/alarm-monitor-1/methods",
                                   {"methodName": "ProcessMessage", "payload": other, "responseTimeoutInSeconds": 10})
        self.assertEqual(body["status"], 400, body)
        status, _, body = EMU.rest("POST", "/twins/alarm-monitor-1/methods",
                                   {"methodName": "Shutdown", "payload": {}, "responseTimeoutInSeconds": 10})
        self.assertEqual(body["status"], 404, body)

        backend, blog = start(service_app("alarm_backend.py", "--amqps-port", EMU.amqps, "--count", 6, "--timeout", 90),
                           "backend")
        self.assertIn("reading the telemetry stream", readline_within(backend, 30))  # every partition attached
        agent, alog = device("alarm-agent", "alarm-agent-1", "--count", 6, "--interval-ms", 300)
        agent_out = output_of(agent, 120)
        self.assertEqual(agent.returncode, 0, agent_out)
        self.assertIn("6 of 6 alarm statuses acknowledged", agent_out)
        backend_out = output_of(backend, 120)
        self.assertEqual(backend.returncode, 0, backend_out)
        self.assertEqual(backend_out.count("ProcessMessage: 200"), 6, backend_out)
        blog.flush()
        blog.seek(0)  # it followed the hub's redirect, as it must with IoT Hub
        self.assertIn("redirected the stream to localhost", blog.read())
        monitor_out = output_of(monitor, 60)
        self.assertEqual(monitor.returncode, 0, monitor_out)
        sent = re.findall(r"alarm_active=(true|false), time_utc=(\S+), date_utc=(\S+)\}", agent_out)
        received = re.findall(r"alarm (RAISED|cleared) at (\S+) (\S+) \(from alarm-agent-1\): 200", monitor_out)
        self.assertEqual(len(sent), 6)
        self.assertEqual([("true" if r == "RAISED" else "false", t, d) for r, d, t in received], sent)
        print("\n" + monitor_out, file=sys.stderr)

    def test_reboot_reported_in_the_twin(self):
        dev, log = device("reboot-device", "reboot-device-1", "--count", 1, "--delay-ms", 1000)
        self.assertIn("waiting for rebootDevice", readline_within(dev, 30))
        svc = subprocess.run(service_app("reboot_service.py", "--device", "reboot-device-1", "--timeout", 60),
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(svc.returncode, 0, svc.stdout + svc.stderr)
        self.assertIn("rebootDevice answered 200", svc.stdout)
        m = re.search(r"reports rebootTime (\S+)", svc.stdout)
        self.assertTrue(m, svc.stdout)
        out = output_of(dev, 60)
        self.assertEqual(dev.returncode, 0, out)
        self.assertIn(f"reported rebootTime {m.group(1)}", out)
        twin = EMU.rest("GET", "/twins/reboot-device-1")[2]
        self.assertEqual(twin["properties"]["reported"]["rebootTime"], m.group(1))


if __name__ == "__main__":
    run_tests()
