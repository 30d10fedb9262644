// File upload with the official Azure IoT Node SDKs against iothub-emulator, Azurite as the
// storage: the device SDK's uploadToBlob of a small file, the service SDK's file
// notification receiver (Message.data), the blob read back with @azure/storage-blob (which
// azure-iot-device brings); then the attacker's path (a token for another device, a
// correlationId that is not the device's, one that is no one's) and a bystander whose own
// upload (getBlobSharedAccessSignature, its own upload, notifyBlobUploadStatus) still works.
// One line per step; node_file_upload.py asserts on them. The CAs come from
// NODE_EXTRA_CA_CERTS (the emulator's HTTPS and AMQPS, and Azurite's HTTPS).
//   node node_file_upload.js SERVICE_CONNECTION_STRING BLOB_ENDPOINT ACCOUNT KEY CONTAINER
'use strict';
const https = require('https');
const { Readable } = require('stream');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client: DeviceClient, SharedAccessSignature } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');
const { BlobServiceClient, BlockBlobClient, StorageSharedKeyCredential } = require('@azure/storage-blob');

const [serviceCs, blobEndpoint, account, accountKey, containerName] = process.argv.slice(2);
const say = (line) => console.log(line);
const host = /HostName=([^;]+)/.exec(serviceCs)[1];
const CONTENT = Buffer.from('hello from a device, through IoT Hub file upload\n');

// The hub's answer as "status iothub-errorcode message" (its error body's message).
function answerText(status, headers, body) {
  let message = '';
  try {
    message = JSON.parse(JSON.parse(body).Message).message;
  } catch (_) {
    message = String(body);
  }
  return `${status} ${headers['iothub-errorcode']} ${message}`;
}

// What an SDK error carries of the hub's answer (getBlobSharedAccessSignature keeps the
// response; notifyBlobUploadStatus only its status text).
function sdkError(e) {
  const inner = e.innerError || e;
  return inner.response ? answerText(inner.response.statusCode, inner.response.headers, inner.responseBody)
                        : inner.message;
}

// A request of the SDK's shape with the token given: the attacker's, which the SDK never
// sends (it takes the device id from the token's own resource).
function post(path, token, body) {
  const text = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', servername: host, port: 443, method: 'POST',
      path: path + '?api-version=2020-03-13',
      headers: { Host: host, Authorization: token, 'Content-Type': 'application/json; charset=utf-8',
        'Content-Length': Buffer.byteLength(text) } }, (res) => {
      let answer = '';
      res.on('data', (d) => { answer += d; });
      res.on('end', () => resolve(answerText(res.statusCode, res.headers, answer)));
    });
    req.on('error', reject);
    req.end(text);
  });
}

async function main() {
  const registry = Registry.fromConnectionString(serviceCs);
  const keyOf = async (id) => (await registry.create({ deviceId: id })).responseBody.authentication.symmetricKey.primaryKey;
  const deviceKey = await keyOf('up-dev');
  const bystanderKey = await keyOf('up-bystander');
  const device = DeviceClient.fromConnectionString(`HostName=${host};DeviceId=up-dev;SharedAccessKey=${deviceKey}`, Amqp);
  const bystander =
    DeviceClient.fromConnectionString(`HostName=${host};DeviceId=up-bystander;SharedAccessKey=${bystanderKey}`, Amqp);

  // As IoT Hub, the emulator does not create the container: it must exist.
  const storage = new BlobServiceClient(blobEndpoint, new StorageSharedKeyCredential(account, accountKey));
  const container = storage.getContainerClient(containerName);
  await container.createIfNotExists();
  say('CONTAINER ' + containerName);

  const service = ServiceClient.fromConnectionString(serviceCs);
  await service.open();
  const notifications = [];
  let wake = null;
  const receiver = (await service.getFileNotificationReceiver()).result;
  receiver.on('message', (m) => {
    notifications.push(m);
    receiver.complete(m, () => {});
    if (wake) wake();
  });
  const nextNotification = async () => {
    const deadline = Date.now() + 20000;
    while (!notifications.length && Date.now() < deadline)
      await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 500); });
    if (!notifications.length) throw new Error('no file notification within 20 s');
    return notifications.shift();
  };

  await device.uploadToBlob('hello.txt', Readable.from([CONTENT]), CONTENT.length);
  say('UPLOADED hello.txt');
  const m = await nextNotification();
  say('CONTENTTYPE ' + m.contentType);
  const note = JSON.parse(m.data.toString()); // a data section, as from IoT Hub
  say('NOTIFICATION ' + JSON.stringify(note));
  const blob = await container.getBlobClient(note.blobName).downloadToBuffer();
  say('BLOB ' + (Buffer.compare(blob, CONTENT) === 0 ? 'same bytes' : 'DIFFERENT: ' + blob.toString()));

  // The attacker's path. up-bystander's token presented for up-dev:
  const expiry = Math.floor(Date.now() / 1000) + 3600;
  const stolen = SharedAccessSignature.create(host, 'up-bystander', bystanderKey, expiry).toString();
  say('OTHERTOKEN ' + await post('/devices/up-dev/files', stolen, { blobName: 'evil.txt' }));
  // the bystander begins an upload; up-dev tries to complete it, then a correlationId of no one
  const params = await bystander.getBlobSharedAccessSignature('own.txt');
  say('BYSTANDER ' + params.blobName + ' ' + params.containerName + ' ' + params.hostName);
  const ownToken = SharedAccessSignature.create(host, 'up-dev', deviceKey, expiry).toString();
  say('NOTMINE ' + await post('/devices/up-dev/files/notifications',
    ownToken, { correlationId: params.correlationId, isSuccess: true, statusCode: 201, statusDescription: 'not mine' }));
  say('UNKNOWN ' + await post('/devices/up-dev/files/notifications',
    ownToken, { correlationId: 'bm8tc3VjaC1jb3JyZWxhdGlvbi1pZA==', isSuccess: true, statusCode: 201 }));
  try { // the SDK's own form of the notification: the correlationId in the path
    await device.notifyBlobUploadStatus('bm8tc3VjaC1jb3JyZWxhdGlvbi1pZA==', true, 201, 'made up');
    say('ERROR an unknown correlationId was taken');
  } catch (e) {
    say('SDKUNKNOWN ' + sdkError(e));
  }
  // the bystander's upload goes on, step by step as the SDK's advanced sample does it
  const url = `https://${params.hostName}/${params.containerName}/${params.blobName}${params.sasToken}`;
  const own = Buffer.from('the bystander\'s own bytes');
  const put = await new BlockBlobClient(url).upload(own, own.length);
  await bystander.notifyBlobUploadStatus(params.correlationId, true, put._response.status, 'uploaded');
  const second = JSON.parse((await nextNotification()).data.toString());
  say('SECOND ' + second.deviceId + ' ' + second.blobName + ' ' + second.blobSizeInBytes);
  try {
    await bystander.notifyBlobUploadStatus(params.correlationId, true, 201, 'again');
    say('ERROR a correlationId was taken twice');
  } catch (e) {
    say('AGAIN ' + sdkError(e));
  }
  // a failed upload is acknowledged, and not notified
  const failed = await bystander.getBlobSharedAccessSignature('never.txt');
  await bystander.notifyBlobUploadStatus(failed.correlationId, false, 500, 'the upload failed');
  await new Promise((r) => setTimeout(r, 1000));
  say('FAILEDNOTIFIED ' + notifications.length);

  await service.close();
  say('DONE');
  process.exit(0);
}

main().catch((e) => {
  say('ERROR ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
