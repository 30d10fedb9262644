"""A python3-paho-mqtt client for IoT Hub's MQTT, shared by the tests of the emulator's
MQTT endpoint (emulator_mqtt.py) and of the gateway's (gateway_mqtt.py)."""
import queue
import ssl
import threading
import time

import paho.mqtt.client as mqtt


def user_name(device, module=None, host=None):
    return f"{host}/{device}/{module + '/' if module else ''}?api-version=2021-04-12"


def events_topic(device, bag="", module=None):
    return f"devices/{device}/{'modules/' + module + '/' if module else ''}messages/events/{bag}"


class Paho:
    """A python3-paho-mqtt client in its own network thread, with what it saw kept in
    queues. It never reconnects by itself: a connection the hub closes stays closed."""

    def __init__(self, client_id, user=None, password=None, port=None, clean=True, keepalive=60,
                 transport="tcp", protocol=mqtt.MQTTv311, will=None, ca=None, cert=None):
        self.client = c = mqtt.Client(client_id=client_id, clean_session=clean, protocol=protocol,
                                      transport=transport, reconnect_on_failure=False)
        ctx = ssl.create_default_context(cafile=ca)
        if cert:  # a client certificate: "path/name" of name.pem and name.key
            ctx.load_cert_chain(cert + ".pem", cert + ".key")
        c.tls_set_context(ctx)
        if transport == "websockets":
            c.ws_set_options(path="/$iothub/websocket")
        if user is not None:
            c.username_pw_set(user, password)
        if will:
            c.will_set(*will)
        self.connacks, self.messages, self.subacks = queue.Queue(), queue.Queue(), queue.Queue()
        self.closed = threading.Event()
        self.close_rc = None

        def on_connect(client, userdata, flags, rc):
            self.connacks.put((rc, flags.get("session present", 0)))

        def on_disconnect(client, userdata, rc):
            self.close_rc = rc
            self.closed.set()

        c.on_connect = on_connect
        c.on_disconnect = on_disconnect
        c.on_message = lambda client, userdata, msg: self.messages.put(msg)
        c.on_subscribe = lambda client, userdata, mid, granted: self.subacks.put((mid, granted))
        c.connect("127.0.0.1", port, keepalive)
        c.loop_start()

    def connack(self, timeout=10):
        """(return code, session present) of the CONNACK."""
        try:
            return self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no CONNACK within %d s" % timeout) from None

    def subscribe(self, topic, qos=1, timeout=10):
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        end = time.time() + timeout
        while time.time() < end:
            try:
                got, granted = self.subacks.get(timeout=0.1)
            except queue.Empty:
                if self.closed.is_set():
                    raise AssertionError(f"connection closed instead of a SUBACK for {topic}")
                continue
            if got == mid:
                return granted
        raise AssertionError(f"no SUBACK for {topic}")

    def publish(self, topic, payload=b"", qos=1, retain=False, timeout=10):
        """Publish; for QoS 1, wait for its PUBACK and say whether it came."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return info.rc == mqtt.MQTT_ERR_SUCCESS
        end = time.time() + timeout
        while time.time() < end and not info.is_published() and not self.closed.is_set():
            time.sleep(0.02)
        return info.is_published()

    def message(self, timeout=10):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_closed(self, timeout=10):
        """The on_disconnect rc once the connection is gone (AssertionError if it stays)."""
        assert self.closed.wait(timeout), "the connection stayed open"
        return self.close_rc

    def stop(self):
        if not self.closed.is_set():
            self.client.disconnect()
            self.closed.wait(5)
        self.client.loop_stop()


# hand-made packets, for what no real client sends on purpose

def mqtt_str(s):
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def packet(first, body):
    n, length = len(body), b""
    while True:
        digit, n = n % 128, n // 128
        length += bytes([digit | (0x80 if n else 0)])
        if not n:
            break
    return bytes([first]) + length + body


def connect_packet(client_id, user=None, password=None, keepalive=60, clean=True, will=None, level=4,
                   name="MQTT"):
    flags = (0x02 if clean else 0) | (0x80 if user is not None else 0) | (0x40 if password is not None else 0)
    payload = mqtt_str(client_id)
    if level == 5:
        payload = b""
    if will:
        flags |= 0x04
        payload += mqtt_str(will[0]) + mqtt_str(will[1])
    if user is not None:
        payload += mqtt_str(user)
    if password is not None:
        payload += mqtt_str(password)
    head = mqtt_str(name) + bytes([level, flags]) + keepalive.to_bytes(2, "big")
    if level == 5:  # no properties; the client id follows them
        head += b"\x00"
        payload = mqtt_str(client_id) + payload
    return packet(0x10, head + payload)
