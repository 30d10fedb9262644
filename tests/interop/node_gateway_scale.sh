#!/bin/sh
# 200 devices of the official Azure IoT Node device SDK (MQTT and AMQP, GatewayHostName) and 1,000
# protobuf devices through one iotgw at once; one SDK device disabled at the hub meanwhile.
exec "${srcdir:-.}/tests/interop/node_in_netns.sh" "${srcdir:-.}/tests/interop/node_gateway_scale.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${builddir:-.}/gateway/iotgw" "${builddir:-.}/devices/iotgw-devsim" \
    "${IOTGW_TEST_CERTS:?}" "${builddir:-.}/tests/interop/node"
