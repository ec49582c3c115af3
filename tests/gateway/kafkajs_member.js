// A kafkajs group member against the gateway, driven by tests/gateway/test_kafkajs.py:
//   node kafkajs_member.js BOOTSTRAP TOPIC GROUP
// prints "rec PARTITION OFFSET VALUE" for each record, then commits what it printed
// and prints "commit PARTITION OFFSET" once the commit is acknowledged (the lines of
// tests/gateway/test_groups.py's members); leaves the group on SIGTERM.
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap, topic, groupId] = process.argv.slice(2);
  const kafka = new Kafka({
    brokers: [bootstrap], clientId: "kafkajs", logLevel: logLevel.ERROR,
  });
  // short waits: kafkajs heartbeats between fetches, so a fetch's wait delays
  // seeing a rebalance
  const consumer = kafka.consumer({
    groupId, sessionTimeout: 6000, heartbeatInterval: 300, maxWaitTimeInMs: 200,
  });
  const out = (line) => process.stdout.write(line + "\n");
  process.on("SIGTERM", () => {
    consumer.disconnect().then(() => process.exit(0), () => process.exit(1));
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch, resolveOffset }) => {
      if (batch.messages.length === 0) return;
      for (const m of batch.messages) {
        out(`rec ${batch.partition} ${m.offset} ${m.value.toString()}`);
        resolveOffset(m.offset);
      }
      const last = batch.messages[batch.messages.length - 1];
      const next = String(Number(last.offset) + 1);
      try {
        await consumer.commitOffsets([
          { topic: batch.topic, partition: batch.partition, offset: next },
        ]);
        out(`commit ${batch.partition} ${next}`);
      } catch (error) {
        // a rebalance: the next owner reads them again
      }
    },
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
