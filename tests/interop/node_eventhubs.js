// The official Event Hubs JavaScript SDK (@azure/event-hubs, EventHubConsumerClient), unchanged,
// reading iothub-emulator's telemetry stream with the Event Hub-compatible connection string.
// Driven by node_eventhubs.py; one mode a run, each printing one line per fact:
//
//   node node_eventhubs.js properties CS
//       getEventHubProperties, getPartitionIds, getPartitionProperties of each partition
//   node node_eventhubs.js subscribe CS COUNT TIMEOUT_S [START_JSON] [CONSUMER_GROUP]
//       subscribe across all partitions from START_JSON (an EventPosition, a map of them by
//       partition id, or "latest"; default: the earliest), print each event, stop once
//       COUNT events came and a second passed without more (or at TIMEOUT_S)
//   node node_eventhubs.js refused CS
//       getPartitionIds and a subscription, both expected to fail: print the error
//
// The CA to trust comes from NODE_EXTRA_CA_CERTS. Lines: "READY" (every partition is being
// read), "EVENT {json}", "ERROR {text}", "DONE {count}".
"use strict";
const {
  EventHubConsumerClient,
  earliestEventPosition,
  latestEventPosition,
} = require("@azure/event-hubs");

const [mode, cs, ...rest] = process.argv.slice(2);

function say(tag, value) {
  console.log(value === undefined ? tag : `${tag} ${typeof value === "string" ? value : JSON.stringify(value)}`);
}

function errorText(err) {
  const out = { name: err && err.name, code: err && err.code, message: err && err.message };
  if (err && Array.isArray(err.errors))
    out.errors = err.errors.map((e) => ({ name: e && e.name, code: e && e.code, message: e && e.message }));
  return out;
}

async function properties(connectionString) {
  const client = new EventHubConsumerClient(EventHubConsumerClient.defaultConsumerGroupName, connectionString);
  try {
    const hub = await client.getEventHubProperties();
    say("HUB", { name: hub.name, createdOn: hub.createdOn.toISOString(), partitionIds: hub.partitionIds });
    const ids = await client.getPartitionIds();
    say("PARTITION_IDS", ids);
    for (const id of ids) {
      const p = await client.getPartitionProperties(id);
      say("PARTITION", {
        eventHubName: p.eventHubName,
        partitionId: p.partitionId,
        beginningSequenceNumber: p.beginningSequenceNumber,
        lastEnqueuedSequenceNumber: p.lastEnqueuedSequenceNumber,
        lastEnqueuedOffset: p.lastEnqueuedOffset,
        lastEnqueuedOnUtc: p.lastEnqueuedOnUtc.getTime(),
        isEmpty: p.isEmpty,
      });
    }
    try {
      await client.getPartitionProperties("99", { retryOptions: { maxRetries: 0 } });
      say("ERROR", "partition 99 was answered");
    } catch (err) {
      say("BAD_PARTITION", errorText(err));
    }
  } finally {
    await client.close();
  }
}

function startPosition(spec) {
  if (!spec || spec === "earliest") return earliestEventPosition;
  if (spec === "latest") return latestEventPosition;
  return JSON.parse(spec);
}

async function subscribe(connectionString, count, timeoutS, spec, consumerGroup) {
  const client = new EventHubConsumerClient(
    consumerGroup || EventHubConsumerClient.defaultConsumerGroupName,
    connectionString,
  );
  const ids = await client.getPartitionIds();
  const reading = new Set();
  let seen = 0;
  let lastAt = Date.now();
  const started = Date.now();
  const subscription = client.subscribe(
    {
      processEvents: async (events, context) => {
        if (!reading.has(context.partitionId)) {
          reading.add(context.partitionId);
          if (reading.size === ids.length) say("READY");
        }
        for (const e of events) {
          seen++;
          lastAt = Date.now();
          say("EVENT", {
            partitionId: context.partitionId,
            consumerGroup: context.consumerGroup,
            body: Buffer.isBuffer(e.body) ? { base64: e.body.toString("base64") } : e.body,
            properties: e.properties || {},
            messageId: e.messageId,
            contentType: e.contentType,
            sequenceNumber: e.sequenceNumber,
            offset: e.offset,
            enqueuedTimeUtc: e.enqueuedTimeUtc && e.enqueuedTimeUtc.getTime(),
            deviceId: e.systemProperties && e.systemProperties["iothub-connection-device-id"],
            moduleId: e.systemProperties && e.systemProperties["iothub-connection-module-id"],
            messageSource: e.systemProperties && e.systemProperties["iothub-message-source"],
          });
        }
      },
      processError: async (err, context) => {
        say("ERROR", { partitionId: context.partitionId, ...errorText(err) });
      },
    },
    { startPosition: startPosition(spec), maxWaitTimeInSeconds: 1 },
  );
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const now = Date.now();
      if ((seen >= count && now - lastAt > 1000) || now - started > timeoutS * 1000) {
        clearInterval(timer);
        resolve();
      }
    }, 100);
  });
  await subscription.close();
  await client.close();
  say("DONE", String(seen));
}

async function refused(connectionString) {
  const client = new EventHubConsumerClient(EventHubConsumerClient.defaultConsumerGroupName, connectionString, {
    retryOptions: { maxRetries: 1, retryDelayInMs: 200, timeoutInMs: 10000 },
  });
  try {
    await client.getPartitionIds();
    say("ERROR", "getPartitionIds was answered");
  } catch (err) {
    say("REFUSED", errorText(err));
  }
  let sawError = false;
  const subscription = client.subscribe(
    "0",
    {
      processEvents: async () => {},
      processError: async (err) => {
        if (!sawError) say("SUBSCRIBE_REFUSED", errorText(err));
        sawError = true;
      },
    },
    { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 },
  );
  const started = Date.now();
  while (!sawError && Date.now() - started < 20000) await new Promise((r) => setTimeout(r, 100));
  await subscription.close();
  await client.close();
  say("DONE", "0");
}

async function main() {
  if (mode === "properties") return properties(cs);
  if (mode === "subscribe") return subscribe(cs, Number(rest[0]), Number(rest[1]), rest[2], rest[3]);
  if (mode === "refused") return refused(cs);
  throw new Error(`unknown mode ${mode}`);
}

main().then(
  () => process.exit(0),
  (err) => {
    say("ERROR", errorText(err));
    process.exit(1);
  },
);
