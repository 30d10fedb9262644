#!/bin/sh
# iothub-emulator's fault injection, with Debian's python3 (python3-qpid-proton).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/emulator_faults.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${IOTGW_TEST_CERTS:?}"
