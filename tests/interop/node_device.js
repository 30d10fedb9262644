// A device written with the official Azure IoT Node SDK (azure-iot-device with
// azure-iot-device-amqp or azure-iot-device-mqtt), driven by node_device_interop.py. It
// prints one line per thing that happens; the driver asserts on them. A connection
// string with ModuleId is served by the SDK's ModuleClient (no cloud-to-device messages:
// modules have none).
//   node node_device.js CONNECTION_STRING Amqp|AmqpWs|Mqtt|MqttWs CA_FILE
// Its first telemetry is "TELEMETRY accepted ID". Lines on stdin: "send ID" sends one more
// telemetry message with message id ID (TELEMETRY accepted ID), "twin" gets the twin again
// (TWIN ...); the end of stdin closes the client.
// A C2D message's application property "settle" (complete, the default, reject or
// abandon) says how it is settled; the SDK's answer is printed as "C2D-SETTLE ...".
'use strict';
const fs = require('fs');
const readline = require('readline');
const { Client, ModuleClient, Message } = require('azure-iot-device');

const transports = {
  Amqp: () => require('azure-iot-device-amqp').Amqp,
  AmqpWs: () => require('azure-iot-device-amqp').AmqpWs,
  Mqtt: () => require('azure-iot-device-mqtt').Mqtt,
  MqttWs: () => require('azure-iot-device-mqtt').MqttWs,
};
const [connectionString, transportName, caFile] = process.argv.slice(2);
if (!connectionString || !transports[transportName] || !caFile) {
  console.error('usage: node_device.js CONNECTION_STRING Amqp|AmqpWs|Mqtt|MqttWs CA_FILE');
  process.exit(2);
}
const transport = transports[transportName]();
const say = (line) => console.log(line);
const why = (e) => (e && e.name ? e.name : 'Error') + ': ' + (e && e.message ? e.message : e);

// Telemetry with system and application properties; the driver reads them back from the
// hub's stream.
function telemetry(id) {
  const m = new Message(JSON.stringify({ temperature: 21.5, id }));
  m.messageId = id;
  m.contentType = 'application/json';
  m.contentEncoding = 'utf-8';
  m.properties.add('level', 'high & hot/1=2');
  return m;
}

// How the SDK answers reject/abandon, both ways an application can call them: with a
// callback (a throw reaches the caller) and as a promise.
function settle(client, msg, op) {
  if (op === 'complete') {
    client.complete(msg, (e) => say(e ? 'ERROR complete: ' + e.message : 'C2D completed'));
    return;
  }
  try {
    client[op](msg, (e) => say('C2D-SETTLE ' + op + ' callback ' + (e ? why(e) : 'ok')));
  } catch (e) {
    say('C2D-SETTLE ' + op + ' threw ' + why(e));
  }
  client[op](msg).then(() => say('C2D-SETTLE ' + op + ' promise ok'),
                       (e) => say('C2D-SETTLE ' + op + ' promise-rejected ' + why(e)));
}

async function main() {
  const isModule = /(^|;)ModuleId=/.test(connectionString);
  const client = (isModule ? ModuleClient : Client).fromConnectionString(connectionString, transport);
  client.on('error', (e) => say('ERROR ' + e.message));
  // 'connect' is the transport's (re)connection; 'disconnect' means the SDK gave up
  client.on('connect', () => say('CONNECTED'));
  client.on('disconnect', (r) => say('DISCONNECTED ' + (r && r.reason ? why(r.reason) : '')));
  await client.setOptions({ ca: fs.readFileSync(caFile, 'utf8') });
  await client.open();
  say('OPEN');

  const first = 'tm-' + transportName + '-' + process.pid; // not any other run's
  await client.sendEvent(telemetry(first));
  say('TELEMETRY accepted ' + first);

  const twin = await client.getTwin();
  say('TWIN ' + JSON.stringify({ desired: twin.properties.desired, reported: twin.properties.reported }));
  await new Promise((resolve, reject) =>
    twin.properties.reported.update({ firmware: '1.2.3' }, (e) => (e ? reject(e) : resolve())));
  say('REPORTED updated');
  twin.on('properties.desired', (delta) => say('DESIRED ' + JSON.stringify(delta)));

  const onMethod = (isModule ? client.onMethod : client.onDeviceMethod).bind(client);
  onMethod('rebootDevice', (request, response) => {
    say('METHOD ' + request.methodName + ' ' + JSON.stringify(request.payload));
    response.send(200, { rebooting: true, delay: request.payload && request.payload.delay }, (e) => {
      if (e) say('ERROR method response: ' + e.message);
    });
  });

  if (!isModule) {
    client.on('message', (msg) => {
      say('C2D ' + msg.data.toString() + ' ' + JSON.stringify(msg.properties.propertyList));
      const op = msg.properties.getValue('settle') || 'complete';
      settle(client, msg, op);
    });
  }
  // Subscriptions are attached lazily; give them a moment, then tell the driver.
  setTimeout(() => say('READY'), 500);

  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'send') {
      client.sendEvent(telemetry(arg)).then(() => say('TELEMETRY accepted ' + arg),
                                            (e) => say('ERROR telemetry ' + arg + ': ' + why(e)));
    } else if (cmd === 'twin') {
      client.getTwin().then((t) => say('TWIN ' + JSON.stringify({ desired: t.properties.desired,
                                                                   reported: t.properties.reported })),
                            (e) => say('ERROR twin: ' + why(e)));
    }
  });
  lines.on('close', async () => {
    await client.close();
    say('CLOSED');
    process.exit(0);
  });
}

main().catch((e) => {
  say('ERROR ' + (e && e.message ? e.message : e));
  process.exit(1);
});
