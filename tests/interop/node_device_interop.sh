#!/bin/sh
# The official Azure IoT Node device SDK against iothub-emulator, over Amqp (5671),
# AmqpWs (443), Mqtt (8883) and MqttWs (443); and through iotgw (GatewayHostName) over the same four.
exec "${srcdir:-.}/tests/interop/node_in_netns.sh" "${srcdir:-.}/tests/interop/node_device_interop.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${builddir:-.}/gateway/iotgw" "${IOTGW_TEST_CERTS:?}" \
    "${builddir:-.}/tests/interop/node" "$@"
