#!/bin/sh
# Runs kubernetes_shards.py with Debian's python3 (python3-yaml, python3-protobuf,
# python3-prometheus-client); kubectl renders deploy/kubernetes (skipped without it).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/kubernetes_shards.py" "${srcdir:-.}" \
    "${builddir:-.}/emulator/iothub-emulator" "${builddir:-.}/gateway/iotgw" "${builddir:-.}/devices/iotgw-devsim" \
    "${builddir:-.}/tests/integration/schemas.desc" "${IOTGW_TEST_CERTS:?}"
