"""iotgw end to end: BENCH_E2E_DEVICES (1,000) simulated devices (iotgw-devsim, C) send
alarm parcels as fast as their windows allow for BENCH_E2E_SECONDS (10) through one
gateway to the emulator; prints acknowledged msgs/s and ack latency p50/p99. The
emulator, the gateway and the simulator share the machine's 2 cores, so these are floors;
it also prints each process's CPU time per acknowledged parcel, and what that makes of
the gateway alone on one core.

BENCH_E2E_SCRAPE=1 scrapes the gateway's /metrics every second meanwhile, as Prometheus
would, to measure what the ops endpoint costs (run it with and without, one after the
other, and compare).

BENCH_E2E_STORE=1 gives the gateway a store (docs/store.md) on the disk (/var/tmp): acks
then mean "durable", and it also prints how fast the stored messages reached the hub (until
the store is empty). BENCH_E2E_STORE=backlog measures the drain after an outage: with the
hub down, BENCH_E2E_BACKLOG (3,600,000: an hour of 1,000 devices at 1 msg/s) messages
are stored as fast as the devices can send them; then the hub comes back and the drain
into it is timed.

BENCH_E2E_MQTT=1 has the devices speak IoT Hub's MQTT to the gateway's devices.mqtt
listener instead (mqtt-load, C: one TLS connection per device, QoS 1 telemetry of 66 bytes
pipelined up to a window of 64, as an SDK device's would be), to compare what a relayed
MQTT message costs with a protobuf parcel. BENCH_E2E_AMQP=1 does the same over IoT Hub's
AMQP to devices.amqp (amqp-load: BENCH_E2E_AMQP_PER_CONNECTION (1) devices on each TLS
connection, one as the Node and Python SDKs make, more as the C SDK multiplexes them; a
CBS put-token each, the same messages and window).

usage: bench_gateway_e2e.py IOTHUB_EMULATOR IOTGW SCHEMAS_DESC CERT_DIR DEVSIM [MQTT_LOAD [AMQP_LOAD]]"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import bench_gateway_scale as scale

DEVSIM = sys.argv[5]
MQTT_LOAD = sys.argv[6] if len(sys.argv) > 6 else os.path.join("tests", "bench", "mqtt-load")
AMQP_LOAD = sys.argv[7] if len(sys.argv) > 7 else os.path.join("tests", "bench", "amqp-load")
MQTT = os.environ.get("BENCH_E2E_MQTT") == "1"
AMQP = os.environ.get("BENCH_E2E_AMQP") == "1"
SDK = MQTT or AMQP  # devices on one of IoT Hub's protocols, through the gateway's listener for them
N = int(os.environ.get("BENCH_E2E_DEVICES", "1000"))
SECONDS = os.environ.get("BENCH_E2E_SECONDS", "10")
SCRAPE = os.environ.get("BENCH_E2E_SCRAPE") == "1"
STORE = os.environ.get("BENCH_E2E_STORE", "")
BACKLOG = int(os.environ.get("BENCH_E2E_BACKLOG", "3600000"))


def metric(port, name):
    """A sample of the gateway's /metrics (its first, without labels), or 0."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def wait_store_empty(port, limit_s):
    """Seconds until the gateway's store holds nothing (or limit_s)."""
    t0 = time.time()
    while time.time() - t0 < limit_s and metric(port, "iotgw_store_messages") > 0:
        time.sleep(0.2)
    return time.time() - t0


def scrape_every_second(port, stop, sizes):
    while not stop.wait(1.0):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            sizes.append(len(r.read()))


