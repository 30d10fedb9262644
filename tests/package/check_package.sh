#!/bin/sh
# make check-package: the Debian packages `make deb` built (tests/package/build_debs.sh),
# installed on this machine with apt-get, checked, then purged so that the machine is
# left with the packages, files and users it had:
#  - iotgw --version; iotgw.service installed, enabled, passing systemd-analyze verify;
#  - the system user iotgw; the packaged example configuration, in /etc/iotgw, checked
#    by iotgw --check-config as that user with its keys from /etc/iotgw/keys.env;
#  - the unit's ExecStart run as the unit runs it (user iotgw, keys.env), against the
#    packaged iothub-emulator: the -dev package's example device_hello.c, compiled
#    against it with pkg-config alone, shared and static, gets its parcel acknowledged;
#    SIGHUP (ExecReload) reloads, SIGTERM stops it within TimeoutStopSec;
#  - iothub-service from iotgw-tools reads the emulator's registry; the manual pages;
#  - apt-get purge leaves the package list, /etc/iotgw, /var/lib/iotgw and the users as
#    they were.
# The systemd unit is not started: no systemd runs here (its sandboxing is untested).
#
#   check_package.sh DEBDIR      (needs root)
set -eu
[ $# -eq 1 ] || { echo "usage: check_package.sh DEBDIR" >&2; exit 2; }
debs=$(cd "$1" && pwd)
PACKAGES="iotgw iothub-emulator iotgw-tools libiotgw-device1 libiotgw-device-dev"
start=$(date +%s)
say() { printf 'check-package: %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { say "needs root (it installs and purges packages)"; exit 1; }
for p in $PACKAGES; do
    if dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qv '^unknown ok not-installed$'; then
        say "$p is on this machine already ($(dpkg-query -W -f='${Status}' "$p")); it would be purged at the end: remove it first"
        exit 1
    fi
done
for f in /etc/iotgw /var/lib/iotgw; do
    [ -e "$f" ] && { say "$f exists already; it would be replaced: move it away first"; exit 1; }
done

ls "$debs"/*.deb >/dev/null 2>&1 || { say "no .deb files in $debs: make deb first"; exit 1; }
version=$(dpkg-deb -f "$(ls "$debs"/iotgw_*.deb | head -1)" Version)
work=$(mktemp -d /tmp/iotgw-check-package.XXXXXX)
chmod 711 "$work" # the gateway, as user iotgw, reads the test hub's CA in here
# every package dpkg knows, with its state
packages() { dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package}\n' | awk '$1 !~ /^.n/' | sort; }
packages >"$work/packages-before"
user_before=$(getent passwd iotgw || true)
group_before=$(getent group iotgw || true)
pids=""
. "$(dirname "$0")/checks.sh"

# purge ours, and what apt-get installed for them (dependencies, recommendations)
remove_all() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=""
    rm -f /etc/iotgw/iotgw.yaml /etc/iotgw/keys.env
    packages >"$work/packages-now"
    pulled=$(comm -13 "$work/packages-before" "$work/packages-now" | awk '{print $2}' | tr '\n' ' ')
    # shellcheck disable=SC2086
    [ -z "$pulled" ] || DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq $pulled >"$work/purge.log" 2>&1 ||
        { cat "$work/purge.log"; say "apt-get purge $pulled failed"; }
    # the package leaves its user on purge (files may still be the user's); this test made it
    if [ -z "$user_before" ] && getent passwd iotgw >/dev/null; then
        deluser --system --quiet iotgw >>"$work/purge.log" 2>&1 || say "deluser iotgw failed ($work/purge.log)"
    fi
    if [ -z "$group_before" ] && getent group iotgw >/dev/null; then
        delgroup --system --quiet iotgw >>"$work/purge.log" 2>&1 || say "delgroup iotgw failed ($work/purge.log)"
    fi
}
cleanup() {
    remove_all
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

report() {
    echo "check-package: $(($(date +%s) - start)) s"
    finish
}

# ---- install
# the five packages (not their -dbgsym companions)
files=""
for p in $PACKAGES; do
    f=$(ls "$debs/${p}_"*.deb 2>/dev/null | head -1)
    [ -n "$f" ] || { bad "no $p package in $debs"; report; }
    files="$files ./$(basename "$f")"
done
say "apt-get install$files (in $debs)"
# shellcheck disable=SC2086
if (cd "$debs" && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $files) >"$work/install.log" 2>&1; then
    ok "apt-get install -y$files"
else
    cat "$work/install.log"
    bad "apt-get install$files"
    report
fi

out=$(iotgw --version)
if [ "$out" = "iotgw $version" ]; then ok "iotgw --version: $out"; else bad "iotgw --version says iotgw $version (got: $out)"; fi

unit=$(dpkg -L iotgw | grep '/systemd/system/iotgw\.service$' || true)
if [ -n "$unit" ] && [ -f "$unit" ]; then ok "iotgw.service installed: $unit"; else bad "the iotgw package installs iotgw.service"; fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "skipped: systemd-analyze verify (no systemd-analyze: the Debian package systemd has it)"
elif [ -n "$unit" ] && verify=$(systemd-analyze verify "$unit" 2>&1) && [ -z "$verify" ]; then
    ok "systemd-analyze verify $unit: no complaint"
    systemd-analyze security --offline=yes "$unit" 2>/dev/null | tail -1 | sed 's/^/  systemd-analyze security: /'
else
    echo "$verify"
    bad "systemd-analyze verify $unit"
fi
if [ -L /etc/systemd/system/multi-user.target.wants/iotgw.service ]; then
    ok "iotgw.service enabled (multi-user.target.wants)"
else
    bad "the package enables iotgw.service"
fi
if getent passwd iotgw | grep -q ':/var/lib/iotgw:/usr/sbin/nologin$'; then
    ok "system user iotgw: $(getent passwd iotgw)"
else
    bad "a system user iotgw with home /var/lib/iotgw and no shell (got: $(getent passwd iotgw || echo none))"
fi

# ---- the packaged example, in /etc/iotgw, as the service would read it
example=/usr/share/doc/iotgw/examples/iotgw.yaml
key() { openssl rand -base64 32; }
KEY=$(key)
KEY2=$(key)
cp "$example" /etc/iotgw/iotgw.yaml
printf 'ALARM_AGENT_1_KEY=%s\nALARM_MONITOR_1_KEY=%s\n' "$(key)" "$(key)" >/etc/iotgw/keys.env
chmod 600 /etc/iotgw/keys.env
# as iotgw, with keys.env in the environment (systemd reads it as root, as here)
as_service() { (set -a && . /etc/iotgw/keys.env && set +a && exec setpriv --reuid=iotgw --regid=iotgw --init-groups "$@"); }
if as_service iotgw --check-config /etc/iotgw/iotgw.yaml >"$work/check.out" 2>&1 &&
    grep -q '^/etc/iotgw/iotgw.yaml: OK$' "$work/check.out" && grep -q '^fleet: 2 devices (0 disabled)$' "$work/check.out"; then
    ok "as iotgw: iotgw --check-config /etc/iotgw/iotgw.yaml (the packaged example, keys from keys.env): OK, 2 devices"
else
    cat "$work/check.out"
    bad "the packaged example passes iotgw --check-config as the service would run it"
fi

# ---- the unit's ExecStart against the packaged emulator, and device_hello from the -dev package
iothub-emulator-certs "$work/certs" >/dev/null
chmod 755 "$work/certs"
owner=$(key)
cat >"$work/registry.yaml" <<YAML
policies:
  - {name: iothubowner, primaryKey: $owner, secondaryKey: $(key), rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect]}
devices:
  - {id: hello-1, primaryKey: $KEY, secondaryKey: $(key)}
  - {id: hello-2, primaryKey: $KEY2, secondaryKey: $(key)}
YAML
iothub-emulator --cert "$work/certs/server.pem" --key "$work/certs/server.key" --registry "$work/registry.yaml" \
    --listen 127.0.0.1:0 --amqps 127.0.0.1:0 --mqtts 127.0.0.1:0 >"$work/emulator.out" 2>"$work/emulator.log" </dev/null &
emulator=$!
pids=$emulator
wait_for "$work/emulator.out" "listening: amqps" 30 || { cat "$work/emulator.log"; bad "iothub-emulator starts"; report; }
hub_port=$(sed -n 's/^listening: https+wss [^ ]*:\([0-9]*\).*/\1/p' "$work/emulator.out")
fleet_yaml() {
    cat <<YAML
gatewayId: check-package
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
$1
YAML
}
fleet_yaml "    - {id: hello-1, keyEnv: HELLO_1_KEY}" >/etc/iotgw/iotgw.yaml
printf 'HELLO_1_KEY=%s\n' "$KEY" >/etc/iotgw/keys.env
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
# shellcheck disable=SC2086
(set -a && . /etc/iotgw/keys.env && set +a && exec setpriv --reuid=iotgw --regid=iotgw --init-groups $exec_start) \
    >"$work/iotgw.out" 2>"$work/iotgw.log" </dev/null &
gw=$!
pids="$pids $gw"
wait_for "$work/iotgw.out" "listening: devices" 30 || { cat "$work/iotgw.log"; bad "ExecStart ($exec_start) starts"; report; }
ok "ExecStart as user iotgw with keys.env: $exec_start"
port=$(sed -n 's/^listening: devices [^ ]*:\([0-9]*\)$/\1/p' "$work/iotgw.out")

hello=/usr/share/doc/libiotgw-device-dev/examples/device_hello.c
[ -f "$hello" ] || { bad "libiotgw-device-dev has $hello"; report; }
cp "$hello" "$work/"
libs=$(pkg-config --libs iotgw-device)
# shellcheck disable=SC2086,SC2046
if (cd "$work" && cc -std=c99 -Wall -Wextra -Werror $(pkg-config --cflags iotgw-device) -o hello-shared device_hello.c $libs &&
    cc -std=c99 -Wall -Wextra -Werror $(pkg-config --cflags iotgw-device) -o hello-static device_hello.c \
        -Wl,-Bstatic $(pkg-config --static --libs iotgw-device) -Wl,-Bdynamic) >"$work/cc.log" 2>&1; then
    ok "device_hello.c builds against libiotgw-device-dev: pkg-config --cflags --libs iotgw-device ($(pkg-config --cflags iotgw-device) $libs), and --static"
else
    cat "$work/cc.log"
    bad "device_hello.c builds against libiotgw-device-dev"
    report
fi
so=$(dpkg -L libiotgw-device1 | grep 'libiotgw-device\.so\.1$')
loaded=$(ldd "$work/hello-shared" | sed -n 's/^[[:space:]]*libiotgw-device\.so\.1 => \([^ ]*\) .*/\1/p')
# /lib is /usr/lib on Debian 12 (merged /usr): the same file by either name
if [ -n "$loaded" ] && [ "$(readlink -f "$loaded")" = "$(readlink -f "$so")" ]; then
    ok "ldd hello-shared: libiotgw-device.so.1 => $loaded (the package's $so)"
else
    ldd "$work/hello-shared"
    bad "hello-shared loads $so"
fi
for kind in shared static; do
    if IOTGW_DEVICE_KEY=$KEY "$work/hello-$kind" 127.0.0.1 "$port" hello-1 localhost >"$work/hello.out" 2>&1 &&
        grep -q '^device_hello: parcel 1 acknowledged$' "$work/hello.out"; then
        ok "hello-$kind through the packaged iotgw and iothub-emulator: $(cat "$work/hello.out")"
    else
        cat "$work/hello.out" "$work/iotgw.log"
        bad "hello-$kind gets its parcel acknowledged"
    fi
done

# ExecReload: SIGHUP, and a device added to the file can connect
fleet_yaml "    - {id: hello-1, keyEnv: HELLO_1_KEY}
    - {id: hello-2, key: $KEY2}" >/etc/iotgw/iotgw.yaml
kill -HUP "$gw"
if wait_for "$work/iotgw.log" "configuration reloaded: 2 devices in the fleet" 10 >/dev/null; then
    ok "SIGHUP (ExecReload): the gateway read /etc/iotgw/iotgw.yaml again: 2 devices"
else
    cat "$work/iotgw.log"
    bad "SIGHUP reloads the configuration"
fi

# the tools: iothub-service (which needs /usr/share/iotgw/hub_service.py) reads the registry
if iothub-service --connection-string "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=$owner" \
    --ca "$work/certs/ca.pem" --rest-port "$hub_port" device show hello-1 >"$work/service.out" 2>&1 &&
    grep -q '"deviceId": *"hello-1"' "$work/service.out"; then
    ok "iothub-service device show hello-1 (iotgw-tools) answers from the emulator"
else
    cat "$work/service.out"
    bad "iothub-service device show hello-1"
fi

# stopping: SIGTERM drains and exits 0 within the unit's TimeoutStopSec
timeout_stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$unit")
t=$(date +%s)
kill -TERM "$gw"
rc=0
wait "$gw" || rc=$?
pids=$emulator # reaped: its number may be another process's by now
took=$(($(date +%s) - t))
if [ "$rc" -eq 0 ] && [ "$took" -lt "${timeout_stop:-0}" ]; then
    ok "SIGTERM: exit 0 after $took s (TimeoutStopSec=${timeout_stop}s)"
else
    bad "SIGTERM: exit 0 within TimeoutStopSec=${timeout_stop:-?}s (exit $rc after $took s)"
fi

missing=""
for p in iotgw iothub-emulator iothub-emulator-certs iothub-service iotgw-devsim iotgw-parcel alarm-agent alarm-monitor reboot-device; do
    dpkg -S "/usr/share/man/man1/$p.1.gz" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -z "$missing" ]; then ok "a manual page for each of the 9 programs"; else bad "no manual page for:$missing"; fi

# ---- purge: the machine as it was
say "apt-get purge"
remove_all
packages >"$work/packages-after"
if cmp -s "$work/packages-before" "$work/packages-after"; then
    ok "apt-get purge: dpkg knows the same packages, in the same states, as before"
else
    diff "$work/packages-before" "$work/packages-after" || true
    bad "after apt-get purge dpkg's package list is what it was"
fi
left=""
for f in /etc/iotgw /var/lib/iotgw /lib/systemd/system/iotgw.service /etc/systemd/system/multi-user.target.wants/iotgw.service; do
    [ -e "$f" ] || [ -L "$f" ] && left="$left $f"
done
[ "$(getent passwd iotgw || true)" = "$user_before" ] || left="$left user:iotgw"
if [ -z "$left" ]; then ok "nothing left: /etc/iotgw, /var/lib/iotgw, the unit and the user iotgw are gone"; else bad "left behind:$left"; fi
report
