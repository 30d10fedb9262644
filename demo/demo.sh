#!/bin/sh
# The two scenarios, live, with the shipped programs: iothub-emulator (a local IoT Hub
# with throw-away certificates), iotgw, the example devices and the service apps.
#
#   demo.sh BUILD_DIR SRC_DIR
#
# Alarm: alarm-agent sends alarm statuses addressed to alarm-monitor-1; the backend reads
# the hub's telemetry stream and invokes ProcessMessage on the monitor with each parcel;
# the gateway turns the JSON into a protobuf Parcel for the monitor, which answers 200.
# Reboot: a service app invokes rebootDevice; the device reboots and reports rebootTime.
#
# Ports (unprivileged): DEMO_HUB_PORT (8443, HTTPS + AMQP and MQTT over WebSocket), DEMO_AMQPS_PORT
# (5671), DEMO_MQTTS_PORT (8883), DEMO_DEVICE_PORT (7000); 0 lets the system choose. Exit status 0 when both
# scenarios succeeded. Everything it starts is stopped at the end or on Ctrl-C.
set -eu
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$2" && pwd)
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/iotgw-demo.XXXXXX)
HUB_PORT=${DEMO_HUB_PORT:-8443}
AMQPS_PORT=${DEMO_AMQPS_PORT:-5671}
MQTTS_PORT=${DEMO_MQTTS_PORT:-8883}
DEVICE_PORT=${DEMO_DEVICE_PORT:-7000}
OPS_PORT=${DEMO_OPS_PORT:-9600}

say() { printf '\n== %s\n' "$*"; }
fail() { printf '\ndemo: FAILED: %s (logs in %s)\n' "$*" "$WORK"; exit 1; }

