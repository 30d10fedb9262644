// A device written with the official Azure IoT Node SDK (azure-iot-device +
// azure-iot-device-amqp), driven by node_device_interop.py. It prints one line per
// thing that happens; the driver asserts on them. A connection string with ModuleId is
// served by the SDK's ModuleClient (no cloud-to-device messages: modules have none).
//   node node_device.js CONNECTION_STRING Amqp|AmqpWs CA_FILE
'use strict';
const fs = require('fs');
const { Client, ModuleClient, Message } = require('azure-iot-device');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');

const [connectionString, transportName, caFile] = process.argv.slice(2);
const transport = { Amqp, AmqpWs }[transportName];
if (!connectionString || !transport || !caFile) {
  console.error('usage: node_device.js CONNECTION_STRING Amqp|AmqpWs CA_FILE');
  process.exit(2);
}
const say = (line) => console.log(line);

async function main() {
  const isModule = /(^|;)ModuleId=/.test(connectionString);
  const client = (isModule ? ModuleClient : Client).fromConnectionString(connectionString, transport);
  client.on('error', (e) => say('ERROR ' + e.message));
  await client.setOptions({ ca: fs.readFileSync(caFile, 'utf8') });
  await client.open();
  say('OPEN');

  await client.sendEvent(new Message(JSON.stringify({ temperature: 21.5 })));
  say('TELEMETRY accepted');

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
      client.complete(msg, (e) => say(e ? 'ERROR complete: ' + e.message : 'C2D completed'));
    });
  }
  // Subscriptions are attached lazily; give them a moment, then tell the driver.
  setTimeout(() => say('READY'), 500);

  process.stdin.on('data', () => {});
  process.stdin.on('end', async () => {
    await client.close();
    say('CLOSED');
    process.exit(0);
  });
}

main().catch((e) => {
  say('ERROR ' + (e && e.message ? e.message : e));
  process.exit(1);
});
