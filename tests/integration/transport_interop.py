"""Transport interop with peers not written here, and misbehaving clients.

Debian's python3-qpid-proton is the other side: an AMQPS client (with a SASL layer and
with a bare AMQP header) against our server role, and an AMQPS server against our
client role; stopping that server (SIGSTOP) checks idle-timeout detection. Raw TLS
sockets check HTTP on the WSS port and what bad clients get.

Run with /usr/bin/python3 (Debian's Proton is only visible there):
  transport_interop.py TRANSPORT_PEER CERTDIR
"""
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import unittest

from proton import Message, SSLDomain
from proton.utils import BlockingConnection

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from iotgw_testlib import WRAPPER, OurServer as _OurServer, free_port, readline_within, run_tests  # noqa: E402

PEER, CERTS = sys.argv[1], sys.argv[2]
del sys.argv[1:3]
CA = os.path.join(CERTS, "ca.pem")


def OurServer(messages, max_output=0, size=64):
    return _OurServer(PEER, CERTS, messages, max_output, size)


def pattern(seq, n=64):
    return struct.pack("<Q", seq) + bytes((seq + i) & 0xFF for i in range(8, n))


def client_domain():
    d = SSLDomain(SSLDomain.MODE_CLIENT)
    d.set_trusted_ca_db(CA)
    d.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
    return d


def tls_socket(port):
    ctx = ssl.create_default_context(cafile=CA)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def http(port, request):
    with tls_socket(port) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
        while length and len(body) < length[0]:
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
        status = int(head.split(b" ")[1]) if head else 0
        return status, head.decode("latin-1"), body


# Attaches a receiver with a huge session window and credit, then never reads again.
STALLED_CLIENT = r'''
import sys, time
from proton import SSLDomain
from proton.utils import BlockingConnection
domain = SSLDomain(SSLDomain.MODE_CLIENT)
domain.set_trusted_ca_db(sys.argv[2])
domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
conn = BlockingConnection("amqps://localhost:%s" % sys.argv[1], ssl_domain=domain, timeout=20)
rcv = conn.create_receiver("s2c-0-0", credit=0)
rcv.link.session.incoming_capacity = 1 << 40  # window in frames: capacity / max-frame-size
rcv.link.flow(5000)  # 80 MB of 16 kB messages: far more than socket buffers and max_output
conn.container.timeout = 0.05
for _ in range(20):  # send the flow frame, then stop
    conn.container.process()
print("STALLED", flush=True)
time.sleep(120)
'''

PYTHON_SERVER = r'''
import sys
from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container
port, cert, key, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
def pattern(seq, size=64):
    import struct
    return struct.pack("<Q", seq) + bytes((seq + i) & 0xFF for i in range(8, size))
class Server(MessagingHandler):
    def __init__(self):
        super().__init__()
        self.sent = {}
        self.received = 0
        self.bad = 0
    def on_start(self, event):
        event.container.ssl.server.set_credentials(cert, key, None)
        event.container.listen("amqps://127.0.0.1:%d" % port)
        print("LISTENING", flush=True)
    def on_connection_opened(self, event):
        print("OPENED", flush=True)
    def on_sendable(self, event):
        s = event.sender
        k = self.sent.get(s, 0)
        while s.credit > 0 and k < n:
            s.send(Message(body=pattern(k)))
            k += 1
        self.sent[s] = k
    def on_message(self, event):
        if event.message.body != pattern(self.received):
            self.bad += 1
        self.received += 1
    def on_connection_closing(self, event):  # the client closed first
        print("CLOSED received=%d bad=%d" % (self.received, self.bad), flush=True)
Container(Server()).run()
'''


_readers = {}


class PythonServer:
    def __init__(self, messages):
        self.port = free_port()
        self.proc = subprocess.Popen(["/usr/bin/python3", "-c", PYTHON_SERVER, str(self.port),
                                      os.path.join(CERTS, "server.pem"), os.path.join(CERTS, "server.key"),
                                      str(messages)], stdout=subprocess.PIPE, text=True)
        assert readline_within(self.proc, 20) == "LISTENING"
        time.sleep(0.2)

    def stop(self):
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait()


