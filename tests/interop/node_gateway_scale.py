"""SDK devices and protobuf devices on one gateway at once: 200 devices written with the
official Azure IoT Node device SDK (one Node process, each its own Client with
GatewayHostName, half over Mqtt and half over Amqp, in turn) and 1,000 protobuf devices (iotgw-devsim) send telemetry
through one iotgw to iothub-emulator for about ten seconds. Meanwhile the hub disables one
of the SDK devices: that device alone loses its connection; every message of the other
1,199 devices is acknowledged.

usage: node_gateway_scale.py IOTHUB_EMULATOR IOTGW DEVSIM CERT_DIR NODE_DIR   (inside a
network namespace of its own: the SDK uses ports 8883 and 5671; the gateway is on 127.0.0.2)"""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from iotgw_testlib import WRAPPER, LoggedProcess, readline_within, run_tests  # noqa: E402
from emulator_lib import Emulator, HOST, fleet_registry, random_key  # noqa: E402

BINARY, IOTGW, DEVSIM, CERTS, NODE_DIR = sys.argv[1:6]
del sys.argv[1:6]
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_many_devices.js")
SDK = [f"sdk-{i:03d}" for i in range(int(os.environ.get("SCALE_SDK_DEVICES", "200")))]
PB = [f"pb-{i:04d}" for i in range(int(os.environ.get("SCALE_PB_DEVICES", "1000")))]
KEYS = {d: random_key() for d in SDK + PB}
VICTIM = SDK[7]  # an AMQP one: the devices take Mqtt and Amqp in turn
GATEWAY_HOST = "127.0.0.2"


class Gateway(LoggedProcess):
    name = "iotgw"

    def __init__(self, emu, d):
        fleet = os.path.join(d, "fleet.txt")
        with open(fleet, "w") as f:
            f.writelines(f"{dev} {k}\n" for dev, k in KEYS.items())
        config = os.path.join(d, "iotgw.yaml")
        with open(config, "w") as f:
            f.write(f"""ops:
  listen: off
hub:
  hostName: {HOST}
  connectHost: 127.0.0.1
  caFile: {emu.ca}
  authRate: 100000
devices:
  listen: {GATEWAY_HOST}:7000
  maxInFlight: 64
  tls:
    cert: {os.path.join(CERTS, "gateway.pem")}
    key: {os.path.join(CERTS, "gateway.key")}
  mqtt:
    listen: {GATEWAY_HOST}:8883
  amqp:
    listen: {GATEWAY_HOST}:5671
fleet:
  devicesFile: {fleet}
""")
        self.log = open(os.path.join(d, "iotgw.log"), "w+")
        self.proc = subprocess.Popen(WRAPPER + [IOTGW, "--config", config], stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        line = readline_within(self.proc, 30)
        assert line.startswith("listening: devices "), line + self.log_text()


class Mixed(unittest.TestCase):
    def test_sdk_and_protobuf_devices_at_once_one_disabled_at_the_hub(self):
        d = tempfile.mkdtemp(prefix="iotgw-node-scale-")
        emu = Emulator(BINARY, CERTS, listen="127.0.0.1:443", amqps="127.0.0.1:5671", mqtts="off",
                       registry=fleet_registry(KEYS), extra=["--max-tokens", "100000"])
        self.addCleanup(lambda: emu.proc.poll() is None and (emu.proc.kill(), emu.proc.wait()))
        gw = Gateway(emu, d)
        self.addCleanup(lambda: gw.proc.poll() is None and (gw.proc.kill(), gw.proc.wait()))
        sdk_fleet, pb_fleet = os.path.join(d, "sdk.txt"), os.path.join(d, "pb.txt")
        for path, ids in ((sdk_fleet, SDK), (pb_fleet, PB)):
            with open(path, "w") as f:
                f.writelines(f"{dev} {KEYS[dev]}\n" for dev in ids)
        env = dict(os.environ, NODE_PATH=os.path.join(os.path.abspath(NODE_DIR), "node_modules"))
        node_err = tempfile.TemporaryFile("w+")
        node = subprocess.Popen(["node", SCRIPT, sdk_fleet, HOST, GATEWAY_HOST, emu.ca, "10", "5", "Mqtt,Amqp"],
                                stdout=subprocess.PIPE, stderr=node_err, text=True, env=env)
        try:
            self.assertEqual(readline_within(node, 120), f"OPEN {len(SDK)}")
            pb = subprocess.Popen([DEVSIM, "--gateway", f"{GATEWAY_HOST}:7000", "--tls", "--ca", emu.ca,
                                   "--hub", HOST, "--fleet", pb_fleet, "--rate", "10", "--duration", "10",
                                   "--connect-rate", "2000", "--quiet"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(3)
            status, _, ident = emu.rest("GET", f"/devices/{VICTIM}")
            ident["status"] = "disabled"
            status, _, _ = emu.rest("PUT", f"/devices/{VICTIM}", ident, headers={"If-Match": "*"})
            self.assertEqual(status, 200)
            pb_out, pb_err = pb.communicate(timeout=120)
            node_out = readline_within(node, 120)  # its summary (a thread reads its stdout)
            node.wait(30)
        finally:
            if node.poll() is None:
                node.kill()
            node_err.seek(0)
            detail = "\n--- node stderr:\n" + node_err.read()[-3000:] + "\n--- gateway:\n" + gw.log_text()[-3000:]
        r = json.loads(pb_out.strip().splitlines()[-1])
        self.assertEqual((r["connected"], r["nacked"], r.get("unresolved", 0)), (len(PB), 0, 0), pb_err + detail)
        self.assertGreater(r["acked"], len(PB) * 50)
        self.assertTrue(node_out.strip(), "the Node devices printed no summary" + detail)
        n = json.loads(node_out.strip().splitlines()[-1])
        print(f"figures: protobuf {r['acked']} acknowledged from {r['connected']} devices; SDK {n['acked']} of "
              f"{n['sent']} acknowledged from {n['opened']} devices; not acknowledged: {n['unacked']}")
        self.assertEqual(n["opened"], len(SDK), detail)
        self.assertEqual(set(n["failed"]), {VICTIM}, json.dumps(n["failed"])[:2000] + detail)
        self.assertEqual(n["acked"], n["sent"] - n["unacked"][VICTIM], detail)
        self.assertGreater(n["acked"], len(SDK) * 20)  # of at most 50 each: well above nothing, with room for a loaded machine
        self.assertIn(f"device {VICTIM} refused by the hub", gw.log_text())
        gw.stop()
        gw.log.close()
        emu.stop()
        emu.log.close()


run_tests()
