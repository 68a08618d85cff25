import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { waitFor } from "@postroom/mail-servers";
import { openKv } from "@postroom/nats-kit";
import { startNatsCluster, type NatsCluster } from "./nats-cluster.js";

let cluster: NatsCluster;
let nc: NatsConnection;

before(async () => {
  cluster = await startNatsCluster();
  nc = await connect({ servers: [...cluster.urls], name: "cluster-test", maxReconnectAttempts: -1, reconnectTimeWait: 250 });
});
after(async () => {
  await nc?.close();
  await cluster?.stop();
});

test("three nodes form one JetStream cluster; an R3 stream has a leader and two current followers", async () => {
  assert.equal(cluster.nodes.length, 3);
  assert.equal(cluster.url.split(",").length, 3);
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "CLUSTER_T1", subjects: ["cluster.t1.>"], num_replicas: 3, storage: "file" as never });
  await cluster.waitHealthy("CLUSTER_T1");
  const info = await jsm.streams.info("CLUSTER_T1");
  const leader = await cluster.leaderOf("CLUSTER_T1");
  assert.equal(info.cluster?.leader, leader);
  assert.deepEqual([leader, ...(info.cluster?.replicas ?? []).map((r) => r.name)].sort(), ["n1", "n2", "n3"]);
});

test("every acknowledged publish survives SIGKILL of the stream leader; the restarted node catches up", async () => {
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "CLUSTER_T2", subjects: ["cluster.t2.>"], num_replicas: 3, storage: "file" as never, duplicate_window: 120_000_000_000 });
  await cluster.waitHealthy("CLUSTER_T2");
  const js = jetstream(nc, { timeout: 5_000 });
  const acked = new Set<string>();
  const leader = await cluster.leaderOf("CLUSTER_T2");
  let killed = false;
  for (let i = 0; i < 300; i++) {
    const id = `m${i}`;
    if (i === 100) {
      await cluster.kill(leader);
      killed = true;
    }
    // Retry through the election, with the same message id: a publish whose ack was lost and that
    // had been stored after all is dropped as a duplicate, never stored twice.
    for (;;) {
      try {
        await js.publish(`cluster.t2.${i % 7}`, id, { msgID: id, timeout: 2_000 });
        acked.add(id);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  assert.ok(killed);
  const newLeader = await cluster.leaderOf("CLUSTER_T2");
  assert.notEqual(newLeader, leader, "another node leads after the kill");
  const info = await jsm.streams.info("CLUSTER_T2");
  assert.equal(info.state.messages, 300, "each acknowledged message stored exactly once");

  await cluster.restart(leader);
  await cluster.waitHealthy("CLUSTER_T2");
  const after = await jsm.streams.info("CLUSTER_T2");
  assert.ok(after.cluster?.replicas?.some((r) => r.name === leader && r.current), `${leader} is a current replica again`);
  assert.equal(after.state.messages, 300);
});

test("a KV bucket with three replicas keeps its entries and accepts writes while one node is down", async () => {
  const kv = await openKv(nc, "clustert3", { replicas: 3 });
  // A bucket just created may take a moment to elect its leader: until then a put has no responder.
  await cluster.waitHealthy("KV_clustert3");
  await kv.put("cursor", "41");
  const leader = await cluster.leaderOf("KV_clustert3");
  await cluster.kill(leader);
  const killedAt = Date.now();
  // Writes wait for the remaining two to elect a leader (a few seconds on 2.9); the entry and its
  // revision are what they were, so a compare-and-set written before the loss still applies.
  const written = await waitFor(
    async () => {
      try {
        const e = await kv.get("cursor");
        assert.equal(e?.string(), "41");
        await kv.update("cursor", "42", e!.revision);
        return true;
      } catch (error) {
        if (error instanceof assert.AssertionError) throw error;
        return undefined;
      }
    },
    { timeoutMs: 30_000, intervalMs: 200, what: "a write to the bucket after its leader was killed" },
  );
  assert.ok(written);
  console.log(`KV writable again ${Date.now() - killedAt} ms after SIGKILL of its leader ${leader}`);
  assert.equal((await kv.get("cursor"))?.string(), "42");
  await cluster.restart(leader);
  await cluster.waitHealthy("KV_clustert3");
});

test("connections() names the clients each node holds", async () => {
  const seen = await cluster.connections();
  assert.ok([...seen.values()].flat().includes("cluster-test"));
});
