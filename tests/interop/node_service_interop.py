"""The official Azure IoT Node service SDK (azure-iothub) against iothub-emulator,
unchanged, with a device of the official device SDK: registry create/get/delete,
direct methods (answered 200, offline 404 DeviceNotOnline, silent 504 GatewayTimeout),
twin update received by the device, and C2D received by the device. And the registry
beyond one device: bulk add/update/remove, twin tags, createQuery (all devices, a tags
filter, pages of two until hasMoreResults is false, COUNT and GROUP BY, module twins),
getRegistryStatistics, modules (add, list, get, their twins, a ModuleClient connecting
with the module's own key, remove). And jobs with JobClient: a twin update and a direct
method over a query, getJob until completed, cancelJob, createQuery, refusals.

Also the reboot scenario's service flow with iothub-service (the CLI) against a device of
the official SDK: invoke rebootDevice, poll the twin until rebootTime shows; with the
device over AMQP, and over MQTT as the Python tutorial's device runs it.

usage: node_service_interop.py IOTHUB_EMULATOR CERT_DIR NODE_DIR IOTHUB_SERVICE   (inside a
network namespace where 127.0.0.1:443, :5671 and :8883 are free)"""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from iotgw_testlib import readline_within, run_tests  # noqa: E402
from emulator_lib import Emulator, HOST, OWNER_KEY  # noqa: E402

BINARY, CERTS, NODE_DIR, CLI = sys.argv[1:5]
del sys.argv[1:5]
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_service.js")


def hub():
    """The emulator on the ports the SDKs use."""
    return Emulator(BINARY, CERTS, listen="127.0.0.1:443", amqps="127.0.0.1:5671", mqtts="127.0.0.1:8883")


