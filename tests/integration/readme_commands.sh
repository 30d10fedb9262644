#!/bin/sh
# README's "Converting frames" commands, run as written: the code block is taken from the
# README itself (so the two cannot drift), in a folder where build/ is this build.
set -eu
src=${srcdir:-.}
build=$(cd "${builddir:-.}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$build" "$work/build"
awk '/^## Converting frames/ {on = 1; next} on && /^```sh/ {grab = 1; next} grab && /^```/ {exit} grab' \
    "$src/README.md" >"$work/commands.sh"
[ -s "$work/commands.sh" ] || { echo "no 'Converting frames' commands in README.md"; echo "0 passed, 1 failed"; exit 1; }
rc=0
(cd "$work" && sh -eu commands.sh) >"$work/out" 2>&1 || rc=$?
cat "$work/out"
# the round trip gives the telemetry back, the Parcel decodes as its type, --help answers
grep -q '"seq":"1"' "$work/out" || rc=1
grep -q '"type":"iotgw.AlarmStatus","content":{"alarmActive":true' "$work/out" || rc=1
grep -q "^Usage: iotgw-parcel" "$work/out" || rc=1
if [ "$rc" -eq 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit "$rc"
