#!/bin/sh
# iothub-service against iothub-emulator, with Debian's python3 (python3-qpid-proton).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/service_cli.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${builddir:-.}/emulator/iothub-service" "${IOTGW_TEST_CERTS:?}"
