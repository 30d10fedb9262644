#!/bin/sh
# The transport suite again on libwebsockets' libuv backend (the default is poll; the
# gateway picks libuv for large fleets): both backends stay working (docs/event-loop.md).
IOTGW_EVENT_LOOP=libuv exec "${builddir:-.}/tests/integration/test_transport"
