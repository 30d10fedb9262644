// The official Azure IoT Node service SDK (azure-iothub) against iothub-emulator, with a
// device of the official device SDK on the other end: registry create/get/delete,
// direct methods (answered, device offline, device silent), twin get/update with the
// device receiving the desired change, a C2D message the device receives and its feedback
// read by the SDK's feedback receiver (Message.data). One line
// per step; node_service_interop.py asserts on them. The emulator's CA comes from
// NODE_EXTRA_CA_CERTS (REST and service AMQP) and setOptions (the device).
//   node node_service.js SERVICE_CONNECTION_STRING CA_FILE
'use strict';
const fs = require('fs');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');

const [serviceCs, caFile] = process.argv.slice(2);
const say = (line) => console.log(line);
const host = /HostName=([^;]+)/.exec(serviceCs)[1];

async function main() {
  const registry = Registry.fromConnectionString(serviceCs);
  const created = (await registry.create({ deviceId: 'svc-dev-1' })).responseBody;
  say('CREATED ' + created.deviceId + ' ' + created.status);
  await registry.create({ deviceId: 'svc-offline' });
  const got = (await registry.get('svc-dev-1')).responseBody;
  say('GOT ' + got.deviceId + ' ' + (got.authentication.symmetricKey.primaryKey === created.authentication.symmetricKey.primaryKey));

  const device = DeviceClient.fromConnectionString(
    `HostName=${host};DeviceId=svc-dev-1;SharedAccessKey=${created.authentication.symmetricKey.primaryKey}`, Amqp);
  await device.setOptions({ ca: fs.readFileSync(caFile, 'utf8') });
  await device.open();
  device.onDeviceMethod('rebootDevice', (req, res) => res.send(200, { rebooting: true }, () => {}));
  device.onDeviceMethod('hang', () => {}); // never answers
  const twin = await device.getTwin();
  const desired = new Promise((resolve) => twin.on('properties.desired', (d) => { if (d.interval) resolve(d); }));
  const c2d = new Promise((resolve) => device.on('message', (m) => { device.complete(m, () => {}); resolve(m); }));
  await new Promise((r) => setTimeout(r, 500));
  say('DEVICE open');

  const service = ServiceClient.fromConnectionString(serviceCs);
  const answer = await service.invokeDeviceMethod('svc-dev-1', { methodName: 'rebootDevice', payload: {}, responseTimeoutInSeconds: 10 });
  say('METHOD ' + answer.result.status + ' ' + JSON.stringify(answer.result.payload));
  try {
    await service.invokeDeviceMethod('svc-offline', { methodName: 'rebootDevice', payload: {}, responseTimeoutInSeconds: 5 });
    say('ERROR an offline device answered');
  } catch (e) {
    say('OFFLINE ' + (e.responseBody || e.message).toString().replace(/\s+/g, ' ').slice(0, 200));
  }
  try {
    await service.invokeDeviceMethod('svc-dev-1', { methodName: 'hang', payload: {}, responseTimeoutInSeconds: 5 });
    say('ERROR a silent device answered');
  } catch (e) {
    say('TIMEOUT ' + (e.responseBody || e.message).toString().replace(/\s+/g, ' ').slice(0, 200));
  }

  const t = (await registry.getTwin('svc-dev-1')).responseBody;
  await registry.updateTwin('svc-dev-1', { properties: { desired: { interval: 30 } } }, t.etag);
  say('DESIRED ' + JSON.stringify(await desired));

  await service.open();
  const feedback = new Promise((resolve, reject) => service.getFeedbackReceiver((err, receiver) => {
    if (err) return reject(err);
    receiver.on('message', (fm) => {
      receiver.complete(fm, () => {});
      resolve(fm);
    });
  }));
  const door = new Message('open the door');
  door.messageId = 'door-1';
  door.ack = 'full';
  await service.send('svc-dev-1', door);
  const m = await c2d;
  say('C2D ' + m.data.toString());
  const fm = await feedback; // its records are in Message.data, as from IoT Hub
  const records = JSON.parse(fm.data.toString());
  say('FEEDBACK ' + records.map((r) => r.originalMessageId + ':' + r.statusCode).join(','));
  await service.close();

  await device.close();
  await registry.delete('svc-dev-1');
  await registry.delete('svc-offline');
  try {
    await registry.get('svc-dev-1');
    say('ERROR a deleted device was found');
  } catch (e) {
    say('DELETED ' + (e.responseBody ? 'gone' : e.message));
  }
  say('DONE');
  process.exit(0);
}

main().catch((e) => {
  say('ERROR ' + (e && e.message ? e.message : e) + (e && e.responseBody ? ' ' + e.responseBody : ''));
  process.exit(1);
});
