#!/bin/sh
# iothub-emulator's MQTT endpoint with Debian's python3 (python3-paho-mqtt, python3-qpid-proton)
# and mosquitto's clients.
set -eu
exec /usr/bin/python3 "${srcdir:-.}/tests/integration/emulator_mqtt.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${IOTGW_TEST_CERTS:?}"
