#!/bin/sh
# rhea over WebSocket against our server. Installs the npm packages of tests/interop into
# the build tree once; skips (exit 77) with a clear message when npm cannot install them.
set -eu
node_dir="${builddir:-.}/tests/interop/node"
if [ ! -f "$node_dir/.installed" ]; then
    if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
        echo "SKIP: node and npm are needed for the rhea interop test (apt-get install nodejs npm)"
        exit 77
    fi
    mkdir -p "$node_dir"
    cp "${srcdir:-.}/tests/interop/package.json" "$node_dir/"
    if ! (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error >npm-install.log 2>&1); then
        echo "SKIP: npm could not install rhea and ws (registry unreachable?); see $node_dir/npm-install.log"
        exit 77
    fi
    touch "$node_dir/.installed"
fi
exec /usr/bin/python3 "${srcdir:-.}/tests/interop/rhea_interop.py" \
    "${builddir:-.}/tests/integration/transport-peer" "${IOTGW_TEST_CERTS:?}" "$node_dir"
