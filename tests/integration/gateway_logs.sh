#!/bin/sh
# Runs gateway_logs.py with Debian's python3 (python3-qpid-proton, python3-protobuf).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/gateway_logs.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${builddir:-.}/gateway/iotgw" \
    "${builddir:-.}/tests/integration/schemas.desc" "${IOTGW_TEST_CERTS:?}"
