import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { streamDefinitions } from "@postroom/contracts";
import { ensureStreams } from "@postroom/nats-kit";
import { buildMailCorpus, waitFor } from "@postroom/testkit";
import { ArchiveFeed, messageFolders } from "../support/archive-feed.js";
import { E2eWorld } from "../support/fixture.js";

const BURST = 1000;
let w: E2eWorld;
let feed: ArchiveFeed;

before(async () => {
  w = await E2eWorld.create("archcrash");
  await ensureStreams(w.nc, streamDefinitions(w.names));
  feed = await ArchiveFeed.open(w.nc, w.names);
  // Only the archiver: this test is about it alone, fed as the poller would feed it.
  await w.system.start(["archiver"]);
});

after(async () => {
  await w?.close();
});

const count = async () => Number((await w.rows<{ n: string }>("SELECT count(*) AS n FROM messages"))[0]!.n);

test("killing the archiver with SIGKILL during a burst of 1,000 messages, then restarting it, leaves exactly 1,000 rows and no partial files", async () => {
  const corpus = buildMailCorpus({ bigAttachmentBytes: 0 });
  const sent = new Map<string, string>();
  const deliveries: Promise<void>[] = [];
  for (let uid = 1; uid <= BURST; uid++) {
    // Each copy differs (its own Message-ID line on top), so every message has its own hash.
    const raw = Buffer.concat([Buffer.from(`X-Burst: ${uid}\r\n`), corpus[uid % corpus.length]!.raw]);
    deliveries.push(feed.deliver(raw, uid).then(({ key, sha256 }) => void sent.set(key, sha256)));
    if (deliveries.length >= 25) await Promise.all(deliveries.splice(0));
  }
  await Promise.all(deliveries);

  await waitFor(async () => (await count()) >= 150, { timeoutMs: 60_000, intervalMs: 20, what: () => `150 archived before the kill\n${w.system.dump()}` });
  await w.system.stopService("archiver", "SIGKILL");
  const atKill = await count();
  assert.ok(atKill < BURST, `killed mid-burst (${atKill} archived)`);

  w.system.startService("archiver");
  await waitFor(async () => (await count()) === BURST, { timeoutMs: 100_000, intervalMs: 250, what: () => `${BURST} rows\n${w.system.dump()}` });

  const rows = await w.rows<{ message_key: string; sha256: string; archive_path: string }>("SELECT message_key, sha256, archive_path FROM messages");
  assert.equal(rows.length, BURST);
  assert.equal(new Set(rows.map((r) => r.message_key)).size, BURST, "one row per message");
  for (const r of rows) {
    assert.equal(r.sha256, sent.get(r.message_key), `${r.message_key}: the row is the message that was sent`);
    const eml = await readFile(join(r.archive_path, "message.eml"));
    assert.equal(createHash("sha256").update(eml).digest("hex"), r.sha256, `${r.message_key}: complete .eml on disk`);
    assert.deepEqual((await readdir(r.archive_path)).sort(), ["message.eml", "meta.json", "parts"], `${r.message_key}: complete folder`);
    JSON.parse(await readFile(join(r.archive_path, "meta.json"), "utf8"));
  }
  const root = join(w.dir.path, "archive");
  const folders = await messageFolders(root);
  assert.equal(folders.length, BURST, "no message folder without its row");
  assert.deepEqual(new Set(folders), new Set(rows.map((r) => r.archive_path)));
  assert.deepEqual(await readdir(join(root, ".tmp")), [], "no staged leftovers after the restart");
  await waitFor(() => new Set(feed.confirmations.map((c) => c.messageKey)).size === BURST, { timeoutMs: 30_000, what: "every message confirmed" });
});
