"""The official Azure IoT Node device SDK (azure-iot-device + azure-iot-device-amqp)
against iothub-emulator, unchanged, over Amqp and AmqpWs: it connects with a device
connection string, sends telemetry, gets the twin, patches reported properties, answers
a direct method, receives a desired update, and receives and completes a C2D message.
The service side is driven here through the emulator's REST API and AMQP.

usage: node_device_interop.py IOTHUB_EMULATOR CERT_DIR NODE_DIR   (inside a network
namespace where 127.0.0.1:443 and :5671 are free)"""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from iotgw_testlib import readline_within, run_tests  # noqa: E402
from emulator_lib import Emulator, Cbs, HOST, DEVICE_KEYS, connect, owner_token  # noqa: E402

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
    def start(self, transport, device):
        env = dict(os.environ, NODE_PATH=os.path.join(os.path.abspath(NODE_DIR), "node_modules"))
        cs = f"HostName={HOST};DeviceId={device};SharedAccessKey={DEVICE_KEYS[device]}"
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

    def scenario(self, transport, device):
        self.start(transport, device)
        try:
            self.expect("OPEN")
            self.expect("TELEMETRY accepted")
            twin = json.loads(self.expect("TWIN"))
            self.assertIn("$version", twin["desired"])
            self.expect("REPORTED updated")
            self.expect("READY")

            status, _, t = EMU.rest("GET", f"/twins/{device}")
            self.assertEqual(status, 200)
            self.assertEqual(t["properties"]["reported"]["firmware"], "1.2.3")
            self.assertEqual(t["connectionState"], "Connected")

            status, _, body = EMU.rest("POST", f"/twins/{device}/methods",
                                       {"methodName": "rebootDevice", "payload": {"delay": 3},
                                        "responseTimeoutInSeconds": 30})
            self.assertEqual((status, body), (200, {"status": 200, "payload": {"rebooting": True, "delay": 3}}))
            self.assertEqual(json.loads(self.expect("METHOD rebootDevice")), {"delay": 3})

            status, _, _ = EMU.rest("PATCH", f"/twins/{device}", {"properties": {"desired": {"interval": 42}}})
            self.assertEqual(status, 200)
            while True:
                delta = json.loads(self.expect("DESIRED"))
                if "interval" in delta:
                    break
            self.assertEqual(delta["interval"], 42)

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

            self.proc.stdin.close()
            self.expect("CLOSED")
            self.assertEqual(self.proc.wait(timeout=30), 0)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()

    def test_amqps(self):
        self.scenario("Amqp", "dev1")

    def test_amqp_over_websocket(self):
        self.scenario("AmqpWs", "dev2")


run_tests()