def run_client(kind, port, messages, idle_ms=None, timeout=60, proxy=None):
    args = WRAPPER + [PEER, "connect", kind, "localhost", str(port), CA, str(messages)]
    if idle_ms or proxy:
        args.append(str(idle_ms or 0))
    if proxy:
        args.append(proxy)
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT")]
    assert line, "no RESULT from transport-peer: %s %s" % (r.stdout, r.stderr)
    fields = dict(kv.split("=", 1) for kv in line[0].split(" description=")[0].split()[1:])
    fields["description"] = line[0].split(" description=", 1)[1] if " description=" in line[0] else ""
    return r.returncode, fields


class ConnectProxy:
    """An HTTPS proxy that tunnels CONNECT requests to loopback only, counting them."""

    def __init__(self):
        import threading
        self.requests = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        import threading
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        line = head.split(b"\r\n")[0].decode()
        self.requests.append(line)
        method, target, _ = line.split(" ", 2)
        host, port = target.rsplit(":", 1)
        if method != "CONNECT" or host not in ("localhost", "127.0.0.1"):
            client.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(a, b):
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        pipe(upstream, client)

    def close(self):
        self.sock.close()


DATED_CA_CONF = """[ca]
default_ca = test
[test]
database = index.txt
serial = serial
new_certs_dir = .
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[leaf]
subjectAltName = DNS:localhost
basicConstraints = CA:FALSE
[intermediate]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
"""


def dated_certs(folder):
    """Certificates for localhost that make-test-certs.sh does not make, from its CA:
    future.pem, valid from 2090 only; under-expired.pem, from intermediate.pem, a CA
    that expired in 2020. OpenSSL 3.0 sets explicit dates with 'openssl ca' only."""
    def run(*args):
        subprocess.run(args, cwd=folder, check=True, capture_output=True)
    with open(os.path.join(folder, "ca.cnf"), "w") as f:
        f.write(DATED_CA_CONF)
    open(os.path.join(folder, "index.txt"), "w").close()
    with open(os.path.join(folder, "serial"), "w") as f:
        f.write("3000\n")

    def sign(name, cn, ca, ext, *dates):
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
            "-out", name + ".csr", "-subj", "/CN=" + cn)
        run("openssl", "ca", "-batch", "-config", "ca.cnf", "-cert", ca + ".pem", "-keyfile", ca + ".key",
            "-in", name + ".csr", "-out", name + ".pem", "-extensions", ext, "-notext", *dates)
    ca = os.path.abspath(os.path.join(CERTS, "ca"))
    sign("future", "localhost", ca, "leaf", "-startdate", "20900101000000Z", "-enddate", "20910101000000Z")
    sign("intermediate", "expired intermediate", ca, "intermediate",
         "-startdate", "20190101000000Z", "-enddate", "20200101000000Z")
    sign("under-expired", "localhost", "intermediate", "leaf", "-days", "3650")


