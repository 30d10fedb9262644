#!/bin/sh
# The official Azure IoT Node service SDK (azure-iothub) against iothub-emulator, with a
# device of the device SDK.
exec "${srcdir:-.}/tests/interop/node_in_netns.sh" "${srcdir:-.}/tests/interop/node_service_interop.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${IOTGW_TEST_CERTS:?}" "${builddir:-.}/tests/interop/node" \
    "${builddir:-.}/emulator/iothub-service"
