"""The official Azure IoT Node device SDK (azure-iot-device + azure-iot-device-amqp)
against iothub-emulator, unchanged, over Amqp and AmqpWs: it connects with a device
connection string, sends telemetry, gets the twin, patches reported properties, answers
a direct method, receives a desired update, and receives and completes a C2D message;
and its ModuleClient does the same as module mod1 of dev3 (without C2D, which modules
do not have), with the module's messages marked as its own in the telemetry stream.
The service side is driven here through the emulator's REST API and AMQP.

usage: node_device_interop.py IOTHUB_EMULATOR CERT_DIR NODE_DIR   (inside a network
namespace where 127.0.0.1:443 and :5671 are free)"""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from iotgw_testlib import readline_within, run_tests  # noqa: E402
from emulator_lib import (Emulator, Cbs, HOST, DEVICE_KEYS, MODULE_KEY, StreamReader, connect,  # noqa: E402
                          owner_token)

BINARY, CERTS, NODE_DIR = sys.argv[1:4]
del sys.argv[1:4]
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_device.js")
EMU = None


def setUpModule():
    global EMU
    EMU = Emulator(BINARY, CERTS, listen="127.0.0.1:443", amqps="127.0.0.1:5671")


def tearDownModule():
    EMU.stop()
    EMU.log.close()


class NodeDevice(unittest.TestCase):
    def start(self, transport, device, module=None):
        env = dict(os.environ, NODE_PATH=os.path.join(os.path.abspath(NODE_DIR), "node_modules"))
        cs = (f"HostName={HOST};DeviceId={device};ModuleId={module};SharedAccessKey={MODULE_KEY}" if module
              else f"HostName={HOST};DeviceId={device};SharedAccessKey={DEVICE_KEYS[device]}")
        self.proc = subprocess.Popen(["node", SCRIPT, cs, transport, EMU.ca], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.seen = []

    def expect(self, prefix, timeout=30):
        while True:
            line = readline_within(self.proc, timeout)
            self.seen.append(line)
            self.assertFalse(line.startswith("ERROR"), "\n".join(self.seen) + "\n" + EMU.log_text()[-2000:])
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def scenario(self, transport, device, module=None):
        twin_path = f"/twins/{device}" + (f"/modules/{module}" if module else "")
        reader = StreamReader(EMU) if module else None
        self.start(transport, device, module)
        try:
            self.expect("OPEN")
            self.expect("TELEMETRY accepted")
            twin = json.loads(self.expect("TWIN"))
            self.assertIn("$version", twin["desired"])
            self.expect("REPORTED updated")
            self.expect("READY")

            status, _, t = EMU.rest("GET", twin_path)
            self.assertEqual(status, 200)
            self.assertEqual(t["properties"]["reported"]["firmware"], "1.2.3")
            self.assertEqual(t["connectionState"], "Connected")

            status, _, body = EMU.rest("POST", twin_path + "/methods",
                                       {"methodName": "rebootDevice", "payload": {"delay": 3},
                                        "responseTimeoutInSeconds": 30})
            self.assertEqual((status, body), (200, {"status": 200, "payload": {"rebooting": True, "delay": 3}}))
            self.assertEqual(json.loads(self.expect("METHOD rebootDevice")), {"delay": 3})

            status, _, _ = EMU.rest("PATCH", twin_path, {"properties": {"desired": {"interval": 42}}})
            self.assertEqual(status, 200)
            while True:
                delta = json.loads(self.expect("DESIRED"))
                if "interval" in delta:
                    break
            self.assertEqual(delta["interval"], 42)
            if module:
                self.module_telemetry_in_stream(reader, device, module)
            else:
                self.c2d(device)
            self.proc.stdin.close()
            self.expect("CLOSED")
            self.assertEqual(self.proc.wait(timeout=30), 0)
        finally:
            if reader:
                reader.stop()
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()

    def module_telemetry_in_stream(self, reader, device, module):
        deadline = time.time() + 10
        while time.time() < deadline and not any(e[2].get("iothub-connection-module-id") == module
                                                  for e in reader.events):
            time.sleep(0.05)
        mine = [e for e in reader.events if e[2].get("iothub-connection-module-id") == module]
        self.assertTrue(mine, "the module's telemetry is not in the stream")
        self.assertEqual(mine[0][0], device)

    def c2d(self, device):
        from proton import Message
        svc = connect(EMU)
        self.assertEqual(Cbs(svc).put(owner_token(), audience=HOST)[0], 200)
        svc.create_sender("/messages/devicebound").send(
            Message(address=f"/devices/{device}/messages/devicebound", id="c2d-1", body=b"hello-device",
                    properties={"k": "v"}))
        svc.close()
        line = self.expect("C2D hello-device")
        self.assertIn('"k"', line)
        self.expect("C2D completed")

    def test_amqps(self):
        self.scenario("Amqp", "dev1")

    def test_amqp_over_websocket(self):
        self.scenario("AmqpWs", "dev2")

    def test_module_client_amqps(self):
        self.scenario("Amqp", "dev3", module="mod1")


run_tests()
