"""docker/compose.yaml's emulator service, its command run as written (no Docker engine
here): the container paths are mapped to a temporary folder and the binaries to the
build's. The registry it is given is a copy in a folder of its own (the file a REST
change rewrites is replaced by a rename, which fails over a file bind mount with 'Device
or resource busy'), so a device created over REST is saved; and the seed is kept as it
was.

usage: compose_commands.py IOTHUB_EMULATOR CERT_DIR SRCDIR"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

from emulator_lib import HOST, random_key, sas_token
from iotgw_testlib import readline_within, run_tests

EMULATOR, CERTS, SRCDIR = sys.argv[1:4]
del sys.argv[1:4]


class ComposeCommands(unittest.TestCase):
    def test_emulator_service_saves_registry_changes(self):
        compose = yaml.safe_load(open(os.path.join(SRCDIR, "docker", "compose.yaml")))
        svc = compose["services"]["emulator"]
        root = tempfile.mkdtemp(prefix="iotgw-compose-")
        mounts = {}
        for v in svc["volumes"]:
            src, dst = v.split(":")[:2]
            if src.startswith("./"):  # a file of the repository, read-only
                src = os.path.join(SRCDIR, "docker", src[2:])
            elif src == "certs":
                src = os.path.abspath(CERTS)
            else:  # a named volume: an empty folder
                src = os.path.join(root, src)
                os.makedirs(src)
            mounts[dst] = src
        self.assertIn("emulator-state", [v.split(":")[0] for v in svc["volumes"]],
                      "the registry must live in a volume (a folder), not a file bind mount")
        command = svc["command"]
        self.assertEqual(command[:2], ["sh", "-c"])
        script = command[2]
        seed = mounts["/seed/registry.yaml"]
        before = open(seed).read()
        # container paths to ours, longest first; the installed binary to the build's
        for dst in sorted(mounts, key=len, reverse=True):
            script = script.replace(dst, mounts[dst])
        script = script.replace("exec iothub-emulator", f"exec {EMULATOR}")
        script = re.sub(r"0\.0\.0\.0:\d+", "127.0.0.1:0", script).replace("--hostname emulator", f"--hostname {HOST}")
        p = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wss = None
            while wss is None:
                m = re.match(r"listening: https\+wss \S+:(\d+)", readline_within(p, 30))
                if m:
                    wss = int(m.group(1))
            import http.client
            import json
            import ssl
            ctx = ssl.create_default_context(cafile=os.path.join(os.path.abspath(CERTS), "ca.pem"))
            c = http.client.HTTPSConnection("localhost", wss, context=ctx, timeout=30)
            # the service side signs with the demo's own policy (docker/demo/demo.env)
            env = dict(line.strip().split("=", 1) for line in open(os.path.join(SRCDIR, "docker", "demo", "demo.env"))
                       if "=" in line and not line.startswith("#"))
            cs = dict(kv.split("=", 1) for kv in env["SERVICE_CONNECTION_STRING"].strip('"').split(";"))
            token = sas_token(HOST, cs["SharedAccessKey"], policy=cs["SharedAccessKeyName"])
            key = random_key()
            c.request("PUT", "/devices/compose-1?api-version=2021-04-12",
                      body=json.dumps({"deviceId": "compose-1", "authentication": {
                          "type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}}}),
                      headers={"Authorization": token, "Content-Type": "application/json"})
            r = c.getresponse()
            self.assertEqual(r.status, 200, r.read())
            saved = open(os.path.join(mounts["/var/lib/iotgw/emulator"], "registry.yaml")).read()
            self.assertIn("compose-1", saved)
            self.assertEqual(open(seed).read(), before, "the repository's seed must stay as it was")
        finally:
            p.terminate()
            p.wait(timeout=30)
            p.stdout.close()
            p.stderr.close()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    run_tests()
