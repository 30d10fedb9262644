"""iotgw at scale: BENCH_DEVICES (10,000) devices connect to one gateway, each with its own
hub identity on the emulator; prints the gateway's resident memory per connected device
(its device connection, session and upstream AMQP state together), and how long it took.
Devices are asyncio connections from this process; the emulator is a separate process.

usage: bench_gateway_scale.py IOTHUB_EMULATOR IOTGW SCHEMAS_DESC CERT_DIR"""
import asyncio
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from emulator_lib import Emulator, fleet_registry, random_key, sas_token, HOST  # noqa: E402
from device_lib import T, load_schemas  # noqa: E402
from iotgw_testlib import listening_ports, readline_within  # noqa: E402
from google.protobuf.internal.encoder import _VarintBytes  # noqa: E402

EMULATOR, IOTGW, SCHEMAS, CERTS = sys.argv[1:5]
N = int(os.environ.get("BENCH_DEVICES", "10000"))
load_schemas(SCHEMAS)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def hello_bytes(device, key):
    f = T("Frame")()
    f.hello.protocol_version = 1
    f.hello.device_id = device
    f.hello.token = sas_token(f"{HOST}/devices/{device}", key, 7200)
    f.hello.capabilities.methods = True
    data = f.SerializeToString()
    return _VarintBytes(len(data)) + data


async def connect_all(port, hellos, conns):
    sem = asyncio.Semaphore(500)  # connections being set up at once

    async def one(h):
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(h)
            await w.drain()
            data = await asyncio.wait_for(r.read(64), 60)
            f = T("Frame")()
            f.ParseFromString(data[1:])  # Welcome fits in one small frame
            assert f.WhichOneof("body") == "welcome", f
            conns.append((r, w))

    await asyncio.gather(*(one(h) for h in hellos))


def start_fleet(n, gateway_yaml="", extra_yaml=""):
    """The emulator and iotgw with a fleet of n devices; (emulator, iotgw process, device
    port, {id: key}, work dir)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 1000)), hard))
    keys = {f"d{i:05d}": random_key() for i in range(n)}
    emu = Emulator(EMULATOR, CERTS, registry=fleet_registry(keys), extra=["--max-tokens", "100000"])
    d = tempfile.mkdtemp(prefix="iotgw-bench-")
    config = os.path.join(d, "iotgw.yaml")
    with open(config, "w") as f:
        f.write(f"hub:\n  hostName: {HOST}\n  port: {emu.wss}\n  caFile: {emu.ca}\n  authRate: 100000\n"
                f"ops:\n  listen: 127.0.0.1:0\ndevices:\n  listen: 127.0.0.1:0\n  keepaliveSeconds: 600\n{gateway_yaml}{extra_yaml}fleet:\n  devices:\n")
        f.writelines(f"    - {{id: {dev}, key: {k}}}\n" for dev, k in keys.items())
    log = open(os.path.join(d, "iotgw.log"), "w")
    gw = subprocess.Popen([IOTGW, "--config", config, "--log-level", "warn"], stdout=subprocess.PIPE,
                          stderr=log, text=True)
    port = listening_ports(gw, seconds=60)[0]
    return emu, gw, port, keys, d


def main():
    emu, gw, port, keys, d = start_fleet(N)
    time.sleep(0.5)
    base = rss_kib(gw.pid)
    hellos = [hello_bytes(dev, k) for dev, k in keys.items()]
    conns = []
    t0 = time.time()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(connect_all(port, hellos, conns))
    t1 = time.time()
    # until the hub has every device: its log shows each one's links attached
    deadline = time.time() + 300
    while time.time() < deadline:
        with open(os.path.join(emu.dir, "emulator.log")) as f:
            attached = f.read().count("methods link \"methods-responses")
        if attached >= N:
            break
        time.sleep(1)
    t2 = time.time()
    time.sleep(1)
    rss = rss_kib(gw.pid)
    print(f"scale: {len(conns)} devices connected to iotgw in {t1 - t0:.1f} s, all online at the hub after "
          f"{t2 - t0:.1f} s ({attached} method links attached)")
    print(f"scale: iotgw RSS {base} KiB idle, {rss} KiB with {len(conns)} devices: "
          f"{(rss - base) / max(1, len(conns)):.1f} KiB per connected device (target <= 16 KiB)")
    for r, w in conns:
        w.close()
    loop.close()
    gw.terminate()
    gw.wait(60)
    emu.stop()
    return 0 if len(conns) == N and attached >= N else 1


if __name__ == "__main__":
    sys.exit(main())
