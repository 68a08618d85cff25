import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { connectNats, liveKeys, openKv } from "./index.js";

test("liveKeys lists the keys that hold a value under a filter, as kv.keys() does, without deleted or purged ones", async () => {
  const nc = await connectNats({ url: process.env.NATS_URL ?? "nats://127.0.0.1:4222", name: "nats-kit-live-keys-test" });
  const bucket = `tlivekeys${randomBytes(4).toString("hex")}`;
  try {
    const kv = await openKv(nc, bucket);
    for (const k of ["lease.a.1", "lease.a.2", "lease.b.1", "replica.x"]) await kv.put(k, "v");
    await kv.delete("lease.a.2");
    await kv.put("lease.c.1", "v");
    await kv.purge("lease.c.1");
    const fromConsumer: string[] = [];
    for await (const k of await kv.keys("lease.>")) fromConsumer.push(k);
    assert.deepEqual((await liveKeys(kv, "lease.>")).sort(), ["lease.a.1", "lease.b.1"]);
    assert.deepEqual((await liveKeys(kv, "lease.>")).sort(), fromConsumer.sort());
    assert.deepEqual(await liveKeys(kv, "replica.*"), ["replica.x"]);
    assert.deepEqual(await liveKeys(kv, "nothing.>"), []);
  } finally {
    await (await jetstreamManager(nc)).streams.delete(`KV_${bucket}`).catch(() => undefined);
    await nc.close();
  }
});