def cpu_seconds(pid):
    """User + system CPU time of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    store_dir = tempfile.mkdtemp(prefix="iotgw-bench-store-", dir="/var/tmp") if STORE else None
    store_yaml = (f"store:\n  path: {store_dir}\n  maxBytes: {16 << 30}\n  ttlSeconds: 86400\n" if STORE else "")
    devices_yaml = "  maxInFlight: 64\n"
    if SDK:
        devices_yaml += (f"  tls:\n    cert: {scale.CERTS}/server.pem\n    key: {scale.CERTS}/server.key\n"
                         f"  {'mqtt' if MQTT else 'amqp'}:\n    listen: 127.0.0.1:0\n")
    emu, gw, port, keys, d = scale.start_fleet(N, devices_yaml, extra_yaml=store_yaml)
    fleet = os.path.join(d, "fleet.txt")
    with open(fleet, "w") as f:
        f.writelines(f"{dev} {k}\n" for dev, k in keys.items())
    line = scale.readline_within(gw, 20)
    if SDK:
        assert line.startswith("listening: mqtt " if MQTT else "listening: amqp "), line
        sdk_port = int(line.rsplit(":", 1)[1])
        line = scale.readline_within(gw, 20)
    assert line.startswith("listening: ops "), line
    ops = int(line.rsplit(":", 1)[1])
    stop, sizes = threading.Event(), []
    scraper = threading.Thread(target=scrape_every_second, args=(ops, stop, sizes), daemon=True)
    if SCRAPE:
        scraper.start()
    if STORE == "backlog":
        return backlog(emu, gw, port, ops, fleet, store_dir)
    gw0, emu0 = cpu_seconds(gw.pid), cpu_seconds(emu.proc.pid)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t_start = time.time()
    if MQTT:
        out = subprocess.run([MQTT_LOAD, "--port", str(sdk_port), "--ca", f"{scale.CERTS}/ca.pem", "--fleet", fleet,
                              "--hub", scale.HOST, "--window", "64", "--duration", SECONDS],
                             capture_output=True, text=True, timeout=600)
    elif AMQP:
        out = subprocess.run([AMQP_LOAD, "--port", str(sdk_port), "--ca", f"{scale.CERTS}/ca.pem", "--fleet", fleet,
                              "--hub", scale.HOST, "--window", "64", "--duration", SECONDS,
                              "--devices-per-connection", os.environ.get("BENCH_E2E_AMQP_PER_CONNECTION", "1")],
                             capture_output=True, text=True, timeout=600)
    else:
        out = subprocess.run([DEVSIM, "--gateway", f"127.0.0.1:{port}", "--hub", scale.HOST, "--fleet", fleet,
                              "--rate", "0", "--duration", SECONDS, "--connect-rate", "2000", "--quiet"],
                             capture_output=True, text=True, timeout=600)
    drained_s = wait_store_empty(ops, 600) if STORE else 0
    hub_total = metric(ops, "iotgw_store_forwarded_total") if STORE else 0
    t_end = time.time()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    stop.set()
    if STORE:
        print(f"e2e with the store: the last stored message reached the hub {drained_s:.1f} s after the devices "
              f"stopped; {hub_total:.0f} stored messages reached the hub, {hub_total / (t_end - t_start):.0f} msgs/s "
              f"over the whole run (devices connecting included)")
    cpu = {"iotgw": cpu_seconds(gw.pid) - gw0, "emulator": cpu_seconds(emu.proc.pid) - emu0,
           "mqtt-load" if MQTT else "amqp-load" if AMQP else "devsim":
           (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)}
    gw.terminate()
    gw.wait(60)
    emu.stop()
    if store_dir:
        subprocess.run(["rm", "-rf", store_dir])
    if out.returncode:
        print(out.stderr[-2000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if SCRAPE:
        print(f"e2e: /metrics scraped {len(sizes)} times ({max(sizes) if sizes else 0} bytes each) meanwhile")
    what = "stored durably by iotgw (store on)" if STORE else "through iotgw to the hub"
    unit = (f"MQTT messages ({r.get('payload_bytes')} B, QoS 1, window 64)" if MQTT else
            f"AMQP messages ({r.get('payload_bytes')} B, window 64)" if AMQP else "parcels")
    print(f"e2e: {r['acked']} {unit} from {r['connected']} devices {what} in {SECONDS} s: "
          f"{r['acked_per_s']:.0f} msgs/s acknowledged (target >= 100,000); ack latency p50 {r['ack_ms_p50']:.2f} ms, "
          f"p99 {r['ack_ms_p99']:.2f} ms; {r.get('nacked', 0)} nacked" +
          (f"; {r['failed']} connections failed: {r.get('first_failure', '')}" if SDK and r.get("failed") else ""))
    if r["acked"] and cpu["iotgw"] > 0:  # (0 when iotgw runs under a wrapper such as perf)
        per = {k: v * 1e6 / r["acked"] for k, v in cpu.items()}
        print(f"e2e CPU per acknowledged {'MQTT message' if MQTT else 'AMQP message' if AMQP else 'parcel'}: " + ", ".join(f"{k} {v:.1f} us" for k, v in per.items()) +
              f"; iotgw alone on one core: {1e6 / per['iotgw']:,.0f} msgs/s")
    return out.returncode


def backlog(emu, gw, port, ops, fleet, store_dir):
    """An outage's backlog stored with the hub down, then drained into it."""
    emu.kill()
    per_device = max(1, BACKLOG // N)
    t0 = time.time()
    out = subprocess.run([DEVSIM, "--gateway", f"127.0.0.1:{port}", "--hub", scale.HOST, "--fleet", fleet,
                          "--rate", "0", "--messages", str(per_device), "--duration", "3600",
                          "--connect-rate", "2000", "--quiet"], capture_output=True, text=True, timeout=3600)
    stored_s = time.time() - t0
    r = json.loads(out.stdout.strip().splitlines()[-1])
    stored = metric(ops, "iotgw_store_messages")
    disk = metric(ops, "iotgw_store_disk_bytes")
    rss = scale.rss_kib(gw.pid)
    print(f"backlog: {r['acked']} messages of {r['connected']} devices stored with the hub down in {stored_s:.1f} s "
          f"({r['acked'] / stored_s:.0f} msgs/s durable, devices connecting included); store holds {stored:.0f} "
          f"messages, {disk / 2**20:.0f} MiB on disk; iotgw RSS {rss / 1024:.0f} MiB")
    emu.restart()
    t1 = time.time()
    f0 = metric(ops, "iotgw_store_forwarded_total")
    drained_s = wait_store_empty(ops, 3600)
    f1 = metric(ops, "iotgw_store_forwarded_total")
    print(f"backlog drain: {f1 - f0:.0f} stored messages reached the hub in {drained_s:.1f} s after it came back: "
          f"{(f1 - f0) / drained_s:.0f} msgs/s (target >= 20,000), hub connections and authentication included")
    gw.terminate()
    gw.wait(120)
    emu.stop()
    subprocess.run(["rm", "-rf", store_dir])
    return 0 if f1 - f0 >= r["acked"] else 1


if __name__ == "__main__":
    sys.exit(main())
