// rhea (npm) as an AMQP-over-WebSocket client: sends N messages to c2s-0-0 and expects N
// from s2c-0-0, checking each payload, then closes. Prints one JSON line with the outcome.
//   node rhea_wss_client.js PORT CAFILE N
'use strict';
const fs = require('fs');
const rhea = require('rhea');
const WebSocket = require('ws');

const [port, caFile, countText] = process.argv.slice(2);
const n = Number(countText);
const result = { sent: 0, accepted: 0, received: 0, bad: 0, error: null };

function pattern(seq, size = 64) {
  const b = Buffer.alloc(size);
  b.writeBigUInt64LE(BigInt(seq), 0);
  for (let i = 8; i < size; i++) b[i] = (seq + i) & 0xff;
  return b;
}

const container = rhea.create_container({ id: 'rhea-interop' });
const ws = container.websocket_connect(WebSocket);
const connection = container.connect({
  connection_details: ws(`wss://localhost:${port}/$iothub/websocket`, ['AMQPWSB10'],
    { ca: fs.readFileSync(caFile), servername: 'localhost' }),
  reconnect: false,
  hostname: 'localhost',
  idle_time_out: 30000,
});
const sender = connection.open_sender('c2s-0-0');
connection.open_receiver({ source: 's2c-0-0', credit_window: 100 });

function maybeDone() {
  if (result.accepted === n && result.received === n) connection.close();
}

sender.on('sendable', (ctx) => {
  while (ctx.sender.sendable() && result.sent < n) {
    ctx.sender.send({ body: rhea.message.data_section(pattern(result.sent)) });
    result.sent++;
  }
});
container.on('accepted', () => { result.accepted++; maybeDone(); });
container.on('message', (ctx) => {
  const body = ctx.message.body;
  const bytes = Buffer.isBuffer(body) ? body : body && body.content;
  if (!bytes || !bytes.equals(pattern(result.received))) result.bad++;
  result.received++;
  maybeDone();
});
container.on('connection_close', () => { console.log(JSON.stringify(result)); process.exit(0); });
container.on('disconnected', (ctx) => {
  result.error = String(ctx.error || 'disconnected');
  console.log(JSON.stringify(result));
  process.exit(1);
});
setTimeout(() => { result.error = 'timeout'; console.log(JSON.stringify(result)); process.exit(1); }, 60000);
