"""A test device speaking the downstream protocol (docs/downstream-protocol.md) with
Debian's python3-protobuf, independently of our C codecs: delimited frames over a plain
TCP socket, messages from the schemas' descriptor set."""
import socket
import time

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal.decoder import _DecodeVarint32
from google.protobuf.internal.encoder import _VarintBytes

_types = {}


def load_schemas(descriptor_set):
    with open(descriptor_set, "rb") as f:
        fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    factory = message_factory.MessageFactory(pool)
    for name in ("Frame", "Parcel", "AlarmStatus"):
        _types[name] = factory.GetPrototype(pool.FindMessageTypeByName("iotgw." + name))
    return _types


def T(name):
    return _types[name]


class Device:
    """One device connection; frames are read with a deadline."""

    def __init__(self, port, host="127.0.0.1", tls=None):
        """tls: an ssl.SSLContext for a gateway listener with TLS."""
        self.sock = socket.create_connection((host, port), timeout=10)
        if tls:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""

    def send(self, frame):
        data = frame.SerializeToString()
        self.sock.sendall(_VarintBytes(len(data)) + data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def recv(self, timeout=10):
        """The next frame, or None when the gateway closed the connection."""
        end = time.time() + timeout
        while True:
            if self.buf:
                try:
                    n, pos = _DecodeVarint32(self.buf, 0)
                except IndexError:
                    n, pos = None, 0
                if n is not None and len(self.buf) >= pos + n:
                    f = T("Frame")()
                    f.ParseFromString(self.buf[pos:pos + n])
                    self.buf = self.buf[pos + n:]
                    return f
            left = end - time.time()
            if left <= 0:
                raise AssertionError("no frame from the gateway within %d s" % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue  # the deadline above decides
            except OSError:  # reset, or a TLS alert
                return None
            if not chunk:
                return None
            self.buf += chunk

    def expect(self, kind, timeout=10, skip=("ping",)):
        """The next frame of the given body kind (answering pings on the way)."""
        while True:
            f = self.recv(timeout)
            assert f is not None, "the gateway closed the connection while %s was expected" % kind
            body = f.WhichOneof("body")
            if body == "ping" and "ping" in skip:
                pong = T("Frame")()
                pong.pong.nonce = f.ping.nonce
                self.send(pong)
                continue
            assert body == kind, "expected %s, got %s: %s" % (kind, body, f)
            return getattr(f, kind)

    def hello(self, device_id, token, methods=False, twin=False, c2d=False):
        f = T("Frame")()
        f.hello.protocol_version = 1
        f.hello.device_id = device_id
        f.hello.token = token
        f.hello.capabilities.methods = methods
        f.hello.capabilities.twin = twin
        f.hello.capabilities.c2d = c2d
        f.hello.client = "device_lib.py"
        self.send(f)

    def close(self):
        self.sock.close()
