import assert from "node:assert/strict";
import { test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { names } from "@postroom/contracts";
import { belongsToNamespace, cleanupNamespace, natsUrl, testNamespace } from "./nats-namespace.js";

test("testNamespace gives distinct roots that contracts accept", () => {
  const a = testNamespace("Imap-Poller!");
  const b = testNamespace("Imap-Poller!");
  assert.notEqual(a, b);
  assert.match(a, /^timappoller[0-9a-f]{12}$/);
  assert.match(testNamespace("x".repeat(200)), /^[a-z0-9][a-z0-9_-]{0,63}$/);
  assert.doesNotThrow(() => names(a));
});

test("belongsToNamespace matches a root's streams, buckets and object stores only", () => {
  assert.ok(belongsToNamespace("TABC_MAIL", "tabc"));
  assert.ok(belongsToNamespace("KV_tabc-cursors", "tabc"));
  assert.ok(belongsToNamespace("OBJ_tabc-raw-mail", "tabc"));
  assert.equal(belongsToNamespace("TABCD_MAIL", "tabc"), false);
  assert.equal(belongsToNamespace("KV_tabcd-cursors", "tabc"), false);
  assert.equal(belongsToNamespace("POSTROOM_MAIL", "tabc"), false);
});

test("cleanupNamespace deletes the namespace's streams, KV and object-store streams and nothing else", async () => {
  const mine = testNamespace("cleanup");
  const other = testNamespace("cleanup");
  const nc = await connect({ servers: natsUrl() });
  try {
    const jsm = await jetstreamManager(nc);
    for (const root of [mine, other]) {
      const n = names(root);
      await jsm.streams.add({ name: n.streams.mail, subjects: [`${root}.>`] });
      // KV buckets and object stores are streams named KV_<bucket> / OBJ_<bucket>.
      await jsm.streams.add({ name: `KV_${n.buckets.cursors}`, subjects: [`$KV.${n.buckets.cursors}.>`] });
      await jsm.streams.add({ name: `OBJ_${n.buckets.rawMail}`, subjects: [`$O.${n.buckets.rawMail}.>`] });
    }
    const deleted = await cleanupNamespace(natsUrl(), mine);
    assert.deepEqual(deleted.sort(), [`KV_${mine}-cursors`, `OBJ_${mine}-raw-mail`, `${mine.toUpperCase()}_MAIL`].sort());
    const left: string[] = [];
    for await (const name of jsm.streams.names()) left.push(name);
    assert.equal(left.filter((s) => belongsToNamespace(s, mine)).length, 0);
    assert.equal(left.filter((s) => belongsToNamespace(s, other)).length, 3);
  } finally {
    await cleanupNamespace(natsUrl(), other);
    await nc.close();
  }
});