stop_all() {
    for f in "$WORK"/*.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# start NAME COMMAND...: in the background, its output kept in $WORK/NAME.out and shown
# on the terminal prefixed with [NAME] (the prefixing ends with the program)
start() {
    name=$1
    shift
    "$@" >"$WORK/$name.out" 2>&1 &
    pid=$!
    echo "$pid" >"$WORK/$name.pid"
    tail -n +1 -F --pid="$pid" "$WORK/$name.out" 2>/dev/null | sed -u "s/^/[$name] /" &
}

# wait_for NAME PATTERN SECONDS
wait_for() {
    i=0
    while ! grep -q "$2" "$WORK/$1.out" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -gt $(($3 * 10)) ] && fail "$1 did not print \"$2\" within $3 s"
        sleep 0.1
    done
}

# wait_exit NAME SECONDS: fails the demo unless NAME ends with status 0 in time. It
# polls instead of keeping a watchdog in the background: nothing of it outlives the wait
# to signal a PID that may be another process's by then.
wait_exit() {
    pid=$(cat "$WORK/$1.pid")
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt $(($2 * 10)) ]; do
        i=$((i + 1))
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true # still running after SECONDS: it failed
    rc=0
    wait "$pid" || rc=$?
    rm -f "$WORK/$1.pid"
    sleep 0.2 # the last lines reach the terminal
    [ "$rc" -eq 0 ] || fail "$1 exited with status $rc"
}

key() { openssl rand -base64 32; }

say "a local IoT Hub: iothub-emulator with throw-away certificates ($WORK)"
"$BUILD/emulator/iothub-emulator-certs" "$WORK/certs" >/dev/null
OWNER_KEY=$(key)
AGENT_KEY=$(key)
MONITOR_KEY=$(key)
REBOOT_KEY=$(key)
cat >"$WORK/registry.yaml" <<YAML
policies:
  - {name: iothubowner, primaryKey: $OWNER_KEY, secondaryKey: $(key), rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect]}
devices:
  - {id: alarm-agent-1, primaryKey: $AGENT_KEY, secondaryKey: $(key)}
  - {id: alarm-monitor-1, primaryKey: $MONITOR_KEY, secondaryKey: $(key)}
  - {id: reboot-device-1, primaryKey: $REBOOT_KEY, secondaryKey: $(key)}
YAML
"$BUILD/emulator/iothub-emulator" --cert "$WORK/certs/server.pem" --key "$WORK/certs/server.key" \
    --registry "$WORK/registry.yaml" --listen "127.0.0.1:$HUB_PORT" --amqps "127.0.0.1:$AMQPS_PORT" --mqtts "127.0.0.1:$MQTTS_PORT" \
    --stream-redirect >"$WORK/emulator.out" 2>"$WORK/emulator.log" &
echo $! >"$WORK/emulator.pid"
wait_for emulator "listening: amqps" 20
HUB_PORT=$(sed -n 's/^listening: https+wss [^ ]*:\([0-9]*\).*/\1/p' "$WORK/emulator.out")
AMQPS_PORT=$(sed -n 's/^listening: amqps [^ ]*:\([0-9]*\).*/\1/p' "$WORK/emulator.out")
echo "hub: localhost, REST and AMQP over WebSocket on 127.0.0.1:$HUB_PORT, AMQPS on 127.0.0.1:$AMQPS_PORT (log: $WORK/emulator.log)"

say "the gateway: iotgw with the demo fleet (config: $WORK/iotgw.yaml)"
cat >"$WORK/iotgw.yaml" <<YAML
gatewayId: demo-gateway
hub:
  hostName: localhost
  port: $HUB_PORT
  caFile: $WORK/certs/ca.pem
ops:
  listen: 127.0.0.1:$OPS_PORT   # /metrics, /healthz, /readyz, /devices
devices:
  listen: 127.0.0.1:$DEVICE_PORT
telemetry:
  encoding: json            # the backend reads parcels from the hub's stream as JSON
methods:
  ProcessMessage:
    request: iotgw.Parcel   # ... and the monitor receives them as protobuf
fleet:
  devices:
    - {id: alarm-agent-1, key: $AGENT_KEY}
    - {id: alarm-monitor-1, key: $MONITOR_KEY}
    - {id: reboot-device-1, key: $REBOOT_KEY}
YAML
"$BUILD/gateway/iotgw" --check-config "$WORK/iotgw.yaml" | sed 's/^/  /'
"$BUILD/gateway/iotgw" --config "$WORK/iotgw.yaml" >"$WORK/iotgw.out" 2>"$WORK/iotgw.log" &
echo $! >"$WORK/iotgw.pid"
wait_for iotgw "listening: devices" 20
DEVICE_PORT=$(sed -n 's/^listening: devices [^ ]*:\([0-9]*\)$/\1/p' "$WORK/iotgw.out")
OPS_PORT=$(sed -n 's/^listening: ops [^ ]*:\([0-9]*\)$/\1/p' "$WORK/iotgw.out")
echo "gateway: devices connect to 127.0.0.1:$DEVICE_PORT, metrics at http://127.0.0.1:$OPS_PORT/metrics (log: $WORK/iotgw.log)"

SERVICE="HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=$OWNER_KEY"
dev() { # dev PROGRAM ID KEY ARGS...: the example device, in place of this shell
    p=$1 id=$2 k=$3
    shift 3
    IOTGW_DEVICE_KEY=$k exec "$BUILD/devices/$p" --gateway "127.0.0.1:$DEVICE_PORT" --device "$id" --hub localhost "$@"
}

say "scenario 1: alarm statuses from alarm-agent-1 reach alarm-monitor-1 through the cloud"
start monitor dev alarm-monitor alarm-monitor-1 "$MONITOR_KEY" --count 6
wait_for monitor "ready for ProcessMessage" 30
start backend "$PY" "$SRC/devices/examples/alarm_backend.py" --connection-string "$SERVICE" \
    --ca "$WORK/certs/ca.pem" --amqps-port "$AMQPS_PORT" --rest-port "$HUB_PORT" --count 6 --timeout 120
wait_for backend "reading the telemetry stream" 30
sleep 1
start agent dev alarm-agent alarm-agent-1 "$AGENT_KEY" --count 6 --interval-ms 700
wait_exit agent 120
wait_exit backend 120
wait_exit monitor 60
grep -q "6 of 6 alarm statuses acknowledged" "$WORK/agent.out" || fail "the agent's statuses were not all acknowledged"
[ "$(grep -c 'ProcessMessage: 200' "$WORK/backend.out")" -eq 6 ] || fail "the backend did not forward six parcels"
[ "$(grep -c ': 200$' "$WORK/monitor.out")" -eq 6 ] || fail "the monitor did not receive six alarm statuses"
sleep 0.3

say "scenario 2: a service app reboots reboot-device-1 and sees rebootTime in its twin"
start device dev reboot-device reboot-device-1 "$REBOOT_KEY" --count 1 --delay-ms 1500
wait_for device "waiting for rebootDevice" 30
start service "$PY" "$SRC/devices/examples/reboot_service.py" --connection-string "$SERVICE" \
    --device reboot-device-1 --ca "$WORK/certs/ca.pem" --rest-port "$HUB_PORT" --timeout 60
wait_exit service 90
wait_exit device 60
grep -q "reports rebootTime" "$WORK/service.out" || fail "no new rebootTime was reported"

printf '\ndemo: both scenarios succeeded (logs in %s)\n' "$WORK"
