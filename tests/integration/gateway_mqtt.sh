#!/bin/sh
# Runs gateway_mqtt.py with Debian's python3 (python3-paho-mqtt, python3-qpid-proton,
# python3-protobuf) and mosquitto_pub (mosquitto-clients).
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/gateway_mqtt.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${builddir:-.}/gateway/iotgw" \
    "${builddir:-.}/tests/integration/schemas.desc" "${IOTGW_TEST_CERTS:?}" "$@"
