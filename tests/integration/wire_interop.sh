#!/bin/sh
# Runs wire_interop.py with Debian's python3, which alone sees python3-protobuf.
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/wire_interop.py" \
    "${builddir:-.}/devices/iotgw-parcel" "${builddir:-.}/tests/integration/schemas.desc"
