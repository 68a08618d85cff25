import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { names as namesOf, streamDefinitions } from "@postroom/contracts";
import { z } from "zod";
import { BatchConsumer, connectNats, ensureStreams, jetStreamOf, PublishWindow, type NatsConnection, type Verdict } from "./index.js";

// Real NATS (JetStream); this file's own namespace, deleted afterwards.
const names = namesOf(`tbatch${randomBytes(5).toString("hex")}`);
let nc: NatsConnection;

before(async () => {
  nc = await connectNats({ url: process.env.NATS_URL ?? "nats://127.0.0.1:4222", name: "nats-kit-batch-test" });
  await ensureStreams(nc, streamDefinitions(names));
});

after(async () => {
  const jsm = await jetstreamManager(nc);
  for (const d of streamDefinitions(names)) await jsm.streams.delete(d.name).catch(() => undefined);
  await nc.drain();
});

const Event = z.object({ version: z.literal("v1"), i: z.number() });

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a backlog arrives in batches of at most maxBatch, in order, each message acknowledged once; a throwing batch comes back", async () => {
  const subject = names.subjects.mailReceived("acme", "batch");
  const window = new PublishWindow({ js: jetStreamOf(nc) });
  for (let i = 0; i < 300; i++) await window.send(subject, { version: "v1", i }, { msgId: `b-${i}` });
  await window.send(subject, { version: "v2" }, { msgId: "bad" });
  await window.flush();
  const sizes: number[] = [];
  const seen: number[] = [];
  let failedOnce = false;
  const consumer = new BatchConsumer({
    nc,
    stream: names.streams.mail,
    durable: names.consumers.archiverReceived("acme"),
    filterSubject: names.subjects.wildcard.mailReceived("acme"),
    schema: Event,
    maxBatch: 64,
    handler: async (batch): Promise<Verdict[]> => {
      if (!failedOnce && batch.some((b) => b.payload.i === 100)) {
        failedOnce = true;
        throw new Error("database away");
      }
      // A commit takes a while; what arrives meanwhile forms the next batch.
      await new Promise((r) => setTimeout(r, 20));
      sizes.push(batch.length);
      seen.push(...batch.map((b) => b.payload.i));
      return batch.map(() => ({ action: "ack" }));
    },
  });
  await consumer.start();
  try {
    await until(() => new Set(seen).size === 300, "all 300 handled");
    assert.ok(Math.max(...sizes) <= 64, `batches of at most 64 (saw ${Math.max(...sizes)})`);
    assert.ok(sizes.some((n) => n > 1), "a backlog is handled in batches, not one by one");
    const firstPass = seen.filter((i, k) => seen.indexOf(i) === k);
    assert.deepEqual(firstPass.slice(0, 64), [...Array(64).keys()], "delivery order within the first batch");
    const deadline = Date.now() + 10_000;
    let lag = await consumer.lag();
    while ((lag.ackPending > 0 || lag.pending > 0) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      lag = await consumer.lag();
    }
    assert.deepEqual(lag, { consumer: names.consumers.archiverReceived("acme"), pending: 0, ackPending: 0 }, "everything acknowledged (the bad payload terminated)");
  } finally {
    await consumer.stop();
  }
});
