#!/bin/sh
# What `make install` puts in place, used from there and from nothing of the source or
# build tree (docs/installing.md):
#  - the installed examples/device_hello.c, compiled with `pkg-config --cflags --libs
#    iotgw-device` against the installed header and library, linked shared (ldd names the installed
#    libiotgw-device.so.1) and static; each build sends one parcel through the installed
#    iotgw to the installed iothub-emulator and gets its acknowledgement, and a wrong key
#    is refused;
#  - the installed example configuration passes the installed iotgw's --check-config;
#  - the manual pages, when configure found help2man.
set -eu
src=$(cd "${srcdir:-.}" && pwd)
build=$(cd "${builddir:-.}" && pwd)
work=$(mktemp -d /tmp/iotgw-make-install.XXXXXX)
root=$work/root
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "${srcdir:-.}/tests/package/checks.sh"
# a value configure wrote into the build's Makefile (CC, the sanitizers' flags, help2man)
configured() { sed -n "s/^$1 = //p" "$build/Makefile"; }
# installed FILE-PATTERN: the one installed file whose path ends so
installed() { find "$root" -path "*/$1" | head -1; }

# the tests' make (MAKEFLAGS would tie it to make check's jobserver, which it cannot use)
env -u MAKEFLAGS -u MFLAGS make -s -C "$build" install DESTDIR="$root" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; bad "make install DESTDIR=$root"; finish; }
ok "make install DESTDIR=$root"

pc=$(installed pkgconfig/iotgw-device.pc)
iotgw=$(installed bin/iotgw)
emulator=$(installed bin/iothub-emulator)
certs=$(installed bin/iothub-emulator-certs)
example=$(installed examples/iotgw.yaml)
hello=$(installed examples/device_hello.c)
for f in "$pc" "$iotgw" "$emulator" "$certs" "$example" "$hello"; do
    [ -n "$f" ] || { bad "make install installed iotgw-device.pc, iotgw, iothub-emulator, iothub-emulator-certs, examples/iotgw.yaml and examples/device_hello.c"; finish; }
done
prefix=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --variable=prefix iotgw-device)
libdir=$root$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --variable=libdir iotgw-device)
# names_tree: stdin names this source or build tree, other than as the prefix (which
# make distcheck puts inside it)
names_tree() { sed "s|$prefix||g" | grep -qF -e "$src" -e "$build"; }
# text files that name this source or build tree would break elsewhere
named=""
for f in $(grep -rlIF -e "$src" -e "$build" "$root" || true); do
    names_tree <"$f" && named="$named $f"
done
if [ -z "$named" ]; then
    ok "no installed text file names the source or build tree"
else
    bad "installed files name the source or build tree:$named"
fi

# ---- building against the installed library, as someone outside this tree does
PKG_CONFIG_PATH=$(dirname "$pc")
PKG_CONFIG_SYSROOT_DIR=$root
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
cc=$(configured CC)
san_cflags=$(configured SAN_CFLAGS)
san_ldflags=$(configured SAN_LDFLAGS)
cp "$hello" "$work/"
cflags=$(pkg-config --cflags iotgw-device)
if echo "$cflags" | sed "s|$root||g" | names_tree; then bad "pkg-config --cflags names the source or build tree: $cflags"; fi
# shellcheck disable=SC2086,SC2046
if (cd "$work" && $cc -std=c99 -Wall -Wextra -Werror $san_cflags $cflags -o hello-shared device_hello.c \
    $san_ldflags $(pkg-config --libs iotgw-device)) >"$work/cc.log" 2>&1; then
    ok "device_hello.c builds with pkg-config --cflags --libs iotgw-device ($cflags $(pkg-config --libs iotgw-device))"
else
    cat "$work/cc.log"
    bad "device_hello.c builds against the installed library"
fi
# static: libiotgw-device.a and what its Requires.private name, linked in
# shellcheck disable=SC2086,SC2046
if (cd "$work" && $cc -std=c99 -Wall -Wextra -Werror $san_cflags $cflags -o hello-static device_hello.c \
    $san_ldflags -Wl,-Bstatic $(pkg-config --static --libs iotgw-device) -Wl,-Bdynamic) >"$work/cc-static.log" 2>&1; then
    ok "device_hello.c links statically (-Wl,-Bstatic \$(pkg-config --static --libs iotgw-device))"
else
    cat "$work/cc-static.log"
    bad "device_hello.c links statically against libiotgw-device.a"
fi
[ -x "$work/hello-shared" ] && [ -x "$work/hello-static" ] || finish

# the shared build loads the installed libiotgw-device.so.1, the static one no such library
export LD_LIBRARY_PATH="$libdir"
if ldd "$work/hello-shared" | grep -q "libiotgw-device\.so\.1 => $libdir/libiotgw-device\.so\.1 "; then
    ok "ldd hello-shared: libiotgw-device.so.1 => $libdir/libiotgw-device.so.1"
else
    ldd "$work/hello-shared"
    bad "hello-shared loads the installed libiotgw-device.so.1"
fi
if ldd "$work/hello-static" | grep -q "libiotgw-device\|libprotobuf-c"; then
    ldd "$work/hello-static"
    bad "hello-static has libiotgw-device and libprotobuf-c linked in"
else
    ok "ldd hello-static: no libiotgw-device, no libprotobuf-c"
fi

# ---- the installed iothub-emulator and iotgw, and one parcel through them
key() { openssl rand -base64 32; }
KEY=$(key)
"$certs" "$work/certs" >/dev/null
cat >"$work/registry.yaml" <<YAML
policies:
  - {name: iothubowner, primaryKey: $(key), secondaryKey: $(key), rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect]}
