"""iotgw end to end: BENCH_E2E_DEVICES (1,000) simulated devices (iotgw-devsim, C) send
alarm parcels as fast as their windows allow for BENCH_E2E_SECONDS (10) through one
gateway to the emulator; prints acknowledged msgs/s and ack latency p50/p99. The
emulator, the gateway and the simulator share the machine's 2 cores, so these are floors;
it also prints each process's CPU time per acknowledged parcel, and what that makes of
the gateway alone on one core.

BENCH_E2E_SCRAPE=1 scrapes the gateway's /metrics every second meanwhile, as Prometheus
would, to measure what the ops endpoint costs (run it with and without, one after the
other, and compare).

usage: bench_gateway_e2e.py IOTHUB_EMULATOR IOTGW SCHEMAS_DESC CERT_DIR DEVSIM"""
import json
import os
import resource
import subprocess
import sys
import threading
import urllib.request

import bench_gateway_scale as scale

DEVSIM = sys.argv[5]
N = int(os.environ.get("BENCH_E2E_DEVICES", "1000"))
SECONDS = os.environ.get("BENCH_E2E_SECONDS", "10")
SCRAPE = os.environ.get("BENCH_E2E_SCRAPE") == "1"


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
    emu, gw, port, keys, d = scale.start_fleet(N, "  maxInFlight: 64\n")
    fleet = os.path.join(d, "fleet.txt")
    with open(fleet, "w") as f:
        f.writelines(f"{dev} {k}\n" for dev, k in keys.items())
    line = scale.readline_within(gw, 20)
    assert line.startswith("listening: ops "), line
    ops = int(line.rsplit(":", 1)[1])
    stop, sizes = threading.Event(), []
    scraper = threading.Thread(target=scrape_every_second, args=(ops, stop, sizes), daemon=True)
    if SCRAPE:
        scraper.start()
    gw0, emu0 = cpu_seconds(gw.pid), cpu_seconds(emu.proc.pid)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([DEVSIM, "--gateway", f"127.0.0.1:{port}", "--hub", scale.HOST, "--fleet", fleet,
                          "--rate", "0", "--duration", SECONDS, "--connect-rate", "2000", "--quiet"],
                         capture_output=True, text=True, timeout=600)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    stop.set()
    cpu = {"iotgw": cpu_seconds(gw.pid) - gw0, "emulator": cpu_seconds(emu.proc.pid) - emu0,
           "devsim": (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)}
    gw.terminate()
    gw.wait(60)
    emu.stop()
    if out.returncode:
        print(out.stderr[-2000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if SCRAPE:
        print(f"e2e: /metrics scraped {len(sizes)} times ({max(sizes) if sizes else 0} bytes each) meanwhile")
    print(f"e2e: {r['acked']} parcels from {r['connected']} devices through iotgw to the hub in {SECONDS} s: "
          f"{r['acked_per_s']:.0f} msgs/s acknowledged (target >= 100,000); ack latency p50 {r['ack_ms_p50']:.2f} ms, "
          f"p99 {r['ack_ms_p99']:.2f} ms; {r['nacked']} nacked")
    if r["acked"] and cpu["iotgw"] > 0:  # (0 when iotgw runs under a wrapper such as perf)
        per = {k: v * 1e6 / r["acked"] for k, v in cpu.items()}
        print("e2e CPU per acknowledged parcel: " + ", ".join(f"{k} {v:.1f} us" for k, v in per.items()) +
              f"; iotgw alone on one core: {1e6 / per['iotgw']:,.0f} msgs/s")
    return out.returncode


if __name__ == "__main__":
    sys.exit(main())
