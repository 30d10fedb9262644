"""File upload as IoT Hub serves it, with Azurite (npm azurite, Microsoft's Storage
emulator) as the blob endpoint: the official Node device SDK's uploadToBlob into Azurite,
the service SDK's file notification receiver, the blob read back, and the attacker's path
(node_file_upload.js). Then, over plain HTTPS: modules refused, the 10 active uploads a
device may have, a storage that refuses the hub's read of the blob, and a hub without
storage answering 400014 DefaultStorageEndpointNotConfigured.

Azurite runs over HTTPS (the test CA's server certificate) on 127.0.0.1:10000, in loose
mode, with an account of the test's own and a workspace in a temporary folder; it is
stopped by its PID.

usage: node_file_upload.py IOTHUB_EMULATOR CERT_DIR NODE_DIR   (inside a network namespace
where 127.0.0.1:443, :5671, :8883 and :10000 are free)"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from iotgw_testlib import readline_within, run_tests  # noqa: E402
from emulator_lib import DEVICE_KEYS, Emulator, HOST, OWNER_KEY, device_token, module_token  # noqa: E402

BINARY, CERTS, NODE_DIR = sys.argv[1:4]
del sys.argv[1:4]
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_file_upload.js")
NODE_MODULES = os.path.join(os.path.abspath(NODE_DIR), "node_modules")
ACCOUNT = "iotupload"
ACCOUNT_KEY = base64.b64encode(bytes(range(64))).decode()
CONTAINER = "device-uploads"
ENDPOINT = f"https://127.0.0.1:10000/{ACCOUNT}"  # path style, as Azurite serves accounts


class Azurite:
    """Azurite's blob service, HTTPS on 127.0.0.1:10000, in a temporary folder of its own."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="azurite-test-")
        self.log = open(os.path.join(self.dir, "azurite.log"), "w+")
        env = dict(os.environ, AZURITE_ACCOUNTS=f"{ACCOUNT}:{ACCOUNT_KEY}")
        self.proc = subprocess.Popen(
            ["node", os.path.join(NODE_MODULES, "azurite", "dist", "src", "blob", "main.js"), "--blobHost",
             "127.0.0.1", "--blobPort", "10000", "--location", self.dir, "--cert", os.path.join(CERTS, "server.pem"),
             "--key", os.path.join(CERTS, "server.key"), "--disableTelemetry", "--silent",
             # the device SDK's @azure/storage-blob 12.8.0 sends x-ms-encryption-algorithm on
             # each block, which Azurite refuses (500 FeatureNotSupported) unless loose
             "--loose"],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, text=True, env=env)
        while "successfully listens" not in (line := readline_within(self.proc, 60)):
            pass
        self.banner = line

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def hub(blob=True, container=CONTAINER):
    """The emulator on the ports the SDKs use, told where Azurite is."""
    extra = ["--blob-endpoint", ENDPOINT, "--blob-account", ACCOUNT, "--blob-key", ACCOUNT_KEY,
             "--blob-container", container, "--blob-ca", os.path.join(CERTS, "ca.pem")] if blob else []
    return Emulator(BINARY, CERTS, listen="127.0.0.1:443", amqps="127.0.0.1:5671", mqtts="127.0.0.1:8883",
                    extra=extra)


def error_of(body):
    """IoT Hub's error body: the errorCode and message inside Message."""
    inner = json.loads(body["Message"])
    return inner["errorCode"], inner["message"]


