// kafkajs (Node.js) against the gateway, driven by tests/gateway/test_kafkajs.py:
//   node kafkajs_client.js BOOTSTRAP TOPIC COUNT
// creates TOPIC with 3 partitions, sends COUNT keyed records with a header from an
// idempotent producer, reads the ends back with the admin client, and prints one
// JSON object: where each record landed and the offsets the admin saw.
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap, topic, count] = process.argv.slice(2);
  const kafka = new Kafka({ brokers: [bootstrap], logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: 3 }],
    waitForLeaders: true,
  });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const placed = [];
  for (let i = 0; i < Number(count); i += 100) {
    const messages = [];
    for (let j = i; j < Math.min(i + 100, Number(count)); j++) {
      messages.push({ key: `k${j}`, value: `v${j}`, headers: { n: `${j}` } });
    }
    const answers = await producer.send({ topic, messages });
    placed.push(...answers.map((a) => [a.partition, Number(a.baseOffset)]));
  }
  await producer.disconnect();
  const offsets = await admin.fetchTopicOffsets(topic);
  const topics = await admin.listTopics();
  await admin.disconnect();
  const ends = offsets
    .map((o) => [o.partition, Number(o.low), Number(o.high)])
    .sort((a, b) => a[0] - b[0]);
  console.log(JSON.stringify({ created, placed, ends, listed: topics.includes(topic) }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
