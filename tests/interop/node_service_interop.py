"""The official Azure IoT Node service SDK (azure-iothub) against iothub-emulator,
unchanged, with a device of the official device SDK: registry create/get/delete,
direct methods (answered 200, offline 404 DeviceNotOnline, silent 504 GatewayTimeout),
twin update received by the device, and C2D received by the device.

usage: node_service_interop.py IOTHUB_EMULATOR CERT_DIR NODE_DIR   (inside a network
namespace where 127.0.0.1:443 and :5671 are free)"""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from iotgw_testlib import run_tests  # noqa: E402
from emulator_lib import Emulator, HOST, OWNER_KEY  # noqa: E402

BINARY, CERTS, NODE_DIR = sys.argv[1:4]
del sys.argv[1:4]
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_service.js")


class NodeService(unittest.TestCase):
    def test_registry_methods_twin_c2d(self):
        emu = Emulator(BINARY, CERTS, listen="127.0.0.1:443", amqps="127.0.0.1:5671")
        try:
            env = dict(os.environ, NODE_PATH=os.path.join(os.path.abspath(NODE_DIR), "node_modules"),
                       NODE_EXTRA_CA_CERTS=emu.ca)
            cs = f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={OWNER_KEY}"
            p = subprocess.run(["node", SCRIPT, cs, emu.ca], capture_output=True, text=True, env=env, timeout=120)
            out = p.stdout
            detail = out + p.stderr[-2000:] + emu.log_text()[-3000:]
            self.assertEqual(p.returncode, 0, detail)
            self.assertNotIn("ERROR", out, detail)
            lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
            self.assertEqual(lines["CREATED"], "svc-dev-1 enabled")
            self.assertEqual(lines["GOT"], "svc-dev-1 true")
            self.assertEqual(lines["METHOD"], '200 {"rebooting":true}')
            self.assertIn("404103", lines["OFFLINE"])
            self.assertIn("504101", lines["TIMEOUT"])
            self.assertIn('"interval":30', lines["DESIRED"])
            self.assertEqual(lines["C2D"], "open the door")
            self.assertEqual(lines["DELETED"], "gone")
            self.assertIn("DONE", out)
        finally:
            emu.stop()
            emu.log.close()


if __name__ == "__main__":
    run_tests()
