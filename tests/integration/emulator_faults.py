"""iothub-emulator --admin: each injected fault, observed the way a client would see it
(Debian's python3-qpid-proton and the REST API).

usage: emulator_faults.py IOTHUB_EMULATOR CERT_DIR"""
import sys
import threading
import time
import unittest

from proton import Message, Endpoint
from proton import ConnectionException
from proton.utils import ConnectionClosed, LinkDetached, SendException

from iotgw_testlib import run_tests
from emulator_lib import Emulator, Cbs, connect, device_token

BINARY, CERTS = sys.argv[1:3]
del sys.argv[1:3]
EMU = None


def setUpModule():
    global EMU
    EMU = Emulator(BINARY, CERTS, extra=["--admin"])


def tearDownModule():
    EMU.stop()
    EMU.log.close()


def admin(path, body=None, method="POST"):
    status, _, answer = EMU.rest(method, "/admin/" + path, body)
    assert status == 200, (status, answer)
    return answer


def device(name):
    conn = connect(EMU)
    assert Cbs(conn).put(device_token(name))[0] == 200
    return conn, conn.create_sender(f"/devices/{name}/messages/events")


def pump_until_closed(conn, seconds=10):
    end = time.time() + seconds
    while time.time() < end:
        try:
            conn.container.process()
        except (ConnectionException, ConnectionClosed, LinkDetached):
            pass
        if conn.conn.state & Endpoint.REMOTE_CLOSED or conn.conn.transport is None:
            return conn.conn.remote_condition
        time.sleep(0.02)
    raise AssertionError("the connection stayed open")


class Faults(unittest.TestCase):
    def tearDown(self):
        admin("faults", method="DELETE")

    def test_drop_connections(self):
        conn, sender = device("dev1")
        sender.send(Message(body=b"before"))
        admin("drop-connections")
        cond = pump_until_closed(conn)
        self.assertEqual(cond.name, "amqp:connection:forced")
        self.assertIn("fault injection", EMU.log_text())

    def test_refuse_connections_for_a_while(self):
        admin("refuse-connections", {"seconds": 2})
        with self.assertRaises(Exception):
            conn, _ = device("dev2")
        time.sleep(2.2)
        conn, sender = device("dev2")
        sender.send(Message(body=b"after"))
        conn.close()

    def test_reject_then_accept_tokens_of_one_device(self):
        admin("tokens", {"device": "dev1", "action": "reject"})
        conn = connect(EMU)
        cbs = Cbs(conn)
        status, desc, _ = cbs.put(device_token("dev1"))
        self.assertEqual((status, desc), (401, "token rejected (fault injection)"))
        self.assertEqual(cbs.put(device_token("dev2"))[0], 200)
        self.assertEqual(admin("faults", method="GET")["rejectedTokens"], ["dev1"])
        admin("tokens", {"device": "dev1", "action": "accept"})
        self.assertEqual(cbs.put(device_token("dev1"))[0], 200)
        conn.close()

    def test_expire_tokens_detaches_only_that_device(self):
        conn = connect(EMU)
        cbs = Cbs(conn)
        self.assertEqual(cbs.put(device_token("dev1"))[0], 200)
        self.assertEqual(cbs.put(device_token("dev2"))[0], 200)
        one = conn.create_sender("/devices/dev1/messages/events")
        two = conn.create_sender("/devices/dev2/messages/events")
        admin("tokens", {"device": "dev1", "action": "expire"})
        end = time.time() + 10
        while time.time() < end and not one.link.state & Endpoint.REMOTE_CLOSED:
            try:
                conn.container.process()
            except LinkDetached:
                pass
            time.sleep(0.02)
        self.assertEqual(one.link.remote_condition.name, "amqp:unauthorized-access")
        two.send(Message(body=b"unaffected"))
        conn.close()

    def test_throttle_rejects_telemetry_over_the_rate(self):
        admin("throttle", {"d2cPerSecond": 5})
        conn, sender = device("dev3")
        refused = 0
        for i in range(20):
            try:
                sender.send(Message(body=b"%d" % i))
            except SendException:
                refused += 1
        self.assertGreaterEqual(refused, 10)  # about 5 pass in the first second
        self.assertIn("ThrottlingException", EMU.log_text())
        conn.close()

    def test_throttle_answers_rest_429_over_the_rate(self):
        admin("throttle", {"restPerSecond": 3})
        answers = [EMU.rest("GET", "/twins/dev1") for _ in range(10)]
        codes = [a[0] for a in answers]
        self.assertIn(200, codes)
        self.assertGreaterEqual(codes.count(429), 5, codes)
        self.assertEqual(next(a[1] for a in answers if a[0] == 429).get("iothub-errorcode"), "ThrottlingException")
        admin("faults", method="DELETE")  # the admin API itself is never throttled
        self.assertEqual(EMU.rest("GET", "/twins/dev1")[0], 200)

    def test_method_answers_delayed_then_failed(self):
        conn = connect(EMU)
        self.assertEqual(Cbs(conn).put(device_token("dev2"))[0], 200)
        reqs = conn.create_receiver("/devices/dev2/methods/devicebound", credit=5)
        answers = conn.create_sender("/devices/dev2/methods/devicebound")

        def call_answered_by_the_device():
            """A REST call the device answers at once: ((status, headers, body), seconds)."""
            result = {}

            def call():
                t0 = time.time()
                result["r"] = (EMU.rest("POST", "/twins/dev2/methods",
                                        {"methodName": "ping", "responseTimeoutInSeconds": 10}), time.time() - t0)
            t = threading.Thread(target=call)
            t.start()
            req = reqs.receive(timeout=20)
            reqs.accept()
            answers.send(Message(correlation_id=req.correlation_id, properties={"IoThub-status": 200}, body=b"{}"))
            t.join(20)
            return result["r"]

        admin("methods", {"delayMs": 800})
        (status, _, body), took = call_answered_by_the_device()
        self.assertEqual((status, body["status"]), (200, 200))
        self.assertGreaterEqual(took, 0.8)
        admin("methods", {"failStatus": 503})
        (status, headers, body), _ = call_answered_by_the_device()
        self.assertEqual((status, headers.get("iothub-errorcode")), (503, "InjectedFailure"))
        conn.close()

    def test_admin_api_needs_the_flag(self):
        other = Emulator(BINARY, CERTS)
        try:
            self.assertEqual(other.rest("POST", "/admin/drop-connections", {})[0], 404)
        finally:
            other.stop()
            other.log.close()


if __name__ == "__main__":
    run_tests()
