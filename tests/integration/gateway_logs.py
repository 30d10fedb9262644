"""iotgw's and iothub-emulator's log as JSON lines (--log-format json, or log.format: json
in the gateway's file): with devices that connect, send telemetry, are refused by the
gateway (bad token, unknown, disabled) and by the hub (a key the hub does not have, a
device the hub does not know), send Error, disconnect, and a gateway that stops, every
line of both logs is one JSON object with time, level, event and message; lines about a
device name it in "device"; the hub's view of each device comes as device_hub_state
events, one per change; no key, token or signature appears anywhere; peer text with
control characters and bytes that are not UTF-8 cannot break a line. Text stays the
default, and --log-format wins over the file.

usage: gateway_logs.py IOTHUB_EMULATOR IOTGW SCHEMAS_DESC CERT_DIR"""
import json
import re
import shlex
import signal
import subprocess
import unittest
import urllib.parse

import gateway_e2e  # noqa: F401 (takes the four arguments above and loads the schemas)
from gateway_e2e import CERTS, EMULATOR, IOTGW, KEYS, Gateway, token
from device_lib import Device, T, _VarintBytes
from emulator_lib import Emulator, fleet_registry, random_key, DEVICE_POLICY_KEY, OWNER_KEY
from iotgw_testlib import run_tests

# wrongkey1: the gateway signs its hub tokens with a key the hub does not have (401);
# spare1 (in KEYS) is not registered at the hub at all (404)
GW_ONLY_KEY, HUB_ONLY_KEY = random_key(), random_key()
GW_KEYS = {**KEYS, "wrongkey1": GW_ONLY_KEY}
HUB_KEYS = {**{d: k for d, k in KEYS.items() if d != "spare1"}, "wrongkey1": HUB_ONLY_KEY}
EMU = None

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn |info |debug) ")
EVENT = re.compile(r"^[a-z][a-z0-9_]*$")
# events that are about one device and must say which
DEVICE_EVENTS = {"device_connected", "device_disconnected", "device_hub_state", "device_hub_refused",
                 "device_error_sent", "device_error_received", "device_refused"}


def setUpModule():
    global EMU
    EMU = Emulator(EMULATOR, CERTS, registry=fleet_registry(HUB_KEYS), extra=["--log-format", "json"])


def tearDownModule():
    EMU.stop()
    text = EMU.log_text()
    EMU.log.close()
    check_json_lines(text, "iothub-emulator")


class LogGateway(Gateway):
    """gateway_e2e's Gateway with more YAML at the end of its file and more arguments."""

    def __init__(self, emu, extra_yaml="", args=(), **kw):
        self.extra_yaml = extra_yaml
        saved = gateway_e2e.WRAPPER
        if args:  # Gateway runs WRAPPER + [iotgw, --config, FILE]: the arguments go after those
            gateway_e2e.WRAPPER = ["/bin/sh", "-c", 'exec "$@" ' + " ".join(map(shlex.quote, args)), "sh"] + saved
        try:
            super().__init__(emu, keys=GW_KEYS, **kw)
        finally:
            gateway_e2e.WRAPPER = saved

    def write_config(self, keys):
        super().write_config(keys)
        with open(self.config, "a") as f:
            f.write(self.extra_yaml)

    def lines(self):
        return self.log_text().splitlines()

    def events(self, event=None, device=None):
        """The parsed lines (all of which must parse, unlike LoggedProcess.events, which
        LoggedProcess.wait_event calls), of one event and device if given."""
        out = []
        for line in self.lines():
            j = json.loads(line)
            if (event is None or j["event"] == event) and (device is None or j.get("device") == device):
                out.append(j)
        return out


def check_json_lines(text, who):
    """Every line one JSON object with the keys every line has; the parsed lines."""
    lines = text.splitlines()
    assert lines, f"{who} logged nothing"
    parsed = []
    for line in lines:
        try:
            j = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"{who}: a line that is not JSON ({e}): {line!r}") from None
        assert isinstance(j, dict), line
        for key in ("time", "level", "event", "message"):
            assert isinstance(j.get(key), str), f"{who}: no {key} in {line!r}"
        assert TIME.match(j["time"]), line
        assert j["level"] in ("error", "warn", "info", "debug"), line
        assert EVENT.match(j["event"]), line
        assert set(j) <= {"time", "level", "event", "device", "message", "fields"}, line
        if "device" in j:
            assert isinstance(j["device"], str) and j["device"], line
        if "fields" in j:
            assert isinstance(j["fields"], dict) and j["fields"], line
        parsed.append(j)
    return parsed


