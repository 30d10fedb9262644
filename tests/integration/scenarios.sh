#!/bin/sh
# The alarm and reboot scenarios, with Debian's python3 (python3-qpid-proton).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/scenarios.py" "${builddir:-.}" "${srcdir:-.}" \
    "${IOTGW_TEST_CERTS:?}"
