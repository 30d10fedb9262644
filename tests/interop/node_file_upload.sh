#!/bin/sh
# File upload with the official Azure IoT Node device and service SDKs against
# iothub-emulator, Azurite (npm azurite) as the blob endpoint.
exec "${srcdir:-.}/tests/interop/node_in_netns.sh" "${srcdir:-.}/tests/interop/node_file_upload.py" \
    "${builddir:-.}/emulator/iothub-emulator" "${IOTGW_TEST_CERTS:?}" "${builddir:-.}/tests/interop/node"
