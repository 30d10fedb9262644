"""rhea (npm) as an AMQP-over-WebSocket client against our server role, and against
iothub-emulator's CBS (dispositions before replies).

The npm packages are installed by rhea_interop.sh; when the npm registry cannot be
reached the test is skipped (exit 77) with a message saying so.
  rhea_interop.py TRANSPORT_PEER CERTDIR NODE_MODULES_PARENT IOTHUB_EMULATOR
"""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from iotgw_testlib import OurServer, run_tests  # noqa: E402
from emulator_lib import Emulator, HOST, device_token  # noqa: E402

PEER, CERTS, NODE_DIR, EMULATOR = sys.argv[1:5]
del sys.argv[1:5]
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rhea_wss_client.js")
CBS_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rhea_cbs_order.js")


class RheaInterop(unittest.TestCase):
    def test_rhea_over_websocket(self):
        server = OurServer(PEER, CERTS, messages=1000)
        try:
            r = subprocess.run(["node", SCRIPT, str(server.wss), os.path.join(CERTS, "ca.pem"), "1000"],
                               capture_output=True, text=True, timeout=90,
                               env=dict(os.environ, NODE_PATH=os.path.join(NODE_DIR, "node_modules")))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            result = json.loads(r.stdout.strip().splitlines()[-1])
            self.assertEqual(result, {"sent": 1000, "accepted": 1000, "received": 1000, "bad": 0, "error": None})
            closed = server.next_closed()
            self.assertEqual((closed["received"], closed["bad"], closed["disorder"]), ("1000", "0", "0"))
        finally:
            server.stop()

    def test_cbs_dispositions_reach_the_client_before_replies_over_websocket(self):
        emu = Emulator(EMULATOR, CERTS)
        try:
            r = subprocess.run(["node", CBS_SCRIPT, str(emu.wss), emu.ca, device_token("dev1"),
                                f"{HOST}/devices/dev1", "1000"], capture_output=True, text=True, timeout=90,
                               env=dict(os.environ, NODE_PATH=os.path.join(NODE_DIR, "node_modules")))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            result = json.loads(r.stdout.strip().splitlines()[-1])
            self.assertEqual(result, {"sent": 1000, "settled": 1000, "replies": 1000, "ok": 1000, "early": 0,
                                      "error": None})
        finally:
            emu.stop()
            emu.log.close()


if __name__ == "__main__":
    run_tests()