class NodeService(unittest.TestCase):
    def node_service(self, emu, *mode):
        """node_service.js (in mode) against emu: its output's lines by first word, and its output."""
        env = dict(os.environ, NODE_PATH=os.path.join(os.path.abspath(NODE_DIR), "node_modules"),
                   NODE_EXTRA_CA_CERTS=emu.ca)
        cs = f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={OWNER_KEY}"
        p = subprocess.run(["node", SCRIPT, cs, emu.ca, *mode], capture_output=True, text=True, env=env, timeout=120)
        out = p.stdout
        detail = out + p.stderr[-2000:] + emu.log_text()[-3000:]
        self.assertEqual(p.returncode, 0, detail)
        self.assertNotIn("ERROR", out, detail)
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line), out

    def test_registry_methods_twin_c2d(self):
        emu = hub()
        try:
            lines, out = self.node_service(emu)
            self.assertEqual(lines["CREATED"], "svc-dev-1 enabled")
            self.assertEqual(lines["GOT"], "svc-dev-1 true")
            self.assertEqual(lines["METHOD"], '200 {"rebooting":true}')
            self.assertIn("404103", lines["OFFLINE"])
            self.assertIn("504101", lines["TIMEOUT"])
            self.assertIn('"interval":30', lines["DESIRED"])
            self.assertEqual(lines["C2D"], "open the door")
            self.assertEqual(lines["FEEDBACK"], "door-1:Success")
            self.assertEqual(lines["DELETED"], "gone")
            self.assertIn("DONE", out)
        finally:
            emu.stop()
            emu.log.close()


    def test_registry_query_bulk_statistics_modules(self):
        emu = hub()
        try:
            lines, out = self.node_service(emu, "registry")
            self.assertEqual(lines["ADDED"], "true 0")
            self.assertEqual(lines["READDED"], "false q-1:DeviceAlreadyExists")
            self.assertEqual(json.loads(lines["TAGGED"]), {"site": "north", "floor": 1})
            self.assertEqual(lines["ALL"], "9 true")  # the registry file's 4 and the 5 added
            self.assertEqual(lines["NORTH"], "q-1,q-2,q-3")
            self.assertEqual(lines["FILTERED"], "q-1,q-5")
            self.assertEqual(lines["PAGED"], "3 q-1,q-2,q-3,q-4,q-5")
            self.assertEqual(json.loads(lines["COUNT"]), [{"n": 9}])
            self.assertEqual(json.loads(lines["GROUPS"]), [{"site": "north", "n": 3}, {"site": "south", "n": 2}])
            self.assertIn("400004", lines["BADQUERY"])
            self.assertEqual(lines["STATS"], "9 8 1")
            self.assertEqual(lines["UPDATED"], "true")
            self.assertEqual(lines["STATS2"], "9 6 3")
            self.assertEqual(lines["STALE"], "false PreconditionFailed")
            self.assertEqual(lines["MODULE"], "q-1/m1 true")
            self.assertEqual(lines["MODULES"], "m1,m2")
            self.assertEqual(lines["GOTMODULE"], "m1 true")
            self.assertEqual(lines["MODQUERY"], "q-1/m1")
            self.assertEqual(lines["MODULECLIENT"], "sent")
            self.assertIn("404010", lines["MODULEGONE"])
            self.assertEqual(lines["REMOVED"], "true")
            self.assertEqual(lines["GONE"], "gone")
            self.assertEqual(lines["STATS3"], "4")
            self.assertIn("DONE", out)
        finally:
            emu.stop()
            emu.log.close()

    def test_jobs(self):
        """JobClient: scheduleTwinUpdate over 2 of 3 devices, scheduleDeviceMethod over a
        connected device and an offline one, getJob, cancelJob, createQuery, refusals."""
        emu = hub()
        try:
            lines, out = self.node_service(emu, "jobs")
            # the statistics as deviceCount succeeded failed running pending
            expected = {"TWINJOB_SCHEDULED": "twin-job-1 scheduleUpdateTwin queued", "TWINJOB": "completed 2 2 0 0 0",
                        "TWINJOB_TIMES": "true", "TWINS_CHANGED": "job-1,job-2", "DEVICE_GOT": '{"delay":5}',
                        "METHODJOB": "completed 2 1 1 0 0 reboot", "LATER": "scheduled",
                        "CANCELLED": "cancelled cancelled 0 0 0 0 0", "JOB3_DESIRED": "true",
                        "QUERY_TWIN": "twin-job-1,later-job", "QUERY_CANCELLED": "later-job"}
            self.assertEqual({k: lines.get(k) for k in expected}, expected, out)
            self.assertTrue(lines["BADID"].startswith("400 "), lines["BADID"])
            self.assertIn("400004", lines["BADID"])
            self.assertIn("the job id is 129 characters long, maximum is 128", lines["BADID"])
            self.assertTrue(lines["BADQUERY"].startswith("400 "), lines["BADQUERY"])
            self.assertIn("queryCondition is not valid", lines["BADQUERY"])
            self.assertTrue(lines["TAKEN"].startswith("409 "), lines["TAKEN"])
            self.assertIn("a job with id twin-job-1 exists already", lines["TAKEN"])
            self.assertTrue(lines["NOJOB"].startswith("404 "), lines["NOJOB"])
            self.assertIn("404002", lines["NOJOB"])
            self.assertIn("job method-job-1: job-3: method reboot failed: DeviceNotOnline", emu.log_text())
            self.assertIn("DONE", out)
        finally:
            emu.stop()
            emu.log.close()

    def test_reboot_flow_with_the_cli(self):
        self.reboot_flow("sdk-reboot-1")

    def test_reboot_flow_with_the_cli_and_an_mqtt_device(self):
        self.reboot_flow("sdk-reboot-mqtt", "Mqtt")

    def reboot_flow(self, device, transport=None):
        """The device of node_reboot_device.js (over transport, its default AMQP if None)."""
        emu = hub()
        cs = f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={OWNER_KEY}"

        def cli(*args):
            return subprocess.run(["/usr/bin/python3", CLI, "--connection-string", cs, "--ca", emu.ca, *args],
                                  capture_output=True, text=True, timeout=60)
        try:
            p = cli("device", "create", device)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            device_cs = p.stdout.strip().splitlines()[-1]
            env = dict(os.environ, NODE_PATH=os.path.join(os.path.abspath(NODE_DIR), "node_modules"))
            dev = subprocess.Popen(["node", os.path.join(os.path.dirname(SCRIPT), "node_reboot_device.js"), device_cs,
                                    emu.ca] + ([transport] if transport else []), stdout=subprocess.PIPE, text=True,
                                   env=env)
            self.assertEqual(readline_within(dev, 30), "READY")
            p = cli("invoke", device, "rebootDevice")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertEqual(json.loads(p.stdout)["status"], 200)
            if transport and transport.startswith("Mqtt"):  # the device is the MQTT endpoint's
                self.assertIn(f"MQTT {device}: connected", emu.log_text())
            deadline, reported = time.time() + 20, None
            while time.time() < deadline and not reported:
                twin = json.loads(cli("twin", "show", device).stdout)
                reported = twin["properties"]["reported"].get("rebootTime")
                time.sleep(0.5)
            self.assertTrue(reported, "no rebootTime in the twin")
            self.assertEqual(readline_within(dev, 10), "REBOOTING " + reported)
            self.assertEqual(dev.wait(30), 0)
            dev.stdout.close()
        finally:
            emu.stop()
            emu.log.close()


if __name__ == "__main__":
    run_tests()