class OpensslServer:
    """openssl s_server on loopback with the given certificate (and chain)."""

    def __init__(self, folder, name, chain=None):
        self.port = free_port()
        args = ["openssl", "s_server", "-accept", "127.0.0.1:%d" % self.port, "-cert", name + ".pem",
                "-key", name + ".key"]
        if chain:
            args += ["-cert_chain", chain]
        # stdin stays open: s_server stops at its end
        self.proc = subprocess.Popen(args, cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        while readline_within(self.proc, 20) != "ACCEPT":
            pass

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class TransportInterop(unittest.TestCase):
    def test_certificate_refusals_name_dates_and_chain_depth(self):
        """Against openssl s_server, both clients say why they refused its certificate,
        in the same words: not valid yet; a CA of its chain (depth 1) has expired."""
        import tempfile
        cases = [("future", None,
                  "the server's certificate is not valid yet (OpenSSL: certificate is not yet valid)"),
                 ("under-expired", "intermediate.pem",
                  "a CA certificate in the server's chain (depth 1) has expired "
                  "(OpenSSL: certificate has expired)")]
        with tempfile.TemporaryDirectory() as folder:
            dated_certs(folder)
            for name, chain, why in cases:
                server = OpensslServer(folder, name, chain)
                try:
                    for kind in ("amqps", "wss"):
                        rc, res = run_client(kind, server.port, 1, timeout=30)
                        self.assertEqual((rc, res["condition"], res["description"]),
                                         (1, "iotgw:tls-failed", "TLS handshake failed: " + why),
                                         (name, kind))
                finally:
                    server.stop()

    def test_wss_client_through_an_https_proxy(self):
        server = OurServer(messages=50)
        proxy = ConnectProxy()
        try:
            rc, res = run_client("wss", server.wss, 50, proxy="127.0.0.1:%d" % proxy.port)
            self.assertEqual((rc, res["received"], res["condition"]), (0, "50", "none"), res)
            self.assertEqual(proxy.requests, ["CONNECT localhost:%d HTTP/1.1" % server.wss])
        finally:
            proxy.close()
            server.stop()

    def test_python_client_over_amqps_with_and_without_sasl(self):
        server = OurServer(messages=200)
        try:
            for sasl in (False, True):
                kw = {"sasl_enabled": sasl}
                if sasl:
                    kw["allowed_mechs"] = "ANONYMOUS"
                conn = BlockingConnection("amqps://localhost:%d" % server.amqps, ssl_domain=client_domain(),
                                          timeout=20, **kw)
                sender = conn.create_sender("c2s-0-0")
                for i in range(500):
                    sender.send(Message(body=pattern(i)))
                receiver = conn.create_receiver("s2c-0-0", credit=50)
                for i in range(200):
                    m = receiver.receive(timeout=20)
                    self.assertEqual(m.body, pattern(i))
                    receiver.accept()
                conn.close()
                closed = server.next_closed()
                self.assertEqual((closed["received"], closed["bad"], closed["disorder"]), ("500", "0", "0"))
                self.assertEqual(closed["sent"], "200")
        finally:
            server.stop()

    def test_our_client_against_python_server(self):
        py = PythonServer(messages=300)
        try:
            rc, res = run_client("amqps", py.port, 300)
            self.assertEqual(rc, 0, res)
            self.assertEqual((res["received"], res["settled"], res["condition"]), ("300", "300", "none"))
            self.assertEqual(readline_within(py.proc, 20), "OPENED")
            self.assertEqual(readline_within(py.proc, 20), "CLOSED received=300 bad=0")
        finally:
            py.stop()

    def test_silent_peer_is_detected_by_idle_timeout(self):
        py = PythonServer(messages=10 ** 9)  # keeps sending until stopped
        try:
            args = WRAPPER + [PEER, "connect", "amqps", "localhost", str(py.port), CA, str(10 ** 9), "1000"]
            client = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
            self.assertEqual(readline_within(py.proc, 20), "OPENED")
            time.sleep(0.5)
            stopped = time.time()
            py.proc.send_signal(signal.SIGSTOP)  # the peer goes silent, its socket stays open
            out, _ = client.communicate(timeout=30)
            waited = time.time() - stopped
            self.assertIn("condition=amqp:resource-limit-exceeded", out)
            self.assertIn("local-idle-timeout expired", out)
            self.assertLess(waited, 10)
        finally:
            py.stop()

    def test_peer_that_stops_reading_is_cut_at_max_output(self):
        """A client that grants a huge window and credit, then stops reading its socket:
        once the server's unsent output passes max_output the connection is failed with
        iotgw:output-limit. Proton itself encodes only a few hundred kB ahead of a stalled
        socket (measured: under 512 KiB with 16 kB messages; the rest waits as deliveries,
        bounded by credit), so the default 64 MiB is a safety net and the test sets 128 KiB."""
        server = OurServer(messages=10 ** 9, max_output=128 << 10, size=16000)
        client = subprocess.Popen(["/usr/bin/python3", "-c", STALLED_CLIENT, str(server.amqps), CA],
                                  stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(readline_within(client, 20), "STALLED")
            closed = server.next_closed(timeout=60)
            self.assertEqual(closed["condition"], "iotgw:output-limit")
            self.assertEqual(closed["received"], "0")
        finally:
            client.kill()
            client.wait()
            client.stdout.close()
            server.stop()

    def test_http_on_other_paths_of_the_wss_port(self):
        server = OurServer(messages=1)
        try:
            status, head, body = http(server.wss, b"GET /twins/dev1?api-version=2021-04-12 HTTP/1.1\r\n"
                                                  b"Host: localhost\r\nUser-Agent: interop\r\n\r\n")
            self.assertEqual(status, 200, head)
            self.assertIn("x-iotgw-test: yes", head.lower())
            self.assertEqual(body, b'{"method":"GET","path":"/twins/dev1","query":"api-version=2021-04-12",'
                                   b'"bodyLength":0,"userAgent":"interop"}')
            status, head, body = http(server.wss, b"POST /twins/dev1/methods HTTP/1.1\r\nHost: localhost\r\n"
                                                  b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n"
                                                  b"0123456789")
            self.assertEqual(status, 200, head)
            self.assertIn(b'"bodyLength":10', body)
            status, head, body = http(server.wss, b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n"
                                      + b"x" * 5000)
            self.assertEqual(status, 413, head)
            self.assertIn(b"larger than 4096 bytes", body)
        finally:
            server.stop()

    def test_http_answers_can_come_later_and_clients_can_leave_first(self):
        server = OurServer(messages=1)
        try:
            status, head, body = http(server.wss, b"GET /slow/a HTTP/1.1\r\nHost: localhost\r\n\r\n")
            self.assertEqual(status, 200, head)
            self.assertIn(b'"path":"/slow/a"', body)
            with tls_socket(server.wss) as s:  # ask, then leave before the answer
                s.sendall(b"GET /slow/b HTTP/1.1\r\nHost: localhost\r\n\r\n")
                time.sleep(0.1)
            time.sleep(1)  # the late answer meets a closed socket and is dropped
            status, _, _ = http(server.wss, b"GET /now HTTP/1.1\r\nHost: localhost\r\n\r\n")
            self.assertEqual(status, 200)
            rc, res = run_client("wss", server.wss, 1)
            self.assertEqual((rc, res["condition"]), (0, "none"), res)
        finally:
            server.stop()

    UPGRADE = (b"GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Protocol: %s\r\n\r\n")

    def test_bad_upgrades_get_http_errors(self):
        server = OurServer(messages=1)
        try:
            status, head, _ = http(server.wss, self.UPGRADE % (b"/$iothub/websocket", b"mqtt"))
            self.assertEqual(status, 400, head)
            status, head, _ = http(server.wss, self.UPGRADE % (b"/elsewhere", b"AMQPWSB10"))
            self.assertEqual(status, 404, head)
            status, head, _ = http(server.wss, self.UPGRADE % (b"/$iothub/websocket", b"AMQPWSB10"))
            self.assertEqual(status, 101, head)
            self.assertIn("sec-websocket-protocol: amqpwsb10", head.lower())
            self.assertNotIn("permessage-deflate", head.lower())
        finally:
            server.stop()

    def test_non_tls_and_garbage_clients_do_not_disturb_others(self):
        server = OurServer(messages=5)
        try:
            for port in (server.wss, server.amqps):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # no TLS at all
                    s.sendall(b"AMQP\x00\x01\x00\x00" + b"\x00" * 64)
                    s.settimeout(10)
                    try:
                        while s.recv(4096):
                            pass  # the server answers with a TLS alert or nothing, then closes
                    except (ConnectionResetError, socket.timeout):
                        pass
            with tls_socket(server.amqps) as s:  # TLS, then not AMQP
                s.sendall(b"GET / HTTP/1.1\r\n\r\n")
                data = b""
                try:
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except (ConnectionResetError, ssl.SSLError):
                    pass
                # closed: at most Proton's own protocol header comes back first
                self.assertIn(data[:4], (b"", b"AMQP"), data[:16])
            rc, res = run_client("wss", server.wss, 5)
            self.assertEqual((rc, res["received"], res["condition"]), (0, "5", "none"), res)
            rc, res = run_client("amqps", server.amqps, 5)
            self.assertEqual((rc, res["received"], res["condition"]), (0, "5", "none"), res)
        finally:
            server.stop()

    def test_listeners_bind_loopback_only(self):
        server = OurServer(messages=1)
        try:
            listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
            for port in (server.wss, server.amqps):
                lines = [l for l in listening.splitlines() if l.split()[3].endswith(":%d" % port)]
                self.assertEqual([l.split()[3] for l in lines], ["127.0.0.1:%d" % port])
        finally:
            server.stop()


if __name__ == "__main__":
    run_tests()
