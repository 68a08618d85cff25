import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { AckPolicy, jetstreamManager } from "@nats-io/jetstream";
import { names as namesOf, streamDefinitions } from "@postroom/contracts";
import { z } from "zod";
// The test kit's cluster by path: @postroom/testkit depends on this package, so this package
// cannot depend on it back (turbo refuses a cycle in the package graph).
import { startNatsCluster, type NatsCluster } from "../../testkit/src/nats-cluster.js";
import { BatchConsumer, DurableConsumer, ack, connectNats, ensureStreams, jetStreamOf, publishJson, retryTransient, type NatsConnection } from "./index.js";

// A three-node JetStream cluster (nats-server 2.9), the stream with three replicas, as in
// production. The fault: SIGKILL of the node that leads a consumer, left down. The pull request
// waiting on that node dies with it, silently, while the client stays connected to another node.

let cluster: NatsCluster;
let nc: NatsConnection;
const names = namesOf("tfailover");
const stream = names.streams.mail;
const Event = z.object({ version: z.literal("v1"), i: z.number() });

before(async () => {
  cluster = await startNatsCluster();
  nc = await connectNats({ url: cluster.url, name: "nats-kit-failover-consumer" });
  await ensureStreams(nc, streamDefinitions(names, { replicas: 3 }));
  await cluster.waitHealthy(stream);
});

after(async () => {
  await nc?.close();
  await cluster?.stop();
});

/** Publishes event `i`, retried (same message id) while the cluster is between leaders. */
async function publish(mailbox: string, i: number): Promise<void> {
  for (;;) {
    try {
      await publishJson(jetStreamOf(nc), names.subjects.mailReceived("acme", mailbox), { version: "v1", i }, { msgId: `${mailbox}-${i}`, timeoutMs: 2_000 });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function consumerLeader(durable: string): Promise<string> {
  const jsm = await jetstreamManager(nc, { timeout: 3_000 });
  for (;;) {
    const leader = await jsm.consumers
      .info(stream, durable)
      .then((i) => i.cluster?.leader)
      .catch(() => undefined);
    if (leader) return leader;
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Measured here with nats.js's default pulls (30 s, heartbeats every 15 s): 45 s for both
// consumers. With PULL_LIFETIME: 8-10 s. 20 s leaves room for a loaded machine.
const RESUMED_WITHIN_MS = 20_000;

for (const kind of ["DurableConsumer", "BatchConsumer"] as const) {
  test(`${kind}: SIGKILL of the consumer's leader, left down — consumption resumes within seconds, nothing lost`, { timeout: 180_000 }, async () => {
    const durable = `failover-${kind.toLowerCase()}`;
    const mailbox = kind.toLowerCase();
    const seen = new Map<number, number>(); // event -> deliveries handled
    const onEvent = (i: number) => seen.set(i, (seen.get(i) ?? 0) + 1);
    // The consumer first, to learn its leader; then the client connected to the other two nodes
    // only, so that no reconnect hides the lost pull (the client never loses its connection).
    const jsm = await jetstreamManager(nc, { timeout: 5_000 });
    // Retried like the publishes: after the previous test's restart the cluster can take a few
    // seconds more to answer its API (one bare timeout here failed a CI run).
    await retryTransient(
      () => jsm.consumers.add(stream, { durable_name: durable, ack_policy: AckPolicy.Explicit, filter_subject: names.subjects.mailReceived("acme", mailbox) }),
      { deadlineMs: 60_000 },
    );
    const victim = await consumerLeader(durable);
    const client = await connectNats({ url: cluster.nodes.filter((n) => n.name !== victim).map((n) => n.url).join(","), name: `nats-kit-failover-${mailbox}` });
    const common = { nc: client, stream, durable, filterSubject: names.subjects.mailReceived("acme", mailbox), schema: Event, ackWaitMs: 30_000 };
    const consumer =
      kind === "DurableConsumer"
        ? new DurableConsumer({ ...common, maxAckPending: 4, handler: async (e) => (onEvent(e.i), ack) })
        : new BatchConsumer({ ...common, handler: async (batch) => batch.map((b) => (onEvent(b.payload.i), ack)) });
    await consumer.start();
    try {
      for (let i = 0; i < 10; i++) await publish(mailbox, i);
      await until(() => seen.size === 10, 30_000, "the first 10 events");
      // Now idle, with a pull request waiting on the consumer's leader: what the kill finds.
      assert.equal(await consumerLeader(durable), victim, "the consumer's leader is where it was");
      await cluster.kill(victim);
      const killedAt = Date.now();
      try {
        for (let i = 10; i < 20; i++) await publish(mailbox, i);
        const published = Date.now() - killedAt;
        await until(() => seen.size === 20, 120_000, `events 10-19 after ${victim} was killed (${[...seen.keys()].length} of 20 handled)`);
        const resumed = Date.now() - killedAt;
        const next = await consumerLeader(durable);
        console.log(`${kind}: leader ${victim} killed; ${next} leads; 10 more published after ${published} ms, all handled ${resumed} ms after the kill`);
        assert.notEqual(next, victim);
        assert.ok(resumed < RESUMED_WITHIN_MS, `consumption resumed ${resumed} ms after the kill (limit ${RESUMED_WITHIN_MS} ms)`);
        for (let i = 0; i < 20; i++) assert.ok((seen.get(i) ?? 0) >= 1, `event ${i} handled`);
        // Nothing left behind on the server either: every event delivered and acknowledged (one
        // whose ack died with the old leader comes back after the ack wait and is acked again).
        let lag = { num_pending: -1, num_ack_pending: -1 };
        for (const deadline = Date.now() + 60_000; Date.now() < deadline && (lag.num_pending !== 0 || lag.num_ack_pending !== 0); ) {
          lag = await jsm.consumers.info(stream, durable).catch(() => lag);
          await new Promise((r) => setTimeout(r, 250));
        }
        assert.deepEqual(lag && { pending: lag.num_pending, ackPending: lag.num_ack_pending }, { pending: 0, ackPending: 0 }, "every event acknowledged");
      } finally {
        await cluster.restart(victim);
        await cluster.waitHealthy(stream);
      }
    } finally {
      await consumer.stop();
      await client.close();
    }
  });
}
