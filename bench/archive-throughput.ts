/**
 * Archive throughput for the varied test corpus (plain, HTML, multiparts, hostile names, nine
 * charsets, DSN, broken MIME, one 25 MB attachment), as a ratio against the floor any archive
 * must pay: copying the same .eml files with `cp` plus one plain INSERT per message.
 *
 *   node --conditions=source --import tsx bench/archive-throughput.ts [rounds=3]
 *
 * Everything runs on loopback against the machine's NATS and PostgreSQL, in one run: a fresh
 * database and NATS namespace, removed at the end. The archiver is fed before it starts, so the
 * timing covers archiving only (object store read, SHA-256, parse in the worker pool, parts and
 * meta.json, fsync, rename, one transaction, the mail.archived publish).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { Archiver } from "@postroom/archiver";
import { parseConfig } from "@postroom/config";
import { messageKey, names as namesOf, streamDefinitions, type MailReceived, type SourceKey } from "@postroom/contracts";
import { createPool, migrate } from "@postroom/db";
import { connectNats, ensureStreams, jetStreamOf, openObjectStore, publishJson } from "@postroom/nats-kit";
import { createLogger } from "@postroom/telemetry";
import { buildMailCorpus, cleanupNamespace, createTestDatabase, natsUrl, tempDir, testNamespace } from "@postroom/testkit";

const run = promisify(execFile);
const rounds = Math.max(1, Math.min(10, Number(process.argv[2] ?? 3)));
const corpus = buildMailCorpus();
const messages = Array.from({ length: rounds }, (_, r) => corpus.map((m) => Buffer.concat([Buffer.from(`X-Bench-Round: ${r}\r\n`), m.raw]))).flat();
const totalBytes = messages.reduce((n, m) => n + m.length, 0);
const MB = 1024 * 1024;

const dir = tempDir("bench-archive");
const db = await createTestDatabase("bencharch");
const ns = testNamespace("bencharch");
const names = namesOf(ns);
const nc = await connectNats({ url: natsUrl(), name: "bench-archive" });
const pool = createPool(db.url, { max: 5 });

try {
  await migrate(pool);

  // Baseline: the same .eml files copied with cp (one invocation, all files), then one plain
  // INSERT per message, each its own transaction as the archiver's are.
  const src = join(dir.path, "src");
  const dst = join(dir.path, "cp");
  await mkdir(src, { recursive: true });
  await mkdir(dst, { recursive: true });
  const files: string[] = [];
  for (const [i, m] of messages.entries()) {
    const f = join(src, `${i}.eml`);
    await writeFile(f, m);
    files.push(f);
  }
  await pool.query("CREATE TABLE bench_plain (id bigserial PRIMARY KEY, k text NOT NULL, size bigint NOT NULL)");
  await run("sync");
  const b0 = process.hrtime.bigint();
  await run("cp", [...files, dst]);
  // cp does not fsync; sync makes the baseline as durable as the archiver's fsynced writes.
  await run("sync");
  for (const [i, m] of messages.entries()) await pool.query("INSERT INTO bench_plain (k, size) VALUES ($1, $2)", [`k${i}`, m.length]);
  const baselineS = Number(process.hrtime.bigint() - b0) / 1e9;

  // The archiver, fed the way imap-poller feeds it.
  const config = parseConfig(
    JSON.stringify({
      version: 1,
      nats: { url: natsUrl(), namespace: ns },
      database: { url: db.url },
      archive: { path: join(dir.path, "archive") },
      tenants: [{ id: "acme", mailboxes: [{ id: "support", address: "support@acme.test", inbound: { protocol: "imap", host: "127.0.0.1", tls: "none" }, auth: { type: "password", password: "env:UNUSED" } }] }],
    }),
  );
  await ensureStreams(nc, streamDefinitions(names));
  const raw = await openObjectStore(nc, names.buckets.rawMail);
  const js = jetStreamOf(nc);
  for (const [i, m] of messages.entries()) {
    const source: SourceKey = { protocol: "imap", tenant: "acme", mailbox: "support", folder: "INBOX", uidValidity: 1, uid: i + 1 };
    const key = messageKey(source);
    await raw.putBlob({ name: key }, m);
    const event: MailReceived = {
      version: "v1",
      messageKey: key,
      source,
      raw: { bucket: names.buckets.rawMail, name: key, size: m.length, sha256: createHash("sha256").update(m).digest("hex") },
      receivedAt: new Date().toISOString(),
      fetchedAt: new Date().toISOString(),
      offer: false,
      oversize: false,
    };
    await publishJson(js, names.subjects.mailReceived("acme", "support"), event, { msgId: key });
  }
  await run("sync");
  const archiver = new Archiver({ nc, names, config, pool, logger: createLogger({ service: "bench", level: "error" }) });
  const a0 = process.hrtime.bigint();
  await archiver.start();
  for (;;) {
    const n = Number((await pool.query<{ n: string }>("SELECT count(*) AS n FROM messages")).rows[0]!.n);
    if (n === messages.length) break;
    if (Number(process.hrtime.bigint() - a0) / 1e9 > 300) throw new Error(`timed out with ${n} of ${messages.length} archived`);
    await new Promise((r) => setTimeout(r, 5));
  }
  const archiveS = Number(process.hrtime.bigint() - a0) / 1e9;
  await archiver.stop();

  const line = (what: string, s: number) =>
    `${what.padEnd(34)} ${(messages.length / s).toFixed(1).padStart(8)} msg/s ${(totalBytes / MB / s).toFixed(1).padStart(8)} MB/s ${s.toFixed(2).padStart(8)} s`;
  console.log(`archive throughput: ${messages.length} messages (${rounds} x ${corpus.length}-message corpus), ${(totalBytes / MB).toFixed(1)} MB, one run`);
  console.log(line("postroom archiver", archiveS));
  console.log(line("cp + one plain INSERT per message", baselineS));
  console.log(`ratio archiver / baseline: ${(baselineS / archiveS).toFixed(3)} (1.0 = as fast as cp + INSERT; ${(archiveS / baselineS).toFixed(1)}x the time)`);
  console.log(`parse errors ${archiver.stats.parseErrors}, parse timeouts ${archiver.stats.parseTimeouts}`);
} finally {
  await nc.drain().catch(() => undefined);
  await pool.end().catch(() => undefined);
  await cleanupNamespace(natsUrl(), ns).catch(() => undefined);
  await db.drop().catch(() => undefined);
  await dir.remove();
}
