#!/bin/sh
# Runs gateway_ops.py with Debian's python3 (python3-qpid-proton, python3-protobuf).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/gateway_ops.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${builddir:-.}/gateway/iotgw" \
    "${builddir:-.}/tests/integration/schemas.desc" "${IOTGW_TEST_CERTS:?}"
