"""iothub-service, the service CLI, against iothub-emulator: devices created (with their
connection string), listed, shown, deleted; a method invoked on a device attached with
python3-qpid-proton; twin shown and patched; a C2D message received by the device;
`monitor` printing the device's telemetry as JSON lines; `query` over twins (every page,
or --max-pages), `module` create/list/show/twin/delete with the module's own key; `job`
(twin update and method jobs over a query, --wait, show, cancel, list) and the jobs REST
API's refusals and limits; and the registry REST API's edges the CLI does not reach (bulk,
statistics, paging headers).

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
from emulator_lib import Emulator, Cbs, HOST, OWNER_KEY, connect, sas_token, owner_token

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


def error_code(body):
    return json.loads(body["Message"])["errorCode"]


def tagged_devices(test, tags):
    """A device for each id in tags, with those tags; deleted when the test ends."""
    for device, device_tags in tags.items():
        p = cli("device", "create", device)
        test.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        test.addCleanup(cli, "device", "delete", device)
        status, _, _ = EMU.rest("PATCH", f"/twins/{device}", {"tags": device_tags})
        test.assertEqual(status, 200)


class QueryAndModules(unittest.TestCase):
    def setUp(self):
        tagged_devices(self, {f"q{i}": {"site": "north" if i <= 3 else "south"} for i in range(1, 6)})

    def test_query_pages_filters_and_groups(self):
        p = cli("query", "SELECT deviceId FROM devices WHERE tags.site = 'north'")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(json.loads(p.stdout), [{"deviceId": f"q{i}"} for i in (1, 2, 3)])
        # every page, two rows at a time
        p = cli("query", "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'q')", "--page-size", "2")
        self.assertEqual(p.returncode, 0, p.stderr)
        twins = json.loads(p.stdout)
        self.assertEqual([t["deviceId"] for t in twins], [f"q{i}" for i in range(1, 6)])
        self.assertEqual(twins[0]["tags"], {"site": "north"})
        self.assertIn("$version", twins[0]["properties"]["desired"])
        # the first page only, saying more follow
        p = cli("query", "SELECT deviceId FROM devices WHERE STARTSWITH(deviceId, 'q')", "--page-size", "2",
                "--max-pages", "1")
        self.assertEqual((p.returncode, len(json.loads(p.stdout))), (0, 2), p.stderr)
        self.assertIn("more rows follow", p.stderr)
        p = cli("query", "SELECT tags.site AS site, COUNT() AS n FROM devices WHERE STARTSWITH(deviceId, 'q') "
                "GROUP BY tags.site")
        self.assertEqual(json.loads(p.stdout), [{"site": "north", "n": 3}, {"site": "south", "n": 2}], p.stderr)
        p = cli("query", "SELECT COUNT() AS n FROM devices WHERE status = 'disabled'")
        self.assertEqual(json.loads(p.stdout), [{"n": 1}])  # "off" of the registry file
        # a query the language does not have: the hub says no, and why
        p = cli("query", "SELECT * FROM devices WHERE deviceId LIKE 'q%'")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(error_code(json.loads(p.stdout)), 400004)
        self.assertIn("unexpected text", p.stdout)

    def test_modules_with_their_own_keys_and_twins(self):
        p = cli("module", "create", "q1", "edge-1")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        cs = p.stdout.strip().splitlines()[-1]
        self.assertTrue(cs.startswith(f"HostName={HOST};DeviceId=q1;ModuleId=edge-1;SharedAccessKey="), cs)
        key = cs.split("SharedAccessKey=", 1)[1]
        self.assertEqual(cli("module", "create", "q1", "edge-1").returncode, 1)  # it exists
        self.assertEqual(cli("module", "create", "nobody", "edge-1").returncode, 1)
        with open(EMU.registry) as f:  # saved to the registry file, with its keys
            self.assertIn(key, f.read())
        self.assertEqual([m["moduleId"] for m in json.loads(cli("module", "list", "q1").stdout)], ["edge-1"])
        shown = json.loads(cli("module", "show", "q1", "edge-1").stdout)
        self.assertEqual((shown["deviceId"], shown["moduleId"]), ("q1", "edge-1"))
        twin = json.loads(cli("module", "twin", "q1", "edge-1").stdout)
        self.assertEqual((twin["deviceId"], twin["moduleId"]), ("q1", "edge-1"))
        # the module connects with its own key, and is found by a module query
        conn = connect(EMU)
        try:
            self.assertEqual(Cbs(conn).put(sas_token(f"{HOST}/devices/q1/modules/edge-1", key))[0], 200)
        finally:
            conn.close()
        p = cli("query", "SELECT deviceId, moduleId FROM devices.modules WHERE deviceId = 'q1'")
        self.assertEqual(json.loads(p.stdout), [{"deviceId": "q1", "moduleId": "edge-1"}], p.stderr)
        p = cli("module", "delete", "q1", "edge-1")
        self.assertEqual(p.returncode, 0, p.stdout)
        p = cli("module", "show", "q1", "edge-1")
        self.assertEqual((p.returncode, error_code(json.loads(p.stdout))), (1, 404010))
        with open(EMU.registry) as f:
            self.assertNotIn(key, f.read())


class Jobs(unittest.TestCase):
    """iothub-service job: twin update and method jobs over a query, show, cancel, list."""

    def setUp(self):
        tagged_devices(self, {f"jb{i}": {"ring": "early" if i <= 2 else "late"} for i in range(1, 4)})

    def test_twin_update_method_cancel_list(self):
        p = cli("job", "update-twin", "cli-twin-job", "tags.ring = 'early'",
                '{"tags": {"fw": "2.0"}, "properties": {"desired": {"fw": "2.0"}}}', "--wait", "20")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        job = json.loads(p.stdout)
        self.assertEqual((job["status"], job["type"], job["deviceJobStatistics"]),
                         ("completed", "scheduleUpdateTwin", {"deviceCount": 2, "succeededCount": 2, "failedCount": 0,
                                                              "runningCount": 0, "pendingCount": 0}))
        desired = [EMU.rest("GET", f"/twins/jb{i}")[2]["properties"]["desired"].get("fw") for i in range(1, 4)]
        self.assertEqual(desired, ["2.0", "2.0", None])
        # a method on a device that is not connected: the job completes, that device failed
        p = cli("job", "method", "cli-method-job", "deviceId = 'jb3'", "reboot", '{"now": true}', "--timeout", "5",
                "--wait", "20")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        job = json.loads(p.stdout)
        self.assertEqual((job["deviceJobStatistics"]["deviceCount"], job["deviceJobStatistics"]["failedCount"]), (1, 1))
        self.assertEqual(job["cloudToDeviceMethod"]["payload"], {"now": True})
        # a job for later, cancelled before it runs; --wait on it says it did not complete
        p = cli("job", "update-twin", "cli-later-job", "deviceId = 'jb3'", '{"tags": {"x": 1}}', "--start", "+3600")
        self.assertEqual((p.returncode, json.loads(p.stdout)["status"]), (0, "scheduled"), p.stdout + p.stderr)
        p = cli("job", "show", "cli-later-job", "--wait", "0.5")
        self.assertEqual(p.returncode, 1)
        self.assertIn("job cli-later-job is scheduled after 0.5 s", p.stderr)
        p = cli("job", "cancel", "cli-later-job")
        self.assertEqual((p.returncode, json.loads(p.stdout)["status"]), (0, "cancelled"), p.stdout + p.stderr)
        self.assertNotIn("x", EMU.rest("GET", "/twins/jb3")[2]["tags"])
        listed = json.loads(cli("job", "list", "--status", "cancelled").stdout)
        self.assertIn("cli-later-job", [j["jobId"] for j in listed])
        self.assertTrue(all(j["status"] == "cancelled" for j in listed), listed)
        listed = json.loads(cli("job", "list", "--type", "scheduleDeviceMethod").stdout)
        self.assertIn("cli-method-job", [j["jobId"] for j in listed])
        self.assertTrue(all(j["type"] == "scheduleDeviceMethod" for j in listed), listed)
        # refusals, in IoT Hub's error shape
        p = cli("job", "show", "no-such-job")
        self.assertEqual((p.returncode, error_code(json.loads(p.stdout))), (1, 404002))
        p = cli("job", "update-twin", "cli-twin-job", "deviceId = 'jb1'", '{"tags": {"y": 1}}')
        self.assertEqual((p.returncode, error_code(json.loads(p.stdout))), (1, 409000))
        p = cli("job", "update-twin", "cli-bad-job", "deviceId = 'jb1'", '{"tags": 1}')
        self.assertEqual((p.returncode, error_code(json.loads(p.stdout))), (1, 400004))
        self.assertIn("tags and properties.desired must be JSON objects", p.stdout)
        p = cli("job", "method", "cli-bad-job", "deviceId =", "reboot")
        self.assertEqual((p.returncode, error_code(json.loads(p.stdout))), (1, 400004))
        self.assertIn("queryCondition is not valid", p.stdout)
        self.assertEqual(cli("job", "show").returncode, 1)  # no JOB_ID: a usage error

    def test_rest_refusals_and_limits(self):
        base = {"type": "scheduleUpdateTwin", "queryCondition": "deviceId = 'jb1'", "updateTwin": {"tags": {"a": 1}}}
        for path, body, why in (
                ("/jobs/v2/" + "j" * 129, base, "129 characters long"),
                ("/jobs/v2/j1", dict(base, jobId="other"), "jobId is not the path's"),
                ("/jobs/v2/j1", dict(base, type="export"), "type must be"),
                ("/jobs/v2/j1", dict(base, startTime="soon"), "startTime must be"),
                ("/jobs/v2/j1", dict(base, maxExecutionTimeInSeconds=0), "maxExecutionTimeInSeconds"),
                ("/jobs/v2/j1", dict(base, updateTwin={}), "changes nothing"),
                ("/jobs/v2/j1", {"type": "scheduleDeviceMethod", "queryCondition": "true",
                                 "cloudToDeviceMethod": {"methodName": ""}}, "methodName"),
                ("/jobs/v2/j1", [], "not a JSON object")):
            status, _, answer = EMU.rest("PUT", path, body)
            self.assertEqual((status, error_code(answer)), (400, 400004), path)
            self.assertIn(why, answer["Message"])
        self.assertEqual(EMU.rest("DELETE", "/jobs/v2/j1")[0], 405)
        self.assertEqual(EMU.rest("GET", "/jobs/v1/j1")[0], 404)
        # only ServiceConnect: it may schedule a method job, not a twin update
        service = sas_token(HOST, "gIGCg4SFhoeIiYqLjI2Oj5CRkpOUlZaXmJmam5ydnp8=", policy="service")
        self.assertEqual(EMU.rest("PUT", "/jobs/v2/svc-twin", base, token=service)[0], 401)
        # at most 100 jobs kept: the oldest finished ones make way; 100 not finished: 429
        for i in range(100):
            status, _, _ = EMU.rest("PUT", f"/jobs/v2/many-{i}", dict(base, startTime="2099-01-01T00:00:00Z"))
            self.assertEqual(status, 200, i)
        status, _, answer = EMU.rest("PUT", "/jobs/v2/one-more", base)
        self.assertEqual((status, error_code(answer)), (429, 429000))
        self.assertEqual(EMU.rest("POST", "/jobs/v2/many-0/cancel")[0], 200)
        self.assertEqual(EMU.rest("PUT", "/jobs/v2/one-more", base)[0], 200)
        self.assertEqual(EMU.rest("GET", "/jobs/v2/many-0")[0], 404)  # evicted
        _, _, jobs = EMU.rest("GET", "/jobs/v2/query")
        self.assertEqual(len(jobs), 100)
        for i in range(1, 100):
            EMU.rest("POST", f"/jobs/v2/many-{i}/cancel")


class RegistryRest(unittest.TestCase):
    """The registry API's answers that iothub-service does not show."""

    def query(self, sql, headers=None):
        return EMU.rest("POST", "/devices/query", {"query": sql}, headers=headers)

    def test_paging_headers(self):
        status, headers, rows = self.query("SELECT deviceId FROM devices", {"x-ms-max-item-count": "2"})
        self.assertEqual((status, headers["x-ms-item-type"], len(rows)), (200, "raw", 2))
        token = headers["x-ms-continuation"]
        seen = [r["deviceId"] for r in rows]
        while token:
            status, headers, rows = self.query("SELECT deviceId FROM devices",
                                               {"x-ms-max-item-count": "2", "x-ms-continuation": token})
            self.assertEqual(status, 200)
            seen += [r["deviceId"] for r in rows]
            token = headers.get("x-ms-continuation")
        status, _, all_rows = self.query("SELECT deviceId FROM devices")
        self.assertEqual(seen, [r["deviceId"] for r in all_rows])
        status, headers, _ = self.query("SELECT * FROM devices")
        self.assertEqual(headers["x-ms-item-type"], "twin")
        # a token of another query, or none of the hub's, and page sizes that are not numbers
        status, headers, _ = self.query("SELECT deviceId FROM devices", {"x-ms-max-item-count": "2"})
        for h in ({"x-ms-continuation": headers["x-ms-continuation"]}, {"x-ms-continuation": "bm90IGEgdG9rZW4="},
                  {"x-ms-continuation": "x" * 200}, {"x-ms-max-item-count": "0"},
                  {"x-ms-max-item-count": "two"}, {"x-ms-max-item-count": "99999999999999999999"}):
            status, _, body = self.query("SELECT * FROM devices", h)
            self.assertEqual((status, error_code(body)), (400, 400004), h)
        status, _, rows = self.query("SELECT deviceId FROM devices", {"x-ms-max-item-count": "5000"})
        self.assertEqual(status, 200)  # served as pages of 1000

    def test_query_refusals(self):
        head = "SELECT * FROM devices WHERE deviceId = '"
        status, _, _ = self.query(head + "a" * (8192 - len(head) - 1) + "'")
        self.assertEqual(status, 200)
        status, _, body = self.query(head + "a" * (8192 - len(head)) + "'")
        self.assertEqual((status, error_code(body)), (400, 400004))
        self.assertIn("longer than 8192 characters", body["Message"])
        status, _, body = self.query("SELECT * FROM devices WHERE " + "(" * 33 + "true" + ")" * 33)
        self.assertIn("nests deeper", body["Message"])
        for body in ({}, {"query": 1}, []):
            status, _, answer = EMU.rest("POST", "/devices/query", body)
            self.assertEqual((status, error_code(answer)), (400, 400004))
        status, _, body = self.query("SELECT * FROM devices.jobs")
        self.assertEqual(status, 400)
        # RegistryRead is needed: the service policy has only ServiceConnect
        status, _, _ = EMU.rest("POST", "/devices/query", {"query": "SELECT * FROM devices"},
                                token=sas_token(HOST, "gIGCg4SFhoeIiYqLjI2Oj5CRkpOUlZaXmJmam5ydnp8=",
                                                policy="service"))
        self.assertEqual(status, 401)

    def test_bulk_and_statistics(self):
        status, _, stats = EMU.rest("GET", "/statistics/devices")
        self.assertEqual(status, 200)
        before = stats["totalDeviceCount"]
        status, _, result = EMU.rest("POST", "/devices", [
            {"id": "bulk-1", "importMode": "create", "status": "disabled"},
            {"id": "bulk-2", "importMode": "create", "tags": {"site": "east"}},
            {"id": "dev1", "importMode": "create"}])
        self.assertEqual(status, 200)
        self.assertEqual(result["isSuccessful"], False)
        self.assertEqual([(e["deviceId"], e["errorCode"]) for e in result["errors"]], [("dev1", "DeviceAlreadyExists")])
        self.assertEqual(result["warnings"], [])
        status, _, stats = EMU.rest("GET", "/statistics/devices")
        self.assertEqual((stats["totalDeviceCount"], stats["disabledDeviceCount"]), (before + 2, 2))
        self.assertEqual(EMU.rest("GET", "/twins/bulk-2")[2]["tags"], {"site": "east"})
        _, _, dev = EMU.rest("GET", "/devices/bulk-1")
        status, _, result = EMU.rest("POST", "/devices", [
            {"id": "bulk-1", "importMode": "UpdateIfMatchETag", "eTag": "bm8=", "status": "enabled"},
            {"id": "bulk-2", "importMode": "updateTwin", "tags": {"floor": 2}},
            {"id": "bulk-3", "importMode": "Update"}])
        self.assertEqual([(e["deviceId"], e["errorCode"]) for e in result["errors"]],
                         [("bulk-1", "PreconditionFailed"), ("bulk-3", "DeviceNotFound")])
        self.assertEqual(EMU.rest("GET", "/twins/bulk-2")[2]["tags"], {"site": "east", "floor": 2})
        status, _, result = EMU.rest("POST", "/devices", [
            {"id": "bulk-1", "importMode": "UpdateIfMatchETag", "eTag": dev["etag"], "status": "enabled"}])
        self.assertTrue(result["isSuccessful"], result)
        self.assertEqual(EMU.rest("GET", "/devices/bulk-1")[2]["status"], "enabled")
        status, _, result = EMU.rest("POST", "/devices", [{"id": "bulk-1", "importMode": "delete"},
                                                          {"id": "bulk-2", "importMode": "Delete"}])
        self.assertTrue(result["isSuccessful"], result)
        self.assertEqual(EMU.rest("GET", "/devices/bulk-1")[0], 404)
        with open(EMU.registry) as f:
            self.assertNotIn("bulk-", f.read())
        # requests that fail as a whole
        status, _, body = EMU.rest("POST", "/devices", [{"id": f"b{i}", "importMode": "create"} for i in range(101)])
        self.assertEqual((status, error_code(body)), (413, 413002))
        status, _, body = EMU.rest("POST", "/devices", [{"id": "b", "importMode": "create"}] * 2)
        self.assertEqual((status, error_code(body)), (400, 400011))
        for bad in ([], {}, [{"id": "b", "importMode": "replace"}], [{"importMode": "create"}], ["b"]):
            status, _, body = EMU.rest("POST", "/devices", bad)
            self.assertEqual((status, error_code(body)), (400, 400004), bad)
        status, _, stats = EMU.rest("GET", "/statistics/service")
        self.assertEqual((status, list(stats)), (200, ["connectedDeviceCount"]))


if __name__ == "__main__":
    run_tests()
