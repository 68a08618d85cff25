import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { names as namesOf, streamDefinitions } from "@postroom/contracts";
import { z } from "zod";
import { connectNats, DurableConsumer, ensureStreams, jetStreamOf, publishJson, type NatsConnection } from "./index.js";

// Real NATS 2.9 (JetStream) on the test machine; this file's own namespace, deleted afterwards.
const names = namesOf(`tconsume${randomBytes(5).toString("hex")}`);
let nc: NatsConnection;

before(async () => {
  nc = await connectNats({ url: process.env.NATS_URL ?? "nats://127.0.0.1:4222", name: "nats-kit-consume-test" });
  await ensureStreams(nc, streamDefinitions(names));
});

after(async () => {
  const jsm = await jetstreamManager(nc);
  for (const d of streamDefinitions(names)) await jsm.streams.delete(d.name).catch(() => undefined);
  await nc.drain();
});

test("a terminated message (refused by the handler, or not matching the schema) is done: nothing stays pending for redelivery", async () => {
  const handled: string[] = [];
  const consumer = new DurableConsumer({
    nc,
    stream: names.streams.mail,
    durable: names.consumers.asdBridgeArchived("acme"),
    filterSubject: names.subjects.wildcard.mailArchived("acme"),
    schema: z.object({ version: z.literal("v1"), key: z.string() }),
    handler: async (e) => {
      handled.push(e.key);
      return { action: "term", reason: "refused by the test" };
    },
    // Long: a message left pending would still be pending when the test looks.
    ackWaitMs: 60_000,
  });
  await consumer.start();
  try {
    const js = jetStreamOf(nc);
    await publishJson(js, names.subjects.mailArchived("acme", "support"), { version: "v1", key: "a" }, { msgId: "a" });
    await publishJson(js, names.subjects.mailArchived("acme", "support"), { version: "v1", nope: true }, { msgId: "b" });
    const jsm = await jetstreamManager(nc);
    const deadline = Date.now() + 15_000;
    let info = await jsm.consumers.info(names.streams.mail, names.consumers.asdBridgeArchived("acme"));
    while (Date.now() < deadline && !(info.delivered.stream_seq >= 2 && info.num_ack_pending === 0)) {
      await new Promise((r) => setTimeout(r, 100));
      info = await jsm.consumers.info(names.streams.mail, names.consumers.asdBridgeArchived("acme"));
    }
    assert.deepEqual(handled, ["a"]);
    assert.equal(info.num_ack_pending, 0, "both terminated, none waiting for its ack wait to come back");
    assert.equal(info.num_redelivered, 0);
  } finally {
    await consumer.stop();
  }
});
