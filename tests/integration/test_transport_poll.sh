#!/bin/sh
# The transport suite again on libwebsockets' poll() backend (the default is libuv):
# both backends stay working (docs/event-loop.md).
IOTGW_EVENT_LOOP=poll exec "${builddir:-.}/tests/integration/test_transport"
