"""iothub-service, the service CLI, against iothub-emulator: devices created (with their
connection string), listed, shown, deleted; a method invoked on a device attached with
python3-qpid-proton; twin shown and patched; a C2D message received by the device;
`monitor` printing the device's telemetry as JSON lines.

usage: service_cli.py IOTHUB_EMULATOR IOTHUB_SERVICE CERT_DIR"""
import json
import os
import subprocess
import sys
import threading
import time
import unittest

from proton import Message

from iotgw_testlib import free_port, run_tests
from emulator_lib import Emulator, Cbs, HOST, OWNER_KEY, connect, sas_token

BINARY, CLI, CERTS = sys.argv[1:4]
del sys.argv[1:4]
EMU = None


def setUpModule():
    global EMU
    EMU = Emulator(BINARY, CERTS)


def tearDownModule():
    EMU.stop()
    EMU.log.close()


def cli(*args, timeout=60):
    cs = f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={OWNER_KEY}"
    return subprocess.run(["/usr/bin/python3", CLI, "--connection-string", cs, "--ca", EMU.ca, "--rest-port",
                           str(EMU.wss), "--amqps-port", str(EMU.amqps), *args],
                          capture_output=True, text=True, timeout=timeout)


class ServiceCli(unittest.TestCase):
    def test_devices_methods_twin_c2d_monitor(self):
        p = cli("device", "create", "cli-1")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        cs_line = p.stdout.strip().splitlines()[-1]
        self.assertTrue(cs_line.startswith(f"HostName={HOST};DeviceId=cli-1;SharedAccessKey="), cs_line)
        key = cs_line.split("SharedAccessKey=", 1)[1]
        self.assertIn("cli-1", [d["deviceId"] for d in json.loads(cli("device", "list").stdout)])
        self.assertEqual(cli("device", "create", "cli-1").returncode, 1)  # exists: the hub says no
        # the device, attached with python3-qpid-proton
        conn = connect(EMU)
        self.assertEqual(Cbs(conn).put(sas_token(f"{HOST}/devices/cli-1", key))[0], 200)
        methods_in = conn.create_receiver("/devices/cli-1/methods/devicebound", credit=5)
        methods_out = conn.create_sender("/devices/cli-1/methods/devicebound")
        c2d = conn.create_receiver("/devices/cli-1/messages/devicebound", credit=5)
        telemetry = conn.create_sender("/devices/cli-1/messages/events")
        result = {}
        t = threading.Thread(target=lambda: result.update(p=cli("invoke", "cli-1", "rebootDevice", '{"delay":1}')))
        t.start()
        req = methods_in.receive(timeout=20)
        methods_in.accept()
        self.assertEqual(req.properties["IoThub-methodname"], "rebootDevice")
        methods_out.send(Message(correlation_id=req.correlation_id, properties={"IoThub-status": 200},
                                 body=b'{"rebooting":true}'))
        t.join(30)
        self.assertEqual(result["p"].returncode, 0, result["p"].stdout + result["p"].stderr)
        self.assertEqual(json.loads(result["p"].stdout), {"status": 200, "payload": {"rebooting": True}})
        # twin
        p = cli("twin", "patch", "cli-1", '{"interval":15}')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(cli("twin", "show", "cli-1").stdout)["properties"]["desired"]["interval"], 15)
        # C2D
        p = cli("c2d", "cli-1", "open the door", "--property", "priority=high")
        self.assertEqual(p.returncode, 0, p.stderr)
        m = c2d.receive(timeout=20)
        c2d.accept()
        self.assertEqual((bytes(m.body), m.properties), (b"open the door", {"priority": "high"}))
        # monitor: from now on, as JSON lines
        mon = subprocess.Popen(["/usr/bin/python3", CLI, "--connection-string",
                                f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={OWNER_KEY}",
                                "--ca", EMU.ca, "--rest-port", str(EMU.wss), "--amqps-port", str(EMU.amqps),
                                "monitor", "--count", "2", "--timeout", "30"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)  # its receivers attach
        telemetry.send(Message(id="t1", body=b'{"temperature":21.5}', properties={"site": "north"}))
        telemetry.send(Message(id="t2", body=b"\x00\x01binary"))
        lines = [json.loads(line) for line in mon.communicate(timeout=40)[0].splitlines()]
        self.assertEqual(len(lines), 2, lines)
        first = next(x for x in lines if x["messageId"] == "t1")
        self.assertEqual((first["device"], first["body"], first["properties"]),
                         ("cli-1", {"temperature": 21.5}, {"site": "north"}))
        self.assertIn("base64", next(x for x in lines if x["messageId"] == "t2")["body"])
        conn.close()
        self.assertEqual(cli("device", "delete", "cli-1").returncode, 0)
        self.assertEqual(cli("device", "show", "cli-1").returncode, 1)

    def test_errors_say_where_and_monitor_counts(self):
        # nothing listens on the port: the error names the host and port
        p = subprocess.run(["/usr/bin/python3", CLI, "--connection-string",
                            f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={OWNER_KEY}",
                            "--ca", EMU.ca, "--rest-port", str(free_port()), "device", "list"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, rf"iothub-service: {HOST}:\d+: Connection refused")
        # fewer messages than --count within --timeout: exit 1, saying so
        p = cli("monitor", "--count", "1", "--timeout", "2")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("monitor: 0 of 1 messages within 2 s", p.stderr)


if __name__ == "__main__":
    run_tests()
