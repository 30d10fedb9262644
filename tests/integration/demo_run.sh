#!/bin/sh
# The demo's own run (demo/demo.sh, what ./quickstart demo shows), on ports the system
# chooses so that it never collides with another test. Everything it starts carries a
# mark in its environment, so that what it leaves behind (a watchdog's sleep, a device)
# is found afterwards.
set -eu
mark="demo-run-$$-$(date +%s%N)"
DEMO_HUB_PORT=0 DEMO_AMQPS_PORT=0 DEMO_MQTTS_PORT=0 DEMO_DEVICE_PORT=0 DEMO_OPS_PORT=0 IOTGW_DEMO_RUN=$mark \
    sh "${srcdir:-.}/demo/demo.sh" "${builddir:-.}" "${srcdir:-.}" >demo_run.out 2>&1 && rc=0 || rc=$?
cat demo_run.out
grep -q "demo: both scenarios succeeded" demo_run.out || rc=1
sleep 0.5 # what the demo stopped has a moment to go
left=$(grep -lsa "IOTGW_DEMO_RUN=$mark" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | while read -r p; do
    ps -o pid=,args= -p "$p" 2>/dev/null || true
done)
if [ -n "$left" ]; then
    echo "the demo left processes running:"
    echo "$left"
    rc=1
fi
if [ "$rc" -eq 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit "$rc"