devices:
  - {id: hello-1, primaryKey: $KEY, secondaryKey: $(key)}
YAML
"$emulator" --cert "$work/certs/server.pem" --key "$work/certs/server.key" --registry "$work/registry.yaml" \
    --listen 127.0.0.1:0 --amqps 127.0.0.1:0 --mqtts 127.0.0.1:0 >"$work/emulator.out" 2>"$work/emulator.log" </dev/null &
pids="$pids $!"
wait_for "$work/emulator.out" "listening: amqps" 30 || { cat "$work/emulator.log"; bad "iothub-emulator starts"; finish; }
hub_port=$(sed -n 's/^listening: https+wss [^ ]*:\([0-9]*\).*/\1/p' "$work/emulator.out")
cat >"$work/iotgw.yaml" <<YAML
gatewayId: make-install-test
hub:
  hostName: localhost
  port: $hub_port
  caFile: $work/certs/ca.pem
ops:
  listen: 127.0.0.1:0
devices:
  listen: 127.0.0.1:0
fleet:
  devices:
    - {id: hello-1, keyEnv: HELLO_1_KEY}
YAML
HELLO_1_KEY=$KEY "$iotgw" --config "$work/iotgw.yaml" >"$work/iotgw.out" 2>"$work/iotgw.log" </dev/null &
pids="$pids $!"
wait_for "$work/iotgw.out" "listening: devices" 30 || { cat "$work/iotgw.log"; bad "iotgw starts"; finish; }
port=$(sed -n 's/^listening: devices [^ ]*:\([0-9]*\)$/\1/p' "$work/iotgw.out")

for kind in shared static; do
    if IOTGW_DEVICE_KEY=$KEY "$work/hello-$kind" 127.0.0.1 "$port" hello-1 localhost >"$work/hello-$kind.out" 2>&1 &&
        grep -q "^device_hello: parcel 1 acknowledged$" "$work/hello-$kind.out"; then
        ok "hello-$kind: $(cat "$work/hello-$kind.out")"
    else
        cat "$work/hello-$kind.out" "$work/iotgw.log"
        bad "hello-$kind sends a parcel through iotgw and the hub acknowledges it"
    fi
done
# the acknowledgements are the hub's: the emulator has both parcels from hello-1
/usr/bin/python3 -c 'import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
print(urllib.request.urlopen("https://localhost:%s/metrics" % sys.argv[2], context=ctx, timeout=10).read().decode())' \
    "$work/certs/ca.pem" "$hub_port" >"$work/hub-metrics.txt" 2>&1 || true
if grep -q '^iothub_emulator_device_d2c_messages_total{device="hello-1"} 2$' "$work/hub-metrics.txt"; then
    ok "the emulator received both parcels from hello-1"
else
    grep d2c "$work/hub-metrics.txt" || cat "$work/hub-metrics.txt"
    bad "the emulator's /metrics counts 2 messages from hello-1"
fi
# a key the gateway does not have: the session is refused, and the program says so
rc=0
IOTGW_DEVICE_KEY=$(key) "$work/hello-shared" 127.0.0.1 "$port" hello-1 localhost >"$work/refused.out" 2>&1 || rc=$?
if [ "$rc" -eq 1 ] && grep -q "^device_hello: .*refused" "$work/refused.out"; then
    ok "a wrong key: exit 1, $(cat "$work/refused.out")"
else
    cat "$work/refused.out"
    bad "a wrong key is refused (exit 1, got $rc)"
fi

# ---- the installed example configuration
export ALARM_AGENT_1_KEY="$KEY" ALARM_MONITOR_1_KEY="$KEY"
if "$iotgw" --check-config "$example" >"$work/check.out" 2>&1 && grep -q "^$example: OK$" "$work/check.out" &&
    grep -q "^fleet: 2 devices (0 disabled)$" "$work/check.out"; then
    ok "iotgw --check-config $(echo "$example" | sed "s|^$root||"): OK, 2 devices"
else
    cat "$work/check.out"
    bad "the installed example configuration passes iotgw --check-config"
fi
unset ALARM_AGENT_1_KEY
rc=0
"$iotgw" --check-config "$example" >"$work/check-nokey.out" 2>&1 || rc=$?
if [ "$rc" -eq 1 ] && grep -q "keyEnv: environment variable ALARM_AGENT_1_KEY is not set" "$work/check-nokey.out"; then
    ok "without its keys in the environment the example is refused: $(cat "$work/check-nokey.out")"
else
    cat "$work/check-nokey.out"
    bad "the example without ALARM_AGENT_1_KEY is refused (exit 1, got $rc)"
fi

# ---- manual pages (made by help2man; configure says when there is none)
if [ -n "$(configured HELP2MAN)" ]; then
    for p in iotgw iothub-emulator iothub-emulator-certs iothub-service iotgw-devsim iotgw-parcel \
        alarm-agent alarm-monitor reboot-device; do
        page=$(installed "man1/$p.1")
        if [ -n "$page" ] && grep -q "^$p \\\\- " "$page" && grep -q "^\\.TH " "$page"; then
            :
        else
            bad "man page $p.1 installed, with its name line"
        fi
    done
    page=$(installed man1/iotgw.1)
    if [ -n "$page" ] && grep -q "check\\\\-config" "$page"; then
        ok "9 manual pages installed; iotgw.1 has iotgw's options"
    else
        bad "iotgw.1 documents --check-config"
    fi
else
    echo "skipped: manual pages (configure found no help2man)"
fi
finish
