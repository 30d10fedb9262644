#!/bin/sh
# Runs gateway_amqp.py with Debian's python3 (python3-qpid-proton as the SDK devices).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/gateway_amqp.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${builddir:-.}/gateway/iotgw" \
    "${builddir:-.}/tests/integration/schemas.desc" "${IOTGW_TEST_CERTS:?}" "$@"
