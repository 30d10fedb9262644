#!/bin/sh
# Runs emulator_amqp.py with Debian's python3, which alone sees python3-qpid-proton.
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/emulator_amqp.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${IOTGW_TEST_CERTS:?}"
