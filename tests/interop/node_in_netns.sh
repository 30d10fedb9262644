#!/bin/sh
# Run "/usr/bin/python3 SCRIPT ARGS..." for a test of the official Azure IoT Node SDKs,
# after installing them. The SDKs' ports are fixed (443, 5671 and 8883), so the test runs
# in a network namespace of its own, where those ports on 127.0.0.1 are free (root needed;
# skipped otherwise).
set -eu
rc=0
"${srcdir:-.}/tests/interop/npm_install.sh" || rc=$?
[ $rc = 0 ] || exit $rc
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null 2>&1 || ! unshare -n true 2>/dev/null; then
    echo "SKIP: the Node SDKs only use ports 443, 5671 and 8883; this test needs root to give them a network namespace"
    exit 77
fi
exec unshare -n sh -c 'ip link set lo up && exec /usr/bin/python3 "$0" "$@"' "$@"