def secrets_of(tokens):
    """Every key of the test and the tokens made with them, as they could appear."""
    out = set(GW_KEYS.values()) | set(HUB_KEYS.values()) | {DEVICE_POLICY_KEY, OWNER_KEY}
    out |= {urllib.parse.quote(k, safe="") for k in set(out)}
    for t in tokens:
        out.add(t)
        sig = urllib.parse.parse_qs(t.split(" ", 1)[1])["sig"][0]
        out |= {sig, urllib.parse.quote(sig, safe="")}
    return out


def assert_no_secrets(tc, text, tokens, who):
    for s in secrets_of(tokens):
        tc.assertNotIn(s, text, f"{who} logged a secret")
    tc.assertNotIn("sig=", text, f"{who} logged a signature")
    tc.assertNotIn("SharedAccessSignature sr=", text, f"{who} logged a token")


def connect(gw, device, tok=None, client=None, **caps):
    d = Device(gw.port)
    if client is None:
        d.hello(device, tok or token(device), **caps)
    else:
        # a client name of any bytes: protobuf's Python runtime insists on UTF-8, the wire
        # does not; a placeholder of the same length is swapped for the raw bytes
        f = T("Frame")()
        f.hello.protocol_version = 1
        f.hello.device_id = device
        f.hello.token = tok or token(device)
        f.hello.client = "x" * len(client)
        data = f.SerializeToString().replace(b"x" * len(client), client)
        d.send_raw(_VarintBytes(len(data)) + data)
    return d


def code_name(number):
    return T("Frame").DESCRIPTOR.fields_by_name["error"].message_type.fields_by_name["code"] \
        .enum_type.values_by_number[number].name


def refused(gw, device, tok):
    """The name of the error code the gateway answers a Hello with."""
    d = connect(gw, device, tok)
    e = d.expect("error")
    d.close()
    return code_name(e.code)


def telemetry(d, seq):
    f = T("Frame")()
    f.telemetry.seq = seq
    f.telemetry.raw = b'{"t": 21.5}'
    d.send(f)


