#!/bin/sh
# Runs hostile_hub.py with Debian's python3 (python3-qpid-proton, python3-protobuf).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/hostile_hub.py" \
    "${builddir:-.}/gateway/iotgw" "${builddir:-.}/tests/integration/schemas.desc" "${IOTGW_TEST_CERTS:?}" "$@"
