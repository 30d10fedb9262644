// rhea (npm) over AMQP-over-WebSocket against iothub-emulator's CBS: pipelines N
// put-tokens, giving the reply link 10 credits at a time, and checks in the order rhea
// reads the frames that no put-token's reply arrives before its disposition (IoT Hub's
// order, which the Azure IoT C SDK depends on). Prints one JSON line with the outcome.
//   node rhea_cbs_order.js PORT CAFILE TOKEN AUDIENCE N
'use strict';
const fs = require('fs');
const rhea = require('rhea');
const WebSocket = require('ws');

const [port, caFile, token, audience, countText] = process.argv.slice(2);
const n = Number(countText);
const result = { sent: 0, settled: 0, replies: 0, ok: 0, early: 0, error: null };

const container = rhea.create_container({ id: 'rhea-cbs-order' });
const ws = container.websocket_connect(WebSocket);
const connection = container.connect({
  connection_details: ws(`wss://localhost:${port}/$iothub/websocket`, ['AMQPWSB10'],
    { ca: fs.readFileSync(caFile), servername: 'localhost' }),
  reconnect: false,
  hostname: 'localhost',
});
const sender = connection.open_sender({ target: '$cbs', autosettle: true });
connection.open_receiver({ source: '$cbs', credit_window: 10 });

sender.on('sendable', (ctx) => {
  while (ctx.sender.sendable() && result.sent < n) {
    result.sent++;
    ctx.sender.send({
      message_id: result.sent,
      reply_to: 'cbs',
      application_properties: { operation: 'put-token', type: 'servicebus.windows.net:sastoken', name: audience },
      body: token,
    });
  }
});
container.on('accepted', () => { result.settled++; });
container.on('message', (ctx) => {
  result.replies++;
  if (result.replies > result.settled) result.early++;
  if (ctx.message.application_properties['status-code'] === 200) result.ok++;
  if (result.replies === n) connection.close();
});
container.on('connection_close', () => { console.log(JSON.stringify(result)); process.exit(0); });
container.on('disconnected', (ctx) => {
  result.error = String(ctx.error || 'disconnected');
  console.log(JSON.stringify(result));
  process.exit(1);
});
setTimeout(() => { result.error = 'timeout'; console.log(JSON.stringify(result)); process.exit(1); }, 60000);
