// The reboot scenario's device, written with the official Azure IoT Node device SDK:
// answers rebootDevice, "reboots" for a second, then reports rebootTime in its twin.
// The transport is Amqp unless named (Mqtt is what the Python tutorial's device uses).
//   node node_reboot_device.js DEVICE_CONNECTION_STRING CA_FILE [Amqp|AmqpWs|Mqtt|MqttWs]
'use strict';
const fs = require('fs');
const { Client } = require('azure-iot-device');

const transports = {
  Amqp: () => require('azure-iot-device-amqp').Amqp,
  AmqpWs: () => require('azure-iot-device-amqp').AmqpWs,
  Mqtt: () => require('azure-iot-device-mqtt').Mqtt,
  MqttWs: () => require('azure-iot-device-mqtt').MqttWs,
};
const [cs, caFile, transportName = 'Amqp'] = process.argv.slice(2);
if (!cs || !caFile || !transports[transportName]) {
  console.error('usage: node_reboot_device.js DEVICE_CONNECTION_STRING CA_FILE [Amqp|AmqpWs|Mqtt|MqttWs]');
  process.exit(2);
}
const say = (line) => console.log(line);

async function main() {
  const client = Client.fromConnectionString(cs, transports[transportName]());
  await client.setOptions({ ca: fs.readFileSync(caFile, 'utf8') });
  await client.open();
  const twin = await client.getTwin();
  client.onDeviceMethod('rebootDevice', (req, res) => {
    const when = new Date().toISOString();
    res.send(200, { rebooting: true }, () => say('REBOOTING ' + when));
    setTimeout(() => twin.properties.reported.update({ rebootTime: when }, (e) => {
      say(e ? 'ERROR ' + e.message : 'REPORTED ' + when);
      setTimeout(() => client.close().then(() => process.exit(0)), 500);
    }), 1000);
  });
  setTimeout(() => say('READY'), 500);
}

main().catch((e) => {
  say('ERROR ' + (e && e.message ? e.message : e));
  process.exit(1);
});
