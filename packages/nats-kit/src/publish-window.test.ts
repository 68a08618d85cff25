import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { names as namesOf, streamDefinitions } from "@postroom/contracts";
import { connectNats, ContiguousPrefix, ensureStreams, jetStreamOf, PublishWindow, type NatsConnection } from "./index.js";

// Real NATS (JetStream); this file's own namespace, deleted afterwards.
const names = namesOf(`tpubwin${randomBytes(5).toString("hex")}`);
let nc: NatsConnection;

before(async () => {
  nc = await connectNats({ url: process.env.NATS_URL ?? "nats://127.0.0.1:4222", name: "nats-kit-window-test" });
  await ensureStreams(nc, streamDefinitions(names));
});

after(async () => {
  const jsm = await jetstreamManager(nc);
  for (const d of streamDefinitions(names)) await jsm.streams.delete(d.name).catch(() => undefined);
  await nc.drain();
});

test("a window keeps at most its size in flight, stores every message once and in send order", async () => {
  const window = new PublishWindow({ js: jetStreamOf(nc), max: 8 });
  const subject = names.subjects.mailArchived("acme", "window");
  let peak = 0;
  const pending = [];
  for (let i = 0; i < 200; i++) {
    pending.push(await window.send(subject, { version: "v1", i }, { msgId: `w-${i}` }));
    peak = Math.max(peak, window.inflight);
  }
  // The same ids again: duplicates, not new messages.
  for (let i = 0; i < 20; i++) await window.send(subject, { version: "v1", i }, { msgId: `w-${i}` });
  await window.flush();
  assert.ok(peak <= 8, `at most 8 in flight (saw ${peak})`);
  const acks = await Promise.all(pending.map((p) => p.acked));
  const seqs = acks.map((a) => a.seq);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "stored in send order");
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(names.streams.mail, { filter: subject } as never);
  const state = info.state as { num_subjects?: number; messages: number };
  assert.equal(state.messages, 200, "200 stored, the 20 republished ids deduplicated");
});

test("a refused publish is reported by flush and by its own acknowledgement", async () => {
  const window = new PublishWindow({ js: jetStreamOf(nc), max: 4, timeoutMs: 2_000 });
  // No stream listens on this subject: the server answers "no responders".
  const p = await window.send(`nostream.${randomBytes(4).toString("hex")}`, { version: "v1" }, { msgId: "x" });
  await assert.rejects(p.acked);
  await assert.rejects(window.flush());
  await window.flush(); // the failure was reported once
});

test("the contiguous prefix never passes a position that is not done", () => {
  const prefix = new ContiguousPrefix<number>(10);
  const done = [11, 12, 13, 14].map((uid) => prefix.add(uid));
  done[1]!();
  done[2]!();
  assert.equal(prefix.done, 10, "12 and 13 wait for 11");
  done[0]!();
  assert.equal(prefix.done, 13);
  assert.equal(prefix.pending, 1);
  done[3]!();
  assert.equal(prefix.done, 14);
  assert.equal(prefix.pending, 0);
});
