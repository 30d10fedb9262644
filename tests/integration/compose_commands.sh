#!/bin/sh
# Runs compose_commands.py with Debian's python3 (python3-yaml).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/compose_commands.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${IOTGW_TEST_CERTS:?}" "${srcdir:-.}"
