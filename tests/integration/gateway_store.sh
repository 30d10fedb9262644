#!/bin/sh
# Runs gateway_store.py with Debian's python3 (python3-qpid-proton, python3-protobuf,
# python3-prometheus-client); its ENOSPC test needs root (unshare -m, mount -t tmpfs).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/gateway_store.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${builddir:-.}/gateway/iotgw" \
    "${builddir:-.}/tests/integration/schemas.desc" "${IOTGW_TEST_CERTS:?}" "$@"
