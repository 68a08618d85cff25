import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { streamDefinitions } from "@postroom/contracts";
import { ensureStreams } from "@postroom/nats-kit";
import { buildMailCorpus, waitFor } from "@postroom/testkit";
import pg from "pg";
import { ArchiveFeed, messageFolders } from "../support/archive-feed.js";
import { E2eWorld } from "../support/fixture.js";
import { PrivatePostgres } from "../support/private-postgres.js";
import { processCertificate, secureMode } from "../support/secure.js";

const BURST = 400;
const OUTAGE_MS = 30_000;
let w: E2eWorld;
let feed: ArchiveFeed;
let db: PrivatePostgres;
let pool: pg.Pool;

before(async () => {
  // The archiver's database is a private cluster this test may stop; the shared server stays up.
  // In secure mode it serves TLS only, with the certificate the world's config trusts.
  const cert = secureMode() ? await processCertificate() : undefined;
  db = await PrivatePostgres.create(cert ? { tls: { certPath: cert.certPath, keyPath: cert.keyPath } } : {});
  w = await E2eWorld.create("archpgdown", (c) => {
    c.database = { url: db.url };
  });
  pool = new pg.Pool({ connectionString: db.url, max: 1 });
  pool.on("error", () => undefined);
  await ensureStreams(w.nc, streamDefinitions(w.names));
  feed = await ArchiveFeed.open(w.nc, w.names);
  await w.system.start(["archiver"]);
});

after(async () => {
  await pool?.end().catch(() => undefined);
  await w?.close();
  await db?.remove();
});

const count = async () => Number((await pool.query<{ n: string }>("SELECT count(*) AS n FROM messages")).rows[0]!.n);

test("stopping PostgreSQL for 30 s during a burst loses nothing: the archiver waits, then catches up", async () => {
  // Wait for the archiver's migrations before counting.
  await waitFor(async () => (await pool.query("SELECT to_regclass('messages') AS t")).rows[0].t !== null, { timeoutMs: 30_000, what: () => `schema\n${w.system.dump()}` });
  const corpus = buildMailCorpus({ bigAttachmentBytes: 0 });
  const sent = new Map<string, string>();
  for (let uid = 1; uid <= BURST; uid++) {
    const raw = Buffer.concat([Buffer.from(`X-Burst: ${uid}\r\n`), corpus[uid % corpus.length]!.raw]);
    const { key, sha256 } = await feed.deliver(raw, uid);
    sent.set(key, sha256);
  }
  await waitFor(async () => (await count()) >= 40, { timeoutMs: 60_000, intervalMs: 20, what: () => `40 archived before the outage\n${w.system.dump()}` });

  await db.stop();
  const stoppedAt = Date.now();
  const confirmedAtStop = new Set(feed.confirmations.map((c) => c.messageKey));
  await new Promise((r) => setTimeout(r, OUTAGE_MS));
  assert.ok(w.system.running("archiver"), `the archiver waited instead of dying\n${w.system.dump(40)}`);
  // Confirmed during the outage: only what was committed before it (a group commit's confirmations
  // go out after its COMMIT, so up to one batch may still arrive) — checked against the rows below.
  const confirmedDuring = [...new Set(feed.confirmations.map((c) => c.messageKey))].filter((k) => !confirmedAtStop.has(k));
  assert.ok(w.system.logs.some((l) => l.service === "archiver" && l.line.includes("database unavailable; holding the message")), "it says why it waits");
  await db.start();
  assert.ok(Date.now() - stoppedAt >= OUTAGE_MS);

  await waitFor(async () => (await count().catch(() => -1)) === BURST, { timeoutMs: 60_000, intervalMs: 250, what: () => `${BURST} rows after the outage\n${w.system.dump()}` });
  const rows = (await pool.query<{ message_key: string; sha256: string; archive_path: string }>("SELECT message_key, sha256, archive_path FROM messages")).rows;
  // now() is the transaction's start, so a row committed before the stop has archived_at before it.
  const late = await pool.query<{ message_key: string }>("SELECT message_key FROM messages WHERE message_key = ANY($1) AND archived_at >= to_timestamp($2 / 1000.0)", [confirmedDuring, stoppedAt]);
  assert.deepEqual(late.rows, [], `confirmed during the outage (${confirmedDuring.length}) but committed after it`);
  assert.equal(new Set(rows.map((r) => r.message_key)).size, BURST, "every message once");
  for (const r of rows) {
    assert.equal(r.sha256, sent.get(r.message_key), r.message_key);
    const eml = await readFile(join(r.archive_path, "message.eml"));
    assert.equal(createHash("sha256").update(eml).digest("hex"), r.sha256, `${r.message_key}: complete .eml`);
  }
  const root = join(w.dir.path, "archive");
  assert.equal((await messageFolders(root)).length, BURST, "one folder per message, none orphaned");
  await waitFor(() => new Set(feed.confirmations.map((c) => c.messageKey)).size === BURST, { timeoutMs: 30_000, what: "every message confirmed" });
  assert.deepEqual(await readdir(join(root, ".tmp")), []);
});
