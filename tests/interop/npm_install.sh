#!/bin/sh
# Install tests/interop's npm packages into the build tree once. Exit 77 (skip) with a
# clear message when node/npm are missing or the registry cannot be reached.
set -eu
node_dir="${builddir:-.}/tests/interop/node"
if [ -f "$node_dir/.installed" ] && cmp -s "${srcdir:-.}/tests/interop/package.json" "$node_dir/package.json"; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "SKIP: node and npm are needed for the Node interop tests (apt-get install nodejs npm)"
    exit 77
fi
mkdir -p "$node_dir"
rm -f "$node_dir/.installed"
cp "${srcdir:-.}/tests/interop/package.json" "$node_dir/"
# Two tests may start at once under make -j: one installs, the other waits for it.
if mkdir "$node_dir/.lock" 2>/dev/null; then
    rc=0
    (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error >npm-install.log 2>&1) || rc=$?
    [ $rc = 0 ] && touch "$node_dir/.installed"
    rmdir "$node_dir/.lock"
else
    i=0
    while [ -d "$node_dir/.lock" ] && [ $i -lt 600 ]; do sleep 1; i=$((i + 1)); done
fi
if [ ! -f "$node_dir/.installed" ]; then
    echo "SKIP: npm could not install the interop packages (registry unreachable?); see $node_dir/npm-install.log"
    exit 77
fi
