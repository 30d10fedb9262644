#!/bin/sh
# iothub-emulator's /metrics against what its clients did (Debian's python3-qpid-proton and
# python3-prometheus-client), and docker/grafana-dashboard.json against gateway/ops.c.
# As root the test runs in a network namespace of its own whose loopback interface also
# holds 192.0.2.1 (TEST-NET-1), so that a client can come from an address that is not
# loopback; otherwise that case is skipped.
set -eu
test=${srcdir:-.}/tests/integration/emulator_metrics.py
set -- "${builddir:-.}/emulator/iothub-emulator" "${IOTGW_TEST_CERTS:?}" "${srcdir:-.}"
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 &&
    unshare -n true 2>/dev/null; then
    exec unshare -n sh -c 'ip link set lo up && ip addr add 192.0.2.1/32 dev lo &&
        IOTGW_TEST_OTHER_ADDR=192.0.2.1 exec /usr/bin/python3 "$0" "$@"' "$test" "$@"
fi
exec /usr/bin/python3 "$test" "$@"
