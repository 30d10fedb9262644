#!/bin/sh
# Runs upstream_pool.py with Debian's python3, which alone sees python3-qpid-proton.
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/upstream_pool.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${builddir:-.}/tests/integration/upstream-driver" \
    "${IOTGW_TEST_CERTS:?}"