class JsonLog(unittest.TestCase):
    def test_every_line_is_json_with_device_events_and_no_secrets(self):
        gw = LogGateway(EMU, args=["--log-format", "json"])
        tokens = []
        monitor = wrong = spare = None
        try:
            # a device online at the hub, telemetry acknowledged
            tokens.append(token("agent1"))
            agent = connect(gw, "agent1", tokens[-1])
            agent.expect("welcome")
            gw.wait_event("device_hub_state", "agent1", lambda j: j["fields"]["state"] == "online")
            telemetry(agent, 1)
            self.assertEqual(agent.expect("ack").seq, 1)
            # a client name with a newline, a forged JSON line, an escape and bytes that are not UTF-8
            hostile = b'evil\n{"forged":1}\x1b\xff\xfe\xc0\x7f'
            tokens.append(token("monitor1"))
            monitor = connect(gw, "monitor1", tokens[-1], client=hostile)
            monitor.expect("welcome")
            # refused by the gateway: a token signed with another key, an unknown and a disabled device
            tokens.append(token("agent1", key=random_key()))
            self.assertEqual(refused(gw, "agent1", tokens[-1]), "ERROR_BAD_TOKEN")
            tokens.append(token("nobody1", key=random_key()))
            self.assertEqual(refused(gw, "nobody1", tokens[-1]), "ERROR_UNKNOWN_DEVICE")
            tokens.append(token("off1"))
            self.assertEqual(refused(gw, "off1", tokens[-1]), "ERROR_DEVICE_DISABLED")
            # refused by the hub: a key it does not have (401, retried), a device it does not know (404)
            tokens.append(token("wrongkey1", key=GW_ONLY_KEY))
            wrong = connect(gw, "wrongkey1", tokens[-1])
            wrong.expect("welcome")
            tokens.append(token("spare1"))
            spare = connect(gw, "spare1", tokens[-1])
            spare.expect("welcome")
            failed = gw.wait_event("device_hub_state", "wrongkey1", lambda j: j["fields"]["state"] == "failed")
            self.assertIn("401", failed["fields"]["reason"])
            self.assertIn("401", failed["message"])
            self.assertIsInstance(failed["fields"]["retry_ms"], int)
            gw.wait_event("device_hub_state", "wrongkey1", lambda j: j["fields"]["state"] == "waiting", timeout=40)
            gone = gw.wait_event("device_hub_state", "spare1", lambda j: j["fields"]["state"] == "failed")
            self.assertIn("404", gone["fields"]["reason"])
            self.assertIs(gone["fields"]["for_good"], True)
            gw.wait_event("device_hub_refused", "spare1")
            # a device that says goodbye with Error, one that just goes
            tokens.append(token("twin1"))
            twin = connect(gw, "twin1", tokens[-1])
            twin.expect("welcome")
            f = T("Frame")()
            f.error.code = 15  # ERROR_INTERNAL
            f.error.message = "rebooting\r\n{\"forged\":2}\x00after the NUL"
            twin.send(f)
            gw.wait_event("device_error_received", "twin1")
            twin.close()
            agent.close()
            gw.wait_event("device_disconnected", "agent1")
        finally:
            gw.stop()
            text = gw.log_text()
            gw.log.close()
            for d in (monitor, wrong, spare):
                if d:
                    d.close()
        lines = check_json_lines(text, "iotgw")
        by = lambda event, device=None: [j for j in lines if j["event"] == event and  # noqa: E731
                                         (device is None or j.get("device") == device)]
        for j in lines:
            if j["event"] in DEVICE_EVENTS:
                self.assertIn("device", j, j)
        # what each device did, as events
        connected = by("device_connected", "monitor1")[0]
        self.assertEqual(connected["fields"]["client"], hostile.decode("utf-8", "replace"))
        self.assertIn('evil\n{"forged":1}', connected["message"])
        self.assertNotIn('{"forged":1}', [line.strip() for line in text.splitlines()])
        self.assertEqual(by("device_connected", "agent1")[0]["fields"]["peer"], "127.0.0.1")
        bad_token = by("device_refused", "agent1")
        self.assertEqual([j["fields"]["code"] for j in bad_token], ["ERROR_BAD_TOKEN"])
        self.assertEqual(bad_token[0]["level"], "warn")
        self.assertEqual(by("device_refused", "nobody1")[0]["fields"]["code"], "ERROR_UNKNOWN_DEVICE")
        self.assertEqual(by("device_refused", "off1")[0]["fields"]["code"], "ERROR_DEVICE_DISABLED")
        self.assertIn("401", by("device_hub_refused", "wrongkey1")[0]["fields"]["reason"])
        self.assertEqual(by("device_error_received", "twin1")[0]["fields"]["code"], "ERROR_INTERNAL")
        self.assertTrue(by("device_error_received", "twin1")[0]["fields"]["detail"].startswith("rebooting\r\n"))
        self.assertEqual(by("device_disconnected", "agent1")[0]["fields"]["peer"], "127.0.0.1")
        self.assertTrue(by("draining"))
        # the ones still there when it stopped were told so
        for device in ("monitor1", "wrongkey1", "spare1"):
            sent = by("device_error_sent", device)
            self.assertEqual([j["fields"]["code"] for j in sent], ["ERROR_SHUTTING_DOWN"], device)
        # one line per change at the hub: agent1 came online once and stayed
        states = lambda d: [j["fields"]["state"] for j in by("device_hub_state", d)]  # noqa: E731
        self.assertEqual(states("agent1"), ["online"])
        self.assertEqual(states("monitor1"), ["online"])
        self.assertEqual(states("wrongkey1")[:2], ["failed", "waiting"])
        self.assertNotIn("authenticating", states("wrongkey1"))
        for j in by("device_hub_state"):
            self.assertEqual(j["level"], "info")
            self.assertIn(f"device {j['device']} at the hub: {j['fields']['state']}", j["message"])
        # the hub connection's events
        self.assertTrue(by("hub_connection_open"))
        assert_no_secrets(self, text, tokens, "iotgw")
        assert_no_secrets(self, EMU.log_text(), tokens, "iothub-emulator")
        check_json_lines(EMU.log_text(), "iothub-emulator")

    def test_log_format_json_in_the_file(self):
        gw = LogGateway(EMU, extra_yaml="log:\n  format: json\n")
        try:
            d = connect(gw, "agent1")
            d.expect("welcome")
            gw.wait_event("device_hub_state", "agent1", lambda j: j["fields"]["state"] == "online")
            # a reload keeps the format and says what it did; one that fails says so too
            gw.proc.send_signal(signal.SIGHUP)
            reloaded = gw.wait_event("config_reloaded")
            self.assertEqual((reloaded["fields"]["kept"], reloaded["fields"]["closed"]), (1, 0))
            with open(gw.config) as f:
                good = f.read()
            with open(gw.config, "a") as f:
                f.write("nonsense: [\n")
            gw.proc.send_signal(signal.SIGHUP)
            self.assertEqual(gw.wait_event("reload_failed")["level"], "error")
            with open(gw.config, "w") as f:
                f.write(good)
            d.close()
            gw.wait_event("device_disconnected", "agent1")
            p = subprocess.run([IOTGW, "--check-config", gw.config], capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("log: JSON lines", p.stdout)
        finally:
            gw.stop()
            text = gw.log_text()
            gw.log.close()
        lines = check_json_lines(text, "iotgw")
        self.assertTrue([j for j in lines if j["event"] == "device_connected" and j["device"] == "agent1"])
        self.assertIn("stopped", [j["event"] for j in lines])

    def test_the_option_wins_over_the_file(self):
        gw = LogGateway(EMU, extra_yaml="log:\n  format: json\n", args=["--log-format", "text"])
        try:
            d = connect(gw, "agent1")
            d.expect("welcome")
            gw.wait_for_log("device agent1 at the hub: online")
            d.close()
        finally:
            gw.stop()
            text = gw.log_text()
            gw.log.close()
        for line in text.splitlines():
            self.assertRegex(line, TEXT_LINE)

    def test_text_is_the_default_and_unchanged(self):
        gw = LogGateway(EMU)
        try:
            d = connect(gw, "agent1")
            d.expect("welcome")
            gw.wait_for_log("device agent1 at the hub: online")
            telemetry(d, 1)
            self.assertEqual(d.expect("ack").seq, 1)
            self.assertEqual(refused(gw, "off1", token("off1")), "ERROR_DEVICE_DISABLED")
            d.close()
            gw.wait_for_log("device agent1 (127.0.0.1) disconnected")
        finally:
            gw.stop()
            text = gw.log_text()
            gw.log.close()
        for line in text.splitlines():
            self.assertRegex(line, TEXT_LINE)
        self.assertRegex(text, r"info  device agent1 connected from 127\.0\.0\.1(:\d+)? \(device_lib\.py\)\n")
        self.assertRegex(text, r"warn  device \(no hello yet\) \(127\.0\.0\.1(:\d+)?\): ERROR_DEVICE_DISABLED: "
                               r"device off1 is disabled\n")
        self.assertRegex(text, r"info  device agent1 \(127\.0\.0\.1(:\d+)?\) disconnected: ")

    def test_options_and_help(self):
        p = subprocess.run([IOTGW, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0)
        self.assertIn("--log-format FORMAT", p.stdout)
        self.assertIn("text (default) or json", p.stdout)
        p = subprocess.run([IOTGW, "--log-format", "xml", "--config", "/nonexistent"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--log-format must be text or json", p.stderr)
        p = subprocess.run([EMULATOR, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0)
        self.assertIn("--log-format FORMAT", p.stdout)
        p = subprocess.run([EMULATOR, "--log-format", "yaml"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--log-format must be text or json", p.stderr)


if __name__ == "__main__":
    run_tests()