class NodeFileUpload(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.azurite = Azurite()

    @classmethod
    def tearDownClass(cls):
        cls.azurite.stop()

    def test_upload_with_the_sdks(self):
        emu = hub()
        try:
            env = dict(os.environ, NODE_PATH=NODE_MODULES, NODE_EXTRA_CA_CERTS=emu.ca)
            cs = f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={OWNER_KEY}"
            p = subprocess.run(["node", SCRIPT, cs, ENDPOINT, ACCOUNT, ACCOUNT_KEY, CONTAINER], capture_output=True,
                               text=True, env=env, timeout=180)
            out = p.stdout
            detail = out + p.stderr[-3000:] + emu.log_text()[-4000:]
            self.assertEqual(p.returncode, 0, detail)
            self.assertNotIn("ERROR", out, detail)
            lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
            self.assertEqual(lines["UPLOADED"], "hello.txt")
            self.assertEqual(lines["CONTENTTYPE"], "application/vnd.microsoft.iothub.filenotification.json")
            note = json.loads(lines["NOTIFICATION"])
            self.assertEqual(note["deviceId"], "up-dev")
            self.assertEqual(note["blobName"], "up-dev/hello.txt")
            self.assertEqual(note["blobUri"], f"https://127.0.0.1:10000/{ACCOUNT}/{CONTAINER}/up-dev/hello.txt")
            self.assertEqual(note["blobSizeInBytes"], len("hello from a device, through IoT Hub file upload\n"))
            self.assertRegex(note["lastUpdatedTime"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
            self.assertRegex(note["enqueuedTimeUtc"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
            self.assertEqual(lines["BLOB"], "same bytes")
            self.assertEqual(lines["OTHERTOKEN"], "401 IotHubUnauthorizedAccess Unauthorized")
            self.assertIn("the token is up-bystander's, not device up-dev's", emu.log_text())
            self.assertEqual(lines["BYSTANDER"], f"up-bystander/own.txt {CONTAINER} 127.0.0.1:10000/{ACCOUNT}")
            self.assertTrue(lines["NOTMINE"].startswith("400 InvalidFileUploadCorrelationId "), lines["NOTMINE"])
            self.assertTrue(lines["UNKNOWN"].startswith("400 InvalidFileUploadCorrelationId "), lines["UNKNOWN"])
            self.assertEqual(lines["SECOND"], "up-bystander up-bystander/own.txt 25")
            # the SDK's notifyBlobUploadStatus shows only the status text; the log has the rest
            self.assertEqual(lines["SDKUNKNOWN"], "Bad Request")
            self.assertEqual(lines["AGAIN"], "Bad Request")
            self.assertRegex(emu.log_text(), r"REST POST /devices/up-bystander/files/notifications/\S+: 400 "
                                             r"InvalidFileUploadCorrelationId")
            self.assertEqual(lines["FAILEDNOTIFIED"], "0")
            self.assertIn("DONE", out)
        finally:
            emu.stop()
            emu.log.close()

    def test_modules_limits_and_refused_reads(self):
        emu = hub(container="no-such-container")
        try:
            # a module: no files resource of its own, and its token is not its device's
            status, headers, body = emu.rest("POST", "/devices/dev3/modules/mod1/files", {"blobName": "m.txt"},
                                             token=module_token("dev3", "mod1"))
            self.assertEqual((status, headers.get("iothub-errorcode")), (404, "NotFound"), body)
            status, headers, body = emu.rest("POST", "/devices/dev3/files", {"blobName": "m.txt"},
                                             token=module_token("dev3", "mod1"))
            self.assertEqual((status, headers.get("iothub-errorcode")), (401, "IotHubUnauthorizedAccess"), body)
            # a token that is none; a policy's with DeviceConnect (iothubowner) lets the device in
            status, _, _ = emu.rest("POST", "/devices/dev1/files", {"blobName": "x"}, token="none")
            self.assertEqual(status, 401)
            status, _, body = emu.rest("POST", "/devices/dev1/files", {"blobName": "x"})  # iothubowner: DeviceConnect
            self.assertEqual(status, 200, body)
            # at most 10 uploads a device has begun and not notified
            for i in range(9):
                status, _, body = emu.rest("POST", "/devices/dev1/files", {"blobName": f"f{i}"},
                                           token=device_token("dev1"))
                self.assertEqual(status, 200, body)
            status, headers, body = emu.rest("POST", "/devices/dev1/files", {"blobName": "f10"},
                                             token=device_token("dev1"))
            self.assertEqual((status, headers.get("iothub-errorcode")),
                             (403, "DeviceMaximumActiveFileUploadLimitExceeded"), body)
            self.assertEqual(error_of(body), (403006, "Number of active file upload requests cannot exceed 10"))
            # a body that is not IoT Hub's
            status, headers, body = emu.rest("POST", "/devices/dev2/files", {"name": "x"}, token=device_token("dev2"))
            self.assertEqual((status, headers.get("iothub-errorcode")), (400, "ArgumentInvalid"), body)
            status, _, body = emu.rest("POST", "/devices/dev2/files", {"blobName": "ok.txt"},
                                       token=device_token("dev2"))
            self.assertEqual(status, 200, body)
            self.assertEqual(body["blobName"], "dev2/ok.txt")
            self.assertTrue(body["sasToken"].startswith("?sv=2020-10-02&sr=b&sig="), body)
            status, headers, _ = emu.rest("POST", "/devices/dev2/files/notifications",
                                          {"correlationId": body["correlationId"], "isSuccess": "yes"},
                                          token=device_token("dev2"))
            self.assertEqual((status, headers.get("iothub-errorcode")), (400, "InvalidFileUploadCompletionStatus"))
            # the container does not exist: Azurite refuses the hub's read of the blob
            status, headers, body = emu.rest("POST", "/devices/dev2/files/notifications",
                                             {"correlationId": body["correlationId"], "isSuccess": True,
                                              "statusCode": 201, "statusDescription": "done"},
                                             token=device_token("dev2"))
            self.assertEqual((status, headers.get("iothub-errorcode")), (400, "InvalidStorageEndpointOrBlob"), body)
            self.assertIn("the storage answered 404", error_of(body)[1])
            status, _, _ = emu.rest("GET", "/devices/dev2/files", token=device_token("dev2"))
            self.assertEqual(status, 405)
        finally:
            emu.stop()
            emu.log.close()

    def test_no_storage_configured(self):
        emu = hub(blob=False)
        try:
            status, headers, body = emu.rest("POST", "/devices/dev1/files", {"blobName": "x.txt"},
                                             token=device_token("dev1"))
            self.assertEqual((status, headers.get("iothub-errorcode")), (400, "DefaultStorageEndpointNotConfigured"),
                             body)
            self.assertEqual(error_of(body)[0], 400014)
            status, headers, _ = emu.rest("POST", "/devices/dev1/files/notifications",
                                          {"correlationId": "x", "isSuccess": True, "statusCode": 200},
                                          token=device_token("dev1"))
            self.assertEqual((status, headers.get("iothub-errorcode")), (400, "InvalidFileUploadCorrelationId"))
            # the device's key checks as ever: another device's token is refused first
            status, _, _ = emu.rest("POST", "/devices/dev1/files", {"blobName": "x.txt"},
                                    token=device_token("dev2", key=DEVICE_KEYS["dev2"]))
            self.assertEqual(status, 401)
        finally:
            emu.stop()
            emu.log.close()


if __name__ == "__main__":
    run_tests()
