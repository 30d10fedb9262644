// Many devices written with the official Azure IoT Node device SDK (azure-iot-device
// with azure-iot-device-mqtt and azure-iot-device-amqp) in one process, each its own
// Client pointed at a gateway with GatewayHostName, each sending telemetry at a steady
// rate for a while. Driven by node_gateway_scale.py.
//   node node_many_devices.js FLEET_FILE HUB_HOST GATEWAY_HOST CA_FILE SECONDS RATE [TRANSPORTS]
// TRANSPORTS: a comma-separated list (Mqtt, MqttWs, Amqp, AmqpWs) the devices take in
// turn, the first device the first; default Mqtt.
// FLEET_FILE: "ID KEY" lines. Prints "OPEN n" once every device is connected, then one
// JSON line at the end: {"devices", "opened", "sent", "acked", "failed": {id: first error},
// "unacked": {id: messages not acknowledged}}.
'use strict';
const fs = require('fs');
const { Client, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');

const [fleetFile, hub, gateway, caFile, secondsText, rateText, transportsText] = process.argv.slice(2);
const known = { Mqtt, MqttWs, Amqp, AmqpWs };
const transports = (transportsText || 'Mqtt').split(',').map((t) => known[t]);
if (!rateText || transports.some((t) => !t)) {
  console.error('usage: node_many_devices.js FLEET_FILE HUB_HOST GATEWAY_HOST CA_FILE SECONDS RATE [TRANSPORTS]');
  process.exit(2);
}
const seconds = Number(secondsText), rate = Number(rateText);
const ca = fs.readFileSync(caFile, 'utf8');
const devices = fs.readFileSync(fleetFile, 'utf8').split('\n').map((l) => l.trim().split(/\s+/))
  .filter((f) => f.length >= 2 && !f[0].startsWith('#'));
const result = { devices: devices.length, opened: 0, sent: 0, acked: 0, failed: {}, unacked: {} };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function run(id, key, start, transport) {
  const cs = `HostName=${hub};DeviceId=${id};SharedAccessKey=${key};GatewayHostName=${gateway}`;
  const client = Client.fromConnectionString(cs, transport);
  client.on('error', (e) => { result.failed[id] = result.failed[id] || 'error event: ' + e.message; });
  await client.setOptions({ ca });
  try {
    await client.open();
    result.opened++;
    if (result.opened === devices.length) console.log('OPEN ' + result.opened);
    await start;
    const end = Date.now() + seconds * 1000;
    for (let i = 0; Date.now() < end; i++) {
      const m = new Message(JSON.stringify({ id, i }));
      m.messageId = `${id}-${i}`;
      result.sent++;
      // a message the gateway cannot take ends the connection: the SDK's promise then
      // rejects, or waits for its retry policy; neither may hold the run past its end
      const outcome = await Promise.race([client.sendEvent(m).then(() => 'acked', (e) => e.message),
                                          sleep(Math.max(1, end + 5000 - Date.now())).then(() => 'timeout')]);
      if (outcome === 'acked') {
        result.acked++;
      } else {
        result.unacked[id] = (result.unacked[id] || 0) + 1;
        if (!result.failed[id]) result.failed[id] = outcome;
      }
      await sleep(1000 / rate);
    }
  } catch (e) {
    result.failed[id] = result.failed[id] || 'open: ' + e.message;
  }
  await Promise.race([client.close().catch(() => {}), sleep(3000)]);
}

let go;
const start = new Promise((r) => { go = r; });
const runs = devices.map(([id, key], i) => run(id, key, start, transports[i % transports.length]));
// all connect first, then all send together
const waitOpen = setInterval(() => {
  if (result.opened + Object.keys(result.failed).length >= devices.length) {
    clearInterval(waitOpen);
    go();
  }
}, 100);
Promise.all(runs).then(() => {
  // a pipe is written asynchronously: exit once the summary is out
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
});
