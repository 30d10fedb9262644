#!/bin/sh
# The official Event Hubs JavaScript SDK (@azure/event-hubs) against iothub-emulator's
# Event Hub-compatible endpoint, with devices over AMQP and MQTT and python3-qpid-proton.
exec "${srcdir:-.}/tests/interop/node_in_netns.sh" "${srcdir:-.}/tests/interop/node_eventhubs.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${IOTGW_TEST_CERTS:?}" "${builddir:-.}/tests/interop/node" \
    "${builddir:-.}/emulator/iothub-service" "$@"
