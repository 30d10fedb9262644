#!/bin/sh
# rhea over WebSocket against our server (npm packages: npm_install.sh).
set -eu
node_dir="${builddir:-.}/tests/interop/node"
rc=0
"${srcdir:-.}/tests/interop/npm_install.sh" || rc=$?
[ $rc = 0 ] || exit $rc
exec /usr/bin/python3 "${srcdir:-.}/tests/interop/rhea_interop.py" \
    "${builddir:-.}/tests/integration/transport-peer" "${IOTGW_TEST_CERTS:?}" "$node_dir" \
    "${builddir:-.}/emulator/iothub-emulator"
