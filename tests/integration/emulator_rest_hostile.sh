#!/bin/sh
# iothub-emulator's REST API against hostile requests (Python's standard library over TLS).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/emulator_rest_hostile.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${IOTGW_TEST_CERTS:?}"
