#!/bin/sh
# Runs transport_interop.py with Debian's python3, which alone sees python3-qpid-proton.
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/transport_interop.py" \
    "${builddir:-.}/tests/integration/transport-peer" "${IOTGW_TEST_CERTS:?}"
