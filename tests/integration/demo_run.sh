#!/bin/sh
# The demo's own run (demo/demo.sh, what ./quickstart demo shows), on ports the system
# chooses so that it never collides with another test.
set -eu
DEMO_HUB_PORT=0 DEMO_AMQPS_PORT=0 DEMO_DEVICE_PORT=0 DEMO_OPS_PORT=0 sh "${srcdir:-.}/demo/demo.sh" "${builddir:-.}" "${srcdir:-.}" \
    >demo_run.out 2>&1 && rc=0 || rc=$?
cat demo_run.out
grep -q "demo: both scenarios succeeded" demo_run.out || rc=1
if [ "$rc" -eq 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit "$rc"
