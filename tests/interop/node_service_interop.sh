#!/bin/sh
# The official Azure IoT Node service SDK (azure-iothub) against iothub-emulator, with a
# device of the device SDK. The SDKs' ports are fixed, so the test runs in a network namespace of
# its own (root needed; skipped otherwise) where those ports on 127.0.0.1 are free.
set -eu
rc=0
"${srcdir:-.}/tests/interop/npm_install.sh" || rc=$?
[ $rc = 0 ] || exit $rc
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null 2>&1 || ! unshare -n true 2>/dev/null; then
    echo "SKIP: the Node SDK only uses ports 443 and 5671; this test needs root to give it a network namespace"
    exit 77
fi
exec unshare -n sh -c 'ip link set lo up && exec /usr/bin/python3 "$0" "$@"' \
    "${srcdir:-.}/tests/interop/node_service_interop.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${IOTGW_TEST_CERTS:?}" "${builddir:-.}/tests/interop/node" \
    "${builddir:-.}/emulator/iothub-service"
