#!/bin/sh
# README's walkthrough ("Where the programs are" and "A hub and a fleet of your own"), run
# as written: every ```sh block that follows a "<!-- walkthrough -->" line, taken from the
# README itself (so the two cannot drift), in order, as one `bash -euo pipefail` script.
# It runs where a newcomer would run it: a folder standing for the repository root (the
# source tree's entries linked in, build/ this build), with nothing else set. "Pointing it
# at a real IoT Hub" needs a real hub and is not run here.
#
# The README's ports are fixed (8443, 5671, 7000, 9600); as root the commands run in a
# network namespace of their own, so that they never meet another test or a running demo;
# otherwise they run here, and the test is skipped (77) when one of the ports is taken.
# Everything the commands start carries a mark in its environment: what is still running
# when they end is a failure (the README's "Stop" block must stop it) and is killed, by PID,
# on any exit. The whole run is bounded by `timeout`.
set -eu
src=$(cd "${srcdir:-.}" && pwd)
build=$(cd "${builddir:-.}" && pwd)
work=$(mktemp -d)
mark="readme-walkthrough-$$-$(date +%s%N)"
t0=$(date +%s)

marked() { # the PIDs of the processes started by the README's commands
    grep -lsa "IOTGW_README_RUN=$mark" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3
}
cleanup() {
    for p in $(marked); do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in $(marked); do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
result() {
    echo "readme_walkthrough: $(($(date +%s) - t0)) s"
    if [ "$1" -eq 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
    exit "$1"
}

# the repository root as a newcomer has it after ./quickstart test: sources, and build/
mkdir "$work/root"
for f in "$src"/* "$src"/.[!.]*; do
    [ -e "$f" ] || continue
    case ${f##*/} in build | .git) continue ;; esac
    ln -s "$f" "$work/root/${f##*/}"
done
ln -s "$build" "$work/root/build"

# the walkthrough's blocks: a marker line, then at once a ```sh block
awk -v script="$work/walkthrough.sh" '
    want { if ($0 == "```sh") { grab = 1; blocks++ } else { bad = bad " " NR }; want = 0; next }
    $0 == "<!-- walkthrough -->" { want = 1; markers++; next }
    grab && /^```/ { grab = 0; next }
    grab { print > script }
    END { printf "%d %d%s\n", markers, blocks, bad ? " line" bad : "" }' "$src/README.md" >"$work/found"
read -r markers blocks rest <"$work/found"
if [ "$markers" -eq 0 ] || [ -n "$rest" ]; then
    echo "README.md: no walkthrough, or a \"<!-- walkthrough -->\" marker not followed by a \`\`\`sh block ($rest)"
    result 1
fi
echo "== README.md: $blocks walkthrough blocks"
cat "$work/walkthrough.sh"

limit=100 # seconds; the commands take about 12
run() { IOTGW_README_RUN=$mark timeout -k 5 "$limit" "$@"; }
cd "$work/root"
rc=0
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 &&
    unshare -n true 2>/dev/null; then
    echo "== running them in a network namespace of their own"
    run unshare -n sh -c 'ip link set lo up && exec bash -euo pipefail "$0"' "$work/walkthrough.sh" \
        >"$work/out" 2>&1 || rc=$?
else
    # the ports the commands name, and the gateway's default ops port
    for port in $(grep -o '127\.0\.0\.1:[0-9]*' "$work/walkthrough.sh" | cut -d: -f2 | sort -u) 9600; do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            echo "port $port is in use here, and there is no network namespace to run in (not root): skipped"
            exit 77
        fi
    done
    echo "== running them here"
    run bash -euo pipefail "$work/walkthrough.sh" >"$work/out" 2>&1 || rc=$?
fi
tr '\r' '\n' <"$work/out"
echo "== the commands ended with status $rc"
[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || echo "they did not end within $limit s"

# what they should have shown: devsim's summary with every parcel acknowledged, and the
# hub's telemetry from the fleet's devices as the monitor printed it
/usr/bin/python3 - "$work/out" "$work/root" <<'EOF' || rc=1
import json, os, sys
out, root = sys.argv[1], sys.argv[2]
fails = []
lines = open(out, errors="replace").read().replace("\r", "\n").splitlines()
summaries = [json.loads(l) for l in lines if l.startswith('{"devices":')]
if len(summaries) != 1:
    fails.append(f"{len(summaries)} iotgw-devsim summaries in the output, not 1")
else:
    s = summaries[0]
    if not (s["devices"] > 0 and s["connected"] == s["devices"] and s["sent"] > 0 and s["acked"] == s["sent"]
            and s["nacked"] == 0 and s["unresolved"] == 0 and s["errors"] == 0):
        fails.append(f"iotgw-devsim: not every device connected and every parcel acknowledged: {s}")
    else:
        print(f"devsim: {s['devices']} devices, {s['acked']} of {s['sent']} parcels acknowledged")
fleet = set()
try:
    fleet = {l.split()[0] for l in open(os.path.join(root, "fleet.txt")) if l.strip() and not l.startswith("#")}
except OSError as e:
    fails.append(f"fleet.txt: {e}")
seen = []
try:
    for l in open(os.path.join(root, "monitor.out")):
        m = json.loads(l)
        if m["device"] in fleet and m["properties"].get("parcelType") == "iotgw.AlarmStatus" \
                and m["body"]["type"] == "iotgw.AlarmStatus":  # telemetry.encoding: json
            seen.append(l.strip())
except (OSError, ValueError, KeyError, TypeError) as e:
    fails.append(f"monitor.out: {e!r}")
if len(seen) < 5:
    fails.append(f"the monitor printed {len(seen)} alarm statuses from the fleet's devices, not 5")
elif seen[0] not in (l.strip() for l in lines):
    fails.append("the first telemetry message was not shown (head -n 1 monitor.out)")
else:
    print(f"monitor: {len(seen)} alarm statuses from the fleet, the first from {json.loads(seen[0])['device']}")
for f in fails:
    print("FAIL:", f)
sys.exit(1 if fails else 0)
EOF

sleep 0.5 # what the commands stopped has a moment to go
left=$(for p in $(marked); do ps -o pid=,args= -p "$p" 2>/dev/null || true; done)
if [ -n "$left" ] && [ "$rc" -eq 0 ]; then
    echo "FAIL: the README's commands left processes running:"
    echo "$left"
    rc=1
elif [ -n "$left" ]; then
    echo "stopping what the failed commands left running:"
    echo "$left"
fi
result "$rc"
